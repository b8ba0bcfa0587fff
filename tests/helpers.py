"""Shared test utilities: a naive float64 attention, error measures, poisoned buffers."""

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
