"""Block-sparse attention in a reordered token sequence (Triton): the kernel behind video-aware selection.

The caller gathers each head's q, k and v into its order (:mod:`unisparse.layout`; a KV head and its
query heads share one order, so K and V are gathered once per KV head) and passes, per KV head,
the original position of every token of that order. A program walks its query tile's kept key
blocks (any of them, above the block diagonal too: in the spatial order earlier frames can sit
there). A block whose keys all come no later than the tile's earliest query is wholly visible and
runs without an element mask; any other block is masked by original positions (a key is visible
iff its original position is not after the query's). Rows that see nothing come out as zeros.
The output is in the order; :func:`ordered_attention` scatters it back.

On Hopper the same work runs on the warp-specialized Gluon kernel in its ``ORDERED`` mode
(:mod:`.block_sparse_gluon`: TMA copies of the gathered K and V, every sub-tile masked by original
positions), where :func:`.block_sparse.kernel_for`'s conditions hold; this Triton kernel runs
everywhere else (other GPUs, float32, the interpreter) and where a tile shape is asked for.
"""

from __future__ import annotations

import math
import os
import warnings

import torch
import triton
import triton.language as tl

from ..reordered import int32_positions, order_row
from . import block_sparse
from .block_sparse import _load_kv, _online_softmax_step
from .common import LOG2E, dot_precision, needs_upcast
from .kept import kept_lists
from .logits import FAR
from .rows import gather_rows, scatter_rows

_gluon_broken: list[str] = []  # set once the ordered Gluon kernel failed in this process


