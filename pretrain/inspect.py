"""`pretrain inspect`: what μP does to each parameter of a config's model, measured on the built model."""

from __future__ import annotations

from . import mup
from .config import Config
from .model import build_model


def inspect_model(cfg: Config) -> list[dict]:
    """Per parameter: name, role, shape, the table's init std, the std measured after `init_weights`,
    the LR multiplier, and the resulting peak Adam LR."""
    model = build_model(cfg.model, cfg.vocab_size, seed=cfg.train.seed)
    params = dict(model.named_parameters())
    rows = []
    for name, role in model.param_roles().items():
        p = params[name]
        multiplier = mup.lr_multiplier(role, cfg.model)
        rows.append({
            "name": name,
            "role": role.value,
            "shape": list(p.shape),
            "init_std": mup.init_std(role, cfg.model),
            "measured_std": p.float().std().item() if p.numel() > 1 else 0.0,
            "measured_mean": p.float().mean().item(),
            "lr_multiplier": multiplier,
            "lr": cfg.optim.lr * multiplier,
        })
    return rows


def format_table(rows: list[dict]) -> str:
    header = f"{'parameter':<32} {'role':<10} {'shape':<14} {'init std':>10} {'measured':>10} {'lr mult':>9} {'lr':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"{r['name']:<32} {r['role']:<10} {shape:<14} {r['init_std']:>10.4g} "
                     f"{r['measured_std']:>10.4g} {r['lr_multiplier']:>9.4g} {r['lr']:>10.4g}")
    return "\n".join(lines)
