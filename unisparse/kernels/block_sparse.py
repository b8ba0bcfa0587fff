"""Block-sparse causal attention forward (FlashAttention-style online softmax): a Triton kernel
for every GPU and the interpreter, and Gluon kernels for Hopper (:mod:`.block_sparse_gluon`).

The block mask is first turned into per-row lists of kept key blocks (ascending, so the
diagonal comes last), and a program walks only its list: skipped blocks cost nothing.
Grouped-query attention reads the shared KV head through its stride, never copies it. The
causal mask is applied only in the last kept block (the diagonal); the last partial block is
masked by length. Rows with no visible key come out as zeros.

Which kernel runs: :func:`default_tile` picks the warp-specialized Gluon kernel for half types
at head dim 64 and 128 (on an H200, 1.01-1.14x cuDNN's dense causal time at density 1 from 16K
to 128K tokens at head dim 128; the Triton kernel here reaches 0.80-0.87x), and
:func:`kernel_for` falls back to this module's Triton kernel wherever Gluon does not apply
(another GPU, the interpreter, float32, other head dims, block sizes that are no multiple of
128, tensors the copy engine cannot address, a Triton other than 3.6). Measurements and the
variants tried: benchmarks/kernel/NOTES.md.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from ..validation import triton_interpreting
from .common import LOG2E, dot_precision, needs_upcast
from .kept import kept_lists



@triton.jit
def _load_kv(k_desc, v_desc, k_base, v_base, b, kv_h, start_n, offs_n0, offs_d,
             stride_kl, stride_kd, stride_vl, stride_vd, seq_len,
             BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, BOUNDS: tl.constexpr, USE_TMA: tl.constexpr):
    """K tile transposed ``[D, BLOCK_N]`` and V tile ``[BLOCK_N, D]`` starting at key ``start_n``.

    With the copy engine (TMA), keys past the end arrive as zeros; with pointer loads ``BOUNDS``
    masks them (blocks below the diagonal never need it)."""
    if USE_TMA:
        k = tl.trans(k_desc.load([b, kv_h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM))
        v = v_desc.load([b, kv_h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
    else:
        offs_n = start_n + offs_n0
        k_ptrs = k_base + offs_n[None, :] * stride_kl + offs_d[:, None] * stride_kd
        v_ptrs = v_base + offs_n[:, None] * stride_vl + offs_d[None, :] * stride_vd
        if BOUNDS:
            k = tl.load(k_ptrs, mask=offs_n[None, :] < seq_len, other=0.0)
            v = tl.load(v_ptrs, mask=offs_n[:, None] < seq_len, other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
    return k, v


@triton.jit
def _online_softmax_step(acc, l_i, m_i, q, k, v, qk_scale, offs_n, limit,
                         MASKED: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One key tile of FlashAttention's online softmax (base-2 logits). Unmasked tiles (wholly
    below the diagonal, inside the sequence) skip the mask and the all-masked-row guard."""
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    s = tl.dot(q, k, input_precision=DOT_PRECISION)
    if MASKED:
        s = tl.where(offs_n[None, :] <= limit[:, None], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing visible yet
        p = tl.exp2(s - m_ref[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        m_ref = m_new
        p = tl.exp2(s * qk_scale - m_ref[:, None])
    alpha = tl.exp2(m_i - m_ref)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, l_i, m_new


@triton.jit
def _block_sparse_fwd_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, idx_ptr, cnt_ptr, k_desc, v_desc,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_ib, stride_ih, stride_im,
    stride_cb, stride_ch,
    seq_len, heads, q_per_kv_head, q_per_mask_head, qk_scale,
    BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    USE_TMA: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
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
    # Kept blocks ascend, so all but the last lie wholly below this tile's rows and inside the
    # sequence: no causal mask, no bounds. One flat loop over their BLOCK_N-wide sub-tiles keeps
    # a single K/V load per iteration for the software pipeline.
    SUBS: tl.constexpr = BLOCK_SIZE // BLOCK_N
    for j in tl.range(0, (n_kept - 1) * SUBS, warp_specialize=WARP_SPECIALIZE):
        start_n = tl.load(row_idx + j // SUBS) * BLOCK_SIZE + (j % SUBS) * BLOCK_N
        k, v = _load_kv(k_desc, v_desc, k_base, v_base, b, kv_h, start_n, offs_n0, offs_d,
                        stride_kl, stride_kd, stride_vl, stride_vd, seq_len,
                        BLOCK_N, HEAD_DIM, False, USE_TMA)
        acc, l_i, m_i = _online_softmax_step(acc, l_i, m_i, q, k, v, qk_scale, start_n + offs_n0, offs_m,
                                             False, UPCAST, DOT_PRECISION)
    # The last kept block: the diagonal (causal inside it) or the sequence's partial end.
    if n_kept > 0:
        k_block = tl.load(row_idx + n_kept - 1)
        limit = tl.where(k_block == q_block, tl.minimum(offs_m, seq_len - 1), seq_len - 1)
        last_row = pid_m * BLOCK_M + BLOCK_M - 1
        for sub in range(BLOCK_SIZE // BLOCK_N):
            start_n = k_block * BLOCK_SIZE + sub * BLOCK_N
            if start_n <= last_row:  # sub-tiles wholly above this tile's rows are skipped
                k, v = _load_kv(k_desc, v_desc, k_base, v_base, b, kv_h, start_n, offs_n0, offs_d,
                                stride_kl, stride_kd, stride_vl, stride_vd, seq_len,
                                BLOCK_N, HEAD_DIM, True, USE_TMA)
                acc, l_i, m_i = _online_softmax_step(acc, l_i, m_i, q, k, v, qk_scale, start_n + offs_n0,
                                                     limit, True, UPCAST, DOT_PRECISION)
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(out_ptr + (pid_bh * seq_len + offs_m)[:, None] * HEAD_DIM + offs_d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=offs_m[:, None] < seq_len)


def kept_block_lists(block_mask: torch.Tensor):
    """Per query block, the indices of its kept causal key blocks (ascending) and their count.

    Returns ``idx int32 [Bm, Hm, nb, nb]`` (valid prefix of length ``cnt``) and ``cnt int32
    [Bm, Hm, nb]``. Blocks above the diagonal are dropped here, so the kernel never sees them.
    """
    return kept_lists(block_mask, causal=True)


KERNELS = ("triton", "gluon", "gluon-plain", "gluon-ws", "gluon-ws-pp", "gluon-tws", "gluon-tws-pp", "gluon-pws",
           "gluon-pws-pp")


class Tile(NamedTuple):
    """Launch shape of the forward kernel (see benchmarks/kernel/NOTES.md for how it was chosen).

    ``kernel`` picks the implementation: ``"triton"`` (this module's kernel, any GPU and the
    interpreter) or one of the Hopper Gluon kernels of :mod:`.block_sparse_gluon`:
    ``"gluon"`` (FlashAttention-3's intra-warpgroup overlap, all warps issue the copies),
    ``"gluon-plain"`` (the same without the overlap), ``"gluon-ws"`` (a producer warp and two
    consumer warpgroups of ``block_m // 2`` rows), ``"gluon-ws-pp"`` (the same, consumers taking
    turns on the tensor cores), ``"gluon-tws[-pp]"`` (the same over an ordered tile list: KV head
    by KV head, longest rows first, the query heads of a KV head side by side), ``"gluon-pws[-pp]"``
    (that list walked by one persistent program per multiprocessor). A Gluon tile falls back to the Triton kernel (with
    :func:`triton_tile`'s shape) where Gluon does not apply, see :func:`kernel_for`.
    """

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    tma: bool = False  # K/V through Hopper's tensor memory accelerator (host descriptors)
    warp_specialize: bool = False
    kernel: str = "triton"


def triton_tile(head_dim: int, dtype: torch.dtype = torch.bfloat16) -> Tile:
    """The Triton kernel's launch shape per head dim and dtype (any GPU, and the interpreter).
    Half types: the fastest correct variants of the earlier tuning on an H200
    (benchmarks/kernel/tune_d128_v2.md, tune_d64_v2.md): 128x128 tiles with K/V through TMA (Triton's warp
    specialization gained under 1%, within noise, so it stays off). float32 tiles are four times
    the bytes of bf16 ones in shared memory: smaller, fewer stages.
    """
    if dtype == torch.float32:
        return Tile(64, 64, 4, 2) if head_dim <= 128 else Tile(32, 32, 4, 1)
    if head_dim <= 64:
        return Tile(128, 128, 4, 3, tma=True)
    if head_dim <= 128:
        return Tile(128, 128, 8, 3, tma=True)
    return Tile(64, 32, 4, 2)  # 64x64 with TMA needed 299 KB of shared memory (limit 227 KB)


def default_tile(head_dim: int, dtype: torch.dtype = torch.bfloat16) -> Tile:
    """Per head dim and dtype. Half types at head dim 64 or 128 get the warp-specialized Gluon
    kernel on Hopper (``"gluon-ws"``: a producer warp, two consumer warpgroups of 64 rows, two
    K/V stages), the fastest variant measured on an H200 (benchmarks/kernel/NOTES.md): at head
    dim 128 and density 1, 1.01-1.14x cuDNN's dense causal time from 16K to 128K tokens and
    0.93-1.04x at 8K, where the Triton kernel reaches 0.73-0.87x; at head dim 64, 0.86-0.99x
    against 0.77-0.94x. Consumers taking turns on the tensor cores (ping-pong), a persistent
    grid, a KV-head-major tile order and a third stage measured no faster. Everywhere else, and
    wherever Gluon does not apply (see :func:`kernel_for`), the Triton kernel runs with
    :func:`triton_tile`'s shape.
    """
    if dtype in (torch.float16, torch.bfloat16) and head_dim in (64, 128):
        return Tile(128, 128, 4, 2, tma=True, kernel="gluon-ws")
    return triton_tile(head_dim, dtype)


def _tma_ok(*tensors: torch.Tensor) -> bool:
    """The copy engine needs a Hopper-class GPU, unit stride in the last dim and 16-byte aligned
    strides and base addresses; otherwise pointer loads are used."""
    t0 = tensors[0]
    if triton_interpreting() or not t0.is_cuda or torch.cuda.get_device_capability(t0.device)[0] < 9:
        return False
    return all(
        t.stride(-1) == 1 and t.data_ptr() % 16 == 0
        and all((st * t.element_size()) % 16 == 0 for st in t.stride()[:-1])
        for t in tensors
    )


GLUON_TRITON_VERSIONS = ("3.6",)  # Gluon is experimental: its API moves between Triton releases
_gluon_broken: list[str] = []  # set once a Gluon launch failed in this process


def _gluon_enabled() -> bool:
    """``UNISPARSE_GLUON=0`` turns the Gluon kernels off, ``=1`` allows them on a Triton other
    than the tested one (:data:`GLUON_TRITON_VERSIONS`); unset: the tested versions only."""
    env = os.environ.get("UNISPARSE_GLUON", "")
    if env == "0" or _gluon_broken:
        return False
    return env == "1" or ".".join(triton.__version__.split(".")[:2]) in GLUON_TRITON_VERSIONS


def _gluon_ok(tile: Tile, q, k, v, out, block_size: int) -> bool:
    """Where the Gluon kernels apply: Hopper (capability 9.x), half types, head dim 64 or 128,
    ``block_size`` a multiple of both tile sides, TMA-compatible tensors, and a Triton whose
    Gluon has the Hopper API these kernels were written for (3.6)."""
    if tile.kernel == "triton" or triton_interpreting() or not q.is_cuda or not _gluon_enabled():
        return False
    if torch.cuda.get_device_capability(q.device)[0] != 9:
        return False
    if q.dtype not in (torch.float16, torch.bfloat16) or q.shape[-1] not in (64, 128):
        return False
    if block_size % tile.block_m or block_size % tile.block_n:
        return False
    if not _tma_ok(q, k, v, out):
        return False
    try:
        from . import block_sparse_gluon  # noqa: F401
    except Exception:  # noqa: BLE001 (an older or newer Triton without this Gluon API)
        return False
    return True


def kernel_for(q, k, v, block_size: int = 128, tile: Tile | None = None, out: torch.Tensor | None = None) -> str:
    """Which kernel :func:`block_sparse_attention` runs for these inputs: ``tile.kernel`` where
    it applies, else ``"triton"``."""
    tile = tile or default_tile(q.shape[-1], q.dtype)
    if out is None:
        out = q  # same shape, dtype and (for a fresh output) alignment class
    return tile.kernel if _gluon_ok(tile, q, k, v, out, block_size) else "triton"


def block_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: torch.Tensor,
    block_size: int = 128, scale: float | None = None, out: torch.Tensor | None = None,
    tile: Tile | None = None,
) -> torch.Tensor:
    """Triton twin of :func:`unisparse.reference.block_sparse_attention` (inputs validated).

    ``out`` (contiguous, q's shape and dtype) lets tests pass a poisoned buffer; ``tile``
    overrides the launch shape and kernel (for tuning).
    """
    b, hq, seq_len, d = q.shape
    hkv = k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    idx, cnt = kept_block_lists(block_mask)
    mask_heads = block_mask.shape[1]
    tile = tile or default_tile(d, q.dtype)
    if out is None:
        out = torch.empty(b, hq, seq_len, d, dtype=q.dtype, device=q.device)
    if _gluon_ok(tile, q, k, v, out, block_size):
        from . import block_sparse_gluon as G

        try:
            return G.launch(q, k, v, out, idx, cnt, seq_len, hq, hq // hkv, hq // mask_heads, scale * LOG2E,
                            block_size, tile.block_m, tile.block_n, tile.num_warps, tile.num_stages,
                            overlap=tile.kernel != "gluon-plain",
                            warp_specialize=tile.kernel.startswith("gluon-ws"),
                            pingpong=tile.kernel.endswith("-pp"),
                            persistent={"gluon-tws": False, "gluon-pws": True}.get(tile.kernel.removesuffix("-pp")))
        except Exception as err:  # noqa: BLE001 (a compile or launch failure: the Triton kernel is exact too)
            _gluon_broken.append(f"{type(err).__name__}: {err}")
            warnings.warn(f"unisparse: the Gluon attention kernel failed ({_gluon_broken[-1][:300]}); "
                          "using the Triton kernel from now on", RuntimeWarning, stacklevel=2)
    if tile.kernel != "triton":
        tile = triton_tile(d, q.dtype)
    block_m, block_n = min(tile.block_m, block_size), min(tile.block_n, block_size)
    use_tma = tile.tma and _tma_ok(k, v)
    if use_tma:
        k_desc = TensorDescriptor(k, list(k.shape), list(k.stride()), [1, 1, block_n, d])
        v_desc = TensorDescriptor(v, list(v.shape), list(v.stride()), [1, 1, block_n, d])
    else:
        k_desc = v_desc = k  # unused placeholders
    batch_stride = lambda t: t.stride(0) if t.shape[0] > 1 else 0  # noqa: E731 (mask batch may broadcast)
    grid = (triton.cdiv(seq_len, block_m), b * hq)
    _block_sparse_fwd_kernel[grid](
        q, k, v, out, idx, cnt, k_desc, v_desc,
        *q.stride(), *k.stride(), *v.stride(),
        batch_stride(idx), idx.stride(1), idx.stride(2),
        batch_stride(cnt), cnt.stride(1),
        seq_len, hq, hq // hkv, hq // mask_heads, scale * LOG2E,
        BLOCK_SIZE=block_size, BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=d,
        UPCAST=needs_upcast(q.dtype), DOT_PRECISION=dot_precision(q.dtype),
        USE_TMA=use_tma, WARP_SPECIALIZE=tile.warp_specialize and not triton_interpreting(),
        num_warps=tile.num_warps, num_stages=tile.num_stages,
    )
    return out
