"""Typed run configuration: YAML in, nested dataclasses out, every error naming its key.

A config file is a mapping with the sections below; anything left out takes its default. CLI overrides use
dotted keys (`model.d_model=512`), parsed as YAML scalars. Each field is declared with `setting`: its default,
one line of documentation and the bounds of its value. Loading checks every value against its declaration
(type, choices, bounds, finite numbers, non-empty text), so no setting needs a hand-written check; the few
rules that relate two settings live in the sections' `validate`. The README's config table is generated from
the same declarations (`python -m pretrain.config`). Derived values (heads, MLP width, gradient accumulation)
are computed here, once.
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

from .errors import ConfigError

MAX_BASE_DEPTH = 8  # `base:` chains longer than this are a mistake (or a cycle)
_BOUNDS = {"gt": (">", float.__gt__), "ge": ("≥", float.__ge__), "lt": ("<", float.__lt__),
           "le": ("≤", float.__le__)}


def setting(default: Any, doc: str, **bounds: float) -> Any:
    """A config field: its default (a callable makes a fresh one per config), one line of documentation, and
    bounds its value must respect, as `gt`, `ge`, `lt` or `le` (greater than, at least, ...)."""
    unknown = set(bounds) - set(_BOUNDS)
    if unknown:
        raise TypeError(f"unknown bounds {sorted(unknown)}")
    default_kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(**default_kw, metadata={"doc": doc, "bounds": bounds})


@dataclass
class ModelConfig:
    """The transformer's shape and its parametrization."""

    d_model: int = setting(256, "residual width; the μP width multiplier is d_model / base_width", gt=0)
    n_layers: int = setting(4, "transformer blocks", gt=0)
    head_dim: int = setting(64, "fixed across widths: heads grow with width (n_heads = d_model / head_dim)", gt=0)
    n_kv_heads: int | None = setting(None, "null = one per query head (MHA); 1 = MQA; else GQA", gt=0)
    mlp: Literal["swiglu", "relu", "relu2"] = setting("swiglu", "the MLP; relu2 is squared ReLU")
    d_ff: int | None = setting(None, "MLP width; null = 4·d_model (relu family) or a multiple of ffn_multiple_of "
                                     "near 8/3·d_model (SwiGLU)", gt=0)
    ffn_multiple_of: int = setting(256, "rounding of the SwiGLU width", gt=0)
    parametrization: Literal["mup", "sp"] = setting("mup", "`sp` = standard parametrization, for baselines")
    base_width: int = setting(128, "the width at which μP equals SP", gt=0)
    qk_scale: Literal["auto", "mup", "sp"] = setting("auto", "attention scale: mup 1/head_dim, sp "
                                                             "1/sqrt(head_dim), auto per parametrization")
    readout_init: Literal["auto", "mup", "sp"] = setting("auto", "readout init std: mup 1/d, sp d^-1/2, auto per "
                                                                 "parametrization")
    zero_query: bool = setting(True, "zero-init the query projection (μP only)")
    norm_gains: bool = setting(False, "trainable RMSNorm gains; they broke μ-transfer in the paper")
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
        _require(self.d_model % self.head_dim == 0, "model.head_dim",
                 f"must divide model.d_model={self.d_model} (got {self.head_dim})")
        _require(self.head_dim % 2 == 0, "model.head_dim", f"must be even for RoPE (got {self.head_dim})")
        _require(self.n_heads % self.kv_heads == 0, "model.n_kv_heads",
                 f"must divide the number of heads {self.n_heads} (got {self.n_kv_heads})")


@dataclass
class SourceConfig:
    """One corpus of a mixture (`data.sources`)."""

    source: str = setting("embedded", '"embedded", a local file/dir/glob (.txt/.jsonl/.parquet), or "hub:NAME"')
    weight: float = setting(1.0, "share of each step's sequences drawn from it, relative to the others", gt=0)
    text_field: str = setting("text", "column holding the text (jsonl, parquet, hub)")
    hub_config: str | None = setting(None, "dataset config name for hub sources")
    hub_split: str = setting("train", "split of a hub dataset")
    hub_revision: str | None = setting(None, "branch, tag or commit of a hub dataset; null = its default "
                                             "branch. Resolved to a commit once, when its preparation starts")
    name: str | None = setting(None, "its name in metrics (tokens/NAME); default from the source")


