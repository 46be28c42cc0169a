"""How a setting is declared, and the engine that checks raw values (YAML, overrides) against the declarations.

A setting is a dataclass field declared with `setting`: its default, one line of documentation, and the bounds
its value must respect. `build` turns a raw mapping into such a dataclass, checking every value against its
declaration: the type (integers, numbers, which may be written as powers such as `2^-6`, booleans, text,
choices, optional values, lists, nested sections), bounds, finite numbers, 64-bit integers and non-empty text.
Every error is one line that names the key. The engine knows nothing of the sections themselves (see `schema`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import re
import sys
import types
import typing
from dataclasses import field
from typing import Any, Literal

from ..errors import ConfigError

INT64 = 2**63  # past the config every integer is a 64-bit one (numpy, torch)
BOUNDS = {"gt": (">", operator.gt), "ge": ("≥", operator.ge), "lt": ("<", operator.lt), "le": ("≤", operator.le)}


def setting(default: Any, doc: str, **bounds: float) -> Any:
    """A config field: its default (a callable makes a fresh one per config), one line of documentation, and
    bounds its value must respect, as `gt`, `ge`, `lt` or `le` (greater than, at least, ...)."""
    unknown = set(bounds) - set(BOUNDS)
    if unknown:
        raise TypeError(f"unknown bounds {sorted(unknown)}")
    default_kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(**default_kw, metadata={"doc": doc, "bounds": bounds})


def require(ok: bool, key: str, message: str) -> None:
    """A rule relating settings, checked after they are built: `key: message` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


_POWER = re.compile(r"^\s*(-?[0-9.]+)\s*\^\s*(-?[0-9.]+)\s*$")


def parse_number(text: str) -> float:
    """A float, also written as a power such as `2^-6` (how LR grids are usually quoted)."""
    match = _POWER.match(text)
    if match:
        return float(match.group(1)) ** float(match.group(2))
    return float(text)


def build(cls: type, raw: Any, prefix: str = "") -> Any:
    """`raw` checked against the settings of dataclass `cls` and built into one; `prefix` is its key."""
    if not isinstance(raw, dict):
        name = prefix.rstrip(".") or "config"
        raise ConfigError(f"{name}: expected a mapping of settings, got {describe(raw)}")
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
        return build(hint, value, prefix=f"{path}.")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, path)
    if origin is Literal:
        # True == 1: a boolean matches only a boolean choice, a number only a number
        if not any(isinstance(value, bool) == isinstance(a, bool) and value == a for a in args):
            raise ConfigError(f"{path}: {describe(value)} is not allowed; choose one of: "
                              f"{', '.join(map(choice_text, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {describe(value)}")
    if hint is float:
        number = _number(value)
        if number is None:
            raise ConfigError(f"{path}: expected a number (e.g. 0.01 or 2^-6), got {describe(value)}")
        if not math.isfinite(number):
            raise ConfigError(f"{path}: must be a finite number, got {number}")
        return number
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            return str(value)
        raise ConfigError(f"{path}: expected a non-empty string, got {describe(value)}")
    raise TypeError(f"unsupported config type {hint} at {path}")


def _number(value: Any) -> float | None:
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value) if abs(value) <= sys.float_info.max else math.inf  # an integer beyond any float
    if isinstance(value, str):
        try:
            return parse_number(value)
        except (ValueError, OverflowError):
            return None
    return None


def _check_bounds(value: Any, bounds: dict[str, float], path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # null, text, a list, a section
        return
    for name, limit in bounds.items():
        if not BOUNDS[name][1](value, limit):  # exact for integers of any size
            allowed = allowed_range(bounds)
            raise ConfigError(f"{path}: must {'lie in' if allowed[0] in '[(' else 'be'} {allowed}, "
                              f"got {describe(value)}")
    if isinstance(value, int) and not -INT64 <= value < INT64:
        raise ConfigError(f"{path}: must be a 64-bit integer (|n| < 2^63, what numpy and torch hold), "
                          f"got {describe(value)}")


def allowed_range(bounds: dict[str, float]) -> str:
    """`> 0`, `≥ 1`, or an interval such as `[0, 1)`."""
    low = next(((k, v) for k, v in bounds.items() if k in ("gt", "ge")), None)
    high = next(((k, v) for k, v in bounds.items() if k in ("lt", "le")), None)
    if low and high:
        return (f"{'(' if low[0] == 'gt' else '['}{_limit(low[1])}, {_limit(high[1])}"
                f"{')' if high[0] == 'lt' else ']'}")
    kind, limit = low or high
    return f"{BOUNDS[kind][0]} {_limit(limit)}"


def _limit(limit: float) -> str:
    """`2^24` for a large power of two (as sizes are bounded), else `1e-15`, `0.5`, `100`."""
    if isinstance(limit, int) and limit >= 2**10 and limit & (limit - 1) == 0:
        return f"2^{limit.bit_length() - 1}"
    return f"{limit:g}"


def choice_text(choice: Any) -> str:
    """A Literal's choice as YAML spells it: `true`, `scalar`, `3`."""
    return str(choice).lower() if isinstance(choice, bool) else str(choice)


def describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and abs(value) >= 10**30:  # its digits would fill the line (or fail past 4300)
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}… ({len(text):,} characters)"
