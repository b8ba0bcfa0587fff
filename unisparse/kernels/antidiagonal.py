"""XAttention's antidiagonal block scores on the GPU, through UniSparse's fused scoring kernel.

XAttention scores strided tokens: with stride ``S``, query ``t`` is the concatenation of
``q[tS+S-1], ..., q[tS]`` and key ``t'`` of ``k[t'S], ..., k[t'S+S-1]``, so their dot product
sums one antidiagonal of the ``S x S`` logit tile; a causal softmax over strided keys follows,
summed per block. That is exactly the compressed attention our scoring kernel fuses, with
``q_pool = k_pool = S`` and features ``S * D`` wide (multiplied in slices). Reversing the order
inside each group of keys instead of queries gives the same dot products, so the queries are a
free view of ``q`` and only the (GQA-smaller) keys are copied.

This is the "same stack" baseline of the performance issue: both selectors then differ only in
what they feed the kernel (composite tokens vs antidiagonal concatenations), not in how well
their kernels are written. The PyTorch definition is
:func:`unisparse.selectors.xattention.antidiagonal_block_scores`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .selection import compressed_block_scores


def antidiagonal_block_scores(
    q: torch.Tensor, k: torch.Tensor, block_size: int, stride: int, scale: float, norm: float = 1.0,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """float32 ``[B, Hq, nb, nb]``, equal to the PyTorch definition (inputs validated by the caller)."""
    b, hq, seq_len, d = q.shape
    hkv = k.shape[1]
    n = -(-seq_len // stride)
    pad = n * stride - seq_len
    if pad:  # zero tokens add nothing to a concatenation's dot products
        q, k = F.pad(q, (0, 0, 0, pad)), F.pad(k, (0, 0, 0, pad))
    q_strided = q.contiguous().view(b, hq, n, stride * d)
    k_reversed = k.reshape(b, hkv, n, stride, d).flip(3).reshape(b, hkv, n, stride * d).contiguous()
    return compressed_block_scores(q_strided, k_reversed, seq_len, block_size, stride, stride,
                                   scale / stride / norm, out=out)
