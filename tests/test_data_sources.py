"""Corpus sources: the embedded corpus, local files read as streams in fixed slices, a hub dataset's files
(resolved and read through the hub adapter: here a local folder laid out like a hub repository, since the
tests have no network), bad records (text that is not text, not valid Unicode, or longer than
data.max_record_bytes: named or skipped, a long line never held in memory), and one-line errors for bad sources."""

import json
import re
import subprocess
import sys
import sysconfig
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pretrain.config import DataConfig, SourceConfig
from pretrain.data import sources
from pretrain.data.prepared import prepare_data
from pretrain.data.sources import plan_sources, resolve_source, source_documents
from pretrain.errors import ConfigError, DataError
from tests.helpers import CONFIGS, ROOT, SMALL

DOCS = [f"document {i}: " + " ".join(f"word{i * j % 97}" for j in range(120)) for i in range(40)]


def test_embedded_corpus_is_the_stdlib_without_tests():
    root = Path(sysconfig.get_paths()["stdlib"])
    source = resolve_source(SourceConfig())
    relative = [Path(p).relative_to(root).as_posix() for piece in source.slices for p in piece.paths]
    assert relative == sorted(relative) and len(relative) > 500
    assert not any(part in {"site-packages", "test", "tests", "idle_test"}
                   for r in relative for part in r.split("/")[:-1])
    assert any(r == "json/decoder.py" for r in relative)


def write_corpus(folder: Path, kind: str, docs: list[str]) -> str:
    """The documents as text files, JSON lines or parquet; returns the data.source naming them."""
    folder.mkdir(parents=True)
    if kind == "txt":  # one document per file, newlines and all
        for i, doc in enumerate(docs):
            (folder / f"{i:02d}.txt").write_text(doc)
        return str(folder)
    if kind == "jsonl":
        (folder / "a.jsonl").write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(docs)))
        return str(folder / "*.jsonl")
    pq.write_table(pa.table({"body": docs}), folder / "a.parquet", row_group_size=7)
    return str(folder / "a.parquet")


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_every_kind_of_local_source_gives_the_same_rows(tmp_path, kind):
    """Text files, JSON lines and a parquet file of several row groups, each read as a stream, give the same
    documents and (packed in one slice) the same rows."""
    cfg = DataConfig(text_field="body", cache_dir=str(tmp_path / "cache"), vocab_size=300, seq_len=16,
                     val_fraction=0.2, tokenizer_sample=10**6)
    reference = prepare_data(replace(cfg, source=write_corpus(tmp_path / "ref", "jsonl", DOCS)), progress=False)
    source = write_corpus(tmp_path / kind, kind, DOCS)
    cfg = replace(cfg, source=source)
    assert list(source_documents(plan_sources(cfg)[0])) == DOCS
    data = prepare_data(replace(cfg, tokenizer=str(reference.tokenizer_path)), progress=False).sources[0]
    assert data.manifest.documents == len(DOCS) and source in data.manifest.source
    for split in ("train", "val"):
        assert np.array_equal(getattr(data, split).to_numpy(), getattr(reference.sources[0], split).to_numpy())


def test_large_inputs_are_cut_into_fixed_slices(tmp_path, monkeypatch):
    """JSON lines by byte ranges (a line belongs to the slice its first byte is in), parquet by row groups:
    every document once, in order, whatever the cut."""
    monkeypatch.setattr(sources, "JSON_SLICE_BYTES", 1000)
    monkeypatch.setattr(sources, "PARQUET_SLICE_BYTES", 3000)
    for kind in ("jsonl", "parquet"):
        spec = SourceConfig(source=write_corpus(tmp_path / kind, kind, DOCS), text_field="body")
        plan = plan_sources(DataConfig(sources=[spec]))[0]
        assert len(plan.source.slices) > 3, kind
        assert list(source_documents(plan)) == DOCS, kind


def hub_repo(folder: Path) -> Path:
    """A folder laid out like a hub dataset repository: data/<split>-NNNNN-of-NNNNN.parquet."""
    (folder / "data").mkdir(parents=True)
    for i, part in enumerate((DOCS[:25], DOCS[25:])):
        pq.write_table(pa.table({"text": part}), folder / "data" / f"train-{i:05d}-of-00002.parquet")
    pq.write_table(pa.table({"text": ["held out"]}), folder / "data" / "validation-00000-of-00001.parquet")
    return folder


def test_a_hub_dataset_is_read_file_by_file(tmp_path):
    plan = plan_sources(DataConfig(source=f"hub:{hub_repo(tmp_path / 'repo')}"))[0]
    assert [Path(p.paths[0]).name for p in plan.source.slices] == ["train-00000-of-00002.parquet",
                                                                    "train-00001-of-00002.parquet"]
    assert plan.source.kind == "hub" and list(source_documents(plan)) == DOCS
    with pytest.raises(ConfigError, match="has no data files for split 'test'; splits: train, validation"):
        prepare_data(DataConfig(source=f"hub:{tmp_path / 'repo'}", hub_split="test", cache_dir=str(tmp_path)),
                     progress=False)


