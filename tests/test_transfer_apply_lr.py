"""`pretrain apply-lr`: the LR lands in a clean target, decided per axis (width, horizon, batch); settings that
break transfer are refused."""

import math
from pathlib import Path

import pytest
import yaml

from pretrain.cli import main
from pretrain.config import load_config
from pretrain.errors import ConfigError
from pretrain.transfer.apply_lr import set_optim_lr, transfer
from pretrain.transfer.report import build_report
from pretrain.transfer.sweep import load_plan
from tests.helpers import ROOT, drift_like, horizon_like, mup_like, sp_like, synthetic_sweep

OPTIMUM = 2**-6.3  # mup_like's optimum at every width


@pytest.fixture
def sweep(tmp_path) -> Path:
    return synthetic_sweep(tmp_path / "proxy-sweep", mup_like)


def target(tmp_path: Path, changes: dict[str, str] | None = None) -> Path:
    """The proxy (configs/tiny.yaml) at 10B-like width, on the proxy's batch (16 × 256 tokens) and horizon
    (300 steps), with `changes` (section -> YAML flow mapping) merged in."""
    text = (ROOT / "configs" / "tiny.yaml").read_text()
    text = text.replace("d_model: 128", "d_model: 4096").replace("micro_batch_size: 16", "micro_batch_size: 16\n"
                                                                   "  global_batch_size: 16")
    text += "# the big run\n"
    if changes:
        raw = yaml.safe_load(text)
        for section, flow in changes.items():
            raw.setdefault(section, {}).update(yaml.safe_load(flow))
        text = yaml.safe_dump(raw, sort_keys=False)
    path = tmp_path / "big.yaml"
    path.write_text(text)
    return path


def test_a_clean_target_gets_the_lr_and_keeps_its_comments(tmp_path, sweep, capsys):
    big = target(tmp_path)
    before = big.read_text()
    assert main(["apply-lr", str(sweep), str(big), "--print"]) == 0
    assert capsys.readouterr().out.strip() == f"optim.lr={float(f'{OPTIMUM:.4g}')}"
    assert big.read_text() == before
    assert main(["apply-lr", str(sweep), str(big)]) == 0
    cfg = load_config(big)
    assert cfg.optim.lr == pytest.approx(OPTIMUM, rel=1e-3) and cfg.model.d_model == 4096
    after = big.read_text()
    assert "# the big run" in after
    assert "μ-transferred from proxy-sweep: width 1024, fitted 2^-6.30 at 1.2e+06 tokens" in after
    assert len(after.splitlines()) == len(before.splitlines())  # one line changed in place


@pytest.mark.parametrize("changes, reason", [
    ({"model": "{norm_gains: true}"}, "model.norm_gains=true: trainable RMSNorm gains"),
    ({"model": "{qk_scale: sp}"}, "model.qk_scale=sp"),
    ({"optim": "{weight_decay: 0.1, weight_decay_mode: coupled}"}, "LR-coupled weight decay"),
    ({"model": "{parametrization: sp}"}, "model.parametrization=sp"),
    ({"model": "{n_layers: 48}"}, "differs from the proxy in model.n_layers: proxy 4, target 48"),
    ({"model": "{head_dim: 128}"}, "model.head_dim"),
    ({"optim": "{beta2: 0.99}"}, "optim.beta2"),
])
def test_settings_that_break_transfer_are_refused(tmp_path, sweep, changes, reason, capsys):
    big = target(tmp_path, changes)
    before = big.read_text()
    assert main(["apply-lr", str(sweep), str(big)]) == 2
    assert reason in capsys.readouterr().err and big.read_text() == before
    assert main(["apply-lr", str(sweep), str(big), "--force"]) == 0
    assert load_config(big).optim.lr == pytest.approx(OPTIMUM, rel=1e-3)


def test_width_data_and_infrastructure_may_change(tmp_path, sweep):
    big = target(tmp_path, {"model": "{d_ff: 11008, ffn_multiple_of: 128, n_kv_heads: 8}",
                            "train": "{micro_batch_size: 4, global_batch_size: 16}",
                            "data": "{source: /data/web, vocab_size: 32000}",
                            "optim": "{warmup_steps: 20}", "deepspeed": "{zero_stage: 3}"})
    assert main(["apply-lr", str(sweep), str(big)]) == 0


