"""pressured.testing: the kit plugin authors use to test policies without root."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
from typing import ClassVar

import pytest

import pressured.testing as kit
from pressured.config import GuardSettings
from pressured.events import VictimKind
from pressured.policies.base import BasePolicy, Decision, NoOptions, Victim
from pressured.policies.largest import LargestPolicy
from pressured.snapshot import Snapshot
from pressured.testing import (
    SELF_PID,
    assert_kills,
    assert_no_action,
    kernel_oom_score,
    make_cgroup,
    make_policy,
    make_process,
    make_snapshot,
    policykit,
    run_chain,
    run_policy,
    run_policy_async,
)


class Garbage(BasePolicy[NoOptions]):
    name: ClassVar[str] = "garbage"

    async def __call__(self, snapshot: Snapshot) -> Decision:
        return "kill everything"  # type: ignore[return-value]


def test_all_is_honest() -> None:
    """Every name in __all__ resolves, and every public helper of the kit is in __all__."""
    for name in kit.__all__:
        assert getattr(kit, name) is not None
    helpers = {
        name
        for name, value in vars(policykit).items()
        if inspect.isfunction(value) and value.__module__ == policykit.__name__
    }
    assert {name for name in helpers if not name.startswith("_")} <= set(kit.__all__)


def test_import_is_light_and_needs_no_scratch_module() -> None:
    """Importing pressured.testing loads neither scratch nor pydantic (workloads stay small)."""
    code = (
        "import sys, pressured.testing; "
        "print('pressured.testing.scratch' in sys.modules, 'pydantic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_unknown_attribute_is_an_attribute_error() -> None:
    """The lazy loader does not invent names."""
    with pytest.raises(AttributeError):
        _ = kit.no_such_helper


def test_kernel_oom_score_matches_the_kernel() -> None:
    """A small adj-0 process scores 666, as /proc/self/oom_score shows."""
    assert kernel_oom_score(0, 0) == 666
    assert kernel_oom_score(0, 1000) == 1333
    assert kernel_oom_score(500, -1000) == 0


def test_make_process_defaults() -> None:
    """Defaults: start_time from the pid, cmdline from comm, score from the formula."""
    record = make_process(42, comm="java", rss_mib=1024, swap_mib=1024)
    assert (record.start_time, record.cmdline) == (4200, "java")
    assert record.memory_bytes == 2048 * 2**20
    assert record.oom_score == kernel_oom_score(2048, 0)


def test_make_process_kernel_thread() -> None:
    """A kernel thread has no cmdline and uid 0."""
    record = make_process(2, comm="kthreadd", kernel_thread=True)
    assert record.is_kernel_thread
    assert (record.cmdline, record.uid) == ("", 0)


def test_make_snapshot_system_scope() -> None:
    """Without cgroups the scope is the system and self_pid is out of the way."""
    snapshot = make_snapshot(processes=[make_process(1)])
    assert snapshot.scope == "system"
    assert snapshot.self_pid == SELF_PID
    assert snapshot.event.level == "some"


def test_make_snapshot_makes_the_scope_group() -> None:
    """Child groups get their parent scope group put first."""
    snapshot = make_snapshot(
        cgroups=[make_cgroup("/jobs/a", usage_mib=10), make_cgroup("/jobs/b", usage_mib=30)]
    )
    assert [g.path for g in snapshot.cgroups] == ["/jobs", "/jobs/a", "/jobs/b"]
    assert snapshot.cgroups[0].usage_bytes == 40 * 2**20
    assert snapshot.scope == "/jobs"


def test_make_snapshot_single_child_gets_a_scope() -> None:
    """One child group is still a child, not the scope."""
    snapshot = make_snapshot(cgroups=[make_cgroup("/jobs/a")])
    assert [g.path for g in snapshot.cgroups] == ["/jobs", "/jobs/a"]


def test_make_snapshot_keeps_a_given_scope_group() -> None:
    """A scope group passed first is used as it is."""
    scope = make_cgroup("/jobs", usage_mib=999)
    snapshot = make_snapshot(cgroups=[scope, make_cgroup("/jobs/a")])
    assert snapshot.cgroups[0] is scope


def test_make_snapshot_fills_members_from_processes() -> None:
    """Groups without pids get the processes whose cgroup is inside them."""
    snapshot = make_snapshot(
        processes=[make_process(10, cgroup="/jobs/a/x"), make_process(11, cgroup="/jobs/b")],
        cgroups=[make_cgroup("/jobs/a"), make_cgroup("/jobs/b")],
    )
    assert [g.pids for g in snapshot.cgroups] == [(10, 11), (10,), (11,)]


def test_swap_free_percent_implies_swap() -> None:
    """Giving swap_free_percent alone makes 1 GiB of swap that much free."""
    memory = make_snapshot(swap_free_percent=25).memory
    assert memory is not None
    assert memory.swap_total_bytes == 2**30
    assert memory.swap_free_percent == 25


def test_no_swap_by_default() -> None:
    """Without swap arguments the host has no swap."""
    memory = make_snapshot().memory
    assert memory is not None
    assert memory.swap_total_bytes == 0


def test_at_s_sets_the_snapshot_clock() -> None:
    """at_s is the monotonic time policies see."""
    assert make_snapshot(at_s=2.5).taken_monotonic_ns == 2_500_000_000


def test_pressure_full_line_only_when_given() -> None:
    """make_cgroup leaves out the full line unless its avg10 is given."""
    assert make_cgroup("/a").pressure is not None
    assert make_cgroup("/a").pressure.full is None  # type: ignore[union-attr]
    assert make_cgroup("/a", pressure_full_avg10=5).pressure.full.avg10 == 5  # type: ignore[union-attr]


def test_run_policy_with_class_and_options() -> None:
    """run_policy builds the class with validated options."""
    snapshot = make_snapshot(processes=[make_process(10, rss_mib=5), make_process(11, rss_mib=50)])
    assert_kills(run_policy(LargestPolicy, snapshot, min_mib=1), pid=11)


def test_run_policy_refuses_options_with_an_instance() -> None:
    """Options go with a class; an instance already has its own."""
    with pytest.raises(TypeError):
        run_policy(make_policy(LargestPolicy), make_snapshot(), min_mib=1)


def test_run_policy_reports_malformed_decisions() -> None:
    """A malformed decision fails loudly, saying why."""
    with pytest.raises(AssertionError, match="malformed decision: returned str"):
        run_policy(Garbage, make_snapshot())


def test_run_policy_inside_a_loop_points_to_the_async_form() -> None:
    """Inside a running loop run_policy says to await run_policy_async."""

    async def inside() -> None:
        with pytest.raises(RuntimeError, match="run_policy_async"):
            run_policy(LargestPolicy, make_snapshot())
        assert_no_action(await run_policy_async(LargestPolicy, make_snapshot()))

    asyncio.run(inside())


def test_make_policy_checks_the_contract() -> None:
    """make_policy refuses a class that breaks the contract."""

    class Nameless(BasePolicy[NoOptions]):
        async def __call__(self, snapshot: Snapshot) -> Decision:
            return Decision.no_action("x")

    with pytest.raises(Exception, match="'name'"):
        make_policy(Nameless)


def test_assert_kills_explains_a_mismatch() -> None:
    """A wrong victim fails with the decision's victims, reason and ranking."""
    decision = Decision.kill(Victim.process(make_process(10), "big"), ranking=(("10 worker", 5),))
    with pytest.raises(AssertionError, match=r"expected pid 11 .*pid 10.*'big'.*10 worker=5"):
        assert_kills(decision, pid=11)


