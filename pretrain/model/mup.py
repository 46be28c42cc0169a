"""The μP recipe, in one table, and every rule that depends on width, depth or parametrization.

Every parameter of the model carries a `Role`. For each role and parametrization the table gives its init
(a normal with mean and std) and its Adam LR multiplier, as functions of the model's widths; its depth column
gives the factors the depth parametrization adds. The model's `init_weights` and residual branches, the
optimizer's param groups, `pretrain inspect`, the reports and the HF export all ask this module; nothing else
in the code base does μP arithmetic.

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
    bias        0 (constant)     α        0              α

Gains (a vector, or one scalar per norm) and biases (`ModelConfig.bias`, on the blocks' projections) have no
fan-in (each entry scales or shifts one feature): μP treats them like the embedding, LR α at every width.

The LR column holds for Adam and Lion alike: both take a step of about the same size in every entry (Adam's
normalized moment, Lion's sign), so a hidden matrix's update grows with its fan-in the same way and is scaled by
1/m the same way.

Attention logits are scaled by 1/D under μP and 1/sqrt(D) under SP (`ModelConfig.qk_scale`). The readout
init can be swapped on its own too (`ModelConfig.readout_init`: the paper's "SP readout init" ablation).

Depth (`ModelConfig.depth_parametrization`): `none` adds every residual branch as it is, so the optimum LR
moves with depth. `completep` (Dey et al. 2025, "Don't be lazy: CompleteP enables compute-efficient deep
transformers", α = 1 in the depth-μP family) multiplies each branch by 1/m_L, x + (1/m_L)·branch(norm(x)),
and scales the Adam ε of the parameters inside the residual blocks:

    m_L = n_layers / base_depth   (depth multiplier; at m_L = 1 completep equals none)

    role                 completep: init   Adam LR   Adam ε
    embedding                       ×1     ×1        ×1
    query ... mlp_out               ×1     ×1        ×1/(m·m_L)
    readout                         ×1     ×1        ×1
    gain, bias in a block           ×1     ×1        ×1/(m·m_L)
    gain of the final norm          ×1     ×1        ×1

At α = 1 the depth factor of the hidden LR, m_L^(α-1), is 1 and the init keeps its width rule: the branch
multiplier alone makes each block's contribution, and its update, O(1/L). The ε factor keeps Adam's ε as small
against the hidden gradients, which shrink by 1/(m·m_L), as at the base shape.

Weight decay (off by default) skips the gains and biases. "Independent" decay shrinks every weight by s(t)·λ per
step whatever its μP LR; "coupled" decay is AdamW's lr·λ, which ties it to the μP LR and broke transfer in the
paper. Exporting to Llama folds the attention scale into the query weights (Llama scales by 1/sqrt(D)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Literal

import torch

from ..config import ModelConfig, OptimConfig


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
    BIAS = "bias"


@dataclass(frozen=True)
class DepthRule:
    """A role's factors on its width rule's init std and Adam LR as the model deepens, and on the base Adam ε
    of its parameters inside the residual blocks (outside them ε keeps its base value)."""

    std: Callable[[ModelConfig], float]
    lr: Callable[[ModelConfig], float]
    eps: Callable[[ModelConfig], float]


@dataclass(frozen=True)
class Rule:
    std: Callable[[ModelConfig], float]  # init std; the mean is 0 except for gains
    lr: Callable[[ModelConfig], float]  # multiplier on the base LR α
    mean: float = 0.0


def _fan_in(width: Callable[[ModelConfig], int]) -> Callable[[ModelConfig], float]:
    return lambda c: width(c) ** -0.5


def _const(value: float) -> Callable[[ModelConfig], float]:
    return lambda c: value


def width_multiplier(cfg: ModelConfig) -> float:
    """m = d_model / base_width: 1 at the base width, where μP and SP coincide."""
    return cfg.d_model / cfg.base_width


def depth_multiplier(cfg: ModelConfig) -> float:
    """m_L = n_layers / base_depth: 1 at the base depth, where completep and none coincide."""
    return cfg.n_layers / cfg.base_depth


def attention_kind(cfg: ModelConfig) -> Literal["mup", "sp"]:
    """Which attention scale the model uses: the parametrization's, unless `qk_scale` picks one."""
    return cfg.parametrization if cfg.qk_scale == "auto" else cfg.qk_scale


def readout_kind(cfg: ModelConfig) -> Literal["mup", "sp"]:
    """Which readout init the model uses: the parametrization's, unless `readout_init` picks one."""
    return cfg.parametrization if cfg.readout_init == "auto" else cfg.readout_init


