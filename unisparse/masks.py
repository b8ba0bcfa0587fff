"""Block masks as plain functions: the causal blocks, the blocks forced in, and the Top-P rule.

Every selector ends in the same decision (keep, per query block, the fewest key blocks whose
share of the row's score reaches ``top_p``, with some blocks forced in), so it lives here once,
with plain arguments, and UniSparse, XAttention and the oracle all call it.
"""

from __future__ import annotations

import torch


def causal_block_mask(nb: int, device) -> torch.Tensor:
    """``[nb, nb]`` bool: the blocks on or below the diagonal."""
    return torch.ones(nb, nb, dtype=torch.bool, device=device).tril()


def forced_blocks(nb: int, sink_blocks: int, local_blocks: int, device) -> torch.Tensor:
    """``[nb, nb]`` blocks kept whatever their score: the first ``sink_blocks`` key blocks and the
    ``local_blocks`` blocks ending at the diagonal (``local_blocks >= 1`` keeps the diagonal)."""
    qb = torch.arange(nb, device=device)[:, None]
    kb = torch.arange(nb, device=device)[None, :]
    return (kb <= qb) & ((kb < sink_blocks) | (qb - kb < local_blocks))


def top_p_mask(scores: torch.Tensor, top_p: float | torch.Tensor, *, sink_blocks: int, local_blocks: int,
               visible: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Per query block, the fewest key blocks whose share of the row's mass reaches ``top_p``.

    ``scores [..., nb, nb]`` (only the entries of ``visible`` blocks are read; default: the causal
    ones, those on or below the diagonal; in a reordered token sequence, :mod:`unisparse.reordered`
    passes the blocks that hold any visible pair). Forced blocks (:func:`forced_blocks`, where
    visible) come first and their mass counts; the rest follow by descending score, ties broken by
    the lower block index (a stable sort), so the choice is deterministic. A block is kept while the
    mass before it is below ``top_p`` of the row total. ``top_p >= 1`` keeps every visible block.
    Returns bool ``[..., nb, nb]``. ``rows`` (int64): ``scores`` and ``visible`` hold only these
    query blocks' rows (``[..., len(rows), nb]``), and so does the result.

    ``top_p`` may be a float tensor, one threshold per row: it broadcasts against
    ``scores.shape[:-1]`` (e.g. ``[B, H, 1]`` for one per head), and extra leading dimensions give
    one mask per threshold (``[C, 1, 1, 1]`` -> ``[C, B, H, nb, nb]``).
    """
    nb = scores.shape[-1]
    causal = causal_block_mask(nb, scores.device) if visible is None else visible
    if rows is not None and visible is None:
        causal = causal[rows]
    per_row = torch.is_tensor(top_p)
    if not per_row and top_p >= 1.0:
        return causal.expand(scores.shape).clone()
    qb = (torch.arange(nb, device=scores.device) if rows is None else rows.to(scores.device))[:, None]
    kb = torch.arange(nb, device=scores.device)[None, :]
    forced = causal & ((kb < sink_blocks) | ((qb - kb < local_blocks) & (kb <= qb)))
    mass = torch.where(causal, scores.float(), torch.zeros((), device=scores.device))
    order_key = torch.where(forced, torch.full_like(mass, float("inf")), mass)
    order_key = torch.where(causal, order_key, torch.full_like(mass, -1.0))
    order = torch.sort(order_key, dim=-1, descending=True, stable=True).indices
    sorted_mass = torch.gather(mass, -1, order)
    mass_before = torch.cumsum(sorted_mass, dim=-1) - sorted_mass
    total = mass.sum(-1, keepdim=True)
    if per_row:
        p = top_p.to(device=scores.device, dtype=torch.float32)[..., None]
        keep_sorted = (mass_before < p * total) | torch.gather(forced.expand_as(mass), -1, order)
        keep = torch.zeros_like(keep_sorted).scatter(-1, order.expand_as(keep_sorted), keep_sorted)
        return (keep | (p >= 1.0)) & causal
    keep_sorted = (mass_before < float(top_p) * total) | torch.gather(forced.expand_as(mass), -1, order)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return keep & causal


def expand_heads(mask: torch.Tensor, head_pool: int) -> torch.Tensor:
    """One mask per pooled head -> one per query head."""
    return mask.repeat_interleave(head_pool, dim=1) if head_pool > 1 else mask


def block_density(block_mask: torch.Tensor) -> float:
    """Kept blocks over causal blocks (1 - sparsity), over all batches and heads."""
    nb = block_mask.shape[-1]
    causal = causal_block_mask(nb, block_mask.device)
    kept = (block_mask & causal).sum().item()
    return kept / (causal.sum().item() * block_mask[..., 0, 0].numel())
