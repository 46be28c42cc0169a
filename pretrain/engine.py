"""DeepSpeed engine construction. The client AdamW keeps its μP param groups; DeepSpeed gets no
optimizer or scheduler block, so it never rewrites a group's LR."""

from __future__ import annotations

import torch

from .config import Config


def precision(cfg: Config, device: torch.device) -> str:
    if cfg.deepspeed.precision != "auto":
        return cfg.deepspeed.precision
    return "bf16" if device.type == "cuda" else "fp32"


def deepspeed_config(cfg: Config, world_size: int, device: torch.device) -> dict:
    return {
        "train_micro_batch_size_per_gpu": cfg.train.micro_batch_size,
        "gradient_accumulation_steps": cfg.train.accumulation(world_size),
        "gradient_clipping": cfg.optim.grad_clip,
        "bf16": {"enabled": precision(cfg, device) == "bf16"},
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "zero_allow_untested_optimizer": True,  # a plain torch AdamW, on purpose
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }


def build_engine(cfg: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer, world_size: int,
                 device: torch.device):
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                      config=deepspeed_config(cfg, world_size, device))
    return engine
