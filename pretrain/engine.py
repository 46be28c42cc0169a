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
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage, **_buckets(cfg), **_offload(cfg)},
        "zero_allow_untested_optimizer": True,  # a plain torch AdamW, on purpose
        "zero_force_ds_cpu_optimizer": False,  # keep that AdamW (and its μP groups) when offloading too
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }


def build_engine(cfg: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer, world_size: int,
                 device: torch.device):
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                      config=deepspeed_config(cfg, world_size, device))
    _check_param_groups(engine, optimizer)
    return engine


def _buckets(cfg: Config) -> dict:
    """Communication buckets sized to the model (d_model², as the Hugging Face integration's "auto" does).
    DeepSpeed's default of 5e8 elements is allocated up front by ZeRO-3: 1 GB in bf16 per GPU (2 GB in fp32),
    whatever the model's size."""
    d = cfg.model.d_model
    return {"reduce_bucket_size": d * d, "stage3_prefetch_bucket_size": int(0.9 * d * d),
            "stage3_param_persistence_threshold": 10 * d}  # gather all but the norm gains on demand


def _offload(cfg: Config) -> dict:
    if not cfg.deepspeed.offload_optimizer:
        return {}
    return {"offload_optimizer": {"device": "cpu", "pin_memory": torch.cuda.is_available()}}


def _check_param_groups(engine, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer DeepSpeed steps must hold the client's own group dicts: `set_lr` writes each group's
    LR there, so a copied or merged group would silently train at the wrong LR."""
    stepped = engine.optimizer.param_groups
    assert len(stepped) == len(optimizer.param_groups) and all(
        a is b for a, b in zip(stepped, optimizer.param_groups)), "DeepSpeed replaced the μP param groups"
