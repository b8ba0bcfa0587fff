"""The UniSparse method in plain PyTorch: the ground truth every kernel is tested against.

Written for clarity, on any device and any float dtype. Arithmetic runs in float32 (float64
when the inputs are float64). Memory stays bounded by looping over query blocks, so this
backend also serves CPU users, only slowly.

The steps (README, "The method"):

1. Composite tokens: ``q`` is averaged over ``q_pool`` consecutive tokens, ``k`` over
   ``k_pool``; a short last group averages the tokens it has. With ``head_pool > 1``, groups of
   consecutive query heads are averaged too, and their keys with them (each query head's own
   KV head, so a group inside one GQA group reads a single KV head). Composite tokens are
   averaged in float32 and rounded to the input dtype, exactly as the kernel feeds them to the
   tensor cores, so that both backends score the same numbers.
2. Compressed attention ``softmax(q_c k_c^T * scale)``, causal in the compressed space: a
   composite key is visible when its first token is not after the composite query's last one.
3. Block scores: the compressed probabilities summed per ``block_size`` x ``block_size`` tile.
   Optionally (``variance_correction``) each composite logit gains a term for the spread of the
   keys it averages (:func:`variance_features`).
4. Top-P per query block (:func:`top_p_mask`).
5. Exact causal attention restricted to the kept blocks (:func:`block_sparse_attention`).
"""

from __future__ import annotations

import math

import torch

