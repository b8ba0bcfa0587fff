"""Frame sampling for Qwen2-VL: uniform frames with their real timestamps, resized to 28-multiples.

Reading: decord first; if decord cannot open a file that PyAV can (decord 0.6 bundles FFmpeg 4.1,
which has no AV1 decoder, for example), PyAV is the fallback: one demux pass finds every frame's
timestamp, then one sequential decode keeps the frames asked for (slower on long files). Both give
frames as displayed: decord applies a display-matrix rotation itself, the PyAV path rotates the
same way, and ``VideoInfo.width/height`` are the displayed size. Timestamps are each frame's
presentation time from the container (decord's ``get_frame_timestamp``), counted from the stream's
start, so variable-frame-rate files give true times. Every failure is a :class:`VideoError` (a
``ValueError``) whose message names the file; no decord/FFmpeg exception escapes.

Semantics follow qwen-vl-utils 0.0.14 (``qwen_vl_utils/vision_process.py``: ``smart_nframes``,
``calculate_video_frame_range``, ``smart_resize``, ``fetch_video``), with these choices:

- Frame count: by ``fps`` (default 2.0), ``n = seconds of [start, end) * fps`` clamped to
  ``[min_frames rounded up to even, max_frames rounded down to even]``, capped at the frames in the
  range, rounded down to even, at least 2. By ``num_frames``: an odd count goes up to the next even
  number (qwen-vl-utils uses Python's half-to-even ``round``), then the same clamp; a count larger
  than the frames in the range repeats frames rather than failing.
- Frames are spaced uniformly in *time* between the first and last frame that start in
  ``[start, end)``, taking the frame nearest each target time; on constant-rate video that is
  qwen-vl-utils' ``linspace(first, last, n).round()`` over frame indices; on variable-rate video
  a frame can repeat where the source has fewer frames than targets. ``end`` past the end is
  clamped; ``start < 0``, ``start >= end`` and ``start >= duration`` are errors; a window shorter
  than one frame gives the frame on screen at ``start``.
- Size: ``smart_resize`` rules (each side rounded to a multiple of ``size_multiple``, at least one
  multiple; over the budget, scaled by ``sqrt(H*W/budget)`` and floored to multiples). The
  per-frame budget is ``max_pixels`` and, with ``total_pixels``, ``total_pixels / T``, so that
  ``T*H*W <= total_pixels``. (qwen-vl-utils allows ``2 * total_pixels / T``: its budget counts the
  T/2 temporal patches, i.e. tokens * 28 * 28; pass twice the value to reproduce it. It also caps
  frames at 768 tokens and raises them to 128 by default; here there is no default cap:
  ``max_pixels=None`` keeps the source size, rounded; a real family's defaults,
  :func:`videoqa.models.families.video_defaults`, set all three as qwen-vl-utils does.)
  ``min_pixels`` scales small frames up, each side rounded up to a multiple, as ``smart_resize``
  does (which can pass ``max_pixels`` by that rounding; a budget below ``min_pixels`` wins). Resizing is bicubic with antialias on
  uint8, as torchvision does.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FRAME_FACTOR = 2  # Qwen2-VL temporal patch: frame counts are even
_BATCH = 32  # frames decoded and resized at a time (bounds memory on long, large videos)


class VideoError(ValueError):
    """A video could not be read, or the request does not fit it."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The path does not exist."""


class NotAVideoError(VideoError):
    """Not a readable video: empty file, text, image, no video stream, no frames, broken header."""


