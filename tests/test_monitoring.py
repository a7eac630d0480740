"""examples/monitoring: the alert rules and the Grafana dashboard are valid, and every metric
and label their queries name is one pressured really exports.

``promtool`` (Debian's ``prometheus`` package; ``.ci/run`` installs it) checks the rules, runs
their unit tests, and checks the dashboard's queries as PromQL. Where it is absent those tests
skip and say so; CI fails its install step instead of skipping.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pressured.events import (
    EventSource,
    KillReason,
    KillRecord,
    KillResult,
    PressureEvent,
    VictimKind,
)
from pressured.kernel import psi
from pressured.kernel.pidfd import MreleaseResult, MreleaseStatus
from pressured.ops.metrics import Metrics

MONITORING = Path(__file__).resolve().parent.parent / "examples" / "monitoring"
ALERTS = MONITORING / "pressured-alerts.yml"
ALERT_TESTS = MONITORING / "pressured-alerts.test.yml"
DASHBOARD = MONITORING / "pressured-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (apt-get install prometheus; .ci/run installs it)",
)

# Labels Prometheus itself attaches to every scraped series, and the histogram bucket label.
TARGET_LABELS = frozenset({"instance", "job"})
# Series Prometheus makes itself for every target rather than reading them from /metrics.
PROMETHEUS_OWN = frozenset({"up"})
# Grafana's variables, replaced by what Grafana would put there so promtool can parse.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "6h",
    "$__interval": "30s",
    '"$instance"': '".*"',
}

_METRIC_NAME = re.compile(r"\b((?:pressured|process)_[a-z0-9_]+|up)\b(?!\s*\()")
_SELECTOR = re.compile(r"\b([a-z_][a-z0-9_]*)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-z_][a-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def _yaml() -> Any:
    # PyYAML is a test dependency; importorskip keeps mypy off its missing type stubs.
    return pytest.importorskip("yaml")


def run_promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    document = _yaml().safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries() -> list[str]:
    """Every PromQL expression in the dashboard: panel targets, annotations, variables."""
    board = dashboard()
    queries = [
        target["expr"] for panel in _panels(board["panels"]) for target in panel.get("targets", [])
    ]
    queries += [item["expr"] for item in board["annotations"]["list"] if "expr" in item]
    for variable in board["templating"]["list"]:
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable.get("definition", ""))
        if match:
            queries.append(f"count by ({match[2]}) ({match[1]})")
    return queries


def all_queries() -> list[str]:
    return dashboard_queries() + [str(rule["expr"]) for rule in alert_rules()]


def exercised_metrics() -> Metrics:
    """A real Metrics object fed one of everything, so every family has samples with labels."""
    metrics = Metrics(loop_name="uvloop")
    event = PressureEvent(scope="/jobs", level="some", source=EventSource.PSI)
    record = KillRecord(
        kind=VictimKind.PROCESS,
        target="pid 4242 (hog)",
        pid=4242,
        comm="hog",
        cgroup="/jobs",
        policy="oom_score",
        reason="highest oom_score",
        scope="/jobs",
        level="some",
        result=KillResult.KILLED,
        signal="SIGKILL",
        rss_before_bytes=1 << 20,
        mrelease=MreleaseResult(MreleaseStatus.REAPED, 0, 1000),
        decision_to_signal_ms=0.3,
        signal_to_reaped_ms=2.0,
        signal_to_exit_ms=3.0,
        kill_reason=KillReason.STALL,
    )

    async def feed() -> None:
        await metrics.on_pressure(event)
        await metrics.on_kill(record)

    asyncio.run(feed())
    metrics.observe_scan("/jobs", "partial", 2)
    metrics.observe_decision("/jobs", 0.002, "kill")
    metrics.observe_policy("oom_score", 0.001, "timeout")
    metrics.observe_hook("post_kill", "ok", 0.01)
    metrics.set_triggers("/jobs", 1)
    metrics.journal_failed()
    metrics.watch_pressure("system", lambda: psi.read_pressure(psi.system_pressure_path("memory")))
    return metrics


def exported_series(exposition: str) -> dict[str, set[str]]:
    """Sample name -> label names, from an exposition; families without samples are listed
    under every name their type produces (a counter's ``_total``, a histogram's three)."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        names = {
            "counter": [f"{family.name}_total"],
            "histogram": [f"{family.name}_{s}" for s in ("bucket", "sum", "count")],
            "info": [f"{family.name}_info"],
        }.get(family.type, [family.name])
        for name in names:
            series.setdefault(name, set())
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def metric_names(query: str) -> set[str]:
    return set(_METRIC_NAME.findall(query))