def test_assert_kills_on_no_action() -> None:
    """Expecting a kill from a no-action decision fails with its reason."""
    with pytest.raises(AssertionError, match=r"got no action.*calm"):
        assert_kills(Decision.no_action("calm"), pid=1)


def test_assert_kills_cgroup_kind() -> None:
    """A process victim does not satisfy a cgroup expectation."""
    decision = Decision.kill(Victim.process(make_process(10, cgroup="/a"), "x"))
    with pytest.raises(AssertionError):
        assert_kills(decision, cgroup="/a")


def test_assert_kills_returns_the_victim() -> None:
    """assert_kills hands back the victim for further checks."""
    decision = Decision.kill(Victim.group(make_cgroup("/a"), "x"))
    assert assert_kills(decision, cgroup="/a").kind is VictimKind.CGROUP


def test_assert_kills_needs_exactly_one_target() -> None:
    """pid= and cgroup= are exclusive."""
    with pytest.raises(TypeError):
        assert_kills(Decision.no_action("x"))


def test_assert_no_action_fails_on_a_kill() -> None:
    """assert_no_action names the victim it did not expect."""
    with pytest.raises(AssertionError, match="pid 10"):
        assert_no_action(Decision.kill(Victim.process(make_process(10), "x")))


def test_run_chain_applies_the_real_guard() -> None:
    """run_chain refuses protected victims as the daemon would."""
    snapshot = make_snapshot(processes=[make_process(10, rss_mib=900, cgroup="/init.scope")])
    result = run_chain(snapshot, make_policy(LargestPolicy))
    assert_no_action(result.decision)
    assert "protected cgroup" in result.rejected[0][2]


def test_run_chain_with_custom_guard_settings() -> None:
    """run_chain takes GuardSettings to try a protection configuration."""
    snapshot = make_snapshot(processes=[make_process(10, rss_mib=900, cgroup="/init.scope")])
    result = run_chain(
        snapshot, make_policy(LargestPolicy), guard=GuardSettings(protect_cgroups=())
    )
    assert_kills(result.decision, pid=10)
