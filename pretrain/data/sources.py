"""Text sources: where documents come from, cut into fixed slices of the input.

A source (`data.source`, or each entry of `data.sources`) is one of
- `embedded`: the Python standard library's own sources of the running interpreter (all `*.py` under
  `sysconfig.get_paths()["stdlib"]`, without `site-packages` and the test suites), one document per file,
  sorted by relative path. It ships with every Python, so a laptop or CI machine needs no download.
- a local `.txt`, `.jsonl`/`.json` or `.parquet` file, a directory of them, or a glob. Text files are one
  document per file (a line of prose or code is too short to be a document); JSON lines and parquet files
  hold one document per record, its text in the column `text_field`.
- `hub:NAME`: a Hugging Face hub dataset (`hub_config`, `hub_split`, `hub_revision`, `text_field`), read at one
  commit, file by file as a stream (see `hub`), never downloaded whole.

Preparation works slice by slice. A slice is a fixed piece of the input, so what it yields does not depend on
how many workers prepare the source: TEXT_FILES_PER_SLICE text files; a JSON_SLICE_BYTES byte range of a
JSON-lines file (a line belongs to the slice its first byte lies in); consecutive parquet row groups up to
PARQUET_SLICE_BYTES; one data file of a hub dataset. Each document goes to the train or the held-out
validation split by a hash of its text (`split_of`), so the split does not depend on order or slicing either.
"""

from __future__ import annotations

import functools
import glob
import gzip
import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO

from ..config import DataConfig, SourceConfig
from ..errors import ConfigError, DataError
from . import hub
from .layout import fingerprint

EMBEDDED_SKIP_DIRS = frozenset({"site-packages", "test", "tests", "idle_test"})
READERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
HUB_PREFIX = "hub:"
TEXT_FILES_PER_SLICE = 1024
JSON_SLICE_BYTES = 256 << 20
PARQUET_SLICE_BYTES = 256 << 20  # uncompressed, as the row groups' metadata counts it
TRAIN, VAL, SKIP = 0, 1, 2  # a document's split; SKIP = empty
SPLITS = {"train": TRAIN, "val": VAL}


@dataclass(frozen=True)
class Slice:
    index: int
    reader: str  # "text", "json" or "parquet"
    paths: tuple[str, ...]  # text: its files; json, parquet: one file (a local path or an hf:// path)
    start: int = 0  # json: the first byte; parquet: the first row group
    stop: int = -1  # json: the byte after the range; parquet: the row group after it; -1: to the end
    bytes: int = 0  # input size (uncompressed for parquet), for budgets; 0 where unknown (hub)

    @property
    def label(self) -> str:
        if self.reader == "text":
            return f"{self.paths[0]} (+{len(self.paths) - 1} files)" if len(self.paths) > 1 else self.paths[0]
        if self.stop < 0 and self.start == 0:
            return self.paths[0]
        unit = "bytes" if self.reader == "json" else "row groups"
        return f"{self.paths[0]} ({unit} {self.start}-{self.stop})"


class Source:
    """A resolved source. Cheap to make (nothing is read); its slices are listed when first asked for, so a
    prepared hub source is found again without the network."""

    revision: str | None = None  # the commit a hub source is read at; local files have none

    def __init__(self, name: str, kind: str, description: str, identity: str, text_field: str, setting: str,
                 list_slices: Callable[[], list[Slice]]):
        self.name = name  # short, for metrics (tokens/NAME)
        self.kind = kind  # "embedded", "text", "json", "parquet" or "hub"
        self.description = description  # for people: stored in the manifest and printed
        self.identity = identity  # changes whenever the documents may have changed
        self.text_field, self.setting = text_field, setting  # setting: the config key that names it
        self._list_slices = list_slices

    @functools.cached_property
    def slices(self) -> tuple[Slice, ...]:
        return tuple(self._list_slices())

    @property
    def input_bytes(self) -> int:
        return sum(s.bytes for s in self.slices)

    def __getstate__(self) -> dict:  # for worker processes: the slices travel, not the lister
        slices = self.slices  # listed first, so that what listing them resolved (a hub commit) travels too
        return {**self.__dict__, "slices": slices, "_list_slices": None}


