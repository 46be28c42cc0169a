"""`pretrain apply-lr`: carry a sweep's optimum LR over to a target config, where μ-transfer applies.

Transfer is only claimed for a target that is the swept proxy made wider (and trained longer, on a larger
batch or other data), under a recipe the paper found to transfer. Anything else is refused with the reason;
`--force` applies the LR anyway.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from ..config import Config, load_config
from ..errors import ConfigError
from ..model import mup
from .report import SweepReport, WidthOptimum, build_report
from .sweep import Plan, load_plan

# May differ between proxy and target: the width and what follows from it (MLP width and its rounding, KV
# heads), run length (warmup counts steps), batch, data, and settings that leave the math alone (kernels,
# precision, logging).
FREE_KEYS = ("model.d_model", "model.d_ff", "model.ffn_multiple_of", "model.n_kv_heads", "model.use_kernels",
             "optim.lr", "optim.warmup_steps")
FREE_SECTIONS = ("data", "train", "deepspeed", "wandb")


def breaking_settings(cfg: Config) -> list[str]:
    """Settings the paper found to break μ-transfer. (It also found Lion to break it; we have no Lion.)"""
    model, optim = cfg.model, cfg.optim
    found = []
    if model.parametrization == "sp":
        found.append("model.parametrization=sp: under the standard parametrization the optimal LR shrinks "
                     "with width")
    if model.norm_gains:
        found.append("model.norm_gains=true: trainable RMSNorm gains broke transfer in the paper")
    if model.parametrization == "mup" and mup.attention_kind(model) == "sp":
        found.append("model.qk_scale=sp: the 1/sqrt(head_dim) attention scale broke transfer in the paper; "
                     "use mup")
    if optim.weight_decay > 0 and optim.weight_decay_mode == "coupled":
        found.append("optim.weight_decay_mode=coupled: LR-coupled weight decay broke transfer in the paper; "
                     "use independent")
    return found


def config_differences(proxy: Config, target: Config) -> list[str]:
    """Every setting outside FREE_KEYS and FREE_SECTIONS where the target differs from the proxy."""
    before, after = _flatten(proxy.to_dict()), _flatten(target.to_dict())
    return [f"{key}: proxy {before[key]!r}, target {after[key]!r}" for key in before
            if before[key] != after[key] and key not in FREE_KEYS and key.split(".")[0] not in FREE_SECTIONS]


def transfer_problems(plan: Plan, report: SweepReport, target: Config) -> list[str]:
    """Why the sweep's optimum should not be used for the target; empty when transfer applies."""
    problems = breaking_settings(target)
    proxy = load_config(plan.config)
    problems += [f"differs from the proxy in {d}" for d in config_differences(proxy, target)]
    if report.verdict != "transfers":
        problems.append(f"the sweep's optimum {report.verdict}")
    problems += [f"width {o.width}: the optimum sits on the grid edge" for o in report.optima if o.on_edge]
    return problems


def transferred_optimum(report: SweepReport) -> WidthOptimum:
    """The widest proxy's optimum: the closest to the target, and the least affected by finite width."""
    if not report.optima:
        raise ConfigError(f"sweep {report.name} has no optimum yet; run its points first")
    return report.optima[-1]


def apply_lr(sweep_dir: str | Path, target_path: str | Path, force: bool = False, write: bool = True) -> str:
    """Check the target, then write the transferred LR into its optim.lr (with `write`); returns the
    override `optim.lr=...`. Raises ConfigError listing the problems unless `force`."""
    plan = load_plan(sweep_dir)
    report = build_report(plan)
    optimum = transferred_optimum(report)
    problems = transfer_problems(plan, report, load_config(target_path))
    if problems and not force:
        raise ConfigError(f"not applying the LR of sweep {plan.name} to {target_path}: " + "; ".join(problems)
                          + ". Pass --force to apply it anyway.")
    lr = float(f"{optimum.lr:.4g}")
    if write:
        note = f"μ-transferred from sweep {plan.name} (width {optimum.width}, 2^{math.log2(optimum.lr):.2f})"
        set_optim_lr(Path(target_path), lr, note)
    return f"optim.lr={lr}"


def set_optim_lr(path: Path, lr: float, note: str) -> None:
    """Set `optim.lr` in a YAML file by editing its one line, so comments and layout survive."""
    text = path.read_text()
    edited = _with_lr_line(text.splitlines(), f"lr: {lr}  # {note}")
    expected = yaml.safe_load(text) or {}
    expected.setdefault("optim", {})["lr"] = lr
    if edited is None or yaml.safe_load(edited) != expected:
        raise ConfigError(f"{path}: could not set optim.lr by a line edit; set it by hand to {lr}")
    path.write_text(edited)


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
