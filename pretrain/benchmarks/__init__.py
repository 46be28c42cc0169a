"""Benchmarks, run by hand (`python -m pretrain.benchmarks.<name>`): they print figures; CI times nothing.

Here: what several of them use to measure.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ..bundled import configs_dir

CONFIGS = configs_dir()  # the bundled configs: the benchmarks measure at the shapes users train


def measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall-clock seconds, CPU seconds (all threads of this process) and the result of `fn()`."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu, wall = usage.ru_utime + usage.ru_stime, time.perf_counter()
    result = fn()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter() - wall, usage.ru_utime + usage.ru_stime - cpu, result


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a new interpreter, as a CLI call would run it: runs in one long-lived process slow
    down one after another (the Rust encoder's allocations fragment the heap), and a process's peak memory
    is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def figure(x: float | None, fmt: str) -> str:
    """`x` in format `fmt`, or "-" where nothing was measured."""
    return "-" if x is None else format(x, fmt)


def resident_bytes(pid: int | str = "self") -> int:
    """The resident memory of process `pid` now."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
