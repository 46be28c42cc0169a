"""HF export: vanilla transformers reproduces our logits from really trained checkpoints (any ZeRO stage),
generates (padded batches too), and tokenizes like us; the files' modes; consolidation, load_model and the CLI's
refusals."""

import contextlib
import copy
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from pretrain import load_model
from pretrain.cli import main
from pretrain.config import load_config
from pretrain.fileio import checksum
from pretrain.training.checkpoint import latest_checkpoint, load_consolidated_state_dict
from tests.helpers import ROOT, pretrain, small_run

pytestmark = pytest.mark.slow

# Vanilla Llama computes the same function in another order (its own attention, RoPE and matmuls), so its fp32
# logits may differ from ours by about our own fp32 rounding error, measured per model as the distance of our
# fp32 logits from the same model in float64 (measured: HF within 0.8x of it on both models).
MARGIN = 4
GQA_SP = ["model.parametrization=sp", "model.n_kv_heads=2", "model.norm_gains=true"]
# Four layers at a base depth of one: every residual branch is scaled by 1/4, which the export folds into o_proj
# and down_proj.
COMPLETEP = ["model.depth_parametrization=completep", "model.base_depth=1", "model.n_layers=4"]
# The same 16 sequences per step either way: one process accumulating 2 micro batches, or 2 ranks of ZeRO-3.
BATCH = ["train.steps=6", "train.micro_batch_size=8", "train.global_batch_size=16"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Train four tiny models a few steps (so the zero-init query is no longer zero and attention not
    uniform): MHA μP with ZeRO-0, also under CompleteP; GQA SP with gains, ZeRO-0 in one process and ZeRO-3 over
    two."""
    root = tmp_path_factory.mktemp("runs")
    cache = root / "cache"
    pretrain("train", "configs/tiny.yaml", *small_run(root / "mha_mup", cache, *BATCH))
    pretrain("train", "configs/tiny.yaml", *small_run(root / "mha_completep", cache, *BATCH, *COMPLETEP))
    pretrain("train", "configs/tiny.yaml", *small_run(root / "gqa_sp", cache, *BATCH, *GQA_SP))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    zero3 = small_run(root / "gqa_sp_zero3", cache, *BATCH, *GQA_SP, "deepspeed.zero_stage=3")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run([*torchrun, "-m", "pretrain", "train", "configs/tiny.yaml", *zero3],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {name: latest_checkpoint(root / name / "checkpoints")
            for name in ("mha_mup", "mha_completep", "gqa_sp", "gqa_sp_zero3")}


def export(checkpoint: Path, out: Path, *flags: str) -> Path:
    assert main(["export-hf", str(checkpoint), str(out), *flags]) == 0
    return out


def max_logit_diff(hf_model, ours, tokens: torch.Tensor) -> float:
    with torch.no_grad():
        return (hf_model(tokens).logits - ours(tokens)).abs().max().item()


def tolerance(ours, tokens: torch.Tensor) -> float:
    """MARGIN times our own fp32 error on these logits (against the same weights evaluated in float64)."""
    with torch.no_grad():
        exact = copy.deepcopy(ours).double()(tokens)
        return MARGIN * (ours(tokens).double() - exact).abs().max().item()


def random_tokens(vocab: int, batch: int = 3, seq: int = 64) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))


def greedy(ours, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    """`prompt` followed by our model's `steps` greedy tokens (past EOS too)."""
    with torch.no_grad():
        for _ in range(steps):
            prompt = torch.cat([prompt, ours(prompt)[:, -1:].argmax(-1)], dim=1)
    return prompt


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("name", ["mha_mup", "mha_completep", "gqa_sp", "gqa_sp_zero3"])
def test_vanilla_llama_reproduces_our_logits(runs, tmp_path, name):
    out = export(runs[name], tmp_path / "hf", "--dtype", "fp32", "--max-shard-size", "300KB")
    ours = load_model(runs[name])
    hf_model = AutoModelForCausalLM.from_pretrained(out)
    assert type(hf_model).__name__ == "LlamaForCausalLM" and hf_model.dtype == torch.float32
    assert ours.blocks[0].attn.wq.weight.abs().max() > 0.01  # attention is not uniform
    tokens = random_tokens(ours.vocab_size)
    diff, limit = max_logit_diff(hf_model, ours, tokens), tolerance(ours, tokens)
    print(f"{name}: max abs logit difference {diff:.2e} (limit {limit:.2e})")
    assert 0 < limit < 1e-4 and diff <= limit

    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert set(index["weight_map"]) == set(hf_model.state_dict())
    config = json.loads((out / "config.json").read_text())
    assert config["num_key_value_heads"] == ours.cfg.kv_heads and config["tie_word_embeddings"] is False
    assert (out / "generation_config.json").exists()


def test_generate_greedily_continues_like_our_model(runs, tmp_path):
    out = export(runs["mha_mup"], tmp_path / "hf", "--dtype", "fp32")
    ours = load_model(runs["mha_mup"])
    hf_model = AutoModelForCausalLM.from_pretrained(out)
    prompt = random_tokens(ours.vocab_size, batch=1, seq=8)
    generated = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8,
                                  do_sample=False, eos_token_id=None)
    assert torch.equal(generated, greedy(ours, prompt, 8))


