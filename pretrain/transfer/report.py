"""`pretrain report`: a sweep's plan and results read into a report: the loss grid, the optimum LR per width,
depth and horizon, their drift across widths (and depths) with a verdict each, the horizon fit, and warnings about
what is missing or uncertain. The statistics are `fit`'s; `report_text` prints a report and `report_plot` draws it.

With several depths the horizon fit is that of the deepest proxies, the ones `apply_lr` transfers from (as it
transfers from the widest); the drift across widths is fitted at every depth, one slope for all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..config import load_config
from ..errors import ConfigError
from .fit import (
    AGREEMENT_SIGMAS,
    MIN_DOF,
    Drift,
    HorizonFit,
    Interval,
    Optimum,
    SweepPoint,
    depth_drift,
    horizon_fit,
    width_drift,
    width_optimum,
)
from .sweep import Plan, load_plan, merge_plans, read_result, recipe_differences


@dataclass
class SweepReport:
    name: str
    parametrization: str
    metric: str  # the loss the optima minimize
    warmup: str  # the warmup rule, the same at every horizon
    tokens_per_step: int  # at the config's batch
    steps: list[int]  # the horizons
    grid: list[SweepPoint]  # one per point of the plan
    optima: list[Optimum]
    drift: float | None  # log2(lr*) per doubling of width, shared by the horizons
    drift_interval: Interval | None  # its interval (fit.CONFIDENCE); None where `drift` is
    drift_se: float | None  # its standard error; None without a residual
    drift_sigma: float | None  # the drift fit's residual σ: how far one optimum scatters (log2)
    spread: float | None  # max - min of log2(lr*) across widths, at the worst horizon
    verdict: str  # "transfers", "drifts" or "undetermined", from the drift's interval
    verdict_reason: str  # why; for "undetermined", also what would decide it
    horizon_fit: HorizonFit | None  # with two or more horizons
    warnings: list[str] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # global batches, in sequences; one unless swept
    depths: list[int] = field(default_factory=list)  # layers; one unless swept
    depth_drift: Drift | None = None  # log2(lr*) per doubling of depth and its verdict, with several depths
    drift_leverage: float | None = None  # the drift's variance in units of drift_sigma²; None without a fit

    @property
    def deepest(self) -> int | None:
        """The deepest proxies' depth: that of the horizon fit and of what `apply_lr` transfers."""
        return max(self.depths, default=None)

    @property
    def width_drift(self) -> Drift:
        return Drift(self.drift_interval, self.drift_se, self.drift_sigma, self.spread, self.verdict,
                     self.verdict_reason, self.drift_leverage)

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["horizon_fit"] is not None:
            del data["horizon_fit"]["line"]  # its arrays; β, its interval and σ are there as numbers
        return data

    def optimum(self, width: int, steps: int, batch: int | None = None, depth: int | None = None) -> Optimum | None:
        """The optimum of `width` at `steps` steps, at `batch` and `depth` (any, when None: the one batch and depth
        of most sweeps)."""
        return next((o for o in self.optima if o.width == width and o.steps == steps and batch in (None, o.batch)
                     and depth in (None, o.depth)), None)

    def tokens(self, steps: int) -> int:
        """The token horizon of `steps` steps, as in the sweep's plan."""
        return steps * self.tokens_per_step


def build_report(plan: Plan) -> SweepReport:
    """The report of the sweep's points as their result files say."""
    results = [read_result(p) for p in plan.points]
    metric = "eval_loss" if any(r and r["eval_loss"] is not None for r in results) else "train_loss"
    grid = []
    for point, result in zip(plan.points, results):
        status = result["status"] if result else "missing"
        loss = result[metric] if result and status == "ok" else None
        grid.append(SweepPoint(point.width, point.steps, point.lr, status, loss, point.batch, point.depth))
    return grid_report(plan, grid, metric)


