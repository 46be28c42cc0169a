"""Prepared data: deterministic packing into bounded shards with a manifest, the same rows whatever the number
of workers, resumable preparation, caps, the in-band budget, and one-line errors for damaged prepared data: every
file the manifest names kept inside its directory, shards checked by a sampled digest at open and by their full
SHA-256 on --verify and --finalize, the manifest's fields checked against each other and the config."""

import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from pretrain.cli import main
from pretrain.config import DataConfig
from pretrain.data import shards
from pretrain.data.layout import SAMPLE_BLOCKS, SAMPLE_BYTES, sample_digest, slice_dir, work_dir
from pretrain.data.prepared import open_prepared, prepare_data
from pretrain.data.shards import finalize, plan_work, prepare_slices
from pretrain.data.sources import plan_sources, source_documents
from pretrain.data.tokenizer import hf_tokenizer
from pretrain.errors import ConfigError, DataError
from pretrain.fileio import checksum
from tests.helpers import CONFIGS, SMALL


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory) -> Path:
    """2500 small text files: three slices of 1024 files."""
    folder = tmp_path_factory.mktemp("corpus")
    for i in range(2500):
        (folder / f"{i:05d}.txt").write_text(f"document {i}: " + " ".join(f"w{(i * j) % 193}" for j in range(40)))
    return folder


