"""What checksums cost a checkpoint of the 1B model on CPU: saving with and without them, and verifying.

    python -m pretrain.benchmarks.checkpoint_cost [--config configs/1b.yaml] [--repeats 2] [--dir /tmp/x]

Builds the model of the config (fp32, one process, ZeRO-0 under DeepSpeed), takes one optimizer step so the
Adam moments exist, then alternates: DeepSpeed's own save of the model and optimizer states, and the
checkpointer's save (the same files, each hashed with SHA-256 in a thread as soon as it is written, plus RNG,
trainer state, config and the checksum manifest). The extra seconds of the second are the cost of the
checksums. Last, the time to verify the checkpoint (what resume, consolidate and export do first). Needs about
(16 bytes × parameters) of memory and 2× that much of disk (1B: ~18 GB and ~27 GB).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from functools import partial
from pathlib import Path

import torch

from ..config import load_config
from ..model.transformer import build_model
from ..training import distributed as dist
from ..training.checkpoint import Checkpointer, verify_checkpoint
from ..training.engine import build_engine, init_distributed
from ..training.optim import build_optimizer
from . import CONFIGS, measure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIGS / "1b.yaml"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, ["deepspeed.zero_stage=0", "deepspeed.precision=fp32", "train.device=cpu",
                                    "train.global_batch_size=null", "train.micro_batch_size=1"])
    device = dist.pick_device("cpu")
    init_distributed(device)
    model = build_model(cfg.model, cfg.vocab_size, seed=0)
    engine = build_engine(cfg, model, build_optimizer(model, cfg.model, cfg.optim), 1, device)
    for p in model.parameters():  # one step on zero gradients: Adam's moments exist, the weights barely move
        p.grad = torch.zeros_like(p)
    engine.optimizer.step()
    engine.optimizer.zero_grad(set_to_none=True)
    params = sum(p.numel() for p in model.parameters())

    root = Path(args.dir or tempfile.mkdtemp(prefix="checkpoint-cost-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(cfg.to_yaml())
    checkpointer = Checkpointer(root / "checkpoints", keep=1, files={"config.yaml": root / "config.yaml"})
    plain, checked, verify = [], [], []
    for repeat in range(args.repeats):
        plain.append(measure(partial(engine.save, root / "plain", checksums=False))[0])
        shutil.rmtree(root / "plain")
        trainer_state = {"world_size": 1, "data_step": 0, "global_batch": 1, "lr_multiplier": 1.0}
        seconds, _, path = measure(partial(checkpointer.save, engine, repeat + 1, trainer_state))
        checked.append(seconds)
        verify.append(measure(partial(verify_checkpoint, path))[0])
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    shutil.rmtree(root)
    print(f"{Path(args.config).name}: {params:,} parameters, checkpoint {size / 2**30:.1f} GiB (fp32 weights and "
          f"Adam moments), {args.repeats} saves each, best:")
    print(f"  DeepSpeed save alone        {min(plain):7.1f} s   ({', '.join(f'{t:.1f}' for t in plain)})")
    print(f"  save with checksums         {min(checked):7.1f} s   ({', '.join(f'{t:.1f}' for t in checked)})")
    print(f"  cost of the checksums       {min(checked) - min(plain):+7.1f} s   "
          f"({min(checked) / min(plain) - 1:+.1%})")
    print(f"  verify before a load        {min(verify):7.1f} s   ({size / 2**30 / min(verify):.2f} GiB/s)")


if __name__ == "__main__":
    main()
