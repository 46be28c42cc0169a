"""A corpus of bad inputs, generated from the declarations and the file formats: every config key with values of
the wrong type or out of range, broken YAML and `base:` chains, malformed overrides and CLI options, bad data
files, damaged prepared data, damaged and unsafe checkpoints. Each must end in exactly one `error:` line that
names what is wrong, exit status 2 (3 for a diverged run), and no traceback. The commands run in this process
(`pretrain.cli.main`), so hundreds of cases take seconds."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import tempfile
import traceback
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pretrain.cli import main
from pretrain.config import Config
from pretrain.config.loading import MAX_NESTING
from pretrain.fileio import checksum
from pretrain.training.checkpoint import step_dir_name
from pretrain.training.engine import CHECKSUMS
from pretrain.transfer.sweep import Plan, Point
from tests.helpers import CONFIGS, mup_like, pretrain, small_run, synthetic_sweep

TINY = str(CONFIGS / "tiny.yaml")


def run(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as err:  # argparse
        code = err.code
    return code, capsys.readouterr().err


def assert_one_error(capsys, fragment: str, *argv: str, code: int = 2) -> None:
    status, err = run(capsys, *argv)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == code and len(errors) == 1 and "Traceback" not in err, (argv, status, err[-2000:])
    assert fragment in errors[0], (fragment, errors[0])


# --- every config key ------------------------------------------------------------------------------------------

def bad_values(hint: object, bounds: dict) -> list[str]:
    """Override texts that no value of this declared type and bounds accepts."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        numbers = all(isinstance(a, int) and not isinstance(a, bool) for a in args)
        boolean = [] if any(isinstance(a, bool) for a in args) else ["true"]
        return ["bogus", *boolean, "[1]", "{a: 1}"] + (["4", "-1"] if numbers else ["0"])
    if origin is list:
        if dataclasses.is_dataclass(args[0]):
            return ["[1]", "[text]", "[{bogus: 1}]", "[{weight: 0}]", "[{source: ''}]"]
        return ["{a: 1}", "[[1]]", "[{}]"]
    if hint is bool:
        return ["yes", "1", "maybe", "[true]", "{}"]
    common = ["abc", "true", "[1]", "{a: 1}"]
    low = bounds.get("gt", bounds.get("ge"))
    below = [str(low - 1), str(low)] if "gt" in bounds else [str(low - 1)] if low is not None else []
    high = bounds.get("lt", bounds.get("le"))
    above = [str(high + 1), str(high)] if "lt" in bounds else [str(high + 1)] if high is not None else []
    if hint is int:
        return common + ["1.5", "nan"] + below + above
    if hint is float:
        return common + ["nan", "inf", "-inf", "2^"] + below + above
    return ["''", "[a]", "{a: 1}", "true"]  # text: never empty, never a structure


