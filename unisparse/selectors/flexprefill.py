"""FlexPrefill (Lai, Lu, Zheng, Cao, Lin, Jin — ICLR 2025, "FlexPrefill: A Context-Aware Sparse
Attention Mechanism for Efficient Long-Sequence Inference"), as a block selector.

Read from the authors' code, ``flex_prefill/ops/flex_prefill_attention.py`` (ByteDance; read in
the ``kengchiawu/FlexPrefill`` copy; ``microsoft/MInference``'s ``minference/modules/flexprefill.py``
carries the same logic): ``get_active_blocks`` and ``flex_prefill_attention``. What it does, per
(batch, query head), and what we follow:

1. **Probe.** The last ``block_size`` queries (clamped to ``L``) attend every key with the true
   causal softmax (float32). ``vertical`` = the probe's mean probability per key column,
   ``slash`` = its mean probability per diagonal offset; both sum to 1.
2. **Budgets.** The fewest columns (diagonals) whose sorted probabilities reach ``gamma``
   (their ``score_cover_topk``: ``count(cumsum <= gamma) + 1``), divided by the block size,
   plus one, gives a number of column blocks (slash blocks); clamped to
   ``[ceil(min_budget / block_size), ceil(max_budget / block_size)]`` and to ``nb``.
3. **Pattern choice.** Estimated distribution: ``softmax(mean(probe queries) . avg_pool(k
   per block) * scale)`` over key blocks. True one: ``vertical`` summed per key block. Their
   square-root Jensen-Shannon divergence (natural log) ``< tau`` marks the head
   *query-aware*; otherwise it is *vertical-slash*.
4. **Vertical-slash blocks.** ``vertical`` and ``slash`` summed per block (a slash block ``s``
   gathers offsets ``s*bs .. s*bs+bs-1``); the first column block and the diagonal slash block
   are forced (set to inf), then the top budgeted column blocks and slash blocks are kept (the
   forced blocks count toward the budget: a head whose vertical mass sits in one 128-column
   block gets a budget of 1 and keeps only the forced first column block). A
   column block ``j`` keeps ``(i, j)`` for all ``i >= j``; a slash block ``s`` keeps ``(i, i-s)``
   for all ``i >= s``. Query-aware heads still get these, at the minimum budget.
5. **Query-aware blocks** (those heads only). ``softmax(avg_pool(q) . avg_pool(k)^T * scale)``
   over the block grid, block-causal (diagonal included); flattened over the whole grid, sorted,
   and the blocks whose inclusive cumulative sum stays ``<= gamma * nb`` are kept (their
   ``score_cover_idx(attn, gamma * num_blocks)``: coverage is global over the head's grid,
   not per query block). Union with step 4.
6. **Short inputs**: ``L <= max(2 * block_size, ceil(min_budget / block_size) * block_size)``
   runs dense attention (every causal block), as their ``flex_prefill_attention`` does.

Defaults: ``gamma=0.9, tau=0.1, min_budget=1024`` tokens, ``block_size=128``, no max budget:
the values in their example and paper for Llama-style models (gamma 0.9-0.95, min budget
512-1024 in their experiments).

Where we simplified or differ: every product runs in float32 (theirs runs the probe's q.k in the
input dtype, bf16, and only the softmax in float32); slash offsets are pooled by offset
(``s = d // block_size``); theirs pools the reversed diagonal index from the end of the sequence, which is
the same when ``L`` is a multiple of ``block_size`` and shifted by ``L mod block_size``
otherwise. Budgets divide by ``block_size`` where their code divides by a hard-coded 128 (the
same at the default). JS terms with a zero probability count as 0 (theirs would give NaN and
fall back to vertical-slash). GQA by index arithmetic (their einsum views match it: query head
``h`` reads KV head ``h // G``); batch > 1 is supported (theirs asserts batch 1); ties in sorts
go to the lower index.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch

from ..reference import compute_dtype, pool_sequence
from ..validation import check_block_size, num_blocks
from ._common import (
    block_pool,
    causal_block_mask,
    check_fraction,
    check_inputs,
    check_positive_int,
    dense_block_mask,
    grouped_scores,
    keep_top_counts,
    probe_vertical_slash,
)


def cover_count(probs: torch.Tensor, share: float) -> torch.Tensor:
    """Their ``score_cover_topk``: ``count(sorted cumsum <= share) + 1`` along the last dim."""
    cumsum = torch.sort(probs, dim=-1, descending=True).values.cumsum(-1)
    return (cumsum <= share).sum(-1) + 1


def sqrt_js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Square root of the Jensen-Shannon divergence (natural log) along the last dim."""
    m = (p + q) / 2
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1)
    return (0.5 * kl_pm + 0.5 * kl_qm).clamp_min(0.0).sqrt()


@dataclasses.dataclass
class FlexPrefillEstimate:
    """What one call decided, for inspection and tests."""

    mask: torch.Tensor  # bool [B, Hq, nb, nb]
    query_aware: torch.Tensor  # bool [B, Hq]: the head took the query-aware pattern
    js_distance: torch.Tensor  # [B, Hq]
    vertical_blocks: torch.Tensor  # int [B, Hq]: column blocks kept
    slash_blocks: torch.Tensor  # int [B, Hq]: slash blocks kept
    dense: bool = False  # short input: every causal block


