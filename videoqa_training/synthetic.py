"""Synthetic video QA examples whose answers are known by construction, generated in memory.

Why synthetic: the default model's vision tower starts from random weights and no video data
set can be downloaded here. The project's sample videos (``videoqa_training/sample_videos.py``) are
flat coloured shapes, seven-segment digits and colour scenes; this module draws the same kind
of frames (its own code, numpy, no fonts or files) with randomised content and asks questions
whose answers follow from what was drawn:

================  ===========================================================  =====================
kind              question (one of a few phrasings)                            answers
================  ===========================================================  =====================
``color``         What colour is the triangle?  (1-3 shapes, distinct)         12 colour names
``shape``         What shape is the red object?                                circle/square/...
``digit``         Which digit is shown?  (seven-segment)                       0-9
``count``         How many circles are there?  (1-6, plus other shapes)        1-6
``motion``        In which direction does the red circle move?                 4 directions
``scene``         What colour is the background at the end of the video?      12 colour names
``scene_change``  Does the scene change during the video?                      yes/no
``needle_digit``  A digit appears briefly. Which digit is it?                  0-9
``needle_color``  A shape flashes briefly. What colour is it?                  12 colour names
``needle_time``   When does the ... appear: at the beginning, middle or end?   beginning/middle/end
``mover``         What moves from left to right?  (1-2 static shapes too)      a red circle/nothing
``appear``        Which shape appears partway through the video?               circle/square/...
``clip_color``    What colour is the ball?  (a clip: it moves, others appear)  12 colour names
``travel``        Which way does the ball travel overall?  (it may bounce)     to the right/.../stays
``digit_seq``     Which digit is shown first / last?  Largest?  How many?      0-9
``where``         Where is the red band (or the red circle) in the picture?    at the top/.../right
``does``          What does the ball do?  (travel's clips, 4-24 frames)        it falls/.../stays
================  ===========================================================  =====================

The last five (:data:`CLIP_KINDS`) ask what the project's sample clips are asked
(``data/videomme-sample``: a circle crossing ``shapes.mp4`` while a triangle appears, the
bouncing balls, ``counting.mp4``'s digits) about new renders: 8-24 frames in which things move,
appear and follow one another. They are drawn for training and their own suite; :data:`KINDS`
(the held-out single and needle suites, and the training-time evaluation) leaves them out so
those numbers stay comparable across sessions.

``digit_on_color`` (:data:`STILL_KINDS`, also outside :data:`KINDS`) is a static digit drawn the
way a needle digit is: on a palette colour, with the haystack's circling dot. ``digit`` pictures
only ever have one of four plain backgrounds, and a model trained on them read 27/30 digits on
those but 16/30 of the same digits on palette colours, and 15/30 needle digits even in 4-frame
videos (docs/default-model.md): the needle digits' gap was one of rendering, not of length.

A "needle" is a distinctive shape or digit shown on ``needle_frames`` consecutive frames (2 by
default) at a chosen depth among many near-identical haystack frames (a plain background with
a small dot circling, like ``long.mp4``). Every example is either free-form (``target`` is the
short answer, the question says how to answer) or 4-option multiple choice (``target`` is the
letter; the prompt is :func:`videoqa.choices.multiple_choice_prompt`'s, exactly what the
pipeline sends). ``mc=None`` picks either with equal odds.

Determinism and splits: :func:`make_example` is a pure function of ``(split, index, arguments)``:
its random stream is seeded by ``(SPLITS[split], index, kind, ...)``. ``"train"`` and
``"heldout"`` draw from different seeds, so held-out examples are new renders of the same tasks
(other colours, positions, sizes, digits), never copies of training ones.

Colours are ``long.mp4``'s twelve named colours (same RGB), each drawn with a jitter of up to
±12 per channel; shapes and backgrounds are always at least :data:`MIN_CONTRAST` apart in RGB so
the answer is visible. Frames get Gaussian noise (std 0-4) so the model does not rely on
exact pixel values (the sample videos are H.264-compressed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

SPLITS = {"train": 1, "heldout": 2}
COLORS = {  # long.mp4's palette (videoqa_training/sample_videos.py LONG_COLORS)
    "red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
    "cyan": (30, 210, 220), "magenta": (210, 40, 200), "white": (245, 245, 245), "orange": (245, 140, 20),
    "purple": (110, 40, 160), "gray": (128, 128, 128), "pink": (250, 160, 190), "brown": (120, 70, 30),
}
# Unnamed backgrounds for shape questions: light gray (shapes.mp4), black (counting.mp4), navy (the balls).
PLAIN_BACKGROUNDS = [(235, 235, 235), (0, 0, 0), (20, 20, 60), (40, 40, 40)]
SHAPES = ("circle", "square", "triangle", "diamond")
DIRECTIONS = ("left to right", "right to left", "top to bottom", "bottom to top")
TIMES = ("beginning", "middle", "end")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_COUNT = 6
COLOR_JITTER = 12
MIN_CONTRAST = 110.0  # RGB distance between an object and what it is drawn on
STATIC_KINDS = ("color", "shape", "digit", "count")
VIDEO_KINDS = ("motion", "scene", "scene_change")
NEEDLE_KINDS = ("needle_digit", "needle_color", "needle_time")
KINDS = STATIC_KINDS + VIDEO_KINDS + NEEDLE_KINDS
CLIP_KINDS = ("mover", "appear", "clip_color", "travel", "digit_seq")
TRAVEL = {"left to right": "to the right", "right to left": "to the left", "top to bottom": "downwards",
          "bottom to top": "upwards"}
STAY = "it stays in place"
NOTHING = "nothing"
# Training-only: a caption naming everything in a static picture. Many answer tokens per example
# (colour, shape and digit words) give the vision tower far more signal per step than a one-word
# answer: the alignment stage of LLaVA-style training. Not in KINDS, so evaluation never draws it.
CAPTION_KIND = "describe"
STILL_KINDS = ("digit_on_color",)  # training: a needle's digit as a still picture (module docstring)
# The sample clips' layouts, which the kinds above rarely draw (docs/default-model.md, "Why the sample
# clips fail"): a small mover beside distractors up to three times its size, one of which may appear
# partway (shapes.mp4), and a background that changes colour many times (long.mp4).
CROWD_KINDS = ("crowd_mover", "crowd_color", "scene_seq")
# Where something is in the picture (rotated.mp4's question: "Where is the red band?"), which no kind above asks.
PLACE_KINDS = ("where",)
PLACES = {"top": "at the top", "bottom": "at the bottom", "left": "on the left", "right": "on the right"}
# What a moving thing does, asked free-form as portrait.mp4's "What does the red ball do?" is: travel's
# drawing with 4-24 frames (a 2 s clip at 2 fps is 4), answered with a verb phrase.
ACTION_KINDS = ("does",)
DOES = {"left to right": "it moves to the right", "right to left": "it moves to the left", "top to bottom": "it falls",
        "bottom to top": "it rises"}
ALL_KINDS = (KINDS + (CAPTION_KIND,) + CLIP_KINDS + STILL_KINDS + CROWD_KINDS + PLACE_KINDS
             + ACTION_KINDS)  # order fixes each kind's seed: append only
# Frame sizes (H, W), multiples of 28. Needle videos are long, so their frames are small.
SIZES = [(112, 112), (112, 168), (168, 112), (168, 168), (168, 224), (224, 168), (224, 224),
         (224, 308), (252, 336), (308, 224)]
NEEDLE_SIZES = [(112, 112), (112, 140), (140, 112), (84, 112)]

# Seven-segment digits: segment -> box (x0, y0, x1, y1) in a cell 10 wide and 18 tall.
_SEGMENT_BOXES = {
    "a": (1.5, 0, 8.5, 2), "b": (8, 1, 10, 9), "c": (8, 9, 10, 17), "d": (1.5, 16, 8.5, 18),
    "e": (0, 9, 2, 17), "f": (0, 1, 2, 9), "g": (1.5, 8, 8.5, 10),
}
DIGIT_SEGMENTS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg")


@dataclass
class Example:
    """One video question with its answer."""

    frames: torch.Tensor  # uint8 [T, 3, H, W]
    question: str  # the question as the user asks it (free-form: with the answer-format hint)
    options: list[str] | None  # multiple choice: 4 (or 3, 2) option texts, unlettered; else None
    answer: str  # the correct answer's text (for multiple choice: the correct option's text)
    target: str  # what the model should write: the letter for multiple choice, else ``answer``
    kind: str
    split: str
    index: int
    meta: dict = field(default_factory=dict)  # how it was drawn: colours, positions, needle frames, ...

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


# ----------------------------------------------------------------------------- drawing


def _grid(h: int, w: int):
    yy, xx = np.mgrid[0:h, 0:w]
    return yy + 0.5, xx + 0.5  # pixel centres


def shape_mask(shape: str, h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Bool [H, W]: the pixels of a shape of "radius" r centred at (cx, cy)."""
    yy, xx = _grid(h, w)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        s = 0.85 * r
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.15 * r
    if shape == "triangle":  # pointing up: apex (0, -r), base at y = +0.8 r, half-width 0.95 r
        top, base, half = -r, 0.8 * r, 0.95 * r
        t = (dy - top) / (base - top)  # 0 at the apex, 1 at the base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= half * t)
    raise ValueError(f"unknown shape {shape!r}")


