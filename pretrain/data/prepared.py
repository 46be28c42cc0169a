"""Prepared data, opened: the rows of each source's splits across its shard files, checked against the manifest.

`open_prepared` reads what `shards` wrote (the files: see `layout`): the manifest's fields are checked, every
shard must be there at the size the manifest gives (a missing or truncated shard is named), and the tokenizer
stored with the shards must load and give the ids they were written with. A hub source's commit is the one its
manifest records (the hub is not asked again). Rows are addressed across shards by one index, and the token
ids of every batch read are checked against the vocabulary (a shard overwritten in place, at its size, is
named with its row). `prepare_data` is both steps: the data of a config prepared where missing, then opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .layout import SHARDS, TOKENIZER, UNIGRAM, Manifest, entropy, read_manifest
from .shards import prepare
from .sources import SPLITS, source_name
from .tokenizer import check_fits, eos_token, id_count, read_tokenizer


@dataclass
class Rows:
    """The rows of one split of a prepared source across its shard files, addressed by one row index."""

    files: list[Path]
    shards: list[np.ndarray]  # memmaps, (rows, seq_len + 1)
    vocab_size: int  # ids must lie below it

    def __post_init__(self):
        self.starts = np.cumsum([0, *(len(s) for s in self.shards)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def to_numpy(self) -> np.ndarray:
        """Every row, in order (for inspection and tests: it reads the whole split)."""
        return np.concatenate([np.asarray(shard) for shard in self.shards])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows by index, as int64 (len(rows), seq_len + 1); a token id past the vocabulary is an error naming
        the shard and its row (a shard overwritten by something else)."""
        rows = np.asarray(rows, dtype=np.int64)
        shard = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), self.shards[0].shape[1]), np.int64)
        for s in np.unique(shard):
            mask = shard == s
            out[mask] = self.shards[s][rows[mask] - self.starts[s]]
        if out.size and out.max() >= self.vocab_size:
            i = int(np.argmax(out.max(axis=1) >= self.vocab_size))
            s = int(shard[i])
            raise DataError(f"{self.files[s]}: row {int(rows[i] - self.starts[s])} holds token id {int(out[i].max())}, "
                            f"past the vocabulary of {self.vocab_size}; the prepared data is corrupt: delete "
                            f"{self.files[s].parents[1]} and prepare it again")
        return out


@dataclass
class PreparedSource:
    name: str
    weight: float
    dir: Path
    manifest: Manifest
    train: Rows
    val: Rows
    unigram: np.ndarray  # train token counts


@dataclass
class PreparedData:
    sources: list[PreparedSource]
    tokenizer_path: Path
    eos_id: int

    @property
    def dirs(self) -> list[Path]:
        return [s.dir for s in self.sources]

    @property
    def unigram_entropy(self) -> float:
        """Nats: the loss of the best model that ignores context, on the mixture of the sources' train tokens."""
        size = max(len(s.unigram) for s in self.sources)
        return entropy(sum(s.weight * np.pad(s.unigram, (0, size - len(s.unigram))) / s.unigram.sum()
                           for s in self.sources))

    def describe(self) -> str:
        lines = []
        for s in self.sources:
            m = s.manifest
            lines.append(f"{s.dir}: {m.documents:,} documents, {m.train_tokens:,} train tokens "
                         f"({len(s.train):,} rows in {m.train_shards} shards), {m.val_tokens:,} val tokens "
                         f"({len(s.val):,} rows)" + (f"; hub commit {m.revision}" if m.revision else "")
                         + (f"; weight {s.weight:g}" if len(self.sources) > 1 else ""))
        return "\n".join(lines + [f"unigram entropy {self.unigram_entropy:.4f} nats"])


def prepare_data(cfg: DataConfig, progress: bool = True, in_band: bool = False, workers: int = 1) -> PreparedData:
    """The prepared data of `cfg`, built where missing (see `shards.prepare`) and opened."""
    return open_prepared(cfg, prepare(cfg, progress, in_band, workers))


def open_prepared(cfg: DataConfig, dirs: list[Path] | tuple[Path, ...]) -> PreparedData:
    """The prepared sources in `dirs` (what `shards.prepare` built for `cfg`, in the order of its sources), every
    shard checked against its manifest."""
    sources = [_open_source(cfg, d, spec.weight, source_name(spec)) for d, spec in zip(dirs, cfg.sources, strict=True)]
    eos = {s.manifest.eos_id for s in sources}
    if len(eos) > 1:
        raise DataError(f"the prepared sources disagree on the end-of-document id ({sorted(eos)}); prepare them "
                        "with one tokenizer")
    return PreparedData(sources, sources[0].dir / TOKENIZER, eos.pop())


def _open_source(cfg: DataConfig, target: Path, weight: float, name: str) -> PreparedSource:
    manifest = read_manifest(target)
    _check_tokenizer(target / TOKENIZER, manifest)
    check_fits(manifest.vocab_size, cfg.vocab_size, target / TOKENIZER)
    rows = {split: _rows(target, manifest, split) for split in SPLITS}
    if not (target / UNIGRAM).is_file():
        raise DataError(f"{target / UNIGRAM}: missing; the data is corrupt: delete {target} to prepare it again")
    return PreparedSource(name, weight, target, manifest, rows["train"], rows["val"], np.load(target / UNIGRAM))


def _rows(target: Path, manifest: Manifest, split: str) -> Rows:
    """The rows of one split, every shard file there at the size the manifest gives."""
    shards = [shard for shard in manifest.shards if shard.split == split]
    files = [target / SHARDS / shard.file for shard in shards]
    dtype = np.dtype(manifest.dtype)
    return Rows(files, [_memmap(f, dtype, shard.rows, manifest.seq_len + 1) for f, shard in zip(files, shards)],
                manifest.vocab_size)


def _check_tokenizer(path: Path, manifest: Manifest) -> None:
    """The tokenizer stored with the shards loads, and its ids are the ones the shards were written with."""
    tokenizer = read_tokenizer(path, lambda reason: DataError(
        f"{path}: not a usable tokenizer ({reason}); delete {path.parent} to prepare the data again"))
    if id_count(tokenizer) != manifest.vocab_size or tokenizer.token_to_id(eos_token(tokenizer)) != manifest.eos_id:
        raise DataError(f"{path}: not the tokenizer the shards were written with (other ids); delete "
                        f"{path.parent} to prepare the data again")


def _memmap(path: Path, dtype: np.dtype, rows: int, row: int) -> np.ndarray:
    """A shard as (rows, row) tokens; a file of another size (a missing or truncated shard) is an error."""
    expected = rows * row * dtype.itemsize
    size = path.stat().st_size if path.is_file() else None
    if size is None or size < expected:
        found = "missing" if size is None else f"{size:,} bytes"
        raise DataError(f"{path}: {found}, expected {expected:,} bytes ({rows:,} rows of {row} {dtype.name}) per "
                        f"the manifest; the data is corrupt: delete {path.parents[1]} to prepare it again")
    return np.memmap(path, dtype=dtype, mode="r", shape=(rows, row))
