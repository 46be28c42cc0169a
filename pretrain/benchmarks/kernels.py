"""Benchmark the Triton kernels against PyTorch, forward and backward, at the shapes of the shipped models.

Shapes come from configs/1b.yaml and configs/10b.yaml (d_model, heads × head_dim, the MLP width), 8192 tokens
per call (batch 4 × seq 2048 and batch 2 × seq 4096 for attention):

- causal attention: `flash_attention` vs eager PyTorch (matmul, mask, softmax), `torch.compile` of
  that, and `F.scaled_dot_product_attention` forced onto its flash backend. Reported in TFLOP/s, with
  fwd FLOPs = 4 * B * H * S^2 * D / 2 (causal half) and bwd FLOPs = 2.5 x fwd.
- RMSNorm (no gain, as in the μP model) and SwiGLU: `kernels.*` vs eager and `torch.compile` of the
  references. Reported in GB/s of the minimal traffic (every input read once, every output written once),
  the same byte count for every implementation.

On a GPU, times are medians from `triton.testing.do_bench` in bf16; the forward is timed with autograd
recording (as in training) and the backward is (forward + backward) - forward. `pretrain gpu-check --dry-run`
runs the same code on CPU at tiny shapes, the kernels under Triton's interpreter (wall-clock medians; the
figures mean nothing there, the code paths are what it checks).

    python -m pretrain.benchmarks.kernels [--json results.json]      (needs a CUDA GPU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from pretrain_kernels.flash_attention import flash_attention
from pretrain_kernels.rms_norm import rms_norm, rms_norm_reference
from pretrain_kernels.swiglu import swiglu, swiglu_reference

from . import CONFIGS, figure

TOKENS = 8192


@dataclass(frozen=True)
class Shape:
    name: str
    d_model: int
    n_heads: int
    head_dim: int
    d_ff: int
    seq_lens: tuple[int, ...]
    tokens: int  # per call


@dataclass(frozen=True)
class Setting:
    """Where and how to measure: the GPU in bf16, or (dry run) the CPU with the kernels interpreted."""

    device: str
    dtype: torch.dtype
    compile_backend: str  # torch.compile's backend ("inductor"; "eager" in the dry run, where inductor
    # would spend minutes compiling C++ for shapes nobody times)

    @property
    def dry_run(self) -> bool:
        return self.device == "cpu"


GPU = Setting("cuda", torch.bfloat16, "inductor")
DRY_RUN = Setting("cpu", torch.float32, "eager")


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


def model_shape(config: str) -> Shape:
    """The kernel shapes of a shipped config (its name without .yaml): 8192 tokens per call."""
    from ..config import load_config

    m = load_config(CONFIGS / f"{config}.yaml").model
    return Shape(config.upper(), m.d_model, m.n_heads, m.head_dim, m.ffn_dim, (2048, 4096), TOKENS)


def tiny_shape(config: str) -> Shape:
    """The dry run's stand-in for a config's shapes: small enough for Triton's interpreter."""
    return Shape(f"{config.upper()} (tiny)", d_model=64, n_heads=2, head_dim=32, d_ff=160, seq_lens=(48,), tokens=96)


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


def _median_ms(fn: Callable[[], object], setting: Setting, grads: list[torch.Tensor] | None = None) -> float:
    if not setting.dry_run:
        import triton.testing

        return triton.testing.do_bench(fn, grad_to_none=grads, return_mode="median")
    times = []
    for _ in range(3):
        for t in grads or []:
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _time_fwd_bwd(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor],
                  setting: Setting) -> tuple[float, float]:
    """Median forward time and backward time in ms of `fn(*inputs)`."""
    grad = torch.randn_like(fn(*inputs))  # also compiles/warms up fn before anything is timed

    def forward_backward() -> None:
        fn(*inputs).backward(grad)

    forward_backward()
    fwd = _median_ms(lambda: fn(*inputs), setting)
    both = _median_ms(forward_backward, setting, grads=inputs)
    return fwd, max(both - fwd, 0.0)


def _measure(op: str, model: str, shape: str, impls: dict[str, Callable[..., torch.Tensor]],
             inputs: list[torch.Tensor], unit: str, fwd_work: float, bwd_work: float,
             setting: Setting) -> Iterator[Result]:
    """Time every implementation on the same inputs; work is FLOPs (TFLOP/s) or bytes (GB/s)."""
    per_second = 1e12 if unit == "TFLOP/s" else 1e9
    for impl, fn in impls.items():
        result = Result(op, model, shape, impl, unit=unit)
        try:
            result.fwd_ms, result.bwd_ms = _time_fwd_bwd(fn, inputs, setting)
            result.fwd_rate = fwd_work / (result.fwd_ms * 1e-3) / per_second
            if result.bwd_ms > 0:
                result.bwd_rate = bwd_work / (result.bwd_ms * 1e-3) / per_second
        except Exception as error:  # noqa: BLE001 - one failing implementation must not hide the others
            first_line = (str(error).splitlines() or [""])[0]
            result.error = f"{type(error).__name__}: {first_line[:200]}"
        finally:
            if not setting.dry_run:
                torch.cuda.empty_cache()
        yield result