@dataclass
class DataConfig:
    """Where the documents come from and how they become token rows."""

    source: str = setting("embedded", '"embedded", a local file/dir/glob (.txt/.jsonl/.parquet), or "hub:NAME"')
    text_field: str = setting("text", "column holding the text (jsonl, parquet, hub)")
    hub_config: str | None = setting(None, "dataset config name for hub sources")
    hub_split: str = setting("train", "split of a hub dataset")
    hub_revision: str | None = setting(None, "branch, tag or commit of a hub dataset; null = its default "
                                             "branch. Resolved to a commit once, when its preparation starts")
    sources: list[SourceConfig] = setting(list, "a mixture instead of data.source: a list of {source, weight, "
                                                "text_field, hub_config, hub_split, hub_revision, name}")
    tokenizer: str = setting("bpe", '"bpe" = train a byte-level BPE on the corpus; else a local tokenizer path')
    tokenizer_sample: int = setting(2**30, "bytes of text (spread over the corpus) the BPE trains on", gt=0)
    vocab_size: int = setting(4096, "the BPE size, and the model's embedding rows", gt=0)
    seq_len: int = setting(256, "tokens per training sequence", gt=0)
    val_fraction: float = setting(0.01, "share of documents held out for eval", gt=0, lt=1)
    max_documents: int | None = setting(None, "cap each source at its first N documents (quick experiments)", gt=0)
    max_tokens: int | None = setting(None, "cap each source's train split at N tokens (whole rows, in order)", gt=0)
    skip_bad_records: bool = setting(False, "skip (and count) records whose text is not text, instead of an error")
    cache_dir: str = setting("data_cache", "prepared data is cached here, keyed by source, tokenizer and seq_len")
    num_workers: int = setting(0, "encoder threads; 0 = all usable cores", ge=0)

    def validate(self) -> None:
        _require(self.tokenizer != "bpe" or self.vocab_size >= 257, "data.vocab_size",
                 f"must be at least 257 to hold a byte-level BPE (256 bytes + EOS); got {self.vocab_size}")
        single = {name: getattr(self, name)
                  for name in ("source", "text_field", "hub_config", "hub_split", "hub_revision")}
        defaults = {name: getattr(DataConfig, name) for name in single}
        _require(not self.sources or single == defaults, "data.sources", "set either data.source (with "
                 "text_field, hub_config, hub_split, hub_revision) or data.sources, not both")

    def source_specs(self) -> list[SourceConfig]:
        """The sources to mix: data.sources, or data.source alone."""
        if self.sources:
            return self.sources
        return [SourceConfig(self.source, 1.0, self.text_field, self.hub_config, self.hub_split, self.hub_revision)]


