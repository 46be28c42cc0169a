"""Benchmark the Triton kernels against PyTorch on a CUDA GPU (bf16), forward and backward.

Measures, at the shapes of a ~1B model (d_model 2048, 16 heads of 128, d_ff 5632) and a ~10B model
(d_model 8192, 64 heads of 128, d_ff 22016), 8192 tokens per call (batch 4 x seq 2048, batch 2 x seq 4096):

- causal attention: `kernels.flash_attention` vs eager PyTorch (matmul, mask, softmax), `torch.compile` of
  that, and `F.scaled_dot_product_attention` forced onto its flash backend. Reported in TFLOP/s, with
  fwd FLOPs = 4 * B * H * S^2 * D / 2 (causal half) and bwd FLOPs = 2.5 x fwd.
- RMSNorm (no gain, as in the muP model) and SwiGLU: `kernels.*` vs eager and `torch.compile` of the
  references. Reported in GB/s of the minimal traffic (every input read once, every output written once),
  the same byte count for every implementation.

Times are medians from `triton.testing.do_bench`; the forward is timed with autograd recording (as in
training) and the backward is (forward + backward) - forward.

    python -m pretrain.benchmarks.kernels [--json results.json]
"""

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
import triton
import triton.testing

import kernels
from kernels._dispatch import kernels_interpreted

MODELS = {
    "1B": {"d_model": 2048, "n_heads": 16, "head_dim": 128, "d_ff": 5632},
    "10B": {"d_model": 8192, "n_heads": 64, "head_dim": 128, "d_ff": 22016},
}
SEQ_LENS = (2048, 4096)
TOKENS = 8192
DTYPE = torch.bfloat16


@dataclass
class Result:
    op: str
    model: str
    shape: str
    impl: str
    fwd_ms: float | None = None
    bwd_ms: float | None = None
    unit: str = ""
    fwd_rate: float | None = None  # TFLOP/s or GB/s
    bwd_rate: float | None = None
    error: str | None = None


