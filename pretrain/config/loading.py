"""Reading a config: YAML files (YAML 1.2 booleans) with `base:` chains, `key.sub=value` overrides, and the raw
mapping checked into a `Config` (see `checking`), whose `data.sources` is the one shape of the data sources."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .checking import build, describe
from .schema import Config

MAX_BASE_DEPTH = 8  # `base:` chains longer than this are a mistake (or a cycle)


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
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {describe(raw)}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base: expected the path of another config file, got {describe(base)}")
    return _merged(_read_yaml(path.parent / base, (*chain, resolved)), raw)


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, section by section."""
    merged = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if both else value
    return merged


def config_from_dict(raw: dict[str, Any]) -> Config:
    return build(Config, raw).validate()


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
