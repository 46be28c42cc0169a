"""The model gives the same loss and gradients with its Triton kernels (under the interpreter) as without."""

import pytest
import torch
import torch.nn.functional as F

from pretrain.config import ModelConfig
from pretrain.model.transformer import Transformer
from tests.helpers import INTERPRETER_ONLY

VOCAB = 97


def _autograd_nodes(t: torch.Tensor) -> set[str]:
    """Class names of every node in the autograd graph that produced `t`."""
    seen, stack = set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(next_node for next_node, _ in node.next_functions)
    return {type(node).__name__ for node in seen}


def _loss_and_grads(
    model: Transformer, idx: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor], set[str]]:
    """Next-token loss, every parameter's gradient, and the autograd nodes the forward pass recorded."""
    logits = model(idx[:, :-1])  # (B, T, vocab)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), idx[:, 1:].reshape(-1))
    nodes = _autograd_nodes(loss)
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}, nodes


@INTERPRETER_ONLY
@pytest.mark.parametrize("overrides", [{}, {"n_kv_heads": 1, "norm_gains": True}], ids=["mha", "mqa-gains"])
def test_kernels_match_references_in_the_model(monkeypatch, overrides):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    cfg = {"d_model": 64, "n_layers": 2, "head_dim": 16, "zero_query": False, **overrides}
    torch.manual_seed(0)
    with_kernels = Transformer(ModelConfig(**cfg, use_kernels=True), vocab_size=VOCAB)
    with_kernels.init_weights()
    references = Transformer(ModelConfig(**cfg, use_kernels=False), vocab_size=VOCAB)
    references.load_state_dict(with_kernels.state_dict())
    idx = torch.randint(0, VOCAB, (2, 38))  # 37 positions: not a multiple of any tile

    loss, grads, nodes = _loss_and_grads(with_kernels, idx)
    loss_ref, grads_ref, nodes_ref = _loss_and_grads(references, idx)

    kernel_nodes = {"_RMSNormFunctionBackward", "_SwiGLUFunctionBackward", "_FlashAttentionFunctionBackward"}
    assert kernel_nodes <= nodes, f"kernels not used: {kernel_nodes - nodes}"
    assert not kernel_nodes & nodes_ref

    torch.testing.assert_close(loss, loss_ref, atol=1e-5, rtol=1e-5)
    assert grads.keys() == grads_ref.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], atol=1e-5, rtol=1e-4,
                                   msg=lambda m, n=name: f"{n}: {m}")
