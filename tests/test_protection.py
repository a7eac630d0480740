"""Protection by identity: executable (device + inode), uid and cgroup, never a name alone."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from pressured.config import GuardSettings, ProtectRule, validate_settings
from pressured.errors import ConfigError
from pressured.guard import Guard
from pressured.kernel import procfs
from pressured.kernel.procfs import ProcessRecord
from pressured.protection import Protection, file_id
from pressured.snapshot import Snapshot
from pressured.testing import make_process, make_snapshot

SELF = 4242


def protection(**settings: object) -> Protection:
    return Protection(GuardSettings.model_validate(settings), self_pid=SELF)


def with_exe(record: ProcessRecord, path: str) -> ProcessRecord:
    identity = file_id(path)
    assert identity is not None
    return dataclasses.replace(record, exe_dev=identity[0], exe_ino=identity[1])


@pytest.fixture
def fake_sshd(tmp_path: Path) -> Path:
    """A file standing for /usr/sbin/sshd (this host has none)."""
    path = tmp_path / "sshd"
    path.write_bytes(b"\x7fELF not really")
    return path


def test_impostor_named_sshd_is_not_protected_by_default() -> None:
    """A root thrasher calling itself sshd (comm and cmdline) is not protected by default."""
    impostor = make_process(50, comm="sshd", cmdline="sshd: root@pts/0", uid=0)
    assert protection().process(impostor) is None


def test_real_executable_is_protected_whatever_its_name(fake_sshd: Path) -> None:
    """The configured binary protects by device and inode, even under another name."""
    p = protection(protect_executables=[str(fake_sshd)])
    renamed = with_exe(make_process(51, comm="innocent", uid=1000), str(fake_sshd))
    assert p.process(renamed) == f"protected executable {fake_sshd}"


def test_same_bytes_in_another_file_are_not_the_protected_executable(
    fake_sshd: Path, tmp_path: Path
) -> None:
    """A copy of the binary is another inode: running it gains no protection."""
    copy = tmp_path / "copy-of-sshd"
    shutil.copy(fake_sshd, copy)
    p = protection(protect_executables=[str(fake_sshd)])
    assert p.process(with_exe(make_process(52, comm="sshd"), str(copy))) is None


def test_default_cgroups_protect_init_and_sshd_services() -> None:
    """Processes in /init.scope and the ssh services are protected; a look-alike path is not."""
    p = protection()
    assert "/init.scope" in (p.process(make_process(60, cgroup="/init.scope")) or "")
    sshd = make_process(61, cgroup="/system.slice/ssh.service")
    assert "ssh.service" in (p.process(sshd) or "")
    lookalike = make_process(62, cgroup="/jobs/ssh.service")
    assert p.process(lookalike) is None


def test_name_and_cmdline_need_an_identity_to_protect() -> None:
    """A rule with only a name (or cmdline) is a configuration error naming the field."""
    with pytest.raises(ValidationError, match="needs exe, uid or cgroup"):
        ProtectRule(name="postgres")
    with pytest.raises(ConfigError) as info:
        validate_settings({"guard": {"protect": [{"cmdline": "--primary"}]}})
    assert info.value.field == "guard.protect.0"


def test_rule_combines_name_with_uid() -> None:
    """``{name, uid}`` protects that name only when run by that uid."""
    p = protection(protect=[{"name": "postgres", "uid": 70}])
    assert "name='postgres'" in (p.process(make_process(70, comm="postgres", uid=70)) or "")
    assert p.process(make_process(71, comm="postgres", uid=1000)) is None


def test_rule_combines_name_with_executable(fake_sshd: Path) -> None:
    """``{name, exe}``: the name must match and the binary must be that file."""
    p = protection(protect=[{"name": "sshd", "exe": str(fake_sshd)}])
    real = with_exe(make_process(72, comm="sshd"), str(fake_sshd))
    assert p.process(real) is not None
    assert p.process(with_exe(make_process(73, comm="sshd"), sys.executable)) is None


def test_rule_naming_a_missing_executable_matches_nothing(tmp_path: Path) -> None:
    """A rule whose binary is absent on this host protects nobody (not everybody)."""
    p = protection(protect=[{"uid": 0, "exe": str(tmp_path / "absent")}])
    assert p.process(make_process(74, uid=0)) is None


def test_legacy_protect_names_only_cover_root_owned_processes() -> None:
    """protect_names still works, for root-owned processes: a user's 'sshd' is not protected,
    and a warning at start-up says so."""
    with capture_logs() as logs:
        p = protection(protect_names=["sshd"])
    assert [e for e in logs if e["event"] == "protection.names_root_only"]
    assert "root-owned" in (p.process(make_process(80, comm="sshd", uid=0)) or "")
    assert p.process(make_process(81, comm="sshd", uid=1000)) is None


def test_missing_default_executables_are_skipped() -> None:
    """Default paths absent on this host are simply not resolved."""
    p = protection(protect_executables=["/nonexistent/sshd", sys.executable])
    assert list(p.executables.values()) == [sys.executable]


def test_relative_executable_path_is_refused() -> None:
    """A relative path in protect_executables fails loudly."""
    with pytest.raises(ConfigError) as info:
        validate_settings({"guard": {"protect_executables": ["sshd"]}})
    assert info.value.field == "guard.protect_executables"


@pytest.fixture
def renamed_child() -> Iterator[subprocess.Popen[bytes]]:
    """A real ``sleep`` whose comm is set to 'sshd' (the kernel lets any process do that)."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import ctypes, sys, time\n"
            "ctypes.CDLL(None).prctl(15, b'sshd', 0, 0, 0)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    yield child
    child.kill()
    child.wait()


