"""videoqa_training.synthetic: determinism, splits, and every kind's answer re-derived from the pixels."""

import json

import numpy as np
import pytest
import torch

from videoqa.choices import extract_letter
from videoqa_training import synthetic as S
from videoqa_training.synthetic import COLORS, KINDS, is_correct, make_example, nearest_color


def _rgb_at(frame, mask):
    """Median colour of the masked pixels of one [3, H, W] frame."""
    px = frame.permute(1, 2, 0).numpy()[mask]
    return np.median(px, axis=0)


def test_same_arguments_same_example_and_splits_differ():
    for kind in KINDS:
        a = make_example("train", 5, kind=kind)
        b = make_example("train", 5, kind=kind)
        assert torch.equal(a.frames, b.frames) and a.question == b.question and a.target == b.target
        assert a.options == b.options and a.meta == b.meta
        h = make_example("heldout", 5, kind=kind)
        assert h.frames.shape != a.frames.shape or not torch.equal(h.frames, a.frames)
    # without a forced kind the stream differs from the forced one, but is still reproducible
    assert torch.equal(make_example("train", 3).frames, make_example("train", 3).frames)
    with pytest.raises(ValueError):
        make_example("test", 0)
    with pytest.raises(ValueError):
        make_example("train", 0, size=(100, 112))
    with pytest.raises(ValueError):
        make_example("train", 0, kind="needle_digit", num_frames=3)


def test_shapes_types_and_formats():
    for i, kind in enumerate(KINDS * 2):
        e = make_example("heldout", i, kind=kind, mc=bool(i % 2))
        assert e.frames.dtype == torch.uint8 and e.frames.ndim == 4 and e.frames.shape[1] == 3
        assert e.frames.shape[0] % 2 == 0 and e.frames.shape[2] % 28 == 0 and e.frames.shape[3] % 28 == 0
        json.dumps(e.meta)  # plain Python values only
        if e.options is None:
            assert e.target == e.answer and e.question.endswith(".")  # with its answer-format hint
        else:
            assert len(set(e.options)) == len(e.options) >= 2 and e.answer in e.options
            assert e.target == "ABCDEFGHIJ"[e.options.index(e.answer)]
            assert extract_letter(e.target, e.options) == e.target


def test_colour_and_shape_answers_come_from_the_pixels():
    for i in range(12):
        e = make_example("train", i, kind="color", noise=0)
        a = e.meta["asked"]
        h, w = e.frames.shape[2:]
        mask = S.shape_mask(a["shape"], h, w, a["cx"], a["cy"], a["r"])
        assert nearest_color(_rgb_at(e.frames[0], mask)) == e.answer
        assert type(e.answer) is str and (e.options is None or e.answer in e.options)
        assert a["shape"] in e.question
        # the background really is the recorded one, and far from every object's colour
        corner_free = ~np.any([S.shape_mask(o["shape"], h, w, o["cx"], o["cy"], o["r"]) for o in e.meta["objects"]], 0)
        assert (e.frames[0].permute(1, 2, 0).numpy()[corner_free] == e.meta["background"]).all()
    for i in range(12):
        e = make_example("train", i, kind="shape", noise=0)
        a = e.meta["asked"]
        h, w = e.frames.shape[2:]
        # the pixels of the asked colour form the asked shape and nothing else
        rgb = np.array(a["rgb"])
        drawn = (e.frames[0].permute(1, 2, 0).numpy() == rgb).all(-1)
        assert (drawn == S.shape_mask(e.answer, h, w, a["cx"], a["cy"], a["r"])).all()
        assert a["color"] in e.question


def test_noise_keeps_colours_recoverable():
    for i in range(8):
        e = make_example("train", i, kind="color", noise=4)
        a = e.meta["asked"]
        mask = S.shape_mask(a["shape"], *e.frames.shape[2:], a["cx"], a["cy"], a["r"])
        assert nearest_color(_rgb_at(e.frames[0], mask)) == e.answer


