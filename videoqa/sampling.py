"""Which frames of a video the model sees: one small value that travels from the caller to the sampler.

``answer(video, q, sampling=FrameSampling(fps=1, max_frames=64))`` and the shorthand
``answer(video, q, fps=1, max_frames=64)`` mean the same. Unset fields (None) take the model's
own defaults (``LoadedModel.video_defaults``); the rules themselves are
:func:`videoqa.video.sample_frames`'s.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class FrameSampling:
    """Frame sampling options; None means "the model's default"."""

    fps: float | None = None  # frames per second over [start, end)
    num_frames: int | None = None  # an exact count instead of fps
    max_frames: int | None = None
    max_pixels: int | None = None  # per frame
    min_pixels: int | None = None  # per frame: smaller frames are scaled up to it (within the budget)
    total_pixels: int | None = None  # over all frames
    start: float | None = None  # seconds
    end: float | None = None

    @classmethod
    def from_options(cls, sampling: "FrameSampling | None" = None, **options) -> "FrameSampling":
        """``sampling`` with keyword options laid over it; a TypeError names an unknown option."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"unknown frame sampling option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        base = sampling if sampling is not None else cls()
        if not isinstance(base, cls):
            raise TypeError(f"sampling must be a FrameSampling, got {type(base).__name__}")
        return dataclasses.replace(base, **{k: v for k, v in options.items() if v is not None})

    def given(self) -> dict:
        """The fields that are set."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def resolve(self, defaults: Mapping) -> dict:
        """Keyword arguments for :func:`videoqa.video.sample_frames`: ``defaults`` overridden by the
        fields that are set (a given ``num_frames`` replaces a default ``fps``)."""
        kwargs = dict(defaults)
        if self.num_frames is not None:
            kwargs.pop("fps", None)
        kwargs.update(self.given())
        return kwargs
