"""``pressured status``: ask a running daemon for its ``/status`` and print it readably."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from pressured.cli.common import add_config_arguments, report_config_error, settings_from_args
from pressured.cli.log import format_kills
from pressured.config import MetricsSettings
from pressured.errors import ConfigError, UnsafeFileError

# Keys whose list values are kill records, printed as the `pressured log` table.
_KILL_KEYS = frozenset({"last_kills", "kills", "recent_kills"})
_MAX_RESPONSE = 4 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, daemon_flags=False, scope_flag=False)
    parser.add_argument(
        "--url",
        metavar="URL",
        help="daemon base URL, e.g. http://127.0.0.1:19464 (default: metrics.host/port from "
        "the config)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.add_argument(
        "--timeout", type=float, default=3.0, metavar="S", help="seconds to wait (default 3)"
    )


def default_url(metrics: MetricsSettings) -> str:
    """Where the daemon configured by ``metrics`` answers, as seen from this host."""
    host = metrics.host
    # A wildcard bind is reachable on loopback; connecting to 0.0.0.0 is not portable.
    if host in ("", "0.0.0.0"):  # noqa: S104 -- comparing, not binding
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{metrics.port}"


def run(args: argparse.Namespace) -> int:
    base = args.url
    if base is None:
        try:
            settings = settings_from_args(args)
        except (ConfigError, UnsafeFileError) as exc:
            return report_config_error(exc)
        if not settings.metrics.enabled:
            print(
                "pressured: the HTTP endpoint is disabled in this configuration "
                "(metrics.enabled = false); pass --url if the daemon uses another",
                file=sys.stderr,
            )
            return 1
        base = default_url(settings.metrics)
    url = base.rstrip("/")
    if not url.endswith("/status"):
        url += "/status"
    if not url.startswith(("http://", "https://")):
        print(f"pressured: not an http URL: {base}", file=sys.stderr)
        return 2
    try:
        # No proxies: the daemon is local, and an http_proxy variable must not reroute us.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=args.timeout) as response:
            body = response.read(_MAX_RESPONSE)
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode(errors="replace").strip()
        print(f"pressured: {url} answered {exc.code}: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(
            f"pressured: no daemon answered at {url} ({reason}); is 'pressured run' running "
            "with metrics enabled?",
            file=sys.stderr,
        )
        return 1
    try:
        status = json.loads(body)
    except ValueError:
        print(f"pressured: {url} did not answer JSON", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    return 0


def format_status(status: Any) -> str:
    """Render a status document: scalars as ``key: value``, mappings as indented sections,
    lists of objects as tables (kill records as the ``pressured log`` table)."""
    lines: list[str] = []
    _render(status, lines, indent=0, key=None)
    return "\n".join(lines)


def _render(value: Any, lines: list[str], *, indent: int, key: str | None) -> None:
    pad = "  " * indent
    if isinstance(value, Mapping):
        scalars = [(k, v) for k, v in value.items() if not _is_nested(v)]
        nested = [(k, v) for k, v in value.items() if _is_nested(v)]
        width = max((len(str(k)) for k, _ in scalars), default=0)
        for name, item in scalars:
            lines.append(f"{pad}{str(name).ljust(width)}  {_scalar(item)}")
        for name, item in nested:
            lines.append(f"{pad}{name}:")
            _render(item, lines, indent=indent + 1, key=str(name))
        return
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if not value:
            lines.append(f"{pad}(none)")
        elif key in _KILL_KEYS and all(isinstance(item, Mapping) for item in value):
            lines.extend(pad + line for line in format_kills(value).splitlines())
        elif all(isinstance(item, Mapping) and not _has_nested(item) for item in value):
            lines.extend(pad + line for line in _table(value))
        else:
            for item in value:
                if _is_nested(item):
                    # YAML-like: "- " on the item's first line, its other lines aligned.
                    sub: list[str] = []
                    _render(item, sub, indent=0, key=key)
                    lines.extend(
                        f"{pad}{'- ' if number == 0 else '  '}{line}"
                        for number, line in enumerate(sub)
                    )
                else:
                    lines.append(f"{pad}- {_scalar(item)}")
        return
    lines.append(f"{pad}{_scalar(value)}")


def _is_nested(value: Any) -> bool:
    return isinstance(value, Mapping) or (
        isinstance(value, Sequence) and not isinstance(value, str | bytes)
    )


def _has_nested(item: Mapping[str, Any]) -> bool:
    return any(_is_nested(value) for value in item.values())


def _table(items: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for item in items:
        columns.extend(str(name) for name in item if str(name) not in columns)
    rows = [[name.upper() for name in columns]]
    rows.extend([_scalar(item.get(name)) for name in columns] for item in items)
    widths = [max(len(row[index]) for row in rows) for index in range(len(columns))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
