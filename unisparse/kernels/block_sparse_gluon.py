"""Block-sparse causal attention forward for Hopper (sm_90) in Gluon, Triton's explicit dialect.

Why Gluon: the Triton kernel in :mod:`.block_sparse` leaves the schedule inside an iteration
to the compiler, which issues ``S = Q K^T``, waits for it, runs the softmax, then issues
``P V`` and waits again, in both warpgroups of a program at once: the tensor cores idle while
the exponentials run. It measured 0.80-0.87x cuDNN's dense time (H200, head dim 128). Here the
schedule is written out, as in FlashAttention-3:

* **Producer/consumer warp specialization** (``_gluon_ws_kernel``, the default): one warp issues
  the TMA copies of Q, K and V into a ring of ``NUM_STAGES`` shared-memory stages (an mbarrier
  per stage for "K landed", "V landed", "K free", "V free"); two consumer warpgroups own 64
  query rows each and run independently, so one's softmax overlaps the other's products.
  Registers move to the consumers (240 each, 24 for the producer; ``setmaxnreg``).
* **Intra-warpgroup overlap** in each consumer: iteration j issues ``S_j = Q K_j^T`` and then
  ``O += P_{j-1} V_{j-1}`` (both async wgmma, P from registers), waits for ``S_j`` only, runs
  the softmax of ``S_j`` while the PV product is on the tensor cores, then waits for it and
  rescales O.

Variants kept for measurement (``Tile.kernel``, see benchmarks/kernel/NOTES.md): ``_gluon_fwd_kernel``
(no producer warp: all warps issue the copies; with and without the overlap: no faster than the
Triton kernel, its two warpgroups stay in lockstep and the compiler adds CTA-wide barriers
around every copy), ``PINGPONG`` (consumers take turns issuing products through two mbarriers:
no faster), and ``_gluon_pws_kernel`` (an ordered tile list, KV head by KV head and longest rows
first, walked by one program per tile or by one persistent program per multiprocessor:
proportionality at low density improves, density 1 is 3-5% slower).

Work per tile: one query tile of one query head walks its list of kept key blocks (from
:func:`.block_sparse.kept_block_lists`, ascending, so only the last kept block can need the
causal or length mask); each key block is ``BLOCK_SIZE // BLOCK_N`` sub-tiles, sub-tiles of
the last block wholly above the tile's last row are not visited. Q, K, V and O go through 4-D
tensor descriptors over the tensors' own strides (GQA reads the shared KV head, no copies; the
``[B, L, H, D]`` layout transposed works as is); keys and rows past the sequence end are
zero-filled by the copy engine on load, masked in the last block, and clipped on the TMA store.

Scope (the launcher falls back to the Triton kernel otherwise, :func:`.block_sparse.kernel_for`):
CUDA capability 9.x, float16 / bfloat16, head dim 64 or 128, ``block_size`` a multiple of the
tile sides (128), 16-byte aligned strides, Triton 3.6 (Gluon's API is experimental and moves
between releases). The interpreter never reaches this module. All variants compile for sm_90
without a GPU: benchmarks/kernel/compile_check.py.
"""

from __future__ import annotations

import os

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor


@gluon.jit
def _issue_tile(desc, smem, bar, row_idx, it, b, kv_h,
                SUBS: gl.constexpr, BLOCK_SIZE: gl.constexpr, NUM_STAGES: gl.constexpr):
    """TMA copy of the K (or V) sub-tile of iteration ``it`` into stage ``it % NUM_STAGES``."""
    BLOCK_N: gl.constexpr = desc.block_type.shape[2]
    st = it % NUM_STAGES
    start_n = gl.load(row_idx + it // SUBS) * BLOCK_SIZE + (it % SUBS) * BLOCK_N
    mbarrier.expect(bar.index(st), desc.block_type.nbytes)
    tma.async_copy_global_to_shared(desc, [b, kv_h, start_n, 0], bar.index(st), smem.index(st))


@gluon.jit
def _softmax_step(s, m_i, l_i, qk_scale, it, n_full, last_start, offs_n, limit, BLOCK_N: gl.constexpr):
    """Online softmax of one score tile in base 2. Only the last kept block's sub-tiles (``it >=
    n_full``) carry the causal / length mask; a row with nothing visible yet keeps p = 0."""
    if it >= n_full:
        keys = last_start + (it - n_full) * BLOCK_N + offs_n
        s = gl.where(keys[None, :] <= limit[:, None], s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
    m_ref = gl.where(m_new == float("-inf"), 0.0, m_new)
    p = gl.exp2(s * qk_scale - m_ref[:, None])
    alpha = gl.exp2(m_i - m_ref)
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return p, alpha, m_new, l_i


@gluon.jit
def _key_positions(pos_base, row_idx, it, offs_n, seq_len,
                   SUBS: gl.constexpr, BLOCK_SIZE: gl.constexpr, BLOCK_N: gl.constexpr):
    """Original positions of the keys of sub-tile ``it`` (past the end: after every query)."""
    start_n = gl.load(row_idx + it // SUBS) * BLOCK_SIZE + (it % SUBS) * BLOCK_N
    keys = start_n + offs_n
    return gl.load(pos_base + keys, mask=keys < seq_len, other=2**30)


@gluon.jit
def _mask_by_positions(s, pos_base, row_idx, it, q_pos, offs_n, seq_len,
                       SUBS: gl.constexpr, BLOCK_SIZE: gl.constexpr, BLOCK_N: gl.constexpr):
    """The reordered kernel's visibility (``ORDERED``): key ``j`` of sub-tile ``it`` is visible to
    row ``i`` iff its original position (``pos_base[j]``) is not after the row's (``q_pos[i]``);
    keys past the end are never visible."""
    k_pos = _key_positions(pos_base, row_idx, it, offs_n, seq_len, SUBS, BLOCK_SIZE, BLOCK_N)
    return gl.where(k_pos[None, :] <= q_pos[:, None], s, float("-inf"))


@gluon.jit
def _gluon_fwd_kernel(
    q_desc, k_desc, v_desc, o_desc, idx_ptr, cnt_ptr,
    stride_ib, stride_ih, stride_im, stride_cb, stride_ch,
    seq_len, heads, q_per_kv_head, q_per_mask_head, qk_scale,
    BLOCK_SIZE: gl.constexpr, NUM_STAGES: gl.constexpr, OVERLAP: gl.constexpr, num_warps: gl.constexpr,
):
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[2]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    dtype: gl.constexpr = q_desc.dtype
    SUBS: gl.constexpr = BLOCK_SIZE // BLOCK_N

    # Register layouts: wgmma accumulators (one warpgroup per 64 rows), P as the A operand.
    S_L: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, BLOCK_N, 16])
    O_L: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, HEAD_DIM, 16])
    P_L: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=O_L, k_width=2)
    ROW_S: gl.constexpr = gl.SliceLayout(1, S_L)
    ROW_O: gl.constexpr = gl.SliceLayout(1, O_L)

    pid_m = gl.num_programs(0) - 1 - gl.program_id(0)  # longest rows first (causal imbalance)
    pid_bh = gl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    kv_h = h // q_per_kv_head
    mask_h = h // q_per_mask_head
    q_start = pid_m * BLOCK_M
    q_block = q_start // BLOCK_SIZE
    row_idx = idx_ptr + b * stride_ib + mask_h * stride_ih + q_block * stride_im
    n_kept = gl.load(cnt_ptr + b * stride_cb + mask_h * stride_ch + q_block)

    # Sub-tiles to visit: all of the kept blocks but the last, then those of the last block that
    # start at or before this tile's last row (the diagonal block, or the sequence's end).
    last_blk = gl.load(row_idx + gl.maximum(n_kept - 1, 0))
    last_start = last_blk * BLOCK_SIZE
    last_row = gl.minimum(q_start + BLOCK_M, seq_len) - 1
    n_full = gl.maximum(n_kept - 1, 0) * SUBS
    n_last = gl.minimum((last_row - last_start) // BLOCK_N + 1, SUBS)
    n_iters = gl.where(n_kept > 0, n_full + n_last, 0)

    q_smem = gl.allocate_shared_memory(dtype, q_desc.block_type.shape, q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_bar = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_bar = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(k_bar.index(i), count=1)
        mbarrier.init(v_bar.index(i), count=1)
    fence_async_shared()

    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [b, h, q_start, 0], q_bar, q_smem)
    for i in gl.static_range(NUM_STAGES):
        if i < n_iters:
            _issue_tile(k_desc, k_smem, k_bar, row_idx, i, b, kv_h, SUBS, BLOCK_SIZE, NUM_STAGES)
            _issue_tile(v_desc, v_smem, v_bar, row_idx, i, b, kv_h, SUBS, BLOCK_SIZE, NUM_STAGES)

    offs_m = q_start + gl.arange(0, BLOCK_M, layout=ROW_S)
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, S_L))
    limit = gl.where(last_blk == q_block, gl.minimum(offs_m, seq_len - 1), seq_len - 1)
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, ROW_S)
    l_i = gl.zeros([BLOCK_M], gl.float32, ROW_S)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, O_L)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, S_L)
    p = gl.zeros([BLOCK_M, BLOCK_N], dtype, P_L)
    q2 = q_smem.reshape([BLOCK_M, HEAD_DIM])
    mbarrier.wait(q_bar, 0)

    if n_iters > 0:
        if OVERLAP:
            # Iteration 0: its scores and softmax; its PV product is issued in iteration 1.
            mbarrier.wait(k_bar.index(0), 0)
            kt = k_smem.index(0).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
            s = warpgroup_mma(q2, kt, s_zero, use_acc=False, is_async=True)
            s = warpgroup_mma_wait(0, deps=(s, ))
            if NUM_STAGES < n_iters:
                gl.thread_barrier()  # both warpgroups are past K_0
                _issue_tile(k_desc, k_smem, k_bar, row_idx, NUM_STAGES, b, kv_h, SUBS, BLOCK_SIZE, NUM_STAGES)
            pf, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, qk_scale, 0, n_full, last_start, offs_n, limit, BLOCK_N)
            p = gl.convert_layout(pf.to(dtype), P_L)
            for it in range(1, n_iters):
                st = it % NUM_STAGES
                mbarrier.wait(k_bar.index(st), (it // NUM_STAGES) & 1)
                kt = k_smem.index(st).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
                s = warpgroup_mma(q2, kt, s_zero, use_acc=False, is_async=True)
                pst = (it - 1) % NUM_STAGES
                mbarrier.wait(v_bar.index(pst), ((it - 1) // NUM_STAGES) & 1)
                vt = v_smem.index(pst).reshape([BLOCK_N, HEAD_DIM])
                acc = warpgroup_mma(p, vt, acc, is_async=True)
                s = warpgroup_mma_wait(1, deps=(s, ))
                pf, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, qk_scale, it, n_full, last_start, offs_n, limit,
                                                    BLOCK_N)
                acc, p = warpgroup_mma_wait(0, deps=(acc, p))
                # K_it and V_{it-1} are consumed: refill their stages with K_{it+S} and V_{it-1+S}
                # (S = NUM_STAGES), needed S - 1 iterations from now.
                if it - 1 + NUM_STAGES < n_iters:
                    gl.thread_barrier()  # both warpgroups are past them
                    _issue_tile(v_desc, v_smem, v_bar, row_idx, it - 1 + NUM_STAGES, b, kv_h, SUBS, BLOCK_SIZE,
                                NUM_STAGES)
                    if it + NUM_STAGES < n_iters:
                        _issue_tile(k_desc, k_smem, k_bar, row_idx, it + NUM_STAGES, b, kv_h, SUBS, BLOCK_SIZE,
                                    NUM_STAGES)
                acc = acc * gl.convert_layout(alpha, ROW_O)[:, None]
                p = gl.convert_layout(pf.to(dtype), P_L)
            lst = (n_iters - 1) % NUM_STAGES
            mbarrier.wait(v_bar.index(lst), ((n_iters - 1) // NUM_STAGES) & 1)
            vt = v_smem.index(lst).reshape([BLOCK_N, HEAD_DIM])
            acc = warpgroup_mma(p, vt, acc, is_async=True)
            acc, p = warpgroup_mma_wait(0, deps=(acc, p))
        else:
            # Plain order (ablation): scores, wait, softmax, PV, wait.
            for it in range(n_iters):
                st = it % NUM_STAGES
                ph = (it // NUM_STAGES) & 1
                mbarrier.wait(k_bar.index(st), ph)
                kt = k_smem.index(st).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
                s = warpgroup_mma(q2, kt, s_zero, use_acc=False, is_async=True)
                s = warpgroup_mma_wait(0, deps=(s, ))
                pf, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, qk_scale, it, n_full, last_start, offs_n, limit,
                                                    BLOCK_N)
                acc = acc * gl.convert_layout(alpha, ROW_O)[:, None]
                p = gl.convert_layout(pf.to(dtype), P_L)
                mbarrier.wait(v_bar.index(st), ph)
                vt = v_smem.index(st).reshape([BLOCK_N, HEAD_DIM])
                acc = warpgroup_mma(p, vt, acc, is_async=True)
                acc, p = warpgroup_mma_wait(0, deps=(acc, p))
                if it + NUM_STAGES < n_iters:
                    gl.thread_barrier()
                    _issue_tile(k_desc, k_smem, k_bar, row_idx, it + NUM_STAGES, b, kv_h, SUBS, BLOCK_SIZE,
                                NUM_STAGES)
                    _issue_tile(v_desc, v_smem, v_bar, row_idx, it + NUM_STAGES, b, kv_h, SUBS, BLOCK_SIZE,
                                NUM_STAGES)

    l_o = gl.convert_layout(l_i, ROW_O)
    o = acc / gl.where(l_o == 0.0, 1.0, l_o)[:, None]  # rows with no visible key come out as zeros
    # Q's buffer is free (every product that read it has completed): stage O there for the TMA store.
    q2.store(o.to(dtype))
    fence_async_shared()
    gl.thread_barrier()
    tma.async_copy_shared_to_global(o_desc, [b, h, q_start, 0], q_smem)
    tma.store_wait(0)
    mbarrier.invalidate(q_bar)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(k_bar.index(i))
        mbarrier.invalidate(v_bar.index(i))


@gluon.jit
def _ws_loader(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_empty, v_empty,
               row_idx, n_iters, b, h, kv_h, q_start,
               SUBS: gl.constexpr, BLOCK_SIZE: gl.constexpr, WG_ROWS: gl.constexpr, PINGPONG: gl.constexpr):
    """Producer warp: Q (one half per consumer warpgroup), then K and V through the stage ring,
    each stage refilled once both consumers have released it."""
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    NUM_STAGES: gl.constexpr = k_smem.type.shape[0]
    for w in gl.static_range(2):
        mbarrier.expect(q_bar.index(w), q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [b, h, q_start + w * WG_ROWS, 0], q_bar.index(w), q_smem.index(w))
    for it in range(n_iters):
        st = it % NUM_STAGES
        ph = (it // NUM_STAGES) & 1
        start_n = gl.load(row_idx + it // SUBS) * BLOCK_SIZE + (it % SUBS) * BLOCK_N
        mbarrier.wait(k_empty.index(st), ph ^ 1)  # a fresh barrier passes parity 1
        mbarrier.expect(k_ready.index(st), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [b, kv_h, start_n, 0], k_ready.index(st), k_smem.index(st))
        mbarrier.wait(v_empty.index(st), ph ^ 1)
        mbarrier.expect(v_ready.index(st), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [b, kv_h, start_n, 0], v_ready.index(st), v_smem.index(st))


@gluon.jit
def _ws_consumer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_empty, v_empty,
                 turn, o_desc, n_iters, n_full, last_start, last_blk, q_block, b, h, q_start, seq_len, qk_scale,
                 row_idx, pos_base, WG: gl.constexpr, WG_ROWS: gl.constexpr, PINGPONG: gl.constexpr,
                 SUBS: gl.constexpr, BLOCK_SIZE: gl.constexpr, ORDERED: gl.constexpr, PREFETCH_POS: gl.constexpr):
    """One consumer warpgroup: ``WG_ROWS`` query rows against every kept key sub-tile, with the
    scores of sub-tile j issued before the PV product of j - 1 (FlashAttention-3's intra-warpgroup
    overlap). With ``PINGPONG`` the two consumers take turns issuing their products (two
    mbarriers), so that one's softmax runs while the other's products occupy the tensor cores.
    ``ORDERED``: tokens in another order, every sub-tile masked by original positions
    (:func:`_mask_by_positions`; ``n_full == n_iters``, so the causal mask never applies).
    ``PREFETCH_POS``: the next sub-tile's key positions are loaded one iteration ahead, so their
    two dependent global loads (kept-block index, then positions) wait behind this sub-tile's work
    instead of between its score product and its softmax."""
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
    NUM_STAGES: gl.constexpr = k_smem.type.shape[0]
    dtype: gl.constexpr = q_desc.dtype
    S_L: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16])
    O_L: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16])
    P_L: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=O_L, k_width=2)
    ROW_S: gl.constexpr = gl.SliceLayout(1, S_L)
    ROW_O: gl.constexpr = gl.SliceLayout(1, O_L)

    row0 = q_start + WG * WG_ROWS
    offs_m = row0 + gl.arange(0, WG_ROWS, layout=ROW_S)
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, S_L))
    limit = gl.where(last_blk == q_block, gl.minimum(offs_m, seq_len - 1), seq_len - 1)
    m_i = gl.full([WG_ROWS], float("-inf"), gl.float32, ROW_S)
    l_i = gl.zeros([WG_ROWS], gl.float32, ROW_S)
    acc = gl.zeros([WG_ROWS, HEAD_DIM], gl.float32, O_L)
    s_zero = gl.zeros([WG_ROWS, BLOCK_N], gl.float32, S_L)
    p = gl.zeros([WG_ROWS, BLOCK_N], dtype, P_L)
    q_buf = q_smem.index(WG)
    q2 = q_buf.reshape([WG_ROWS, HEAD_DIM])
    q_pos = offs_m
    k_pos = offs_n
    if ORDERED:  # rows past the end see nothing
        q_pos = gl.load(pos_base + offs_m, mask=offs_m < seq_len, other=-1)
        if PREFETCH_POS:
            k_pos = _key_positions(pos_base, row_idx, 0, offs_n, seq_len, SUBS, BLOCK_SIZE, BLOCK_N)
    mbarrier.wait(q_bar.index(WG), 0)

    if n_iters > 0:
        if PINGPONG:
            mbarrier.wait(turn.index(WG), WG ^ 1)
        mbarrier.wait(k_ready.index(0), 0)
        kt = k_smem.index(0).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
        s = warpgroup_mma(q2, kt, s_zero, use_acc=False, is_async=True)
        if PINGPONG:
            mbarrier.arrive(turn.index(1 - WG), count=1)
        s = warpgroup_mma_wait(0, deps=(s, ))
        gl.thread_barrier()
        mbarrier.arrive(k_empty.index(0), count=1)
        if ORDERED:
            if PREFETCH_POS:
                s = gl.where(k_pos[None, :] <= q_pos[:, None], s, float("-inf"))
                k_pos = _key_positions(pos_base, row_idx, gl.minimum(n_iters - 1, 1), offs_n, seq_len,
                                       SUBS, BLOCK_SIZE, BLOCK_N)
            else:
                s = _mask_by_positions(s, pos_base, row_idx, 0, q_pos, offs_n, seq_len, SUBS, BLOCK_SIZE, BLOCK_N)
        pf, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, qk_scale, 0, n_full, last_start, offs_n, limit, BLOCK_N)
        p = gl.convert_layout(pf.to(dtype), P_L)
        for it in range(1, n_iters):
            st = it % NUM_STAGES
            pst = (it - 1) % NUM_STAGES
            if PINGPONG:
                mbarrier.wait(turn.index(WG), (it & 1) ^ WG ^ 1)
            mbarrier.wait(k_ready.index(st), (it // NUM_STAGES) & 1)
            kt = k_smem.index(st).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
            s = warpgroup_mma(q2, kt, s_zero, use_acc=False, is_async=True)
            mbarrier.wait(v_ready.index(pst), ((it - 1) // NUM_STAGES) & 1)
            vt = v_smem.index(pst).reshape([BLOCK_N, HEAD_DIM])
            acc = warpgroup_mma(p, vt, acc, is_async=True)
            if PINGPONG:
                mbarrier.arrive(turn.index(1 - WG), count=1)
            s = warpgroup_mma_wait(1, deps=(s, ))
            if ORDERED:
                if PREFETCH_POS:
                    s = gl.where(k_pos[None, :] <= q_pos[:, None], s, float("-inf"))
                    k_pos = _key_positions(pos_base, row_idx, gl.minimum(it + 1, n_iters - 1), offs_n, seq_len,
                                           SUBS, BLOCK_SIZE, BLOCK_N)
                else:
                    s = _mask_by_positions(s, pos_base, row_idx, it, q_pos, offs_n, seq_len, SUBS, BLOCK_SIZE,
                                           BLOCK_N)
            pf, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, qk_scale, it, n_full, last_start, offs_n, limit,
                                                BLOCK_N)
            acc, p = warpgroup_mma_wait(0, deps=(acc, p))
            gl.thread_barrier()  # the whole warpgroup is past K_it and V_{it-1}
            mbarrier.arrive(k_empty.index(st), count=1)
            mbarrier.arrive(v_empty.index(pst), count=1)
            acc = acc * gl.convert_layout(alpha, ROW_O)[:, None]
            p = gl.convert_layout(pf.to(dtype), P_L)
        lst = (n_iters - 1) % NUM_STAGES
        mbarrier.wait(v_ready.index(lst), ((n_iters - 1) // NUM_STAGES) & 1)
        vt = v_smem.index(lst).reshape([BLOCK_N, HEAD_DIM])
        acc = warpgroup_mma(p, vt, acc, is_async=True)
        acc, p = warpgroup_mma_wait(0, deps=(acc, p))

    l_o = gl.convert_layout(l_i, ROW_O)
    o = acc / gl.where(l_o == 0.0, 1.0, l_o)[:, None]
    q2.store(o.to(dtype))
    fence_async_shared()
    gl.thread_barrier()
    tma.async_copy_shared_to_global(o_desc, [b, h, row0, 0], q_buf)
    tma.store_wait(0)


@gluon.jit
def _gluon_ws_kernel(
    q_desc, k_desc, v_desc, o_desc, idx_ptr, cnt_ptr,
    stride_ib, stride_ih, stride_im, stride_cb, stride_ch,
    seq_len, heads, q_per_kv_head, q_per_mask_head, qk_scale, pos_ptr, stride_pb, stride_ph,
    BLOCK_SIZE: gl.constexpr, NUM_STAGES: gl.constexpr, PINGPONG: gl.constexpr, ORDERED: gl.constexpr,
    num_warps: gl.constexpr, PREFETCH_POS: gl.constexpr = True,
):
    """Warp-specialized variant: a one-warp TMA producer and two consumer warpgroups of
    ``WG_ROWS`` rows each (the descriptors' tile rows), as FlashAttention-3 splits a 128-row tile.

    ``ORDERED`` (video-aware selection, :mod:`.block_sparse_ordered`): q, k and v are gathered
    into a token order and ``pos_ptr [B, Hkv, L]`` (int32) holds each token's original position;
    kept blocks may lie anywhere (above the block diagonal too), every one of their sub-tiles is
    visited and masked by original positions. ``pos_ptr`` is unused otherwise."""
    WG_ROWS: gl.constexpr = q_desc.block_type.shape[2]
    BLOCK_M: gl.constexpr = 2 * WG_ROWS
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    dtype: gl.constexpr = q_desc.dtype
    SUBS: gl.constexpr = BLOCK_SIZE // BLOCK_N

    pid_m = gl.num_programs(0) - 1 - gl.program_id(0)  # longest rows first
    pid_bh = gl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    kv_h = h // q_per_kv_head
    mask_h = h // q_per_mask_head
    q_start = pid_m * BLOCK_M
    q_block = q_start // BLOCK_SIZE
    row_idx = idx_ptr + b * stride_ib + mask_h * stride_ih + q_block * stride_im
    n_kept = gl.load(cnt_ptr + b * stride_cb + mask_h * stride_ch + q_block)
    last_blk = gl.load(row_idx + gl.maximum(n_kept - 1, 0))
    last_start = last_blk * BLOCK_SIZE
    last_row = gl.minimum(q_start + BLOCK_M, seq_len) - 1
    if ORDERED:
        n_full = n_kept * SUBS
        n_iters = n_full
    else:
        n_full = gl.maximum(n_kept - 1, 0) * SUBS
        n_last = gl.minimum((last_row - last_start) // BLOCK_N + 1, SUBS)
        n_iters = gl.where(n_kept > 0, n_full + n_last, 0)
    pos_base = pos_ptr + b * stride_pb + kv_h * stride_ph

    q_smem = gl.allocate_shared_memory(dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(q_bar.index(i), count=1)
        mbarrier.init(turn.index(i), count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)  # one arrival per consumer warpgroup
        mbarrier.init(v_empty.index(i), count=2)
    fence_async_shared()

    gl.warp_specialize([
        (_ws_consumer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_empty, v_empty,
                        turn, o_desc, n_iters, n_full, last_start, last_blk, q_block, b, h, q_start, seq_len,
                        qk_scale, row_idx, pos_base, 0, WG_ROWS, PINGPONG, SUBS, BLOCK_SIZE, ORDERED,
                        PREFETCH_POS)),
        (_ws_consumer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_empty, v_empty,
                        turn, o_desc, n_iters, n_full, last_start, last_blk, q_block, b, h, q_start, seq_len,
                        qk_scale, row_idx, pos_base, 1, WG_ROWS, PINGPONG, SUBS, BLOCK_SIZE, ORDERED,
                        PREFETCH_POS)),
        (_ws_loader, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, k_empty, v_empty,
                      row_idx, n_iters, b, h, kv_h, q_start, SUBS, BLOCK_SIZE, WG_ROWS, PINGPONG)),
    ], [4, 1], [240, 24])


@gluon.jit
def _tile_coords(t, n_m, heads, q_per_kv_head, q_per_mask_head, idx_ptr, cnt_ptr,
                 stride_ib, stride_ih, stride_im, stride_cb, stride_ch, seq_len,
                 BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_SIZE: gl.constexpr):
    """Tile ``t`` of the work order: batch outer, then KV head, then query tiles longest first
    (causal rows grow with the tile index), then the query heads that share the KV head, so that
    tiles running at the same time read the same K/V (L2) and the short tiles come last."""
    SUBS: gl.constexpr = BLOCK_SIZE // BLOCK_N
    per_b = heads * n_m
    b = t // per_b
    r = t % per_b
    per_g = n_m * q_per_kv_head
    kv_h = r // per_g
    r2 = r % per_g
    pid_m = n_m - 1 - r2 // q_per_kv_head
    h = kv_h * q_per_kv_head + r2 % q_per_kv_head
    mask_h = h // q_per_mask_head
    q_start = pid_m * BLOCK_M
    q_block = q_start // BLOCK_SIZE
    row_idx = idx_ptr + b * stride_ib + mask_h * stride_ih + q_block * stride_im
    n_kept = gl.load(cnt_ptr + b * stride_cb + mask_h * stride_ch + q_block)
    last_blk = gl.load(row_idx + gl.maximum(n_kept - 1, 0))
    last_start = last_blk * BLOCK_SIZE
    last_row = gl.minimum(q_start + BLOCK_M, seq_len) - 1
    n_full = gl.maximum(n_kept - 1, 0) * SUBS
    n_last = gl.minimum((last_row - last_start) // BLOCK_N + 1, SUBS)
    n_iters = gl.where(n_kept > 0, n_full + n_last, 0)
    return b, h, kv_h, q_start, q_block, row_idx, last_blk, last_start, n_full, n_iters


@gluon.jit
def _tile_of(p, rnd, n_prog):
    """Snake (boustrophedon) assignment of the ordered tiles to persistent programs: round
    ``rnd`` gives program ``p`` tile ``rnd * n_prog + p`` on even rounds and the mirrored one on
    odd rounds, which balances a list of decreasing tile sizes."""
    return rnd * n_prog + gl.where(rnd % 2 == 0, p, n_prog - 1 - p)


@gluon.jit
def _pws_loader(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty,
                v_empty, o_smem, turn, o_desc,
                idx_ptr, cnt_ptr, stride_ib, stride_ih, stride_im, stride_cb, stride_ch,
                seq_len, heads, q_per_kv_head, q_per_mask_head, qk_scale, n_m, n_tiles,
                BLOCK_SIZE: gl.constexpr, PINGPONG: gl.constexpr, WG: gl.constexpr):
    """Producer warp of the persistent kernel: for each of this program's tiles, the two Q halves
    (once their consumers released the previous tile's), then K and V through the stage ring;
    the ring's counter runs on across tiles, so the next tile's loads start while the consumers
    finish the current one."""
    WG_ROWS: gl.constexpr = q_desc.block_type.shape[2]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    NUM_STAGES: gl.constexpr = k_smem.type.shape[0]
    SUBS: gl.constexpr = BLOCK_SIZE // BLOCK_N
    p = gl.program_id(0)
    n_prog = gl.num_programs(0)
    c = 0
    tc = 0
    for rnd in range(gl.cdiv(n_tiles, n_prog)):
        t = _tile_of(p, rnd, n_prog)
        if t < n_tiles:
            b, h, kv_h, q_start, _, row_idx, _, _, _, n_iters = _tile_coords(
                t, n_m, heads, q_per_kv_head, q_per_mask_head, idx_ptr, cnt_ptr,
                stride_ib, stride_ih, stride_im, stride_cb, stride_ch, seq_len, 2 * WG_ROWS, BLOCK_N, BLOCK_SIZE)
            for w in gl.static_range(2):
                mbarrier.wait(q_empty.index(w), (tc & 1) ^ 1)
                mbarrier.expect(q_ready.index(w), q_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(q_desc, [b, h, q_start + w * WG_ROWS, 0], q_ready.index(w),
                                                q_smem.index(w))
            for it in range(n_iters):
                st = c % NUM_STAGES
                ph = (c // NUM_STAGES) & 1
                start_n = gl.load(row_idx + it // SUBS) * BLOCK_SIZE + (it % SUBS) * BLOCK_N
                mbarrier.wait(k_empty.index(st), ph ^ 1)
                mbarrier.expect(k_ready.index(st), k_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(k_desc, [b, kv_h, start_n, 0], k_ready.index(st), k_smem.index(st))
                mbarrier.wait(v_empty.index(st), ph ^ 1)
                mbarrier.expect(v_ready.index(st), v_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(v_desc, [b, kv_h, start_n, 0], v_ready.index(st), v_smem.index(st))
                c += 1
            tc += 1


@gluon.jit
def _release(bar):
    gl.thread_barrier()  # the whole warpgroup is past the buffer
    mbarrier.arrive(bar, count=1)


@gluon.jit
def _pws_consumer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty,
                  v_empty, o_smem, turn, o_desc,
                  idx_ptr, cnt_ptr, stride_ib, stride_ih, stride_im, stride_cb, stride_ch,
                  seq_len, heads, q_per_kv_head, q_per_mask_head, qk_scale, n_m, n_tiles,
                  BLOCK_SIZE: gl.constexpr, PINGPONG: gl.constexpr, WG: gl.constexpr):
    """Consumer warpgroup ``WG`` of the persistent kernel: rows ``WG * WG_ROWS ...`` of each tile,
    as :func:`_ws_consumer`, releasing every K, V and Q buffer it is done with; O leaves through
    its own shared buffer by a TMA store that is waited for only before that buffer's next use."""
    WG_ROWS: gl.constexpr = q_desc.block_type.shape[2]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
    NUM_STAGES: gl.constexpr = k_smem.type.shape[0]
    dtype: gl.constexpr = q_desc.dtype
    S_L: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16])
    O_L: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16])
    P_L: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=O_L, k_width=2)
    ROW_S: gl.constexpr = gl.SliceLayout(1, S_L)
    ROW_O: gl.constexpr = gl.SliceLayout(1, O_L)
    p_id = gl.program_id(0)
    n_prog = gl.num_programs(0)
    q2 = q_smem.index(WG).reshape([WG_ROWS, HEAD_DIM])
    o_buf = o_smem.index(WG)
    s_zero = gl.zeros([WG_ROWS, BLOCK_N], gl.float32, S_L)
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, S_L))
    c = 0
    tc = 0
    ti = 0  # this warpgroup's product issues (ping-pong parity)
    for rnd in range(gl.cdiv(n_tiles, n_prog)):
        t = _tile_of(p_id, rnd, n_prog)
        if t < n_tiles:
            b, h, _, q_start, q_block, _, last_blk, last_start, n_full, n_iters = _tile_coords(
                t, n_m, heads, q_per_kv_head, q_per_mask_head, idx_ptr, cnt_ptr,
                stride_ib, stride_ih, stride_im, stride_cb, stride_ch, seq_len, 2 * WG_ROWS, BLOCK_N, BLOCK_SIZE)
            row0 = q_start + WG * WG_ROWS
            offs_m = row0 + gl.arange(0, WG_ROWS, layout=ROW_S)
            limit = gl.where(last_blk == q_block, gl.minimum(offs_m, seq_len - 1), seq_len - 1)
            m_i = gl.full([WG_ROWS], float("-inf"), gl.float32, ROW_S)
            l_i = gl.zeros([WG_ROWS], gl.float32, ROW_S)
            acc = gl.zeros([WG_ROWS, HEAD_DIM], gl.float32, O_L)
            p = gl.zeros([WG_ROWS, BLOCK_N], dtype, P_L)
            mbarrier.wait(q_ready.index(WG), tc & 1)
            if n_iters > 0:
                st = c % NUM_STAGES
                if PINGPONG:
                    mbarrier.wait(turn.index(WG), (ti & 1) ^ WG ^ 1)
                mbarrier.wait(k_ready.index(st), (c // NUM_STAGES) & 1)
                kt = k_smem.index(st).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
                s = warpgroup_mma(q2, kt, s_zero, use_acc=False, is_async=True)
                if PINGPONG:
                    mbarrier.arrive(turn.index(1 - WG), count=1)
                ti += 1
                s = warpgroup_mma_wait(0, deps=(s, ))
                gl.thread_barrier()
                mbarrier.arrive(k_empty.index(st), count=1)
                if n_iters == 1:
                    mbarrier.arrive(q_empty.index(WG), count=1)
                pf, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, qk_scale, 0, n_full, last_start, offs_n, limit,
                                                    BLOCK_N)
                p = gl.convert_layout(pf.to(dtype), P_L)
                for it in range(1, n_iters):
                    st = (c + it) % NUM_STAGES
                    pst = (c + it - 1) % NUM_STAGES
                    if PINGPONG:
                        mbarrier.wait(turn.index(WG), (ti & 1) ^ WG ^ 1)
                    mbarrier.wait(k_ready.index(st), ((c + it) // NUM_STAGES) & 1)
                    kt = k_smem.index(st).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
                    s = warpgroup_mma(q2, kt, s_zero, use_acc=False, is_async=True)
                    mbarrier.wait(v_ready.index(pst), ((c + it - 1) // NUM_STAGES) & 1)
                    vt = v_smem.index(pst).reshape([BLOCK_N, HEAD_DIM])
                    acc = warpgroup_mma(p, vt, acc, is_async=True)
                    if PINGPONG:
                        mbarrier.arrive(turn.index(1 - WG), count=1)
                    ti += 1
                    s = warpgroup_mma_wait(1, deps=(s, ))
                    pf, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, qk_scale, it, n_full, last_start, offs_n,
                                                        limit, BLOCK_N)
                    acc, p = warpgroup_mma_wait(0, deps=(acc, p))
                    gl.thread_barrier()  # the whole warpgroup is past K_it and V_{it-1} (and Q, at the end)
                    mbarrier.arrive(k_empty.index(st), count=1)
                    mbarrier.arrive(v_empty.index(pst), count=1)
                    if it == n_iters - 1:
                        mbarrier.arrive(q_empty.index(WG), count=1)
                    acc = acc * gl.convert_layout(alpha, ROW_O)[:, None]
                    p = gl.convert_layout(pf.to(dtype), P_L)
                lst = (c + n_iters - 1) % NUM_STAGES
                mbarrier.wait(v_ready.index(lst), ((c + n_iters - 1) // NUM_STAGES) & 1)
                vt = v_smem.index(lst).reshape([BLOCK_N, HEAD_DIM])
                acc = warpgroup_mma(p, vt, acc, is_async=True)
                acc, p = warpgroup_mma_wait(0, deps=(acc, p))
                _release(v_empty.index(lst))
                c += n_iters
            else:
                _release(q_empty.index(WG))
            l_o = gl.convert_layout(l_i, ROW_O)
            o = acc / gl.where(l_o == 0.0, 1.0, l_o)[:, None]
            tma.store_wait(0)  # the previous tile's store has read o_buf
            gl.thread_barrier()
            o_buf.reshape([WG_ROWS, HEAD_DIM]).store(o.to(dtype))
            fence_async_shared()
            gl.thread_barrier()
            tma.async_copy_shared_to_global(o_desc, [b, h, row0, 0], o_buf)
            tc += 1
    tma.store_wait(0)


@gluon.jit
def _gluon_pws_kernel(
    q_desc, k_desc, v_desc, o_desc, idx_ptr, cnt_ptr,
    stride_ib, stride_ih, stride_im, stride_cb, stride_ch,
    seq_len, heads, q_per_kv_head, q_per_mask_head, qk_scale, n_m, n_tiles,
    BLOCK_SIZE: gl.constexpr, NUM_STAGES: gl.constexpr, PINGPONG: gl.constexpr, num_warps: gl.constexpr,
):
    """Warp-specialized kernel over an ordered tile list (:func:`_tile_coords`). Launched with one
    program per tile it is the non-persistent kernel in a better order; with one program per
    multiprocessor, each walks its tiles (:func:`_tile_of`) and its producer warp loads the next
    tile's Q, K and V while the consumers finish the current one."""
    dtype: gl.constexpr = q_desc.dtype
    q_smem = gl.allocate_shared_memory(dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    o_smem = gl.allocate_shared_memory(dtype, [2] + o_desc.block_type.shape, o_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=1)
        mbarrier.init(turn.index(i), count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)  # one arrival per consumer warpgroup
        mbarrier.init(v_empty.index(i), count=2)
    fence_async_shared()
    gl.warp_specialize([
        (_pws_consumer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty,
                         v_empty, o_smem, turn, o_desc, idx_ptr, cnt_ptr, stride_ib, stride_ih, stride_im, stride_cb,
                         stride_ch, seq_len, heads, q_per_kv_head, q_per_mask_head, qk_scale, n_m, n_tiles,
                         BLOCK_SIZE, PINGPONG, 0)),
        (_pws_consumer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty,
                         v_empty, o_smem, turn, o_desc, idx_ptr, cnt_ptr, stride_ib, stride_ih, stride_im, stride_cb,
                         stride_ch, seq_len, heads, q_per_kv_head, q_per_mask_head, qk_scale, n_m, n_tiles,
                         BLOCK_SIZE, PINGPONG, 1)),
        (_pws_loader, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty,
                       v_empty, o_smem, turn, o_desc, idx_ptr, cnt_ptr, stride_ib, stride_ih, stride_im, stride_cb,
                       stride_ch, seq_len, heads, q_per_kv_head, q_per_mask_head, qk_scale, n_m, n_tiles,
                       BLOCK_SIZE, PINGPONG, 2)),
    ], [4, 1], [240, 24])


_SMS = {}


def _sm_count(device) -> int:
    idx = torch.device(device).index or 0
    if idx not in _SMS:
        _SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SMS[idx]


def _gl_dtype(dtype: torch.dtype):
    return gl.bfloat16 if dtype == torch.bfloat16 else gl.float16


def descriptor(t: torch.Tensor, block_rows: int) -> TensorDescriptor:
    """4-D TMA descriptor over ``t``'s own strides, tiles of ``[1, 1, block_rows, D]``."""
    block = [1, 1, block_rows, t.shape[-1]]
    layout = gl.NVMMASharedLayout.get_default_for(block, _gl_dtype(t.dtype))
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block, layout)


def launch(q, k, v, out, idx, cnt, seq_len, heads, q_per_kv, q_per_mask, qk_scale, block_size,
           block_m, block_n, num_warps, num_stages, overlap=True, warp_specialize=False, pingpong=False,
           persistent=None, positions=None):
    """Launch a Gluon kernel (arguments checked by the caller, see ``supports``).

    ``warp_specialize``: the producer/consumer kernel; ``block_m`` is then the whole tile (two
    consumer warpgroups of ``block_m // 2`` rows; ``num_warps`` is ignored). ``persistent`` (not
    None): the ordered-tile kernel, one program per multiprocessor (True) or per tile (False).
    ``positions`` (int32 ``[B, Hkv, L]``, contiguous): q, k, v are in a token order and these
    are the original positions (the warp-specialized kernel's ``ORDERED`` mode)."""
    b = q.shape[0]
    batch_stride = lambda t: t.stride(0) if t.shape[0] > 1 else 0  # (mask batch may broadcast)
    grid = (triton.cdiv(seq_len, block_m), b * heads)
    rows = block_m // 2 if warp_specialize or persistent is not None or positions is not None else block_m
    args = (descriptor(q, rows), descriptor(k, block_n), descriptor(v, block_n), descriptor(out, rows),
            idx, cnt, batch_stride(idx), idx.stride(1), idx.stride(2), batch_stride(cnt), cnt.stride(1),
            seq_len, heads, q_per_kv, q_per_mask, qk_scale)
    if persistent is not None:
        n_m = triton.cdiv(seq_len, block_m)
        n_tiles = b * heads * n_m
        n_prog = min(n_tiles, _sm_count(q.device)) if persistent else n_tiles
        _gluon_pws_kernel[(n_prog, )](*args, n_m, n_tiles, BLOCK_SIZE=block_size, NUM_STAGES=num_stages,
                                      PINGPONG=pingpong, num_warps=4, maxnreg=168)
    elif warp_specialize or positions is not None:
        # 4 + 4 + 1 warps, allocated as 3 warpgroups: 168 registers a thread on average, moved to
        # 240 for each consumer and 24 for the producer (setmaxnreg).
        pos = (positions, positions.stride(0), positions.stride(1)) if positions is not None else (idx, 0, 0)
        _gluon_ws_kernel[grid](*args, *pos, BLOCK_SIZE=block_size, NUM_STAGES=num_stages, PINGPONG=pingpong,
                               ORDERED=positions is not None, num_warps=4, maxnreg=168,
                               PREFETCH_POS=os.environ.get("UNISPARSE_ORDERED_PREFETCH", "1") != "0")
    else:
        _gluon_fwd_kernel[grid](*args, BLOCK_SIZE=block_size, NUM_STAGES=num_stages, OVERLAP=overlap,
                                num_warps=num_warps)
    return out