def test_prepare_is_deterministic(embedded, tmp_path):
    """A cold build in another process (other hash seeds, other thread timings) gives the same bytes."""
    cfg, first = embedded
    fields = asdict(replace(cfg, cache_dir=str(tmp_path)))
    code = ("from pretrain.config import config_from_dict; from pretrain.data.prepared import prepare_data; "
            f"print(prepare_data(config_from_dict({{'data': {fields!r}}}).data, progress=False).dirs[0])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    second = Path(run.stdout.strip())
    assert second.parent == tmp_path and second.name == first.dirs[0].name
    assert files_of(second) == files_of(first.dirs[0])


def test_cache_is_reused(embedded):
    cfg, data = embedded
    stamps = {p.name: p.stat().st_mtime_ns for p in data.dirs[0].rglob("*")}
    start = time.perf_counter()
    again = prepare_data(cfg, progress=False)
    assert time.perf_counter() - start < 2.0
    assert again.dirs == data.dirs and {p.name: p.stat().st_mtime_ns for p in data.dirs[0].rglob("*")} == stamps


def test_opening_data_that_was_never_prepared_names_it(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nothing' / 'manifest.json'}: unreadable"):
        open_prepared(DataConfig(cache_dir=str(tmp_path), **SMALL), [tmp_path / "nothing"])


def test_rows_are_documents_packed_with_eos(embedded):
    """Each split is its documents' tokens, each followed by EOS, end to end in corpus order, cut into rows;
    no document is in both splits."""
    cfg, data = embedded
    (source,) = data.sources
    meta, row = source.manifest, cfg.seq_len + 1
    train, val = source.train.to_numpy(), source.val.to_numpy()
    assert train.shape == (meta.train_rows, row) and val.shape == (meta.val_rows, row)
    assert train.dtype == np.uint16 and meta.train_tokens == train.size
    assert 0 < meta.unigram_entropy < np.log(cfg.vocab_size) and data.unigram_entropy == pytest.approx(
        meta.unigram_entropy)
    assert [sh.file for sh in meta.shards] == ["train-00000.bin", "val-00000.bin"]

    tokenizer = hf_tokenizer(data.tokenizer_path)  # also: transformers can load it
    assert tokenizer.eos_token_id == data.eos_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    docs = [doc for doc in source_documents(plan_sources(cfg)[0]) if doc.strip()]
    assert meta.documents == meta.train_documents + meta.val_documents == len(docs)
    streams = {"train": train.ravel().tolist(), "val": val.ravel().tolist()}
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


def test_rows_do_not_depend_on_workers_or_tasks_and_a_rerun_completes(text_corpus, tmp_path, monkeypatch):
    """Three slices, prepared by one process, by two processes, and as three tasks of which one died: the same
    bytes in every shard and the same manifest."""
    monkeypatch.setattr(shards, "SHARD_TOKENS", 2000)  # a slice fills several shard files
    base = DataConfig(source=str(text_corpus), vocab_size=300, seq_len=16, val_fraction=0.1)
    one = prepare_data(replace(base, cache_dir=str(tmp_path / "one")), progress=False)
    two = prepare_data(replace(base, cache_dir=str(tmp_path / "two")), progress=False, workers=2)

    tasks = replace(base, cache_dir=str(tmp_path / "tasks"))
    work = plan_work(tasks, progress=False)
    assert len(work.pieces()) == 3
    for task in (0, 2):  # task 1 was killed before it finished its slice
        prepare_slices(work, task=task, tasks=3, progress=False)
    with pytest.raises(DataError, match=r"1 of 3 slices .* are not prepared \(slices 1\)"):
        finalize(work)
    staging = slice_dir(work.targets[0], 1).with_name(".tmp-00001")
    staging.mkdir()  # what the killed task left behind
    (staging / "train-00001.bin").write_bytes(b"half")
    assert prepare_slices(work, task=0, tasks=1, progress=False) == 1  # the rerun does only slice 1
    finalize(work)
    three = open_prepared(tasks, work.targets)

    reference = files_of(one.dirs[0])
    assert sum(name.startswith("shards/train-00000") for name in reference) > 1  # bounded shards
    assert files_of(two.dirs[0]) == reference and files_of(three.dirs[0]) == reference
    assert len(one.sources[0].manifest.slices) == 3 and not work_dir(one.dirs[0]).exists()


def test_bounded_shards_hold_the_rows_of_one_file(text_corpus, tmp_path, monkeypatch):
    cfg = DataConfig(source=str(text_corpus), vocab_size=300, seq_len=16, val_fraction=0.1)
    whole = prepare_data(replace(cfg, cache_dir=str(tmp_path / "whole")), progress=False).sources[0]
    monkeypatch.setattr(shards, "SHARD_TOKENS", 17 * 50)  # 50 rows per shard file
    split = prepare_data(replace(cfg, cache_dir=str(tmp_path / "split")), progress=False).sources[0]
    assert len(split.train.shards) > 3 * 2 and max(len(s) for s in split.train.shards) == 50
    assert np.array_equal(split.train.to_numpy(), whole.train.to_numpy())
    rows = np.array([0, 49, 50, 51, len(split.train) - 1])
    assert np.array_equal(split.train.take(rows), whole.train.to_numpy()[rows].astype(np.int64))


def test_caps_on_documents_and_tokens(text_corpus, tmp_path):
    cfg = DataConfig(source=str(text_corpus), vocab_size=300, seq_len=16, val_fraction=0.1,
                     cache_dir=str(tmp_path))
    capped = prepare_data(replace(cfg, max_documents=1100), progress=False).sources[0]
    assert capped.manifest.documents == 1100  # all of slice 0, 76 documents of slice 1, none of slice 2
    tokens = prepare_data(replace(cfg, max_tokens=17 * 100 + 5), progress=False).sources[0]
    assert len(tokens.train) == 100 and tokens.manifest.train_tokens == 1700


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
    assert len(results) == 3 and len({r.dirs[0] for r in results}) == 1
    built = [p.name for p in tmp_path.iterdir() if p.is_dir()]
    assert len(built) == 2 and results[0].dirs[0].name in built  # the data and the tokenizer, no temporaries


def test_failed_build_leaves_no_cache(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path), **{**SMALL, "max_documents": 15, "seq_len": 100_000})
    with pytest.raises(ConfigError, match="data.val_fraction"):
        prepare_data(cfg, progress=False)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("tokenizer-")] == []


