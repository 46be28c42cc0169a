"""Atomic, self-describing training checkpoints on top of DeepSpeed's per-rank files.

    OUT/checkpoints/step_00000100/
        ds/            DeepSpeed model + optimizer states (one set of files per rank, any ZeRO stage)
        universal/     the same in DeepSpeed's universal format, written on the first resume at another
                       world size (one file per parameter and state, readable by any world size)
        rng/rank0.pt   torch/python RNG state of each rank
        trainer.json   step, world size, global batch (with the step, the data position)
        config.yaml    the resolved run config
        tokenizer.json

Everything is written into `.tmp-step_...` and renamed at the end, so a directory named `step_*` is
always complete; a crash mid-save leaves only a temp dir, removed on the next start.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import random
import shutil
from pathlib import Path

import torch

from . import distributed as dist
from .config import UserError, load_config

DS_TAG = "ds"
UNIVERSAL_TAG = "universal"
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
    if path.name.startswith(".tmp-"):
        raise CheckpointError(f"{path}: an incomplete checkpoint (its save never finished)")
    for name in ("trainer.json", "config.yaml", DS_TAG):
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
    """The full fp32 model state dict of a checkpoint of any ZeRO stage and world size, on the CPU.

    Stage 0 keeps the whole module in one file. Stages 1-3 spread the fp32 master weights over the ranks'
    optimizer files, which DeepSpeed's zero_to_fp32 gathers (it reads its own files with full pickle)."""
    path = check_checkpoint(path)
    stage = load_config(path / "config.yaml").deepspeed.zero_stage
    try:
        if stage == 0:
            module_file = path / DS_TAG / "mp_rank_00_model_states.pt"
            state = torch.load(module_file, map_location="cpu", weights_only=True)["module"]
        else:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            with contextlib.redirect_stdout(io.StringIO()):  # it narrates each file it reads
                state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=DS_TAG)
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path / DS_TAG}: cannot read the ZeRO-{stage} weights ({err})") from None
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
        if dist.is_main() and self.root.is_dir():
            for partial in self.root.glob(".tmp-*"):
                shutil.rmtree(partial, ignore_errors=True)
        dist.barrier()

    def save(self, engine, step: int, state: dict) -> Path:
        final = self.root / step_dir_name(step)
        tmp = self.root / f".tmp-{final.name}"
        if dist.is_main():
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "rng").mkdir(parents=True)
        dist.barrier()
        engine.save_checkpoint(str(tmp), tag=DS_TAG, save_latest=False)
        torch.save(_rng_state(), tmp / "rng" / f"rank{dist.rank()}.pt")
        dist.barrier()
        if dist.is_main():
            for name, source in self.files.items():
                shutil.copy(source, tmp / name)
            (tmp / "trainer.json").write_text(json.dumps({"step": step, **state}, indent=2))
            if final.exists():  # the same step saved again (e.g. a stop request right after a save)
                shutil.rmtree(final)
            tmp.rename(final)
            for old in list_checkpoints(self.root)[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return final

    def load(self, engine, path: Path) -> dict:
        """Restore model, optimizer and this rank's RNG; returns the trainer state (step, ...).

        ZeRO partitions the optimizer states (and under stage 3 the weights) by rank, so at another world
        size the checkpoint is read through DeepSpeed's universal format instead. Either way the fp32 master
        weights and the Adam moments and step come back whole; the data position is the step itself."""
        path = check_checkpoint(path)
        state = read_trainer_state(path)
        universal = state["world_size"] != dist.world_size() and _has_zero_partitions(path)
        tag = _convert_to_universal(path) if universal else DS_TAG
        # The μP recipe comes from the config, not the checkpoint: DeepSpeed's ZeRO-3 universal load copies
        # the first group's settings (its lr_scale included) onto every group.
        optimizer = engine.basic_optimizer  # the client AdamW, inside any ZeRO wrapper
        settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        engine._config.load_universal_checkpoint = universal  # DeepSpeed reads it only while loading
        try:
            load_path, _ = engine.load_checkpoint(str(path), tag=tag, load_lr_scheduler_states=False)
        finally:
            engine._config.load_universal_checkpoint = False
        if load_path is None:
            raise CheckpointError(f"{path}: DeepSpeed could not load {path / tag}")
        for group, saved in zip(optimizer.param_groups, settings, strict=True):
            group.update(saved)
        if universal:
            _unshare_step_counts(optimizer)
        rng_file = path / "rng" / f"rank{dist.rank()}.pt"
        if rng_file.exists():  # absent when resuming at a larger world size: keep the fresh seed
            _set_rng_state(torch.load(rng_file, weights_only=True))
        return state


def _unshare_step_counts(optimizer: torch.optim.Optimizer) -> None:
    """DeepSpeed's ZeRO-3 universal load hands every sub-group the same `step` tensor, which AdamW increments in
    place: each group would see the count run ahead by the groups stepped before it, skewing Adam's bias
    correction. One tensor per state restores the uninterrupted run's updates."""
    for state in optimizer.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def _has_zero_partitions(path: Path) -> bool:
    """Whether the optimizer states were split by rank (ZeRO 1-3, and bf16 at stage 0); plain fp32 without
    ZeRO keeps one whole copy that loads at any world size."""
    return any((path / DS_TAG).glob("*optim_states.pt"))


def _convert_to_universal(path: Path) -> str:
    """Write `path/universal` once (rank 0, atomically) with DeepSpeed's ds_to_universal; returns its tag."""
    target = path / UNIVERSAL_TAG
    if dist.is_main() and not target.exists():
        from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

        tmp = path / f".tmp-{UNIVERSAL_TAG}"
        shutil.rmtree(tmp, ignore_errors=True)
        size = sum(f.stat().st_size for f in (path / DS_TAG).iterdir())
        # Worker processes pay a few seconds of imports each: only worth it for big checkpoints.
        workers = min(8, os.cpu_count() or 1) if size > 2**30 else 1
        args = argparse.Namespace(input_folder=str(path / DS_TAG), output_folder=str(tmp), keep_temp_folder=False,
                                  num_extract_workers=workers, num_merge_workers=max(1, workers // 4),
                                  strict=True, inject_missing_state=True)  # our saves carry no universal info
        dist.print0(f"converting {path / DS_TAG} to a universal checkpoint (resuming at another world size)")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ds_to_universal(args)
        tmp.rename(target)
    dist.barrier()
    return UNIVERSAL_TAG


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
