"""Why a model misreads shapes.mp4: redraw the clip's layout and change one thing per row.

shapes.mp4 (videoqa_training/sample_videos.py): a red circle (radius 20) crossing a 320x240 light gray
frame at y=70, a static blue square, a green triangle from 6 s. Each row draws that layout as the
pipeline sees it (20 frames at 2 fps, resized to 252x308) with one change, and asks the circle's
colour and what moves (options as the main job's). About 2 minutes on a CPU.

  python -m experiments.default_model.probe_sample_layout [--model DIR] [--output rows.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

from videoqa.assets import DEFAULT_MODEL_DIR


COLOUR_Q = "What colour is the circle? Answer with one word."
MOVER_Q = "What moves from left to right?"
MOVER_OPTIONS = ["a red circle", "a blue square", "a green triangle", "nothing"]  # right: A (D if static)
ROWS = {
    "the layout as in shapes.mp4": {},
    "no square": {"square": False},
    "triangle at half size": {"tri_scale": 0.5},
    "triangle at 0.7 size": {"tri_scale": 0.7},
    "triangle yellow": {"tri_color": (240, 220, 30)},
    "a green disc appears instead of the triangle": {"tri_shape": "disc"},
    "no triangle": {"tri": False},
    "circle static": {"moving": False},
    "circle radius 30": {"r": 30},
    "circle radius 12": {"r": 12},
    "triangle from frame 4": {"tri_from": 4},
    "triangle on every frame": {"tri_from": 0},
    "12 frames": {"frames": 12},
    "24 frames": {"frames": 24},
    "black background": {"bg": (0, 0, 0)},
    "navy background": {"bg": (20, 20, 60)},
    "resized to 224x308": {"out": (224, 308)},
    "resized to 168x224": {"out": (168, 224)},
}


def render(frames=20, r=20, moving=True, square=True, tri=True, tri_scale=1.0, tri_color=(30, 170, 40),
           tri_from=None, tri_shape="triangle", bg=(235, 235, 235), out=(252, 308)) -> torch.Tensor:
    """uint8 [T, 3, H, W]: shapes.mp4's layout at 320x240, then resized as the pipeline resizes."""
    from videoqa.video import _resize

    tri_from = round(0.6 * frames) if tri_from is None else tri_from
    yy, xx = np.mgrid[:240, :320]
    (x0, y0), (x1, y1), (x2, y2) = [(240 + (x - 240) * tri_scale, 175 + (y - 175) * tri_scale)
                                    for x, y in ((240, 140), (200, 210), (280, 210))]

    def side(ax, ay, bx, by):
        return (xx - bx) * (ay - by) - (ax - bx) * (yy - by)

    d = np.stack([side(x0, y0, x1, y1), side(x1, y1, x2, y2), side(x2, y2, x0, y0)])
    triangle = (d >= 0).all(0) | (d <= 0).all(0)
    disc = (xx - 240) ** 2 + (yy - 175) ** 2 <= (35 * tri_scale) ** 2
    out_frames = []
    for i in range(frames):
        img = np.empty((240, 320, 3), np.uint8)
        img[:] = bg
        if square:
            img[150:200, 40:90] = (30, 60, 220)
        if tri and i >= tri_from:
            img[triangle if tri_shape == "triangle" else disc] = tri_color
        cx = 30 + 260 * i / (frames - 1) if moving else 30
        img[(xx - cx) ** 2 + (yy - 70) ** 2 <= r * r] = (220, 30, 30)
        out_frames.append(img)
    return _resize(torch.from_numpy(np.stack(out_frames).transpose(0, 3, 1, 2).copy()), *out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="a compact export")
    p.add_argument("--output", type=Path, help="write the rows as JSON")
    args = p.parse_args(argv)

    from videoqa_training.evaluate import generate_text
    from videoqa.models.compact import load_compact

    model, processor = load_compact(args.model)
    rows = []
    for name, change in ROWS.items():
        frames = render(**change)
        with torch.inference_mode():
            colour = generate_text(model, processor, types.SimpleNamespace(frames=frames, question=COLOUR_Q,
                                                                           options=None))[0].strip()
            mover = generate_text(model, processor, types.SimpleNamespace(frames=frames, question=MOVER_Q,
                                                                          options=MOVER_OPTIONS))[0].strip()
        rows.append({"row": name, "colour": colour, "mover": mover})
        print(f"{name:46s} colour {colour!r:10s} mover {mover!r}", flush=True)
    movers = ["D" if change.get("moving", True) is False else "A" for change in ROWS.values()]  # a static circle: nothing
    right = (sum(r["colour"].lower().startswith("red") for r in rows),
             sum(r["mover"].startswith(m) for r, m in zip(rows, movers)))
    print(f"circle called red in {right[0]}/{len(rows)} rows, what moves right in {right[1]}/{len(rows)} ({args.model})")
    if args.output:
        args.output.write_text(json.dumps({"model": args.model, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
