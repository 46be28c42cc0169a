"""The statistics of `pretrain report`: the optimum LR per width and horizon of a sweep, and how it moves across
widths and token horizons. Pure functions of the sweep's points: no files, no plots.

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
from dataclasses import dataclass

import numpy as np

# |drift| ≤ 0.2 log2 per doubling reads as "transfers". Extrapolated from a 128-wide proxy to an 8192-wide
# model (6 doublings) that misplaces the LR by at most 1.2 log2 (2.3×), inside the flat bottom of the
# paper's loss-vs-LR curves; across an 8× proxy sweep it is 0.6 log2, about one step of the usual 0.5-log2
# grid, i.e. what picking neighbouring grid points can produce. SP with Adam drifts by about -1 per doubling
# (hidden-layer updates grow with width), five times the tolerance.
DRIFT_TOLERANCE = 0.2
FIT_HALF_WIDTH = 1.0  # log2 units: the fit window around the optimum
AGREEMENT_SIGMAS = 2.0  # a width's own β this many standard errors from the shared β is a warning


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep and its outcome."""

    width: int
    steps: int
    lr: float
    status: str  # "ok", "diverged", "failed" (crashed) or "missing" (not run yet)
    loss: float | None  # the report's metric; None unless the run finished ("ok")

    @property
    def has_result(self) -> bool:
        """Whether the run says something about the LR: a diverged run does, a crashed or missing one not."""
        return self.status in ("ok", "diverged")


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


def width_optimum(points: list[SweepPoint], tokens: int, grid_edges: tuple[float, float]) -> Optimum | None:
    """The optimum of one width at one horizon from its points (`tokens` long); None when none finished.
    `grid_edges`: the sweep's smallest and largest LR, where the best point only bounds the optimum."""
    runs = sorted((p for p in points if p.has_result), key=lambda p: p.lr)
    if not any(p.loss is not None for p in runs):
        return None
    lrs = [p.lr for p in runs]
    log2_lr, best, fitted = fit_optimum(lrs, [math.inf if p.loss is None else p.loss for p in runs])
    top = runs[best]
    return Optimum(top.width, top.steps, tokens, top.lr, top.loss, 2**log2_lr, fitted, top.lr in grid_edges)


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


def width_drift(optima: list[Optimum]) -> tuple[float | None, float | None]:
    """(The drift: log2(lr*) per doubling of width, one slope shared by the horizons; the spread: max − min of
    log2(lr*) across widths at the horizon where it is largest). None where too few optima are inside the grid."""
    by_horizon = _log2_groups(optima, by="steps", x="width")
    fit = shared_slope(by_horizon)
    spread = max((max(y for _, y in pts) - min(y for _, y in pts) for pts in by_horizon.values() if len(pts) > 1),
                 default=None)
    return (fit.slope if fit is not None else None), spread


def horizon_fit(optima: list[Optimum]) -> HorizonFit | None:
    """The shared power law of the optimum in the token horizon (see the module docstring)."""
    fit = shared_slope(_log2_groups(optima, by="width", x="tokens"))
    if fit is None:
        return None
    se = fit.group_slope_se
    disagreeing = [w for w, s in fit.group_slopes.items()
                   if se[w] is not None and abs(s - fit.slope) > AGREEMENT_SIGMAS * se[w]]
    return HorizonFit(beta=-fit.slope, beta_se=fit.slope_se, sigma=fit.sigma, dof=fit.dof,
                      intercepts=fit.intercepts, width_betas={w: -s for w, s in fit.group_slopes.items()},
                      width_beta_se=se, disagreeing=disagreeing)


def _log2_groups(optima: list[Optimum], by: str, x: str) -> dict[int, list[tuple[float, float]]]:
    """(log2 of the optimum's `x`, log2(lr*)) grouped by its `by`, leaving out optima on the grid's edge."""
    groups: dict[int, list[tuple[float, float]]] = {}
    for o in optima:
        if not o.on_edge:
            groups.setdefault(getattr(o, by), []).append((math.log2(getattr(o, x)), math.log2(o.lr)))
    return groups


def verdict(drift: float | None) -> str:
    if drift is None:
        return "undecided: fewer than two widths have an optimum"
    if abs(drift) <= DRIFT_TOLERANCE:
        return "transfers"
    return f"drifts by {drift:+.2f} log2 per doubling"