def _read_digit(frame, meta):
    """Which seven-segment digit is lit, read from the pixels at each segment's centre."""
    x0, y0 = meta["cell_xy"] if "cell_xy" in meta else (None, None)
    s = meta["height"] / 18.0
    bg = np.array(meta["background"])
    lit = ""
    img = frame.permute(1, 2, 0).numpy().astype(int)
    for seg, (a, b, c, d) in S._SEGMENT_BOXES.items():
        cx, cy = int(x0 + (a + c) / 2 * s), int(y0 + (b + d) / 2 * s)
        if np.abs(img[cy, cx] - bg).sum() > 60:
            lit += seg
    return next(i for i, segs in enumerate(S.DIGIT_SEGMENTS) if set(segs) == set(lit))


def test_digit_answer_is_the_lit_segments():
    seen = set()
    for i in range(20):
        e = make_example("train", i, kind="digit", noise=0)
        assert str(_read_digit(e.frames[0], e.meta)) == e.answer
        seen.add(e.answer)
    assert len(seen) >= 6
    # the ten digits are ten different segment sets
    assert len({frozenset(s) for s in S.DIGIT_SEGMENTS}) == 10


def test_count_answer_matches_the_drawn_objects():
    for i in range(12):
        e = make_example("train", i, kind="count", noise=0)
        shape = e.meta["shape"]
        objs = [o for o in e.meta["objects"] if o["shape"] == shape]
        assert len(objs) == int(e.answer) and 1 <= int(e.answer) <= S.MAX_COUNT
        img = e.frames[0].permute(1, 2, 0).numpy()
        for o in e.meta["objects"]:  # every object is visible at its centre, in its own colour
            assert (img[int(o["cy"]), int(o["cx"])] == o["rgb"]).all()
        assert f"{shape}s" in e.question


def test_motion_direction_from_the_movers_pixels():
    seen = set()
    for i in range(12):
        e = make_example("train", i, kind="motion", noise=0)
        rgb = np.array(e.meta["mover"]["rgb"])
        cents = []
        for f in e.frames:
            ys, xs = np.nonzero((f.permute(1, 2, 0).numpy() == rgb).all(-1))
            cents.append((xs.mean(), ys.mean()))
        (x0, y0), (x1, y1) = cents[0], cents[-1]
        derived = ("left to right" if x1 > x0 else "right to left") if abs(x1 - x0) > abs(y1 - y0) else \
            ("top to bottom" if y1 > y0 else "bottom to top")
        assert derived == e.answer
        seen.add(e.answer)
    assert len(seen) >= 3


def test_scene_answers_from_first_and_last_frames():
    for i in range(10):
        e = make_example("train", i, kind="scene", noise=0)
        first, last = e.frames[0, :, 0, 0].numpy(), e.frames[-1, :, 0, 0].numpy()
        # corners are background unless an object covers them: use the frame's most common colour
        def dominant(f):
            px = f.permute(1, 2, 0).reshape(-1, 3).numpy()
            vals, counts = np.unique(px, axis=0, return_counts=True)
            return vals[counts.argmax()]
        start, end = nearest_color(dominant(e.frames[0])), nearest_color(dominant(e.frames[-1]))
        assert e.answer == (end if "end" in e.question else start)
        assert start != end
        del first, last
    changes = [make_example("train", i, kind="scene_change", noise=0) for i in range(12)]
    for e in changes:
        differs = bool((e.frames[0] != e.frames[-1]).any())
        assert e.answer == ("yes" if differs else "no")
    assert {e.answer for e in changes} == {"yes", "no"}


