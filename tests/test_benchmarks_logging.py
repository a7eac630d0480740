"""The suite runs its sections in one process: a section that sends pressured's log lines to a
file of its own must leave logging usable once that file is closed."""

from __future__ import annotations

import os

import structlog

from benchmarks.reaction import _logs_to


def test_a_warning_after_the_reaction_section_is_written_not_raised() -> None:
    """The reaction section logged to /dev/null and closed it; a later section's warning (a
    cmdline read timing out under CI load) then raised ValueError on the closed file and
    failed the whole suite."""
    with open(os.devnull, "w", encoding="utf-8") as devnull, _logs_to(devnull):
        structlog.get_logger("pressured.test").info("inside")
    structlog.get_logger("pressured.test").warning("after the section", probe=1)
