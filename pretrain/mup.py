"""The μP recipe, in one table.

Every parameter of the model carries a `Role`. For each role and parametrization the table gives its init
(a normal with mean and std) and its Adam LR multiplier, as functions of the model's widths. The model's
`init_weights`, the optimizer's param groups, `pretrain inspect`, the reports and the HF export all read
this table; nothing else in the code base does μP arithmetic.

    m = d_model / base_width      (width multiplier; at m = 1 μP equals SP)
    d = d_model, F = MLP hidden width, H·D = heads × head_dim

    role        μP init          μP LR    SP init        SP LR
    embedding   N(0, 1)          α        N(0, 1)        α
    query       0 or d^-1/2      α/m      d^-1/2         α
    key, value  d^-1/2           α/m      d^-1/2         α
    attn_out    (H·D)^-1/2       α/m      (H·D)^-1/2     α
    mlp_in      d^-1/2           α/m      d^-1/2         α
    mlp_out     F^-1/2           α/m      F^-1/2         α
    readout     1/d              α/m      d^-1/2         α
    gain        1 (constant)     α        1              α

Attention logits are scaled by 1/D under μP and 1/sqrt(D) under SP (`ModelConfig.qk_scale`). The readout
init can be swapped on its own too (`ModelConfig.readout_init`: the paper's "SP readout init" ablation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch

from .config import ModelConfig


class Role(str, Enum):
    EMBEDDING = "embedding"
    QUERY = "query"
    KEY = "key"
    VALUE = "value"
    ATTN_OUT = "attn_out"
    MLP_IN = "mlp_in"
    MLP_OUT = "mlp_out"
    READOUT = "readout"
    GAIN = "gain"


@dataclass(frozen=True)
class Rule:
    std: Callable[[ModelConfig], float]  # init std; the mean is 0 except for gains
    lr: Callable[[ModelConfig], float]  # multiplier on the base LR α
    mean: float = 0.0


def _fan_in(width: Callable[[ModelConfig], int]) -> Callable[[ModelConfig], float]:
    return lambda c: width(c) ** -0.5


def _const(value: float) -> Callable[[ModelConfig], float]:
    return lambda c: value


def _per_width(c: ModelConfig) -> float:
    return 1.0 / c.width_mult


def _readout_std(c: ModelConfig) -> float:
    return 1.0 / c.d_model if c.readout_kind == "mup" else c.d_model**-0.5


_d = _fan_in(lambda c: c.d_model)
_one, _zero = _const(1.0), _const(0.0)

MUP: dict[Role, Rule] = {
    Role.EMBEDDING: Rule(std=_one, lr=_one),
    Role.QUERY: Rule(std=lambda c: 0.0 if c.zero_query else c.d_model**-0.5, lr=_per_width),
    Role.KEY: Rule(std=_d, lr=_per_width),
    Role.VALUE: Rule(std=_d, lr=_per_width),
    Role.ATTN_OUT: Rule(std=_fan_in(lambda c: c.n_heads * c.head_dim), lr=_per_width),
    Role.MLP_IN: Rule(std=_d, lr=_per_width),
    Role.MLP_OUT: Rule(std=_fan_in(lambda c: c.ffn_dim), lr=_per_width),
    Role.READOUT: Rule(std=_readout_std, lr=_per_width),
    Role.GAIN: Rule(std=_zero, lr=_one, mean=1.0),
}

SP: dict[Role, Rule] = {
    **{role: Rule(std=rule.std, lr=_one, mean=rule.mean) for role, rule in MUP.items()},
    Role.QUERY: Rule(std=_d, lr=_one),
    Role.READOUT: Rule(std=_readout_std, lr=_one),
}

TABLES = {"mup": MUP, "sp": SP}


def rule(role: Role, cfg: ModelConfig) -> Rule:
    return TABLES[cfg.parametrization][role]


def init_std(role: Role, cfg: ModelConfig) -> float:
    return rule(role, cfg).std(cfg)


def lr_multiplier(role: Role, cfg: ModelConfig) -> float:
    return rule(role, cfg).lr(cfg)


def initialize(tensor: torch.Tensor, role: Role, cfg: ModelConfig) -> torch.Tensor:
    """Draw `tensor` in place from its role's init, N(mean, std²)."""
    r = rule(role, cfg)
    return tensor.normal_(r.mean, r.std(cfg))


def attention_scale(cfg: ModelConfig) -> float:
    """Softmax temperature for q·k: 1/D keeps logits O(1) as q and k align with width (μP)."""
    return 1.0 / cfg.head_dim if cfg.attention_kind == "mup" else 1.0 / math.sqrt(cfg.head_dim)
