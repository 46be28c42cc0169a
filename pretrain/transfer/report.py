"""`pretrain report`: the optimum LR per width and horizon of a sweep, how it moves across widths and token
horizons, a verdict and plots.

Per (width, horizon), the optimum is the vertex of a least-squares parabola in eval loss against log2(LR),
fitted to the points within ±1 log2 of it: the loss is close to quadratic in log2(LR) there (further out, the
high-LR side steepens towards divergence). The window starts on the best grid point and moves to the grid point
nearest the vertex until it stays, so one lucky run next to a flat minimum does not drag the optimum along. On
a 0.5-log2 grid the window holds 5 points, which averages out run-to-run noise; on a 1-log2 grid it is the
parabola through the best point and its two neighbours. Diverged points count as +inf loss and stay out of the
fit; a window cut by the grid's edge or by a diverged neighbour is one-sided, and the best grid point stands.

Two straight-line fits summarise the optima, each with one slope shared by every group and an intercept per
group (`shared_slope`):
- across widths (a group per horizon): the drift, log2(lr*) per doubling of width; μP makes it ~0.
- across horizons (a group per width, with two or more horizons): log2(lr*) = a_width − β·log2(tokens), the
  optimum falling as a power of the token horizon. μP says nothing about β, but predicts the same β at every
  width: a width whose own slope is more than two standard errors from the shared one is a warning. Optima on
  the grid's edge stay out of both fits (they only bound the optimum).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .sweep import Plan, load_plan, read_result

# |drift| ≤ 0.2 log2 per doubling reads as "transfers". Extrapolated from a 128-wide proxy to an 8192-wide
# model (6 doublings) that misplaces the LR by at most 1.2 log2 (2.3×), inside the flat bottom of the
# paper's loss-vs-LR curves; across an 8× proxy sweep it is 0.6 log2, about one step of the usual 0.5-log2
# grid, i.e. what picking neighbouring grid points can produce. SP with Adam drifts by about -1 per doubling
# (hidden-layer updates grow with width), five times the tolerance.
DRIFT_TOLERANCE = 0.2
FIT_HALF_WIDTH = 1.0  # log2 units: the fit window around the optimum
AGREEMENT_SIGMAS = 2.0  # a width's own β this many standard errors from the shared β is a warning


@dataclass
class Optimum:
    width: int
    steps: int
    tokens: int
    best_lr: float  # the best grid LR
    best_loss: float
    lr: float  # the fitted optimum (the best grid LR where no fit is possible)
    fitted: bool
    on_edge: bool  # the best grid LR is the smallest or largest of the grid


@dataclass
class SlopeFit:
    """y = intercept[group] + slope·x by least squares, one slope for all groups."""

    slope: float
    slope_se: float | None  # None: too few points for a residual (every group fitted exactly)
    sigma: float | None  # the residual standard deviation, in log2 units
    dof: int
    intercepts: dict[int, float]
    group_slopes: dict[int, float]  # each group's own least-squares slope
    group_slope_se: dict[int, float | None]  # its standard error under the shared residual sigma


@dataclass
class HorizonFit:
    """log2(lr*) = intercept[width] − β·log2(tokens)."""

    beta: float
    beta_se: float | None
    sigma: float | None
    dof: int
    intercepts: dict[int, float]  # by width
    width_betas: dict[int, float]
    width_beta_se: dict[int, float | None]
    disagreeing: list[int]  # widths whose own β is more than AGREEMENT_SIGMAS standard errors from β

    @property
    def determined(self) -> bool:
        """Whether β is resolved: a standard error at most half of β."""
        return self.beta_se is not None and self.beta_se <= abs(self.beta) / 2

    def log2_lr(self, width: int, tokens: float) -> float:
        return self.intercepts[width] - self.beta * math.log2(tokens)


@dataclass
class SweepReport:
    name: str
    parametrization: str
    metric: str  # the loss the optima minimize
    warmup: str  # the warmup rule, the same at every horizon
    tokens_per_step: int
    steps: list[int]  # the horizons
    grid: list[dict]  # one row per point: width, steps, lr, status, loss
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


def fit_optimum(lrs: list[float], losses: list[float]) -> tuple[float, int, bool]:
    """(log2 of the optimum LR, index of the best grid point, whether a parabola was fitted).
    `lrs` ascending; `losses` may hold inf (diverged), at least one must be finite."""
    x, y = np.log2(lrs), np.asarray(losses, dtype=float)
    best = int(np.argmin(y))
    optimum, center = None, best
    for _ in range(len(x)):  # re-centre on the grid point nearest the vertex until the window stays put
        vertex = _window_vertex(x, y, center)
        if vertex is None:
            break
        optimum, nearest = vertex, int(np.argmin(np.abs(x - vertex)))
        if nearest == center:
            break
        center = nearest
    return (float(x[best]), best, False) if optimum is None else (optimum, best, True)


def _window_vertex(x: np.ndarray, y: np.ndarray, center: int) -> float | None:
    """The vertex of the parabola fitted to the finite points within FIT_HALF_WIDTH of x[center]; None when
    the window is one-sided (the grid's edge or a diverged neighbour) or the points curve the wrong way."""
    if center in (0, len(x) - 1) or not np.isfinite(y[center - 1:center + 2]).all():
        return None
    window = np.isfinite(y) & (np.abs(x - x[center]) <= FIT_HALF_WIDTH + 1e-9)
    a, b, _ = np.polyfit(x[window], y[window], 2)
    return float(-b / (2 * a)) if a > 0 else None


def shared_slope(groups: dict[int, list[tuple[float, float]]]) -> SlopeFit | None:
    """Least squares of y = intercept[group] + slope·x over every group's (x, y) points; None when no group
    has two distinct x. The slope's standard error comes from the residuals (n − groups − 1 degrees of
    freedom); each group's own slope gets its standard error from the same residual sigma."""
    groups = {g: pts for g, pts in groups.items() if len({x for x, _ in pts}) >= 2}
    if not groups:
        return None
    centred = {g: (np.array([x for x, _ in pts]), np.array([y for _, y in pts])) for g, pts in groups.items()}
    sxx = {g: float(((x - x.mean()) ** 2).sum()) for g, (x, y) in centred.items()}
    sxy = {g: float(((x - x.mean()) * (y - y.mean())).sum()) for g, (x, y) in centred.items()}
    slope = sum(sxy.values()) / sum(sxx.values())
    intercepts = {g: float(y.mean() - slope * x.mean()) for g, (x, y) in centred.items()}
    rss = sum(float(((y - intercepts[g] - slope * x) ** 2).sum()) for g, (x, y) in centred.items())
    dof = sum(len(x) for x, _ in centred.values()) - len(centred) - 1
    sigma = math.sqrt(rss / dof) if dof > 0 else None
    return SlopeFit(
        slope=slope, slope_se=sigma / math.sqrt(sum(sxx.values())) if sigma is not None else None, sigma=sigma,
        dof=dof, intercepts=intercepts, group_slopes={g: sxy[g] / sxx[g] for g in centred},
        group_slope_se={g: sigma / math.sqrt(sxx[g]) if sigma is not None else None for g in centred})


def horizon_fit(optima: list[Optimum]) -> HorizonFit | None:
    """The shared power law of the optimum in the token horizon (see the module docstring)."""
    groups: dict[int, list[tuple[float, float]]] = {}
    for o in optima:
        if not o.on_edge:
            groups.setdefault(o.width, []).append((math.log2(o.tokens), math.log2(o.lr)))
    fit = shared_slope(groups)
    if fit is None:
        return None
    se = fit.group_slope_se
    disagreeing = [w for w, s in fit.group_slopes.items()
                   if se[w] is not None and abs(s - fit.slope) > AGREEMENT_SIGMAS * se[w]]
    return HorizonFit(beta=-fit.slope, beta_se=fit.slope_se, sigma=fit.sigma, dof=fit.dof,
                      intercepts=fit.intercepts, width_betas={w: -s for w, s in fit.group_slopes.items()},
                      width_beta_se=se, disagreeing=disagreeing)


def verdict(drift: float | None) -> str:
    if drift is None:
        return "undecided: fewer than two widths have an optimum"
    if abs(drift) <= DRIFT_TOLERANCE:
        return "transfers"
    return f"drifts by {drift:+.2f} log2 per doubling"


def build_report(plan: Plan) -> SweepReport:
    results = [read_result(p) for p in plan.points]
    metric = "eval_loss" if any(r and r["eval_loss"] is not None for r in results) else "train_loss"
    grid, warnings, optima = [], [], []
    for point, result in zip(plan.points, results):
        status = result["status"] if result else "missing"
        loss = result[metric] if result and status == "ok" else None
        grid.append({"width": point.width, "steps": point.steps, "lr": point.lr, "status": status, "loss": loss})
    missing = [g for g in grid if g["status"] in ("missing", "failed")]
    if missing:
        warnings.append(f"{len(missing)} of {len(grid)} points have no result (not run yet or failed): "
                        + ", ".join(f"w{g['width']}/s{g['steps']}/lr {g['lr']:.3g}" for g in missing[:6])
                        + (" ..." if len(missing) > 6 else ""))
    for width in plan.widths:
        for steps in plan.steps:
            rows = sorted((g for g in grid if g["width"] == width and g["steps"] == steps
                           and g["status"] in ("ok", "diverged")), key=lambda g: g["lr"])
            where = f"width {width}" + (f", {steps} steps" if len(plan.steps) > 1 else "")
            if not any(g["loss"] is not None for g in rows):
                warnings.append(f"{where}: no finished point, no optimum")
                continue
            lrs = [g["lr"] for g in rows]
            log2_lr, best, fitted = fit_optimum(lrs, [math.inf if g["loss"] is None else g["loss"] for g in rows])
            on_edge = lrs[best] in (min(plan.lrs), max(plan.lrs))
            optima.append(Optimum(width, steps, plan.tokens(steps), lrs[best], rows[best]["loss"], 2**log2_lr,
                                  fitted, on_edge))
            if on_edge:
                side = "smallest" if lrs[best] == min(plan.lrs) else "largest"
                warnings.append(f"{where}: the optimum is the {side} LR of the grid ({lrs[best]:.3g}); "
                                f"the true optimum may lie outside it: extend --lrs")
    by_horizon: dict[int, list[tuple[float, float]]] = {}
    for o in optima:
        if not o.on_edge:
            by_horizon.setdefault(o.steps, []).append((math.log2(o.width), math.log2(o.lr)))
    across_widths = shared_slope(by_horizon)
    drift = across_widths.slope if across_widths else None
    spread = max((max(y for _, y in pts) - min(y for _, y in pts) for pts in by_horizon.values() if len(pts) > 1),
                 default=None)
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


def format_report(report: SweepReport, target_tokens: int | None = None) -> str:
    """The loss grid (rows LR, columns width and horizon; the best per column starred), the optima, the drift
    across widths and its verdict, the horizon fit, and (with `target_tokens`) the extrapolation to a target."""
    columns = sorted({(g["width"], g["steps"]) for g in report.grid})
    several = len(report.steps) > 1
    label = {c: f"w{c[0]}/s{c[1]}" if several else str(c[0]) for c in columns}
    width = max(10, *(len(t) + 2 for t in label.values()))
    cells = {(g["width"], g["steps"], g["lr"]): g for g in report.grid}
    best = {(o.width, o.steps, o.best_lr) for o in report.optima}
    metric = report.metric.replace("_", " ")
    lines = [f"sweep {report.name} ({report.parametrization}): {metric} by LR (rows) and "
             f"{'width/steps' if several else 'width'} (columns); warmup {report.warmup}",
             f"{'log2 lr':>8}{'lr':>10}" + "".join(f"{label[c]:>{width}}" for c in columns)]
    for lr in sorted({g["lr"] for g in report.grid}):
        row = f"{math.log2(lr):>8.2f}{lr:>10.3g}"
        for c in columns:
            g = cells.get((*c, lr))
            text = "" if g is None else f"{g['loss']:.3f}" if g["loss"] is not None else g["status"]
            row += f"{text + ('*' if (*c, lr) in best else ' '):>{width}}"
        lines.append(row)
    lines += ["", f"{'width':>8}{'steps':>8}{'tokens':>10}{'best log2 lr':>14}{'loss':>8}{'fitted log2 lr*':>17}"
                  f"{'lr*':>10}"]
    for o in report.optima:
        fitted = f"{math.log2(o.lr):>17.2f}" if o.fitted else f"{'(no fit)':>17}"
        lines.append(f"{o.width:>8}{o.steps:>8}{o.tokens:>10.3g}{math.log2(o.best_lr):>14.2f}{o.best_loss:>8.3f}"
                     f"{fitted}{o.lr:>10.3g}")
    widths = sorted({o.width for o in report.optima}) or [1]
    if report.drift is not None:
        lines.append(f"drift of log2 lr*: {report.drift:+.2f} per width doubling (optima spread "
                     f"{report.spread or 0:.2f} log2 over {max(widths) // min(widths)}x width"
                     f"{', at the worst horizon' if several else ''})")
    lines.append(f"verdict: {report.verdict} (threshold: |drift| <= {DRIFT_TOLERANCE} log2 per doubling)")
    fit = report.horizon_fit
    if fit is not None:
        se = f" ± {fit.beta_se:.2f}" if fit.beta_se is not None else " (no standard error)"
        sigma = f"residual σ {fit.sigma:.2f} log2, " if fit.sigma is not None else ""
        lines += ["", f"horizon fit: log2 lr* = a(width) − β·log2(tokens); β = {fit.beta:.3f}{se} "
                      f"({sigma}{fit.dof} dof); {'determined' if fit.determined else 'undetermined'}",
                  f"{'width':>8}{'own β':>8}{'± se':>8}{'a':>9}{'agrees':>8}"]
        for w, beta in fit.width_betas.items():
            own_se = fit.width_beta_se[w]
            lines.append(f"{w:>8}{beta:>8.3f}{own_se if own_se is not None else float('nan'):>8.3f}"
                         f"{fit.intercepts[w]:>9.2f}{'no' if w in fit.disagreeing else 'yes':>8}")
    if target_tokens is not None:
        lines.append(describe_extrapolation(report, target_tokens))
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def describe_extrapolation(report: SweepReport, tokens: int) -> str:
    e = extrapolation(report, tokens)
    if e is None:
        return f"target: {tokens:.3g} tokens; no horizon fit to extrapolate with (sweep two or more --steps)"
    return (f"target: {tokens:.3g} tokens, {e['ratio']:.3g}x the longest swept horizon ({e['longest_tokens']:.3g}): "
            f"width {e['width']}'s fitted optimum 2^{e['log2_lr']:.2f} = {e['lr']:.3g}, "
            f"{e['correction']:+.2f} log2 from its optimum at the longest horizon (2^{e['log2_lr_at_longest']:.2f})")


def plot_reports(reports: list[SweepReport], path: Path, target_tokens: int | None = None) -> None:
    """Per sweep, a row: loss against log2(LR), one curve per width and horizon, the fitted optima marked;
    with several horizons, also log2(lr*) against tokens per width with the fitted lines (and the
    extrapolation to `target_tokens`, marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2 if any(r.horizon_fit for r in reports) else 1
    fig, axes = plt.subplots(len(reports), cols, figsize=(5.8 * cols, 4.2 * len(reports)), squeeze=False)
    finite = [g["loss"] for r in reports for g in r.grid if g["loss"] is not None]
    for row, report in zip(axes, reports):
        _plot_losses(row[0], report, plt)
        if finite:  # diverging points are off the chart; keep the valleys readable
            low = min(finite)
            row[0].set_ylim(low - 0.05, min(max(finite), low + 1.5) + 0.05)
        if cols == 2:
            _plot_horizons(row[1], report, target_tokens, plt)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_losses(ax, report: SweepReport, plt) -> None:
    widths = sorted({g["width"] for g in report.grid})
    colors = dict(zip(widths, plt.cm.viridis(np.linspace(0, 0.9, len(widths)))))
    styles = dict(zip(report.steps, ["-", "--", ":", "-."] * len(report.steps)))
    for width in widths:
        for steps in report.steps:
            rows = sorted((g for g in report.grid if g["width"] == width and g["steps"] == steps
                           and g["loss"] is not None), key=lambda g: g["lr"])
            label = f"width {width}" + (f", {steps} steps" if len(report.steps) > 1 else "")
            ax.plot([math.log2(g["lr"]) for g in rows], [g["loss"] for g in rows], "o", color=colors[width],
                    linestyle=styles[steps], label=label, markersize=3)
            optimum = report.optimum(width, steps)
            if optimum is not None:
                ax.axvline(math.log2(optimum.lr), color=colors[width], linestyle=":", linewidth=0.8)
    title = report.name if report.name == report.parametrization else f"{report.name} ({report.parametrization})"
    ax.set_title(f"{title}: {report.verdict}", fontsize=9)
    ax.set_xlabel("log2 learning rate")
    ax.set_ylabel(report.metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(report.steps) > 1 else 1)


def _plot_horizons(ax, report: SweepReport, target_tokens: int | None, plt) -> None:
    fit = report.horizon_fit
    if fit is None:
        ax.axis("off")
        return
    widths = sorted(fit.intercepts)
    colors = dict(zip(widths, plt.cm.viridis(np.linspace(0, 0.9, len(widths)))))
    tokens = [report.tokens(s) for s in report.steps]
    span = [min(tokens), max(tokens) if target_tokens is None else max(max(tokens), target_tokens)]
    line = np.geomspace(span[0], span[1], 50)
    for width in widths:
        points = [o for o in report.optima if o.width == width]
        ax.plot([o.tokens for o in points], [math.log2(o.lr) for o in points], "o", color=colors[width],
                label=f"width {width}: β {fit.width_betas[width]:.2f}", markersize=4, fillstyle="full")
        ax.plot(line, [fit.log2_lr(width, t) for t in line], "-", color=colors[width], linewidth=1)
    if target_tokens is not None:
        e = extrapolation(report, target_tokens)
        ax.axvline(target_tokens, color="red", linestyle="--", linewidth=1)
        ax.plot([target_tokens], [e["log2_lr"]], "r*", markersize=10,
                label=f"target {target_tokens:.2g} tokens: 2^{e['log2_lr']:.2f}")
    se = f" ± {fit.beta_se:.2f}" if fit.beta_se is not None else ""
    ax.set_title(f"optimum vs horizon: β = {fit.beta:.2f}{se}", fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("log2 lr*")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def report_sweeps(sweep_dirs: list[str | Path]) -> list[SweepReport]:
    return [build_report(load_plan(d)) for d in sweep_dirs]
