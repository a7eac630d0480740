"""``pressured run`` with the soak's one seam (command-line reads that hang: the "stuck" fault)
and, when asked, the 1,024-fd soft limit a service manager usually starts a daemon with.

    python3 -m benchmarks.soak_daemon run --config ...     # what benchmarks/soak.py starts

A process stuck in a page fault (hung FUSE or NFS) blocks every reader of its
``/proc/PID/cmdline``, which the kernel generates under the process's mmap_lock. This kernel
gives no way to make one on demand (userfaultfd drops the lock before it waits, and remote
reads of a userfaultfd range fail fast), so the soak emulates it: when
``PRESSURED_SOAK_STUCK_DIR`` is set, a read of ``/proc/PID/cmdline`` blocks for as long as a
file named PID exists in that directory and the process lives, exactly where the real read
would block. Nothing else changes: this is the daemon the soak measures.
"""

from __future__ import annotations

import os
import resource
import sys
import time

STUCK_DIR_ENV = "PRESSURED_SOAK_STUCK_DIR"
NOFILE_ENV = "PRESSURED_SOAK_NOFILE"
RECHECK_S = 0.05


def install_stuck_reads(stuck_dir: str) -> None:
    from pressured.kernel import procfs

    real_read = procfs._read

    def read(path: str, limit: int = 65536) -> bytes:
        parts = path.rsplit("/", 2)
        if len(parts) == 3 and parts[2] == "cmdline":
            pid = parts[1]
            # A harness-only wait (not part of the daemon): as long as the soak says so.
            while os.path.exists(os.path.join(stuck_dir, pid)) and os.path.exists(f"/proc/{pid}"):
                time.sleep(RECHECK_S)
        return real_read(path, limit)

    procfs._read = read


def main() -> int:
    nofile = os.environ.get(NOFILE_ENV)
    if nofile:
        # Start where a service manager usually starts us (systemd: 1,024 soft), so the
        # 2,000-member group fault meets the limit a daemon meets in the field.
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(int(nofile), hard), hard))
    stuck_dir = os.environ.get(STUCK_DIR_ENV)
    if stuck_dir:
        install_stuck_reads(stuck_dir)
    from pressured.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
