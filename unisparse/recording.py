"""Per-layer recording of what the sparse prefill did: masks, densities, times.

Off by default and free when off (one ``None`` check per attention call). Inside
``with unisparse.record() as rec:`` every prefill attention call served by UniSparse appends a
:class:`LayerRecord`; calls that went to dense attention append one too, with the reason. Nested
blocks each get every record.
Masks are kept on the CPU, bit-packed (1 bit per block), so a 28-layer, 28-head 32K-token
prefill costs about 6 MB.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np
import torch

_ACTIVE: list["Recording"] = []


@dataclasses.dataclass(eq=False)  # compared by identity: the packed mask is an array
class LayerRecord:
    """One attention call of one layer during prefill."""

    layer: int | None
    seq_len: int
    block_size: int
    path: str  # "sparse", or why it ran dense ("short", "dense_layer", "above_break_even", ...)
    density: float  # of what ran: the kept blocks when sparse, 1.0 when dense
    selection_ms: float = 0.0
    attention_ms: float = 0.0
    # When a selection ran: the density it chose, and the density above which the call runs dense
    # (None: no fallback). A call with path "above_break_even" had selected_density > max_density.
    selected_density: float | None = None
    max_density: float | None = None
    # With a video layout: each query head's token order (row 0), "frame" or "spatial"; the mask's
    # blocks are in that order (None: every head in the prompt's order, no layout in force).
    head_orders: tuple[str, ...] | None = None
    mask_shape: tuple[int, ...] | None = None
    packed_mask: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @property
    def mask(self) -> torch.Tensor | None:
        """The selected block mask, bool ``[B, Hq, nb, nb]`` on the CPU (None when nothing was selected)."""
        if self.packed_mask is None:
            return None
        count = int(np.prod(self.mask_shape))
        bits = np.unpackbits(self.packed_mask, count=count).astype(bool)
        return torch.from_numpy(bits.reshape(self.mask_shape))

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("packed_mask")
        return out


@dataclasses.dataclass(eq=False)
class Recording:
    """All records of one ``record()`` block, in call order."""

    keep_masks: bool = True
    layers: list[LayerRecord] = dataclasses.field(default_factory=list)

    @property
    def sparse_layers(self) -> list[LayerRecord]:
        return [r for r in self.layers if r.path == "sparse"]

    def mean_density(self) -> float:
        """Mean density over all recorded prefill calls (dense calls count as 1.0)."""
        return float(np.mean([r.density for r in self.layers])) if self.layers else 1.0

    def total_ms(self) -> tuple[float, float]:
        """(selection, attention) milliseconds summed over the sparse calls."""
        return (sum(r.selection_ms for r in self.layers), sum(r.attention_ms for r in self.layers))

    def add(self, record: LayerRecord, mask: torch.Tensor | None = None) -> None:
        if mask is not None and self.keep_masks:
            record.mask_shape = tuple(mask.shape)
            record.packed_mask = np.packbits(mask.detach().cpu().numpy().reshape(-1))
        self.layers.append(record)

    def clear(self) -> None:
        self.layers.clear()


@contextlib.contextmanager
def record(keep_masks: bool = True):
    """Collect a :class:`LayerRecord` per prefill attention call made inside the block."""
    rec = Recording(keep_masks=keep_masks)
    _ACTIVE.append(rec)
    try:
        yield rec
    finally:
        del _ACTIVE[next(i for i, r in enumerate(_ACTIVE) if r is rec)]  # by identity: records hold arrays


def active() -> "Recording | _Every | None":
    """Where a call's record goes: the active recording, every active one when ``record()`` blocks
    are nested (a caller's outer block sees what an inner one, e.g. the pipeline's, records), or
    None (the common, free case)."""
    if not _ACTIVE:
        return None
    return _ACTIVE[0] if len(_ACTIVE) == 1 else _Every(list(_ACTIVE))


class _Every:
    """Nested recordings: each gets its own copy of every record (masks kept as each one asks)."""

    def __init__(self, recordings: list[Recording]):
        self.recordings = recordings

    def add(self, record: LayerRecord, mask: torch.Tensor | None = None) -> None:
        for rec in self.recordings:
            rec.add(dataclasses.replace(record), mask)


def device_clock(device: torch.device | None = None) -> float:
    """``time.perf_counter()`` after the device's queued work is done (CUDA is synchronised; the CPU
    needs nothing), so that differences are device time, not launch time. The one clock every
    timing in the project reads."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Stopwatch:
    """``with Stopwatch(device) as t: ...`` then ``t.ms``: device time of the block in milliseconds
    (0.0 when ``enabled`` is false)."""

    def __init__(self, device: torch.device, enabled: bool = True):
        self.device, self.enabled, self.ms = device, enabled, 0.0

    def __enter__(self):
        if self.enabled:  # off: no synchronisation, nothing measured
            self.start = device_clock(self.device)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.ms = (device_clock(self.device) - self.start) * 1e3
        return False
