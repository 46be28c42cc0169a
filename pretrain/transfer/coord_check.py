"""`pretrain coord-check`: how activation sizes change with width, or with depth, during the first steps of training.

Each width (depth) trains a few steps at the config's LR, held constant (a warmup would shrink exactly the early
updates the check is about), over several seeds, in a plain PyTorch loop with the project's own model and
optimizer builders. Forward hooks record the mean |activation| at every step of the embedding output, each
block's attention output, MLP output and block output, and the logits. Under μP every curve is flat in
width; under SP the updates grow with width, and so do the activations they feed.

Across depth (`axis="depth"`) the blocks are not the same ones at every depth, so the check watches the branches
of the first and the last block (`attn.first`, ..., `mlp.last`) and the residual stream halfway down and at the end
(`block.middle`, `block.last`: what the readout sees), and also each output's update: its change since init on the
first step's batch, after each step (`Δblock.last`, ...). Without a depth parametrization every block adds its
full branch, so the stream and its updates grow with depth; CompleteP scales each branch by 1/m_L and keeps them
flat. (The stream after the first block is left out: under CompleteP its branch is a 1/L share by design.)

The verdict is read at the last step, after the updates: at init μP's logits shrink with width by design
(the readout's init std is 1/width, so they start at width^-1/2), and it is the updates that SP gets wrong.
Each seed gives its own slope against width (a seed draws the same batches at every width), so the seeds'
spread is the slope's uncertainty.

This is a necessary check, not a sufficient one: transfer itself is shown by an LR sweep.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..data.prepared import PreparedData, prepare_data
from ..data.sampler import StepSampler, train_micro_batches
from ..fileio import atomic_output, write_text
from ..model.loss import cross_entropy
from ..model.transformer import Transformer, build_model
from ..outputs import claim
from ..progress import progress_bar
from ..training.optim import build_optimizer, set_lr

# The |slope| of log2 mean |activation| per doubling of width, at the last step, below which a quantity is flat:
# a factor 1.7 over 8x in width. On docs/coord_check_{mup,sp} (widths 32..256, 10 steps, 3 seeds) μP's largest
# is 0.22 ± 0.03, while under SP the first block's outputs grow by 0.36..0.49 and the logits by 0.30.
FLAT_SLOPE = 0.25
# The recipes a check reads, by the setting that names them: the width parametrization across width, the depth
# parametrization across depth. Those in FLAT predict every curve flat; each other one's counterpart is the recipe
# it is told apart from.
LABELS = {"mup": "μP", "sp": "SP", "completep": "CompleteP", "none": "depth_parametrization none"}
FLAT = {"mup", "completep"}
COUNTERPART = {"sp": "mup", "none": "completep"}
# What each axis sets on the model, and which setting names the recipe judged.
AXES = {"width": ("d_model", "parametrization"), "depth": ("n_layers", "depth_parametrization")}


def watched_modules(model: Transformer, axis: str = "width") -> dict[str, torch.nn.Module]:
    """Across width every block's outputs; across depth those that exist at any depth (the module docstring)."""
    modules = {"embedding": model.embed}
    if axis == "width":
        for i, block in enumerate(model.blocks):
            modules.update({f"attn.{i}": block.attn, f"mlp.{i}": block.mlp, f"block.{i}": block})
    else:
        first, last = model.blocks[0], model.blocks[-1]
        modules.update({"attn.first": first.attn, "mlp.first": first.mlp, "attn.last": last.attn, "mlp.last": last.mlp,
                        "block.middle": model.blocks[len(model.blocks) // 2 - 1], "block.last": last})
    modules["logits"] = model.readout
    return modules


def _train_and_record(cfg: Config, axis: str, size: int, seed: int, steps: int, data: PreparedData,
                      on_step: Callable[[], object]) -> dict[str, list[float]]:
    """Mean |output| of each watched module at each of `steps` training steps (step 0 = at init), the model's
    `axis` set to `size`. Across depth also each output's update: the mean |change| since init on the first step's
    batch, after each step (`Δ<name>`)."""
    model_cfg = dataclasses.replace(cfg.model, **{AXES[axis][0]: size})
    model = build_model(model_cfg, cfg.vocab_size, seed=seed)
    optimizer = build_optimizer(model, model_cfg, cfg.optim)
    set_lr(optimizer, cfg.optim, 1.0)
    watched = watched_modules(model, axis)
    record: dict[str, list[float]] = {name: [] for name in watched}
    outputs: dict[str, torch.Tensor] = {}
    for name, module in watched.items():
        module.register_forward_hook(lambda mod, inputs, out, name=name: outputs.__setitem__(name, out.detach()))
    sampler = StepSampler.over(data, "train", cfg.train.micro_batch_size, seed)  # the same batches at every size
    first = initial = None
    for step in range(steps):
        (batch,) = train_micro_batches(data, sampler, step, 0, 1, cfg.train.micro_batch_size)
        loss = cross_entropy(model(batch[:, :-1]), batch[:, 1:])  # through the logits, which the hooks record
        for name, out in outputs.items():
            record[name].append(out.abs().mean().item())
        if step == 0:
            first, initial = batch, dict(outputs)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if axis == "depth":
            with torch.no_grad():
                model(first[:, :-1])
            for name in watched:
                record.setdefault(f"Δ{name}", []).append((outputs[name] - initial[name]).abs().mean().item())
        on_step()
    return record


def coord_check(cfg: Config, sizes: list[int], steps: int = 10, seeds: int = 3, progress: bool = True,
                axis: str = "width") -> dict:
    """Per quantity: the mean |activation| as a list over `sizes` (widths, or depths with `axis="depth"`) of lists
    over steps (geometric mean over seeds), the slope of its log2 against log2(size) at each step (the mean of the
    seeds' slopes: ~0 under μP across width, CompleteP across depth), and the verdict at the last step. `progress`
    shows a bar on stderr, one tick per training step."""
    data = prepare_data(cfg.data, progress=False)
    recipe = getattr(cfg.model, AXES[axis][1])
    runs = [(size, cfg.train.seed + s) for size in sizes for s in range(seeds)]
    measured: dict[str, list[list[float]]] = {}
    with progress_bar(total=len(runs) * steps, desc=f"coord-check {LABELS[recipe]}", unit="step",
                      disable=not progress, dynamic_ncols=True) as bar:
        for size, seed in runs:
            bar.set_postfix_str(f"{axis} {size}, seed {seed}")
            for name, record in _train_and_record(cfg, axis, size, seed, steps, data, bar.update).items():
                measured.setdefault(name, []).append(record)
    # log2 sizes as (size, seed, step); polyfit fits every (seed, step) column at once.
    log2 = {name: np.log2(records).reshape(len(sizes), seeds, steps) for name, records in measured.items()}
    seed_slopes = {name: np.polyfit(np.log2(sizes), a.reshape(len(sizes), -1), 1)[0].reshape(seeds, steps)
                   for name, a in log2.items()}
    verdicts = judge({name: s[:, -1] for name, s in seed_slopes.items()})
    return {"axis": axis, "parametrization": cfg.model.parametrization,
            "depth_parametrization": cfg.model.depth_parametrization, "lr": cfg.optim.lr, f"{axis}s": sizes,
            "steps": steps, "seeds": seeds,
            # The geometric mean over seeds, so that each curve's slope is the mean of the seeds' slopes.
            "activations": {name: np.exp2(a.mean(axis=1)).tolist() for name, a in log2.items()},
            "slopes": {name: s.mean(axis=0).tolist() for name, s in seed_slopes.items()},
            "threshold": FLAT_SLOPE, "verdicts": verdicts,
            "summary": summary(recipe, verdicts, FLAT_SLOPE, axis)}


def judge(seed_slopes: Mapping[str, Sequence[float]], threshold: float = FLAT_SLOPE) -> dict[str, dict]:
    """Per quantity, from its seeds' slopes: the mean slope, its standard error (None from one seed), the
    verdict (`flat` when |slope| < threshold, else `grows` or `shrinks`), and whether the seeds leave it open
    (|slope| within 2 standard errors of the threshold)."""
    verdicts = {}
    for name, per_seed in seed_slopes.items():
        s = np.asarray(per_seed, dtype=float)
        slope = float(s.mean())
        stderr = float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else None
        verdicts[name] = {
            "slope": slope, "stderr": stderr, "seed_slopes": s.tolist(),
            "verdict": "flat" if abs(slope) < threshold else "grows" if slope > 0 else "shrinks",
            "near_threshold": stderr is not None and abs(abs(slope) - threshold) < 2 * stderr}
    return verdicts


def summary(recipe: str, verdicts: Mapping[str, dict], threshold: float = FLAT_SLOPE, axis: str = "width") -> str:
    """One line: how many quantities are flat in `axis`, and whether that is what the recipe (a `LABELS` key: the
    parametrization across width, the depth parametrization across depth) predicts."""
    flat = sum(v["verdict"] == "flat" for v in verdicts.values())
    off = "; ".join(f"{kind}: " + ", ".join(n for n, v in verdicts.items() if v["verdict"] == kind)
                    for kind in ("grows", "shrinks") if any(v["verdict"] == kind for v in verdicts.values()))
    label = LABELS[recipe]
    head = (f"{label} coordinate check: {flat} of {len(verdicts)} quantities flat in {axis} "
            f"(|slope| < {threshold:g} log2 per doubling)")
    if recipe in FLAT:
        return f"{head}: passes" if not off else f"{head}: fails, {label} predicts all flat ({off})"
    if any(v["verdict"] == "grows" for v in verdicts.values()):
        return f"{head}: not flat, as {label} predicts ({off})"
    return (f"{head}: nothing grows, unlike {label}; too few steps or too small an LR to tell it from "
            f"{LABELS[COUNTERPART[recipe]]}")


def format_verdicts(result: dict) -> str:
    """The per-quantity table and, last, the summary line."""
    spread = f"mean ± s.e. over {result['seeds']} seeds" if result["seeds"] > 1 else "1 seed"
    updates = " (Δ: its change since init, on the first batch)" if result["axis"] == "depth" else ""
    lines = [f"log2 mean |activation|{updates} per doubling of {result['axis']} at step {result['steps'] - 1}, the "
             f"last ({spread}):"]
    pad = max(10, *map(len, result["verdicts"]))
    for name, v in result["verdicts"].items():
        error = f" ± {v['stderr']:.2f}" if v["stderr"] is not None else ""
        near = ", within 2 s.e. of the threshold" if v["near_threshold"] else ""
        lines.append(f"  {name:<{pad}} {v['slope']:+.2f}{error:<7}  {v['verdict']}{near}")
    return "\n".join([*lines, result["summary"]])


def plot_coord_check(result: dict, path: Path) -> None:
    """A panel per activation: log2 of its mean |activation| relative to the narrowest width (shallowest depth), one
    line per step, on one y-scale for all panels, with the band a flat quantity stays in at the last step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["activations"])
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3 * rows), squeeze=False, sharex=True, sharey=True)
    axis = result["axis"]
    sizes = result[f"{axis}s"]
    doublings = np.log2(sizes) - np.log2(sizes[0])
    last = result["steps"] - 1
    steps = sorted({0, *np.linspace(0, last, 5).round().astype(int).tolist()})
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(steps)))
    band = result["threshold"] * doublings
    for ax, name in zip(axes.flat, names):
        log2 = np.log2(result["activations"][name])  # (size, step)
        ax.fill_between(sizes, -band, band, color="0.9", lw=0, label=f"|slope| < {result['threshold']:g}")
        ax.axhline(0, color="0.6", lw=0.6)
        for step, color in zip(steps, colors):
            ax.plot(sizes, log2[:, step] - log2[0, step], "o-", color=color, markersize=3,
                    lw=2 if step == last else 1, label=f"step {step}")
        v = result["verdicts"][name]
        error = f" ± {v['stderr']:.2f}" if v["stderr"] is not None else ""
        ax.set_title(f"{name}: {v['slope']:+.2f}{error} per doubling, {v['verdict']}", fontsize=9,
                     color="black" if v["verdict"] == "flat" else "tab:red")
        ax.set_xscale("log", base=2)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel(axis)
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"log2 mean |act| − at {axis} {sizes[0]}")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{result['summary']}\nlr {result['lr']:.3g}, {result['seeds']} seeds; panel titles: the slope at "
                 f"step {last}, mean ± s.e. over seeds", fontsize=10)
    fig.tight_layout()
    with atomic_output(path) as staged:
        fig.savefig(staged, format="png", dpi=110)
    plt.close(fig)


def write_coord_check(result: dict, out: Path) -> tuple[Path, Path]:
    """The result and its plot in `out`, marked as coord-check's (`pretrain.outputs`), which judged `out` first."""
    out.mkdir(parents=True, exist_ok=True)
    claim(out, "coord-check")
    json_path, png_path = out / "coord_check.json", out / "coord_check.png"
    write_text(json_path, json.dumps(result, indent=1) + "\n")
    plot_coord_check(result, png_path)
    return json_path, png_path