class VideoDecodeError(VideoError):
    """The file opened but its frames could not be decoded (truncated or corrupt)."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration_s: float
    fps: float  # average frame rate
    num_frames: int
    width: int  # as displayed (rotation applied)
    height: int
    codec: str | None = None
    rotation: int = 0  # display rotation in degrees counterclockwise, already applied to frames
    backend: str = "decord"


@dataclass
class VideoFrames:
    frames: torch.Tensor  # uint8 [T, 3, H, W]
    timestamps_s: list[float]  # presentation time of each sampled frame
    info: VideoInfo
    sample_fps: float  # sampled frames per second of the covered span
    indices: list[int]  # source frame indices

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def _short(err: BaseException) -> str:
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()] or [type(err).__name__]
    text = re.sub(r"\[[\d:]+\] \S+?:\d+: ", "", lines[-1])  # drop decord's "[time] file.cc:line: "
    return text[:300]


def _even_up(x: float) -> int:
    return int(math.ceil(x / FRAME_FACTOR) * FRAME_FACTOR)


def _even_down(x: float) -> int:
    return int(math.floor(x / FRAME_FACTOR) * FRAME_FACTOR)


def plan_num_frames(span_s: float, available: int, *, fps=None, num_frames=None,
                    min_frames: int = 4, max_frames: int = 768) -> int:
    """Number of frames to sample from ``available`` frames covering ``span_s`` seconds."""
    if fps is not None and num_frames is not None:
        raise VideoError("give fps or num_frames, not both")
    if min_frames < 1 or max_frames < min_frames:
        raise VideoError(f"need 1 <= min_frames <= max_frames, got {min_frames} and {max_frames}")
    lo, hi = _even_up(min_frames), _even_down(max_frames)
    if hi < max(lo, FRAME_FACTOR):
        raise VideoError(f"no even frame count in [min_frames={min_frames}, max_frames={max_frames}]")
    if num_frames is not None:
        if num_frames < 1:
            raise VideoError(f"num_frames must be >= 1, got {num_frames}")
        return min(max(_even_up(num_frames), lo), hi)
    fps = 2.0 if fps is None else float(fps)
    if not fps > 0:
        raise VideoError(f"fps must be > 0, got {fps}")
    n = min(max(span_s * fps + 1e-3, lo), hi, available)  # 1e-3: 3.9999 s at 2 fps is 8 frames
    return max(FRAME_FACTOR, _even_down(n))


def target_size(height: int, width: int, *, factor: int = 28, min_pixels=None, max_pixels=None):
    """(H, W), multiples of ``factor`` (at least ``factor``), aspect kept, H*W <= max_pixels (a frame
    scaled up to ``min_pixels`` is rounded up, as qwen-vl-utils' ``smart_resize`` does)."""
    if height < 1 or width < 1:
        raise VideoError(f"bad frame size {width}x{height}")
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if max_pixels is not None and h * w > max_pixels:
        if max_pixels < factor * factor:
            raise VideoError(f"pixel budget {max_pixels:.0f} per frame is below one {factor}x{factor} patch")
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
        while h * w > max_pixels:  # extreme aspect ratios, where one side sits at the minimum
            h, w = (h - factor, w) if h >= w else (h, w - factor)
    elif min_pixels is not None and h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        up = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
        if max_pixels is None or min_pixels <= max_pixels:  # a budget below min_pixels wins
            h, w = up
    return h, w


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bicubic, antialiased resize of uint8 NCHW; torch's uint8 kernel (about 9x faster on CPU) if it has one."""
    try:
        return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    except (RuntimeError, NotImplementedError):
        y = F.interpolate(x.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        return y.round_().clamp_(0, 255).to(torch.uint8)


def _probe_av(path: str):
    """(codec, rotation) from PyAV, or (None, 0) when PyAV is missing or fails."""
    try:
        import av

        with av.open(path) as c:
            s = c.streams.video[0]
            rotation = next((f.rotation for f in c.decode(s)), 0) or 0
            return s.codec.canonical_name, int(round(rotation)) % 360
    except Exception:
        return None, 0


class _DecordSource:
    def __init__(self, path: str):
        import decord

        self.vr = decord.VideoReader(path, num_threads=0)
        n = len(self.vr)
        self.ts = self.vr.get_frame_timestamp(list(range(n))).astype(np.float64)
        fps = float(self.vr.get_avg_fps())
        h, w = self.vr.get_batch([0]).asnumpy().shape[1:3]
        codec, rotation = _probe_av(path)
        # End of the last frame; n / fps where that is later (millisecond-rounded Matroska times).
        end = max(self.ts[-1, 1], self.ts[-1, 0] + 1e-3, n / fps if fps > 0 else 0.0)
        self.info = VideoInfo(path, float(end), fps, n, int(w), int(h), codec, rotation, "decord")
        self.ts = self.ts[:, 0]

    def batches(self, indices):
        for i in range(0, len(indices), _BATCH):
            yield indices[i:i + _BATCH], self.vr.get_batch(indices[i:i + _BATCH]).asnumpy()


class _AVSource:
    def __init__(self, path: str):
        import av

        self.path = path
        with av.open(path) as c:
            fmt = c.format.name
            if fmt == "image2" or fmt.endswith("_pipe"):
                raise NotAVideoError(f"{path} is an image ({fmt.removesuffix('_pipe')}), not a video")
            if not c.streams.video:
                raise NotAVideoError(f"{path} has no video stream")
            s = c.streams.video[0]
            tb, rate = float(s.time_base), float(s.average_rate or 25)
            pts = sorted({p.pts for p in c.demux(s) if p.pts is not None and p.size > 0})
        if not pts:
            raise NotAVideoError(f"{path} has no video frames")
        with av.open(path) as c:
            first = next(c.decode(video=0))
            self.k = (int(round(first.rotation or 0)) % 360) // 90 if (first.rotation or 0) % 90 == 0 else 0
            h, w = first.height, first.width
            codec = c.streams.video[0].codec.canonical_name
        self.pts, self.ts = pts, (np.asarray(pts, np.float64) - pts[0]) * tb  # from 0, as decord
        n = len(pts)
        step = (self.ts[-1] - self.ts[0]) / (n - 1) if n > 1 else 1 / rate
        duration = self.ts[-1] + step
        fps = n / duration if duration > 0 else rate
        h, w = (w, h) if self.k % 2 else (h, w)
        self.info = VideoInfo(path, float(duration), float(fps), n, w, h, codec, self.k * 90, "pyav")

    def batches(self, indices):
        import av

        where = {self.pts[i]: i for i in indices}
        found, pending = {}, set(indices)
        with av.open(self.path) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for frame in c.decode(s):
                i = where.get(frame.pts)
                if i is not None and i in pending:
                    found[i] = np.rot90(frame.to_ndarray(format="rgb24"), self.k)
                    pending.discard(i)
                    if len(found) == _BATCH or not pending:
                        yield list(found), np.stack(list(found.values()))
                        found = {}
                if not pending:
                    return
        raise VideoDecodeError(f"{self.path}: {len(pending)} of the requested frames could not be decoded "
                               f"(truncated or corrupt file?)")


def _open(path):
    p = os.fspath(path)
    p = p[len("file://"):] if p.startswith("file://") else p
    if not os.path.exists(p):
        raise VideoNotFoundError(f"video file not found: {p}")
    if not os.path.isfile(p):
        raise NotAVideoError(f"{p} is not a file")
    if os.path.getsize(p) == 0:
        raise NotAVideoError(f"{p} is empty (0 bytes), not a video")
    try:
        return _DecordSource(p)
    except Exception as e:  # decord raises RuntimeError, DECORDError, AssertionError; or is missing
        first = e
    try:
        return _AVSource(p)
    except VideoError:
        raise
    except ImportError as e:
        raise VideoError(f"cannot read {p}: decord failed ({_short(first)}) and PyAV is not installed") from e
    except Exception as e:
        raise NotAVideoError(f"cannot read {p} as a video (not a video, or truncated/corrupt): "
                             f"decord: {_short(first)}; PyAV: {_short(e)}") from e


def read_video_info(path) -> VideoInfo:
    """Duration, average fps, frame count, displayed size, codec and rotation of a video file."""
    return _open(path).info


def sample_frames(path, *, fps=None, num_frames=None, max_frames=768, min_frames=4, start=None,
                  end=None, max_pixels=None, total_pixels=None, size_multiple=28,
                  min_pixels=None) -> VideoFrames:
    """Sample frames uniformly over ``[start, end)`` seconds and resize them for Qwen2-VL.

    See the module docstring for the exact rules. Returns uint8 frames ``[T, 3, H, W]`` with T even
    and H, W multiples of ``size_multiple``.
    """
    src = _open(path)
    info, ts = src.info, src.ts
    t0 = 0.0 if start is None else float(start)
    if t0 < 0:
        raise VideoError(f"start must be >= 0, got {start}")
    if end is not None and float(end) <= t0:
        raise VideoError(f"start ({t0}) must be before end ({end})")
    if t0 >= info.duration_s:
        raise VideoError(f"start {t0:.3f}s is beyond the end of {info.path} ({info.duration_s:.3f}s)")
    t1 = info.duration_s if end is None else min(float(end), info.duration_s)
    inside = np.nonzero((ts >= t0 - 1e-6) & (ts < t1 - 1e-6))[0]
    if inside.size == 0:  # a window shorter than one frame: the frame on screen at start
        inside = np.array([max(0, int(np.searchsorted(ts, t0, side="right")) - 1)])
    last = int(inside[-1])
    span = (ts[last + 1] if last + 1 < len(ts) else info.duration_s) - ts[inside[0]]
    n = plan_num_frames(t1 - t0, inside.size, fps=fps, num_frames=num_frames,
                        min_frames=min_frames, max_frames=max_frames)
    seg = ts[inside]
    targets = np.linspace(seg[0], seg[-1], n)
    j = np.clip(np.searchsorted(seg, targets), 1, max(1, len(seg) - 1))
    if len(seg) > 1:
        j = np.where(targets - seg[j - 1] <= seg[j] - targets, j - 1, j)
    else:
        j = np.zeros(n, dtype=np.int64)
    idx = inside[j].astype(np.int64)

    budget = None if max_pixels is None else float(max_pixels)
    if total_pixels is not None:
        budget = total_pixels / n if budget is None else min(budget, total_pixels / n)
    h, w = target_size(info.height, info.width, factor=size_multiple, min_pixels=min_pixels, max_pixels=budget)

    unique = sorted(set(idx.tolist()))
    out = torch.empty((len(unique), 3, h, w), dtype=torch.uint8)
    slot = {i: k for k, i in enumerate(unique)}
    try:
        for got, arr in src.batches(unique):
            x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
            out[[slot[i] for i in got]] = x if x.shape[-2:] == (h, w) else _resize(x, h, w)
    except VideoError:
        raise
    except Exception as e:
        raise VideoDecodeError(f"could not decode frames of {info.path} (truncated or corrupt file?): "
                               f"{_short(e)}") from e
    frames = out[torch.as_tensor([slot[i] for i in idx.tolist()])] if len(unique) < n else out
    return VideoFrames(frames, [float(ts[i]) for i in idx], info, float(n / span) if span > 0 else float(n),
                       idx.tolist())
