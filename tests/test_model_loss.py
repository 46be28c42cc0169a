"""The chunked readout loss against the plain path: the same loss and gradients (fp32, CPU), for token counts
that the chunk does not divide, alone and inside the model with and without the Triton kernels.

"The same" is measured against fp32's own noise: the plain path computed again on the same tokens in another
order (a permutation of the rows, so every sum over tokens is taken in another order) differs from itself by
a few ulps; the chunked path must stay within MARGIN times that spread, per tensor (relative L2)."""

import pytest
import torch

from pretrain.config import ModelConfig
from pretrain.model.loss import chunked_cross_entropy, cross_entropy
from pretrain.model.transformer import Transformer
from tests.helpers import INTERPRETER_ONLY

MARGIN = 8
FLOOR = torch.finfo(torch.float32).eps


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm().clamp_min(FLOOR)).item()


def loss_and_grads(loss_fn, *leaves: torch.Tensor) -> list[torch.Tensor]:
    for leaf in leaves:
        leaf.grad = None
    loss = loss_fn()
    (loss * 0.75).backward()  # not 1: the backward must scale by the incoming gradient (accumulation, loss scale)
    return [loss.detach(), *(leaf.grad.clone() for leaf in leaves)]


def assert_within_noise(got: list[torch.Tensor], want: list[torch.Tensor], reordered: list[torch.Tensor],
                        names: list[str]) -> None:
    for name, g, w, r in zip(names, got, want, reordered):
        noise = max(relative_error(r, w), FLOOR)
        assert relative_error(g, w) <= MARGIN * noise, (name, relative_error(g, w), noise)


@pytest.mark.parametrize("tokens, chunk", [(1000, 128), (1000, 1), (77, 200), (513, 512)])
def test_chunked_equals_plain_loss_and_gradients(tokens, chunk):
    torch.manual_seed(0)
    hidden = torch.randn(tokens, 48, requires_grad=True)
    weight = (0.2 * torch.randn(301, 48)).requires_grad_()
    targets = torch.randint(0, 301, (tokens,))
    order = torch.randperm(tokens)

    def plain(rows=slice(None)):
        return cross_entropy(hidden[rows] @ weight.t(), targets[rows])

    want = loss_and_grads(plain, hidden, weight)
    reordered = loss_and_grads(lambda: plain(order), hidden, weight)
    got = loss_and_grads(lambda: chunked_cross_entropy(hidden, weight, targets, chunk), hidden, weight)
    assert_within_noise(got, want, reordered, ["loss", "hidden", "weight"])
    with torch.no_grad():  # eval: the same loss, no gradients computed
        assert chunked_cross_entropy(hidden, weight, targets, chunk).item() == pytest.approx(want[0].item(), rel=1e-6)


@pytest.mark.parametrize("use_kernels", [False, pytest.param(True, marks=[pytest.mark.slow, INTERPRETER_ONLY])],
                         ids=["references", "kernels"])
def test_the_model_trains_the_same_with_the_chunked_loss(monkeypatch, use_kernels):
    if use_kernels:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    base = {"d_model": 64, "n_layers": 2, "head_dim": 16, "zero_query": False, "use_kernels": use_kernels}
    torch.manual_seed(0)
    plain = Transformer(ModelConfig(**base, loss_chunk=0), vocab_size=97)
    plain.init_weights()
    chunked = Transformer(ModelConfig(**base, loss_chunk=10), vocab_size=97)  # 2 × 37 tokens: ragged chunks
    chunked.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 97, (2, 38))
    params = {model: list(model.parameters()) for model in (plain, chunked)}

    want = loss_and_grads(lambda: plain(idx[:, :-1], idx[:, 1:]), *params[plain])
    reordered = loss_and_grads(lambda: plain(idx.flip(0)[:, :-1], idx.flip(0)[:, 1:]), *params[plain])
    got = loss_and_grads(lambda: chunked(idx[:, :-1], idx[:, 1:]), *params[chunked])
    names = ["loss", *(name for name, _ in plain.named_parameters())]
    assert_within_noise(got, want, reordered, names)
    assert torch.equal(plain(idx), chunked(idx))  # without targets, both give the logits