@dataclasses.dataclass(frozen=True)
class FlexPrefillSelector:
    """Per head, query-aware or vertical-slash blocks covering ``gamma`` of the probe's mass."""

    gamma: float = 0.9
    tau: float = 0.1
    min_budget: int = 1024
    max_budget: int | None = None
    block_size: int = 128
    name: ClassVar[str] = "flexprefill"

    def __post_init__(self) -> None:
        check_block_size(self.block_size)
        check_fraction("gamma", self.gamma)
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)) or not 0.0 <= self.tau:
            raise ValueError(f"tau must be a number >= 0, got {self.tau!r}")
        check_positive_int("min_budget", self.min_budget)
        if self.max_budget is not None:
            check_positive_int("max_budget", self.max_budget)
            if self.max_budget < self.min_budget:
                raise ValueError(f"max_budget={self.max_budget} is below min_budget={self.min_budget}")

    def is_dense_length(self, seq_len: int) -> bool:
        bs = self.block_size
        return seq_len <= max(2 * bs, math.ceil(self.min_budget / bs) * bs)

    def estimate(self, q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> FlexPrefillEstimate:
        scale = check_inputs(q, k, self.block_size, scale)
        b, hq, seq_len, _ = q.shape
        bs = self.block_size
        nb = num_blocks(seq_len, bs)
        device = q.device
        if self.is_dense_length(seq_len):
            full = torch.full((b, hq), nb, dtype=torch.long, device=device)
            return FlexPrefillEstimate(dense_block_mask(q, bs), torch.zeros(b, hq, dtype=torch.bool, device=device),
                                       torch.zeros(b, hq, device=device), full, full, dense=True)
        acc = compute_dtype(q.dtype)
        min_blocks = math.ceil(self.min_budget / bs)
        max_blocks = nb if self.max_budget is None else min(nb, math.ceil(self.max_budget / bs))

        # 1. probe: mean probability per column and per diagonal offset
        vertical, slash, n = probe_vertical_slash(q, k, bs, scale)
        vertical, slash = vertical / n, slash / n

        # 2. budgets, in blocks
        n_vertical = (cover_count(vertical, self.gamma) // bs + 1).clamp(min_blocks, None).clamp(None, max_blocks)
        n_slash = (cover_count(slash, self.gamma) // bs + 1).clamp(min_blocks, None).clamp(None, max_blocks)

        # 3. pattern choice: pooled estimate vs the probe's true block distribution
        vertical_blocks = block_pool(vertical, bs)  # [B, Hq, nb]
        slash_blocks = block_pool(slash, bs)  # offset blocks 0 .. nb-1
        k_avg = pool_sequence(k, bs).to(acc)  # [B, Hkv, nb, D], true mean of a short last block
        q_probe_avg = q[:, :, seq_len - n :].to(acc).mean(2, keepdim=True)  # [B, Hq, 1, D]
        estimate = torch.softmax(grouped_scores(q_probe_avg, k_avg)[:, :, 0] * scale, dim=-1)
        js = sqrt_js_divergence(estimate, vertical_blocks)
        query_aware = js < self.tau
        n_vertical = torch.where(query_aware, min(min_blocks, max_blocks), n_vertical)
        n_slash = torch.where(query_aware, min(min_blocks, max_blocks), n_slash)

        # 4. vertical-slash blocks (first column block and diagonal forced)
        vertical_blocks[..., 0] = float("inf")
        slash_blocks[..., 0] = float("inf")
        keep_cols = keep_top_counts(vertical_blocks, n_vertical)  # [B, Hq, nb]
        keep_offsets = keep_top_counts(slash_blocks, n_slash)
        causal = causal_block_mask(nb, device)
        rows = torch.arange(nb, device=device)
        block_offset = (rows[:, None] - rows[None, :]).clamp(min=0)  # i - j
        on_slash = keep_offsets.gather(-1, block_offset.reshape(1, 1, -1).expand(b, hq, -1)).view(b, hq, nb, nb)
        mask = (keep_cols[:, :, None, :] | on_slash) & causal

        # 5. query-aware blocks: global gamma coverage of the pooled block attention
        if bool(query_aware.any()):
            q_avg = pool_sequence(q, bs).to(acc)  # [B, Hq, nb, D]
            logits = (grouped_scores(q_avg, k_avg) * scale).masked_fill(~causal, float("-inf"))
            attn = torch.softmax(logits, dim=-1).reshape(b, hq, nb * nb)
            sorted_attn, order = torch.sort(attn, dim=-1, descending=True, stable=True)
            keep_sorted = sorted_attn.cumsum(-1) <= self.gamma * nb
            qa_mask = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted).view(b, hq, nb, nb)
            mask |= qa_mask & causal & query_aware[:, :, None, None]

        mask |= torch.eye(nb, dtype=torch.bool, device=device)
        return FlexPrefillEstimate(mask, query_aware, js, n_vertical, n_slash)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        return self.estimate(q, k, scale).mask