@triton.jit
def _ordered_fwd_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, pos_ptr, idx_ptr, cnt_ptr,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_pb, stride_ph,
    stride_ib, stride_ih, stride_im,
    stride_cb, stride_ch,
    seq_len, heads, q_per_kv_head, qk_scale,
    BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    kv_h = h // q_per_kv_head
    q_block = (pid_m * BLOCK_M) // BLOCK_SIZE
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n0 = tl.arange(0, BLOCK_N)
    pos_base = pos_ptr + b * stride_pb + kv_h * stride_ph
    q_pos = tl.load(pos_base + offs_m, mask=offs_m < seq_len, other=-1)  # rows past the end see nothing
    q_first = tl.min(tl.where(offs_m < seq_len, q_pos, FAR), 0)
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_ql + offs_d[None, :] * stride_qd,
                mask=offs_m[:, None] < seq_len, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    k_base = k_ptr + b * stride_kb + kv_h * stride_kh
    v_base = v_ptr + b * stride_vb + kv_h * stride_vh
    row_idx = idx_ptr + b * stride_ib + h * stride_ih + q_block * stride_im
    n_kept = tl.load(cnt_ptr + b * stride_cb + h * stride_ch + q_block)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    SUBS: tl.constexpr = BLOCK_SIZE // BLOCK_N
    for j in range(0, n_kept * SUBS):
        start_n = tl.load(row_idx + j // SUBS) * BLOCK_SIZE + (j % SUBS) * BLOCK_N
        offs_n = start_n + offs_n0
        k_pos = tl.load(pos_base + offs_n, mask=offs_n < seq_len, other=FAR)
        k, v = _load_kv(k_ptr, v_ptr, k_base, v_base, b, kv_h, start_n, offs_n0, offs_d,
                        stride_kl, stride_kd, stride_vl, stride_vd, seq_len,
                        BLOCK_N, HEAD_DIM, True, False)
        if tl.max(k_pos, 0) <= q_first:  # every key here comes no later than every query of the tile
            acc, l_i, m_i = _online_softmax_step(acc, l_i, m_i, q, k, v, qk_scale, k_pos, q_pos,
                                                 False, UPCAST, DOT_PRECISION)
        else:
            acc, l_i, m_i = _online_softmax_step(acc, l_i, m_i, q, k, v, qk_scale, k_pos, q_pos,
                                                 True, UPCAST, DOT_PRECISION)
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(out_ptr + (pid_bh * seq_len + offs_m)[:, None] * HEAD_DIM + offs_d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=offs_m[:, None] < seq_len)


def ordered_tile(head_dim: int, dtype: torch.dtype, block_size: int = 128) -> tuple[int, int, int, int]:
    """``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` of the reordered kernel. Half types: 128x64
    tiles, 4 warps, 2 stages, the fastest of seven shapes on an H200 at 32K tokens
    (``benchmarks/kernel/ordered_tiles.md``: 4.68 ms against 5.32 for 64x64 on a spatial selection;
    1.62x the Gluon kernel's time on the same frame-order blocks, hence ``order_cost=2``). float32
    tiles are smaller (four times the bytes per element). ``UNISPARSE_ORDERED_TILE="M,N,WARPS,STAGES"``
    overrides it (what that benchmark sweeps)."""
    env = os.environ.get("UNISPARSE_ORDERED_TILE")
    if env:
        m, n, w, s = (int(x) for x in env.split(","))
    elif dtype == torch.float32:
        m, n, w, s = 32, 32, 4, 2
    else:
        m, n, w, s = 128, 64, 4, 2
    return min(m, block_size), min(n, block_size), w, s


def ordered_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                      head_orders: torch.Tensor, orders: torch.Tensor, block_size: int = 128,
                      scale: float | None = None, out: torch.Tensor | None = None,
                      work: torch.Tensor | None = None, tile: tuple[int, int, int, int] | None = None,
                      kernel: str = "auto") -> torch.Tensor:
    """Attention of :func:`unisparse.reordered.attention` on Triton: ``[B, Hq, L, D]`` in the original order.

    ``mask``: bool ``[B, Hq, nb, nb]`` in each head's order; ``head_orders``: int64 ``[B, Hq]``
    indices into ``orders`` (int64 ``[O, L]``), equal within a KV head's query heads; ``out``: an
    optional ``[B, Hq, L, D]`` buffer for the result; ``work``: one for the kernel's output in the
    order, before it is scattered back (tests poison both, so unwritten elements show).
    ``kernel``: ``"auto"`` (the Gluon kernel where it applies, see :func:`ordered_kernel_for`),
    ``"gluon"`` or ``"triton"``; a ``tile`` (or ``UNISPARSE_ORDERED_TILE``) means the Triton kernel.
    """
    b, hq, seq_len, d = q.shape
    hkv = k.shape[1]
    group = hq // hkv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    host = head_orders.tolist()  # decided on the host: no sync where the caller passes a CPU tensor
    if any(row[h] != row[h - h % group] for row in host for h in range(hq)):
        raise ValueError("the query heads of a KV head must share one order")
    if len({o for row in host for o in row}) == 1:
        # one order for every head (what the video-aware split sends here): whole rows are gathered
        # and scattered by one index, a third of the bytes of an index per element
        order32 = int32_positions(order_row(orders, host[0][0]))
        qo, ko, vo = (gather_rows(t, order32) for t in (q, k, v))
        pos32 = order32.expand(b, hkv, seq_len)  # strides of 0: every KV head reads the one row
        q_pos = order32
    else:
        kv_orders = torch.tensor([row[::group] for row in host], device=orders.device)  # [B, Hkv]
        pos = orders[kv_orders]  # [B, Hkv, L]: original position of each token of the KV head's order
        q_pos = pos.repeat_interleave(group, dim=1)  # [B, Hq]
        qo = torch.gather(q, 2, q_pos[..., None].expand(-1, -1, -1, d)).contiguous()
        ko = torch.gather(k, 2, pos[..., None].expand(-1, -1, -1, d)).contiguous()
        vo = torch.gather(v, 2, pos[..., None].expand(-1, -1, -1, d)).contiguous()
        pos32 = pos.to(torch.int32).contiguous()
    idx, cnt = kept_lists(mask.expand(b, hq, *mask.shape[2:]))
    block_m, block_n, warps, stages = tile or ordered_tile(d, q.dtype, block_size)
    if work is not None and (tuple(work.shape) != (b, hq, seq_len, d) or not work.is_contiguous()
                             or work.dtype != q.dtype):
        raise ValueError(f"work must be a contiguous {q.dtype} tensor of shape {(b, hq, seq_len, d)}")
    ordered = torch.empty(b, hq, seq_len, d, dtype=q.dtype, device=q.device) if work is None else work
    if tile is None and kernel != "triton" and ordered_kernel_for(qo, ko, vo, ordered, block_size) == "gluon":
        if _ordered_on_gluon(qo, ko, vo, ordered, idx, cnt, pos32, group, scale, block_size):
            return _scatter_back(ordered, q_pos, out, q)
    elif kernel == "gluon":
        raise ValueError("the Gluon kernel does not apply to these inputs (Hopper, half types, head dim 64 or 128, "
                         "block_size a multiple of 128, aligned tensors)")
    grid = (triton.cdiv(seq_len, block_m), b * hq)
    _ordered_fwd_kernel[grid](
        qo, ko, vo, ordered, pos32, idx, cnt,
        *qo.stride(), *ko.stride(), *vo.stride(),
        pos32.stride(0), pos32.stride(1),
        idx.stride(0), idx.stride(1), idx.stride(2),
        cnt.stride(0), cnt.stride(1),
        seq_len, hq, group, scale * LOG2E,
        BLOCK_SIZE=block_size, BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=d,
        UPCAST=needs_upcast(q.dtype), DOT_PRECISION=dot_precision(q.dtype),
        num_warps=warps, num_stages=stages,
    )
    return _scatter_back(ordered, q_pos, out, q)