@pytest.mark.parametrize("kind", ["needle_digit", "needle_color", "needle_time"])
def test_needle_is_exactly_where_the_meta_says(kind):
    for depth, t, label in ((0.1, 64, "beginning"), (0.5, 128, "middle"), (0.9, 96, "end")):
        e = make_example("heldout", 0, kind=kind, num_frames=t, depth=depth, noise=0)
        start, k = e.meta["needle_start"], e.meta["needle_frames"]
        assert start == round(depth * (t - k))
        rgb = None
        # needle frames hold pixels of a colour no other frame has
        base = e.frames[start - 1] if start > 0 else e.frames[start + k]
        diff = (e.frames[start] != base).any(0)
        rgb = e.frames[start][:, diff].permute(1, 0).numpy()
        needle_color = nearest_color(np.median(rgb, 0))
        assert needle_color == e.meta["color"]
        target = np.array(COLORS[needle_color])
        has = [bool((np.abs(f.permute(1, 2, 0).numpy().astype(int) - target).sum(-1) <= 3 * S.COLOR_JITTER).sum() > 20)
               for f in e.frames]
        assert [i for i, x in enumerate(has) if x] == list(range(start, start + k))
        if kind == "needle_color":
            assert e.answer == needle_color
        if kind == "needle_time":
            assert e.answer == label == S.needle_time_label(start, k, t)
        if kind == "needle_digit":
            assert e.answer == str(e.meta["digit"])


def test_is_correct_free_form_and_multiple_choice():
    e = make_example("heldout", 0, kind="color", mc=False)
    other = next(c for c in COLORS if c != e.answer)
    assert is_correct(e, e.answer) and is_correct(e, f"The {e.meta['asked']['shape']} is {e.answer.upper()}.")
    assert not is_correct(e, other) and not is_correct(e, f"{e.answer} or {other}") and not is_correct(e, "")
    n = make_example("heldout", 1, kind="count", mc=False)
    words = dict(zip("123456", ["one", "two", "three", "four", "five", "six"]))
    assert is_correct(n, n.answer) and is_correct(n, words[n.answer]) and not is_correct(n, "9")
    m = make_example("heldout", 2, kind="motion", mc=False)
    assert is_correct(m, f"It moves from {m.answer}.")
    wrong = next(d for d in S.DIRECTIONS if d != m.answer)
    assert not is_correct(m, wrong)
    mc = make_example("heldout", 3, kind="shape", mc=True)
    assert is_correct(mc, mc.target) and is_correct(mc, f"{mc.target}. {mc.answer}")
    assert not is_correct(mc, next(x for x in "ABCD" if x != mc.target))


def test_caption_names_every_object_left_to_right_from_the_pixels():
    seen = set()
    for i in range(24):
        e = make_example("train", i, kind=S.CAPTION_KIND, noise=0)
        assert e.options is None and e.target == e.answer and is_correct(e, e.answer)
        h, w = e.frames.shape[2:]
        if e.answer.startswith("the digit"):
            seen.add("digit")
            assert e.answer == f"the digit {e.meta['digit']} in {e.meta['color']}"
            lit = (e.frames[0].permute(1, 2, 0).numpy() != e.meta["background"]).any(-1)
            assert lit.any()
            continue
        seen.add("objects")
        objects = sorted(e.meta["objects"], key=lambda o: o["cx"])
        for o in objects:  # each named colour is what is drawn inside that shape
            mask = S.shape_mask(o["shape"], h, w, o["cx"], o["cy"], o["r"])
            assert nearest_color(_rgb_at(e.frames[0], mask)) == o["color"]
        names = [f"a {o['color']} {o['shape']}" for o in objects]
        assert e.answer.split(" and ")[-1] == names[-1] and all(n in e.answer for n in names)
        assert [e.answer.index(n) for n in names] == sorted(e.answer.index(n) for n in names)
    assert seen == {"digit", "objects"}
    assert S.CAPTION_KIND not in KINDS  # training only: evaluation never draws it
    assert not is_correct(make_example("train", 0, kind=S.CAPTION_KIND), "a red circle and a blue triangle and more")


def test_describe_names_what_is_drawn():
    for i in range(8):
        e = make_example("train", i, kind="color")
        text = S.describe(e)
        assert text.startswith("The picture shows ") and all(f"{o['color']} {o['shape']}" in text for o in e.meta["objects"])
        d = make_example("train", i, kind="digit")
        assert S.describe(d) == f"The picture shows the digit {d.meta['digit']} in {d.meta['color']}."
    with pytest.raises(ValueError, match="static"):
        S.describe(make_example("train", 0, kind="motion"))


# ----------------------------------------------------------------------------- clip kinds (sample-video questions)


