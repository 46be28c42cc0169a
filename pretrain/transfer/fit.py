"""The statistics of `pretrain report`: the optimum LR per width, depth and horizon of a sweep, and how it moves
across widths, depths and token horizons. Pure functions of the sweep's points: no files, no plots.

Per (width, horizon), the optimum is the vertex of a least-squares parabola in eval loss against log2(LR),
fitted to the points within ±1 log2 of it: the loss is close to quadratic in log2(LR) there (further out, the
high-LR side steepens towards divergence). The window starts on the best grid point and moves to the grid point
nearest the vertex until it stays, so one lucky run next to a flat minimum does not drag the optimum along. On
a 0.5-log2 grid the window holds 5 points, which averages out run-to-run noise; on a 1-log2 grid it is the
parabola through the best point and its two neighbours. Diverged points count as +inf loss and stay out of the
fit; a window cut by the grid's edge or by a diverged neighbour is one-sided, and the best grid point stands.

Two straight-line fits summarise the optima, each with one slope shared by every group and an intercept per
group (`shared_slope`):
- across widths (a group per horizon and depth): the drift, log2(lr*) per doubling of width; μP makes it ~0.
  Across depths likewise (a group per width and horizon), where a sweep has several: CompleteP makes it ~0.
- across horizons (a group per width, with two or more horizons): log2(lr*) = a_width − β·log2(tokens), the
  optimum falling as a power of the token horizon. Where the optima span two or more batches, one least-squares
  fit adds a·log2(tokens per step) (the batch exponent a, with its own interval); it is left out where the batch
  cannot be told apart from the horizon. μP says nothing about β, but predicts the same β at every
  width: a width whose own slope is more than two standard errors from the shared one is a warning. Optima on
  the grid's edge stay out of both fits (they only bound the optimum).

Any linear combination of a least-squares fit's parameters gets a two-sided Student-t interval from the
residuals (`linear_fit`, `LinearFit.interval`). A drift's interval decides its verdict, the same way across
widths and depths: "transfers" when it lies within ±DRIFT_TOLERANCE, "drifts" when it lies wholly outside, else
"undetermined". β is determined when it has an interval: MIN_DOF or more residual dof.

A value predicted from these fits, such as the target's log2(lr*) in `apply_lr`, gets a prediction interval
(`prediction_interval`): its error is a sum of independent terms, each a multiple of one fit's residual variance
σ² (the fitted value's wᵀ(XᵀX)⁻¹w·σ², from the design row w; σ² itself, by which a new optimum scatters about the
line; a drift's variance over the doublings to the target), and the Student-t quantile is taken at the smallest
of their fits' dof, the least-known term setting the tails. A proxy sweep leaves its fits few residual dof (3 is
typical), and σ from so few is often far too small by luck (σ̂²/σ² is χ²₃/3: under a third one time in
six). With a `NoisePrior`, an independent estimate σ₀ of how far one sweep's optimum scatters (between seeds, at
a fixed width and horizon) from ν₀ dof, each fit's σ² becomes the pooled (ν σ̂² + ν₀ σ₀²)/(ν + ν₀) with ν + ν₀ dof:
the moderated t of empirical Bayes, exact when the prior measures the same scatter. It does not lift a fit below
MIN_DOF of its own: a curve fitted through its points has no residual to tell a wrong shape by.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# |drift| ≤ 0.2 log2 per doubling reads as "transfers". Extrapolated from a 128-wide proxy to an 8192-wide
# model (6 doublings) that misplaces the LR by at most 1.2 log2 (2.3×), inside the flat bottom of the
# paper's loss-vs-LR curves; across an 8× proxy sweep it is 0.6 log2, about one step of the usual 0.5-log2
# grid, i.e. what picking neighbouring grid points can produce. SP with Adam drifts by about -1 per doubling
# (hidden-layer updates grow with width), five times the tolerance.
DRIFT_TOLERANCE = 0.2
FIT_HALF_WIDTH = 1.0  # log2 units: the fit window around the optimum
AGREEMENT_SIGMAS = 2.0  # a width's own β this many standard errors from the shared β is a warning
# Intervals are two-sided at 80% by default. A sweep whose true drift lies beyond DRIFT_TOLERANCE then reads
# "transfers" at most one time in ten (as often as the interval's far end falls short of the truth), one within
# it reads "drifts" as rarely; 95% would cost 2.3x the width at 2 dof, leaving far more sweeps undetermined.
CONFIDENCE = 0.8
# No interval below 2 residual dof. With none there is no residual to measure the noise by. With one, σ rests
# on a single residual (σ̂²/σ² is χ²₁: under a tenth one time in four), so the interval's width is mostly luck,
# and its calibration leans wholly on Gaussian tails that one residual cannot check.
MIN_DOF = 2


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep and its outcome."""

    width: int
    steps: int
    lr: float
    status: str  # "ok", "diverged", "failed" (crashed) or "missing" (not run yet)
    loss: float | None  # the report's metric; None unless the run finished ("ok")
    batch: int | None = None  # global batch, in sequences
    depth: int | None = None  # layers

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
    batch: int | None = None  # global batch, in sequences
    tokens_per_step: int | None = None  # None: the sweep's one batch
    depth: int | None = None  # layers


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval of an estimate; `low` and `high` are None ("undetermined") below MIN_DOF
    residual degrees of freedom."""

    estimate: float
    low: float | None
    high: float | None
    confidence: float
    dof: int  # of the t quantile: the fits' residual dof, plus prior_dof
    prior_dof: int = 0  # the dof a NoisePrior added

    @property
    def determined(self) -> bool:
        return self.low is not None

    def __str__(self) -> str:
        if not self.determined:
            return f"no interval at {self.dof} dof"
        prior = f" with the seed-noise prior's {self.prior_dof}" if self.prior_dof else ""
        return (f"{self.confidence:.0%} interval [{self.low:+.2f}, {self.high:+.2f}], "
                f"{self.dof - self.prior_dof} dof{prior}")


@dataclass(frozen=True)
class LinearFit:
    """y ≈ design·params by least squares, with the parameters' covariance σ²(XᵀX)⁻¹ from the residuals."""

    params: np.ndarray
    sigma: float | None  # the residual standard deviation; None without a residual (as many parameters as points)
    dof: int  # residual degrees of freedom: points − parameters
    unscaled: np.ndarray  # (XᵀX)⁻¹: the covariance in units of σ²

    @property
    def covariance(self) -> np.ndarray | None:
        """The parameters' covariance σ²(XᵀX)⁻¹; None without a residual."""
        return None if self.sigma is None else self.sigma**2 * self.unscaled

    def leverage(self, weights: ArrayLike) -> float:
        """The variance of weights·params in units of σ²: wᵀ(XᵀX)⁻¹w."""
        w = np.asarray(weights, dtype=float)
        return max(float(w @ self.unscaled @ w), 0.0)  # a tiny negative is rounding

    def standard_error(self, weights: ArrayLike) -> float | None:
        """The standard error of weights·params."""
        if self.covariance is None:
            return None
        w = np.asarray(weights, dtype=float)
        return math.sqrt(max(float(w @ self.covariance @ w), 0.0))  # a tiny negative is rounding

    def interval(self, weights: ArrayLike, confidence: float = CONFIDENCE) -> Interval:
        """The two-sided Student-t interval of weights·params: of a parameter (weights a unit vector), or of the
        fit's prediction at a point (its design row)."""
        estimate = float(np.asarray(weights, dtype=float) @ self.params)
        return _t_interval(estimate, self.standard_error(weights), self.dof, confidence)


