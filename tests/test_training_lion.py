"""Lion: its update against the formula written out here, its μP groups, and real training runs under DeepSpeed
ZeRO 0-3 with the other new options of the paper's table (biases, scalar gains): each step moves every entry by
exactly its group's LR, and a resume from a checkpoint continues the uninterrupted run's losses exactly."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from pretrain.config import ModelConfig, OptimConfig, load_config
from pretrain.fileio import checksum
from pretrain.model.transformer import build_model
from pretrain.training.checkpoint import load_consolidated_state_dict, step_dir_name
from pretrain.training.lion import Lion
from pretrain.training.metrics import read_metrics
from pretrain.training.optim import build_optimizer
from tests.helpers import losses, pretrain, small_run


def test_two_steps_follow_the_formula():
    """c = β1·m + (1−β1)·g; θ ← θ − η·λ·θ − η·sign(c); m ← β2·m + (1−β2)·g, per entry."""
    theta = torch.tensor([1.0, -2.0, 0.5, 3.0])
    grads = [torch.tensor([0.3, -0.1, 0.0, 2.0]), torch.tensor([-0.5, -0.2, 0.4, -0.1])]
    param = torch.nn.Parameter(theta.clone())
    optimizer = Lion([param], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    want, m = theta.clone(), torch.zeros(4)
    for g in grads:
        param.grad = g.clone()
        optimizer.step()
        c = 0.9 * m + 0.1 * g
        want = want - 0.1 * 0.5 * want - 0.1 * torch.sign(c)
        m = 0.99 * m + 0.01 * g
    torch.testing.assert_close(param.detach(), want)
    torch.testing.assert_close(optimizer.state[param]["exp_avg"], m)
    assert set(optimizer.state[param]) == {"exp_avg"}  # one state: half AdamW's memory


def test_lion_keeps_every_mup_group_and_lr_of_adamw():
    """The paper's rule: Lion's LR per role is Adam's (α/m on hidden matrices, α on vectors); weight decay too."""
    model_cfg = ModelConfig(d_model=256, n_layers=1, head_dim=64, bias=True, norm_gains="scalar")
    model = build_model(model_cfg, 512)
    adamw = build_optimizer(model, model_cfg, OptimConfig(lr=0.01, weight_decay=0.1))
    lion = build_optimizer(model, model_cfg, OptimConfig(lr=0.01, weight_decay=0.1, name="lion"))
    assert type(adamw) is torch.optim.AdamW and type(lion) is Lion
    keys = ("name", "lr", "lr_scale", "weight_decay")
    assert [{k: g[k] for k in keys} for g in lion.param_groups] == [{k: g[k] for k in keys} for g in adamw.param_groups]
    lrs = {g["name"]: g["lr"] for g in lion.param_groups}
    assert lrs["query"] == lrs["mlp_out"] == lrs["readout"] == pytest.approx(0.01 / 2)
    assert lrs["embedding"] == lrs["gain"] == lrs["bias"] == pytest.approx(0.01)


# The paper's three new options at once; one process, so that ZeRO's partitions are one rank's (multi-process
# ZeRO is tests/test_training_distributed.py's); no decay, so that a step is the sign alone; a query drawn like
# the keys, so that the keys have a gradient at the first step too.
OPTIONS = ["optim.name=lion", "optim.beta2=0.99", "model.bias=true", "model.norm_gains=scalar",
           "model.zero_query=false", "train.steps=4", "train.checkpoint_every=1", "train.keep_checkpoints=4"]
STAGES = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache) -> dict[int, Path]:
    """A 4-step run per ZeRO stage, checkpointed after every step."""
    root = tmp_path_factory.mktemp("lion")
    for stage in STAGES:
        pretrain("train", "configs/tiny.yaml", *small_run(root / f"zero{stage}", cache, *OPTIONS,
                                                          f"deepspeed.zero_stage={stage}"))
    return {stage: root / f"zero{stage}" for stage in STAGES}


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_each_step_moves_every_entry_by_its_groups_lr(runs, stage):
    """From the seeded init, each of the first two steps moves every entry by exactly its μP group's LR at that
    step, or not at all where the direction is zero (embedding rows of tokens not in the batch): biases from 0,
    scalar gains from 1. (Adam's first step is ±lr too, up to ε; its second is not.)"""
    run = runs[stage]
    cfg = load_config(run / "config.yaml")
    model = build_model(cfg.model, cfg.vocab_size, seed=cfg.train.seed)
    before = {name: p.detach() for name, p in model.named_parameters()}
    records = read_metrics(run / "metrics.jsonl")
    for step in (1, 2):
        after = load_consolidated_state_dict(run / "checkpoints" / step_dir_name(step))
        for name, role in model.param_roles().items():
            moved, lr = (after[name] - before[name]).abs(), records[step - 1][f"lr/{role.value}"]
            assert torch.all(torch.isclose(moved, torch.tensor(lr), rtol=0, atol=1e-6) | (moved == 0)), (step, name)
            assert torch.all(moved > 0) if role.value != "embedding" else moved.any(), (step, name)
        before = after
    assert records[0]["lr/query"] == pytest.approx(2 * records[0]["lr/bias"])  # α/m at m = 1/2; biases α


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_a_resume_continues_the_uninterrupted_losses_exactly(runs, tmp_path, cache, stage):
    """Lion's momentum comes back from the checkpoint: without it, step 3's update (and step 4's loss) would
    differ."""
    run, resumed = runs[stage], tmp_path / "resumed"
    name = step_dir_name(2)
    shutil.copytree(run / "checkpoints" / name, resumed / "checkpoints" / name)
    pretrain("train", "configs/tiny.yaml", *small_run(resumed, cache, *OPTIONS, f"deepspeed.zero_stage={stage}"))
    assert sorted(losses(resumed)) == [3, 4]
    assert losses(resumed) == {step: loss for step, loss in losses(run).items() if step > 2}


@pytest.mark.slow
def test_a_zero_checkpoint_of_lion_at_another_world_size_is_one_line(runs, tmp_path, cache):
    """DeepSpeed's universal format, which another world size reads partitions through, holds Adam's moments
    only: the resume is refused before anything is written. (The checkpoint says it was saved by 2 processes.)"""
    run = shutil.copytree(runs[1], tmp_path / "run")
    checkpoint = run / "checkpoints" / step_dir_name(4)
    trainer = checkpoint / "trainer.json"
    trainer.write_text(json.dumps({**json.loads(trainer.read_text()), "world_size": 2}))
    checksums = json.loads((checkpoint / "checksums.json").read_text())
    checksums["trainer.json"] = checksum(trainer)
    (checkpoint / "checksums.json").write_text(json.dumps(checksums))
    proc = pretrain("train", "configs/tiny.yaml", *small_run(run, cache, *OPTIONS, "deepspeed.zero_stage=1",
                                                             "train.steps=6"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (message,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert message == (f"error: {checkpoint}: optim.name=lion: a ZeRO checkpoint of a Lion run resumes only at the "
                       "world size it was saved at (2 processes, 1 here); resume with 2 processes")