def config_cases() -> list[tuple[str, str]]:
    cases = []
    sections = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = sections[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            for value in bad_values(hints[f.name], f.metadata.get("bounds", {})):
                cases.append((f"{section.name}.{f.name}", value))
    return cases


@pytest.mark.parametrize("key, value", config_cases(), ids=lambda x: str(x))
def test_a_bad_value_of_any_key_is_one_line_naming_it(capsys, key, value):
    assert_one_error(capsys, key.split(".")[0], "inspect", TINY, f"{key}={value}")


OVERRIDES = [
    (["model.d_model"], "not of the form key.sub=value"),
    (["=5"], "not of the form key.sub=value"),
    (["model..d_model=1"], "not of the form key.sub=value"),
    (["model.d_model.x=1"], "d_model is not a section"),
    (["nosection.key=1"], "nosection: unknown key"),
    (["model=5"], "model: expected a mapping"),
    (["model="], "model: expected a mapping of settings, got nothing"),
    (["train=false"], "train: expected a mapping"),
    (["model.d_modle=64"], "did you mean model.d_model?"),
    (["data.sources=[{source: embedded}]", "data.source=x"], "set either data.source"),
]


@pytest.mark.parametrize("overrides, fragment", OVERRIDES, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_a_bad_override_is_one_line(capsys, overrides, fragment):
    assert_one_error(capsys, fragment, "inspect", TINY, *overrides)


YAML_FILES: dict[str, tuple[bytes | str, str]] = {
    "syntax": ("model:\n  d_model: [1, 2\n", "not valid YAML"),
    "tab": ("model:\n\td_model: 64\n", "not valid YAML"),
    "indent": ("model:\n  d_model: 64\n   n_layers: 2\n", "not valid YAML"),
    "duplicate colon": ("model: d_model: 64\n", "not valid YAML"),
    "binary": (b"\x00\x01\x02\x03model", "not"),
    "latin-1": ("model:\n  d_model: 64 # caf\xe9\n".encode("latin-1"), "not a UTF-8 text file"),
    "list": ("- model\n- data\n", "the top level must be a mapping"),
    "scalar": ("42\n", "the top level must be a mapping"),
    "section scalar": ("model: 0\n", "model: expected a mapping"),
    "section list": ("model: [1]\n", "model: expected a mapping"),
    "section null": ("train:\n", "train: expected a mapping of settings, got nothing"),
    "bool yes": ("wandb:\n  mode: yes\n", "'yes' is not allowed"),
    "self base": ("base: self.yaml\n", "leads back to itself"),
    "missing base": ("base: nowhere.yaml\n", "config file not found"),
    "base number": ("base: 3\n", "base: expected the path of another config file"),
    "unknown section": ("modle:\n  d_model: 64\n", "did you mean model?"),
}


@pytest.mark.parametrize("name", YAML_FILES)
def test_a_bad_config_file_is_one_line(tmp_path, capsys, name):
    content, fragment = YAML_FILES[name]
    path = tmp_path / "self.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_one_error(capsys, fragment, "inspect", path)


def test_base_cycles_and_depth_are_one_line(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    assert_one_error(capsys, "leads back to itself (a.yaml -> b.yaml -> a.yaml)", "inspect", tmp_path / "a.yaml")
    for i in range(12):
        (tmp_path / f"d{i}.yaml").write_text(f"base: d{i + 1}.yaml\n" if i < 11 else "model:\n  d_model: 64\n")
    assert_one_error(capsys, "more than 8 levels of `base:`", "inspect", tmp_path / "d0.yaml")


# --- CLI options ---------------------------------------------------------------------------------------------

CLI_CASES = [
    (["estimate", TINY, "--gpus", "0"], "--gpus: expected an integer > 0"),
    (["estimate", TINY, "--gpus", "-1"], "--gpus: expected an integer > 0"),
    (["estimate", TINY, "--gpus", "two"], "--gpus"),
    (["estimate", TINY, "--gpu-mem", "0"], "--gpu-mem: expected a number > 0"),
    (["estimate", TINY, "--gpu-mem", "nan"], "--gpu-mem"),
    (["estimate", TINY, "--gpu-mem", "inf"], "--gpu-mem"),
    (["estimate", TINY, "--gpu-mem", "-80"], "--gpu-mem"),
    (["sweep", TINY, "--widths", "a,b", "--lrs", "0.01"], "--widths"),
    (["sweep", TINY, "--widths", "0", "--lrs", "0.01"], "--widths"),
    (["sweep", TINY, "--widths", "64", "--lrs", "fast"], "--lrs"),
    (["sweep", TINY, "--widths", "64", "--lrs", "-0.1"], "--lrs"),
    (["sweep", TINY, "--widths", "64", "--lrs", "2^-4:2^-10:0.5"], "--lrs"),
    (["sweep", TINY, "--widths", "64", "--lrs", "0.01", "--steps", "x"], "--steps"),
    (["sweep", TINY, "--widths", "64", "--lrs", "0.01", "--steps", "0"], "--steps"),
    (["sweep", TINY, "--widths", "64", "--lrs", "0.01", "--max-concurrent", "0"], "--max-concurrent"),
    (["sweep", TINY, "--widths", "64", "--lrs", "0.01", "--depths", "deep"], "--depths"),
    (["sweep", TINY, "--widths", "64", "--lrs", "0.01", "--depths", "0,4"], "--depths"),
    (["sweep", TINY, "--widths", "64", "--lrs", "0.01", "--depths", "8192"], "model.n_layers: must lie in"),
    (["sweep", TINY, "--widths", "100", "--lrs", "0.01"], "model.head_dim: must divide"),
    (["coord-check", TINY, "--steps", "0"], "--steps"),
    (["coord-check", TINY, "--seeds", "-2"], "--seeds"),
    (["coord-check", TINY, "--widths", "x"], "--widths"),
    (["coord-check", TINY, "--depths", "2,x"], "--depths"),
    (["coord-check", TINY, "--depths", "2", "--widths", "64,128"], "--widths and --depths"),
    (["export-hf", "nowhere", "out", "--dtype", "fp8"], "--dtype"),
    (["sweep-point", "nowhere", "0"], "no plan.json"),
    (["sweep-point", "nowhere", "x"], "index"),
    (["report", "nowhere"], "no plan.json"),
    (["apply-lr", "nowhere", TINY], "no plan.json"),
    (["consolidate", "nowhere", "out.safetensors"], "no such checkpoint directory"),
    (["frobnicate"], "invalid choice"),
    (["train"], "the following arguments are required: config"),
    (["inspect", "nowhere.yaml"], "config file not found"),
    (["inspect", TINY, "--frob"], "unrecognized arguments"),
    (["inspect", TINY, "--", "x"], "takes no arguments after --"),
    (["prepare-data", TINY, "--workers", "0"], "--workers"),
    (["prepare-data", TINY, "--task", "3", "--tasks", "2"], "--task 3 needs --tasks N"),
    (["prepare-data", TINY, "--", "--nodes=2"], "only with --slurm"),
    (["train", TINY, "train.device=cuda"], "train.device=cuda but no CUDA device is visible"),
]


@pytest.mark.parametrize("argv, fragment", CLI_CASES, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_a_bad_command_line_is_one_line(capsys, argv, fragment):
    if "cuda" in " ".join(argv) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_one_error(capsys, fragment, *argv)


@pytest.mark.slow
def test_export_refuses_a_bad_shard_size(tmp_path, capsys, checkpoint):
    for size in ("0", "abc", "5XB", "-1GB"):
        assert_one_error(capsys, "--max-shard-size", "export-hf", checkpoint, tmp_path / "hf", "--max-shard-size", size)


# --- data files ------------------------------------------------------------------------------------------------

def data_run(tmp_path: Path, source: Path | str, *extra: str) -> list[str]:
    return ["prepare-data", TINY, f"data.source={source}", "data.vocab_size=300", "data.seq_len=16",
            f"data.cache_dir={tmp_path / 'cache'}", *extra]


def jsonl(records: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


GOOD = [{"text": f"document {i} " + "word " * 50} for i in range(20)]
DATA_FILES: dict[str, tuple[str, Callable[[Path], Path | str], str]] = {
    "number text": ("a.jsonl", lambda p: p.write_text(jsonl(GOOD + [{"text": 42}])), "line 21: its 'text' is a int"),
    "list text": ("a.jsonl", lambda p: p.write_text(jsonl(GOOD[:3] + [{"text": ["a"]}] + GOOD)),
                  "line 4: its 'text' is a list"),
    "dict text": ("a.jsonl", lambda p: p.write_text(jsonl([{"text": {"a": 1}}] + GOOD)),
                  "line 1: its 'text' is a dict"),
    "broken json": ("a.jsonl", lambda p: p.write_text(jsonl(GOOD[:5] + ['{"text": "unterminated'] + GOOD)),
                    "line 6: not valid JSON"),
    "json array": ("a.jsonl", lambda p: p.write_text(jsonl(GOOD[:2] + [[1, 2]] + GOOD)), "line 3: a JSON list"),
    "missing field": ("a.jsonl", lambda p: p.write_text(jsonl([{"body": "x"}] + GOOD)), "data.text_field: no field"),
    "empty jsonl": ("a.jsonl", lambda p: p.write_text(""), "has no non-empty document"),
    "blank docs": ("a.jsonl", lambda p: p.write_text(jsonl([{"text": "   "}] * 5)), "has no non-empty document"),
    "parquet ints": ("a.parquet", lambda p: pq.write_table(pa.table({"text": [1, 2, 3]}), p),
                     "column 'text' holds int64, not text"),
    "parquet column": ("a.parquet", lambda p: pq.write_table(pa.table({"body": ["x"]}), p),
                       "data.text_field: no column 'text'"),
    "not parquet": ("a.parquet", lambda p: p.write_text("this is not parquet"), "not a readable parquet file"),
    "csv": ("a.csv", lambda p: p.write_text("a,b\n"), "unsupported file type '.csv'"),
    "missing": ("nowhere.txt", lambda p: None, "does not exist"),
    "empty dir": ("empty/", lambda p: p.mkdir(), "no .txt/.jsonl/.json/.parquet files match"),
    "mixed kinds": ("mixed/", lambda p: (p.mkdir(), (p / "a.txt").write_text("x"), (p / "b.jsonl").write_text("{}")),
                    "mixes json and text files"),
}


@pytest.mark.parametrize("name", DATA_FILES)
def test_a_bad_data_file_is_one_line_naming_it(tmp_path, capsys, name):
    file_name, make, fragment = DATA_FILES[name]
    path = tmp_path / file_name.rstrip("/")
    make(path)
    assert_one_error(capsys, fragment, *data_run(tmp_path, path))


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "data.tokenizer: cannot load"),
    (json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}), "no end-of-document token"),
])
def test_a_bad_tokenizer_file_is_one_line(tmp_path, capsys, content, fragment):
    (tmp_path / "tokenizer.json").write_text(content)
    assert_one_error(capsys, fragment, "prepare-data", TINY, f"data.tokenizer={tmp_path / 'tokenizer.json'}",
                     f"data.cache_dir={tmp_path / 'cache'}", "data.max_documents=10")


