"""The exceptions pressured raises, one family so callers can catch them all."""

from __future__ import annotations


class PressuredError(Exception):
    """Base class of every error pressured raises on purpose."""


class KernelError(PressuredError):
    """A kernel interface did not behave as pressured needs (missing file, refused write)."""


class ParseError(KernelError, ValueError):
    """A kernel file's contents did not have the documented shape.

    ``source`` names the file (or ``"<text>"``) so a log line can say which one was malformed.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class TriggerSpecError(PressuredError, ValueError):
    """A PSI trigger specification breaks one of the kernel's rules (named in the message)."""


class TriggerError(KernelError):
    """The kernel refused to create a PSI trigger; ``errno`` says why."""

    def __init__(self, message: str, errno: int) -> None:
        super().__init__(message)
        self.errno = errno


class ConfigError(PressuredError):
    """The configuration is invalid. ``field`` is a dotted path such as ``policies.1.options``."""

    def __init__(self, field: str, reason: str, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {reason}")
        self.field = field
        self.reason = reason
        self.source = source


class PolicyError(PressuredError):
    """A policy could not be loaded or did not honour the policy contract."""


class UnsafeFileError(PressuredError):
    """A file that runs with root's rights (config, plugin, hook) is writable by other users."""
