"""Fixtures and the GPU rule; the shared helpers are in tests/helpers.py, the markers in pytest.ini.

Tiers (`pytest -m "not slow"` runs the fast tier in under a minute on 2 cores): a test that starts processes or
trains end to end is marked `slow`, whatever else it is (`distributed`, `slurm`); a `gpu` test is skipped on a
machine without one, where its interpreter or reference twin runs instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import HAS_GPU, SMALL


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
