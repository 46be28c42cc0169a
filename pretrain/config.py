"""Typed run configuration: YAML in, nested dataclasses out, every error naming its key.

A config file is a mapping with the sections below; anything left out takes the default shown.
CLI overrides use dotted keys (`model.d_model=512`), parsed as YAML scalars. Derived values (heads,
MLP width, width multiplier, gradient accumulation) are computed here, once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class UserError(Exception):
    """A problem the user can fix, phrased as one line; the CLI prints it and exits with `exit_code`."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A config problem, phrased as one line that names the key and what is allowed."""


@dataclass
class ModelConfig:
    d_model: int = 256  # residual width; the μP width multiplier is d_model / base_width
    n_layers: int = 4
    head_dim: int = 64  # fixed across widths: heads grow with width (DESIGN §2)
    n_kv_heads: int | None = None  # None = one per query head (MHA); 1 = MQA; else GQA
    mlp: Literal["swiglu", "relu", "relu2"] = "swiglu"
    d_ff: int | None = None  # None = 4·d_model (relu family) or a multiple of ffn_multiple_of near 8/3·d_model
    ffn_multiple_of: int = 256
    parametrization: Literal["mup", "sp"] = "mup"
    base_width: int = 128  # the width at which μP equals SP
    qk_scale: Literal["auto", "mup", "sp"] = "auto"  # mup: 1/head_dim, sp: 1/sqrt(head_dim), auto: per parametrization
    readout_init: Literal["auto", "mup", "sp"] = "auto"  # mup: std 1/d, sp: d^-1/2, auto: per parametrization
    zero_query: bool = True  # zero-init the query projection (μP only)
    norm_gains: bool = False  # trainable RMSNorm gains; they broke μ-transfer in the paper
    norm_eps: float = 1e-6
    rope_base: float = 10000.0
    use_kernels: bool = True  # route norm, SwiGLU and attention through `kernels` (Triton on GPU)

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

    @property
    def width_mult(self) -> float:
        return self.d_model / self.base_width

    @property
    def attention_kind(self) -> Literal["mup", "sp"]:
        return self.parametrization if self.qk_scale == "auto" else self.qk_scale

    @property
    def readout_kind(self) -> Literal["mup", "sp"]:
        return self.parametrization if self.readout_init == "auto" else self.readout_init

    def validate(self) -> None:
        _require(self.d_model > 0 and self.n_layers > 0 and self.head_dim > 0, "model",
                 "d_model, n_layers and head_dim must be positive")
        _require(self.d_model % self.head_dim == 0, "model.head_dim",
                 f"must divide model.d_model={self.d_model} (got {self.head_dim})")
        _require(self.head_dim % 2 == 0, "model.head_dim", f"must be even for RoPE (got {self.head_dim})")
        _require(self.n_heads % self.kv_heads == 0, "model.n_kv_heads",
                 f"must divide the number of heads {self.n_heads} (got {self.n_kv_heads})")
        _require(self.base_width > 0, "model.base_width", "must be positive")


@dataclass
class DataConfig:
    source: str = "embedded"  # "embedded", a local file/dir/glob (.txt/.jsonl/.parquet), or "hub:NAME"
    text_field: str = "text"  # column holding the text (jsonl, parquet, hub)
    hub_config: str | None = None  # dataset config name for hub sources
    hub_split: str = "train"
    tokenizer: str = "bpe"  # "bpe" = train a byte-level BPE on the corpus; else a local tokenizer path
    vocab_size: int = 4096  # the BPE size, and the model's embedding rows
    seq_len: int = 256
    val_fraction: float = 0.01  # share of documents held out for eval
    max_documents: int | None = None  # cap the corpus (quick experiments)
    cache_dir: str = "data_cache"  # prepared data is cached here, keyed by source, tokenizer and seq_len
    num_workers: int = 0  # 0 = all cores

    def validate(self) -> None:
        _require(self.seq_len > 0, "data.seq_len", "must be positive")
        _require(self.vocab_size >= 256, "data.vocab_size", "must be at least 256 (byte-level BPE)")
        _require(0 < self.val_fraction < 1, "data.val_fraction", "must lie in (0, 1)")


