"""`pretrain apply-lr`: carry a sweep's optimum LR over to a target config, where transfer applies.

μP carries the optimum across width; it says nothing about the training horizon or the batch, so those are
decided per axis, from the target's token horizon (steps × global batch × seq_len):
- the same horizon as a swept one (within 10%): the widest proxy's optimum there;
- another horizon, with two or more swept: the widest proxy's optimum extrapolated along the sweep's horizon
  fit (log2 lr* falls by β per doubling of tokens), refused past 100x the longest swept horizon;
- another horizon with one swept: refused, naming the sweep that would measure it;
- another global batch (tokens per step) than the proxies': with two or more batches swept, bridged along the
  fitted batch exponent a (log2 lr* moves by a per doubling of tokens per step; the prediction's design row holds
  the batch, so the horizon fit's covariance widens its interval) within the swept batches and up to
  MAX_BATCH_REACH beyond them; refused farther out, with one batch swept, when a is undetermined, and for a target
  shorter than MIN_BRIDGED_STEPS (there the warmup, not the batch, shapes the schedule);
- another depth than the deepest proxy's (the one carried, as the widest proxy's is across width): under
  model.depth_parametrization=completep the optimum should not move with depth, so it is carried over, from a
  sweep of two or more depths whose depth verdict is "transfers", up to MAX_DEPTH_REACH times deeper than the
  deepest proxy (or shallower than the shallowest); refused with one depth swept (no verdict), farther out, and
  under `none`, naming completep.
Beyond that, transfer is only claimed for a target that is the swept proxy made wider (and trained on other
data or hardware), under a recipe the paper found to transfer and our own ablation table did not measure breaking
(`breaking_settings`; a refusal cites what that table measured, docs/paper_table.md), from a sweep whose optimum
transfers across widths (the report's verdict). Anything else is refused with the reason; `--force` applies the
LR anyway, and the config line written with it says how it was obtained and which checks it overrode. `pretrain
report --target` lists the same refusals before you apply (`review`) and shows the same LR and interval.

The interval. The target's log2 lr* gets a prediction interval at fit.CONFIDENCE (`fit.prediction_interval`):
where a new measurement of the target's optimum would fall. Its variance adds up
- the estimate's own: in the same-horizon case the widest proxy's measured optimum, one draw that scatters
  about its truth by the width fit's residual σ (σ²); extrapolated, the horizon fit's value there, wᵀCw from
  the fit's parameter covariance C and its design row w;
- σ², by which a new optimum scatters about its truth (the width fit's σ at a swept horizon, the horizon
  fit's σ_h otherwise);
- extrapolated, (κ·d)², d the doublings of tokens outside the swept ladder, κ = HORIZON_REACH: the fit's
  covariance holds only while the power law does, and its slope can differ past the ladder (a fixed σ: no dof);
- (se_drift·Δ)², Δ = |log2(target d_model / the widest proxy's width)|: μP says the drift across widths is zero
  and the point estimate assumes it (the verdict checks it), but the sweep bounds it only to its standard
  error se_drift per doubling, and the doublings to the target multiply that; likewise across depth, the depth
  drift's standard error times |log2(target n_layers / the deepest proxy's)|.
Each fit's σ² is pooled with the seed-noise prior this package ships (`seed_noise`: how far one sweep's optimum
scatters between seeds, measured by scripts/seed_noise.sh on the CPU proxy, docs/seed_noise_cpu.md), which adds its
dof: a proxy sweep leaves its fits 2 or 3 residual dof, and a σ from so few is often small by luck (see fit.py).
The Student-t quantile is taken at the smallest residual dof of the fits involved (the width fit at a swept
horizon; the horizon fit, and the width fit where Δ > 0, otherwise; the depth fit for another depth), plus the
prior's. With any of them below fit.MIN_DOF of its own there is no interval, and the LR is refused; so is an
interval wider than --max-interval (MAX_INTERVAL), naming the sweep that narrows its largest term. The
one-horizon reuse (only with --force) predicts nothing: no interval.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ..config import Config, load_config
from ..errors import ConfigError
from ..fileio import read_json_object, write_text
from ..model import mup
from ..outputs import Kind, check_location
from . import paper_table
from .fit import MIN_DOF, Drift, ErrorTerm, Interval, NoisePrior, _more, prediction_interval
from .report import SweepReport, build_report, extrapolation
from .sweep import Plan, load_plan

# May differ between proxy and target: the width and what follows from it (MLP width and its rounding, KV
# heads), and settings that leave the math alone (kernels, precision, logging). The run's length and batch
# (train.*) are judged by their tokens, below, and the depth by the depth parametrization; the warmup follows the
# run's length.
FREE_KEYS = ("model.d_model", "model.n_layers", "model.d_ff", "model.ffn_multiple_of", "model.n_kv_heads",
             "model.use_kernels", "model.loss_chunk", "optim.lr", "optim.warmup_steps", "optim.warmup_fraction")
FREE_SECTIONS = ("data", "train", "deepspeed", "wandb")
SAME_HORIZON = 0.10  # a target within 10% of a swept horizon's tokens uses that horizon's optimum
MAX_EXTRAPOLATION = 100.0  # farthest reach of the horizon fit past the longest swept horizon
MAX_BATCH_REACH = 4.0  # farthest reach of the batch exponent past the smallest or largest swept batch
MIN_BRIDGED_STEPS = 200  # a shorter target's schedule is mostly warmup: the batch is not bridged for it
# Farthest reach in depth past the deepest (or shallowest) proxy: CompleteP's optimum held from 2 to 128 layers in
# its paper, but a proxy sweep bounds the drift only to its interval, which the doublings multiply (4 at 16x).
MAX_DEPTH_REACH = 16.0
# The widest prediction interval (high − low, in log2 lr) applied without --force: at 1.0 the target's optimum
# lies within a factor √2 either way of the LR applied, four times in five; a sweep grid's step is 0.5 log2.
MAX_INTERVAL = 1.0
SEED_NOISE = Path(__file__).with_name("seed_noise.json")  # the noise prior of every interval (`seed_noise`)
# How far the horizon law's slope may differ outside the swept ladder, as one standard deviation of log2 lr* per
# doubling of tokens past the longest (or short of the shortest) swept horizon: the fit's parameter covariance
# assumes the power law holds out there. Measured on the first CPU calibration (scripts/horizon_reach.py, from
# docs/calibration_cpu_first.md): its held-out misses beyond what the pooled interval counts, 0.080.
HORIZON_REACH = 0.08
# The terms of the target's error (`fit.ErrorTerm` names); `_narrowing` says which sweep narrows each.
MEASURED, NEW, LINE, DRIFT = ("the measured optimum's scatter", "a new optimum's scatter", "the horizon fit's line",
                              "the width drift")
REACH = "the horizon law's reach"
DEPTH_DRIFT = "the depth drift"


@dataclass(frozen=True)
class Problem:
    """A reason not to apply the LR."""

    brief: str  # a few words naming it, for the note a forced LR is written with
    detail: str  # what is wrong and what would fix it


@dataclass
class Transfer:
    lr: float  # the LR the target should train at
    case: str  # "same horizon", "extrapolated" or "one horizon" (the naive reuse, only with --force)
    note: str  # how it was obtained, for the config line; with its interval
    problems: list[Problem]  # why it should not be used; empty when transfer applies
    interval: Interval | None = None  # of the target's log2 lr*; None for the one-horizon reuse, which predicts nothing


def breaking_settings(cfg: Config, results: dict | None = None) -> list[Problem]:
    """Settings that break μ-transfer: those the paper found to, each with what our own table measured for it
    (`paper_table.measured_note`), and those our table measured breaking though the paper found them to hold.
    `results`: the measured table (default: the one this package ships, `paper_table.RESULTS`)."""
    results = paper_table.load_results() if results is None else results
    model, optim = cfg.model, cfg.optim
    found = []
    if model.parametrization == "sp":
        found.append(("model.parametrization=sp", "under the standard parametrization the optimal LR shrinks "
                                                  "with width"))
    if model.norm_gains:
        setting = f"model.norm_gains={str(model.norm_gains).lower()}"
        found.append((setting, "trainable RMSNorm gains (vector or scalar) broke transfer in the paper"))
    if model.parametrization == "mup" and mup.attention_kind(model) == "sp":
        found.append(("model.qk_scale=sp", "the 1/sqrt(head_dim) attention scale broke transfer in the paper; "
                                           "use mup"))
    if optim.weight_decay > 0 and optim.weight_decay_mode == "coupled":
        found.append(("optim.weight_decay_mode=coupled", "LR-coupled weight decay broke transfer in the paper; "
                                                         "use independent"))
    if optim.name == "lion":
        found.append(("optim.name=lion", "Lion broke transfer in the paper, under the same μP LR rule as Adam's"))
    problems = [Problem(setting, f"{setting}: {why}; {paper_table.measured_note(setting, results)}")
                for setting, why in found]
    for settings, note in paper_table.measured_breaks(cfg, results):
        if not {setting for setting, _ in found} & set(settings):
            named = " ".join(settings)
            problems.append(Problem(named, f"{named}: the paper found transfer to hold with it, but {note}"))
    return problems


def config_differences(proxy: Config, target: Config) -> list[str]:
    """Every setting outside FREE_KEYS and FREE_SECTIONS where the target differs from the proxy."""
    before, after = _flatten(proxy.to_dict()), _flatten(target.to_dict())
    return [f"{key}: proxy {before[key]!r}, target {after[key]!r}" for key in before
            if before[key] != after[key] and key not in FREE_KEYS and key.split(".")[0] not in FREE_SECTIONS]


def seed_noise(path: Path | None = None) -> NoisePrior | None:
    """The seed-noise prior in `path` (default: the one this package ships, SEED_NOISE, measured by
    scripts/seed_noise.sh); None before one is written."""
    path = SEED_NOISE if path is None else path
    if not path.exists():
        return None
    remedy = "; it is written by scripts/seed_noise.sh"
    raw = read_json_object(path, ConfigError, remedy)
    sigma, dof = raw.get("sigma"), raw.get("dof")
    if not (isinstance(sigma, (int, float)) and sigma > 0 and isinstance(dof, int) and dof > 0):
        raise ConfigError(f"{path}: expected a positive \"sigma\" (log2) and a positive integer \"dof\", got sigma "
                          f"{sigma!r}, dof {dof!r}{remedy}")
    return NoisePrior(float(sigma), dof)


def transfer(plan: Plan, report: SweepReport, target: Config, max_interval: float = MAX_INTERVAL,
             prior: NoisePrior | None = None) -> Transfer:
    """The LR for `target` from the sweep, the case that gave it, its prediction interval (see the module
    docstring) and every reason to refuse it. `prior`: the noise prior pooled into the interval (None: the fits'
    residuals alone; `apply_lr` and `review` pass the shipped one, `seed_noise()`)."""
    if not report.optima:
        raise ConfigError(f"sweep {report.name} has no optimum yet; run its points first")
    problems = breaking_settings(target)
    proxy = load_config(plan.config)
    problems += [Problem(d, f"differs from the proxy in {d}") for d in config_differences(proxy, target)]
    if report.verdict != "transfers":
        problems.append(_drift_problem(report.width_drift, "width"))
    widest, deepest = max(o.width for o in report.optima), report.deepest
    problems += [Problem(f"width {o.width}'s optimum on the grid edge", f"width {o.width}: the optimum sits on the "
                         "grid edge") for o in report.optima if o.on_edge and o.width == widest and o.depth == deepest]
    if target.model.n_layers != deepest:
        problems += _depth_problems(plan, report, target)
    # Across depth CompleteP predicts no drift: the deepest proxy's optimum, its drift's error over the doublings.
    depth_terms = _drift_terms(report.depth_drift, abs(math.log2(target.model.n_layers / deepest)), DEPTH_DRIFT,
                               "depth")
    if target.train.global_batch_size is None:
        problems.append(Problem("train.global_batch_size unset", "train.global_batch_size is not set, so the target's "
                                "tokens per step depend on the GPU count; set it to compare the target's batch and "
                                "horizon with the sweep's"))
    tokens_per_step = target.tokens_per_step()
    batches = {p.tokens_per_step: p.batch for p in plan.points}  # the swept batches, by tokens per step
    if tokens_per_step not in batches:
        problems += _batch_problems(plan, report, target, tokens_per_step)
    bridged = tokens_per_step not in batches and len(plan.batches) > 1  # along the batch exponent, if at all
    batch = batches.get(tokens_per_step, plan.batch)
    tokens = target.training_tokens()
    swept = {p.steps: p.steps * p.tokens_per_step for p in plan.points if p.batch == batch}
    nearest = min(swept, key=lambda steps: abs(math.log(tokens / swept[steps])))
    at_nearest = report.optimum(widest, nearest, batch, deepest)
    doublings = abs(math.log2(target.model.d_model / widest))
    # Where the depth changes, which proxy depth the LR comes from: the notes say so.
    carried = "" if target.model.n_layers == deepest else f", carried from {deepest} to {target.model.n_layers} layers"
    if abs(tokens / swept[nearest] - 1) <= SAME_HORIZON and at_nearest is not None and not bridged:
        note = f"width {widest}, fitted 2^{math.log2(at_nearest.lr):.2f} at {swept[nearest]:.2g} tokens{carried}"
        # One measured optimum, used as it is: it scatters about its truth by the width fit's σ, as would a new one.
        terms = [ErrorTerm(name, 1.0, report.drift_sigma, _width_dof(report), "width") for name in (MEASURED, NEW)]
        terms += [*_drift_terms(report.width_drift, doublings, DRIFT, "width"), *depth_terms]
        result = Transfer(at_nearest.lr, "same horizon", note, problems)
        return _predicted(result, plan, report, terms, tokens, max_interval, prior)
    if report.horizon_fit is None:
        problems.append(Problem(
            f"one horizon swept ({swept[nearest]:.3g} tokens, target {tokens:.3g})",
            f"the target trains {tokens:.3g} tokens, the sweep measured the optimum at "
            f"{', '.join(f'{t:.3g}' for t in swept.values())} tokens only, and the optimum moves with the horizon; "
            f"sweep two or more horizons around it, e.g. `pretrain sweep {plan.config} --widths "
            f"{','.join(map(str, plan.widths))} --lrs ... --steps {_ladder(plan, tokens)}`"))
        lr = at_nearest.lr if at_nearest else report.optima[-1].lr
        note = (f"width {widest}, 2^{math.log2(lr):.2f} at {swept[nearest]:.2g} tokens, not corrected for the "
                f"horizon{carried}")
        return Transfer(lr, "one horizon", note, problems)
    fit = report.horizon_fit
    if bridged and fit.batch_exponent is None:  # refused already; the LR shown is the config's batch's
        tokens_per_step = plan.tokens_per_step
    e = extrapolation(report, tokens, tokens_per_step=tokens_per_step)
    shortest = min(swept.values())
    if e["ratio"] > MAX_EXTRAPOLATION:
        problems.append(Problem(
            f"{e['ratio']:.3g}x past the longest horizon",
            f"the target's {tokens:.3g} tokens are {e['ratio']:.3g}x the longest swept horizon "
            f"({e['longest_tokens']:.3g}): beyond {MAX_EXTRAPOLATION:g}x the fit is not trusted; sweep longer proxies"))
    elif shortest / tokens > MAX_EXTRAPOLATION:
        problems.append(Problem(
            f"{shortest / tokens:.3g}x short of the shortest horizon",
            f"the target's {tokens:.3g} tokens are {shortest / tokens:.3g}x shorter than the shortest swept horizon "
            f"({shortest:.3g}); sweep shorter proxies"))
    if target.optim.weight_decay > 0:
        problems.append(Problem(
            f"optim.weight_decay={target.optim.weight_decay:g} across horizons",
            "optim.weight_decay > 0: the best decay changes with the horizon (AdamW averages over about 1/(lr·λ) "
            "steps) and no rule for it is fitted here; train the target without decay"))
    reach = "extrapolated" if e["ratio"] > 1 else "interpolated"
    note = (f"width {e['width']}, fitted 2^{e['log2_lr_at_longest']:.2f} at {e['longest_tokens']:.2g} tokens, "
            f"{reach} {e['ratio']:.3g}x to {tokens:.2g} tokens with β {fit.beta:.2f}: 2^{e['log2_lr']:.2f} "
            f"({e['correction']:+.2f} log2)")
    if bridged:
        note += f", at {tokens_per_step:,} tokens per step with batch exponent {fit.batch_exponent.estimate:+.2f}"
    note += carried
    terms = [ErrorTerm(LINE, fit.log2_lr_leverage(e["width"], tokens, tokens_per_step), fit.sigma, fit.dof, "horizon"),
             ErrorTerm(NEW, 1.0, fit.sigma, fit.dof, "horizon"),
             *_drift_terms(report.width_drift, abs(math.log2(target.model.d_model / e["width"])), DRIFT, "width"),
             *depth_terms]
    outside = doublings_outside(tokens, shortest, e["longest_tokens"])
    if outside:
        terms.append(ErrorTerm(REACH, outside**2, HORIZON_REACH, None, "horizon law"))
    return _predicted(Transfer(e["lr"], "extrapolated", note, problems), plan, report, terms, tokens, max_interval,
                      prior)


def doublings_outside(tokens: float, shortest: float, longest: float) -> float:
    """How many doublings `tokens` lies past the longest swept horizon or short of the shortest; 0 inside."""
    return max(math.log2(tokens / longest), math.log2(shortest / tokens), 0.0)


def _batch_problems(plan: Plan, report: SweepReport, target: Config, tokens_per_step: int) -> list[Problem]:
    """Why the target's batch, one the sweep did not measure, cannot be bridged with the fitted batch exponent."""
    brief = f"batch differs (proxy {plan.tokens_per_step:,}, target {tokens_per_step:,} tokens per step)"
    if len(plan.batches) == 1:
        return [Problem(brief, f"the target trains on {tokens_per_step:,} tokens per step, the proxies on "
                        f"{plan.tokens_per_step:,}: the optimum moves with the batch and nothing here measures how; "
                        "sweep the proxies at the target's global batch × seq_len")]
    fit = report.horizon_fit
    swept = sorted({p.tokens_per_step for p in plan.points})
    low, high = swept[0] / MAX_BATCH_REACH, swept[-1] * MAX_BATCH_REACH
    more = f"`pretrain sweep {plan.config} ... --batches {','.join(map(str, plan.batches))},... --out {plan.dir}`"
    if fit is None or fit.batch_exponent is None or not fit.batch_exponent.determined:
        a = "" if fit is None or fit.batch_exponent is None else f" ({fit.batch_exponent})"
        return [Problem(f"batch exponent undetermined{a}", f"the target trains on {tokens_per_step:,} tokens per step, "
                        f"a batch the sweep did not measure, and its batch exponent is undetermined{a}: it needs two "
                        f"or more horizons and batches with {MIN_DOF} residual dof; sweep them, e.g. {more}")]
    if not low <= tokens_per_step <= high:
        return [Problem(f"batch {tokens_per_step:,} tokens per step beyond {MAX_BATCH_REACH:g}x the swept",
                        f"the target trains on {tokens_per_step:,} tokens per step, more than {MAX_BATCH_REACH:g}x "
                        f"outside the swept {swept[0]:,}..{swept[-1]:,}: the batch exponent is not trusted that far; "
                        f"sweep batches nearer the target's, e.g. {more}")]
    if target.train.steps < MIN_BRIDGED_STEPS:
        return [Problem(f"train.steps={target.train.steps} below {MIN_BRIDGED_STEPS} for another batch",
                        f"the target trains {target.train.steps} steps at a batch the sweep did not measure: below "
                        f"{MIN_BRIDGED_STEPS} steps the warmup dominates its schedule and the batch exponent is not "
                        "trusted; train it longer, or sweep the proxies at its batch")]
    return []


