"""W&B logging with real wandb in offline mode, read back from the run's own `.wandb` transaction log."""

import json
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2

from pretrain.config import WandbConfig, load_config
from pretrain.training.metrics import JsonlLogger, read_metrics
from pretrain.training.tracking import RUN_ID_FILE, build_logger, wandb_mode
from tests.helpers import pretrain, small_run

_BLOCK, _HEADER, _FULL, _LAST = 32 * 1024, 7, 1, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """The records of a `.wandb` file: a 7-byte file header, then LevelDB-style 32 KiB blocks of chunks,
    each chunk a 7-byte header (crc32, little-endian length, type) and a piece of a serialized Record."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", _HEADER
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # a block's tail too short for a chunk header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (_FULL, _LAST):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def read_offline_runs(out: Path) -> list[dict]:
    """Each offline run under OUT/wandb, oldest first: its run record and its history as {step: metrics}."""
    runs = []
    for path in sorted(out.glob("wandb/offline-run-*/run-*.wandb")):
        records = read_records(path)
        (run,) = [r.run for r in records if r.HasField("run")]
        history = {}
        for r in records:
            if r.HasField("history"):
                items = {_key(i): json.loads(i.value_json) for i in r.history.item}
                history[r.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
        config = {_key(i): json.loads(i.value_json) for i in run.config.update if _key(i) != "_wandb"}
        runs.append({"run": run, "config": config, "history": history})
    return runs


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # wandb writes either form


@pytest.fixture
def no_api_key(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))


def test_auto_mode_is_online_only_with_an_api_key(no_api_key, monkeypatch, tmp_path):
    auto = WandbConfig()
    assert wandb_mode(auto) == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    assert wandb_mode(auto) == "online"
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(auto) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(auto) == "disabled"
    assert wandb_mode(WandbConfig(mode="offline")) == "offline"


def test_disabled_logs_only_the_jsonl_file(tmp_path):
    cfg = load_config(None, ["wandb.mode=disabled"])
    logger = build_logger(cfg, tmp_path, resume_step=0)
    logger.log({"loss": 1.0}, 1)
    logger.close()
    assert isinstance(logger, JsonlLogger)
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 1.0}]
    assert not (tmp_path / "wandb").exists() and not (tmp_path / RUN_ID_FILE).exists()


def test_offline_run_records_identity_config_and_metrics_at_their_steps(no_api_key, monkeypatch, tmp_path,
                                                                        capsys):
    monkeypatch.setenv("WANDB_PROJECT", "from-env")  # the config leaves the project at its default
    cfg = load_config(None, ["wandb.group=sweep-7", "wandb.name=w256-lr0.01", "wandb.tags=[proxy, mup]",
                             "optim.lr=0.01"])
    logger = build_logger(cfg, tmp_path, resume_step=0)
    step1 = {"loss": 5.0, "grad_norm": 1.5, "tokens_per_s": 1e4, "lr/embedding": 0.01, "lr/query": 0.005}
    logger.log(step1, 1)
    logger.log({"loss": 4.0, "eval_loss": 4.5, "mfu": 0.4, "memory_gb": 2.0}, 2)
    logger.close()

    assert "wandb sync" in capsys.readouterr().out
    (run,) = read_offline_runs(tmp_path)
    assert run["run"].run_id == (tmp_path / RUN_ID_FILE).read_text().strip()
    assert run["run"].project == "from-env" and run["run"].run_group == "sweep-7"
    assert run["run"].display_name == "w256-lr0.01" and list(run["run"].tags) == ["proxy", "mup"]
    assert run["config"]["optim"]["lr"] == 0.01 and run["config"]["model"] == cfg.to_dict()["model"]
    assert run["history"] == {1: step1, 2: {"loss": 4.0, "eval_loss": 4.5, "mfu": 0.4, "memory_gb": 2.0}}
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]


@pytest.mark.slow
def test_training_logs_offline_and_a_resumed_run_keeps_its_wandb_run(no_api_key, monkeypatch, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    first = pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=4", "wandb.mode=auto"))
    assert "wandb sync" in first.stdout
    run_id = (out / RUN_ID_FILE).read_text().strip()
    secret = "0123456789abcdef" * 3
    monkeypatch.setenv("WANDB_API_KEY", secret)  # with a key, only the explicit mode keeps this offline
    # resumes from the checkpoint the first run wrote at its last step
    resumed = pretrain("train", "configs/tiny.yaml",
                       *small_run(out, cache, "train.steps=6", "wandb.mode=offline"))
    assert "resumed from" in resumed.stdout and (out / RUN_ID_FILE).read_text().strip() == run_id

    before, after = read_offline_runs(out)
    assert before["run"].run_id == after["run"].run_id == run_id
    assert sorted(before["history"]) == [1, 2, 3, 4] and sorted(after["history"]) == [5, 6]
    assert {"loss", "grad_norm", "tokens_per_s", "lr/embedding", "lr/readout"} <= set(before["history"][1])
    assert "eval_loss" in after["history"][6]  # the last step evaluates
    assert after["config"]["train"]["steps"] == 6 and after["config"]["wandb"]["mode"] == "offline"
    jsonl = {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl")}
    assert {s: h["loss"] for s, h in (before["history"] | after["history"]).items()} == jsonl
    assert not [p for p in out.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
