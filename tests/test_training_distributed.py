"""Data parallelism under DeepSpeed ZeRO 0-3 with real torchrun processes (CPU, gloo): 2 processes train the
same model as 1 with the same global batch (also with ZeRO-Offload and activation checkpointing), keep every
μP group's LR, log MFU, resume exactly, resume at another world size, and consolidate to one fp32 state dict.

"The same model" is measured against the noise of fp32 arithmetic itself: the one-process reference run again
at other micro batch sizes (the same global batch, so the same sums taken in other orders) spreads around the
reference by a few 1e-6 (relative L2 per tensor; elementwise, Adam turns that into up to ~5e-5 on the smallest
weights, so elementwise limits are luck). Two processes reorder the same sums once more; each tensor and each
step's loss must stay within MARGIN times the spread measured for it in the same session.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretrain.cli import main
from pretrain.config import load_config
from pretrain.model.flops import flops_per_token
from pretrain.model.transformer import Transformer
from pretrain.training.checkpoint import load_consolidated_state_dict, read_trainer_state, step_dir_name
from pretrain.training.engine import UNIVERSAL_DIR
from pretrain.training.metrics import read_metrics
from tests.helpers import ROOT, losses, pretrain, small_run

# 16 sequences per step at any world size: 1 process accumulates 4 micro batches of 4, 2 processes 2 each.
BATCH = ["train.steps=6", "train.checkpoint_every=3", "train.keep_checkpoints=2", "train.micro_batch_size=4",
         "train.global_batch_size=16", "optim.lr=0.01", "optim.warmup_steps=2", "optim.min_lr_ratio=0.1",
         "train.peak_flops=1e12"]  # no peak is known for a CPU: MFU is logged against this one
MARGIN = 4  # two processes came within 1.25x of the largest reordering spread when measured (zero3, this CPU)
REORDERED = (2, 8, 16)  # micro batch sizes of the reordered reference runs (accumulating 8, 2 and 1 of them)
FLOOR = torch.finfo(torch.float32).eps  # a spread that happens to measure zero still allows fp32 rounding

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def train(out: Path, cache: Path, nproc: int, *overrides: str) -> Path:
    args = ["train", "configs/tiny.yaml", *small_run(out, cache, *BATCH, *overrides)]
    if nproc == 1:
        pretrain(*args)
        return out
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "pretrain", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return out


def resume(source: Path, step: int, out: Path, cache: Path, nproc: int, *overrides: str) -> Path:
    """Continue `source`'s checkpoint at `step` in a fresh run dir with `nproc` processes."""
    name = step_dir_name(step)
    shutil.copytree(source / "checkpoints" / name, out / "checkpoints" / name)
    return train(out, cache, nproc, *overrides)


def checkpoint(run: Path, step: int = 6) -> Path:
    return run / "checkpoints" / step_dir_name(step)


def assert_group_lrs(run: Path) -> None:
    """Each step's LR: linear warmup over 2 steps, linear decay to 0.1 at step 6, times the μP multiplier
    (width 64 at base 128: hidden and readout groups train at 2x the embedding's LR)."""
    for r in read_metrics(run / "metrics.jsonl"):
        step = r["step"] - 1  # the LR used by the step just taken
        multiplier = (step + 1) / 2 if step < 2 else 0.1 + 0.9 * (1 - (step - 2) / 4)
        assert r["lr/embedding"] == pytest.approx(0.01 * multiplier), r
        for group in ("query", "key", "value", "attn_out", "mlp_in", "mlp_out", "readout"):
            assert r[f"lr/{group}"] == pytest.approx(0.02 * multiplier), (group, r)


def logits(state: dict[str, torch.Tensor], run: Path) -> torch.Tensor:
    """The logits of the model with weights `state` (of `run`'s config) on fixed tokens."""
    cfg = load_config(checkpoint(run) / "config.yaml")
    with torch.device("meta"):
        model = Transformer(cfg.model, cfg.vocab_size)
    model.load_state_dict(state, strict=True, assign=True)
    tokens = torch.randint(0, cfg.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(tokens)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm().clamp_min(FLOOR)).item()


def assert_close_losses(run: Path, reference: Path, steps: range, noise: dict) -> None:
    got, want = losses(run), losses(reference)
    for step in steps:
        error = abs(got[step] - want[step]) / abs(want[step])
        assert error <= MARGIN * max(noise["loss"], FLOOR), (step, got[step], want[step], noise["loss"])


def assert_close_weights(run: Path, reference: Path, noise: dict) -> None:
    got, want = load_consolidated_state_dict(checkpoint(run)), load_consolidated_state_dict(checkpoint(reference))
    assert got.keys() == want.keys()
    for name in want:
        error = relative_error(got[name], want[name])
        assert error <= MARGIN * max(noise[name], FLOOR), (name, error, noise[name])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache) -> Path:
    """One process, no ZeRO: the plain data-parallel-free baseline every stage must reproduce."""
    return train(tmp_path_factory.mktemp("reference"), cache, 1)


