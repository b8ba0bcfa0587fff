"""Pieces the selectors share: parameter checks, GQA products, last-query probes, block helpers.

Everything here runs on any device; arithmetic is float32 (float64 for float64 inputs, so that
tests can compare against float64 references exactly). GQA is handled by index arithmetic:
the ``G`` query heads that share a KV head are stacked along the row dimension and multiplied
by that one KV head, so K is never copied per query head.
"""

from __future__ import annotations

import math

import torch

from ..masks import causal_block_mask
from ..reference import compute_dtype
from ..validation import check_block_size, check_qk, check_scale, num_blocks

__all__ = [
    "check_positive_int",
    "check_fraction",
    "check_scale",
    "check_inputs",
    "default_scale",
    "grouped_scores",
    "causal_block_mask",
    "dense_block_mask",
    "probe_vertical_slash",
    "diagonal_sums",
    "block_pool",
    "keep_top_counts",
]


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_fraction(name: str, value, *, allow_one: bool = True) -> float:
    """A share in ``(0, 1]`` (or ``(0, 1)`` when ``allow_one`` is false)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = 0.0 < float(value) <= 1.0 if allow_one else 0.0 < float(value) < 1.0
    if not ok:
        interval = "(0, 1]" if allow_one else "(0, 1)"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def check_inputs(q: torch.Tensor, k: torch.Tensor, block_size: int, scale) -> float:
    """Validate a selector call; return the softmax scale (``1/sqrt(D)`` by default)."""
    check_qk(q, k)
    check_block_size(block_size)
    scale = check_scale(scale)
    return default_scale(q) if scale is None else scale


def default_scale(q: torch.Tensor) -> float:
    return 1.0 / math.sqrt(q.shape[-1])


def grouped_scores(qx: torch.Tensor, kx: torch.Tensor) -> torch.Tensor:
    """``qx [B, Hq, M, E] . kx[B, Hkv, N, E]^T -> [B, Hq, M, N]`` with query head ``h`` reading KV
    head ``h // (Hq / Hkv)``, without repeating ``kx``."""
    b, hq, m, e = qx.shape
    hkv = kx.shape[1]
    group = hq // hkv
    out = qx.reshape(b, hkv, group * m, e) @ kx.transpose(-1, -2)
    return out.view(b, hq, m, kx.shape[2])


def dense_block_mask(q: torch.Tensor, block_size: int) -> torch.Tensor:
    """Every causal block, for every batch element and query head: ``[B, Hq, nb, nb]``."""
    b, hq, seq_len, _ = q.shape
    nb = num_blocks(seq_len, block_size)
    return causal_block_mask(nb, q.device).expand(b, hq, nb, nb).clone()


def diagonal_sums(probs: torch.Tensor) -> torch.Tensor:
    """Sums along the diagonals of the probe's attention: ``[B, H, n, L] -> [B, H, L]``.

    Row ``i`` of ``probs`` is the query at absolute position ``L - n + i``; entry ``d`` of the
    result sums ``probs[i, j]`` over the pairs with ``(L - n + i) - j == d`` (the slash at
    offset ``d``; ``d = 0`` is the main diagonal). Done with one strided copy: row ``i`` is
    written shifted right by ``n - 1 - i`` so that every diagonal becomes a column.
    """
    b, h, n, seq_len = probs.shape
    width = seq_len + n
    buf = probs.new_zeros(b * h, n * width)
    shifted = buf.as_strided((b * h, n, seq_len), (n * width, width - 1, 1), storage_offset=n - 1)
    shifted.copy_(probs.reshape(b * h, n, seq_len))
    # column c = j + n - 1 - i holds offset d = L - 1 - c
    cols = buf.view(b * h, n, width).sum(1)[:, :seq_len]
    return cols.flip(-1).view(b, h, seq_len)


def probe_vertical_slash(
    q: torch.Tensor, k: torch.Tensor, n_last: int, scale: float, max_elements: int = 1 << 26
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """True causal softmax attention of the last ``n_last`` queries over every key, reduced to
    column sums (vertical) and diagonal sums (slash), both ``[B, Hq, L]`` in float32/float64.

    ``n_last`` is clamped to ``L``. Query heads are processed a few at a time (each with its own
    KV head, never copied), so the probability buffer stays near ``max_elements`` entries.
    Returns ``(vertical, slash, n)``.
    """
    b, hq, seq_len, _ = q.shape
    group = hq // k.shape[1]
    n = min(n_last, seq_len)
    acc = compute_dtype(q.dtype)
    rows = torch.arange(seq_len - n, seq_len, device=q.device)
    cols = torch.arange(seq_len, device=q.device)
    visible = cols[None, :] <= rows[:, None]  # [n, L]
    vertical = torch.empty(b, hq, seq_len, dtype=acc, device=q.device)
    slash = torch.empty(b, hq, seq_len, dtype=acc, device=q.device)
    step = max(1, min(group, max_elements // max(1, b * n * seq_len)))
    h0 = 0
    while h0 < hq:
        h1 = min(h0 + step, (h0 // group + 1) * group)  # stay inside one KV head's group
        kv = k[:, h0 // group].to(acc)  # [B, L, D]
        q_last = q[:, h0:h1, seq_len - n :].to(acc)  # [B, h, n, D]
        logits = (q_last.reshape(b, -1, q.shape[-1]) @ kv.transpose(-1, -2)).view(b, h1 - h0, n, seq_len)
        probs = torch.softmax((logits * scale).masked_fill(~visible, float("-inf")), dim=-1)
        vertical[:, h0:h1] = probs.sum(-2)
        slash[:, h0:h1] = diagonal_sums(probs)
        h0 = h1
    return vertical, slash, n


def block_pool(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """Sum the last dimension in groups of ``block_size`` (a short last group sums what it has)."""
    n = x.shape[-1]
    nb = num_blocks(n, block_size)
    padded = torch.nn.functional.pad(x, (0, nb * block_size - n))
    return padded.view(*x.shape[:-1], nb, block_size).sum(-1)


def keep_top_counts(scores: torch.Tensor, counts: torch.Tensor | int) -> torch.Tensor:
    """Bool mask of the ``counts`` highest ``scores`` along the last dimension.

    ``counts`` is an int or a tensor broadcastable to ``scores.shape[:-1]``. Ties go to the lower
    index (a stable sort), so the result is deterministic.
    """
    n = scores.shape[-1]
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    ranks = torch.arange(n, device=scores.device)
    if isinstance(counts, torch.Tensor):
        keep_sorted = ranks < counts[..., None]
    else:
        keep_sorted = (ranks < counts).expand(scores.shape)
    keep_sorted = keep_sorted.expand(scores.shape)
    return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device).scatter(-1, order, keep_sorted)