def test_a_drifting_sweep_or_an_edge_optimum_is_refused(tmp_path, capsys):
    drifting = synthetic_sweep(tmp_path / "sp", sp_like, overrides=["model.parametrization=sp"])
    sp_target = target(tmp_path, {"model": "{parametrization: sp}"})
    assert main(["apply-lr", str(drifting), str(sp_target)]) == 2
    err = capsys.readouterr().err
    assert "model.parametrization=sp" in err
    assert "the sweep's optimum drifts by -1.00 log2 per doubling" in err
    edge = synthetic_sweep(tmp_path / "edge", mup_like, lrs="2^-12:2^-7:1")
    assert main(["apply-lr", str(edge), str(target(tmp_path))]) == 2
    assert "width 1024: the optimum sits on the grid edge" in capsys.readouterr().err


def test_force_names_every_check_it_overrides_in_the_config_line_and_the_output(tmp_path, sweep, capsys):
    big = target(tmp_path, {"model": "{norm_gains: true}", "train": "{global_batch_size: 32, steps: 150}"})
    forced = ("applied with --force over: model.norm_gains=true; model.norm_gains: proxy False, target True; batch "
              "differs (proxy 4,096, target 8,192 tokens per step)")
    assert main(["apply-lr", str(sweep), str(big), "--force", "--print"]) == 0
    assert forced in capsys.readouterr().err
    assert main(["apply-lr", str(sweep), str(big), "--force"]) == 0
    assert forced in capsys.readouterr().out
    line = next(line for line in big.read_text().splitlines() if line.strip().startswith("lr:"))
    assert line.endswith(f"fitted 2^-6.30 at 1.2e+06 tokens ({forced})")


def test_a_two_width_sweep_cannot_tell_whether_the_optimum_transfers(tmp_path, capsys):
    """Two widths leave no residual for an interval: the drift (here -0.32 per doubling) decides nothing, so
    apply-lr refuses and says what would decide it."""
    two = synthetic_sweep(tmp_path / "two", drift_like(-0.32), widths=(128, 256))
    big = target(tmp_path)
    assert main(["apply-lr", str(two), str(big)]) == 2
    assert ("the sweep cannot tell whether its optimum moves with width (drift -0.32 log2 per doubling, no interval "
            "at 0 dof): an interval needs 2 residual dof; to decide it, sweep 2 more widths, or these 2 widths at 2 "
            "more horizons") in capsys.readouterr().err
    assert main(["apply-lr", str(two), str(big), "--force"]) == 0
    assert "(applied with --force over: width transfer undetermined)" in big.read_text()


@pytest.mark.parametrize("text", ["model:\n  d_model: 64\n", "optim:\n  # Adam\n  beta2: 0.95\n",
                                  "optim:\n  lr: 0.1  # old\n  beta2: 0.95\ntrain:\n  steps: 5\n"])