@dataclass(frozen=True)
class NoisePrior:
    """An estimate, independent of the fits, of how far one sweep's fitted optimum scatters about its truth:
    `sigma` log2 from `dof` degrees of freedom (the seed-to-seed scatter at a fixed width and horizon)."""

    sigma: float
    dof: int

    def pooled(self, sigma: float, dof: int) -> float:
        """The variance of a fit's residual σ̂ from `dof` pooled with this prior's (it has dof + self.dof)."""
        return (dof * sigma**2 + self.dof * self.sigma**2) / (dof + self.dof)


@dataclass(frozen=True)
class ErrorTerm:
    """One independent source of a predicted value's error: `scale` times one fit's residual variance σ², or
    times a fixed σ² that no fit estimates (dof None: neither pooled with a prior nor counted in the dof)."""

    name: str  # what it is, for messages
    scale: float | None  # the variance in units of σ²; None where nothing measured it
    sigma: float | None  # the fit's residual standard deviation, log2; None where it has no residual
    dof: int | None  # the residual dof of that fit; None for a fixed σ
    fit: str  # which fit, for messages

    def variance(self, prior: NoisePrior | None = None) -> float:
        """log2 units squared, with the fit's σ² pooled with `prior` where one is given."""
        pooled = prior is not None and self.dof is not None
        return self.scale * (prior.pooled(self.sigma, self.dof) if pooled else self.sigma**2)


