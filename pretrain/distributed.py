"""Process-group set-up and rank helpers. A plain `pretrain train` is a world of one; torchrun sets more."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist


def pick_device(preference: str) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    # DeepSpeed picks its accelerator at import time; on a CPU run it must be the CPU one.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return torch.device("cpu")


def init_distributed(device: torch.device) -> None:
    """Join (or, outside torchrun, create) the process group DeepSpeed will use."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:  # a single process started directly
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT") or str(free_port()))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def print0(*args, **kwargs) -> None:
    if is_main():
        print(*args, **kwargs, flush=True)
