"""Errors a user can cause. Each carries a one-line message and the exit code the CLI returns."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # failed, and restored
EXIT_USAGE = 2  # usage or configuration error
EXIT_BLOCKED = 3  # blocked by the guard (findings at or above --fail-on)
EXIT_NOT_RESTORED = 4  # failed and NOT restored


class GuardError(Exception):
    """A failure the user can fix; the CLI prints ``message`` on one line and exits ``exit_code``."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return " ".join(str(self).split())


class ConfigError(GuardError):
    """Bad configuration: a missing file, broken TOML, an unknown key or a bad value."""


class UsageError(GuardError):
    """Bad command-line input."""


class RevisionError(GuardError):
    """A revision file that cannot be read at all (syntax error, unknown revision id)."""


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for reporting an exception in a single line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
