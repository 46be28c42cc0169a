"""Prepared data on disk: every name, every cache key, and the one schema of each JSON record written.

    DATA_CACHE/
        tokenizer-bpe<V>-<key>/tokenizer.json   a trained BPE (key: the sources, vocab_size, the sample, the split)
        <kind>-seq<L>-<key>/                     one prepared source (key: its input, the tokenizer, seq_len, the
                                                 split, the caps)
            manifest.json    `Manifest`: the shards (split, rows, bytes, digest, sampled digest), token and
                             document counts, unigram entropy, the commit a hub source was read at
            tokenizer.json   the tokenizer the ids belong to
            unigram.npy      train token counts, for the entropy of a mixture
            shards/train-00000.bin, val-00000.bin, train-00000-001.bin, ...   (split, slice, part)
        .work-<kind>-seq<L>-<key>/               while that source is being prepared
            revision.json    `Revision`: the commit a hub source is read at
            slices/00000/    one slice, published whole: its shard files, stats.json (`SliceStats`), unigram.npy
        .<directory>.lock                        beside a directory: its builders take turns on it

A key digests everything that shapes what its directory holds, FORMAT_VERSION included: other settings land in
another directory, and a directory, once published, is never rewritten. Each JSON record is a dataclass, written
from it and read back into it: reading checks every field against its annotation, and anything amiss is one
DataError naming the file and the field. Every shard file a manifest names must lie inside its directory.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ..fileio import atomic_output, checksum, contained, read_json_object, write_json
from ..locks import Lock

if TYPE_CHECKING:
    from .sources import Source, SourcePlan

FORMAT_VERSION = 1  # bump when the shard layout or the split rule changes: old caches are then ignored

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
UNIGRAM = "unigram.npy"
SHARDS = "shards"
STATS = "stats.json"
REVISION = "revision.json"
SAMPLE_BLOCKS, SAMPLE_BYTES = 16, 64 << 10  # a shard's sampled digest reads 1 MiB of it (a shard: up to 512 MiB)


# --- where things are ------------------------------------------------------------------------------------------

def fingerprint(obj: object) -> str:
    """A short, stable digest of a JSON-able value: how caches name what they hold."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def bpe_path(cfg: DataConfig, plans: Sequence[SourcePlan]) -> Path:
    """The tokenizer.json of the BPE trained for `cfg` (which may not exist yet)."""
    key = fingerprint([FORMAT_VERSION, [p.identity for p in plans], cfg.vocab_size, cfg.tokenizer_sample,
                       cfg.val_fraction])
    return Path(cfg.cache_dir) / f"tokenizer-bpe{cfg.vocab_size}-{key}" / TOKENIZER


def data_dir(cfg: DataConfig, source: Source, tokenizer: Path) -> Path:
    """The directory of one prepared source (which may not exist yet)."""
    key = fingerprint([FORMAT_VERSION, source.identity, checksum(tokenizer)["digest"], cfg.seq_len,
                       cfg.val_fraction, cfg.max_documents, cfg.max_tokens])
    return Path(cfg.cache_dir) / f"{source.kind}-seq{cfg.seq_len}-{key}"


def work_dir(target: Path) -> Path:
    """Where the slices of `target` are prepared until it is published (then it is removed)."""
    return target.with_name(f".work-{target.name}")


def slice_dir(target: Path, index: int) -> Path:
    return work_dir(target) / "slices" / f"{index:05d}"


def revision_path(target: Path) -> Path:
    return work_dir(target) / REVISION


def shard_name(split: str, index: int, part: int) -> str:
    """The file of the `part`-th shard of `split` in slice `index`: train-00000.bin, train-00000-001.bin, ..."""
    stem = f"{split}-{index:05d}"
    return f"{stem}.bin" if part == 0 else f"{stem}-{part:03d}.bin"