def _centroids(e, rgb):
    """Per frame: (x, y) mean of the pixels exactly ``rgb`` (noise-free examples), or None where absent."""
    out = []
    for f in e.frames:
        ys, xs = np.nonzero((f.permute(1, 2, 0).numpy() == np.asarray(rgb)).all(-1))
        out.append((xs.mean(), ys.mean()) if len(xs) else None)
    return out


def _net_direction(cents, still=1.0):
    (x0, y0), (x1, y1) = cents[0], cents[-1]
    if max(abs(x1 - x0), abs(y1 - y0)) < still:
        return None
    if abs(x1 - x0) > abs(y1 - y0):
        return "left to right" if x1 > x0 else "right to left"
    return "top to bottom" if y1 > y0 else "bottom to top"


def test_mover_answer_is_the_only_object_whose_pixels_travel():
    seen = set()
    for i in range(16):
        e = make_example("train", i, kind="mover", noise=0, mc=bool(i % 2))
        objects = [e.meta["first"], *e.meta["others"]]
        moved = [S.object_name(o["color"], o["shape"]) for o in objects
                 if _net_direction([c for c in _centroids(e, o["rgb"]) if c is not None]) is not None]
        asked = e.question.split(" from ")[1].split("?")[0]
        assert e.answer == (moved[0] if moved else S.NOTHING) and len(moved) <= 1
        if moved:
            assert _net_direction(_centroids(e, e.meta["first"]["rgb"])) == asked
        if e.options:
            assert e.answer in e.options and len(set(e.options)) == len(e.options) == 4
            assert e.options[ord(e.target) - ord("A")] == e.answer
        seen.add(e.answer == S.NOTHING)
    assert seen == {True, False}
    assert S.object_name("orange", "square") == "an orange square"


def test_appear_answer_is_the_shape_missing_from_the_first_frame():
    for i in range(12):
        e = make_example("train", i, kind="appear", noise=0)
        late = e.meta["appears"]
        obj = next(o for o in e.meta["others"] if o["shape"] == late["shape"])
        cents = _centroids(e, obj["rgb"])
        assert cents[0] is None and cents[-1] is not None and e.answer == late["shape"]
        assert [c is not None for c in cents].index(True) == late["from_frame"]
        # everything else is there from the first frame
        for o in [e.meta["first"], *e.meta["others"]]:
            if o is not obj:
                assert _centroids(e, o["rgb"])[0] is not None


def test_clip_colour_is_the_asked_shapes_drawn_colour():
    for i in range(12):
        e = make_example("train", i, kind="clip_color", noise=0)
        asked = e.meta["asked"]
        obj = next(o for o in [e.meta["first"], *e.meta["others"]] if o["shape"] == asked["shape"])
        assert nearest_color(obj["rgb"]) == e.answer == asked["color"]
        assert any(c is not None for c in _centroids(e, obj["rgb"]))  # on screen at some point
        assert ("ball" in e.question) <= (asked["shape"] == "circle")


def test_travel_answer_is_the_net_displacement_even_when_bouncing():
    seen = set()
    for i in range(20):
        e = make_example("train", i, kind="travel", noise=0)
        derived = _net_direction(_centroids(e, e.meta["first"]["rgb"]))
        assert e.answer == (S.TRAVEL[derived] if derived else S.STAY)
        seen.add(e.answer)
    assert len(seen) >= 4


def test_digit_sequence_answers_from_the_digits_read_off_each_frame():
    seen = set()
    for i in range(16):
        e = make_example("train", i, kind="digit_seq", noise=0)
        m = e.meta
        read = [_read_digit(f, m) for f in e.frames]
        bounds = m["bounds"]
        for d, lo, hi in zip(m["digits"], bounds[:-1], bounds[1:]):  # each digit holds its frames, no gaps
            assert hi > lo and read[lo:hi] == [d] * (hi - lo)
        digits = m["digits"]
        expected = {"first": digits[0], "last": digits[-1], "largest": max(digits), "distinct": len(set(digits))}
        assert e.answer == str(expected[m["asked"]])
        seen.add(m["asked"])
    assert seen == {"first", "last", "largest", "distinct"}


