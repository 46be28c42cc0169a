"""What a training step reports: metric loggers (`log(metrics, step)`, `close()`; only rank 0 builds real ones),
and the figures that need more than the loss: MFU and peak memory. What a run reports at its end: `RunSummary`."""

from __future__ import annotations

import json
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch

from ..errors import DataError, ExitCode
from ..fileio import write_json, write_text

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
    """The records of a metrics.jsonl, in order ([] without one). A last line cut short, as a crash in the middle
    of a write leaves it, is left out with a note on stderr; any other line that is not a record (a JSON object
    with an integer step and a numeric loss) is a DataError naming the file and the line."""
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err})") from None
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
            # JsonlLogger ends each record with a newline: a last line without one, not JSON, is a torn write
            if number == len(lines) and not text.endswith("\n"):
                print(f"note: {path}: ignoring its last line, cut short (a crash while it was written): "
                      f"{line[:60]!r}", file=sys.stderr)
                break
        if not (isinstance(record, dict) and type(record.get("step")) is int
                and type(record.get("loss")) in (int, float)):
            raise DataError(f"{path}: line {number} is not a metrics record (a JSON object with an integer step "
                            f"and a numeric loss): {line[:60]!r}")
        records.append(record)
    return records


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


@dataclass(frozen=True)
class RunSummary:
    """How a `pretrain train` run ended: printed at its end and written to OUT/summary.json, the same fields."""

    ended: str  # "finished", "stopped" (on a stop request, checkpointed: resumable) or "diverged"
    exit_code: int
    step: int  # optimizer steps the model has taken, resumed runs included
    steps: int  # train.steps
    steps_this_run: int  # taken by this process: fewer than `step` after a resume
    tokens: int  # trained on through `step`
    wall_s: float  # this process, setup included
    tokens_per_s: float | None  # mean over this run's training steps (evals and checkpoints excluded)
    mfu: float | None  # at that mean; None where the device's peak FLOP/s is unknown (CPU)
    last_eval_step: int | None  # evals before a resume included
    last_eval_loss: float | None
    best_eval_step: int | None
    best_eval_loss: float | None
    unigram_entropy: float  # of the corpus: the loss of the best model that ignores context
    checkpoint: str | None  # the newest complete one
    next: str  # the command to run next
    world_size: int

    @classmethod
    def of(cls, ended: str, evals: dict[int, float], **fields) -> RunSummary:
        """The summary of a run that `ended` so, with `evals` (eval loss by step) and the other fields."""
        best, last = min(evals, key=evals.get, default=None), max(evals, default=None)
        return cls(ended=ended, exit_code=int(ExitCode.DIVERGED if ended == "diverged" else ExitCode.OK),
                   last_eval_step=last, last_eval_loss=evals.get(last),
                   best_eval_step=best, best_eval_loss=evals.get(best), **fields)

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))

    def lines(self, path: Path) -> list[str]:
        """The console report, naming `path`, where the summary is written."""
        resumed = f" from step {self.step - self.steps_this_run}" if self.step > self.steps_this_run else ""
        if self.tokens_per_s is None:
            speed = "no step taken in this run"
        else:
            utilization = (f"MFU {self.mfu:.1%}" if self.mfu is not None
                           else "MFU unknown (set train.peak_flops, the device's peak FLOP/s)")
            speed = f"{self.tokens_per_s:,.0f} tokens/s (mean over the steps), {utilization}"
        evals = "none yet"
        if self.last_eval_step is not None:
            evals = (f"best {self.best_eval_loss:.4f} nats at step {self.best_eval_step}, last "
                     f"{self.last_eval_loss:.4f} nats at step {self.last_eval_step}")
        lines = [f"run {self.ended} at step {self.step}/{self.steps}: {self.tokens:,} tokens trained; this run: "
                 f"{self.steps_this_run} steps{resumed}, {duration(self.wall_s)} wall (setup included)",
                 f"  throughput  {speed}",
                 f"  eval loss   {evals}",
                 f"  checkpoint  {self.checkpoint or 'none written'}",
                 f"  summary     {path}"]
        if self.last_eval_loss is not None:  # the line scripts and the README read
            lines.append(f"eval loss {self.last_eval_loss:.4f} nats; unigram entropy of the corpus "
                         f"{self.unigram_entropy:.4f} nats")
        return [*lines, f"next: {self.next}"]


def duration(seconds: float) -> str:
    """`1h 02m 03s`, `1m 25s` or `8.3s`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
