"""Calibration's exact row mass with the keys split over programs (Triton): two launches.

Recall-calibrated Top-P needs the exact attention of a few hundred sampled query rows per head,
summed per key block (:func:`unisparse.calibration.exact_row_mass`). The fused block-score kernel
computes that in one launch, one program per tile of 64 sampled rows and head, each walking every
key twice: at 32K tokens and 28 heads that is 112 programs, one partial wave on an H100, and 0.84
ms, latency-bound (``benchmarks/attention/calibrated_top_p/h100_profile_32k.*``). Here the keys are
also split into ``splits`` ranges of whole blocks, so ``splits`` times as many programs share the
work, the way split-KV decoding kernels do (16 ranges at 32K on an H100: 0.33 ms,
``h100_profile_32k_split_default.json``; the default of :func:`unisparse.kernels.selection.exact_row_mass`):

1. each (row tile, head, key range) program finds its rows' softmax max and normaliser over its keys;
2. each program combines the ranges' statistics into the rows' own and sums its keys' normalised
   probabilities per key block (the ranges hold whole blocks, so no two programs write one block).

Visibility is by original positions, as in the fused kernel's ordered mode: a key is visible iff its
position is not after the query's (keys in the prompt's order or gathered into another order).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import LOG2E, dot_precision, needs_upcast
from .logits import FAR, masked_logits as _masked_logits


@triton.jit
def _query_tile(q_ptr, k_ptr, q_pos_ptr, n_q, n_k, heads, q_per_k_head, keys_per_split, BLOCK_M: tl.constexpr,
                HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr, KEYS_IN_ORDER: tl.constexpr):
    """What both kernels start from: this program's query rows (pad rows at position FAR: they see
    every key, and their weight is zeroed), its key head, and its key range ``[start, stop)`` with
    ``k_end``, past which no row of the tile sees a key (``stop`` where the keys are in another order)."""
    pid_m, pid_bh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    live = offs_m < n_q
    offs_d = tl.arange(0, HEAD_DIM)
    q_base = q_ptr + pid_bh * n_q * HEAD_DIM
    q = tl.load(q_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=live[:, None], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    kv_h = (pid_bh % heads) // q_per_k_head
    k_base = k_ptr + ((pid_bh // heads) * (heads // q_per_k_head) + kv_h) * n_k * HEAD_DIM
    q_last = tl.load(q_pos_ptr + offs_m, mask=live, other=FAR)
    start, stop = split * keys_per_split, tl.minimum((split + 1) * keys_per_split, n_k)
    k_end = stop
    if KEYS_IN_ORDER:  # no key after the tile's last query
        k_end = tl.minimum(stop, tl.max(tl.where(live, q_last, 0), 0) + 1)
    return pid_m, pid_bh, split, offs_m, live, q, q_base, k_base, q_last, start, stop, k_end


@triton.jit
def _range_stats_kernel(q_ptr, k_ptr, q_pos_ptr, k_pos_ptr, m_ptr, l_ptr, n_q, n_k, heads, q_per_k_head,
                        keys_per_split, splits, qk_scale,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr,
                        DOT_PRECISION: tl.constexpr, KEYS_IN_ORDER: tl.constexpr):
    pid_m, pid_bh, split, offs_m, live, q, q_base, k_base, q_last, start, _, stop = _query_tile(
        q_ptr, k_ptr, q_pos_ptr, n_q, n_k, heads, q_per_k_head, keys_per_split, BLOCK_M, HEAD_DIM, UPCAST, KEYS_IN_ORDER)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start_n in range(start, stop, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        s = _masked_logits(q, q_base, offs_m, n_q, k_base, offs_n, q_last, n_k, qk_scale, k_pos_ptr,
                           1, HEAD_DIM, HEAD_DIM, BLOCK_M, BLOCK_N, UPCAST, DOT_PRECISION, True)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing visible yet: keep l at 0
        l_i = l_i * tl.exp2(m_i - m_ref) + tl.sum(tl.exp2(s - m_ref[:, None]), 1)
        m_i = m_new
    at = (pid_bh * splits + split) * n_q + offs_m
    tl.store(m_ptr + at, m_i, mask=live)
    tl.store(l_ptr + at, l_i, mask=live)


@triton.jit
def _range_mass_kernel(q_ptr, k_ptr, q_pos_ptr, k_pos_ptr, m_ptr, l_ptr, out_ptr, n_q, n_k, heads, q_per_k_head,
                       keys_per_split, splits, n_row_blocks, n_blocks, qk_scale,
                       ROWS: tl.constexpr, Q_BLOCKS: tl.constexpr, BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr,
                       UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr, KEYS_IN_ORDER: tl.constexpr):
    BLOCK_M: tl.constexpr = Q_BLOCKS * ROWS
    pid_m, pid_bh, split, offs_m, live, q, q_base, k_base, q_last, start, stop, k_end = _query_tile(
        q_ptr, k_ptr, q_pos_ptr, n_q, n_k, heads, q_per_k_head, keys_per_split, BLOCK_M, HEAD_DIM, UPCAST, KEYS_IN_ORDER)
    # the rows' own statistics, from every range's
    m_g = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    for r in range(0, splits):
        m_g = tl.maximum(m_g, tl.load(m_ptr + (pid_bh * splits + r) * n_q + offs_m, mask=live, other=0.0))
    l_g = tl.zeros([BLOCK_M], dtype=tl.float32)
    for r in range(0, splits):
        m_r = tl.load(m_ptr + (pid_bh * splits + r) * n_q + offs_m, mask=live, other=0.0)
        l_r = tl.load(l_ptr + (pid_bh * splits + r) * n_q + offs_m, mask=live, other=0.0)
        l_g += tl.where(l_r > 0.0, l_r * tl.exp2(m_r - m_g), 0.0)
    inv_l = tl.where(live & (l_g > 0.0), 1.0 / tl.where(l_g > 0.0, l_g, 1.0), 0.0)
    offs_qb = pid_m * Q_BLOCKS + tl.arange(0, Q_BLOCKS)
    out_base = out_ptr + pid_bh * n_row_blocks * n_blocks
    for start_n in range(start, stop, BLOCK_SIZE):
        kb = start_n // BLOCK_SIZE
        tile = tl.zeros([Q_BLOCKS], dtype=tl.float32)
        if start_n < k_end:
            offs_n = start_n + tl.arange(0, BLOCK_SIZE)
            s = _masked_logits(q, q_base, offs_m, n_q, k_base, offs_n, q_last, n_k, qk_scale, k_pos_ptr,
                               1, HEAD_DIM, HEAD_DIM, BLOCK_M, BLOCK_SIZE, UPCAST, DOT_PRECISION, True)
            m_ref = tl.where(m_g == float("-inf"), 0.0, m_g)  # a row that sees nothing: weight 0, no NaN
            p = tl.exp2(s - m_ref[:, None]) * inv_l[:, None]  # 0 where not visible
            tile = tl.sum(tl.reshape(tl.sum(p, 1), (Q_BLOCKS, ROWS)), 1)
        tl.store(out_base + offs_qb * n_blocks + kb, tile, mask=offs_qb < n_row_blocks)


@triton.jit
def _block_stats_kernel(q_ptr, k_ptr, q_pos_ptr, k_pos_ptr, m_ptr, p_ptr, n_q, n_k, heads, q_per_k_head,
                        keys_per_split, n_blocks, qk_scale,
                        BLOCK_M: tl.constexpr, BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr,
                        DOT_PRECISION: tl.constexpr, KEYS_IN_ORDER: tl.constexpr):
    """One pass: per query row and key block, the block's own softmax max and its sum of
    ``exp2(s - max)``, stored ``[B*H, n_blocks, n_q]`` (rows contiguous); a block no row of the
    tile sees is stored as max -inf, sum 0. :func:`_combine_block_stats` normalises."""
    pid_m, pid_bh, split, offs_m, live, q, q_base, k_base, q_last, start, stop, k_end = _query_tile(
        q_ptr, k_ptr, q_pos_ptr, n_q, n_k, heads, q_per_k_head, keys_per_split, BLOCK_M, HEAD_DIM, UPCAST, KEYS_IN_ORDER)
    for start_n in range(start, stop, BLOCK_SIZE):
        at = (pid_bh * n_blocks + start_n // BLOCK_SIZE) * n_q + offs_m
        m_b = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        p_b = tl.zeros([BLOCK_M], dtype=tl.float32)
        if start_n < k_end:
            offs_n = start_n + tl.arange(0, BLOCK_SIZE)
            s = _masked_logits(q, q_base, offs_m, n_q, k_base, offs_n, q_last, n_k, qk_scale, k_pos_ptr,
                               1, HEAD_DIM, HEAD_DIM, BLOCK_M, BLOCK_SIZE, UPCAST, DOT_PRECISION, True)
            m_b = tl.max(s, 1)
            m_ref = tl.where(m_b == float("-inf"), 0.0, m_b)
            p_b = tl.sum(tl.exp2(s - m_ref[:, None]), 1)
        tl.store(m_ptr + at, m_b, mask=live)
        tl.store(p_ptr + at, p_b, mask=live)


def _combine_block_stats(m_b: torch.Tensor, p_b: torch.Tensor, b: int, heads: int, rows: int,
                         out: torch.Tensor) -> torch.Tensor:
    """Each row's blocks rescaled to the row's own max and normalised, then summed over each group
    of ``rows`` rows: ``out [B, H, n_q // rows, nb]``. ``m_b, p_b [B*H, nb, n_q]``."""
    m = m_b.amax(1, keepdim=True)
    w = torch.where(p_b > 0, p_b * torch.exp2(m_b - m), torch.zeros((), device=p_b.device))
    w = w / w.sum(1, keepdim=True).clamp_min(1e-30)
    nb, n_q = w.shape[1], w.shape[2]
    out.copy_(w.view(b, heads, nb, n_q // rows, rows).sum(-1).transpose(-1, -2))
    return out


def split_exact_row_mass(queries: torch.Tensor, keys: torch.Tensor, q_positions: torch.Tensor,
                         k_positions: torch.Tensor, rows: int, block_size: int, scale: float, splits: int,
                         keys_in_order: bool, out: torch.Tensor | None = None, one_pass: bool = False) -> torch.Tensor:
    """float32 ``[B, H, len(q_positions) // rows, nb]``: each group of ``rows`` queries' exact causal
    attention summed per key block. ``queries [B, H, S*rows, D]`` (gathered) and ``keys [B, Hk, L, D]``
    (in their order), contiguous; ``q_positions`` / ``k_positions``: int32 original positions;
    ``splits``: key ranges (whole blocks each) per row tile and head; ``keys_in_order``: the keys are in
    the prompt's order (a tile stops at its last query). ``one_pass``: the logits once, each block's
    own max and sum kept per row and combined after (:func:`_block_stats_kernel`; ``8 * B * H * nb * n_q``
    bytes of statistics) instead of the two passes over the keys."""
    b, heads, n_q, d = queries.shape
    n_k = keys.shape[2]
    if n_q % rows or rows < 1 or rows & (rows - 1) or block_size % rows:
        raise ValueError(f"rows={rows} must be a power of two dividing block_size={block_size} and the {n_q} queries")
    nb = triton.cdiv(n_k, block_size)
    splits = max(1, min(int(splits), nb))
    keys_per_split = triton.cdiv(nb, splits) * block_size
    splits = triton.cdiv(n_k, keys_per_split)
    n_row_blocks = n_q // rows
    q_blocks = max(1, 64 // rows)
    if out is None:
        out = torch.empty(b, heads, n_row_blocks, nb, dtype=torch.float32, device=queries.device)
    q_pos, k_pos = (t.to(device=queries.device, dtype=torch.int32).contiguous() for t in (q_positions, k_positions))
    qk_scale = scale * LOG2E
    common = dict(HEAD_DIM=d, UPCAST=needs_upcast(queries.dtype), DOT_PRECISION=dot_precision(queries.dtype),
                  KEYS_IN_ORDER=keys_in_order, num_warps=4)
    grid = (triton.cdiv(n_row_blocks, q_blocks), b * heads, splits)  # tiles of q_blocks * rows query rows
    if one_pass:
        block_stats = torch.empty(2, b * heads, nb, n_q, dtype=torch.float32, device=queries.device)
        _block_stats_kernel[grid](queries, keys, q_pos, k_pos, block_stats[0], block_stats[1], n_q, n_k, heads,
                                  heads // keys.shape[1], keys_per_split, nb, qk_scale, BLOCK_M=q_blocks * rows,
                                  BLOCK_SIZE=block_size, **common)
        return _combine_block_stats(block_stats[0], block_stats[1], b, heads, rows, out)
    stats = torch.empty(2, b * heads, splits, n_q, dtype=torch.float32, device=queries.device)
    _range_stats_kernel[grid](queries, keys, q_pos, k_pos, stats[0], stats[1], n_q, n_k, heads, heads // keys.shape[1],
                              keys_per_split, splits, qk_scale, BLOCK_M=q_blocks * rows, BLOCK_N=block_size, **common)
    _range_mass_kernel[grid](queries, keys, q_pos, k_pos, stats[0], stats[1], out, n_q, n_k, heads,
                             heads // keys.shape[1], keys_per_split, splits, n_row_blocks, nb, qk_scale,
                             ROWS=rows, Q_BLOCKS=q_blocks, BLOCK_SIZE=block_size, **common)
    return out

