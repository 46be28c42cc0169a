"""`pretrain report` on synthetic sweeps whose optimum is known: fit, drift, verdict, warnings, plot, JSON."""

import json
import math
from pathlib import Path

import pytest
from conftest import ROOT

from pretrain.cli import main
from pretrain.transfer.report import DRIFT_TOLERANCE, build_report, fit_optimum
from pretrain.transfer.sweep import create_sweep, load_plan, parse_lrs, result_path


def synthetic_sweep(out: Path, optimum, widths=(128, 256, 512, 1024), lrs="2^-12:2^-2:0.5",
                    diverge_above: float = math.inf, config: str = "configs/tiny.yaml", overrides=()) -> Path:
    """A planned sweep whose points have results: eval loss 3 + 0.1·(log2 lr − optimum(width))², diverged
    above `diverge_above` (log2)."""
    plan = create_sweep(ROOT / config, list(widths), parse_lrs(lrs), out, list(overrides))
    for p in plan.points:
        x = math.log2(p.lr)
        diverged = x > diverge_above
        loss = None if diverged else 3 + 0.1 * (x - optimum(p.width)) ** 2
        result_path(p).parent.mkdir(parents=True)
        result_path(p).write_text(json.dumps({"index": p.index, "width": p.width, "lr": p.lr,
                                              "status": "diverged" if diverged else "ok",
                                              "train_loss": loss, "eval_loss": loss}))
    return out


def mup_like(width: int) -> float:
    return -6.3


def sp_like(width: int) -> float:
    return -6.3 - math.log2(width / 128)  # halves per doubling


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
    assert sum(g["status"] == "diverged" for g in report.grid) == 4 * 4


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
