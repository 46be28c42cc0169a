"""What a training step reports: metric loggers (`log(metrics, step)`, `close()`; only rank 0 builds real ones),
and the figures that need more than the loss: MFU and peak memory."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Protocol

import torch

from ..fileio import write_text

# Dense bf16 tensor-core peaks (FLOP/s) by a substring of torch.cuda.get_device_name(); first match wins.
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}


class MetricsLogger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class JsonlLogger:
    """One JSON object per line in `metrics.jsonl`, flushed each step so a crash loses nothing."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = path
        truncate_after(path, resume_step)
        self.file = path.open("a")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class MultiLogger:
    def __init__(self, *loggers: MetricsLogger):
        self.loggers = loggers

    def log(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


class NullLogger:
    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_after(path: Path, step: int) -> None:
    """Drop records past `step`: a run resumed from a checkpoint at `step` logs those steps again."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r["step"] <= step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def peak_flops(device: torch.device, configured: float | None) -> float | None:
    """Peak FLOP/s of one device for MFU: `train.peak_flops` if set, else looked up by GPU name (None on CPU)."""
    if configured:
        return configured
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def mfu(flops_per_token: float, tokens_per_s: float, world_size: int, peak: float) -> float:
    """Model FLOPs utilization: the model's FLOP rate per device over the device's peak."""
    return flops_per_token * tokens_per_s / world_size / peak


def peak_memory_gib(device: torch.device) -> float:
    """This process's peak memory in GiB: what the allocator handed out on a GPU, the resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
