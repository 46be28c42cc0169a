"""Export a checkpoint as a Hugging Face `LlamaForCausalLM` directory that vanilla transformers loads.

Our model is a Llama up to four μP details, each folded into plain weights so that no custom code is needed:
- attention logits: Llama scales q·k by 1/sqrt(D); ours by `mup.attention_scale` (1/D under μP). Attention
  is linear in q, so q_proj is multiplied by the ratio (`mup.hf_query_fold`: D^-1/2 under μP, 1 under SP).
- residual branches: CompleteP multiplies each by `mup.residual_multiplier` (1/m_L) before it joins the stream;
  a branch ends in o_proj or down_proj, which are linear, so their weights (and biases) take the factor.
- RMSNorm gains: by default our norms have none; Llama's are written as the gains' init, ones (same eps). A
  scalar gain (`norm_gains: scalar`) multiplies every feature alike: it is written as a vector of its value.
- the readout is untied from the embedding, as `tie_word_embeddings=False` says.
RoPE already uses Llama's half-split layout with the same inverse frequencies, and SwiGLU is
silu(gate)·up, Llama's MLP. A ReLU-family MLP has no Llama equivalent and is refused. Biases (`model.bias`)
sit on exactly the projections Llama's `attention_bias` (q, k, v, o) and `mlp_bias` (gate, up, down) add them
to; the query's bias takes the query fold with its weights.

`max_position_embeddings` (and the tokenizer's `model_max_length`) is the training sequence length: RoPE has no
position table, so longer inputs run, but nothing beyond that length was trained or measured.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer

from ..config import Config, load_config
from ..data.tokenizer import eos_token
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_output
from ..model import mup
from ..outputs import Kind, check_output, claim
from ..training.checkpoint import load_consolidated_state_dict, resolve_checkpoint

if TYPE_CHECKING:
    from transformers import LlamaConfig, PreTrainedTokenizerFast

# Our parameter names -> Llama's; {i} is the layer index. The one table the export reads.
KEY_MAP = {
    "embed.weight": "model.embed_tokens.weight",
    "blocks.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blocks.{i}.attn.wq.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blocks.{i}.attn.wk.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blocks.{i}.attn.wv.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blocks.{i}.attn.wo.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blocks.{i}.mlp_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blocks.{i}.mlp.w_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blocks.{i}.mlp.w_in.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blocks.{i}.mlp.w_out.weight": "model.layers.{i}.mlp.down_proj.weight",
    # model.bias only
    "blocks.{i}.attn.wq.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blocks.{i}.attn.wk.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blocks.{i}.attn.wv.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "blocks.{i}.attn.wo.bias": "model.layers.{i}.self_attn.o_proj.bias",
    "blocks.{i}.mlp.w_gate.bias": "model.layers.{i}.mlp.gate_proj.bias",
    "blocks.{i}.mlp.w_in.bias": "model.layers.{i}.mlp.up_proj.bias",
    "blocks.{i}.mlp.w_out.bias": "model.layers.{i}.mlp.down_proj.bias",
    "norm.weight": "model.norm.weight",
    "readout.weight": "lm_head.weight",
}
_QUERY = {"blocks.{i}.attn.wq.weight", "blocks.{i}.attn.wq.bias"}
_BRANCH_ENDS = {f"blocks.{{i}}.{linear}.{kind}" for linear in ("attn.wo", "mlp.w_out") for kind in ("weight", "bias")}
_GAINS = {"blocks.{i}.attn_norm.weight", "blocks.{i}.mlp_norm.weight", "norm.weight"}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def to_hf(state: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """Our state dict as Llama's, with the μP attention scale folded into q_proj, the residual multiplier into
    o_proj and down_proj, missing gains as ones and scalar gains as vectors."""
    _require_llama(cfg)
    m = cfg.model
    folds = {**dict.fromkeys(_QUERY, mup.hf_query_fold(m)), **dict.fromkeys(_BRANCH_ENDS, mup.residual_multiplier(m))}
    hf, used = {}, set()
    for ours, theirs in KEY_MAP.items():
        if ours.endswith(".bias") and not m.bias:
            continue  # Llama without attention_bias and mlp_bias
        for i in range(m.n_layers) if "{i}" in ours else [None]:
            name = ours.format(i=i)
            if ours in _GAINS and not m.norm_gains:
                weight = mup.absent_gain(m)
            elif name in state:
                weight = state[name].float()
                used.add(name)
            else:
                raise CheckpointError(f"the checkpoint has no {name}; it does not match its config.yaml")
            if ours in _GAINS:
                weight = weight.expand(m.d_model).clone()  # a scalar gain: its value on every feature
            hf[theirs.format(i=i)] = weight * folds[ours] if ours in folds else weight
    unexpected = sorted(set(state) - used)
    if unexpected:
        raise CheckpointError(f"weights with no Llama equivalent: {', '.join(unexpected)}")
    return hf


def llama_config(cfg: Config, eos_token_id: int, dtype: str) -> LlamaConfig:
    from transformers import LlamaConfig

    m = cfg.model
    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=m.d_model, intermediate_size=m.ffn_dim,
        num_hidden_layers=m.n_layers, num_attention_heads=m.n_heads, num_key_value_heads=m.kv_heads,
        head_dim=m.head_dim, hidden_act="silu", rms_norm_eps=m.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": m.rope_base},
        max_position_embeddings=cfg.data.seq_len,  # the trained context (module docstring)
        tie_word_embeddings=False, attention_bias=m.bias, mlp_bias=m.bias,
        bos_token_id=eos_token_id, eos_token_id=eos_token_id,  # documents are separated by EOS alone
        architectures=["LlamaForCausalLM"], dtype=DTYPES[dtype],
    )


def export_tokenizer(path: Path, seq_len: int) -> PreTrainedTokenizerFast:
    """The run's tokenizer as the export saves it. Batches are padded with EOS: a new pad token would need an
    embedding row the model never trained, and padded positions are masked by `attention_mask` anyway. Padding
    goes on the left, so that `generate` continues every prompt from its own last token. All of it is passed to
    the constructor, as only constructor arguments and special tokens are saved in tokenizer_config.json."""
    from transformers import PreTrainedTokenizerFast

    eos = eos_token(Tokenizer.from_file(str(path)))
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=eos, pad_token=eos, padding_side="left",
                                   model_max_length=seq_len)


def export_hf(checkpoint: Path, out: str | Path, dtype: str = "bf16", max_shard_size: str = "5GB",
              overwrite: bool = False) -> Path:
    """Write `out` as a LlamaForCausalLM directory: sharded safetensors (with an index when there is more
    than one shard), config.json, generation_config.json and the tokenizer. Returns the checkpoint used.
    `out` follows `pretrain.outputs`' rule: with `overwrite`, only an earlier export is replaced."""
    from huggingface_hub import save_torch_state_dict
    from transformers import GenerationConfig

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype: {dtype!r} is not allowed; choose one of: {', '.join(DTYPES)}")
    shard_bytes = parse_size(max_shard_size)
    source, checkpoint = checkpoint, resolve_checkpoint(Path(checkpoint))
    out = check_output(out, "OUT", Kind.DIRECTORY, "export-hf", [("the checkpoint", checkpoint), ("the run", source)],
                       overwrite)
    cfg = load_config(checkpoint / "config.yaml")
    _require_llama(cfg)
    weights = to_hf(load_consolidated_state_dict(checkpoint), cfg)
    tokenizer = export_tokenizer(checkpoint / "tokenizer.json", cfg.data.seq_len)
    config = llama_config(cfg, tokenizer.eos_token_id, dtype)
    generation = GenerationConfig.from_model_config(config)
    # The pad id goes here, not in config.json: Llama makes config.pad_token_id its embedding's padding_idx,
    # which would freeze the EOS row in any fine-tuning.
    generation.pad_token_id = tokenizer.pad_token_id

    with atomic_output(out, directory=True) as staged:  # `out` is never half an export
        claim(staged, "export-hf")
        save_torch_state_dict({k: v.to(DTYPES[dtype]) for k, v in weights.items()}, staged,
                              max_shard_size=shard_bytes, metadata={"format": "pt"})
        config.save_pretrained(staged)
        generation.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
    return checkpoint


_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_size(text: str) -> int:
    """Bytes from a size such as `5GB` or `500MB` (decimal units, as Hugging Face counts them)."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)B?", text.strip().upper())
    size = int(float(match.group(1)) * _UNITS[match.group(2)]) if match else 0
    if size <= 0:
        raise ConfigError(f"--max-shard-size: {text!r} is not a size such as 5GB or 500MB")
    return size


def _require_llama(cfg: Config) -> None:
    if cfg.model.mlp != "swiglu":
        raise ConfigError(f"model.mlp={cfg.model.mlp}: Llama's MLP is SwiGLU only, so this model cannot be "
                          f"exported as LlamaForCausalLM")