def test_training_never_prepares_a_large_or_hub_source_itself(text_corpus, tmp_path, monkeypatch):
    cfg = DataConfig(source=str(text_corpus), vocab_size=300, seq_len=16, cache_dir=str(tmp_path))
    monkeypatch.setattr(shards, "IN_BAND_TOKENS", 1000)
    with pytest.raises(ConfigError, match=r"about 1.*more than the 1e\+03 that training prepares itself: run "
                                          r"`pretrain prepare-data CONFIG --workers N`"):
        prepare_data(cfg, progress=False, in_band=True)
    assert not any(tmp_path.iterdir())  # not even the tokenizer was trained
    prepare_data(cfg, progress=False)  # prepared beforehand: training just opens it
    prepare_data(cfg, progress=False, in_band=True)
    hub = replace(cfg, source="hub:some-org/some-dataset")
    with pytest.raises(ConfigError, match="must be prepared before training: run `pretrain prepare-data CONFIG`"):
        prepare_data(hub, progress=False, in_band=True)


def copy_prepared(embedded, tmp_path) -> tuple[DataConfig, Path]:
    cfg, data = embedded
    copy = replace(cfg, cache_dir=str(tmp_path / "cache"))
    shutil.copytree(cfg.cache_dir, copy.cache_dir)
    return copy, Path(copy.cache_dir) / data.dirs[0].name


def test_a_missing_or_truncated_shard_is_named(embedded, tmp_path):
    cfg, target = copy_prepared(embedded, tmp_path)
    shard = target / "shards" / "train-00000.bin"
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 10)
    with pytest.raises(DataError, match=f"{shard}: .* bytes, expected"):
        open_prepared(cfg, [target])
    shard.unlink()
    with pytest.raises(DataError, match=f"{shard}: missing"):
        open_prepared(cfg, [target])


def edit_manifest(target: Path, change) -> None:
    manifest = json.loads((target / "manifest.json").read_text())
    change(manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, found", [
    (lambda m: m.pop("shards"), "shards must be list, got None"),
    (lambda m: m.update(seq_len="long"), "seq_len must be int"),
    (lambda m: m.update(seq_len=0), r"seq_len must be an integer >= 1, got 0"),
    (lambda m: m.update(seq_len=16), "seq_len 16, but the config's data.seq_len is 32"),
    (lambda m: m.update(seq_len=64), r"malformed shard list \(shard 0: .* rows of 130 bytes do not fit"),
    (lambda m: m.update(format=0), "format 0, expected"),
    (lambda m: m.update(dtype="uint32"), "malformed shard list .dtype 'uint32', but the ids of a 512-id vocabulary "
                                         "are written as uint16"),
    (lambda m: m.update(dtype="float64"), "malformed shard list .dtype 'float64'"),
    (lambda m: m["shards"][0].pop("rows"), "malformed shard list"),
    (lambda m: m["shards"][0].update(rows=0), r"malformed shard list \(shard 0: rows must be an integer >= 1"),
    (lambda m: m["shards"][0].update(rows=10**30), r"malformed shard list \(shard 0: 1,000,.* rows"),
    (lambda m: m["shards"][0].update(rows=m["shards"][0]["rows"] - 1), "train_rows is .*, but the train shards "
                                                                       "hold"),
    (lambda m: m["shards"][1].update(split="train"), "train_rows is .*, but the train shards hold"),
    (lambda m: m.update(train_rows=0), "train_rows must be an integer >= 1"),
])
def test_a_bad_manifest_is_named(embedded, tmp_path, change, found):
    cfg, target = copy_prepared(embedded, tmp_path)
    edit_manifest(target, change)
    with pytest.raises(DataError, match=f"{target / 'manifest.json'}: {found}.*; .*delete {target} to prepare"):
        open_prepared(cfg, [target])


@pytest.mark.parametrize("file", ["../../../outside.bin", "../train-00000.bin", "/ABSOLUTE", "", ".", "a/../../x",
                                  "symlink out"])
