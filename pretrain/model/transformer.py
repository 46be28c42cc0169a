"""A μP decoder-only transformer: pre-norm RMSNorm blocks, RoPE attention, SwiGLU MLP, untied readout.

The model does no scaling arithmetic of its own. Each module tags its parameters with a `Role`
(`ROLES`), and `init_weights` draws every parameter from the μP table in `pretrain.model.mup`; the optimizer
groups read the same table. The only μP choices visible here are the attention scale and the residual
branches' multiplier (1 unless CompleteP scales depth), both from the table.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain_kernels.flash_attention import flash_attention, flash_attention_reference
from pretrain_kernels.rms_norm import rms_norm, rms_norm_reference
from pretrain_kernels.swiglu import swiglu, swiglu_reference

from ..config import ModelConfig
from . import mup
from .loss import chunked_cross_entropy, cross_entropy
from .mup import Role


class Ops:
    """The three fused ops, either through `kernels` (Triton on GPU) or their plain PyTorch references."""

    def __init__(self, use_kernels: bool):
        self.rms_norm = rms_norm if use_kernels else rms_norm_reference
        self.swiglu = swiglu if use_kernels else swiglu_reference
        self.attention = flash_attention if use_kernels else flash_attention_reference


class RMSNorm(nn.Module):
    ROLES = {"weight": Role.GAIN}

    def __init__(self, cfg: ModelConfig, ops: Ops):
        super().__init__()
        self.eps, self.ops, self.scalar = cfg.norm_eps, ops, cfg.norm_gains == "scalar"
        # No gain by default: trainable gains (vector or scalar) broke μ-transfer in the paper.
        self.weight = nn.Parameter(torch.empty(1 if self.scalar else cfg.d_model)) if cfg.norm_gains else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scalar:  # one gain for every feature: it scales the normalized output
            return self.ops.rms_norm(x, None, self.eps) * self.weight
        return self.ops.rms_norm(x, self.weight, self.eps)


def rope_angles(seq_len: int, head_dim: int, base: float, device: torch.device) -> tuple[torch.Tensor, ...]:
    """cos and sin of RoPE, (seq, head_dim), in the half-split layout that Llama uses."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class Attention(nn.Module):
    ROLES = {"wq.weight": Role.QUERY, "wk.weight": Role.KEY, "wv.weight": Role.VALUE, "wo.weight": Role.ATTN_OUT,
             **{f"{w}.bias": Role.BIAS for w in ("wq", "wk", "wv", "wo")}}  # biases exist with model.bias only

    def __init__(self, cfg: ModelConfig, ops: Ops):
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.scale = mup.attention_scale(cfg)
        self.ops = ops
        self.wq = nn.Linear(cfg.d_model, self.n_heads * self.head_dim, bias=cfg.bias)
        self.wk = nn.Linear(cfg.d_model, self.kv_heads * self.head_dim, bias=cfg.bias)
        self.wv = nn.Linear(cfg.d_model, self.kv_heads * self.head_dim, bias=cfg.bias)
        self.wo = nn.Linear(self.n_heads * self.head_dim, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.wk(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.wv(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = self.ops.attention(q, k, v, causal=True, scale=self.scale)  # (B, H, T, D)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    ROLES = {"w_in.weight": Role.MLP_IN, "w_gate.weight": Role.MLP_IN, "w_out.weight": Role.MLP_OUT,
             **{f"{w}.bias": Role.BIAS for w in ("w_in", "w_gate", "w_out")}}

    def __init__(self, cfg: ModelConfig, ops: Ops):
        super().__init__()
        self.kind, self.ops = cfg.mlp, ops
        self.w_in = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=cfg.bias)  # SwiGLU: the "up" projection
        self.w_gate = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=cfg.bias) if cfg.mlp == "swiglu" else None
        self.w_out = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.w_in(x)  # (B, T, F)
        if self.kind == "swiglu":
            h = self.ops.swiglu(self.w_gate(x), h)
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            h = F.relu(h)
        return self.w_out(h)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, ops: Ops):
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(cfg, ops), Attention(cfg, ops)
        self.mlp_norm, self.mlp = RMSNorm(cfg, ops), MLP(cfg, ops)
        self.residual = mup.residual_multiplier(cfg)  # 1/m_L under CompleteP, else 1

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x + residual·branch in one op (at residual = 1, exactly x + branch)
        x = x.add(self.attn(self.attn_norm(x), cos, sin), alpha=self.residual)
        x = x.add(self.mlp(self.mlp_norm(x)), alpha=self.residual)
        return x


