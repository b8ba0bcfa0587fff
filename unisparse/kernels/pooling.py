"""Composite tokens on the GPU: one pass that averages tokens (and optionally heads).

A separate pass rather than fused into the scoring kernel: every scoring program reads all
composite keys before it, so pooling there would read each full-size key ``L / block`` times,
while this pass reads q and k once and writes an eighth of them. Sums run in float32; the
result is rounded to the input dtype, as in :func:`unisparse.reference.composite_tokens`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import needs_upcast


@triton.jit
def _pool_kernel(
    x_ptr, out_ptr, var_ptr, index_ptr, index_row_ptr,
    stride_xb, stride_xh, stride_xl, stride_xd,
    seq_len, n_out, heads_out,
    FACTOR: tl.constexpr, HEAD_GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, VARIANCE: tl.constexpr, INDEXED: tl.constexpr,
    ROW_PER_HEAD: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads_out
    h_out = pid_bh % heads_out
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, HEAD_DIM)
    acc = tl.zeros([BLOCK_T, HEAD_DIM], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_T, HEAD_DIM], dtype=tl.float32)
    if ROW_PER_HEAD:  # this output head reads its own row of the stacked index
        index_ptr += tl.load(index_row_ptr + pid_bh).to(tl.int64) * seq_len
    for hh in range(HEAD_GROUP):
        base = x_ptr + b * stride_xb + (h_out * HEAD_GROUP + hh) * stride_xh
        for j in tl.static_range(FACTOR):
            tok = offs_t * FACTOR + j
            if INDEXED:  # the j-th token of each group is the index's entry, not the j-th in memory
                src = tl.load(index_ptr + tok, mask=tok < seq_len, other=0).to(tl.int64)
            else:
                src = tok
            ptrs = base + src[:, None] * stride_xl + offs_d[None, :] * stride_xd
            x = tl.load(ptrs, mask=tok[:, None] < seq_len, other=0.0).to(tl.float32)
            acc += x
            if VARIANCE:
                acc2 += x * x
    count = tl.minimum(seq_len - offs_t * FACTOR, FACTOR) * HEAD_GROUP
    inv = 1.0 / tl.maximum(count, 1).to(tl.float32)[:, None]
    acc = acc * inv
    out_ptrs = out_ptr + (pid_bh * n_out + offs_t)[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=offs_t[:, None] < n_out)
    if VARIANCE:  # E[x^2] - E[x]^2 in float32, from the unrounded mean
        var = tl.maximum(acc2 * inv - acc * acc, 0.0)
        var_ptrs = var_ptr + (pid_bh * n_out + offs_t)[:, None] * HEAD_DIM + offs_d[None, :]
        tl.store(var_ptrs, var, mask=offs_t[:, None] < n_out)


def pool_tokens(x: torch.Tensor, factor: int, head_group: int = 1, variance: bool = False,
                index: torch.Tensor | None = None, index_rows: torch.Tensor | None = None):
    """``[B, H, L, D] -> [B, H / head_group, ceil(L / factor), D]`` (contiguous, x's dtype).

    With ``variance=True`` returns ``(mean, var)``: ``var`` is the per-feature variance over
    each group, float32 (:func:`unisparse.reference.composite_key_variance`).
    With ``index`` (integer ``[N]``, positions in ``L``), the tokens ``x[:, :, index]`` are pooled,
    ``ceil(N / factor)`` groups, read in place: the same result as pooling ``x.index_select(2, index)``
    without writing that copy (a token order's gather of q and k cost more than the pooling itself
    on the H200 at 32K, ``benchmarks/attention/profile_video_select_h200.md``).
    With a stacked ``index`` (``[O, N]``) and ``index_rows`` (integer ``[B, H / head_group]``), each
    output head pools the tokens of its own row ``index[index_rows[b, h]]``: every head in its own
    token order in one launch, with the choice of order left on the device (no host sync).
    """
    b, h, seq_len, d = x.shape
    heads_out = h // head_group
    if index_rows is not None:
        if index is None or index.dim() != 2 or tuple(index_rows.shape) != (b, heads_out):
            raise ValueError(f"index_rows [B, H / head_group] = {(b, heads_out)} needs a stacked index [O, N]; "
                             f"got index_rows {tuple(index_rows.shape)}, index "
                             f"{None if index is None else tuple(index.shape)}")
        index_rows = index_rows.to(device=x.device, dtype=torch.int32).contiguous()
    elif index is not None and index.dim() != 1:
        raise ValueError(f"a stacked index {tuple(index.shape)} needs index_rows")
    if index is not None:
        index = index.to(device=x.device, dtype=torch.int32).contiguous()
        seq_len = index.shape[-1]
    n_out = triton.cdiv(seq_len, factor)
    # Triton's interpreter does not round float32 -> bfloat16 to nearest on store; there the
    # kernel writes float32 and torch rounds, so both backends see the same composite tokens.
    store_dtype = torch.float32 if needs_upcast(x.dtype) else x.dtype
    out = torch.empty(b, heads_out, n_out, d, dtype=store_dtype, device=x.device)
    var = torch.empty(b, heads_out, n_out, d, dtype=torch.float32, device=x.device) if variance else out
    block_t = 32
    grid = (triton.cdiv(n_out, block_t), b * heads_out)
    _pool_kernel[grid](
        x, out, var, index if index is not None else out, index_rows if index_rows is not None else out,
        *x.stride(), seq_len, n_out, heads_out,
        FACTOR=factor, HEAD_GROUP=head_group, HEAD_DIM=d, BLOCK_T=block_t, VARIANCE=variance,
        INDEXED=index is not None, ROW_PER_HEAD=index_rows is not None, num_warps=4,
    )
    return (out.to(x.dtype), var) if variance else out.to(x.dtype)
