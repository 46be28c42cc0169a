"""Writing files and directories so that no reader ever sees half of one.

Everything is written under a staging name next to its target (`.tmp-NAME`) and renamed onto the target once
complete. A rename within a directory is atomic on POSIX file systems, network ones included, so a reader
finds the old complete version or the new one; a crash leaves only the staging name, which the next writer of
the same target removes. One writer per target at a time: the staging name is derived from the target alone,
so that every rank of a distributed save agrees on it and leftovers are easy to find.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

STAGING_PREFIX = ".tmp-"


def staging_path(target: Path) -> Path:
    return target.with_name(f"{STAGING_PREFIX}{target.name}")


def remove(path: Path) -> None:
    """Delete a file or a directory tree, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def publish(staged: Path, target: Path) -> None:
    """Move the finished `staged` file or directory onto `target`, replacing what is there."""
    if staged.is_file():
        with open(staged, "rb+") as f:
            os.fsync(f.fileno())  # the rename must not reach the disk before the bytes it publishes
    if staged.is_dir() and (target.exists() or target.is_symlink()):
        remove(target)  # a rename puts a directory only where there is nothing or an empty directory
    os.replace(staged, target)


@contextlib.contextmanager
def atomic_output(target: Path, directory: bool = False) -> Iterator[Path]:
    """Yield a staging path for `target` (a fresh empty directory with `directory`); publish it onto `target`
    when the block completes, remove it when the block raises."""
    target = Path(target)
    staged = staging_path(target)
    remove(staged)
    if directory:
        staged.mkdir(parents=True)
    else:
        staged.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield staged
    except BaseException:
        remove(staged)
        raise
    publish(staged, target)


def write_text(path: Path, text: str) -> None:
    with atomic_output(Path(path)) as staged:
        staged.write_text(text)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


CHECKSUM_BLOCK = 64 << 20


def checksum(path: Path) -> dict:
    """A file's digest and size. The digest is the SHA-256 of the SHA-256s of its 64 MiB blocks, which are
    hashed in parallel on every core (hashlib releases the GIL): a checkpoint of many GB is hashed at the speed
    of the disk, not of one core."""
    path = Path(path)
    size = path.stat().st_size

    def block_digest(offset: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            return hashlib.sha256(f.read(CHECKSUM_BLOCK)).digest()

    offsets = range(0, max(size, 1), CHECKSUM_BLOCK)
    with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, len(offsets))) as pool:  # per call: fork-safe
        blocks = list(pool.map(block_digest, offsets))
    return {"digest": hashlib.sha256(b"".join(blocks)).hexdigest(), "bytes": size}


def read_json_object(path: Path, error: type[Exception], remedy: str = "") -> dict:
    """The JSON object in `path`; a missing or unreadable file, or JSON that is not an object, is `error` in one
    line naming the file (followed by `remedy`)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise error(f"{path}: unreadable ({err}){remedy}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got {type(data).__name__}{remedy}")
    return data