@dataclass
class OptimConfig:
    """AdamW and its LR schedule; μP scales the LR per parameter role."""

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
    seed: int = setting(0, "init and data order", ge=0)
    device: Literal["auto", "cpu", "cuda"] = setting("auto", "`auto` = CUDA if present")
    activation_checkpointing: bool = setting(False, "recompute each block in the backward: far less activation "
                                                    "memory")
    peak_flops: float | None = setting(None, "per-device peak FLOP/s for MFU; null = looked up from the GPU's "
                                             "name", gt=0)
    divergence_factor: float = setting(3.0, "stop as diverged when the loss stays above this multiple of its "
                                            "running median, and above the first step's, for divergence_steps "
                                            "steps in a row; 0 = off", ge=0)
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
        _require(not self.offload_optimizer or self.zero_stage > 0, "deepspeed.offload_optimizer",
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


# --- reading ------------------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true and false. Under YAML 1.1 `yes`, `no`, `on` and `off` are booleans too,
    which turns `wandb.mode: off` into a baffling `False is not allowed`."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse_yaml(text: str, where: str) -> Any:
    """YAML text as Python values (YAML 1.2 booleans); an error is one line naming `where`, line and column."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            location = f"{where}:{mark.line + 1}:{mark.column + 1}"
        else:
            location = f"{where} (character {getattr(err, 'position', '?')})"
        reason = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{location}: not valid YAML: {reason}") from None


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply `key.sub=value` overrides, and validate it into a `Config`.
    A file may start from another one: `base: other.yaml` (relative to the file) sets everything the file
    itself does not (ablations are a few lines on top of the config they vary)."""
    raw = _read_yaml(Path(path), chain=()) if path is not None else {}
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw)


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        via = f" (the base of {chain[-1]})" if chain else ""
        raise ConfigError(f"config file not found: {path}{via}")
    resolved = path.resolve()
    if resolved in chain:
        raise ConfigError(f"{path}: `base:` leads back to itself ({' -> '.join(p.name for p in (*chain, path))})")
    if len(chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: more than {MAX_BASE_DEPTH} levels of `base:`")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.object[err.start]:#04x} at offset "
                          f"{err.start}); a config is YAML text") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {_describe(raw)}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base: expected the path of another config file, got {_describe(base)}")
    return _merged(_read_yaml(path.parent / base, (*chain, resolved)), raw)


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
    """Set `a.b.c=value` in a nested dict; the value is parsed as a YAML scalar (empty = null)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    try:
        value = parse_yaml(text, f"override {key}") if text.strip() else None
    except ConfigError:
        value = text  # not YAML: a plain string, checked against the field's type like any other
    if isinstance(value, (dict, list)) and not text.strip().startswith(("{", "[")):
        value = text  # `data.source=hub:` is text, not the mapping {hub: null}
    node[leaf] = value


_POWER = re.compile(r"^\s*(-?[0-9.]+)\s*\^\s*(-?[0-9.]+)\s*$")


def parse_number(text: str) -> float:
    """A float, also written as a power such as `2^-6` (how LR grids are usually quoted)."""
    match = _POWER.match(text)
    if match:
        return float(match.group(1)) ** float(match.group(2))
    return float(text)


# --- checking -----------------------------------------------------------------------------------------------

def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        name = prefix.rstrip(".") or "config"
        raise ConfigError(f"{name}: expected a mapping of settings, got {_describe(raw)}")
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
        _check_bounds(kwargs[key], fields[key].metadata.get("bounds", {}), path)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{path}.")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, path)
    if origin is Literal:
        if isinstance(value, bool) or value not in args:  # True == 1: a boolean is never a choice
            raise ConfigError(f"{path}: {_describe(value)} is not allowed; choose one of: "
                              f"{', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {_describe(value)}")
    if hint is float:
        number = _number(value)
        if number is None:
            raise ConfigError(f"{path}: expected a number (e.g. 0.01 or 2^-6), got {_describe(value)}")
        if not math.isfinite(number):
            raise ConfigError(f"{path}: must be a finite number, got {number}")
        return number
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            return str(value)
        raise ConfigError(f"{path}: expected a non-empty string, got {_describe(value)}")
    raise TypeError(f"unsupported config type {hint} at {path}")


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_number(value)
        except (ValueError, OverflowError):
            return None
    return None


def _check_bounds(value: Any, bounds: dict[str, float], path: str) -> None:
    if value is None or not bounds:
        return
    for name, limit in bounds.items():
        if not _BOUNDS[name][1](float(value), float(limit)):
            allowed = _allowed_range(bounds)
            raise ConfigError(f"{path}: must {'lie in' if allowed[0] in '[(' else 'be'} {allowed}, got {value}")


def _allowed_range(bounds: dict[str, float]) -> str:
    """`> 0`, `≥ 1`, or an interval such as `[0, 1)`."""
    low = next(((k, v) for k, v in bounds.items() if k in ("gt", "ge")), None)
    high = next(((k, v) for k, v in bounds.items() if k in ("lt", "le")), None)
    if low and high:
        return f"{'(' if low[0] == 'gt' else '['}{low[1]:g}, {high[1]:g}{')' if high[0] == 'lt' else ']'}"
    kind, limit = low or high
    return f"{_BOUNDS[kind][0]} {limit:g}"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


# --- the reference table ------------------------------------------------------------------------------------

def reference_table() -> str:
    """The README's table of every setting (key, default, allowed values, meaning), from the declarations."""
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    sections = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        section_cls = sections[section.name]
        hints = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            allowed = _allowed_values(hints[f.name], f.metadata.get("bounds", {}))
            lines.append(f"| `{section.name}.{f.name}` | `{_yaml_scalar(default)}` | {allowed} | "
                         f"{f.metadata['doc']} |")
    return "\n".join(lines)


def _allowed_values(hint: Any, bounds: dict[str, float]) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = ""
    if origin in (typing.Union, types.UnionType):
        optional = ", or null"
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        text = ", ".join(f"`{a}`" for a in args)
    elif origin is list:
        text = "list of mappings" if dataclasses.is_dataclass(args[0]) else "list of text"
    elif hint is bool:
        text = "`true`, `false`"
    elif hint in (int, float):
        kind = "integer" if hint is int else "number"
        text = f"{kind} {_allowed_range(bounds)}" if bounds else kind
    else:
        text = "text"
    return text + optional


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


if __name__ == "__main__":
    print(reference_table())
