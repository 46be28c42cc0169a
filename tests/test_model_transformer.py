import pytest
import torch

from pretrain.config import ModelConfig
from pretrain.model.transformer import Transformer, apply_rope, rope_angles


def _model(**kw) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{"d_model": 64, "n_layers": 2, "head_dim": 16, "zero_query": False, **kw}),
                        vocab_size=101)
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 2}, {"n_kv_heads": 1, "mlp": "relu2"}, {"mlp": "relu"},
                                {"parametrization": "sp", "norm_gains": True}])
def test_causality(kw):
    model = _model(**kw)
    idx = torch.randint(0, 101, (2, 24))
    changed = idx.clone()
    changed[:, 15:] = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert a.shape == (2, 24, 101)
    torch.testing.assert_close(a[:, :15], b[:, :15], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def test_rope_is_a_rotation_of_half_split_pairs():
    cos, sin = rope_angles(5, 8, 10000.0, torch.device("cpu"))
    x = torch.randn(1, 1, 5, 8)
    y = apply_rope(x, cos, sin)
    # pairs (i, i + D/2) rotate by angle t·base^(-2i/D); norms are kept
    t, i = 3, 1
    theta = t * 10000.0 ** (-2 * i / 8)
    a, b = x[0, 0, t, i], x[0, 0, t, i + 4]
    torch.testing.assert_close(y[0, 0, t, i], a * torch.cos(torch.tensor(theta)) - b * torch.sin(torch.tensor(theta)))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))


def test_meta_device_build_counts_parameters():
    with torch.device("meta"):
        model = Transformer(ModelConfig(d_model=256, n_layers=3, head_dim=64, n_kv_heads=2), vocab_size=1000)
    d, kv, f = 256, 2 * 64, 768
    per_block = d * d * 2 + 2 * d * kv + 3 * d * f
    assert model.num_params() == 3 * per_block + 2 * 1000 * d
    assert model.num_params(non_embedding=True) == 3 * per_block
