"""LR sweeps: grids, plans and how they grow, the Slurm submission, and a real smoke sweep that restarts and reports."""

import json
import math
import os

import pytest

from pretrain.cli import main
from pretrain.config import load_config
from pretrain.errors import ConfigError
from pretrain.tools.slurm import SWEEP_SCRIPT
from pretrain.transfer import sweep as sweep_module
from pretrain.transfer.report import build_report
from pretrain.transfer.sweep import (
    create_sweep,
    grow_sweep,
    load_plan,
    parse_batches,
    parse_lrs,
    parse_steps,
    parse_widths,
    read_result,
    result_path,
)
from tests.helpers import ROOT, mup_like, small_run, synthetic_result, synthetic_sweep

TINY = ROOT / "configs" / "tiny.yaml"


def test_lr_grids():
    grid = parse_lrs("2^-10:2^-4:0.5")
    assert len(grid) == 13 and grid[0] == 2**-10 and grid[-1] == 2**-4
    assert [math.log2(lr) for lr in grid][:3] == pytest.approx([-10, -9.5, -9])
    assert parse_lrs("0.01, 2^-6,1e-3") == [1e-3, 0.01, 2**-6]
    for bad in ("2^-4:2^-10:0.5", "2^-10:2^-4:0.7", "2^-10:2^-4:0", "fast", "-0.1"):
        with pytest.raises(ConfigError, match="--lrs"):
            parse_lrs(bad)
    assert parse_widths("512,128,256") == [128, 256, 512]
    with pytest.raises(ConfigError, match="--widths"):
        parse_widths("128,wide")


def test_plan_lists_every_point_with_its_overrides(tmp_path):
    sweep = tmp_path / "my-sweep"
    overrides = ["train.steps=50", "model.parametrization=sp"]
    plan = create_sweep(TINY, [128, 256], [2**-8, 2**-6], sweep, overrides)
    data = json.loads((sweep / "plan.json").read_text())
    assert data["name"] == "my-sweep" and data["parametrization"] == "sp" and len(data["points"]) == 4
    point = data["points"][3]
    assert (point["index"], point["width"], point["lr"]) == (3, 256, 2**-6)
    assert point["name"] == "w256-s50-lr1.5625e-02" and point["steps"] == 50 and data["steps"] == [50]
    assert data["tokens_per_step"] == 16 * 256 and data["warmup"] == "30 steps at every horizon"
    assert point["overrides"] == ["model.d_model=256", "train.steps=50", "optim.lr=0.015625",
                                  f"train.out_dir={sweep.resolve()}/points/{point['name']}",
                                  "wandb.group=my-sweep", f"wandb.name={point['name']}"]
    # the snapshot holds the user's overrides; a point is the snapshot plus its own overrides
    cfg = load_config(data["config"], point["overrides"])
    assert (cfg.model.d_model, cfg.optim.lr, cfg.train.steps) == (256, 2**-6, 50)
    assert cfg.model.parametrization == "sp"
    assert load_plan(sweep) == plan
    # the same sweep again is a restart; a different one in the same directory is refused
    assert create_sweep(TINY, [128, 256], [2**-8, 2**-6], sweep, overrides) == plan
    with pytest.raises(ConfigError, match="already holds a different sweep"):
        create_sweep(TINY, [128, 512], [2**-8, 2**-6], sweep)


def test_horizons_multiply_the_grid_and_keep_the_warmup_rule(tmp_path):
    plan = create_sweep(TINY, [64, 128], [2**-8, 2**-6], tmp_path / "s", steps=[100, 400], fixed_warmup=True)
    assert len(plan.points) == 8 and plan.steps == [100, 400] and plan.tokens(400) == 400 * 16 * 256
    assert {(p.width, p.steps) for p in plan.points} == {(w, s) for w in (64, 128) for s in (100, 400)}
    for point in plan.points:
        cfg = load_config(plan.config, point.overrides)
        assert cfg.train.steps == point.steps and cfg.optim.warmup(point.steps) == 30  # fixed steps: tiny.yaml
    fraction = create_sweep(TINY, [64], [2**-8], tmp_path / "f", ["optim.warmup_fraction=0.1"], steps=[100, 400])
    assert fraction.warmup == "0.1 of each horizon's steps"
    assert [load_config(fraction.config, p.overrides).optim.warmup(p.steps) for p in fraction.points] == [10, 40]
    with pytest.raises(ConfigError, match="--steps"):
        parse_steps("100,long")


