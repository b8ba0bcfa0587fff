"""MInference 1.0 (Jiang et al. 2024, "MInference 1.0: Accelerating Pre-filling for Long-Context
LLMs via Dynamic Sparse Attention"), its vertical-slash pattern, converted to blocks.

Read from the authors' code, ``microsoft/MInference``: ``minference/modules/minference_forward.py``
(``vertical_and_slash_kernel`` inside ``gather_last_q_vertical_slash_topk_v4``, and the default
head pattern ``("vertical_and_slash", 1000, 6096)`` used when no searched config is given).
What it does, and what we follow:

1. Budgets: ``vertical_size = min(L, max(vertical_size, 30))``, ``slash_size = min(L,
   max(slash_size, 50))``. Defaults 1000 and 6096, their default head config.
2. Probe: the last ``last_q = min(64, L)`` queries attend every key with the true causal
   softmax (scale ``1/sqrt(D)``, or the caller's ``scale``), in float32.
3. Vertical score of a key column: the probe's probabilities summed over its rows; the first
   ``sink_columns = 30`` columns are forced (their ``vertical[..., :30] = inf``); keep the top
   ``vertical_size`` columns.
4. Slash score of an offset ``d = query - key``: the probabilities summed along that diagonal;
   the nearest ``local_diagonals = 100`` offsets (0..99) are forced (their
   ``slash[..., -100:] = inf``); keep the top ``slash_size`` offsets.
5. Their kernel then attends exactly those columns and diagonals. Our kernel is block-sparse, so
   we convert, exactly at token level: block ``(i, j)`` is kept when one of its causal token
   pairs lies on a kept column or a kept diagonal. A kept column in key block ``j`` turns on
   ``(i, j)`` for every ``i >= j``; a kept offset ``d`` turns on the blocks whose range of
   ``query - key`` contains it (one or two diagonal bands of blocks). The diagonal block is
   always kept. This keeps a superset of their token pattern, so recall is at least theirs and
   density is what block granularity costs.

Note that at the default budgets a sequence of at most 6096 tokens keeps every diagonal, hence
every causal block: MInference's default head config only sparsifies long inputs. Their
``minference_ratio`` knob scales both budgets; here pass smaller ``vertical_size``/``slash_size``.

Where we differ: the probe's q.k runs in float32 (theirs in the input dtype, then a float32
softmax); GQA by index arithmetic (they repeat K/V); ties in top-k go to the lower index
(``torch.topk`` leaves them unspecified); no per-head searched patterns (the offline search is
model-specific; the default config is what runs without one); no ``block_sparse`` or
``stream_llm`` head types.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..validation import check_block_size, num_blocks
from ._common import causal_block_mask, check_inputs, check_positive_int, keep_top_counts, probe_vertical_slash


def vertical_slash_to_blocks(
    columns: torch.Tensor, offsets: torch.Tensor, seq_len: int, block_size: int
) -> torch.Tensor:
    """Token-level vertical lines and slashes -> the blocks they touch, ``[B, H, nb, nb]``.

    ``columns`` and ``offsets`` are bool ``[B, H, L]``: key column ``c`` kept, diagonal offset
    ``d = query - key`` kept. A block is kept when any causal token pair in it lies on a kept
    column or diagonal. Exact, in ``O(L + nb^2)`` per head.
    """
    b, h, _ = columns.shape
    device = columns.device
    nb = num_blocks(seq_len, block_size)
    causal = causal_block_mask(nb, device)
    # vertical: a kept column c lies in key block c // bs and is seen by every query block >= it
    col_blocks = torch.nn.functional.pad(columns, (0, nb * block_size - seq_len)).view(b, h, nb, block_size).any(-1)
    mask = col_blocks[:, :, None, :] & causal
    # slash: block (i, j) spans offsets [max(0, q0 - k1), q1 - k0] for q in [q0, q1], k in [k0, k1]
    starts = torch.arange(nb, device=device) * block_size
    ends = torch.clamp(starts + block_size, max=seq_len) - 1
    lo = (starts[:, None] - ends[None, :]).clamp(min=0, max=seq_len - 1)
    hi = (ends[:, None] - starts[None, :]).clamp(min=0, max=seq_len - 1)
    counts = torch.nn.functional.pad(offsets.to(torch.int32).cumsum(-1), (1, 0))  # counts[x] = kept in [0, x)
    flat = lambda idx: idx.reshape(1, 1, nb * nb).expand(b, h, nb * nb)  # noqa: E731
    hits = counts.gather(-1, flat(hi + 1)) - counts.gather(-1, flat(lo))
    mask |= (hits > 0).view(b, h, nb, nb) & causal
    return mask | torch.eye(nb, dtype=torch.bool, device=device)


@dataclasses.dataclass(frozen=True)
class MInferenceSelector:
    """Vertical-slash estimation from the last 64 queries, converted to blocks."""

    vertical_size: int = 1000
    slash_size: int = 6096
    block_size: int = 128
    last_q: int = 64
    sink_columns: int = 30
    local_diagonals: int = 100
    name: ClassVar[str] = "minference"

    def __post_init__(self) -> None:
        check_block_size(self.block_size)
        for field in ("vertical_size", "slash_size", "last_q"):
            check_positive_int(field, getattr(self, field))
        for field in ("sink_columns", "local_diagonals"):
            check_positive_int(field, getattr(self, field), minimum=0)

    def token_pattern(self, q: torch.Tensor, k: torch.Tensor, scale: float | None = None):
        """The kept key columns and diagonal offsets, bool ``[B, Hq, L]`` each (their pattern)."""
        scale = check_inputs(q, k, self.block_size, scale)
        seq_len = q.shape[2]
        vertical, slash, _ = probe_vertical_slash(q, k, self.last_q, scale)
        n_vertical = min(seq_len, max(self.vertical_size, 30))
        n_slash = min(seq_len, max(self.slash_size, 50))
        vertical[..., : self.sink_columns] = float("inf")
        slash[..., : self.local_diagonals] = float("inf")
        return keep_top_counts(vertical, n_vertical), keep_top_counts(slash, n_slash)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        columns, offsets = self.token_pattern(q, k, scale)
        return vertical_slash_to_blocks(columns, offsets, q.shape[2], self.block_size)
