"""Training: the `pretrain train` entry point and the parts it assembles.

- `train`: builds every component from the config and runs the trainer.
- `trainer`: the loop (micro batches, accumulation, eval, stop requests, divergence), from injected parts.
- `engine`: the DeepSpeed adapter, the only module that touches DeepSpeed besides `deepspeed_compat`.
- `deepspeed_compat`: every part of DeepSpeed the adapter uses beyond its public API, and the versions it allows.
- `optim`: AdamW or Lion with one group per μP role, and the multiplicative LR schedule; `lion`: the Lion optimizer.
- `checkpoint`: atomic, self-describing checkpoints, retention and resume.
- `distributed`: devices, ranks and the helpers that print or wait on them.
- `metrics`: metric loggers (metrics.jsonl) and MFU; `tracking`: the W&B adapter.

May import: `pretrain.data`, `pretrain.model` and the base modules. Never transfer, export or tools.
"""
