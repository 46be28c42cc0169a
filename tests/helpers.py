"""What the tests share: the repository's paths, small-run overrides, a CLI runner, and synthetic sweeps with a
known optimum. Imported as `tests.helpers` (pytest.ini puts the repository root on sys.path), so it works in any
import mode."""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.training.metrics import read_metrics
from pretrain.transfer.sweep import Plan, Point, create_sweep, parse_lrs, result_path
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
                    steps: list[int] | None = None, noise: float = 0.0, seed: int = 0, batches: list[int] | None = None,
                    equal_tokens: bool = False, depths: list[int] | None = None) -> Path:
    """A planned sweep whose points have results: eval loss 3 + 0.1·(log2 lr − optimum(width, tokens))²
    (plus Gaussian noise of std `noise`), diverged above `diverge_above` (log2). An optimum of three positional
    arguments also gets the point's tokens per step (`batch_like`), one with a keyword `depth` its depth
    (`depth_like`)."""
    plan = create_sweep(ROOT / config, list(widths), parse_lrs(lrs), out, list(overrides), steps,
                        batches=batches, equal_tokens=equal_tokens, depths=depths)
    rng = random.Random(seed)
    for p in plan.points:
        synthetic_result(plan, p, optimum, diverge_above, noise, rng)
    return out


def synthetic_result(plan: Plan, point: Point, optimum, diverge_above: float = math.inf, noise: float = 0.0,
                     rng: random.Random | None = None) -> dict:
    """Write the result `synthetic_sweep` gives `point`, and return it: a stand-in for `sweep.run_point`."""
    parameters = inspect.signature(optimum).parameters
    positional = [p for p in parameters.values() if p.kind != p.KEYWORD_ONLY]
    batch = (point.tokens_per_step,) if len(positional) == 3 else ()
    depth = {"depth": point.depth} if "depth" in parameters else {}
    x, best = math.log2(point.lr), optimum(point.width, point.steps * point.tokens_per_step, *batch, **depth)
    diverged = x > diverge_above
    loss = None if diverged else 3 + 0.1 * (x - best) ** 2 + (rng or random.Random(point.index)).gauss(0, noise)
    result = {"index": point.index, "width": point.width, "lr": point.lr, "status": "diverged" if diverged else "ok",
              "train_loss": loss, "eval_loss": loss}
    result_path(point).parent.mkdir(parents=True, exist_ok=True)
    result_path(point).write_text(json.dumps(result))
    return result


def mup_like(width: int, tokens: int) -> float:
    return -6.3


def sp_like(width: int, tokens: int) -> float:
    return -6.3 - math.log2(width / 128)  # halves per doubling


def horizon_like(beta: float, at_tokens: float = 4096 * 300):
    """μP across width, falling by β per doubling of tokens, -6.3 at `at_tokens` (tiny.yaml's horizon)."""
    return lambda width, tokens: -6.3 - beta * math.log2(tokens / at_tokens)


def batch_like(beta: float, a: float, at_tokens: float = 4096 * 300, at_batch: float = 4096):
    """`horizon_like(beta)`, moving by `a` log2 per doubling of the tokens per step from tiny.yaml's (16 × 256)."""
    return lambda width, tokens, tokens_per_step: (horizon_like(beta, at_tokens)(width, tokens)
                                                   + a * math.log2(tokens_per_step / at_batch))


def depth_like(slope: float, scatter: dict[int, float] | None = None):
    """-6.3 at depth 2 at every width and horizon, moving by `slope` log2 per doubling of depth, plus a fixed offset
    per depth (`scatter`)."""
    return lambda width, tokens, *, depth: -6.3 + slope * math.log2(depth / 2) + (scatter or {}).get(depth, 0.0)


def drift_like(slope: float, scatter: dict[int, float] | None = None):
    """-6.3 at width 128, moving by `slope` log2 per doubling of width, plus a fixed offset per width (`scatter`):
    optima as scattered as noisy ones, reproducibly."""
    return lambda width, tokens: -6.3 + slope * math.log2(width / 128) + (scatter or {}).get(width, 0.0)
