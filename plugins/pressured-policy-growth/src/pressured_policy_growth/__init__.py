"""A pressured policy plugin: ``rss_growth``, the process whose memory grew fastest dies."""

from __future__ import annotations

from pressured_policy_growth.policy import RssGrowthOptions, RssGrowthPolicy

__all__ = ["RssGrowthOptions", "RssGrowthPolicy"]