def prediction_interval(estimate: float, terms: list[ErrorTerm], prior: NoisePrior | None = None,
                        confidence: float = CONFIDENCE) -> Interval:
    """The two-sided interval of a new value predicted at `estimate` whose error is the sum of `terms`, with the
    Student-t quantile at the smallest of their dof: each variance is only as well known as its fit's residuals,
    and the least-known one sets the tails (conservative where the others are better known). With a `prior`, each
    fit's σ² is pooled with it and gains its dof (see the module docstring); none below MIN_DOF of its own. At
    least one term must come from a fit."""
    own = min(term.dof for term in terms if term.dof is not None)
    if own < MIN_DOF:
        return Interval(estimate, None, None, confidence, own)
    added = 0 if prior is None else prior.dof
    se = math.sqrt(sum(term.variance(prior) for term in terms))
    return replace(_t_interval(estimate, se, own + added, confidence), prior_dof=added)


def _t_interval(estimate: float, se: float | None, dof: int, confidence: float) -> Interval:
    if dof < MIN_DOF:
        return Interval(estimate, None, None, confidence, dof)
    half = t_quantile((1 + confidence) / 2, dof) * se
    return Interval(estimate, estimate - half, estimate + half, confidence, dof)


@dataclass
class SlopeFit:
    """y = intercept[group] + slope·x by least squares, one slope for all groups. `fit`'s parameters are the
    intercepts in the order of `intercepts`, then the slope."""

    slope: float
    slope_se: float | None  # None: too few points for a residual (every group fitted exactly)
    sigma: float | None  # the residual standard deviation, in log2 units
    dof: int
    intercepts: dict[int, float]
    group_slopes: dict[int, float]  # each group's own least-squares slope (of the first x, the others held)
    group_slope_se: dict[int, float | None]  # its standard error under the shared residual sigma
    slope_interval: Interval
    fit: LinearFit

    def row(self, group: int, x: float | tuple[float, ...]) -> np.ndarray:
        """The design row of the fitted y of `group` at `x`: its weights on the parameters."""
        return np.array([*(float(g == group) for g in self.intercepts), *np.atleast_1d(x)])

    def weights(self, column: int) -> np.ndarray:
        """The weights that pick the slope of x's `column` out of the parameters."""
        return np.eye(len(self.fit.params))[len(self.intercepts) + column]


@dataclass
class Drift:
    """log2(lr*) per doubling of width or depth (one slope shared by the runs that differ in the rest), and what
    its interval says."""

    interval: Interval | None  # None: fewer than two widths (depths) have an optimum inside the grid
    slope_se: float | None  # the drift's standard error; None where the fit has no residual
    sigma: float | None  # the fit's residual standard deviation: how far one optimum scatters, log2 units
    spread: float | None  # max − min of log2(lr*) across widths (depths), in the group where it is largest
    verdict: str  # "transfers", "drifts" or "undetermined"
    reason: str  # why; for "undetermined", also what would decide it
    leverage: float | None = None  # the drift's variance in units of σ²; None: no fit

    @property
    def slope(self) -> float | None:
        return None if self.interval is None else self.interval.estimate


