"""`pretrain apply-lr`: the LR lands in a clean target; settings that break transfer are refused."""

import math
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from test_transfer_report import mup_like, sp_like, synthetic_sweep

from pretrain.cli import main
from pretrain.config import ConfigError, load_config
from pretrain.transfer.apply_lr import set_optim_lr

OPTIMUM = 2**-6.3  # mup_like's optimum at every width


@pytest.fixture
def sweep(tmp_path) -> Path:
    return synthetic_sweep(tmp_path / "proxy-sweep", mup_like)


def target(tmp_path: Path, changes: dict[str, str] | None = None) -> Path:
    """The proxy (configs/tiny.yaml) at 10B-like width and trained longer, with `changes` (section -> YAML
    flow mapping) merged in."""
    text = (ROOT / "configs" / "tiny.yaml").read_text()
    text = text.replace("d_model: 128", "d_model: 4096").replace("steps: 300", "steps: 50000")
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
    assert "# the big run" in after and "μ-transferred from sweep proxy-sweep (width 1024, 2^-6.30)" in after
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


def test_width_steps_batch_and_data_may_change(tmp_path, sweep):
    big = target(tmp_path, {"model": "{d_ff: 11008, ffn_multiple_of: 128, n_kv_heads: 8}",
                            "train": "{micro_batch_size: 4, global_batch_size: 512}",
                            "data": "{source: /data/web, seq_len: 4096, vocab_size: 32000}",
                            "optim": "{warmup_steps: 2000}", "deepspeed": "{zero_stage: 3}"})
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
    assert "width 128: the optimum sits on the grid edge" in capsys.readouterr().err


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

