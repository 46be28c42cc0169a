"""Text sources: where documents come from, before any tokenization.

`data.source` is one of
- `embedded`: the Python standard library's own sources of the running interpreter (all `*.py` under
  `sysconfig.get_paths()["stdlib"]`, without `site-packages` and the test suites), one document per file,
  sorted by relative path. It ships with every Python, so a laptop or CI machine needs no download.
- a local `.txt`, `.jsonl`/`.json` or `.parquet` file, a directory of them, or a glob. Text files are one
  document per file (a line of prose or code is too short to be a document); JSON lines and parquet files
  hold one document per record, its text in the column `data.text_field`.
- `hub:NAME`: a Hugging Face hub dataset (`data.hub_config`, `data.hub_split`, `data.text_field`).

Every source becomes a `datasets.Dataset` with one row per document, in a deterministic order. Each document
goes to the train or the held-out validation split by a hash of its text (`split_documents`).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import socket
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from urllib.parse import urlparse

import datasets
import numpy as np

from ..config import DataConfig
from ..errors import ConfigError

EMBEDDED_SKIP_DIRS = frozenset({"site-packages", "test", "tests", "idle_test"})
# file suffix -> the datasets builder that reads it
LOADERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
HUB_PREFIX = "hub:"
DOCS_PER_BATCH = 128  # documents read (and encoded) at a time
TRAIN, VAL, SKIP = 0, 1, 2  # a document's split; SKIP = empty
SPLITS = {"train": TRAIN, "val": VAL}
LOAD_ERRORS = (OSError, ValueError, datasets.exceptions.DatasetsError)  # what datasets raises for bad input


@dataclass(frozen=True)
class Source:
    """A resolved `data.source`: cheap to compute (no file is read), so caches can be keyed on it."""
    kind: str  # "embedded", "hub", or a datasets builder name ("text", "json", "parquet")
    files: tuple[Path, ...]  # the files to read, in order (none for hub)
    identity: str  # changes whenever the documents may have changed
    description: str  # for people: stored in the data's metadata and printed


@dataclass
class Corpus:
    dataset: datasets.Dataset  # one row per document
    text_field: str
    description: str

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, size: int) -> Iterator[list[str]]:
        """Documents in order, `size` at a time; a missing text reads as an empty document."""
        for batch in self.dataset.select_columns([self.text_field]).iter(batch_size=size):
            yield [text or "" for text in batch[self.text_field]]


def resolve_source(cfg: DataConfig) -> Source:
    if cfg.source == "embedded":
        return _embedded_source()
    if cfg.source.startswith(HUB_PREFIX):
        name = cfg.source.removeprefix(HUB_PREFIX)
        if not name:
            raise ConfigError("data.source: 'hub:' needs a dataset name, e.g. hub:roneneldan/TinyStories")
        spec = [name, cfg.hub_config, cfg.hub_split, cfg.text_field]
        description = f"hub:{name} (config {cfg.hub_config}, split {cfg.hub_split})"
        return Source("hub", (), fingerprint(spec), description)
    files = _local_files(cfg.source)
    kind = LOADERS[files[0].suffix]
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    identity = fingerprint([kind, cfg.text_field if kind != "text" else None, stats])
    return Source(kind, files, identity, f"{cfg.source} ({len(files)} {kind} file{'s' * (len(files) > 1)})")


def load_corpus(cfg: DataConfig) -> Corpus:
    """The documents of `data.source`, the first `data.max_documents` of them if set."""
    source = resolve_source(cfg)
    if source.kind == "embedded":
        files = source.files[:cfg.max_documents]
        texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
        return Corpus(datasets.Dataset.from_dict({"text": texts}), "text", source.description)
    if source.kind == "hub":
        dataset = _load_hub(cfg)
    else:
        dataset = _load_files(source, cfg.source)
    field = "text" if source.kind == "text" else cfg.text_field
    if field not in dataset.column_names:
        raise ConfigError(f"data.text_field: no column {field!r} in {source.description}; "
                          f"columns: {', '.join(dataset.column_names)}")
    if cfg.max_documents is not None:
        dataset = dataset.select(range(min(cfg.max_documents, len(dataset))))
    return Corpus(dataset, field, source.description)


@functools.cache  # the interpreter's own files do not change while it runs
def _embedded_source() -> Source:
    root = Path(sysconfig.get_paths()["stdlib"])
    relative = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in EMBEDDED_SKIP_DIRS]  # never descend into them
        relative += [(Path(folder) / n).relative_to(root).as_posix() for n in names if n.endswith(".py")]
    relative.sort()
    files = tuple(root / r for r in relative)
    version = ".".join(map(str, sys.version_info[:3]))
    identity = fingerprint(["embedded", version, [(r, f.stat().st_size) for r, f in zip(relative, files)]])
    return Source("embedded", files, identity, f"embedded: Python {version} standard library sources "
                                               f"({len(files)} files under {root})")


def _local_files(pattern: str) -> list[Path]:
    """The supported files named by a path, a directory (searched recursively) or a glob, sorted."""
    path = Path(pattern).expanduser()
    allowed = "/".join(LOADERS)
    if path.is_file():
        if path.suffix not in LOADERS:
            raise ConfigError(f"data.source: unsupported file type {path.suffix or '(none)'!r} for "
                              f"'{pattern}'; use {allowed} files, a directory of them, or 'embedded'")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOADERS)
    elif glob.has_magic(pattern):
        files = sorted(p for p in map(Path, glob.glob(os.path.expanduser(pattern), recursive=True))
                       if p.is_file() and p.suffix in LOADERS)
    else:
        raise ConfigError(f"data.source: '{pattern}' does not exist (expected 'embedded', 'hub:NAME', "
                          f"or a {allowed} file, directory or glob)")
    if not files:
        raise ConfigError(f"data.source: no {allowed} files match '{pattern}'")
    kinds = sorted({LOADERS[f.suffix] for f in files})
    if len(kinds) > 1:
        raise ConfigError(f"data.source: '{pattern}' mixes {' and '.join(kinds)} files; point it at one kind")
    return files


def _load_files(source: Source, pattern: str) -> datasets.Dataset:
    options = {"sample_by": "document", "encoding_errors": "replace"} if source.kind == "text" else {}
    try:
        return datasets.load_dataset(source.kind, data_files=[str(f) for f in source.files], split="train",
                                     **options)
    except LOAD_ERRORS as err:
        raise ConfigError(f"data.source: cannot read '{pattern}' as {source.kind} ({_reason(err)})") from None


def _load_hub(cfg: DataConfig) -> datasets.Dataset:
    name = cfg.source.removeprefix(HUB_PREFIX)
    if not datasets.config.HF_HUB_OFFLINE:
        _check_hub_reachable(cfg.source)
    try:
        return datasets.load_dataset(name, cfg.hub_config, split=cfg.hub_split)
    except LOAD_ERRORS as err:  # unknown name, config or split, gated access, no offline copy, ...
        raise ConfigError(f"data.source: cannot load {cfg.source} (data.hub_config={cfg.hub_config}, "
                          f"data.hub_split={cfg.hub_split}): {_reason(err)}") from None


def _check_hub_reachable(source: str) -> None:
    """Fail in seconds, not after datasets' minute of retries, when the hub cannot be reached."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=5).close()
    except OSError as err:
        raise ConfigError(f"data.source: {source} needs the network, but {url.hostname} is unreachable "
                          f"({err}); use a local path, or HF_HUB_OFFLINE=1 for a cached copy") from None


