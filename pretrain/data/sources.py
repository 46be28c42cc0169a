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

import contextlib
import functools
import glob
import gzip
import hashlib
import json
import os
import sys
import sysconfig
import zlib
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
                 list_slices: Callable[[], list[Slice]], max_record_bytes: int):
        self.name = name  # short, for metrics (tokens/NAME)
        self.kind = kind  # "embedded", "text", "json", "parquet" or "hub"
        self.description = description  # for people: stored in the manifest and printed
        self.identity = identity  # changes whenever the documents may have changed
        self.text_field, self.setting = text_field, setting  # setting: the config key that names it
        self.max_record_bytes = max_record_bytes  # a longer record is a bad one, never read whole
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

    def __init__(self, spec: SourceConfig, max_record_bytes: int):
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
                         self._data_files, max_record_bytes)

    @functools.cached_property
    def revision(self) -> str | None:
        """Asked of the hub once, when first needed (to list the files, or to record it)."""
        return hub.resolve_revision(self.dataset, self.spec.hub_revision, self.setting, f"{self.spec.key}.hub_revision")

    def at(self, revision: str | None) -> HubSource:
        """This source read at `revision` (the commit its preparation recorded), without asking the hub."""
        pinned = HubSource(self.spec, self.max_record_bytes)
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
    """Bad records (text that is not text or not valid Unicode, or longer than data.max_record_bytes), skipped
    and counted under data.skip_bad_records; the first one, for the message."""

    count: int = 0
    first: str | None = None


def resolve_source(spec: SourceConfig, max_record_bytes: int = DataConfig.max_record_bytes) -> Source:
    """The source `spec` names, with its slices (local files are listed and measured; nothing is read), reading
    records of at most `max_record_bytes`."""
    if spec.source.startswith(HUB_PREFIX):
        return HubSource(spec, max_record_bytes)
    setting = f"{spec.key}.source"
    if spec.hub_revision is not None:
        raise ConfigError(f"{spec.key}.hub_revision: only a hub:NAME source has revisions, not '{spec.source}'")
    if spec.source == "embedded":
        return _embedded_source(max_record_bytes)
    files = _local_files(spec.source, setting)
    reader = READERS[files[0].suffix]
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    identity = fingerprint([reader, spec.text_field if reader != "text" else None, stats])
    description = f"{spec.source} ({len(files)} {reader} file{'s' * (len(files) > 1)})"
    return Source(source_name(spec), reader, description, identity, spec.text_field, setting,
                  lambda: list(_local_slices(reader, files)), max_record_bytes)


def plan_sources(cfg: DataConfig) -> list[SourcePlan]:
    """Every source of the config, resolved, with its weight and document cap."""
    names = [source_name(spec) for spec in cfg.sources]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"data.sources: two sources are named {twice!r}; give each a distinct name")
    return [SourcePlan(resolve_source(spec, cfg.max_record_bytes), spec.weight, cfg.max_documents)
            for spec in cfg.sources]


def source_name(spec: SourceConfig) -> str:
    """A source's name in metrics: its `name`, else `embedded`, the hub dataset's name, or the path's stem."""
    if spec.name:
        return spec.name
    if spec.source.startswith(HUB_PREFIX):
        return spec.source.removeprefix(HUB_PREFIX).rstrip("/").split("/")[-1] or "hub"
    return Path(spec.source.split("*")[0].rstrip("/")).stem or spec.source


def documents(source: Source, piece: Slice, limit: int | None = None,
              bad: BadRecords | None = None) -> Iterator[str]:
    """The documents of one slice, in order: at most `limit`. A bad record (its text a number, a list, ..., not
    valid UTF-8, or longer than the source's max_record_bytes, which is never read whole) is an error naming its
    file and line or row, unless `bad` is given: then it is counted and skipped. A missing or null text is an
    empty document. A file that cannot be read is an error naming it."""
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

        with _reading(piece.paths[0]) as f:
            meta = pq.ParquetFile(f).metadata
            stop = meta.num_row_groups if piece.stop < 0 else piece.stop
            return sum(meta.row_group(i).num_rows for i in range(piece.start, stop))
    return sum(1 for _ in _json_lines(piece, source.max_record_bytes))


# --- resolving ------------------------------------------------------------------------------------------------

@functools.cache  # the interpreter's own files do not change while it runs
def _embedded_source(max_record_bytes: int) -> Source:
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
                  lambda: list(_local_slices("text", files)), max_record_bytes)


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

READ_CHUNK = 1 << 20  # bytes read at a time where a line is read through without being kept


@contextlib.contextmanager
def _reading(path: str) -> Iterator[IO[bytes]]:
    """`path` opened as bytes (a .gz file decompressed); an error opening or reading it (no permission, an I/O
    error, a damaged archive) is one DataError naming it."""
    try:
        with hub.open_file(path) as raw:
            yield gzip.open(raw) if path.endswith(".gz") else raw
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None


def _text_documents(source: Source, piece: Slice, bad: BadRecords | None) -> Iterator[str]:
    for path in piece.paths:
        with _reading(path) as f:
            data = f.read(source.max_record_bytes + 1)  # one byte past the limit tells a longer file
        text = _record_text(data, _Place(path), source.max_record_bytes, bad)
        if text is not None:
            yield text