@dataclass
class HorizonFit:
    """log2(lr*) = intercept[width] − β·log2(tokens)."""

    beta: float
    beta_se: float | None
    beta_interval: Interval
    sigma: float | None
    dof: int
    intercepts: dict[int, float]  # by width
    width_betas: dict[int, float]
    width_beta_se: dict[int, float | None]
    disagreeing: list[int]  # widths whose own β is more than AGREEMENT_SIGMAS standard errors from β
    line: SlopeFit  # the fit itself (x = log2 tokens[, log2 tokens per step]), for the variance of its predictions
    # log2 lr* = ... + a·log2(tokens per step), fitted jointly where the optima span two or more batches
    batch_exponent: Interval | None = None  # a and its interval; None: one batch, or not separable from the horizon
    batch_se: float | None = None

    @property
    def determined(self) -> bool:
        """Whether β has an interval (MIN_DOF or more residual dof): a β from fewer rests on luck."""
        return self.beta_interval.determined

    def _x(self, tokens: float, tokens_per_step: float | None) -> tuple[float, ...]:
        if self.batch_exponent is None:
            return (math.log2(tokens),)
        if tokens_per_step is None:
            raise ValueError("a fit across batches predicts at a batch: pass tokens_per_step")
        return math.log2(tokens), math.log2(tokens_per_step)

    def log2_lr(self, width: int, tokens: float, tokens_per_step: float | None = None) -> float:
        """The fitted log2 lr* of `width` at `tokens`, and at `tokens_per_step` in a fit across batches."""
        return float(self.line.row(width, self._x(tokens, tokens_per_step)) @ self.line.fit.params)

    def log2_lr_leverage(self, width: int, tokens: float, tokens_per_step: float | None = None) -> float:
        """The variance of `log2_lr(...)` in units of the fit's σ²: wᵀ(XᵀX)⁻¹w at its design row w."""
        return self.line.fit.leverage(self.line.row(width, self._x(tokens, tokens_per_step)))


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


def shared_slope(groups: dict[int, list[tuple[float | tuple[float, ...], float]]],
                 confidence: float = CONFIDENCE) -> SlopeFit | None:
    """Least squares of y = intercept[group] + slope·x over every group's (x, y) points, x a number or a tuple of
    them (a slope each, shared by the groups); None when no group has two distinct x. The slopes' standard errors
    and intervals come from the residuals (n − groups − slopes degrees of freedom); each group's own slope of the
    first x gets its standard error from the same residual sigma."""
    own = {g: (np.array([np.atleast_1d(x) for x, _ in pts], dtype=float), np.array([y for _, y in pts]))
           for g, pts in groups.items() if len({x for x, _ in pts}) >= 2}
    if not own:
        return None
    member = np.repeat(np.arange(len(own)), [len(x) for x, _ in own.values()])
    design = np.column_stack([member[:, None] == np.arange(len(own)),  # an intercept column per group, then x
                              np.concatenate([x for x, _ in own.values()])]).astype(float)
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return None  # an x that moves with another (or with a group's intercept) has no slope of its own
    fit = linear_fit(design, np.concatenate([y for _, y in own.values()]))
    group_slopes, unscaled = {}, {}
    for g, (x, y) in own.items():  # the group alone: its own intercept and slopes, where they are determined
        alone = np.column_stack([np.ones(len(y)), x])
        if np.linalg.matrix_rank(alone) == alone.shape[1]:
            group_slopes[g] = float(np.linalg.lstsq(alone, y, rcond=None)[0][1])
            unscaled[g] = float(np.linalg.inv(alone.T @ alone)[1, 1])  # 1/Sxx with one x
    slope = np.eye(design.shape[1])[len(own)]  # the weights that pick the first slope out of the parameters
    return SlopeFit(
        slope=float(fit.params[len(own)]), slope_se=fit.standard_error(slope), sigma=fit.sigma, dof=fit.dof,
        intercepts=dict(zip(own, map(float, fit.params[:len(own)]))), group_slopes=group_slopes,
        group_slope_se={g: fit.sigma * math.sqrt(u) if fit.sigma is not None else None for g, u in unscaled.items()},
        slope_interval=fit.interval(slope, confidence), fit=fit)


