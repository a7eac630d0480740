"""Reading the configuration file again on reload, without the loop waiting on the disk.

At start-up the configuration is read before any loop exists, plainly. A reload (SIGHUP)
happens while the controller is serving: the file check (:mod:`pressured.safety` walks every
directory on the real path) and the read then run through aiofiles on the daemon's own I/O
thread, and only the parsing, which is CPU work on a few kilobytes, runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import tomllib
from concurrent.futures import Executor
from typing import Any

import aiofiles

from pressured.errors import ConfigError
from pressured.safety import trusted_real_path

__all__ = ["read_config_file"]

_MAX_CONFIG_BYTES = 1 << 20  # far above any real configuration; a bound on a bad path


async def read_config_file(path: str | os.PathLike[str], executor: Executor) -> dict[str, Any]:
    """The TOML document at ``path`` as a dict, every file access on ``executor``.

    Raises :class:`~pressured.errors.UnsafeFileError` when another user could change the
    file (the check :func:`pressured.cli.common.settings_from_args` makes) and
    :class:`~pressured.errors.ConfigError` (field ``<file>``) when it cannot be read or is
    not TOML, with the words :func:`pressured.config.read_toml` uses.
    """
    source = os.fspath(path)
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    try:
        real = await loop.run_in_executor(executor, context.run, _checked, source)
        # Not "async with": aiofiles' context manager closes on the loop's default executor
        # whatever executor= says (aiofiles 25.1), which would start a thread of its own.
        handle = await aiofiles.open(real, "rb", executor=executor)
        try:
            raw = await handle.read(_MAX_CONFIG_BYTES + 1)
        finally:
            await handle.close()
    except FileNotFoundError:
        raise ConfigError("<file>", "no such file", source) from None
    except OSError as exc:
        raise ConfigError("<file>", f"cannot read: {exc.strerror}", source) from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise ConfigError("<file>", f"larger than {_MAX_CONFIG_BYTES} bytes", source)
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError("<file>", f"not UTF-8 text (byte {exc.start})", source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("<file>", f"not valid TOML: {exc}", source) from None


def _checked(path: str) -> str:
    if not os.path.lexists(path):
        raise FileNotFoundError(path)
    return trusted_real_path(path, what="configuration file")
