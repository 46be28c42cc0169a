"""The README's table of every setting (key, default, allowed values, meaning), generated from the declarations:
`python -m pretrain.config` prints it, and a test keeps the README's copy in step."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

import yaml

from .checking import allowed_range, choice_text
from .schema import Config


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
        text = ", ".join(f"`{choice_text(a)}`" for a in args)
    elif origin is list:
        text = "list of mappings" if dataclasses.is_dataclass(args[0]) else "list of text"
    elif hint is bool:
        text = "`true`, `false`"
    elif hint in (int, float):
        kind = "integer" if hint is int else "number"
        text = f"{kind} {allowed_range(bounds)}" if bounds else kind
    else:
        text = "text"
    return text + optional


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
