"""Oracle: the true block attention mass, then the same Top-P rule as UniSparse.

Not a method anyone can run in production (it costs a full dense attention pass), but the upper
bound for every estimator: at a given ``top_p`` no selector that ranks blocks by an estimate of
their mass can recall more of the true attention with as few blocks. Plot it beside the others.

Mass: for query block ``m``, the exact causal softmax probabilities of its rows summed per key
block and averaged over the rows (:func:`unisparse.reference.true_block_mass`), computed in
float32 (float64 for float64 inputs) one query block at a time, so memory stays
``O(block_size * L)`` per head. Selection: :func:`unisparse.masks.top_p_mask` with the
forced blocks UniSparse uses (``sink_blocks`` first blocks, the diagonal
and ``local_blocks - 1`` blocks before it). Defaults: ``top_p=0.95`` (the paper's operating
point), no sink and only the diagonal forced, so the oracle's choice is purely mass-driven.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..masks import top_p_mask
from ..reference import true_block_mass
from ..validation import check_block_size
from ._common import check_fraction, check_inputs, check_positive_int


@dataclasses.dataclass(frozen=True)
class OracleSelector:
    """Top-P over the exact block attention mass: ``[B, Hq, nb, nb]``."""

    top_p: float = 0.95
    block_size: int = 128
    sink_blocks: int = 0
    local_blocks: int = 1
    name: ClassVar[str] = "oracle"

    def __post_init__(self) -> None:
        check_positive_int("sink_blocks", self.sink_blocks, minimum=0)
        check_positive_int("local_blocks", self.local_blocks, minimum=1)
        check_block_size(self.block_size)
        check_fraction("top_p", self.top_p)

    def block_mass(self, q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """The exact block mass ``[B, Hq, nb, nb]`` (float32; each causal row sums to 1)."""
        scale = check_inputs(q, k, self.block_size, scale)
        return true_block_mass(q, k, self.block_size, scale)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        return top_p_mask(self.block_mass(q, k, scale), self.top_p, sink_blocks=self.sink_blocks,
                          local_blocks=self.local_blocks)