def _per_width(c: ModelConfig) -> float:
    return 1.0 / width_multiplier(c)


def _readout_std(c: ModelConfig) -> float:
    return 1.0 / c.d_model if readout_kind(c) == "mup" else c.d_model**-0.5


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
    Role.BIAS: Rule(std=_zero, lr=_one),
}

SP: dict[Role, Rule] = {
    **{role: Rule(std=rule.std, lr=_one, mean=rule.mean) for role, rule in MUP.items()},
    Role.QUERY: Rule(std=_d, lr=_one),
    Role.READOUT: Rule(std=_readout_std, lr=_one),
}

TABLES = {"mup": MUP, "sp": SP}


def _hidden_eps(c: ModelConfig) -> float:
    return 1.0 / (width_multiplier(c) * depth_multiplier(c))


_unchanged = DepthRule(std=_one, lr=_one, eps=_one)
_hidden = DepthRule(std=_one, lr=_one, eps=_hidden_eps)
DEPTH_TABLES: dict[str, dict[Role, DepthRule]] = {
    "none": {role: _unchanged for role in Role},
    "completep": {**{role: _hidden for role in Role}, Role.EMBEDDING: _unchanged, Role.READOUT: _unchanged},
}
RESIDUAL = {"none": _one, "completep": lambda c: 1.0 / depth_multiplier(c)}


def rule(role: Role, cfg: ModelConfig) -> Rule:
    return TABLES[cfg.parametrization][role]


def depth_rule(role: Role, cfg: ModelConfig) -> DepthRule:
    return DEPTH_TABLES[cfg.depth_parametrization][role]


def init_std(role: Role, cfg: ModelConfig) -> float:
    return rule(role, cfg).std(cfg) * depth_rule(role, cfg).std(cfg)


def lr_multiplier(role: Role, cfg: ModelConfig) -> float:
    return rule(role, cfg).lr(cfg) * depth_rule(role, cfg).lr(cfg)


def eps_multiplier(role: Role, cfg: ModelConfig, in_blocks: bool) -> float:
    """The factor on the base Adam ε of a parameter of `role`, inside the residual blocks or not."""
    return depth_rule(role, cfg).eps(cfg) if in_blocks else 1.0


def residual_multiplier(cfg: ModelConfig) -> float:
    """What each residual branch's output is multiplied by before it joins the stream (1/m_L under completep).
    Exporting to Llama folds it into the attention-out and MLP-down weights, the branches' last linear maps."""
    return RESIDUAL[cfg.depth_parametrization](cfg)


def initialize(tensor: torch.Tensor, role: Role, cfg: ModelConfig) -> torch.Tensor:
    """Draw `tensor` in place from its role's init, N(mean, std²)."""
    return tensor.normal_(rule(role, cfg).mean, init_std(role, cfg))


def attention_scale(cfg: ModelConfig) -> float:
    """Softmax temperature for q·k: 1/D keeps logits O(1) as q and k align with width (μP)."""
    return 1.0 / cfg.head_dim if attention_kind(cfg) == "mup" else 1.0 / math.sqrt(cfg.head_dim)


NO_WEIGHT_DECAY = frozenset({Role.GAIN, Role.BIAS})


def weight_decay(role: Role, model_cfg: ModelConfig, cfg: OptimConfig) -> float:
    """The `weight_decay` of a role's group, whose update (AdamW's or Lion's) subtracts lr·weight_decay·θ.

    Independent decay: lr·weight_decay = s(t)·λ for every group, i.e. weight_decay = λ / peak LR of the group.
    Coupled decay: weight_decay = λ, so the decay follows the group's μP LR."""
    if cfg.weight_decay == 0 or role in NO_WEIGHT_DECAY:
        return 0.0
    if cfg.weight_decay_mode == "coupled":
        return cfg.weight_decay
    return cfg.weight_decay / (cfg.lr * lr_multiplier(role, model_cfg))


def absent_gain(cfg: ModelConfig) -> torch.Tensor:
    """What a norm without a trainable gain multiplies by, for formats that always have one: the gain's
    init, ones (mean 1, std 0)."""
    return initialize(torch.empty(cfg.d_model), Role.GAIN, cfg)


def hf_query_fold(cfg: ModelConfig) -> float:
    """The factor folded into the query weights on export: Llama scales q·k by 1/sqrt(D), we by
    `attention_scale`, and attention is linear in q (D^-1/2 under μP, 1 under SP)."""
    return attention_scale(cfg) * math.sqrt(cfg.head_dim)
