"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), as a plain `torch.optim.Optimizer`.

Per entry, with gradient g, momentum m, LR η and decoupled weight decay λ:

    c = β1·m + (1 − β1)·g           the direction: momentum interpolated with the new gradient
    θ ← θ − η·λ·θ − η·sign(c)        every entry moves by exactly η (plus the decay)
    m ← β2·m + (1 − β2)·g

Written in PyTorch rather than taken from DeepSpeed (whose Lion is a compiled op chosen by the config's optimizer
block): DeepSpeed then gets it as a client optimizer like AdamW, keeps the μP param groups and their `lr_scale`,
and steps it on whatever it holds at every ZeRO stage (whole parameters, or flat fp32 partitions: Lion is
elementwise, so the partition does not matter), on CPU and GPU alike. Its one state, the momentum, is named
`exp_avg` as in AdamW, the name DeepSpeed's ZeRO checkpoints carry for a first moment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class Lion(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Lion's betas must lie in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), decay = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                momentum = state["exp_avg"]
                if decay:
                    p.mul_(1 - lr * decay)
                p.add_(momentum.lerp(p.grad, 1 - beta1).sign_(), alpha=-lr)
                momentum.lerp_(p.grad, 1 - beta2)
        return loss