def test_set_optim_lr_edits_one_line(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    set_optim_lr(path, 0.0123, "note")
    raw = yaml.safe_load(path.read_text())
    assert raw["optim"]["lr"] == 0.0123 and "# note" in path.read_text()
    assert {k: v for k, v in raw["optim"].items() if k != "lr"} == {
        k: v for k, v in (yaml.safe_load(text).get("optim") or {}).items() if k != "lr"}


def test_set_optim_lr_refuses_a_layout_it_cannot_edit(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match="could not set optim.lr by a line edit"):
        set_optim_lr(path, 0.0123, "note")
    assert math.isclose(yaml.safe_load(path.read_text())["optim"]["lr"], 0.1)



@pytest.fixture
def horizons(tmp_path) -> Path:
    """A sweep at 150, 300 and 600 steps whose optimum falls by β = 0.3 per doubling of tokens."""
    return synthetic_sweep(tmp_path / "horizons", horizon_like(0.3), steps=[150, 300, 600])


def test_a_swept_horizon_uses_its_optimum(tmp_path, horizons, capsys):
    big = target(tmp_path, {"train": "{steps: 310}"})  # within 10% of the 300-step horizon
    assert main(["apply-lr", str(horizons), str(big)]) == 0
    assert load_config(big).optim.lr == pytest.approx(2**-6.3, rel=1e-3)
    assert "same horizon: width 1024, fitted 2^-6.30 at 1.2e+06 tokens" in capsys.readouterr().out


def test_another_horizon_is_extrapolated_along_the_fit(tmp_path, horizons, capsys):
    big = target(tmp_path, {"train": "{steps: 4800}"})  # 8x the longest swept horizon: 3 doublings past it
    assert main(["apply-lr", str(horizons), str(big)]) == 0
    assert load_config(big).optim.lr == pytest.approx(2 ** (-6.3 - 0.3 * 4), rel=1e-3)
    out = capsys.readouterr().out
    assert "extrapolated: width 1024, fitted 2^-6.60 at 2.5e+06 tokens, extrapolated 8x to 2e+07 tokens" in out
    assert "(-0.90 log2)" in out
    assert "extrapolated 8x to 2e+07 tokens with β 0.30: 2^-7.50" in big.read_text()


def test_one_swept_horizon_refuses_another_naming_both_and_the_fix(tmp_path, sweep, capsys):
    big = target(tmp_path, {"train": "{steps: 4800}"})
    assert main(["apply-lr", str(sweep), str(big)]) == 2
    err = capsys.readouterr().err
    assert "the target trains 1.97e+07 tokens" in err and "at 1.23e+06 tokens only" in err
    assert "--steps 75,150,300" in err and err.count("\n") == 1
    assert main(["apply-lr", str(sweep), str(big), "--force"]) == 0
    assert load_config(big).optim.lr == pytest.approx(OPTIMUM, rel=1e-3)
    assert ("not corrected for the horizon (applied with --force over: one horizon swept (1.23e+06 tokens, target "
            "1.97e+07))") in big.read_text()


def test_too_far_an_extrapolation_is_refused(tmp_path, horizons, capsys):
    big = target(tmp_path, {"train": "{steps: 61200}"})  # 102x the longest swept horizon
    assert main(["apply-lr", str(horizons), str(big)]) == 2
    assert "102x the longest swept horizon" in capsys.readouterr().err
    assert main(["apply-lr", str(horizons), str(big), "--force"]) == 0
    assert math.log2(load_config(big).optim.lr) == pytest.approx(-6.3 - 0.3 * math.log2(204), abs=1e-3)


def test_an_undetermined_beta_is_refused(tmp_path, capsys):
    flat = synthetic_sweep(tmp_path / "flat", horizon_like(0.02), steps=[150, 300, 600], noise=0.01)
    assert main(["apply-lr", str(flat), str(target(tmp_path, {"train": "{steps: 4800}"}))]) == 2
    assert "is undetermined" in capsys.readouterr().err


def test_another_batch_is_refused(tmp_path, horizons, capsys):
    big = target(tmp_path, {"train": "{global_batch_size: 32, steps: 300}"})
    assert main(["apply-lr", str(horizons), str(big)]) == 2
    assert "the target trains on 8,192 tokens per step, the proxies on 4,096" in capsys.readouterr().err
    assert main(["apply-lr", str(horizons), str(big), "--force"]) == 0


def test_weight_decay_with_a_horizon_change_is_refused(tmp_path, horizons, capsys):
    big = target(tmp_path, {"train": "{steps: 4800}", "optim": "{weight_decay: 0.1}"})
    assert main(["apply-lr", str(horizons), str(big)]) == 2
    assert "optim.weight_decay > 0" in capsys.readouterr().err


@pytest.mark.parametrize("name, case", [("10b.yaml", "extrapolated"), ("1b.yaml", "extrapolated")])
def test_the_shipped_proxy_ladder_transfers_to_the_shipped_targets(tmp_path, name, case):
    """configs/proxy.yaml swept at its documented horizons gives 1b and 10b a legal extrapolation (no problem
    to force past), on the targets' own batch."""
    sweep = synthetic_sweep(tmp_path / "proxy", horizon_like(0.3, at_tokens=2**21 * 5000), widths=(128, 256, 512),
                            config="configs/proxy.yaml", steps=[1250, 2500, 5000])
    plan = load_plan(sweep)
    result = transfer(plan, build_report(plan), load_config(ROOT / "configs" / name))
    assert result.problems == [] and result.case == case
    tokens = load_config(ROOT / "configs" / name).training_tokens()
    assert math.log2(result.lr) == pytest.approx(-6.3 - 0.3 * math.log2(tokens / (2**21 * 5000)), abs=1e-6)