class HubSource(Source):
    """A split of a hub dataset, read at one commit: the one its `hub_revision` (default: the dataset's default
    branch) points to when first needed, or the one a preparation recorded (`at`). A slice is a data file."""

    def __init__(self, spec: SourceConfig):
        self.spec, self.dataset = spec, spec.source.removeprefix(HUB_PREFIX)
        setting = f"{spec.key}.source"
        if not self.dataset:
            raise ConfigError(f"{setting}: 'hub:' needs a dataset name, e.g. hub:roneneldan/TinyStories")
        # The revision asked for, not the commit: a planner finds prepared data without asking the hub.
        identity = fingerprint(["hub", self.dataset, spec.hub_config, spec.hub_split, spec.text_field,
                                spec.hub_revision])
        pinned = f", revision {spec.hub_revision}" if spec.hub_revision else ""
        description = f"hub:{self.dataset} (config {spec.hub_config}, split {spec.hub_split}{pinned})"
        super().__init__(source_name(spec), "hub", description, identity, spec.text_field, setting,
                         self._data_files)

    @functools.cached_property
    def revision(self) -> str | None:
        """Asked of the hub once, when first needed (to list the files, or to record it)."""
        return hub.resolve_revision(self.dataset, self.spec.hub_revision, self.setting, f"{self.spec.key}.hub_revision")

    def at(self, revision: str | None) -> HubSource:
        """This source read at `revision` (the commit its preparation recorded), without asking the hub."""
        pinned = HubSource(self.spec)
        pinned.revision = revision  # takes the cached property's place: nothing is resolved
        return pinned

    def _data_files(self) -> list[Slice]:
        slices = []
        files = hub.data_files(self.dataset, self.spec.hub_config, self.spec.hub_split, self.revision, self.setting)
        for index, path in enumerate(files):
            suffixes = set(Path(path).suffixes)
            reader = "parquet" if ".parquet" in suffixes else "json" if {".json", ".jsonl"} & suffixes else None
            if reader is None:
                raise ConfigError(f"{self.setting}: hub:{self.dataset} has a data file that is neither parquet nor "
                                  f"JSON lines: {path}")
            slices.append(Slice(index, reader, (path,)))
        return slices


class SourcePlan:
    """A source as the data config uses it: its weight in the mixture and, with data.max_documents, how many
    documents of each slice count (the first N of the source, in slice order)."""

    def __init__(self, source: Source, weight: float, max_documents: int | None):
        self.source, self.weight, self.max_documents = source, weight, max_documents

    @functools.cached_property
    def limits(self) -> tuple[int | None, ...]:
        """Documents to take from each slice (None: all)."""
        if self.max_documents is None:
            return (None,) * len(self.source.slices)
        limits, left = [], self.max_documents
        for piece in self.source.slices:
            limits.append(min(left, count_documents(self.source, piece)) if left else 0)
            left -= limits[-1]
        return tuple(limits)

    @property
    def identity(self) -> list:
        return [self.source.identity, self.weight, self.max_documents]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "limits": self.limits}


@dataclass
class BadRecords:
    """Records whose text is not text, skipped under data.skip_bad_records; the first one, for the message."""

    count: int = 0
    first: str | None = None


def resolve_source(spec: SourceConfig) -> Source:
    """The source `spec` names, with its slices (local files are listed and measured; nothing is read)."""
    if spec.source.startswith(HUB_PREFIX):
        return HubSource(spec)
    setting = f"{spec.key}.source"
    if spec.hub_revision is not None:
        raise ConfigError(f"{spec.key}.hub_revision: only a hub:NAME source has revisions, not '{spec.source}'")
    if spec.source == "embedded":
        return _embedded_source()
    files = _local_files(spec.source, setting)
    reader = READERS[files[0].suffix]
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    identity = fingerprint([reader, spec.text_field if reader != "text" else None, stats])
    description = f"{spec.source} ({len(files)} {reader} file{'s' * (len(files) > 1)})"
    return Source(source_name(spec), reader, description, identity, spec.text_field, setting,
                  lambda: list(_local_slices(reader, files)))


def plan_sources(cfg: DataConfig) -> list[SourcePlan]:
    """Every source of the config, resolved, with its weight and document cap."""
    names = [source_name(spec) for spec in cfg.sources]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"data.sources: two sources are named {twice!r}; give each a distinct name")
    return [SourcePlan(resolve_source(spec), spec.weight, cfg.max_documents) for spec in cfg.sources]


