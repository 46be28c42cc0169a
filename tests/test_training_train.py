"""End-to-end training through the real CLI and DeepSpeed (CPU, gloo): loss, checkpoints, resume and what it may
change, divergence."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pretrain.config import load_config
from pretrain.training.checkpoint import latest_checkpoint, list_checkpoints, step_dir_name
from pretrain.training.metrics import read_metrics
from tests.helpers import ROOT, losses, pretrain, small_run

pytestmark = pytest.mark.slow


def test_training_lowers_the_loss_and_checkpoints(tmp_path, cache):
    out = tmp_path / "run"
    proc = pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=40", "train.checkpoint_every=10",
                                                             "train.keep_checkpoints=2"))
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 41))
    first, last = records[0]["loss"], records[-1]["loss"]
    assert last < first - 1.0, (first, last)
    assert {"loss", "grad_norm", "tokens_per_s", "lr/embedding", "lr/readout"} <= set(records[0])
    assert records[-1]["eval_loss"] < records[9]["eval_loss"]
    assert "unigram entropy" in proc.stdout and "eval loss" in proc.stdout
    # keep the last two, each complete and self-describing
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_00000030", "step_00000040"]
    last_ckpt = latest_checkpoint(out / "checkpoints")
    assert json.loads((last_ckpt / "trainer.json").read_text())["step"] == 40
    assert (last_ckpt / "config.yaml").read_text() == (out / "config.yaml").read_text()
    assert (last_ckpt / "tokenizer.json").exists()


def test_the_console_shows_each_eval_and_a_summary_that_summary_json_repeats(tmp_path, cache):
    out = tmp_path / "run"
    proc = pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=25"))
    records = read_metrics(out / "metrics.jsonl")
    evals = {r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}
    assert list(evals) == [10, 20, 25]  # every train.eval_every steps and at the end
    per_step = load_config(out / "config.yaml").tokens_per_step()
    shown = re.findall(r"^eval step (\d+)/25: loss (\S+) nats, ([\d,]+) tokens seen$", proc.stdout, re.M)
    assert shown == [(str(s), f"{loss:.4f}", f"{s * per_step:,}") for s, loss in evals.items()]

    summary = json.loads((out / "summary.json").read_text())
    best = min(evals, key=evals.get)
    assert {k: summary[k] for k in ("ended", "exit_code", "step", "steps", "steps_this_run", "tokens", "mfu",
                                    "last_eval_step", "last_eval_loss", "best_eval_step", "best_eval_loss")} == {
        "ended": "finished", "exit_code": 0, "step": 25, "steps": 25, "steps_this_run": 25, "tokens": 25 * per_step,
        "mfu": None, "last_eval_step": 25, "last_eval_loss": evals[25], "best_eval_step": best,
        "best_eval_loss": evals[best]}  # MFU: the peak FLOP/s of a CPU is unknown
    assert summary["tokens_per_s"] == pytest.approx(25 / sum(1 / r["tokens_per_s"] for r in records))
    assert summary["checkpoint"] == str(latest_checkpoint(out / "checkpoints"))
    assert summary["next"] == f"pretrain export-hf {out} HF_DIR"
    assert summary["wall_s"] > 0

    report = proc.stdout.split("\nrun finished ", 1)[1].splitlines()
    assert report[0].startswith(f"at step 25/25: {25 * per_step:,} tokens trained; this run: 25 steps, ")
    assert report[1] == f"  throughput  {summary['tokens_per_s']:,.0f} tokens/s (mean over the steps), MFU unknown " \
                        "(set train.peak_flops, the device's peak FLOP/s)"
    assert report[2:] == [f"  eval loss   best {evals[best]:.4f} nats at step {best}, last {evals[25]:.4f} nats "
                          "at step 25",
                          f"  checkpoint  {summary['checkpoint']}",
                          f"  summary     {out / 'summary.json'}",
                          f"eval loss {evals[25]:.4f} nats; unigram entropy of the corpus "
                          f"{summary['unigram_entropy']:.4f} nats",
                          f"next: {summary['next']}"]
    base_lr = records[-1]["lr/embedding"]  # μP gives the embedding group the base LR: optim.lr x the schedule
    assert f"lr(base)={base_lr:.2e}" in proc.stderr and ", lr=" not in proc.stderr


def test_a_stopped_run_says_so_and_its_next_command_resumes_it(tmp_path, cache):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pretrain", "train", "configs/tiny.yaml",
                             *small_run(out, cache, "train.steps=1000", "train.resume=never")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") > 10):  # past the eval at step 10
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before step 11"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    step = summary["step"]
    assert summary["ended"] == "stopped" and summary["exit_code"] == 0 and 10 < step < 1000
    assert summary["checkpoint"] == str(out / "checkpoints" / step_dir_name(step))
    assert summary["next"] == f"pretrain train {out / 'config.yaml'} train.resume=auto"  # this run's was `never`
    assert f"\nrun stopped at step {step}/1000: " in stdout and stdout.endswith(f"\nnext: {summary['next']}\n")

    command = shlex.split(summary["next"])
    assert command[:2] == ["pretrain", "train"]
    resumed = pretrain(*command[1:], f"train.steps={step + 2}").stdout  # as printed, with a nearer end
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ended"] == "finished" and (summary["step"], summary["steps_this_run"]) == (step + 2, 2)
    evals = {r["step"]: r["eval_loss"] for r in read_metrics(out / "metrics.jsonl") if "eval_loss" in r}
    assert 10 in evals  # the eval before the stop counts
    assert (summary["best_eval_step"], summary["last_eval_step"]) == (min(evals, key=evals.get), step + 2)
    assert f"this run: 2 steps from step {step}, " in resumed


def test_group_lrs_follow_the_schedule_times_mup_multiplier(tmp_path, cache):
    out = tmp_path / "run"
    pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=12", "model.d_model=256",
                                                      "model.head_dim=64", "optim.lr=0.01", "optim.schedule=linear",
                                                      "optim.min_lr_ratio=0.1"))
    records = read_metrics(out / "metrics.jsonl")
    for r in records:
        step = r["step"] - 1  # the LR used by the step just taken
        multiplier = (step + 1) / 5 if step < 5 else 0.1 + 0.9 * (1 - (step - 5) / 7)
        assert r["lr/embedding"] == pytest.approx(0.01 * multiplier)
        assert r["lr/query"] == pytest.approx(0.01 * multiplier * 128 / 256)
        assert r["lr/readout"] == pytest.approx(0.01 * multiplier * 128 / 256)


def test_sigkill_then_resume_reproduces_the_uninterrupted_losses(tmp_path, cache):
    steps = ["train.steps=40", "train.checkpoint_every=10"]
    reference = tmp_path / "reference"
    pretrain("train", "configs/tiny.yaml", *small_run(reference, cache, *steps))

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pretrain", "train", "configs/tiny.yaml",
                             *small_run(out, cache, *steps)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "step_00000010").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert latest_checkpoint(out / "checkpoints").name != "step_00000040", "killed too late to test resume"

    pretrain("train", "configs/tiny.yaml", *small_run(out, cache, *steps, "train.resume=auto"))
    assert losses(out) == losses(reference)  # identical on CPU, every step


def test_interrupted_save_is_ignored_and_cleaned(tmp_path, cache):
    out = tmp_path / "run"
    pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=4", "train.checkpoint_every=2"))
    partial = out / "checkpoints" / ".tmp-step_00000006"
    partial.mkdir()
    (partial / "trainer.json").write_text("{")
    assert latest_checkpoint(out / "checkpoints").name == "step_00000004"
    proc = pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=6", "train.checkpoint_every=2"))
    assert "resumed from" in proc.stdout and "step 4" in proc.stdout
    assert not partial.exists()
    assert sorted(losses(out)) == [1, 2, 3, 4, 5, 6]


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, cache):
    out = tmp_path / "run"
    pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=4", "train.checkpoint_every=2"))
    proc = pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=20", "optim.lr=1e20",
                                                             "optim.warmup_steps=0", "train.allow_config_change=true"),
                    check=False)
    assert proc.returncode == 3
    message = proc.stderr.strip().splitlines()[-1]
    assert "training diverged" in message and "step_00000004" in message
    assert latest_checkpoint(out / "checkpoints").name == "step_00000004"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ended"] == "diverged" and summary["exit_code"] == 3
    assert summary["checkpoint"] == str(out / "checkpoints" / "step_00000004")
    assert summary["next"] == f"pretrain train {out / 'config.yaml'} optim.lr=LOWER_LR train.allow_config_change=true"
    assert f"\nrun diverged at step {summary['step']}/20: " in proc.stdout


def test_a_loss_that_blows_up_from_the_first_steps_exits_3_and_saves_nothing(tmp_path, cache):
    out = tmp_path / "run"
    proc = pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=20", "train.checkpoint_every=5",
                                                             "optim.lr=1e3", "optim.warmup_steps=0"), check=False)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    (message,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert message.startswith("error: step 2: the loss is ") and "above 3x the first step's" in message
    assert "training diverged and stopped; no checkpoint was written yet" in message
    assert list_checkpoints(out / "checkpoints") == []
    assert json.loads((out / "summary.json").read_text())["ended"] == "diverged"


def test_inspect_shows_roles_stds_and_multipliers(tmp_path):
    proc = pretrain("inspect", "configs/tiny.yaml", "model.d_model=256", "model.head_dim=64", "--json")
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["embed.weight"]["role"] == "embedding" and rows["embed.weight"]["lr_multiplier"] == 1.0
    assert rows["blocks.0.attn.wk.weight"]["lr_multiplier"] == 0.5
    assert rows["blocks.0.attn.wk.weight"]["measured_std"] == pytest.approx(256**-0.5, rel=0.05)
    assert rows["readout.weight"]["measured_std"] == pytest.approx(1 / 256, rel=0.05)
    table = pretrain("inspect", "configs/tiny.yaml").stdout
    assert "blocks.3.mlp.w_out.weight" in table and "mlp_out" in table


def test_the_chunked_loss_trains_like_the_plain_path_step_for_step(tmp_path, cache):
    """Default chunked loss vs the plain path (model.loss_chunk=0), 8 steps of real training: the losses agree
    at every step within 8x the spread of the plain path re-summed in another order (micro batches of 4
    instead of 8 at the same global batch of 16)."""
    steps = ["train.steps=8", "train.global_batch_size=16", "model.loss_chunk=100"]  # 8 x 64 tokens: ragged
    variants = {"plain": ["model.loss_chunk=0"], "reordered": ["model.loss_chunk=0", "train.micro_batch_size=4"],
                "chunked": []}
    runs = {}
    for name, extra in variants.items():
        pretrain("train", "configs/tiny.yaml", *small_run(tmp_path / name, cache, *steps, *extra))
        runs[name] = losses(tmp_path / name)
    noise = max(abs(runs["reordered"][s] - v) / v for s, v in runs["plain"].items())
    for step, want in runs["plain"].items():
        assert abs(runs["chunked"][step] - want) / want <= 8 * max(noise, 1.2e-7), (step, noise)


def test_a_mixture_trains_on_each_source_by_weight_and_logs_its_tokens(tmp_path, cache):
    prose = tmp_path / "prose.jsonl"
    prose.write_text("".join(json.dumps({"text": f"story {i}: " + " ".join(f"word{(i * j) % 89}" for j in range(300))})
                             + "\n" for i in range(300)))
    sources = f"data.sources=[{{source: embedded, weight: 3, name: code}}, {{source: {prose}, weight: 1, name: prose}}]"
    out = tmp_path / "run"
    overrides = [o for o in small_run(out, cache, "train.steps=10", "train.global_batch_size=16")
                 if not o.startswith("data.max_documents")]
    pretrain("train", "configs/tiny.yaml", *overrides, "data.max_documents=100", sources)
    records = read_metrics(out / "metrics.jsonl")
    last = records[-1]
    assert last["tokens/code"] == 10 * 12 * 64 and last["tokens/prose"] == 10 * 4 * 64  # 3:1 of 16 per step
    assert [r["tokens/code"] for r in records] == [k * 12 * 64 for k in range(1, 11)]
    assert records[-1]["loss"] < records[0]["loss"]


RESUMABLE = ["train.steps=4", "train.checkpoint_every=2", "deepspeed.zero_stage=1"]


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory, cache) -> Path:
    """A finished 4-step ZeRO-1 run, checkpointed at steps 2 and 4, to resume from."""
    out = tmp_path_factory.mktemp("resumable") / "run"
    pretrain("train", "configs/tiny.yaml", *small_run(out, cache, *RESUMABLE))
    return out


def files_of(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("change, named", [
    ("model.d_model=128", "model.d_model (64 there, 128 here)"),
    ("model.parametrization=sp", 'model.parametrization ("mup" there, "sp" here)'),
    ("data.vocab_size=1024", "data.vocab_size (512 there, 1024 here)"),
    ("deepspeed.zero_stage=3", "deepspeed.zero_stage (1 there, 3 here)"),
    ("optim.name=lion", 'optim.name ("adamw" there, "lion" here)'),  # Lion cannot read AdamW's states
])
def test_a_resume_with_another_model_or_zero_stage_is_one_line_and_writes_nothing(four_steps, tmp_path, cache, change,
                                                                                  named):
    run = shutil.copytree(four_steps, tmp_path / "run")
    before = files_of(run)
    proc = pretrain("train", "configs/tiny.yaml", *small_run(run, cache, *RESUMABLE, "train.steps=6", change,
                                                             "train.allow_config_change=true"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (message,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert message.startswith(f"error: {run / 'checkpoints' / 'step_00000004'}: cannot resume with another model or "
                              f"state layout: {named}; ")
    assert files_of(run) == before  # config.yaml, summary.json, metrics.jsonl, checkpoints: as they were


def test_a_resume_that_changes_the_optimizer_or_batch_needs_allow_config_change_and_prints_each_change(
        four_steps, tmp_path, cache):
    run = shutil.copytree(four_steps, tmp_path / "run")
    before = files_of(run)
    changes = [*RESUMABLE, "optim.lr=0.005", "train.micro_batch_size=4", "train.steps=6", "train.eval_every=3"]
    refused = pretrain("train", "configs/tiny.yaml", *small_run(run, cache, *changes), check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (message,) = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert message == (f"error: {run / 'checkpoints' / 'step_00000004'}: resuming would change optim.lr (0.015625 "
                       "there, 0.005 here), the global batch (sequences per step) (8 there, 4 here), continuing the "
                       "run as another experiment; set train.allow_config_change=true to do so, or keep the "
                       "checkpoint's settings (train.global_batch_size fixes it at any number of processes)")
    assert files_of(run) == before

    resumed = pretrain("train", "configs/tiny.yaml", *small_run(run, cache, *changes, "train.allow_config_change=true"))
    checkpoint = run / "checkpoints" / "step_00000004"
    shown = resumed.stdout.split(f"resuming with settings that differ from {checkpoint / 'config.yaml'}:\n")[1]
    assert shown.splitlines()[:6] == ["  optim.lr: 0.015625 -> 0.005 (train.allow_config_change)",
                                      "  train.steps: 4 -> 6",
                                      "  train.micro_batch_size: 8 -> 4",
                                      "  train.eval_every: 10 -> 3",
                                      f'  train.out_dir: "{four_steps}" -> "{run}"',  # a copy of the run
                                      "  the global batch (sequences per step): 8 -> 4 (train.allow_config_change)"]
    assert f"resumed from {checkpoint} at step 4" in resumed.stdout
    assert sorted(losses(run)) == [1, 2, 3, 4, 5, 6]
    assert load_config(latest_checkpoint(run / "checkpoints") / "config.yaml").optim.lr == 0.005


def test_a_zero1_checkpoint_resumes_under_zero2_exactly(four_steps, tmp_path, cache):
    run = shutil.copytree(four_steps, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / "step_00000004")
    proc = pretrain("train", "configs/tiny.yaml", *small_run(run, cache, *RESUMABLE, "deepspeed.zero_stage=2"))
    assert "  deepspeed.zero_stage: 1 -> 2\n" in proc.stdout and "at step 2" in proc.stdout
    assert losses(run) == losses(four_steps)  # steps 3 and 4 again, under ZeRO-2
