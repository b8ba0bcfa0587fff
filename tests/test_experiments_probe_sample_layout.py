"""experiments/default_model/probe_sample_layout.py draws shapes.mp4's layout: checked against the clip's manifest facts."""

import json
from pathlib import Path

import numpy as np

from experiments.default_model import probe_sample_layout as probe

ROOT = Path(__file__).resolve().parents[1]


def _mask(frame, rgb, tol=40):
    return (np.abs(frame.permute(1, 2, 0).numpy().astype(int) - np.asarray(rgb)).max(-1) < tol)


def test_the_redrawn_layout_follows_the_manifest():
    facts = next(v for v in json.loads((ROOT / "videoqa" / "assets" / "samples" / "manifest.json").read_text())["videos"]
                 if v["file"] == "shapes.mp4")["facts"]
    frames = probe.render(out=(240, 320))
    assert frames.shape == (20, 3, 240, 320)
    red, green, blue = (220, 30, 30), (30, 170, 40), (30, 60, 220)
    xs = [np.nonzero(_mask(f, red))[1].mean() for f in frames]
    assert abs(xs[0] - facts["red_circle"]["center_x_at"][0]["x"]) < 2 and abs(xs[-1] - 290) < 2
    assert all(b > a for a, b in zip(xs, xs[1:]))  # left to right
    ys, xs_b = np.nonzero(_mask(frames[0], blue))
    x0, y0, x1, y1 = facts["blue_square"]["box_xyxy"]
    assert abs(xs_b.min() - x0) <= 1 and abs(ys.max() - y1) <= 1
    appears = [bool(_mask(f, green).sum() > 100) for f in frames]
    assert appears.index(True) == 12 and all(appears[12:])  # from 6 s of 10 at 2 fps
    assert not any(_mask(f, green).sum() > 100 for f in probe.render(tri=False, out=(240, 320)))
    assert probe.render().shape[-2:] == (252, 308)  # as the pipeline resizes the clip
