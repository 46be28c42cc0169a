"""Shared helpers and fixtures, and the test tiers.

Markers (`pytest -m "not slow"` runs the fast tier in under a minute on 2 cores):
    slow         starts processes or trains models end to end (seconds to minutes each)
    distributed  several processes under torchrun/DeepSpeed (also slow)
    slurm        a real Slurm cluster started on this machine (also slow)
    gpu          needs a CUDA GPU; skipped on CPU, where its interpreter or reference twin runs instead
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.training.metrics import read_metrics
from pretrain_kernels._dispatch import kernels_interpreted  # importing `kernels` first picks interpreter or compiler

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
HAS_GPU = __import__("torch").cuda.is_available()
# For the CPU twins of GPU tests: on a GPU machine the kernels are compiled unless TRITON_INTERPRET=1 was set.
INTERPRETER_ONLY = pytest.mark.skipif(not kernels_interpreted(), reason="kernels compiled for the GPU in this "
                                      "process; rerun with CUDA_VISIBLE_DEVICES= to interpret them")

MARKERS = {
    "slow": "starts processes or trains models end to end",
    "distributed": "several processes under torchrun and DeepSpeed",
    "slurm": "a real Slurm cluster started on this machine",
    "gpu": "needs a CUDA GPU",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, meaning in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Distributed and Slurm tests are slow too, so `-m "not slow"` leaves them out without naming them."""
    for item in items:
        if item.get_closest_marker("distributed") or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("gpu") and not HAS_GPU:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; its CPU twin runs instead"))


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


SMALL = {"max_documents": 40, "vocab_size": 512, "seq_len": 32, "val_fraction": 0.1}  # a data config of seconds


@pytest.fixture(scope="session")
def embedded(tmp_path_factory):
    """(DataConfig, PreparedData) of a small slice of the embedded corpus, prepared once per session."""
    from pretrain.config import DataConfig
    from pretrain.data.shards import prepare_data

    cfg = DataConfig(cache_dir=str(tmp_path_factory.mktemp("embedded")), **SMALL)
    return cfg, prepare_data(cfg, progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A data cache shared by a module's tests (prepared once)."""
    return tmp_path_factory.mktemp("data_cache")
