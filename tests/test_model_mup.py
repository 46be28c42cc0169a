"""The μP table against the recipe (init std and LR multiplier per role), written out independently here."""

import dataclasses
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


BIASES = {f"blocks.0.{linear}.bias" for linear in ("attn.wq", "attn.wk", "attn.wv", "attn.wo", "mlp.w_in", "mlp.w_gate",
                                                  "mlp.w_out")}


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
@pytest.mark.parametrize("d", [128, 512])
def test_biases_start_at_zero_train_at_alpha_and_are_not_decayed(parametrization, d):
    """A bias on every projection of the blocks (not the readout), zero-init, LR α at every width; the weights'
    groups keep their own LRs."""
    cfg = _cfg(parametrization, d, bias=True)
    cfg.optim.weight_decay = 0.1
    model = build_model(cfg.model, VOCAB, seed=0)
    roles = model.param_roles()
    assert {n for n, r in roles.items() if r.value == "bias"} == BIASES and model.readout.bias is None
    assert all(torch.equal(model.get_parameter(n), torch.zeros_like(model.get_parameter(n))) for n in BIASES)
    want = expected(parametrization, d)
    groups = {g["name"]: g for g in build_optimizer(model, cfg.model, cfg.optim).param_groups}
    assert groups["bias"]["lr"] == pytest.approx(ALPHA) and groups["bias"]["weight_decay"] == 0
    assert all(groups[role]["lr"] == pytest.approx(ALPHA * lr) for role, (_, lr) in want.items())


def test_a_scalar_gain_is_one_value_per_norm_that_scales_like_a_vector_of_it():
    scalar, vector = _cfg("mup", 256, norm_gains="scalar"), _cfg("mup", 256, norm_gains=True)
    model = build_model(scalar.model, VOCAB, seed=0)
    gains = [n for n, r in model.param_roles().items() if r.value == "gain"]
    assert len(gains) == 3 and all(torch.equal(model.get_parameter(n), torch.ones(1)) for n in gains)
    groups = {g["name"]: g for g in build_optimizer(model, scalar.model, scalar.optim).param_groups}
    assert groups["gain"]["lr"] == pytest.approx(ALPHA) and len(groups["gain"]["params"]) == 3
    values = {name: 0.5 + i for i, name in enumerate(gains)}
    with torch.no_grad():
        for name, value in values.items():
            model.get_parameter(name).fill_(value)
        state = {n: w.expand(256) if n in values else w for n, w in model.state_dict().items()}
        twin = build_model(vector.model, VOCAB)
        twin.load_state_dict(state)
        tokens = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(model(tokens), twin(tokens))
        assert (model(tokens) - build_model(scalar.model, VOCAB, seed=0)(tokens)).abs().max() > 1e-3


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


def _deep(d: int, layers: int, **model):
    return _cfg("mup", d, n_layers=layers, depth_parametrization="completep", base_depth=2, norm_gains=True, **model)


@pytest.mark.parametrize("d, layers", [(128, 2), (256, 8), (512, 32)])
def test_completep_keeps_every_init_and_lr_and_scales_the_hidden_eps_and_the_branches(d, layers):
    """CompleteP at α = 1, written out: m_L = layers / 2; init and Adam LR as μP's at every depth; Adam ε times
    1/(m·m_L) inside the residual blocks (the final norm's gain, the embedding and the readout keep ε);
    each residual branch times 1/m_L."""
    from pretrain.model import mup

    cfg = _deep(d, layers)
    m, m_l = d / 128, layers / 2
    model = build_model(cfg.model, VOCAB, seed=0)
    want = expected("mup", d)
    inside = model.block_params()
    for name, role in model.param_roles().items():
        if role.value != "gain":
            assert model.get_parameter(name).float().std().item() == pytest.approx(want[role.value][0], rel=0.05,
                                                                                   abs=1e-6), name
        hidden = name.startswith("blocks.")
        assert (name in inside) == hidden
        assert mup.eps_multiplier(role, cfg.model, name in inside) == pytest.approx(1 / (m * m_l) if hidden else 1)
    groups = {g["name"]: g for g in build_optimizer(model, cfg.model, cfg.optim).param_groups}
    for name, (_, lr) in want.items():
        assert groups[name]["lr"] == pytest.approx(ALPHA * lr)
        assert groups[name]["eps"] == pytest.approx(1e-8 * (1 if name in ("embedding", "readout") else 1 / (m * m_l)))
    assert groups["gain"]["lr"] == pytest.approx(ALPHA)
    if m * m_l == 1:  # the base shape: one ε everywhere, so the gains stay one group
        assert "gain_outside_blocks" not in groups and len(groups["gain"]["params"]) == 2 * layers + 1
    else:
        assert len(groups["gain"]["params"]) == 2 * layers
        outside = groups["gain_outside_blocks"]
        assert outside["params"] == [model.norm.weight] and outside["eps"] == 1e-8 and outside["lr"] == ALPHA
    assert all(block.residual == pytest.approx(1 / m_l) for block in model.blocks)