from . import masks
from .config import UniSparseConfig
from .validation import num_blocks


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def pool_sequence(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average ``x [B, H, L, D]`` over groups of ``factor`` tokens -> ``[B, H, ceil(L/factor), D]``.

    Returned in float32 (float64 for float64 input); the last group may be shorter.
    """
    b, h, seq_len, d = x.shape
    n = -(-seq_len // factor)
    acc = x.to(compute_dtype(x.dtype))
    padded = torch.zeros(b, h, n * factor, d, dtype=acc.dtype, device=x.device)
    padded[:, :, :seq_len] = acc
    counts = torch.full((n,), float(factor), dtype=acc.dtype, device=x.device)
    counts[-1] = seq_len - (n - 1) * factor
    return padded.view(b, h, n, factor, d).sum(3) / counts.view(1, 1, n, 1)


def pool_heads(x: torch.Tensor, group: int) -> torch.Tensor:
    """Average consecutive heads in groups of ``group``: ``[B, H, N, D] -> [B, H/group, N, D]``."""
    b, h, n, d = x.shape
    return x.view(b, h // group, group, n, d).mean(2)


def composite_tokens(q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig):
    """Composite queries ``[B, Hs, Nq, D]`` and their keys ``[B, Hs, Nk, D]``, ``Hs = Hq / head_pool``.

    Both are rounded to the input dtype (see the module docstring).
    """
    group = q.shape[1] // k.shape[1]
    k_per_q_head = k.repeat_interleave(group, dim=1) if group > 1 else k
    qc = pool_heads(pool_sequence(q, config.q_pool), config.head_pool)
    kc = pool_heads(pool_sequence(k_per_q_head, config.k_pool), config.head_pool)
    return qc.to(q.dtype), kc.to(k.dtype)


def composite_key_variance(q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig) -> torch.Tensor:
    """Per-feature variance of the keys averaged into each composite key: float32 ``[B, Hs, Nk, D]``.

    Over the same tokens (and, with ``head_pool``, heads) as :func:`composite_tokens`' keys;
    float64 for float64 input. Clamped at zero against rounding.
    """
    group = q.shape[1] // k.shape[1]
    kq = k.repeat_interleave(group, dim=1) if group > 1 else k
    mean = pool_heads(pool_sequence(kq, config.k_pool), config.head_pool)
    kf = kq.to(compute_dtype(k.dtype))
    second = pool_heads(pool_sequence(kf * kf, config.k_pool), config.head_pool)
    return (second - mean * mean).clamp_min(0.0)


def variance_features(
    qc: torch.Tensor, kc: torch.Tensor, key_variance: torch.Tensor, alpha: float, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite tokens widened so that ``(qf . kf) * scale = scale q.k + alpha scale^2/2 q^2.var(k)``.

    ``qf = [qc, alpha scale / 2 * qc^2]``, ``kf = [kc, var(k)]``, rounded to ``qc``'s dtype (the
    second half computed in float32 from the rounded ``qc``). Shared by both backends, so that
    they score the same numbers.
    """
    acc = compute_dtype(qc.dtype)
    q2 = (0.5 * alpha * scale) * qc.to(acc) * qc.to(acc)
    qf = torch.cat([qc, q2.to(qc.dtype)], dim=-1).contiguous()
    kf = torch.cat([kc, key_variance.to(kc.dtype)], dim=-1).contiguous()
    return qf, kf


def compressed_causal_mask(n_q: int, n_k: int, seq_len: int, q_pool: int, k_pool: int, device) -> torch.Tensor:
    """``[n_q, n_k]``: composite key j is visible to composite query i."""
    last_q_token = torch.clamp((torch.arange(n_q, device=device) + 1) * q_pool - 1, max=seq_len - 1)
    first_k_token = torch.arange(n_k, device=device) * k_pool
    return first_k_token[None, :] <= last_q_token[:, None]


def block_scores(
    q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig, scale: float | None = None
) -> torch.Tensor:
    """Compressed attention probabilities summed per block: float32 ``[B, Hs, nb, nb]``.

    Row ``m`` sums to the number of composite queries in query block ``m``; entries above the
    block diagonal are zero. With ``config.variance_correction > 0`` the composite logits carry
    the key-spread term (:func:`variance_features`).
    """
    seq_len, d = q.shape[2], q.shape[3]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qc, kc = composite_tokens(q, k, config)
    if config.variance_correction > 0:
        qc, kc = variance_features(qc, kc, composite_key_variance(q, k, config), config.variance_correction, scale)
    b, hs, n_q, _ = qc.shape
    n_k = kc.shape[2]
    nb = num_blocks(seq_len, config.block_size)
    rq, rk = config.q_per_block, config.k_per_block
    acc = compute_dtype(q.dtype)
    visible = compressed_causal_mask(n_q, n_k, seq_len, config.q_pool, config.k_pool, q.device)
    kc_t = kc.to(acc).transpose(-1, -2)
    out = torch.zeros(b, hs, nb, nb, dtype=acc, device=q.device)
    chunk = 32  # query blocks per step: bounds memory at 32 * rq * Nk per head
    for first in range(0, nb, chunk):
        rows = slice(first * rq, min((first + chunk) * rq, n_q))
        logits = (qc[:, :, rows].to(acc) @ kc_t) * scale
        logits = logits.masked_fill(~visible[rows], float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        n_rows = probs.shape[2]
        qb = -(-n_rows // rq)
        padded = torch.zeros(b, hs, qb * rq, nb * rk, dtype=acc, device=q.device)
        padded[:, :, :n_rows, :n_k] = probs
        out[:, :, first : first + qb] = padded.view(b, hs, qb, rq, nb, rk).sum((3, 5))
    return out.float()


def forced_blocks(nb: int, config: UniSparseConfig, device) -> torch.Tensor:
    """``[nb, nb]`` blocks kept regardless of score: sinks, the diagonal and local blocks."""
    return masks.forced_blocks(nb, config.sink_blocks, config.local_blocks, device)


def top_p_mask(scores: torch.Tensor, config: UniSparseConfig) -> torch.Tensor:
    """Top-P of ``scores`` with ``config``'s threshold and forced blocks (:func:`unisparse.masks.top_p_mask`)."""
    return masks.top_p_mask(scores, config.top_p, sink_blocks=config.sink_blocks, local_blocks=config.local_blocks)


expand_heads = masks.expand_heads


def select_blocks(
    q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig, scale: float | None = None,
    top_p: torch.Tensor | None = None,
) -> torch.Tensor:
    """UniSparse selection: bool ``[B, Hq, nb, nb]``.

    With ``config.variance_correction > 0`` a block is kept when Top-P keeps it on either the
    plain or the variance-corrected scores (:func:`variance_features`): the corrected estimate
    finds far blocks that one key dominates, the plain one guards against its failure (a group
    whose spread points away from the query, which the diagonal term cannot tell).
    With ``config.calibration_blocks > 0`` each head's threshold comes from the exact attention of
    a few query rows (:mod:`unisparse.calibration`); ``top_p`` (``[B, Hq / head_pool, 1]``): thresholds
    already calibrated (a video-aware probe's), used as they are.
    """
    scores = block_scores(q, k, config, scale)
    if config.calibration_blocks or top_p is not None:
        from .calibration import calibrated_top_p

        if top_p is None:
            top_p = calibrated_top_p(q, k, scores, config, scale)
        mask = masks.top_p_mask(scores, top_p, sink_blocks=config.sink_blocks, local_blocks=config.local_blocks)
        return expand_heads(mask, config.head_pool)
    mask = top_p_mask(scores, config)
    if config.variance_correction > 0:
        plain = top_p_mask(block_scores(q, k, config.replace(variance_correction=0.0), scale), config)
        mask = mask | plain
    return expand_heads(mask, config.head_pool)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    block_size: int = 128,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal attention over only the kept blocks, by masking. Returns ``[B, Hq, L, D]``.

    ``block_mask`` has 1, Hq or Hkv heads (broadcast over batch when its batch is 1). Blocks
    above the diagonal are ignored even when set. A query row left with no visible key (a mask
    without its diagonal block) gets zeros.
    """
    b, hq, seq_len, d = q.shape
    hkv = k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    acc = compute_dtype(q.dtype)
    group = hq // hkv
    if block_mask.shape[1] == hkv and hkv != hq:
        block_mask = block_mask.repeat_interleave(group, dim=1)
    block_mask = block_mask.expand(b, hq, *block_mask.shape[2:])
    kf = k.to(acc).repeat_interleave(group, dim=1)
    vf = v.to(acc).repeat_interleave(group, dim=1)
    out = torch.empty(b, hq, seq_len, d, dtype=q.dtype, device=q.device)
    positions = torch.arange(seq_len, device=q.device)
    for m in range(num_blocks(seq_len, block_size)):
        rows = slice(m * block_size, min((m + 1) * block_size, seq_len))
        end = rows.stop
        logits = (q[:, :, rows].to(acc) @ kf[:, :, :end].transpose(-1, -2)) * scale
        kept = block_mask[:, :, m].repeat_interleave(block_size, dim=-1)[..., :end]
        causal = positions[None, :end] <= positions[rows, None]
        visible = kept[:, :, None, :] & causal
        logits = logits.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # rows with no visible key -> 0
        out[:, :, rows] = (probs @ vf[:, :, :end]).to(q.dtype)
    return out



def true_block_mass(
    q: torch.Tensor, k: torch.Tensor, block_size: int = 128, scale: float | None = None
) -> torch.Tensor:
    """Exact causal attention mass per block, float32 ``[B, Hq, nb, nb]``; each row sums to 1.

    The share of query block ``m``'s attention (averaged over its rows) that falls in key block
    ``n``: what an ideal selector would rank by (the oracle). Computed one query block at a
    time, so memory stays ``O(block_size * L)`` per head.
    """
    b, hq, seq_len, d = q.shape
    group = hq // k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    acc = compute_dtype(q.dtype)
    nb = num_blocks(seq_len, block_size)
    kf = k.to(acc).repeat_interleave(group, dim=1) if group > 1 else k.to(acc)
    out = torch.zeros(b, hq, nb, nb, dtype=acc, device=q.device)
    positions = torch.arange(seq_len, device=q.device)
    for m in range(nb):
        rows = slice(m * block_size, min((m + 1) * block_size, seq_len))
        end = rows.stop
        logits = (q[:, :, rows].to(acc) @ kf[:, :, :end].transpose(-1, -2)) * scale
        causal = positions[None, :end] <= positions[rows, None]
        probs = torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1).mean(2)
        padded = torch.zeros(b, hq, (m + 1) * block_size, dtype=acc, device=q.device)
        padded[..., :end] = probs
        out[:, :, m, : m + 1] = padded.view(b, hq, m + 1, block_size).sum(-1)
    return out.float()
