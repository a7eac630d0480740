"""A pressured policy plugin to copy: ``kill_by_name``."""

from __future__ import annotations

from pressured_policy_template.policy import KillByNameOptions, KillByNamePolicy

__all__ = ["KillByNameOptions", "KillByNamePolicy"]
