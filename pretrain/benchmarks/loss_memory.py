"""Memory and time of the readout and loss: the chunked path (`model.loss_chunk`) against the plain one.

    python -m pretrain.benchmarks.loss_memory [--chunk 512] [--repeats 3] [--skip-training]

1. The readout and cross-entropy alone, forward and backward, at the 1B shapes (d_model 2560, vocab 32000, a
   micro batch of 4 × 2048 tokens), fp32 on the CPU. Each path runs in a fresh process: its peak memory is the
   process's peak resident set above what it held once the inputs existed (so the gradients the backward
   produces count, for both); its time is the best of the timed repeats after one untimed pass.
2. A whole training run: 2 steps of configs/tiny.yaml at d_model 256, 2 layers, seq 2048, micro batch 4 (as
   `pretrain train` runs it, the eval included), at vocab 4096 and 32000, with the default chunked loss and
   with the plain path: the peak resident set of each run (the data is prepared first, in another process),
   and what the larger vocabulary adds.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from . import CONFIGS, in_fresh_process, measure, resident_bytes

SHAPES = {"hidden": 2560, "vocab": 32000, "tokens": 4 * 2048}
GiB = 2**30
RUN = ["model.d_model=256", "model.n_layers=2", "model.head_dim=32", "data.seq_len=2048", "train.micro_batch_size=4",
       "train.steps=2", "train.eval_every=2", "train.checkpoint_every=1000", "wandb.mode=disabled"]


def _worker(path: str, chunk: int, repeats: int) -> dict:
    """In a fresh process: one forward+backward of the readout and loss for the peak, then timed repeats."""
    import torch

    from ..model.loss import chunked_cross_entropy, cross_entropy

    torch.manual_seed(0)
    n, d, v = SHAPES["tokens"], SHAPES["hidden"], SHAPES["vocab"]
    hidden = torch.randn(n, d, requires_grad=True)
    weight = (torch.randn(v, d) * d**-1).requires_grad_()
    targets = torch.randint(0, v, (n,))

    def step() -> float:
        hidden.grad = weight.grad = None
        loss = (cross_entropy(hidden @ weight.t(), targets) if path == "plain"
                else chunked_cross_entropy(hidden, weight, targets, chunk))
        loss.backward()
        return loss.item()

    baseline = resident_bytes()
    loss = step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    seconds = min(measure(step)[0] for _ in range(repeats))
    return {"path": path, "loss": loss, "peak_bytes": peak, "seconds": seconds}


def _training_peak(cache: Path, out: Path, vocab: int, chunk: int) -> float:
    """Peak resident set (GiB) of a 2-step `pretrain train` (the data prepared beforehand)."""
    overrides = [*RUN, f"data.vocab_size={vocab}", f"data.cache_dir={cache}", f"model.loss_chunk={chunk}",
                 f"train.out_dir={out}"]
    config = str(CONFIGS / "tiny.yaml")
    for command in ("prepare-data", "train"):
        subprocess.run([sys.executable, "-m", "pretrain", command, config, *overrides], capture_output=True,
                       text=True, check=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return max(r["mem_gb"] for r in records)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=512, help="tokens per chunk (default %(default)s, the "
                                                               "model.loss_chunk default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per path (default %(default)s)")
    parser.add_argument("--skip-training", action="store_true", help="only part 1")
    args = parser.parse_args(argv)

    print(f"1. readout + cross-entropy, forward and backward: {SHAPES['tokens']} tokens, d_model {SHAPES['hidden']},"
          f" vocab {SHAPES['vocab']}, fp32, CPU; chunk {args.chunk} tokens")
    plain, chunked = (in_fresh_process(_worker, path, args.chunk, args.repeats) for path in ("plain", "chunked"))
    for r in (plain, chunked):
        print(f"   {r['path']:<8} peak +{r['peak_bytes'] / GiB:.3f} GiB   {r['seconds']:.3f} s   loss {r['loss']:.6f}")
    print(f"   chunked / plain: peak {chunked['peak_bytes'] / plain['peak_bytes']:.3f}x (target <= 0.25), "
          f"time {chunked['seconds'] / plain['seconds']:.3f}x (target <= 1.1)")
    if args.skip_training:
        return
    print("2. peak resident set of a 2-step training run (tiny.yaml at d_model 256, 2 layers, seq 2048, micro "
          "batch 4)")
    with tempfile.TemporaryDirectory() as tmp:
        peaks = {(path, vocab): _training_peak(Path(tmp) / "cache", Path(tmp) / f"{path}-{vocab}", vocab, chunk)
                 for path, chunk in (("chunked", args.chunk), ("plain", 0)) for vocab in (4096, 32000)}
    for path in ("chunked", "plain"):
        small, large = peaks[(path, 4096)], peaks[(path, 32000)]
        print(f"   {path:<8} vocab 4096 {small:.2f} GiB, vocab 32000 {large:.2f} GiB: +{large - small:.2f} GiB")


if __name__ == "__main__":
    main()