def width_drift(optima: list[Optimum], confidence: float = CONFIDENCE) -> Drift:
    """The drift across widths with its interval at `confidence`, the spread, and the verdict (see the module
    docstring)."""
    return _drift(optima, "width", confidence)


def depth_drift(optima: list[Optimum], confidence: float = CONFIDENCE) -> Drift:
    """The drift across depths, as `width_drift` across widths."""
    return _drift(optima, "depth", confidence)


# The settings of an optimum's run; a drift along one of them groups the optima by the others. Its verdict names
# what else to sweep for residual dof: another horizon (for the width drift) or width (for the depth drift).
SETTINGS = ("width", "depth", "steps", "batch")
_ALSO = {"width": "horizon", "depth": "width"}


def _drift(optima: list[Optimum], axis: str, confidence: float) -> Drift:
    others = [k for k in SETTINGS if k != axis]
    groups = _log2_groups(optima, key=lambda o: tuple(getattr(o, k) for k in others), x=(axis,))
    spread = max((max(y for _, y in pts) - min(y for _, y in pts) for pts in groups.values() if len(pts) > 1),
                 default=None)
    fit = shared_slope(groups, confidence)
    if fit is None:
        return Drift(None, None, None, spread, "undetermined", f"fewer than two {axis}s have an optimum inside the "
                     f"LR grid; to decide it, sweep two or more {axis}s with LRs on both sides of each optimum")
    drift, tolerance = fit.slope_interval, f"±{DRIFT_TOLERANCE} log2 per doubling"
    measured = (drift, fit.slope_se, fit.sigma, spread)
    leverage = fit.fit.leverage(fit.weights(0))
    if not drift.determined:
        # each setting more (in every fitted group) adds a dof per group; each group more, settings − 1 dof
        missing, settings = MIN_DOF - drift.dof, len({x for pts in groups.values() for x, _ in pts})
        return Drift(*measured, "undetermined", (
            f"an interval needs {MIN_DOF} residual dof; to decide it, sweep "
            f"{_more(math.ceil(missing / len(fit.intercepts)), axis)}, or these {settings} {axis}s at "
            f"{_more(math.ceil(missing / (settings - 1)), _ALSO[axis])}"), leverage)
    if -DRIFT_TOLERANCE <= drift.low and drift.high <= DRIFT_TOLERANCE:
        return Drift(*measured, "transfers", f"the whole interval lies within {tolerance}", leverage)
    if drift.low > DRIFT_TOLERANCE or drift.high < -DRIFT_TOLERANCE:
        return Drift(*measured, "drifts", f"the whole interval lies outside {tolerance}", leverage)
    return Drift(*measured, "undetermined", f"the interval straddles {tolerance}; to decide it, narrow it: sweep "
                 f"more or farther-apart {axis}s, or more {_ALSO[axis]}s", leverage)


