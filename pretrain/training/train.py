"""`pretrain train`: build every component from the config and run the trainer."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..data.prepared import open_prepared
from ..data.shards import prepare
from ..fileio import write_text
from ..model import mup
from ..model.transformer import build_model
from . import distributed as dist
from .checkpoint import Checkpointer, read_trainer_state
from .engine import build_engine, init_distributed
from .metrics import NullLogger
from .optim import build_optimizer
from .tracking import build_logger
from .trainer import Trainer, TrainResult


def train(cfg: Config) -> TrainResult:
    device = dist.pick_device(cfg.train.device)
    init_distributed(device)
    out = Path(cfg.train.out_dir)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", cfg.to_yaml())
        (out / "STOP").unlink(missing_ok=True)
    # Rank 0 prepares a small source itself (seconds; a large one must be prepared beforehand) and tells the
    # others where the data is; every rank opens it once.
    data = open_prepared(cfg.data, dist.on_main(lambda: prepare(cfg.data, in_band=True)))

    model = build_model(cfg.model, cfg.vocab_size, seed=cfg.train.seed, device=device)
    engine = build_engine(cfg, model, build_optimizer(model, cfg.model, cfg.optim), dist.world_size(), device)
    checkpointer = Checkpointer(out / "checkpoints", cfg.train.keep_checkpoints,
                                files={"config.yaml": out / "config.yaml", "tokenizer.json": data.tokenizer_path})
    checkpointer.clean_partial()
    resume_from = checkpointer.to_resume(cfg.train.resume)
    resume_step = read_trainer_state(resume_from)["step"] if resume_from else 0
    logger = build_logger(cfg, out, resume_step) if dist.is_main() else NullLogger()
    try:
        trainer = Trainer(cfg, engine, data, checkpointer, logger, device)
        if resume_from:
            trainer.resume(resume_from)
        dist.print0(f"model: {model.num_params():,} params ({model.num_params(non_embedding=True):,} "
                    f"non-embedding), {cfg.model.parametrization}, width multiplier "
                    f"{mup.width_multiplier(cfg.model):g}; {trainer.tokens_per_step:,} tokens/step, world size "
                    f"{dist.world_size()}")
        result = trainer.fit()
    finally:
        logger.close()
    if result.eval_loss is not None:
        dist.print0(f"eval loss {result.eval_loss:.4f} nats; unigram entropy of the corpus "
                    f"{data.unigram_entropy:.4f} nats")
    return result
