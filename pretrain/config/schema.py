"""The sections of a run config and their settings, each declared once (see `checking.setting`), with the values
derived from them (heads, MLP width, gradient accumulation, tokens per step) and the rules that relate two
settings (each section's `validate`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from ..errors import ConfigError
from .checking import require, setting

# Sizes: a matrix is at most vocabulary × width, and (2^32 × 2^24 elements) × 4 bytes still has a 64-bit size (torch
# counts in int64), so every config describes a model `estimate` can count on the meta device; the widest models
# trained are under 2^15 wide. Layers are modules, built one by one even on the meta device (about 1 ms each, so
# 2^12 take seconds); the deepest transformers trained have about 1,000.
MAX_WIDTH, MAX_LAYERS, MAX_VOCAB = 2**24, 2**12, 2**32


@dataclass
class ModelConfig:
    """The transformer's shape and its parametrization."""

    d_model: int = setting(256, "residual width; the μP width multiplier is d_model / base_width", gt=0,
                           le=MAX_WIDTH)
    n_layers: int = setting(4, "transformer blocks", gt=0, le=MAX_LAYERS)
    head_dim: int = setting(64, "fixed across widths: heads grow with width (n_heads = d_model / head_dim)", gt=0)
    n_kv_heads: int | None = setting(None, "null = one per query head (MHA); 1 = MQA; else GQA", gt=0)
    mlp: Literal["swiglu", "relu", "relu2"] = setting("swiglu", "the MLP; relu2 is squared ReLU")
    d_ff: int | None = setting(None, "MLP width; null = 4·d_model (relu family) or a multiple of ffn_multiple_of "
                                     "near 8/3·d_model (SwiGLU)", gt=0, le=4 * MAX_WIDTH)
    ffn_multiple_of: int = setting(256, "rounding of the SwiGLU width", gt=0, le=MAX_WIDTH)
    parametrization: Literal["mup", "sp"] = setting("mup", "`sp` = standard parametrization, for baselines")
    base_width: int = setting(128, "the width at which μP equals SP", gt=0)
    depth_parametrization: Literal["none", "completep"] = setting(
        "none", "`completep` scales each residual branch by base_depth / n_layers (and the hidden Adam ε), so "
                "the optimum LR transfers across depth; `none` adds branches unscaled")
    base_depth: int = setting(2, "the depth at which completep equals none", gt=0, le=MAX_LAYERS)
    qk_scale: Literal["auto", "mup", "sp"] = setting("auto", "attention scale: mup 1/head_dim, sp "
                                                             "1/sqrt(head_dim), auto per parametrization")
    readout_init: Literal["auto", "mup", "sp"] = setting("auto", "readout init std: mup 1/d, sp d^-1/2, auto per "
                                                                 "parametrization")
    zero_query: bool = setting(True, "zero-init the query projection (μP only)")
    norm_gains: Literal[False, True, "scalar"] = setting(False, "trainable RMSNorm gains: true = a vector (one per "
                                                                "feature), scalar = one per norm; both broke "
                                                                "μ-transfer in the paper")
    bias: bool = setting(False, "a bias on every projection of the blocks (q, k, v, attention out, MLP in, gate and "
                                "out; not the readout): zero init, LR α (μP's rule for vectors)")
    norm_eps: float = setting(1e-6, "RMSNorm epsilon", gt=0)
    rope_base: float = setting(10000.0, "RoPE base (half-split layout, full head dim)", gt=1)
    use_kernels: bool = setting(True, "route norm, SwiGLU and attention through `kernels` (Triton on GPU)")
    loss_chunk: int = setting(512, "tokens per chunk of the readout and cross-entropy, so the micro batch's fp32 "
                                   "logits never exist at once; 0 = the plain path through the full logits", ge=0)

    @property
    def n_heads(self) -> int:
        return self.d_model // self.head_dim

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def ffn_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp == "swiglu":
            return self.ffn_multiple_of * math.ceil(8 * self.d_model / 3 / self.ffn_multiple_of)
        return 4 * self.d_model

    def validate(self) -> None:
        require(self.d_model % self.head_dim == 0, "model.head_dim",
                 f"must divide model.d_model={self.d_model} (got {self.head_dim})")
        require(self.head_dim % 2 == 0, "model.head_dim", f"must be even for RoPE (got {self.head_dim})")
        require(self.n_heads % self.kv_heads == 0, "model.n_kv_heads",
                 f"must divide the number of heads {self.n_heads} (got {self.n_kv_heads})")
        require(self.depth_parametrization == "none" or self.parametrization == "mup", "model.depth_parametrization",
                "completep extends μP; it needs model.parametrization=mup (got sp), or set it to none")


