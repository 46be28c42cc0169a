"""`pretrain report` on synthetic sweeps whose optimum is known: fit, drift, verdict, warnings, plot, JSON."""

import ast
import json
import math

import pytest

from pretrain.cli import main
from pretrain.transfer.fit import DRIFT_TOLERANCE, fit_optimum, shared_slope
from pretrain.transfer.report import build_report
from pretrain.transfer.sweep import load_plan, result_path
from tests.helpers import ROOT, horizon_like, mup_like, sp_like, synthetic_sweep


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
    assert report.verdict == "drifts by -1.00 log2 per doubling"
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
    assert "verdict: transfers" in text and "verdict: drifts by -1.00 log2 per doubling" in text
    assert "(sp)" in text and plot.stat().st_size > 10_000


def test_horizon_fit_recovers_beta_exactly_without_noise(tmp_path):
    sweep = synthetic_sweep(tmp_path / "s", horizon_like(0.3), steps=[150, 300, 600, 1200])
    report = build_report(load_plan(sweep))
    fit = report.horizon_fit
    assert fit.beta == pytest.approx(0.3, abs=1e-6) and fit.beta_se == pytest.approx(0, abs=1e-6)
    assert fit.determined and fit.disagreeing == [] and report.verdict == "transfers"
    assert report.optimum(1024, 1200).tokens == 1200 * 4096 and report.warmup == "30 steps at every horizon"
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
