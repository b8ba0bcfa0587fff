"""Draw block masks: one ``[nb, nb]`` mask as an image, or several side by side.

matplotlib is imported inside the functions (the library does not need it otherwise), and
figures made here use the Agg canvas directly, without pyplot, so nothing global changes.
Token-index ``boundaries`` (for example where video frames or the text prompt start) are drawn
as lines at their block position, which needs the ``block_size`` the mask was made with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def _as_2d(mask) -> torch.Tensor:
    mask = torch.as_tensor(mask).detach().cpu()
    while mask.dim() > 2 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"expected one square [nb, nb] mask, got shape {tuple(mask.shape)}")
    return mask.bool()


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_block_mask(
    mask_2d,
    *,
    title: str | None = None,
    ax=None,
    boundaries: Sequence[int] | None = None,
    block_size: int = 128,
    show_density: bool = True,
):
    """Draw one block mask (kept blocks dark, skipped light, above the diagonal hatched grey).

    Args:
        mask_2d: bool ``[nb, nb]`` (leading size-1 dimensions are dropped).
        title: axes title; the causal density is appended when ``show_density``.
        ax: a matplotlib Axes to draw into; by default a new Agg figure is made.
        boundaries: token indices drawn as lines on both axes (e.g. modality boundaries).
        block_size: tokens per block, to place ``boundaries``.

    Returns the figure.
    """
    mask = _as_2d(mask_2d)
    nb = mask.shape[0]
    if ax is None:
        fig = _new_figure(4.0, 4.0)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    causal = torch.ones(nb, nb, dtype=torch.bool).tril()
    image = torch.where(causal, (mask & causal).float(), torch.full((nb, nb), 0.25))  # 0.25: not causal
    ax.imshow(image.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, interpolation="nearest", origin="upper")
    density = float((mask & causal).sum()) / float(causal.sum())
    label = title or ""
    if show_density:
        label = f"{label}\ndensity {density:.2f}" if label else f"density {density:.2f}"
    ax.set_title(label, fontsize=9)
    ax.set_xlabel("key block")
    ax.set_ylabel("query block")
    for token in boundaries or ():
        pos = token / block_size - 0.5  # pixel i spans [i - 0.5, i + 0.5]
        ax.axvline(pos, color="tab:red", linewidth=0.8)
        ax.axhline(pos, color="tab:red", linewidth=0.8)
    ax.set_xlim(-0.5, nb - 0.5)
    ax.set_ylim(nb - 0.5, -0.5)
    return fig


def save_mask_grid(
    masks: Mapping[str, torch.Tensor],
    path,
    *,
    boundaries: Sequence[int] | None = None,
    block_size: int = 128,
    suptitle: str | None = None,
    columns: int | None = None,
    dpi: int = 110,
):
    """Draw several ``[nb, nb]`` masks side by side (titled by their keys) and save to ``path``.

    Returns the figure.
    """
    if not masks:
        raise ValueError("masks is empty: nothing to draw")
    n = len(masks)
    cols = columns or min(n, 4)
    rows = -(-n // cols)
    fig = _new_figure(3.6 * cols, 3.8 * rows)
    for i, (name, mask) in enumerate(masks.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        plot_block_mask(mask, title=name, ax=ax, boundaries=boundaries, block_size=block_size)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return fig
