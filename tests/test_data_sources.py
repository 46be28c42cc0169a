"""Corpus sources: the embedded corpus, local files, and one-line errors for bad sources."""

import json
import sysconfig
from pathlib import Path

import pytest
from conftest import SMALL

from pretrain.config import DataConfig
from pretrain.data.shards import prepare_data
from pretrain.data.sources import resolve_source
from pretrain.errors import ConfigError


def test_embedded_corpus_is_the_stdlib_without_tests():
    root = Path(sysconfig.get_paths()["stdlib"])
    relative = [f.relative_to(root).as_posix() for f in resolve_source(DataConfig()).files]
    assert relative == sorted(relative) and len(relative) > 500
    assert not any(part in {"site-packages", "test", "tests", "idle_test"}
                   for r in relative for part in r.split("/")[:-1])
    assert any(r == "json/decoder.py" for r in relative)


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
