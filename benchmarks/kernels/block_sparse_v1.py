"""Version 1 (kept for comparison in scripts/tune_block_sparse.py; first GPU run 2026-11-23). Block-sparse causal attention forward (FlashAttention-style online softmax) in Triton.

One program per (query tile, query head). The block mask is first turned into per-row lists
of kept key blocks (ascending, so the diagonal comes last), and a program walks only its list:
skipped blocks cost nothing. Grouped-query attention reads the shared KV head through its
stride, never copies it. The causal mask is applied only in the diagonal block; the last
partial block is masked by length. Rows with no visible key come out as zeros.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from unisparse.kernels.common import dot_precision, needs_upcast

LOG2E = 1.4426950408889634


@triton.jit
def _block_sparse_fwd_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, idx_ptr, cnt_ptr,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_ib, stride_ih, stride_im,
    stride_cb, stride_ch,
    seq_len, heads, q_per_kv_head, q_per_mask_head, n_blocks, qk_scale,
    BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # longest rows first (causal imbalance)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    kv_h = h // q_per_kv_head
    mask_h = h // q_per_mask_head
    q_block = (pid_m * BLOCK_M) // BLOCK_SIZE

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n0 = tl.arange(0, BLOCK_N)
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_ql + offs_d[None, :] * stride_qd,
                mask=offs_m[:, None] < seq_len, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    k_base = k_ptr + b * stride_kb + kv_h * stride_kh
    v_base = v_ptr + b * stride_vb + kv_h * stride_vh
    row_idx = idx_ptr + b * stride_ib + mask_h * stride_ih + q_block * stride_im
    n_kept = tl.load(cnt_ptr + b * stride_cb + mask_h * stride_ch + q_block)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    last_row = pid_m * BLOCK_M + BLOCK_M - 1
    for i in range(n_kept):
        k_block = tl.load(row_idx + i)
        for sub in range(BLOCK_SIZE // BLOCK_N):
            start_n = k_block * BLOCK_SIZE + sub * BLOCK_N
            if start_n <= last_row:  # sub-tiles wholly above this tile's rows are skipped
                offs_n = start_n + offs_n0
                k = tl.load(k_base + offs_n[None, :] * stride_kl + offs_d[:, None] * stride_kd,
                            mask=offs_n[None, :] < seq_len, other=0.0)
                v = tl.load(v_base + offs_n[:, None] * stride_vl + offs_d[None, :] * stride_vd,
                            mask=offs_n[:, None] < seq_len, other=0.0)
                if UPCAST:
                    k = k.to(tl.float32)
                    v = v.to(tl.float32)
                s = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale
                # Last visible key per row: the row itself in the diagonal block, else the end.
                limit = tl.where(k_block == q_block, tl.minimum(offs_m, seq_len - 1), seq_len - 1)
                s = tl.where(offs_n[None, :] <= limit[:, None], s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 1))
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                alpha = tl.exp2(m_i - m_safe)
                p = tl.exp2(s - m_safe[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
                m_i = m_new
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(out_ptr + (pid_bh * seq_len + offs_m)[:, None] * HEAD_DIM + offs_d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=offs_m[:, None] < seq_len)


def kept_block_lists(block_mask: torch.Tensor):
    """Per query block, the indices of its kept causal key blocks (ascending) and their count.

    Returns ``idx int32 [Bm, Hm, nb, nb]`` (valid prefix of length ``cnt``) and ``cnt int32
    [Bm, Hm, nb]``. Blocks above the diagonal are dropped here, so the kernel never sees them.
    """
    nb = block_mask.shape[-1]
    causal = torch.ones(nb, nb, dtype=torch.bool, device=block_mask.device).tril()
    keep = block_mask & causal
    cnt = keep.sum(-1, dtype=torch.int32)
    idx = torch.sort((~keep).to(torch.uint8), dim=-1, stable=True).indices.to(torch.int32)
    return idx.contiguous(), cnt.contiguous()


def _tile_config(head_dim: int):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) per head dim; first version, see benchmarks/."""
    if head_dim <= 64:
        return 128, 64, 4, 3
    if head_dim <= 128:
        return 128, 64, 8, 3
    return 64, 32, 8, 2


def block_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: torch.Tensor,
    block_size: int = 128, scale: float | None = None, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton twin of :func:`unisparse.reference.block_sparse_attention` (inputs validated).

    ``out`` (contiguous, q's shape and dtype) lets tests pass a poisoned buffer.
    """
    b, hq, seq_len, d = q.shape
    hkv = k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    idx, cnt = kept_block_lists(block_mask)
    mask_heads = block_mask.shape[1]
    block_m, block_n, num_warps, num_stages = _tile_config(d)
    block_m, block_n = min(block_m, block_size), min(block_n, block_size)
    if out is None:
        out = torch.empty(b, hq, seq_len, d, dtype=q.dtype, device=q.device)
    batch_stride = lambda t: t.stride(0) if t.shape[0] > 1 else 0  # noqa: E731 (mask batch may broadcast)
    grid = (triton.cdiv(seq_len, block_m), b * hq)
    _block_sparse_fwd_kernel[grid](
        q, k, v, out, idx, cnt,
        *q.stride(), *k.stride(), *v.stride(),
        batch_stride(idx), idx.stride(1), idx.stride(2),
        batch_stride(cnt), cnt.stride(1),
        seq_len, hq, hq // hkv, hq // mask_heads, idx.shape[-1], scale * LOG2E,
        BLOCK_SIZE=block_size, BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=d,
        UPCAST=needs_upcast(q.dtype), DOT_PRECISION=dot_precision(q.dtype),
        num_warps=num_warps, num_stages=num_stages,
    )
    return out
