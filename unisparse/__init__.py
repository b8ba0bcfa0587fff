"""UniSparse: training-free block-sparse prefill attention from composite tokens.

Pool q and k into composite tokens, attend in that compressed space, sum the probabilities per
block, keep the Top-P blocks of each query block, and run exact attention over just those.
"""

from .api import (block_density, block_sparse_attention, dense_attention, fallback_density,
                  ordered_block_sparse_attention, select_blocks, select_blocks_in_layout, sparse_attention)
from .config import UniSparseConfig
from .layout import VideoLayout, VideoSpan, layout_from_inputs, video_layout
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
    "VideoLayout",
    "VideoSpan",
    "layout_from_inputs",
    "video_layout",
    "select_blocks_in_layout",
    "ordered_block_sparse_attention",
]
__version__ = "0.1.0"