def test_every_shard_a_manifest_names_is_inside_its_directory(embedded, tmp_path, file):
    """A shard file that leads outside the prepared directory is refused, even with the right size and digests;
    the message names the directory to delete, never a place outside it."""
    cfg, target = copy_prepared(embedded, tmp_path)
    shard = target / "shards" / "train-00000.bin"
    outside = tmp_path / "outside.bin"
    shutil.copyfile(shard, outside)  # the same bytes, so that only where it is can be wrong
    if file == "symlink out":
        shard.unlink()
        shard.symlink_to(outside)
    else:
        edit_manifest(target, lambda m: m["shards"][0].update(file=file.replace("/ABSOLUTE", str(outside))))
    with pytest.raises(DataError, match=rf"manifest.json: malformed shard list \(file .*; delete {target} to "
                                        "prepare it again$"):
        open_prepared(cfg, [target])


def test_a_manifest_of_another_seq_len_is_refused(embedded, tmp_path):
    """A prepared directory put where another seq_len's belongs (renamed, copied): its manifest names both."""
    cfg, target = copy_prepared(embedded, tmp_path)
    with pytest.raises(DataError, match=f"{target / 'manifest.json'}: seq_len 32, but the config's data.seq_len is "
                                        f"16; the prepared data is corrupt: delete {target} "):
        open_prepared(replace(cfg, seq_len=16), [target])


def test_a_shard_overwritten_at_its_size_is_found_at_open(embedded, tmp_path):
    """Other valid ids at the same size (the rows in another order): the sampled digest differs."""
    cfg, target = copy_prepared(embedded, tmp_path)
    shard = target / "shards" / "train-00000.bin"
    rows = np.fromfile(shard, np.uint16).reshape(-1, cfg.seq_len + 1)
    np.roll(rows, 1, axis=0).tofile(shard)
    with pytest.raises(DataError, match=f"{shard}: its contents are not the ones written \\(its sampled digest"):
        open_prepared(cfg, [target])


