"""experiments/default_model/probe_needle_digits.py builds the probe rows it names (no model needed)."""

import torch

from experiments.default_model import probe_needle_digits as probe
from videoqa_training import synthetic as S


def test_rows_change_one_thing_each():
    rows = dict(probe.rows(4))
    assert len(rows) == 10 and all(len(v) == 4 for v in rows.values())
    plain, palette = rows["digit 224x224, plain background (as drawn)"], rows["digit 224x224, recoloured onto a palette background"]
    for a, b in zip(plain, palette):
        m = a.meta
        mask = torch.from_numpy(S.digit_mask(m["digit"], 224, 224, *m["cell_xy"], m["height"]))
        pa, pb = a.frames.permute(0, 2, 3, 1), b.frames.permute(0, 2, 3, 1)
        assert torch.equal(pa[:, mask], pb[:, mask])  # the digit is untouched
        background = pb[:, ~mask].reshape(-1, 3).unique(dim=0)
        assert len(background) == 1 and tuple(background[0].tolist()) in S.COLORS.values()
        assert S._dist(background[0].tolist(), S.COLORS[m["color"]]) >= S.MIN_CONTRAST
        assert b.target == a.target
    alone = rows["needle's two frames alone, digit question (224x224)"]
    needles = rows["needle_digit 4 frames 224x224"]
    for e, n in zip(alone, needles):
        s = n.meta["needle_start"]
        assert e.num_frames == 2 and torch.equal(e.frames, n.frames[s:s + 2]) and e.target == n.target
    assert {e.meta["needle_start"] % 2 for e in rows["needle_digit 8 frames 112x112, on one temporal patch"]} == {0}
    assert {e.meta["needle_start"] % 2 for e in rows["needle_digit 8 frames 112x112, split over two patches"]} == {1}
