"""The training loop, assembled from injected parts: an engine, data, a checkpointer, a logger.

The trainer knows nothing of DeepSpeed, W&B or checkpoint formats. The LR comes from a client-side
multiplicative schedule applied to every μP group of the engine's optimizer.
"""

from __future__ import annotations

import math
import signal
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as tdist

from ..config import Config
from ..data.prepared import PreparedData
from ..data.sampler import StepSampler, eval_micro_batches, train_micro_batches
from ..errors import ExitCode, UserError
from ..model.flops import flops_per_token
from ..model.loss import lm_loss
from ..progress import progress_bar, write_line
from . import distributed as dist
from .checkpoint import Checkpointer, latest_checkpoint
from .engine import Engine
from .metrics import MetricsLogger, mfu, peak_flops, peak_memory_gib
from .optim import lr_schedule, set_lr


class TrainingDiverged(UserError, RuntimeError):
    """The loss blew up (NaN, inf, or far above where it started); the run stopped and the last good checkpoint is
    kept."""

    exit_code = ExitCode.DIVERGED  # sweeps record such a point as diverged


@dataclass
class TrainResult:
    step: int  # optimizer steps completed
    train_loss: float
    eval_loss: float | None
    stopped_early: bool  # a stop was requested (preemption) and a checkpoint was written


class StopRequest:
    """Set by SIGUSR1/SIGTERM (Slurm preemption), Ctrl-C, or a STOP file in the run dir; honoured at the next
    step boundary with a checkpoint. A second Ctrl-C aborts at once."""

    def __init__(self, stop_file: Path):
        self.stop_file, self.signalled = stop_file, False
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)
        signal.signal(signal.SIGINT, self._interrupt)

    def _handle(self, signum, frame) -> None:
        self.signalled = True

    def _interrupt(self, signum, frame) -> None:
        if self.signalled:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.signalled = True
        print("\nCtrl-C: checkpointing after this step, then stopping (Ctrl-C again to abort without it)",
              file=sys.stderr, flush=True)

    def __bool__(self) -> bool:
        return self.signalled or self.stop_file.exists()


class LossSpikes:
    """When the loss says the run has diverged.

    At once, from the first step: a NaN or inf loss, or one above `factor` times the first step's loss. The first
    loss is that of a model that has learned nothing (≈ ln(vocab) at init: a uniform guess); `factor` times it is
    far worse than guessing, which no healthy run reaches, however noisy, and which a blow-up reaches in a step.
    Over time: the loss above `factor` times its running median (over the last WINDOW healthy steps, once HISTORY
    of them are seen) and above the first step's loss, for `steps` steps in a row; while such a run of high losses
    lasts, periodic checkpoints wait, so the newest checkpoint stays a good one. `factor` 0 keeps only NaN and inf.
    """

    WINDOW = 100
    HISTORY = 10  # healthy steps seen before the median is trusted

    def __init__(self, factor: float, steps: int, initial: float | None = None):
        self.factor, self.steps, self.initial = factor, steps, initial
        self.recent: deque[float] = deque(maxlen=self.WINDOW)
        self.high = 0  # consecutive high steps so far

    def exploded(self, loss: float) -> str | None:
        """Why `loss` alone shows a diverged run (not finite, or far above the first loss); None if it does not."""
        if not math.isfinite(loss):
            return f"the loss is {loss}"
        if self.factor and self.initial is not None and loss > self.factor * self.initial:
            return f"the loss is {loss:.4g}, above {self.factor:g}x the first step's ({self.initial:.4g})"
        return None

    def update(self, loss: float) -> str | None:
        """Record a step's loss; why the run has diverged, or None."""
        reason = self.exploded(loss)
        if reason:
            return reason
        if self.initial is None:
            self.initial = loss
        judged = self.factor and len(self.recent) >= self.HISTORY
        if judged and loss > self.factor * self.median and loss > self.initial:
            self.high += 1
            if self.high < self.steps:
                return None
            return (f"the loss {loss:.4g} has stayed above {self.factor:g}x its running median ({self.median:.4g}) "
                    f"and above the first step's ({self.initial:.4g}) for {self.steps} steps")
        self.high = 0
        self.recent.append(loss)
        return None

    @property
    def median(self) -> float:
        return statistics.median(self.recent)


