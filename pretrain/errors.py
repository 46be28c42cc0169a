"""How a command ends: one table of exit codes, and the errors a user can fix."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # a crash (a bug, or a fault of the machine): Python's traceback says where
    USER_ERROR = 2  # a problem the user can fix, said in one `error:` line
    DIVERGED = 3  # training stopped because the loss blew up; the last good checkpoint is kept
    INTERRUPTED = 130  # a second Ctrl-C (the shell's code for SIGINT)


class UserError(Exception):
    """A problem the user can fix, phrased as one line; the CLI prints it and exits with `exit_code`."""

    exit_code = ExitCode.USER_ERROR


class ConfigError(UserError, ValueError):
    """A config problem, phrased as one line that names the key and what is allowed."""


class CheckpointError(UserError, ValueError):
    """A path that is not a usable checkpoint (missing, incomplete, damaged or unsafe); the message names it."""


class DataError(UserError, ValueError):
    """Input or prepared data that is missing, corrupt or malformed; the message names the file."""