class Readout(nn.Linear):
    """The unembedding d -> V, untied from the embedding. Given targets it returns the mean next-token loss
    instead of the logits, `loss_chunk` tokens at a time (0: through the full logits, the plain path)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__(cfg.d_model, vocab_size, bias=False)
        self.loss_chunk = cfg.loss_chunk

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        if targets is None:
            return super().forward(x)  # (B, T, V)
        if self.loss_chunk == 0:
            return cross_entropy(super().forward(x), targets)
        return chunked_cross_entropy(x, self.weight, targets, self.loss_chunk)


class Transformer(nn.Module):
    ROLES = {"embed.weight": Role.EMBEDDING, "readout.weight": Role.READOUT}

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        cfg.validate()
        self.cfg, self.vocab_size = cfg, vocab_size
        ops = Ops(cfg.use_kernels)
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, ops) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg, ops)
        self.readout = Readout(cfg, vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, vocab); with targets (B, T), the mean cross-entropy instead."""
        cos, sin = rope_angles(idx.shape[1], self.cfg.head_dim, self.cfg.rope_base, idx.device)
        x = self.embed(idx)  # (B, T, d)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.readout(self.norm(x), targets)

    def block_params(self) -> set[str]:
        """The names of the parameters inside the residual blocks, which depth rules call hidden."""
        return {f"blocks.{name}" for name, _ in self.blocks.named_parameters()}

    def param_roles(self) -> dict[str, Role]:
        """Every parameter's name mapped to its μP role, as declared by the modules' `ROLES`."""
        roles = {}
        for prefix, module in self.named_modules():
            for local, role in getattr(module, "ROLES", {}).items():
                name = f"{prefix}.{local}" if prefix else local
                roles[name] = role
        params = dict(self.named_parameters())
        missing = set(params) - set(roles)
        if missing:
            raise TypeError(f"parameters without a μP role (declare them in their module's ROLES): "
                            f"{sorted(missing)}")
        return {name: roles[name] for name in params}

    @torch.no_grad()
    def init_weights(self) -> None:
        """Draw each parameter from N(mean, std²) with mean and std from the μP table for its role:
        embedding N(0, 1); q/k/v, MLP in, std d^-1/2 (q zero under μP by default); attention out std
        (H·D)^-1/2; MLP out std F^-1/2; readout std 1/d (μP) or d^-1/2 (SP); norm gains 1; biases 0."""
        params = dict(self.named_parameters())
        for name, role in self.param_roles().items():
            mup.initialize(params[name], role, self.cfg)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; `non_embedding` leaves out the embedding and the readout (as the paper counts)."""
        total = sum(p.numel() for p in self.parameters())
        return total - self.embed.weight.numel() - self.readout.weight.numel() if non_embedding else total


def build_model(cfg: ModelConfig, vocab_size: int, seed: int | None = None,
                device: torch.device | str = "cpu") -> Transformer:
    """Build on the meta device, allocate on `device`, then draw every weight from the μP table
    (seeded when `seed` is given, so the draws do not depend on the modules' own default inits)."""
    with torch.device("meta"):
        model = Transformer(cfg, vocab_size)
    model.to_empty(device=device)
    if seed is not None:
        torch.manual_seed(seed)
    model.init_weights()
    return model
