"""UniSparse block scores on the GPU: compressed causal attention summed per block, fused.

Each program owns a tile of composite queries (whole query blocks) of one pooled head and
makes two passes over the composite keys it may see: the first finds each row's softmax max
and normaliser, the second recomputes the logits, normalises them and sums them straight into
per-block scores. The compressed score matrix ``[L/q_pool, L/k_pool]`` therefore exists only
one register tile at a time; the kernel writes just ``[nb, nb]`` block scores per head.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from ..config import UniSparseConfig
from ..reference import expand_heads, variance_features
from .common import LOG2E, dot_precision, needs_upcast
from .logits import masked_logits as _masked_logits
from .pooling import pool_tokens
from .top_p import top_p_mask


@triton.jit
def _block_score_kernel(
    qc_ptr, kc_ptr, out_ptr, q_last_ptr, k_first_ptr, head_order_ptr,
    seq_len, n_q, n_k, n_blocks, n_row_blocks, heads, q_per_k_head, qk_scale,
    Q_POOL: tl.constexpr, K_POOL: tl.constexpr,
    ROWS_PER_BLOCK: tl.constexpr, COLS_PER_BLOCK: tl.constexpr,
    Q_BLOCKS: tl.constexpr, K_BLOCKS: tl.constexpr,
    HEAD_DIM: tl.constexpr, D_CHUNK: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ORDERED: tl.constexpr, KEYS_IN_ORDER: tl.constexpr, HEAD_ORDER: tl.constexpr,
):
    BLOCK_M: tl.constexpr = Q_BLOCKS * ROWS_PER_BLOCK
    BLOCK_N: tl.constexpr = K_BLOCKS * COLS_PER_BLOCK
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # longest rows first
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    kv_h = h // q_per_k_head
    heads_k = heads // q_per_k_head

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q_base = qc_ptr + pid_bh * n_q * HEAD_DIM
    q = 0.0  # the query tile, when it fits in registers
    if D_CHUNK == HEAD_DIM:
        offs_d = tl.arange(0, HEAD_DIM)
        q = tl.load(q_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=offs_m[:, None] < n_q, other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
    k_base = kc_ptr + (b * heads_k + kv_h) * n_k * HEAD_DIM
    if ORDERED:  # original positions: any composite key may be visible (above the diagonal too)
        in_order = KEYS_IN_ORDER
        if HEAD_ORDER:  # this head's order: a row of the stacked positions; order 0 is the prompt's own
            o = tl.load(head_order_ptr + pid_bh)
            q_last_ptr += o * n_q
            k_first_ptr += o * n_k
            if KEYS_IN_ORDER:
                in_order = o == 0
        last_q_token = tl.load(q_last_ptr + offs_m, mask=offs_m < n_q, other=2**30)  # pad rows: finite, weight 0
        k_end = n_k
        if in_order:  # the prompt's own order (some query blocks only): no key after the tile's last query
            tile_last = tl.max(tl.where(offs_m < n_q, last_q_token, 0), 0)
            k_end = tl.minimum(tile_last // K_POOL + 1, n_k)
    else:
        last_q_token = tl.minimum((offs_m + 1) * Q_POOL - 1, seq_len - 1)
        # Composite keys any row of this tile can see.
        tile_last_token = tl.minimum((pid_m + 1) * BLOCK_M * Q_POOL - 1, seq_len - 1)
        k_end = tl.minimum(tile_last_token // K_POOL + 1, n_k)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start_n in range(0, k_end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        s = _masked_logits(q, q_base, offs_m, n_q, k_base, offs_n, last_q_token, n_k, qk_scale, k_first_ptr,
                           K_POOL, HEAD_DIM, D_CHUNK, BLOCK_M, BLOCK_N, UPCAST, DOT_PRECISION, ORDERED)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(s - m_new[:, None]), 1)
        m_i = m_new

    inv_l = tl.where(offs_m < n_q, 1.0 / l_i, 0.0)
    offs_qb = pid_m * Q_BLOCKS + tl.arange(0, Q_BLOCKS)
    out_base = out_ptr + pid_bh * n_row_blocks * n_blocks
    for start_n in range(0, k_end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        s = _masked_logits(q, q_base, offs_m, n_q, k_base, offs_n, last_q_token, n_k, qk_scale, k_first_ptr,
                           K_POOL, HEAD_DIM, D_CHUNK, BLOCK_M, BLOCK_N, UPCAST, DOT_PRECISION, ORDERED)
        p = tl.exp2(s - m_i[:, None]) * inv_l[:, None]  # exp2(-inf) = 0 where not visible
        p = tl.reshape(p, (Q_BLOCKS, ROWS_PER_BLOCK, K_BLOCKS, COLS_PER_BLOCK))
        tile = tl.sum(tl.sum(p, 3), 1)
        offs_kb = start_n // COLS_PER_BLOCK + tl.arange(0, K_BLOCKS)
        ptrs = out_base + offs_qb[:, None] * n_blocks + offs_kb[None, :]
        tl.store(ptrs, tile, mask=(offs_qb[:, None] < n_row_blocks) & (offs_kb[None, :] < n_blocks))
    # Blocks no row of this tile can see score zero; writing them spares a zero-fill pass.
    zeros = tl.zeros([Q_BLOCKS, K_BLOCKS], dtype=tl.float32)
    for first_kb in range(tl.cdiv(k_end, BLOCK_N) * K_BLOCKS, n_blocks, K_BLOCKS):
        offs_kb = first_kb + tl.arange(0, K_BLOCKS)
        ptrs = out_base + offs_qb[:, None] * n_blocks + offs_kb[None, :]
        tl.store(ptrs, zeros, mask=(offs_qb[:, None] < n_row_blocks) & (offs_kb[None, :] < n_blocks))


def _blocks_per_tile(per_block: int) -> int:
    """Enough whole blocks per tile for a 64-wide dot (tl.dot needs at least 16)."""
    return max(1, 64 // per_block)


def block_scores(
    q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig, scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton twin of :func:`unisparse.reference.block_scores`: float32 ``[B, Hs, nb, nb]``.

    ``out`` (contiguous float32 of that shape) lets tests pass a poisoned buffer.
    """
    b, hq, seq_len, d = q.shape
    hkv = k.shape[1]
    group = hq // hkv
    ch = config.head_pool
    if group % ch and ch % group:
        raise ValueError(f"head_pool={ch} must divide the GQA group size ({group}) or be a multiple of it")
    k_head_group = max(1, ch // group)  # KV heads averaged into one pooled key head
    qc = pool_tokens(q, config.q_pool, ch)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    if config.variance_correction > 0:
        # Twice the features: the fused kernel then scores the corrected logits as they are.
        kc, key_var = pool_tokens(k, config.k_pool, k_head_group, variance=True)
        qc, kc = variance_features(qc, kc, key_var, config.variance_correction, scale)
    else:
        kc = pool_tokens(k, config.k_pool, k_head_group)
    return compressed_block_scores(qc, kc, seq_len, config.block_size, config.q_pool, config.k_pool, scale, out=out)


def compressed_block_scores(
    qc: torch.Tensor, kc: torch.Tensor, seq_len: int, block_size: int, q_pool: int, k_pool: int,
    scale: float, out: torch.Tensor | None = None, d_chunk: int | None = None,
    q_last: torch.Tensor | None = None, k_first: torch.Tensor | None = None, n_row_blocks: int | None = None,
    keys_in_order: bool = False, head_order: torch.Tensor | None = None, q_blocks: int | None = None,
) -> torch.Tensor:
    """Softmax(qc kc^T * scale), causal in token space, summed per ``block_size`` tile, fused.

    ``qc [B, H, Nq, F]`` and ``kc [B, Hk, Nk, F]`` are contiguous; composite query ``i`` stands
    for tokens ``[i q_pool, (i+1) q_pool)`` and key ``j`` for ``[j k_pool, ...)``; ``H`` is a
    multiple of ``Hk``. Features wider than 256 are multiplied in ``d_chunk`` slices. In a
    reordered sequence, ``q_last`` (int32 ``[Nq]``: each composite query's latest original
    position) and ``k_first`` (int32 ``[Nk]``: each composite key's earliest) decide visibility;
    there the queries may also be some query blocks only (``n_row_blocks`` of them, output
    ``[B, H, n_row_blocks, nb]``). ``keys_in_order``: the keys are in the prompt's order (composite key
    ``j`` starts at token ``j * k_pool``), so a tile stops at its last query's key.
    ``head_order`` (integer ``[B, H]``): each head is in its own order; ``q_last`` and ``k_first`` are
    then stacked per order (``[O, Nq]``, ``[O, Nk]``), row ``head_order[b, h]`` is head ``h``'s, and
    ``keys_in_order`` says that order 0 is the prompt's own. ``q_blocks``: query blocks per program
    (default: enough for a 64-row tile).
    """
    b, heads, n_q, feat = qc.shape
    q_per_k_head = heads // kc.shape[1]
    nb = triton.cdiv(seq_len, block_size)
    ordered = q_last is not None
    n_rows = nb if n_row_blocks is None or not ordered else n_row_blocks
    rows, cols = block_size // q_pool, block_size // k_pool
    q_blocks, k_blocks = q_blocks or _blocks_per_tile(rows), _blocks_per_tile(cols)
    d_chunk = d_chunk or (feat if feat <= 256 else 64)
    if feat % d_chunk:
        raise ValueError(f"feature width {feat} is not a multiple of d_chunk={d_chunk}")
    if out is None:
        out = torch.empty(b, heads, n_rows, nb, dtype=torch.float32, device=qc.device)
    if ordered:
        q_last, k_first = (t.to(device=qc.device, dtype=torch.int32).contiguous() for t in (q_last, k_first))
    if head_order is not None:
        if not ordered or tuple(head_order.shape) != (b, heads) or q_last.dim() != 2:
            raise ValueError("head_order [B, H] needs q_last [O, Nq] and k_first [O, Nk]")
        head_order = head_order.to(device=qc.device, dtype=torch.int32).contiguous()
    grid = (triton.cdiv(n_rows, q_blocks), b * heads)
    _block_score_kernel[grid](
        qc, kc, out, q_last if ordered else out, k_first if ordered else out,
        head_order if head_order is not None else out,
        seq_len, n_q, kc.shape[2], nb, n_rows, heads, q_per_k_head, scale * LOG2E,
        Q_POOL=q_pool, K_POOL=k_pool,
        ROWS_PER_BLOCK=rows, COLS_PER_BLOCK=cols, Q_BLOCKS=q_blocks, K_BLOCKS=k_blocks,
        HEAD_DIM=feat, D_CHUNK=d_chunk, UPCAST=needs_upcast(qc.dtype),
        DOT_PRECISION=dot_precision(qc.dtype), ORDERED=ordered, KEYS_IN_ORDER=ordered and keys_in_order,
        HEAD_ORDER=head_order is not None, num_warps=4, num_stages=2,
    )
    return out


def ordered_block_scores(q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig, order: torch.Tensor,
                         scale: float | None = None, out: torch.Tensor | None = None,
                         rows: torch.Tensor | None = None) -> torch.Tensor:
    """Triton twin of :func:`unisparse.reordered.block_scores`: the tokens gathered into ``order``,
    pooled, and scored with visibility by original positions. float32 ``[B, Hs, nb, nb]``, or
    ``[B, Hs, len(rows), nb]`` for the query blocks ``rows`` alone (only their queries are gathered)."""
    from ..reordered import group_bounds, int32_positions, is_identity, rows_order

    if config.variance_correction > 0:
        raise ValueError("variance_correction is not supported in a reordered sequence (video-aware selection)")
    b, hq, seq_len, d = q.shape
    group = hq // k.shape[1]
    ch = config.head_pool
    if group % ch and ch % group:
        raise ValueError(f"head_pool={ch} must divide the GQA group size ({group}) or be a multiple of it")
    order = order.to(q.device)
    q_order = rows_order(order, rows, config.block_size)
    qc = pool_tokens(q, config.q_pool, ch, index=int32_positions(q_order))
    kc = pool_tokens(k, config.k_pool, max(1, ch // group), index=int32_positions(order))
    _, q_last = group_bounds(q_order, config.q_pool)
    k_first, _ = group_bounds(order, config.k_pool)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    return compressed_block_scores(qc, kc, seq_len, config.block_size, config.q_pool, config.k_pool, scale, out=out,
                                   q_last=q_last, k_first=k_first,
                                   n_row_blocks=None if rows is None else rows.numel(), keys_in_order=is_identity(order))


def head_order_mask(q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig, orders: torch.Tensor,
                    choice: torch.Tensor, scale: float | None = None, out: torch.Tensor | None = None,
                    top_p: torch.Tensor | None = None) -> torch.Tensor:
    """Every KV head's UniSparse mask in its own order, in one scoring and one Top-P launch:
    bool ``[B, Hq, nb, nb]``, what :func:`unisparse.reordered.order_mask` gives in order
    ``orders[choice[b, g]]`` for KV head ``g``'s query heads.

    ``orders``: int64 ``[O, L]`` (row 0 the prompt's own order, so its heads skip the keys after a
    tile's last query); ``choice``: integer ``[B, Hkv]``, read on the device, so choosing orders and
    scoring in them needs no host sync. ``head_pool`` must divide the GQA group (a composite head then
    lies within one KV head, hence one order). ``out``: an optional float32 ``[B, Hq / head_pool, nb, nb]``
    buffer for the block scores (tests poison it). ``top_p``: per-head thresholds ``[B, Hq / head_pool, 1]``
    (calibrated ones, each in its head's order) instead of ``config.top_p``."""
    from ..reordered import stacked_visible_blocks

    if config.variance_correction > 0:
        raise ValueError("variance_correction is not supported in a reordered sequence (video-aware selection)")
    b, hq, seq_len = q.shape[:3]
    hkv = k.shape[1]
    group = hq // hkv
    ch = config.head_pool
    if group % ch:
        raise ValueError(f"head_pool={ch} must divide the GQA group size ({group}) for per-head orders")
    if tuple(choice.shape) != (b, hkv) or orders.shape[1] != seq_len:
        raise ValueError(f"choice must be [B, Hkv] = {(b, hkv)} and orders [O, {seq_len}]; "
                         f"got {tuple(choice.shape)}, {tuple(orders.shape)}")
    kv_rows = choice.to(device=q.device, dtype=torch.int32)
    q_rows = kv_rows.repeat_interleave(group // ch, dim=1)  # [B, Hq / head_pool]
    visible = stacked_visible_blocks(orders, config.block_size)
    scores = _scores_in_head_orders(q, k, config, orders, orders, q_rows, kv_rows, scale, out=out)
    return _top_p_in_head_orders(scores, config, q_rows, visible, top_p=top_p)


def _top_p_in_head_orders(scores: torch.Tensor, config: UniSparseConfig, q_rows: torch.Tensor, visible: torch.Tensor,
                          rows: torch.Tensor | None = None, top_p: torch.Tensor | None = None) -> torch.Tensor:
    """Top-P of scores taken by :func:`_scores_in_head_orders` (``visible [O, n_rows, nb]``, each head's
    row ``q_rows``), at ``config.top_p`` or per-head thresholds ``top_p``: bool ``[B, Hq, n_rows, nb]``."""
    mask = top_p_mask(scores, config.top_p if top_p is None else top_p, sink_blocks=config.sink_blocks,
                      local_blocks=config.local_blocks, visible=visible, visible_of=q_rows, rows=rows)
    return expand_heads(mask, config.head_pool)


def _scores_in_head_orders(q, k, config: UniSparseConfig, orders: torch.Tensor, q_tokens: torch.Tensor,
                           q_rows: torch.Tensor, kv_rows: torch.Tensor, scale: float | None,
                           rows: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Pool and score with every (batch row, head) in its own row of the stacked orders: the chain
    :func:`head_order_mask` and :func:`probe_masks` share. ``q_tokens [O, N]``: the query tokens of
    each order (all of it, or the probe rows'); ``q_rows [B, Hq / head_pool]``, ``kv_rows [B, Hkv]``:
    each head's order. Returns float32 ``[B, Hq / head_pool, n_rows, nb]``."""
    from ..reordered import int32_positions, is_identity, order_row, stacked_group_bounds

    ch = config.head_pool
    qc = pool_tokens(q, config.q_pool, ch, index=int32_positions(q_tokens), index_rows=q_rows)
    kc = pool_tokens(k, config.k_pool, 1, index=int32_positions(orders), index_rows=kv_rows)
    _, q_last = stacked_group_bounds(q_tokens, config.q_pool)
    k_first, _ = stacked_group_bounds(orders, config.k_pool)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return compressed_block_scores(qc, kc, q.shape[2], config.block_size, config.q_pool, config.k_pool, scale,
                                   out=out, q_last=q_last, k_first=k_first,
                                   n_row_blocks=None if rows is None else rows.numel(), head_order=q_rows,
                                   keys_in_order=is_identity(order_row(orders, 0)))


@functools.lru_cache(maxsize=16)
def _order_per_batch_row(n_orders: int, heads: int, device: str) -> torch.Tensor:
    """int32 ``[n_orders, heads]``: batch row ``i`` is in order ``i`` (read-only, cached)."""
    return torch.arange(n_orders, device=device, dtype=torch.int32)[:, None].expand(n_orders, heads).contiguous()


def probe_masks(q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig, orders: torch.Tensor, rows: torch.Tensor,
                scale: float | None = None, with_top_p: bool = False):
    """The video-aware probe, every order at once: ``[mask in orders[i] on the query blocks rows]``,
    each bool ``[1, Hq, len(rows), nb]``, as :func:`unisparse.reordered.order_mask` gives them order
    by order, in two pooling launches, one scoring and one Top-P launch for all orders instead of that
    many per order (selection at 32K is bound by its launches, ``benchmarks/attention/profile_video_select_h200.md``).

    The orders become a batch: one prompt (``B == 1``) is read once per order through a zero
    stride. Returns None for a batch of several prompts or a ``head_pool`` that does not divide the
    GQA group (the caller then probes order by order).

    With ``config.calibration_blocks``, each order's heads take thresholds calibrated in that order on
    the probe rows (:func:`unisparse.calibration.calibrated_top_p` with the exact mass of
    :func:`exact_row_mass`: one launch per order), read on the device. ``with_top_p``: return
    ``(masks, thresholds)``, the thresholds a list of float32 ``[1, Hq / head_pool, 1]`` per order
    (None without calibration), which the full masks then reuse."""
    from ..calibration import calibrated_top_p
    from ..reordered import order_row, stacked_rows_order, stacked_visible_rows, visible_blocks

    b, hq = q.shape[:2]
    hkv = k.shape[1]
    ch = config.head_pool
    if config.variance_correction > 0:
        raise ValueError("variance_correction is not supported in a reordered sequence (video-aware selection)")
    if b != 1 or (hq // hkv) % ch:
        return None
    n_orders = orders.shape[0]
    q_rows, kv_rows = _order_per_batch_row(n_orders, hq // ch, str(q.device)), _order_per_batch_row(n_orders, hkv, str(q.device))
    tokens = stacked_rows_order(orders, rows, config.block_size)
    visible = stacked_visible_rows(orders, rows, config.block_size)
    scores = _scores_in_head_orders(q.expand(n_orders, -1, -1, -1), k.expand(n_orders, -1, -1, -1), config, orders,
                                    tokens, q_rows, kv_rows, scale, rows=rows)
    thresholds = top_p = None
    if config.calibration_blocks:
        thresholds = [calibrated_top_p(q, k, scores[i:i + 1], config, scale, exact_mass=exact_row_mass,
                                       order=order_row(orders, i),
                                       visible=visible_blocks(order_row(orders, i), config.block_size), rows=rows,
                                       rule=top_p_mask)
                      for i in range(n_orders)]
        top_p = torch.cat(thresholds)  # [O, Hs, 1]: batch row i is order i
    mask = _top_p_in_head_orders(scores, config, q_rows, visible, rows=rows, top_p=top_p)
    masks = [mask[i:i + 1] for i in range(n_orders)]
    return (masks, thresholds) if with_top_p else masks


def select_blocks(q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig, scale: float | None = None,
                  top_p: torch.Tensor | None = None) -> torch.Tensor:
    """Triton block scores, then the shared Top-P rule in one launch (:mod:`unisparse.kernels.top_p`):
    bool ``[B, Hq, nb, nb]``.

    With ``config.variance_correction > 0``: the union of Top-P on the plain and on the corrected
    scores, as in :func:`unisparse.reference.select_blocks` (two scoring passes). With
    ``config.calibration_blocks > 0``: per-head thresholds from :mod:`unisparse.calibration`, the
    sampled rows' exact mass by :func:`exact_row_mass`; ``top_p``: thresholds already calibrated, as in
    :func:`unisparse.reference.select_blocks`.
    """
    scores = block_scores(q, k, config, scale)
    if config.calibration_blocks or top_p is not None:
        from ..calibration import calibrated_top_p

        if top_p is None:
            top_p = calibrated_top_p(q, k, scores, config, scale, exact_mass=exact_row_mass, rule=top_p_mask)
        mask = top_p_mask(scores, top_p, sink_blocks=config.sink_blocks, local_blocks=config.local_blocks)
        return expand_heads(mask, config.head_pool)
    mask = _top_p(scores, config)
    if config.variance_correction > 0:
        mask = mask | _top_p(block_scores(q, k, config.replace(variance_correction=0.0), scale), config)
    return expand_heads(mask, config.head_pool)


def _top_p(scores: torch.Tensor, config: UniSparseConfig) -> torch.Tensor:
    return top_p_mask(scores, config.top_p, sink_blocks=config.sink_blocks, local_blocks=config.local_blocks)


def default_key_splits(n_blocks: int) -> int:
    """Key ranges for :func:`exact_row_mass`: one per 8 key blocks, at most 16 (a short sequence: one
    launch). The calibration samples 256 query rows, so without a split a long sequence's exact mass
    runs on a few programs per head, each walking every key."""
    return max(1, min(16, n_blocks // 8))


def exact_row_mass(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, rows: int, block_size: int,
                   scale: float | None = None, order: torch.Tensor | None = None,
                   out: torch.Tensor | None = None, q_blocks: int | None = None,
                   key_splits: int | None = None, one_pass: bool = False) -> torch.Tensor:
    """Triton twin of :func:`unisparse.calibration.exact_row_mass`. With ``key_splits=1``, one launch of
    the fused block-score kernel with every sampled query and every key a "composite" token of its own
    (``k_pool = 1``), ``rows`` queries per block row (``q_pool = block_size / rows``), visibility by their positions.
    float32 ``[B, Hq, len(positions) // rows, nb]`` (``out``: a buffer of that shape, e.g. poisoned by a test).
    ``order``: the keys are gathered into it (blocks of the order, visibility by original positions).
    ``key_splits``: the keys split into that many ranges over more programs, two launches
    (:mod:`.exact_mass`); default :func:`default_key_splits` (at 32K on an H100 16 splits took 0.32 ms
    where the one launch filled 112 programs and took 0.84 ms, ``benchmarks/attention/calibrated_top_p/h100_profile_32k_splits.json``);
    1: the one launch. ``one_pass``: with split keys, the logits once and per-block statistics
    combined after (:func:`unisparse.kernels.exact_mass.split_exact_row_mass`); opt-in: at 32K on an
    H100 0.27 / 0.33 ms against 0.33 / 0.33 (video_grid / video_mixed, ``h100_profile_32k_one_pass.json``),
    a gain on one family only, for ``8 * B * H * nb * len(positions)`` bytes of statistics."""
    from ..reordered import int32_positions, is_identity

    seq_len, d = q.shape[2], q.shape[3]
    qs = q[:, :, positions.to(q.device)].contiguous()
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    q_last = positions.to(device=q.device, dtype=torch.int32)
    in_order = order is None or is_identity(order)
    if in_order:
        keys, k_first = k.contiguous(), torch.arange(seq_len, device=q.device, dtype=torch.int32)
    else:
        order = order.to(q.device)
        keys, k_first = k[:, :, order].contiguous(), int32_positions(order)
    if key_splits is None:
        key_splits = default_key_splits(-(-seq_len // block_size))
    if key_splits > 1:
        from .exact_mass import split_exact_row_mass

        return split_exact_row_mass(qs, keys, q_last, k_first, rows, block_size, scale, key_splits, in_order, out=out,
                                    one_pass=one_pass)
    return compressed_block_scores(qs, keys, seq_len, block_size, block_size // rows, 1, scale,
                                   out=out, q_last=q_last, k_first=k_first, n_row_blocks=positions.numel() // rows,
                                   keys_in_order=in_order, q_blocks=q_blocks)
