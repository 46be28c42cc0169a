"""Fixtures and the GPU rule; the shared helpers are in tests/helpers.py, the markers in pytest.ini.

Tiers (`pytest -m "not slow"` runs the fast tier in under a minute on 2 cores): a test that starts processes or
trains end to end is marked `slow`, whatever else it is (`distributed`, `slurm`); a `gpu` test is skipped on a
machine without one, where its interpreter or reference twin runs instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import HAS_GPU, SMALL


@pytest.fixture(autouse=True)
def rendezvous_unset():
    """A command run in-process sets its process group's rendezvous (RANK, MASTER_PORT, ...) in os.environ; a
    process a later test starts must not inherit it, or it would bind the port this process listens on.
    LOCAL_RANK stays: DeepSpeed reads it on every engine built in this process."""
    before = {name: os.environ.get(name) for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("gpu") and not HAS_GPU:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; its CPU twin runs instead"))


@pytest.fixture(scope="session")
def embedded(tmp_path_factory):
    """(DataConfig, PreparedData) of a small slice of the embedded corpus, prepared once per session."""
    from pretrain.config import DataConfig
    from pretrain.data.prepared import prepare_data

    cfg = DataConfig(cache_dir=str(tmp_path_factory.mktemp("embedded")), **SMALL)
    return cfg, prepare_data(cfg, progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A data cache shared by a module's tests (prepared once)."""
    return tmp_path_factory.mktemp("data_cache")
