"""`pretrain train`: build every component from the config, run the trainer, and report how the run ended."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import torch

from ..config import Config
from ..data.prepared import open_prepared
from ..data.shards import prepare
from ..errors import ConfigError
from ..fileio import write_text
from ..locks import Lock, LockHeld
from ..model import mup
from ..model.transformer import build_model
from ..outputs import CHECKPOINTS, Kind, check_location, check_output, claim, marked_by
from . import distributed as dist
from .checkpoint import (
    Checkpointer,
    check_resume,
    clean_partial,
    latest_checkpoint,
    list_checkpoints,
    read_trainer_state,
    to_resume,
)
from .engine import build_engine, init_distributed
from .metrics import NullLogger, RunSummary, read_metrics
from .optim import build_optimizer
from .tracking import build_logger
from .trainer import Trainer, TrainingDiverged, TrainResult

SUMMARY_FILE = "summary.json"
RUN_LOCK = ".lock"  # in the run dir: held by rank 0, for every rank of the job, while the run lasts


def train(cfg: Config) -> TrainResult:
    """Train as `cfg` says; rank 0 ends with the run's summary, also in OUT/summary.json, when the run finished,
    stopped on request or diverged (TrainingDiverged is raised after it)."""
    started = time.perf_counter()
    # On every rank, before anything is written (`pretrain.outputs`): the run dir may hold a run to resume, but
    # may not be a file, the data cache, or inside another run's checkpoints.
    check_location(cfg.train.out_dir, "train.out_dir", Kind.WORKSPACE, [("the data cache", cfg.data.cache_dir)])
    device = dist.pick_device(cfg.train.device)
    init_distributed(device)
    with Lock(Path(cfg.train.out_dir) / RUN_LOCK) as lock:  # released however the run ends
        dist.on_main(lambda: claim_run_dir(cfg, lock))
        return _run(cfg, device, started)


def claim_run_dir(cfg: Config, lock: Lock) -> None:
    """On rank 0, before anything is written: make `train.out_dir` this job's, taking its lock for every rank of
    the job. Refuse a directory another run is training in, or, with train.resume=never, one that holds a run."""
    out = Path(cfg.train.out_dir)
    # A directory that is not empty must be a run's, so that a run never writes its config.yaml, metrics and
    # checkpoints among a user's files
    check_output(out, "train.out_dir", Kind.WORKSPACE, "train", overwrite=True, owned=is_run_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock.take()
    except LockHeld as held:
        raise ConfigError(f"train.out_dir {out}: another `pretrain train` is running there ({held.holder}); wait "
                          f"for it to end (or stop it: touch {out}/STOP), or choose another train.out_dir") from None
    claim(out, "train")
    metrics = out / "metrics.jsonl"
    if cfg.train.resume == "never" and (list_checkpoints(out / CHECKPOINTS)
                                        or metrics.is_file() and metrics.stat().st_size):
        raise ConfigError(f"train.out_dir {out}: holds a run already (checkpoints or metrics.jsonl), which "
                          "train.resume=never would mix with a new one; choose another train.out_dir, or move "
                          f"{out} away (train.resume=auto continues that run)")


def is_run_dir(directory: Path) -> bool:
    """Whether a training run may use `directory`: one marked by a run, one holding a run's checkpoints (a run
    from before the mark, or checkpoints copied there to resume), or one holding nothing but a run's lock and
    launch logs (sbatch writes the job's log there before the run starts)."""
    if marked_by("train")(directory) or (directory / CHECKPOINTS).is_dir():
        return True
    return all(entry.name == RUN_LOCK or entry.suffix == ".log" and entry.is_file() for entry in directory.iterdir())


def _run(cfg: Config, device: torch.device, started: float) -> TrainResult:
    out = Path(cfg.train.out_dir)
    resume_from = to_resume(out / CHECKPOINTS, cfg.train.resume)
    if resume_from:
        check_resume(cfg, resume_from)  # before anything is written: a refused resume leaves the run as it was
    clean_partial(out / CHECKPOINTS)
    if dist.is_main():
        write_text(out / "config.yaml", cfg.to_yaml())
        (out / "STOP").unlink(missing_ok=True)
        (out / SUMMARY_FILE).unlink(missing_ok=True)  # describes the run that wrote it: a crash leaves none
    # Rank 0 prepares a small source itself (seconds; a large one must be prepared beforehand) and tells the
    # others where the data is; every rank opens it once.
    data = open_prepared(cfg.data, dist.on_main(lambda: prepare(cfg.data, in_band=True)))

    model = build_model(cfg.model, cfg.vocab_size, seed=cfg.train.seed, device=device)
    engine = build_engine(cfg, model, build_optimizer(model, cfg.model, cfg.optim), dist.world_size(), device)
    checkpointer = Checkpointer(out / CHECKPOINTS, cfg.train.keep_checkpoints,
                                files={"config.yaml": out / "config.yaml", "tokenizer.json": data.tokenizer_path})
    resume_step = read_trainer_state(resume_from)["step"] if resume_from else 0
    logger = build_logger(cfg, out, resume_step) if dist.is_main() else NullLogger()
    diverged = None
    try:
        trainer = Trainer(cfg, engine, data, checkpointer, logger, device)
        if resume_from:
            trainer.resume(resume_from)
        dist.print0(f"model: {model.num_params():,} params ({model.num_params(non_embedding=True):,} "
                    f"non-embedding), {cfg.model.parametrization}, width multiplier "
                    f"{mup.width_multiplier(cfg.model):g}; {trainer.tokens_per_step:,} tokens/step, world size "
                    f"{dist.world_size()}")
        try:
            result = trainer.fit()
        except TrainingDiverged as err:  # reported like any other end, then raised for its exit status
            diverged = err
    finally:
        logger.close()
    if dist.is_main():
        ended = "diverged" if diverged else "stopped" if result.stopped_early else "finished"
        summary = summarize(cfg, trainer, data.unigram_entropy, ended, time.perf_counter() - started)
        summary.write(out / SUMMARY_FILE)
        print("\n".join(summary.lines(out / SUMMARY_FILE)), flush=True)
    if diverged:
        raise diverged
    return result


def summarize(cfg: Config, trainer: Trainer, unigram_entropy: float, ended: str, wall_s: float) -> RunSummary:
    """The summary of a run that `ended` so, on rank 0: evals from metrics.jsonl, so that those before a resume
    count too."""
    out = Path(cfg.train.out_dir)
    evals = {r["step"]: r["eval_loss"] for r in read_metrics(out / "metrics.jsonl") if "eval_loss" in r}
    tokens_per_s, mfu = trainer.mean_throughput()
    checkpoint = latest_checkpoint(trainer.checkpointer.root)
    return RunSummary.of(ended, evals, step=trainer.step, steps=cfg.train.steps, steps_this_run=trainer.steps_run,
                         tokens=trainer.step * trainer.tokens_per_step, wall_s=round(wall_s, 3),
                         tokens_per_s=tokens_per_s, mfu=mfu, unigram_entropy=unigram_entropy,
                         checkpoint=str(checkpoint) if checkpoint else None,
                         next=next_command(cfg, ended, trainer.world), world_size=trainer.world)


def next_command(cfg: Config, ended: str, world_size: int) -> str:
    """What to run after a run that `ended` so: export a finished one; resume a stopped one from its newest
    checkpoint with its own resolved config; resume a diverged one from its last good checkpoint at a lower LR."""
    out = Path(cfg.train.out_dir)
    if ended == "finished":
        return shlex.join(["pretrain", "export-hf", str(out), "HF_DIR"])
    command = ["pretrain", "train", str(out / "config.yaml")]
    if cfg.train.resume != "auto":
        command.append("train.resume=auto")
    if ended == "diverged":
        command += ["optim.lr=LOWER_LR", "train.allow_config_change=true"]  # a resume may change the LR only so
    launch = f"  # launched as this run was, {world_size} processes" if world_size > 1 else ""
    return shlex.join(command) + launch