def digit_mask(digit: int, h: int, w: int, x0: float, y0: float, height: float) -> np.ndarray:
    """Bool [H, W]: a seven-segment ``digit`` whose cell (10:18) starts at (x0, y0) and is ``height`` tall."""
    yy, xx = _grid(h, w)
    s = height / 18.0
    mask = np.zeros((h, w), bool)
    for seg in DIGIT_SEGMENTS[digit]:
        a, b, c, d = _SEGMENT_BOXES[seg]
        mask |= (xx >= x0 + a * s) & (xx < x0 + c * s) & (yy >= y0 + b * s) & (yy < y0 + d * s)
    return mask


def _jitter(rng, rgb) -> np.ndarray:
    return np.clip(np.asarray(rgb) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255).astype(np.uint8)


def _dist(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, float) - np.asarray(b, float)))


def nearest_color(rgb) -> str:
    """The palette name closest to ``rgb`` (what a colour answer is re-derived from in tests)."""
    return min(COLORS, key=lambda n: _dist(COLORS[n], rgb))


def _background_for(rng, colors) -> tuple:
    """An unnamed background far enough from every colour in ``colors``."""
    ok = [bg for bg in PLAIN_BACKGROUNDS if all(_dist(bg, COLORS[c]) >= MIN_CONTRAST for c in colors)]
    if not ok:
        raise RuntimeError(f"no background contrasts with {colors}")
    return ok[rng.integers(len(ok))]


def _pick_colors(rng, n, avoid=()) -> list[str]:
    """``n`` distinct palette colours, pairwise at least MIN_CONTRAST apart and apart from ``avoid`` RGBs."""
    for _ in range(1000):
        names = [str(c) for c in rng.choice(list(COLORS), size=n, replace=False)]
        rgbs = [COLORS[c] for c in names]
        if all(_dist(a, b) >= MIN_CONTRAST * 0.6 for i, a in enumerate(rgbs) for b in rgbs[i + 1:]) and \
                all(_dist(c, a) >= MIN_CONTRAST for c in rgbs for a in avoid):
            return names
    raise RuntimeError("could not pick contrasting colours")


def _place(rng, h, w, radii, margin=2.0, fixed=()) -> list[tuple[float, float]]:
    """Centres for circles of ``radii`` inside the frame, not overlapping each other or ``fixed`` (cx, cy, r)."""
    for _ in range(200):
        placed, ok = list(fixed), True
        out = []
        for r in radii:
            for _ in range(100):
                cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
                if all(math.hypot(cx - x, cy - y) >= r + q + margin for x, y, q in placed):
                    placed.append((cx, cy, r))
                    out.append((cx, cy))
                    break
            else:
                ok = False
                break
        if ok:
            return out
    raise RuntimeError("could not place the objects")