def test_a_padded_batch_scores_and_generates_like_each_prompt_alone(runs, tmp_path):
    """The exported tokenizer pads with EOS on the left, and the pad id is in generation_config.json only (as
    config.pad_token_id, Llama would make the EOS embedding row a padding_idx)."""
    out = export(runs["mha_mup"], tmp_path / "hf", "--dtype", "fp32")
    tokenizer = AutoTokenizer.from_pretrained(out)
    hf_model = AutoModelForCausalLM.from_pretrained(out)
    ours = load_model(runs["mha_mup"])
    config = json.loads((out / "config.json").read_text())
    seq_len = load_config(runs["mha_mup"] / "config.yaml").data.seq_len
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "left"
    assert len(tokenizer) <= config["vocab_size"] == ours.vocab_size  # no token the model was not trained with
    assert config["pad_token_id"] is None and hf_model.generation_config.pad_token_id == tokenizer.eos_token_id
    assert config["max_position_embeddings"] == tokenizer.model_max_length == seq_len

    texts = ["short", "a longer text"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    alone = [tokenizer(text, return_tensors="pt")["input_ids"] for text in texts]
    pads = batch["input_ids"].shape[1] - alone[0].shape[1]
    assert pads > 0 and alone[1].shape[1] == batch["input_ids"].shape[1]
    assert batch["attention_mask"][0].tolist() == [0] * pads + [1] * alone[0].shape[1]
    assert (batch["input_ids"][0, :pads] == tokenizer.eos_token_id).all()

    with torch.no_grad():  # masked, the padding changes nothing (unmasked, it moves these logits by ~0.7)
        padded = hf_model(**batch).logits
        diff = max((padded[i, -len(ids[0]):] - ours(ids)[0]).abs().max().item() for i, ids in enumerate(alone))
    assert diff <= tolerance(ours, random_tokens(ours.vocab_size))

    generated = hf_model.generate(**batch, max_new_tokens=8, do_sample=False, eos_token_id=None)
    for row, prompt in zip(generated, alone):
        assert torch.equal(row[-(prompt.shape[1] + 8):], greedy(ours, prompt, 8)[0])


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_exported_files_have_the_modes_of_new_files(runs, tmp_path, mask):
    """The weights included: safetensors writes them to a mkstemp file (mode 600) and renames it."""
    with umask(mask):
        (tmp_path / "new_file").touch()
        (tmp_path / "new_dir").mkdir()
        out = export(runs["mha_mup"], tmp_path / "hf", "--max-shard-size", "300KB")
    new_file, new_dir = (stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("new_file", "new_dir"))
    exported = [out, *out.rglob("*")]
    assert sum(p.suffix == ".safetensors" for p in exported) > 1
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in exported} == {
        p.name: new_dir if p.is_dir() else new_file for p in exported}


