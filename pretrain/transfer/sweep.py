"""LR sweeps over widths, depths, training horizons and global batches: a plan of (width, depth, steps, batch, LR)
points, each one ordinary run.

The horizon axis (`--steps`) is optional: without it every point trains the config's train.steps. Every horizon
warms up the same share of its run, so the LR schedule has one shape along the ladder and the fitted horizon
exponent is not biased by it: a fixed optim.warmup_steps over several horizons becomes optim.warmup_fraction =
warmup_steps / train.steps, with a warning (`ladder_warmup`), unless the caller keeps the fixed steps. The plan
and the sweep's config.yaml record the rule used.

The batch axis (`--batches`, train.global_batch_size in sequences) is optional too. A horizon is a number of steps
at every batch (a larger batch trains more tokens), or with `--equal-tokens` the tokens its steps train at the
config's batch (each batch trains them in its own number of steps). Tokens per step are recorded per point.

The depth axis (`--depths`, model.n_layers) is optional as well: under model.depth_parametrization=completep the
optimum should not move with it, and the report measures whether it does.

`SWEEP_DIR/plan.json` lists the points; `SWEEP_DIR/config.yaml` is the resolved proxy config they all start
from, so a sweep stays reproducible after the source config changes. A point runs as a subprocess
`python -m pretrain train SWEEP_DIR/config.yaml <its overrides>` and leaves `points/<name>/result.json`.
Locally the points run one after another and a rerun skips finished ones; on Slurm each array task runs one
point (`slurm/sweep.sbatch` calls `pretrain sweep-point SWEEP_DIR $SLURM_ARRAY_TASK_ID`; the submission is
`pretrain.tools.slurm`'s).

A sweep grows: planned again into its directory under the same recipe (the config apart from what the points
set) with more settings on any axis, its grid becomes the union of the old and the new settings. The new
points are appended; the old ones keep their index, name and results, so array tasks already submitted still
find their point. A point is identified by its name, which spells its setting on every axis (`AXES`).
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..config import Config, load_config, parse_number
from ..errors import ConfigError, ExitCode
from ..fileio import read_json_object, write_json, write_text
from ..outputs import Kind, check_output, claim
from ..progress import progress_bar, write_line
from ..training.metrics import read_metrics

SMOOTHING = 0.1  # the "final train loss" is the mean over the last 10% of steps: one batch is too noisy


@dataclass(frozen=True)
class Axis:
    """A dimension of the grid: a point's setting on it is its Point field `field`, which overrides the config
    key `key`; the plan lists the swept settings in its field `values`."""

    field: str
    values: str
    key: str
    noun: str  # in messages: "2 widths"
    label: Callable[[Any], str]  # the setting in point names, which identify points: "w128"
    text: Callable[[Any], str] = str  # the setting in messages

    def count(self, n: int, plural: bool = False) -> str:
        """`2 widths`, `1 batch`; with `plural`, `1 batches` too (in a grid's shape)."""
        return f"{n} {self.noun}" + ("" if n == 1 and not plural else "es" if self.noun.endswith("ch") else "s")


def _lr_text(lr: float) -> str:
    """`2^-3.5` for an LR on a log2 grid of hundredths, else three significant digits."""
    exponent = math.log2(lr)
    return f"2^{round(exponent, 2):g}" if abs(exponent - round(exponent, 2)) < 1e-9 else f"{lr:.3g}"


# The global batch, in sequences, and the depth (layers). A point at the config's own batch or depth leaves it out
# of its name and overrides, so a sweep planned before these axes keeps its points' names and grows by batches or
# depths like by any other axis. The plan's field of the axis's `field` name holds the config's setting.
BATCH = Axis("batch", "batches", "train.global_batch_size", "batch", lambda batch: f"b{batch}")
DEPTH = Axis("depth", "depths", "model.n_layers", "depth", lambda depth: f"d{depth}")
IMPLICIT = (BATCH, DEPTH)
# The grid's dimensions, in the order of point names and overrides. Another axis is one more entry, with a Point
# field and a Plan list of those names.
AXES = (
    Axis("width", "widths", "model.d_model", "width", lambda width: f"w{width}"),
    DEPTH,
    Axis("steps", "steps", "train.steps", "horizon", lambda steps: f"s{steps}"),
    BATCH,
    Axis("lr", "lrs", "optim.lr", "LR", lambda lr: f"lr{lr:.4e}", _lr_text),
)
# What a point's own overrides set; the rest of the config is the sweep's recipe, shared by all its points.
POINT_KEYS = frozenset({axis.key for axis in AXES} | {"train.out_dir", "wandb.group", "wandb.name"})


@dataclass
class Point:
    index: int
    name: str
    width: int
    depth: int  # layers
    steps: int  # the steps it trains (with --equal-tokens, the horizon scaled to its batch)
    batch: int  # global batch, in sequences
    lr: float
    tokens_per_step: int  # its global batch × seq_len
    out_dir: str
    overrides: list[str]  # everything that distinguishes this run from the sweep's config.yaml


@dataclass
class Plan:
    name: str  # also the W&B group of every point
    dir: str
    config: str  # the resolved proxy config snapshot
    parametrization: str
    widths: list[int]
    depths: list[int]  # layers
    steps: list[int]  # the horizons, in steps at the config's batch
    batches: list[int]  # global batches, in sequences
    lrs: list[float]
    batch: int  # the config's global batch: the one a point's name and overrides leave out
    depth: int  # the config's depth, left out likewise
    tokens_per_step: int  # the config's global batch × seq_len
    horizon: str  # "steps": every batch trains a horizon's steps; "tokens": its tokens, the steps scaled
    warmup: str  # the warmup rule, identical at every horizon
    points: list[Point]

    @property
    def path(self) -> Path:
        return Path(self.dir) / "plan.json"

    @property
    def equal_tokens(self) -> bool:
        return self.horizon == "tokens"

    def tokens(self, steps: int, batch: int | None = None) -> int:
        """The token horizon of a point that trains `steps` steps at `batch` (default: the config's)."""
        return steps * (batch or self.batch) * (self.tokens_per_step // self.batch)

    def values(self, axis: Axis) -> list:
        """The swept settings on `axis`."""
        return getattr(self, axis.values)

    def setting(self, point: Point, axis: Axis) -> Any:
        """The point's setting on `axis`: on the horizon axis the horizon, which --equal-tokens scales to its steps."""
        if axis.field == "steps" and self.equal_tokens:
            return point.steps * point.batch // self.batch
        return getattr(point, axis.field)

    def implicit(self) -> dict[str, int]:
        """The config's own setting on each axis a point leaves out of its name at that setting, by Point field."""
        return {axis.field: getattr(self, axis.field) for axis in IMPLICIT}

    def shape(self) -> str:
        """`4 widths x 1 horizons x 8 LRs = 32 points`."""
        return " x ".join(axis.count(len(self.values(axis)), plural=True) for axis in AXES
                          if axis not in IMPLICIT or len(self.values(axis)) > 1) + f" = {len(self.points)} points"


@dataclass
class Growth:
    """What planning a sweep did to its directory: a new plan (every point new), or the plan found there with
    the points this request added (none for a restart)."""

    plan: Plan
    new_points: list[Point]
    before: Plan | None  # the plan found in the directory
    requested: dict[str, list]  # this request's settings, by Point field
    warning: str | None = None  # a fixed warmup over several horizons, and what the sweep did about it

    def changes(self) -> list[str]:
        """In words, what an existing plan gained, and what of it this request left out (the plan keeps it)."""
        if self.before is None:
            return []
        lines = []
        if self.new_points:
            added = {axis: _missing(axis, self.plan.values(axis), self.before.values(axis)) for axis in AXES}
            lines.append(f"extended by {_in_words(added)}: {len(self.new_points)} new points, "
                         f"{len(self.before.points)} kept")
        left_out = {axis: _missing(axis, self.before.values(axis), self.requested[axis.field]) for axis in AXES}
        if any(left_out.values()):
            labels = {axis: set(map(axis.label, values)) for axis, values in left_out.items()}
            outside = sum(any(axis.label(self.before.setting(p, axis)) in labels[axis] for axis in AXES)
                          for p in self.before.points)
            lines.append(f"this command leaves out {_in_words(left_out)} of the plan, which keeps their {outside} "
                         "points")
        return lines


def _missing(axis: Axis, values: list, reference: list) -> list:
    """The settings of `values` that `reference` lacks."""
    present = {axis.label(v) for v in reference}
    return [v for v in values if axis.label(v) not in present]


def _in_words(settings: dict[Axis, list]) -> str:
    """`1 width (512) and 2 LRs (2^-5, 2^-4)`, naming the axes with settings only."""
    parts = [f"{axis.count(len(values))} ({', '.join(map(axis.text, values))})"
             for axis, values in settings.items() if values]
    return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)


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


def parse_depths(text: str) -> list[int]:
    """`--depths 2,4,8`: the n_layers values."""
    return _positive_integers(text, "--depths", "2,4,8")


def parse_batches(text: str) -> list[int]:
    """`--batches 8,16,32`: global batch sizes, in sequences (train.global_batch_size)."""
    return _positive_integers(text, "--batches", "8,16,32")


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


def point_name(settings: dict[str, Any], implicit: dict[str, int]) -> str:
    """`w128-s300-lr1.5625e-02`: a point's settings (by Point field), which it is identified by; `implicit` holds the
    config's batch and depth (`Plan.implicit`), left out."""
    return "-".join(axis.label(settings[axis.field]) for axis in _spelled(settings, implicit))


def _spelled(settings: dict[str, Any], implicit: dict[str, int]) -> list[Axis]:
    """The axes a point spells out in its name, overrides and messages: all but the batch and depth at the
    config's."""
    return [axis for axis in AXES if settings[axis.field] != implicit.get(axis.field)]


def horizon_steps(steps: int, batch: int, config_batch: int, equal_tokens: bool) -> int:
    """The steps a point at `batch` trains for the horizon of `steps` steps: with `equal_tokens`, as many as train
    the tokens of `steps` steps at `config_batch`; a batch that does not divide them into whole steps is refused."""
    if not equal_tokens:
        return steps
    if steps * config_batch % batch:
        raise ConfigError(f"--equal-tokens: batch {batch} does not divide {steps} steps x batch {config_batch} = "
                          f"{steps * config_batch} sequences into whole steps; choose batches that divide it")
    return steps * config_batch // batch


def recipe_differences(before: Config, after: Config) -> dict[str, tuple[Any, Any]]:
    """The settings outside POINT_KEYS where two sweeps' configs differ: key -> (before, after)."""
    old, new = before.to_dict(), after.to_dict()
    return {f"{section}.{key}": (value, new[section][key]) for section, settings in old.items()
            for key, value in settings.items() if f"{section}.{key}" not in POINT_KEYS and new[section][key] != value}


def ladder_warmup(cfg: Config, horizons: list[int], fixed: bool = False,
                  sweep: Config | None = None) -> tuple[list[str], str | None]:
    """A fixed optim.warmup_steps over several horizons warms up a different share of each run: the override that
    sets optim.warmup_fraction = warmup_steps / train.steps of the config as given instead, and a warning that
    says so. The fixed steps are kept (the warning still given) with `fixed`; when growing a sweep that trained
    with them (`sweep`, the config.yaml in its directory); and when the fraction would leave the shortest run no
    warmup. A grown sweep's fraction is taken from its own train.steps, so it comes out as when it was planned.
    Nothing to do ([], None) for one horizon, no warmup, or a warmup_fraction already set."""
    warmup = cfg.optim.warmup_steps
    if cfg.optim.warmup_fraction is not None or warmup == 0 or len(horizons) < 2:
        return [], None
    steps = (sweep or cfg).train.steps
    fraction = warmup / steps
    shares = "..".join(f"{100 * warmup / h:.3g}%" for h in (horizons[0], horizons[-1]))
    warning = (f"warning: optim.warmup_steps={warmup} over horizons {','.join(map(str, horizons))} steps would warm "
               f"up {shares} of each run; ")
    as_fraction = f"optim.warmup_fraction={fraction:.3g} ({warmup} of train.steps={steps})"
    shortest = round(fraction * horizons[0])
    if fixed:
        return [], warning + f"keeping {warmup} steps (--fixed-warmup)"
    if sweep is not None and sweep.optim.warmup_fraction is None:
        return [], warning + (f"keeping {warmup} steps, the rule of the sweep being grown (its points trained with "
                              "it); plan a new sweep in another --out to sweep with a fraction of the run")
    # One warmup step is none: the schedule's first step already runs at (0 + 1) / 1 of the peak LR. A grown
    # sweep keeps its fraction even so: its points trained with it.
    if fraction >= 1 or sweep is None and shortest < 2:
        why = "is not below 1" if fraction >= 1 else f"would warm up {shortest} of {horizons[0]} steps, no warmup"
        return [], warning + (f"keeping {warmup} steps: {as_fraction} {why}; set optim.warmup_fraction to choose "
                              "the share of every run")
    return ([f"optim.warmup_fraction={fraction!r}"],
            warning + f"sweeping with {as_fraction} instead; pass --fixed-warmup to keep {warmup} steps")


def grow_sweep(config: str | Path, widths: list[int], lrs: list[float], out: str | Path | None = None,
               overrides: list[str] = (), steps: list[int] | None = None, fixed_warmup: bool = False,
               batches: list[int] | None = None, equal_tokens: bool = False, depths: list[int] | None = None) -> Growth:
    """Plan the grid widths × depths × horizons × batches × LRs on top of CONFIG (plus overrides): a new sweep, or
    the sweep already in the directory grown to the union of its settings and these on every axis (a restart when
    nothing is new). `steps` None = the config's train.steps only; `batches` None = the config's global batch only;
    `depths` None = the config's model.n_layers only; with `equal_tokens` a horizon is the tokens its steps train
    at the config's batch (`horizon_steps`). A fixed warmup over several horizons becomes a fraction of each run
    unless `fixed_warmup` (`ladder_warmup`). A sweep of another recipe there is refused, naming the difference.
    Every new point's config is validated here, so a bad width, depth or batch fails now rather than in the middle
    of the sweep."""
    cfg = load_config(config, overrides)
    # A sweep grows in place, so its directory is reused without --overwrite: one that holds a plan.json.
    sweep_dir = check_output(f"runs/sweep-{Path(config).stem}-{cfg.model.parametrization}" if out is None else out,
                             "--out", Kind.WORKSPACE, "sweep", [("the data cache", cfg.data.cache_dir)],
                             overwrite=True, owned=lambda folder: (folder / "plan.json").is_file())
    before = load_plan(sweep_dir) if (sweep_dir / "plan.json").exists() else None
    recorded = load_config(before.config) if before else None
    config_batch = before.batch if before else cfg.train.global_batch(1)
    implicit = before.implicit() if before else {"batch": config_batch, "depth": cfg.model.n_layers}
    requested = {"width": widths, "depth": depths or [cfg.model.n_layers], "steps": steps or [cfg.train.steps],
                 "batch": batches or [cfg.train.global_batch(1)], "lr": lrs}
    if before is not None and before.equal_tokens != equal_tokens:
        rule = "with --equal-tokens" if before.equal_tokens else "without --equal-tokens"
        raise ConfigError(f"--equal-tokens: {sweep_dir} holds a sweep planned {rule}; grow it the same way, or plan "
                          "a new sweep in another --out")
    grid = {axis.field: _union(axis, before.values(axis) if before else [], requested[axis.field]) for axis in AXES}
    warmup, warning = ladder_warmup(cfg, grid["steps"], fixed_warmup, recorded)
    if warmup:
        overrides = [*overrides, *warmup]
        cfg = load_config(config, overrides)
    if recorded is not None:
        differences = recipe_differences(recorded, cfg)
        if differences:
            named = "; ".join(f"{key} is {old!r} there, {new!r} here" for key, (old, new) in differences.items())
            raise ConfigError(f"{sweep_dir} already holds a different sweep ({named}); a sweep grows only under the "
                              "same recipe: pass --out with a new directory or delete it")
    kept = before.points if before else []
    names = {p.name for p in kept}
    new = []
    for combination in itertools.product(*grid.values()):
        settings = dict(zip(grid, combination))
        settings["steps"] = horizon_steps(settings["steps"], settings["batch"], config_batch, equal_tokens)
        if point_name(settings, implicit) in names:
            continue
        point = _point(sweep_dir, len(kept) + len(new), settings, implicit)
        try:  # the tokens per step check the batch against the micro batch
            point.tokens_per_step = load_config(config, [*overrides, *point.overrides]).tokens_per_step()
        except ConfigError as err:
            where = ", ".join(f"{axis.noun} {axis.text(settings[axis.field])}" for axis in _spelled(settings,
                                                                                                   implicit))
            raise ConfigError(f"sweep point {where}: {err}") from None
        new.append(point)
    lists = {axis.values: grid[axis.field] for axis in AXES}
    if before is None:
        plan = Plan(name=sweep_dir.name, dir=str(sweep_dir), config=str(sweep_dir / "config.yaml"),
                    parametrization=cfg.model.parametrization, **implicit,
                    tokens_per_step=cfg.tokens_per_step(), horizon="tokens" if equal_tokens else "steps",
                    warmup=cfg.optim.warmup_rule(), points=new, **lists)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_text(Path(plan.config), cfg.to_yaml())
    else:
        plan = replace(before, points=[*kept, *new], **lists)
    if new:
        write_json(plan.path, asdict(plan))  # atomic: running array tasks may read it meanwhile
    return Growth(plan, new, before, requested, warning)


def create_sweep(config: str | Path, widths: list[int], lrs: list[float], out: str | Path | None = None,
                 overrides: list[str] = (), steps: list[int] | None = None, fixed_warmup: bool = False,
                 batches: list[int] | None = None, equal_tokens: bool = False, depths: list[int] | None = None) -> Plan:
    """`grow_sweep`'s plan, for callers that do not report what changed."""
    return grow_sweep(config, widths, lrs, out, overrides, steps, fixed_warmup, batches, equal_tokens, depths).plan


def _union(axis: Axis, *lists: list) -> list:
    """The settings of `lists`, sorted, one per label: the first list's where two share one (a plan's own)."""
    by_label = {}
    for values in lists:
        for value in values:
            by_label.setdefault(axis.label(value), value)
    return sorted(by_label.values())


def _point(sweep_dir: Path, index: int, settings: dict[str, Any], implicit: dict[str, int]) -> Point:
    """The point of `settings`; its tokens_per_step (0 here) are set once its config is validated."""
    name = point_name(settings, implicit)
    out_dir = sweep_dir / "points" / name
    overrides = [*(f"{axis.key}={settings[axis.field]!r}" for axis in _spelled(settings, implicit)),
                 f"train.out_dir={out_dir}", f"wandb.group={sweep_dir.name}", f"wandb.name={name}"]
    return Point(index=index, name=name, out_dir=str(out_dir), overrides=overrides, tokens_per_step=0, **settings)


def merge_plans(plans: list[Plan]) -> tuple[Plan, dict[str, list[int]]]:
    """Sweeps of one recipe as one plan, to read their results together (not to run: each point keeps its own
    run directory). A point in several of them is read from the first listed that has its result, else from the
    first; also returned: for each such point's name, the positions in `plans` of those holding it, the one
    read first."""
    if len(plans) == 1:
        return plans[0], {}
    holders: dict[str, list[tuple[int, Point]]] = {}
    for position, plan in enumerate(plans):
        for point in plan.points:
            holders.setdefault(point.name, []).append((position, point))
    points, overlaps = [], {}
    for name, held in holders.items():
        position, point = next((h for h in held if is_done(h[1])), held[0])
        points.append(replace(point, index=len(points)))
        if len(held) > 1:
            overlaps[name] = [position, *(other for other, _ in held if other != position)]
    lists = {axis.values: _union(axis, *(plan.values(axis) for plan in plans)) for axis in AXES}
    return replace(plans[0], name="+".join(plan.name for plan in plans), points=points, **lists), overlaps


def load_plan(sweep_dir: str | Path) -> Plan:
    """The plan in `sweep_dir`; a damaged plan.json (not JSON, a field missing, unknown or of the wrong type, a
    point out of place) is one ConfigError naming the file and what is wrong."""
    path = Path(sweep_dir) / "plan.json"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: no plan.json; create the sweep with `pretrain sweep CONFIG ...`")
    remedy = "; plan.json is written by `pretrain sweep`: restore it, or plan the sweep again in a new directory"
    raw = read_json_object(path, ConfigError, remedy)
    if isinstance(raw, dict) and not {"batches", "batch", "horizon"} & set(raw):  # planned before the batch axis
        batch = load_config(raw.get("config")).train.global_batch(1)
        raw = _with_settings(raw, {"batches": [batch], "batch": batch, "horizon": "steps"},
                             {"batch": batch, "tokens_per_step": raw.get("tokens_per_step")})
    if isinstance(raw, dict) and not {"depths", "depth"} & set(raw):  # planned before the depth axis
        depth = load_config(raw.get("config")).model.n_layers
        raw = _with_settings(raw, {"depths": [depth], "depth": depth}, {"depth": depth})
    plan = _from_json(Plan, raw, f"{path}: ", remedy)
    for position, point in enumerate(plan.points):
        if point.index != position:
            raise ConfigError(f"{path}: point {position} has index {point.index}{remedy}")
    return plan


def _with_settings(raw: dict, plan_fields: dict, point_fields: dict) -> dict:
    """An older plan's JSON with the fields of an axis added since, the config's setting on it everywhere: the plan's
    `plan_fields` and every point's `point_fields` (a batch axis' horizon in steps)."""
    points = raw.get("points")
    if isinstance(points, list):
        points = [{**p, **point_fields} if isinstance(p, dict) else p for p in points]
    return {**raw, **plan_fields, "points": points}


def _from_json(cls: type[Plan] | type[Point], raw: object, where: str, remedy: str) -> Plan | Point:
    """A Plan or Point from its JSON object, every field present and of its declared type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}expected a JSON object, got {type(raw).__name__}{remedy}")
    declared = {f.name: f.type for f in fields(cls)}  # annotations as text: "list[int]"
    missing, unknown = [name for name in declared if name not in raw], sorted(set(raw) - set(declared))
    if missing or unknown:
        wrong = [f"{', '.join(names)} {what}" for names, what in ((missing, "missing"), (unknown, "unknown")) if names]
        raise ConfigError(f"{where}{'; '.join(wrong)}{remedy}")
    values = {}
    for name, hint in declared.items():
        value = raw[name]
        if hint == "list[Point]" and isinstance(value, list):
            value = [_from_json(Point, p, f"{where}point {i}: ", remedy) for i, p in enumerate(value)]
        elif not _of_type(value, hint):
            raise ConfigError(f"{where}{name} must be of type {hint}, got {json.dumps(value)[:60]}{remedy}")
        values[name] = value
    return cls(**values)


def _of_type(value: object, hint: str) -> bool:
    """Whether a JSON value is of the declared type `hint` (int, float, str or a list of one), bools apart."""
    if hint.startswith("list["):
        return isinstance(value, list) and all(_of_type(v, hint[5:-1]) for v in value)
    if hint == "float":
        return type(value) in (int, float) and math.isfinite(value)
    return type(value).__name__ == hint


RESULT_STATUSES = ("ok", "diverged", "failed")


def result_path(point: Point) -> Path:
    return Path(point.out_dir) / "result.json"


def read_result(point: Point) -> dict | None:
    """The point's result.json, None before it has one; a damaged one is a ConfigError naming the file."""
    path = result_path(point)
    if not path.exists():
        return None
    remedy = "; delete it, and the point runs again with the rest of the sweep"
    result = read_json_object(path, ConfigError, remedy)
    if result.get("status") not in RESULT_STATUSES:
        raise ConfigError(f"{path}: status must be one of {', '.join(RESULT_STATUSES)}, got "
                          f"{json.dumps(result.get('status'))[:60]}{remedy}")
    for key in ("train_loss", "eval_loss"):
        if key not in result or not (result[key] is None or _of_type(result[key], "float")):
            got = json.dumps(result[key])[:60] if key in result else "nothing"
            raise ConfigError(f"{path}: {key} must be a finite number or null, got {got}{remedy}")
    return result


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
    claim(out_dir, "train")  # the point's own directory, where its train.log goes before the run begins
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
    bar = progress_bar(todo, desc=f"sweep {plan.name}", unit="point", initial=len(plan.points) - len(todo),
                       total=len(plan.points), dynamic_ncols=True)
    for point in bar:
        bar.set_postfix_str(f"width {point.width}, depth {point.depth}, {point.steps} steps, batch {point.batch}, "
                            f"lr {point.lr:.3g}")
        result = run_point(plan, point.index)
        results.append(result)
        if result["status"] == "failed":
            write_line(f"point {point.name} failed (exit {result['returncode']}); see its train.log")
    return results
