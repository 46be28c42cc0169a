"""The coord check: activation sizes flat in width under μP, growing under SP; flat in depth under CompleteP,
growing without it; its progress and its verdict."""

import json
import re
from pathlib import Path

import pytest

from pretrain.cli import main
from pretrain.config import load_config
from pretrain.transfer.coord_check import FLAT_SLOPE, coord_check, format_verdicts, judge, summary, write_coord_check
from tests.helpers import ROOT

WIDTHS = [32, 64, 128, 256]
NAMES = ["embedding", "attn.0", "mlp.0", "block.0", "attn.1", "mlp.1", "block.1", "logits"]


def overrides(parametrization: str, cache: Path) -> list[str]:
    """A 2-layer model with heads of 16 and a squared-ReLU MLP (its width is exactly 4·d_model, so every hidden
    matrix scales with width as μP assumes), at a constant 2^-7."""
    return [f"model.parametrization={parametrization}", "model.mlp=relu2", "model.n_layers=2", "model.head_dim=16",
            "model.base_width=32", "optim.lr=2^-7", "data.max_documents=150", "data.vocab_size=512",
            "data.seq_len=64", f"data.cache_dir={cache}", "train.micro_batch_size=8"]


def check(parametrization: str, cache: Path) -> dict:
    """8 steps, 2 seeds."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides(parametrization, cache))
    return coord_check(cfg, WIDTHS, steps=8, seeds=2, progress=False)


@pytest.mark.slow
def test_mup_is_flat_and_sp_grows(cache, tmp_path):
    mup, sp = check("mup", cache), check("sp", cache)
    assert list(mup["activations"]) == list(mup["verdicts"]) == NAMES
    assert len(mup["activations"]["logits"]) == len(WIDTHS) and len(mup["activations"]["logits"][0]) == 8
    end = {name: v["slope"] for name, v in mup["verdicts"].items()}
    sp_end = {name: v["slope"] for name, v in sp["verdicts"].items()}
    # Slopes are log2(mean |activation|) per doubling of width after 8 steps. Under μP every update is O(1)
    # in width, so what is left is finite-width noise: measured |slope| <= 0.08, bound 0.25. Under SP the
    # hidden updates grow like width^(1/2..1) with Adam: measured +1.0..+1.08 for the MLP and block outputs,
    # so 0.5 leaves a margin of 2x and is twice the μP bound; the logits grow too (measured +0.51).
    assert max(abs(s) for s in end.values()) < 0.25, end
    assert min(sp_end[n] for n in ("mlp.0", "block.0", "mlp.1", "block.1")) > 0.5, sp_end
    assert sp_end["logits"] > 0.25, sp_end
    assert abs(sp_end["embedding"]) < 0.25  # the embedding's LR is α in both: no growth
    assert mup["summary"].endswith(": passes") and all(v["verdict"] == "flat" for v in mup["verdicts"].values())
    assert sp["verdicts"]["logits"]["verdict"] == "grows" and "as SP predicts" in sp["summary"]
    # The curves are geometric means over seeds, so their slope is the seeds' mean slope.
    assert sp["slopes"]["logits"][-1] == pytest.approx(sp_end["logits"])
    assert len(sp["verdicts"]["logits"]["seed_slopes"]) == 2 and sp["verdicts"]["logits"]["stderr"] > 0
    json_path, png_path = write_coord_check(sp, tmp_path / "out")
    written = json.loads(json_path.read_text())
    assert written["threshold"] == FLAT_SLOPE and written["verdicts"] == sp["verdicts"]
    assert png_path.stat().st_size > 10_000


@pytest.mark.slow
def test_the_cli_shows_progress_and_a_verdict(cache, tmp_path, capsys):
    out = tmp_path / "cc"
    assert main(["coord-check", str(ROOT / "configs" / "tiny.yaml"), "--widths", "64,32", "--steps", "2",
                 "--seeds", "2", "--out", str(out), *overrides("mup", cache)]) == 0
    printed = capsys.readouterr()
    # Progress on stderr (a tqdm bar: one tick per step, with the run in progress and the time elapsed).
    for width in (32, 64):
        for seed in (0, 1):
            assert f"width {width}, seed {seed}" in printed.err
    assert re.search(r"coord-check μP: 100%.*\| 8/8 \[\d\d:\d\d<", printed.err), printed.err
    lines = printed.out.splitlines()
    assert lines[0] == f"wrote {out / 'coord_check.json'}, {out / 'coord_check.png'}"
    assert lines[1] == "log2 mean |activation| per doubling of width at step 1, the last (mean ± s.e. over 2 seeds):"
    rows = lines[2:-1]
    assert [row.split()[0] for row in rows] == NAMES
    for row in rows:
        assert re.fullmatch(r"  \S+ +[+-]\d\.\d\d ± \d\.\d\d +(flat|grows|shrinks)(, within 2 s\.e\. of the "
                            r"threshold)?", row), row
    assert re.fullmatch(r"μP coordinate check: \d of 8 quantities flat in width \(\|slope\| < 0\.25 log2 per "
                        r"doubling\): (passes|fails, μP predicts all flat \(.+\))", lines[-1]), lines[-1]
    assert json.loads((out / "coord_check.json").read_text())["widths"] == [32, 64]  # sorted: narrowest first


DEPTHS = [2, 4, 8, 16]
DEPTH_NAMES = ["embedding", "attn.first", "mlp.first", "attn.last", "mlp.last", "block.middle", "block.last", "logits"]


def depth_check(depth_parametrization: str, cache: Path) -> dict:
    """The model of `check` at width 64 (its base width) and depths 2..16 (base depth 2), at 2^-6, 8 steps, 2 seeds."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [*overrides("mup", cache), "model.d_model=64",
                                                       "model.base_width=64", "optim.lr=2^-6", "model.base_depth=2",
                                                       f"model.depth_parametrization={depth_parametrization}"])
    return coord_check(cfg, DEPTHS, steps=8, seeds=2, progress=False, axis="depth")


