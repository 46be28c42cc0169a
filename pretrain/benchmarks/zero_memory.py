"""Per-rank memory of model states under ZeRO-3 on 2 ranks, as a share of ZeRO-0's (ideal 0.5, target ≤ 0.55).

    python -m pretrain.benchmarks.zero_memory [--config configs/tiny.yaml] [key.sub=value ...]

Two processes (gloo on CPU, nccl when there are 2 GPUs) build the same model twice, once per stage, take one
optimizer step (so Adam's moments exist), then run a forward and backward (so the grads exist) and count
the bytes each rank holds: parameter storage (ZeRO-3 partitions in place of the emptied parameters), the
gradients, and every tensor reachable from DeepSpeed's optimizer wrapper (master weights, Adam moments,
gradient partitions and buckets). Tensors are counted by their storage, once, so views and shared buffers
are not counted twice. Activations and the CUDA context are not model states and are left out.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.multiprocessing as mp

from ..config import Config, load_config
from ..model.loss import lm_loss
from ..model.transformer import build_model
from ..training import distributed as dist
from ..training.deepspeed_compat import zero3_partition
from ..training.engine import Engine, build_engine, init_distributed
from ..training.optim import build_optimizer

WORLD = 2
STAGES = (0, 3)
# A model big enough that DeepSpeed's fixed-size buffers are small next to its states (≈18M params), in the
# mixed precision GPU runs use. In fp32 (deepspeed.precision=fp32) ZeRO-3 also keeps an fp32 master copy of
# each partition next to the (already fp32) parameter partition, 20 bytes/param over N ranks against ZeRO-0's 16.
DEFAULTS = ["model.d_model=512", "model.n_layers=4", "model.head_dim=64", "data.vocab_size=4096",
            "data.seq_len=64", "train.micro_batch_size=2", "train.global_batch_size=4", "deepspeed.precision=bf16"]


def held_bytes(engine: Engine) -> dict[str, int]:
    """Bytes of model states this rank holds, by kind, each storage counted once."""
    seen: set[int] = set()

    def count(tensors) -> int:
        total = 0
        for t in tensors:
            storage = t.untyped_storage()
            if t.device.type != "meta" and storage.nbytes() and storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        return total

    params = list(engine.module.parameters())
    return {
        "params": count(zero3_partition(p) for p in params),  # ZeRO-3 keeps only a partition
        "grads": count(p.grad for p in params if p.grad is not None),
        "optimizer": count(_tensors_in(engine.deepspeed_optimizer)),
    }


def _tensors_in(root) -> list[torch.Tensor]:
    """Every tensor reachable from `root` through containers and DeepSpeed/torch.optim objects' attributes."""
    found, stack, visited = [], [root], set()
    while stack:
        obj = stack.pop()
        if id(obj) in visited:
            continue
        visited.add(id(obj))
        if isinstance(obj, torch.Tensor):
            found.append(obj)
            stack.extend(t for t in (zero3_partition(obj), obj.grad) if t is not None)
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif type(obj).__module__.startswith(("deepspeed.", "torch.optim")) and hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())
    return found


def _measure(cfg: Config, stage: int, device: torch.device) -> dict[str, int]:
    cfg.deepspeed.zero_stage = stage
    model = build_model(cfg.model, cfg.vocab_size, seed=cfg.train.seed, device=device)
    optimizer = build_optimizer(model, cfg.model, cfg.optim)
    engine = build_engine(cfg, model, optimizer, dist.world_size(), device)
    accum = cfg.train.accumulation(dist.world_size())
    batch = torch.randint(0, cfg.vocab_size, (cfg.train.micro_batch_size, cfg.data.seq_len + 1), device=device)
    for _ in range(accum):  # one optimizer step: Adam's moments now exist
        engine.backward(lm_loss(engine, batch))
    engine.step()
    for _ in range(accum):  # the next step's gradients, up to its boundary
        engine.backward(lm_loss(engine, batch))
    result = held_bytes(engine)
    engine.destroy()
    return result


def _worker(rank: int, port: int, config: str | None, overrides: list[str], out: dict) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    cfg = load_config(config, [*DEFAULTS, *overrides])
    device = dist.pick_device("auto" if torch.cuda.device_count() >= WORLD else "cpu")
    init_distributed(device)
    measured = {stage: _measure(cfg, stage, device) for stage in STAGES}
    gathered = [None] * WORLD
    torch.distributed.all_gather_object(gathered, measured)
    if rank == 0:
        out.update(enumerate(gathered))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a config file (default: the built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides of the benchmark model")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(dist.free_port(), args.config, args.overrides, out), nprocs=WORLD)
        per_rank = dict(out)
    mib = 2**20
    print(f"{'rank':<6}{'ZeRO':<6}{'params':>10}{'grads':>10}{'optimizer':>11}{'total MiB':>11}")
    for rank, measured in sorted(per_rank.items()):
        for stage, kinds in measured.items():
            print(f"{rank:<6}{stage:<6}" + "".join(f"{kinds[k] / mib:>{w}.1f}" for k, w in
                                                   (("params", 10), ("grads", 10), ("optimizer", 11)))
                  + f"{sum(kinds.values()) / mib:>11.1f}")
    ratio = max(sum(m[3].values()) / sum(m[0].values()) for m in per_rank.values())
    print(f"ZeRO-3 / ZeRO-0 model-state memory per rank at {WORLD} ranks: {ratio:.3f} (ideal 0.5, target <= 0.55)")


if __name__ == "__main__":
    main()
