"""Public entry points: validate, pick a backend, dispatch.

Layout is the one ``transformers`` uses: q ``[B, Hq, L, D]``, k and v ``[B, Hkv, L, D]`` with
``Hq`` a multiple of ``Hkv``. ``backend="auto"`` runs the Triton kernels on CUDA tensors and the
PyTorch reference elsewhere; the environment variable ``UNISPARSE_BACKEND`` replaces "auto".
The Triton modules are imported on first use, so that ``TRITON_INTERPRET=1`` set before that
runs them on CPU tensors.
"""

from __future__ import annotations

import torch

from . import reference, reordered
from .config import UniSparseConfig
from .layout import VideoLayout, token_order, token_orders
from .masks import block_density, causal_block_mask
from .reordered import Selection
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

__all__ = ["select_blocks", "block_sparse_attention", "dense_attention", "sparse_attention", "block_density",
           "fallback_density", "select_blocks_in_layout", "ordered_block_sparse_attention"]


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


def select_blocks_in_layout(
    q: torch.Tensor,
    k: torch.Tensor,
    layout: VideoLayout | None,
    config: UniSparseConfig | None = None,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> Selection:
    """Video-aware UniSparse selection: per KV head, the token order (the prompt's own ``"frame"``
    order, or ``"spatial"``: each video span spatial-position-major) whose Top-P keeps fewer blocks.

    Both orders are first scored on every ``config.order_probe``-th query block, by the compressed
    scoring over the tokens gathered into the order, with visibility by original positions (the
    fused Triton scoring kernel on CUDA, :func:`unisparse.reordered.block_scores` elsewhere); each
    KV head is then scored in full in the order it chose only (:func:`unisparse.reordered.probe_and_choose`).
    On the Triton backend the probe of both orders is one launch for one prompt and the full scoring
    one launch for every head in its own order, read on the device, so nothing waits for the host
    (:func:`unisparse.kernels.selection.probe_masks`, :func:`~unisparse.kernels.selection.head_order_mask`).
    Without a layout that reorders anything, every head keeps the frame order and nothing more is scored. Returns a
    :class:`unisparse.reordered.Selection` (``mask``: each head's blocks in its own order;
    ``choice``: the order of each KV head).
    """
    config = check_config(config)
    scale = check_scale(scale)
    check_qk(q, k)
    check_head_pool(q.shape[1], k.shape[1], config.head_pool)
    seq_len = q.shape[2]
    if layout is not None:
        layout.check(seq_len)

    def frame_select(qs, ks, top_p=None):  # top_p: a probe's calibrated thresholds
        if top_p is None:
            return select_blocks(qs, ks, config, scale=scale, backend=backend)
        if _backend_for(qs, backend) == "triton":
            from .kernels import selection

            return selection.select_blocks(qs, ks, config, scale, top_p=top_p)
        return reference.select_blocks(qs, ks, config, scale, top_p=top_p)

    if layout is None or not layout.reorders:
        orders = token_order(seq_len, None, "frame", q.device)[None]
        return reordered.choose([frame_select(q, k)], orders, ("frame",), k.shape[1])
    if config.variance_correction > 0:
        raise ValueError("video-aware selection does not take variance_correction > 0; use layout=None")
    orders = token_orders(seq_len, layout, q.device)
    scores = rule = chosen = probe = exact_mass = None
    if _backend_for(q, backend) == "triton":
        from .kernels.selection import exact_row_mass as exact_mass, head_order_mask, ordered_block_scores as scores, probe_masks
        from .kernels.top_p import top_p_mask as rule

        if (q.shape[1] // k.shape[1]) % config.head_pool == 0:
            def chosen(qs, ks, choice, top_p):
                return head_order_mask(qs, ks, config, orders, choice, scale, top_p=top_p)

        def probe(qs, ks, rows):
            return probe_masks(qs, ks, config, orders, rows, scale, with_top_p=True)
    return reordered.probe_and_choose(q, k, config, orders, frame_select, scale, scores=scores, rule=rule,
                                      chosen_select=chosen, probe_select=probe, exact_mass=exact_mass)


def ordered_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    selection: Selection,
    *,
    block_size: int = 128,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Exact attention over the kept blocks of a :func:`select_blocks_in_layout` selection, each head
    in its order, visibility by original positions: ``[B, Hq, L, D]`` in the prompt's order.

    When every head kept the frame order this is :func:`block_sparse_attention`; otherwise the
    reordered kernel (:mod:`unisparse.kernels.block_sparse_ordered`) or its reference runs.
    """
    scale = check_scale(scale)
    check_qkv(q, k, v)
    check_block_size(block_size)
    nb = -(-q.shape[2] // block_size)
    if selection.orders.shape[1] != q.shape[2] or selection.mask.shape[-1] != nb:
        raise ValueError(f"the selection is for {selection.orders.shape[1]} tokens in blocks of "
                         f"{selection.orders.shape[1] // max(1, selection.mask.shape[-1])}+; q has {q.shape[2]}")
    if not selection.reorders:
        return block_sparse_attention(q, k, v, selection.mask, block_size=block_size, scale=scale, backend=backend)
    check_block_mask(selection.mask, q, k, block_size)
    if selection.mask.shape[:2] != q.shape[:2]:
        raise ValueError(f"an ordered selection needs a mask per batch row and query head {tuple(q.shape[:2])}, "
                         f"got {tuple(selection.mask.shape[:2])}")
    if _backend_for(q, backend) == "triton":
        return _ordered_on_triton(q, k, v, selection, block_size, scale)
    return reordered.attention(q, k, v, selection, block_size, scale)


def _ordered_on_triton(q, k, v, selection: Selection, block_size: int, scale) -> torch.Tensor:
    """Heads still in the prompt's order run on the block-sparse kernel (the fast one where the GPU
    has it), with the moved heads' rows emptied so they cost nothing there; only the KV heads that
    moved run on the reordered kernel, over their own heads (all of q, k and v in place where every
    head moved). Which heads moved is read on the host once per selection, so the launches below
    wait on nothing."""
    from .kernels import block_sparse, block_sparse_ordered

    group = q.shape[1] // k.shape[1]
    choice = selection.choice_on_host()  # [B][Hkv]
    moved = selection.moved_kv_heads()
    heads = torch.tensor([[c for c in row for _ in range(group)] for row in choice])  # [B, Hq], on the host
    if all(all(row) for row in moved):  # every head moved: no plain launch, no per-head copies in and out
        return block_sparse_ordered.ordered_attention(q, k, v, selection.mask, heads, selection.orders, block_size, scale)
    moved_q = ~reordered.prompt_order_flags(selection.orders)[selection.choice].repeat_interleave(group, dim=1)
    out = block_sparse.block_sparse_attention(q, k, v, selection.mask & ~moved_q[..., None, None], block_size, scale)
    for b, row in enumerate(moved):
        for h0, h1 in _runs(row):  # slices of whole KV heads: views, no index tensors to copy over
            qs = slice(h0 * group, h1 * group)
            out[b:b + 1, qs] = block_sparse_ordered.ordered_attention(
                q[b:b + 1, qs], k[b:b + 1, h0:h1], v[b:b + 1, h0:h1], selection.mask[b:b + 1, qs], heads[b:b + 1, qs],
                selection.orders, block_size, scale)
    return out


def _runs(flags) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of true values in ``flags``."""
    runs, start = [], None
    for i, f in enumerate(list(flags) + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            runs.append((start, i))
            start = None
    return runs


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
    """Causal dense attention through PyTorch's SDPA (the fallback for short sequences and for
    selections above the break-even density).

    On a GPU it asks for cuDNN's kernel first (the fastest dense causal kernel on Hopper, about
    1.7x FlashAttention-2 there), then flash, memory-efficient and math. Where this PyTorch's cuDNN
    path does not take grouped-query attention, K and V are repeated to the query heads for it
    (a copy far cheaper than the attention), rather than losing cuDNN."""
    gqa = q.shape[1] != k.shape[1]
    if not q.is_cuda:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if gqa and not _cudnn_takes_gqa(q.device, q.dtype, q.shape[-1]):
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
        gqa = False
    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(order, set_priority=True):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)


_CUDNN_GQA: dict[tuple, bool] = {}


def _cudnn_takes_gqa(device, dtype, head_dim) -> bool:
    """Whether SDPA's cuDNN backend runs grouped-query attention here (probed once on tiny inputs)."""
    key = (str(device), dtype, head_dim)
    if key not in _CUDNN_GQA:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        q = torch.randn(1, 4, 128, head_dim, device=device, dtype=dtype)
        kv = torch.randn(1, 2, 128, head_dim, device=device, dtype=dtype)
        try:
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                torch.nn.functional.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
            _CUDNN_GQA[key] = True
        except RuntimeError:
            _CUDNN_GQA[key] = False
    return _CUDNN_GQA[key]


def fallback_density(config: UniSparseConfig, device, seq_len: int, backend: str) -> float | None:
    """The kept density above which a call runs dense instead (None: never).

    ``config.max_density`` when set; otherwise, on the Triton backend on a GPU, the break-even
    measured for this GPU and length (:func:`unisparse.breakeven.break_even_density`); elsewhere
    (the PyTorch reference, which defines the method, and Triton's CPU interpreter) None."""
    if config.max_density is not None:
        return float(config.max_density)
    if backend != "triton" or torch.device(device).type != "cuda":
        return None
    from .breakeven import break_even_density

    return break_even_density(device, seq_len)[0]


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    config: UniSparseConfig | None = None,
    *,
    scale: float | None = None,
    return_mask: bool = False,
    backend: str = "auto",
    layout: VideoLayout | None = None,
):
    """Select blocks with UniSparse, then attend over them: ``[B, Hq, L, D]``.

    Sequences shorter than ``max(config.block_size, config.min_seq_len)`` run dense attention
    (the mask returned then keeps every causal block). After selection, a mask whose density is
    above :func:`fallback_density` runs dense too (the mask returned is the one selected). With
    ``return_mask=True`` returns ``(out, block_mask)``.

    With a ``layout`` (:class:`unisparse.layout.VideoLayout`: where the prompt's videos sit), the
    selection is video-aware (:func:`select_blocks_in_layout`) and ``block_mask`` is then the
    :class:`unisparse.reordered.Selection` (each head's mask in its own order, and the orders).
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
        full = causal_block_mask(nb, q.device).expand(q.shape[0], q.shape[1], nb, nb).clone()
        if layout is None:
            return out, full
        frame = token_order(seq_len, None, "frame", q.device)[None]
        return out, reordered.choose([full], frame, ("frame",), k.shape[1])
    if layout is not None:  # video_aware=False (or a short sequence) keeps every head in the prompt's order
        aware = config.video_aware and seq_len >= config.video_aware_min_len
        selection = select_blocks_in_layout(q, k, layout if aware else None, config, scale=scale, backend=chosen)
        mask = selection.mask
    else:
        selection = mask = select_blocks(q, k, config, scale=scale, backend=chosen)
    limit = fallback_density(config, q.device, seq_len, chosen)
    density = selection.density() if layout is not None else (block_density(mask) if limit is not None else 0.0)
    if limit is not None and density > limit:
        out = dense_attention(q, k, v, scale)
    elif layout is not None:
        out = ordered_block_sparse_attention(q, k, v, selection, block_size=config.block_size, scale=scale,
                                             backend=chosen)
    else:
        out = block_sparse_attention(q, k, v, mask, block_size=config.block_size, scale=scale, backend=chosen)
    return (out, selection) if return_mask else out
