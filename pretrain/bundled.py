"""What the package ships besides code: the configs of `configs/` and the Slurm scripts of `slurm/`.

setup.py installs the two folders as the packages `pretrain.configs` and `pretrain.slurm`, so they are found
the same way from a wheel in site-packages and from a checkout installed in editable mode. A config argument
that is not a file may name a bundled config: `tiny`, `10b`, `ablations/mqa` (`.yaml` optional).
"""

from __future__ import annotations

import functools
from importlib.resources import files
from pathlib import Path

from .errors import ConfigError


def _folder(package: str) -> Path:
    return Path(str(files(package)))  # installed unpacked (wheel or editable): a real folder


def configs_dir() -> Path:
    return _folder("pretrain.configs")


def slurm_script(name: str) -> Path:
    """A script of `slurm/`, e.g. `train.sbatch`."""
    return _folder("pretrain.slurm") / name


@functools.cache  # the CLI lists them on every parse; they do not change while a process runs
def config_names() -> tuple[str, ...]:
    """The bundled configs by name, e.g. `tiny`, `ablations/mqa`."""
    root = configs_dir()
    return tuple(sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml")))


def bundled_config(name: str) -> Path:
    """The bundled config called `name` (`tiny`, `tiny.yaml`, `ablations/mqa`)."""
    stem = name.removesuffix(".yaml")
    if stem not in config_names():
        raise ConfigError(f"config file not found: {name} (not a file, nor a bundled config: "
                          f"{', '.join(config_names())})")
    return configs_dir() / f"{stem}.yaml"


def config_path(argument: str | Path) -> Path:
    """A config argument as a file: the file itself if it exists, else the bundled config of that name."""
    path = Path(argument)
    try:
        return path if path.is_file() else bundled_config(str(argument))
    except PermissionError:  # a file this user may not see: reading it says so
        return path