def test_real_renamed_process_is_judged_by_its_executable(
    renamed_child: subprocess.Popen[bytes],
) -> None:
    """On the real /proc: a python process named sshd is unprotected; protecting python's own
    binary protects it (its exe is read from /proc/PID/exe, lock-free)."""
    record = procfs.read_process(renamed_child.pid)
    assert record.comm == "sshd"
    assert protection(protect_names=[]).process(record) is None
    binary = os.path.realpath(sys.executable)
    assert protection(protect_executables=[binary]).process(record) == (
        f"protected executable {binary}"
    )


def test_reused_pid_does_not_lend_its_executable(renamed_child: subprocess.Popen[bytes]) -> None:
    """A record whose start time is not the live process's gets no protection from it."""
    record = procfs.read_process(renamed_child.pid)
    stale = dataclasses.replace(record, start_time=record.start_time - 1)
    binary = os.path.realpath(sys.executable)
    assert protection(protect_executables=[binary]).process(stale) is None


def _snapshot_with_protected_largest() -> Snapshot:
    big = make_process(90, comm="sshd", rss_mib=640, cgroup="/system.slice/ssh.service")
    small = make_process(91, rss_mib=30)
    snap = make_snapshot([big, small])
    return dataclasses.replace(snap, protected=frozenset({90}))


def test_protected_largest_consumer_is_logged_loudly() -> None:
    """When protection keeps the largest process out, a warning names it, its size and rule."""
    guard = Guard(GuardSettings(), self_pid=SELF)
    with capture_logs() as logs:
        guard.review(_snapshot_with_protected_largest())
    (line,) = [entry for entry in logs if entry["event"] == "protection.largest_excluded"]
    assert line["log_level"] == "warning"
    assert line["pid"] == 90 and line["comm"] == "sshd"
    assert line["bytes"] == 640 * 2**20
    assert "ssh.service" in line["rule"]


def test_unprotected_largest_consumer_is_not_logged() -> None:
    """No warning when the largest process is a candidate."""
    guard = Guard(GuardSettings(), self_pid=SELF)
    snap = make_snapshot([make_process(92, rss_mib=640), make_process(93, rss_mib=30)])
    with capture_logs() as logs:
        guard.review(snap)
    assert not [entry for entry in logs if entry["event"] == "protection.largest_excluded"]


def test_records_carry_the_executable_read_by_the_protection_pass(
    renamed_child: subprocess.Popen[bytes],
) -> None:
    """After review, records have exe_dev/exe_ino (the scan's stat), so checks need no stat."""
    record = procfs.read_process(renamed_child.pid)
    assert record.exe_dev is None
    guard = Guard(GuardSettings(), self_pid=SELF)
    assert guard.process_protection(record) is None  # the scan's protection pass
    reviewed = guard.review(make_snapshot([record])).process(renamed_child.pid)
    assert reviewed is not None
    assert (reviewed.exe_dev, reviewed.exe_ino) == file_id(f"/proc/{renamed_child.pid}/exe")


def test_any_process_can_rewrite_its_name_and_command_line() -> None:
    """Kernel fact behind #12.1: prctl(PR_SET_NAME) plus a write of /proc/self/mem over the
    argv area change what /proc/PID/comm and cmdline say, with no privilege; the executable
    (and so the default protection) stays what it was."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom pressured.testing.culprits import disguise\ndisguise()\n"
            "print('ready', flush=True)\ntime.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        record = procfs.read_process(child.pid)
        assert record.comm == "sshd"
        assert record.cmdline == "sshd: root@pts/0"
        assert os.path.realpath(f"/proc/{child.pid}/exe") == os.path.realpath(sys.executable)
        assert protection().process(record) is None
    finally:
        child.kill()
        child.wait()