def source_name(spec: SourceConfig) -> str:
    """A source's name in metrics: its `name`, else `embedded`, the hub dataset's name, or the path's stem."""
    if spec.name:
        return spec.name
    if spec.source.startswith(HUB_PREFIX):
        return spec.source.removeprefix(HUB_PREFIX).rstrip("/").split("/")[-1] or "hub"
    return Path(spec.source.split("*")[0].rstrip("/")).stem or spec.source


def documents(source: Source, piece: Slice, limit: int | None = None,
              bad: BadRecords | None = None) -> Iterator[str]:
    """The documents of one slice, in order: at most `limit`. A record whose text is not text (a number, a
    list, ...) is an error naming its file and line or row, unless `bad` is given: then it is counted and
    skipped. A missing or null text is an empty document."""
    reader = {"text": _text_documents, "json": _json_documents, "parquet": _parquet_documents}[piece.reader]
    return islice(reader(source, piece, bad), limit)


def source_documents(plan: SourcePlan, bad: BadRecords | None = None) -> Iterator[str]:
    """Every document of a planned source, in slice order, within its limits."""
    for piece, limit in zip(plan.source.slices, plan.limits):
        yield from documents(plan.source, piece, limit, bad)


def split_of(text: str, val_fraction: float) -> int:
    """TRAIN or VAL by a hash of the text (below `val_fraction`: VAL); SKIP for an empty document."""
    if not text or text.isspace():
        return SKIP
    digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest()
    return VAL if int.from_bytes(digest, "big") / 2**64 < val_fraction else TRAIN


def count_documents(source: Source, piece: Slice) -> int:
    """How many documents a slice holds (text: its files; parquet: its metadata; JSON lines: read through)."""
    if piece.reader == "text":
        return len(piece.paths)
    if piece.reader == "parquet":
        import pyarrow.parquet as pq

        with hub.open_file(piece.paths[0]) as f:
            meta = pq.ParquetFile(f).metadata
            stop = meta.num_row_groups if piece.stop < 0 else piece.stop
            return sum(meta.row_group(i).num_rows for i in range(piece.start, stop))
    return sum(1 for _ in _json_lines(piece))


# --- resolving ------------------------------------------------------------------------------------------------

@functools.cache  # the interpreter's own files do not change while it runs
def _embedded_source() -> Source:
    root = Path(sysconfig.get_paths()["stdlib"])
    relative = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in EMBEDDED_SKIP_DIRS]  # never descend into them
        relative += [(Path(folder) / n).relative_to(root).as_posix() for n in names if n.endswith(".py")]
    relative.sort()
    files = [root / r for r in relative]
    version = ".".join(map(str, sys.version_info[:3]))
    identity = fingerprint(["embedded", version, [(r, f.stat().st_size) for r, f in zip(relative, files)]])
    description = f"embedded: Python {version} standard library sources ({len(files)} files under {root})"
    return Source("embedded", "embedded", description, identity, "text", "data.source",
                  lambda: list(_local_slices("text", files)))


def _local_files(pattern: str, setting: str) -> list[Path]:
    """The supported files named by a path, a directory (searched recursively) or a glob, sorted."""
    path = Path(pattern).expanduser()
    allowed = "/".join(READERS)
    if path.is_file():
        if path.suffix not in READERS:
            raise ConfigError(f"{setting}: unsupported file type {path.suffix or '(none)'!r} for '{pattern}'; "
                              f"use {allowed} files, a directory of them, or 'embedded'")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in READERS)
    elif glob.has_magic(pattern):
        files = sorted(p for p in map(Path, glob.glob(os.path.expanduser(pattern), recursive=True))
                       if p.is_file() and p.suffix in READERS)
    else:
        raise ConfigError(f"{setting}: '{pattern}' does not exist (expected 'embedded', 'hub:NAME', or a "
                          f"{allowed} file, directory or glob)")
    if not files:
        raise ConfigError(f"{setting}: no {allowed} files match '{pattern}'")
    readers = sorted({READERS[f.suffix] for f in files})
    if len(readers) > 1:
        raise ConfigError(f"{setting}: '{pattern}' mixes {' and '.join(readers)} files; point it at one kind")
    return files


def _local_slices(reader: str, files: list[Path]) -> Iterator[Slice]:
    index = 0
    if reader == "text":
        for i in range(0, len(files), TEXT_FILES_PER_SLICE):
            group = files[i:i + TEXT_FILES_PER_SLICE]
            yield Slice(index, "text", tuple(map(str, group)), bytes=sum(f.stat().st_size for f in group))
            index += 1
        return
    for path in files:
        for start, stop, size in _ranges(reader, path):
            yield Slice(index, reader, (str(path),), start, stop, size)
            index += 1


