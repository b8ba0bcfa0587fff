"""UniSparse in a reordered token sequence, in plain PyTorch: the ground truth for video-aware selection.

With a token order (:mod:`unisparse.layout`: the prompt's own ``"frame"`` order, or ``"spatial"``,
which makes each video span spatial-position-major), the method is the same as
:mod:`unisparse.reference`'s, computed on the reordered tokens, with one change: visibility follows
the tokens' **original** positions (a key is visible iff its original position is not after the
query's), so the output is exactly masked causal attention over the kept tokens.

* Composite tokens average consecutive tokens of the order (in the spatial order, one position's
  tokens across consecutive frames); a composite key is visible to a composite query when its
  earliest original position is not after the query group's latest one.
* A block pair is *visible* when any of its token pairs is; Top-P runs over the visible blocks
  (:func:`unisparse.masks.top_p_mask` with ``visible=``), with the same forced blocks (sink,
  diagonal, local) where visible. In the spatial order, blocks above the diagonal can be visible.
* :func:`select` scores both orders and keeps, per KV head (the query heads that share a KV head
  share its order, so K and V are never copied per query head), the order that reaches Top-P
  with fewer kept blocks; ties keep the frame order. Counts are in blocks of the same size in
  both orders, so they compare work.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from . import masks
from .config import UniSparseConfig
from .layout import ORDERS, VideoLayout, is_identity, token_order, token_orders
from .reference import compute_dtype, composite_tokens, expand_heads
from .validation import num_blocks


# The helpers below take an order tensor and are cached by its identity: every layer of a forward
# pass gets the same order tensor (unisparse.layout.token_orders), so they run once per prompt.
# A cache key holds its tensor, so an identity is never reused while its entry lives.
_per_order = functools.lru_cache(maxsize=32)


@_per_order
def order_row(orders: torch.Tensor, index: int) -> torch.Tensor:
    """``orders[index]`` as one tensor object per (orders, index): indexing makes a new view each
    time, which would miss the caches below."""
    return orders[index]


@_per_order
def prompt_order_rows(orders: torch.Tensor) -> tuple[bool, ...]:
    """Per order of ``orders`` (``[O, L]``), whether it is the prompt's own (the identity), on the host."""
    return tuple(prompt_order_flags(orders).tolist())


@_per_order
def prompt_order_flags(orders: torch.Tensor) -> torch.Tensor:
    """:func:`prompt_order_rows` on the device (bool ``[O]``), for masks built without a host copy."""
    return (orders == torch.arange(orders.shape[1], device=orders.device)).all(-1)