def test_verify_checks_every_byte(embedded, tmp_path):
    """One token changed where the sample does not look (here: a manifest written before samples were recorded,
    so the fast check is the size alone) passes the fast check; --verify reads every byte."""
    cfg, target = copy_prepared(embedded, tmp_path)
    edit_manifest(target, lambda m: [shard.pop("sample") for shard in m["shards"]])
    shard = target / "shards" / "val-00000.bin"
    tokens = np.fromfile(shard, np.uint16)
    tokens[len(tokens) // 2] ^= 1
    tokens.tofile(shard)
    open_prepared(cfg, [target])
    with pytest.raises(DataError, match=f"{shard}: its contents are not the ones written \\(its SHA-256"):
        open_prepared(cfg, [target], verify=True)


def test_the_sampled_digest_sees_a_rewrite_and_any_long_change(tmp_path):
    """Blocks spread from the first byte to the last: a change of more than 1/15 of the file anywhere meets one;
    a small one between blocks is what the full digest is for."""
    path = tmp_path / "shard.bin"
    data = np.random.default_rng(0).integers(0, 512, 4 << 20, dtype=np.uint16).tobytes()  # 8 MiB
    path.write_bytes(data)
    original, full = sample_digest(path), checksum(path)["digest"]
    gap = (len(data) - SAMPLE_BYTES) // (SAMPLE_BLOCKS - 1)
    for start in (0, gap // 3, len(data) // 2, len(data) - gap):
        changed = bytearray(data)
        changed[start:start + gap] = bytes(gap)
        path.write_bytes(changed)
        assert sample_digest(path) != original, start
    changed = bytearray(data)
    changed[SAMPLE_BYTES + 10] ^= 1  # just past the first block
    path.write_bytes(changed)
    assert sample_digest(path) == original and checksum(path)["digest"] != full


@pytest.mark.parametrize("damage, found", [
    (lambda p: p.unlink(), "missing"),
    (lambda p: p.write_bytes(b""), "unreadable"),
    (lambda p: p.write_bytes(b"\x93NUMPY garbage"), "unreadable"),
    (lambda p: p.write_bytes(p.read_bytes()[:-8]), "unreadable"),
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "unreadable"),
    (lambda p: np.save(p, np.ones(3, np.int64)), r"not the train token counts of 512 ids \(it holds int64 \(3,\)\)"),
    (lambda p: np.save(p, np.ones((512, 2), np.int64)), "not the train token counts"),
    (lambda p: np.save(p, np.ones(512)), r"not the train token counts of 512 ids \(it holds float64"),
    (lambda p: np.save(p, -np.ones(512, np.int64)), "not the train token counts"),
    (lambda p: np.save(p, np.zeros(512, np.int64)), "not the train token counts"),
])
def test_a_damaged_unigram_is_named(embedded, tmp_path, damage, found):
    cfg, target = copy_prepared(embedded, tmp_path)
    damage(target / "unigram.npy")
    with pytest.raises(DataError, match=f"{target / 'unigram.npy'}: {found}.*; the prepared data is corrupt: delete "
                                        f"{target} "):
        open_prepared(cfg, [target])


def test_a_damaged_tokenizer_in_the_cache_is_found_when_opening(embedded, tmp_path):
    cfg, target = copy_prepared(embedded, tmp_path)
    tokenizer = target / "tokenizer.json"
    text = tokenizer.read_text()
    tokenizer.write_text(text + "\n")  # the same ids, other bytes: another tokenizer could map them to other text
    with pytest.raises(DataError, match=f"{tokenizer}: not the tokenizer the shards were written with \\(its SHA"):
        open_prepared(cfg, [target])
    tokenizer.write_text("{not json")
    with pytest.raises(DataError, match=f"{tokenizer}: not a usable tokenizer"):
        open_prepared(cfg, [target])


def test_token_ids_past_the_vocabulary_name_the_shard_and_row(embedded, tmp_path):
    """A shard overwritten while it is read (after its digest was checked at open): the batches read from it are
    checked."""
    cfg, target = copy_prepared(embedded, tmp_path)
    rows = open_prepared(cfg, [target]).sources[0].train
    shard = target / "shards" / "train-00000.bin"
    with open(shard, "r+b") as f:  # in place: the open memory map sees it
        f.seek(((cfg.seq_len + 1) * 7 + 3) * 2)
        f.write(np.uint16(60000).tobytes())
    assert rows.take(np.array([0, 6, 8])).shape == (3, cfg.seq_len + 1)
    with pytest.raises(DataError, match=f"{shard}: row 7 holds token id 60000, past the vocabulary of 512"):
        rows.take(np.array([0, 7]))


def test_local_tokenizer_must_fit_vocab(embedded, tmp_path):
    cfg, data = embedded
    local = replace(cfg, tokenizer=str(data.tokenizer_path.parent), cache_dir=str(tmp_path))  # a directory
    assert np.array_equal(prepare_data(local, progress=False).sources[0].train.to_numpy(),
                          data.sources[0].train.to_numpy())
    with pytest.raises(ConfigError, match="set data.vocab_size to at least 512"):
        prepare_data(replace(local, tokenizer=str(data.tokenizer_path), vocab_size=300))


def test_finalize_and_verify_read_every_byte(tmp_path, capsys):
    """The end of a Slurm preparation (--finalize) checks every shard's full digest: here a slice's shard damaged
    after its task wrote it; `prepare-data --verify` does the same for prepared data."""
    argv = ["prepare-data", str(CONFIGS / "tiny.yaml"), f"data.cache_dir={tmp_path}", *(f"data.{k}={v}" for k, v in
                                                                                         SMALL.items())]
    cfg = DataConfig(cache_dir=str(tmp_path), **SMALL)
    work = plan_work(cfg, progress=False)
    prepare_slices(work, progress=False)
    shard = slice_dir(work.targets[0], 0) / "train-00000.bin"
    tokens = np.fromfile(shard, np.uint16)
    tokens[-1] ^= 1
    tokens.tofile(shard)
    assert main([*argv, "--finalize"]) == 2
    assert f"{work.targets[0] / 'shards' / 'train-00000.bin'}: its contents are not the ones written (its SHA-256" in (
        capsys.readouterr().err)
    shutil.rmtree(work.targets[0])
    assert main([*argv, "--verify"]) == 0
