"""Flash attention with grouped-query heads: o = softmax(scale * q k^T, causal mask optional) v.

q is (batch, heads, seq, head_dim); k and v are (batch, kv_heads, seq, head_dim) with kv_heads dividing heads.
Query head h reads kv head h // (heads // kv_heads), by index arithmetic: k and v are never expanded.
"""

import itertools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from pretrain_kernels._dispatch import jit, kernels_interpreted, tl, triton, use_triton
from pretrain_kernels._launch_config import DTYPES, LaunchConfig

_LOG2E = math.log2(math.e)


def flash_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, scale: float | None = None
) -> torch.Tensor:
    """Plain PyTorch attention (SDPA with an explicit scale); same signature as `flash_attention`."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    grouped = k.shape[1] != q.shape[1]
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=grouped)


@jit
def _block_needs_mask(start_m, start_n, seq_len, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      CAUSAL: tl.constexpr):
    """Whether the (query block at start_m, key block at start_n) tile holds any pair that must be masked:
    keys past the end of the sequence, or (causal) a key after some query, i.e. a tile on the diagonal."""
    needs_mask = start_n + BLOCK_N > seq_len
    if CAUSAL:
        needs_mask = needs_mask | (start_n + BLOCK_N - 1 > start_m)
    return needs_mask


@jit
def _allowed(q_idx, k_idx, seq_len, CAUSAL: tl.constexpr):
    """Which (query, key) pairs may attend: the key inside the sequence and (causal) not after the query."""
    allowed = k_idx < seq_len
    if CAUSAL:
        allowed = allowed & (k_idx <= q_idx)
    return allowed


@jit
def _keys_end(start_m, seq_len, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """End of the key range a query block attends to: causal blocks stop at the diagonal."""
    if CAUSAL:
        return tl.minimum(start_m + BLOCK_M, seq_len)
    return seq_len


@jit
def _query_program_heads(n_heads, n_kv_heads):
    """(batch * head, batch, head, kv head) of a program over (query block, batch * head); int64, as they
    multiply strides."""
    bh = tl.program_id(1).to(tl.int64)
    h = bh % n_heads
    return bh, bh // n_heads, h, h // (n_heads // n_kv_heads)


@jit
def _load_tile(base, offs_rows, stride_rows, offs_d, seq_len, DOT_DTYPE: tl.constexpr):
    """Rows `offs_rows` of a (seq, head_dim) matrix, zero past seq_len, upcast then cast to the dot operand
    dtype (fp32 under the interpreter, where low-precision dots are wrong; the input dtype on a GPU)."""
    tile = tl.load(base + offs_rows[:, None] * stride_rows + offs_d[None, :], mask=offs_rows[:, None] < seq_len,
                   other=0.0)
    return tile.to(tl.float32).to(DOT_DTYPE)


@jit
def _attn_fwd_kernel(
    Q, K, V, OUT, LSE,
    stride_qb, stride_qh, stride_qs,
    stride_kb, stride_kh, stride_ks,
    stride_vb, stride_vh, stride_vs,
    n_heads, n_kv_heads, seq_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, DOT_DTYPE: tl.constexpr,
):
    """Program (query block, batch * head). With qk_scale = scale * log2(e), in base 2:

        s_ij = qk_scale * q_i . k_j                      (-inf where masked)
        m_i = max_j s_ij,   l_i = sum_j 2^(s_ij - m_i),   o_i = sum_j 2^(s_ij - m_i) v_j / l_i

    computed online over key blocks: (m, l, acc) are rescaled by 2^(m_old - m_new) when the running max grows.
    Causal: key blocks above the diagonal are never visited; only tiles on the diagonal (or at the sequence
    end) are masked. Stores lse_i = m_i + log2(l_i) for the backward pass.
    """
    start_m = tl.program_id(0) * BLOCK_M
    bh, b, h, kv_h = _query_program_heads(n_heads, n_kv_heads)
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + kv_h * stride_kh
    v_base = V + b * stride_vb + kv_h * stride_vh

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m[:, None] < seq_len
    q = _load_tile(q_base, offs_m, stride_qs, offs_d, seq_len, DOT_DTYPE)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    for start_n in range(0, _keys_end(start_m, seq_len, BLOCK_M, CAUSAL), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(k_base, offs_n, stride_ks, offs_d, seq_len, DOT_DTYPE)
        v = _load_tile(v_base, offs_n, stride_vs, offs_d, seq_len, DOT_DTYPE)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        if _block_needs_mask(start_m, start_n, seq_len, BLOCK_M, BLOCK_N, CAUSAL):
            s = tl.where(_allowed(offs_m[:, None], offs_n[None, :], seq_len, CAUSAL), s, float("-inf"))
        # Every row sees key 0 in the first block, so m_new is finite and no exp2(-inf - -inf) arises.
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v)
        m_i = m_new

    acc = acc / l_i[:, None]
    o_base = OUT + bh * seq_len * HEAD_DIM
    tl.store(o_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :], acc.to(OUT.dtype.element_ty), mask=row_ok)
    tl.store(LSE + bh * seq_len + offs_m, m_i + tl.log2(l_i), mask=offs_m < seq_len)


@jit
def _attn_bwd_delta_kernel(OUT, DO, DELTA, seq_len, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """Program (query block, batch * head): delta_i = sum_d dO_id * O_id, which equals sum_j p_ij dp_ij, the
    row term of the softmax backward. O (OUT) and dO are contiguous (batch, heads, seq, head_dim)."""
    bh = tl.program_id(1).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offsets = bh * seq_len * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    row_ok = offs_m[:, None] < seq_len
    o = tl.load(OUT + offsets, mask=row_ok, other=0.0).to(tl.float32)
    do = tl.load(DO + offsets, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(DELTA + bh * seq_len + offs_m, tl.sum(o * do, axis=1), mask=offs_m < seq_len)


@jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    stride_qb, stride_qh, stride_qs,
    stride_kb, stride_kh, stride_ks,
    stride_vb, stride_vh, stride_vs,
    n_heads, n_kv_heads, seq_len, scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, DOT_DTYPE: tl.constexpr,
):
    """Program (key block, batch * kv head). Recomputing p from the saved lse (base 2):

        p_ij = 2^(qk_scale * q_i . k_j - lse_i),   dp_ij = dO_i . v_j,   ds_ij = p_ij * (dp_ij - delta_i)
        dV_j = sum_i p_ij dO_i,                    dK_j = scale * sum_i ds_ij q_i

    summed over every query head that shares this kv head, inside this program: each dK/dV block has a single
    writer, so no atomics. Tiles are computed transposed (keys along rows). Causal: query blocks before the
    key block are skipped. Padded query rows (past seq_len) load dO = 0 and delta = 0, so they add nothing.
    """
    start_n = tl.program_id(0) * BLOCK_N
    bkv = tl.program_id(1)
    b = (bkv // n_kv_heads).to(tl.int64)
    kv_h = (bkv % n_kv_heads).to(tl.int64)
    group = n_heads // n_kv_heads

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    key_ok = offs_n[:, None] < seq_len
    k = _load_tile(K + b * stride_kb + kv_h * stride_kh, offs_n, stride_ks, offs_d, seq_len, DOT_DTYPE)
    v = _load_tile(V + b * stride_vb + kv_h * stride_vh, offs_n, stride_vs, offs_d, seq_len, DOT_DTYPE)
    dk = tl.zeros((BLOCK_N, HEAD_DIM), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, HEAD_DIM), dtype=tl.float32)

    start_lo = 0
    if CAUSAL:
        start_lo = start_n
    for h in range(kv_h * group, kv_h * group + group):
        q_base = Q + b * stride_qb + h * stride_qh
        row_base = (b * n_heads + h) * seq_len  # into the contiguous dO (times HEAD_DIM), lse and delta
        for start_m in range(start_lo, seq_len, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            row_ok = offs_m < seq_len
            q = _load_tile(q_base, offs_m, stride_qs, offs_d, seq_len, DOT_DTYPE)
            do = _load_tile(DO + row_base * HEAD_DIM, offs_m, HEAD_DIM, offs_d, seq_len, DOT_DTYPE)
            lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=0.0)
            delta = tl.load(DELTA + row_base + offs_m, mask=row_ok, other=0.0)
            p_t = tl.exp2(tl.dot(k, tl.trans(q)) * qk_scale - lse[None, :])
            if _block_needs_mask(start_m, start_n, seq_len, BLOCK_M, BLOCK_N, CAUSAL):
                p_t = tl.where(_allowed(offs_m[None, :], offs_n[:, None], seq_len, CAUSAL), p_t, 0.0)
            dv += tl.dot(p_t.to(DOT_DTYPE), do)
            ds_t = p_t * (tl.dot(v, tl.trans(do)) - delta[None, :])
            dk += tl.dot(ds_t.to(DOT_DTYPE), q)

    out = bkv.to(tl.int64) * seq_len * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=key_ok)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=key_ok)


@jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qs,
    stride_kb, stride_kh, stride_ks,
    stride_vb, stride_vh, stride_vs,
    n_heads, n_kv_heads, seq_len, scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, DOT_DTYPE: tl.constexpr,
):
    """Program (query block, batch * head), with p, ds as in the dK/dV pass:

        dQ_i = scale * sum_j ds_ij k_j,   ds_ij = p_ij * (dO_i . v_j - delta_i)

    Causal: key blocks above the diagonal are skipped, only diagonal and sequence-end tiles are masked.
    """
    start_m = tl.program_id(0) * BLOCK_M
    bh, b, h, kv_h = _query_program_heads(n_heads, n_kv_heads)
    k_base = K + b * stride_kb + kv_h * stride_kh
    v_base = V + b * stride_vb + kv_h * stride_vh
    row_base = bh * seq_len  # into the contiguous dO, dQ (times HEAD_DIM), lse and delta

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < seq_len
    q = _load_tile(Q + b * stride_qb + h * stride_qh, offs_m, stride_qs, offs_d, seq_len, DOT_DTYPE)
    do = _load_tile(DO + row_base * HEAD_DIM, offs_m, HEAD_DIM, offs_d, seq_len, DOT_DTYPE)
    lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + row_base + offs_m, mask=row_ok, other=0.0)

    dq = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    for start_n in range(0, _keys_end(start_m, seq_len, BLOCK_M, CAUSAL), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(k_base, offs_n, stride_ks, offs_d, seq_len, DOT_DTYPE)
        v = _load_tile(v_base, offs_n, stride_vs, offs_d, seq_len, DOT_DTYPE)
        p = tl.exp2(tl.dot(q, tl.trans(k)) * qk_scale - lse[:, None])
        if _block_needs_mask(start_m, start_n, seq_len, BLOCK_M, BLOCK_N, CAUSAL):
            p = tl.where(_allowed(offs_m[:, None], offs_n[None, :], seq_len, CAUSAL), p, 0.0)
        ds = p * (tl.dot(do, tl.trans(v)) - delta[:, None])
        dq += tl.dot(ds.to(DOT_DTYPE), k)

    tl.store(DQ + (row_base + offs_m[:, None]) * HEAD_DIM + offs_d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])


_HEAD_DIMS = (16, 32, 64, 128, 256)  # what the Triton path takes; below 64 the 64 row of a table is used
# (BLOCK_M query rows, BLOCK_N key rows, num_warps, num_stages) per pass and head_dim, for each target and input
# element size (2: bf16 and fp16; 4: fp32, whose dot operands take twice the registers and shared memory). Picked
# by compiling candidates, as autotuning does not run under the interpreter: the first sm_90 choice wherever it
# passes, else the largest tile, pipelined over the most stages (two at least), whose compiled kernels keep every
# value in registers and fit the target's shared memory per block, whether the inputs are 16-byte aligned or not,
# compiled by triton 3.6 and by 3.9 (their ptxas allocate registers differently: 3.6 spills the 128x128 forward
# tile at head dim 128). Entries that differ from the earlier sm_90-only table were picked for fit and are untimed.
# tests/test_kernels_launch.py compiles every entry for sm_80 and sm_90 (no GPU needed) and fails on a spill or
# on too much shared memory.
_GPU_CONFIGS = {
    # H100 and newer, 227 KiB of shared memory per block.
    (90, 2): {"fwd": {64: (128, 64, 4, 3), 128: (128, 64, 8, 4), 256: (64, 32, 8, 2)},
              "dkdv": {64: (32, 128, 8, 3), 128: (64, 32, 8, 4), 256: (32, 32, 8, 2)},
              "dq": {64: (128, 64, 8, 3), 128: (64, 64, 8, 3), 256: (32, 64, 8, 3)}},
    (90, 4): {"fwd": {64: (128, 64, 8, 3), 128: (64, 64, 8, 2), 256: (32, 64, 8, 2)},
              "dkdv": {64: (32, 128, 8, 3), 128: (64, 32, 8, 3), 256: (32, 32, 8, 2)},
              "dq": {64: (128, 64, 8, 3), 128: (64, 64, 8, 2), 256: (64, 16, 8, 2)}},
    # A100, 163 KiB. Other GPUs before sm_90 get these too, unchecked: sm_86 and sm_89 give a block 99 KiB.
    (80, 2): {"fwd": {64: (128, 64, 8, 3), 128: (64, 64, 8, 3), 256: (64, 32, 8, 2)},
              "dkdv": {64: (16, 128, 8, 4), 128: (64, 32, 8, 4), 256: (32, 32, 8, 2)},
              "dq": {64: (128, 64, 8, 3), 128: (64, 64, 8, 3), 256: (64, 32, 8, 2)}},
    (80, 4): {"fwd": {64: (64, 128, 8, 2), 128: (64, 64, 8, 2), 256: (64, 16, 8, 2)},
              "dkdv": {64: (16, 64, 8, 3), 128: (16, 64, 8, 3), 256: (16, 16, 8, 2)},
              "dq": {64: (128, 32, 8, 3), 128: (64, 64, 8, 2), 256: (32, 32, 8, 2)}},
}
# Under the interpreter each program runs serially in NumPy; small tiles keep short test sequences ragged.
_INTERPRETER_CONFIGS = {"fwd": (32, 16, 1, 1), "dkdv": (16, 32, 1, 1), "dq": (32, 16, 1, 1)}


def _gpu_config(kernel: str, head_dim: int, arch: int, element_size: int) -> tuple[int, int, int, int]:
    """The tile settings of pass `kernel` on a GPU of compute capability `arch` (e.g. 90), for inputs of
    `element_size` bytes."""
    return _GPU_CONFIGS[90 if arch >= 90 else 80, element_size][kernel][max(64, head_dim)]


def _config(kernel: str, q: torch.Tensor) -> tuple[int, int, int, int]:
    if kernels_interpreted():
        return _INTERPRETER_CONFIGS[kernel]
    major, minor = torch.cuda.get_device_capability(q.device)
    return _gpu_config(kernel, q.shape[-1], 10 * major + minor, q.element_size())


def launch_configs(arch: int) -> Iterator[LaunchConfig]:
    """Every compile `flash_attention` can ask for on a GPU of compute capability `arch`: each pass at each head
    dim it takes, causal or not, in each input dtype (the dot operands are the input dtype on a GPU)."""
    passes = {"fwd": _attn_fwd_kernel, "dkdv": _attn_bwd_dkdv_kernel, "dq": _attn_bwd_dq_kernel}
    for head_dim, dtype in itertools.product(_HEAD_DIMS, DTYPES):
        element_size = tl.dtype(dtype).primitive_bitwidth // 8
        for causal, (name, kernel) in itertools.product((True, False), passes.items()):
            block_m, block_n, num_warps, num_stages = _gpu_config(name, head_dim, arch, element_size)
            constexprs = {"HEAD_DIM": head_dim, "BLOCK_M": block_m, "BLOCK_N": block_n, "CAUSAL": causal,
                          "DOT_DTYPE": tl.dtype(dtype)}
            yield LaunchConfig.make(kernel, constexprs, num_warps, num_stages, dtype, arch)
        block_m, _, num_warps, _ = _gpu_config("dq", head_dim, arch, element_size)  # as in _attn_bwd
        yield LaunchConfig.make(_attn_bwd_delta_kernel, {"HEAD_DIM": head_dim, "BLOCK_M": block_m}, num_warps,
                                None, dtype, arch)


def _dot_dtype(x: torch.Tensor) -> tl.dtype:
    """Operand dtype of tl.dot: the input dtype on a GPU, fp32 in the interpreter (its bf16 dot is wrong)."""
    if kernels_interpreted():
        return tl.float32
    return {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}[x.dtype]


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, head, seq) strides of a (batch, heads, seq, head_dim) tensor whose last dim is unit-stride."""
    return t.stride(0), t.stride(1), t.stride(2)


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _attn_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, n_heads, seq_len, head_dim = q.shape
    block_m, block_n, num_warps, num_stages = _config("fwd", q)
    o = torch.empty((batch, n_heads, seq_len, head_dim), dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, n_heads, seq_len), dtype=torch.float32, device=q.device)
    _attn_fwd_kernel[(triton.cdiv(seq_len, block_m), batch * n_heads)](
        q, k, v, o, lse,
        *_strides(q), *_strides(k), *_strides(v),
        n_heads, k.shape[1], seq_len, scale * _LOG2E,
        HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal, DOT_DTYPE=_dot_dtype(q),
        num_warps=num_warps, num_stages=num_stages,
    )
    return o, lse


