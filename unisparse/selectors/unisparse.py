"""UniSparse as a selector: composite tokens, compressed attention, Top-P blocks.

A thin wrapper over :func:`unisparse.api.select_blocks` (Triton on CUDA, the PyTorch reference
elsewhere), so that the method runs behind the same interface as its peers. Parameters are a
:class:`unisparse.UniSparseConfig` (defaults from the paper: pool factor 8 for q and k, 128
blocks, Top-P 0.95, the first block and the diagonal forced). One difference from
``select_blocks``: a sequence shorter than one block gets its single (dense) block instead of
an error, as every other selector does.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..api import select_blocks
from ..config import UniSparseConfig
from ..validation import check_backend, check_config
from ._common import check_inputs, dense_block_mask


class UniSparseSelector:
    """``UniSparseSelector(config=None, backend="auto")(q, k, scale=None) -> [B, Hq, nb, nb]``."""

    name: ClassVar[str] = "unisparse"

    def __init__(self, config: UniSparseConfig | None = None, backend: str = "auto") -> None:
        self.config = check_config(config)
        self.backend = check_backend(backend)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def __call__(self, q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        if q.shape[-2] < self.config.block_size:  # one partial block: nothing to select
            check_inputs(q, k, self.block_size, scale)
            return dense_block_mask(q, self.block_size)
        return select_blocks(q, k, self.config, scale=scale, backend=self.backend)

    def __repr__(self) -> str:
        return f"UniSparseSelector({self.config!r}, backend={self.backend!r})"
