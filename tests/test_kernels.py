"""Triton kernels against their PyTorch references: outputs and every input gradient.

Each case runs twice: on CPU under Triton's interpreter (TRITON_INTERPRET=1, always, fp32 and fp16) and on a
CUDA GPU in bf16 when one is present. Inputs are views into NaN-filled buffers, so any out-of-bounds read
poisons the result instead of silently reading a neighbour's value.
"""

import pytest
import torch

from pretrain_kernels._dispatch import check_interpreter_numpy
from pretrain_kernels.flash_attention import _FlashAttentionFunction, flash_attention, flash_attention_reference
from pretrain_kernels.rms_norm import _RMSNormFunction, rms_norm, rms_norm_reference
from pretrain_kernels.swiglu import _SwiGLUFunction, swiglu, swiglu_reference
from tests.helpers import INTERPRETER_ONLY

# (device, dtype) pairs every case runs on.
TARGETS = [
    pytest.param(("cpu", torch.float32), id="interp-fp32", marks=INTERPRETER_ONLY),
    pytest.param(("cpu", torch.float16), id="interp-fp16", marks=INTERPRETER_ONLY),
    pytest.param(("cuda", torch.bfloat16), id="gpu-bf16", marks=pytest.mark.gpu),
]
# Absolute and relative tolerance of the kernel against an fp32 reference on the same (rounded) inputs.
TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2)}


@pytest.fixture
def target(request, monkeypatch):
    """Resolve a (device, dtype) pair; CPU cases switch the dispatcher to the Triton interpreter."""
    device, dtype = request.param
    if device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    return torch.device(device), dtype


def _guarded(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, pad_dims: int = 1
) -> torch.Tensor:
    """Random normal values in a view of a NaN-filled buffer padded around its last `pad_dims` dims."""
    lead, tail = shape[: len(shape) - pad_dims], shape[len(shape) - pad_dims:]
    buffer = torch.full((*lead, *(n + 5 for n in tail)), float("nan"), dtype=dtype, device=device)
    view = buffer[(..., *(slice(2, 2 + n) for n in tail))]
    view.copy_(torch.randn(shape, device=device))
    return view


