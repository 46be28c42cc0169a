"""`pretrain apply-lr`: carry a sweep's optimum LR over to a target config, where transfer applies.

μP carries the optimum across width; it says nothing about the training horizon or the batch, so those are
decided per axis, from the target's token horizon (steps × global batch × seq_len):
- the same horizon as a swept one (within 10%): the widest proxy's optimum there;
- another horizon, with two or more swept: the widest proxy's optimum extrapolated along the sweep's horizon
  fit (log2 lr* falls by β per doubling of tokens), refused past 100x the longest swept horizon or when β is
  undetermined;
- another horizon with one swept: refused, naming the sweep that would measure it;
- another global batch (tokens per step) than the proxies': refused (nothing here measures how the optimum
  moves with the batch: sweep the proxies at the target's batch).
Beyond that, transfer is only claimed for a target that is the swept proxy made wider (and trained on other
data or hardware), under a recipe the paper found to transfer, from a sweep whose optimum transfers across
widths (the report's verdict). Anything else is refused with the reason; `--force` applies the LR anyway, and
the config line written with it says how it was obtained and which checks it overrode. `pretrain report
--target` lists the same refusals before you apply (`review`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ..config import Config, load_config
from ..errors import ConfigError
from ..fileio import write_text
from ..model import mup
from ..outputs import Kind, check_location
from .report import SweepReport, build_report, extrapolation
from .sweep import Plan, load_plan

# May differ between proxy and target: the width and what follows from it (MLP width and its rounding, KV
# heads), and settings that leave the math alone (kernels, precision, logging). The run's length and batch
# (train.*) are judged by their tokens, below; the warmup follows the run's length.
FREE_KEYS = ("model.d_model", "model.d_ff", "model.ffn_multiple_of", "model.n_kv_heads", "model.use_kernels",
             "model.loss_chunk", "optim.lr", "optim.warmup_steps", "optim.warmup_fraction")
FREE_SECTIONS = ("data", "train", "deepspeed", "wandb")
SAME_HORIZON = 0.10  # a target within 10% of a swept horizon's tokens uses that horizon's optimum
MAX_EXTRAPOLATION = 100.0  # farthest reach of the horizon fit past the longest swept horizon


@dataclass(frozen=True)
class Problem:
    """A reason not to apply the LR."""

    brief: str  # a few words naming it, for the note a forced LR is written with
    detail: str  # what is wrong and what would fix it


@dataclass
class Transfer:
    lr: float  # the LR the target should train at
    case: str  # "same horizon", "extrapolated" or "one horizon" (the naive reuse, only with --force)
    note: str  # how it was obtained, for the config line
    problems: list[Problem]  # why it should not be used; empty when transfer applies


def breaking_settings(cfg: Config) -> list[Problem]:
    """Settings the paper found to break μ-transfer. (It also found Lion to break it; we have no Lion.)"""
    model, optim = cfg.model, cfg.optim
    found = []
    if model.parametrization == "sp":
        found.append(("model.parametrization=sp", "under the standard parametrization the optimal LR shrinks "
                                                  "with width"))
    if model.norm_gains:
        found.append(("model.norm_gains=true", "trainable RMSNorm gains broke transfer in the paper"))
    if model.parametrization == "mup" and mup.attention_kind(model) == "sp":
        found.append(("model.qk_scale=sp", "the 1/sqrt(head_dim) attention scale broke transfer in the paper; "
                                           "use mup"))
    if optim.weight_decay > 0 and optim.weight_decay_mode == "coupled":
        found.append(("optim.weight_decay_mode=coupled", "LR-coupled weight decay broke transfer in the paper; "
                                                         "use independent"))
    return [Problem(setting, f"{setting}: {why}") for setting, why in found]


def config_differences(proxy: Config, target: Config) -> list[str]:
    """Every setting outside FREE_KEYS and FREE_SECTIONS where the target differs from the proxy."""
    before, after = _flatten(proxy.to_dict()), _flatten(target.to_dict())
    return [f"{key}: proxy {before[key]!r}, target {after[key]!r}" for key in before
            if before[key] != after[key] and key not in FREE_KEYS and key.split(".")[0] not in FREE_SECTIONS]


def transfer(plan: Plan, report: SweepReport, target: Config) -> Transfer:
    """The LR for `target` from the sweep, the case that gave it, and every reason to refuse it."""
    if not report.optima:
        raise ConfigError(f"sweep {report.name} has no optimum yet; run its points first")
    problems = breaking_settings(target)
    proxy = load_config(plan.config)
    problems += [Problem(d, f"differs from the proxy in {d}") for d in config_differences(proxy, target)]
    if report.verdict != "transfers":
        problems.append(_width_problem(report))
    widest = max(o.width for o in report.optima)
    problems += [Problem(f"width {o.width}'s optimum on the grid edge", f"width {o.width}: the optimum sits on the "
                         "grid edge") for o in report.optima if o.on_edge and o.width == widest]
    if target.train.global_batch_size is None:
        problems.append(Problem("train.global_batch_size unset", "train.global_batch_size is not set, so the target's "
                                "tokens per step depend on the GPU count; set it to compare the target's batch and "
                                "horizon with the sweep's"))
    tokens_per_step = target.tokens_per_step()
    if tokens_per_step != plan.tokens_per_step:
        problems.append(Problem(
            f"batch differs (proxy {plan.tokens_per_step:,}, target {tokens_per_step:,} tokens per step)",
            f"the target trains on {tokens_per_step:,} tokens per step, the proxies on {plan.tokens_per_step:,}: "
            "the optimum moves with the batch and nothing here measures how; sweep the proxies at the target's "
            "global batch × seq_len"))
    tokens = target.training_tokens()
    swept = {steps: plan.tokens(steps) for steps in plan.steps}
    nearest = min(swept, key=lambda steps: abs(math.log(tokens / swept[steps])))
    at_nearest = report.optimum(widest, nearest)
    if abs(tokens / swept[nearest] - 1) <= SAME_HORIZON and at_nearest is not None:
        note = f"width {widest}, fitted 2^{math.log2(at_nearest.lr):.2f} at {swept[nearest]:.2g} tokens"
        return Transfer(at_nearest.lr, "same horizon", note, problems)
    if report.horizon_fit is None:
        problems.append(Problem(
            f"one horizon swept ({swept[nearest]:.3g} tokens, target {tokens:.3g})",
            f"the target trains {tokens:.3g} tokens, the sweep measured the optimum at "
            f"{', '.join(f'{t:.3g}' for t in swept.values())} tokens only, and the optimum moves with the horizon; "
            f"sweep two or more horizons around it, e.g. `pretrain sweep {plan.config} --widths "
            f"{','.join(map(str, plan.widths))} --lrs ... --steps {_ladder(plan, tokens)}`"))
        lr = at_nearest.lr if at_nearest else report.optima[-1].lr
        note = f"width {widest}, 2^{math.log2(lr):.2f} at {swept[nearest]:.2g} tokens, not corrected for the horizon"
        return Transfer(lr, "one horizon", note, problems)
    e = extrapolation(report, tokens)
    fit = report.horizon_fit
    if not fit.determined:
        se = "no standard error" if fit.beta_se is None else f"standard error {fit.beta_se:.2f}"
        problems.append(Problem(f"β {fit.beta:.2f} undetermined",
                                f"the horizon fit's β = {fit.beta:.2f} is undetermined ({se}, more than half of β)"))
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
    return Transfer(e["lr"], "extrapolated", note, problems)


def _width_problem(report: SweepReport) -> Problem:
    """Why the sweep's verdict across widths stops the transfer: a drift, or a verdict the sweep cannot reach."""
    if report.verdict == "drifts":
        return Problem(f"drift {report.drift:+.2f} log2 per width doubling",
                       f"the sweep's optimum drifts by {report.drift:+.2f} log2 per doubling of width "
                       f"({report.drift_interval}): {report.verdict_reason}")
    drift = "" if report.drift is None else f" (drift {report.drift:+.2f} log2 per doubling, {report.drift_interval})"
    return Problem("width transfer undetermined", f"the sweep cannot tell whether its optimum moves with width"
                   f"{drift}: {report.verdict_reason}")


