"""``pressured doctor``: what this host supports and what pressured will do here.

The checks live in :mod:`pressured.doctor`; this module only renders them, as an aligned table
(coloured on a terminal) or, with ``--json``, as the same facts for machines. Exit code 0 when
pressured can run here, 1 when an essential feature is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
from typing import TextIO

from pressured.doctor import DoctorReport, Status, run_doctor

EXIT_OK = 0
EXIT_CANNOT_RUN = 1
_PLAIN_WIDTH = 100
_COLOURS = {Status.OK: "\033[32m", Status.WARN: "\033[33m", Status.FAIL: "\033[31;1m"}
_RESET = "\033[0m"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the checks as JSON instead of a table"
    )
    parser.add_argument(
        "--proc-root", default="/proc", metavar="DIR", help="procfs root (default: /proc)"
    )


def render_table(report: DoctorReport, *, width: int, colour: bool) -> str:
    """An aligned table: one row per check, its remedy on the next line when not ok."""
    name_width = max(len("CHECK"), *(len(check.name) for check in report.checks))
    status_width = max(len("STATUS"), *(len(str(status)) for status in Status))
    indent = name_width + status_width + 4
    detail_width = max(30, width - indent)
    lines = [f"{'CHECK':<{name_width}}  {'STATUS':<{status_width}}  DETAIL"]
    for check in report.checks:
        status = f"{check.status!s:<{status_width}}"
        if colour:
            status = f"{_COLOURS[check.status]}{status}{_RESET}"
        wrapped = textwrap.wrap(check.detail, detail_width) or [""]
        lines.append(f"{check.name:<{name_width}}  {status}  {wrapped[0]}")
        lines.extend(" " * indent + more for more in wrapped[1:])
        if check.remedy:
            remedy = textwrap.wrap(f"fix: {check.remedy}", detail_width, subsequent_indent="     ")
            lines.extend(" " * indent + part for part in remedy)
    lines.append("")
    if report.triggers is not None:
        lines.append(f"Trigger windows: {report.triggers.describe()}.")
    counts = report.counts()
    tally = f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failure(s)"
    if report.can_run:
        lines.append(f"Result: pressured can run here ({tally}).")
    else:
        missing = ", ".join(
            c.name for c in report.checks if c.essential and c.status is Status.FAIL
        )
        lines.append(f"Result: pressured cannot run here: {missing} failed ({tally}).")
    return "\n".join(lines)


def _use_colour(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def run(args: argparse.Namespace) -> int:
    report = run_doctor(args.proc_root)
    out = sys.stdout
    if args.json:
        json.dump(report.as_dict(), out, indent=2)
        out.write("\n")
    else:
        width = shutil.get_terminal_size((_PLAIN_WIDTH, 24)).columns if out.isatty() else 0
        out.write(render_table(report, width=width or _PLAIN_WIDTH, colour=_use_colour(out)))
        out.write("\n")
    return EXIT_OK if report.can_run else EXIT_CANNOT_RUN