# --- damaged prepared data -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, list[str]]:
    """A small prepared source and the command that opens it."""
    root = tmp_path_factory.mktemp("prepared")
    corpus = root / "corpus.jsonl"
    corpus.write_text(jsonl(GOOD * 5))
    argv = data_run(root, corpus, "data.val_fraction=0.2")
    assert main(argv) == 0
    return root / "cache", argv


def damage_manifest(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(target: Path) -> None:
        manifest = json.loads((target / "manifest.json").read_text())
        change(manifest)
        (target / "manifest.json").write_text(json.dumps(manifest))
    return apply


CACHE_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    **{f"manifest without {key}": (damage_manifest(lambda m, k=key: m.pop(k)), f"manifest.json: {key} must be")
       for key in ("format", "vocab_size", "eos_id", "seq_len", "dtype", "documents", "train_tokens", "val_tokens",
                   "train_shards", "unigram_entropy", "shards")},
    "manifest garbage": (lambda t: (t / "manifest.json").write_text("{{{"), "manifest.json: unreadable"),
    "manifest list": (lambda t: (t / "manifest.json").write_text("[]"), "manifest.json: expected a JSON object"),
    "manifest deleted": (lambda t: (t / "manifest.json").unlink(), "manifest.json: unreadable"),
    "old format": (damage_manifest(lambda m: m.update(format=-1)), "format -1, expected"),
    "shard entry": (damage_manifest(lambda m: m["shards"][0].pop("file")), "malformed shard list"),
    "bad dtype": (damage_manifest(lambda m: m.update(dtype="float128x")), "malformed shard list"),
    "shard truncated": (lambda t: (t / "shards" / "train-00000.bin").write_bytes(b"12"), "train-00000.bin: 2 bytes"),
    "shard deleted": (lambda t: (t / "shards" / "val-00000.bin").unlink(), "val-00000.bin: missing"),
    "tokenizer garbage": (lambda t: (t / "tokenizer.json").write_text("[1, 2]"), "tokenizer.json: not a usable"),
    "tokenizer deleted": (lambda t: (t / "tokenizer.json").unlink(), "tokenizer.json: not a usable"),
}