@pytest.mark.slow
def test_completep_is_flat_in_depth_and_none_grows(cache, tmp_path):
    completep, none = depth_check("completep", cache), depth_check("none", cache)
    assert list(completep["verdicts"]) == [*DEPTH_NAMES, *(f"Δ{name}" for name in DEPTH_NAMES)]
    assert completep["depths"] == DEPTHS and completep["axis"] == "depth" and "widths" not in completep
    flat = {name: v["slope"] for name, v in completep["verdicts"].items()}
    grows = {name: v["slope"] for name, v in none["verdicts"].items()}
    # log2 per doubling of depth after 8 steps. CompleteP: every branch and the stream O(1) at any depth (measured
    # |slope| <= 0.10). Without it every block adds its whole branch: the stream halfway and at the end, and its
    # change since init, grow by +1.26..+1.34 per doubling (measured), so 0.8 leaves a margin of 1.6x and is over
    # three times the flat bound.
    assert max(abs(slope) for slope in flat.values()) < 0.25, flat
    assert min(grows[n] for n in ("block.middle", "block.last", "Δblock.middle", "Δblock.last")) > 0.8, grows
    assert completep["summary"] == ("CompleteP coordinate check: 16 of 16 quantities flat in depth (|slope| < 0.25 "
                                    "log2 per doubling): passes")
    assert ": not flat, as depth_parametrization none predicts (grows: " in none["summary"]
    text = format_verdicts(none)
    assert text.startswith("log2 mean |activation| (Δ: its change since init, on the first batch) per doubling of "
                           "depth at step 7, the last (mean ± s.e. over 2 seeds):")
    _, png_path = write_coord_check(none, tmp_path / "out")
    assert png_path.stat().st_size > 10_000


def test_widths_and_depths_together_or_one_depth_are_refused_before_any_training(capsys):
    assert main(["coord-check", str(ROOT / "configs" / "tiny.yaml"), "--widths", "64,128", "--depths", "2,4"]) == 2
    assert "--widths and --depths: pass one; a coordinate check varies one axis at a time" in capsys.readouterr().err
    assert main(["coord-check", str(ROOT / "configs" / "tiny.yaml"), "--depths", "4,4"]) == 2
    assert "--depths: a slope against depth needs two depths or more, got '4,4'" in capsys.readouterr().err


def test_one_width_is_refused_before_any_training(capsys):
    assert main(["coord-check", str(ROOT / "configs" / "tiny.yaml"), "--widths", "64,64"]) == 2
    assert "--widths: a slope against width needs two widths or more, got '64,64'" in capsys.readouterr().err


def test_flat_slopes_pass_under_mup():
    verdicts = judge({"attn.0": [0.02, -0.03, 0.01], "mlp.0": [-0.2, -0.15, -0.22], "logits": [0.1, 0.12, 0.08]})
    assert [v["verdict"] for v in verdicts.values()] == ["flat"] * 3
    assert verdicts["mlp.0"]["slope"] == pytest.approx(-0.19)
    assert verdicts["mlp.0"]["stderr"] == pytest.approx(0.0208, abs=1e-4)  # std 0.036 over sqrt(3) seeds
    assert not verdicts["attn.0"]["near_threshold"]
    assert summary("mup", verdicts) == ("μP coordinate check: 3 of 3 quantities flat in width (|slope| < 0.25 log2 "
                                        "per doubling): passes")


def test_growth_fails_under_mup_and_is_expected_under_sp():
    verdicts = judge({"embedding": [0.0, 0.0], "mlp.0": [0.9, 1.0], "logits": [0.5, 0.45], "attn.1": [-0.6, -0.5]})
    assert {n: v["verdict"] for n, v in verdicts.items()} == {"embedding": "flat", "mlp.0": "grows",
                                                              "logits": "grows", "attn.1": "shrinks"}
    tail = "(grows: mlp.0, logits; shrinks: attn.1)"
    assert summary("mup", verdicts) == ("μP coordinate check: 1 of 4 quantities flat in width (|slope| < 0.25 log2 "
                                        f"per doubling): fails, μP predicts all flat {tail}")
    assert summary("sp", verdicts).endswith(f"): not flat, as SP predicts {tail}")
    assert summary("sp", judge({"mlp.0": [0.1, 0.2]})).endswith("nothing grows, unlike SP; too few steps or too "
                                                                "small an LR to tell it from μP")


def test_the_threshold_is_stated_and_the_seeds_spread_can_leave_it_open():
    assert judge({"mlp.1": [0.35, 0.45]}, threshold=0.5)["mlp.1"]["verdict"] == "flat"
    assert "(|slope| < 0.5 log2 per doubling)" in summary("mup", judge({"mlp.1": [0.4]}, 0.5), 0.5)
    near = judge({"mlp.1": [0.15, 0.3, 0.36]})["mlp.1"]  # 0.27 ± 0.06
    assert near["verdict"] == "grows" and near["near_threshold"]
    one_seed = judge({"mlp.1": [0.26]})["mlp.1"]
    assert one_seed["stderr"] is None and not one_seed["near_threshold"]
