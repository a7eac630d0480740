"""The unsafe-file check on the real filesystem: links followed by hand, every directory on the
real path checked, and kubelet's ConfigMap layout accepted on a read-only mount only."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pressured.safety import resolve_trusted, unsafe_reason

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown and mount")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pressured", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def test_link_to_a_file_others_can_write_is_refused(tmp_path: Path) -> None:
    """A safe-looking link is judged by the file it leads to, not by its own name."""
    real = tmp_path / "shared.toml"
    real.write_text("")
    real.chmod(0o666)
    link = private_dir(tmp_path / "etc") / "pressured.toml"
    link.symlink_to(real)
    reason = unsafe_reason(link)
    assert reason is not None
    assert reason.startswith(f"{real} is writable by group or others")


def test_link_into_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """The directory chain of the real file counts, not only the chain of the link's name."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    real = shared / "hook"
    real.write_text("#!/bin/sh\n")
    real.chmod(0o755)
    link = private_dir(tmp_path / "etc") / "hook"
    link.symlink_to(real)
    reason = unsafe_reason(link)
    assert reason is not None
    assert reason.startswith(f"{shared} is writable by group or others")


def test_relative_link_with_dotdot_is_resolved_like_the_kernel(tmp_path: Path) -> None:
    """'link/../file' goes through the link's target, as the kernel resolves it."""
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    shared.chmod(0o777)
    (shared / "config.toml").write_text("")
    etc = private_dir(tmp_path / "etc")
    (etc / "config.toml").write_text("")
    (etc / "into").symlink_to(shared / "sub")
    # Text folding would make this etc/config.toml (safe); the kernel opens shared/config.toml.
    outcome = resolve_trusted(f"{etc}/into/../config.toml")
    assert outcome.reason is not None
    assert outcome.reason.startswith(f"{shared} is writable")


@needs_root
def test_link_planted_by_another_user_in_a_sticky_dir_is_refused(tmp_path: Path) -> None:
    """In a sticky directory a link's owner can replace it: a foreign link is refused."""
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    real = private_dir(tmp_path / "etc") / "config.toml"
    real.write_text("")
    link = sticky / "config.toml"
    link.symlink_to(real)
    os.lchown(link, NOBODY, NOBODY)
    assert unsafe_reason(link) == f"{link} is owned by uid {NOBODY}"


def test_safe_link_gives_the_real_path(tmp_path: Path) -> None:
    """A link through root's own directories is accepted and resolves to the real file."""
    real = private_dir(tmp_path / "opt") / "hook"
    real.write_text("")
    link = private_dir(tmp_path / "etc") / "hook"
    link.symlink_to("../opt/hook")
    outcome = resolve_trusted(link)
    assert outcome.reason is None
    assert outcome.real_path == str(real)


def test_link_loop_is_refused(tmp_path: Path) -> None:
    """A link cycle is reported, not followed forever."""
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    reason = unsafe_reason(tmp_path / "a")
    assert reason is not None
    assert "too many levels of symbolic links" in reason


# -- kubelet's ConfigMap layout ---------------------------------------------------------------

CONFIG = "[daemon]\ndry_run = true\n"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs with a 0777 root, like the volume kubelet mounts; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mount_point = tmp_path / "volume"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0777", "pressured-test", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def kubelet_layout(volume: Path) -> Path:
    """What kubelet's atomic writer builds: a timestamped directory, '..data' pointing at it,
    and each key as a link through '..data'. Directories 0777, as they may be."""
    stamp = volume / "..2026_11_30_03_00_00.000000001"
    stamp.mkdir()
    stamp.chmod(0o777)
    (stamp / "config.toml").write_text(CONFIG)
    (stamp / "config.toml").chmod(0o644)
    (volume / "..data").symlink_to(stamp.name)
    (volume / "config.toml").symlink_to("..data/config.toml")
    return volume / "config.toml"


def remount_read_only(mount_point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)


def test_configmap_on_a_read_only_mount_is_accepted(tmpfs: Path) -> None:
    """kubelet's ConfigMap links and 0777 directories on a read-only mount pass 'check'."""
    config = kubelet_layout(tmpfs)
    remount_read_only(tmpfs)
    done = run_cli("check", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert '"dry_run": true' in done.stdout


def test_configmap_layout_on_a_writable_mount_is_refused(tmpfs: Path) -> None:
    """The same layout on a writable mount is refused: anyone may rewrite that config."""
    config = kubelet_layout(tmpfs)
    done = run_cli("check", "--config", str(config))
    assert done.returncode == 2
    assert f"{tmpfs} is writable by group or others" in done.stderr


def test_read_only_bind_of_a_writable_directory_is_refused(tmp_path: Path, tmpfs: Path) -> None:
    """A read-only view of a filesystem also mounted writable is no protection: refused."""
    kubelet_layout(tmpfs)
    view = tmp_path / "view"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(tmpfs), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        reason = unsafe_reason(view / "config.toml")
        assert reason is not None
        assert f"also mounted writable at {tmpfs}" in reason
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def shipped_configmaps() -> list[tuple[str, str, str]]:
    """(manifest, key, TOML) for every ConfigMap key in examples/kubernetes."""
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the shipped manifests")
    found = []
    for manifest in sorted(
        (Path(__file__).parent.parent / "examples" / "kubernetes").glob("*.yaml")
    ):
        for document in yaml.safe_load_all(manifest.read_text()):
            if isinstance(document, dict) and document.get("kind") == "ConfigMap":
                for key, text in document.get("data", {}).items():
                    found.append((manifest.name, key, text))
    return found


@pytest.mark.parametrize(("manifest", "key", "text"), shipped_configmaps())
def test_shipped_manifests_config_passes_check_as_kubelet_mounts_it(
    tmpfs: Path, manifest: str, key: str, text: str
) -> None:
    """Each shipped ConfigMap, laid out as kubelet mounts it (read-only), passes 'check'."""
    stamp = tmpfs / "..2026_11_30_03_00_00.000000001"
    stamp.mkdir()
    stamp.chmod(0o777)
    (stamp / key).write_text(text)
    (tmpfs / "..data").symlink_to(stamp.name)
    (tmpfs / key).symlink_to(f"..data/{key}")
    remount_read_only(tmpfs)
    done = run_cli("check", "--config", str(tmpfs / key))
    assert done.returncode == 0, f"{manifest}: {done.stderr}"