def _attn_bwd(
    do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
    causal: bool, scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, n_heads, seq_len, head_dim = q.shape
    n_kv_heads = k.shape[1]
    do = do.contiguous()  # shares o's layout, so the kernels index both with the same offsets
    dq = torch.empty_like(o)
    dk = torch.empty((batch, n_kv_heads, seq_len, head_dim), dtype=k.dtype, device=k.device)
    dv = torch.empty((batch, n_kv_heads, seq_len, head_dim), dtype=v.dtype, device=v.device)
    delta = torch.empty_like(lse)
    common = {"HEAD_DIM": head_dim, "CAUSAL": causal, "DOT_DTYPE": _dot_dtype(q)}
    shape_args = (n_heads, n_kv_heads, seq_len, scale, scale * _LOG2E)

    block_m, _, num_warps, _ = _config("dq", q)  # the delta rows feed the dQ pass's query blocks
    _attn_bwd_delta_kernel[(triton.cdiv(seq_len, block_m), batch * n_heads)](
        o, do, delta, seq_len, HEAD_DIM=head_dim, BLOCK_M=block_m, num_warps=num_warps,
    )
    block_m, block_n, num_warps, num_stages = _config("dkdv", q)
    _attn_bwd_dkdv_kernel[(triton.cdiv(seq_len, block_n), batch * n_kv_heads)](
        q, k, v, do, lse, delta, dk, dv,
        *_strides(q), *_strides(k), *_strides(v), *shape_args,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps, num_stages=num_stages, **common,
    )
    block_m, block_n, num_warps, num_stages = _config("dq", q)
    _attn_bwd_dq_kernel[(triton.cdiv(seq_len, block_m), batch * n_heads)](
        q, k, v, do, lse, delta, dq,
        *_strides(q), *_strides(k), *_strides(v), *shape_args,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps, num_stages=num_stages, **common,
    )
    return dq, dk, dv


class _FlashAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float
    ) -> torch.Tensor:
        q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
        o, lse = _attn_fwd(q, k, v, causal, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, do: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, None]:
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _attn_bwd(do, q, k, v, o, lse, ctx.causal, ctx.scale)
        return dq, dk, dv, None, None


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError(f"flash_attention: want q (B, H, S, D), k = v (B, KVH, S, D); got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    (b, h, s, d), (bk, hk, sk, dk) = q.shape, k.shape
    if (b, s, d) != (bk, sk, dk) or h % hk != 0:
        raise ValueError(f"flash_attention: q {tuple(q.shape)} and k/v {tuple(k.shape)} must share batch, "
                         "seq and head_dim, and kv_heads must divide heads")
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"flash_attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")


def flash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, scale: float | None = None
) -> torch.Tensor:
    """Attention of q (B, H, S, D) over k, v (B, KVH, S, D), KVH dividing H (GQA, MQA); returns (B, H, S, D).

    `scale` multiplies q . k and defaults to 1/sqrt(D) (the muP model passes 1/D). The Triton path needs D a
    power of two between 16 and 256.
    """
    _check_shapes(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if not use_triton(q):
        return flash_attention_reference(q, k, v, causal, scale)
    head_dim = q.shape[-1]
    if head_dim not in _HEAD_DIMS:
        raise ValueError(f"flash_attention: the Triton kernel needs head_dim a power of two in [16, 256], "
                         f"got {head_dim}")
    return _FlashAttentionFunction.apply(q, k, v, causal, scale)