def _scatter_back(ordered: torch.Tensor, q_pos: torch.Tensor, out: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
    """The kernel's output, in each head's order, back to the original positions (``q_pos``: one
    order ``[L]`` for every head, or ``[B, Hq, L]``)."""
    if out is None:
        out = torch.empty_like(q)
    if q_pos.dim() == 1:
        return scatter_rows(ordered, q_pos, out)
    out.scatter_(2, q_pos[..., None].expand(-1, -1, -1, q.shape[-1]), ordered)
    return out


def ordered_kernel_for(qo, ko, vo, work, block_size: int = 128) -> str:
    """``"gluon"`` where the warp-specialized Gluon kernel takes these (gathered) tensors, else ``"triton"``."""
    tile = block_sparse.default_tile(qo.shape[-1], qo.dtype)
    usable = not _gluon_broken and block_sparse._gluon_ok(tile, qo, ko, vo, work, block_size)
    return "gluon" if usable else "triton"


def _ordered_on_gluon(qo, ko, vo, work, idx, cnt, pos32, group: int, scale: float, block_size: int) -> bool:
    """The Gluon kernel's ``ORDERED`` mode into ``work``; False (with a warning, once) where it failed
    to compile or launch, and the Triton kernel then runs (exact too)."""
    from . import block_sparse_gluon as G

    b, hq, seq_len, _ = qo.shape
    tile = block_sparse.default_tile(qo.shape[-1], qo.dtype)
    try:
        G.launch(qo, ko, vo, work, idx, cnt, seq_len, hq, group, 1, scale * LOG2E, block_size,
                 tile.block_m, tile.block_n, tile.num_warps, tile.num_stages, positions=pos32)
        return True
    except Exception as err:  # noqa: BLE001 (a compile or launch failure)
        _gluon_broken.append(f"{type(err).__name__}: {err}")
        warnings.warn(f"unisparse: the ordered Gluon kernel failed ({_gluon_broken[-1][:300]}); "
                      "using the Triton kernel from now on", RuntimeWarning, stacklevel=3)
        return False
