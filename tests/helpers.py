"""What the tests share: the repository's paths, small-run overrides, a CLI runner, and synthetic sweeps with a
known optimum. Imported as `tests.helpers` (pytest.ini puts the repository root on sys.path), so it works in any
import mode."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.training.metrics import read_metrics
from pretrain.transfer.sweep import create_sweep, parse_lrs, result_path
from pretrain_kernels._dispatch import kernels_interpreted

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
HAS_GPU = __import__("torch").cuda.is_available()
# For the CPU twins of GPU tests: on a GPU machine the kernels are compiled unless TRITON_INTERPRET=1 was set.
INTERPRETER_ONLY = pytest.mark.skipif(not kernels_interpreted(), reason="kernels compiled for the GPU in this "
                                      "process; rerun with CUDA_VISIBLE_DEVICES= to interpret them")
SMALL = {"max_documents": 40, "vocab_size": 512, "seq_len": 32, "val_fraction": 0.1}  # a data config of seconds


def small_run(out: Path, cache: Path, *extra: str) -> list[str]:
    """Overrides for a model and corpus small enough to train in seconds."""
    return [
        "model.d_model=64", "model.n_layers=2", "model.head_dim=16",
        "data.max_documents=150", "data.vocab_size=512", "data.seq_len=64", f"data.cache_dir={cache}",
        "train.micro_batch_size=8", "train.eval_every=10", "train.eval_batches=2", "train.log_every=5",
        "optim.warmup_steps=5", f"train.out_dir={out}", "wandb.mode=disabled", *extra,
    ]


def pretrain(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """`python -m pretrain ARGS` in a fresh process, from the repository root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "pretrain", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"pretrain {args[0]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def losses(out: Path) -> dict[int, float]:
    """Train loss by step, from a run dir's metrics.jsonl."""
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl")}


def synthetic_sweep(out: Path, optimum, widths=(128, 256, 512, 1024), lrs="2^-12:2^-2:0.5",
                    diverge_above: float = math.inf, config: str = "configs/tiny.yaml", overrides=(),
                    steps: list[int] | None = None, noise: float = 0.0, seed: int = 0) -> Path:
    """A planned sweep whose points have results: eval loss 3 + 0.1·(log2 lr − optimum(width, tokens))²
    (plus Gaussian noise of std `noise`), diverged above `diverge_above` (log2)."""
    plan = create_sweep(ROOT / config, list(widths), parse_lrs(lrs), out, list(overrides), steps)
    rng = random.Random(seed)
    for p in plan.points:
        x = math.log2(p.lr)
        diverged = x > diverge_above
        loss = None if diverged else 3 + 0.1 * (x - optimum(p.width, plan.tokens(p.steps))) ** 2 + rng.gauss(0, noise)
        result_path(p).parent.mkdir(parents=True)
        result_path(p).write_text(json.dumps({"index": p.index, "width": p.width, "lr": p.lr,
                                              "status": "diverged" if diverged else "ok",
                                              "train_loss": loss, "eval_loss": loss}))
    return out


def mup_like(width: int, tokens: int) -> float:
    return -6.3


def sp_like(width: int, tokens: int) -> float:
    return -6.3 - math.log2(width / 128)  # halves per doubling


def horizon_like(beta: float, at_tokens: float = 4096 * 300):
    """μP across width, falling by β per doubling of tokens, -6.3 at `at_tokens` (tiny.yaml's horizon)."""
    return lambda width, tokens: -6.3 - beta * math.log2(tokens / at_tokens)
