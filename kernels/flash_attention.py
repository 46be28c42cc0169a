"""Causal flash attention with grouped-query heads: softmax(scale * q k^T + causal mask) v."""

import math

import torch
import torch.nn.functional as F


def flash_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, scale: float | None = None
) -> torch.Tensor:
    """Plain PyTorch attention. q (B, H, S, D); k, v (B, KVH, S, D) with KVH dividing H."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=k.shape[1] != q.shape[1])


def flash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, scale: float | None = None
) -> torch.Tensor:
    """Attention of q (B, H, S, D) over k, v (B, KVH, S, D); `scale` defaults to 1/sqrt(D)."""
    return flash_attention_reference(q, k, v, causal, scale)
