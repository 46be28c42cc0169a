"""The coord check: activation sizes flat in width under μP, growing under SP."""

import json
from pathlib import Path

import pytest

from pretrain.config import load_config
from pretrain.transfer.coord_check import coord_check, write_coord_check
from tests.helpers import ROOT

pytestmark = pytest.mark.slow

WIDTHS = [32, 64, 128, 256]


def check(parametrization: str, cache: Path) -> dict:
    """8 steps at a constant 2^-7 (no warmup), 2 seeds, a 2-layer model with heads of 16 and a squared-ReLU
    MLP (its width is exactly 4·d_model, so every hidden matrix scales with width as μP assumes)."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        f"model.parametrization={parametrization}", "model.mlp=relu2", "model.n_layers=2",
        "model.head_dim=16", "model.base_width=32", "optim.lr=2^-7", "data.max_documents=150",
        "data.vocab_size=512", "data.seq_len=64", f"data.cache_dir={cache}", "train.micro_batch_size=8"])
    return coord_check(cfg, WIDTHS, steps=8, seeds=2)


def test_mup_is_flat_and_sp_grows(cache, tmp_path):
    mup, sp = check("mup", cache), check("sp", cache)
    names = ["embedding", "attn.0", "mlp.0", "block.0", "attn.1", "mlp.1", "block.1", "logits"]
    assert list(mup["activations"]) == names
    assert len(mup["activations"]["logits"]) == len(WIDTHS) and len(mup["activations"]["logits"][0]) == 8
    end = {name: slopes[-1] for name, slopes in mup["slopes"].items()}
    sp_end = {name: slopes[-1] for name, slopes in sp["slopes"].items()}
    # Slopes are log2(mean |activation|) per doubling of width after 8 steps. Under μP every update is O(1)
    # in width, so what is left is finite-width noise: measured |slope| <= 0.1, bound 0.25. Under SP the
    # hidden updates grow like width^(1/2..1) with Adam: measured +0.84..+1.0 for the MLP and block outputs,
    # so 0.5 leaves a margin of ~1.7x and is twice the μP bound; the logits grow too (measured +0.48).
    assert max(abs(s) for s in end.values()) < 0.25, end
    assert min(sp_end[n] for n in ("mlp.0", "block.0", "mlp.1", "block.1")) > 0.5, sp_end
    assert sp_end["logits"] > 0.25, sp_end
    assert abs(sp_end["embedding"]) < 0.25  # the embedding's LR is α in both: no growth
    json_path, png_path = write_coord_check(sp, tmp_path / "out")
    assert json.loads(json_path.read_text())["slopes"]["logits"][-1] == pytest.approx(sp_end["logits"])
    assert png_path.stat().st_size > 10_000