def _ranges(reader: str, path: Path) -> Iterator[tuple[int, int, int]]:
    """(start, stop, bytes) of a file's slices: byte ranges of JSON lines, groups of parquet row groups."""
    if reader == "json":
        size = path.stat().st_size
        for start in range(0, max(size, 1), JSON_SLICE_BYTES):
            stop = min(start + JSON_SLICE_BYTES, size)
            yield start, stop, stop - start
        return
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as err:  # noqa: BLE001 -- pyarrow raises ArrowInvalid, OSError, ... for a bad file
        raise DataError(f"{path}: not a readable parquet file ({type(err).__name__}: {err})") from None
    start, size = 0, 0
    for group in range(meta.num_row_groups):
        size += meta.row_group(group).total_byte_size
        if size >= PARQUET_SLICE_BYTES or group == meta.num_row_groups - 1:
            yield start, group + 1, size
            start, size = group + 1, 0


# --- reading --------------------------------------------------------------------------------------------------

def _text_documents(source: Source, piece: Slice, bad: BadRecords | None) -> Iterator[str]:
    for path in piece.paths:
        yield Path(path).read_text(encoding="utf-8", errors="replace")


def _json_documents(source: Source, piece: Slice, bad: BadRecords | None) -> Iterator[str]:
    for offset, line in _json_lines(piece):
        try:
            record = json.loads(line)
        except ValueError as err:
            problem = f"not valid JSON ({err})"
        else:
            if not isinstance(record, dict):
                problem = f"a JSON {type(record).__name__}, not an object"
            elif source.text_field not in record:
                raise ConfigError(f"data.text_field: no field {source.text_field!r} in {piece.paths[0]} line "
                                  f"{_line_number(piece.paths[0], offset)}; its fields: {', '.join(record)}")
            elif record[source.text_field] is None:
                yield ""  # no text: an empty document
                continue
            elif isinstance(record[source.text_field], str):
                yield record[source.text_field]
                continue
            else:
                problem = f"its {source.text_field!r} is a {type(record[source.text_field]).__name__}, not text"
        _bad_record(source, f"{piece.paths[0]}: line {_line_number(piece.paths[0], offset)}: {problem}", bad)


def _json_lines(piece: Slice) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of the non-blank lines whose first byte lies in the slice's range."""
    with hub.open_file(piece.paths[0]) as raw:
        stream: IO[bytes] = gzip.open(raw) if piece.paths[0].endswith(".gz") else raw
        if piece.start > 0:
            stream.seek(piece.start - 1)
            stream.readline()  # the rest of the line that began before this slice
        offset = stream.tell()
        while piece.stop < 0 or offset < piece.stop:
            line = stream.readline()
            if not line:
                return
            if line.strip():
                yield offset, line
            offset += len(line)


def _line_number(path: str, offset: int) -> int:
    """1-based line number of the line at byte `offset` (counted only when a message needs it)."""
    with hub.open_file(path) as f:
        return f.read(offset).count(b"\n") + 1 if offset else 1


def _parquet_documents(source: Source, piece: Slice, bad: BadRecords | None) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with hub.open_file(piece.paths[0]) as f:
        parquet = pq.ParquetFile(f)
        names = parquet.schema_arrow.names
        if source.text_field not in names:
            raise ConfigError(f"data.text_field: no column {source.text_field!r} in {piece.paths[0]}; columns: "
                              f"{', '.join(names)}")
        column = parquet.schema_arrow.field(source.text_field).type
        if not (pa.types.is_string(column) or pa.types.is_large_string(column)):
            _bad_record(source, f"{piece.paths[0]}: column {source.text_field!r} holds {column}, not text", None)
        stop = parquet.metadata.num_row_groups if piece.stop < 0 else piece.stop
        for batch in parquet.iter_batches(batch_size=1024, row_groups=range(piece.start, stop),
                                          columns=[source.text_field]):
            for text in batch.column(0).to_pylist():
                yield text or ""


def _bad_record(source: Source, where: str, bad: BadRecords | None) -> None:
    if bad is None:
        raise DataError(f"{where} (set data.skip_bad_records=true to skip such records)")
    bad.count += 1
    bad.first = bad.first or where
