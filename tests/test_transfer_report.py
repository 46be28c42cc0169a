"""`pretrain report` on synthetic sweeps whose optimum is known: fit, drift with its interval, verdict, warnings,
plot, JSON, and what apply-lr would refuse for a target; the t quantile and the intervals they rest on."""

import ast
import json
import math

import numpy as np
import pytest

from pretrain.cli import main
from pretrain.transfer.fit import (
    DRIFT_TOLERANCE,
    ErrorTerm,
    NoisePrior,
    Optimum,
    depth_drift,
    fit_optimum,
    linear_fit,
    prediction_interval,
    shared_slope,
    t_quantile,
    width_drift,
)
from pretrain.transfer.report import build_report, report_sweeps
from pretrain.transfer.sweep import load_plan, read_result, result_path
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


def test_fit_recovers_the_vertex_of_a_parabola():
    lrs = [2**x for x in (-9, -8, -7, -6, -5)]
    log2_lr, best, fitted = fit_optimum(lrs, [(x + 6.6) ** 2 for x in (-9, -8, -7, -6, -5)])
    assert fitted and best == 2 and log2_lr == pytest.approx(-6.6)


def test_one_lucky_point_next_to_a_flat_minimum_does_not_drag_the_fit():
    x = [-7 + 0.5 * i for i in range(9)]  # 2^-7 .. 2^-3
    losses = [3 + 0.05 * (xi + 5) ** 2 for xi in x]
    losses[7] -= 0.12  # -3.5 becomes the best grid point by a noise dip
    log2_lr, best, fitted = fit_optimum([2**xi for xi in x], losses)
    assert x[best] == -3.5 and fitted
    assert abs(log2_lr + 5) < 0.6  # the 3-point parabola around -3.5 would say -3.64, 1.36 off


def test_fit_falls_back_to_the_grid_point_at_an_edge_or_next_to_a_diverged_point():
    lrs = [2**-8, 2**-7, 2**-6]
    assert fit_optimum(lrs, [3.0, 3.1, 3.2]) == (-8.0, 0, False)
    assert fit_optimum(lrs, [3.2, 3.0, math.inf]) == (-7.0, 1, False)
    assert fit_optimum(lrs, [3.1, 3.0, 3.2])[2]  # finite neighbours: fitted
    assert -7.5 < fit_optimum(lrs, [3.1, 3.0, 3.2])[0] < -6.5  # within half a grid step of the best point


def test_mup_like_sweep_transfers(tmp_path):
    report = build_report(load_plan(synthetic_sweep(tmp_path / "s", mup_like)))
    assert [o.width for o in report.optima] == [128, 256, 512, 1024]
    for o in report.optima:
        assert o.fitted and math.log2(o.lr) == pytest.approx(-6.3, abs=1e-6)
        assert math.log2(o.best_lr) == -6.5  # the grid point nearest -6.3
    assert report.drift == pytest.approx(0, abs=1e-6)
    assert report.verdict == "transfers" and not report.warnings


def test_sp_like_sweep_drifts_and_diverged_points_are_excluded(tmp_path):
    report = build_report(load_plan(synthetic_sweep(tmp_path / "s", sp_like, diverge_above=-4)))
    assert [math.log2(o.lr) for o in report.optima] == pytest.approx([-6.3, -7.3, -8.3, -9.3])
    assert report.drift == pytest.approx(-1.0)
    assert report.spread == pytest.approx(3.0)
    assert report.verdict == "drifts"  # noiseless: the interval is the point -1
    assert (report.drift_interval.low, report.drift_interval.high) == pytest.approx((-1.0, -1.0))
    assert sum(p.status == "diverged" for p in report.grid) == 4 * 4


def test_edge_and_missing_points_are_warned(tmp_path):
    sweep = synthetic_sweep(tmp_path / "s", sp_like, widths=(128, 1024), lrs="2^-9:2^-5:1")
    result_path(load_plan(sweep).points[0]).unlink()
    report = build_report(load_plan(sweep))
    edge = [o for o in report.optima if o.on_edge]
    assert [o.width for o in edge] == [1024] and not edge[0].fitted
    assert any("width 1024: the optimum is the smallest LR of the grid" in w for w in report.warnings)
    assert any("1 of 10 points have no result" in w for w in report.warnings)


def test_drift_tolerance_separates_the_paper_cases():
    # μP moved by <= 0.5 log2 across 3 doublings; SP by about -1 per doubling.
    assert 0.5 / 3 <= DRIFT_TOLERANCE < 1.0


