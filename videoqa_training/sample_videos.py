"""Generate the small sample videos in ``videoqa/assets/samples/`` and their ``manifest.json``.

Everything is drawn with numpy (no fonts, no downloads) and encoded with PyAV, single-threaded,
with the container and codec ``bitexact`` flags, so two runs with the same PyAV build write
byte-identical files (another PyAV/FFmpeg build may encode different bytes; the decoded frames
then still show the same content). Existing files are kept unless ``--force`` is given; the
manifest is always rewritten (it depends only on the specs below, not on the encoder).

    python -m videoqa_training.sample_videos [--out videoqa/assets/samples] [--force] [--only NAME ...]

The manifest lists, per file, container, codec, size, frame rate, duration and ground-truth
``facts`` (which digit is shown when, when the scene changes, when the triangle appears, ...)
from which question/answer pairs can be generated. Codec notes:

- H.264 4:2:0 needs even width and height, so ``odd_size.mp4`` (321x177) is H.264 4:4:4
  (High 4:4:4 Predictive profile), which allows odd sizes and which FFmpeg-based readers decode.
- ``rotated.mp4`` is stored 320x240 with a display matrix rotating it 90 degrees
  counterclockwise, as phones store portrait clips: players (and decord) show it 240x320.
- ``vfr.mp4`` has explicit non-uniform timestamps (time base 1/1000 s): 30, then 5, then 15 fps.
- ``av1.mp4`` (AV1 by SVT-AV1) cannot be decoded by decord 0.6's bundled FFmpeg 4.1; it exercises
  the PyAV fallback. A file whose encoder this PyAV build lacks is skipped with a warning.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only, not its banner

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "videoqa" / "assets" / "samples"

# ----------------------------------------------------------------------------- drawing


def canvas(h: int, w: int, color) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = color
    return img


def fill_rect(img, x0, y0, x1, y1, color) -> None:
    h, w = img.shape[:2]
    x0, x1 = max(0, int(round(x0))), min(w, int(round(x1)))
    y0, y1 = max(0, int(round(y0))), min(h, int(round(y1)))
    if x1 > x0 and y1 > y0:
        img[y0:y1, x0:x1] = color


def fill_circle(img, cx, cy, r, color) -> None:
    yy, xx = np.ogrid[: img.shape[0], : img.shape[1]]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = color


def fill_triangle(img, pts, color) -> None:
    """Filled triangle from three (x, y) points (barycentric sign test)."""
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    (x0, y0), (x1, y1), (x2, y2) = pts

    def side(ax, ay, bx, by):
        return (xx - bx) * (ay - by) - (ax - bx) * (yy - by)

    d1, d2, d3 = side(x0, y0, x1, y1), side(x1, y1, x2, y2), side(x2, y2, x0, y0)
    neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    img[~(neg & pos)] = color


# Seven-segment digits: segment name -> box (x0, y0, x1, y1) in a digit cell of 100 x 180 units.
SEGMENTS = {
    "a": (15, 0, 85, 20), "b": (80, 10, 100, 90), "c": (80, 90, 100, 170), "d": (15, 160, 85, 180),
    "e": (0, 90, 20, 170), "f": (0, 10, 20, 90), "g": (15, 80, 85, 100),
}
DIGIT_SEGMENTS = {
    0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg",
    5: "acdfg", 6: "acdefg", 7: "abc", 8: "abcdefg", 9: "abcdfg",
}
# Where the digit cell sits in counting.mp4 (320x240): origin and scale (1 unit = 1 pixel).
DIGIT_ORIGIN = (110, 30)


def segment_box(name: str, origin=DIGIT_ORIGIN, scale: float = 1.0):
    x0, y0, x1, y1 = SEGMENTS[name]
    ox, oy = origin
    return ox + x0 * scale, oy + y0 * scale, ox + x1 * scale, oy + y1 * scale


def draw_digit(img, digit: int, color, origin=DIGIT_ORIGIN, scale: float = 1.0) -> None:
    for name in DIGIT_SEGMENTS[digit]:
        fill_rect(img, *segment_box(name, origin, scale), color)


# ----------------------------------------------------------------------------- encoding


def encode(path: Path, frames, *, width: int, height: int, fps: int, codec: str = "libx264",
           pix_fmt: str = "yuv420p", pts_ms=None, rotation: int | None = None,
           options: dict | None = None, container_options: dict | None = None) -> None:
    """Encode an iterable of RGB uint8 [H, W, 3] frames. ``pts_ms``: explicit timestamps in ms."""
    import av

    path = Path(path)
    tmp = path.with_name(path.name + ".part" + path.suffix)
    container = av.open(str(tmp), "w", options={"fflags": "+bitexact", **(container_options or {})})
    try:
        stream = container.add_stream(codec, rate=fps, options=dict(options or {}))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.thread_count = 1
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = int(pts_ms[i]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    finally:
        container.close()
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the samples


@dataclass
class Sample:
    name: str
    description: str
    width: int
    height: int
    fps: int
    num_frames: int
    draw: Callable[[int], np.ndarray]  # frame index -> RGB [H, W, 3] (stored orientation)
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    options: dict = field(default_factory=dict)
    pts_ms: list | None = None
    rotation: int | None = None
    facts: dict = field(default_factory=dict)

    @property
    def container(self) -> str:
        return {".mp4": "mp4", ".mkv": "matroska", ".webm": "webm"}[Path(self.name).suffix]

    @property
    def duration_s(self) -> float:
        if self.pts_ms is None:
            return self.num_frames / self.fps
        return self.pts_ms[-1] / 1000.0 + 1.0 / self.fps  # last frame shown 1/fps (fps: the top rate)


X264 = {"preset": "medium", "crf": "23", "g": "48"}

# shapes.mp4: red circle left -> right over the whole clip, blue square fixed lower left, green
# triangle appearing in the lower right at 6.0 s.
SHAPES_BG, TRIANGLE_T = (235, 235, 235), 6.0


def circle_x(t: float) -> float:
    return 30 + 260 * t / 10.0


def draw_shapes(i: int) -> np.ndarray:
    t = i / 24
    img = canvas(240, 320, SHAPES_BG)
    fill_rect(img, 40, 150, 90, 200, (30, 60, 220))
    if t >= TRIANGLE_T:
        fill_triangle(img, [(240, 140), (200, 210), (280, 210)], (30, 170, 40))
    fill_circle(img, circle_x(t), 70, 20, (220, 30, 30))
    return img


def draw_counting(i: int) -> np.ndarray:
    img = canvas(240, 320, (0, 0, 0))
    draw_digit(img, i // 24 + 1, (255, 255, 255))
    return img


SCENE_CHANGE_T = 5.0


def draw_scene(i: int) -> np.ndarray:
    t = i / 24
    if t < SCENE_CHANGE_T:  # blue world: sky, sea, a white boat sailing right
        img = canvas(240, 320, (110, 170, 235))
        fill_rect(img, 0, 130, 320, 240, (20, 60, 160))
        x = 20 + 40 * t
        fill_triangle(img, [(x, 125), (x + 40, 125), (x + 20, 100)], (250, 250, 250))
    else:  # red world: red desert, orange sky, a yellow sun rising
        img = canvas(240, 320, (230, 110, 40))
        fill_rect(img, 0, 130, 320, 240, (190, 40, 30))
        fill_circle(img, 240, 110 - 15 * (t - SCENE_CHANGE_T), 25, (250, 220, 40))
    return img


def draw_portrait(i: int) -> np.ndarray:
    img = canvas(320, 180, (250, 250, 250))
    fill_circle(img, 90, 30 + 260 * (i / 24) / 4.0, 22, (220, 30, 30))
    return img


def draw_odd(i: int) -> np.ndarray:
    img = canvas(177, 321, (40, 40, 40))
    fill_rect(img, 10 + 8 * i, 60, 60 + 8 * i, 110, (40, 200, 60))
    fill_rect(img, 320, 0, 321, 177, (255, 0, 255))  # last column magenta: width is really odd
    return img


def draw_bouncing(color):
    def draw(i: int) -> np.ndarray:
        t = i / 24
        img = canvas(240, 320, (20, 20, 60))
        fill_circle(img, 40 + 60 * t, 200 - 150 * abs(np.sin(np.pi * t)), 18, color)
        return img
    return draw


def draw_rotated(i: int) -> np.ndarray:
    # Drawn as displayed (240 wide, 320 tall): red band at the top, a blue ball falling.
    img = canvas(320, 240, (245, 245, 245))
    fill_rect(img, 0, 0, 240, 40, (220, 30, 30))
    fill_circle(img, 120, 80 + 50 * i / 24, 20, (30, 60, 220))
    return np.rot90(img, k=-1)  # stored clockwise; the display matrix turns it back (CCW 90)


def vfr_pts_ms() -> list[int]:
    """0-2 s at 30 fps, 2-4 s at 5 fps, 4-6 s at about 15 fps with seeded jitter."""
    rng = np.random.default_rng(1234)
    pts = [round(1000 * k / 30) for k in range(60)] + [2000 + 200 * k for k in range(10)]
    t = 4000
    while t < 6000:
        pts.append(t)
        t += int(rng.integers(50, 84))
    return pts


VFR_PTS = vfr_pts_ms()
VFR_DURATION = 6.0
VFR_PHASES = [(0.0, 2.0, 30, (60, 60, 60)), (2.0, 4.0, 5, (20, 30, 110)), (4.0, 6.0, 15, (20, 100, 40))]


def vfr_bar_x(t: float) -> float:
    return 8 + (320 - 24) * t / VFR_DURATION


def draw_vfr(i: int) -> np.ndarray:
    t = VFR_PTS[i] / 1000
    color = next(c for a, b, _, c in VFR_PHASES if a <= t < b)
    img = canvas(240, 320, color)
    fill_rect(img, vfr_bar_x(t), 40, vfr_bar_x(t) + 8, 200, (255, 255, 255))
    return img


LONG_COLORS = [("red", (220, 30, 30)), ("green", (30, 180, 40)), ("blue", (30, 60, 220)),
               ("yellow", (240, 220, 30)), ("cyan", (30, 210, 220)), ("magenta", (210, 40, 200)),
               ("white", (245, 245, 245)), ("orange", (245, 140, 20)), ("purple", (110, 40, 160)),
               ("gray", (128, 128, 128)), ("pink", (250, 160, 190)), ("brown", (120, 70, 30))]


def draw_long(i: int) -> np.ndarray:
    t = i / 10
    img = canvas(64, 64, LONG_COLORS[int(t // 10)][1])
    a = 2 * np.pi * t / 10
    fill_circle(img, 32 + 20 * np.cos(a), 32 + 20 * np.sin(a), 5, (0, 0, 0))
    return img


def _spans(values, seconds):
    return [{"start_s": float(k * seconds), "end_s": float((k + 1) * seconds), "value": v}
            for k, v in enumerate(values)]


SAMPLES = [
    Sample("shapes.mp4", "Moving coloured shapes on a light gray background.", 320, 240, 24, 240,
           draw_shapes, options=X264, facts={
               "red_circle": {"motion": "left to right", "y": 70, "radius": 20,
                              "center_x_at": [{"time_s": float(t), "x": circle_x(t)} for t in range(0, 11, 2)]},
               "blue_square": {"motion": "static", "box_xyxy": [40, 150, 90, 200]},
               "green_triangle": {"appears_at_s": TRIANGLE_T, "position": "lower right",
                                  "box_xyxy": [200, 140, 280, 210]},
               "events": [{"time_s": TRIANGLE_T, "event": "a green triangle appears"}]}),
    Sample("counting.mp4", "A white seven-segment digit on black counting 1 to 9, one per second.",
           320, 240, 24, 216, draw_counting, options=X264, facts={
               "digits": _spans(list(range(1, 10)), 1.0),
               "digit_cell": {"origin_xy": list(DIGIT_ORIGIN), "size_wh": [100, 180]},
               "events": [{"time_s": float(d - 1), "event": f"the digit {d} is shown"} for d in range(1, 10)]}),
    Sample("scene_change.mp4", "A blue sea world with a sailing boat cuts to a red desert world with a sun.",
           320, 240, 24, 192, draw_scene, options=X264, facts={
               "scene_change_s": SCENE_CHANGE_T,
               "events": [{"time_s": SCENE_CHANGE_T, "event": "the scene changes from a blue sea to a red desert"}],
               "scenes": [{"start_s": 0.0, "end_s": SCENE_CHANGE_T, "dominant_color": "blue",
                           "content": "sky and sea, a white boat sailing right"},
                          {"start_s": SCENE_CHANGE_T, "end_s": 8.0, "dominant_color": "red",
                           "content": "red desert under an orange sky, a yellow sun rising"}]}),
    Sample("portrait.mp4", "Portrait clip: a red ball falls from top to bottom on white.", 180, 320, 24, 96,
           draw_portrait, options=X264, facts={"red_ball": {"motion": "top to bottom"}}),
    Sample("odd_size.mp4", "Odd size 321x177 (H.264 4:4:4): a green square moving right; last column magenta.",
           321, 177, 24, 72, draw_odd, pix_fmt="yuv444p", options=X264,
           facts={"green_square": {"motion": "left to right"}, "last_column_color": "magenta"}),
    Sample("rotated.mp4", "Stored 320x240 with a 90-degree display rotation; shown 240x320: red band on top, "
           "a blue ball falling.", 320, 240, 24, 72, draw_rotated, options=X264, rotation=90,
           facts={"display_size_wh": [240, 320], "red_band": "top (as displayed)"}),
    Sample("vfr.mp4", "Variable frame rate: a white bar moving right, its x position encodes the time.",
           320, 240, 30, len(VFR_PTS), draw_vfr, options=X264, pts_ms=VFR_PTS, facts={
               "phases": [{"start_s": a, "end_s": b, "fps": f, "background_rgb": list(c)}
                          for a, b, f, c in VFR_PHASES],
               "bar_x_left": "8 + 296 * t / 6.0 (pixels, t in seconds)"}),
    Sample("mpeg4.mkv", "MPEG-4 Part 2 in Matroska: a yellow ball bouncing to the right.", 320, 240, 24, 96,
           draw_bouncing((240, 220, 30)), codec="mpeg4", options={"qscale": "4", "g": "48"},
           facts={"ball": {"color": "yellow", "motion": "bouncing, moving right"}}),
    Sample("vp9.webm", "VP9 in WebM: a cyan ball bouncing to the right.", 320, 240, 24, 96,
           draw_bouncing((30, 210, 220)), codec="libvpx-vp9",
           options={"deadline": "good", "cpu-used": "4", "crf": "40", "b": "0", "g": "48"},
           facts={"ball": {"color": "cyan", "motion": "bouncing, moving right"}}),
    Sample("av1.mp4", "AV1 (SVT-AV1) in MP4: a magenta ball bouncing to the right (decord cannot decode AV1).",
           320, 240, 24, 48, draw_bouncing((210, 40, 200)), codec="libsvtav1",
           options={"preset": "10", "crf": "40", "svtav1-params": "lp=1"},
           facts={"ball": {"color": "magenta", "motion": "bouncing, moving right"}}),
    Sample("long.mp4", "Two minutes at 64x64, 10 fps: the background colour changes every 10 s; a black dot circles.",
           64, 64, 10, 1200, draw_long, options={"preset": "medium", "crf": "28", "g": "100"},
           facts={"background_colors": _spans([name for name, _ in LONG_COLORS], 10.0),
                  "colors_rgb": {name: list(rgb) for name, rgb in LONG_COLORS},
                  "events": [{"time_s": 10.0 * k, "event": f"the background turns {name}"}
                             for k, (name, _) in enumerate(LONG_COLORS) if k]}),
]


CODEC_NAMES = {"libx264": "h264", "libvpx-vp9": "vp9", "libsvtav1": "av1", "mpeg4": "mpeg4"}


def manifest_entry(s: Sample) -> dict:
    w, h = (s.height, s.width) if s.rotation in (90, -90, 270) else (s.width, s.height)
    return {"file": s.name, "description": s.description, "container": s.container,
            "codec": CODEC_NAMES.get(s.codec, s.codec), "encoder": s.codec, "pix_fmt": s.pix_fmt, "width": w, "height": h, "stored_width": s.width,
            "stored_height": s.height, "rotation_ccw_deg": s.rotation or 0,
            "fps": s.fps if s.pts_ms is None else round(s.num_frames / s.duration_s, 4),
            "variable_frame_rate": s.pts_ms is not None, "num_frames": s.num_frames,
            "duration_s": round(s.duration_s, 4), "facts": s.facts}


def encoder_available(codec: str) -> bool:
    import av

    try:
        av.codec.Codec(codec, "w")
        return True
    except Exception:
        return False


def generate_all(out_dir: str | Path = DEFAULT_OUT, *, force: bool = False, only=None,
                 verbose: bool = False) -> dict:
    """Write the samples (all, or those named in ``only``) and manifest.json; return the manifest.

    A sample whose encoder is missing from this PyAV build is skipped and left out of the manifest.
    When decord is already imported, the work runs in a fresh Python process: decord loads its
    bundled FFmpeg 4.1 and libvpx with RTLD_GLOBAL, and PyAV's libvpx (VP9) encoder then binds to
    that older libvpx and fails to open (EINVAL).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "decord" in sys.modules:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(out)]
        cmd += ["--force"] * force + [a for name in (only or ()) for a in ("--only", name)]
        subprocess.run(cmd, check=True, stdout=None if verbose else subprocess.DEVNULL)
        return json.loads((out / "manifest.json").read_text())
    entries = []
    for s in SAMPLES:
        if only is not None and s.name not in only:
            continue
        path = out / s.name
        if not encoder_available(s.codec):
            print(f"warning: encoder {s.codec} not available, skipping {s.name}", file=sys.stderr)
            continue
        if force or not path.exists():
            encode(path, (s.draw(i) for i in range(s.num_frames)), width=s.width, height=s.height,
                   fps=s.fps, codec=s.codec, pix_fmt=s.pix_fmt, pts_ms=s.pts_ms, rotation=s.rotation,
                   options=s.options)
            if verbose:
                print(f"wrote {path} ({path.stat().st_size} bytes)")
        elif verbose:
            print(f"kept {path}")
        entries.append(manifest_entry(s))
    manifest = {"generator": "videoqa_training/sample_videos.py", "videos": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default videoqa/assets/samples)")
    parser.add_argument("--force", action="store_true", help="re-encode files that already exist")
    parser.add_argument("--only", action="append", help="just this file (repeatable)")
    args = parser.parse_args(argv)
    generate_all(args.out, force=args.force, only=set(args.only) if args.only else None, verbose=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