def test_a_wrong_rope_layout_or_a_missing_mup_fold_is_caught(runs, tmp_path):
    """The logits test is sensitive to both silent conversion errors: q/k rows in the interleaved RoPE layout
    instead of the half-split one, and a q_proj without the μP attention-scale factor."""
    out = export(runs["mha_mup"], tmp_path / "hf", "--dtype", "fp32")
    ours = load_model(runs["mha_mup"])
    tokens = random_tokens(ours.vocab_size)
    limit = tolerance(ours, tokens)
    D = ours.cfg.head_dim
    interleave = torch.stack([torch.arange(D // 2), torch.arange(D // 2) + D // 2], dim=1).flatten()

    hf_model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        for layer in hf_model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                w = proj.weight.view(-1, D, proj.weight.shape[1])
                proj.weight.copy_(w[:, interleave].reshape_as(proj.weight))
    assert max_logit_diff(hf_model, ours, tokens) > 100 * limit

    hf_model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        for layer in hf_model.model.layers:
            layer.self_attn.q_proj.weight.mul_(D**0.5)  # undo the 1/D vs 1/sqrt(D) fold
    assert max_logit_diff(hf_model, ours, tokens) > 100 * limit


def test_a_missing_residual_fold_is_caught(runs, tmp_path):
    """The logits test is sensitive to the CompleteP fold too: o_proj and down_proj without the 1/m_L of the
    residual branches they end."""
    out = export(runs["mha_completep"], tmp_path / "hf", "--dtype", "fp32")
    ours = load_model(runs["mha_completep"])
    assert [block.residual for block in ours.blocks] == [0.25] * 4
    tokens = random_tokens(ours.vocab_size)
    hf_model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        for layer in hf_model.model.layers:
            layer.self_attn.o_proj.weight.mul_(4)
            layer.mlp.down_proj.weight.mul_(4)
    assert max_logit_diff(hf_model, ours, tokens) > 100 * tolerance(ours, tokens)


def test_exported_tokenizer_encodes_and_decodes_like_ours(runs, tmp_path):
    out = export(runs["mha_mup"], tmp_path / "hf")
    ours = Tokenizer.from_file(str(runs["mha_mup"] / "tokenizer.json"))
    theirs = AutoTokenizer.from_pretrained(out)
    eos = json.loads((out / "config.json").read_text())["eos_token_id"]
    assert theirs.eos_token == "<|endoftext|>"
    assert theirs.eos_token_id == eos == ours.token_to_id("<|endoftext|>")
    for text in ["def f(x):\n    return x ** 2  # square\n", "naïve café — 你好 🙂",
                 "  tabs\tand\n\nnewlines ", "first document<|endoftext|>second"]:
        ids = ours.encode(text).ids
        assert theirs(text)["input_ids"] == ids
        assert theirs.decode(ids, skip_special_tokens=True) == ours.decode(ids)
    assert theirs.decode(ours.encode("x = 1\n").ids) == "x = 1\n"


def test_bf16_export_is_one_unsharded_file(runs, tmp_path):
    out = export(runs["gqa_sp"], tmp_path / "hf")  # defaults: bf16, 5GB shards
    assert sorted(p.name for p in out.glob("model*")) == ["model.safetensors"]
    hf_model = AutoModelForCausalLM.from_pretrained(out)
    assert hf_model.dtype == torch.bfloat16
    ours = load_model(runs["gqa_sp"])
    tokens = random_tokens(ours.vocab_size)
    with torch.no_grad():
        scale = ours(tokens).abs().max().item()
    assert max_logit_diff(hf_model.float(), ours, tokens) < 0.05 * scale  # bf16 rounding only


def test_consolidation_of_two_rank_zero3_matches_single_process(runs):
    single = load_consolidated_state_dict(runs["gqa_sp"])
    zero3 = load_consolidated_state_dict(runs["gqa_sp_zero3"])
    assert sorted(single) == sorted(zero3)
    for name, weight in single.items():
        assert zero3[name].dtype == torch.float32 and zero3[name].shape == weight.shape
        torch.testing.assert_close(zero3[name], weight, atol=1e-3, rtol=0, msg=name)


def test_load_model_takes_a_run_dir_and_maps_tokens_to_logits(runs):
    model = load_model(runs["mha_mup"].parents[1])  # the run dir: its newest checkpoint
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert model(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, model.vocab_size)


def error_line(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


def test_bad_inputs_give_one_clear_line(runs, tmp_path, capsys):
    ckpt = runs["mha_mup"]
    out = str(tmp_path / "hf")
    assert "no such checkpoint" in error_line(capsys, "export-hf", str(tmp_path / "missing"), out)
    assert "trainer.json is missing" in error_line(capsys, "export-hf", str(tmp_path), out)

    partial = shutil.copytree(ckpt, tmp_path / "checkpoints" / f".tmp-{ckpt.name}")
    assert "incomplete checkpoint" in error_line(capsys, "export-hf", str(partial), out)
    no_weights = shutil.copytree(ckpt, tmp_path / "no_weights")
    (no_weights / "ds" / "mp_rank_00_model_states.pt").unlink()
    assert "mp_rank_00_model_states.pt: missing" in error_line(capsys, "export-hf", str(no_weights), out)
    lost_rank = shutil.copytree(runs["gqa_sp_zero3"], tmp_path / "lost_rank")
    (lost_rank / "ds" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    assert "zero_pp_rank_1_mp_rank_00_optim_states.pt: missing" in error_line(capsys, "export-hf", str(lost_rank), out)

    relu = shutil.copytree(ckpt, tmp_path / "relu")  # as if trained with a ReLU MLP: its checksums agree
    config = relu / "config.yaml"
    config.write_text(config.read_text().replace("mlp: swiglu", "mlp: relu"))
    checksums = json.loads((relu / "checksums.json").read_text())
    checksums["config.yaml"] = checksum(config)
    (relu / "checksums.json").write_text(json.dumps(checksums))
    assert "model.mlp=relu" in error_line(capsys, "export-hf", str(relu), out)

    export(ckpt, Path(out))
    assert "pass --overwrite" in error_line(capsys, "export-hf", str(ckpt), out)
    assert "is not a size" in error_line(capsys, "export-hf", str(ckpt), out, "--overwrite",
                                         "--max-shard-size", "5XB")
    export(ckpt, Path(out), "--overwrite")
    assert not list(tmp_path.glob(".tmp-*"))


# The paper's new options that vanilla Llama holds: biases on every projection (its attention_bias and mlp_bias)
# and scalar gains (written as vectors), trained under ZeRO-1 with Lion, with a query drawn like the keys so that
# its bias trains from the first step.
PAPER_OPTIONS = ["model.bias=true", "model.norm_gains=scalar", "model.zero_query=false", "optim.name=lion",
                 "optim.lr=0.005", "deepspeed.zero_stage=1"]


@pytest.fixture(scope="module")
def paper_options_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paper_options")
    pretrain("train", "configs/tiny.yaml", *small_run(root / "run", root / "cache", *BATCH, *PAPER_OPTIONS))
    return latest_checkpoint(root / "run" / "checkpoints")


def test_biases_and_scalar_gains_export_to_a_llama_with_our_logits(paper_options_run, tmp_path):
    """In fp32 from ZeRO-1, whose consolidated weights are views into flat buffers until copied out."""
    out = export(paper_options_run, tmp_path / "hf", "--dtype", "fp32")
    ours = load_model(paper_options_run)
    config = json.loads((out / "config.json").read_text())
    assert config["attention_bias"] is True and config["mlp_bias"] is True
    hf_model = AutoModelForCausalLM.from_pretrained(out)
    layer = hf_model.model.layers[0]
    assert layer.self_attn.q_proj.bias.abs().max() > 0 and layer.mlp.down_proj.bias.abs().max() > 0  # trained
    gain = ours.blocks[0].attn_norm.weight
    assert gain.shape == (1,) and torch.equal(layer.input_layernorm.weight, gain.expand(ours.cfg.d_model))
    tokens = random_tokens(ours.vocab_size)
    diff, limit = max_logit_diff(hf_model, ours, tokens), tolerance(ours, tokens)
    assert 0 < limit < 1e-4 and diff <= limit
    with torch.no_grad():  # the query's bias takes the μP fold with its weights: without it, other logits
        for layer in hf_model.model.layers:
            layer.self_attn.q_proj.bias.mul_(ours.cfg.head_dim**0.5)
    assert max_logit_diff(hf_model, ours, tokens) > 100 * limit
