"""The training loop on its own: a plain-PyTorch engine stands in for DeepSpeed (one process, same interface),
so the loop's bookkeeping is checked in seconds: steps, accumulation, LR, eval, checkpoints, stop, divergence,
resume, a full disk. The real engine is tested end to end in test_training_train.py and test_training_distributed.py."""

import errno
import math
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

from pretrain.config import config_from_dict
from pretrain.fileio import checksum
from pretrain.model.transformer import build_model
from pretrain.training.checkpoint import Checkpointer, DiskFullError, list_checkpoints, read_trainer_state
from pretrain.training.optim import build_optimizer, lr_schedule
from pretrain.training.trainer import Trainer, TrainingDiverged


class PlainEngine:
    """The `Engine` interface in plain PyTorch: mean gradients over the accumulated micro batches, clipping,
    one optimizer step, the model and optimizer states saved with torch.save."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, accumulation: int, clip: float):
        self.module, self.optimizer, self.accumulation, self.clip = model, optimizer, accumulation, clip
        self.backward_calls = self.step_calls = 0
        self.poison_loss_at: int | None = None  # backward call number whose loss is replaced by NaN
        # optimizer steps taken -> factor on the loss of the weights they left, to fake a blow-up
        self.inflate = lambda steps_taken: 1.0
        self.save_error: BaseException | None = None  # raised by `save` once its file is written: a full disk

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = self.module(inputs, targets) * self.inflate(self.step_calls)
        if self.poison_loss_at is not None and self.backward_calls == self.poison_loss_at:
            loss = loss * math.nan
        return loss

    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accumulation).backward()
        self.backward_calls += 1

    def step(self) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip).item()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_calls += 1
        return norm

    def save(self, checkpoint: Path) -> dict[str, Future]:
        (checkpoint / "ds").mkdir()
        torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict()},
                   checkpoint / "ds" / "states.pt")
        if self.save_error is not None:
            raise self.save_error
        digest = Future()
        digest.set_result(checksum(checkpoint / "ds" / "states.pt"))
        return {"ds/states.pt": digest}

    def load(self, checkpoint: Path, universal: bool) -> None:
        states = torch.load(checkpoint / "ds" / "states.pt", weights_only=True)
        self.module.load_state_dict(states["model"])
        self.optimizer.load_state_dict(states["optimizer"])


class RecordingLogger:
    def __init__(self):
        self.records: list[tuple[int, dict]] = []

    def log(self, metrics: dict, step: int) -> None:
        self.records.append((step, metrics))

    def close(self) -> None:
        pass


def build(tmp_path: Path, embedded, **train) -> tuple[Trainer, PlainEngine, RecordingLogger]:
    data_cfg, data = embedded
    cfg = config_from_dict({
        "model": {"d_model": 32, "n_layers": 1, "head_dim": 16},
        "data": {"vocab_size": data_cfg.vocab_size, "seq_len": data_cfg.seq_len},
        "optim": {"lr": 0.01, "warmup_steps": 2},
        "train": {"steps": 6, "micro_batch_size": 2, "global_batch_size": 8, "eval_every": 3, "eval_batches": 2,
                  "checkpoint_every": 2, "keep_checkpoints": 2, "out_dir": str(tmp_path), **train},
    })
    model = build_model(cfg.model, cfg.vocab_size, seed=0)
    engine = PlainEngine(model, build_optimizer(model, cfg.model, cfg.optim), cfg.train.accumulation(1),
                         cfg.optim.grad_clip)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    checkpointer = Checkpointer(tmp_path / "checkpoints", cfg.train.keep_checkpoints,
                                files={"config.yaml": tmp_path / "config.yaml"})
    logger = RecordingLogger()
    return Trainer(cfg, engine, data, checkpointer, logger, torch.device("cpu")), engine, logger


def test_every_step_accumulates_its_micro_batches_logs_and_checkpoints(tmp_path, embedded):
    trainer, engine, logger = build(tmp_path, embedded)
    result = trainer.fit()
    assert result.step == 6 and not result.stopped_early
    assert engine.backward_calls == 6 * 4 and engine.step_calls == 6  # 8 sequences = 4 micro batches of 2
    assert [step for step, _ in logger.records] == [1, 2, 3, 4, 5, 6]
    assert [step for step, m in logger.records if "eval_loss" in m] == [3, 6]
    assert result.eval_loss == logger.records[-1][1]["eval_loss"]
    first = logger.records[0][1]
    assert first["lr/embedding"] == pytest.approx(0.01 * 0.5)  # warmup step 1 of 2
    assert first["lr/readout"] == pytest.approx(0.01 * 0.5 * 128 / 32)  # μP multiplier 1/m at width 32 (m=1/4)
    assert all(math.isfinite(m["grad_norm"]) and m["tokens_per_s"] > 0 for _, m in logger.records)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000004", "step_00000006"]
    assert read_trainer_state(tmp_path / "checkpoints" / "step_00000006")["step"] == 6


def test_each_eval_is_a_console_line_and_the_bar_shows_the_base_lr(tmp_path, embedded, capsys):
    trainer, _, logger = build(tmp_path, embedded)
    trainer.fit()
    out, bar = capsys.readouterr()
    evals = {step: m["eval_loss"] for step, m in logger.records if "eval_loss" in m}
    assert out.splitlines() == [f"eval step {step}/6: loss {loss:.4f} nats, {step * trainer.tokens_per_step:,} "
                                "tokens seen" for step, loss in evals.items()]
    base = 0.01 * lr_schedule(5, trainer.cfg.optim, 6)  # optim.lr times the schedule at the last step (0-based 5)
    assert f"lr(base)={base:.2e}" in bar
    assert logger.records[-1][1]["lr/readout"] != pytest.approx(base)  # a group's own LR differs: not the one shown
    assert "mfu=" not in bar and trainer.mean_throughput()[1] is None  # CPU: peak FLOP/s unknown


def test_with_a_known_peak_the_bar_and_the_mean_throughput_give_the_mfu(tmp_path, embedded, capsys):
    trainer, _, logger = build(tmp_path, embedded, peak_flops=1e9)
    trainer.fit()
    tokens_per_s, utilization = trainer.mean_throughput()
    # the mean rate over the run: tokens over seconds, i.e. the harmonic mean of the per-step rates
    assert tokens_per_s == pytest.approx(len(logger.records) / sum(1 / m["tokens_per_s"] for _, m in logger.records))
    assert utilization == pytest.approx(trainer.flops_per_token * tokens_per_s / 1e9)
    assert f"mfu={logger.records[-1][1]['mfu']:.1%}" in capsys.readouterr().err


def test_a_nan_loss_stops_before_the_update_and_names_the_last_checkpoint(tmp_path, embedded):
    trainer, engine, _ = build(tmp_path, embedded)
    engine.poison_loss_at = 4 * 4 + 1  # the second micro batch of step 5
    with pytest.raises(TrainingDiverged, match="step 5: the loss is nan.*step_00000004") as info:
        trainer.fit()
    assert info.value.exit_code == 3
    assert engine.step_calls == 4  # step 5's update never happened


def test_a_stop_file_checkpoints_at_the_next_step_and_returns_early(tmp_path, embedded):
    trainer, _, logger = build(tmp_path, embedded, checkpoint_every=100)
    original = trainer.train_step

    def request_stop_during_step_3():
        if trainer.step == 2:
            (tmp_path / "STOP").touch()
        return original()

    trainer.train_step = request_stop_during_step_3
    result = trainer.fit()
    assert result.stopped_early and result.step == 3 and len(logger.records) == 3
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000003"]


def test_resume_continues_with_the_uninterrupted_losses(tmp_path, embedded):
    full, _, full_log = build(tmp_path / "full", embedded)
    full.fit()
    resumed, _, resumed_log = build(tmp_path / "resumed", embedded)  # fresh weights, then the step-4 checkpoint
    resumed.resume(tmp_path / "full" / "checkpoints" / "step_00000004")
    assert resumed.step == 4
    resumed.fit()
    losses = {step: m["loss"] for step, m in full_log.records}
    assert {step: m["loss"] for step, m in resumed_log.records} == {5: losses[5], 6: losses[6]}


def test_a_loss_far_above_the_first_steps_stops_the_run_at_once(tmp_path, embedded):
    trainer, engine, logger = build(tmp_path, embedded)
    engine.inflate = lambda steps_taken: 1e3 if steps_taken >= 1 else 1.0  # step 1's update wrecks the weights
    stopped = r"^step 2: the loss is \S+, above 3x the first step's \(6\.\d+\): training diverged and stopped; " \
              r"no checkpoint was written yet\."
    with pytest.raises(TrainingDiverged, match=stopped) as info:
        trainer.fit()
    assert info.value.exit_code == 3
    assert engine.step_calls == 1 and len(logger.records) == 1  # step 2's update never happened
    assert not (tmp_path / "checkpoints").exists()


def test_weights_an_update_wrecked_are_never_checkpointed(tmp_path, embedded):
    trainer, engine, _ = build(tmp_path, embedded)  # a checkpoint every 2 steps
    engine.inflate = lambda steps_taken: 1e3 if steps_taken >= 4 else 1.0  # step 4's update wrecks the weights
    with pytest.raises(TrainingDiverged, match=r"^after the update of step 4 \(checked before saving it\), the loss "
                                               r"is \S+, above 3x .*the last good checkpoint is \S+step_00000002\. "
                                               r"Lower optim.lr .* and resume with train.allow_config_change=true"):
        trainer.fit()
    assert engine.step_calls == 4  # the update was taken; its weights were checked, not saved
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000002"]


def spike(at: range, factor: float) -> Callable[[int], float]:
    """Loss factors by optimizer steps taken: `factor` for `at`, and 10 for the first step, which makes room
    between 3x the running median (~6 here) and 3x the first loss (~60), where only the running-median rule
    judges."""
    return lambda steps_taken: 10.0 if steps_taken == 0 else factor if steps_taken in at else 1.0


def test_a_loss_that_explodes_more_slowly_is_a_divergence_after_some_steps(tmp_path, embedded):
    trainer, engine, logger = build(tmp_path, embedded, steps=30, checkpoint_every=2, keep_checkpoints=20)
    engine.inflate = spike(range(20, 30), 20.0)  # steps 21, 22, 23 report ~120
    with pytest.raises(TrainingDiverged, match=r"^step 23: the loss \S+ has stayed above 3x its running median .*for "
                                               r"3 steps.*the last good checkpoint is .*step_00000020") as info:
        trainer.fit()
    assert info.value.exit_code == 3
    assert list_checkpoints(tmp_path / "checkpoints")[-1].name == "step_00000020"  # none saved in the spike


def test_a_short_spike_passes_and_the_checks_can_be_turned_off(tmp_path, embedded):
    trainer, engine, _ = build(tmp_path / "short", embedded, steps=20)
    engine.inflate = spike(range(12, 14), 20.0)  # two high steps: fewer than 3
    assert trainer.fit().step == 20
    trainer, engine, _ = build(tmp_path / "off", embedded, steps=20, divergence_factor=0)
    engine.inflate = lambda steps_taken: 1e5 if steps_taken >= 12 else 1.0
    assert trainer.fit().step == 20


TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"  # its full-disk error


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError(TORCH_SHORT_WRITE)],
                         ids=["python", "torch"])
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, embedded, error):
    """The errors a full disk gives, as Python and torch's writer raise them (torch's has no errno); the real
    thing, on a small tmpfs, is in test_training_checkpoint.py."""
    trainer, engine, _ = build(tmp_path, embedded)
    original = engine.save

    def full_after_step_2(checkpoint):
        engine.save_error = error if trainer.step > 2 else None
        return original(checkpoint)

    engine.save = full_after_step_2
    with pytest.raises(DiskFullError) as info:
        trainer.fit()
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == 2
    assert message.startswith(f"{tmp_path / 'checkpoints' / 'step_00000004'}: cannot save the checkpoint, no space "
                              "left on the device (")
    assert " free of " in message and f"the previous checkpoint {tmp_path / 'checkpoints' / 'step_00000002'} (" \
        in message
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000002"]  # no staging directory


def test_ctrl_c_checkpoints_and_stops_and_a_second_one_aborts(tmp_path, embedded):
    trainer, _, logger = build(tmp_path, embedded, checkpoint_every=100)
    original = trainer.train_step

    def interrupted_step():
        if trainer.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return original()

    trainer.train_step = interrupted_step
    result = trainer.fit()
    assert result.stopped_early and result.step == 2 and len(logger.records) == 2
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000002"]
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)  # the trainer's stop was already requested: this one aborts
    signal.signal(signal.SIGINT, signal.default_int_handler)
