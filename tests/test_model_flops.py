"""Parameter counts of the shipped configs (on the meta device) and training FLOPs per token."""

import pytest

from pretrain.config import load_config
from pretrain.model.flops import count_params, flops_per_token
from tests.helpers import CONFIGS


@pytest.fixture(scope="module")
def cfg_10b():
    return load_config(CONFIGS / "10b.yaml")


def test_10b_model_built_on_meta_has_10b_params(cfg_10b):
    params = count_params(cfg_10b.model, cfg_10b.vocab_size)
    assert params.total == pytest.approx(10e9, rel=0.03)
    # per layer: 4d² attention + 3·d·F SwiGLU, F = 21888 (the multiple of 64 nearest above 8/3·d)
    assert params.non_embedding == 12 * (4 * 8192**2 + 3 * 8192 * 21888)
    assert cfg_10b.model.n_heads == 64 and cfg_10b.model.ffn_dim == 21888
    one_b = load_config(CONFIGS / "1b.yaml")
    assert count_params(one_b.model, one_b.vocab_size).total == pytest.approx(1e9, rel=0.15)


def test_flops_per_token_is_6n_plus_causal_attention(cfg_10b):
    params = count_params(cfg_10b.model, cfg_10b.vocab_size)
    matmul_weights = params.total - cfg_10b.vocab_size * 8192  # the embedding is a lookup
    assert flops_per_token(cfg_10b) == 6 * matmul_weights + 6 * 12 * 2048 * 8192
