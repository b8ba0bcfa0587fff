"""Recall-calibrated Top-P: each head's threshold set by the exact attention of a few query rows.

Why: one Top-P for every head misjudges heads in both directions. The composite-token estimate is
too flat on grid and sink heads (at 8K tokens of ``video_qkv``, Top-P 0.95 of it keeps 1.5-2.4x
the blocks that the exact mass needs at the same recall) and too sharp on local heads (they recall
only 0.92-0.97 of the mass). The exact softmax of a small sample of query rows tells, per head,
which threshold of the estimate reaches the recall asked for.

How (``UniSparseConfig.calibration_blocks = n > 0``):

1. ``n`` query blocks spread evenly over the last three quarters of the sequence
   (:func:`sample_query_blocks`; early rows see few keys and say little) and ``calibration_rows``
   rows spread evenly inside each (:func:`sample_positions`).
2. Their exact causal attention, summed per key block and over each block's sampled rows
   (:func:`exact_row_mass`; on the GPU one launch of the fused block-score kernel with one token
   per "composite" query and key).
3. Top-P of the estimated block scores on those query blocks at every threshold of
   :data:`CANDIDATES` at once, and the share of the exact mass each keeps (:func:`recall_per_candidate`).
4. Per (batch row, selection head) the threshold where the recall, averaged over the sampled rows,
   reaches ``top_p`` (a query head pooled with others must reach it too): the first candidate that
   reaches it, interpolated linearly towards the candidate before (:func:`threshold_for_recall`);
   1.0 (every causal block) when none does (:func:`calibrated_top_p`).

In a reordered token sequence (video-aware selection, :mod:`unisparse.reordered`) the same runs in
the head's order: the sampled query blocks and the key blocks are the order's, visibility follows
original positions (``order=``). The thresholds stay on the device (no host sync);
:func:`unisparse.masks.top_p_mask` and the Top-P kernel take them per head. Cost: ``n * calibration_rows`` query rows of exact attention, i.e.
``n * calibration_rows / L`` of a dense call, plus the candidates' Top-P on ``n`` rows of blocks.
"""

from __future__ import annotations

import functools
import math

import torch

from . import masks
from .config import UniSparseConfig

# Thresholds of the estimate a head may get; 1.0 keeps every causal block.
CANDIDATES = (0.5, 0.6, 0.7, 0.75, 0.8, 0.825, 0.85, 0.875, 0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97,
              0.98, 0.99, 0.995, 1.0)


def sample_query_blocks(nb: int, n: int, device=None) -> torch.Tensor:
    """int64: up to ``n`` distinct query blocks spread evenly over ``[nb // 4, nb - 1]``, ascending
    (read-only: one tensor per (nb, n, device), so that a GPU call copies nothing from the host)."""
    if n < 1 or nb < 1:
        raise ValueError(f"need n >= 1 and nb >= 1, got n={n}, nb={nb}")
    return _sampled_blocks(nb, n, str(torch.device(device if device is not None else "cpu")))


@functools.lru_cache(maxsize=64)
def _sampled_blocks(nb: int, n: int, device: str) -> torch.Tensor:
    first = nb // 4
    picks = torch.linspace(first, nb - 1, steps=min(n, nb - first), dtype=torch.float64).round().long()
    return torch.unique(picks).to(device)


@functools.lru_cache(maxsize=8)
def candidate_thresholds(device: str) -> torch.Tensor:
    """:data:`CANDIDATES` as float32 on ``device`` (read-only, made once: no host copy per call)."""
    return torch.tensor(CANDIDATES, dtype=torch.float32, device=device)


def sample_positions(blocks: torch.Tensor, block_size: int, rows: int, seq_len: int) -> torch.Tensor:
    """int64 ``[len(blocks) * rows]``: ``rows`` token positions in each query block, evenly spread
    (the last of every ``block_size // rows`` tokens), clipped to the sequence (a short last block
    repeats its last token)."""
    step = block_size // rows
    offsets = torch.arange(rows, device=blocks.device) * step + (step - 1)
    return (blocks[:, None] * block_size + offsets[None, :]).clamp_max(seq_len - 1).flatten()