def test_clip_kinds_are_outside_kinds_and_keep_earlier_seeds():
    assert not set(S.CLIP_KINDS) & set(KINDS)
    assert S.ALL_KINDS[:len(KINDS) + 1] == KINDS + (S.CAPTION_KIND,)
    for kind in S.CLIP_KINDS:
        e = make_example("heldout", 3, kind=kind)
        assert 8 <= e.num_frames <= 24 and is_correct(e, e.target)
        assert make_example("heldout", 3, kind=kind).question == e.question
    with pytest.raises(ValueError, match="at least 6 frames"):
        make_example("train", 0, kind="travel", num_frames=4)


def test_digit_on_color_is_a_needle_style_digit_read_from_the_pixels():
    """A still digit on a palette colour with the haystack's dot; outside KINDS, after every earlier kind's seed."""
    assert not set(S.STILL_KINDS) & set(KINDS)
    assert S.ALL_KINDS[:len(KINDS) + 1 + len(S.CLIP_KINDS) + len(S.STILL_KINDS)] == \
        KINDS + (S.CAPTION_KIND,) + S.CLIP_KINDS + S.STILL_KINDS
    seen, backgrounds = set(), set()
    for i in range(20):
        e = make_example("train", i, kind="digit_on_color", noise=0)
        m = e.meta
        assert e.num_frames in (2, 4) and torch.equal(e.frames[0], e.frames[-1])  # a still picture
        assert str(_read_digit(e.frames[0], m)) == e.answer and is_correct(e, e.target)
        assert S.nearest_color(m["background"]) == m["background_color"] != m["color"]
        assert S._dist(COLORS[m["color"]], COLORS[m["background_color"]]) >= S.MIN_CONTRAST
        img = e.frames[0].permute(1, 2, 0).numpy()
        cx, cy = (int(v) for v in m["dot"])
        assert tuple(img[cy, cx]) in ((0, 0, 0), (255, 255, 255))  # the dot
        seen.add(e.answer)
        backgrounds.add(m["background_color"])
    assert len(seen) >= 6 and len(backgrounds) >= 5
    assert make_example("train", 0, kind="digit").meta.keys() == {"digit", "color", "background", "cell_xy", "height"}


# ----------------------------------------------------------------------------- crowd kinds (the sample clips' layouts)


def test_crowd_kinds_come_after_every_earlier_kind():
    assert not set(S.CROWD_KINDS) & set(KINDS + S.CLIP_KINDS + S.STILL_KINDS)
    before = KINDS + (S.CAPTION_KIND,) + S.CLIP_KINDS + S.STILL_KINDS
    assert S.ALL_KINDS[:len(before) + len(S.CROWD_KINDS)] == before + S.CROWD_KINDS  # appended: earlier kinds keep their seeds
    for kind in S.CROWD_KINDS:
        e = make_example("heldout", 3, kind=kind)
        assert is_correct(e, e.target) and make_example("heldout", 3, kind=kind).question == e.question
        assert (16 if kind == "scene_seq" else 14) <= e.num_frames <= (128 if kind == "scene_seq" else 24)


def test_crowd_mover_is_the_small_shape_whose_pixels_travel_among_larger_ones():
    seen, larger, light, late = set(), [], 0, 0
    for i in range(16):
        e = make_example("train", i, kind="crowd_mover", noise=0, mc=bool(i % 2))
        first, others = e.meta["first"], e.meta["others"]
        moved = [S.object_name(o["color"], o["shape"]) for o in [first, *others]
                 if _net_direction([c for c in _centroids(e, o["rgb"]) if c is not None]) is not None]
        assert e.answer == (moved[0] if moved else S.NOTHING) and len(moved) <= 1
        if moved:
            assert _net_direction(_centroids(e, first["rgb"])) == e.question.split(" from ")[1].split("?")[0]
        seen.add(e.answer == S.NOTHING)
        larger += [o["r"] > 1.2 * first["r"] for o in others]
        light += e.meta["background"] == [235, 235, 235]
        late += any(_centroids(e, o["rgb"])[0] is None for o in others)  # absent from the first frame
        assert is_correct(e, e.target)
    assert seen == {True, False}
    assert sum(larger) >= 0.8 * len(larger) and light >= 5 and late >= 4