class Trainer:
    def __init__(self, cfg: Config, engine: Engine, data: PreparedData, checkpointer: Checkpointer,
                 logger: MetricsLogger, device: torch.device):
        self.cfg, self.engine, self.optimizer, self.data = cfg, engine, engine.optimizer, data
        self.checkpointer, self.logger, self.device = checkpointer, logger, device
        self.world = dist.world_size()
        self.sampler = StepSampler.over(data, "train", cfg.train.global_batch(self.world), cfg.train.seed)
        self.tokens_per_step = cfg.tokens_per_step(self.world)
        self.flops_per_token = flops_per_token(cfg)
        self.peak_flops = peak_flops(device, cfg.train.peak_flops)  # None on CPU unless configured: no MFU
        self.step = 0
        self.steps_run, self.step_seconds = 0, 0.0  # this process's steps and their time: the mean throughput
        self.stop = StopRequest(Path(cfg.train.out_dir) / "STOP")
        self.spikes = LossSpikes(cfg.train.divergence_factor, cfg.train.divergence_steps)

    def resume(self, path: Path) -> None:
        """Continue from the checkpoint at `path`: weights, optimizer, RNG and the step (so the data position
        and the LR schedule)."""
        state = self.checkpointer.load(self.engine, path)
        self.step = state["step"]
        self.spikes.initial = state.get("initial_loss")
        dist.print0(f"resumed from {path} at step {self.step}")

    def fit(self) -> TrainResult:
        cfg = self.cfg.train
        loss = eval_loss = math.nan
        with progress_bar(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not dist.is_main(),
                          dynamic_ncols=True) as bar:
            while self.step < cfg.steps:
                started = time.perf_counter()
                loss, grad_norm, stop = self.train_step()
                self.step += 1
                seconds = time.perf_counter() - started
                self.steps_run += 1
                self.step_seconds += seconds
                tokens_per_s = self.tokens_per_step / seconds
                metrics = {"loss": loss, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s,
                           "mem_gb": peak_memory_gib(self.device),
                           **{f"lr/{g['name']}": g["lr"] for g in self.optimizer.param_groups},
                           **self._tokens_per_source()}
                if self.peak_flops:
                    metrics["mfu"] = self._mfu(tokens_per_s)
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    eval_loss = metrics["eval_loss"] = self.evaluate()
                    self._print(f"eval step {self.step}/{cfg.steps}: loss {eval_loss:.4f} nats, "
                                f"{self.step * self.tokens_per_step:,} tokens seen")
                self.logger.log(metrics, self.step)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    bar.set_postfix(self._postfix(metrics), refresh=False)  # drawn by update, at its pace
                bar.update(1)
                periodic = self.step % cfg.checkpoint_every == 0 and not self.spikes.high
                if stop or periodic or self.step == cfg.steps:
                    self.save()
                if stop:
                    self._print(f"stop requested: checkpointed at step {self.step}, exiting")
                    break
        return TrainResult(self.step, loss, None if math.isnan(eval_loss) else eval_loss,
                           stopped_early=self.step < cfg.steps)

    def mean_throughput(self) -> tuple[float | None, float | None]:
        """Tokens/s over this process's training steps (evals and checkpoints excluded) and the MFU at that rate;
        both None before the first step, the MFU also where the device's peak FLOP/s is unknown."""
        if not self.steps_run:
            return None, None
        tokens_per_s = self.steps_run * self.tokens_per_step / self.step_seconds
        return tokens_per_s, self._mfu(tokens_per_s)

    def train_step(self) -> tuple[float, float, bool]:
        """One optimizer step over this rank's micro batches; returns (mean loss, grad norm, stop?)."""
        self.engine.train()
        set_lr(self.optimizer, self.cfg.optim, self._multiplier(self.step))
        batches = train_micro_batches(self.data, self.sampler, self.step, dist.rank(), self.world,
                                      self.cfg.train.micro_batch_size)
        total = torch.zeros((), device=self.device)
        for batch in batches:
            loss = lm_loss(self.engine, batch.to(self.device))
            self.engine.backward(loss)
            total += loss.detach().float()
        mean_loss, stop = self._reduce_loss_and_stop(total / len(batches))
        diverged = self.spikes.update(mean_loss)
        if diverged:  # before the update, so the weights stay those of the last good step
            raise TrainingDiverged(self._stopped(f"step {self.step + 1}: {diverged}"))
        return mean_loss, self.engine.step(), stop

    def _reduce_loss_and_stop(self, loss: torch.Tensor) -> tuple[float, bool]:
        """One all-reduce per step: the loss averaged over ranks, and whether any rank was asked to stop."""
        packed = torch.stack([loss.float(), torch.tensor(float(bool(self.stop)), device=self.device)])
        if self.world > 1:
            tdist.all_reduce(packed)
        return packed[0].item() / self.world, packed[1].item() > 0

    @torch.no_grad()
    def evaluate(self) -> float:
        self.engine.eval()
        batches = eval_micro_batches(self.data, self.cfg.train.eval_batches, self.cfg.train.micro_batch_size,
                                     dist.rank(), self.world)
        total = torch.zeros((), device=self.device)
        for batch in batches:
            total += lm_loss(self.engine, batch.to(self.device)).float()
        packed = torch.stack([total, torch.tensor(float(len(batches)), device=self.device)])
        if self.world > 1:
            tdist.all_reduce(packed)
        return (packed[0] / packed[1]).item()

    def save(self) -> Path:
        """Checkpoint the weights of the step just taken, once their loss shows they did not blow up: a step's
        loss is that of the weights before its update, so an update that wrecks them shows only in the next one."""
        diverged = self.spikes.exploded(self._loss_now())
        if diverged:
            raise TrainingDiverged(self._stopped(f"after the update of step {self.step} (checked before saving it), "
                                                 f"{diverged}"))
        return self.checkpointer.save(self.engine, self.step, {"world_size": self.world,
                                                               "data_step": self.step,
                                                               "global_batch": self.sampler.global_batch,
                                                               "lr_multiplier": self._multiplier(self.step),
                                                               "initial_loss": self.spikes.initial})

    @torch.no_grad()
    def _loss_now(self) -> float:
        """The loss of the weights as they are, on the first micro batch of the step just taken (on every rank,
        averaged): one forward, a small price next to a checkpoint."""
        self.engine.eval()
        batch = train_micro_batches(self.data, self.sampler, self.step - 1, dist.rank(), self.world,
                                    self.cfg.train.micro_batch_size)[0]
        loss = lm_loss(self.engine, batch.to(self.device)).float()
        if self.world > 1:
            tdist.all_reduce(loss)
        return loss.item() / self.world

    def _mfu(self, tokens_per_s: float) -> float | None:
        return mfu(self.flops_per_token, tokens_per_s, self.world, self.peak_flops) if self.peak_flops else None

    def _postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        """The progress bar's figures for the step just taken. Its LR is the base LR (optim.lr) times the
        schedule: every group's LR is that times the group's μP multiplier (each is in metrics.jsonl)."""
        base_lr = self.cfg.optim.lr * self._multiplier(self.step - 1)  # the LR the step just taken used
        postfix = {"loss": f"{metrics['loss']:.3f}", "lr(base)": f"{base_lr:.2e}",
                   "tok_s": f"{metrics['tokens_per_s']:.0f}"}
        if "mfu" in metrics:
            postfix["mfu"] = f"{metrics['mfu']:.1%}"
        return postfix

    @staticmethod
    def _print(line: str) -> None:
        """A line above the progress bar (rank 0), flushed so that a log file (Slurm, sweeps) has it at once."""
        if dist.is_main():
            write_line(line)
            sys.stdout.flush()

    def _tokens_per_source(self) -> dict[str, int]:
        """Training tokens each source has given so far (with several sources)."""
        if len(self.data.sources) == 1:
            return {}
        seq_len = self.cfg.data.seq_len
        return {f"tokens/{s.name}": n * seq_len for s, n in zip(self.data.sources, self.sampler.seen(self.step))}

    def _multiplier(self, step: int) -> float:
        return lr_schedule(step, self.cfg.optim, self.cfg.train.steps)

    def _stopped(self, what: str) -> str:
        last = latest_checkpoint(self.checkpointer.root)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        resume = " and resume with train.allow_config_change=true" if last else ""
        return (f"{what}: training diverged and stopped; {kept}. Lower optim.lr (now {self.cfg.optim.lr:g}) or "
                f"raise optim.warmup_steps{resume} (train.divergence_factor=0 turns the loss-spike checks off).")
