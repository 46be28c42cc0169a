"""Reading a config: YAML files (YAML 1.2 booleans, no key twice) with `base:` chains, `key.sub=value` overrides,
and the raw mapping checked into a `Config` (see `checking`), whose `data.sources` is the one shape of the data
sources."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .checking import build, describe
from .schema import Config

MAX_BASE_DEPTH = 8  # `base:` chains longer than this are a mistake (or a cycle)
# The deepest setting, data.sources[i].weight, sits in 4 collections (the file, data, sources, one source); 16
# leaves a mistaken nesting its ordinary type error, and stays far inside Python's recursion limit (PyYAML composes
# a document recursively, a few frames per level): `[[[[...]]]]` thousands deep is one line, not a RecursionError.
MAX_NESTING = 16


class _Refused(yaml.MarkedYAMLError):
    """YAML that parses but no config can be: nested too deep, a key given twice, an integer too long to read."""


class _NotYaml(ConfigError):
    """Text that is not YAML (an override takes it as plain text instead)."""


class _Loader(yaml.SafeLoader):
    """Safe YAML (no tags beyond plain data) with YAML 1.2 booleans: only true and false. Under YAML 1.1 `yes`,
    `no`, `on` and `off` are booleans too, which turns `wandb.mode: off` into a baffling `False is not allowed`;
    and dates are text (no setting takes one, and `2024-13-45` would fail as a date). Nesting is bounded
    (MAX_NESTING) and a key given twice in one mapping is an error: YAML would silently keep the last."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._open = 0  # collections being composed around the next node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if self._open == MAX_NESTING:
                raise _Refused(problem=f"nested more than {MAX_NESTING} levels deep (no setting is deeper than "
                                       "data.sources[i].weight, 4 levels)", problem_mark=event.start_mark)
            self._open += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._open -= 1
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *defaults`: the mapping's own keys override the merged ones
                continue
            key, mark = self.construct_object(key_node, deep=True), key_node.start_mark
            try:
                earlier = first.setdefault(key, mark)
            except TypeError:  # an unhashable key: SafeLoader's own error says so
                continue
            if earlier is not mark:
                lines = (f"line {mark.line + 1} (columns {earlier.column + 1} and {mark.column + 1})"
                         if earlier.line == mark.line else f"lines {earlier.line + 1} and {mark.line + 1}")
                raise _Refused(problem=f"{key!r} is given twice in one mapping, on {lines}: YAML would keep only "
                                       "the last; keep one", problem_mark=mark)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # past the 4300 digits Python converts
            raise _Refused(problem=f"an integer of {len(node.value)} characters: no setting takes one past 2^63",
                           problem_mark=node.start_mark) from None


_BOOL_TAG, _TIMESTAMP_TAG, _MERGE_TAG = ("tag:yaml.org,2002:" + name for name in ("bool", "timestamp", "merge"))
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse_yaml(text: str, where: str) -> Any:
    """YAML text as Python values (see `_Loader`); an error is one line naming `where`, line and column."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            location = f"{where}:{mark.line + 1}:{mark.column + 1}"
        else:
            location = f"{where} (character {getattr(err, 'position', '?')})"
        if isinstance(err, _Refused):
            raise ConfigError(f"{location}: {err.problem}") from None
        reason = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise _NotYaml(f"{location}: not valid YAML: {reason}") from None


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply `key.sub=value` overrides, and validate it into a `Config`.
    A file may start from another one: `base: other.yaml` (relative to the file) sets everything the file
    itself does not (ablations are a few lines on top of the config they vary)."""
    raw = _read_yaml(Path(path), chain=()) if path is not None else {}
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw)


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        raise ConfigError(f"{path}: `base:` leads back to itself ({' -> '.join(p.name for p in (*chain, path))})")
    if len(chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: more than {MAX_BASE_DEPTH} levels of `base:`")
    raw = parse_yaml(_read_text(path, f" (the base of {chain[-1]})" if chain else ""), str(path))
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


def _read_text(path: Path, via: str) -> str:
    """The text of config file `path`; every way it cannot be read is one line naming it (`via`: whose base)."""
    try:
        if not path.is_file():  # nothing there, a folder, or a pipe or device (which may never end)
            raise ConfigError(f"{path}{via}: not a regular file" if path.exists()
                              else f"config file not found: {path}{via}")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}{via}: not a UTF-8 text file (byte {err.object[err.start]:#04x} at offset "
                          f"{err.start}); a config is YAML text") from None
    except OSError as err:  # not allowed to read it, or its disk failing
        raise ConfigError(f"{path}{via}: cannot be read: {err.strerror or err}") from None


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, section by section; a section's values are replaced whole (no setting is a mapping).
    Two levels, not a recursion: YAML aliases can make a value nest endlessly (`a: &x [*x]`)."""
    merged = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = {**base[key], **value} if both else value
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
    except _NotYaml:
        value = text  # not YAML: a plain string, checked against the field's type like any other
    if isinstance(value, (dict, list)) and not text.strip().startswith(("{", "[")):
        value = text  # `data.source=hub:` is text, not the mapping {hub: null}
    node[leaf] = value