@_per_order
def block_bounds(order: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block of the order, the smallest and largest original position in it."""
    nb = num_blocks(order.numel(), block_size)
    pad = nb * block_size - order.numel()
    lo = torch.nn.functional.pad(order, (0, pad), value=order.numel()).view(nb, block_size).amin(1)
    hi = torch.nn.functional.pad(order, (0, pad), value=-1).view(nb, block_size).amax(1)
    return lo, hi


@_per_order
def visible_blocks(order: torch.Tensor, block_size: int) -> torch.Tensor:
    """``[nb, nb]``: key block ``n`` holds a key some query of block ``m`` may see."""
    lo, hi = block_bounds(order, block_size)
    return lo[None, :] <= hi[:, None]


@_per_order
def visible_rows(order: torch.Tensor, rows: torch.Tensor, block_size: int) -> torch.Tensor:
    """The rows ``rows`` of :func:`visible_blocks` (the probe's, once per prompt)."""
    visible = visible_blocks(order, block_size)
    return visible[rows.to(visible.device)]


@_per_order
def group_bounds(order: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest and largest original position of each ``factor``-token group of the order."""
    n = -(-order.numel() // factor)
    pad = n * factor - order.numel()
    lo = torch.nn.functional.pad(order, (0, pad), value=order.numel()).view(n, factor).amin(1)
    hi = torch.nn.functional.pad(order, (0, pad), value=-1).view(n, factor).amax(1)
    return lo, hi


@_per_order
def stacked_group_bounds(orders: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`group_bounds` of every row of ``orders`` (``[O, L]``), stacked: int32 ``[O, n]`` each."""
    bounds = [group_bounds(order_row(orders, i), factor) for i in range(orders.shape[0])]
    return tuple(torch.stack([b[j] for b in bounds]).to(torch.int32).contiguous() for j in range(2))


@_per_order
def stacked_visible_blocks(orders: torch.Tensor, block_size: int) -> torch.Tensor:
    """:func:`visible_blocks` of every row of ``orders``, stacked: bool ``[O, nb, nb]``."""
    return torch.stack([visible_blocks(order_row(orders, i), block_size) for i in range(orders.shape[0])])


@_per_order
def stacked_rows_order(orders: torch.Tensor, rows: torch.Tensor, block_size: int) -> torch.Tensor:
    """:func:`rows_order` of every row of ``orders``, stacked: int64 ``[O, N]`` (the probe's query tokens)."""
    return torch.stack([rows_order(order_row(orders, i), rows, block_size) for i in range(orders.shape[0])])


@_per_order
def stacked_visible_rows(orders: torch.Tensor, rows: torch.Tensor, block_size: int) -> torch.Tensor:
    """:func:`visible_rows` of every row of ``orders``, stacked: bool ``[O, len(rows), nb]``."""
    return torch.stack([visible_rows(order_row(orders, i), rows, block_size) for i in range(orders.shape[0])])


@_per_order
def int32_positions(positions: torch.Tensor) -> torch.Tensor:
    """``positions`` as contiguous int32, what the Triton kernels index with (once per prompt)."""
    return positions.to(torch.int32).contiguous()


@functools.lru_cache(maxsize=16)
def _probe_blocks(nb: int, stride: int, device: str) -> torch.Tensor:
    return torch.arange(0, nb, stride, device=device)


def probe_blocks(nb: int, stride: int, device=None) -> torch.Tensor:
    """The query blocks a probe scores (every ``stride``-th, from the first): int64 (read-only, cached)."""
    return _probe_blocks(nb, stride, str(torch.device(device if device is not None else "cpu")))


@_per_order
def rows_order(order: torch.Tensor, rows: torch.Tensor | None, block_size: int) -> torch.Tensor:
    """The tokens of the order's query blocks ``rows``, block after block (all of it for None)."""
    if rows is None:
        return order
    nb = num_blocks(order.numel(), block_size)
    if rows.numel() == nb:
        return order
    within = torch.arange(block_size, device=order.device)
    idx = (rows.to(order.device)[:, None] * block_size + within[None, :]).flatten()
    return order[idx[idx < order.numel()]]


def block_scores(q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig, order: torch.Tensor,
                 scale: float | None = None, max_bytes: int = 1 << 29, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Compressed attention probabilities summed per block of the order: float32 ``[B, Hs, nb, nb]``
    (``[B, Hs, len(rows), nb]`` for the query blocks ``rows`` alone).

    The composite heads are scored a few at a time, so that the compressed probabilities in flight
    stay under ``max_bytes`` (at 128K tokens one head's are 16K x 16K)."""
    if config.variance_correction > 0:
        raise ValueError("variance_correction is not supported in a reordered sequence (video-aware selection)")
    seq_len, d = q.shape[2], q.shape[3]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    q_order = rows_order(order, rows, config.block_size)
    qc, kc = composite_tokens(q[:, :, q_order], k[:, :, order], config)
    acc = compute_dtype(q.dtype)
    _, q_last = group_bounds(q_order, config.q_pool)
    k_first, _ = group_bounds(order, config.k_pool)
    visible = k_first[None, :] <= q_last[:, None]
    b, hs, n_q, n_k = qc.shape[0], qc.shape[1], qc.shape[2], kc.shape[2]
    nb, rq, rk = num_blocks(seq_len, config.block_size), config.q_per_block, config.k_per_block
    nr = nb if rows is None else rows.numel()
    out = torch.empty(b, hs, nr, nb, dtype=torch.float32, device=q.device)
    step = max(1, max_bytes // max(1, 3 * b * n_q * n_k * 4))
    for h0 in range(0, hs, step):
        qh, kh = qc[:, h0:h0 + step].to(acc), kc[:, h0:h0 + step].to(acc)
        logits = (qh @ kh.transpose(-1, -2)) * scale
        probs = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)
        padded = torch.zeros(b, probs.shape[1], nr * rq, nb * rk, dtype=acc, device=q.device)
        padded[:, :, :n_q, :n_k] = probs
        out[:, h0:h0 + step] = padded.view(b, probs.shape[1], nr, rq, nb, rk).sum((3, 5)).float()
    return out


def top_p_mask(scores: torch.Tensor, config: UniSparseConfig, order: torch.Tensor,
               rows: torch.Tensor | None = None, rule=None, top_p: torch.Tensor | None = None) -> torch.Tensor:
    """Top-P over the visible blocks of the order (bool ``[..., nb, nb]``; ``[..., len(rows), nb]``
    for the query blocks ``rows``). ``rule``: the Top-P function (default the definition,
    :func:`unisparse.masks.top_p_mask`; on CUDA, :func:`unisparse.kernels.top_p.top_p_mask`).
    ``top_p``: per-head thresholds (:func:`unisparse.calibration.calibrated_top_p`) instead of ``config.top_p``."""
    visible = visible_blocks(order, config.block_size) if rows is None else visible_rows(order, rows, config.block_size)
    rule = masks.top_p_mask if rule is None else rule
    return rule(scores, config.top_p if top_p is None else top_p, sink_blocks=config.sink_blocks,
                local_blocks=config.local_blocks, visible=visible, rows=rows)


@dataclass
class Selection:
    """What :func:`select` chose: per query head its order's mask, and per (batch, KV head) the order.

    The attention call reads the choice and the kept-block count on the host once (one sync) and
    keeps them: to change a field after that, make a new Selection."""

    mask: torch.Tensor  # bool [B, Hq, nb, nb], each head's blocks in its own order
    choice: torch.Tensor  # int64 [B, Hkv]: index into ``names``
    orders: torch.Tensor  # int64 [len(names), L]
    names: tuple[str, ...]
    kept: torch.Tensor  # int64 [B, Hkv, len(names)]: blocks each order keeps for the KV head's query heads (on the probe rows)

    def order_of_heads(self, q_heads: int | None = None) -> torch.Tensor:
        """int64 ``[B, Hq]``: the order index of every query head."""
        q_heads = self.mask.shape[1] if q_heads is None else q_heads
        return self.choice.repeat_interleave(q_heads // self.choice.shape[1], dim=1)

    @functools.cached_property
    def _on_host(self) -> tuple[tuple[tuple[int, ...], ...], int]:
        """``(choice per batch row and KV head, kept blocks)``, fetched in one device-to-host copy
        (one sync) the first time the attention call or :meth:`density` asks."""
        packed = torch.cat([self.choice.flatten().to(torch.int64), self.mask.sum().view(1)]).tolist()
        b, hkv = self.choice.shape
        return tuple(tuple(packed[i * hkv:(i + 1) * hkv]) for i in range(b)), packed[-1]

    def choice_on_host(self) -> tuple[tuple[int, ...], ...]:
        """:attr:`choice` as nested tuples ``[B][Hkv]`` (what the attention call decides its launches on)."""
        return self._on_host[0]

    def moved_kv_heads(self) -> tuple[tuple[bool, ...], ...]:
        """``[B][Hkv]``: whether each KV head runs in an order other than the prompt's own (host values)."""
        own = prompt_order_rows(self.orders)
        return tuple(tuple(not own[c] for c in row) for row in self.choice_on_host())

    def density(self) -> float:
        """Kept blocks over the frame order's causal blocks, over all rows and heads (blocks above
        the diagonal count too: in another order they hold visible pairs, and cost the same work)."""
        nb = self.mask.shape[-1]
        return self._on_host[1] / (nb * (nb + 1) // 2 * self.mask[..., 0, 0].numel())

    def keeps_prompt_order(self) -> torch.Tensor:
        """bool ``[len(names)]``: which orders are the prompt's own (the identity permutation)."""
        return prompt_order_flags(self.orders)

    @property
    def reorders(self) -> bool:
        """Whether any head runs in an order other than the prompt's own."""
        return any(any(row) for row in self.moved_kv_heads())

    def frame_coverage(self, block_size: int) -> torch.Tensor:
        """float32 ``[B, Hq, nb, nb]``: :func:`frame_coverage` of this selection."""
        return frame_coverage(self.mask, self.order_of_heads(), self.orders, block_size)


def frame_coverage(mask: torch.Tensor, head_orders: torch.Tensor, orders: torch.Tensor, block_size: int) -> torch.Tensor:
    """What a heatmap in the prompt's order shows for heads selected in other orders.

    ``mask``: bool ``[B, Hq, nb, nb]``, each head's kept blocks in its own order; ``head_orders``:
    int64 ``[B, Hq]`` indices into ``orders`` (``[O, L]``). Returns float32 ``[B, Hq, nb, nb]``: the
    share of each frame-order block pair's tokens that the head's kept blocks cover (equal to the
    mask for heads in the frame order; causality is not applied)."""
    seq_len = orders.shape[1]
    nb = mask.shape[-1]
    own = torch.arange(seq_len, device=orders.device) // block_size  # block of each index of an order
    # share[o][x, y]: the fraction of frame-order block x's tokens placed in block y of order o
    share = torch.zeros(orders.shape[0], nb, nb, device=orders.device)
    for o, order in enumerate(orders):
        share[o].index_put_((order // block_size, own), torch.ones(seq_len, device=share.device), accumulate=True)
    share = share / share.sum(-1, keepdim=True)
    s = share[head_orders.to(orders.device)]  # [B, Hq, nb, nb]
    return s @ mask.to(s.device).float() @ s.transpose(-1, -2)


def order_mask(q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig, order: torch.Tensor,
               scale: float | None = None, scores=None, rows: torch.Tensor | None = None, rule=None,
               exact_mass=None, top_p: torch.Tensor | None = None, with_top_p: bool = False):
    """UniSparse's block mask in one order, per query head: bool ``[B, Hq, nb, nb]`` (``rows``: only
    those query blocks, ``[B, Hq, len(rows), nb]``). ``scores``: the block-score function (default
    :func:`block_scores`; the Triton one is :func:`unisparse.kernels.selection.ordered_block_scores`);
    ``rule``: the Top-P function, as in :func:`top_p_mask`. With ``config.calibration_blocks`` each head
    takes thresholds calibrated in this order (a probe's, on its own rows, so that the orders are
    compared at the recall they will be held to); ``exact_mass``: the sampled rows' exact mass (default
    :func:`unisparse.calibration.exact_row_mass`). ``top_p``: thresholds already calibrated in this order
    (``[B, Hq / head_pool, 1]``, a probe's), used as they are. ``with_top_p``: return ``(mask, thresholds)``
    (thresholds None without calibration)."""
    scores = (block_scores if scores is None else scores)(q, k, config, order, scale, rows=rows)
    if top_p is None and config.calibration_blocks:
        from . import calibration

        top_p = calibration.calibrated_top_p(q, k, scores, config, scale, exact_mass or calibration.exact_row_mass,
                                             order=order, visible=visible_blocks(order, config.block_size), rows=rows,
                                             rule=rule)
    mask = expand_heads(top_p_mask(scores, config, order, rows, rule, top_p), config.head_pool)
    return (mask, top_p) if with_top_p else mask


def choose(masks: Sequence[torch.Tensor], orders: torch.Tensor, names: tuple[str, ...], kv_heads: int,
           order_cost: float = 1.0) -> Selection:
    """Per KV head, the order whose mask keeps the fewest blocks over the KV head's query heads,
    blocks of every order after the first weighted by ``order_cost`` (ties: the earlier order in
    ``names``); ``masks[i]`` is the ``[B, Hq, nb, nb]`` mask in order ``i``."""
    stacked = torch.stack([m.expand(masks[0].shape) for m in masks])  # [O, B, Hq, nb, nb]
    hq = stacked.shape[2]
    choice, kept = choose_orders(masks, kv_heads, order_cost)
    heads = choice.repeat_interleave(hq // kv_heads, dim=1)  # [B, Hq]
    mask = torch.gather(stacked, 0, heads[None, :, :, None, None].expand(1, *stacked.shape[1:]))[0]
    return Selection(mask, choice, orders, tuple(names), kept)


def choose_orders(masks: Sequence[torch.Tensor], kv_heads: int, order_cost: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`choose`'s decision alone, on the device: ``(choice [B, Hkv], kept [B, Hkv, O])``."""
    kept = torch.stack([m.expand(masks[0].shape).flatten(2).sum(-1) for m in masks], -1)  # [B, Hq, O]
    b, hq, o = kept.shape
    kept = kept.view(b, kv_heads, hq // kv_heads, o).sum(2)
    cost = kept.double()
    cost[..., 1:] *= order_cost
    return cost.argmin(-1), kept  # argmin returns the first minimum: ties keep the earlier order


def select(q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig, layout: VideoLayout | None,
           scale: float | None = None, names: tuple[str, ...] = ORDERS) -> Selection:
    """Score every order in ``names``, keep per KV head the one that keeps fewer blocks (ties: the first);
    with the two orders of :data:`ORDERS`, the second is probed first (:func:`probe_and_choose`)."""
    seq_len = q.shape[2]
    if tuple(names) == ORDERS and layout is not None:
        orders = token_orders(seq_len, layout, q.device)
    else:
        orders = torch.stack([token_order(seq_len, layout, n, q.device) for n in names])
    if tuple(names) == ORDERS:
        frame = order_row(orders, 0)
        return probe_and_choose(q, k, config, orders,
                                lambda qs, ks, top_p: order_mask(qs, ks, config, frame, scale, top_p=top_p), scale)
    first = order_mask(q, k, config, orders[0], scale)
    return choose([first] + [order_mask(q, k, config, order, scale) for order in orders[1:]], orders, names, k.shape[1],
                  config.order_cost)


def probe_and_choose(q: torch.Tensor, k: torch.Tensor, config: UniSparseConfig, orders: torch.Tensor,
                     frame_select, scale: float | None = None, scores=None, rule=None, chosen_select=None,
                     probe_select=None, exact_mass=None) -> Selection:
    """The video-aware choice between the prompt's order ``orders[0]`` and the spatial order
    ``orders[1]``: both orders are scored on every ``config.order_probe``-th query block; a KV head
    moves to the spatial order where, on those rows, its kept blocks times ``config.order_cost``
    (the reordered kernel's cost per block against the plain one's) are fewer than in the frame
    order (ties: frame). Then each KV head is scored in full in its chosen order only:
    ``frame_select(q_heads, k_heads)`` gives the frame-order mask ``[B, Hq', nb, nb]`` of a subset
    of heads (whole KV heads), the spatial one comes from :func:`order_mask`. ``order_probe=1`` (or
    fewer blocks than that) scores every row of both orders, which is the exact choice.
    ``scores`` and ``rule``: as in :func:`order_mask`. ``chosen_select(q, k, choice)``, where given,
    replaces the full scoring per order: it returns every KV head's mask in its chosen order at
    once (:func:`unisparse.kernels.selection.head_order_mask`: one launch, no host sync).
    ``probe_select(q, k, rows)``, where given, replaces the probe: the masks of both orders on the
    query blocks ``rows`` and their thresholds, ``(masks, thresholds)`` as
    :func:`unisparse.kernels.selection.probe_masks` gives with ``with_top_p=True``, or None where it
    does not apply (then each order is probed by :func:`order_mask`). ``exact_mass``: as in
    :func:`order_mask`.

    Calibrated thresholds (``config.calibration_blocks``) are set once per order, on the probe rows
    (a sample of the whole sequence), and a head's full mask takes those of the order it chose:
    the orders are compared at the recall they are then held to, and nothing is calibrated twice.
    ``frame_select(q_heads, k_heads, top_p)`` and ``chosen_select(q, k, choice, top_p)`` take them
    (``top_p`` None: uncalibrated)."""
    b, hq = q.shape[:2]
    hkv = k.shape[1]
    group = hq // hkv
    nb = num_blocks(q.shape[2], config.block_size)
    spatial = order_row(orders, 1)
    if config.order_probe == 1 or nb <= config.order_probe:
        return choose([frame_select(q, k, None), order_mask(q, k, config, spatial, scale, scores, rule=rule, exact_mass=exact_mass)],
                      orders, ORDERS, hkv, config.order_cost)
    rows = probe_blocks(nb, config.order_probe, q.device)
    probed = probe_select(q, k, rows) if probe_select is not None else None
    if probed is None:
        probed = tuple(zip(*[order_mask(q, k, config, order_row(orders, i), scale, scores, rows=rows, rule=rule,
                                        exact_mass=exact_mass, with_top_p=True) for i in range(2)]))
    probes, thresholds = probed
    if thresholds is not None and thresholds[0] is None:
        thresholds = None
    if chosen_select is not None:
        choice, kept = choose_orders(probes, hkv, config.order_cost)
        top_p = None
        if thresholds is not None:  # each selection head lies within one KV head (chosen_select's condition)
            sel_choice = choice.repeat_interleave(thresholds[0].shape[1] // hkv, dim=1)[..., None]
            top_p = torch.where(sel_choice == 1, thresholds[1], thresholds[0])
        return Selection(chosen_select(q, k, choice, top_p), choice, orders, ORDERS, kept)
    picked = choose(probes, orders, ORDERS, hkv, config.order_cost)
    takes = picked.choice.eq(1)  # [B, Hkv]
    head_orders = picked.order_of_heads(hq)  # [B, Hq]
    mask = torch.zeros(b, hq, nb, nb, dtype=torch.bool, device=q.device)
    for order, wanted in ((0, (~takes).any(0)), (1, takes.any(0))):  # KV heads that take the order in some batch row
        kv = wanted.nonzero().flatten()
        if not kv.numel():
            continue
        if config.head_pool > group:  # composite heads span KV heads: score them all
            kv = torch.arange(hkv, device=q.device)
        qh = (kv[:, None] * group + torch.arange(group, device=q.device)).flatten()
        whole = kv.numel() == hkv
        qs, ks = (q, k) if whole else (q[:, qh], k[:, kv])
        top_p = None
        if thresholds is not None:  # the selection heads of these query heads, in this order
            top_p = thresholds[order][:, qh.view(-1, config.head_pool)[:, 0] // config.head_pool]
        full = (frame_select(qs, ks, top_p) if order == 0
                else order_mask(qs, ks, config, spatial, scale, scores, rule=rule, exact_mass=exact_mass, top_p=top_p))
        chosen = (head_orders[:, qh] == order)[..., None, None]
        mask[:, qh] = torch.where(chosen, full, mask[:, qh])
    return Selection(mask, picked.choice, orders, ORDERS, picked.kept)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, selection: Selection, block_size: int = 128,
              scale: float | None = None) -> torch.Tensor:
    """Masked causal attention over the kept blocks, each head in its chosen order, visibility by
    original positions; ``[B, Hq, L, D]`` in the original order. A row with nothing visible gets zeros."""
    b, hq, seq_len, d = q.shape
    group = hq // k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    acc = compute_dtype(q.dtype)
    heads = selection.order_of_heads(hq)
    out = torch.empty(b, hq, seq_len, d, dtype=q.dtype, device=q.device)
    for bi in range(b):
        for h in range(hq):
            order = selection.orders[heads[bi, h]]
            qo, ko, vo = q[bi, h, order].to(acc), k[bi, h // group, order].to(acc), v[bi, h // group, order].to(acc)
            kept = selection.mask[bi, h].repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)
            visible = kept[:seq_len, :seq_len] & (order[None, :] <= order[:, None])
            logits = (qo @ ko.t() * scale).masked_fill(~visible, float("-inf"))
            o = torch.softmax(logits, dim=-1).nan_to_num(0.0) @ vo
            out[bi, h, order] = o.to(q.dtype)  # back to the original positions
    return out


def sparse_attention(q, k, v, config: UniSparseConfig, layout: VideoLayout | None, scale: float | None = None):
    """:func:`select` then :func:`attention`: ``(out, selection)``."""
    selection = select(q, k, config, layout, scale)
    return attention(q, k, v, selection, config.block_size, scale), selection


__all__ = ["block_bounds", "visible_blocks", "block_scores", "top_p_mask", "order_mask", "Selection", "choose",
           "frame_coverage",
           "select", "attention", "sparse_attention"]
