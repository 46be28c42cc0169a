"""The μP table against the recipe (init std and LR multiplier per role), written out independently here."""

import math

import pytest
import torch

from pretrain.config import config_from_dict
from pretrain.model.transformer import build_model
from pretrain.training.optim import build_optimizer

ALPHA = 0.01
VOCAB = 512


def expected(parametrization: str, d: int, zero_query: bool = True) -> dict[str, tuple[float, float]]:
    """(init std, LR multiplier) per role for width d, base width 128, head_dim 64 (so H·D = d),
    SwiGLU F = 256·ceil(8d/3/256)."""
    m = d / 128
    f = 256 * math.ceil(8 * d / 3 / 256)
    if parametrization == "sp":
        return {"embedding": (1.0, 1.0), "query": (d**-0.5, 1.0), "key": (d**-0.5, 1.0), "value": (d**-0.5, 1.0),
                "attn_out": (d**-0.5, 1.0), "mlp_in": (d**-0.5, 1.0), "mlp_out": (f**-0.5, 1.0),
                "readout": (d**-0.5, 1.0)}
    return {"embedding": (1.0, 1.0), "query": (0.0 if zero_query else d**-0.5, 1 / m), "key": (d**-0.5, 1 / m),
            "value": (d**-0.5, 1 / m), "attn_out": (d**-0.5, 1 / m), "mlp_in": (d**-0.5, 1 / m),
            "mlp_out": (f**-0.5, 1 / m), "readout": (1 / d, 1 / m)}


def _cfg(parametrization: str, d: int, **model):
    return config_from_dict({"model": {"d_model": d, "n_layers": 1, "head_dim": 64,
                                       "parametrization": parametrization, **model},
                             "data": {"vocab_size": VOCAB}, "optim": {"lr": ALPHA}})


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
@pytest.mark.parametrize("d", [128, 512, 1024])
def test_measured_init_std_and_group_lrs(parametrization, d):
    cfg = _cfg(parametrization, d)
    model = build_model(cfg.model, VOCAB, seed=0)
    want = expected(parametrization, d)
    for name, role in model.param_roles().items():
        std = model.get_parameter(name).float().std().item()
        assert std == pytest.approx(want[role.value][0], rel=0.05, abs=1e-6), name
    optimizer = build_optimizer(model, cfg.model, cfg.optim)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(ALPHA * want[group["name"]][1])
    # at the base width the μP model is the SP model, group LRs included
    if d == 128:
        assert all(g["lr"] == pytest.approx(ALPHA) for g in optimizer.param_groups)


def test_gains_and_nonzero_query():
    cfg = _cfg("mup", 256, norm_gains=True, zero_query=False)
    model = build_model(cfg.model, VOCAB, seed=0)
    roles = model.param_roles()
    gains = [n for n, r in roles.items() if r.value == "gain"]
    assert len(gains) == 3  # two per block, one final
    assert all(torch.equal(model.get_parameter(n), torch.ones(256)) for n in gains)
    q = model.blocks[0].attn.wq.weight
    assert q.std().item() == pytest.approx(256**-0.5, rel=0.05)
    groups = {g["name"]: g for g in build_optimizer(model, cfg.model, cfg.optim).param_groups}
    assert groups["gain"]["lr"] == pytest.approx(ALPHA)


def test_every_parameter_in_exactly_one_group():
    cfg = _cfg("mup", 256, n_kv_heads=1, norm_gains=True)
    model = build_model(cfg.model, VOCAB)
    optimizer = build_optimizer(model, cfg.model, cfg.optim)
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(grouped) == len(list(model.parameters())) == len({id(p) for p in grouped})
    assert all(g["params"] for g in optimizer.param_groups)  # no empty groups (DeepSpeed drops them)


def test_attention_scale():
    from pretrain.model import mup

    assert mup.attention_scale(_cfg("mup", 256).model) == 1 / 64
    assert mup.attention_scale(_cfg("sp", 256).model) == 1 / 8
    assert mup.attention_scale(_cfg("mup", 256, qk_scale="sp").model) == 1 / 8


def test_independent_weight_decay_is_not_scaled_by_the_mup_lr():
    cfg = config_from_dict({"model": {"d_model": 512, "n_layers": 1, "head_dim": 64},
                            "data": {"vocab_size": VOCAB}, "optim": {"lr": ALPHA, "weight_decay": 0.1}})
    model = build_model(cfg.model, VOCAB)
    for group in build_optimizer(model, cfg.model, cfg.optim).param_groups:
        # AdamW decays by lr·weight_decay; independent decay must make that λ = 0.1 for every group
        assert group["lr"] * group["weight_decay"] == pytest.approx(0.1)
    cfg.optim.weight_decay_mode = "coupled"
    for group in build_optimizer(model, cfg.model, cfg.optim).param_groups:
        assert group["weight_decay"] == 0.1


def test_inspect_measures_the_weights_train_draws():
    from pretrain.tools.inspect import inspect_model

    cfg = _cfg("mup", 256)
    rows = inspect_model(cfg)
    model = build_model(cfg.model, VOCAB, seed=cfg.train.seed)
    assert [r["name"] for r in rows] == [n for n, _ in model.named_parameters()]
    for row in rows:
        weights = model.get_parameter(row["name"])
        assert row["measured_std"] == pytest.approx(weights.std().item(), rel=1e-6, abs=1e-9)
        assert row["lr"] == pytest.approx(ALPHA * expected("mup", 256)[row["role"]][1])