def _leaf(setting: Setting, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, device=setting.device, dtype=setting.dtype, requires_grad=True)


def bench_attention(shape: Shape, seq: int, setting: Setting) -> Iterator[Result]:
    batch, heads, head_dim = shape.tokens // seq, shape.n_heads, shape.head_dim
    scale = 1.0 / head_dim  # μP attention scale
    inputs = [_leaf(setting, batch, heads, seq, head_dim) for _ in range(3)]
    impls = {
        "triton": lambda q, k, v: flash_attention(q, k, v, causal=True, scale=scale),
        "sdpa-flash": lambda q, k, v: _sdpa_flash(q, k, v, scale),
        "eager": lambda q, k, v: _eager_attention(q, k, v, scale),
        "compile": torch.compile(lambda q, k, v: _eager_attention(q, k, v, scale), dynamic=False,
                                 backend=setting.compile_backend),
    }
    fwd_flops = 4 * batch * heads * seq * seq * head_dim / 2
    yield from _measure("attention", shape.name, f"B{batch} H{heads} S{seq} D{head_dim}", impls, inputs,
                        "TFLOP/s", fwd_flops, 2.5 * fwd_flops, setting)


# op -> (Triton op, reference, row width attribute of Shape, inputs, tensors of that size moved forward, backward)
_MEMORY_BOUND = {
    "rms_norm": (rms_norm, rms_norm_reference, "d_model", 1, 2, 3),
    "swiglu": (swiglu, swiglu_reference, "d_ff", 2, 3, 5),
}


def bench_memory_bound(op: str, shape: Shape, setting: Setting) -> Iterator[Result]:
    triton_op, reference, width_key, n_inputs, fwd_moved, bwd_moved = _MEMORY_BOUND[op]
    width = getattr(shape, width_key)
    inputs = [_leaf(setting, shape.tokens, width) for _ in range(n_inputs)]
    impls = {"triton": triton_op, "eager": reference,
             "compile": torch.compile(reference, dynamic=False, backend=setting.compile_backend)}
    size = shape.tokens * width * setting.dtype.itemsize
    yield from _measure(op, shape.name, f"{shape.tokens}x{width}", impls, inputs, "GB/s", fwd_moved * size,
                        bwd_moved * size, setting)


def bench_shape(shape: Shape, setting: Setting) -> Iterator[Result]:
    for seq in shape.seq_lens:
        yield from bench_attention(shape, seq, setting)
    for op in _MEMORY_BOUND:
        yield from bench_memory_bound(op, shape, setting)


COLUMNS = (f"{'op':<10} {'model':<5} {'shape':<24} {'impl':<11} {'fwd ms':>8} {'bwd ms':>8} "
           f"{'fwd':>8} {'bwd':>8}")


def format_row(r: Result) -> str:
    line = (f"{r.op:<10} {r.model:<5} {r.shape:<24} {r.impl:<11} {figure(r.fwd_ms, '8.3f'):>8} "
            f"{figure(r.bwd_ms, '8.3f'):>8} {figure(r.fwd_rate, '8.1f'):>8} {figure(r.bwd_rate, '8.1f'):>8} {r.unit}")
    return line + (f"  [{r.error}]" if r.error else "")


def main(argv: list[str] | None = None) -> None:
    import triton

    from pretrain_kernels._dispatch import kernels_interpreted

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("pretrain.benchmarks.kernels needs a CUDA GPU; none is visible, so nothing was measured.")
    if kernels_interpreted():
        sys.exit("pretrain.benchmarks.kernels: TRITON_INTERPRET is set, so the kernels would be interpreted; unset it.")

    device = torch.cuda.get_device_name()
    print(f"{device}, torch {torch.__version__}, triton {triton.__version__}, {GPU.dtype}")
    print(COLUMNS)
    results = []
    for shape in (model_shape("1b"), model_shape("10b")):
        for result in bench_shape(shape, GPU):
            print(format_row(result), flush=True)
            results.append(result)
    if args.json:
        meta = {"device": device, "torch": torch.__version__, "triton": triton.__version__,
                "dtype": str(GPU.dtype), "tokens_per_call": TOKENS}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": [asdict(r) for r in results]}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