def _json_documents(source: Source, piece: Slice, bad: BadRecords | None) -> Iterator[str]:
    path, name = piece.paths[0], source.text_field
    for offset, line in _json_lines(piece, source.max_record_bytes):
        place = _Place(path, line_at=offset)
        text = _record_text(line, place, source.max_record_bytes, bad)
        if text is None:
            continue
        try:
            record = json.loads(text.removeprefix("\ufeff"))  # a byte order mark, as some editors start a file
        except ValueError as err:
            problem = f"not valid JSON ({err})"
        else:
            if not isinstance(record, dict):
                problem = f"a JSON {type(record).__name__}, not an object"
            elif name not in record:
                raise ConfigError(f"data.text_field: no field {name!r} in {place}; its fields: {', '.join(record)}")
            elif (value := record[name]) is None:
                yield ""  # no text: an empty document
                continue
            elif not isinstance(value, str):
                problem = f"its {name!r} is a {type(value).__name__}, not text"
            elif (surrogate := _unpaired_surrogate(value)) is not None:  # a \ud800 escape: no encoder takes it
                problem = f"its {name!r} holds an unpaired surrogate (\\u{surrogate:04x}), not valid Unicode"
            else:
                yield value
                continue
        _bad_record(place, problem, bad)


def _json_lines(piece: Slice, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(byte offset, line without its newline) of the non-blank lines whose first byte lies in the slice's range.
    A line longer than `max_bytes` is read through in chunks, never held, and given as None."""
    with _reading(piece.paths[0]) as stream:
        if piece.start > 0:
            stream.seek(piece.start - 1)
            _read_through(stream)  # the rest of the line that began before this slice
        offset = stream.tell()
        while piece.stop < 0 or offset < piece.stop:
            line = stream.readline(max_bytes + 1)
            if not line:
                return
            if len(line) > max_bytes and not line.endswith(b"\n"):
                yield offset, None
                offset += len(line) + _read_through(stream)
                continue
            if line.strip():
                yield offset, line.removesuffix(b"\n")
            offset += len(line)


def _read_through(stream: IO[bytes]) -> int:
    """Read the rest of the current line in bounded chunks, keeping none of it; returns its length in bytes."""
    length = 0
    while chunk := stream.readline(READ_CHUNK):
        length += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return length


def _line_number(path: str, offset: int) -> int:
    """1-based number of the line at byte `offset`, counted in chunks."""
    lines = 1
    with _reading(path) as f:
        while offset > 0 and (chunk := f.read(min(offset, READ_CHUNK))):
            lines += chunk.count(b"\n")
            offset -= len(chunk)
    return lines


def _parquet_documents(source: Source, piece: Slice, bad: BadRecords | None) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, name = piece.paths[0], source.text_field
    with _reading(path) as f:
        parquet = pq.ParquetFile(f)
        names = parquet.schema_arrow.names
        if name not in names:
            raise ConfigError(f"data.text_field: no column {name!r} in {path}; columns: {', '.join(names)}")
        column = parquet.schema_arrow.field(name).type
        if not (pa.types.is_string(column) or pa.types.is_large_string(column)):
            _bad_record(_Place(path), f"column {name!r} holds {column}, not text", None)
        stop = parquet.metadata.num_row_groups if piece.stop < 0 else piece.stop
        row = sum(parquet.metadata.row_group(i).num_rows for i in range(piece.start))  # the file's, 0-based
        for batch in parquet.iter_batches(batch_size=1024, row_groups=range(piece.start, stop), columns=[name]):
            # As bytes: Arrow does not check that a string column is UTF-8, and one bad text must not fail a batch.
            for data in batch.column(0).cast(pa.large_binary()).to_pylist():
                text = "" if data is None else _record_text(data, _Place(path, row=row), source.max_record_bytes,
                                                            bad)
                if text is not None:
                    yield text
                row += 1


@dataclass(frozen=True)
class _Place:
    """Where a record is: a text file, a JSON line (at a byte offset) or a parquet row. Said only in a message: a
    line's number costs a read of the file up to it."""

    path: str
    line_at: int | None = None
    row: int | None = None

    def __str__(self) -> str:
        if self.line_at is not None:
            return f"{self.path}: line {_line_number(self.path, self.line_at)}"
        return self.path if self.row is None else f"{self.path}: row {self.row}"

    def byte(self, at: int) -> str:
        """Byte `at` of the record, as a reader would look for it: in the file, or in a parquet text."""
        return f"byte {at} of its text" if self.row is not None else f"byte {(self.line_at or 0) + at} of the file"


def _record_text(data: bytes | None, place: _Place, max_bytes: int, bad: BadRecords | None) -> str | None:
    """The text of one record's bytes (None: a line too long to read), or None for a bad record: longer than
    `max_bytes`, or not valid UTF-8."""
    if data is None or len(data) > max_bytes:
        _bad_record(place, f"longer than data.max_record_bytes={max_bytes:,} bytes", bad)
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        _bad_record(place, f"not valid UTF-8 (at {place.byte(err.start)})", bad)
        return None


def _unpaired_surrogate(text: str) -> int | None:
    """The code point of the first lone surrogate in `text` (not Unicode, though JSON can escape one), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return ord(text[err.start])
    return None


def _bad_record(place: _Place, problem: str, bad: BadRecords | None) -> None:
    """A record that cannot be a document: an error naming it, or counted and skipped under `bad`."""
    if bad is None:
        raise DataError(f"{place}: {problem} (set data.skip_bad_records=true to skip such records)")
    bad.count += 1
    bad.first = bad.first or f"{place}: {problem}"
