"""RMSNorm over the last dimension: y = x / sqrt(mean(x^2) + eps) * w, the gain w optional."""

from collections.abc import Iterator

import torch

from pretrain_kernels._dispatch import as_rows, jit, tl, triton, use_triton
from pretrain_kernels._launch_config import DTYPES, LaunchConfig, powers_of_two


def rms_norm_reference(
    x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Plain PyTorch RMSNorm, computed in fp32 and returned in the input dtype."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    return y.to(x.dtype)


@jit
def _rms_norm_fwd_kernel(
    X, Y, W, RSTD,
    stride_x, stride_y,
    n_cols, eps,
    HAS_WEIGHT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One row per program.

    rstd = 1 / sqrt(sum_j x_j^2 / n + eps);  y_j = x_j * rstd * w_j  (w_j = 1 without a weight).
    rstd is stored (fp32) for the backward pass.
    """
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    y = x * rstd
    if HAS_WEIGHT:
        y = y * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@jit
def _rms_norm_bwd_kernel(
    DY, X, W, RSTD, DX, DW_PARTIAL,
    stride_dy, stride_x, stride_dx,
    n_rows, n_cols, rows_per_program,
    HAS_WEIGHT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Each program walks a contiguous range of rows.

    With xhat = x * rstd and g = dy * w:
        dx = rstd * (g - xhat * sum_j(g_j * xhat_j) / n)
        dw = sum over rows of dy * xhat   (this program's rows only, written to DW_PARTIAL[program];
                                          the host sums the partials: deterministic, no atomics)
    """
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    row_start = pid.to(tl.int64) * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    for row in range(row_start, row_end):
        dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        xhat = x * rstd
        g = dy
        if HAS_WEIGHT:
            g = dy * w
            dw += dy * xhat
        dx = rstd * (g - xhat * (tl.sum(g * xhat, axis=0) / n_cols))
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
    if HAS_WEIGHT:
        tl.store(DW_PARTIAL + pid.to(tl.int64) * n_cols + cols, dw, mask=mask)


# A row lives in registers, one program per row; the backward pass holds four values per element (x, dy, w and
# the dW partial). Rows stop at 8192 elements: at 16384 the backward spills registers at 16 and at 32 warps. Up
# to 2048 elements a thread holds at most 16 of them; 8192 takes 32 warps (16 spill), 4096 takes 16 (triton 3.6
# spills the forward at 8 on sm_90), 2048 takes 4 (8 made ptxas spill 4 bytes on sm_80).
# tests/test_kernels_launch.py compiles every block for sm_80 and sm_90 and fails on a spill.
_MAX_BLOCK = 8192


def _row_settings(n_cols: int) -> tuple[int, int]:
    """Block size (the whole row, padded to a power of two) and warps for a row of `n_cols` elements."""
    block = triton.next_power_of_2(n_cols)
    if block > _MAX_BLOCK:
        raise ValueError(f"rms_norm: rows of {n_cols} elements exceed the {_MAX_BLOCK} a single program holds "
                         "in registers")
    num_warps = 32 if block >= 8192 else 16 if block >= 4096 else 4
    return block, num_warps


def launch_configs(arch: int) -> Iterator[LaunchConfig]:
    """Every compile the launchers below can ask for (the same on every target `arch`): each block
    `_row_settings` picks, forward and backward, with and without a weight, in each input dtype."""
    for n_cols in powers_of_two(_MAX_BLOCK):
        block, num_warps = _row_settings(n_cols)
        for dtype in DTYPES:
            for has_weight in (True, False):
                for kernel in (_rms_norm_fwd_kernel, _rms_norm_bwd_kernel):
                    constexprs = {"HAS_WEIGHT": has_weight, "BLOCK": block}
                    yield LaunchConfig.make(kernel, constexprs, num_warps, None, dtype, arch)


def _num_programs(n_rows: int, device: torch.device, has_weight: bool) -> int:
    """Programs for the backward pass. Without a weight, one per row. With one, one per SM on a GPU, so that
    each partial dW covers many rows and the final reduction over programs stays small."""
    if not has_weight:
        return max(1, n_rows)
    if device.type == "cuda":
        return max(1, min(n_rows, torch.cuda.get_device_properties(device).multi_processor_count))
    return max(1, min(n_rows, 4))


def _rms_norm_fwd(
    x: torch.Tensor, weight: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x2 = as_rows(x)
    n_rows, n_cols = x2.shape
    block, num_warps = _row_settings(n_cols)
    y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    _rms_norm_fwd_kernel[(n_rows,)](
        x2, y, weight, rstd,
        x2.stride(0), y.stride(0),
        n_cols, eps,
        HAS_WEIGHT=weight is not None, BLOCK=block, num_warps=num_warps,
    )
    return y.view(x.shape), x2, rstd


def _rms_norm_bwd(
    dy: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    dy2 = as_rows(dy)
    n_rows, n_cols = x2.shape
    block, num_warps = _row_settings(n_cols)
    programs = _num_programs(n_rows, x2.device, weight is not None)
    dx = torch.empty((n_rows, n_cols), dtype=x2.dtype, device=x2.device)
    dw_partial = None
    if weight is not None:
        dw_partial = torch.empty((programs, n_cols), dtype=torch.float32, device=x2.device)
    _rms_norm_bwd_kernel[(programs,)](
        dy2, x2, weight, rstd, dx, dw_partial,
        dy2.stride(0), x2.stride(0), dx.stride(0),
        n_rows, n_cols, triton.cdiv(n_rows, programs),
        HAS_WEIGHT=weight is not None, BLOCK=block, num_warps=num_warps,
    )
    dw = None if dw_partial is None else dw_partial.sum(dim=0).to(weight.dtype)
    return dx.view(dy.shape), dw


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
        y, x2, rstd = _rms_norm_fwd(x, weight, eps)
        ctx.save_for_backward(x2, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        x2, weight, rstd = ctx.saved_tensors
        dx, dw = _rms_norm_bwd(dy, x2, weight, rstd)
        return dx, dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension of `x` (any leading shape); `weight` is an optional gain."""
    if use_triton(x):
        return _RMSNormFunction.apply(x, weight, eps)
    return rms_norm_reference(x, weight, eps)
