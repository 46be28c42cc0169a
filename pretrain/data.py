"""Training data: tokenizer, packed token shards in a shared cache, and a resumable batch sampler.

`prepare_data(cfg)` turns the documents of `data.source` (see corpus.py) into two memory-mapped shards:
1. Split: each document goes to val when a hash of its text falls below `data.val_fraction`, so the split
   does not depend on document order and duplicated documents never straddle it. Empty documents are dropped.
2. Tokenizer: `data.tokenizer: bpe` trains a byte-level BPE on the train documents with `<|endoftext|>` as
   its only special token, cached apart from the shards (a new seq_len reuses it); or a local tokenizer.json.
3. Packing: documents are encoded in batches on all cores (by tiktoken where it gives the tokenizer's exact ids,
   see encoder.py), each followed by EOS (a tokenizer's own template, such as a BOS, is kept), concatenated,
   and cut into rows of seq_len + 1 tokens (inputs row[:-1], targets row[1:]); the tail that does not fill a
   row is dropped.
4. Shards: raw uint16 (uint32 past 2^16 ids) train.bin and val.bin next to meta.json, which holds the row
   counts that loading checks file sizes against, token counts, and the unigram entropy of the train tokens.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm

from .config import ConfigError, DataConfig, UserError
from .corpus import Corpus, fingerprint, load_corpus, resolve_source
from .encoder import DocumentEncoder, document_encoder, usable_cores

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

FORMAT_VERSION = 1  # bump when the shard layout or the split rule changes: old caches are then ignored
EOS_TOKEN = "<|endoftext|>"
EOS_CANDIDATES = (EOS_TOKEN, "</s>", "<|end_of_text|>", "<eos>")  # recognised in a tokenizer brought along
TRAIN, VAL, SKIP = 0, 1, 2  # a document's split; SKIP = empty
SPLITS = {"train": TRAIN, "val": VAL}
DOCS_PER_BATCH = 128  # documents per encode call


class DataError(UserError, ValueError):
    """Prepared data that is missing, corrupt or truncated; the message names the file."""


@dataclass
class PreparedData:
    dir: Path
    tokenizer_path: Path  # the tokenizer.json stored with the shards
    eos_id: int
    train: np.ndarray  # memmap, (n_train_rows, seq_len + 1)
    val: np.ndarray  # memmap, (n_val_rows, seq_len + 1)
    meta: dict  # see _write_shards for the keys


def prepare_data(cfg: DataConfig, progress: bool = True) -> PreparedData:
    """The shards for `cfg`, built on first use and reused from `data.cache_dir` after that."""
    cfg.validate()
    if cfg.num_workers > 0:
        # The Rust encoder sizes its thread pool from this variable when the process first encodes.
        os.environ.setdefault("RAYON_NUM_THREADS", str(cfg.num_workers))
    target = _data_dir(cfg)
    _build_once(target, lambda tmp: _write_shards(cfg, prepare_tokenizer(cfg, progress), tmp, progress))
    return _open(target, cfg)


def load_prepared(cfg: DataConfig) -> PreparedData:
    """The shards `prepare_data(cfg)` built; for processes that must not build (other ranks)."""
    target = _data_dir(cfg)
    if not target.is_dir():
        raise DataError(f"{target}: no prepared data for this data config; run `pretrain prepare-data` first")
    return _open(target, cfg)


def prepare_tokenizer(cfg: DataConfig, progress: bool = True) -> Path:
    """The tokenizer.json for `data.tokenizer`: a local file, or a BPE trained on the corpus (and cached)."""
    if cfg.tokenizer != "bpe":
        return _local_tokenizer(cfg.tokenizer)
    if cfg.vocab_size < 257:
        raise ConfigError(f"data.vocab_size={cfg.vocab_size} cannot hold a byte-level BPE (256 bytes + EOS); "
                          "set data.vocab_size to at least 257")
    source = resolve_source(cfg)
    key = fingerprint([FORMAT_VERSION, source.identity, cfg.vocab_size, cfg.max_documents, cfg.val_fraction])
    target = Path(cfg.cache_dir) / f"tokenizer-bpe{cfg.vocab_size}-{key}"
    _build_once(target, lambda tmp: _train_bpe(cfg, tmp / "tokenizer.json", progress))
    return target / "tokenizer.json"


def hf_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """The tokenizer as a `transformers.PreTrainedTokenizerFast` with its EOS set (`save_pretrained` it)."""
    from transformers import PreTrainedTokenizerFast

    eos = _eos_token(Tokenizer.from_file(str(path)))
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=eos)


# --- the cache ----------------------------------------------------------------------------------------------

def _data_dir(cfg: DataConfig) -> Path:
    """Where the shards for `cfg` live: named by a digest of everything that shapes them."""
    source = resolve_source(cfg)
    if cfg.tokenizer == "bpe":  # a pure function of the source, vocab_size, max_documents and val_fraction
        tokenizer = ["bpe", cfg.vocab_size]
    else:
        tokenizer = hashlib.sha256(_local_tokenizer(cfg.tokenizer).read_bytes()).hexdigest()
    key = fingerprint([FORMAT_VERSION, source.identity, tokenizer, cfg.seq_len, cfg.val_fraction,
                       cfg.max_documents])
    return Path(cfg.cache_dir) / f"{source.kind}-seq{cfg.seq_len}-{key}"


def _build_once(target: Path, build: Callable[[Path], None]) -> None:
    """Make the directory `target` with `build(tmp)` unless it exists, safely across processes.

    Builders of one target take turns on a file lock (flock: on a cluster, put data.cache_dir on a file
    system that honours it); the first builds into a temporary directory and renames it into place, so
    `target` only ever appears complete, and the others find it there. A build that crashed leaves only a
    temporary directory, which the next builder removes.
    """
    if target.is_dir():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if target.is_dir():
            return
        for stale in target.parent.glob(f".{target.name}.tmp*"):
            shutil.rmtree(stale)
        tmp = target.parent / f".{target.name}.tmp{os.getpid()}"
        tmp.mkdir()
        try:
            build(tmp)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _open(target: Path, cfg: DataConfig) -> PreparedData:
    meta_path = target / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{meta_path}: unreadable ({err}); delete {target} to rebuild it") from None
    if meta.get("format") != FORMAT_VERSION:
        raise DataError(f"{meta_path}: format {meta.get('format')}, expected {FORMAT_VERSION}; "
                        f"delete {target} to rebuild it")
    _check_fits(meta["vocab_size"], cfg, target / "tokenizer.json")
    shards = {name: _memmap(target / f"{name}.bin", np.dtype(meta["dtype"]), meta[f"{name}_rows"],
                            meta["seq_len"] + 1) for name in SPLITS}
    return PreparedData(target, target / "tokenizer.json", meta["eos_id"], shards["train"], shards["val"],
                        meta)


def _memmap(path: Path, dtype: np.dtype, rows: int, row: int) -> np.ndarray:
    expected = rows * row * dtype.itemsize
    size = path.stat().st_size if path.is_file() else None
    if size != expected:
        found = "missing" if size is None else f"{size:,} bytes"
        raise DataError(f"{path}: {found}, expected {expected:,} bytes ({rows:,} rows of {row} {dtype.name}) "
                        f"per meta.json; the cache is corrupt: delete {path.parent} to rebuild it")
    return np.memmap(path, dtype=dtype, mode="r", shape=(rows, row))


# --- split and tokenizer ------------------------------------------------------------------------------------

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


def _train_bpe(cfg: DataConfig, out: Path, progress: bool) -> None:
    corpus = load_corpus(cfg)
    codes = split_documents(corpus, cfg.val_fraction)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # all 256 bytes: any text encodes, nothing is unknown
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=[EOS_TOKEN],
                                  initial_alphabet=alphabet, show_progress=progress)
    texts = chain.from_iterable(corpus.batches(DOCS_PER_BATCH))
    train_texts = (text for text, code in zip(texts, codes) if code == TRAIN)
    tokenizer.train_from_iterator(train_texts, trainer, length=int((codes == TRAIN).sum()))
    tokenizer.save(str(out))


def _local_tokenizer(spec: str) -> Path:
    path = Path(spec).expanduser()
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"data.tokenizer: no tokenizer.json at '{spec}'; use 'bpe' to train one, "
                          "or a tokenizer.json file or a directory holding one")
    return path


def _load_tokenizer(path: Path, cfg: DataConfig) -> tuple[Tokenizer, int]:
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 -- the Rust side raises a bare Exception for a malformed file
        raise ConfigError(f"data.tokenizer: cannot load {path} ({err})") from None
    _check_fits(_id_count(tokenizer), cfg, path)
    tokenizer.no_truncation()  # a tokenizer.json may carry a model's input limits: documents are packed whole
    tokenizer.no_padding()
    return tokenizer, tokenizer.token_to_id(_eos_token(tokenizer))


def _id_count(tokenizer: Tokenizer) -> int:
    """Ids in use (the largest id + 1: added tokens may sit past the base vocabulary)."""
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def _check_fits(n_ids: int, cfg: DataConfig, path: Path) -> None:
    if n_ids > cfg.vocab_size:
        raise ConfigError(f"data.vocab_size={cfg.vocab_size} is smaller than the {n_ids} token ids of "
                          f"{path}; set data.vocab_size to at least {n_ids}")


def _eos_token(tokenizer: Tokenizer) -> str:
    for token in EOS_CANDIDATES:
        if tokenizer.token_to_id(token) is not None:
            return token
    raise ConfigError(f"data.tokenizer: no end-of-document token in the tokenizer; "
                      f"expected one of {', '.join(EOS_CANDIDATES)}")


# --- packing ------------------------------------------------------------------------------------------------

def _write_shards(cfg: DataConfig, tokenizer_path: Path, out: Path, progress: bool) -> None:
    corpus = load_corpus(cfg)
    codes = split_documents(corpus, cfg.val_fraction)
    tokenizer, eos = _load_tokenizer(tokenizer_path, cfg)
    encoder = document_encoder(tokenizer, cfg.num_workers or usable_cores())
    shutil.copyfile(tokenizer_path, out / "tokenizer.json")
    n_ids = _id_count(tokenizer)
    dtype = np.dtype(np.uint16 if cfg.vocab_size <= 2**16 else np.uint32)
    row = cfg.seq_len + 1
    counts = np.zeros(n_ids, np.int64)  # train token frequencies, for the unigram entropy
    written = dict.fromkeys(SPLITS, 0)
    with ExitStack() as stack:
        files = {name: stack.enter_context(open(out / f"{name}.bin", "wb")) for name in SPLITS}
        bar = stack.enter_context(tqdm(total=int((codes != SKIP).sum()), unit="doc", desc=f"tokenize ({encoder.name})",
                                       disable=not progress))
        for batch_codes, docs in _encode(encoder, corpus, codes):
            for name, code in SPLITS.items():
                tokens = _join([ids for ids, c in zip(docs, batch_codes) if c == code], eos, dtype)
                tokens.tofile(files[name])
                written[name] += tokens.size
                if code == TRAIN:
                    counts += np.bincount(tokens, minlength=n_ids)
            bar.update(len(batch_codes))
            bar.set_postfix(tokens=f"{sum(written.values()):,}")
        rows = {name: n // row for name, n in written.items()}
        for name, f in files.items():  # drop the tail that does not fill a row
            size = rows[name] * row * dtype.itemsize
            if name == "train":
                f.flush()
                counts -= np.bincount(np.fromfile(out / "train.bin", dtype, offset=size), minlength=n_ids)
            f.truncate(size)
            os.fsync(f.fileno())  # the rename that publishes the shards must not overtake their bytes
    for name, setting in (("train", "data.max_documents"), ("val", "data.val_fraction")):
        if rows[name] == 0:
            raise ConfigError(f"{setting}: the {name} split has {written[name]} tokens, less than one row of "
                              f"seq_len + 1 = {row}; use more documents or a shorter data.seq_len")
    p = counts[counts > 0] / counts.sum()
    meta = {
        "format": FORMAT_VERSION,
        "source": corpus.description,
        "tokenizer": cfg.tokenizer,
        "encoder": encoder.name,  # see encoder.py: both give the same ids
        "vocab_size": n_ids,
        "eos_id": eos,
        "seq_len": cfg.seq_len,
        "dtype": dtype.name,
        "documents": int((codes != SKIP).sum()),
        "train_documents": int((codes == TRAIN).sum()),
        "val_documents": int((codes == VAL).sum()),
        "train_rows": rows["train"],
        "val_rows": rows["val"],
        "train_tokens": rows["train"] * row,  # as stored: whole rows of seq_len + 1
        "val_tokens": rows["val"] * row,
        "unigram_entropy": float(-(p * np.log(p)).sum()),  # nats; a unigram model's loss on the train tokens
        "val_fraction": cfg.val_fraction,
        "max_documents": cfg.max_documents,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _encode(encoder: DocumentEncoder, corpus: Corpus, codes: np.ndarray) -> Iterator[tuple[np.ndarray, list]]:
    """(split codes, token ids) of the non-empty documents, batch by batch, in corpus order.

    Several batches are encoded at once: both encoders release the GIL, so while this thread packs one batch
    the encoder's threads work on the next ones, and one batch's stragglers overlap the others' bulk.
    """
    def batches() -> Iterator[tuple[np.ndarray, list[str]]]:
        start = 0
        for texts in corpus.batches(DOCS_PER_BATCH):
            batch_codes = codes[start:start + len(texts)]
            start += len(texts)
            keep = np.flatnonzero(batch_codes != SKIP)
            yield batch_codes[keep], [texts[i] for i in keep]

    with ThreadPoolExecutor(max_workers=encoder.calls_in_flight) as pool:
        pending: deque = deque()
        for batch_codes, texts in batches():
            pending.append((batch_codes, pool.submit(encoder.encode_batch, texts)))
            if len(pending) == encoder.calls_in_flight:
                batch_codes, ids = pending.popleft()
                yield batch_codes, ids.result()
        for batch_codes, ids in pending:
            yield batch_codes, ids.result()


def _join(docs: list[list[int]], eos: int, dtype: np.dtype) -> np.ndarray:
    """The documents' tokens end to end, each followed by `eos`."""
    lengths = np.fromiter(map(len, docs), np.int64, len(docs))
    flat = np.fromiter(chain.from_iterable(docs), dtype, int(lengths.sum()))
    return np.insert(flat, np.cumsum(lengths), eos)