def _canvas(h, w, rgb) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rgb
    return img


def _finish(rng, frames: np.ndarray, noise: float | None) -> torch.Tensor:
    """[T, H, W, 3] uint8 -> [T, 3, H, W] uint8 with Gaussian noise (std ``noise``, random 0-4 if None)."""
    std = rng.uniform(0, 4) if noise is None else float(noise)
    if std > 0:
        noisy = frames.astype(np.float32) + rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(std)
        frames = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))


# ----------------------------------------------------------------------------- questions


def _free(question: str, hint: str) -> str:
    return f"{question} {hint}"


def _mc(rng, answer: str, pool, n: int = 4) -> tuple[list[str], str]:
    """Options: ``answer`` and ``n - 1`` others from ``pool``, shuffled; returns (options, letter)."""
    others = [p for p in pool if p != answer]
    n = min(n, len(others) + 1)
    picked = list(rng.choice(others, size=n - 1, replace=False)) + [answer]
    order = rng.permutation(n)
    options = [str(picked[i]) for i in order]
    return options, "ABCDEFGHIJ"[options.index(answer)]


HINTS = {"word": "Answer with one word.", "number": "Answer with a number.", "phrase": "Answer with a short phrase.",
         "caption": "Name each object with its colour."}


def _finalise(rng, kind, split, index, frames, question, answer, pool, hint, mc, meta) -> Example:
    mc = False if pool is None else bool(rng.integers(2)) if mc is None else bool(mc)
    if mc:
        options, letter = _mc(rng, answer, pool)
        return Example(frames, question, options, answer, letter, kind, split, index, meta)
    return Example(frames, _free(question, HINTS[hint]), None, answer, answer, kind, split, index, meta)


# ----------------------------------------------------------------------------- generators


def _objects_frame(rng, h, w, objects, bg) -> np.ndarray:
    img = _canvas(h, w, bg)
    for o in objects:
        img[shape_mask(o["shape"], h, w, o["cx"], o["cy"], o["r"])] = o["rgb"]
    return img


def _random_objects(rng, h, w, shapes, colors, r_range=(0.07, 0.18)):
    side = min(h, w)
    radii = [rng.uniform(*r_range) * side for _ in shapes]
    centres = _place(rng, h, w, radii)
    return [{"shape": s, "color": c, "rgb": _jitter(rng, COLORS[c]), "cx": x, "cy": y, "r": r}
            for s, c, (x, y), r in zip(shapes, colors, centres, radii)]


def _static(rng, kind, h, w, t):
    """color / shape / digit / count: the same picture on every frame."""
    if kind in ("color", "shape"):
        n = int(rng.integers(1, 4))
        shapes = [str(x) for x in rng.choice(SHAPES, size=n, replace=False)]
        colors = _pick_colors(rng, n)
        bg = _background_for(rng, colors)
        objects = _random_objects(rng, h, w, shapes, colors)
        asked = objects[int(rng.integers(n))]
        img = _objects_frame(rng, h, w, objects, bg)
        meta = {"objects": _public(objects), "background": list(bg), "asked": _public([asked])[0]}
        if kind == "color":
            q = rng.choice([f"What colour is the {asked['shape']}?", f"What color is the {asked['shape']} in the video?"])
            return img, q, asked["color"], list(COLORS), "word", meta
        q = rng.choice([f"What shape is the {asked['color']} object?", f"Which shape is {asked['color']}?"])
        return img, q, asked["shape"], list(SHAPES), "word", meta
    if kind in ("digit", "digit_on_color"):
        d = int(rng.integers(10))
        fg = _pick_colors(rng, 1)[0]
        if kind == "digit":
            bg, bg_name = _background_for(rng, [fg]), None
        else:  # as _needle draws a digit: a palette background, so a different random stream
            bg_name = _pick_colors(rng, 1, avoid=[COLORS[fg]])[0]
            bg = tuple(int(c) for c in _jitter(rng, COLORS[bg_name]))
        height = rng.uniform(0.35, 0.8) * h
        width = height * 10 / 18
        x0, y0 = rng.uniform(0, w - width), rng.uniform(0, h - height)
        img = _canvas(h, w, bg)
        dot = _haystack_dot(img, rng, bg_name, (x0, y0, x0 + width, y0 + height)) if bg_name is not None else None
        img[digit_mask(d, h, w, x0, y0, height)] = _jitter(rng, COLORS[fg])
        q = rng.choice(["Which digit is shown?", "What number is displayed in the video?"])
        meta = {"digit": d, "color": fg, "background": list(bg), "cell_xy": [x0, y0], "height": height}
        if bg_name is not None:
            meta.update(background_color=bg_name, dot=dot)
        return img, q, str(d), [str(i) for i in range(10)], "number", meta
    if kind == "count":
        n = int(rng.integers(1, MAX_COUNT + 1))
        shape = str(rng.choice(SHAPES))
        n_other = int(rng.integers(0, 3))
        others = [str(s) for s in rng.choice([s for s in SHAPES if s != shape], size=n_other)]
        shapes = [shape] * n + others
        colors = [_pick_colors(rng, 1)[0] for _ in shapes]
        bg = _background_for(rng, set(colors))
        side = min(h, w)
        r_hi = min(0.14, 0.45 / math.sqrt(len(shapes) + 1))
        objects = _random_objects(rng, h, w, shapes, colors, (0.06, max(0.07, r_hi)))
        img = _objects_frame(rng, h, w, objects, bg)
        q = rng.choice([f"How many {shape}s are there?", f"How many {shape}s can you see in the video?"])
        meta = {"count": n, "shape": shape, "objects": _public(objects), "background": list(bg), "side": side}
        return img, q, str(n), [str(i) for i in range(1, MAX_COUNT + 1)] + ["0", "7", "8"], "number", meta
    raise ValueError(kind)


def _public(objects) -> list[dict]:
    return [{k: (v.tolist() if isinstance(v, np.ndarray) else (float(v) if isinstance(v, (float, np.floating)) else v))
             for k, v in o.items()} for o in objects]


