"""Prepared data: deterministic packing, the shared cache, corrupt shards, local tokenizers."""

import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL

from pretrain.config import DataConfig
from pretrain.data.shards import DataError, load_prepared, prepare_data
from pretrain.data.sources import load_corpus
from pretrain.data.tokenizer import hf_tokenizer
from pretrain.errors import ConfigError


def _documents(cfg: DataConfig) -> list[str]:
    corpus = load_corpus(cfg)
    return [text for batch in corpus.batches(100) for text in batch]


def test_prepare_is_deterministic(embedded, tmp_path):
    """A cold build in another process (other hash seeds, other thread timings) gives the same bytes."""
    cfg, first = embedded
    fields = asdict(replace(cfg, cache_dir=str(tmp_path)))
    code = ("from pretrain.config import DataConfig; from pretrain.data.shards import prepare_data; "
            f"print(prepare_data(DataConfig(**{fields!r}), progress=False).dir)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    second = Path(run.stdout.strip())
    assert second.parent == tmp_path and second.name == first.dir.name
    for name in ("train.bin", "val.bin", "tokenizer.json", "meta.json"):
        assert (first.dir / name).read_bytes() == (second / name).read_bytes(), name


def test_cache_is_reused(embedded):
    cfg, data = embedded
    stamps = {p.name: p.stat().st_mtime_ns for p in data.dir.iterdir()}
    start = time.perf_counter()
    again = prepare_data(cfg, progress=False)
    assert time.perf_counter() - start < 1.0
    assert again.dir == data.dir and {p.name: p.stat().st_mtime_ns for p in data.dir.iterdir()} == stamps
    assert np.array_equal(load_prepared(cfg).train, data.train)


def test_load_prepared_needs_a_cache(tmp_path):
    with pytest.raises(DataError, match="prepare-data"):
        load_prepared(DataConfig(cache_dir=str(tmp_path), **SMALL))


def test_rows_are_documents_packed_with_eos(embedded):
    """Each split is its documents' tokens, each followed by EOS, end to end in corpus order, cut into rows;
    no document is in both splits."""
    cfg, data = embedded
    meta, row = data.meta, cfg.seq_len + 1
    assert data.train.shape == (meta["train_rows"], row) and data.val.shape == (meta["val_rows"], row)
    assert data.train.dtype == np.uint16 and meta["train_tokens"] == data.train.size
    assert 0 < meta["unigram_entropy"] < np.log(cfg.vocab_size)

    tokenizer = hf_tokenizer(data.tokenizer_path)  # also: transformers can load it
    assert tokenizer.eos_token_id == data.eos_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    docs = [doc for doc in _documents(cfg) if doc.strip()]
    assert meta["documents"] == meta["train_documents"] + meta["val_documents"] == len(docs)
    streams = {"train": data.train.ravel().tolist(), "val": data.val.ravel().tolist()}
    assert max(max(s) for s in streams.values()) < cfg.vocab_size
    pos, where = dict.fromkeys(streams, 0), {}
    for doc in docs:
        ids = tokenizer(doc)["input_ids"] + [data.eos_id]
        for name, tokens in streams.items():
            p = pos[name]
            if p < len(tokens) and tokens[p:p + len(ids)] == ids[:len(tokens) - p]:
                where.setdefault(doc, set()).add(name)
                pos[name] += len(ids)
                break
    assert all(pos[name] >= len(tokens) for name, tokens in streams.items())  # nothing else in the rows
    assert {name for names in where.values() for name in names} == {"train", "val"}
    assert all(len(names) == 1 for names in where.values())  # disjoint by document


def test_concurrent_prepares_build_once(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path), **{**SMALL, "max_documents": 15})
    results = []

    def prepare():
        results.append(prepare_data(cfg, progress=False))

    threads = [threading.Thread(target=prepare) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len({r.dir for r in results}) == 1
    built = [p.name for p in tmp_path.iterdir() if p.is_dir()]
    assert len(built) == 2 and results[0].dir.name in built  # the shards and the tokenizer, no temporaries


def test_failed_build_leaves_no_cache(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path), **{**SMALL, "max_documents": 15, "seq_len": 100_000})
    with pytest.raises(ConfigError, match="data.val_fraction"):
        prepare_data(cfg, progress=False)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("tokenizer-")] == []


def test_corrupt_shard_names_the_file(embedded, tmp_path):
    cfg, data = embedded
    copy = replace(cfg, cache_dir=str(tmp_path / "cache"))
    shutil.copytree(cfg.cache_dir, copy.cache_dir)
    shard = Path(copy.cache_dir) / data.dir.name / "train.bin"
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 10)
    with pytest.raises(DataError, match=str(shard)):
        load_prepared(copy)


def test_local_tokenizer_must_fit_vocab(embedded, tmp_path):
    cfg, data = embedded
    local = replace(cfg, tokenizer=str(data.tokenizer_path.parent), cache_dir=str(tmp_path))  # a directory
    assert np.array_equal(prepare_data(local, progress=False).train, data.train)
    with pytest.raises(ConfigError, match="set data.vocab_size to at least 512"):
        prepare_data(replace(local, tokenizer=str(data.tokenizer_path), vocab_size=300))
