"""Selection variants screened by ``experiments/fidelity/fidelity_screen.py``: ``name -> f(q, k, scale, top_p) -> mask``.

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


def _top_p_mask_tensor(scores, cfg, top_p):
    """``reference.top_p_mask`` with a per-head threshold ``top_p [B, H]``."""
    nb = scores.shape[-1]
    causal = torch.ones(nb, nb, dtype=torch.bool).tril()
    forced = reference.forced_blocks(nb, cfg, scores.device)
    mass = torch.where(causal, scores, torch.zeros(()))
    key = torch.where(forced, torch.full_like(mass, float("inf")), mass)
    key = torch.where(causal, key, torch.full_like(mass, -1.0))
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    sorted_mass = torch.gather(mass, -1, order)
    before = torch.cumsum(sorted_mass, -1) - sorted_mass
    threshold = top_p[..., None, None] * mass.sum(-1, keepdim=True)
    keep = (before < threshold) | torch.gather(forced.expand_as(mass), -1, order)
    return torch.zeros_like(keep).scatter(-1, order, keep) & causal


def entropy_adaptive(gamma):
    """Per-head threshold from the flatness of the estimate: ``1 - top_p`` scaled per head by
    ``((1 - Hn_h) / mean_h (1 - Hn_h))^gamma``, ``Hn_h`` the head's mean normalised entropy of
    its rows' block scores. gamma > 0: flat heads keep more, concentrated heads less."""
    def f(q, k, scale, top_p):
        cfg = CFG.replace(top_p=top_p)
        scores = reference.block_scores(q, k, cfg, scale)
        nb = scores.shape[-1]
        p = scores / scores.sum(-1, keepdim=True)
        ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
        n_causal = torch.arange(1, nb + 1, dtype=torch.float32)
        hn = (ent[..., 1:] / torch.log(n_causal[1:])).mean(-1)  # [B, H]
        conc = (1 - hn).clamp_min(1e-3)
        eps = (1 - top_p) * (conc / conc.mean(-1, keepdim=True)) ** gamma
        return _top_p_mask_tensor(scores, cfg, (1 - eps).clamp(0.5, 1.0))
    return f


def semivariance(alpha):
    """Sign-aware spread: a key group's upward deviations only raise the logit of queries
    pointing their way. ``v+_d = mean_j max(k_jd - m_d, 0)^2``, ``v-_d`` likewise below; the
    logit gains ``alpha s^2 (q+^2.v+ + q-^2.v-)`` (equal to ``variance(alpha)`` for symmetric spread)."""
    def f(q, k, scale, top_p):
        s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        cfg = CFG.replace(top_p=top_p)
        group = q.shape[1] // k.shape[1]
        kq = k.repeat_interleave(group, dim=1)
        qm, km = reference.pool_sequence(q, cfg.q_pool), reference.pool_sequence(kq, cfg.k_pool)
        n = kq.shape[2]
        dev = kq - km.repeat_interleave(cfg.k_pool, dim=2)[:, :, :n]
        vp = reference.pool_sequence(dev.clamp_min(0) ** 2, cfg.k_pool)
        vm = reference.pool_sequence(dev.clamp_max(0) ** 2, cfg.k_pool)
        c = alpha * s * s
        qf = torch.cat([s * qm, c * qm.clamp_min(0) ** 2, c * qm.clamp_max(0) ** 2], -1)
        kf = torch.cat([km, vp, vm], -1)
        return reference.top_p_mask(_scores_from_features(qf, kf, q.shape[2], cfg), cfg)
    return f


def capped_variance(alpha, tau):
    """``variance(alpha)`` with each group's per-feature variance capped at ``tau`` times that
    feature's mean variance over the head's groups: an outlier key no longer dominates."""
    def f(q, k, scale, top_p):
        s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        cfg = CFG.replace(top_p=top_p)
        qm, km, _, kv = _moments(q, k, cfg)
        kv = torch.minimum(kv, tau * kv.mean(2, keepdim=True))
        c = alpha * 0.5 * s * s
        qf = torch.cat([s * qm, c * qm * qm], -1)
        kf = torch.cat([km, kv], -1)
        return reference.top_p_mask(_scores_from_features(qf, kf, q.shape[2], cfg), cfg)
    return f


def _var_scores(q, k, scale, cfg, alpha):
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    qm, km, _, kv = _moments(q, k, cfg)
    c = alpha * 0.5 * s * s
    return _scores_from_features(torch.cat([s * qm, c * qm * qm], -1), torch.cat([km, kv], -1), q.shape[2], cfg)


def union(alpha):
    """Blocks that either estimate (plain, or variance-corrected) keeps at ``top_p``."""
    def f(q, k, scale, top_p):
        cfg = CFG.replace(top_p=top_p)
        return default(q, k, scale, top_p) | reference.top_p_mask(_var_scores(q, k, scale, cfg, alpha), cfg)
    return f


def mixture(alpha, w=0.5):
    """Top-P over ``(1 - w) plain + w corrected`` block scores (both rows sum alike)."""
    def f(q, k, scale, top_p):
        cfg = CFG.replace(top_p=top_p)
        plain = reference.block_scores(q, k, cfg, scale)
        return reference.top_p_mask((1 - w) * plain + w * _var_scores(q, k, scale, cfg, alpha), cfg)
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
    "union0.5": union(0.5),
    "union1": union(1.0),
    "mix0.5": mixture(0.5),
    "mix1": mixture(1.0),
    "cap0.5x1": capped_variance(0.5, 1.0),
    "cap0.5x2": capped_variance(0.5, 2.0),
    "cap0.5x4": capped_variance(0.5, 4.0),
    "semi0.5": semivariance(0.5),
    "semi1": semivariance(1.0),
    "ent1": entropy_adaptive(1.0),
    "ent-1": entropy_adaptive(-1.0),
    "var0.25": variance(0.25),
    "var0.35": variance(0.35),
    "var0.75": variance(0.75),
    "pair0.35": pairwise(0.35),
    "var1.5": variance(1.5),
    "pair1": pairwise(1.0),
    "pair0.5": pairwise(0.5),
}