def _motion(rng, h, w, t):
    direction = str(rng.choice(DIRECTIONS))
    n_static = int(rng.integers(0, 3))
    shapes = [str(x) for x in rng.choice(SHAPES, size=1 + n_static, replace=False)]
    colors = _pick_colors(rng, 1 + n_static)
    bg = _background_for(rng, colors)
    side = min(h, w)
    r = rng.uniform(0.07, 0.14) * side
    horizontal = direction in DIRECTIONS[:2]
    xs, ys = _lane_path(rng, direction, h, w, r, t)
    positions, across = (xs, ys[0]) if horizontal else (ys, xs[0])
    mover = {"shape": shapes[0], "color": colors[0], "rgb": _jitter(rng, COLORS[colors[0]]), "r": r}
    # static objects stay off the mover's path
    lane = (across, r)
    statics = []
    for s, c in zip(shapes[1:], colors[1:]):
        rr = rng.uniform(0.06, 0.12) * side
        for _ in range(200):
            x, y = rng.uniform(rr + 1, w - rr - 1), rng.uniform(rr + 1, h - rr - 1)
            off = abs((y if horizontal else x) - lane[0])
            if off >= lane[1] + rr + 2 and all(math.hypot(x - o["cx"], y - o["cy"]) >= rr + o["r"] + 2 for o in statics):
                statics.append({"shape": s, "color": c, "rgb": _jitter(rng, COLORS[c]), "cx": x, "cy": y, "r": rr})
                break
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i] = _objects_frame(rng, h, w, statics + [{**mover, "cx": xs[i], "cy": ys[i]}], bg)
    meta = {"direction": direction, "mover": _public([mover])[0], "positions": positions.tolist(),
            "statics": _public(statics), "background": list(bg)}
    name = f"{mover['color']} {mover['shape']}"
    q = rng.choice([f"In which direction does the {name} move?", f"Which way does the {name} move?"])
    return frames, q, direction, list(DIRECTIONS), "phrase", meta


def _scene(rng, kind, h, w, t):
    a, b = _pick_colors(rng, 2)
    change = kind == "scene" or bool(rng.integers(2))
    cut = int(round(rng.uniform(0.3, 0.7) * t)) if change else t
    cut = min(max(cut, 2), t - 2) if change else t
    frames = np.empty((t, h, w, 3), np.uint8)
    scenes = []
    for bg_name, lo, hi in ((a, 0, cut), (b, cut, t)):
        if hi <= lo:
            continue
        bg = _jitter(rng, COLORS[bg_name])
        colors = _pick_colors(rng, 2, avoid=[COLORS[bg_name]])
        objects = _random_objects(rng, h, w, [str(x) for x in rng.choice(SHAPES, size=2, replace=False)], colors,
                                  (0.05, 0.12))
        img = _objects_frame(rng, h, w, objects, bg)
        frames[lo:hi] = img
        scenes.append({"background": bg_name, "start": lo, "end": hi, "objects": _public(objects)})
    meta = {"scenes": scenes, "cut_frame": cut if change else None}
    if kind == "scene_change":
        q = rng.choice(["Does the scene change during the video?", "Is there a scene cut in this video?"])
        return frames, q, "yes" if change else "no", ["yes", "no"], "word", meta
    at_end = bool(rng.integers(2))
    q = f"What colour is the background at the {'end' if at_end else 'start'} of the video?"
    return frames, q, b if at_end else a, list(COLORS), "word", meta


def needle_time_label(start: int, length: int, t: int) -> str:
    """beginning / middle / end: the third of the video holding the needle's centre frame."""
    centre = (start + length / 2) / t
    return TIMES[min(2, int(centre * 3))]


def _dot_color(bg_name: str) -> tuple:
    """The haystack dot: black on light palette colours, white on dark ones."""
    return (0, 0, 0) if sum(COLORS[bg_name]) > 300 else (255, 255, 255)


def _haystack_dot(img: np.ndarray, rng, bg_name: str, keep_clear: tuple) -> list[float]:
    """Draw the needle haystack's dot (radius 4% of the short side) on its circle, outside the box
    ``keep_clear`` (x0, y0, x1, y1) when a few tries allow; returns its centre."""
    h, w = img.shape[:2]
    side = min(h, w)
    r = max(2.0, 0.04 * side)
    x0, y0, x1, y1 = keep_clear
    for _ in range(16):
        a = rng.uniform(0, 2 * np.pi)
        cx, cy = w / 2 + 0.3 * side * np.cos(a), h / 2 + 0.3 * side * np.sin(a)
        if not (x0 - r <= cx <= x1 + r and y0 - r <= cy <= y1 + r):
            break
    yy, xx = _grid(h, w)
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2] = _dot_color(bg_name)
    return [float(cx), float(cy)]