def horizon_fit(optima: list[Optimum], confidence: float = CONFIDENCE) -> HorizonFit | None:
    """The shared power law of the optimum in the token horizon, and in the batch where the optima span two or
    more batches (see the module docstring); None with one horizon."""
    inside = [o for o in optima if not o.on_edge]
    if len({(o.width, o.tokens, o.batch) for o in inside}) == len({(o.width, o.batch) for o in inside}):
        return None  # no width has two horizons at one batch: nothing measures β apart from the batch
    # The batch column where the optima span two or more batches and it is separable from the horizon.
    joint = len({o.tokens_per_step for o in inside}) > 1 and shared_slope(
        _log2_groups(optima, key=lambda o: o.width, x=("tokens", "tokens_per_step")), confidence)
    fit = joint or shared_slope(_log2_groups(optima, key=lambda o: o.width, x=("tokens",)), confidence)
    if fit is None:
        return None
    se = fit.group_slope_se
    disagreeing = [w for w, s in fit.group_slopes.items()
                   if se[w] is not None and abs(s - fit.slope) > AGREEMENT_SIGMAS * se[w]]
    batch = fit.weights(1) if joint else None
    beta = fit.fit.interval(-fit.weights(0), confidence)
    return HorizonFit(beta=-fit.slope, beta_se=fit.slope_se, beta_interval=beta, sigma=fit.sigma, dof=fit.dof,
                      intercepts=fit.intercepts, width_betas={w: -s for w, s in fit.group_slopes.items()},
                      width_beta_se=se, disagreeing=disagreeing, line=fit,
                      batch_exponent=None if batch is None else fit.fit.interval(batch, confidence),
                      batch_se=None if batch is None else fit.fit.standard_error(batch))


def _log2_groups(optima: list[Optimum], key: Callable[[Optimum], Any],
                 x: tuple[str, ...]) -> dict[Any, list[tuple[tuple, float]]]:
    """(log2 of each of the optimum's `x`, log2(lr*)) grouped by `key`, leaving out optima on the grid's edge."""
    groups: dict[Any, list[tuple[tuple, float]]] = {}
    for o in optima:
        if not o.on_edge:
            groups.setdefault(key(o), []).append((tuple(math.log2(getattr(o, k)) for k in x), math.log2(o.lr)))
    return groups


def _more(n: int, noun: str) -> str:
    return f"{n} more {noun}{'s' if n > 1 else ''}"


def linear_fit(design: np.ndarray, y: np.ndarray) -> LinearFit:
    """Least squares of y on the columns of `design` (full column rank), through its QR decomposition: better
    conditioned than the normal equations when a column (log2 tokens, say) sits far from zero."""
    q, r = np.linalg.qr(design)
    params = np.linalg.solve(r, q.T @ y)
    dof = len(y) - design.shape[1]
    r_inv = np.linalg.inv(r)
    sigma = math.sqrt(float(((y - design @ params) ** 2).sum()) / dof) if dof else None
    return LinearFit(params, sigma, dof, r_inv @ r_inv.T)


def t_quantile(p: float, dof: int) -> float:
    """The p-quantile of Student's t with `dof` (a positive integer) degrees of freedom, by bisection on the
    angle θ = atan(t/√dof), over which the exact central probability below rises from 0 (θ = 0) to 1 (π/2)."""
    if not 0 < p < 1 or dof < 1:
        raise ValueError(f"t_quantile needs 0 < p < 1 and dof >= 1, got p={p}, dof={dof}")
    if p < 0.5:
        return -t_quantile(1 - p, dof)
    target, lo, hi = 2 * p - 1, 0.0, math.pi / 2
    for _ in range(64):  # the bracket ends below double precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central_probability(mid, dof) < target else (lo, mid)
    return math.sqrt(dof) * math.tan((lo + hi) / 2)


def _t_central_probability(theta: float, dof: int) -> float:
    """P(|T| < √dof·tan θ) for Student's t with integer `dof`: the finite series of Abramowitz & Stegun 26.7.3
    (odd dof) and 26.7.4 (even dof), exact up to rounding."""
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if dof % 2:  # (2/π)·(θ + sin θ·(cos θ + 2/3·cos³θ + ... + (2·4···(dof−3))/(1·3···(dof−2))·cos^(dof−2) θ))
        term, series = math.cos(theta), 0.0
        for k in range(1, (dof - 1) // 2 + 1):
            series += term
            term *= cos2 * 2 * k / (2 * k + 1)
        return 2 / math.pi * (theta + sin * series)
    term, series = 1.0, 0.0  # sin θ·(1 + 1/2·cos²θ + ... + (1·3···(dof−3))/(2·4···(dof−2))·cos^(dof−2) θ)
    for k in range(1, dof // 2 + 1):
        series += term
        term *= cos2 * (2 * k - 1) / (2 * k)
    return sin * series
