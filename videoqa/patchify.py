"""Qwen2-VL's video pixel input (``pixel_values_videos``, ``video_grid_thw``) without torchvision.

Why this exists: transformers' ``Qwen2VLVideoProcessor`` (and qwen-vl-utils' ``fetch_video``) import
torchvision, and no torchvision build imports beside the CPU torch this project runs on. Frames
come from :func:`videoqa.video.sample_frames` already sampled and resized (uint8 ``[T, 3, H, W]``,
H and W multiples of ``patch_size * merge_size``), so the only step left is the part of the video
processor that turns pixels into patches. It is arithmetic, written here from reading
``transformers/models/qwen2_vl/video_processing_qwen2_vl.py`` (5.23) and checked against it by
``tests/test_prompt.py`` whenever torchvision is importable, and always against an independent
loop-based implementation and against transformers' PIL image processor (which needs no
torchvision) on videos whose frame pairs are equal.

What the video processor does, and this module repeats:

1. Rescale and normalise in float32, fused as transformers fuses it:
   ``(x - 255 * mean) / (255 * std)`` per channel, with the OpenAI CLIP mean and std.
2. Pad T to a multiple of ``temporal_patch_size`` by repeating the last frame (our sampler always
   gives an even T, so this only matters for frames from elsewhere).
3. Cut ``temporal_patch_size x patch_size x patch_size`` patches (2 x 14 x 14) and order them so
   that the 2 x 2 patches one merged token covers are consecutive: rows are ordered by
   (t, h-block, w-block, h-in-block, w-in-block), and each row is flattened as
   (channel, frame-in-patch, y, x): ``3 * 2 * 14 * 14 = 1176`` values.

``video_grid_thw`` is ``(T / 2, H / 14, W / 14)``; the language model sees
``grid_t * grid_h * grid_w / merge_size**2`` video tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import torch

# transformers.utils.constants.OPENAI_CLIP_MEAN / _STD (the values Qwen2-VL's processors use).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_CHUNK = 16  # temporal patches normalised at a time: bounds the float32 working copy


@dataclass(frozen=True)
class PatchSpec:
    """Patch geometry and normalisation of a Qwen2-VL family vision tower (defaults: Qwen2-VL)."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255

    @property
    def factor(self) -> int:
        """Frame sides must be multiples of this (28 for Qwen2-VL)."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_dict(cls, d: dict, default: "PatchSpec | None" = None) -> "PatchSpec":
        """From a ``preprocessor_config.json`` / ``video_preprocessor_config.json`` dict; missing keys
        keep ``default``'s values (Qwen2-VL's when None)."""
        kw = {k: d[k] for k in ("patch_size", "temporal_patch_size", "merge_size", "rescale_factor") if d.get(k)}
        for k in ("image_mean", "image_std"):
            if d.get(k) is not None:
                kw[k] = tuple(float(v) for v in d[k])
        return dataclasses.replace(default or cls(), **kw)

    @classmethod
    def from_pretrained(cls, path, default: "PatchSpec | None" = None) -> "PatchSpec":
        """Read the geometry from a model directory's processor configs (``default`` if there are none)."""
        for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
            p = os.path.join(os.fspath(path), name)
            if os.path.isfile(p):
                with open(p, encoding="utf-8") as f:
                    return cls.from_dict(json.load(f), default)
        return default or cls()

    def to_dict(self) -> dict:
        return {"patch_size": self.patch_size, "temporal_patch_size": self.temporal_patch_size,
                "merge_size": self.merge_size, "image_mean": list(self.image_mean),
                "image_std": list(self.image_std), "rescale_factor": self.rescale_factor}


def grid_thw(num_frames: int, height: int, width: int, spec: PatchSpec = PatchSpec()) -> tuple[int, int, int]:
    """``(grid_t, grid_h, grid_w)`` for frames of this shape (T padded up to the temporal patch)."""
    tp = spec.temporal_patch_size
    return (num_frames + tp - 1) // tp, height // spec.patch_size, width // spec.patch_size


def num_video_tokens(grid, merge_size: int = 2) -> int:
    """Language-model tokens of one video: ``grid_t * grid_h * grid_w / merge_size**2``."""
    t, h, w = (int(v) for v in grid)
    return t * h * w // (merge_size * merge_size)


def _check(frames: torch.Tensor, spec: PatchSpec) -> None:
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor [T, 3, H, W], got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [T, 3, H, W], got shape {tuple(frames.shape)}")
    t, _, h, w = frames.shape
    if t < 1:
        raise ValueError("frames is empty (T = 0)")
    f = spec.factor
    if h % f or w % f or h < f or w < f:
        raise ValueError(f"frame height and width must be positive multiples of {f}, got {h}x{w} "
                         "(sample with videoqa.video.sample_frames, which resizes to them)")


def patchify_video(frames: torch.Tensor, spec: PatchSpec = PatchSpec(), *,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``(pixel_values_videos [grid_t*grid_h*grid_w, 3*tp*p*p], (grid_t, grid_h, grid_w))``.

    ``frames``: ``[T, 3, H, W]``, uint8 (0-255) or float on the same 0-255 scale, RGB. The result
    equals ``Qwen2VLVideoProcessor(do_resize=False)`` on the same frames (float32, up to rounding
    of the fused normalisation). The float32 output is as large as the frames in float32; it is
    filled a few temporal patches at a time so the peak stays near the output's size.
    """
    _check(frames, spec)
    tp, p, m = spec.temporal_patch_size, spec.patch_size, spec.merge_size
    if pad := -frames.shape[0] % tp:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
    t, c, h, w = frames.shape
    gt, gh, gw = t // tp, h // p, w // p
    per_t = gh * gw
    out = torch.empty(gt * per_t, c * tp * p * p, dtype=dtype, device=frames.device)
    mean = torch.tensor(spec.image_mean, dtype=torch.float32, device=frames.device) * (1.0 / spec.rescale_factor)
    std = torch.tensor(spec.image_std, dtype=torch.float32, device=frames.device) * (1.0 / spec.rescale_factor)
    mean, std = mean.view(1, c, 1, 1), std.view(1, c, 1, 1)
    for t0 in range(0, gt, _CHUNK):
        t1 = min(gt, t0 + _CHUNK)
        x = (frames[t0 * tp:t1 * tp].to(torch.float32) - mean) / std
        # [t, tp, c, h/m/p... ] -> rows (t, hb, wb, hi, wi), columns (c, tp, py, px)
        x = x.view(t1 - t0, tp, c, gh // m, m, p, gw // m, m, p)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        out[t0 * per_t:t1 * per_t] = x.reshape((t1 - t0) * per_t, c * tp * p * p)
    return out, (gt, gh, gw)
