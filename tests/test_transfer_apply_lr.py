"""`pretrain apply-lr`: the LR lands in a clean target, decided per axis (width, horizon, batch); settings that
break transfer are refused."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from pretrain.cli import main
from pretrain.config import load_config
from pretrain.errors import ConfigError
from pretrain.transfer import apply_lr
from pretrain.transfer.apply_lr import seed_noise, set_optim_lr, transfer
from pretrain.transfer.fit import NoisePrior, SweepPoint, t_quantile
from pretrain.transfer.report import build_report, grid_report
from pretrain.transfer.sweep import create_sweep, load_plan, parse_lrs
from tests.helpers import (
    ROOT,
    batch_like,
    depth_like,
    drift_like,
    horizon_like,
    mup_like,
    sp_like,
    synthetic_sweep,
)

OPTIMUM = 2**-6.3  # mup_like's optimum at every width
SHIPPED_PRIOR, SHIPPED_REACH = apply_lr.SEED_NOISE, apply_lr.HORIZON_REACH


@pytest.fixture(autouse=True)
def fits_alone(tmp_path, monkeypatch):
    """The intervals in these tests are the fits' own, checked to the digit; the measured seed-noise prior and
    horizon reach that apply-lr adds to them are tested on their own (`shipped`)."""
    monkeypatch.setattr(apply_lr, "SEED_NOISE", tmp_path / "no-prior.json")
    monkeypatch.setattr(apply_lr, "HORIZON_REACH", 0.0)


def shipped(monkeypatch) -> None:
    """Back to what apply-lr ships: its seed-noise prior and horizon reach."""
    monkeypatch.setattr(apply_lr, "SEED_NOISE", SHIPPED_PRIOR)
    monkeypatch.setattr(apply_lr, "HORIZON_REACH", SHIPPED_REACH)


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
    ({"model": "{n_layers: 48}"}, "the target has 48 layers, the deepest proxy (whose optimum is carried) 4: without "
                                  "a depth parametrization the optimum moves with depth; set "
                                  "model.depth_parametrization=completep"),
    ({"model": "{depth_parametrization: completep}"}, "differs from the proxy in model.depth_parametrization: proxy "
                                                      "'none', target 'completep'"),
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
    assert line.endswith(f"fitted 2^-6.30 at 1.2e+06 tokens, log2 lr -6.30, 80% interval [-6.30, -6.30], 2 dof "
                         f"({forced})")


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


def test_an_undetermined_beta_is_refused_and_the_sweep_it_names_fixes_it(tmp_path, capsys):
    """Widths 32 and 64 at two horizons: one residual dof in each fit, so no interval (however exact the optima),
    and the refusal names the sweep that gives one: a third horizon."""
    two = synthetic_sweep(tmp_path / "two", horizon_like(0.3), widths=(32, 64), steps=[150, 300])
    big = target(tmp_path, {"train": "{steps: 4800}"})
    before = big.read_text()
    assert main(["apply-lr", str(two), str(big)]) == 2
    grow = (f"`pretrain sweep {two / 'config.yaml'} --widths 32,64 --lrs 2^-12:2^-2:0.5 --steps 150,300,600 --out "
            f"{two}`")
    assert ("the target's log2 lr has no 80% interval: the horizon fit has 1 residual dof (β = 0.30 is "
            f"undetermined) and the width fit has 1 residual dof, and an interval needs 2; sweep 1 more horizon: "
            f"{grow}") in capsys.readouterr().err and big.read_text() == before
    assert main(["apply-lr", str(two), str(big), "--force"]) == 0
    assert ("log2 lr -7.50, no interval at 1 dof (applied with --force over: width transfer undetermined; interval "
            "undetermined (horizon fit at 1 dof, width fit at 1 dof))") in big.read_text()
    synthetic_sweep(two, horizon_like(0.3), widths=(32, 64), steps=[150, 300, 600])  # the sweep named: it grows
    assert main(["apply-lr", str(two), str(big)]) == 0
    assert "log2 lr -7.50, 80% interval [-7.50, -7.50], 2 dof" in big.read_text()  # noiseless: a point


def test_a_flat_beta_known_well_enough_for_the_target_applies(tmp_path, capsys):
    """β ≈ 0 with a standard error of the same size is determined (7 dof): what it leaves uncertain about the
    target's LR is in the interval, narrow here, so the LR applies."""
    flat = synthetic_sweep(tmp_path / "flat", horizon_like(0.02), steps=[150, 300, 600], noise=0.01)
    assert main(["apply-lr", str(flat), str(target(tmp_path, {"train": "{steps: 4800}"})), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    low, high = result["interval_log2"]
    assert low < result["log2_lr"] < high and high - low < 0.5 and result["problems"] == []


def scattered(tmp_path: Path, amplitude: float = 0.1) -> Path:
    """One horizon, 4 widths whose optima alternate ±`amplitude` log2 about -6.3: residual σ and a drift
    standard error, reproducibly (the verdict: transfers)."""
    scatter = {w: amplitude * (-1) ** i for i, w in enumerate((128, 256, 512, 1024))}
    return synthetic_sweep(tmp_path / "scattered", drift_like(0, scatter))


def test_an_interval_wider_than_max_interval_is_refused_naming_the_sweep_that_narrows_it(tmp_path, capsys):
    sweep = scattered(tmp_path)
    big = target(tmp_path)  # width 4096: 2 doublings past the widest proxy
    before = big.read_text()
    assert main(["apply-lr", str(sweep), str(big), "--max-interval", "0.5"]) == 2
    err = capsys.readouterr().err
    assert ("the target's log2 lr is -6.40, 80% interval [-6.80, -6.00]: 0.80 wide, more than --max-interval 0.5 "
            "(standard deviations, log2: the measured optimum's scatter 0.13, a new optimum's scatter 0.13, the width "
            "drift 0.11); to narrow the measured optimum's scatter, sweep more LRs around the optima: "
            f"`pretrain sweep {sweep / 'config.yaml'} --widths 128,256,512,1024 --lrs 2^-7.5:2^-5:0.25 --steps 300 "
            f"--out {sweep}`") in err and big.read_text() == before
    assert main(["apply-lr", str(sweep), str(big)]) == 0  # within the default 1.0
    assert "log2 lr -6.40, 80% interval [-6.80, -6.00], 2 dof" in big.read_text()
    far = target(tmp_path, {"model": "{d_model: 16384}"})  # 4 doublings: the drift's term dominates
    assert main(["apply-lr", str(sweep), str(far)]) == 2
    err = capsys.readouterr().err
    assert "1.09 wide, more than --max-interval 1 " in err and err.count("\n") == 1
    assert ("to narrow the width drift, sweep a wider proxy: `pretrain sweep "
            f"{sweep / 'config.yaml'} --widths 128,256,512,1024,2048 --lrs 2^-12:2^-2:0.5") in err
    assert main(["apply-lr", str(sweep), str(far), "--max-interval", "1.2"]) == 0
    assert main(["apply-lr", str(sweep), str(far), "--force"]) == 0
    line = next(line for line in far.read_text().splitlines() if line.strip().startswith("lr:"))
    assert line.endswith("log2 lr -6.40, 80% interval [-6.94, -5.86], 2 dof (applied with --force over: interval "
                         "1.09 log2 wide (--max-interval 1))")


def test_apply_lr_json_has_the_lr_its_interval_and_problems_and_the_exit_status_of_text(tmp_path, capsys):
    sweep = scattered(tmp_path)
    big = target(tmp_path)
    before = big.read_text()
    assert main(["apply-lr", str(sweep), str(big), "--json", "--print"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"lr", "log2_lr", "interval_log2", "case", "problems"} and big.read_text() == before
    assert data["case"] == "same horizon" and data["problems"] == [] and data["log2_lr"] == pytest.approx(-6.4)
    assert data["interval_log2"] == pytest.approx([-6.8, -6.0], abs=0.005) and data["lr"] == float(f"{2**-6.4:.4g}")
    assert main(["apply-lr", str(sweep), str(big), "--json"]) == 0  # written, as without --json
    assert load_config(big).optim.lr == data["lr"] and json.loads(capsys.readouterr().out) == data
    far = target(tmp_path, {"model": "{d_model: 16384}"})
    before = far.read_text()
    assert main(["apply-lr", str(sweep), str(far), "--json"]) == 2  # refused: the problems, nothing written
    out, err = capsys.readouterr()
    refused = json.loads(out)
    assert len(refused["problems"]) == 1 and refused["problems"][0] in err and far.read_text() == before
    assert main(["apply-lr", str(sweep), str(far), "--json", "--force"]) == 0
    assert json.loads(capsys.readouterr().out) == refused and "applied with --force" in far.read_text()
    two = synthetic_sweep(tmp_path / "two", horizon_like(0.3), widths=(32, 64), steps=[150, 300])
    assert main(["apply-lr", str(two), str(target(tmp_path, {"train": "{steps: 4800}"})), "--json"]) == 2
    undetermined = json.loads(capsys.readouterr().out)
    assert undetermined["interval_log2"] is None and undetermined["case"] == "extrapolated"
    assert undetermined["log2_lr"] == pytest.approx(-7.5) and len(undetermined["problems"]) == 2


def coverage(tmp_path: Path, widths: tuple, steps: list[int], target_steps: int, draws: int = 400,
             sigma: float = 0.2, prior_dof: int = 0) -> tuple[float, str, float]:
    """How often the target's 80% interval holds a new draw of its optimum, over `draws` sweeps whose optima are
    horizon_like(0.3)'s plus Gaussian noise of `sigma` log2 (the loss an exact parabola about each: the report's
    fitted optimum is the noisy one). The target is the widest proxy at `target_steps`, so the width drift
    (zero here) adds nothing. With `prior_dof`, each draw also measures a noise prior of the same noise from that
    many dof (σ₀² = σ²·χ²/dof), as scripts/seed_noise.sh does from seeds. Also returned: the case and the mean
    interval width."""
    plan = create_sweep(ROOT / "configs" / "tiny.yaml", list(widths), parse_lrs("2^-10:2^-2:0.5"), tmp_path / "plan",
                        steps=steps)
    big = load_config(target(tmp_path, {"model": f"{{d_model: {max(widths)}}}", "train": f"{{steps: {target_steps}}}"}))
    truth, rng, covered, width = horizon_like(0.3), np.random.default_rng(0), 0, 0.0
    for _ in range(draws):
        noisy = {(w, s): truth(w, plan.tokens(s)) + rng.normal(0, sigma) for w in widths for s in steps}
        grid = [SweepPoint(p.width, p.steps, p.lr, "ok", 3 + 0.1 * (math.log2(p.lr) - noisy[p.width, p.steps]) ** 2)
                for p in plan.points]
        prior = NoisePrior(sigma * math.sqrt(rng.chisquare(prior_dof) / prior_dof), prior_dof) if prior_dof else None
        result = transfer(plan, grid_report(plan, grid), big, prior=prior)
        new = truth(max(widths), big.training_tokens()) + rng.normal(0, sigma)
        covered += result.interval.low <= new <= result.interval.high
        width += (result.interval.high - result.interval.low) / draws
    return covered / draws, result.case, width


@pytest.mark.parametrize("widths, steps, target_steps, case", [
    ((256, 512, 1024), [150, 600], 300, "extrapolated"),  # the horizon fit at 2 dof: t = 1.89, z would be 1.28
    ((128, 256, 512, 1024), [300], 300, "same horizon"),  # the measured optimum as it is, the width fit at 2 dof
])
def test_the_interval_holds_a_new_optimum_as_often_as_it_claims(tmp_path, widths, steps, target_steps, case):
    """80% ± 6% over 400 seeded draws (3 standard deviations of the binomial). Leaving out the new optimum's
    scatter, the measured optimum's, or taking z for t, covers 64-71% here and fails."""
    covered, found, _ = coverage(tmp_path, widths, steps, target_steps)
    assert found == case and 0.74 <= covered <= 0.86


def test_a_noise_prior_keeps_the_coverage_and_narrows_the_interval(tmp_path):
    """The extrapolated case above, its 2 dof pooled with a prior of the same noise measured from 6: still 80% ±
    6%, and narrower on average (t at 8 dof, not 2; a σ from 8 dof is less often far off)."""
    setting = ((256, 512, 1024), [150, 600], 300)
    covered, _, pooled = coverage(tmp_path, *setting, prior_dof=6)
    _, _, alone = coverage(tmp_path, *setting)
    assert 0.74 <= covered <= 0.86 and pooled < 0.85 * alone


def test_apply_lr_pools_the_shipped_seed_noise_prior(tmp_path, monkeypatch, capsys):
    """The prior measured by scripts/seed_noise.sh ships with the package; apply-lr's interval pools it with the
    fits' σ: half-width² = t²·(2 + leverage·Δ²)·(ν σ̂² + ν₀ σ₀²)/(ν + ν₀) at ν + ν₀ dof."""
    shipped(monkeypatch)
    prior = seed_noise()
    assert prior is not None and prior.sigma > 0 and prior.dof >= 2
    sweep = scattered(tmp_path)
    report = build_report(load_plan(sweep))
    assert main(["apply-lr", str(sweep), str(target(tmp_path)), "--json", "--print"]) == 0
    low, high = json.loads(capsys.readouterr().out)["interval_log2"]
    dof = report.drift_interval.dof
    pooled = (dof * report.drift_sigma**2 + prior.dof * prior.sigma**2) / (dof + prior.dof)
    scale = 2 + (report.drift_se / report.drift_sigma * 2) ** 2  # two doublings, 1024 -> 4096
    assert (high - low) / 2 == pytest.approx(t_quantile(0.9, dof + prior.dof) * math.sqrt(scale * pooled))
    assert f"{dof} dof with the seed-noise prior's {prior.dof}" in describe_target(tmp_path, sweep, capsys)


def test_outside_the_ladder_the_horizon_reach_widens_the_interval_per_doubling(tmp_path, monkeypatch, horizons):
    """Extrapolated d doublings of tokens past the longest swept horizon, the variance gains (κ·d)², κ the shipped
    HORIZON_REACH; inside the ladder nothing."""
    plan = load_plan(horizons)
    report = build_report(plan)

    def variance(steps: int, reach: float) -> float:
        monkeypatch.setattr(apply_lr, "HORIZON_REACH", reach)
        result = transfer(plan, report, load_config(target(tmp_path, {"train": f"{{steps: {steps}}}"})))
        assert result.case == "extrapolated"
        return ((result.interval.high - result.interval.low) / 2 / t_quantile(0.9, result.interval.dof)) ** 2

    longest = max(plan.steps)
    for steps, doublings in ((longest * 2, 1), (longest * 8, 3)):
        assert variance(steps, SHIPPED_REACH) - variance(steps, 0.0) == pytest.approx((SHIPPED_REACH * doublings) ** 2)
    inside = (min(plan.steps) + longest) // 2
    assert variance(inside, SHIPPED_REACH) == pytest.approx(variance(inside, 0.0))


def describe_target(tmp_path: Path, sweep: Path, capsys) -> str:
    """The note apply-lr writes into the default target."""
    big = target(tmp_path)
    assert main(["apply-lr", str(sweep), str(big)]) == 0
    capsys.readouterr()
    return next(line for line in big.read_text().splitlines() if line.strip().startswith("lr:"))


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '{"sigma": 0.1}', '{"sigma": -0.1, "dof": 6}',
                                  '{"sigma": 0.1, "dof": 2.5}'])
def test_a_broken_seed_noise_file_is_one_error_line(tmp_path, monkeypatch, sweep, capsys, text):
    broken = tmp_path / "seed_noise.json"
    broken.write_text(text)
    monkeypatch.setattr(apply_lr, "SEED_NOISE", broken)
    assert main(["apply-lr", str(sweep), str(target(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken}: ") and "scripts/seed_noise.sh" in err and err.count("\n") == 1


def test_the_drift_term_grows_with_the_doublings_to_the_target(tmp_path):
    """At the proxy's width the interval is the scatter's alone; each doubling past it adds se_drift to the
    drift's standard deviation: half-width² = t²·(2σ² + (se_drift·Δ)²)."""
    plan = load_plan(scattered(tmp_path))
    report = build_report(plan)
    t = t_quantile(0.9, 2)
    for width, doublings in ((1024, 0), (4096, 2), (16384, 4)):
        interval = transfer(plan, report, load_config(target(tmp_path, {"model": f"{{d_model: {width}}}"}))).interval
        half = (interval.high - interval.low) / 2
        assert half**2 == pytest.approx(t**2 * (2 * report.drift_sigma**2 + (report.drift_se * doublings) ** 2))


def test_another_batch_is_refused(tmp_path, horizons, capsys):
    big = target(tmp_path, {"train": "{global_batch_size: 32, steps: 300}"})
    assert main(["apply-lr", str(horizons), str(big)]) == 2
    assert "the target trains on 8,192 tokens per step, the proxies on 4,096" in capsys.readouterr().err
    assert main(["apply-lr", str(horizons), str(big), "--force"]) == 0


@pytest.fixture
def batches(tmp_path) -> Path:
    """A sweep at 150, 300 and 600 steps and batches 16, 32 and 64 whose optimum falls by β = 0.3 per doubling of
    tokens and rises by a = 0.5 per doubling of tokens per step, with a little noise."""
    return synthetic_sweep(tmp_path / "batches", batch_like(0.3, 0.5), steps=[150, 300, 600], batches=[16, 32, 64],
                           noise=0.005)


def bridged(tmp_path: Path, sweep: Path, batch: int, steps: int):
    """The transfer to the big target at `batch` and `steps`."""
    plan = load_plan(sweep)
    big = target(tmp_path, {"train": f"{{global_batch_size: {batch}, micro_batch_size: {min(batch, 16)}, "
                                     f"steps: {steps}}}"})
    return transfer(plan, build_report(plan), load_config(big))


def test_another_batch_is_bridged_with_the_batch_exponent_inside_the_swept_range(tmp_path, batches, capsys):
    inside = bridged(tmp_path, batches, 48, 800)  # 48 × 800 sequences: the tokens of 128 × 300 below
    assert inside.problems == [] and inside.case == "extrapolated"
    assert math.log2(inside.lr) == pytest.approx(-6.3 - 0.3 * math.log2(800 * 48 / (300 * 16)) + 0.5 * math.log2(3),
                                                 abs=0.05)
    assert "at 12,288 tokens per step with batch exponent +0.50" in inside.note
    # 2x past the largest batch: applied, and less sure than inside
    beyond = bridged(tmp_path, batches, 128, 300)
    assert beyond.problems == [] and math.log2(beyond.lr) == pytest.approx(
        -6.3 - 0.3 * math.log2(300 * 128 / (300 * 16)) + 0.5 * 3, abs=0.05)
    assert beyond.interval.high - beyond.interval.low > inside.interval.high - inside.interval.low
    # the target at a swept batch and horizon: that batch's measured optimum, as without the batch axis
    swept = bridged(tmp_path, batches, 32, 300)
    assert swept.case == "same horizon" and swept.problems == []
    assert math.log2(swept.lr) == pytest.approx(-6.3 - 0.3 + 0.5, abs=0.05)


@pytest.mark.parametrize("batch, steps, brief", [
    (512, 300, "batch 131,072 tokens per step beyond 4x the swept"),  # 8x past the largest
    (2, 4800, "batch 512 tokens per step beyond 4x the swept"),  # 8x short of the smallest
    (48, 150, "train.steps=150 below 200 for another batch"),
])
def test_a_batch_too_far_out_or_a_short_target_is_refused(tmp_path, batches, batch, steps, brief):
    assert [p.brief for p in bridged(tmp_path, batches, batch, steps).problems] == [brief]


def test_an_undetermined_batch_exponent_is_refused(tmp_path, capsys):
    """One width at two horizons and two batches: 4 optima, 3 parameters, 1 residual dof."""
    sweep = synthetic_sweep(tmp_path / "s", batch_like(0.3, 0.5), widths=(1024,), steps=[150, 300], batches=[16, 32])
    big = target(tmp_path, {"train": "{global_batch_size: 48, steps: 300}"})
    assert main(["apply-lr", str(sweep), str(big)]) == 2
    assert ("a batch the sweep did not measure, and its batch exponent is undetermined (no interval at 1 dof)"
            in capsys.readouterr().err)
    one_horizon = synthetic_sweep(tmp_path / "one", batch_like(0.3, 0.5), steps=[300], batches=[16, 32])
    assert main(["apply-lr", str(one_horizon), str(big)]) == 2
    assert "its batch exponent is undetermined: it needs two or more horizons" in capsys.readouterr().err


def test_weight_decay_with_a_horizon_change_is_refused(tmp_path, horizons, capsys):
    big = target(tmp_path, {"train": "{steps: 4800}", "optim": "{weight_decay: 0.1}"})
    assert main(["apply-lr", str(horizons), str(big)]) == 2
    assert "optim.weight_decay > 0" in capsys.readouterr().err


@pytest.mark.parametrize("name, case", [("10b.yaml", "extrapolated"), ("1b.yaml", "same horizon")])
def test_the_shipped_proxy_ladder_transfers_to_the_shipped_targets(tmp_path, monkeypatch, name, case):
    """configs/proxy.yaml swept at its documented horizons gives 1b (at the longest) and 10b (9x past it) a legal
    LR (no problem to force past), on the targets' own batch, with the shipped prior and reach: at 18x past a
    ladder that stopped at 5000 steps, 10b's interval would be 1.1 log2 wide, refused by --max-interval."""
    shipped(monkeypatch)
    sweep = synthetic_sweep(tmp_path / "proxy", horizon_like(0.3, at_tokens=2**21 * 5000), widths=(128, 256, 512),
                            config="configs/proxy.yaml", steps=[1250, 2500, 5000, 10000])
    plan = load_plan(sweep)
    result = transfer(plan, build_report(plan), load_config(ROOT / "configs" / name), prior=seed_noise())
    assert result.problems == [] and result.case == case
    tokens = load_config(ROOT / "configs" / name).training_tokens()
    assert math.log2(result.lr) == pytest.approx(-6.3 - 0.3 * math.log2(tokens / (2**21 * 5000)), abs=1e-6)


COMPLETEP = ["model.depth_parametrization=completep", "model.base_depth=2"]
DEEP = "{depth_parametrization: completep, base_depth: 2, n_layers: %d}"  # a target's model section, at a depth


def deep_sweep(tmp_path: Path, slope: float = 0.0, depths: list[int] | None = (2, 4, 8)) -> Path:
    """Four widths, `depths` under CompleteP, optima moving by `slope` per doubling of depth with some scatter."""
    name = f"deep{slope}-{'-'.join(map(str, depths or []))}"
    return synthetic_sweep(tmp_path / name, depth_like(slope, {2: 0.05, 4: -0.05, 8: 0.05}), overrides=COMPLETEP,
                           depths=None if depths is None else list(depths))


def test_completep_carries_the_deepest_proxys_optimum_to_a_deeper_target_with_the_depth_drifts_interval(tmp_path):
    plan = load_plan(deep_sweep(tmp_path))
    report = build_report(plan)
    t = t_quantile(0.9, min(report.drift_interval.dof, report.depth_drift.interval.dof))
    for layers, doublings in ((8, 0), (32, 2), (128, 4)):  # 128: 16x the deepest proxy, as far as it goes
        result = transfer(plan, report, load_config(target(tmp_path, {"model": DEEP % layers})))
        assert result.problems == [] and result.case == "same horizon"
        assert math.log2(result.lr) == pytest.approx(-6.25, abs=1e-6)  # the deepest (8 layers) proxy's optimum
        assert ("carried from 8 to" in result.note) == (layers != 8)
        # the measured optimum's and a new one's scatter, the width drift over 2 doublings (1024 -> 4096), and the
        # depth drift's standard error times the doublings from 8 layers
        variance = (2 * report.drift_sigma**2 + (report.drift_se * 2) ** 2
                    + (report.depth_drift.slope_se * doublings) ** 2)
        half = (result.interval.high - result.interval.low) / 2
        assert half**2 == pytest.approx(t**2 * variance)


def test_past_16x_the_deepest_proxy_one_depth_swept_or_a_drift_in_depth_is_refused(tmp_path, capsys):
    sweep = deep_sweep(tmp_path)
    assert main(["apply-lr", str(sweep), str(target(tmp_path, {"model": DEEP % 256}))]) == 2
    assert ("the target has 256 layers, more than 16x outside the swept 2..8: the depth drift is not trusted that "
            "far") in capsys.readouterr().err
    one = deep_sweep(tmp_path, depths=None)  # tiny.yaml's 4 layers only
    assert main(["apply-lr", str(one), str(target(tmp_path, {"model": DEEP % 32}))]) == 2
    assert ("the target has 32 layers and the sweep measured the optimum at 4 only: whether it holds across depth is "
            "not measured; sweep two or more depths") in capsys.readouterr().err
    assert main(["apply-lr", str(one), str(target(tmp_path, {"model": DEEP % 4}))]) == 0  # its own depth: no question
    drifting = deep_sweep(tmp_path, slope=-0.5)
    assert main(["apply-lr", str(drifting), str(target(tmp_path, {"model": DEEP % 32}))]) == 2
    assert "the sweep's optimum drifts by -0.50 log2 per doubling of depth" in capsys.readouterr().err


def test_without_completep_a_depth_sweep_still_refuses_another_depth_naming_completep(tmp_path, capsys):
    sweep = synthetic_sweep(tmp_path / "none", depth_like(0.0, {2: 0.05, 4: -0.05, 8: 0.05}), depths=[2, 4, 8])
    big = target(tmp_path, {"model": "{n_layers: 32}"})
    assert main(["apply-lr", str(sweep), str(big)]) == 2
    refusal = capsys.readouterr().err
    assert ("without a depth parametrization the optimum moves with depth; set "
            "model.depth_parametrization=completep") in refusal
    assert main(["apply-lr", str(sweep), str(target(tmp_path, {"model": "{n_layers: 8}"}))]) == 0


def test_the_shipped_deep_proxies_transfer_to_the_shipped_deep_target(tmp_path, monkeypatch):
    """configs/proxy_deep.yaml swept at its documented widths, depths and horizons gives configs/6b_deep.yaml a legal
    transfer (no problem to force past), with the shipped prior and reach: 8x wider and 4x deeper than the largest
    proxy, 8x longer."""
    shipped(monkeypatch)
    sweep = synthetic_sweep(tmp_path / "deep", horizon_like(0.3, at_tokens=2**21 * 5000), widths=(128, 256, 512),
                            config="configs/proxy_deep.yaml", steps=[1250, 2500, 5000, 10000], depths=[4, 8])
    plan = load_plan(sweep)
    target_cfg = load_config(ROOT / "configs" / "6b_deep.yaml")
    result = transfer(plan, build_report(plan), target_cfg, prior=seed_noise())
    assert result.problems == [] and result.case == "extrapolated" and "carried from 8 to 32 layers" in result.note
    assert math.log2(result.lr) == pytest.approx(-6.3 - 0.3 * math.log2(target_cfg.training_tokens() / (2**21 * 5000)),
                                                 abs=1e-6)