def test_none_is_todays_model_and_completep_at_the_base_depth_equals_it():
    none, base = _cfg("mup", 256, n_layers=2, norm_gains=True), _deep(256, 2)
    tokens = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = build_model(none.model, VOCAB, seed=0)(tokens)
        b = build_model(base.model, VOCAB, seed=0)(tokens)
    assert torch.equal(a, b)
    groups = build_optimizer(build_model(none.model, VOCAB), none.model, none.optim).param_groups
    assert [g["eps"] for g in groups] == [1e-8] * len(groups)


def test_the_residual_multiplier_is_what_scaling_the_branch_ends_does():
    """A CompleteP model computes what the same weights compute without it once every branch's last linear map
    (attention out, MLP down) is multiplied by 1/m_L: what the Llama export folds."""
    deep = _deep(128, 8, zero_query=False).model
    plain = dataclasses.replace(deep, depth_parametrization="none")
    ours = build_model(deep, VOCAB, seed=0)
    folded = build_model(plain, VOCAB, seed=1)
    state = {name: w * (0.25 if name.endswith(("attn.wo.weight", "mlp.w_out.weight")) else 1)
             for name, w in ours.state_dict().items()}
    folded.load_state_dict(state)
    tokens = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(folded(tokens), ours(tokens), rtol=1e-5, atol=1e-5)
        unfolded = build_model(plain, VOCAB, seed=0)(tokens)
    assert (unfolded - ours(tokens)).abs().max() > 1e-2  # the multiplier does change the function


def test_completep_needs_mup_and_names_the_setting():
    from pretrain.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^model\.depth_parametrization: completep extends μP; it needs "
                                          r"model\.parametrization=mup"):
        _cfg("sp", 128, depth_parametrization="completep").validate()


def test_inspect_shows_each_parameters_depth_factors_and_eps():
    from pretrain.tools.inspect import depth_line, format_table, inspect_model

    cfg = _deep(256, 8)
    rows = {r["name"]: r for r in inspect_model(cfg)}
    assert depth_line(cfg) == "depth: completep, m_L = 4 (8 layers / base 2); each residual branch x 0.25"
    for name, row in rows.items():
        assert (row["depth_init_factor"], row["depth_lr_factor"]) == (1.0, 1.0), name
        assert row["eps_multiplier"] == (0.125 if name.startswith("blocks.") else 1.0), name
        assert row["eps"] == pytest.approx(1e-8 * row["eps_multiplier"])
    assert rows["blocks.7.mlp.w_out.weight"]["lr"] == pytest.approx(ALPHA / 2)
    header, _, first, *_ = format_table(list(rows.values())).splitlines()
    assert header.split()[-6:] == ["depth", "init", "depth", "lr", "eps", "mult"]
    assert first.split()[0] == "embed.weight" and first.split()[-3:] == ["1", "1", "1"]
    assert depth_line(_cfg("mup", 256)).endswith("each residual branch x 1")
