"""`pretrain train`: build every component from the config and run the trainer."""

from __future__ import annotations

from pathlib import Path

from . import distributed as dist
from .checkpoint import Checkpointer
from .config import Config
from .data import load_prepared, prepare_data
from .engine import build_engine
from .metrics import NullLogger
from .model import build_model
from .optim import build_optimizer
from .tracking import build_logger
from .trainer import Trainer, TrainResult


def train(cfg: Config) -> TrainResult:
    device = dist.pick_device(cfg.train.device)
    dist.init_distributed(device)
    out = Path(cfg.train.out_dir)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
        (out / "STOP").unlink(missing_ok=True)
        data = prepare_data(cfg.data)
    dist.barrier()
    if not dist.is_main():
        data = load_prepared(cfg.data)

    model = build_model(cfg.model, cfg.vocab_size, seed=cfg.train.seed, device=device)
    model.activation_checkpointing = cfg.train.activation_checkpointing
    optimizer = build_optimizer(model, cfg.model, cfg.optim)
    engine = build_engine(cfg, model, optimizer, dist.world_size(), device)
    checkpointer = Checkpointer(out / "checkpoints", cfg.train.keep_checkpoints,
                                files={"config.yaml": out / "config.yaml", "tokenizer.json": data.tokenizer_path})
    checkpointer.clean_partial()

    trainer = Trainer(cfg, engine, optimizer, data, checkpointer, NullLogger(), device)
    trainer.resume()
    trainer.logger = build_logger(cfg, out, resume_step=trainer.step) if dist.is_main() else NullLogger()
    dist.print0(f"model: {model.num_params():,} params ({model.num_params(non_embedding=True):,} non-embedding), "
                f"{cfg.model.parametrization}, width multiplier {cfg.model.width_mult:g}; "
                f"{trainer.tokens_per_step:,} tokens/step, world size {dist.world_size()}")
    try:
        result = trainer.fit()
    finally:
        trainer.logger.close()
    if result.eval_loss is not None:
        dist.print0(f"eval loss {result.eval_loss:.4f} nats; unigram entropy of the corpus "
                    f"{data.meta['unigram_entropy']:.4f} nats")
    return result
