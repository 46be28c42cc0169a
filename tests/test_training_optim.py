"""The optimizer's μP groups and the LR schedule, as unit tests (no DeepSpeed, no processes)."""

import math

import pytest
import torch

from pretrain.config import ModelConfig, OptimConfig
from pretrain.model.mup import Role
from pretrain.model.transformer import build_model
from pretrain.training.optim import build_optimizer, build_param_groups, lr_schedule, set_lr

MODEL = ModelConfig(d_model=64, n_layers=2, head_dim=16)


def schedule(kind: str, warmup: int = 4, floor: float = 0.1, total: int = 20) -> list[float]:
    cfg = OptimConfig(schedule=kind, warmup_steps=warmup, min_lr_ratio=floor)
    return [lr_schedule(step, cfg, total) for step in range(total + 3)]


def test_warmup_is_linear_from_the_first_step():
    for kind in ("linear", "cosine", "constant"):
        assert schedule(kind)[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_linear_and_cosine_decay_to_the_floor_and_stay_there():
    linear, cosine = schedule("linear"), schedule("cosine")
    for values in (linear, cosine):
        assert values[4] == pytest.approx(1.0)  # the peak, right after warmup
        assert all(a >= b for a, b in zip(values[4:], values[5:]))  # never rises again
        assert values[20:] == pytest.approx([0.1] * 3)  # the floor at the end, and past it
    # halfway through the decay: linear halfway between peak and floor; cosine too (cos(π/2) = 0)
    assert linear[12] == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine[12] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert cosine[8] > linear[8]  # cosine stays high longer
    assert schedule("constant")[4:] == pytest.approx([1.0] * 19)


def test_no_warmup_starts_at_the_peak():
    assert schedule("linear", warmup=0)[0] == pytest.approx(1.0)


def test_set_lr_only_multiplies_each_groups_own_scale():
    model = build_model(MODEL, 512, seed=0)
    optimizer = build_optimizer(model, MODEL, OptimConfig(lr=0.01))
    set_lr(optimizer, OptimConfig(lr=0.01), 0.5)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(0.01 * 0.5 * group["lr_scale"])
    assert {g["name"]: g["lr_scale"] for g in optimizer.param_groups}["query"] == 128 / 64


def test_param_groups_cover_every_parameter_once_in_role_order():
    model = build_model(ModelConfig(d_model=64, n_layers=2, head_dim=16, norm_gains=True, bias=True), 512)
    groups = build_param_groups(model, model.cfg, OptimConfig())
    assert [g["name"] for g in groups] == [role.value for role in Role]  # gains and biases present: every role
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(list(model.parameters())) == len({id(p) for p in grouped})
    plain = [g["name"] for g in build_param_groups(build_model(MODEL, 512), MODEL, OptimConfig())]
    assert "gain" not in plain and "bias" not in plain  # no empty group: DeepSpeed would drop it


def test_a_parameter_without_a_role_is_an_error_not_an_assert():
    model = build_model(MODEL, 512)
    model.extra = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(TypeError, match="without a μP role.*extra"):
        build_param_groups(model, MODEL, OptimConfig())
