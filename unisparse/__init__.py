"""UniSparse: training-free block-sparse prefill attention from composite tokens.

Pool q and k into composite tokens, attend in that compressed space, sum the probabilities per
block, keep the Top-P blocks of each query block, and run exact attention over just those.
"""

from .api import (block_density, block_sparse_attention, dense_attention, fallback_density, select_blocks,
                  sparse_attention)
from .config import UniSparseConfig
from .integrations.transformers import disable, enable, is_enabled, routing
from .recording import record

__all__ = [
    "UniSparseConfig",
    "select_blocks",
    "block_sparse_attention",
    "sparse_attention",
    "dense_attention",
    "block_density",
    "fallback_density",
    "enable",
    "disable",
    "is_enabled",
    "routing",
    "record",
]
__version__ = "0.1.0"