@dataclass
class SourceConfig:
    """One corpus of a mixture (`data.sources`)."""

    source: str = setting("embedded", '"embedded", a local file/dir/glob (.txt/.jsonl/.parquet), or "hub:NAME"')
    weight: float = setting(1.0, "share of each step's sequences drawn from it, relative to the others (shares or "
                                 "token counts: within 1e±15 every sum and ratio of weights is an ordinary float)",
                            ge=1e-15, le=1e15)
    text_field: str = setting("text", "column holding the text (jsonl, parquet, hub)")
    hub_config: str | None = setting(None, "dataset config name for hub sources")
    hub_split: str = setting("train", "split of a hub dataset")
    hub_revision: str | None = setting(None, "branch, tag or commit of a hub dataset; null = its default "
                                             "branch. Resolved to a commit once, when its preparation starts")
    name: str | None = setting(None, "its name in metrics (tokens/NAME); default from the source")

    key = "data.sources[0]"  # not a setting: the config key it was given under, for messages (set by DataConfig)


SHORTHAND = ("source", "text_field", "hub_config", "hub_split", "hub_revision")  # data.X for a single source


def _shorthand(name: str) -> Any:
    """`data.NAME`: SourceConfig's NAME for a single source; null when not given (then SourceConfig's default)."""
    declared = {f.name: f for f in dataclasses.fields(SourceConfig)}[name]
    default = "" if declared.default is None else f"; null = {declared.default}"
    return setting(None, f"{declared.metadata['doc']} (a single source{default})")


@dataclass
class DataConfig:
    """Where the documents come from and how they become token rows.

    The sources are `sources`, always: `data.source` (with text_field, hub_config, hub_split, hub_revision) is
    shorthand for one source, moved into `sources` when the config is built and left null."""

    source: str | None = _shorthand("source")
    text_field: str | None = _shorthand("text_field")
    hub_config: str | None = _shorthand("hub_config")
    hub_split: str | None = _shorthand("hub_split")
    hub_revision: str | None = _shorthand("hub_revision")
    sources: list[SourceConfig] = setting(list, "a mixture instead of data.source: a list of {source, weight, "
                                                "text_field, hub_config, hub_split, hub_revision, name}")
    tokenizer: str = setting("bpe", '"bpe" = train a byte-level BPE on the corpus; else a local tokenizer path')
    tokenizer_sample: int = setting(2**30, "bytes of text (spread over the corpus) the BPE trains on", gt=0)
    vocab_size: int = setting(4096, "the BPE size, and the model's embedding rows (token ids are stored in at "
                                    "most 32 bits)", gt=0, le=MAX_VOCAB)
    seq_len: int = setting(256, "tokens per training sequence", gt=0)
    val_fraction: float = setting(0.01, "share of documents held out for eval", gt=0, lt=1)
    max_documents: int | None = setting(None, "cap each source at its first N documents (quick experiments)", gt=0)
    max_tokens: int | None = setting(None, "cap each source's train split at N tokens (whole rows, in order)", gt=0)
    max_record_bytes: int = setting(8 << 20, "the longest record read (a text file, a JSON line, a parquet text); "
                                             "a longer one is a bad record, never held whole", gt=0)
    skip_bad_records: bool = setting(False, "skip (and count) bad records (text that is not text or not valid "
                                            "UTF-8, or longer than max_record_bytes) instead of an error")
    cache_dir: str = setting("data_cache", "prepared data is cached here, keyed by source, tokenizer and seq_len")
    num_workers: int = setting(0, "encoder threads; 0 = all usable cores", ge=0)

    def __post_init__(self) -> None:
        given = {name: getattr(self, name) for name in SHORTHAND if getattr(self, name) is not None}
        for name in SHORTHAND:
            setattr(self, name, None)
        # A copy (`dataclasses.replace`) of a built config holds its shorthand source already, and may change it.
        built = len(self.sources) == 1 and vars(self.sources[0]).get("key") == "data"
        if self.sources and not built:
            # A base config's `source: embedded` (the default) does not stand against an override's data.sources.
            require(all(value == getattr(SourceConfig, name) for name, value in given.items()), "data.sources",
                    "set either data.source (with text_field, hub_config, hub_split, hub_revision) or "
                    "data.sources, not both")
            for i, spec in enumerate(self.sources):
                vars(spec).setdefault("key", f"data.sources[{i}]")
        else:
            earlier = dataclasses.asdict(self.sources[0]) if built else {}
            self.sources = [SourceConfig(**{**earlier, **given})]
            self.sources[0].key = "data"

    def validate(self) -> None:
        require(self.tokenizer != "bpe" or self.vocab_size >= 257, "data.vocab_size",
                f"must be at least 257 to hold a byte-level BPE (256 bytes + EOS); got {self.vocab_size}")