@pytest.mark.parametrize("name", CACHE_DAMAGE)
def test_damaged_prepared_data_is_one_line_naming_the_file(prepared, tmp_path, capsys, name):
    cache, argv = prepared
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    (target,) = [p for p in copy.iterdir() if p.is_dir() and p.name.startswith("json-")]
    damage, fragment = CACHE_DAMAGE[name]
    damage(target)
    assert_one_error(capsys, fragment, *[a.replace(str(cache), str(copy)) for a in argv])


# --- damaged and unsafe checkpoints ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    pretrain("train", TINY, *small_run(root / "run", root / "cache", "train.steps=2", "deepspeed.zero_stage=1",
                                       "train.checkpoint_every=2"))
    return root / "run" / "checkpoints" / step_dir_name(2)


class Payload:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def rehashed(change: Callable[[Path], None], name: str) -> Callable[[Path], None]:
    """A change whose file's checksum is recorded too, as an attacker rewriting checksums.json would."""
    def apply(ckpt: Path) -> None:
        change(ckpt)
        manifest = json.loads((ckpt / CHECKSUMS).read_text())
        manifest[name] = checksum(ckpt / name)
        (ckpt / CHECKSUMS).write_text(json.dumps(manifest))
    return apply


def trainer_state(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(ckpt: Path) -> None:
        state = json.loads((ckpt / "trainer.json").read_text())
        change(state)
        (ckpt / "trainer.json").write_text(json.dumps(state))
    return rehashed(apply, "trainer.json")


def plant(name: str) -> Callable[[Path], None]:
    def apply(ckpt: Path) -> None:
        state = torch.load(ckpt / name, weights_only=False)
        state["payload"] = Payload()
        torch.save(state, ckpt / name)
    return rehashed(apply, name)


def listed_outside(entry: str) -> Callable[[Path], None]:
    """checksums.json naming a file outside the checkpoint (`entry`: up, absolute, or through a symbolic link
    ds/link to the checkpoint's grandparent), with that file's true checksum: it must not be read at all."""
    def apply(ckpt: Path) -> None:
        outside = ckpt.parent.parent / "outside.txt"
        outside.write_text("not the checkpoint's")
        (ckpt / "ds" / "link").symlink_to(ckpt.parent.parent)
        manifest = json.loads((ckpt / CHECKSUMS).read_text())
        manifest[entry] = checksum(outside if not entry.startswith("/") else Path(entry))
        (ckpt / CHECKSUMS).write_text(json.dumps(manifest))
    return apply


MODEL, OPTIM, RNG = "ds/mp_rank_00_model_states.pt", "ds/zero_pp_rank_0_mp_rank_00_optim_states.pt", "rng/rank0.pt"


def flip(name: str) -> Callable[[Path], None]:
    def apply(ckpt: Path) -> None:
        data = bytearray((ckpt / name).read_bytes())
        data[len(data) // 2] ^= 1
        (ckpt / name).write_bytes(data)
    return apply


CHECKPOINT_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    **{f"{kind} {name}": (change(name), found) for name in (MODEL, OPTIM, RNG, "config.yaml", "tokenizer.json")
       for kind, change, found in (
           ("truncated", lambda n: lambda c: (c / n).write_bytes((c / n).read_bytes()[:-7]), "bytes when it was saved"),
           ("flipped", flip, "its contents changed since it was saved"),
           ("deleted", lambda n: lambda c: (c / n).unlink(),
            "config.yaml is missing" if name == "config.yaml" else "missing (the checkpoint's checksums list it)"))},
    **{f"payload in {name}": (plant(name), "refused: it holds Python objects") for name in (MODEL, OPTIM)},
    **{f"trainer.json without {key}": (trainer_state(lambda s, k=key: s.pop(k)), f"{key} must be")
       for key in ("step", "world_size", "data_step", "global_batch", "lr_multiplier")},
    "trainer.json step -1": (trainer_state(lambda s: s.update(step=-1)), "step must be an integer >= 0"),
    "trainer.json step text": (trainer_state(lambda s: s.update(step="3")), "step must be an integer"),
    "trainer.json initial_loss": (trainer_state(lambda s: s.update(initial_loss=[1])), "initial_loss must be"),
    "trainer.json list": (rehashed(lambda c: (c / "trainer.json").write_text("[]"), "trainer.json"),
                          "expected a JSON object"),
    "trainer.json garbage": (rehashed(lambda c: (c / "trainer.json").write_text("{"), "trainer.json"), "unreadable"),
    **{f"checksums entry {kind}": (listed_outside(entry), "lists a file outside the checkpoint")
       for kind, entry in (("up", "../../outside.txt"), ("absolute", "/etc/hostname"),
                           ("through a link", "ds/link/outside.txt"))},
    "checksums garbage": (lambda c: (c / CHECKSUMS).write_text("nope"), "unreadable checksums"),
    "checksums deleted": (lambda c: (c / CHECKSUMS).unlink(), "checksums.json is missing"),
    "extra file": (lambda c: (c / "ds" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(b"x"),
                   "not written by the checkpoint's save"),
    "staging name": (lambda c: c.rename(c.with_name(".tmp-" + c.name)), "an incomplete checkpoint"),
    "no trainer.json": (lambda c: (c / "trainer.json").unlink(), "trainer.json is missing"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKPOINT_DAMAGE)
@pytest.mark.parametrize("command", ["consolidate", "export-hf"])
def test_a_damaged_or_unsafe_checkpoint_is_one_line(checkpoint, tmp_path, capsys, name, command):
    copy = tmp_path / "checkpoints" / checkpoint.name
    shutil.copytree(checkpoint, copy)
    damage, fragment = CHECKPOINT_DAMAGE[name]
    damage(copy)
    target = copy if copy.exists() else copy.with_name(".tmp-" + copy.name)
    out = tmp_path / ("w.safetensors" if command == "consolidate" else "hf")
    assert_one_error(capsys, fragment, command, target, out)


@pytest.mark.slow
def test_a_diverged_run_exits_3(tmp_path):
    proc = pretrain("train", TINY, *small_run(tmp_path / "run", tmp_path / "cache", "train.steps=6",
                                              "optim.lr=1e20", "optim.warmup_steps=0"), check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 3 and len(errors) == 1 and "training diverged" in errors[0]


def test_the_corpus_is_large():
    """At least 200 generated cases, as the reliability promise in the README says."""
    counted = (len(config_cases()) + len(OVERRIDES) + len(YAML_FILES) + 2 + len(CLI_CASES) + 4 + len(DATA_FILES)
               + 2 + len(CACHE_DAMAGE) + 2 * len(CHECKPOINT_DAMAGE) + 1)
    assert counted >= 200, counted


# --- damaged sweep files ---------------------------------------------------------------------------------------

def a_sweep(tmp_path: Path) -> Path:
    """A sweep of three finished points (synthetic results), planned in `tmp_path`."""
    return synthetic_sweep(tmp_path / "sweep", mup_like, widths=(128,), lrs="2^-8:2^-6:1")


def first_result(sweep: Path) -> Path:
    return sorted((sweep / "points").glob("*/result.json"))[0]


def edit_json(file: Callable[[Path], Path], change: Callable[[typing.Any], object]) -> Callable[[Path], None]:
    """A damage: `change` applied in place to the JSON in the sweep's file `file(sweep)`."""
    def apply(sweep: Path) -> None:
        data = json.loads(file(sweep).read_text())
        change(data)
        file(sweep).write_text(json.dumps(data))
    return apply


def plan_file(sweep: Path) -> Path:
    return sweep / "plan.json"


def write(file: Callable[[Path], Path], content: bytes) -> Callable[[Path], None]:
    return lambda sweep: file(sweep).write_bytes(content)


WRONG = {"int": "12", "float": "0.1", "str": 5, "list[int]": [1.5], "list[float]": ["x"], "list[str]": [1],
         "list[Point]": {"a": 1}}  # for each type a field is declared with, a value of another
PLAN_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "not JSON": (write(plan_file, b'{"name": '), "unreadable"),
    "binary": (write(plan_file, b"\xff\xfe\x00"), "unreadable"),
    "a list": (write(plan_file, b"[]"), "expected a JSON object, got list"),
    "unknown key": (edit_json(plan_file, lambda p: p.update(bogus=1)), "bogus unknown"),
    **{f"without {f.name}": (edit_json(plan_file, lambda p, k=f.name: p.pop(k)), f"{f.name} missing")
       for f in dataclasses.fields(Plan)},
    **{f"{f.name} of type {type(WRONG[f.type]).__name__}": (
        edit_json(plan_file, lambda p, k=f.name, v=WRONG[f.type]: p.update({k: v})),
        f"{f.name} must be of type {f.type}") for f in dataclasses.fields(Plan)},
    "an LR not finite": (edit_json(plan_file, lambda p: p.update(lrs=[float("nan")])), "lrs must be of type"),
    "a point not an object": (edit_json(plan_file, lambda p: p.update(points=[1])), "point 0: expected a JSON object"),
    **{f"a point without {f.name}": (edit_json(plan_file, lambda p, k=f.name: p["points"][0].pop(k)),
                                     f"point 0: {f.name} missing") for f in dataclasses.fields(Point)},
    **{f"a point's {f.name} of type {type(WRONG[f.type]).__name__}": (
        edit_json(plan_file, lambda p, k=f.name, v=WRONG[f.type]: p["points"][0].update({k: v})),
        f"point 0: {f.name} must be of type {f.type}") for f in dataclasses.fields(Point)},
    "a point out of place": (edit_json(plan_file, lambda p: p["points"][0].update(index=2)), "point 0 has index 2"),
}
RESULT_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "not JSON": (write(first_result, b'{"status": "o'), "unreadable"),
    "a list": (write(first_result, b"[1]"), "expected a JSON object, got list"),
    "no status": (edit_json(first_result, lambda r: r.pop("status")), "status must be one of ok, diverged, failed"),
    "another status": (edit_json(first_result, lambda r: r.update(status="great")), "status must be one of"),
    "no eval_loss": (edit_json(first_result, lambda r: r.pop("eval_loss")), "eval_loss must be a finite number"),
    "eval_loss text": (edit_json(first_result, lambda r: r.update(eval_loss="3.1")), "eval_loss must be"),
    "train_loss NaN": (edit_json(first_result, lambda r: r.update(train_loss=float("nan"))), "train_loss must be"),
}
# The commands that read a sweep: its report, the LR it transfers, a restart, one point (which reads no result).
SWEEP_READERS: dict[str, Callable[[Path], list]] = {
    "report": lambda sweep: ["report", sweep],
    "apply-lr": lambda sweep: ["apply-lr", sweep, TINY, "--print"],
    "sweep": lambda sweep: ["sweep", TINY, "--widths", "128", "--lrs", "2^-8:2^-6:1", "--out", sweep],
    "sweep-point": lambda sweep: ["sweep-point", sweep, "0"],
}


@pytest.mark.parametrize("name", PLAN_DAMAGE)
@pytest.mark.parametrize("command", SWEEP_READERS)
def test_a_damaged_plan_is_one_line_naming_it(tmp_path, capsys, command, name):
    sweep = a_sweep(tmp_path)
    damage, fragment = PLAN_DAMAGE[name]
    damage(sweep)
    assert_one_error(capsys, f"{plan_file(sweep)}: {fragment}", *SWEEP_READERS[command](sweep))


@pytest.mark.parametrize("name", RESULT_DAMAGE)
@pytest.mark.parametrize("command", ["report", "apply-lr", "sweep"])
def test_a_damaged_result_is_one_line_naming_it(tmp_path, capsys, command, name):
    sweep = a_sweep(tmp_path)
    damage, fragment = RESULT_DAMAGE[name]
    damage(sweep)
    assert_one_error(capsys, f"{first_result(sweep)}: {fragment}", *SWEEP_READERS[command](sweep))


METRICS_DAMAGE = {  # line 2 of 3
    "not JSON": '{"step": 2, "lo',
    "a list": "[2, 4.9]",
    "no step": '{"loss": 4.9}',
    "step text": '{"step": "2", "loss": 4.9}',
    "no loss": '{"step": 2}',
    "loss text": '{"step": 2, "loss": "4.9"}',
}


@pytest.mark.slow
@pytest.mark.parametrize("name", [*METRICS_DAMAGE, "torn last line"])
def test_a_damaged_metrics_file_is_one_line_but_a_torn_last_line_is_dropped(checkpoint, tmp_path, capsys, name):
    """A resumed run (here at its last step: nothing to train) rereads its metrics.jsonl. A crash in the middle of
    a write leaves the last line cut short: dropped, with a note; a bad line anywhere else is an error."""
    run_dir = shutil.copytree(checkpoint.parents[1], tmp_path / "run")
    metrics = run_dir / "metrics.jsonl"
    argv = ["train", run_dir / "config.yaml", f"train.out_dir={run_dir}"]
    if name == "torn last line":
        metrics.write_text(metrics.read_text() + '{"step": 3, "lo')
        status, err = run(capsys, *argv)
        assert status == 0 and f"note: {metrics}: ignoring its last line, cut short" in err, err[-2000:]
        assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2]
        return
    lines = ['{"step": 1, "loss": 5.0}', METRICS_DAMAGE[name], '{"step": 3, "loss": 4.8}']
    metrics.write_text("\n".join(lines) + "\n")
    assert_one_error(capsys, f"{metrics}: line 2 is not a metrics record", *argv)


# --- deep nesting ----------------------------------------------------------------------------------------------

def nested_file(form: str, depth: int) -> str:
    """A config file whose collections nest `depth` deep, the top-level mapping included."""
    inner = depth - 1  # collections below the top-level mapping
    return {
        "flow list": f"a: {'[' * inner}{']' * inner}\n",
        "flow map": f"a: {'{a: ' * inner}1{'}' * inner}\n",
        "block map": "".join(f"{' ' * i}a:\n" for i in range(depth)) + f"{' ' * depth}1\n",
        "block list": f"a:\n  {'- ' * inner}1\n",
    }[form]


NESTING = [(form, depth) for form in ("flow list", "flow map", "block map", "block list")
           for depth in (MAX_NESTING, MAX_NESTING + 1, 1_500, *((50_000,) if form.startswith("flow") else ()))]


@pytest.mark.parametrize("form, depth", NESTING, ids=lambda x: str(x))
def test_deep_nesting_in_a_file_is_one_line(tmp_path, capsys, form, depth):
    path = tmp_path / "deep.yaml"
    path.write_text(nested_file(form, depth))
    fragment = "nested more than 16 levels deep" if depth > MAX_NESTING else "a: unknown key"
    assert_one_error(capsys, fragment, "inspect", path)


@pytest.mark.parametrize("brackets, depth", [(b, d) for b in ("[]", "{a: }") for d in
                                             (MAX_NESTING, MAX_NESTING + 1, 1_500, 50_000)], ids=lambda x: str(x))
def test_deep_nesting_in_an_override_is_one_line(capsys, brackets, depth):
    value = brackets[:-1] * depth + ("1" if brackets != "[]" else "") + brackets[-1] * depth
    fragment = ("override model.d_model:1:" if depth > MAX_NESTING
                else f"model.d_model: expected an integer, got a {'list' if brackets == '[]' else 'mapping'}")
    assert_one_error(capsys, fragment, "inspect", TINY, f"model.d_model={value}")


# --- keys given twice ------------------------------------------------------------------------------------------

def repeated_keys() -> dict[str, tuple[str, str]]:
    """Config texts that give a key twice in one mapping, at every level, and the error naming both lines."""
    cases = {"base": ("base: a.yaml\nbase: b.yaml\n", "'base' is given twice in one mapping, on lines 1 and 2"),
             "source key": ("data:\n  sources:\n    - source: a.txt\n      weight: 1\n      weight: 2\n",
                            "'weight' is given twice in one mapping, on lines 4 and 5"),
             "quoted twin": ("model:\n  d_model: 64\n  'd_model': 128\n", "on lines 2 and 3"),
             "flow": ("optim: {lr: 0.1, lr: 0.2}\n", "'lr' is given twice in one mapping, on line 1 (columns 9 and "
                                                     "18)"),
             "top flow": ("{model: {}, model: {}}\n", "on line 1 (columns 2 and 13)")}
    sections = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        name, key = section.name, dataclasses.fields(sections[section.name])[0].name
        other = "wandb" if name != "wandb" else "model"
        cases[f"section {name}"] = (f"{name}:\n  {key}: 1\n{other}: {{}}\n{name}:\n  {key}: 2\n",
                                    f"'{name}' is given twice in one mapping, on lines 1 and 4")
        cases[f"{name}.{key}"] = (f"{name}:\n  {key}: 1\n  {key}: 2\n",
                                  f"'{key}' is given twice in one mapping, on lines 2 and 3")
    return cases


REPEATED = repeated_keys()


@pytest.mark.parametrize("name", REPEATED)
def test_a_key_given_twice_is_one_line_naming_both_lines(tmp_path, capsys, name):
    text, fragment = REPEATED[name]
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    assert_one_error(capsys, f"{path}:", "inspect", path)
    assert_one_error(capsys, fragment, "inspect", path)


@pytest.mark.parametrize("override, key", [("model={d_model: 64, d_model: 128}", "d_model"),
                                           ("data.sources=[{source: a.txt, source: b.txt}]", "source"),
                                           ("wandb={tags: [a], mode: offline, tags: [b]}", "tags")])
def test_a_key_given_twice_in_an_override_is_one_line(capsys, override, key):
    assert_one_error(capsys, f"'{key}' is given twice in one mapping, on line 1", "inspect", TINY, override)


# --- integers too large ----------------------------------------------------------------------------------------

HUGE = {"2^63": str(2**63), "2^64": str(2**64), "400 digits": "1" + "0" * 400, "float 1e300": "1.0e+300",
        "-2^63 - 1": str(-(2**63) - 1), "5000 digits": "9" * 5000}


def int_keys() -> list[str]:
    sections = typing.get_type_hints(Config)
    return [f"{section.name}.{f.name}" for section in dataclasses.fields(Config)
            for f in dataclasses.fields(sections[section.name])
            if typing.get_type_hints(sections[section.name])[f.name] in (int, int | None)]


@pytest.mark.parametrize("command", ["inspect", "estimate"])
@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize("key", int_keys())
def test_an_integer_too_large_for_any_key_is_one_line(capsys, key, value, command):
    fragment = f"override {key}:1:1: an integer of 5000 characters" if value == "5000 digits" else f"{key}: must"
    assert_one_error(capsys, fragment, command, TINY, f"{key}={HUGE[value]}")


@pytest.mark.parametrize("overrides, fragment", [
    ("model.d_model=1048576", "blocks.0.mlp.w_in.weight has 2,932,120,485,888 elements"),
    ("data.vocab_size=4294967296", "embed.weight has 549,755,813,888 elements"),
    ("model.d_model=1048576 model.mlp=relu", "blocks.0.mlp.w_in.weight has 4,398,046,511,104 elements"),
])
def test_a_model_too_large_to_draw_is_one_line_for_inspect(capsys, overrides, fragment):
    assert_one_error(capsys, fragment, "inspect", TINY, *overrides.split())
    assert_one_error(capsys, "GiB of memory", "inspect", TINY, *overrides.split())


ESTIMATE_OPTIONS = [("--gpus", value) for value in HUGE.values()] + [
    (option, value) for option in ("--gpu-mem", "--peak-tflops", "--mfu") for value in ("1e400", "-1e400", "nan",
                                                                                         "1" + "0" * 400 + ".0")]


@pytest.mark.parametrize("option, value", ESTIMATE_OPTIONS, ids=lambda x: x[:20])
def test_an_estimate_option_out_of_range_is_one_line(capsys, option, value):
    assert_one_error(capsys, f"argument {option}: expected", "estimate", TINY, option, value)


# --- extreme mixture weights -----------------------------------------------------------------------------------

WEIGHTS = ["1e308", "1.7976931348623157e308", "1e16", "1e-16", "1e-320", "5e-324", ".inf", "-.inf", ".nan", "0",
           "-1", "-0.0"]


@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("position", [0, 1])
def test_an_extreme_mixture_weight_is_one_line(tmp_path, capsys, weight, position):
    weights = ["1", "1"]
    weights[position] = weight
    sources = ", ".join(f"{{source: embedded, weight: {w}}}" for w in weights)
    assert_one_error(capsys, f"data.sources[{position}].weight: must", "inspect", TINY, f"data.sources=[{sources}]")
    path = tmp_path / "mixture.yaml"
    path.write_text("data:\n  sources:\n" + "".join(f"    - source: embedded\n      weight: {w}\n" for w in weights))
    assert_one_error(capsys, f"data.sources[{position}].weight: must", "inspect", path)


# --- files that cannot be read ---------------------------------------------------------------------------------

NOT_UTF8 = {"latin-1": "model:\n  d_model: 64 # caf\xe9\n".encode("latin-1"),
            "utf-16": "model:\n  d_model: 64\n".encode("utf-16"),
            "lone surrogate": b"model:\n  d_model: 64 # \xed\xa0\x80\n",
            "overlong": b"model:\n  d_model: 64 # \xc0\xaf\n",
            "cut short": b"model:\n  d_model: 64 # \xe2\x82"}


@pytest.mark.parametrize("name", NOT_UTF8)
@pytest.mark.parametrize("as_base", [False, True])
def test_a_config_not_utf8_is_one_line(tmp_path, capsys, name, as_base):
    (tmp_path / "bad.yaml").write_bytes(NOT_UTF8[name])
    (tmp_path / "top.yaml").write_text("base: bad.yaml\n")
    path = tmp_path / ("top.yaml" if as_base else "bad.yaml")
    assert_one_error(capsys, f"bad.yaml{' (the base of ' if as_base else ''}", "inspect", path)
    assert_one_error(capsys, "not a UTF-8 text file", "inspect", path)


UNREADABLE: dict[str, tuple[Callable[[Path], str], str]] = {  # base: what, made how, and the error's end
    "/proc/self/mem": (lambda folder: "/proc/self/mem", "top.yaml): cannot be read: Input/output error"),
    "a folder": (lambda folder: (folder / "sub").mkdir() or "sub", "top.yaml): not a regular file"),
    "a pipe": (lambda folder: os.mkfifo(folder / "pipe") or "pipe", "top.yaml): not a regular file"),
}


@pytest.mark.parametrize("name", UNREADABLE)
def test_a_base_that_is_no_readable_file_is_one_line(tmp_path, capsys, name):
    make, fragment = UNREADABLE[name]
    base = make(tmp_path)
    (tmp_path / "top.yaml").write_text(f"base: {base}\n")
    assert_one_error(capsys, f"{base} (the base of ", "inspect", tmp_path / "top.yaml")
    assert_one_error(capsys, fragment, "inspect", tmp_path / "top.yaml")


def test_a_config_file_that_fails_to_read_is_one_line(capsys):
    assert_one_error(capsys, "/proc/self/mem: cannot be read", "inspect", "/proc/self/mem")


def run_without_root(capsys, *argv: str) -> tuple[int, str]:
    """`run` as the user `nobody` in a forked child (root reads every file); in this process for anyone else."""
    if os.geteuid() != 0:
        return run(capsys, *argv)
    # Once as root first, so that what the command imports lazily is loaded: `nobody` may not read the
    # interpreter's own library where it lives under root's home.
    run(capsys, *argv)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, run, report (status, stderr), and leave without pytest's cleanup
        os.close(read)
        try:
            nobody = pwd.getpwnam("nobody")
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            result = run(capsys, *argv)
        except BaseException:  # a traceback: what the test is there to catch
            result = (1, traceback.format_exc())
        with os.fdopen(write, "w") as pipe:
            json.dump(result, pipe)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        status, err = json.load(pipe)
    os.waitpid(pid, 0)
    return status, err


LOCKED = {  # the path given to inspect, the file made unreadable, and what the error names
    "file": ("secret.yaml", "secret.yaml", "secret.yaml: cannot be read: Permission denied"),
    "base": ("top.yaml", "secret.yaml", "secret.yaml (the base of"),
    "folder": ("locked/secret.yaml", "locked", "locked/secret.yaml: cannot be read: Permission denied"),
}


@pytest.mark.parametrize("name", LOCKED)
def test_a_config_the_user_may_not_read_is_one_line(capsys, name):
    given, locked, fragment = LOCKED[name]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # nobody may look inside, not into what is locked
        (folder / "locked").mkdir()
        for path in (folder / "secret.yaml", folder / "locked" / "secret.yaml"):
            path.write_text("model:\n  d_model: 64\n")
        (folder / "top.yaml").write_text("base: secret.yaml\n")
        (folder / locked).chmod(0)
        try:
            status, err = run_without_root(capsys, "inspect", folder / given)
        finally:
            (folder / locked).chmod(0o755)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert fragment in errors[0] and "Permission denied" in errors[0], errors[0]