def _depth_problems(plan: Plan, report: SweepReport, target: Config) -> list[Problem]:
    """Why the deepest proxy's optimum cannot be carried to the target's depth."""
    depth, deepest, shallowest = target.model.n_layers, report.deepest, min(plan.depths)
    listed = ",".join(map(str, plan.depths))
    if target.model.depth_parametrization == "none":
        return [Problem(
            f"depth differs (proxies {listed}, target {depth} layers) under model.depth_parametrization=none",
            f"the target has {depth} layers, the deepest proxy (whose optimum is carried) {deepest}: without a depth "
            "parametrization the optimum moves with depth; set model.depth_parametrization=completep (and "
            "model.base_depth) in the proxies' config and the target's and sweep again, or sweep the proxies at the "
            "target's depth")]
    more = f"`pretrain sweep {plan.config} ... --depths {listed},{deepest * 2} --out {plan.dir}`"
    if not shallowest / MAX_DEPTH_REACH <= depth <= deepest * MAX_DEPTH_REACH:
        return [Problem(f"depth {depth} beyond {MAX_DEPTH_REACH:g}x the swept",
                        f"the target has {depth} layers, more than {MAX_DEPTH_REACH:g}x outside the swept "
                        f"{shallowest}..{deepest}: the depth drift is not trusted that far; sweep depths nearer the "
                        f"target's, e.g. {more}")]
    if report.depth_drift is None:
        return [Problem(f"one depth swept ({deepest}, target {depth})",
                        f"the target has {depth} layers and the sweep measured the optimum at {deepest} only: "
                        "whether it holds across depth is not measured; sweep two or more depths, e.g. "
                        f"`pretrain sweep {plan.config} ... --depths {max(1, deepest // 2)},{deepest} --out "
                        f"{plan.dir}`")]
    if report.depth_drift.verdict != "transfers":
        return [_drift_problem(report.depth_drift, "depth")]
    return []


