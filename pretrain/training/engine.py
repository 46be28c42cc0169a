"""The DeepSpeed adapter: with `deepspeed_compat`, the only code that touches DeepSpeed.

The trainer and the checkpointer see an `Engine` with a small surface: forward, `backward` (one micro batch,
accumulating), `step` (the optimizer step at the accumulation boundary, returning the grad norm), `save` and
`load` (at the same or another world size). Around it: joining the process group, consolidating a checkpoint's
weights from any ZeRO stage, and recomputing blocks in the backward (activation checkpointing).

This module calls DeepSpeed's public API (`initialize`, `init_distributed`, the engine's `backward`, `step`,
`save_checkpoint`, `load_checkpoint`, ...) directly; whatever else of DeepSpeed it needs (the engine's checkpoint
engine and config, ds_to_universal, zero_to_fp32, the classes in its checkpoints) it reaches through
`deepspeed_compat`, which holds those parts, checks the installed DeepSpeed is a version they were checked
against, and reads every checkpoint file DeepSpeed reads for us as data, never code (`load_as_data`). Saving
digests every file (`fileio.checksum`) in a thread as soon as it is written, while DeepSpeed writes the next one,
for the checkpoint's checksums.

The client optimizer (AdamW, or our Lion) keeps its μP param groups: DeepSpeed gets no optimizer or scheduler
block, so it never rewrites a group's LR, and the engine is checked to step those very group dicts.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
import torch.utils.checkpoint

from ..config import Config
from ..errors import CheckpointError
from ..fileio import atomic_output, checksum, write_json
from . import deepspeed_compat as compat
from . import distributed as dist

STATE_DIR = "ds"  # a checkpoint's DeepSpeed files (one set per rank, any ZeRO stage)
UNIVERSAL_DIR = "universal"  # the same, converted to DeepSpeed's universal format (any world size)
CHECKSUMS = "checksums.json"  # {relative path: {"digest": ..., "bytes": ...}} of every file beside it
_checksums = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checksum")  # checksum() fans out itself


def init_distributed(device: torch.device) -> None:
    """Join (or, outside torchrun, create) the process group DeepSpeed will use: nccl on GPUs, gloo on CPUs."""
    if torch.distributed.is_initialized():
        return
    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed picks its accelerator when first imported
    if "RANK" not in os.environ:  # a single process started directly
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT") or str(dist.free_port()))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(op_build_dir()))
    compat.watch_op_builds()
    import deepspeed

    if device.type == "cpu":
        compat.skip_cpu_comm_op()
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)


def op_build_dir() -> Path:
    """Where DeepSpeed's ops built just in time go (the CPU communication op; fused optimizers on GPUs): torch's
    extension cache, one folder per DeepSpeed and torch version. Torch's own folder names neither, so a build
    left by another DeepSpeed version would be loaded as it is and fail (TORCH_EXTENSIONS_DIR overrides)."""
    from torch.utils.cpp_extension import get_default_build_root

    versions = f"deepspeed-{importlib.metadata.version('deepspeed')}-torch-{torch.__version__}"
    return Path(get_default_build_root()) / versions


def precision(cfg: Config, device: torch.device) -> str:
    if cfg.deepspeed.precision != "auto":
        return cfg.deepspeed.precision
    return "bf16" if device.type == "cuda" else "fp32"


def deepspeed_config(cfg: Config, world_size: int, device: torch.device) -> dict:
    return {
        "train_micro_batch_size_per_gpu": cfg.train.micro_batch_size,
        "gradient_accumulation_steps": cfg.train.accumulation(world_size),
        "gradient_clipping": cfg.optim.grad_clip,
        "bf16": {"enabled": precision(cfg, device) == "bf16"},
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage, **_buckets(cfg), **_offload(cfg)},
        "zero_allow_untested_optimizer": True,  # a plain torch optimizer (AdamW or Lion), on purpose
        "zero_force_ds_cpu_optimizer": False,  # keep it (and its μP groups) when offloading too
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }


def build_engine(cfg: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer, world_size: int,
                 device: torch.device) -> Engine:
    import deepspeed

    if cfg.train.activation_checkpointing:
        recompute_blocks_in_backward(model)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                      config=deepspeed_config(cfg, world_size, device))
    if [id(g) for g in engine.optimizer.param_groups] != [id(g) for g in optimizer.param_groups]:
        # `set_lr` writes each group's LR into the client's dicts: copied or merged groups would silently train
        # at the wrong LR.
        raise RuntimeError("DeepSpeed replaced the μP param groups of the client optimizer")
    return Engine(engine, optimizer)


def recompute_blocks_in_backward(model: torch.nn.Module) -> None:
    """Activation checkpointing: each of `model.blocks` keeps only its input and recomputes its inside in the
    backward. The blocks stay where they are, so parameter names (and checkpoints) do not change."""
    for block in model.blocks:
        block.forward = functools.partial(_checkpointed, block.forward)


def _checkpointed(forward, *args: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():  # eval: nothing to save for a backward
        return forward(*args)
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False)


class Engine:
    """A DeepSpeed engine behind the calls of one training step and of a checkpoint."""

    def __init__(self, engine, optimizer: torch.optim.Optimizer):
        self._engine, self.optimizer = engine, optimizer

    @property
    def module(self) -> torch.nn.Module:
        return self._engine.module

    @property
    def deepspeed_optimizer(self):
        """DeepSpeed's wrapper around the client optimizer (its ZeRO partitions and buffers), for measuring."""
        return self._engine.optimizer

    def __call__(self, *args, **kwargs):
        return self._engine(*args, **kwargs)

    def train(self) -> None:
        self._engine.train()

    def eval(self) -> None:
        self._engine.eval()

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate one micro batch's gradients. Before the accumulation boundary DeepSpeed's `step` only
        counts the micro batch; at the boundary the update waits for `step`."""
        self._engine.backward(loss)
        if not self._engine.is_gradient_accumulation_boundary():
            self._engine.step()

    def step(self) -> float:
        """The optimizer step at the accumulation boundary; returns the global grad norm before clipping."""
        unrecorded = self._plain_grad_norm()
        self._engine.step()
        norm = self._engine.get_global_grad_norm()
        return float(norm if norm is not None else unrecorded)

    def _plain_grad_norm(self) -> float:
        """DeepSpeed records the grad norm except for plain fp32 without ZeRO; there the grads are the module's
        own, already averaged over ranks at the boundary."""
        if self._engine.zero_optimization_stage() or self._engine.bfloat16_enabled():
            return float("nan")
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()

    def save(self, checkpoint: Path, checksums: bool = True) -> dict[str, Future]:
        """This rank's model and optimizer states into `checkpoint/ds` (every rank calls it). Returns the
        checksums of the files this rank wrote, by path relative to `checkpoint`, as they are computed
        (`checksums=False`: none, to measure what they cost)."""
        digests: dict[str, Future] = {}

        def digest(path: Path) -> None:
            digests[path.relative_to(checkpoint).as_posix()] = _checksums.submit(checksum, path)

        with compat.saving(self._engine, digest) if checksums else contextlib.nullcontext():
            self._engine.save_checkpoint(str(checkpoint), tag=STATE_DIR, save_latest=False)
        return digests

    def load(self, checkpoint: Path, universal: bool) -> None:
        """Restore model and optimizer states from `checkpoint/ds`, or from `checkpoint/universal` (written by
        `convert_to_universal`) to resume at another world size (every rank calls it).

        Either way the fp32 master weights and the Adam moments and step come back whole. The μP group settings
        always come from the config: DeepSpeed's universal load copies the first group's onto every group."""
        tag = UNIVERSAL_DIR if universal else STATE_DIR
        settings = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        with compat.loading(self._engine, universal):
            load_path, _ = self._engine.load_checkpoint(str(checkpoint), tag=tag, load_lr_scheduler_states=False)
        if load_path is None:
            raise CheckpointError(f"{checkpoint / tag}: DeepSpeed found no checkpoint to load there")
        for group, saved in zip(self.optimizer.param_groups, settings, strict=True):
            group.update(saved)
        if universal:
            _unshare_step_counts(self.optimizer)

    def destroy(self) -> None:
        self._engine.destroy()


def _buckets(cfg: Config) -> dict:
    """Communication buckets sized to the model (d_model², as the Hugging Face integration's "auto" does).
    DeepSpeed's default of 5e8 elements is allocated up front by ZeRO-3: 1 GB in bf16 per GPU (2 GB in fp32),
    whatever the model's size."""
    d = cfg.model.d_model
    return {"reduce_bucket_size": d * d, "stage3_prefetch_bucket_size": int(0.9 * d * d),
            "stage3_param_persistence_threshold": 10 * d}  # gather all but the gains and biases on demand


def _offload(cfg: Config) -> dict:
    if not cfg.deepspeed.offload_optimizer:
        return {}
    return {"offload_optimizer": {"device": "cpu", "pin_memory": torch.cuda.is_available()}}


def _unshare_step_counts(optimizer: torch.optim.Optimizer) -> None:
    """DeepSpeed's ZeRO-3 universal load hands every sub-group the same `step` tensor, which AdamW increments in
    place: each group would see the count run ahead by the groups stepped before it, skewing Adam's bias
    correction. One tensor per state restores the uninterrupted run's updates."""
    for state in optimizer.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def has_zero_partitions(checkpoint: Path) -> bool:
    """Whether the optimizer states were split by rank (ZeRO 1-3, and bf16 at stage 0); plain fp32 without
    ZeRO keeps one whole copy that loads at any world size."""
    return any((checkpoint / STATE_DIR).glob("*optim_states.pt"))


def convert_to_universal(checkpoint: Path) -> bool:
    """Write `checkpoint/universal` once (rank 0, published whole, with its own checksums) with DeepSpeed's
    ds_to_universal: ZeRO partitions the optimizer states (and under stage 3 the weights) by rank, so at another
    world size they are read through this format. Every rank calls it; True on the rank that converted it now
    (rather than finding it from an earlier resume)."""
    target = checkpoint / UNIVERSAL_DIR
    converted = dist.is_main() and not target.exists()
    if converted:
        size = sum(f.stat().st_size for f in (checkpoint / STATE_DIR).iterdir())
        # Worker processes pay a few seconds of imports each: only worth it for big checkpoints.
        workers = min(8, os.cpu_count() or 1) if size > 2**30 else 1
        dist.print0(f"converting {checkpoint / STATE_DIR} to a universal checkpoint (resuming at another world "
                    "size)")
        with atomic_output(target, directory=True) as staged:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                compat.ds_to_universal(checkpoint / STATE_DIR, staged, workers)
            files = sorted(p for p in staged.rglob("*") if p.is_file())
            write_json(staged / CHECKSUMS, {p.relative_to(staged).as_posix(): checksum(p) for p in files})
    dist.barrier()
    return converted


def consolidated_state_dict(checkpoint: Path, zero_stage: int) -> dict[str, torch.Tensor]:
    """The full model state dict of a checkpoint of any ZeRO stage and world size, on the CPU, as saved.

    Stage 0 keeps the whole module in one file. Stages 1-3 spread the fp32 master weights over the ranks'
    optimizer files, which DeepSpeed's zero_to_fp32 gathers."""
    if zero_stage == 0:
        return compat.load_as_data(checkpoint / STATE_DIR / "mp_rank_00_model_states.pt",
                                   map_location="cpu")["module"]
    with contextlib.redirect_stdout(io.StringIO()):  # it narrates each file it reads
        return compat.fp32_state_dict_from_zero_checkpoint(checkpoint, tag=STATE_DIR)
