"""The one command: ``python3 -m benchmarks [--smoke] [--only relief,...] [--out DIR]``.

Runs the sections in order (relief, reaction, episodes, idle), prints a progress line per
step and each section's tables as they finish, writes the JSON (``results.json``, or
``smoke.json`` in smoke mode) and the markdown report. A full run of every section writes
``BENCHMARKS.md`` at the top of the repository; smoke and partial runs write theirs next to
the JSON unless ``--markdown`` says where.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import episodes, group_kill, idle, reaction, relief, startup, victims
from benchmarks.common import (
    REPO,
    Config,
    Progress,
    Section,
    Table,
    load_average,
    machine_facts,
    sigterm_as_interrupt,
)
from benchmarks.report import render_markdown, targets_table, text_table, write_json

Runner = Callable[[Config, Progress], Section]
SECTIONS: dict[str, Runner] = {
    "relief": relief.run,
    "reaction": reaction.run,
    "episodes": episodes.run,
    "idle": idle.run,
    "startup": startup.run,
    "victims": victims.run,
    "group_kill": group_kill.run,
}
TABLE_IDS = {
    "relief": ("relief",),
    "reaction": ("reaction", "reaction_split", "reaction_files"),
    "episodes": ("episodes", "episodes_pollers"),
    "idle": ("idle", "idle_memory"),
    "startup": ("startup_times", "startup_trigger_close", "startup_imports"),
    "victims": ("victims", "victims_decision"),
    "group_kill": ("group_kill",),
}
DEFAULT_OUT = REPO / "benchmarks" / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks",
        description="pressured's benchmark suite (needs root for cgroups and real pressure).",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="small sizes, one repetition (about a minute; what CI runs)",
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated sections to run: {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="directory for the JSON results (default: benchmarks/results)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="where to write the report (default: BENCHMARKS.md for a full "
        "run, OUT/BENCHMARKS.<smoke|partial>.md otherwise)",
    )
    parser.add_argument(
        "--starve",
        choices=("idle", "quota"),
        default=None,
        help="how to starve relief victims: SCHED_IDLE beside a busy loop "
        "(default) or a 1 %% v1 CPU quota",
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="repetitions per relief size (default 5; smoke 1)"
    )
    parser.add_argument(
        "--reps-8g",
        type=int,
        default=None,
        help="repetitions for the 8 GiB relief victim (default: as --reps)",
    )
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace) -> Config:
    config = Config.smoke_config() if args.smoke else Config()
    changes: dict[str, Any] = {}
    if args.starve:
        changes["starve"] = args.starve
    if args.reps is not None or args.reps_8g is not None:
        reps = [args.reps if args.reps is not None else r for r in config.relief_reps]
        if args.reps_8g is not None:
            reps = [
                args.reps_8g if size == 8192 else r
                for size, r in zip(config.relief_sizes_mib, reps, strict=True)
            ]
        changes["relief_reps"] = tuple(reps)
    return dataclasses.replace(config, **changes)


def _failed_section(name: str, exc: BaseException) -> Section:
    section = Section(name, skipped=f"failed: {type(exc).__name__}: {exc}")
    for table_id in TABLE_IDS[name]:
        section.tables.append(
            Table(
                table_id,
                f"{name}: {table_id} (failed)",
                ["error"],
                [[f"{type(exc).__name__}: {exc}"]],
            )
        )
    return section


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = make_config(args)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(SECTIONS)
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        print(
            f"unknown section(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}",
            file=sys.stderr,
        )
        return 2
    full = not config.smoke and chosen == list(SECTIONS)
    mode = "smoke" if config.smoke else ("full" if full else "partial")
    json_path = args.out / ("smoke.json" if config.smoke else "results.json")
    markdown = args.markdown or (
        REPO / "BENCHMARKS.md" if full else args.out / f"BENCHMARKS.{mode}.md"
    )
    progress = Progress()
    started_wall = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    load_before = load_average()
    machine = machine_facts()
    progress("suite", f"{mode} run of {', '.join(chosen)}; load average {load_before}")
    sections: list[Section] = []
    failed = False
    with sigterm_as_interrupt():
        for name in chosen:
            began = time.monotonic()
            progress(name, "starting")
            try:
                section = SECTIONS[name](config, progress)
            except KeyboardInterrupt:
                progress(name, "interrupted: cleaned up, stopping")
                raise
            except Exception as exc:
                traceback.print_exc()
                section = _failed_section(name, exc)
                failed = True
            section.duration_s = time.monotonic() - began
            sections.append(section)
            progress(name, f"done in {section.duration_s:.0f} s")
            for table in section.tables:
                print("\n" + text_table(table) + "\n", flush=True)
    duration = time.monotonic() - progress.started
    load_after = load_average()
    warnings = []
    if max(load_before[0], load_after[0]) > 0.5:
        warnings.append(
            f"The machine was not idle (load average {load_before} before, {load_after} "
            "after): other work shared these 2 CPUs, so tails are wider than on a quiet "
            "machine. Regenerate on a quiet machine for reference figures."
        )
    if config.smoke:
        warnings.append(
            "Smoke mode: small sizes and one repetition; the figures only show "
            "that the suite runs, they are not measurements."
        )
    result: dict[str, Any] = {
        "meta": {
            "command": " ".join(
                ["python3 -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
            ).strip(),
            "mode": mode,
            "smoke": config.smoke,
            "started": started_wall.isoformat(),
            "duration_s": round(duration, 1),
            "load_before": load_before,
            "load_after": load_after,
            "machine": machine,
            "config": dataclasses.asdict(config),
            "json": _relative(json_path),
            "markdown": _relative(markdown),
            "warnings": warnings,
        },
        "sections": {section.name: section.to_dict() for section in sections},
        "targets": [t.to_dict() for s in sections for t in s.targets],
    }
    write_json(json_path, result)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(render_markdown(result, sections))
    print(text_table(targets_table([t for s in sections for t in s.targets])))
    progress(
        "suite",
        f"finished in {duration:.0f} s; wrote {_relative(json_path)} and {_relative(markdown)}",
    )
    return 1 if failed else 0


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)