def test_a_record_whose_text_is_not_text_is_named_or_skipped(tmp_path):
    (tmp_path / "c").mkdir()
    lines = [json.dumps({"text": d}) for d in DOCS[:5]] + ['{"text": 42}', json.dumps({"text": ["a", "b"]}),
                                                           "not json", *(json.dumps({"text": d}) for d in DOCS[5:])]
    (tmp_path / "c" / "a.jsonl").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(source=str(tmp_path / "c"), cache_dir=str(tmp_path / "cache"), **SMALL)
    with pytest.raises(DataError, match=rf"{tmp_path / 'c' / 'a.jsonl'}: line 6: its 'text' is a int, not text "
                                        r"\(set data.skip_bad_records=true to skip such records\)"):
        prepare_data(cfg, progress=False)
    data = prepare_data(replace(cfg, skip_bad_records=True), progress=False).sources[0]
    assert data.manifest.skipped_records == 3 and data.manifest.documents == len(DOCS)
    assert "line 6" in data.manifest.first_skipped


def bad_corpus(folder: Path, kind: str, bad: bytes | str) -> tuple[str, str, int | None]:
    """DOCS with `bad` as the text of document 3 (bytes: written raw, inside the JSON string or the parquet
    string). Returns the data.source, the place an error names, and where the text starts in its file (None:
    parquet, where an error counts bytes in the text)."""
    folder.mkdir(parents=True)
    raw = bad if isinstance(bad, bytes) else bad.encode("utf-8", "surrogatepass")  # JSON escapes a lone surrogate
    if kind == "txt":
        for i, doc in enumerate(DOCS):
            (folder / f"{i:02d}.txt").write_bytes(raw if i == 3 else doc.encode())
        return str(folder), f"{folder / '03.txt'}: ", 0
    if kind == "jsonl":
        lines = [json.dumps({"text": d}).encode() for d in DOCS]
        lines[3] = b'{"text": "' + raw + b'"}' if isinstance(bad, bytes) else json.dumps({"text": bad}).encode()
        (folder / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        return str(folder / "a.jsonl"), f"{folder / 'a.jsonl'}: line 4: ", sum(map(len, lines[:3])) + 3 + 10
    texts = pa.array([raw if i == 3 else d.encode() for i, d in enumerate(DOCS)], pa.binary())
    strings = pa.Array.from_buffers(pa.string(), len(texts), texts.buffers())  # unchecked: as a writer may leave them
    pq.write_table(pa.table({"text": strings}), folder / "a.parquet", row_group_size=7)
    return str(folder / "a.parquet"), f"{folder / 'a.parquet'}: row 3: ", None


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
@pytest.mark.parametrize("bad, at", [
    (b"caf\xe9 au lait", 3),  # Latin-1
    (b"ends mid-character \xe2\x82", 19),
    (b"\xed\xa0\x80 an encoded surrogate", 0),
    (b"\xc0\xaf an overlong slash", 0),
    ("x" * 3000, None),
])
def test_text_that_is_not_unicode_or_too_long_is_named_or_skipped(tmp_path, kind, bad, at):
    """Every reader takes a record's bytes, at most data.max_record_bytes of them, and decodes them strictly: a bad
    one is one error naming the file, the line or row, and the byte, or with data.skip_bad_records counted."""
    source, place, start = bad_corpus(tmp_path / "corpus", kind, bad)
    problem = ("longer than data.max_record_bytes=2,000 bytes" if at is None else
               f"not valid UTF-8 (at byte {at} of its text)" if start is None else
               f"not valid UTF-8 (at byte {start + at} of the file)")
    cfg = DataConfig(source=source, cache_dir=str(tmp_path / "cache"), **SMALL, max_record_bytes=2000)
    with pytest.raises(DataError, match=rf"^{place}{re.escape(problem)}.* \(set data.skip_bad_records=true to skip"):
        prepare_data(cfg, progress=False)
    data = prepare_data(replace(cfg, skip_bad_records=True), progress=False).sources[0]
    assert data.manifest.skipped_records == 1 and data.manifest.documents == len(DOCS) - 1
    assert data.manifest.first_skipped.startswith(place + problem)


def test_a_lone_surrogate_escaped_in_json_is_not_unicode(tmp_path):
    source, place, _ = bad_corpus(tmp_path / "escape", "jsonl", "half of a pair \ud83d")
    with pytest.raises(DataError, match=rf"{place}its 'text' holds an unpaired surrogate \(\\ud83d\), not valid "):
        list(source_documents(plan_sources(DataConfig(source=source))[0]))


@pytest.mark.parametrize("size, kept", [(2000, True), (2001, False)])
def test_the_record_limit_counts_a_line_without_its_newline(tmp_path, size, kept):
    line = json.dumps({"text": "x" * (size - len('{"text": ""}'))})
    assert len(line) == size
    (tmp_path / "a.jsonl").write_text(line + "\n" + json.dumps({"text": "after"}) + "\n")
    plan = plan_sources(DataConfig(source=str(tmp_path / "a.jsonl"), max_record_bytes=2000))[0]
    bad = sources.BadRecords()
    assert len(list(source_documents(plan, bad))) == 1 + kept and bad.count == (not kept)


@pytest.mark.parametrize("changes, setting", [
    ({"source": "no/such/file.txt"}, "data.source"),
    ({"source": "no/such/*.csv"}, "data.source"),
    ({"source": "__FILE__"}, "data.source"),  # an existing file of an unsupported type
    ({"source": "hub:no-such-org/no-such-dataset"}, "data.source"),
    ({"source": "hub:"}, "data.source"),
    ({"source": "__EMPTY__"}, "data.source"),
    ({"source": "__EMPTY_JSONL__"}, "data.source"),
    ({"source": "__JSONL__", "text_field": "missing"}, "data.text_field"),
    ({"source": "__PARQUET__", "text_field": "missing"}, "data.text_field"),
    ({"tokenizer": "no/such/tokenizer"}, "data.tokenizer"),
    ({"vocab_size": 256}, "data.vocab_size"),
    ({"sources": [SourceConfig(name="a"), SourceConfig(name="a")]}, "data.sources"),
])
def test_config_errors_are_one_line(tmp_path, changes, setting):
    (tmp_path / "x.csv").write_text("a,b\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("  \n")
    (tmp_path / "e.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "none.jsonl").write_text("")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "p.parquet")
    special = {"__FILE__": tmp_path / "x.csv", "__EMPTY__": tmp_path / "empty", "__JSONL__": tmp_path / "e.jsonl",
               "__EMPTY_JSONL__": tmp_path / "none.jsonl", "__PARQUET__": tmp_path / "p.parquet"}
    if changes.get("source") in special:
        changes = {**changes, "source": str(special[changes["source"]])}
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"), **{**SMALL, **changes})
    with pytest.raises(ConfigError) as info:
        prepare_data(cfg, progress=False)
    message = str(info.value)
    assert message.startswith(setting) and "\n" not in message, message


PEAK_RSS = ("import resource, sys\nfrom pretrain.cli import main\ncode = main(sys.argv[1:])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10, file=sys.stderr)\nsys.exit(code)")


@pytest.mark.slow
def test_a_huge_line_is_never_held_in_memory(tmp_path):
    """A JSON line of 50 MB, skipped or an error: `prepare-data` (in a fresh process) peaks at the memory of the
    same corpus without it, give or take the one record it may hold (data.max_record_bytes, 8 MiB)."""
    def peak(corpus: Path, *extra: str) -> tuple[int, str]:
        """Exit status and stderr, whose last line is the peak RSS in bytes (each run: a cold cache)."""
        run = subprocess.run([sys.executable, "-c", PEAK_RSS, "prepare-data", str(CONFIGS / "tiny.yaml"),
                              f"data.source={corpus}", f"data.cache_dir={tmp_path / f'cache-{corpus.stem}-{extra}'}",
                              "data.vocab_size=300", "data.seq_len=16", *extra],
                             capture_output=True, text=True, cwd=ROOT, timeout=600)
        return run.returncode, run.stderr

    lines = [json.dumps({"text": d}) + "\n" for d in DOCS]
    (tmp_path / "plain.jsonl").write_text("".join(lines))
    (tmp_path / "huge.jsonl").write_text("".join(lines[:20]) + '{"text": "' + "x" * (50 << 20) + '"}\n'
                                         + "".join(lines[20:]))
    code, err = peak(tmp_path / "plain.jsonl")
    assert code == 0, err
    baseline = int(err.splitlines()[-1])
    code, err = peak(tmp_path / "huge.jsonl", "data.skip_bad_records=true")
    assert code == 0 and int(err.splitlines()[-1]) < baseline + (24 << 20), (baseline, err[-2000:])
    code, err = peak(tmp_path / "huge.jsonl")
    assert code == 2 and int(err.splitlines()[-1]) < baseline + (24 << 20), (baseline, err[-2000:])
    assert f"error: {tmp_path / 'huge.jsonl'}: line 21: longer than data.max_record_bytes=8,388,608 bytes" in err