@dataclass
class OptimConfig:
    """The optimizer (AdamW or Lion) and its LR schedule; μP scales the LR per parameter role."""

    name: Literal["adamw", "lion"] = setting("adamw", "adamw, or lion (the sign of a momentum: beta1 interpolates "
                                                      "it with the gradient, beta2 is its decay; eps unused); μP "
                                                      "scales both per role alike")
    lr: float = setting(2**-6, "α, the base Adam LR; μP scales it per parameter role", gt=0)
    beta1: float = setting(0.9, "Adam β1", ge=0, lt=1)
    beta2: float = setting(0.95, "Adam β2", ge=0, lt=1)
    eps: float = setting(1e-8, "Adam ε", gt=0)
    weight_decay: float = setting(0.0, "λ; independent of the LR by default (θ ← θ − s(t)·λ·θ)", ge=0)
    weight_decay_mode: Literal["independent", "coupled"] = setting("independent", "coupled = scaled by the μP LR")
    grad_clip: float = setting(1.0, "global grad-norm clip; 0 = off", ge=0)
    schedule: Literal["cosine", "linear", "constant"] = setting("linear", "decay after warmup; multiplies every "
                                                                          "group's LR")
    warmup_steps: int = setting(100, "linear warmup from 0, in steps", ge=0)
    warmup_fraction: float | None = setting(None, "warmup as a fraction of train.steps; when set, it replaces "
                                                  "warmup_steps", ge=0, lt=1)
    min_lr_ratio: float = setting(0.1, "the decay floor, as a fraction of each group's peak LR", ge=0, le=1)

    def warmup(self, total_steps: int) -> int:
        """Warmup steps of a run of `total_steps`: fixed, or a fixed fraction of the run."""
        if self.warmup_fraction is None:
            return self.warmup_steps
        return round(self.warmup_fraction * total_steps)

    def warmup_rule(self) -> str:
        """The warmup in words, as sweeps report it (the same rule holds at every horizon)."""
        if self.warmup_fraction is None:
            return f"{self.warmup_steps} steps at every horizon"
        return f"{self.warmup_fraction:.3g} of each horizon's steps"


