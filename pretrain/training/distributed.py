"""Devices and ranks: which device a process trains on, and helpers that print or wait on ranks.

A plain `pretrain train` is a world of one; torchrun sets more. The process group itself is DeepSpeed's
(`engine.init_distributed`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from ..errors import UserError

T = TypeVar("T")


def pick_device(preference: str) -> torch.device:
    """`train.device`: this process's GPU (LOCAL_RANK) when CUDA is wanted and present, else the CPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


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


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and hand its result, or the user error it raised, to every rank (so that a
    problem rank 0 finds, say in a file all ranks would read, stops every rank with the same message)."""
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except UserError as err:
            error = err
    if world_size() > 1:
        box = [(result, error)]
        dist.broadcast_object_list(box, src=0)
        result, error = box[0]
    if error is not None:
        raise error
    return result


def gather(obj: T) -> list[T]:
    """`obj` from every rank, in rank order (a list of one outside a process group)."""
    if world_size() == 1:
        return [obj]
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
