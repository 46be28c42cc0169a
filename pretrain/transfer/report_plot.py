"""`pretrain report`'s figure: a sweep report as plots (the only report module that imports matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..fileio import atomic_output
from .fit import Interval
from .report import SweepReport, extrapolation


def plot_reports(reports: list[SweepReport], path: Path, target_tokens: int | None = None,
                 intervals: list[Interval | None] | None = None, target_tokens_per_step: int | None = None) -> None:
    """Per sweep, a row: loss against log2(LR), one curve per width, depth, horizon and batch, the fitted optima
    marked; with several horizons, also log2(lr*) against tokens per width with the fitted lines (and the
    extrapolation to `target_tokens`, marked, with the target's interval from `intervals`, one per report); with
    several batches, also log2(lr*) against the batch per width; with several depths, against the depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    horizons, batches = any(r.horizon_fit for r in reports), any(len(r.batches) > 1 for r in reports)
    depths = any(len(r.depths) > 1 for r in reports)
    cols = 1 + horizons + batches + depths
    fig, axes = plt.subplots(len(reports), cols, figsize=(5.8 * cols, 4.2 * len(reports)), squeeze=False)
    finite = [p.loss for r in reports for p in r.grid if p.loss is not None]
    for row, report, interval in zip(axes, reports, intervals or [None] * len(reports)):
        _plot_losses(row[0], report, plt)
        if finite:  # diverging points are off the chart; keep the valleys readable
            low = min(finite)
            row[0].set_ylim(low - 0.05, min(max(finite), low + 1.5) + 0.05)
        if horizons:
            _plot_horizons(row[1], report, target_tokens, interval, plt, target_tokens_per_step)
        if batches:
            _plot_against(row[1 + horizons], report, "batch", plt)
        if depths:
            _plot_against(row[-1], report, "depth", plt)
    fig.tight_layout()
    with atomic_output(path) as staged:  # a report stopped mid-draw leaves the previous plot
        fig.savefig(staged, format="png", dpi=120)
    plt.close(fig)


def _width_colors(widths: list[int], plt) -> dict:
    return dict(zip(widths, plt.cm.viridis(np.linspace(0, 0.9, len(widths)))))


def _plot_losses(ax, report: SweepReport, plt) -> None:
    widths = sorted({p.width for p in report.grid})
    colors = _width_colors(widths, plt)
    runs = sorted({(p.depth, p.steps, p.batch) for p in report.grid})
    styles = dict(zip(runs, ["-", "--", ":", "-."] * len(runs)))
    for width in widths:
        for depth, steps, batch in runs:
            points = sorted((p for p in report.grid if (p.width, p.depth, p.steps, p.batch)
                             == (width, depth, steps, batch) and p.loss is not None), key=lambda p: p.lr)
            label = (f"width {width}" + (f", depth {depth}" if len(report.depths) > 1 else "")
                     + (f", {steps} steps" if len(report.steps) > 1 else "")
                     + (f", batch {batch}" if len(report.batches) > 1 else ""))
            ax.plot([math.log2(p.lr) for p in points], [p.loss for p in points], "o", color=colors[width],
                    linestyle=styles[depth, steps, batch], label=label, markersize=3)
            optimum = report.optimum(width, steps, batch, depth)
            if optimum is not None:
                ax.axvline(math.log2(optimum.lr), color=colors[width], linestyle=":", linewidth=0.8)
    title = report.name if report.name == report.parametrization else f"{report.name} ({report.parametrization})"
    drift = "" if report.drift is None else f" (drift {report.drift:+.2f}, {report.drift_interval})"
    ax.set_title(f"{title}: {report.verdict}{drift}", fontsize=9)
    ax.set_xlabel("log2 learning rate")
    ax.set_ylabel(report.metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(report.steps) > 1 else 1)


def _plot_horizons(ax, report: SweepReport, target_tokens: int | None, interval: Interval | None, plt,
                   target_tokens_per_step: int | None = None) -> None:
    fit = report.horizon_fit
    if fit is None:
        ax.axis("off")
        return
    widths = sorted(fit.intercepts)
    colors = _width_colors(widths, plt)
    tokens = [report.tokens(s) for s in report.steps]
    span = [min(tokens), max(tokens) if target_tokens is None else max(max(tokens), target_tokens)]
    line = np.geomspace(span[0], span[1], 50)
    for width in widths:
        points = [o for o in report.optima if o.width == width]
        ax.plot([o.tokens for o in points], [math.log2(o.lr) for o in points], "o", color=colors[width],
                label=f"width {width}: β {fit.width_betas[width]:.2f}", markersize=4, fillstyle="full")
        ax.plot(line, [fit.log2_lr(width, t, report.tokens_per_step) for t in line], "-", color=colors[width],
                linewidth=1)
    if target_tokens is not None:
        e = extrapolation(report, target_tokens, tokens_per_step=target_tokens_per_step)
        ax.axvline(target_tokens, color="red", linestyle="--", linewidth=1)
        ax.plot([target_tokens], [e["log2_lr"]], "r*", markersize=10,
                label=f"target {target_tokens:.2g} tokens: 2^{e['log2_lr']:.2f}")
        if interval is not None and interval.determined:
            ax.errorbar([target_tokens], [interval.estimate], fmt="none", ecolor="red", capsize=4,
                        yerr=[[interval.estimate - interval.low], [interval.high - interval.estimate]],
                        label=f"its {interval.confidence:.0%} interval [{interval.low:.2f}, {interval.high:.2f}]")
    se = f" ± {fit.beta_se:.2f}" if fit.beta_se is not None else ""
    ax.set_title(f"optimum vs horizon: β = {fit.beta:.2f}{se}", fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("log2 lr*")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _plot_against(ax, report: SweepReport, axis: str, plt) -> None:
    """log2(lr*) against the global batch or the depth (`axis`), per width (every other setting), titled with the
    fitted batch exponent or the depth drift."""
    if len(report.batches if axis == "batch" else report.depths) < 2:
        ax.axis("off")
        return
    widths = sorted({o.width for o in report.optima})
    colors = _width_colors(widths, plt)
    for width in widths:
        points = [o for o in report.optima if o.width == width]
        ax.plot([getattr(o, axis) for o in points], [math.log2(o.lr) for o in points], "o", color=colors[width],
                markersize=4, label=f"width {width}")
    if axis == "batch":
        a = report.horizon_fit and report.horizon_fit.batch_exponent
        title = f"a = {'undetermined' if not a or not a.determined else f'{a.estimate:+.2f}, {a}'}"
    else:
        drift = report.depth_drift
        title = drift.verdict + ("" if drift.slope is None else f", drift {drift.slope:+.2f} ({drift.interval})")
    ax.set_title(f"optimum vs {axis}: {title}", fontsize=9)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("global batch (sequences)" if axis == "batch" else "depth (layers)")
    ax.set_ylabel("log2 lr*")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
