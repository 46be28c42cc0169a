"""Typed run configuration: YAML in, nested dataclasses out, every error naming its key.

- `checking`: how a setting is declared (`setting`: default, documentation, bounds) and the engine that checks
  raw values against the declarations (type, choices, bounds, finite numbers, 64-bit integers, non-empty
  text).
- `schema`: the sections and their settings, the values derived from them, and the rules relating two settings.
- `loading`: YAML files with `base:` chains and `key.sub=value` overrides, checked into a `Config`; no key
  given twice, nesting bounded.
- `reference`: the README's table of every setting, from the declarations (`python -m pretrain.config`).

A config file is a mapping of the sections; anything left out takes its default. `data.source` (with
`text_field`, `hub_*`) is shorthand for a one-source `data.sources`: a built `DataConfig` holds its sources in
`data.sources` only, so everything downstream sees one shape.

May import: `pretrain.errors`. Never anything else of the stack.
"""

from .checking import parse_number
from .loading import apply_override, config_from_dict, load_config, parse_yaml
from .reference import reference_table
from .schema import (
    Config,
    DataConfig,
    DeepSpeedConfig,
    ModelConfig,
    OptimConfig,
    SourceConfig,
    TrainConfig,
    WandbConfig,
)

__all__ = [
    "Config",
    "DataConfig",
    "DeepSpeedConfig",
    "ModelConfig",
    "OptimConfig",
    "SourceConfig",
    "TrainConfig",
    "WandbConfig",
    "apply_override",
    "config_from_dict",
    "load_config",
    "parse_number",
    "parse_yaml",
    "reference_table",
]
