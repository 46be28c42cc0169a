"""The data pipeline: corpus sources, tokenizer, packing, the shard cache, and the batch sampler."""

import json
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from pretrain.config import ConfigError, DataConfig
from pretrain.corpus import load_corpus, resolve_source
from pretrain.data import (
    DataError,
    StepSampler,
    eval_micro_batches,
    hf_tokenizer,
    load_prepared,
    prepare_data,
    train_micro_batches,
)

SMALL = {"max_documents": 40, "vocab_size": 512, "seq_len": 32, "val_fraction": 0.1}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    cfg = DataConfig(cache_dir=str(tmp_path_factory.mktemp("cache")), **SMALL)
    return cfg, prepare_data(cfg, progress=False)


def _documents(cfg: DataConfig) -> list[str]:
    corpus = load_corpus(cfg)
    return [text for batch in corpus.batches(100) for text in batch]


def test_embedded_corpus_is_the_stdlib_without_tests():
    root = Path(sysconfig.get_paths()["stdlib"])
    relative = [f.relative_to(root).as_posix() for f in resolve_source(DataConfig()).files]
    assert relative == sorted(relative) and len(relative) > 500
    assert not any(part in {"site-packages", "test", "tests", "idle_test"}
                   for r in relative for part in r.split("/")[:-1])
    assert any(r == "json/decoder.py" for r in relative)


def test_prepare_is_deterministic(embedded, tmp_path):
    """A cold build in another process (other hash seeds, other thread timings) gives the same bytes."""
    cfg, first = embedded
    fields = asdict(replace(cfg, cache_dir=str(tmp_path)))
    code = ("from pretrain.config import DataConfig; from pretrain.data import prepare_data; "
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


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_local_sources(tmp_path, kind):
    import datasets

    docs = [f"document {i}: " + " ".join(f"word{i * j % 97}" for j in range(120)) for i in range(12)]
    folder = tmp_path / "corpus"
    folder.mkdir()
    if kind == "txt":  # one document per file, newlines and all
        for i, doc in enumerate(docs):
            (folder / f"{i:02d}.txt").write_text(doc.replace(" word1", "\nword1"))
        source = str(folder)
    elif kind == "jsonl":
        lines = [json.dumps({"body": doc, "id": i}) + "\n" for i, doc in enumerate(docs)]
        (folder / "a.jsonl").write_text("".join(lines))
        source = str(folder / "*.jsonl")
    else:
        datasets.Dataset.from_dict({"body": docs}).to_parquet(str(folder / "a.parquet"))
        source = str(folder / "a.parquet")
    cfg = DataConfig(source=source, text_field="body", cache_dir=str(tmp_path / "cache"), vocab_size=300,
                     seq_len=16, val_fraction=0.2)
    data = prepare_data(cfg, progress=False)
    assert data.meta["documents"] == len(docs) and len(data.train) > 0 and len(data.val) > 0
    assert source in data.meta["source"]
    assert int((data.train == data.eos_id).sum()) >= data.meta["train_documents"] - 1


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


@pytest.mark.parametrize("changes, setting", [
    ({"source": "no/such/file.txt"}, "data.source"),
    ({"source": "no/such/*.csv"}, "data.source"),
    ({"source": "__FILE__"}, "data.source"),  # an existing file of an unsupported type
    ({"source": "hub:no-such-org/no-such-dataset"}, "data.source"),
    ({"source": "__EMPTY__"}, "data.source"),
    ({"source": "__JSONL__", "text_field": "missing"}, "data.text_field"),
    ({"tokenizer": "no/such/tokenizer"}, "data.tokenizer"),
    ({"vocab_size": 256}, "data.vocab_size"),
])
def test_config_errors_are_one_line(tmp_path, changes, setting):
    (tmp_path / "x.csv").write_text("a,b\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("  \n")
    (tmp_path / "e.jsonl").write_text('{"text": "hello"}\n')
    special = {"__FILE__": tmp_path / "x.csv", "__EMPTY__": tmp_path / "empty",
               "__JSONL__": tmp_path / "e.jsonl"}
    if changes.get("source") in special:
        changes = {**changes, "source": str(special[changes["source"]])}
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"), **{**SMALL, **changes})
    with pytest.raises(ConfigError) as info:
        prepare_data(cfg, progress=False)
    message = str(info.value)
    assert message.startswith(setting) and "\n" not in message, message


def test_sampler_is_a_pure_function_of_seed_and_step():
    sampler = StepSampler(n_rows=10, global_batch=4, seed=3)
    run = [sampler.indices(k) for k in range(12)]
    resumed = StepSampler(n_rows=10, global_batch=4, seed=3)
    assert all(np.array_equal(resumed.indices(k), run[k]) for k in range(7, 12))  # restart at step 7
    assert all(np.array_equal(sampler.indices(k), run[k]) for k in range(12))
    samples = np.concatenate(run)  # 48 samples: epochs 0..3 each visit all 10 rows once, epoch 4 has 8
    for e in range(4):
        assert sorted(samples[e * 10:(e + 1) * 10]) == list(range(10))
    assert not np.array_equal(samples[:10], samples[10:20])  # a fresh order each epoch
    assert not np.array_equal(StepSampler(10, 4, seed=4).indices(0), run[0])


def test_batches_do_not_depend_on_world_size(embedded):
    _, data = embedded
    sampler = StepSampler(len(data.train), global_batch=8, seed=0)
    for step in (0, 5):
        global_batch = data.train[sampler.indices(step)].astype(np.int64)
        for world in (1, 2, 4):
            parts = [batch for rank in range(world)
                     for batch in train_micro_batches(data, sampler, step, rank, world, 2)]
            assert all(b.shape == (2, data.train.shape[1]) for b in parts)
            assert np.array_equal(np.concatenate([b.numpy() for b in parts]), global_batch)

    per_world = {}
    for world in (1, 2, 4):
        parts = [eval_micro_batches(data, 4, 2, rank, world) for rank in range(world)]
        assert len({len(p) for p in parts}) == 1  # every rank runs the same number of forward passes
        per_world[world] = np.concatenate([b.numpy() for p in parts for b in p])
    assert np.array_equal(per_world[1], per_world[2]) and np.array_equal(per_world[1], per_world[4])
    assert len(np.unique(per_world[1], axis=0)) == min(8, len(data.val))
    assert [len(eval_micro_batches(data, 4, 2, rank, 3)) for rank in range(3)] == [2, 2, 2]


def test_prepare_data_benchmark_runs_and_agrees_with_the_recipe(tmp_path, monkeypatch, capsys):
    """The benchmark's own check: our rows equal those of the run_clm.py recipe (it exits otherwise)."""
    from pretrain.benchmarks import prepare_data as benchmark

    monkeypatch.chdir(tmp_path)  # the default data config caches under ./data_cache
    benchmark.main(["--config", "none.yaml", "--max-documents", "30", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "packed rows identical: yes" in out and "tiktoken" in out.splitlines()[-1]