def _eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention as a user would write it in PyTorch: the (S, S) scores are materialised."""
    seq = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) * scale
    future = torch.ones(seq, seq, dtype=torch.bool, device=q.device).triu(1)
    probs = scores.masked_fill(future, float("-inf")).softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    return probs @ v


def _sdpa_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)


def _time_fwd_bwd(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor]) -> tuple[float, float]:
    """Median forward time and backward time in ms of `fn(*inputs)`."""
    grad = torch.randn_like(fn(*inputs))  # also compiles/warms up fn before anything is timed

    def forward_backward() -> None:
        fn(*inputs).backward(grad)

    forward_backward()
    fwd = triton.testing.do_bench(lambda: fn(*inputs), return_mode="median")
    both = triton.testing.do_bench(forward_backward, grad_to_none=inputs, return_mode="median")
    return fwd, max(both - fwd, 0.0)


def _measure(
    op: str, model: str, shape: str, impls: dict[str, Callable[..., torch.Tensor]],
    inputs: list[torch.Tensor], unit: str, fwd_work: float, bwd_work: float,
) -> list[Result]:
    """Time every implementation on the same inputs; work is FLOPs (TFLOP/s) or bytes (GB/s)."""
    per_second = 1e12 if unit == "TFLOP/s" else 1e9
    results = []
    for impl, fn in impls.items():
        result = Result(op, model, shape, impl, unit=unit)
        try:
            result.fwd_ms, result.bwd_ms = _time_fwd_bwd(fn, inputs)
            result.fwd_rate = fwd_work / (result.fwd_ms * 1e-3) / per_second
            if result.bwd_ms > 0:
                result.bwd_rate = bwd_work / (result.bwd_ms * 1e-3) / per_second
        except Exception as error:  # noqa: BLE001 - one failing implementation must not hide the others
            first_line = (str(error).splitlines() or [""])[0]
            result.error = f"{type(error).__name__}: {first_line[:200]}"
        finally:
            torch.cuda.empty_cache()
        results.append(result)
        _print_row(result)
    return results


def _leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, device="cuda", dtype=DTYPE, requires_grad=True)


def bench_attention(model: str, seq: int) -> list[Result]:
    cfg = MODELS[model]
    batch, heads, head_dim = TOKENS // seq, cfg["n_heads"], cfg["head_dim"]
    scale = 1.0 / head_dim  # muP attention scale
    inputs = [_leaf(batch, heads, seq, head_dim) for _ in range(3)]
    impls = {
        "triton": lambda q, k, v: kernels.flash_attention(q, k, v, causal=True, scale=scale),
        "sdpa-flash": lambda q, k, v: _sdpa_flash(q, k, v, scale),
        "eager": lambda q, k, v: _eager_attention(q, k, v, scale),
        "compile": torch.compile(lambda q, k, v: _eager_attention(q, k, v, scale), dynamic=False),
    }
    fwd_flops = 4 * batch * heads * seq * seq * head_dim / 2
    return _measure("attention", model, f"B{batch} H{heads} S{seq} D{head_dim}", impls, inputs,
                    "TFLOP/s", fwd_flops, 2.5 * fwd_flops)


# op -> (Triton op, reference, row width in MODELS, inputs, tensors of that size moved forward, backward)
_MEMORY_BOUND = {
    "rms_norm": (kernels.rms_norm, kernels.rms_norm_reference, "d_model", 1, 2, 3),
    "swiglu": (kernels.swiglu, kernels.swiglu_reference, "d_ff", 2, 3, 5),
}


def bench_memory_bound(op: str, model: str) -> list[Result]:
    triton_op, reference, width_key, n_inputs, fwd_moved, bwd_moved = _MEMORY_BOUND[op]
    width = MODELS[model][width_key]
    inputs = [_leaf(TOKENS, width) for _ in range(n_inputs)]
    impls = {"triton": triton_op, "eager": reference, "compile": torch.compile(reference, dynamic=False)}
    size = TOKENS * width * DTYPE.itemsize
    return _measure(op, model, f"{TOKENS}x{width}", impls, inputs, "GB/s", fwd_moved * size, bwd_moved * size)


_COLUMNS = (f"{'op':<10} {'model':<5} {'shape':<24} {'impl':<11} {'fwd ms':>8} {'bwd ms':>8} "
            f"{'fwd':>8} {'bwd':>8}")


def _print_row(r: Result) -> None:
    def num(x: float | None, fmt: str) -> str:
        return format(x, fmt) if x is not None else "-"

    line = (f"{r.op:<10} {r.model:<5} {r.shape:<24} {r.impl:<11} {num(r.fwd_ms, '8.3f'):>8} "
            f"{num(r.bwd_ms, '8.3f'):>8} {num(r.fwd_rate, '8.1f'):>8} {num(r.bwd_rate, '8.1f'):>8} {r.unit}")
    print(line + (f"  [{r.error}]" if r.error else ""), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("pretrain.benchmarks.kernels needs a CUDA GPU; none is visible, so nothing was measured.")
    if kernels_interpreted():
        sys.exit("pretrain.benchmarks.kernels: TRITON_INTERPRET is set, so the kernels would be interpreted; unset it.")

    device = torch.cuda.get_device_name()
    print(f"{device}, torch {torch.__version__}, triton {triton.__version__}, {DTYPE}")
    print(_COLUMNS)
    results = []
    for model in MODELS:
        for seq in SEQ_LENS:
            results += bench_attention(model, seq)
        for op in _MEMORY_BOUND:
            results += bench_memory_bound(op, model)
    if args.json:
        meta = {"device": device, "torch": torch.__version__, "triton": triton.__version__,
                "dtype": str(DTYPE), "tokens_per_call": TOKENS}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": [asdict(r) for r in results]}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
