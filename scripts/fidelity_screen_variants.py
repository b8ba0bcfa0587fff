"""Selection variants screened by ``scripts/fidelity_screen.py``: ``name -> f(q, k, scale, top_p) -> mask``.

Each is written in plain PyTorch on top of :mod:`unisparse.reference` (no kernel), for screening
only; a variant that survives the end-to-end runs gets a proper knob in the library.
"""

from __future__ import annotations

import math

import torch

from unisparse import UniSparseConfig, reference
from unisparse.validation import num_blocks

CFG = UniSparseConfig(min_seq_len=0)


def _scores_from_features(qf, kf, seq_len, cfg):
    """Softmax(qf kf^T) (logits already scaled), causal in compressed space, summed per block."""
    b, hs, n_q, _ = qf.shape
    n_k = kf.shape[2]
    nb = num_blocks(seq_len, cfg.block_size)
    rq, rk = cfg.q_per_block, cfg.k_per_block
    visible = reference.compressed_causal_mask(n_q, n_k, seq_len, cfg.q_pool, cfg.k_pool, qf.device)
    logits = (qf @ kf.transpose(-1, -2)).masked_fill(~visible, float("-inf"))
    probs = torch.softmax(logits, -1)
    padded = torch.zeros(b, hs, nb * rq, nb * rk)
    padded[:, :, :n_q, :n_k] = probs
    return padded.view(b, hs, nb, rq, nb, rk).sum((3, 5))


def _moments(q, k, cfg):
    group = q.shape[1] // k.shape[1]
    kq = k.repeat_interleave(group, dim=1)
    qm, km = reference.pool_sequence(q, cfg.q_pool), reference.pool_sequence(kq, cfg.k_pool)
    qv = (reference.pool_sequence(q * q, cfg.q_pool) - qm * qm).clamp_min(0)
    kv = (reference.pool_sequence(kq * kq, cfg.k_pool) - km * km).clamp_min(0)
    return qm, km, qv, kv


def default(q, k, scale, top_p):
    return reference.select_blocks(q, k, CFG.replace(top_p=top_p), scale)


def temperature(t):
    def f(q, k, scale, top_p):
        s = (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale) * t
        cfg = CFG.replace(top_p=top_p)
        return reference.top_p_mask(reference.block_scores(q, k, cfg, s), cfg)
    return f


def variance(alpha, with_q=False):
    """Second-order correction of the composite logit for the spread inside each group:
    E[exp(s q_i.k_j)] ~ exp(s qm.km + s^2/2 (qm^2.kv [+ qv.km^2 + qv.kv])) (diagonal covariances)."""
    def f(q, k, scale, top_p):
        s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        cfg = CFG.replace(top_p=top_p)
        qm, km, qv, kv = _moments(q, k, cfg)
        c = alpha * 0.5 * s * s
        if with_q:
            qf = torch.cat([s * qm, c * qm * qm, c * qv, c * qv], -1)
            kf = torch.cat([km, kv, km * km, kv], -1)
        else:
            qf = torch.cat([s * qm, c * qm * qm], -1)
            kf = torch.cat([km, kv], -1)
        return reference.top_p_mask(_scores_from_features(qf, kf, q.shape[2], cfg), cfg)
    return f


def pairwise(alpha):
    """As ``variance``, plus the covariance of the two features that RoPE rotates together
    (``i`` and ``i + D/2``): the 2x2 blocks of the key covariance instead of its diagonal."""
    def f(q, k, scale, top_p):
        s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        cfg = CFG.replace(top_p=top_p)
        group = q.shape[1] // k.shape[1]
        kq = k.repeat_interleave(group, dim=1)
        half = q.shape[-1] // 2
        qm, km = reference.pool_sequence(q, cfg.q_pool), reference.pool_sequence(kq, cfg.k_pool)
        kv = (reference.pool_sequence(kq * kq, cfg.k_pool) - km * km).clamp_min(0)
        cross = kq[..., :half] * kq[..., half:]
        kc = reference.pool_sequence(cross, cfg.k_pool) - km[..., :half] * km[..., half:]
        c = alpha * 0.5 * s * s
        qf = torch.cat([s * qm, c * qm * qm, 2 * c * qm[..., :half] * qm[..., half:]], -1)
        kf = torch.cat([km, kv, kc], -1)
        return reference.top_p_mask(_scores_from_features(qf, kf, q.shape[2], cfg), cfg)
    return f


def residual(q, k, scale, top_p):
    """Top-P over the non-forced mass only: forced blocks kept, then the other blocks until they
    hold ``top_p`` of the estimated mass outside the forced blocks."""
    cfg = CFG.replace(top_p=top_p)
    scores = reference.block_scores(q, k, cfg, scale)
    nb = scores.shape[-1]
    forced = reference.forced_blocks(nb, cfg, scores.device)
    rest = scores.masked_fill(forced, 0.0)
    keep = reference.top_p_mask(rest, cfg.replace(sink_blocks=0, local_blocks=1))
    return keep | (forced & (torch.arange(nb)[None, :] <= torch.arange(nb)[:, None]))


VARIANTS = {
    "default": default,
    "temp1.25": temperature(1.25),
    "temp1.5": temperature(1.5),
    "temp2": temperature(2.0),
    "temp0.8": temperature(0.8),
    "var0.5": variance(0.5),
    "var1": variance(1.0),
    "varq0.5": variance(0.5, True),
    "varq1": variance(1.0, True),
    "residual": residual,
    "var0.25": variance(0.25),
    "var0.35": variance(0.35),
    "var0.75": variance(0.75),
    "pair0.35": pairwise(0.35),
    "var1.5": variance(1.5),
    "pair1": pairwise(1.0),
    "pair0.5": pairwise(0.5),
}
