"""LR sweeps over widths and training horizons: a plan of (width, steps, LR) points, each one ordinary run.

The horizon axis (`--steps`) is optional: without it every point trains the config's train.steps. The warmup
follows the config's rule at every horizon: a fixed number of steps (optim.warmup_steps) or a fixed fraction
of the run (optim.warmup_fraction); the plan records which.

`SWEEP_DIR/plan.json` lists the points; `SWEEP_DIR/config.yaml` is the resolved proxy config they all start
from, so a sweep stays reproducible after the source config changes. A point runs as a subprocess
`python -m pretrain train SWEEP_DIR/config.yaml <its overrides>` and leaves `points/<name>/result.json`.
Locally the points run one after another and a rerun skips finished ones; on Slurm each array task runs one
point (`slurm/sweep.sbatch` calls `pretrain sweep-point SWEEP_DIR $SLURM_ARRAY_TASK_ID`; the submission is
`pretrain.tools.slurm`'s).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from ..config import load_config, parse_number
from ..errors import ConfigError, ExitCode
from ..fileio import write_json, write_text
from ..training.metrics import read_metrics

SMOOTHING = 0.1  # the "final train loss" is the mean over the last 10% of steps: one batch is too noisy


@dataclass
class Point:
    index: int
    name: str
    width: int
    steps: int
    lr: float
    out_dir: str
    overrides: list[str]  # everything that distinguishes this run from the sweep's config.yaml


@dataclass
class Plan:
    name: str  # also the W&B group of every point
    dir: str
    config: str  # the resolved proxy config snapshot
    parametrization: str
    widths: list[int]
    steps: list[int]  # the horizons
    lrs: list[float]
    tokens_per_step: int  # global batch × seq_len, the same at every point
    warmup: str  # the warmup rule, identical at every horizon
    points: list[Point]

    @property
    def path(self) -> Path:
        return Path(self.dir) / "plan.json"

    def tokens(self, steps: int) -> int:
        """The token horizon of a point that trains `steps` steps."""
        return steps * self.tokens_per_step


def parse_widths(text: str) -> list[int]:
    """`--widths 128,256,512`: the d_model values."""
    return _positive_integers(text, "--widths", "128,256,512")


def parse_steps(text: str) -> list[int]:
    """`--steps 1250,2500,5000`: the horizons, in optimizer steps."""
    return _positive_integers(text, "--steps", "1250,2500,5000")


def _positive_integers(text: str, option: str, example: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected integers such as {example}, got {text!r}") from None
    if not values or min(values) <= 0:
        raise ConfigError(f"{option}: expected positive integers, got {text!r}")
    return sorted(set(values))


def parse_lrs(text: str) -> list[float]:
    """`LO:HI:STEP` is a log2 grid (`2^-10:2^-4:0.5` = 2^-10, 2^-9.5, ..., 2^-4); else a comma list."""
    try:
        if ":" not in text:
            lrs = [parse_number(x) for x in text.split(",") if x.strip()]
        else:
            lo, hi, step = (parse_number(x) for x in text.split(":"))
            first, last = math.log2(lo), math.log2(hi)
            count = (last - first) / step if step > 0 else -1
            if count < 0 or abs(count - round(count)) > 1e-6:
                raise ValueError
            lrs = [2 ** (first + k * step) for k in range(round(count) + 1)]
    except ValueError:
        raise ConfigError(f"--lrs: expected LO:HI:STEP (a log2 grid such as 2^-10:2^-4:0.5, STEP > 0 in "
                          f"log2 units dividing the range) or a comma list of LRs, got {text!r}") from None
    if not lrs or min(lrs) <= 0:
        raise ConfigError(f"--lrs: LRs must be positive, got {text!r}")
    return sorted(set(lrs))


def point_name(width: int, steps: int, lr: float) -> str:
    return f"w{width}-s{steps}-lr{lr:.4e}"


def create_sweep(config: str | Path, widths: list[int], lrs: list[float], out: str | Path | None = None,
                 overrides: list[str] = (), steps: list[int] | None = None) -> Plan:
    """Write the plan of the grid widths × horizons × LRs on top of CONFIG (plus overrides), or find the same
    plan already there (a restart). `steps` None = the config's train.steps only. Every point's config is
    validated here, so a bad width fails now rather than in the middle of the sweep."""
    cfg = load_config(config, overrides)
    horizons = steps or [cfg.train.steps]
    sweep_dir = Path(out or f"runs/sweep-{Path(config).stem}-{cfg.model.parametrization}").resolve()
    snapshot = sweep_dir / "config.yaml"
    points = []
    for width in widths:
        for horizon in horizons:
            for lr in lrs:
                name = point_name(width, horizon, lr)
                out_dir = sweep_dir / "points" / name
                point_overrides = [f"model.d_model={width}", f"train.steps={horizon}", f"optim.lr={lr!r}",
                                   f"train.out_dir={out_dir}", f"wandb.group={sweep_dir.name}", f"wandb.name={name}"]
                try:
                    load_config(config, [*overrides, *point_overrides])
                except ConfigError as err:
                    raise ConfigError(f"sweep point width {width}, {horizon} steps: {err}") from None
                points.append(Point(len(points), name, width, horizon, lr, str(out_dir), point_overrides))
    plan = Plan(sweep_dir.name, str(sweep_dir), str(snapshot), cfg.model.parametrization, widths, horizons, lrs,
                cfg.tokens_per_step(), cfg.optim.warmup_rule(), points)
    if plan.path.exists():
        if load_plan(sweep_dir) != plan or snapshot.read_text() != cfg.to_yaml():
            raise ConfigError(f"{sweep_dir} already holds a different sweep; pass --out with a new directory "
                              f"or delete it")
        return plan
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text(snapshot, cfg.to_yaml())
    write_json(plan.path, asdict(plan))
    return plan


def load_plan(sweep_dir: str | Path) -> Plan:
    path = Path(sweep_dir) / "plan.json"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: no plan.json; create the sweep with `pretrain sweep CONFIG ...`")
    raw = json.loads(path.read_text())
    return Plan(**{**raw, "points": [Point(**p) for p in raw["points"]]})


def result_path(point: Point) -> Path:
    return Path(point.out_dir) / "result.json"


def read_result(point: Point) -> dict | None:
    path = result_path(point)
    return json.loads(path.read_text()) if path.exists() else None


def is_done(point: Point) -> bool:
    """Finished points are skipped on rerun; a failed one (a crash, not the LR's fault) is tried again."""
    result = read_result(point)
    return result is not None and result["status"] in ("ok", "diverged")


def run_point(plan: Plan, index: int) -> dict:
    """Train one point in its own process, so a diverged or crashed run cannot take the sweep down."""
    if not 0 <= index < len(plan.points):
        raise ConfigError(f"point index {index} is out of range: the sweep has {len(plan.points)} points")
    point = plan.points[index]
    out_dir = Path(point.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (out_dir / "train.log").open("a") as log:
        command = [sys.executable, "-m", "pretrain", "train", plan.config, *point.overrides]
        returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    records = read_metrics(out_dir / "metrics.jsonl")
    finished = bool(records) and records[-1]["step"] >= point.steps
    # exit 0 without all steps: stopped by a signal or a STOP file, so not a result yet
    status = ("ok" if returncode == ExitCode.OK and finished
              else "diverged" if returncode == ExitCode.DIVERGED else "failed")
    tail = records[-max(1, round(SMOOTHING * len(records))):]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    result = {
        "index": index, "name": point.name, "width": point.width, "lr": point.lr, "status": status,
        "train_loss": sum(r["loss"] for r in tail) / len(tail) if status == "ok" and tail else None,
        "eval_loss": evals[-1] if status == "ok" and evals else None,
        "steps": records[-1]["step"] if records else 0,
        "seconds": round(time.perf_counter() - started, 1),
        "returncode": returncode,
    }
    write_json(result_path(point), result)
    return result


def run_local(plan: Plan) -> list[dict]:
    """Run every unfinished point in order, with a progress bar; returns the new results."""
    todo = [p for p in plan.points if not is_done(p)]
    results = []
    bar = tqdm(todo, desc=f"sweep {plan.name}", unit="point", initial=len(plan.points) - len(todo),
               total=len(plan.points), dynamic_ncols=True)
    for point in bar:
        bar.set_postfix_str(f"width {point.width}, {point.steps} steps, lr {point.lr:.3g}")
        result = run_point(plan, point.index)
        results.append(result)
        if result["status"] == "failed":
            tqdm.write(f"point {point.name} failed (exit {result['returncode']}); see its train.log")
    return results
