"""Token rows into a token order and back, on the GPU: the reordered attention's gather and scatter.

The reordered kernel reads q, k and v in a token order and writes its output in that order
(:mod:`.block_sparse_ordered`). With one order for every head, moving whole rows by one index is
all it takes; PyTorch's ``index_select`` and ``index_copy_`` along the sequence dim of a
``[B, H, L, D]`` tensor ran at about 0.6 TB/s on an H200 (0.87 ms of the 3.95 ms reordered attention
at 32K tokens, ``benchmarks/attention/profile_video_attention_h200.md``). Here each program moves a
tile of whole rows, so the copy runs at the speed of memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _move_rows_kernel(src_ptr, dst_ptr, index_ptr, n_rows, heads,
                      s_b, s_h, s_l, s_d, d_b, d_h, d_l, d_d,
                      HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr, SCATTER: tl.constexpr):
    pid_r = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads
    h = pid_bh % heads
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, HEAD_DIM)
    live = offs_r < n_rows
    idx = tl.load(index_ptr + offs_r, mask=live, other=0).to(tl.int64)
    rows = offs_r.to(tl.int64)
    src_rows = rows
    dst_rows = idx
    if not SCATTER:  # gather: row i of the output is row index[i] of the input
        src_rows = idx
        dst_rows = rows
    src = src_ptr + b * s_b + h * s_h + src_rows[:, None] * s_l + offs_d[None, :] * s_d
    dst = dst_ptr + b * d_b + h * d_h + dst_rows[:, None] * d_l + offs_d[None, :] * d_d
    tl.store(dst, tl.load(src, mask=live[:, None], other=0.0), mask=live[:, None])


def _move(src: torch.Tensor, dst: torch.Tensor, index: torch.Tensor, scatter: bool) -> torch.Tensor:
    b, h, seq_len, d = src.shape
    if tuple(dst.shape) != (b, h, seq_len, d) or index.shape != (seq_len, ) or dst.dtype != src.dtype:
        raise ValueError(f"rows of {tuple(src.shape)} {src.dtype} move by an index of [{seq_len}] into the same shape and "
                         f"dtype; got {tuple(dst.shape)} {dst.dtype} and index {tuple(index.shape)}")
    if d & (d - 1):
        raise ValueError(f"head dim {d} is not a power of two")
    index = index.to(device=src.device, dtype=torch.int32).contiguous()
    block_r = max(1, min(64, 8192 // d))
    grid = (triton.cdiv(seq_len, block_r), b * h)
    _move_rows_kernel[grid](src, dst, index, seq_len, h, *src.stride(), *dst.stride(),
                            HEAD_DIM=d, BLOCK_R=block_r, SCATTER=scatter, num_warps=4)
    return dst


def gather_rows(x: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x.index_select(2, index)`` for ``x [B, H, L, D]`` and a permutation ``index [L]``: contiguous."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    return _move(x, out, index, scatter=False)


def scatter_rows(x: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out.index_copy_(2, index, x)``: row ``i`` of ``x`` to row ``index[i]`` of ``out``; returns ``out``."""
    return _move(x, out, index, scatter=True)