def _width_dof(report: SweepReport) -> int:
    return 0 if report.drift_interval is None else report.drift_interval.dof


def _drift_terms(drift: Drift | None, doublings: float, name: str, fit: str) -> list[ErrorTerm]:
    """A drift's part of the target's error (`fit` "width" or "depth"; `drift` None where nothing measured it): μP
    (CompleteP) predicts none, but the sweep bounds it only to its standard error per doubling, which the
    doublings from the proxy to the target multiply. None at the proxy's width (depth)."""
    if doublings == 0:
        return []
    if drift is None or drift.leverage is None:
        return [ErrorTerm(name, None, None, 0, fit)]
    return [ErrorTerm(name, drift.leverage * doublings**2, drift.sigma, drift.interval.dof, fit)]


def _predicted(result: Transfer, plan: Plan, report: SweepReport, terms: list[ErrorTerm], tokens: int,
               max_interval: float, prior: NoisePrior | None) -> Transfer:
    """`result` with the prediction interval of the target's log2 lr* from `terms`, in its note, and the problems
    it raises: no interval, or one wider than `max_interval` (log2)."""
    interval = prediction_interval(math.log2(result.lr), terms, prior)
    problems = list(result.problems)
    lacking = {term.fit: term.dof for term in terms if term.dof is not None and term.dof < MIN_DOF}
    # The width or depth fit alone lacking: its verdict is undetermined too, and that problem names the sweep that
    # fixes both.
    if lacking and not set(lacking) <= {"width", "depth"}:
        beta = {"horizon": f" (β = {report.horizon_fit.beta:.2f} is undetermined)"} if "horizon" in lacking else {}
        fits = " and ".join(f"the {fit} fit has {dof} residual dof{beta.get(fit, '')}" for fit, dof in lacking.items())
        problems.append(Problem(
            f"interval undetermined ({', '.join(f'{fit} fit at {dof} dof' for fit, dof in lacking.items())})",
            f"the target's log2 lr has no {interval.confidence:.0%} interval: {fits}, and an interval needs "
            f"{MIN_DOF}; sweep {_more_dof(plan, report, tokens)}"))
    elif interval.determined and interval.high - interval.low > max_interval:
        share = ", ".join(f"{t.name} {math.sqrt(t.variance(prior)):.2f}" for t in terms)
        top = max(terms, key=lambda t: t.variance(prior))
        problems.append(Problem(
            f"interval {interval.high - interval.low:.2f} log2 wide (--max-interval {max_interval:g})",
            f"the target's log2 lr is {interval.estimate:.2f}, {interval.confidence:.0%} interval "
            f"[{interval.low:.2f}, {interval.high:.2f}]: {interval.high - interval.low:.2f} wide, more than "
            f"--max-interval {max_interval:g} (standard deviations, log2: {share}); to narrow {top.name}, sweep "
            f"{_narrowing(plan, report, top, tokens)}"))
    return replace(result, note=f"{result.note}, log2 lr {interval.estimate:.2f}, {interval}", problems=problems,
                   interval=interval)


