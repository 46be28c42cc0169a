"""Atomic, self-describing training checkpoints, their retention, and where to resume from.

    OUT/checkpoints/step_00000100/
        ds/            model + optimizer states (the engine's files, one set per rank, any ZeRO stage)
        universal/     the same in DeepSpeed's universal format, written on the first resume at another
                       world size (one file per parameter and state, readable by any world size)
        rng/rank0.pt   torch/python RNG state of each rank
        trainer.json   step, world size, global batch (with the step, the data position)
        config.yaml    the resolved run config
        tokenizer.json

Everything is written under a staging name (`.tmp-step_...`) and renamed at the end, so a directory named
`step_*` is always complete; a crash mid-save leaves only the staging directory, removed on the next start.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path

import torch

from ..config import load_config
from ..errors import UserError
from ..fileio import STAGING_PREFIX, publish, remove, staging_path
from . import distributed as dist
from .engine import STATE_DIR, Engine, consolidated_state_dict

_PREFIX = "step_"


class CheckpointError(UserError, ValueError):
    """A path that is not a usable checkpoint; the message names it."""


def step_dir_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def check_checkpoint(path: Path) -> Path:
    """Validate that `path` is a complete checkpoint directory; raise CheckpointError naming what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if path.name.startswith(STAGING_PREFIX):
        raise CheckpointError(f"{path}: an incomplete checkpoint (its save never finished)")
    for name in ("trainer.json", "config.yaml", STATE_DIR):
        if not (path / name).exists():
            raise CheckpointError(f"{path}: not a complete checkpoint ({name} is missing)")
    return path


def resolve_checkpoint(path: Path) -> Path:
    """`path` itself if it is a checkpoint, else the newest complete one in a run dir, its `checkpoints/`,
    or `checkpoints/latest`; raises CheckpointError naming what is wrong."""
    path = Path(path)
    if not (path / "trainer.json").exists():
        base = path.parent if path.name == "latest" else path
        for root in (base, base / "checkpoints"):
            found = latest_checkpoint(root)
            if found is not None:
                return found
    return check_checkpoint(path)


def load_consolidated_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The full fp32 model state dict of a checkpoint of any ZeRO stage and world size, on the CPU."""
    path = check_checkpoint(path)
    stage = load_config(path / "config.yaml").deepspeed.zero_stage
    try:
        state = consolidated_state_dict(path, stage)
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path / STATE_DIR}: cannot read the ZeRO-{stage} weights ({err})") from None
    return {name: tensor.float() for name, tensor in state.items()}


def read_trainer_state(path: Path) -> dict:
    try:
        return json.loads((path / "trainer.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path / 'trainer.json'}: unreadable ({err})") from None


class Checkpointer:
    def __init__(self, root: Path, keep: int, files: dict[str, Path]):
        """`files` are copied into every checkpoint under the given names (config, tokenizer)."""
        self.root, self.keep, self.files = Path(root), keep, files

    def clean_partial(self) -> None:
        """Remove what crashed saves left behind (every rank calls it)."""
        if dist.is_main() and self.root.is_dir():
            for partial in self.root.glob(f"{STAGING_PREFIX}*"):
                remove(partial)
        dist.barrier()

    def to_resume(self, resume: str) -> Path | None:
        """The checkpoint `train.resume` names: "auto" = the newest complete one (None if there is none yet),
        "never" = None, else that path."""
        if resume == "never":
            return None
        if resume == "auto":
            return latest_checkpoint(self.root)
        return check_checkpoint(Path(resume))

    def save(self, engine: Engine, step: int, state: dict) -> Path:
        """Write a checkpoint of `step` (every rank calls it); `state` goes into trainer.json."""
        final = self.root / step_dir_name(step)
        staged = staging_path(final)
        if dist.is_main():
            remove(staged)
            (staged / "rng").mkdir(parents=True)
        dist.barrier()
        engine.save(staged)
        torch.save(_rng_state(), staged / "rng" / f"rank{dist.rank()}.pt")
        dist.barrier()
        if dist.is_main():
            for name, source in self.files.items():
                shutil.copy(source, staged / name)
            (staged / "trainer.json").write_text(json.dumps({"step": step, **state}, indent=2))
            publish(staged, final)  # replaces the same step saved again (a stop request right after a save)
            for old in list_checkpoints(self.root)[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return final

    def load(self, engine: Engine, path: Path) -> dict:
        """Restore model, optimizer and this rank's RNG; returns the trainer state (step, ...)."""
        path = check_checkpoint(path)
        state = read_trainer_state(path)
        try:
            engine.load(path, saved_world_size=state["world_size"])
        except FileNotFoundError as err:
            raise CheckpointError(f"{path}: {err}") from None
        rng_file = path / "rng" / f"rank{dist.rank()}.pt"
        if rng_file.exists():  # absent when resuming at a larger world size: keep the fresh seed
            _set_rng_state(torch.load(rng_file, weights_only=True))
        return state


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
