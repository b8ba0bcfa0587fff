"""Dense: every causal block. The reference every sparse selector is measured against.

Run through the block-sparse kernel it gives the kernel's efficiency ceiling (density 1.0);
through the fidelity tools it gives the numbers a selector should reproduce.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ._common import check_inputs, dense_block_mask
from ..validation import check_block_size


@dataclasses.dataclass(frozen=True)
class DenseSelector:
    """All blocks on or below the diagonal: ``[B, Hq, nb, nb]``."""

    block_size: int = 128
    name: ClassVar[str] = "dense"

    def __post_init__(self) -> None:
        check_block_size(self.block_size)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        check_inputs(q, k, self.block_size, scale)
        return dense_block_mask(q, self.block_size)