# --- batches ------------------------------------------------------------------------------------------------

class StepSampler:
    """The train rows of each step's global batch: a pure function of (seed, step).

    Global sample i is row perm_e[i % n_rows] of epoch e = i // n_rows, perm_e a permutation seeded by
    (seed, e): every epoch visits each row once, and resuming at step k replays exactly the batches of an
    uninterrupted run, whatever the number of processes.
    """

    def __init__(self, n_rows: int, global_batch: int, seed: int):
        assert n_rows > 0 and global_batch > 0 and seed >= 0
        self.n_rows, self.global_batch, self.seed = n_rows, global_batch, seed
        self._perms: dict[int, np.ndarray] = {}  # the epochs of the latest steps

    def indices(self, step: int) -> np.ndarray:
        sample = np.arange(step * self.global_batch, (step + 1) * self.global_batch, dtype=np.int64)
        epoch, position = np.divmod(sample, self.n_rows)
        rows = np.empty(self.global_batch, np.int64)
        for e in np.unique(epoch):
            mask = epoch == e
            rows[mask] = self._permutation(int(e))[position[mask]]
        return rows

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                del self._perms[min(self._perms)]
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n_rows)
        return self._perms[epoch]


def train_micro_batches(data: PreparedData, sampler: StepSampler, step: int, rank: int, world_size: int,
                        micro_batch_size: int) -> list[torch.Tensor]:
    """This rank's micro batches of step `step`: a contiguous slice of the global batch, cut in order."""
    rows = sampler.indices(step)
    if len(rows) % (world_size * micro_batch_size):
        raise ValueError(f"global batch {len(rows)} is not a multiple of {world_size} processes × "
                         f"micro batch {micro_batch_size}")
    per_rank = len(rows) // world_size
    mine = rows[rank * per_rank:(rank + 1) * per_rank]
    return [_tensor(data.train, mine[i:i + micro_batch_size]) for i in range(0, per_rank, micro_batch_size)]


def eval_micro_batches(data: PreparedData, n_batches: int, micro_batch_size: int, rank: int,
                       world_size: int) -> list[torch.Tensor]:
    """A fixed eval set of `n_batches` micro batches, spread evenly over the val rows, split across ranks.

    Every rank gets the same number of batches (ceil(n_batches / world_size), so collective ops stay in step):
    when world_size divides n_batches the eval set does not depend on world_size; otherwise it is rounded up.
    """
    per_rank = -(-n_batches // world_size)
    total = per_rank * world_size * micro_batch_size
    rows = np.arange(total) * len(data.val) // total  # repeats rows only when val has fewer than `total`
    mine = rows[rank * per_rank * micro_batch_size:(rank + 1) * per_rank * micro_batch_size]
    return [_tensor(data.val, mine[i:i + micro_batch_size]) for i in range(0, len(mine), micro_batch_size)]


def _tensor(shard: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(shard[rows].astype(np.int64))  # (len(rows), seq_len + 1)
