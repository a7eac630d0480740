"""``pressured log``: the last kills from the kill journal, as a table or JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pressured.cli.common import add_config_arguments, report_config_error, settings_from_args
from pressured.errors import ConfigError, UnsafeFileError
from pressured.loops import run_on
from pressured.ops.journal import read_journal_async

COLUMNS: tuple[str, ...] = (
    "TIME",
    "TARGET",
    "POLICY",
    "REASON",
    "RESULT",
    "MRELEASE",
    "SIG>REAPED ms",
    "SIG>EXIT ms",
    "RSS",
)
_MAX_CELL = {"TARGET": 40, "REASON": 48}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, daemon_flags=False, scope_flag=False)
    parser.add_argument(
        "-n", "--lines", type=int, default=20, metavar="N", help="how many kills (default 20)"
    )
    parser.add_argument(
        "--journal", metavar="PATH", help="journal file (default: journal.path from the config)"
    )
    parser.add_argument("--json", action="store_true", help="print the records as JSON lines")


def run(args: argparse.Namespace) -> int:
    path = args.journal
    if path is None:
        try:
            path = settings_from_args(args).journal.path
        except (ConfigError, UnsafeFileError) as exc:
            return report_config_error(exc)
        if path is None:
            print(
                "pressured: no kill journal configured (set journal.path or pass --journal)",
                file=sys.stderr,
            )
            return 1
    try:
        records = read_records(path, max(0, args.lines))
    except FileNotFoundError:
        print(f"pressured: no kill journal at {path} (nothing killed yet?)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pressured: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    if args.json:
        for record in records:
            print(json.dumps(record, sort_keys=True))
    elif records:
        print(format_kills(records))
    else:
        print("no kills recorded")
    return 0


def read_records(path: str, last_n: int) -> list[dict[str, Any]]:
    """The journal's last records, read through aiofiles on one thread this command owns."""
    with ThreadPoolExecutor(1, thread_name_prefix="pressured-log") as io:
        return run_on("asyncio", read_journal_async(path, last_n, io))


def format_kills(records: Iterable[Mapping[str, Any]]) -> str:
    """Kill records (``KillRecord.to_dict()`` shape) as an aligned text table."""
    rows = [COLUMNS, *(_row(record) for record in records)]
    widths = [max(len(row[index]) for row in rows) for index in range(len(COLUMNS))]
    numeric = {"SIG>REAPED ms", "SIG>EXIT ms", "RSS"}
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if name in numeric else cell.ljust(width)
            for name, cell, width in zip(COLUMNS, row, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _row(record: Mapping[str, Any]) -> tuple[str, ...]:
    result = str(record.get("result", "?"))
    if record.get("dry_run") and result != "dry_run":
        result += " (dry)"
    cells = {
        "TIME": _time(record.get("wall_time")),
        "TARGET": str(record.get("target", "?")),
        "POLICY": str(record.get("policy", "")),
        "REASON": str(record.get("reason", "")),
        "RESULT": result,
        "MRELEASE": str(record.get("mrelease") or "-"),
        "SIG>REAPED ms": _ms(record.get("signal_to_reaped_ms")),
        "SIG>EXIT ms": _ms(record.get("signal_to_exit_ms")),
        "RSS": _bytes(record.get("rss_before_bytes")),
    }
    return tuple(_clip(cells[name], _MAX_CELL.get(name)) for name in COLUMNS)


def _clip(text: str, limit: int | None) -> str:
    text = " ".join(text.split())  # reasons may hold newlines
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _time(value: Any) -> str:
    if not isinstance(value, int | float):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def _ms(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.1f}"


def _bytes(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(amount) < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"  # pragma: no cover - loop always returns
