"""What the model costs to train: its parameters, counted on the meta device, and FLOPs per token.

    FLOPs per token (training: forward + backward = 3 × forward) = 6·N_mm + 6·L·T·H·D

N_mm counts every weight used in a matmul (all but the embedding, a lookup). The second term is attention's two
matmuls (q·kᵀ and p·v; 2 FLOPs per multiply-add, ×3 for training) over the causal half of the T×T scores, the
part a causal kernel computes: 3 · 2 · 2 · (T/2) · H·D per layer (L layers, T = seq_len, H·D = heads × head_dim).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Config, ModelConfig
from .transformer import Transformer


@dataclass(frozen=True)
class ParamCount:
    total: int
    non_embedding: int  # without the embedding and the readout (the paper's count)
    matmul: int  # weights used in a matmul: all but the embedding lookup
    largest_layer: int  # the most parameters one module holds (what ZeRO-3 gathers at once)


def count_params(model_cfg: ModelConfig, vocab_size: int) -> ParamCount:
    """Counted from the model itself, built on the meta device (no memory, any size)."""
    with torch.device("meta"):
        model = Transformer(model_cfg, vocab_size)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return ParamCount(total=model.num_params(), non_embedding=model.num_params(non_embedding=True),
                      matmul=model.num_params() - model.embed.weight.numel(), largest_layer=largest)


def attention_flops_per_token(cfg: Config) -> float:
    m = cfg.model
    return 6 * m.n_layers * cfg.data.seq_len * m.n_heads * m.head_dim


def flops_per_token(cfg: Config, params: ParamCount | None = None) -> float:
    """Training FLOPs per token: 6·N_mm + 6·L·T·H·D (see the module docstring)."""
    params = params or count_params(cfg.model, cfg.vocab_size)
    return 6 * params.matmul + attention_flops_per_token(cfg)