def test_report_cli_prints_tables_json_and_writes_the_plot(tmp_path, capsys):
    mup = synthetic_sweep(tmp_path / "mup", mup_like)
    sp = synthetic_sweep(tmp_path / "sp", sp_like, overrides=["model.parametrization=sp"])
    assert main(["report", str(mup), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "transfers" and len(data["optima"]) == 4 and data["metric"] == "eval_loss"
    assert (mup / "loss_vs_lr.png").stat().st_size > 10_000
    plot = tmp_path / "both.png"
    assert main(["report", str(mup), str(sp), "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert "verdict: transfers" in text
    assert "drift of log2 lr*: -1.00 per width doubling, 80% interval [-1.00, -1.00], 2 dof" in text
    assert "verdict: drifts: the whole interval lies outside ±0.2 log2 per doubling" in text
    assert "(sp)" in text and plot.stat().st_size > 10_000


def test_horizon_fit_recovers_beta_exactly_without_noise(tmp_path):
    sweep = synthetic_sweep(tmp_path / "s", horizon_like(0.3), steps=[150, 300, 600, 1200])
    report = build_report(load_plan(sweep))
    fit = report.horizon_fit
    assert fit.beta == pytest.approx(0.3, abs=1e-6) and fit.beta_se == pytest.approx(0, abs=1e-6)
    assert fit.determined and fit.disagreeing == [] and report.verdict == "transfers"
    assert report.optimum(1024, 1200).tokens == 1200 * 4096 and report.warmup == "0.1 of each horizon's steps"
    assert fit.log2_lr(1024, 4096 * 300 * 16) == pytest.approx(-6.3 - 0.3 * 4)  # 16x tokens: 4 doublings


def test_horizon_fit_recovers_beta_within_its_standard_error_under_noise(tmp_path):
    """Noisy losses: the fitted β lands within 2.5 standard errors of the true one in most sweeps, and the
    standard error reflects the noise (not zero, not huge)."""
    hits, ses = 0, []
    for seed in range(8):
        sweep = synthetic_sweep(tmp_path / f"s{seed}", horizon_like(0.4), steps=[150, 300, 600],
                                lrs="2^-10:2^-4:0.5", noise=0.01, seed=seed)
        fit = build_report(load_plan(sweep)).horizon_fit
        hits += abs(fit.beta - 0.4) <= 2.5 * fit.beta_se
        ses.append(fit.beta_se)
    assert hits >= 7 and 0.005 < sorted(ses)[4] < 0.2


def test_two_horizons_get_a_standard_error_from_several_widths(tmp_path):
    sweep = synthetic_sweep(tmp_path / "s", horizon_like(0.3), steps=[300, 1200], noise=0.005)
    fit = build_report(load_plan(sweep)).horizon_fit
    assert fit.dof == 8 - 4 - 1 and fit.beta_se is not None and fit.beta == pytest.approx(0.3, abs=0.15)


def test_a_width_with_another_beta_is_a_warning(tmp_path):
    def drifting_beta(width, tokens):  # β 0.3 at every width but 1024, where it is 0.9
        return horizon_like(0.9 if width == 1024 else 0.3)(width, tokens)

    sweep = synthetic_sweep(tmp_path / "s", drifting_beta, steps=[150, 300, 600, 1200], noise=0.002)
    report = build_report(load_plan(sweep))
    assert report.horizon_fit.disagreeing == [1024]
    assert any("width 1024: β = 0.9" in w and "disagrees" in w for w in report.warnings)


def test_batch_exponent_is_fitted_with_beta_exactly_without_noise(tmp_path, capsys):
    """Horizons in steps at three batches: the tokens move with both, one fit tells β and a apart."""
    sweep = synthetic_sweep(tmp_path / "s", batch_like(0.3, 0.5), steps=[150, 300, 600], batches=[16, 32, 64])
    report = build_report(load_plan(sweep))
    fit = report.horizon_fit
    assert fit.beta == pytest.approx(0.3, abs=1e-6) and fit.batch_exponent.estimate == pytest.approx(0.5, abs=1e-6)
    assert fit.batch_se == pytest.approx(0, abs=1e-6) and fit.dof == 4 * 9 - 4 - 2 and fit.disagreeing == []
    assert report.verdict == "transfers" and len(report.optima) == 4 * 9
    assert fit.log2_lr(1024, 4096 * 300 * 8, 4096 * 2) == pytest.approx(-6.3 - 0.3 * 3 + 0.5)
    assert main(["report", str(sweep)]) == 0
    text = capsys.readouterr().out
    assert "by LR (rows) and width/steps/batch (columns)" in text and "w1024/s600/b64" in text
    header, *optima = text.split("\n\n")[1].splitlines()[:37]
    assert header.split()[:4] == ["width", "steps", "batch", "tokens"]  # each optimum says its batch
    assert sorted({int(row.split()[2]) for row in optima}) == [16, 32, 64]
    assert ("batch exponent a (log2 lr* per doubling of tokens per step, fitted jointly with β) = +0.500 ± 0.000, "
            "80% interval [+0.50, +0.50], 30 dof\n") in text
    assert (sweep / "loss_vs_lr.png").stat().st_size > 10_000
    # a target at a batch the sweep did not measure: the report's extrapolation is apply-lr's, at its batch
    target = big_target(tmp_path, global_batch_size=48, steps=800)
    assert main(["report", str(sweep), "--target", target, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = -6.3 - 0.3 * math.log2(800 * 48 / (300 * 16)) + 0.5 * math.log2(3)
    assert data["target"]["log2_lr"] == pytest.approx(expected) == data["transfer"]["log2_lr"]
    assert data["before_apply"] == [] and data["transfer"]["case"] == "extrapolated"


def test_batch_exponent_lands_in_its_interval_under_noise(tmp_path):
    """Equal tokens: each batch trains the horizon's tokens; noisy losses, the 80% interval holds the true a in
    most sweeps."""
    hits = 0
    for seed in range(8):
        sweep = synthetic_sweep(tmp_path / f"s{seed}", batch_like(0.3, -0.4), widths=(128, 256, 512),
                                steps=[160, 320], batches=[16, 32, 64], equal_tokens=True, noise=0.01, seed=seed)
        a = build_report(load_plan(sweep)).horizon_fit.batch_exponent
        assert a.determined and a.high - a.low < 0.5
        hits += a.low <= -0.4 <= a.high
    assert hits >= 5


def test_one_batch_keeps_the_horizon_fit_and_a_batch_beside_one_horizon_is_undetermined(tmp_path, capsys):
    one = build_report(load_plan(synthetic_sweep(tmp_path / "one", horizon_like(0.3), steps=[150, 300])))
    assert one.horizon_fit.batch_exponent is None and one.batches == [16]
    sweep = synthetic_sweep(tmp_path / "s", batch_like(0.3, 0.5), steps=[300], batches=[16, 32, 64])
    assert build_report(load_plan(sweep)).horizon_fit is None  # tokens move with the batch alone: no β apart
    assert main(["report", str(sweep)]) == 0
    assert ("batch exponent a: undetermined: it is fitted jointly with β, which needs two or more horizons at a "
            "batch, and the batch must vary apart from them (e.g. --equal-tokens)") in capsys.readouterr().out


def test_shared_slope_is_least_squares_with_per_group_intercepts():
    fit = shared_slope({1: [(0, 1.0), (1, 3.0), (2, 5.2)], 2: [(0, 10.0), (1, 12.1), (2, 14.0)]})
    assert fit.slope == pytest.approx((2.1 + 2.0) / 2) and fit.dof == 3
    assert fit.intercepts[2] - fit.intercepts[1] == pytest.approx(9.0 - 0.0, abs=0.1)
    assert fit.group_slopes == pytest.approx({1: 2.1, 2: 2.0})
    assert shared_slope({1: [(0, 1.0)]}) is None  # no group with two distinct x


def test_report_cli_shows_the_horizon_fit_and_the_target_extrapolation(tmp_path, capsys):
    sweep = synthetic_sweep(tmp_path / "s", horizon_like(0.3), steps=[150, 300, 600])
    target = tmp_path / "long.yaml"
    target.write_text(f"base: {ROOT / 'configs' / 'tiny.yaml'}\ntrain:\n  steps: 4800\n  global_batch_size: 16\n")
    assert main(["report", str(sweep), "--target", str(target), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["horizon_fit"]["beta"] == pytest.approx(0.3, abs=1e-6)
    assert data["target"]["ratio"] == pytest.approx(8) and data["target"]["log2_lr"] == pytest.approx(-6.3 - 0.3 * 4)
    assert main(["report", str(sweep), "--target", str(target)]) == 0
    text = capsys.readouterr().out
    assert "horizon fit:" in text and "β = 0.300" in text and "8x the longest swept horizon" in text
    assert (sweep / "loss_vs_lr.png").stat().st_size > 10_000


def test_beta_is_undetermined_at_one_dof_however_exact_the_optima(tmp_path, capsys):
    """Widths 32 and 64 at two horizons: 4 optima, 3 parameters. Noiseless, β's standard error is 0, yet one
    residual cannot tell an exact line from luck: no interval, so β is undetermined."""
    sweep = synthetic_sweep(tmp_path / "two", horizon_like(0.3), widths=(32, 64), steps=[150, 300])
    report = build_report(load_plan(sweep))
    fit = report.horizon_fit
    assert fit.dof == 1 and fit.beta_se == pytest.approx(0, abs=1e-9) and not fit.determined
    assert not fit.beta_interval.determined
    assert ("β = 0.30 is undetermined: the horizon fit has 1 residual dof and an interval needs 2; sweep another "
            "horizon (a dof per width) before extrapolating") in report.warnings
    assert main(["report", str(sweep)]) == 0
    text = capsys.readouterr().out
    assert "horizon fit: log2 lr* = a(width) − β·log2(tokens); β = 0.300 undetermined (1 dof)\n" in text


def test_beta_with_two_or_more_dof_is_printed_with_its_interval(tmp_path, capsys):
    sweep = synthetic_sweep(tmp_path / "s", horizon_like(0.3), steps=[150, 300], noise=0.005)
    fit = build_report(load_plan(sweep)).horizon_fit
    assert fit.dof == 3 and fit.determined
    half = t_quantile(0.9, 3) * fit.beta_se
    assert (fit.beta_interval.low, fit.beta_interval.high) == pytest.approx((fit.beta - half, fit.beta + half))
    assert main(["report", str(sweep)]) == 0
    assert (f"β = {fit.beta:.3f} ± {fit.beta_se:.3f}, 80% interval [{fit.beta - half:+.2f}, {fit.beta + half:+.2f}], "
            f"3 dof (residual σ {fit.sigma:.2f} log2)\n") in capsys.readouterr().out


def test_report_with_a_target_shows_the_lr_and_interval_apply_lr_gives(tmp_path, capsys):
    """One computation: the report's target line and JSON are apply-lr's."""
    sweep = str(synthetic_sweep(tmp_path / "s", horizon_like(0.3), steps=[150, 300, 600], noise=0.01))
    target = big_target(tmp_path, global_batch_size=16, steps=4800)
    assert main(["report", sweep, "--target", target]) == 0
    shown = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("target lr: "))
    assert "80% interval [" in shown and "7 dof" in shown
    assert main(["apply-lr", sweep, target]) == 0
    assert capsys.readouterr().out == f"{target}: set {shown.removeprefix('target lr: ')}\n"
    assert main(["report", sweep, "--target", target, "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)["transfer"]
    assert main(["apply-lr", sweep, target, "--json", "--print"]) == 0
    applied = json.loads(capsys.readouterr().out)
    assert applied == {**reported, "lr": float(f"{reported['lr']:.4g}")}  # apply-lr writes 4 significant digits


@pytest.mark.parametrize("p, dof, table", [(0.9, 1, 3.0777), (0.9, 2, 1.8856), (0.9, 5, 1.4759),
                                            (0.95, 2, 2.9200), (0.975, 1, 12.7062), (0.975, 10, 2.2281),
                                            (0.995, 30, 2.7500), (0.999, 3, 10.2145), (0.9, 120, 1.2886)])
def test_t_quantile_matches_the_table(p, dof, table):
    assert t_quantile(p, dof) == pytest.approx(table, abs=5e-5)
    assert t_quantile(1 - p, dof) == pytest.approx(-table, abs=5e-5)


def test_linear_fit_covariance_is_the_textbook_one():
    """Simple regression: se(slope) = σ/√Sxx, se(intercept) = σ·√(1/n + x̄²/Sxx), σ² = RSS/(n − 2)."""
    x, y = np.array([1.0, 2, 3, 5, 8]), np.array([2.1, 3.9, 6.2, 9.8, 16.1])
    fit = linear_fit(np.column_stack([np.ones_like(x), x]), y)
    slope, intercept = np.polyfit(x, y, 1)
    sigma = math.sqrt(((y - intercept - slope * x) ** 2).sum() / 3)
    sxx = ((x - x.mean()) ** 2).sum()
    assert fit.params == pytest.approx([intercept, slope]) and fit.dof == 3 and fit.sigma == pytest.approx(sigma)
    assert fit.standard_error([0, 1]) == pytest.approx(sigma / math.sqrt(sxx))
    assert fit.standard_error([1, 0]) == pytest.approx(sigma * math.sqrt(1 / 5 + x.mean() ** 2 / sxx))
    at_4 = fit.interval([1, 4])  # the prediction at x = 4: its design row
    half = t_quantile(0.9, 3) * sigma * math.sqrt(1 / 5 + (4 - x.mean()) ** 2 / sxx)
    assert (at_4.low, at_4.estimate, at_4.high) == pytest.approx((intercept + 4 * slope - half,
                                                                   intercept + 4 * slope, intercept + 4 * slope + half))


def test_no_interval_below_two_residual_dof():
    one = linear_fit(np.column_stack([np.ones(3), [0.0, 1, 2]]), np.array([0.0, 1.1, 1.9]))
    assert one.dof == 1 and one.standard_error([0, 1]) is not None
    assert not one.interval([0, 1]).determined and str(one.interval([0, 1])) == "no interval at 1 dof"
    assert linear_fit(np.column_stack([np.ones(2), [0.0, 1]]), np.array([0.0, 1.0])).covariance is None


def test_a_noise_prior_pools_each_fits_sigma_and_adds_its_dof():
    """The moderated t: σ² = (ν σ̂² + ν₀ σ₀²)/(ν + ν₀) for each fit's terms, the quantile at min ν + ν₀."""
    terms = [ErrorTerm("line", 0.5, 0.05, 3, "horizon"), ErrorTerm("new", 1.0, 0.05, 3, "horizon"),
             ErrorTerm("drift", 4.0, 0.1, 5, "width")]
    prior = NoisePrior(0.2, 6)
    interval = prediction_interval(-6.0, terms, prior)
    horizon, width = (3 * 0.05**2 + 6 * 0.2**2) / 9, (5 * 0.1**2 + 6 * 0.2**2) / 11
    half = t_quantile(0.9, 9) * math.sqrt(1.5 * horizon + 4.0 * width)
    assert (interval.low, interval.high) == pytest.approx((-6.0 - half, -6.0 + half))
    assert interval.dof == 9 and interval.prior_dof == 6
    assert str(interval).endswith("3 dof with the seed-noise prior's 6")
    alone = prediction_interval(-6.0, terms)  # the fits' own: a lucky-low σ̂ of 0.05 gives a narrow interval
    assert alone.high - alone.low < interval.high - interval.low and str(alone).endswith(", 3 dof")
    assert terms[0].variance(prior) == pytest.approx(0.5 * horizon)
    assert terms[0].variance() == pytest.approx(0.5 * 0.05**2)


def test_a_noise_prior_does_not_lift_a_fit_below_two_dof_of_its_own():
    """One residual cannot tell a wrong shape of the fitted curve from noise, whatever the prior says."""
    terms = [ErrorTerm("new", 1.0, 0.05, 1, "horizon"), ErrorTerm("drift", 1.0, 0.1, 5, "width")]
    interval = prediction_interval(-6.0, terms, NoisePrior(0.2, 30))
    assert not interval.determined and str(interval) == "no interval at 1 dof"


def optima(log2_lrs: dict[tuple[int, int], float]) -> list[Optimum]:
    """Fitted optima inside the grid, at (width, steps) -> log2 lr*."""
    return [Optimum(w, s, s * 4096, 2**x, 3.0, 2**x, True, False) for (w, s), x in log2_lrs.items()]


def test_the_drift_interval_covers_the_true_drift_as_often_as_it_claims():
    """400 sweeps of 4 widths x 2 horizons (5 dof), optima drifting by -0.1 per doubling plus Gaussian noise of
    0.2 log2: the 80% interval holds the true drift in about 80% of them."""
    rng = np.random.default_rng(0)
    cells = [(w, s) for w in (128, 256, 512, 1024) for s in (300, 600)]
    covered = 0
    for _ in range(400):
        drift = width_drift(optima({(w, s): -6 - 0.1 * math.log2(w / 128) + rng.normal(0, 0.2) for w, s in cells}))
        assert drift.interval.dof == 5
        covered += drift.interval.low <= -0.1 <= drift.interval.high
    assert 0.72 <= covered / 400 <= 0.88


def test_the_verdict_reads_the_whole_interval():
    widths = (128, 256, 512, 1024)
    flat = width_drift(optima({(w, 300): -6 + 0.05 * (-1) ** i for i, w in enumerate(widths)}))
    assert flat.verdict == "transfers" and -DRIFT_TOLERANCE <= flat.interval.low < flat.interval.high <= DRIFT_TOLERANCE
    steep = width_drift(optima({(w, 300): -6 - 0.6 * math.log2(w / 128) + 0.05 * (-1) ** i
                                for i, w in enumerate(widths)}))
    assert steep.verdict == "drifts" and steep.interval.high < -DRIFT_TOLERANCE
    between = width_drift(optima({(w, 300): -6 - 0.2 * math.log2(w / 128) + 0.05 * (-1) ** i
                                  for i, w in enumerate(widths)}))
    assert between.verdict == "undetermined" and between.interval.low < -DRIFT_TOLERANCE < between.interval.high
    assert "straddles ±0.2 log2 per doubling; to decide it, narrow it" in between.reason
    three = width_drift(optima({(w, 300): -6 - 0.6 * math.log2(w / 128) for w in widths[:3]}))
    assert three.verdict == "undetermined" and three.interval.dof == 1  # a perfect line, yet one residual dof
    assert three.reason == ("an interval needs 2 residual dof; to decide it, sweep 1 more width, or these 3 "
                            "widths at 1 more horizon")
    alone = width_drift(optima({(128, 300): -6.0}))
    assert alone.verdict == "undetermined" and alone.interval is None and "fewer than two widths" in alone.reason


def test_a_two_width_sweep_is_undetermined_and_says_what_would_decide_it(tmp_path, capsys):
    sweep = synthetic_sweep(tmp_path / "two", drift_like(-0.32), widths=(128, 256))
    assert main(["report", str(sweep)]) == 0
    text = capsys.readouterr().out
    assert "drift of log2 lr*: -0.32 per width doubling, no interval at 0 dof" in text
    assert ("verdict: undetermined: an interval needs 2 residual dof; to decide it, sweep 2 more widths, or these 2 "
            "widths at 2 more horizons") in text
    assert main(["report", str(sweep), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "undetermined" and data["drift"] == pytest.approx(-0.32)
    assert data["drift_interval"] == {"estimate": pytest.approx(-0.32), "low": None, "high": None,
                                      "confidence": 0.8, "dof": 0, "prior_dof": 0}
    assert "before_apply" not in data and "target" not in data  # nothing about a target without --target


def test_scattered_optima_straddling_the_tolerance_are_undetermined(tmp_path, capsys):
    scatter = {128: 0.3, 256: -0.3, 512: 0.3, 1024: -0.3}  # drift -0.12, residual σ 0.38 log2
    assert main(["report", str(synthetic_sweep(tmp_path / "s", drift_like(0, scatter))), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    interval = data["drift_interval"]
    assert data["drift"] == pytest.approx(-0.12) and interval["dof"] == 2 and interval["confidence"] == 0.8
    half = t_quantile(0.9, 2) * math.sqrt(0.288 / 2 / 5)  # t · σ/√Sxx, Sxx = 5 over log2 widths 7..10
    assert (interval["low"], interval["high"]) == pytest.approx((-0.12 - half, -0.12 + half), abs=1e-6)
    assert data["verdict"] == "undetermined" and data["verdict_reason"].startswith("the interval straddles ±0.2")


def big_target(tmp_path, **train) -> str:
    """tiny.yaml at width 4096 with `train` settings."""
    path = tmp_path / "big.yaml"
    path.write_text(f"base: {ROOT / 'configs' / 'tiny.yaml'}\nmodel:\n  d_model: 4096\n"
                    + ("train:\n" + "".join(f"  {k}: {v}\n" for k, v in train.items()) if train else ""))
    return str(path)


def test_report_with_a_target_lists_what_apply_lr_would_refuse(tmp_path, capsys):
    sweep = str(synthetic_sweep(tmp_path / "s", mup_like))
    unset = big_target(tmp_path)  # the swept config's batch rule: no train.global_batch_size
    assert main(["report", sweep, "--target", unset]) == 0
    text = capsys.readouterr().out
    listed = text[text.index("before you apply"):].splitlines()
    assert listed[0] == "before you apply: `pretrain apply-lr` would refuse the target:"
    assert listed[1].startswith("  - train.global_batch_size is not set, so the target's tokens per step depend on "
                                "the GPU count") and listed[2].startswith("plot:")
    assert main(["report", sweep, "--target", big_target(tmp_path, global_batch_size=16)]) == 0
    assert "before you apply: nothing `pretrain apply-lr` would refuse" in capsys.readouterr().out
    larger_batch = big_target(tmp_path, global_batch_size=64, steps=75)  # the swept horizon in tokens
    assert main(["report", sweep, "--target", larger_batch, "--json"]) == 0
    before = json.loads(capsys.readouterr().out)["before_apply"]
    assert [p["brief"] for p in before] == ["batch differs (proxy 4,096, target 16,384 tokens per step)"]
    assert main(["apply-lr", sweep, larger_batch]) == 2
    assert before[0]["detail"] in capsys.readouterr().err  # the same check, said the same way


def test_report_before_apply_on_a_sweep_with_no_result_yet(tmp_path, capsys):
    sweep = synthetic_sweep(tmp_path / "s", mup_like, widths=(128, 256))
    for point in load_plan(sweep).points:
        result_path(point).unlink()
    assert main(["report", str(sweep), "--target", big_target(tmp_path, global_batch_size=16)]) == 0
    assert "  - sweep s has no optimum yet; run its points first" in capsys.readouterr().out


def imported_modules(module: str) -> set[str]:
    """Every module `pretrain/transfer/<module>.py` imports, at any depth; relative ones keep their dots."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / "pretrain" / "transfer" / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


def test_the_fit_reads_no_files_and_only_the_plots_import_matplotlib():
    """The fit is pure (no files, no plan, no plots), so it can be tested and extended on points alone."""
    fit = imported_modules("fit")
    assert not [name for name in fit if name.startswith(".")
                or name.split(".")[0] in ("pretrain", "matplotlib", "pathlib", "json", "os", "io")], fit
    for module in ("fit", "report", "report_text", "report_plot"):
        uses_matplotlib = any(name.split(".")[0] == "matplotlib" for name in imported_modules(module))
        assert uses_matplotlib == (module == "report_plot"), module


def test_report_merges_sweeps_of_one_recipe_into_the_report_of_all_their_points(tmp_path, capsys):
    """Two halves of an LR grid over two horizons, overlapping at 2^-7, report as the whole grid in one directory
    does: the same optima, drift and β. A point in both is read from the first sweep listed that has its result."""
    whole, low, high = (synthetic_sweep(tmp_path / name, horizon_like(0.3), lrs=lrs, steps=[150, 300])
                        for name, lrs in (("whole", "2^-12:2^-2:0.5"), ("low", "2^-12:2^-7:0.5"),
                                          ("high", "2^-7:2^-2:0.5")))

    def report(*sweeps) -> dict:
        assert main(["report", *map(str, sweeps), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    expected, merged = report(whole), report(low, high)
    for key in ("optima", "drift", "drift_interval", "verdict", "horizon_fit", "steps", "metric", "tokens_per_step"):
        assert merged[key] == expected[key], key
    target = ["--target", big_target(tmp_path, global_batch_size=16)]  # checked against the merged plan
    assert report(low, high, *target)["before_apply"] == report(whole, *target)["before_apply"]
    assert merged["name"] == "low+high" and len(merged["grid"]) == len(expected["grid"]) == 4 * 2 * 21
    assert merged["warnings"] == [
        f"8 points are in more than one sweep; each is read from the first listed that has its result: "
        f"w128-s150-lr7.8125e-03 from {low} (also in {high}), w128-s300-lr7.8125e-03 from {low} (also in {high}), "
        f"w256-s150-lr7.8125e-03 from {low} (also in {high}) ..."]

    def loss_at_the_overlap(data: dict) -> float:
        return next(p["loss"] for p in data["grid"] if (p["width"], p["steps"], p["lr"]) == (128, 150, 2**-7))

    (in_high,) = [p for p in load_plan(high).points if p.name == "w128-s150-lr7.8125e-03"]
    result_path(in_high).write_text(json.dumps({**read_result(in_high), "eval_loss": 9.0}))
    assert loss_at_the_overlap(report(low, high)) == loss_at_the_overlap(expected) < 9.0
    swapped = report(high, low)
    assert loss_at_the_overlap(swapped) == 9.0 and f"from {high} (also in {low})" in swapped["warnings"][0]
    (in_low,) = [p for p in load_plan(low).points if p.name == in_high.name]
    result_path(in_low).unlink()  # not run there: the other sweep's result is read
    assert loss_at_the_overlap(report(low, high)) == 9.0


def test_report_refuses_to_merge_sweeps_of_different_recipes(tmp_path, capsys):
    """A fit over unlike runs would mean nothing: any difference but the parametrization is refused, named. μP and
    SP sweeps of one recipe are set side by side, each merged with the sweeps of its own parametrization."""
    mup = synthetic_sweep(tmp_path / "mup", mup_like)
    shorter = synthetic_sweep(tmp_path / "shorter", mup_like, overrides=["data.seq_len=128"])
    assert main(["report", str(mup), str(shorter)]) == 2
    assert capsys.readouterr().err == (
        f"error: cannot merge sweeps {mup} and {shorter}: data.seq_len is 256 in {mup}, 128 in {shorter}; sweeps merge "
        "only under one recipe (those that differ in model.parametrization alone are reported side by side)\n")
    wider = synthetic_sweep(tmp_path / "wider", mup_like, widths=(2048,))
    sp = synthetic_sweep(tmp_path / "sp", sp_like, overrides=["model.parametrization=sp"])
    reports = [report for _, report in report_sweeps([mup, sp, wider])]
    assert [(r.name, r.parametrization) for r in reports] == [("mup+wider", "mup"), ("sp", "sp")]
    assert [o.width for o in reports[0].optima] == [128, 256, 512, 1024, 2048] and reports[0].verdict == "transfers"


COMPLETEP = ["model.depth_parametrization=completep", "model.base_depth=2"]
SCATTER = {2: 0.05, 4: -0.05, 8: 0.05, 16: -0.05}  # optima as scattered as noisy ones, reproducibly


def test_a_depth_sweep_shows_the_optimum_per_depth_and_its_drift_with_the_verdict_of_width(tmp_path, capsys):
    flat = build_report(load_plan(synthetic_sweep(tmp_path / "flat", depth_like(0.0, SCATTER), widths=(128, 256),
                                                  depths=[2, 4, 8, 16], overrides=COMPLETEP)))
    assert flat.depths == [2, 4, 8, 16] and flat.deepest == 16
    assert sorted((o.width, o.depth) for o in flat.optima) == [(w, d) for w in (128, 256) for d in (2, 4, 8, 16)]
    assert all(math.log2(o.lr) == pytest.approx(-6.3 + SCATTER[o.depth], abs=1e-6) for o in flat.optima)
    assert flat.depth_drift.verdict == "transfers" and flat.verdict == "transfers"  # across depth, and width
    assert flat.depth_drift.interval.dof == 8 - 2 - 1  # 8 optima, an intercept per width, the slope
    sweep = synthetic_sweep(tmp_path / "drift", depth_like(-0.5, SCATTER), widths=(128, 256), depths=[2, 4, 8, 16])
    drifting = build_report(load_plan(sweep))
    assert drifting.depth_drift.slope == pytest.approx(-0.5 - 0.02, abs=1e-6)  # the scatter's own slope, -0.02
    assert drifting.depth_drift.verdict == "drifts" and drifting.verdict == "transfers"
    assert main(["report", str(sweep)]) == 0
    text = capsys.readouterr().out
    assert "by LR (rows) and width/depth (columns)" in text and "w256/d16" in text
    header, *rows = text.split("\n\n")[1].splitlines()[:9]
    assert header.split()[:3] == ["width", "depth", "steps"] and [int(r.split()[1]) for r in rows[:4]] == [2, 4, 8, 16]
    assert "drift of log2 lr*: -0.52 per depth doubling, 80% interval [" in text
    assert "log2 over 8x depth, at the worst width)\ndepth verdict: drifts: the whole interval lies outside" in text
    assert main(["report", str(sweep), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["depths"] == [2, 4, 8, 16] and data["depth_drift"]["verdict"] == "drifts"
    assert (sweep / "loss_vs_lr.png").stat().st_size > 10_000
    one = build_report(load_plan(synthetic_sweep(tmp_path / "one", mup_like, widths=(128, 256))))
    assert one.depths == [4] and one.depth_drift is None


def test_the_depth_drift_is_the_width_drifts_logic_along_depth():
    """One verdict logic for both axes: the same optima read across depth give what they give across width."""
    cells = {(w, d): -6 - 0.3 * math.log2(d / 2) + 0.04 * (-1) ** (w // 128 + d) for w in (128, 256) for d in (2, 4, 8)}
    along_depth = depth_drift([Optimum(w, 300, 300 * 4096, 2**x, 3.0, 2**x, True, False, depth=d)
                               for (w, d), x in cells.items()])
    along_width = width_drift([Optimum(d, 300, 300 * 4096, 2**x, 3.0, 2**x, True, False, depth=w)
                               for (w, d), x in cells.items()])
    assert along_depth.interval == along_width.interval and along_depth.verdict == along_width.verdict
    assert along_depth.reason == along_width.reason
    alone = depth_drift([Optimum(128, 300, 300 * 4096, 2**-6, 3.0, 2**-6, True, False, depth=4)])
    assert alone.verdict == "undetermined" and alone.reason.startswith("fewer than two depths have an optimum")


def test_with_several_depths_the_horizon_fit_is_the_deepest_proxies(tmp_path, capsys):
    """β measured at the depth apply-lr transfers from: at depth 2 the optimum sits a whole log2 higher, which a fit
    over both depths with one intercept per width would read as noise."""
    at_tokens = 4096 * 300
    optimum = lambda width, tokens, *, depth: -6.3 - 0.3 * math.log2(tokens / at_tokens) + (depth == 2)  # noqa: E731
    sweep = synthetic_sweep(tmp_path / "s", optimum, widths=(128, 256, 512), depths=[2, 4], steps=[150, 300, 600],
                            overrides=COMPLETEP)
    fit = build_report(load_plan(sweep)).horizon_fit
    assert fit.beta == pytest.approx(0.3, abs=1e-6) and fit.sigma == pytest.approx(0, abs=1e-6)
    assert all(a == pytest.approx(-6.3 + 0.3 * math.log2(at_tokens), abs=1e-6) for a in fit.intercepts.values())
    assert main(["report", str(sweep)]) == 0
    assert "horizon fit, at depth 4 (the deepest): log2 lr* = a(width) − β·log2(tokens)" in capsys.readouterr().out
