"""pressured: an event-driven memory-pressure controller for Linux."""

from __future__ import annotations

__version__ = "0.1.0"