@contextlib.contextmanager
def locked(target: Path) -> Iterator[None]:
    """Hold the lock of `target` (a file beside it) for the block: builders of one target take turns, and one
    that waits says for whom (`pretrain.locks`; on a cluster, put data.cache_dir on a file system with flock)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Lock(target.parent / f".{target.name}.lock") as lock:
        lock.wait(f"another process building {target}")
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


def token_dtype(n_ids: int) -> np.dtype:
    """What shards store token ids in: uint16, or uint32 past 2^16 ids."""
    return np.dtype(np.uint16 if n_ids <= 2**16 else np.uint32)


def sample_digest(path: Path) -> str:
    """SHA-256 of a file's size and of SAMPLE_BLOCKS blocks of SAMPLE_BYTES spread evenly over it, from its first
    byte to its last: what opening prepared data checks of each shard, in milliseconds. A shard rewritten whole
    (other ids, the same size) differs in every block, and any changed span longer than 1/15 of the file meets
    one; a smaller change is left to the full digest (`pretrain prepare-data --verify`)."""
    size = path.stat().st_size
    digest = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        for block in range(SAMPLE_BLOCKS):
            f.seek(block * max(size - SAMPLE_BYTES, 0) // (SAMPLE_BLOCKS - 1))
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def entropy(counts: np.ndarray) -> float:
    """Nats: the entropy of the distribution proportional to `counts` (a manifest's unigram_entropy is that of
    its unigram.npy)."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# --- what is written -------------------------------------------------------------------------------------------

COMMIT = {"must_be": "a commit or null"}  # a field's metadata: how a message names what it holds


def at_least(low: int) -> Any:
    """An int field that must be `low` or more."""
    return field(metadata={"min": low})


@dataclass(frozen=True, kw_only=True)
class Shard:
    """One shard file: the split it holds rows of, how many, and its checksum (`fileio.checksum`)."""

    noun: ClassVar[str] = "shard"  # in messages about a list of them
    file: str  # in shards/
    split: str
    rows: int = at_least(1)
    digest: str
    bytes: int = at_least(0)
    # `sample_digest`. Absent from manifests written before it was recorded: such shards are checked by size.
    sample: str | None = None


@dataclass(frozen=True, kw_only=True)
class SliceCounts:
    """A slice as a manifest lists it: its input and its documents in each split."""

    noun: ClassVar[str] = "slice"
    slice: int
    input: str
    train_documents: int
    val_documents: int


@dataclass(frozen=True, kw_only=True)
class SliceStats:
    """stats.json: one prepared slice, as `finalize` gathers it into the manifest."""

    slice: int
    input: str
    encoder: str  # "tiktoken" or "tokenizers"
    dtype: str
    vocab_size: int  # token ids in use
    eos_id: int
    train_documents: int
    val_documents: int
    skipped_records: int
    first_skipped: str | None  # where the first skipped record was
    shards: list[Shard]


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """manifest.json (with `format`: FORMAT_VERSION): one prepared source."""

    source: str  # its description, for people
    identity: str  # changes whenever its documents may have changed
    # The commit a hub source was read at; None: local files. Absent from manifests written before it was recorded.
    revision: str | None = field(default=None, metadata=COMMIT)
    tokenizer: str  # data.tokenizer as set
    tokenizer_digest: str
    encoder: str
    vocab_size: int = at_least(1)
    eos_id: int = at_least(0)
    seq_len: int = at_least(1)
    dtype: str  # of the shards' tokens (`token_dtype`)
    documents: int
    train_documents: int
    val_documents: int
    skipped_records: int
    first_skipped: str | None
    train_rows: int = at_least(1)
    val_rows: int = at_least(1)
    train_tokens: int
    val_tokens: int
    train_shards: int
    unigram_entropy: float  # nats, of the train tokens as prepared
    val_fraction: float
    max_documents: int | None
    max_tokens: int | None
    slices: list[SliceCounts]
    shards: list[Shard]

    def __post_init__(self):
        """Beyond the types: the shards hold ids at the dtype of their vocabulary, each shard's rows fit in its
        bytes, and a split's rows are its shards' (a damaged count would read past a file, or fewer rows)."""
        dtype = token_dtype(self.vocab_size)
        if self.dtype != dtype.name:
            raise _Malformed(f"malformed shard list (dtype {self.dtype!r}, but the ids of a {self.vocab_size}-id "
                             f"vocabulary are written as {dtype.name})")
        row_bytes = (self.seq_len + 1) * dtype.itemsize
        for i, shard in enumerate(self.shards):
            if shard.rows * row_bytes > shard.bytes:
                raise _Malformed(f"malformed shard list (shard {i}: {shard.rows:,} rows of {row_bytes:,} bytes do "
                                 f"not fit in its {shard.bytes:,} bytes)")
        for split, rows in (("train", self.train_rows), ("val", self.val_rows)):
            listed = sum(shard.rows for shard in self.shards if shard.split == split)
            if listed != rows:
                raise _Malformed(f"{split}_rows is {rows:,}, but the {split} shards hold {listed:,} rows")


