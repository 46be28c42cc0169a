"""Where a command may write: one rule for every output path, so that no output destroys an input or files the
command did not write.

An output (`export-hf OUT`, `consolidate OUT`, `sweep --out`, `report --plot`, `coord-check --out`, `gpu-check
OUT_DIR`, `apply-lr TARGET`, `train.out_dir`) is judged with symlinks and `..` resolved. It may not
- be empty, nor be or contain the working directory or the home directory (`.`, `..`, `/`, `~`);
- be, contain or lie inside an input of its command (a checkpoint, a run, a sweep, the data cache), nor lie
  inside a run's `checkpoints/`;
- be a file where a directory goes or the reverse, lie under a file, or be where its writer cannot create files.
An existing one (a file, or a directory that is not empty) is replaced only with `--overwrite` (a sweep grows, a
run resumes and a report redraws its plot without it), and only if its command wrote it: a directory it created
holds its `MARKER` (a sweep, its plan.json; a run, also its checkpoints or only its launch logs), a file
passes the command's own test. A refusal is one ConfigError naming the path and why, raised before anything is
written; what passes is then published as always, by `atomic_output`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path

from .errors import ConfigError
from .fileio import STAGING_PREFIX

MARKER = ".pretrain-output"  # in a directory a command created, holding the command's name
CHECKPOINTS = "checkpoints"  # a run's checkpoints, next to its config.yaml
PNG = b"\x89PNG\r\n\x1a\n"

Inputs = Iterable[tuple[str, str | Path]]  # what each input is, and where: ("the checkpoint", path)


class Kind(Enum):
    """What an output is, which decides where writing it creates entries."""

    FILE = "file"  # published whole by atomic_output: staged next to itself
    DIRECTORY = "directory"  # likewise, a directory published whole
    WORKSPACE = "workspace"  # a directory written into, file by file (a run, a sweep, a check's results)

    @property
    def noun(self) -> str:
        return "file" if self is Kind.FILE else "directory"


def check_location(path: str | Path, option: str, kind: Kind, inputs: Inputs = ()) -> Path:
    """`path` resolved, if an output of `kind` may go there (every rule of the module docstring but those on an
    existing output); else a ConfigError naming `option`."""
    text = str(path)
    if not text.strip():
        raise ConfigError(f"{option}: empty; name the {kind.noun} to write")
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError, ValueError) as err:  # a symbolic link loop (RuntimeError before 3.13), a NUL
        raise ConfigError(f"{option} {text}: not a usable path ({err})") from None

    def refusal(reason: str) -> ConfigError:
        return _refusal(option, path, resolved, reason)

    for noun, place in (("the working directory", Path.cwd()), ("the home directory", Path(os.path.expanduser("~")))):
        place = place.resolve()
        if place.is_relative_to(resolved):
            raise refusal(f"{'is' if place == resolved else 'contains'} {noun} {place}; choose a {kind.noun} of its "
                          "own, such as runs/NAME")
    for noun, place in inputs:
        place = Path(place).resolve()
        relation = ("is" if place == resolved else "contains" if place.is_relative_to(resolved)
                    else "lies inside" if resolved.is_relative_to(place) else None)
        if relation:
            raise refusal(f"{relation} {noun} {place}, which this command reads; an output may not be, contain or "
                          "lie inside an input")
    try:
        for folder in (resolved, *resolved.parents):
            if folder.name == CHECKPOINTS and (folder.parent / "config.yaml").is_file():
                raise refusal(f"lies inside {folder}, the checkpoints of the run {folder.parent}")
        if resolved.exists():
            if kind is Kind.FILE and not resolved.is_file():
                raise refusal(f"is {'a directory' if resolved.is_dir() else 'not a regular file'}; {option} must be "
                              "a file")
            if kind is Kind.FILE and not os.access(resolved, os.W_OK):  # a rename would replace it all the same
                raise refusal("is read-only")
            if kind is not Kind.FILE and not resolved.is_dir():
                raise refusal(f"is a file; {option} must be a directory")
        base = next(folder for folder in resolved.parents if folder.exists())  # `/` at the latest
        if not base.is_dir():
            raise refusal(f"lies under {base}, which is a file")
        for folder in _created_in(resolved, kind, base):
            error = _cannot_create_in(folder)
            if error:
                raise refusal(f"cannot write in {folder} ({error})")
    except PermissionError as err:  # a folder on the way that this user may not search
        raise refusal(f"cannot be examined ({err.strerror}: {err.filename})") from None
    return resolved


def check_output(path: str | Path, option: str, kind: Kind, command: str, inputs: Inputs = (),
                 overwrite: bool = False, owned: Callable[[Path], bool] | None = None) -> Path:
    """`check_location`, then: an existing file or non-empty directory at `path` must be `command`'s own, as
    `owned` tells (by default: a directory holding the command's MARKER), and needs `overwrite`. Ownership is
    judged first, so that no refusal suggests --overwrite where it would not help."""
    resolved = check_location(path, option, kind, inputs)
    if resolved.is_file() or resolved.is_dir() and any(resolved.iterdir()):
        if not (owned or marked_by(command))(resolved):
            mark = f" (no {MARKER} of its own in it)" if owned is None and resolved.is_dir() else ""
            raise _refusal(option, path, resolved, f"not written by `pretrain {command}`{mark}, which replaces or "
                           f"adds to only its own output; choose a new {kind.noun}, or move this one away yourself")
        if not overwrite:
            state = "exists" if resolved.is_file() else "exists and is not empty"
            raise _refusal(option, path, resolved, f"{state}; pass --overwrite to replace it")
    return resolved


def claim(directory: Path, command: str) -> None:
    """Mark `directory`, which `command` created, as its output: that command may replace it or add to it later."""
    (Path(directory) / MARKER).write_text(f"{command}\n")


def has_signature(signature: bytes) -> Callable[[Path], bool]:
    """An `owned` test for files: those that begin with `signature` (their format's magic number)."""
    def owned(path: Path) -> bool:
        try:
            with open(path, "rb") as f:
                return f.read(len(signature)) == signature
        except OSError:
            return False
    return owned


def marked_by(command: str) -> Callable[[Path], bool]:
    """An `owned` test for directories: those holding `command`'s MARKER."""
    def marked(directory: Path) -> bool:
        try:
            return (directory / MARKER).read_bytes().strip() == command.encode()
        except OSError:
            return False
    return marked


def _refusal(option: str, given: str | Path, resolved: Path, reason: str) -> ConfigError:
    where = str(given) if str(given) == str(resolved) else f"{given} ({resolved})"
    return ConfigError(f"{option} {where}: {reason}")


def _created_in(path: Path, kind: Kind, base: Path) -> list[Path]:
    """The directories in which writing the output at `path` creates entries: the nearest existing one when it
    is new; for an existing one, the directory written into, and the parent where it is staged when replaced."""
    if not path.exists():
        return [base]
    inside = [path] if path.is_dir() else []
    beside = [path.parent] if kind is not Kind.WORKSPACE else []
    return inside + beside


def _cannot_create_in(directory: Path) -> str | None:
    """Why nothing can be created in `directory`, or None. Tried rather than asked of access(2), which root
    passes for any directory, /proc included, where nothing can be created."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}probe-", dir=directory))
    except OSError as err:
        return err.strerror or str(err)
    return None
