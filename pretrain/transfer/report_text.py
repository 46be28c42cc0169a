"""`pretrain report`'s tables: a sweep report as text."""

from __future__ import annotations

import math

from .fit import Drift
from .report import SweepReport, extrapolation


def format_report(report: SweepReport, target_tokens: int | None = None, refusals: list[str] | None = None,
                  target_lr: str | None = None, target_tokens_per_step: int | None = None) -> str:
    """The loss grid (rows LR, columns width, depth and horizon; the best per column starred), the optima, the
    drift across widths (and depths) with its interval and verdict, the horizon fit, and for a target: the
    extrapolation to its `target_tokens`, the LR `apply-lr` would set with its interval (`target_lr`,
    `apply_lr.describe`) and, before you apply, what `apply-lr` would refuse for it (`refusals`)."""
    columns = sorted({(p.width, p.depth, p.steps, p.batch) for p in report.grid})
    several, batches, depths = len(report.steps) > 1, len(report.batches) > 1, len(report.depths) > 1
    shown = [depths, several, batches]  # which of depth, steps and batch the column labels spell
    label = {c: "/".join([f"w{c[0]}", *(f"{k}{v}" for k, v, on in zip("dsb", c[1:], shown) if on)]) if any(shown)
             else str(c[0]) for c in columns}
    width = max(10, *(len(t) + 2 for t in label.values()))
    cells = {(p.width, p.depth, p.steps, p.batch, p.lr): p for p in report.grid}
    best = {(o.width, o.depth, o.steps, o.batch, o.best_lr) for o in report.optima}
    metric = report.metric.replace("_", " ")
    axes = "/".join(["width", *(name for name, on in zip(("depth", "steps", "batch"), shown) if on)])
    lines = [f"sweep {report.name} ({report.parametrization}): {metric} by LR (rows) and {axes} (columns); warmup "
             f"{report.warmup}",
             f"{'log2 lr':>8}{'lr':>10}" + "".join(f"{label[c]:>{width}}" for c in columns)]
    for lr in sorted({p.lr for p in report.grid}):
        row = f"{math.log2(lr):>8.2f}{lr:>10.3g}"
        for c in columns:
            p = cells.get((*c, lr))
            text = "" if p is None else f"{p.loss:.3f}" if p.loss is not None else p.status
            row += f"{text + ('*' if (*c, lr) in best else ' '):>{width}}"
        lines.append(row)
    lines += ["", f"{'width':>8}" + (f"{'depth':>8}" if depths else "") + f"{'steps':>8}"
              + (f"{'batch':>8}" if batches else "")
              + f"{'tokens':>10}{'best log2 lr':>14}{'loss':>8}{'fitted log2 lr*':>17}{'lr*':>10}"]
    for o in report.optima:
        fitted = f"{math.log2(o.lr):>17.2f}" if o.fitted else f"{'(no fit)':>17}"
        lines.append(f"{o.width:>8}" + (f"{o.depth:>8}" if depths else "") + f"{o.steps:>8}"
                     + (f"{o.batch:>8}" if batches else "")
                     + f"{o.tokens:>10.3g}{math.log2(o.best_lr):>14.2f}{o.best_loss:>8.3f}{fitted}{o.lr:>10.3g}")
    lines += _describe_drift(report.width_drift, "width", [o.width for o in report.optima],
                             [noun for noun, on in (("depth", depths), ("horizon", several)) if on], "verdict")
    if report.depth_drift is not None:
        lines += _describe_drift(report.depth_drift, "depth", [o.depth for o in report.optima],
                                 ["width"] + (["horizon"] if several else []), "depth verdict")
    fit = report.horizon_fit
    if fit is not None:
        beta = (f"{fit.beta:.3f} ± {fit.beta_se:.3f}, {fit.beta_interval} (residual σ {fit.sigma:.2f} log2)"
                if fit.determined else f"{fit.beta:.3f} undetermined ({fit.dof} dof)")
        at = f", at depth {report.deepest} (the deepest)" if depths else ""
        lines += ["", f"horizon fit{at}: log2 lr* = a(width) − β·log2(tokens); β = {beta}"]
        lines.append(f"{'width':>8}{'own β':>8}{'± se':>8}{'a':>9}{'agrees':>8}")
        for w, beta in fit.width_betas.items():
            own_se = fit.width_beta_se[w]
            lines.append(f"{w:>8}{beta:>8.3f}{own_se if own_se is not None else float('nan'):>8.3f}"
                         f"{fit.intercepts[w]:>9.2f}{'no' if w in fit.disagreeing else 'yes':>8}")
    if len(report.batches) > 1:
        lines.append(describe_batch_exponent(report))
    if target_tokens is not None:
        lines.append(describe_extrapolation(report, target_tokens, target_tokens_per_step))
    if target_lr is not None:
        lines.append(f"target lr: {target_lr}")
    if refusals is not None:
        lines.append("before you apply: " + ("`pretrain apply-lr` would refuse the target:"
                                             if refusals else "nothing `pretrain apply-lr` would refuse"))
        lines += [f"  - {r}" for r in refusals]
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def _describe_drift(drift: Drift, axis: str, settings: list[int], others: list[str], verdict: str) -> list[str]:
    """The drift along `axis` (over the optima's `settings` on it) with its interval and spread, where it has a
    slope, and its verdict line; `others` name the swept settings it groups by (the spread is the worst group's)."""
    lines = []
    if drift.slope is not None:
        worst = f", at the worst {' and '.join(others)}" if others else ""
        lines.append(f"drift of log2 lr*: {drift.slope:+.2f} per {axis} doubling, {drift.interval} (optima spread "
                     f"{drift.spread or 0:.2f} log2 over {max(settings) // min(settings)}x {axis}{worst})")
    return [*lines, f"{verdict}: {drift.verdict}: {drift.reason}"]


def describe_batch_exponent(report: SweepReport) -> str:
    """The batch exponent a, fitted with β: log2 lr* moves by a per doubling of the tokens per step."""
    fit = report.horizon_fit
    a = None if fit is None else fit.batch_exponent
    if a is None:
        return ("batch exponent a: undetermined: it is fitted jointly with β, which needs two or more horizons at a "
                "batch, and the batch must vary apart from them (e.g. --equal-tokens)")
    value = (f"{a.estimate:+.3f} ± {fit.batch_se:.3f}, {a}" if a.determined
             else f"{a.estimate:+.3f} undetermined ({a.dof} dof)")
    return f"batch exponent a (log2 lr* per doubling of tokens per step, fitted jointly with β) = {value}"


def describe_extrapolation(report: SweepReport, tokens: int, tokens_per_step: int | None = None) -> str:
    """The fitted optimum at the target's tokens (and tokens per step, in a fit across batches)."""
    e = extrapolation(report, tokens, tokens_per_step=tokens_per_step)
    if e is None:
        return f"target: {tokens:.3g} tokens; no horizon fit to extrapolate with (sweep two or more --steps)"
    return (f"target: {tokens:.3g} tokens, {e['ratio']:.3g}x the longest swept horizon ({e['longest_tokens']:.3g}): "
            f"width {e['width']}'s fitted optimum 2^{e['log2_lr']:.2f} = {e['lr']:.3g}, "
            f"{e['correction']:+.2f} log2 from its optimum at the longest horizon (2^{e['log2_lr_at_longest']:.2f})")
