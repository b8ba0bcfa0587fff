"""Top-P block selection on the GPU: one program per query block, one launch per call.

:func:`unisparse.masks.top_p_mask` (the definition) sorts every row with a stable sort, gathers,
takes a cumulative sum and scatters back: about twenty small kernel launches per call, which at
32K tokens cost more wall time than the scores they select from (the video-aware selection calls
it four times per layer, ``benchmarks/attention/profile_video_select_h200.md``). Here each
program loads its row, sorts only the free (visible, not forced) blocks, by a 64-bit key that
holds the score's bits above the block index, so that the descending sort is the definition's
stable order (higher score first, then lower index), and keeps the free blocks whose preceding
mass, the forced blocks' included, is below ``top_p`` of the row's. The kept free blocks are a
prefix of that order, so the row's mask is "forced, or key at least the last kept key": no
scatter. Equal to the definition up to float32 summation order (a block at the threshold may flip).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import masks

MAX_BLOCKS = 4096  # rows wider than this (over 512K tokens in blocks of 128) use the definition


@triton.jit
def _top_p_kernel(scores_ptr, visible_ptr, rows_ptr, visible_of_ptr, top_p_ptr, out_ptr, n_rows, nb, top_p,
                  SINK: tl.constexpr, LOCAL: tl.constexpr, BLOCK: tl.constexpr,
                  HAS_VISIBLE: tl.constexpr, HAS_ROWS: tl.constexpr, VISIBLE_PER_MATRIX: tl.constexpr,
                  TOP_P_PER_MATRIX: tl.constexpr):
    pid = tl.program_id(0)  # one row of the flattened [..., n_rows, nb] scores
    r = pid % n_rows
    if TOP_P_PER_MATRIX:  # this [n_rows, nb] matrix (a head) has its own threshold
        top_p = tl.load(top_p_ptr + pid // n_rows)
    qb = r
    if HAS_ROWS:
        qb = tl.load(rows_ptr + r).to(tl.int32)
    kb = tl.arange(0, BLOCK)
    inb = kb < nb
    s = tl.load(scores_ptr + pid.to(tl.int64) * nb + kb, mask=inb, other=0.0)
    if HAS_VISIBLE:
        vis_row = r
        if VISIBLE_PER_MATRIX:  # this [n_rows, nb] matrix (a head) takes its own of the stacked visibilities
            vis_row += tl.load(visible_of_ptr + pid // n_rows) * n_rows
        vis = (tl.load(visible_ptr + vis_row.to(tl.int64) * nb + kb, mask=inb, other=0) != 0) & inb
    else:
        vis = (kb <= qb) & inb
    forced = vis & ((kb < SINK) | ((qb - kb < LOCAL) & (kb <= qb)))
    free = vis & ~forced
    mass = tl.where(vis, s, 0.0)
    threshold = top_p * tl.sum(mass, 0)
    if TOP_P_PER_MATRIX:  # 1.0 keeps every visible block, zero scores included, as the definition does
        threshold = tl.where(top_p >= 1.0, float("inf"), threshold)
    forced_mass = tl.sum(tl.where(forced, mass, 0.0), 0)
    # Scores are >= 0, so their float32 bits order as the values do; +1 keeps a zero score above
    # the entries that are not free (key 0, sorted last).
    bits = mass.to(tl.int32, bitcast=True).to(tl.int64) + 1
    key = tl.where(free, (bits << 32) | (BLOCK - 1 - kb).to(tl.int64), 0)
    ranked = tl.sort(key, 0, descending=True)
    ranked_mass = tl.where(ranked > 0, ((ranked >> 32) - 1).to(tl.int32).to(tl.float32, bitcast=True), 0.0)
    before = forced_mass + tl.cumsum(ranked_mass, 0) - ranked_mass
    n_keep = tl.sum(((before < threshold) & (ranked > 0)).to(tl.int32), 0)
    last_kept = tl.sum(tl.where(kb == n_keep - 1, ranked, 0), 0)  # 0 when no free block is kept
    keep = forced | (free & (key >= last_kept) & (n_keep > 0))
    tl.store(out_ptr + pid.to(tl.int64) * nb + kb, keep.to(tl.int8), mask=inb)


def top_p_mask(scores: torch.Tensor, top_p: float | torch.Tensor, *, sink_blocks: int, local_blocks: int,
               visible: torch.Tensor | None = None, rows: torch.Tensor | None = None,
               visible_of: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`unisparse.masks.top_p_mask` in one launch: same arguments, same bool ``[..., nb, nb]``
    (``[..., len(rows), nb]`` with ``rows``). ``visible``, where given, is ``[n_rows, nb]`` (one row
    per row of ``scores``' last two dims); anything else, ``top_p >= 1`` and rows wider than
    :data:`MAX_BLOCKS` go to the definition.

    ``visible_of`` (integer, ``scores.shape[:-2]``): ``visible`` is stacked, ``[O, n_rows, nb]``, and
    each ``[n_rows, nb]`` matrix of ``scores`` (a head in its own token order) takes the one
    ``visible_of`` names, read on the device (no host sync).

    ``top_p`` as a tensor: one threshold per ``[n_rows, nb]`` matrix (``scores.shape[:-2]``, or that
    with a trailing 1, as :func:`unisparse.calibration.calibrated_top_p` gives), read on the device;
    any other shape goes to the definition."""
    nb, n_rows = scores.shape[-1], scores.shape[-2]
    per_matrix = torch.is_tensor(top_p)
    if per_matrix:
        fits = top_p.numel() == scores[..., 0, 0].numel()
        if not fits or nb > MAX_BLOCKS or scores.numel() == 0:
            if visible_of is not None:
                visible = visible.to(scores.device)[visible_of.to(scores.device).long()]
            thresholds = top_p.reshape(*scores.shape[:-2], 1) if fits else top_p
            return masks.top_p_mask(scores, thresholds, sink_blocks=sink_blocks, local_blocks=local_blocks,
                                    visible=visible, rows=rows)
        thresholds = top_p.to(device=scores.device, dtype=torch.float32).contiguous()
        top_p = 0.0  # the kernel reads the thresholds
    if visible_of is not None:
        if visible is None or visible.dim() != 3 or tuple(visible_of.shape) != tuple(scores.shape[:-2]):
            raise ValueError(f"visible_of {tuple(scores.shape[:-2])} needs a stacked visible [O, n_rows, nb]")
        if (not per_matrix and top_p >= 1.0) or nb > MAX_BLOCKS or scores.numel() == 0:
            per_head_visible = visible.to(scores.device)[visible_of.to(scores.device).long()]
            return masks.top_p_mask(scores, top_p, sink_blocks=sink_blocks, local_blocks=local_blocks,
                                    visible=per_head_visible, rows=rows)
    elif ((not per_matrix and top_p >= 1.0) or nb > MAX_BLOCKS or scores.numel() == 0
            or (visible is not None and tuple(visible.shape) != (n_rows, nb))):
        return masks.top_p_mask(scores, top_p, sink_blocks=sink_blocks, local_blocks=local_blocks,
                                visible=visible, rows=rows)
    if visible is not None and tuple(visible.shape[-2:]) != (n_rows, nb):
        raise ValueError(f"visible {tuple(visible.shape)} does not fit scores {tuple(scores.shape)}")
    s = scores.float().contiguous()
    out = torch.empty(s.shape, dtype=torch.int8, device=s.device)
    if visible is None:
        vis = out
    elif visible.dtype == torch.bool:  # same bytes: a view, no copy per call
        vis = visible.to(s.device).contiguous().view(torch.int8)
    else:
        vis = visible.to(device=s.device, dtype=torch.int8).contiguous()
    idx = rows.to(device=s.device, dtype=torch.int64).contiguous() if rows is not None else out
    which = visible_of.to(device=s.device, dtype=torch.int32).contiguous() if visible_of is not None else out
    block = max(16, triton.next_power_of_2(nb))
    _top_p_kernel[(s.numel() // nb, )](
        s, vis, idx, which, thresholds if per_matrix else out, out, n_rows, nb, float(top_p),
        SINK=sink_blocks, LOCAL=local_blocks, BLOCK=block, HAS_VISIBLE=visible is not None,
        HAS_ROWS=rows is not None, VISIBLE_PER_MATRIX=visible_of is not None, TOP_P_PER_MATRIX=per_matrix, num_warps=4 if block <= 1024 else 8,
    )
    return out.view(torch.bool)