@dataclass
class TrainConfig:
    """The run: its length, batch, evaluation, checkpoints and devices."""

    steps: int = setting(1000, "optimizer steps", gt=0)
    micro_batch_size: int = setting(16, "sequences per process per forward pass", gt=0)
    grad_accum: int | None = setting(None, "null = derived from global_batch_size (or 1)", gt=0)
    global_batch_size: int | None = setting(None, "sequences per optimizer step, over all processes", gt=0)
    eval_every: int = setting(100, "steps between evals (and at the end)", gt=0)
    eval_batches: int = setting(8, "micro batches per eval", gt=0)
    log_every: int = setting(10, "progress-bar refresh; metrics.jsonl gets every step", gt=0)
    checkpoint_every: int = setting(500, "steps between checkpoints (and at the end)", gt=0)
    keep_checkpoints: int = setting(2, "complete checkpoints kept", ge=1)
    out_dir: str = setting("runs/default", "the run directory: config.yaml, metrics.jsonl, checkpoints/")
    resume: str = setting("auto", '"auto" = latest complete checkpoint in out_dir if any; "never"; or a '
                                  "checkpoint path")
    allow_config_change: bool = setting(False, "let a resume change the optimizer's settings, schedule, data, "
                                               "global batch or seed (each change is printed); the model's shape "
                                               "and μP never change, nor the optimizer (optim.name) or the ZeRO "
                                               "stage (but between 1 and 2)")
    seed: int = setting(0, "init and data order", ge=0)
    device: Literal["auto", "cpu", "cuda"] = setting("auto", "`auto` = CUDA if present")
    activation_checkpointing: bool = setting(False, "recompute each block in the backward: far less activation "
                                                    "memory")
    peak_flops: float | None = setting(None, "per-device peak FLOP/s for MFU; null = looked up from the GPU's "
                                             "name", gt=0)
    divergence_factor: float = setting(3.0, "stop as diverged when the loss exceeds this multiple of the first "
                                            "step's (at once), or stays above this multiple of its running median, "
                                            "and above the first step's, for divergence_steps steps in a row; "
                                            "0 = off (NaN and inf always stop)", ge=0)
    divergence_steps: int = setting(3, "steps in a row the loss must stay that high", ge=1)

    def accumulation(self, world_size: int) -> int:
        """Micro batches per optimizer step on each process."""
        if self.global_batch_size is None:
            return self.grad_accum or 1
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(f"train.global_batch_size={self.global_batch_size} is not a multiple of "
                              f"train.micro_batch_size × processes = {per_step}")
        accum = self.global_batch_size // per_step
        if self.grad_accum is not None and self.grad_accum != accum:
            raise ConfigError(f"train.grad_accum={self.grad_accum} contradicts train.global_batch_size="
                              f"{self.global_batch_size} (which needs {accum}); set only one of them")
        return accum

    def global_batch(self, world_size: int) -> int:
        return self.micro_batch_size * world_size * self.accumulation(world_size)


@dataclass
class DeepSpeedConfig:
    """How DeepSpeed shards and places the model states."""

    zero_stage: Literal[0, 1, 2, 3] = setting(0, "0, 1 (optimizer states), 2 (+ gradients), 3 (+ parameters)")
    precision: Literal["auto", "fp32", "bf16"] = setting("auto", "`auto` = bf16 on GPU, fp32 on CPU")
    offload_optimizer: bool = setting(False, "ZeRO-Offload: optimizer states and the Adam step live on the CPU")

    def validate(self) -> None:
        require(not self.offload_optimizer or self.zero_stage > 0, "deepspeed.offload_optimizer",
                 "needs deepspeed.zero_stage 1, 2 or 3 (ZeRO-Offload moves the partitioned optimizer states)")


@dataclass
class WandbConfig:
    """Weights & Biases logging (rank 0 only)."""

    mode: Literal["auto", "online", "offline", "disabled"] = setting("auto", "`auto` = online with an API key, "
                                                                             "else offline")
    project: str = setting("pretrain", "W&B project (`WANDB_PROJECT` if left default)")
    entity: str | None = setting(None, "W&B entity")
    group: str | None = setting(None, "W&B group (a sweep sets one for all its points)")
    name: str | None = setting(None, "run name (default: the run dir's name)")
    tags: list[str] = setting(list, "list of tags")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    @property
    def vocab_size(self) -> int:
        return self.data.vocab_size

    def tokens_per_step(self, world_size: int = 1) -> int:
        """Tokens in one optimizer step's global batch (train.global_batch_size makes it world-size free)."""
        return self.train.global_batch(world_size) * self.data.seq_len

    def training_tokens(self, world_size: int = 1) -> int:
        """The run's token horizon: steps × global batch × seq_len."""
        return self.train.steps * self.tokens_per_step(world_size)

    def validate(self) -> Config:
        for section in self.sections().values():
            getattr(section, "validate", lambda: None)()
        return self

    def sections(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
