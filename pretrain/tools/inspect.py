"""`pretrain inspect`: what μP does to each parameter of a config's model."""

from __future__ import annotations

import os

import torch

from ..config import Config
from ..errors import UserError
from ..model import mup
from ..model.transformer import Transformer


def inspect_model(cfg: Config) -> list[dict]:
    """Per parameter: name, role, shape, the table's init std, the std and mean measured on the drawn weights,
    the LR multiplier and the resulting peak Adam LR, the depth rule's factors on the init std and the LR (both
    included in those), and the Adam ε multiplier and ε.

    The model is built on the meta device and its parameters are drawn one at a time, in `init_weights`'
    order from the same seed, so the figures are those of `train`'s model at any size without holding it."""
    with torch.device("meta"):
        model = Transformer(cfg.model, cfg.vocab_size)
    _check_fits(model)
    torch.manual_seed(cfg.train.seed)
    rows = []
    inside = model.block_params()
    for name, role in model.param_roles().items():
        weights = mup.initialize(torch.empty(model.get_parameter(name).shape), role, cfg.model)
        multiplier = mup.lr_multiplier(role, cfg.model)
        depth = mup.depth_rule(role, cfg.model)
        eps_multiplier = mup.eps_multiplier(role, cfg.model, name in inside)
        rows.append({
            "name": name,
            "role": role.value,
            "shape": list(weights.shape),
            "init_std": mup.init_std(role, cfg.model),
            "measured_std": weights.std().item() if weights.numel() > 1 else 0.0,
            "measured_mean": weights.mean().item(),
            "lr_multiplier": multiplier,
            "lr": cfg.optim.lr * multiplier,
            "depth_init_factor": depth.std(cfg.model),
            "depth_lr_factor": depth.lr(cfg.model),
            "eps_multiplier": eps_multiplier,
            "eps": cfg.optim.eps * eps_multiplier,
        })
    return rows


def depth_line(cfg: Config) -> str:
    """The depth parametrization in one line: the depth multiplier and what each residual branch is scaled by."""
    m = cfg.model
    return (f"depth: {m.depth_parametrization}, m_L = {mup.depth_multiplier(m):.4g} ({m.n_layers} layers / base "
            f"{m.base_depth}); each residual branch x {mup.residual_multiplier(m):.4g}")


def _check_fits(model: Transformer) -> None:
    """The largest parameter, drawn whole, must fit in this machine's memory: one line instead of an allocator's
    traceback (or the kernel killing the process) for a model that cannot be inspected here."""
    name, largest = max(model.named_parameters(), key=lambda item: item[1].numel())
    need = largest.numel() * torch.get_default_dtype().itemsize
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise UserError(f"inspect draws each parameter whole: {name} has {largest.numel():,} elements "
                        f"({need / 2**30:,.0f} GiB), more than this machine's {have / 2**30:,.0f} GiB of memory "
                        f"(the model: {model.num_params():,} parameters); `pretrain estimate` counts any size")


def format_table(rows: list[dict]) -> str:
    """The rows as a table; `depth init` and `depth lr` are the depth rule's shares of `init std` and `lr mult`."""
    header = (f"{'parameter':<32} {'role':<10} {'shape':<14} {'init std':>10} {'measured':>10} {'lr mult':>9} "
              f"{'lr':>10} {'depth init':>10} {'depth lr':>9} {'eps mult':>9}")
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"{r['name']:<32} {r['role']:<10} {shape:<14} {r['init_std']:>10.4g} "
                     f"{r['measured_std']:>10.4g} {r['lr_multiplier']:>9.4g} {r['lr']:>10.4g} "
                     f"{r['depth_init_factor']:>10.4g} {r['depth_lr_factor']:>9.4g} {r['eps_multiplier']:>9.4g}")
    return "\n".join(lines)