def _more_dof(plan: Plan, report: SweepReport, tokens: int) -> str:
    """The smallest growth of the sweep (more horizons, more widths) that gives both fits MIN_DOF residual dof,
    as a command line: a horizon adds a point per width, a width one per horizon, each fit an intercept per
    group (the width fit's groups are horizons, the horizon fit's widths)."""
    inside = [o for o in report.optima if not o.on_edge]
    widths, horizons = len({o.width for o in inside}), len({o.steps for o in inside})
    width_dof, horizon_dof = _width_dof(report), report.horizon_fit.dof
    growths = sorted(((w, h) for w in range(4) for h in range(4) if w or h),
                     key=lambda g: (widths + g[0]) * (horizons + g[1]))
    for more_widths, more_horizons in growths:
        points = (widths + more_widths) * (horizons + more_horizons) - widths * horizons
        if min(width_dof + points - more_horizons, horizon_dof + points - more_widths) >= MIN_DOF:
            break
    what = " and ".join(_more(n, noun) for n, noun in ((more_horizons, "horizon"), (more_widths, "width")) if n)
    return f"{what}: {_sweep_command(plan, _wider(plan, more_widths), _longer(plan, tokens, more_horizons))}"


def _narrowing(plan: Plan, report: SweepReport, term: ErrorTerm, tokens: int) -> str:
    """The sweep that narrows `term` most directly, as a command line."""
    if term.name == DRIFT:  # a wider proxy: fewer doublings to the target, and a longer lever on the drift
        return f"a wider proxy: {_sweep_command(plan, _wider(plan, 1))}"
    if term.name == DEPTH_DRIFT:  # likewise in depth
        return f"a deeper proxy: {_sweep_command(plan, depths=[max(plan.depths) * 2])}"
    if term.name in (LINE, REACH):  # a horizon nearer the target's: a shorter extrapolation
        return f"a horizon nearer the target's: {_sweep_command(plan, steps=_longer(plan, tokens, 1))}"
    # An optimum's scatter: a parabola through more points around each optimum places it more precisely.
    fitted = [math.log2(o.lr) for o in report.optima if not o.on_edge] or [math.log2(o.lr) for o in report.optima]
    low, high = math.floor((min(fitted) - 1) * 4) / 4, math.ceil((max(fitted) + 1) * 4) / 4
    return f"more LRs around the optima: {_sweep_command(plan, lrs=f'2^{low:g}:2^{high:g}:0.25')}"


