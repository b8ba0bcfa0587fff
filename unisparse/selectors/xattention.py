"""XAttention (Xu, Xiao, Huang, Guo, Han 2025, "XAttention: Block Sparse Attention with
Antidiagonal Scoring"), as a block selector for our kernel.

Read from the authors' code, ``mit-han-lab/x-attention``: ``xattn/src/Xattention.py``
(``xattn_estimate``, its PyTorch path, ``select_mode="inverse"``) and ``xattn/src/utils.py``
(``find_blocks_chunked``). What it does, and what we follow:

1. **Antidiagonal scores.** With stride ``S``, key ``t'`` of the strided sequence is the
   concatenation ``k[t'S], k[t'S+1], ..., k[t'S+S-1]`` and query ``t`` the concatenation of the
   same group in reversed order ``q[tS+S-1], ..., q[tS]``, so their dot product is
   ``sum_i q[tS+S-1-i] . k[t'S+i]``: the sum along one antidiagonal of the ``S x S`` tile of
   logits. Followed exactly (their ``reshaped_query``/``reshaped_key``).
2. **Softmax over the strided key row** with logit scale ``1/sqrt(D)/S/norm`` (their
   ``attn_weights_slice / math.sqrt(head_dim) / stride / norm``; ``norm=1`` by default), causal in
   strided space (strided key ``t' <= t``). A caller's ``scale`` replaces ``1/sqrt(D)``.
3. **Block scores**: the strided probabilities summed per ``block_size/S x block_size/S`` tile.
4. **Selection** (``find_blocks_chunked``, causal prefill): the first key block and the diagonal
   block are always kept and their mass counts first; the other blocks follow by descending
   score while the mass kept before them is below ``threshold`` times the row total. That is
   exactly :func:`unisparse.masks.top_p_mask` with one sink block and the diagonal forced,
   which we call.

Padding, as theirs: the sequence is zero-padded to whole blocks; strided keys made only of
padding are masked, strided queries made only of padding get zero probability; a partly padded
strided token keeps its real tokens (the zeros add nothing to its dot products).

Defaults: ``stride=16, threshold=0.9``, the setting the authors report for Qwen2-VL video
(Video-MME); ``stride=8`` is their other common choice (RULER, HunyuanVideo), and ``threshold``
0.95 their other value. ``block_size=128`` (their kernel asserts it).

Where we differ: everything is computed in float32 (they round the softmax to the input dtype,
bf16, before summing tiles); queries are processed in chunks of query blocks sized by memory,
not their fixed 16K-token ``chunk_size`` (the result does not depend on it); GQA is handled by
index arithmetic (they repeat K per query head); ties in the sort go to the lower block index.
Their Triton path (``flat_group_gemm_fuse_reshape`` + ``softmax_fuse_block_sum``) computes the
same quantities fused; so does ours with ``backend="triton"`` (the default on CUDA):
:mod:`unisparse.kernels.antidiagonal` runs them through UniSparse's own fused scoring kernel, so
that the two selectors are compared on one stack. ``backend="torch"`` is the definition below.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..masks import top_p_mask
from ..reference import compute_dtype
from ..validation import check_block_size, check_triton_inputs, num_blocks, resolve_backend
from ._common import check_fraction, check_inputs, check_positive_int

MAX_ELEMENTS = 1 << 25  # strided logits per step (about 128 MB in float32)


def antidiagonal_block_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    block_size: int,
    stride: int,
    scale: float,
    norm: float = 1.0,
    max_elements: int = MAX_ELEMENTS,
) -> torch.Tensor:
    """XAttention's block scores: float32 ``[B, Hq, nb, nb]`` (zero above the diagonal).

    Row ``m`` sums to the number of real strided queries in query block ``m``.
    """
    b, hq, seq_len, d = q.shape
    hkv = k.shape[1]
    group = hq // hkv
    acc = compute_dtype(q.dtype)
    nb = num_blocks(seq_len, block_size)
    padded_len = nb * block_size
    n_strided = padded_len // stride
    n_real = -(-seq_len // stride)  # strided tokens holding at least one real token
    per_block = block_size // stride
    qp = F.pad(q.to(acc), (0, 0, 0, padded_len - seq_len))
    kp = F.pad(k.to(acc), (0, 0, 0, padded_len - seq_len))
    # query t: q[tS+S-1], ..., q[tS] concatenated; key t': k[t'S], ..., k[t'S+S-1] concatenated
    q_strided = qp.view(b, hq, n_strided, stride, d).flip(3).reshape(b, hq, n_strided, stride * d)
    k_strided_t = kp.view(b, hkv, n_strided, stride * d).transpose(-1, -2)  # [B, Hkv, S*D, N]
    logit_scale = scale / stride / norm
    key_pos = torch.arange(n_strided, device=q.device)
    out = torch.zeros(b, hq, nb, nb, dtype=acc, device=q.device)
    chunk = max(1, max_elements // max(1, b * hq * per_block * n_strided))
    for first in range(0, nb, chunk):
        last = min(first + chunk, nb)
        rows = slice(first * per_block, last * per_block)
        n_rows = rows.stop - rows.start
        q_rows = q_strided[:, :, rows].reshape(b, hkv, group * n_rows, stride * d)
        logits = (q_rows @ k_strided_t).view(b, hq, n_rows, n_strided) * logit_scale
        query_pos = torch.arange(rows.start, rows.stop, device=q.device)
        visible = (key_pos[None, :] <= query_pos[:, None]) & (key_pos[None, :] < n_real)
        probs = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)
        probs = probs * (query_pos < n_real).to(acc)[:, None]
        out[:, :, first:last] = probs.view(b, hq, last - first, per_block, nb, per_block).sum((3, 5))
    return out.float()


@dataclasses.dataclass(frozen=True)
class XAttentionSelector:
    """Antidiagonal block scoring with threshold selection: ``[B, Hq, nb, nb]``."""

    block_size: int = 128
    stride: int = 16
    threshold: float = 0.9
    norm: float = 1.0
    backend: str = "auto"
    name: ClassVar[str] = "xattention"

    def __post_init__(self) -> None:
        check_block_size(self.block_size)
        check_positive_int("stride", self.stride)
        if self.block_size % self.stride or self.stride > self.block_size:
            raise ValueError(f"stride={self.stride} must divide block_size={self.block_size}")
        check_fraction("threshold", self.threshold)
        if isinstance(self.norm, bool) or not isinstance(self.norm, (int, float)) or not self.norm > 0:
            raise ValueError(f"norm must be a positive number, got {self.norm!r}")

    def block_scores(self, q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """The antidiagonal block scores ``[B, Hq, nb, nb]`` that selection ranks."""
        scale = check_inputs(q, k, self.block_size, scale)
        if resolve_backend(self.backend, q.device) == "triton":
            check_triton_inputs(q)
            from ..kernels.antidiagonal import antidiagonal_block_scores as fused

            return fused(q, k, self.block_size, self.stride, scale, self.norm)
        return antidiagonal_block_scores(q, k, self.block_size, self.stride, scale, self.norm)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        # their find_blocks_chunked == Top-P with the first block and the diagonal forced
        return top_p_mask(self.block_scores(q, k, scale), self.threshold, sink_blocks=1, local_blocks=1)