def _leaves(*tensors: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The tensors as gradient leaves (still NaN-guarded views), and fp32 copies for the reference."""
    guarded = [t.requires_grad_() for t in tensors]
    reference = [t.detach().float().requires_grad_() for t in tensors]
    return guarded, reference


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    atol, rtol = TOLERANCE[dtype]
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    torch.testing.assert_close(actual.float(), expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("target", TARGETS, indirect=True)
@pytest.mark.parametrize("shape", [(5, 123, 123), (3, 2, 1000)])
@pytest.mark.parametrize("with_weight", [True, False], ids=["weight", "no-weight"])
def test_rms_norm(target, shape, with_weight):
    device, dtype = target
    torch.manual_seed(0)
    inputs = [_guarded(shape, dtype, device)]
    if with_weight:
        inputs.append(_guarded(shape[-1:], dtype, device))
    (x, *w), (x_ref, *w_ref) = _leaves(*inputs)
    y = rms_norm(x, *w, eps=1e-5)
    y_ref = rms_norm_reference(x_ref, *w_ref, eps=1e-5)
    _assert_close(y, y_ref, dtype, "y")
    dy = _guarded(shape, dtype, device)
    y.backward(dy)
    y_ref.backward(dy.float())
    _assert_close(x.grad, x_ref.grad, dtype, "dx")
    if with_weight:
        # dW sums over every row: compare relative to its size.
        scale = w_ref[0].grad.abs().max()
        _assert_close(w[0].grad / scale, w_ref[0].grad / scale, dtype, "dw")


@pytest.mark.parametrize("target", TARGETS, indirect=True)
@pytest.mark.parametrize("shape", [(5, 123, 123), (2, 3, 3000)])
def test_swiglu(target, shape):
    device, dtype = target
    torch.manual_seed(0)
    (gate, up), (gate_ref, up_ref) = _leaves(_guarded(shape, dtype, device), _guarded(shape, dtype, device))
    y = swiglu(gate, up)
    y_ref = swiglu_reference(gate_ref, up_ref)
    _assert_close(y, y_ref, dtype, "y")
    dy = _guarded(shape, dtype, device)
    y.backward(dy)
    y_ref.backward(dy.float())
    _assert_close(gate.grad, gate_ref.grad, dtype, "dgate")
    _assert_close(up.grad, up_ref.grad, dtype, "dup")


# (batch, heads, kv_heads, seq, head_dim, causal, scale): ragged sequences, GQA, MQA, scale 1/D (muP) or None.
ATTENTION_CASES = [
    pytest.param(2, 4, 2, 37, 32, True, 1 / 32, id="gqa-causal-s37-d32"),
    pytest.param(1, 3, 1, 50, 16, False, 1 / 16, id="mqa-full-s50-d16"),
    pytest.param(2, 2, 2, 64, 64, True, None, id="mha-causal-s64-d64"),
    pytest.param(1, 2, 1, 41, 128, False, 1 / 128, id="mqa-full-s41-d128"),
]


@pytest.mark.parametrize("target", TARGETS, indirect=True)
@pytest.mark.parametrize(("batch", "heads", "kv_heads", "seq", "head_dim", "causal", "scale"),
                         ATTENTION_CASES)
def test_flash_attention(target, batch, heads, kv_heads, seq, head_dim, causal, scale):
    device, dtype = target
    torch.manual_seed(0)
    q = _guarded((batch, heads, seq, head_dim), dtype, device, pad_dims=2)
    k = _guarded((batch, kv_heads, seq, head_dim), dtype, device, pad_dims=2)
    v = _guarded((batch, kv_heads, seq, head_dim), dtype, device, pad_dims=2)
    (q, k, v), (q_ref, k_ref, v_ref) = _leaves(q, k, v)
    o = flash_attention(q, k, v, causal=causal, scale=scale)
    o_ref = flash_attention_reference(q_ref, k_ref, v_ref, causal=causal, scale=scale)
    _assert_close(o, o_ref, dtype, "o")
    do = _guarded(o.shape, dtype, device, pad_dims=2)
    o.backward(do)
    o_ref.backward(do.float())
    for name, actual, expected in [("dq", q, q_ref), ("dk", k, k_ref), ("dv", v, v_ref)]:
        _assert_close(actual.grad, expected.grad, dtype, name)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
def test_flash_attention_gpu_long_sequence(causal):
    """Production tiles (128 query rows) over a long ragged sequence, bf16, head_dim 128, GQA."""
    torch.manual_seed(0)
    q = _guarded((2, 8, 1000, 128), torch.bfloat16, torch.device("cuda"), pad_dims=2)
    k = _guarded((2, 2, 1000, 128), torch.bfloat16, torch.device("cuda"), pad_dims=2)
    v = _guarded((2, 2, 1000, 128), torch.bfloat16, torch.device("cuda"), pad_dims=2)
    (q, k, v), (q_ref, k_ref, v_ref) = _leaves(q, k, v)
    o = flash_attention(q, k, v, causal=causal, scale=1 / 128)
    o_ref = flash_attention_reference(q_ref, k_ref, v_ref, causal=causal, scale=1 / 128)
    _assert_close(o, o_ref, torch.bfloat16, "o")
    do = torch.randn_like(o)
    o.backward(do)
    o_ref.backward(do.float())
    for name, actual, expected in [("dq", q, q_ref), ("dk", k, k_ref), ("dv", v, v_ref)]:
        _assert_close(actual.grad, expected.grad, torch.bfloat16, name)


def _ops_on(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each public op applied to (views of) x, keyed by the autograd Function its Triton path must use."""
    attn_in = x.view(1, 2, 4, 16)
    return {
        _RMSNormFunction.__name__: rms_norm(x),
        _SwiGLUFunction.__name__: swiglu(x, x),
        _FlashAttentionFunction.__name__: flash_attention(attn_in, attn_in, attn_in),
    }


@INTERPRETER_ONLY
def test_dispatch_uses_triton_under_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = torch.randn(8, 16, requires_grad=True)
    for function_name, out in _ops_on(x).items():
        assert type(out.grad_fn).__name__ == f"{function_name}Backward"


@pytest.mark.parametrize("triton_version, numpy_version, refused", [
    ("3.6.0", "2.4.1", True), ("3.6.0", "2.2.6", False), ("3.7.0", "2.4.1", False)])
def test_interpreter_refuses_triton_3_6_with_numpy_2_4(monkeypatch, triton_version, numpy_version, refused):
    """Seen here: triton 3.6's interpreter fails inside every kernel with a runtime loop bound under NumPy 2.4
    (and passes every kernel test under NumPy 2.2); the dispatch says so in one line instead."""
    import numpy
    import triton

    monkeypatch.setattr(triton, "__version__", triton_version)
    monkeypatch.setattr(numpy, "__version__", numpy_version)
    if refused:
        with pytest.raises(RuntimeError, match=r"numpy < 2.4"):
            check_interpreter_numpy()
    else:
        check_interpreter_numpy()


def test_dispatch_uses_reference_on_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(8, 16, requires_grad=True)
    for function_name, out in _ops_on(x).items():
        assert function_name not in type(out.grad_fn).__name__


@INTERPRETER_ONLY
def test_flash_attention_rejects_bad_shapes(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q = torch.randn(1, 4, 8, 24)
    with pytest.raises(ValueError, match="power of two"):
        flash_attention(q, q, q)
    with pytest.raises(ValueError, match="kv_heads must divide heads"):
        flash_attention(torch.randn(1, 4, 8, 16), torch.randn(1, 3, 8, 16), torch.randn(1, 3, 8, 16))