def _wider(plan: Plan, n: int) -> list[int]:
    """`n` widths doubling past the widest swept."""
    return [max(plan.widths) * 2**k for k in range(1, n + 1)]


def _longer(plan: Plan, tokens: int, n: int) -> list[int]:
    """`n` horizons (steps) doubling from the swept ones towards the target's `tokens`."""
    if tokens >= plan.tokens(min(plan.steps)):
        return [max(plan.steps) * 2**k for k in range(1, n + 1)]
    return [max(1, min(plan.steps) // 2**k) for k in range(1, n + 1)]


def _sweep_command(plan: Plan, widths: list[int] = (), steps: list[int] = (), lrs: str | None = None,
                   depths: list[int] = ()) -> str:
    """`pretrain sweep` growing the sweep in its directory by `widths`, `steps`, `lrs` and `depths`."""
    depths = sorted({*plan.depths, *depths})
    return (f"`pretrain sweep {plan.config} --widths {','.join(map(str, sorted({*plan.widths, *widths})))} --lrs "
            f"{lrs or _lrs_text(plan.lrs)} --steps {','.join(map(str, sorted({*plan.steps, *steps})))} "
            + (f"--depths {','.join(map(str, depths))} " if len(depths) > 1 else "")
            + (f"--batches {','.join(map(str, plan.batches))} " if len(plan.batches) > 1 else "")
            + ("--equal-tokens " if plan.equal_tokens else "") + f"--out {plan.dir}`")


def _lrs_text(lrs: list[float]) -> str:
    """The swept LRs as --lrs takes them: LO:HI:STEP on an even log2 grid, else the list."""
    x = [round(math.log2(lr), 6) for lr in lrs]
    spacings = {round(b - a, 6) for a, b in zip(x, x[1:])}
    if len(spacings) == 1:
        return f"2^{x[0]:g}:2^{x[-1]:g}:{spacings.pop():g}"
    return ",".join(f"{lr:.6g}" for lr in lrs)


def _drift_problem(drift: Drift, axis: str) -> Problem:
    """Why the sweep's verdict across `axis` (width or depth) stops the transfer: a drift, or a verdict the sweep
    cannot reach."""
    if drift.verdict == "drifts":
        return Problem(f"drift {drift.slope:+.2f} log2 per {axis} doubling",
                       f"the sweep's optimum drifts by {drift.slope:+.2f} log2 per doubling of {axis} "
                       f"({drift.interval}): {drift.reason}")
    slope = "" if drift.slope is None else f" (drift {drift.slope:+.2f} log2 per doubling, {drift.interval})"
    return Problem(f"{axis} transfer undetermined", f"the sweep cannot tell whether its optimum moves with {axis}"
                   f"{slope}: {drift.reason}")


def _ladder(plan: Plan, tokens: int) -> str:
    """Three horizons doubling up to the swept one (or to the target's, if shorter)."""
    top = min(max(plan.steps), max(1, round(tokens / plan.tokens_per_step)))
    return ",".join(str(max(1, top // 4 * k)) for k in (1, 2, 4))


def review(plan: Plan, report: SweepReport, target: Config) -> tuple[Transfer | None, list[Problem]]:
    """What `apply-lr` would do for `target`: the transfer and its problems, or no transfer and the error that
    stops it before any check (the sweep has no optimum yet), which --force cannot override."""
    try:
        result = transfer(plan, report, target, prior=seed_noise())
    except ConfigError as err:
        return None, [Problem("cannot transfer", str(err))]
    return result, result.problems


def describe(result: Transfer) -> str:
    """The LR and how it was obtained, as `apply-lr` and `report --target` print it."""
    return f"optim.lr={result.lr:.4g} ({result.case}: {result.note})"


def summary(result: Transfer) -> dict:
    """What `apply-lr --json` prints: the interval null where there is none."""
    interval = result.interval
    return {"lr": result.lr, "log2_lr": math.log2(result.lr) if interval is None else interval.estimate,
            "interval_log2": [interval.low, interval.high] if interval and interval.determined else None,
            "case": result.case, "problems": [p.detail for p in result.problems]}


class Refused(ConfigError):
    """apply-lr's refusal, in one line; `result` is the transfer refused."""

    def __init__(self, message: str, result: Transfer):
        super().__init__(message)
        self.result = result


def apply_lr(sweep_dir: str | Path, target_path: str | Path, force: bool = False, write: bool = True,
             max_interval: float = MAX_INTERVAL) -> Transfer:
    """Decide the target's LR from the sweep, then write it into the target's optim.lr (with `write`).
    Raises Refused listing the problems unless `force`; forced, the note names the checks it overrode.
    The target is edited in place: it may not lie in the sweep (its config snapshot) or in the installed package
    (a wheel's bundled configs; a checkout's configs/ are the user's)."""
    if write:
        package = Path(__file__).resolve().parents[1]
        target_path = check_location(target_path, "TARGET", Kind.FILE, [("the sweep", sweep_dir),
                                                                        ("the installed package", package)])
    plan = load_plan(sweep_dir)
    result = transfer(plan, build_report(plan), load_config(target_path), max_interval, seed_noise())
    result = replace(result, lr=float(f"{result.lr:.4g}"))
    if result.problems:
        if not force:
            raise Refused(f"not applying the LR of sweep {plan.name} to {target_path}: "
                          + "; ".join(p.detail for p in result.problems) + ". Pass --force to apply it anyway.", result)
        result = replace(result, note=result.note + " (applied with --force over: "
                         + "; ".join(p.brief for p in result.problems) + ")")
    if write:
        set_optim_lr(Path(target_path), result.lr, f"μ-transferred from {plan.name}: {result.note}")
    return result


def set_optim_lr(path: Path, lr: float, note: str) -> None:
    """Set `optim.lr` in a YAML file by editing its one line, so comments and layout survive."""
    text = path.read_text()
    edited = _with_lr_line(text.splitlines(), f"lr: {lr}  # {note}")
    expected = yaml.safe_load(text) or {}
    expected.setdefault("optim", {})["lr"] = lr
    if edited is None or yaml.safe_load(edited) != expected:
        raise ConfigError(f"{path}: could not set optim.lr by a line edit; set it by hand to {lr}")
    write_text(path, edited)


def _with_lr_line(lines: list[str], entry: str) -> str | None:
    """`lines` with `entry` as the optim section's lr line (replaced, inserted, or in a new section)."""
    start = next((i for i, line in enumerate(lines) if re.match(r"optim\s*:", line)), None)
    if start is None:
        return "\n".join([*lines, "optim:", f"  {entry}"]) + "\n"
    if not re.fullmatch(r"optim\s*:\s*(#.*)?", lines[start]):
        return None
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
        end += 1
    keys = [i for i in range(start + 1, end) if re.match(r"\s+\w+\s*:", lines[i])]
    indent = re.match(r"\s+", lines[keys[0]]).group() if keys else "  "
    hit = next((i for i in keys if re.match(r"\s+lr\s*:", lines[i])), None)
    if hit is None:
        lines = [*lines[:start + 1], indent + entry, *lines[start + 1:]]
    else:
        lines = [*lines[:hit], indent + entry, *lines[hit + 1:]]
    return "\n".join(lines) + "\n"


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
