"""SwiGLU gating: y = silu(gate) * up, elementwise."""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from pretrain_kernels._dispatch import as_rows, jit, tl, triton, use_triton
from pretrain_kernels._launch_config import DTYPES, LaunchConfig, powers_of_two


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch SwiGLU."""
    return F.silu(gate) * up


@jit
def _swiglu_fwd_kernel(
    G, U, Y,
    stride_g, stride_u, stride_y,
    n_cols,
    BLOCK: tl.constexpr,
):
    """Program (row, column block). y = g * sigmoid(g) * u, computed in fp32."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    g = tl.load(G + row * stride_g + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + row * stride_u + cols, mask=mask, other=0.0).to(tl.float32)
    y = g * tl.sigmoid(g) * u
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


@jit
def _swiglu_bwd_kernel(
    DY, G, U, DG, DU,
    stride_dy, stride_g, stride_u, stride_dg, stride_du,
    n_cols,
    BLOCK: tl.constexpr,
):
    """Program (row, column block); silu is recomputed rather than saved. With s = sigmoid(g):

        du = dy * g * s
        dg = dy * u * s * (1 + g * (1 - s))      (d silu(g) / dg = s + g * s * (1 - s))
    """
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + row * stride_g + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + row * stride_u + cols, mask=mask, other=0.0).to(tl.float32)
    s = tl.sigmoid(g)
    du = dy * g * s
    dg = dy * u * s * (1.0 + g * (1.0 - s))
    tl.store(DG + row * stride_dg + cols, dg.to(DG.dtype.element_ty), mask=mask)
    tl.store(DU + row * stride_du + cols, du.to(DU.dtype.element_ty), mask=mask)


_MAX_BLOCK = 2048


def _launch_settings(n_rows: int, n_cols: int) -> tuple[tuple[int, int], int, int]:
    """Grid, block and warps: column blocks of up to 2048 elements (little masked tail at d_ff like 5632 or
    22016), about 8 elements per thread."""
    block = min(_MAX_BLOCK, triton.next_power_of_2(n_cols))
    num_warps = max(1, min(8, block // 256))
    return (n_rows, triton.cdiv(n_cols, block)), block, num_warps


def launch_configs(arch: int) -> Iterator[LaunchConfig]:
    """Every compile the launchers below can ask for (the same on every target `arch`): each block
    `_launch_settings` picks, forward and backward, in each input dtype."""
    for n_cols in powers_of_two(_MAX_BLOCK):
        _, block, num_warps = _launch_settings(1, n_cols)
        for dtype in DTYPES:
            for kernel in (_swiglu_fwd_kernel, _swiglu_bwd_kernel):
                yield LaunchConfig.make(kernel, {"BLOCK": block}, num_warps, None, dtype, arch)


def _swiglu_fwd(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    g2, u2 = as_rows(gate), as_rows(up)
    n_rows, n_cols = g2.shape
    y = torch.empty((n_rows, n_cols), dtype=gate.dtype, device=gate.device)
    grid, block, num_warps = _launch_settings(n_rows, n_cols)
    _swiglu_fwd_kernel[grid](
        g2, u2, y,
        g2.stride(0), u2.stride(0), y.stride(0),
        n_cols,
        BLOCK=block, num_warps=num_warps,
    )
    return y.view(gate.shape)


def _swiglu_bwd(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dy2, g2, u2 = as_rows(dy), as_rows(gate), as_rows(up)
    n_rows, n_cols = g2.shape
    dg = torch.empty((n_rows, n_cols), dtype=gate.dtype, device=gate.device)
    du = torch.empty((n_rows, n_cols), dtype=up.dtype, device=up.device)
    grid, block, num_warps = _launch_settings(n_rows, n_cols)
    _swiglu_bwd_kernel[grid](
        dy2, g2, u2, dg, du,
        dy2.stride(0), g2.stride(0), u2.stride(0), dg.stride(0), du.stride(0),
        n_cols,
        BLOCK=block, num_warps=num_warps,
    )
    return dg.view(gate.shape), du.view(up.shape)


class _SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return _swiglu_fwd(gate, up)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, up = ctx.saved_tensors
        return _swiglu_bwd(dy, gate, up)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for two tensors of the same shape and dtype."""
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(
            f"swiglu: gate {tuple(gate.shape)} {gate.dtype} and up {tuple(up.shape)} {up.dtype} differ"
        )
    if use_triton(gate):
        return _SwiGLUFunction.apply(gate, up)
    return swiglu_reference(gate, up)
