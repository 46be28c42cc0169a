"""Writing files and directories so that no reader ever sees half of one.

Everything is written under a staging name next to its target (`.tmp-NAME`) and renamed onto the target once
complete. A rename within a directory is atomic on POSIX file systems, network ones included, so a reader
finds the old complete version or the new one; a crash leaves only the staging name, which the next writer of
the same target removes. One writer per target at a time: the staging name is derived from the target alone,
so that every rank of a distributed save agrees on it and leftovers are easy to find.

What is published has the permissions that creating it would have given under the current umask, whoever wrote
it: a library that stages its own writes (safetensors saves to a mkstemp file, mode 600, and renames it) would
otherwise publish files only their owner can read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
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


def umask() -> int:
    """The process's umask. Linux reports it; elsewhere it can only be read by setting it, which for a moment
    applies to files other threads create: the mask held meanwhile, 077, makes those private, not world-writable."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Give `root` and everything under it the permissions creating them now would give: 666 for a file, 777 for
    a directory or an executable file, less the umask. Special bits (a shared directory's setgid) are kept."""
    mask = umask()
    for path in _tree(root):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue  # chmod would follow it; a target inside `root` is visited itself
        wanted = (0o777 if stat.S_ISDIR(mode) or mode & stat.S_IXUSR else 0o666) & ~mask
        if stat.S_IMODE(mode) & 0o777 != wanted:
            path.chmod(stat.S_IMODE(mode) & ~0o777 | wanted)


def _tree(root: Path) -> Iterator[Path]:
    """`root` and, for a directory, everything under it (symlinked directories not entered)."""
    yield root
    for parent, dirs, files in os.walk(root):
        yield from (Path(parent, name) for name in (*dirs, *files))


def publish(staged: Path, target: Path) -> None:
    """Move the finished `staged` file or directory onto `target`, replacing what is there, with the permissions
    the umask gives new files (see the module docstring)."""
    apply_umask(staged)
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


def contained(root: Path, name: str) -> Path:
    """`root / name`, if the relative path `name` (as a manifest lists it) stays inside `root`: not absolute, no
    `..`, and resolving to a place under `root` through any symbolic link. Else ValueError saying why: a path
    read from a file must never lead a reader to, or a message to name, anything outside `root`."""
    relative = Path(name)
    if "\0" in name or not relative.parts or relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{name!r} is not a relative path inside {root}")
    path = Path(root, relative)
    try:
        inside = path.resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a symbolic link loop (RuntimeError before Python 3.13)
        inside = False
    if not inside:
        raise ValueError(f"{name!r} leads outside {root} (through a symbolic link)")
    return path