def _ladder(plan: Plan, tokens: int) -> str:
    """Three horizons doubling up to the swept one (or to the target's, if shorter)."""
    top = min(max(plan.steps), max(1, round(tokens / plan.tokens_per_step)))
    return ",".join(str(max(1, top // 4 * k)) for k in (1, 2, 4))


def review(plan: Plan, report: SweepReport, target: Config) -> list[Problem]:
    """Everything `apply-lr` would refuse for `target`: the problems of `transfer`, or the error that stops it
    before any check (the sweep has no optimum yet), which --force cannot override."""
    try:
        return transfer(plan, report, target).problems
    except ConfigError as err:
        return [Problem("cannot transfer", str(err))]


def apply_lr(sweep_dir: str | Path, target_path: str | Path, force: bool = False, write: bool = True) -> Transfer:
    """Decide the target's LR from the sweep, then write it into the target's optim.lr (with `write`).
    Raises ConfigError listing the problems unless `force`; forced, the note names the checks it overrode.
    The target is edited in place: it may not lie in the sweep (its config snapshot) or in the installed package
    (a wheel's bundled configs; a checkout's configs/ are the user's)."""
    if write:
        package = Path(__file__).resolve().parents[1]
        target_path = check_location(target_path, "TARGET", Kind.FILE, [("the sweep", sweep_dir),
                                                                        ("the installed package", package)])
    plan = load_plan(sweep_dir)
    result = transfer(plan, build_report(plan), load_config(target_path))
    note = result.note
    if result.problems:
        if not force:
            raise ConfigError(f"not applying the LR of sweep {plan.name} to {target_path}: "
                              + "; ".join(p.detail for p in result.problems) + ". Pass --force to apply it anyway.")
        note += f" (applied with --force over: {'; '.join(p.brief for p in result.problems)})"
    result = replace(result, lr=float(f"{result.lr:.4g}"), note=note)
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