def unknown_metrics(queries: list[str], series: dict[str, set[str]]) -> dict[str, set[str]]:
    """Query -> the metric names it uses that the exposition does not have."""
    unknown = {}
    for query in queries:
        missing = metric_names(query) - set(series) - PROMETHEUS_OWN
        if missing:
            unknown[query] = missing
    return unknown


def unknown_labels(queries: list[str], series: dict[str, set[str]]) -> dict[str, set[str]]:
    """Query -> label names in its selectors or groupings that none of its metrics carries."""
    unknown: dict[str, set[str]] = {}
    for query in queries:
        names = metric_names(query) - PROMETHEUS_OWN
        for metric, matchers in _SELECTOR.findall(query):
            if metric in PROMETHEUS_OWN:
                continue
            labels = set(_MATCHER.findall(matchers)) - TARGET_LABELS
            missing = labels - series.get(metric, set())
            if missing:
                unknown.setdefault(query, set()).update(missing)
        carried = set().union(*(series.get(name, set()) for name in names)) | TARGET_LABELS
        for grouping in _GROUPING.findall(query):
            labels = {label.strip() for label in grouping.split(",") if label.strip()}
            missing = labels - carried
            if missing:
                unknown.setdefault(query, set()).update(missing)
    return unknown


# -- the files themselves --------------------------------------------------------------------------


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    """``promtool check rules`` accepts the alert rules file."""
    result = run_promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


@needs_promtool
def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    """``promtool test rules``: a kill, a blind daemon, a down target, a watchdog kill and a
    starved trigger each fire their alert with the expected labels and text (and not before)."""
    result = run_promtool("test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every dashboard query, Grafana variables filled in, parses as PromQL (promtool checks it
    as a recording rule)."""
    rules = []
    for number, query in enumerate(dashboard_queries()):
        filled = query
        for variable, value in GRAFANA_VARIABLES.items():
            filled = filled.replace(variable, value)
        assert "$" not in filled, f"unreplaced Grafana variable in {query}"
        rules.append({"record": f"dashboard:query_{number}", "expr": filled})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(_yaml().safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_a_grafana_dashboard() -> None:
    """The JSON has what Grafana's import needs: a title, uid, schema version, a Prometheus
    data-source variable every panel uses, unique panel ids and non-overlapping grid spots."""
    board = dashboard()
    assert board["title"] and board["uid"] and board["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(_panels(board["panels"]))
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        spots = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not spots & cells, f"{panel['title']} overlaps another panel"
        cells |= spots
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


# -- the queries name what pressured exports ---------------------------------------------------


def test_every_queried_metric_and_label_is_exported() -> None:
    """Each metric the dashboard and the alerts query, and each label they select or group
    by, is in a real Metrics registry's exposition (fed one of everything)."""
    series = exported_series(generate_latest(exercised_metrics().registry).decode())
    queries = all_queries()
    assert len(queries) > 20
    assert unknown_metrics(queries, series) == {}
    assert unknown_labels(queries, series) == {}


def test_checker_catches_a_misspelt_metric_and_label() -> None:
    """The check above can fail: a renamed metric or a label pressured does not have is found."""
    series = exported_series(generate_latest(exercised_metrics().registry).decode())
    bad = [
        'sum(rate(pressured_kill_total{result="killed"}[5m]))',
        'sum by (reason) (pressured_kills_total{level="some"})',
    ]
    assert unknown_metrics(bad, series) == {bad[0]: {"pressured_kill_total"}}
    assert unknown_labels(bad[1:], series) == {bad[1]: {"reason", "level"}}
