"""Where the video sits in a prompt, and the token orders that make grid attention block-sparse.

A video LLM lays a video out frame by frame: temporal patch ``f`` holds ``height x width`` merged
tokens, position ``s`` of the frame at token ``frame_starts[f] + s`` (one contiguous run in
Qwen2-VL and Qwen2.5-VL; one run per temporal patch, between timestamp text, in Qwen3-VL).
Heads that attend to the same spatial position in other frames (MMInference's grid heads) then
draw slashes at the frame's period, touching every 128x128 block a little, so any block selector
keeps most blocks. In the **spatial-major** order of a video span, the tokens of one spatial
position across consecutive frames are contiguous, and those heads become a few dense blocks.
Text tokens (timestamps between frames included) and other spans' tokens stay where they are.

An order is a permutation ``order`` of ``range(L)``: ``order[i]`` is the original position of the
token placed at index ``i``. Causality always follows the original positions (a key is visible
to a query iff its original position is not after the query's), whatever the order.

The layout reaches the attention calls of a model either as an argument
(:func:`unisparse.sparse_attention`) or, inside ``transformers``, through :func:`video_layout`,
which the ``unisparse`` attention function reads (:mod:`unisparse.integrations.transformers`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

ORDERS = ("frame", "spatial")


@dataclass(frozen=True)
class VideoSpan:
    """One video (or multi-frame image) in the prompt: ``len(frame_starts)`` temporal patches of
    ``height x width`` merged tokens, patch ``f`` at tokens ``[frame_starts[f], frame_starts[f] + height * width)``."""

    frame_starts: tuple[int, ...]
    height: int
    width: int

    @classmethod
    def contiguous(cls, start: int, frames: int, height: int, width: int) -> "VideoSpan":
        """A span whose patches follow each other with no token between them (Qwen2-VL's layout)."""
        hw = height * width
        return cls(tuple(start + f * hw for f in range(frames)), height, width)

    @property
    def frames(self) -> int:
        return len(self.frame_starts)

    @property
    def frame_tokens(self) -> int:
        return self.height * self.width

    @property
    def tokens(self) -> int:
        return self.frames * self.frame_tokens

    @property
    def start(self) -> int:
        return self.frame_starts[0]

    @property
    def end(self) -> int:
        return self.frame_starts[-1] + self.frame_tokens

    def positions(self, device=None) -> torch.Tensor:
        """int64 ``[frames, height * width]``: the token position of every (patch, spatial position)."""
        starts = torch.tensor(self.frame_starts, dtype=torch.long, device=device)
        return starts[:, None] + torch.arange(self.frame_tokens, device=device)[None, :]


@dataclass(frozen=True)
class VideoLayout:
    """The video spans of one prompt (several videos or images allowed; their tokens must not overlap).

    One layout serves every row of a batch: the rows of a batch that UniSparse serves share one
    length and (from one processor) one layout."""

    spans: tuple[VideoSpan, ...]

    def check(self, seq_len: int) -> "VideoLayout":
        """ValueError when a span is empty, its patches overlap or fall outside ``[0, seq_len)``; returns self.
        (Checked once per layout and length: every layer of a forward pass asks again.)"""
        _check_layout(self, seq_len)
        return self

    def _validate(self, seq_len: int) -> None:
        ranges = []
        for s in self.spans:
            if not s.frame_starts or min(s.height, s.width) < 1:
                raise ValueError(f"video span {s} must have at least one patch and positive height and width")
            if list(s.frame_starts) != sorted(s.frame_starts):
                raise ValueError(f"video span {s}: frame_starts must be ascending")
            ranges += [(a, a + s.frame_tokens) for a in s.frame_starts]
        last = 0
        for a, b in sorted(ranges):
            if a < last:
                raise ValueError(f"video spans overlap at token {a}")
            if a < 0 or b > seq_len:
                raise ValueError(f"a video patch at tokens [{a}, {b}) lies outside the sequence ({seq_len} tokens)")
            last = b

    def fits(self, seq_len: int) -> bool:
        """Whether every span lies inside a sequence of ``seq_len`` tokens (a prefix of the prompt may hold them all)."""
        return all(s.end <= seq_len for s in self.spans)

    @property
    def reorders(self) -> bool:
        """Whether any span has more than one patch (a single frame's spatial order is its own order)."""
        return any(s.frames > 1 for s in self.spans)


def spans_from_runs(runs: Sequence[tuple[int, int]], grids: Sequence[Sequence[int]], merge_size: int) -> list[VideoSpan]:
    """The spans of ``grids`` (``(t, h, w)`` in patches, one per video or image, in prompt order)
    laid out in ``runs`` (``[start, end)`` of each run of their placeholder token, in order).

    Each grid takes ``t`` patches of ``(h / merge_size) * (w / merge_size)`` tokens, in one run or
    split across runs (one per patch when timestamps sit between patches). ValueError when the
    runs do not hold the grids exactly."""
    runs = [(int(a), int(b)) for a, b in runs]
    spans, r, offset = [], 0, 0
    for grid in grids:
        t, h, w = (int(x) for x in grid)
        if h % merge_size or w % merge_size:
            raise ValueError(f"grid {tuple(grid)} is not divisible by the merge size {merge_size}")
        hh, ww = h // merge_size, w // merge_size
        hw = hh * ww
        starts = []
        for _ in range(t):
            if r >= len(runs):
                raise ValueError(f"the placeholder runs hold fewer tokens than the grids {list(map(tuple, grids))} need")
            a, b = runs[r]
            if a + offset + hw > b:
                raise ValueError(f"a run of placeholder tokens [{a}, {b}) does not split into patches of {hw} tokens")
            starts.append(a + offset)
            offset += hw
            if a + offset == b:
                r, offset = r + 1, 0
        spans.append(VideoSpan(tuple(starts), hh, ww))
    if r != len(runs) or offset:
        raise ValueError("the placeholder runs hold more tokens than the grids account for")
    return spans


def token_runs(ids: torch.Tensor, token_id: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of ``token_id`` in a 1-D tensor of token ids."""
    where = (ids == token_id).nonzero().flatten().tolist()
    runs: list[tuple[int, int]] = []
    for i in where:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def layout_from_inputs(input_ids: torch.Tensor, *, merge_size: int, video_token_id: int | None = None,
                       video_grid_thw=None, image_token_id: int | None = None, image_grid_thw=None) -> VideoLayout | None:
    """The layout of a Qwen-VL-style prompt from what its processor returns; None when nothing reorders.

    ``input_ids``: ``[L]`` or ``[1, L]``; the grids as the processor gives them (``[n, 3]``).
    Videos and images are matched to the runs of their own placeholder token. A layout only
    describes one prompt: a batch of several rows is refused (each row may place its video elsewhere)."""
    ids = torch.as_tensor(input_ids)
    if ids.dim() == 2:
        if ids.shape[0] != 1:
            raise ValueError(f"a video layout describes one prompt; got a batch of {ids.shape[0]}")
        ids = ids[0]
    spans: list[VideoSpan] = []
    for token_id, grids in ((video_token_id, video_grid_thw), (image_token_id, image_grid_thw)):
        if token_id is None or grids is None or len(grids) == 0:
            continue
        grids = torch.as_tensor(grids).tolist()
        spans += spans_from_runs(token_runs(ids, int(token_id)), grids, int(merge_size))
    spans = [s for s in spans if s.frames > 1]
    if not spans:
        return None
    return VideoLayout(tuple(sorted(spans, key=lambda s: s.start))).check(ids.numel())


def token_order(seq_len: int, layout: VideoLayout | None, name: str, device=None) -> torch.Tensor:
    """The permutation ``order`` (int64 ``[L]``) of ``name``: ``"frame"`` (the prompt's own order) or
    ``"spatial"`` (each span's tokens, in the places they hold, re-laid position-major: spatial
    position 0 of every patch, then position 1, ...; text between patches stays put)."""
    if name not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {name!r}")
    order = torch.arange(seq_len, device=device)
    if name == "frame" or layout is None:
        return order
    for s in layout.check(seq_len).spans:
        pos = s.positions(device)  # [frame, position], ascending when flattened
        order[pos.reshape(-1)] = pos.t().reshape(-1)
    return order


@functools.lru_cache(maxsize=64)
def _check_layout(layout: VideoLayout, seq_len: int) -> None:
    layout._validate(seq_len)  # raises for a bad layout (nothing is cached then)


@functools.lru_cache(maxsize=8)
def _cached_orders(seq_len: int, layout: VideoLayout, device: str) -> torch.Tensor:
    return torch.stack([token_order(seq_len, layout, name, device) for name in ORDERS])


def token_orders(seq_len: int, layout: VideoLayout, device=None) -> torch.Tensor:
    """int64 ``[len(ORDERS), L]``: every order of :data:`ORDERS`, built once per (layout, length,
    device) and shared by every layer of a forward pass (treat it as read-only)."""
    return _cached_orders(seq_len, layout, str(torch.device(device if device is not None else "cpu")))


def inverse(order: torch.Tensor) -> torch.Tensor:
    """``inv`` with ``inv[order[i]] = i``: where each original position sits in the order."""
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    return inv


_ACTIVE: contextvars.ContextVar[VideoLayout | None] = contextvars.ContextVar("unisparse_video_layout", default=None)


@contextlib.contextmanager
def video_layout(layout: VideoLayout | None) -> Iterator[VideoLayout | None]:
    """Inside the block, the ``unisparse`` attention of every enabled model uses ``layout`` for
    prefill calls whose sequence holds all its spans (``None``: no layout, the prompt's own order)."""
    token = _ACTIVE.set(layout)
    try:
        yield layout
    finally:
        _ACTIVE.reset(token)


def active_layout() -> VideoLayout | None:
    """The layout set by the innermost :func:`video_layout` block, or None."""
    return _ACTIVE.get()


@functools.lru_cache(maxsize=32)
def is_identity(order: torch.Tensor) -> bool:
    """Whether ``order`` is the prompt's own (scoring may then skip the keys after a tile's last query).
    Cached by the tensor's identity: every layer of a forward pass gets the same order tensor
    (:func:`token_orders`), so the host sync happens once per prompt."""
    return bool(torch.equal(order, torch.arange(order.numel(), device=order.device)))
