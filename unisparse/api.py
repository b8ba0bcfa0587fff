"""Public entry points: validate, pick a backend, dispatch.

Layout is the one ``transformers`` uses: q ``[B, Hq, L, D]``, k and v ``[B, Hkv, L, D]`` with
``Hq`` a multiple of ``Hkv``. ``backend="auto"`` runs the Triton kernels on CUDA tensors and the
PyTorch reference elsewhere; the environment variable ``UNISPARSE_BACKEND`` replaces "auto".
The Triton modules are imported on first use, so that ``TRITON_INTERPRET=1`` set before that
runs them on CPU tensors.
"""

from __future__ import annotations

import torch

from . import reference
from .config import UniSparseConfig
from .masks import block_density, causal_block_mask
from .validation import (
    check_block_mask,
    check_block_size,
    check_config,
    check_head_pool,
    check_qk,
    check_qkv,
    check_scale,
    check_triton_inputs,
    resolve_backend,
)

__all__ = ["select_blocks", "block_sparse_attention", "dense_attention", "sparse_attention", "block_density"]


def _backend_for(q: torch.Tensor, backend: str) -> str:
    chosen = resolve_backend(backend, q.device)
    if chosen == "triton":
        check_triton_inputs(q)
    return chosen


def select_blocks(
    q: torch.Tensor,
    k: torch.Tensor,
    config: UniSparseConfig | None = None,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """UniSparse block selection: bool ``[B, Hq, nb, nb]``, ``nb = ceil(L / block_size)``.

    ``mask[b, h, i, j]`` says whether query block ``i`` of head ``h`` attends key block ``j``.
    Only causal blocks (``j <= i``) are ever set; the diagonal always is.
    """
    config = check_config(config)
    scale = check_scale(scale)
    check_qk(q, k)
    check_head_pool(q.shape[1], k.shape[1], config.head_pool)
    if q.shape[2] < config.block_size:
        raise ValueError(
            f"seq_len={q.shape[2]} is shorter than one block (block_size={config.block_size}): "
            "there is nothing to select; use dense attention (sparse_attention falls back by itself)"
        )
    if _backend_for(q, backend) == "triton":
        from .kernels import selection

        return selection.select_blocks(q, k, config, scale)
    return reference.select_blocks(q, k, config, scale)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    *,
    block_size: int = 128,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Exact causal attention over the kept blocks only: ``[B, Hq, L, D]`` in q's dtype.

    ``block_mask`` is bool ``[B or 1, Hq or Hkv or 1, nb, nb]``; entries above the diagonal are
    ignored. A query whose row keeps no visible block (no diagonal) gets zeros.
    """
    scale = check_scale(scale)
    check_qkv(q, k, v)
    check_block_size(block_size)
    check_block_mask(block_mask, q, k, block_size)
    if _backend_for(q, backend) == "triton":
        from .kernels import block_sparse

        return block_sparse.block_sparse_attention(q, k, v, block_mask, block_size, scale)
    return reference.block_sparse_attention(q, k, v, block_mask, block_size, scale)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Causal dense attention through PyTorch's SDPA (the fallback for short sequences)."""
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    config: UniSparseConfig | None = None,
    *,
    scale: float | None = None,
    return_mask: bool = False,
    backend: str = "auto",
):
    """Select blocks with UniSparse, then attend over them: ``[B, Hq, L, D]``.

    Sequences shorter than ``max(config.block_size, config.min_seq_len)`` run dense attention
    (the mask returned then keeps every causal block). With ``return_mask=True`` returns
    ``(out, block_mask)``.
    """
    config = check_config(config)
    scale = check_scale(scale)
    check_qkv(q, k, v)
    check_head_pool(q.shape[1], k.shape[1], config.head_pool)
    seq_len = q.shape[2]
    chosen = _backend_for(q, backend)
    if seq_len < max(config.block_size, config.min_seq_len):
        out = dense_attention(q, k, v, scale)
        if not return_mask:
            return out
        nb = -(-seq_len // config.block_size)
        full = causal_block_mask(nb, q.device)
        return out, full.expand(q.shape[0], q.shape[1], nb, nb).clone()
    mask = select_blocks(q, k, config, scale=scale, backend=chosen)
    out = block_sparse_attention(q, k, v, mask, block_size=config.block_size, scale=scale, backend=chosen)
    return (out, mask) if return_mask else out
