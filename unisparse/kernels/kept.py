"""Block masks into the kept-block lists the attention kernels walk, in one launch.

A kernel program reads its query block's kept key blocks as a list: ``idx[..., r, :cnt[..., r]]``,
ascending. PyTorch builds that with a stable sort of every mask row plus a sum and two casts (five
launches, the sort a radix sort over ``B*H*nb*nb`` keys: 65 us at 32K tokens and 28 heads on an
H200, four times that at 64K). Here one program per row counts its kept blocks, then writes the
kept ones at their prefix positions and the others after them: the same permutation the stable
sort gives, so the lists are equal element for element (nothing past ``cnt`` is left unwritten).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 1024  # blocks of a row handled per step (131K tokens in blocks of 128)


@triton.jit
def _kept_lists_kernel(mask_ptr, idx_ptr, cnt_ptr, nb, CAUSAL: tl.constexpr, CHUNK: tl.constexpr):
    row = tl.program_id(0)  # one row of the flattened [..., nb, nb] mask
    base = row.to(tl.int64) * nb
    qb = row % nb
    total = 0
    for start in range(0, nb, CHUNK):
        kb = start + tl.arange(0, CHUNK)
        keep = (tl.load(mask_ptr + base + kb, mask=kb < nb, other=0) != 0) & (kb < nb)
        if CAUSAL:
            keep = keep & (kb <= qb)
        total += tl.sum(keep.to(tl.int32), 0)
    kept_before = 0
    dropped_before = 0
    for start in range(0, nb, CHUNK):
        kb = start + tl.arange(0, CHUNK)
        inb = kb < nb
        keep = (tl.load(mask_ptr + base + kb, mask=inb, other=0) != 0) & inb
        if CAUSAL:
            keep = keep & (kb <= qb)
        k32 = keep.to(tl.int32)
        d32 = (inb & ~keep).to(tl.int32)
        at = tl.where(keep, kept_before + tl.cumsum(k32, 0) - 1, total + dropped_before + tl.cumsum(d32, 0) - 1)
        tl.store(idx_ptr + base + at, kb, mask=inb)
        kept_before += tl.sum(k32, 0)
        dropped_before += tl.sum(d32, 0)
    tl.store(cnt_ptr + row, total)


def kept_lists(mask: torch.Tensor, causal: bool = False,
               out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query block, every kept key block (ascending) and their count: ``idx int32 [..., nb, nb]``
    (valid prefix of length ``cnt``, the dropped blocks after it, ascending too) and ``cnt int32
    [..., nb]``, both contiguous. ``causal``: blocks above the diagonal count as dropped. ``out``:
    ``(idx, cnt)`` buffers to write (tests poison them, so unwritten elements show)."""
    if mask.dtype != torch.bool or mask.dim() < 2 or mask.shape[-1] != mask.shape[-2]:
        raise ValueError(f"kept_lists takes a bool [..., nb, nb] mask, got {mask.dtype} {tuple(mask.shape)}")
    nb = mask.shape[-1]
    flat = mask.contiguous().view(torch.uint8)
    if out is None:
        out = (torch.empty(mask.shape, dtype=torch.int32, device=mask.device),
               torch.empty(mask.shape[:-1], dtype=torch.int32, device=mask.device))
    idx, cnt = out
    if idx.shape != mask.shape or cnt.shape != mask.shape[:-1] or not (idx.is_contiguous() and cnt.is_contiguous()) \
            or idx.dtype != torch.int32 or cnt.dtype != torch.int32:
        raise ValueError(f"out must be contiguous int32 buffers of shapes {tuple(mask.shape)} and {tuple(mask.shape[:-1])}")
    rows = cnt.numel()
    if rows:
        _kept_lists_kernel[(rows, )](flat, idx, cnt, nb, CAUSAL=causal, CHUNK=min(CHUNK, triton.next_power_of_2(nb)),
                                     num_warps=4 if nb > 256 else 1)
    return idx, cnt


def kept_lists_reference(mask: torch.Tensor, causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`kept_lists` in PyTorch (a stable sort of each row): what the kernel is tested against."""
    if causal:
        nb = mask.shape[-1]
        mask = mask & torch.ones(nb, nb, dtype=torch.bool, device=mask.device).tril()
    cnt = mask.sum(-1, dtype=torch.int32)
    idx = torch.sort((~mask).to(torch.uint8), dim=-1, stable=True).indices.to(torch.int32)
    return idx.contiguous(), cnt.contiguous()