@dataclass(frozen=True, kw_only=True)
class Revision:
    """revision.json: the commit every task, rerun and finalize of a hub source's preparation reads."""

    source: str  # its description, for people
    revision: str | None = field(metadata=COMMIT)


def write_manifest(target: Path, manifest: Manifest) -> None:
    write_json(target / MANIFEST, {"format": FORMAT_VERSION, **asdict(manifest)})


def read_manifest(target: Path) -> Manifest:
    """The manifest of the prepared source in `target`, every shard file it names inside `target`; one of another
    format is refused whatever its fields."""
    manifest = _read(Manifest, target / MANIFEST, _remedy(target), versioned=True)
    for shard in manifest.shards:
        shard_path(target, shard)
    return manifest


def shard_path(target: Path, shard: Shard) -> Path:
    """Where a shard of the prepared source in `target` is: inside it, or an error naming the manifest (no
    absolute path, no `..`, no symbolic link out of the directory)."""
    try:
        return contained(contained(target, SHARDS), shard.file)
    except ValueError as err:
        raise DataError(f"{target / MANIFEST}: malformed shard list (file {err}){_remedy(target)}") from None


def _remedy(target: Path) -> str:
    return f"; delete {target} to prepare it again"


def write_slice_stats(folder: Path, stats: SliceStats) -> None:
    write_json(folder / STATS, asdict(stats))


def read_slice_stats(folder: Path) -> SliceStats:
    return _read(SliceStats, folder / STATS, f"; delete {folder} to prepare the slice again")


def write_revision(target: Path, revision: Revision) -> None:
    write_json(revision_path(target), asdict(revision))


def read_revision(target: Path) -> Revision:
    return _read(Revision, revision_path(target), f"; delete {work_dir(target)} to prepare it again")


# --- the schema ------------------------------------------------------------------------------------------------

R = TypeVar("R")
_hints = functools.cache(typing.get_type_hints)


class _Malformed(Exception):
    """What is wrong with a record, said without its file (`_read` names it)."""


def _read(cls: type[R], path: Path, remedy: str, versioned: bool = False) -> R:
    """The record `cls` in the JSON file `path`; anything amiss is one DataError naming the file, then `remedy`."""
    data = read_json_object(path, DataError, remedy)
    try:
        if versioned:
            version = _value("format", int, data.get("format"))
            if version != FORMAT_VERSION:
                raise _Malformed(f"format {version}, expected {FORMAT_VERSION}")
        return _decode(cls, data)
    except _Malformed as err:
        raise DataError(f"{path}: {err}{remedy}") from None


def _decode(cls: type[R], data: dict) -> R:
    """`cls` from a JSON object, each field checked against its annotation (one with a default may be absent)."""
    return cls(**{f.name: _value(f.name, _hints(cls)[f.name], data.get(f.name), f.metadata.get("must_be"),
                                 f.metadata.get("min"))
                  for f in fields(cls) if f.name in data or f.default is MISSING})


def _value(name: str, hint: Any, value: Any, must_be: str | None = None, low: int | None = None) -> Any:
    """`value` of the field `name` if `hint` (int, float, str, a list of records, or any of them | None) allows it,
    and it is `low` or more where given."""
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in kinds:
        return None
    (kind,) = [k for k in kinds if k is not type(None)]
    base = typing.get_origin(kind) or kind
    if isinstance(value, bool) or not isinstance(value, (int, float) if base is float else base):
        expected = must_be or (f"{base.__name__} or null" if len(kinds) > 1 else base.__name__)
        raise _Malformed(f"{name} must be {expected}, got {value!r}")
    if low is not None and value < low:
        raise _Malformed(f"{name} must be an integer >= {low}, got {value!r}")
    if base is list:
        (record,) = typing.get_args(kind)
        return [_entry(record, i, entry) for i, entry in enumerate(value)]
    return float(value) if base is float else value


def _entry(cls: type[R], index: int, data: Any) -> R:
    """The `index`-th record of a list; what is wrong with it is said of the whole list."""
    try:
        if not isinstance(data, dict):
            raise _Malformed(f"expected a JSON object, got {type(data).__name__}")
        return _decode(cls, data)
    except _Malformed as err:
        raise _Malformed(f"malformed {cls.noun} list ({cls.noun} {index}: {err})") from None
