"""Prepared data, opened: the rows of each source's splits across its shard files, checked against the manifest.

`open_prepared` reads what `shards` wrote (the files: see `layout`) and trusts none of it: the manifest's fields
are checked (every file it names inside the directory), its seq_len and vocabulary must be the config's, every
shard must be there at its recorded size with its recorded sampled digest (`layout.sample_digest`: a missing,
truncated or overwritten shard is named), or with `verify` its full SHA-256; the tokenizer stored with the
shards must load and be the one they were written with, and unigram.npy must hold a count per id. A hub
source's commit is the one its manifest records (the hub is not asked again). Rows are addressed across shards
by one index, and the token ids of every batch read are checked against the vocabulary (a shard changed while
it is read is named with its row). Anything amiss is one DataError naming the file and the directory to delete.
`prepare_data` is both steps: the data of a config prepared where missing, then opened.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ..fileio import checksum, contained
from .layout import MANIFEST, TOKENIZER, UNIGRAM, Manifest, entropy, read_manifest, sample_digest, shard_path
from .shards import prepare
from .sources import SPLITS, source_name
from .tokenizer import check_fits, eos_token, id_count, read_tokenizer


@dataclass
class Rows:
    """The rows of one split of a prepared source across its shard files, addressed by one row index."""

    dir: Path  # the prepared source's
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
        the shard and its row (a shard changed since it was opened)."""
        rows = np.asarray(rows, dtype=np.int64)
        shard = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), self.shards[0].shape[1]), np.int64)
        for s in np.unique(shard):
            mask = shard == s
            out[mask] = self.shards[s][rows[mask] - self.starts[s]]
        if out.size and out.max() >= self.vocab_size:
            i = int(np.argmax(out.max(axis=1) >= self.vocab_size))
            s = int(shard[i])
            raise _corrupt(self.files[s], f"row {int(rows[i] - self.starts[s])} holds token id {int(out[i].max())}, "
                           f"past the vocabulary of {self.vocab_size}", self.dir)
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


def prepare_data(cfg: DataConfig, progress: bool = True, in_band: bool = False, workers: int = 1,
                 verify: bool = False) -> PreparedData:
    """The prepared data of `cfg`, built where missing (see `shards.prepare`) and opened (`verify`: every shard's
    full digest checked)."""
    return open_prepared(cfg, prepare(cfg, progress, in_band, workers), verify)


def open_prepared(cfg: DataConfig, dirs: list[Path] | tuple[Path, ...], verify: bool = False) -> PreparedData:
    """The prepared sources in `dirs` (what `shards.prepare` built for `cfg`, in the order of its sources), every
    shard checked against its manifest: by its size and sampled digest, or with `verify` by its full SHA-256."""
    sources = [_open_source(cfg, d, spec.weight, source_name(spec), verify)
               for d, spec in zip(dirs, cfg.sources, strict=True)]
    eos = {s.manifest.eos_id for s in sources}
    if len(eos) > 1:
        raise DataError(f"the prepared sources disagree on the end-of-document id ({sorted(eos)}); prepare them "
                        "with one tokenizer")
    return PreparedData(sources, sources[0].dir / TOKENIZER, eos.pop())


def _open_source(cfg: DataConfig, target: Path, weight: float, name: str, verify: bool) -> PreparedSource:
    manifest = read_manifest(target)
    if manifest.seq_len != cfg.seq_len:
        raise _corrupt(target / MANIFEST, f"seq_len {manifest.seq_len}, but the config's data.seq_len is "
                       f"{cfg.seq_len}", target)
    check_fits(manifest.vocab_size, cfg.vocab_size, _check_tokenizer(target, manifest))
    files = [shard_path(target, shard) for shard in manifest.shards]
    _check_shards(target, files, manifest, verify)
    rows = {split: _rows(target, files, manifest, split) for split in SPLITS}
    unigram = _unigram(_file(target, UNIGRAM), manifest, target)
    return PreparedSource(name, weight, target, manifest, rows["train"], rows["val"], unigram)


