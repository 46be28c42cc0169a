"""Prepared data: documents split, encoded and packed into memory-mapped shards, cached across runs.

`prepare_data(cfg)` turns the documents of `data.source` into two shards:
1. Split: each document goes to val when a hash of its text falls below `data.val_fraction`, so the split
   does not depend on document order and duplicated documents never straddle it. Empty documents are dropped.
2. Tokenizer: trained or brought along (see `tokenizer`).
3. Packing: documents are encoded in batches on all cores (by tiktoken where it gives the tokenizer's exact ids,
   see `encoder`), each followed by EOS (a tokenizer's own template, such as a BOS, is kept), concatenated,
   and cut into rows of seq_len + 1 tokens (inputs row[:-1], targets row[1:]); the tail that does not fill a
   row is dropped.
4. Shards: raw uint16 (uint32 past 2^16 ids) train.bin and val.bin next to meta.json, which holds the row
   counts that loading checks file sizes against, token counts, and the unigram entropy of the train tokens.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import DataConfig
from ..errors import ConfigError, UserError
from .cache import FORMAT_VERSION, build_once
from .encoder import DocumentEncoder, document_encoder, usable_cores
from .sources import (
    DOCS_PER_BATCH,
    SKIP,
    SPLITS,
    TRAIN,
    VAL,
    Corpus,
    fingerprint,
    load_corpus,
    resolve_source,
    split_documents,
)
from .tokenizer import check_fits, id_count, load_tokenizer, prepare_tokenizer, tokenizer_identity


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
    build_once(target, lambda staged: _write_shards(cfg, prepare_tokenizer(cfg, progress), staged, progress))
    return _open(target, cfg)


def load_prepared(cfg: DataConfig) -> PreparedData:
    """The shards `prepare_data(cfg)` built; for processes that must not build (other ranks)."""
    target = _data_dir(cfg)
    if not target.is_dir():
        raise DataError(f"{target}: no prepared data for this data config; run `pretrain prepare-data` first")
    return _open(target, cfg)


# --- the cache ----------------------------------------------------------------------------------------------

def _data_dir(cfg: DataConfig) -> Path:
    """Where the shards for `cfg` live: named by a digest of everything that shapes them."""
    source = resolve_source(cfg)
    key = fingerprint([FORMAT_VERSION, source.identity, tokenizer_identity(cfg), cfg.seq_len, cfg.val_fraction,
                       cfg.max_documents])
    return Path(cfg.cache_dir) / f"{source.kind}-seq{cfg.seq_len}-{key}"


def _open(target: Path, cfg: DataConfig) -> PreparedData:
    meta_path = target / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{meta_path}: unreadable ({err}); delete {target} to rebuild it") from None
    if meta.get("format") != FORMAT_VERSION:
        raise DataError(f"{meta_path}: format {meta.get('format')}, expected {FORMAT_VERSION}; "
                        f"delete {target} to rebuild it")
    check_fits(meta["vocab_size"], cfg, target / "tokenizer.json")
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


# --- packing ------------------------------------------------------------------------------------------------

def _write_shards(cfg: DataConfig, tokenizer_path: Path, out: Path, progress: bool) -> None:
    corpus = load_corpus(cfg)
    codes = split_documents(corpus, cfg.val_fraction)
    tokenizer, eos = load_tokenizer(tokenizer_path, cfg)
    encoder = document_encoder(tokenizer, cfg.num_workers or usable_cores())
    shutil.copyfile(tokenizer_path, out / "tokenizer.json")
    n_ids = id_count(tokenizer)
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
