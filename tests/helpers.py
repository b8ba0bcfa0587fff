"""Shared test utilities: a naive float64 attention, error measures, poisoned buffers, a score recorder."""

import math

import torch


def naive_attention(q, k, v, token_mask=None, scale=None):
    """Causal softmax attention in float64, written out plainly; GQA by index arithmetic.

    ``token_mask`` (bool ``[B, Hq, L, L]``) further restricts the visible keys. Rows with no
    visible key give zeros.
    """
    b, hq, seq_len, d = q.shape
    group = hq // k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    out = torch.zeros(b, hq, seq_len, d, dtype=torch.float64)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    for h in range(hq):
        kh, vh = k[:, h // group].double().cpu(), v[:, h // group].double().cpu()
        logits = q[:, h].double().cpu() @ kh.transpose(-1, -2) * scale
        visible = causal if token_mask is None else causal & token_mask[:, h].cpu()
        logits = logits.masked_fill(~visible, float("-inf"))
        weights = torch.softmax(logits, -1).nan_to_num(0.0)
        out[:, h] = weights @ vh
    return out


def token_mask_from_blocks(block_mask, seq_len, block_size, q_heads):
    """Expand a ``[B|1, H, nb, nb]`` block mask to a ``[B, Hq, L, L]`` token mask."""
    heads = block_mask.shape[1]
    mask = block_mask.repeat_interleave(q_heads // heads, dim=1) if heads != q_heads else block_mask
    mask = mask.repeat_interleave(block_size, -1).repeat_interleave(block_size, -2)
    return mask[..., :seq_len, :seq_len]


def rel_err(out, ref):
    out, ref = out.double().cpu(), ref.double().cpu()
    assert torch.isfinite(out).all(), "output has NaN/inf (unwritten or broken elements)"
    return ((out - ref).norm() / ref.norm()).item()


def poisoned_like(shape, dtype, device="cpu"):
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


# ||out - ref|| / ||ref|| bounds per input dtype: float32 far under 1e-3, half types 1e-3 to 1e-2.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def top_p_violations(mask, score_sets, config, abs_err, l1_err):
    """Blocks of ``mask`` that no Top-P selection over scores within the given errors of ``score_sets``
    could have produced (0 means: every difference from the reference is a near-tie).

    ``mask``: bool ``[B, Hs, nb, nb]`` (one head per score head); ``score_sets``: reference block
    scores ``[B, Hs, nb, nb]``, one tensor per estimate whose Top-P the mask is the union of;
    ``abs_err`` / ``l1_err``: per-row bounds ``[B, Hs, nb, 1]`` on the largest and the summed
    absolute error of the scores the mask was selected from. A kept block ``j`` (not forced) is
    explained when, even with every block clearly above it (score more than ``2 * abs_err``
    higher) counted before it and every error against it, the mass before it can be under
    ``top_p`` of the row; a dropped block when, with every block not clearly below it counted
    before it and every error for it, that mass can reach ``top_p``. Forced blocks must be kept
    and nothing above the diagonal.
    """
    import unisparse.masks as M

    nb = mask.shape[-1]
    causal = M.causal_block_mask(nb, mask.device)
    forced = M.forced_blocks(nb, config.sink_blocks, config.local_blocks, mask.device)
    bad = (mask & ~causal).sum() + (forced & ~mask).sum()
    keepable = torch.zeros_like(mask)
    droppable = torch.ones_like(mask)
    p = config.top_p
    for ref in score_sets:
        ref = ref.double().where(causal, torch.zeros((), dtype=torch.float64, device=ref.device))
        total = ref.sum(-1, keepdim=True)
        forced_mass = (ref * forced).sum(-1, keepdim=True)
        free = ref.where(causal & ~forced, torch.full_like(ref, float("nan")))
        ordered = free.nan_to_num(-1.0).sort(-1).values  # ascending; -1 for forced/non-causal slots
        ordered_mass = ordered.clamp_min(0.0)
        suffix = ordered_mass.flip(-1).cumsum(-1).flip(-1)  # suffix[i] = sum of ordered[i:]
        suffix = torch.cat([suffix, torch.zeros_like(suffix[..., :1])], -1)
        d = 2 * abs_err.double()
        above = torch.searchsorted(ordered, (free + d).nan_to_num(2.0).contiguous(), side="right")
        clearly_above = suffix.gather(-1, above)  # mass of blocks with score > ref_j + 2 err
        not_below = torch.searchsorted(ordered, (free - d).nan_to_num(2.0).contiguous(), side="left")
        at_least = suffix.gather(-1, not_below) - free.nan_to_num(0.0)  # blocks >= ref_j - 2 err, j itself out
        l1 = l1_err.double()
        keepable |= (forced_mass + clearly_above - l1 < p * (total + l1)) & causal & ~forced
        droppable &= (forced_mass + at_least + l1 >= p * (total - l1)) | ~causal | forced
    bad += (mask & causal & ~forced & ~keepable).sum() + (~mask & causal & ~forced & ~droppable).sum()
    return int(bad)


class ScoreRecorder:
    """A logits processor that keeps every generation step's scores (float32 copies), so two ways of
    answering can be compared step by step."""

    def __init__(self):
        self.steps = []

    def __call__(self, input_ids, scores):
        self.steps.append(scores.detach().float().clone())
        return scores
