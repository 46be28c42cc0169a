"""Metric loggers and MFU."""

import pytest
import torch

from pretrain.training.metrics import mfu, peak_flops


def test_mfu_needs_a_known_peak():
    assert peak_flops(torch.device("cpu"), None) is None
    assert peak_flops(torch.device("cpu"), 1e12) == 1e12
    assert mfu(flops_per_token=6e9, tokens_per_s=1e5, world_size=2, peak=1e15) == pytest.approx(0.3)
