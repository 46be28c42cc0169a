"""AdamW or Lion with one param group per μP role, and LR schedules that only ever multiply.

Each group carries its own `lr_scale` (the μP multiplier from the table) and weight decay (from `mup`); the
schedule sets `lr = optim.lr · schedule(step) · lr_scale` on every group. Nothing assigns an absolute LR to a
group, so μP cannot be erased by a schedule.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from ..config import ModelConfig, OptimConfig
from ..model import mup
from ..model.mup import Role
from .lion import Lion


def build_param_groups(model: torch.nn.Module, model_cfg: ModelConfig, cfg: OptimConfig) -> list[dict]:
    """One named group per role present in the model, each with its Adam ε; every parameter lands in exactly one
    group. A role whose parameters inside and outside the residual blocks get different ε (the norm gains under
    completep: the blocks' and the final norm's) is two groups, the second named `<role>_outside_blocks`."""
    params = dict(model.named_parameters())
    inside = model.block_params()
    by_role: dict[Role, dict[float, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, role in model.param_roles().items():
        by_role[role][mup.eps_multiplier(role, model_cfg, name in inside)].append(name)
    groups = []
    for role in Role:  # a fixed order, so checkpoints line up across runs
        split = by_role.get(role, {})  # only roles present get a group: DeepSpeed drops empty groups
        for eps_scale, names in split.items():
            lr_scale = mup.lr_multiplier(role, model_cfg)
            groups.append({
                "name": f"{role.value}_outside_blocks" if len(split) > 1 and names[0] not in inside else role.value,
                "params": [params[n] for n in names],
                "lr_scale": lr_scale,
                "lr": cfg.lr * lr_scale,
                "eps": cfg.eps * eps_scale,
                "weight_decay": mup.weight_decay(role, model_cfg, cfg),
            })
    grouped = [id(p) for g in groups for p in g["params"]]
    if sorted(grouped) != sorted(map(id, params.values())):
        raise RuntimeError("the μP param groups do not hold every parameter exactly once")
    return groups


def build_optimizer(model: torch.nn.Module, model_cfg: ModelConfig, cfg: OptimConfig) -> torch.optim.Optimizer:
    """`optim.name`'s optimizer over the μP groups: AdamW, or Lion (which has no ε)."""
    groups = build_param_groups(model, model_cfg, cfg)
    if cfg.name == "lion":
        return Lion(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def lr_schedule(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """The multiplier on every group's peak LR at `step` (0-based): linear warmup, then decay to the floor."""
    warmup = cfg.warmup(total_steps)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if cfg.schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        decay = 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay


def set_lr(optimizer: torch.optim.Optimizer, cfg: OptimConfig, multiplier: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * multiplier * group["lr_scale"]