def _corrupt(path: Path, problem: str, target: Path) -> DataError:
    return DataError(f"{path}: {problem}; the prepared data is corrupt: delete {target} to prepare it again")


def _file(target: Path, name: str) -> Path:
    """A file of the prepared source in `target`, which must not lead out of it (a symbolic link)."""
    try:
        return contained(target, name)
    except ValueError as err:
        raise _corrupt(target / name, str(err), target) from None


def _check_tokenizer(target: Path, manifest: Manifest) -> Path:
    """The tokenizer stored with the shards: it loads, and it is the one they were written with, by its ids and
    its bytes (another tokenizer with as many ids would map them to other text)."""
    path = _file(target, TOKENIZER)
    tokenizer = read_tokenizer(path, lambda reason: _corrupt(path, f"not a usable tokenizer ({reason})", target))
    if id_count(tokenizer) != manifest.vocab_size or tokenizer.token_to_id(eos_token(tokenizer)) != manifest.eos_id:
        raise _corrupt(path, "not the tokenizer the shards were written with (other ids)", target)
    if checksum(path)["digest"] != manifest.tokenizer_digest:
        raise _corrupt(path, "not the tokenizer the shards were written with (its SHA-256 is not the manifest's)",
                       target)
    return path


def _check_shards(target: Path, files: list[Path], manifest: Manifest, verify: bool) -> None:
    """Every shard there at its recorded size and with its recorded digest: the sampled one (a shard listed
    without one, by a manifest written before they were, is checked by its size), or with `verify` the full one."""
    for path, shard in zip(files, manifest.shards):
        size = path.stat().st_size if path.is_file() else None
        if size != shard.bytes:
            found = "missing" if size is None else f"{size:,} bytes"
            raise _corrupt(path, f"{found}, expected {shard.bytes:,} bytes per the manifest", target)
    if verify:
        kind, expected = "SHA-256", [shard.digest for shard in manifest.shards]
        found = [checksum(path)["digest"] for path in files]  # each in parallel over its blocks
    else:
        kind, expected = "sampled digest", [shard.sample for shard in manifest.shards]
        with ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:  # small reads: overlap their latency
            found = list(pool.map(lambda path, sample: None if sample is None else sample_digest(path), files,
                                  expected))
    for path, digest, recorded in zip(files, found, expected):
        if digest != recorded:
            raise _corrupt(path, f"its contents are not the ones written (its {kind} is not the manifest's: "
                           "overwritten or damaged)", target)


def _rows(target: Path, files: list[Path], manifest: Manifest, split: str) -> Rows:
    """The rows of one split, over its shard files (checked)."""
    dtype, row = np.dtype(manifest.dtype), manifest.seq_len + 1
    chosen = [(path, shard) for path, shard in zip(files, manifest.shards) if shard.split == split]
    return Rows(target, [path for path, _ in chosen],
                [np.memmap(path, dtype=dtype, mode="r", shape=(shard.rows, row)) for path, shard in chosen],
                manifest.vocab_size)


def _unigram(path: Path, manifest: Manifest, target: Path) -> np.ndarray:
    """unigram.npy: the train tokens' count of each id."""
    try:
        counts = np.load(path, mmap_mode="r")  # a header claiming more than the file holds is refused, not allocated
    except (OSError, ValueError, EOFError) as err:
        raise _corrupt(path, "missing" if not path.is_file() else f"unreadable ({err})", target) from None
    if (not isinstance(counts, np.ndarray) or counts.shape != (manifest.vocab_size,) or counts.dtype.kind not in "iu"
            or counts.min() < 0 or counts.sum() == 0):
        what = f"{counts.dtype} {counts.shape}" if isinstance(counts, np.ndarray) else type(counts).__name__
        raise _corrupt(path, f"not the train token counts of {manifest.vocab_size} ids (it holds {what})", target)
    return np.array(counts)