def exact_row_mass(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, rows: int, block_size: int,
                   scale: float | None = None, order: torch.Tensor | None = None,
                   budget_bytes: int = 1 << 28) -> torch.Tensor:
    """Exact causal attention of the queries at (original) ``positions``, summed per key block and
    over each consecutive group of ``rows`` positions: float32 ``[B, Hq, len(positions) // rows, nb]``
    (each row sums to ``rows``). ``order``: key blocks are the order's (the key at original position
    ``j`` sits in block ``inverse(order)[j] // block_size``). Plain PyTorch, a few query groups at a
    time so that the logits stay under ``budget_bytes``."""
    b, hq, seq_len, d = q.shape
    hkv = k.shape[1]
    group = hq // hkv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    nb = -(-seq_len // block_size)
    n_groups = positions.numel() // rows
    kf = k.to(acc)
    keys = torch.arange(seq_len, device=q.device)
    out = torch.zeros(b, hq, n_groups, nb, dtype=acc, device=q.device)
    key_block = None
    if order is not None:
        from .layout import inverse

        key_block = inverse(order.to(q.device)) // block_size
    per_group = max(1, budget_bytes // (b * hq * rows * nb * block_size * 4))
    for g0 in range(0, n_groups, per_group):
        pos = positions[g0 * rows:min(n_groups, g0 + per_group) * rows].to(q.device)
        qs = q[:, :, pos].to(acc).view(b, hkv, group * pos.numel(), d)  # query heads of one KV head together
        logits = (qs @ kf.transpose(-1, -2)).view(b, hq, pos.numel(), seq_len) * scale
        logits = logits.masked_fill(keys[None, :] > pos[:, None], float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        n = pos.numel() // rows
        if key_block is not None:
            per_block = torch.zeros(b, hq, pos.numel(), nb, dtype=acc, device=q.device).index_add_(-1, key_block, probs)
            out[:, :, g0:g0 + n] = per_block.view(b, hq, n, rows, nb).sum(3)
            continue
        padded = torch.zeros(b, hq, pos.numel(), nb * block_size, dtype=acc, device=q.device)
        padded[..., :seq_len] = probs
        out[:, :, g0:g0 + n] = padded.view(b, hq, n, rows, nb, block_size).sum((3, 5))
    return out.float()


def recall_per_candidate(scores_rows: torch.Tensor, exact_rows: torch.Tensor, blocks: torch.Tensor,
                         config: UniSparseConfig, candidates: torch.Tensor,
                         visible: torch.Tensor | None = None, rule=None) -> torch.Tensor:
    """Mean share of the exact mass that Top-P at each candidate keeps: float32 ``[C, B, Hq]``.

    ``scores_rows [B, Hs, S, nb]``: the estimate on the sampled query blocks ``blocks``;
    ``exact_rows [B, Hq, S, nb]``: their exact mass (any positive scale per row). Top-P runs once per
    selection head; each query head of a pooled head is measured against its own exact mass.
    ``visible [S, nb]``: the blocks Top-P may keep (default: the causal ones). ``rule``: the Top-P
    function (default the definition, :func:`unisparse.masks.top_p_mask`, which broadcasts the
    candidates; the one-launch kernel :func:`unisparse.kernels.top_p.top_p_mask` takes them as one
    threshold per ``[S, nb]`` matrix, all candidates in one launch)."""
    if rule is None:
        kept = masks.top_p_mask(scores_rows, candidates.view(-1, 1, 1, 1), sink_blocks=config.sink_blocks,
                                local_blocks=config.local_blocks, rows=blocks, visible=visible)  # [C, B, Hs, S, nb]
    else:
        c = candidates.numel()
        kept = rule(scores_rows.expand(c, *scores_rows.shape), candidates.view(c, 1, 1, 1).expand(c, *scores_rows.shape[:2], 1),
                    sink_blocks=config.sink_blocks, local_blocks=config.local_blocks, rows=blocks, visible=visible)
    kept = masks.expand_heads(kept.flatten(0, 1), config.head_pool).unflatten(0, (candidates.numel(), -1))
    share = exact_rows / exact_rows.sum(-1, keepdim=True).clamp_min(1e-30)
    return (kept * share).sum(-1).mean(-1)


def calibrated_top_p(q: torch.Tensor, k: torch.Tensor, scores: torch.Tensor, config: UniSparseConfig,
                     scale: float | None = None, exact_mass=exact_row_mass, order: torch.Tensor | None = None,
                     visible: torch.Tensor | None = None, rows: torch.Tensor | None = None, rule=None) -> torch.Tensor:
    """Each selection head's threshold: float32 ``[B, Hs, 1]`` (broadcasts over its rows of blocks).

    ``scores [B, Hs, nb, nb]`` are the estimate the mask will be taken from; ``exact_mass`` computes
    the sampled rows' exact mass (:func:`exact_row_mass`, or the Triton twin). In a reordered sequence,
    ``order`` (int64 ``[L]``, the original position of each token of the order) and ``visible``
    (``[nb, nb]``: the order's blocks that hold a visible pair) are the ones ``scores`` were taken in.
    ``rows`` (int64, ascending): ``scores`` holds only these query blocks (``[B, Hs, len(rows), nb]``,
    a video-aware probe's); the sample is then drawn from them (:func:`sample_query_blocks` over
    their indices). ``rule``: the Top-P function of the candidates' recall on a GPU
    (:func:`recall_per_candidate`; on a CPU the definition)."""
    seq_len, nb = q.shape[2], scores.shape[-1]
    if rows is None:
        blocks = sample_query_blocks(nb, config.calibration_blocks, q.device)
        picked = scores[:, :, blocks]
    else:
        rows = rows.to(q.device)
        index = sample_query_blocks(rows.numel(), config.calibration_blocks, q.device)
        blocks, picked = rows[index], scores[:, :, index]
    positions = sample_positions(blocks, config.block_size, config.calibration_rows, seq_len)
    if order is not None:
        from .layout import is_identity

        if is_identity(order):  # the prompt's own order: the plain path (cached per order: no sync per layer)
            order = visible = None
    if order is not None:
        positions = order.to(q.device)[positions]
        exact = exact_mass(q, k, positions, config.calibration_rows, config.block_size, scale, order=order)
    else:
        exact = exact_mass(q, k, positions, config.calibration_rows, config.block_size, scale)
    candidates = candidate_thresholds(str(q.device))
    vis_rows = None if visible is None else visible.to(q.device)[blocks]
    # On a CPU the definition: the Top-P kernel runs there only in Triton's interpreter, one numpy
    # sort per row and candidate (minutes in the test suite); the two are tested equal.
    recall = recall_per_candidate(picked, exact, blocks, config, candidates, vis_rows,
                                  rule if q.is_cuda else None)  # [C, B, Hq]
    b, hs = scores.shape[:2]
    recall = recall.view(candidates.numel(), b, hs, config.head_pool).amin(-1)  # a pooled head: its worst
    return threshold_for_recall(recall, candidates, float(config.top_p))[..., None]


def threshold_for_recall(recall: torch.Tensor, candidates: torch.Tensor, target: float) -> torch.Tensor:
    """Per head, the threshold at which the sampled recall reaches ``target``: float32 ``recall.shape[1:]``.

    ``recall [C, ...]`` is the recall at each of the ascending ``candidates`` (non-decreasing along C:
    a higher Top-P keeps a superset). The first candidate that reaches the target, lowered linearly
    towards the candidate before it by how far that one fell short (the grid's steps of 0.01-0.1
    otherwise over-recall by about half a step: 0.96 mean recall for a 0.95 target); the first
    candidate where it reaches already; 1.0 (every block) where none does."""
    reaches = recall >= target - 1e-6
    reaches[-1] = True  # the last candidate, 1.0, keeps everything
    first = reaches.float().argmax(0, keepdim=True)  # the smallest candidate that reaches the target
    before = (first - 1).clamp_min(0)
    r_hi, r_lo = recall.gather(0, first)[0], recall.gather(0, before)[0]
    c_hi, c_lo = candidates[first[0]], candidates[before[0]]
    share = ((target - r_lo) / (r_hi - r_lo).clamp_min(1e-12)).clamp(0.0, 1.0)
    return torch.where(first[0] > 0, c_lo + share * (c_hi - c_lo), c_hi)
