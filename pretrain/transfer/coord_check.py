"""`pretrain coord-check`: how activation sizes change with width during the first steps of training.

Each width trains a few steps at the config's LR, held constant (a warmup would shrink exactly the early
updates the check is about), over several seeds, in a plain PyTorch loop with the project's own model and
optimizer builders. Forward hooks record the mean |activation| at every step of the embedding output, each
block's attention output, MLP output and block output, and the logits. Under μP every curve is flat in
width; under SP the updates grow with width, and so do the activations they feed.

This is a necessary check, not a sufficient one: transfer itself is shown by an LR sweep.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..data.prepared import prepare_data
from ..data.sampler import StepSampler, train_micro_batches
from ..fileio import write_text
from ..model.loss import cross_entropy
from ..model.transformer import Transformer, build_model
from ..training.optim import build_optimizer, set_lr


def watched_modules(model: Transformer) -> dict[str, torch.nn.Module]:
    modules = {"embedding": model.embed}
    for i, block in enumerate(model.blocks):
        modules.update({f"attn.{i}": block.attn, f"mlp.{i}": block.mlp, f"block.{i}": block})
    modules["logits"] = model.readout
    return modules


def _train_and_record(cfg: Config, width: int, seed: int, steps: int, data) -> dict[str, list[float]]:
    """Mean |output| of each watched module at each of `steps` training steps (step 0 = at init)."""
    model_cfg = dataclasses.replace(cfg.model, d_model=width)
    model = build_model(model_cfg, cfg.vocab_size, seed=seed)
    optimizer = build_optimizer(model, model_cfg, cfg.optim)
    set_lr(optimizer, cfg.optim, 1.0)
    record: dict[str, list[float]] = {name: [] for name in watched_modules(model)}
    for name, module in watched_modules(model).items():
        module.register_forward_hook(lambda mod, inputs, out, name=name:
                                     record[name].append(out.abs().mean().item()))
    sampler = StepSampler.over(data, "train", cfg.train.micro_batch_size, seed)  # the same batches at every width
    for step in range(steps):
        (batch,) = train_micro_batches(data, sampler, step, 0, 1, cfg.train.micro_batch_size)
        loss = cross_entropy(model(batch[:, :-1]), batch[:, 1:])  # through the logits, which the hooks record
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return record


def coord_check(cfg: Config, widths: list[int], steps: int = 10, seeds: int = 3) -> dict:
    """Per module, the mean |activation| (averaged over seeds) as a list over widths of lists over steps,
    and per step the slope of log2(mean |activation|) against log2(width): ~0 under μP."""
    data = prepare_data(cfg.data, progress=False)
    activations: dict[str, list[list[float]]] = {}
    for width in widths:
        runs = [_train_and_record(cfg, width, cfg.train.seed + s, steps, data) for s in range(seeds)]
        for name in runs[0]:
            activations.setdefault(name, []).append(np.mean([run[name] for run in runs], axis=0).tolist())
    slopes = {name: np.polyfit(np.log2(widths), np.log2(by_width), 1)[0].tolist()
              for name, by_width in activations.items()}
    return {"parametrization": cfg.model.parametrization, "lr": cfg.optim.lr, "widths": widths,
            "steps": steps, "seeds": seeds, "activations": activations, "slopes": slopes}


def plot_coord_check(result: dict, path: Path) -> None:
    """A log-log panel per activation: mean |activation| against width, one line per training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["activations"])
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3 * rows), squeeze=False)
    steps = sorted({0, *np.linspace(0, result["steps"] - 1, 5).round().astype(int).tolist()})
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(steps)))
    for ax, name in zip(axes.flat, names):
        by_width = result["activations"][name]
        for step, color in zip(steps, colors):
            ax.plot(result["widths"], [per_step[step] for per_step in by_width], "o-", color=color,
                    markersize=3, label=f"step {step}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{name} (slope {result['slopes'][name][-1]:+.2f} at the end)", fontsize=9)
        ax.set_xlabel("width")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes[0][0].set_ylabel("mean |activation|")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"coord check ({result['parametrization']}, lr {result['lr']:.3g}, {result['seeds']} seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_coord_check(result: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "coord_check.json", out / "coord_check.png"
    write_text(json_path, json.dumps(result, indent=1) + "\n")
    plot_coord_check(result, png_path)
    return json_path, png_path