def _needle(rng, kind, h, w, t, depth, needle_frames):
    bg_name = str(rng.choice(list(COLORS)))
    bg = _jitter(rng, COLORS[bg_name])
    dot = _dot_color(bg_name)
    if depth is None:
        if kind == "needle_time":  # away from the thirds' borders, so the label is clear
            third = int(rng.integers(3))
            depth = rng.uniform(third / 3 + 0.05, (third + 1) / 3 - 0.05)
        else:
            depth = rng.uniform(0, 1)
    k = needle_frames
    start = int(round(depth * (t - k)))
    yy, xx = _grid(h, w)
    side = min(h, w)
    dot_r = max(2.0, 0.04 * side)
    frames = np.empty((t, h, w, 3), np.uint8)
    period = rng.uniform(20, 60)
    phase = rng.uniform(0, 2 * np.pi)
    frames[:] = bg
    m = int(math.ceil(dot_r)) + 1
    for i in range(t):  # the dot, drawn in a small window around it
        a = phase + 2 * np.pi * i / period
        cx, cy = w / 2 + 0.3 * side * np.cos(a), h / 2 + 0.3 * side * np.sin(a)
        x0, x1, y0, y1 = max(0, int(cx) - m), min(w, int(cx) + m + 1), max(0, int(cy) - m), min(h, int(cy) + m + 1)
        win = (xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2 <= dot_r ** 2
        frames[i, y0:y1, x0:x1][win] = dot
    fg = _pick_colors(rng, 1, avoid=[COLORS[bg_name], dot])[0]
    rgb = _jitter(rng, COLORS[fg])
    meta = {"depth": float(depth), "needle_start": start, "needle_frames": k, "background": bg_name, "color": fg}
    if kind == "needle_digit":
        d = int(rng.integers(10))
        height = rng.uniform(0.5, 0.8) * h
        x0, y0 = rng.uniform(0, w - height * 10 / 18), rng.uniform(0, h - height)
        mask = digit_mask(d, h, w, x0, y0, height)
        meta.update(digit=d)
    else:
        shape = str(rng.choice(SHAPES))
        r = rng.uniform(0.2, 0.3) * side
        cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
        mask = shape_mask(shape, h, w, cx, cy, r)
        meta.update(shape=shape, center=[cx, cy], r=r)
    frames[start:start + k][:, mask] = rgb
    if kind == "needle_digit":
        q = rng.choice(["A digit appears briefly in the video. Which digit is it?",
                        "Which digit flashes on screen for a moment?"])
        return frames, q, str(meta["digit"]), [str(i) for i in range(10)], "number", meta
    name = f"{fg} {meta['shape']}"
    if kind == "needle_color":
        q = rng.choice([f"A {meta['shape']} flashes briefly in the video. What colour is it?",
                        f"What colour is the {meta['shape']} that appears for a moment?"])
        return frames, q, fg, list(COLORS), "word", meta
    label = needle_time_label(start, k, t)
    meta["time"] = label
    q = f"When does the {name} appear: at the beginning, in the middle or at the end of the video?"
    return frames, q, label, list(TIMES), "word", meta


def object_name(color: str, shape: str) -> str:
    """"a red circle", "an orange square": how the mover kind names an object."""
    return f"{'an' if color[0] in 'aeiou' else 'a'} {color} {shape}"


def _lane_path(rng, direction, h, w, r, t, bounce=False):
    """Per-frame centres ``(xs, ys)`` of an object of radius ``r`` crossing the frame in ``direction``.

    ``bounce``: it also hops across the other axis (``|sin|`` arcs, like the sample balls), which
    does not change where it travels overall.
    """
    horizontal = direction in DIRECTIONS[:2]
    along, across = (w, h) if horizontal else (h, w)
    span = along - 2 * r - 2
    travel = rng.uniform(0.5, 0.9) * span
    start = r + 1 + rng.uniform(0, span - travel)
    pos = start + travel * np.linspace(0, 1, t)
    if direction in ("right to left", "bottom to top"):
        pos = pos[::-1]
    room = across - 2 * r - 2
    amp = min(rng.uniform(0.15, 0.3) * across, 0.8 * room) if bounce else 0.0
    floor = rng.uniform(r + 1 + amp, across - r - 1)
    off = np.full(t, floor)
    if bounce:  # drawn only here, so a straight path takes the random stream motion always took
        off -= amp * np.abs(np.sin(np.pi * rng.uniform(1.0, 3.0) * np.linspace(0, 1, t)))
    return (pos, off) if horizontal else (off, pos)


def _place_off_path(rng, h, w, rr, xs, ys, r, others):
    """A centre for radius ``rr`` clear of the path ``(xs, ys)`` (radius ``r``) and of ``others``; shrinks if crowded."""
    for attempt in range(600):
        if attempt and attempt % 100 == 0:
            rr *= 0.8
        x, y = rng.uniform(rr + 1, w - rr - 1), rng.uniform(rr + 1, h - rr - 1)
        if np.all(np.hypot(xs - x, ys - y) >= r + rr + 2) and \
                all(math.hypot(x - o["cx"], y - o["cy"]) >= rr + o["r"] + 2 for o in others):
            return x, y, rr
    raise RuntimeError("could not place the objects")


def _clip(rng, kind, h, w, t):
    """mover / appear / clip_color / travel: a clip in which one shape moves (or not) and one may appear.

    crowd_mover / crowd_color: the same questions as mover / clip_color with a smaller first shape,
    distractors 1.5-3 times its size, one of which appears partway half the time, and in 60% of
    clips shapes.mp4's light gray background with colours that stand out on it (:data:`CROWD_KINDS`).
    """
    crowd = kind in CROWD_KINDS
    base = {"crowd_mover": "mover", "crowd_color": "clip_color", "does": "travel"}.get(kind, kind)
    side = min(h, w)
    moving = rng.random() >= (0.15 if base == "mover" else 0.2 if base == "travel" else 0.3)
    n_static = int(rng.integers(0 if base == "travel" else 1, 3))
    n_appear = 1 if base == "appear" else int(rng.integers(2)) if base == "clip_color" or crowd else 0
    n = 1 + n_appear + n_static
    shapes = [str(x) for x in rng.choice(SHAPES, size=n, replace=False)]
    light = crowd and rng.random() < 0.6  # shapes.mp4's light gray, with colours that stand out on it
    colors = _pick_colors(rng, n, avoid=[PLAIN_BACKGROUNDS[0]] if light else ())
    bg = PLAIN_BACKGROUNDS[0] if light else _background_for(rng, colors)
    r = rng.uniform(0.05, 0.09) * side if crowd else rng.uniform(0.07, 0.13) * side
    direction = str(rng.choice(DIRECTIONS))
    if moving:
        xs, ys = _lane_path(rng, direction, h, w, r, t, bounce=base == "travel" and rng.random() < 0.6)
    else:
        (cx, cy), = _place(rng, h, w, [r])
        xs, ys = np.full(t, cx), np.full(t, cy)
    first = {"shape": shapes[0], "color": colors[0], "rgb": _jitter(rng, COLORS[colors[0]]), "r": r}
    others = []
    for i, (shape, color) in enumerate(zip(shapes[1:], colors[1:])):
        size = min(rng.uniform(1.5, 3.0) * r, 0.2 * side) if crowd else rng.uniform(0.06, 0.12) * side
        x, y, rr = _place_off_path(rng, h, w, size, xs, ys, r, others)
        others.append({"shape": shape, "color": color, "rgb": _jitter(rng, COLORS[color]), "cx": x, "cy": y, "r": rr,
                       "from_frame": int(min(max(round(rng.uniform(0.3, 0.7) * t), 1), t - 1)) if i < n_appear else 0})
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        visible = [o for o in others if o["from_frame"] <= i] + [{**first, "cx": xs[i], "cy": ys[i]}]
        frames[i] = _objects_frame(rng, h, w, visible, bg)
    meta = {"moving": moving, "direction": direction if moving else None, "first": _public([first])[0],
            "path": [xs.tolist(), ys.tolist()], "others": _public(others), "background": list(bg)}
    name = f"{first['color']} {first['shape']}"
    if base == "mover":  # options: what is in the clip, "nothing", and one or two shapes that are not
        shown = [object_name(o["color"], o["shape"]) for o in [first] + others]
        answer = object_name(first["color"], first["shape"]) if moving else NOTHING
        q = rng.choice([f"What moves from {direction}?", f"Which object moves from {direction}?"])
        pool = list(dict.fromkeys(shown + [NOTHING]))
        while len(pool) < 5:
            pool = list(dict.fromkeys(pool + [object_name(str(rng.choice(list(COLORS))), str(rng.choice(SHAPES)))]))
        return frames, q, answer, pool, "phrase", meta
    if kind == "appear":
        late = others[0]
        meta["appears"] = {"shape": late["shape"], "from_frame": late["from_frame"]}
        q = rng.choice(["Which shape appears partway through the video?", "Which shape appears later in the video?"])
        return frames, q, late["shape"], list(SHAPES), "word", meta
    if base == "clip_color":  # a crowd clip asks mostly about the small first shape
        asked = first if crowd and rng.random() < 0.6 else [first, *others][int(rng.integers(n))]
        meta["asked"] = {"shape": asked["shape"], "color": asked["color"]}
        what = "ball" if asked["shape"] == "circle" and rng.random() < 0.5 else asked["shape"]
        q = rng.choice([f"What colour is the {what}?", f"What color is the {what} in the video?"])
        return frames, q, asked["color"], list(COLORS), "word", meta
    what = "ball" if first["shape"] == "circle" and rng.random() < 0.5 else name
    if kind == "does":
        q = rng.choice([f"What does the {what} do?", f"What does the {what} do in the video?"])
        return frames, q, DOES[direction] if moving else STAY, [*DOES.values(), STAY], "phrase", meta
    q = rng.choice([f"Which way does the {what} travel overall?", f"Where does the {what} go during the video?"])
    return frames, q, TRAVEL[direction] if moving else STAY, [*TRAVEL.values(), STAY], "phrase", meta


def _digit_seq(rng, h, w, t):
    """Digits shown one after another in one place, like counting.mp4: first, last, largest, how many different."""
    n = int(rng.integers(3, min(9, t // 2) + 1))
    if rng.random() < 0.5:  # counting up or down
        start = int(rng.integers(0, 10 - n + 1))
        digits = list(range(start, start + n))
        if rng.random() < 0.3:
            digits = digits[::-1]
    else:
        digits = [int(d) for d in rng.integers(0, 10, n)]
    fg = _pick_colors(rng, 1)[0]
    bg = _background_for(rng, [fg])
    rgb = _jitter(rng, COLORS[fg])
    height = rng.uniform(0.5, 0.8) * h
    x0, y0 = rng.uniform(0, w - height * 10 / 18), rng.uniform(0, h - height)
    bounds = np.linspace(0, t, n + 1).round().astype(int)
    frames = np.empty((t, h, w, 3), np.uint8)
    for d, lo, hi in zip(digits, bounds[:-1], bounds[1:]):
        img = _canvas(h, w, bg)
        img[digit_mask(d, h, w, x0, y0, height)] = rgb
        frames[lo:hi] = img
    meta = {"digits": digits, "bounds": bounds.tolist(), "color": fg, "background": list(bg), "cell_xy": [x0, y0],
            "height": height}
    which = int(rng.integers(4))
    if which == 0:
        q, answer = rng.choice(["Which digit is shown first?", "What is the first digit in the video?"]), digits[0]
    elif which == 1:
        q, answer = rng.choice(["Which digit is shown last?", "What is the last digit in the video?"]), digits[-1]
    elif which == 2:
        q, answer = "What is the largest digit shown in the video?", max(digits)
    else:
        q, answer = "How many different digits are shown?", len(set(digits))
    meta["asked"] = ("first", "last", "largest", "distinct")[which]
    return frames, q, str(answer), [str(i) for i in range(10)], "number", meta


def _scene_seq(rng, h, w, t):
    """A plain background that changes colour 2-11 times, like long.mp4 (a black dot may circle on it):
    the first or last colour, or how many times it changes."""
    n = int(rng.integers(3, min(12, t // 2) + 1))
    names = []
    while len(names) < n:  # neighbours differ, and the dot stays visible on each
        c = str(rng.choice(list(COLORS)))
        if (not names or _dist(COLORS[c], COLORS[names[-1]]) >= MIN_CONTRAST) and _dist(COLORS[c], (0, 0, 0)) >= MIN_CONTRAST:
            names.append(c)
    bounds = np.linspace(0, t, n + 1).round().astype(int)
    dot = rng.random() < 0.5
    radius, orbit, turns = rng.uniform(0.04, 0.08) * min(h, w), rng.uniform(0.15, 0.3) * min(h, w), rng.uniform(1, 4)
    frames = np.empty((t, h, w, 3), np.uint8)
    for c, lo, hi in zip(names, bounds[:-1], bounds[1:]):
        rgb = _jitter(rng, COLORS[c])
        for i in range(lo, hi):
            frames[i] = _canvas(h, w, rgb)
            if dot:
                a = 2 * np.pi * turns * i / t
                frames[i][shape_mask("circle", h, w, w / 2 + orbit * np.cos(a), h / 2 + orbit * np.sin(a), radius)] = 0
    meta = {"colors": names, "bounds": bounds.tolist(), "dot": dot}
    which = int(rng.integers(5))
    if which == 4:
        q = rng.choice(["How many times does the background colour change?", "How often does the background change colour?"])
        return frames, q, str(n - 1), [str(i) for i in range(12)], "number", meta
    at_end = which % 2 == 1
    q = (rng.choice(["What colour is the background at the very end?", "What colour is the background at the end of the video?"])
         if at_end else
         rng.choice(["What colour is the background at the very beginning?", "What colour is the background at the start of the video?"]))
    meta["asked"] = "last" if at_end else "first"
    return frames, q, names[-1] if at_end else names[0], list(COLORS), "word", meta


def _where(rng, h, w, t):
    """where: a band along one edge, or a shape near its middle, and maybe a small ball moving across the
    centre: on which side of the picture is the band or shape? The answer is the side, not the motion."""
    side = str(rng.choice(list(PLACES)))
    n = 2 if t >= 4 and rng.random() < 0.6 else 1
    colors = _pick_colors(rng, n)
    bg = _background_for(rng, colors)
    rgb = _jitter(rng, COLORS[colors[0]])
    vertical = side in ("top", "bottom")  # the band runs along a horizontal edge
    along, across = (h, w) if vertical else (w, h)
    band = rng.random() < 0.6
    img = _canvas(h, w, bg)
    if band:
        thick = int(round(rng.uniform(0.12, 0.28) * along))
        sl = slice(0, thick) if side in ("top", "left") else slice(along - thick, along)
        img[(sl, slice(None)) if vertical else (slice(None), sl)] = rgb
        what, meta = "band", {"thickness": thick}
    else:
        shape = str(rng.choice(SHAPES))
        r = rng.uniform(0.08, 0.12) * min(h, w)
        near = rng.uniform(r + 1, 0.22 * along)
        c_along = near if side in ("top", "left") else along - near
        c_across = rng.uniform(0.3, 0.7) * across
        cx, cy = (c_across, c_along) if vertical else (c_along, c_across)
        img[shape_mask(shape, h, w, cx, cy, r)] = rgb
        what, meta = shape, {"center": [float(cx), float(cy)], "r": float(r)}
    frames = np.broadcast_to(img, (t, h, w, 3)).copy()
    if n == 2:  # a small ball crossing the central box (0.42-0.58 of each side), clear of the band or shape
        ball = _jitter(rng, COLORS[colors[1]])
        r = 0.05 * min(h, w)
        path = np.linspace(0.42, 0.58, t)[::1 if rng.random() < 0.5 else -1]
        fixed = rng.uniform(0.42, 0.58)
        falls = rng.random() < 0.5  # moves up or down, else sideways
        for i in range(t):
            x, y = (fixed * w, path[i] * h) if falls else (path[i] * w, fixed * h)
            frames[i][shape_mask("circle", h, w, x, y, r)] = ball
        meta["ball"] = colors[1]
    meta.update(side=side, color=colors[0], rgb=rgb.tolist(), what=what, background=list(bg))
    q = rng.choice([f"Where is the {colors[0]} {what} in the picture?", f"Where is the {colors[0]} {what}?"])
    return frames, q, PLACES[side], list(PLACES.values()), "phrase", meta


def _caption(rng, h, w, t):
    """A static picture and its caption: the objects left to right ("a red circle and a blue square"), or the digit."""
    if rng.integers(3) == 0:
        img, _, d, _, _, meta = _static(rng, "digit", h, w, t)
        caption = f"the digit {d} in {meta['color']}"
    else:
        img, _, _, _, _, meta = _static(rng, "shape", h, w, t)
        names = [f"a {o['color']} {o['shape']}" for o in sorted(meta["objects"], key=lambda o: o["cx"])]
        caption = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    q = rng.choice(["Describe the video.", "What is in the video?", "What do you see?"])
    return img, q, caption, None, "caption", meta


def default_num_frames(rng, kind) -> int:
    if kind in STATIC_KINDS + STILL_KINDS or kind == CAPTION_KIND:
        return int(rng.choice([2, 4]))
    if kind == "motion":
        return 2 * int(rng.integers(3, 9))  # 6-16
    if kind in CLIP_KINDS:
        return 2 * int(rng.integers(4, 13))  # 8-24
    if kind in ACTION_KINDS:
        return 2 * int(rng.integers(2, 13))  # 4-24
    if kind == "scene_seq":
        return 2 * int(rng.integers(8, 65))  # 16-128
    if kind in CROWD_KINDS:
        return 2 * int(rng.integers(7, 13))  # 14-24: where the sample clip's answer went astray
    if kind in PLACE_KINDS:
        return 2 * int(rng.integers(1, 9))  # 2-16
    if kind in ("scene", "scene_change"):
        return 2 * int(rng.integers(4, 17))  # 8-32
    return 2 * int(rng.integers(8, 129))  # needles: 16-256


def make_example(split: str, index: int, *, kind: str | None = None, num_frames: int | None = None,
                 size: tuple[int, int] | None = None, mc: bool | None = None, depth: float | None = None,
                 needle_frames: int = 2, noise: float | None = None) -> Example:
    """The example ``index`` of ``split`` ("train" or "heldout"): same arguments, same example.

    Args:
        kind: one of :data:`KINDS`, :data:`CLIP_KINDS`, :data:`STILL_KINDS`, :data:`CROWD_KINDS` or
            :data:`CAPTION_KIND` (training only)
            (default: drawn uniformly from KINDS).
        num_frames: T (even, >= 2; default per kind: static 2-4, motion 6-16, scenes 8-32, clips 8-24,
            crowd clips 14-24, background sequences 16-128, needles 16-256).
        size: (H, W), multiples of 28 (default: drawn from :data:`SIZES`, needles from :data:`NEEDLE_SIZES`).
        mc: True multiple choice, False free-form, None either.
        depth: needles only: where the needle starts, as a fraction of the video (default random).
        needle_frames: how many consecutive frames show the needle.
        noise: Gaussian noise std (default random in [0, 4]; 0 for exact pixels).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if kind is not None and kind not in ALL_KINDS:
        raise ValueError(f"kind must be one of {ALL_KINDS}, got {kind!r}")
    kind_key = ALL_KINDS.index(kind) + 1 if kind else 0
    key = [SPLITS[split], int(index), kind_key, int(num_frames or 0),
           *(size or (0, 0)), int(round(1e6 * depth)) + 1 if depth is not None else 0, int(needle_frames)]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    kind = kind or str(rng.choice(KINDS))
    t = int(num_frames) if num_frames else default_num_frames(rng, kind)
    if t < 2 or t % 2:
        raise ValueError(f"num_frames must be even and >= 2, got {t}")
    sizes = NEEDLE_SIZES if kind in NEEDLE_KINDS + ("scene_seq",) else SIZES
    h, w = size if size else sizes[int(rng.integers(len(sizes)))]
    if h % 28 or w % 28:
        raise ValueError(f"size must be multiples of 28, got {h}x{w}")
    if kind in STATIC_KINDS + STILL_KINDS or kind == CAPTION_KIND:
        make = _caption if kind == CAPTION_KIND else (lambda *a: _static(rng, kind, *a[1:]))
        img, q, answer, pool, hint, meta = make(rng, h, w, t)
        frames = np.broadcast_to(img, (t, h, w, 3)).copy()
    elif kind == "motion":
        if t < 4:
            raise ValueError("motion needs at least 4 frames")
        frames, q, answer, pool, hint, meta = _motion(rng, h, w, t)
    elif kind in ("scene", "scene_change"):
        if t < 6:
            raise ValueError("scenes need at least 6 frames")
        frames, q, answer, pool, hint, meta = _scene(rng, kind, h, w, t)
    elif kind in PLACE_KINDS:
        frames, q, answer, pool, hint, meta = _where(rng, h, w, t)
    elif kind in ACTION_KINDS:
        if t < 4:
            raise ValueError(f"{kind} needs at least 4 frames")
        frames, q, answer, pool, hint, meta = _clip(rng, kind, h, w, t)
    elif kind in CLIP_KINDS + CROWD_KINDS:
        if t < 6:
            raise ValueError("clips need at least 6 frames")
        make = {"digit_seq": _digit_seq, "scene_seq": _scene_seq}.get(kind)
        frames, q, answer, pool, hint, meta = make(rng, h, w, t) if make else _clip(rng, kind, h, w, t)
    else:
        if not 1 <= needle_frames < t:
            raise ValueError(f"needle_frames must be in [1, num_frames), got {needle_frames}")
        if depth is not None and not 0 <= depth <= 1:
            raise ValueError(f"depth must be in [0, 1], got {depth}")
        frames, q, answer, pool, hint, meta = _needle(rng, kind, h, w, t, depth, needle_frames)
    return _finalise(rng, kind, split, index, _finish(rng, frames, noise), str(q), answer, pool, hint, mc, meta)


def describe(example: Example) -> str:
    """The picture of a static example in words ("The picture shows a red circle and a blue square.").

    For the text-only stage of training: the language model learns to answer from a description
    before it learns to answer from visual tokens (frozen SmolLM2 cannot do the former either).
    """
    m = example.meta
    if example.kind in ("digit", "digit_on_color") or (example.kind == CAPTION_KIND and "digit" in m):
        return f"The picture shows the digit {m['digit']} in {m['color']}."
    if example.kind not in STATIC_KINDS + (CAPTION_KIND,):
        raise ValueError(f"descriptions exist for the static kinds, not {example.kind!r}")
    names = [f"a {o['color']} {o['shape']}" for o in sorted(m["objects"], key=lambda o: o["cx"])]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"The picture shows {listed}."


# ----------------------------------------------------------------------------- scoring

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(DIGIT_WORDS)}
_POOLS = {"color": list(COLORS), "shape": list(SHAPES), "digit": [str(i) for i in range(10)],
          "count": [str(i) for i in range(10)], "motion": list(DIRECTIONS), "scene": list(COLORS),
          "scene_change": ["yes", "no"], "needle_digit": [str(i) for i in range(10)],
          "needle_color": list(COLORS), "needle_time": list(TIMES),
          "mover": [object_name(c, s) for c in COLORS for s in SHAPES] + [NOTHING], "appear": list(SHAPES),
          "clip_color": list(COLORS), "travel": [*TRAVEL.values(), STAY], "digit_seq": [str(i) for i in range(10)],
          "digit_on_color": [str(i) for i in range(10)]}
_POOLS.update({"crowd_mover": _POOLS["mover"], "crowd_color": list(COLORS),
               "scene_seq": list(COLORS) + [str(i) for i in range(12)], "where": list(PLACES.values()),
               "does": [*DOES.values(), STAY]})


def _normalise(text: str) -> str:
    import re

    s = re.sub(r"[^a-z0-9 ]+", " ", text.lower().replace("colour", "color").replace("grey", "gray"))
    words = [_NUMBER_WORDS.get(w, w) for w in s.split()]
    return " ".join(words)


def is_correct(example: Example, text: str) -> bool:
    """Whether a model's ``text`` answers ``example``.

    Multiple choice: the letter :func:`videoqa.choices.extract_letter` reads equals the target.
    Free-form: the answer appears as whole words and no other candidate answer of the same kind
    does ("Red." and "The circle is red" are right; "red or blue" is not). Number words count as digits.
    """
    if example.kind == CAPTION_KIND:
        return _normalise(text) == _normalise(example.answer)
    if example.options is not None:
        from videoqa.choices import extract_letter

        return extract_letter(text, example.options) == example.target
    norm = _normalise
    if example.kind in ("mover", "crowd_mover"):  # "the red circle" and "red circle" name the object as "a red circle" does
        def norm(x):
            return " ".join(w for w in _normalise(x).split() if w not in ("a", "an", "the"))
    said = f" {norm(text)} "
    pool = [norm(p) for p in _POOLS[example.kind]]
    answer = norm(example.answer)
    found = [p for p in pool if f" {p} " in said]
    return found == [answer]