def point_warmups(plan) -> dict[int, int]:
    """Each horizon's warmup steps, as its points train them."""
    return {p.steps: load_config(plan.config, p.overrides).optim.warmup(p.steps) for p in plan.points}


def test_a_fixed_warmup_over_several_horizons_becomes_a_fraction_of_each_run(tmp_path, monkeypatch, capsys):
    """tiny.yaml warms up 30 of its 300 steps: swept at 100 and 200 steps, each run warms up 10% of its steps."""
    monkeypatch.setattr(sweep_module, "run_point", lambda plan, index: synthetic_result(plan, plan.points[index],
                                                                                          mup_like))
    sweep = tmp_path / "s"
    assert main(["sweep", str(TINY), "--widths", "64", "--lrs", "2^-8", "--steps", "100,200", "--out", str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0] == (  # then the progress bar
        "warning: optim.warmup_steps=30 over horizons 100,200 steps would warm up 30%..15% of each run; sweeping with "
        "optim.warmup_fraction=0.1 (30 of train.steps=300) instead; pass --fixed-warmup to keep 30 steps")
    plan = load_plan(sweep)
    assert out.startswith(f"sweep {sweep.resolve()}: 1 widths x 2 horizons x 1 LRs = 2 points; warmup 0.1 of each "
                          "horizon's steps\n")
    assert plan.warmup == "0.1 of each horizon's steps" and point_warmups(plan) == {100: 10, 200: 20}
    recorded = load_config(sweep / "config.yaml").optim
    assert (recorded.warmup_fraction, recorded.warmup_steps) == (0.1, 30)

    # --fixed-warmup keeps the steps, still warning that the share varies
    fixed = tmp_path / "fixed"
    assert main(["sweep", str(TINY), "--widths", "64", "--lrs", "2^-8", "--steps", "100,200", "--out", str(fixed),
                 "--fixed-warmup"]) == 0
    assert capsys.readouterr().err.splitlines()[0].endswith("would warm up 30%..15% of each run; keeping 30 steps "
                                                            "(--fixed-warmup)")
    plan = load_plan(fixed)
    assert plan.warmup == "30 steps at every horizon" and point_warmups(plan) == {100: 30, 200: 30}
    assert load_config(fixed / "config.yaml").optim.warmup_fraction is None

    # one horizon, no warmup, or a fraction already set: nothing to do
    cases = ([], [100]), (["optim.warmup_steps=0"], [100, 200]), (["optim.warmup_fraction=0.05"], [100, 200])
    for case, (overrides, steps) in enumerate(cases):
        growth = grow_sweep(TINY, [64], [2**-8], tmp_path / f"case{case}", overrides, steps)
        assert growth.warning is None
        assert load_config(growth.plan.config) == load_config(TINY, overrides)


def test_a_grown_sweep_keeps_its_warmup_rule(tmp_path):
    """The fraction is chosen again from the sweep's own config (whatever train.steps this command gives), so growing
    is not refused over it; a sweep planned with fixed steps keeps them, its points trained with them."""
    sweep = tmp_path / "s"
    create_sweep(TINY, [64], [2**-8], sweep, steps=[100, 200])
    config_yaml = (sweep / "config.yaml").read_bytes()
    growth = grow_sweep(TINY, [64], [2**-8], sweep, ["train.steps=50"], steps=[400])
    assert [p.steps for p in growth.new_points] == [400] and growth.warning.endswith(
        "sweeping with optim.warmup_fraction=0.1 (30 of train.steps=300) instead; pass --fixed-warmup to keep 30 steps")
    assert point_warmups(growth.plan) == {100: 10, 200: 20, 400: 40}
    assert growth.plan.warmup == "0.1 of each horizon's steps" and (sweep / "config.yaml").read_bytes() == config_yaml
    # keeping fixed steps now would change the recipe of the points already run
    with pytest.raises(ConfigError, match="optim.warmup_fraction is 0.1 there, None here"):
        grow_sweep(TINY, [64], [2**-8], sweep, steps=[800], fixed_warmup=True)

    one = tmp_path / "one"
    assert grow_sweep(TINY, [64], [2**-8], one).warning is None  # 300 steps, 30 of them warmup
    growth = grow_sweep(TINY, [64], [2**-8], one, steps=[600])
    assert growth.warning == (
        "warning: optim.warmup_steps=30 over horizons 300,600 steps would warm up 10%..5% of each run; keeping 30 "
        "steps, the rule of the sweep being grown (its points trained with it); plan a new sweep in another --out to "
        "sweep with a fraction of the run")
    assert point_warmups(growth.plan) == {300: 30, 600: 30} and growth.plan.warmup == "30 steps at every horizon"


def test_a_fraction_that_leaves_the_shortest_run_no_warmup_keeps_the_fixed_steps(tmp_path):
    """0.1 of 4 or 10 steps rounds to 0 or 1 warmup steps: no warmup, as 1 step starts at the peak LR. The config
    asked for one, so the fixed steps stay; as they do when the fraction would not be below 1."""
    for steps, rounded in (([4, 8], 0), ([10, 20], 1)):
        growth = grow_sweep(TINY, [64], [2**-8], tmp_path / f"s{steps[0]}", steps=steps)
        assert growth.warning.endswith(
            f"keeping 30 steps: optim.warmup_fraction=0.1 (30 of train.steps=300) would warm up {rounded} of "
            f"{steps[0]} steps, no warmup; set optim.warmup_fraction to choose the share of every run")
        assert point_warmups(growth.plan) == {s: 30 for s in steps}
    assert point_warmups(create_sweep(TINY, [64], [2**-8], tmp_path / "s16", steps=[16, 32])) == {16: 2, 32: 3}
    growth = grow_sweep(TINY, [64], [2**-8], tmp_path / "long", ["train.steps=20"], steps=[100, 200])
    assert "optim.warmup_fraction=1.5 (30 of train.steps=20) is not below 1" in growth.warning
    assert point_warmups(growth.plan) == {100: 30, 200: 30}


def test_a_width_the_config_cannot_take_fails_at_plan_time(tmp_path):
    with pytest.raises(ConfigError, match="sweep point width 100, horizon 300, LR 0.01: model.head_dim: must divide"):
        create_sweep(TINY, [128, 100], [0.01], tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_a_finished_sweep_grows_by_more_lrs_and_widths_and_runs_only_its_new_points(tmp_path, monkeypatch, capsys):
    """The same recipe with more settings appends the new points of the grown grid; the kept ones keep their
    index, name and result. A synthetic result stands in for training each point."""
    sweep = synthetic_sweep(tmp_path / "s", mup_like, widths=(128, 256), lrs="2^-8:2^-6:1")
    finished = load_plan(sweep).points
    results = {p.name: (result_path(p).read_bytes(), result_path(p).stat().st_mtime_ns) for p in finished}
    trained = []

    def run_point(plan, index):
        trained.append(index)
        return synthetic_result(plan, plan.points[index], mup_like)

    monkeypatch.setattr(sweep_module, "run_point", run_point)

    def sweep_again(widths: str, lrs: str) -> list[str]:
        assert main(["sweep", str(TINY), "--widths", widths, "--lrs", lrs, "--out", str(sweep)]) == 0
        return capsys.readouterr().out.splitlines()

    assert sweep_again("128,256", "2^-8:2^-4:1") == [
        f"sweep {sweep.resolve()}: 2 widths x 1 horizons x 5 LRs = 10 points; warmup 30 steps at every horizon",
        "  extended by 2 LRs (2^-5, 2^-4): 4 new points, 6 kept",
        f"4 points run (0 diverged, 0 failed); next: pretrain report {sweep.resolve()}"]
    plan = load_plan(sweep)
    assert plan.points[:6] == finished and trained == [6, 7, 8, 9] and plan.lrs == [2.0**e for e in range(-8, -3)]
    assert [(p.index, p.width, math.log2(p.lr)) for p in plan.points[6:]] == [(6, 128, -5), (7, 128, -4),
                                                                             (8, 256, -5), (9, 256, -4)]
    assert sweep_again("128,256,512", "2^-8:2^-4:1")[1:] == [
        "  extended by 1 width (512): 5 new points, 10 kept",
        f"5 points run (0 diverged, 0 failed); next: pretrain report {sweep.resolve()}"]
    assert trained[4:] == [10, 11, 12, 13, 14] and load_plan(sweep).widths == [128, 256, 512]
    assert {p.name: (result_path(p).read_bytes(), result_path(p).stat().st_mtime_ns) for p in finished} == results

    report = build_report(load_plan(sweep))  # the grown sweep reads as one grid
    assert [o.width for o in report.optima] == [128, 256, 512] and not report.warnings
    assert [math.log2(o.lr) for o in report.optima] == pytest.approx([-6.3] * 3)


def test_fewer_settings_keep_the_plan_and_more_on_another_axis_still_grow_it(tmp_path, capsys):
    sweep = synthetic_sweep(tmp_path / "s", mup_like, widths=(128, 256, 512), lrs="2^-8:2^-6:1")
    plan_json = (sweep / "plan.json").read_bytes()
    assert main(["sweep", str(TINY), "--widths", "128", "--lrs", "2^-8:2^-7:1", "--out", str(sweep)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  this command leaves out 2 widths (256, 512) and 1 LR (2^-6) of the plan, which keeps their 7 points",
        f"0 points run (0 diverged, 0 failed); next: pretrain report {sweep.resolve()}"]
    assert (sweep / "plan.json").read_bytes() == plan_json  # not even rewritten
    # the grid is the union on every axis: a new horizon for width 128 alone is a new horizon for every width
    growth = grow_sweep(TINY, [128], [2**-8], sweep, steps=[600])
    assert growth.changes() == [
        "extended by 1 horizon (600): 9 new points, 9 kept",
        "this command leaves out 2 widths (256, 512), 1 horizon (300) and 2 LRs (2^-7, 2^-6) of the plan, which "
        "keeps their 9 points"]
    assert growth.plan.steps == [300, 600] and {(p.width, p.steps) for p in growth.new_points} == {
        (w, 600) for w in (128, 256, 512)}


def test_a_different_recipe_is_refused_naming_the_difference(tmp_path, capsys):
    sweep = tmp_path / "s"
    create_sweep(TINY, [128, 256], [2**-8], sweep, ["model.mlp=relu2"])
    plan_json = (sweep / "plan.json").read_bytes()
    assert main(["sweep", str(TINY), "--widths", "128,256,512", "--lrs", "2^-8", "--out", str(sweep)]) == 2
    assert capsys.readouterr().err == (
        f"error: {sweep.resolve()} already holds a different sweep (model.mlp is 'relu2' there, 'swiglu' here); a "
        "sweep grows only under the same recipe: pass --out with a new directory or delete it\n")
    with pytest.raises(ConfigError, match="model.mlp is 'relu2' there, 'swiglu' here; model.parametrization is 'mup' "
                                          "there, 'sp' here"):
        create_sweep(TINY, [128], [2**-8], sweep, ["model.parametrization=sp"])
    assert (sweep / "plan.json").read_bytes() == plan_json
    # what each point sets for itself is no difference of recipe (the depth is an axis, whose settings it grows by)
    same = grow_sweep(TINY, [128, 256], [2**-8], sweep, ["model.mlp=relu2", "model.d_model=512", "model.n_layers=4",
                                                         "train.out_dir=elsewhere", "wandb.group=mine"])
    assert same.new_points == [] and same.changes() == []


BATCHED = ["train.micro_batch_size=4", "train.global_batch_size=16"]  # batches 8, 16, 32 divide into micro batches


def test_batches_add_a_dimension_that_a_point_at_the_configs_batch_leaves_out_of_its_name(tmp_path):
    sweep = tmp_path / "s"
    plan = create_sweep(TINY, [64], [2**-8], sweep, BATCHED, steps=[100], batches=[32, 8, 16])
    assert plan.batches == [8, 16, 32] and plan.batch == 16 and not plan.equal_tokens
    assert plan.shape() == "1 widths x 1 horizons x 3 batches x 1 LRs = 3 points"
    assert [p.name for p in plan.points] == ["w64-s100-b8-lr3.9062e-03", "w64-s100-lr3.9062e-03",
                                             "w64-s100-b32-lr3.9062e-03"]
    assert [(p.batch, p.steps, p.tokens_per_step) for p in plan.points] == [(8, 100, 8 * 256), (16, 100, 16 * 256),
                                                                          (32, 100, 32 * 256)]
    assert plan.points[0].overrides[:4] == ["model.d_model=64", "train.steps=100", "train.global_batch_size=8",
                                            "optim.lr=0.00390625"]
    assert [load_config(plan.config, p.overrides).training_tokens() for p in plan.points] == [
        100 * b * 256 for b in (8, 16, 32)]  # in steps, a larger batch trains more tokens
    assert load_plan(sweep) == plan


def test_equal_tokens_scales_each_batchs_steps_to_the_configs_tokens(tmp_path, sbatch_calls, capsys):
    sweep = tmp_path / "s"
    assert main(["sweep", str(TINY), *BATCHED, "--widths", "64", "--lrs", "2^-8", "--steps", "100", "--batches",
                 "8,16,32", "--equal-tokens", "--out", str(sweep), "--slurm"]) == 0  # planned and submitted, not run
    assert capsys.readouterr().out.startswith(f"sweep {sweep.resolve()}: 1 widths x 1 horizons x 3 batches x 1 LRs "
                                              "= 3 points")
    plan = load_plan(sweep)
    assert plan.equal_tokens and plan.steps == [100]
    assert [p.name for p in plan.points] == ["w64-s200-b8-lr3.9062e-03", "w64-s100-lr3.9062e-03",
                                             "w64-s50-b32-lr3.9062e-03"]
    assert {load_config(plan.config, p.overrides).training_tokens() for p in plan.points} == {100 * 16 * 256}
    assert [plan.tokens(p.steps, p.batch) for p in plan.points] == [100 * 16 * 256] * 3
    growth = grow_sweep(TINY, [64], [2**-8], sweep, BATCHED, steps=[200], batches=[8, 16], equal_tokens=True)
    assert [p.name for p in growth.new_points] == ["w64-s400-b8-lr3.9062e-03", "w64-s200-lr3.9062e-03",
                                                   "w64-s100-b32-lr3.9062e-03"]  # the grid is the union
    assert growth.changes() == ["extended by 1 horizon (200): 3 new points, 3 kept", "this command leaves out 1 "
                                "horizon (100) and 1 batch (32) of the plan, which keeps their 3 points"]
    # growing it in steps would mix two meanings of a horizon
    with pytest.raises(ConfigError, match="^--equal-tokens: .* holds a sweep planned with --equal-tokens; grow it "
                                          "the same way"):
        grow_sweep(TINY, [64], [2**-8], sweep, BATCHED, steps=[100], batches=[64])


def test_a_batch_that_does_not_divide_fails_at_plan_time_in_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^--equal-tokens: batch 48 does not divide 100 steps x batch 16 = 1600 "
                                          "sequences into whole steps; choose batches that divide it$"):
        create_sweep(TINY, [64], [2**-8], tmp_path / "e", BATCHED, steps=[100], batches=[16, 48], equal_tokens=True)
    # tiny.yaml's micro batch of 16 does not divide a global batch of 8
    assert main(["sweep", str(TINY), "--widths", "64", "--lrs", "2^-8", "--batches", "8,16", "--out",
                 str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err == (
        "error: sweep point width 64, horizon 300, batch 8, LR 2^-8: train.global_batch_size=8 is not a multiple of "
        "train.micro_batch_size × processes = 16\n")
    assert not (tmp_path / "e").exists() and not (tmp_path / "m").exists()
    with pytest.raises(ConfigError, match="--batches: expected integers"):
        parse_batches("16,big")


def test_a_sweep_grows_by_a_batch_and_a_plan_from_before_the_batch_axis_reads_as_the_configs_batch(tmp_path):
    sweep = synthetic_sweep(tmp_path / "s", mup_like, widths=(128, 256), lrs="2^-8:2^-6:1")
    before = load_plan(sweep)
    old = json.loads((sweep / "plan.json").read_text())  # as planned before the batch axis
    for key in ("batches", "batch", "horizon"):
        del old[key]
    for point in old["points"]:
        del point["batch"], point["tokens_per_step"]
    (sweep / "plan.json").write_text(json.dumps(old))
    assert load_plan(sweep) == before
    growth = grow_sweep(TINY, [128, 256], parse_lrs("2^-8:2^-6:1"), sweep, batches=[16, 32])
    assert growth.changes() == ["extended by 1 batch (32): 6 new points, 6 kept"]
    assert growth.plan.points[:6] == before.points and growth.plan.batches == [16, 32]
    assert {(p.batch, p.tokens_per_step) for p in growth.new_points} == {(32, 32 * 256)}
    assert all(p.name.endswith(f"-b32-lr{p.lr:.4e}") for p in growth.new_points)


def test_depths_add_a_dimension_that_a_point_at_the_configs_depth_leaves_out_of_its_name(tmp_path, sbatch_calls,
                                                                                         capsys):
    sweep = tmp_path / "s"
    assert main(["sweep", str(TINY), "--widths", "64", "--lrs", "2^-8", "--depths", "8,2,4", "--out", str(sweep),
                 "--slurm"]) == 0  # planned and submitted, not run
    assert f"sweep {sweep}: 1 widths x 3 depths x 1 horizons x 1 LRs = 3 points" in capsys.readouterr().out
    plan = load_plan(sweep)
    assert (plan.depths, plan.depth) == ([2, 4, 8], 4)  # tiny.yaml's 4 layers are the config's depth
    assert [(p.name, p.depth) for p in plan.points] == [("w64-d2-s300-lr3.9062e-03", 2), ("w64-s300-lr3.9062e-03", 4),
                                                        ("w64-d8-s300-lr3.9062e-03", 8)]
    assert "model.n_layers=2" in plan.points[0].overrides
    assert not any(o.startswith("model.n_layers") for o in plan.points[1].overrides)
    growth = grow_sweep(TINY, [64], [2**-8], sweep, depths=[16])
    assert growth.changes() == ["extended by 1 depth (16): 1 new points, 3 kept",
                                "this command leaves out 3 depths (2, 4, 8) of the plan, which keeps their 3 points"]
    assert growth.new_points[0].name == "w64-d16-s300-lr3.9062e-03" and growth.plan.depths == [2, 4, 8, 16]
    with pytest.raises(ConfigError, match=r"^sweep point width 64, depth 8192, horizon 300, LR 2\^-8: model\.n_layers: "
                                          r"must lie in \(0, 2\^12\], got 8192"):
        grow_sweep(TINY, [64], [2**-8], sweep, depths=[8192])


def test_a_plan_from_before_the_depth_axis_reads_as_the_configs_depth(tmp_path):
    sweep = synthetic_sweep(tmp_path / "s", mup_like, widths=(128, 256), lrs="2^-8:2^-6:1")
    before = load_plan(sweep)
    old = json.loads((sweep / "plan.json").read_text())
    del old["depths"], old["depth"]
    for point in old["points"]:
        del point["depth"]
    (sweep / "plan.json").write_text(json.dumps(old))
    assert load_plan(sweep) == before and before.depths == [4]


@pytest.fixture
def sbatch_calls(tmp_path, monkeypatch):
    """A stand-in sbatch on PATH: it answers "Submitted job 42" and appends its arguments, a line per call, to the
    file returned."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "sbatch.calls"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho Submitted job 42\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_slurm_submits_one_array_task_per_point(tmp_path, sbatch_calls, capsys):
    """The plan is written and the array covers every point."""
    sweep = tmp_path / "s"
    assert main(["sweep", str(TINY), "--widths", "128,256,512", "--lrs", "2^-8:2^-6:1", "--out", str(sweep),
                 "--slurm", "--max-concurrent", "4", "train.steps=10"]) == 0
    assert "Submitted job 42" in capsys.readouterr().out
    args = sbatch_calls.read_text().split()
    assert args == ["--array=0-8%4", str(SWEEP_SCRIPT), str(sweep.resolve())]
    assert SWEEP_SCRIPT.is_file()
    assert len(load_plan(sweep).points) == 9 and not (sweep / "points").exists()  # nothing ran here


def test_slurm_submits_only_the_new_points_of_a_grown_sweep(tmp_path, sbatch_calls, capsys):
    """Tasks already submitted keep their indices; growing the sweep submits the appended ones, and a rerun
    without new points submits nothing but says how to rerun the unfinished ones."""
    sweep = tmp_path / "s"
    command = ["sweep", str(TINY), "--out", str(sweep), "--slurm", "--max-concurrent", "4", "train.steps=10"]
    assert main([*command, "--widths", "128,256", "--lrs", "2^-8:2^-6:1"]) == 0
    assert main([*command, "--widths", "128,256,512", "--lrs", "2^-8:2^-5:1"]) == 0
    assert "  extended by 1 width (512) and 1 LR (2^-5): 6 new points, 6 kept" in capsys.readouterr().out
    arrays = [line.split()[0] for line in sbatch_calls.read_text().splitlines()]
    assert arrays == ["--array=0-5%4", "--array=6-11%4"]
    plan = load_plan(sweep)
    assert [(p.width, math.log2(p.lr)) for p in plan.points[6:]] == [(128, -5), (256, -5), (512, -8), (512, -7),
                                                                    (512, -6), (512, -5)]
    for point in plan.points:
        if point.index not in (3, 4, 7):
            synthetic_result(plan, point, mup_like)
    assert main([*command, "--widths", "128", "--lrs", "2^-8"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"no new points to submit; 3 are not finished: once their tasks are over, rerun them with sbatch "
        f"--array=3-4,7%4 {SWEEP_SCRIPT} {sweep.resolve()}")
    assert len(sbatch_calls.read_text().splitlines()) == 2  # nothing submitted


@pytest.mark.slow
def test_smoke_sweep_runs_records_divergence_restarts_and_reports(tmp_path, capsys):
    cache, sweep = tmp_path / "cache", tmp_path / "sweep"
    run = small_run(tmp_path / "unused", cache, "train.steps=6", "train.eval_every=6", "model.base_width=32")
    overrides = [o for o in run if not o.startswith(("train.out_dir", "model.d_model"))]  # set by the sweep
    # 1e30 diverges at once: it must be recorded, not stop the sweep
    command = ["sweep", str(TINY), "--widths", "32,64", "--lrs", "2^-8,2^-6,1e30", "--out", str(sweep),
               *overrides]
    assert main(command) == 0
    assert "6 points run (2 diverged, 0 failed)" in capsys.readouterr().out
    plan = load_plan(sweep)
    results = {(p.width, p.lr): read_result(p) for p in plan.points}
    assert {r["status"] for (w, lr), r in results.items() if lr == 1e30} == {"diverged"}
    for (width, lr), r in results.items():
        if lr < 1:
            assert r["status"] == "ok" and r["steps"] == 6 and r["eval_loss"] < math.log(512) + 1
            assert r["train_loss"] > 0 and r["width"] == width

    # a restart runs only what has no result: one point by hand (as a Slurm task would), one by the sweep
    first, second = plan.points[0], plan.points[4]
    result_path(first).unlink()
    result_path(second).unlink()
    others = [p for p in plan.points if p not in (first, second)]
    stamps = [result_path(p).stat().st_mtime_ns for p in others]
    assert main(["sweep-point", str(sweep), "0"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok" and read_result(first)["index"] == 0
    assert main(command) == 0
    assert "1 points run (0 diverged, 0 failed)" in capsys.readouterr().out
    assert read_result(second)["status"] == "ok"
    assert stamps == [result_path(p).stat().st_mtime_ns for p in others]  # untouched

    report = build_report(plan)
    assert [o.width for o in report.optima] == [32, 64]
    assert all(o.best_lr < 1 for o in report.optima)


@pytest.mark.slow
def test_smoke_sweep_over_two_horizons_reports_a_horizon_fit_and_applies_it(tmp_path, capsys):
    """Real training on the embedded corpus: 2 widths x 2 horizons x 3 LRs, then report and apply-lr to a target
    4x longer than the longest horizon. Only the plumbing is checked here; scripts/horizon_evidence.sh measures."""
    cache, sweep = tmp_path / "cache", tmp_path / "sweep"
    run = small_run(tmp_path / "unused", cache, "train.eval_every=1000", "model.base_width=32", "optim.warmup_steps=2",
                    "train.global_batch_size=8")
    overrides = [o for o in run if not o.startswith(("train.out_dir", "model.d_model"))]
    assert main(["sweep", str(TINY), "--widths", "32,64", "--lrs", "2^-8:2^-4:2", "--steps", "4,8",
                 "--out", str(sweep), *overrides]) == 0
    assert "2 widths x 2 horizons x 3 LRs = 12 points" in capsys.readouterr().out
    assert main(["report", str(sweep), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {(o["width"], o["steps"]) for o in report["optima"]} == {(w, s) for w in (32, 64) for s in (4, 8)}
    assert report["tokens_per_step"] == 8 * 64 and "horizon_fit" in report
    target = tmp_path / "target.yaml"
    target.write_text(f"base: {sweep / 'config.yaml'}\nmodel:\n  d_model: 256\ntrain:\n  steps: 32\n")
    code = main(["apply-lr", str(sweep), str(target), "--force"])
    out = capsys.readouterr().out
    assert code == 0 and "optim.lr=" in out and ("extrapolated" in out or "one horizon" in out)
    assert "μ-transferred from sweep" in target.read_text()


def test_sweep_point_rejects_a_bad_index(tmp_path, capsys):
    create_sweep(TINY, [128], [0.01], tmp_path / "s")
    assert main(["sweep-point", str(tmp_path / "s"), "5"]) == 2
    assert "out of range: the sweep has 1 points" in capsys.readouterr().err
