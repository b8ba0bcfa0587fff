"""Block selectors behind one interface (:class:`Selector`), all feeding our one kernel.

Each returns the bool block mask ``[B, Hq, nb, nb]`` (causal, diagonal kept) that
:func:`unisparse.block_sparse_attention` consumes, so that selection quality is compared at equal
sparsity on the same kernel:

* ``unisparse``: this project's method (composite tokens, Top-P).
* ``xattention``: antidiagonal scoring (Xu et al. 2025).
* ``flexprefill``: query-aware or vertical-slash per head (Lai et al., ICLR 2025).
* ``minference``: vertical-slash from the last 64 queries (Jiang et al. 2024).
* ``oracle``: Top-P over the exact block attention mass (the upper bound).
* ``dense``: every causal block (the reference).

``make_selector(name, **params)`` builds one by name; see each module for its parameters.
"""

from __future__ import annotations

from .base import Selector
from .dense import DenseSelector
from .flexprefill import FlexPrefillSelector
from .minference import MInferenceSelector
from .oracle import OracleSelector
from .plot import plot_block_mask, save_mask_grid
from .unisparse import UniSparseSelector
from .xattention import XAttentionSelector

SELECTOR_NAMES = ("unisparse", "xattention", "flexprefill", "minference", "oracle", "dense")

_CLASSES = {
    "xattention": XAttentionSelector,
    "flexprefill": FlexPrefillSelector,
    "minference": MInferenceSelector,
    "oracle": OracleSelector,
    "dense": DenseSelector,
}


def make_selector(name: str, **params) -> Selector:
    """A selector by name with its parameters.

    ``unisparse`` takes ``config=`` (a :class:`unisparse.UniSparseConfig`) and ``backend=``, or
    ``UniSparseConfig`` fields directly (``make_selector("unisparse", top_p=0.9)``), which then
    replace those of ``config`` (or of the defaults).
    """
    if name == "unisparse":
        from ..config import UniSparseConfig

        config = params.pop("config", None)
        backend = params.pop("backend", "auto")
        if params:
            base = config if config is not None else UniSparseConfig()
            if not isinstance(base, UniSparseConfig):
                raise TypeError(f"config must be a UniSparseConfig, got {type(base).__name__}")
            unknown = set(params) - set(UniSparseConfig.__dataclass_fields__)
            if unknown:
                raise TypeError(f"unknown UniSparse parameters {sorted(unknown)}")
            config = base.replace(**params)
        return UniSparseSelector(config, backend=backend)
    if name not in _CLASSES:
        raise ValueError(f"unknown selector {name!r}; choose one of {', '.join(SELECTOR_NAMES)}")
    return _CLASSES[name](**params)


__all__ = [
    "Selector",
    "SELECTOR_NAMES",
    "make_selector",
    "UniSparseSelector",
    "XAttentionSelector",
    "FlexPrefillSelector",
    "MInferenceSelector",
    "OracleSelector",
    "DenseSelector",
    "plot_block_mask",
    "save_mask_grid",
]