def grid_report(plan: Plan, grid: list[SweepPoint], metric: str = "eval_loss") -> SweepReport:
    """The report of `grid`, the outcome of each of the plan's points (in `metric`), wherever they come from."""
    warnings, optima = [], []
    missing = [p for p in grid if not p.has_result]
    depths = len(plan.depths) > 1
    if missing:
        warnings.append(f"{len(missing)} of {len(grid)} points have no result (not run yet or failed): "
                        + ", ".join(f"w{p.width}" + (f"/d{p.depth}" if depths else "") + f"/s{p.steps}"
                                    + (f"/b{p.batch}" if len(plan.batches) > 1 else "") + f"/lr {p.lr:.3g}"
                                    for p in missing[:6])
                        + (" ..." if len(missing) > 6 else ""))
    edges = (min(plan.lrs), max(plan.lrs))
    runs = {(p.width, p.depth or plan.depth, p.steps, p.batch or plan.batch) for p in grid}
    for width, depth, steps, batch in sorted(runs):
        where = (f"width {width}" + (f", depth {depth}" if depths else "")
                 + (f", {steps} steps" if len(plan.steps) > 1 else "")
                 + (f", batch {batch}" if len(plan.batches) > 1 else ""))
        column = [p for p in grid if (p.width, p.depth or plan.depth, p.steps, p.batch or plan.batch)
                  == (width, depth, steps, batch)]
        optimum = width_optimum(column, plan.tokens(steps, batch), edges)
        if optimum is None:
            warnings.append(f"{where}: no finished point, no optimum")
            continue
        optimum = replace(optimum, batch=batch, tokens_per_step=plan.tokens(1, batch), depth=depth)  # one step's tokens
        optima.append(optimum)
        if optimum.on_edge:
            side = "smallest" if optimum.best_lr == edges[0] else "largest"
            warnings.append(f"{where}: the optimum is the {side} LR of the grid ({optimum.best_lr:.3g}); "
                            f"the true optimum may lie outside it: extend --lrs")
    drift = width_drift(optima)
    fit = horizon_fit([o for o in optima if o.depth == max(plan.depths)])  # None with one horizon: no width has two
    if fit is not None:
        for width in fit.disagreeing:
            warnings.append(f"width {width}: β = {fit.width_betas[width]:.2f} disagrees with the shared β = "
                            f"{fit.beta:.2f} (more than {AGREEMENT_SIGMAS:g} standard errors); μP predicts one β "
                            "at every width")
        if not fit.determined:
            warnings.append(f"β = {fit.beta:.2f} is undetermined: the horizon fit has {fit.dof} residual dof and an "
                            f"interval needs {MIN_DOF}; sweep another horizon (a dof per width) before extrapolating")
    return SweepReport(plan.name, plan.parametrization, metric, plan.warmup, plan.tokens_per_step, plan.steps,
                       grid, optima, drift.slope, drift.interval, drift.slope_se, drift.sigma, drift.spread,
                       drift.verdict, drift.reason, fit, warnings, plan.batches, plan.depths,
                       depth_drift(optima) if depths else None, drift.leverage)


def extrapolation(report: SweepReport, tokens: int, width: int | None = None,
                  tokens_per_step: int | None = None) -> dict | None:
    """The fitted optimum of `width` (default: the widest proxy) at `tokens` and `tokens_per_step` (default: the
    config's batch) (None without a horizon fit): log2 LR, and how far that reaches past the longest swept horizon
    (ratio) and moves the LR from the optimum there (log2), both at the config's batch."""
    fit = report.horizon_fit
    if fit is None:
        return None
    width = max(fit.intercepts) if width is None else width
    longest = report.tokens(max(report.steps))
    at_longest = next((o for o in report.optima if o.width == width and o.tokens == longest
                       and o.tokens_per_step == report.tokens_per_step and o.depth == report.deepest), None)
    log2_lr = fit.log2_lr(width, tokens, tokens_per_step or report.tokens_per_step)
    log2_lr_at_longest = math.log2(at_longest.lr) if at_longest else fit.log2_lr(width, longest, report.tokens_per_step)
    return {"width": width, "tokens": tokens, "longest_tokens": longest, "ratio": tokens / longest,
            "log2_lr": log2_lr, "lr": 2**log2_lr, "log2_lr_at_longest": log2_lr_at_longest,
            "correction": log2_lr - log2_lr_at_longest}


def report_sweeps(sweep_dirs: list[str | Path]) -> list[tuple[Plan, SweepReport]]:
    """A report per recipe, with the plan it was built from, in the order given: the points of sweeps of one recipe (see
    `sweep.recipe_differences`) are merged into one report, one fit over all of them. Sweeps whose recipes
    differ in the parametrization alone are reported side by side (μP beside SP); any other difference is
    refused, naming it, since a fit over unlike runs would mean nothing."""
    plans = [load_plan(d) for d in sweep_dirs]
    first = load_config(plans[0].config)
    recipes: dict[str, list[int]] = {}  # parametrization -> positions in sweep_dirs
    for position, plan in enumerate(plans):
        differences = recipe_differences(first, load_config(plan.config))
        differences.pop("model.parametrization", None)
        if differences:
            mine, theirs = sweep_dirs[0], sweep_dirs[position]
            named = "; ".join(f"{key} is {a!r} in {mine}, {b!r} in {theirs}" for key, (a, b) in differences.items())
            raise ConfigError(f"cannot merge sweeps {mine} and {theirs}: {named}; sweeps merge only under one recipe "
                              "(those that differ in model.parametrization alone are reported side by side)")
        recipes.setdefault(plan.parametrization, []).append(position)
    reports = []
    for positions in recipes.values():
        plan, overlaps = merge_plans([plans[i] for i in positions])
        report = build_report(plan)
        if overlaps:
            dirs = [sweep_dirs[i] for i in positions]
            read = [f"{name} from {dirs[used]} (also in {', '.join(str(dirs[i]) for i in others)})"
                    for name, (used, *others) in overlaps.items()]
            shown = ", ".join(read[:3]) + (" ..." if len(read) > 3 else "")
            report.warnings.append(f"{len(read)} points are in more than one sweep; each is read from the first "
                                   f"listed that has its result: {shown}")
        reports.append((plan, report))
    return reports