def _reason(err: BaseException) -> str:
    """The root cause in one line: datasets wraps a parser's error in a generic one."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"


def fingerprint(obj: object) -> str:
    """A short, stable digest of a JSON-able value: how caches name what they hold."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def split_documents(corpus: Corpus, val_fraction: float) -> np.ndarray:
    """TRAIN, VAL or SKIP per document, from a hash of its text; at least one train and one val document."""
    position = np.full(len(corpus), np.nan)  # the hash as a number in [0, 1); NaN for empty documents
    texts = chain.from_iterable(corpus.batches(DOCS_PER_BATCH))
    for i, text in enumerate(texts):
        if text and not text.isspace():
            digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest()
            position[i] = int.from_bytes(digest, "big") / 2**64
    used = ~np.isnan(position)
    if used.sum() < 2:
        raise ConfigError(f"data.source: {corpus.description} has {used.sum()} non-empty document(s); "
                          "at least 2 are needed (one for training, one for validation)")
    codes = np.where(position < val_fraction, VAL, TRAIN).astype(np.int8)
    codes[~used] = SKIP
    if not (codes == VAL).any():  # a small corpus: hold out the document nearest the threshold
        codes[np.nanargmin(position)] = VAL
    if not (codes == TRAIN).any():
        codes[np.nanargmax(position)] = TRAIN
    return codes
