"""The demo's figures: block density per layer, and the blocks one layer and head kept, with the video marked.

Why these two: density per layer says how much attention UniSparse skipped and where (early layers
often keep more); the block map says *what* it kept. Its axes are in token positions (query down,
key across) so the video's token run can be marked where it lies, and the ticks on the video part
carry the time of the frames whose tokens start there (Qwen2-VL lays the video out temporal patch
by temporal patch; :meth:`videoqa.pipeline.Answer.frame_token_spans` gives the mapping). The strip
under the map answers "which frames did the question look at": for the query blocks holding the
question (after the video), the share of them that kept each key block.

Figures are plain :class:`matplotlib.figure.Figure` objects (no pyplot): no global figure registry
to leak from a long-running server, and safe to build in the server's worker threads.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

KEPT = "#1f4e9c"
SKIPPED = "#e4e4e4"
VIDEO = "#e8710a"
# white where bad (NaN): above the diagonal, never computed (causal)
BLOCK_CMAP = LinearSegmentedColormap.from_list("unisparse_blocks", [SKIPPED, KEPT]).with_extremes(bad="white")


def message_figure(text: str, *, size=(7, 1.4)) -> Figure:
    """A figure holding one line of text, in place of a plot that has nothing to show."""
    fig = Figure(figsize=size)
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11, color="#444444")
    return fig


def find_layer(answer, layer: int):
    """The prefill record of language-model layer ``layer`` in ``answer.layers`` (None if absent)."""
    for i, r in enumerate(answer.layers):
        if (r.layer if r.layer is not None else i) == layer:
            return r
    return None


def head_label(head: int | None, num_heads: int | None = None) -> str:
    if head is None:
        return "mean of the heads" if num_heads is None else f"mean of the {num_heads} heads"
    return f"head {head}"


def density_figure(answer) -> Figure:
    """Bars of block density (kept / causal blocks) per language-model layer of a UniSparse answer.

    Layers that ran dense (``dense_layers``, prompts shorter than a block, ...) are drawn hatched at
    1.0 and named; the dashed line is ``answer.density``, the mean over the layers that ran sparse.
    """
    if answer is None:
        return message_figure("Dense attention only: every causal block was computed (density 1).")
    if not answer.layers:
        return message_figure("No prefill attention was recorded for this answer.")
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.subplots()
    dense_paths = set()
    for i, r in enumerate(answer.layers):
        x = r.layer if r.layer is not None else i
        if r.path == "sparse":
            ax.bar(x, r.density, color=KEPT, width=0.8)
        elif r.selected_density is not None:  # selected, then computed dense (above the break-even; a CPU)
            ax.bar(x, r.selected_density, color=KEPT, alpha=0.45, width=0.8)
            dense_paths.add("selection drawn, computed dense")
        else:
            ax.bar(x, 1.0, color="white", edgecolor="#888888", hatch="//", width=0.8)
            dense_paths.add(r.path)
    handles = [Patch(color=KEPT, label="UniSparse (kept / causal blocks)")]
    if dense_paths:
        handles.append(Patch(facecolor="white", edgecolor="#888888", hatch="//",
                             label=f"ran dense ({', '.join(sorted(dense_paths))})"))
    title = "Block density per layer"
    if answer.density is not None:
        ax.axhline(answer.density, color=VIDEO, ls="--", lw=1.2)
        handles.append(Patch(color=VIDEO, label=f"mean {answer.density:.3f}"))
        top_p = (answer.config or {}).get("top_p")
        title += ("\n" + (f"top_p {top_p:g}: " if top_p is not None else "") +
                  f"mean density {answer.density:.3f}, sparsity {1 - answer.density:.1%}")
    ax.set_title(title, fontsize=11)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("language-model layer")
    ax.set_ylabel("block density")
    if len(answer.layers) <= 32:
        ax.set_xticks(range(len(answer.layers)))
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
    return fig


def _time_ticks(spans, length: int, max_ticks: int):
    """(token positions, "t s" labels) of temporal patches, at least ``length / max_ticks`` tokens apart.

    Spacing by position rather than by count keeps the labels readable when the video is a small
    part of a long prompt.
    """
    gap, pos, labels = length / max_ticks, [], []
    for start, _, t0, _ in spans:
        if not pos or start - pos[-1] >= gap:
            pos.append(start)
            labels.append(f"{t0:.1f}s")
    return pos, labels


def kept_in_frame_order(answer, rec) -> np.ndarray:
    """float ``[H, nb, nb]`` of row 0: the blocks each head kept, drawn in the prompt's order. A head
    selected in the video's spatial order (``rec.head_orders``) shows the share of each block's
    tokens its kept blocks cover (:func:`unisparse.reordered.frame_coverage`)."""
    mask = rec.mask[0]
    if rec.head_orders is None or answer.layout is None or set(rec.head_orders) == {"frame"}:
        return mask.float().numpy()
    import torch

    from unisparse.layout import ORDERS, token_order
    from unisparse.reordered import frame_coverage

    orders = torch.stack([token_order(rec.seq_len, answer.layout, name) for name in ORDERS])
    heads = torch.tensor([[ORDERS.index(name) for name in rec.head_orders]])
    return frame_coverage(mask[None], heads, orders, rec.block_size)[0].numpy()


def heatmap_figure(answer, layer: int, head: int | None = None, *, max_ticks: int = 12,
                   view: str = "frames") -> Figure:
    """The blocks layer ``layer`` kept for ``head`` (None: the share of heads that kept each block).

    Heads selected in the video's spatial order (video-aware selection) are drawn mapped back to
    the prompt's order (``view="frames"``: the share of each block's tokens covered), or, for one
    head, as selected (``view="selected"``: blocks of the spatial order, where one spatial position
    across consecutive frames is contiguous).

    Rows are query blocks, columns key blocks, both drawn at their token positions; white above the
    diagonal is never computed (causal). Dashed lines mark the video's token run; tick labels are
    the times of the frames whose tokens start at that position. Below: per key block, the share
    of the question's query blocks (those holding tokens after the video) that kept it.

    Raises ValueError for a head the layer does not have.
    """
    if answer is None:
        return message_figure("Dense attention only: there is no block selection to show.")
    rec = find_layer(answer, layer)
    if rec is None:
        return message_figure(f"No record of layer {layer}.")
    if rec.mask is None:
        why = "kept no masks" if rec.selected_density is not None else f"ran dense ({rec.path})"
        return message_figure(f"Layer {layer} {why}: no block selection to show.")
    if view not in ("frames", "selected"):
        raise ValueError(f"view must be 'frames' or 'selected', got {view!r}")
    mask = rec.mask[0]  # [H, nb, nb]
    heads, nb = int(mask.shape[0]), int(mask.shape[-1])
    if head is not None and not 0 <= head < heads:
        raise ValueError(f"layer {layer} has heads 0-{heads - 1}, not {head}")
    order = "frame" if rec.head_orders is None or head is None else rec.head_orders[head]
    if view == "selected" and order != "frame":
        return _selected_order_figure(rec, layer, head, order)
    per_head = kept_in_frame_order(answer, rec)
    kept = per_head.mean(0) if head is None else per_head[head]
    causal = np.tril(np.ones((nb, nb), dtype=bool))
    density = float(mask.sum() if head is None else mask[head].sum() * heads) / float(causal.sum() * heads)
    bs, length, edge = rec.block_size, rec.seq_len, nb * rec.block_size

    fig = Figure(figsize=(7, 8.2), layout="constrained")
    ax, strip = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [4.2, 1]})
    im = ax.imshow(np.where(causal, kept, np.nan), cmap=BLOCK_CMAP, vmin=0, vmax=1, extent=(0, edge, edge, 0),
                   interpolation="nearest", aspect="auto")
    ax.set_xlim(0, length)
    ax.set_ylim(length, 0)

    spans = answer.frame_token_spans()
    first_q = nb - 1
    if answer.video_span is not None:
        vs, ve = answer.video_span
        for pos in (vs, ve):
            ax.axvline(pos, color=VIDEO, ls="--", lw=1.3)
            ax.axhline(pos, color=VIDEO, ls="--", lw=1.3)
        strip.axvspan(vs, ve, color=VIDEO, alpha=0.13, lw=0)
        where = ax.get_xaxis_transform()  # x in tokens, y in axes fractions: labels just above the map
        for x, text, ha in ((0, "text", "left"), ((vs + ve) / 2, f"video: {answer.frames.count} frames", "center"),
                            (length, "question", "right")):
            ax.text(x, 1.005, text, transform=where, ha=ha, va="bottom", color=VIDEO, fontsize=9)
        first_q = min(ve // bs, nb - 1)
    pos, labels = _time_ticks(spans, length, max_ticks)
    if pos:
        ax.set_yticks(pos, labels)
        strip.set_xticks(pos, labels)
        ax.set_yticks([s[0] for s in spans], minor=True)
        strip.set_xticks([s[0] for s in spans], minor=True)
        ax.set_ylabel("query position (ticks: frame time)")
        strip.set_xlabel("key position (ticks: time of the frame whose tokens start there)")
    else:
        ax.set_ylabel("query token")
        strip.set_xlabel("key token")

    if head is None:
        fig.colorbar(im, ax=ax, shrink=0.6, label="share of heads that kept the block")
    else:
        ax.legend(handles=[Patch(color=KEPT, label="kept"), Patch(color=SKIPPED, label="skipped"),
                           Patch(facecolor="white", edgecolor="#999999", label="future (causal)")],
                  loc="upper right", fontsize=8)
    note = ""
    if rec.head_orders is not None and (head is None and "spatial" in rec.head_orders or order == "spatial"):
        note = "; heads selected in the video's spatial order drawn in frame order (share of tokens covered)"
    fig.suptitle(f"Layer {layer}, {head_label(head, heads)}: {density:.1%} of the causal blocks kept\n"
                 f"{nb}x{nb} blocks of {bs} tokens; dashed lines: where the video's tokens start and end{note}",
                 fontsize=11, wrap=True)

    rows, valid = kept[first_q:], causal[first_q:]
    share = (rows * valid).sum(0) / np.maximum(valid.sum(0), 1)
    strip.bar(np.arange(nb) * bs, share, width=bs, align="edge", color=KEPT, edgecolor="white", linewidth=0.5)
    strip.set_ylim(0, 1)
    strip.set_ylabel("kept by the\nquestion's rows", fontsize=9)
    return fig


def _selected_order_figure(rec, layer: int, head: int, order: str) -> Figure:
    """One head's kept blocks in the order it was selected in (every block pair may hold visible tokens)."""
    kept = rec.mask[0, head].float().numpy()
    nb, bs = kept.shape[-1], rec.block_size
    fig = Figure(figsize=(7, 6.8), layout="constrained")
    ax = fig.subplots()
    ax.imshow(kept, cmap=BLOCK_CMAP, vmin=0, vmax=1, extent=(0, nb * bs, nb * bs, 0), interpolation="nearest",
              aspect="auto")
    ax.set_xlim(0, rec.seq_len)
    ax.set_ylim(rec.seq_len, 0)
    ax.set_xlabel(f"key index in the {order} order")
    ax.set_ylabel(f"query index in the {order} order")
    ax.legend(handles=[Patch(color=KEPT, label="kept"), Patch(color=SKIPPED, label="skipped")], loc="upper right",
              fontsize=8)
    causal = nb * (nb + 1) // 2
    fig.suptitle(f"Layer {layer}, head {head}, as selected in the video's {order} order: {kept.sum() / causal:.1%} "
                 f"of the frame order's causal block count kept\n(one spatial position across consecutive frames "
                 f"is contiguous; visibility still follows the original positions)", fontsize=10, wrap=True)
    return fig
