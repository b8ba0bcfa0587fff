"""The one interface every block selector implements, so that all of them run on one kernel.

A selector looks at a prefill's q and k (``[B, Hq, L, D]`` and ``[B, Hkv, L, D]``) and returns
the bool block mask ``[B, Hq, nb, nb]`` that :func:`unisparse.block_sparse_attention` consumes.
Comparing selectors through the same kernel compares only the quality of their choices.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Selector(Protocol):
    """``selector(q, k, scale=None) -> BoolTensor[B, Hq, nb, nb]`` with ``nb = ceil(L / block_size)``.

    Masks are causal (nothing above the diagonal) and keep the diagonal block.
    """

    name: str
    block_size: int

    def __call__(self, q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor: ...