@pytest.fixture(scope="module")
def noise(tmp_path_factory, cache, reference) -> dict[str, float]:
    """How far the reference's own arithmetic moves when its sums are reordered: per weight tensor the largest
    relative L2 difference of the reordered runs' final weights, under "loss" the largest relative difference
    of any step's loss, and under "logits" the largest absolute difference of the final model's logits."""
    runs = [train(tmp_path_factory.mktemp(f"micro{m}"), cache, 1, f"train.micro_batch_size={m}") for m in REORDERED]
    want = load_consolidated_state_dict(checkpoint(reference))
    want_logits = logits(want, reference)
    spread = dict.fromkeys([*want, "loss", "logits"], 0.0)
    for run in runs:
        got = load_consolidated_state_dict(checkpoint(run))
        for name in want:
            spread[name] = max(spread[name], relative_error(got[name], want[name]))
        spread["logits"] = max(spread["logits"], (logits(got, run) - want_logits).abs().max().item())
        run_losses, reference_losses = losses(run), losses(reference)
        spread["loss"] = max(spread["loss"], *(abs(run_losses[s] - v) / abs(v) for s, v in reference_losses.items()))
    return spread


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, cache):
    """The 2-process run of a ZeRO stage (and options), trained once and shared by the tests that read it."""
    runs: dict[tuple[str, ...], Path] = {}

    def run(stage: int, *options: str) -> Path:
        key = (f"deepspeed.zero_stage={stage}", *options)
        if key not in runs:
            runs[key] = train(tmp_path_factory.mktemp(f"zero{stage}"), cache, 2, *key)
        return runs[key]

    return run


@pytest.mark.parametrize("stage, options", [
    (0, ()), (1, ()), (2, ()), (3, ()),
    (3, ("deepspeed.offload_optimizer=true", "train.activation_checkpointing=true")),
], ids=["zero0", "zero1", "zero2", "zero3", "zero3-offload-checkpointing"])
def test_two_processes_train_the_same_model_as_one(two_process_runs, reference, noise, stage, options):
    run = two_process_runs(stage, *options)
    assert read_trainer_state(checkpoint(run))["world_size"] == 2
    assert_close_losses(run, reference, range(1, 7), noise)
    assert_group_lrs(run)
    flops = flops_per_token(load_config(run / "config.yaml"))
    for r in read_metrics(run / "metrics.jsonl"):
        assert r["mfu"] == pytest.approx(flops * r["tokens_per_s"] / 2 / 1e12)  # per process
        assert 0.1 < r["mem_gb"] < 8
    assert_close_weights(run, reference, noise)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_resume_at_the_same_world_size_is_exact(two_process_runs, tmp_path, cache, stage):
    run = two_process_runs(stage)
    resumed = resume(run, 3, tmp_path / "resumed", cache, 2, f"deepspeed.zero_stage={stage}")
    assert {s: losses(resumed)[s] for s in (4, 5, 6)} == {s: losses(run)[s] for s in (4, 5, 6)}
    assert not (checkpoint(run, 3) / UNIVERSAL_DIR).exists()


@pytest.mark.parametrize("stage", [2, 3])
def test_resume_two_to_one_to_two_processes(two_process_runs, reference, noise, tmp_path, cache, stage):
    """2 processes to step 3, then 1 to step 4, then 2 again to the end: the losses of an uninterrupted run.
    The second hop reads a checkpoint the first hop wrote, at world size 1."""
    zero = f"deepspeed.zero_stage={stage}"
    one = resume(two_process_runs(stage), 3, tmp_path / "one", cache, 1, zero, "train.checkpoint_every=1",
                 "train.keep_checkpoints=4")
    assert (one / "checkpoints" / step_dir_name(3) / UNIVERSAL_DIR).is_dir()  # converted on the way
    assert read_trainer_state(checkpoint(one, 4))["world_size"] == 1
    two = resume(one, 4, tmp_path / "two", cache, 2, zero)
    assert_close_losses(one, reference, range(4, 7), noise)
    assert_close_losses(two, reference, range(5, 7), noise)
    assert_group_lrs(one)
    assert_group_lrs(two)  # ZeRO-3's universal load would have reset every group to the first one's LR


def test_consolidated_weights_reproduce_the_models_logits(two_process_runs, reference, noise, tmp_path):
    out = tmp_path / "zero3.safetensors"
    assert main(["consolidate", str(two_process_runs(3)), str(out)]) == 0  # a run dir: its newest checkpoint
    consolidated = load_file(out)
    assert all(t.dtype == torch.float32 for t in consolidated.values())
    want = logits(load_consolidated_state_dict(checkpoint(reference)), reference)
    error = (logits(consolidated, reference) - want).abs().max().item()
    assert error <= MARGIN * max(noise["logits"], FLOOR * want.abs().max().item()), (error, noise["logits"])