@dataclass
class OptimConfig:
    lr: float = 2**-6  # α, the base Adam LR; μP scales it per parameter role
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    weight_decay_mode: Literal["independent", "coupled"] = "independent"  # coupled = scaled by the μP LR
    grad_clip: float = 1.0  # 0 = off
    schedule: Literal["cosine", "linear", "constant"] = "linear"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # the decay floor, as a fraction of each group's peak LR

    def validate(self) -> None:
        _require(self.lr > 0, "optim.lr", "must be positive")
        _require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", "must lie in [0, 1]")
        _require(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")


@dataclass
class TrainConfig:
    steps: int = 1000
    micro_batch_size: int = 16  # sequences per process per forward pass
    grad_accum: int | None = None  # None = derived from global_batch_size (or 1)
    global_batch_size: int | None = None  # sequences per optimizer step, over all processes
    eval_every: int = 100
    eval_batches: int = 8  # micro batches per eval
    log_every: int = 10  # progress-bar refresh; metrics.jsonl gets every step
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    out_dir: str = "runs/default"
    resume: str = "auto"  # "auto" = latest complete checkpoint in out_dir if any; "never"; or a checkpoint path
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    activation_checkpointing: bool = False  # recompute each block in the backward: far less activation memory
    peak_flops: float | None = None  # per-device peak FLOP/s for MFU; None = looked up from the GPU's name

    def validate(self) -> None:
        _require(self.steps > 0, "train.steps", "must be positive")
        _require(self.micro_batch_size > 0, "train.micro_batch_size", "must be positive")
        _require(self.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
        _require(self.eval_every > 0 and self.checkpoint_every > 0 and self.log_every > 0, "train",
                 "eval_every, checkpoint_every and log_every must be positive")

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
    zero_stage: Literal[0, 1, 2, 3] = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 on GPU, fp32 on CPU
    offload_optimizer: bool = False  # ZeRO-Offload: optimizer states and the Adam step live on the CPU

    def validate(self) -> None:
        _require(not self.offload_optimizer or self.zero_stage > 0, "deepspeed.offload_optimizer",
                 "needs deepspeed.zero_stage 1, 2 or 3 (ZeRO-Offload moves the partitioned optimizer states)")


@dataclass
class WandbConfig:
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"  # auto = online with an API key, else offline
    project: str = "pretrain"
    entity: str | None = None
    group: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)


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

    def validate(self) -> Config:
        for section in (self.model, self.data, self.optim, self.train, self.deepspeed):
            section.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply `key.sub=value` overrides, and validate it into a `Config`.
    A file may start from another one: `base: other.yaml` (relative to the file) sets everything the file
    itself does not (ablations are a few lines on top of the config they vary)."""
    raw = _read_yaml(Path(path)) if path is not None else {}
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__}: {err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base = raw.pop("base", None)
    return _merged(_read_yaml(path.parent / str(base)), raw) if base else raw


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, section by section."""
    merged = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if both else value
    return merged


def config_from_dict(raw: dict[str, Any]) -> Config:
    return _build(Config, raw, prefix="").validate()


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as a YAML scalar."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    try:
        node[leaf] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        node[leaf] = text


_POWER = re.compile(r"^\s*(-?[0-9.]+)\s*\^\s*(-?[0-9.]+)\s*$")


def parse_number(text: str) -> float:
    """A float, also written as a power such as `2^-6` (how LR grids are usually quoted)."""
    match = _POWER.match(text)
    if match:
        return float(match.group(1)) ** float(match.group(2))
    return float(text)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(f"{path}: unknown key{hint}; allowed: {', '.join(fields)}")
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value or {}, prefix=f"{path}.")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, path)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(str(a) for a in args)
            raise ConfigError(f"{path}: {value!r} is not allowed; choose one of: {allowed}")
        return value
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return parse_number(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number (e.g. 0.01 or 2^-6), got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint} at {path}")


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")