def test_crowd_colour_is_the_asked_shapes_drawn_colour_mostly_the_small_one():
    small = 0
    for i in range(16):
        e = make_example("train", i, kind="crowd_color", noise=0)
        asked = e.meta["asked"]
        obj = next(o for o in [e.meta["first"], *e.meta["others"]] if o["shape"] == asked["shape"])
        assert nearest_color(obj["rgb"]) == e.answer == asked["color"]
        assert any(c is not None for c in _centroids(e, obj["rgb"]))
        small += obj is e.meta["first"]
    assert small >= 8


def test_scene_sequence_answers_from_the_background_read_off_each_frame():
    seen = set()
    for i in range(20):
        e = make_example("train", i, kind="scene_seq", noise=0)
        corner = [nearest_color(f[:, 0, 0].tolist()) for f in e.frames]  # the dot never reaches the corner
        runs = [c for j, c in enumerate(corner) if j == 0 or c != corner[j - 1]]
        assert runs == e.meta["colors"] and 3 <= len(runs) <= 12
        if "How" in e.question:
            assert e.answer == str(len(runs) - 1)
            seen.add("changes")
        else:
            assert e.answer == (runs[-1] if e.meta["asked"] == "last" else runs[0])
            seen.add(e.meta["asked"])
        assert is_correct(e, e.target)
    assert seen == {"first", "last", "changes"}



# ----------------------------------------------------------------------------- where (a side of the picture)


def test_where_kind_comes_last_and_its_answer_is_the_side_its_pixels_sit_on():
    assert S.ALL_KINDS.index("where") == len(S.ALL_KINDS) - 2 and "where" not in KINDS + S.CLIP_KINDS + S.CROWD_KINDS
    seen, bands, balls = set(), 0, 0
    for i in range(24):
        e = make_example("train", i, kind="where", noise=0, mc=bool(i % 2))
        m = e.meta
        t, _, h, w = e.frames.shape
        counts = []
        for f in e.frames:
            ys, xs = np.nonzero((f.permute(1, 2, 0).numpy() == np.asarray(m["rgb"])).all(-1))
            counts.append(len(xs))
            gaps = {"top": ys.mean() / h, "bottom": 1 - ys.mean() / h, "left": xs.mean() / w, "right": 1 - xs.mean() / w}
            side = min(gaps, key=gaps.get)
            assert side == m["side"] and gaps[side] < 0.25 and sorted(gaps.values())[1] >= 0.28
        assert len(set(counts)) == 1  # the moving ball never covers it
        assert e.answer == S.PLACES[m["side"]] and m["color"] in e.question and m["what"] in e.question
        assert is_correct(e, e.target) and not is_correct(e, "on the left" if m["side"] != "left" else "at the top")
        seen.add(m["side"])
        bands += m["what"] == "band"
        balls += "ball" in m
    assert seen == set(S.PLACES) and 6 <= bands <= 20 and balls >= 6


def test_does_kind_is_travels_drawing_from_four_frames_answered_with_what_the_thing_does():
    assert S.ALL_KINDS[-1] == "does" and S.DOES.keys() == S.TRAVEL.keys()
    seen, short = set(), 0
    for i in range(24):
        e = make_example("train", i, kind="does", noise=0, mc=bool(i % 2))
        derived = _net_direction(_centroids(e, e.meta["first"]["rgb"]))
        assert e.answer == (S.DOES[derived] if derived else S.STAY)
        assert e.question.startswith("What does the ") and is_correct(e, e.target)
        seen.add(e.answer)
        short += e.num_frames < 8
        assert 4 <= e.num_frames <= 24
    assert len(seen) == 5 and short >= 2
    assert make_example("train", 0, kind="does", num_frames=4).num_frames == 4
    with pytest.raises(ValueError, match="at least 4 frames"):
        make_example("train", 0, kind="does", num_frames=2)
    assert not is_correct(make_example("heldout", 1, kind="does", mc=False), "it moves to the right and it falls")
