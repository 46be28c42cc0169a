"""The cache of prepared data: directories named by what shaped them, each built once and published whole."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path

from ..fileio import atomic_output

FORMAT_VERSION = 1  # bump when the shard layout or the split rule changes: old caches are then ignored


@contextlib.contextmanager
def locked(target: Path) -> Iterator[None]:
    """Hold the lock of `target` (a file beside it) for the block: builders of one target take turns (flock:
    on a cluster, put data.cache_dir on a file system that honours it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        yield


def build_once(target: Path, build: Callable[[Path], None]) -> None:
    """Make the directory `target` with `build(staged)` unless it exists, safely across processes.

    Builders take turns on the target's lock; the first builds into a staging directory published by a rename,
    so `target` only ever appears complete, and the others find it there. A build that crashed leaves only the
    staging directory, which the next builder removes.
    """
    if target.is_dir():
        return
    with locked(target):
        if target.is_dir():
            return
        with atomic_output(target, directory=True) as staged:
            build(staged)
