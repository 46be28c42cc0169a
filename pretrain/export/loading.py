"""`pretrain.load_model`: a checkpoint as the stack's own model, for inference in a notebook or a test."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import load_config
from ..model.transformer import Transformer
from ..training.checkpoint import load_consolidated_state_dict, resolve_checkpoint


def load_model(checkpoint_dir: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """The `Transformer` of a checkpoint (or of the newest one in a run dir) in eval mode, fp32 weights
    consolidated from any ZeRO stage; it maps token ids (batch, seq) to logits (batch, seq, vocab)."""
    path = resolve_checkpoint(Path(checkpoint_dir))
    cfg = load_config(path / "config.yaml")
    with torch.device("meta"):  # no init: every weight comes from the checkpoint
        model = Transformer(cfg.model, cfg.vocab_size)
    model.load_state_dict(load_consolidated_state_dict(path), assign=True)
    return model.to(device).eval()
