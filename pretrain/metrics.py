"""Metric loggers: each has `log(metrics, step)` and `close()`. Only rank 0 builds real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol


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
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
