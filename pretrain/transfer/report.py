"""`pretrain report`: the optimum LR per width of a sweep, its drift across widths, a verdict and a plot.

Per width, the optimum is the vertex of a least-squares parabola in eval loss against log2(LR), fitted to the
points within ±1 log2 of it: the loss is close to quadratic in log2(LR) there (further out, the high-LR side
steepens towards divergence). The window starts on the best grid point and moves to the grid point nearest
the vertex until it stays, so one lucky run next to a flat minimum does not drag the optimum along. On a
0.5-log2 grid the window holds 5 points, which averages out run-to-run noise; on a 1-log2 grid it is the
parabola through the best point and its two neighbours. Diverged points count as +inf loss and stay out
of the fit; a window cut by the grid's edge or by a diverged neighbour is one-sided, and the best grid point
stands. The drift is the least-squares slope of log2(lr*) against log2(width): how far the optimum moves
per doubling of width.
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


@dataclass
class WidthOptimum:
    width: int
    best_lr: float  # the best grid LR
    best_loss: float
    lr: float  # the fitted optimum (the best grid LR where no fit is possible)
    fitted: bool
    on_edge: bool  # the best grid LR is the smallest or largest of the grid


@dataclass
class SweepReport:
    name: str
    parametrization: str
    metric: str  # the loss the optima minimize
    grid: list[dict]  # one row per point: width, lr, status, loss
    optima: list[WidthOptimum]
    drift: float | None  # log2(lr*) per doubling of width
    spread: float | None  # max - min of log2(lr*) across widths
    verdict: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


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


def drift_per_doubling(widths: list[int], log2_lrs: list[float]) -> float:
    """Least-squares slope of log2(lr*) against log2(width)."""
    return float(np.polyfit(np.log2(widths), log2_lrs, 1)[0])


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
        grid.append({"width": point.width, "lr": point.lr, "status": status, "loss": loss})
    missing = [g for g in grid if g["status"] in ("missing", "failed")]
    if missing:
        warnings.append(f"{len(missing)} of {len(grid)} points have no result (not run yet or failed): "
                        + ", ".join(f"w{g['width']}/lr {g['lr']:.3g}" for g in missing[:6])
                        + (" ..." if len(missing) > 6 else ""))
    for width in plan.widths:
        rows = sorted((g for g in grid if g["width"] == width and g["status"] in ("ok", "diverged")),
                      key=lambda g: g["lr"])
        if not any(g["loss"] is not None for g in rows):
            warnings.append(f"width {width}: no finished point, no optimum")
            continue
        lrs = [g["lr"] for g in rows]
        log2_lr, best, fitted = fit_optimum(lrs, [math.inf if g["loss"] is None else g["loss"] for g in rows])
        on_edge = lrs[best] in (min(plan.lrs), max(plan.lrs))
        optima.append(WidthOptimum(width, lrs[best], rows[best]["loss"], 2**log2_lr, fitted, on_edge))
        if on_edge:
            side = "smallest" if lrs[best] == min(plan.lrs) else "largest"
            warnings.append(f"width {width}: the optimum is the {side} LR of the grid ({lrs[best]:.3g}); "
                            f"the true optimum may lie outside it: extend --lrs")
    drift = spread = None
    if len(optima) >= 2:
        log2_opt = [math.log2(o.lr) for o in optima]
        drift = drift_per_doubling([o.width for o in optima], log2_opt)
        spread = max(log2_opt) - min(log2_opt)
    return SweepReport(plan.name, plan.parametrization, metric, grid, optima, drift, spread, verdict(drift),
                       warnings)


def format_report(report: SweepReport) -> str:
    """The loss grid (rows LR, columns width; the best per column starred), the optima, drift and verdict."""
    widths = sorted({g["width"] for g in report.grid})
    cells = {(g["width"], g["lr"]): g for g in report.grid}
    best = {(o.width, o.best_lr) for o in report.optima}
    metric = report.metric.replace("_", " ")
    lines = [f"sweep {report.name} ({report.parametrization}): {metric} by LR (rows) and width (columns)",
             f"{'log2 lr':>8}{'lr':>10}" + "".join(f"{w:>10}" for w in widths)]
    for lr in sorted({g["lr"] for g in report.grid}):
        row = f"{math.log2(lr):>8.2f}{lr:>10.3g}"
        for w in widths:
            g = cells.get((w, lr))
            text = "" if g is None else f"{g['loss']:.3f}" if g["loss"] is not None else g["status"]
            row += f"{text + ('*' if (w, lr) in best else ' '):>10}"
        lines.append(row)
    lines += ["", f"{'width':>8}{'best log2 lr':>14}{'loss':>8}{'fitted log2 lr*':>17}{'lr*':>10}"]
    for o in report.optima:
        fitted = f"{math.log2(o.lr):>17.2f}" if o.fitted else f"{'(no fit)':>17}"
        lines.append(f"{o.width:>8}{math.log2(o.best_lr):>14.2f}{o.best_loss:>8.3f}{fitted}{o.lr:>10.3g}")
    if report.drift is not None:
        lines.append(f"drift of log2 lr*: {report.drift:+.2f} per width doubling "
                     f"(optima spread {report.spread:.2f} log2 over {max(widths) // min(widths)}x width)")
    lines.append(f"verdict: {report.verdict} (threshold: |drift| <= {DRIFT_TOLERANCE} log2 per doubling)")
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def plot_reports(reports: list[SweepReport], path: Path) -> None:
    """Loss against log2(LR), one curve per width and one panel per sweep, the fitted optima marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(5.5 * len(reports), 4.2), squeeze=False, sharey=True)
    finite = [g["loss"] for r in reports for g in r.grid if g["loss"] is not None]
    for ax, report in zip(axes[0], reports):
        widths = sorted({g["width"] for g in report.grid})
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(widths)))
        optima = {o.width: o for o in report.optima}
        for width, color in zip(widths, colors):
            rows = sorted((g for g in report.grid if g["width"] == width and g["loss"] is not None),
                          key=lambda g: g["lr"])
            ax.plot([math.log2(g["lr"]) for g in rows], [g["loss"] for g in rows], "o-", color=color,
                    label=f"width {width}", markersize=4)
            if width in optima:
                ax.axvline(math.log2(optima[width].lr), color=color, linestyle=":", linewidth=1)
        same = report.name == report.parametrization
        title = report.name if same else f"{report.name} ({report.parametrization})"
        ax.set_title(f"{title}: {report.verdict}", fontsize=9)
        ax.set_xlabel("log2 learning rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(reports[0].metric.replace("_", " "))
    if finite:  # diverging points are off the chart; keep the valleys readable
        low = min(finite)
        axes[0][0].set_ylim(low - 0.05, min(max(finite), low + 1.5) + 0.05)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_sweeps(sweep_dirs: list[str | Path]) -> list[SweepReport]:
    return [build_report(load_plan(d)) for d in sweep_dirs]
