"""Qwen2-VL's vision attention with the pieces of one length in one SDPA call.

Why: without flash-attn, transformers' ``VisionAttention`` (Qwen2-VL, and Qwen2.5-VL's) cuts the
patch sequence at ``cu_seqlens``, one piece per temporal patch of each image or video, and calls
attention once per piece. A 256-frame video is 128 calls per layer, a training batch of 20 such
needles 2,560 per layer and as many again in backward: launch overhead, not arithmetic. The pieces
of one grid all have the same length, so stacking the pieces of each length into a batch gives one
call per distinct length (one, for a batch of equal-sized videos) and the same attention: every
patch still attends only to the patches of its own piece.

:func:`batch_vision_attention` swaps the forward of a model's vision attention modules in place
when they run SDPA; flash-attention and other implementations keep transformers' own path.
"""

from __future__ import annotations

import sys
import types

import torch
import torch.nn.functional as F

# the classes whose forward this replaces: forward(hidden_states, cu_seqlens, position_embeddings=(cos, sin), ...),
# with qkv, proj, num_heads and scaling, and apply_rotary_pos_emb_vision in their module
_CLASSES = ("VisionAttention", "Qwen2_5_VLVisionAttention")


# At most this many attention scores per call (N x H x L x L), so that a kernel that materialises them
# (SDPA's math path) never needs more memory than about 1 GiB in float32 at once; Qwen2-VL-7B's 16 heads
# at 2,000 patches a frame come to one piece per call, the loop's own footprint.
MAX_SCORES_PER_CALL = 1 << 28


def _sdpa(q, k, v, scale):
    """SDPA over pieces ``[N, L, H, D]`` -> ``[N, L, H, D]``, in slices of the score budget."""
    n, length, h, _ = q.shape
    step = max(1, MAX_SCORES_PER_CALL // (h * length * length))
    outs = [F.scaled_dot_product_attention(q[i:i + step].transpose(1, 2), k[i:i + step].transpose(1, 2),
                                           v[i:i + step].transpose(1, 2), scale=scale).transpose(1, 2)
            for i in range(0, n, step)]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def piecewise_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                        scale: float) -> torch.Tensor:
    """Attention of ``q, k, v`` ``[S, H, D]`` within the pieces ``cu_seqlens`` marks; ``[S, H, D]``.

    Pieces of one length go through one ``scaled_dot_product_attention`` call as a batch.
    """
    bounds = cu_seqlens.tolist()
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    s, h, d = q.shape
    if lengths and all(n == lengths[0] for n in lengths) and bounds[0] == 0 and bounds[-1] == s:
        n = lengths[0]  # the common case: one grid size, so a plain reshape
        return _sdpa(*(t.reshape(len(lengths), n, h, d) for t in (q, k, v)), scale).reshape(s, h, d)
    groups: dict[int, list[int]] = {}
    for start, n in zip(bounds[:-1], lengths):
        if n:
            groups.setdefault(n, []).append(start)
    outs, order = [], []
    for n, starts in groups.items():
        idx = (torch.tensor(starts, device=q.device)[:, None] + torch.arange(n, device=q.device)[None]).reshape(-1)
        outs.append(_sdpa(*(t.index_select(0, idx).reshape(len(starts), n, h, d) for t in (q, k, v)), scale)
                    .reshape(-1, h, d))
        order.append(idx)
    out = torch.cat(outs)
    inverse = torch.empty_like(torch.cat(order))
    inverse[torch.cat(order)] = torch.arange(inverse.numel(), device=q.device)
    return out.index_select(0, inverse)


def _forward(self, hidden_states, cu_seqlens, position_embeddings=None, **kwargs):
    # flash-attention's varlen path has no such loop; older transformers hand rotary_pos_emb, not cos/sin
    if self.config._attn_implementation != "sdpa" or position_embeddings is None:
        return self._videoqa_original_forward(hidden_states, cu_seqlens, position_embeddings=position_embeddings, **kwargs)
    rotary = sys.modules[type(self).__module__].apply_rotary_pos_emb_vision  # the model's own rotary code
    s = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(s, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = rotary(q, k, cos, sin)
    out = piecewise_attention(q, k, v, cu_seqlens, self.scaling)
    return self.proj(out.reshape(s, -1))


def batch_vision_attention(model: torch.nn.Module) -> int:
    """Give ``model``'s Qwen2-VL vision attention modules the batched SDPA forward; how many it changed.

    Idempotent; a module keeps transformers' forward as ``_videoqa_original_forward`` and falls back
    to it whenever the config asks for an implementation other than SDPA.
    """
    changed = 0
    for m in model.modules():
        if type(m).__name__ in _CLASSES and hasattr(m, "qkv") and not hasattr(m, "_videoqa_original_forward"):
            m._videoqa_original_forward = m.forward
            m.forward = types.MethodType(_forward, m)
            changed += 1
    return changed
