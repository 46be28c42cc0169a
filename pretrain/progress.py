"""Progress bars that read well on a terminal and in a log file."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

LOG_REFRESH_SECONDS = 10.0


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr. Written to a file (a Slurm or sweep log) rather than a terminal, it is drawn in ASCII
    and redrawn at most every `LOG_REFRESH_SECONDS`: the tasks of a Slurm job share one log, and a multi-byte bar
    glyph cut in two by another task's output leaves the log invalid UTF-8."""
    stream = kwargs.get("file") or sys.stderr
    if not stream.isatty():
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("mininterval", LOG_REFRESH_SECONDS)
    return tqdm(*args, **kwargs)


def write_line(line: str) -> None:
    """Print a line above the open bars, which are redrawn below it."""
    tqdm.write(line)
