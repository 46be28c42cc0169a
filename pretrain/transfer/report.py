"""`pretrain report`: a sweep's plan and results read into a report: the loss grid, the optimum LR per width
and horizon, their drift across widths and a verdict, the horizon fit, and warnings about what is missing or
uncertain. The statistics are `fit`'s; `report_text` prints a report and `report_plot` draws it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .fit import AGREEMENT_SIGMAS, HorizonFit, Optimum, SweepPoint, horizon_fit, verdict, width_drift, width_optimum
from .sweep import Plan, load_plan, read_result


@dataclass
class SweepReport:
    name: str
    parametrization: str
    metric: str  # the loss the optima minimize
    warmup: str  # the warmup rule, the same at every horizon
    tokens_per_step: int
    steps: list[int]  # the horizons
    grid: list[SweepPoint]  # one per point of the plan
    optima: list[Optimum]
    drift: float | None  # log2(lr*) per doubling of width, shared by the horizons
    spread: float | None  # max - min of log2(lr*) across widths, at the worst horizon
    verdict: str
    horizon_fit: HorizonFit | None  # with two or more horizons
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def optimum(self, width: int, steps: int) -> Optimum | None:
        return next((o for o in self.optima if o.width == width and o.steps == steps), None)

    def tokens(self, steps: int) -> int:
        """The token horizon of `steps` steps, as in the sweep's plan."""
        return steps * self.tokens_per_step


def build_report(plan: Plan) -> SweepReport:
    results = [read_result(p) for p in plan.points]
    metric = "eval_loss" if any(r and r["eval_loss"] is not None for r in results) else "train_loss"
    grid = []
    for point, result in zip(plan.points, results):
        status = result["status"] if result else "missing"
        loss = result[metric] if result and status == "ok" else None
        grid.append(SweepPoint(point.width, point.steps, point.lr, status, loss))
    warnings, optima = [], []
    missing = [p for p in grid if not p.has_result]
    if missing:
        warnings.append(f"{len(missing)} of {len(grid)} points have no result (not run yet or failed): "
                        + ", ".join(f"w{p.width}/s{p.steps}/lr {p.lr:.3g}" for p in missing[:6])
                        + (" ..." if len(missing) > 6 else ""))
    edges = (min(plan.lrs), max(plan.lrs))
    for width in plan.widths:
        for steps in plan.steps:
            where = f"width {width}" + (f", {steps} steps" if len(plan.steps) > 1 else "")
            column = [p for p in grid if p.width == width and p.steps == steps]
            optimum = width_optimum(column, plan.tokens(steps), edges)
            if optimum is None:
                warnings.append(f"{where}: no finished point, no optimum")
                continue
            optima.append(optimum)
            if optimum.on_edge:
                side = "smallest" if optimum.best_lr == edges[0] else "largest"
                warnings.append(f"{where}: the optimum is the {side} LR of the grid ({optimum.best_lr:.3g}); "
                                f"the true optimum may lie outside it: extend --lrs")
    drift, spread = width_drift(optima)
    fit = horizon_fit(optima)  # None with one horizon: no width has two
    if fit is not None:
        for width in fit.disagreeing:
            warnings.append(f"width {width}: β = {fit.width_betas[width]:.2f} disagrees with the shared β = "
                            f"{fit.beta:.2f} (more than {AGREEMENT_SIGMAS:g} standard errors); μP predicts one β "
                            "at every width")
        if not fit.determined:
            se = "no standard error (too few optima)" if fit.beta_se is None else f"standard error {fit.beta_se:.2f}"
            warnings.append(f"β = {fit.beta:.2f} is undetermined: {se}, more than half of β; sweep more or "
                            "farther-apart horizons before extrapolating")
    return SweepReport(plan.name, plan.parametrization, metric, plan.warmup, plan.tokens_per_step, plan.steps,
                       grid, optima, drift, spread, verdict(drift), fit, warnings)


def extrapolation(report: SweepReport, tokens: int, width: int | None = None) -> dict | None:
    """The fitted optimum of `width` (default: the widest proxy) at `tokens` (None without a horizon fit): log2
    LR, and how far that reaches past the longest swept horizon (ratio) and moves the LR from the optimum
    there (log2)."""
    fit = report.horizon_fit
    if fit is None:
        return None
    width = max(fit.intercepts) if width is None else width
    longest = report.tokens(max(report.steps))
    at_longest = report.optimum(width, max(report.steps))
    log2_lr = fit.log2_lr(width, tokens)
    log2_lr_at_longest = math.log2(at_longest.lr) if at_longest else fit.log2_lr(width, longest)
    return {"width": width, "tokens": tokens, "longest_tokens": longest, "ratio": tokens / longest,
            "log2_lr": log2_lr, "lr": 2**log2_lr, "log2_lr_at_longest": log2_lr_at_longest,
            "correction": log2_lr - log2_lr_at_longest}


def report_sweeps(sweep_dirs: list[str | Path]) -> list[SweepReport]:
    return [build_report(load_plan(d)) for d in sweep_dirs]
