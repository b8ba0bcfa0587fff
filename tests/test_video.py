"""videoqa.video: frame counts, real timestamps, content at known times, resize rules, errors.

Uses videoqa/assets/samples/ when it holds every sample, else generates them (a few seconds) into a
temporary folder with videoqa_training/sample_videos.py.
"""

import importlib.util
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("decord")
pytest.importorskip("av")

from videoqa import VideoError, read_video_info, sample_frames  # noqa: E402
from videoqa import video as V  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


from videoqa_training import sample_videos as gen  # noqa: E402
AVAILABLE = {s.name for s in gen.SAMPLES if gen.encoder_available(s.codec)}


@pytest.fixture(scope="session")
def samples(tmp_path_factory):
    d = ROOT / "videoqa" / "assets" / "samples"
    if (d / "manifest.json").exists() and all((d / n).exists() for n in AVAILABLE):
        return d
    out = tmp_path_factory.mktemp("samples")
    gen.generate_all(out)
    return out


def need(samples, name):
    if name not in AVAILABLE:
        pytest.skip(f"this PyAV build cannot encode {name}")
    return samples / name


# ----------------------------------------------------------------------------- counts


@pytest.mark.parametrize("kw, expected", [
    (dict(fps=2.0), 20), (dict(fps=1.0), 10), (dict(fps=0.1), 4),  # 1 frame -> min_frames 4
    (dict(fps=2.0, min_frames=3), 20), (dict(fps=0.1, min_frames=3), 4),  # min rounded up to even
    (dict(fps=2.0, max_frames=9), 8),  # max rounded down to even
    (dict(fps=100.0), 240),  # capped at the 240 frames there are
    (dict(num_frames=6), 6), (dict(num_frames=7), 8), (dict(num_frames=1, min_frames=1), 2),
    (dict(num_frames=2), 4), (dict(num_frames=1000), 768), (dict(num_frames=1000, max_frames=11), 10),
])
def test_plan_num_frames(kw, expected):
    assert V.plan_num_frames(10.0, 240, **kw) == expected


def test_plan_num_frames_rejects_bad_arguments():
    for kw in [dict(fps=2.0, num_frames=4), dict(fps=0), dict(fps=-1), dict(num_frames=0),
               dict(min_frames=0), dict(min_frames=9, max_frames=8), dict(min_frames=5, max_frames=5)]:
        with pytest.raises(VideoError):
            V.plan_num_frames(10.0, 240, **kw)


def test_sample_counts_and_layout(samples):
    path = need(samples, "shapes.mp4")
    vf = sample_frames(path)  # fps 2 by default
    assert vf.frames.dtype == torch.uint8 and vf.frames.ndim == 4 and vf.frames.shape[1] == 3
    assert vf.num_frames == 20 and vf.sample_fps == pytest.approx(2.0)
    assert sample_frames(path, num_frames=7).num_frames == 8
    assert sample_frames(path, fps=0.5, max_frames=4).num_frames == 4
    vf = sample_frames(path, fps=1.0, start=2.0, end=7.0)
    assert vf.num_frames == 4  # 5 s at 1 fps: 5 frames, rounded down to even


# ----------------------------------------------------------------------------- timestamps & content


def test_timestamps_monotone_within_window(samples):
    path = need(samples, "counting.mp4")
    vf = sample_frames(path, fps=2.0, start=2.5, end=6.5)
    ts = np.array(vf.timestamps_s)
    assert vf.num_frames == 8 and len(ts) == 8
    assert np.all(np.diff(ts) > 0)
    assert ts[0] >= 2.5 and ts[-1] < 6.5
    assert ts[0] == pytest.approx(2.5, abs=1 / 24) and ts[-1] == pytest.approx(6.5, abs=2 / 24)
    assert vf.indices == [round(t * 24) for t in ts]


def _lit_segments(frame, scale_y, scale_x):
    lit = set()
    for name in gen.SEGMENTS:
        x0, y0, x1, y1 = gen.segment_box(name)
        cy, cx = int((y0 + y1) / 2 * scale_y), int((x0 + x1) / 2 * scale_x)
        if frame[:, cy - 2:cy + 3, cx - 2:cx + 3].float().mean() > 128:
            lit.add(name)
    return lit


def read_digit(frame, scale_y, scale_x):
    lit = _lit_segments(frame, scale_y, scale_x)
    return next((d for d, segs in gen.DIGIT_SEGMENTS.items() if set(segs) == lit), None)


def test_counting_digits_match_timestamps(samples):
    vf = sample_frames(need(samples, "counting.mp4"), fps=2.0)
    sy, sx = vf.frames.shape[2] / 240, vf.frames.shape[3] / 320
    seen = [(t, read_digit(f, sy, sx)) for f, t in zip(vf.frames, vf.timestamps_s)]
    assert all(d == int(t) + 1 for t, d in seen), seen
    assert {d for _, d in seen} == set(range(1, 10))
    one = sample_frames(need(samples, "counting.mp4"), num_frames=2, start=3.4, end=3.6)
    assert all(3.4 <= t < 3.6 for t in one.timestamps_s)
    assert read_digit(one.frames[0], sy, sx) == 4  # second 3.x shows the digit 4


def test_scene_change_colours(samples):
    vf = sample_frames(need(samples, "scene_change.mp4"), fps=4.0)
    change = json.loads((samples / "manifest.json").read_text())
    change = next(v for v in change["videos"] if v["file"] == "scene_change.mp4")["facts"]["scene_change_s"]
    for frame, t in zip(vf.frames, vf.timestamps_s):
        r, g, b = frame.float().mean(dim=(1, 2)).tolist()
        assert (b > r + 40) if t < change else (r > b + 80), (t, r, g, b)


def test_shapes_positions(samples):
    vf = sample_frames(need(samples, "shapes.mp4"), fps=1.0)
    sy, sx = vf.frames.shape[2] / 240, vf.frames.shape[3] / 320
    for frame, t in zip(vf.frames.int(), vf.timestamps_s):
        r, g, b = frame
        red = (r > 180) & (g < 90) & (b < 90)
        xs = torch.nonzero(red)[:, 1].float()
        assert abs(xs.mean().item() / sx - gen.circle_x(t)) < 4, t
        x0, y0, x1, y1 = (int(v) for v in (200 * sx, 140 * sy, 280 * sx, 210 * sy))
        green = ((g > 130) & (r < 90) & (b < 90))[y0:y1, x0:x1].float().mean().item()
        assert (green > 0.3) if t >= gen.TRIANGLE_T else (green == 0), (t, green)


def test_vfr_timestamps_are_real(samples):
    path = need(samples, "vfr.mp4")
    info = read_video_info(path)
    assert info.num_frames == len(gen.VFR_PTS) and info.duration_s == pytest.approx(6.0, abs=0.1)
    vf = sample_frames(path, fps=10.0)
    ts, idx = np.array(vf.timestamps_s), np.array(vf.indices)
    assert vf.num_frames == 60 and np.all(np.diff(ts) >= 0)
    np.testing.assert_allclose(ts, np.array(gen.VFR_PTS)[idx] / 1000, atol=1e-3)  # the frames' own times
    assert np.abs(ts - idx / info.fps).max() > 0.5  # not index / average fps
    sx = vf.frames.shape[3] / 320
    for frame, t in zip(vf.frames, ts):  # the bar drawn at x(t) is where t says
        cols = torch.nonzero((frame.int() > 200).all(dim=0).any(dim=0))[:, 0].float()
        assert abs(cols.mean().item() / sx - (gen.vfr_bar_x(t) + 4)) < 3, t
    slow = sample_frames(path, fps=10.0, start=2.0, end=4.0)  # 5 fps there: all 10 frames, 0.2 s apart
    assert slow.indices == list(range(60, 70))
    np.testing.assert_allclose(np.diff(slow.timestamps_s), 0.2, atol=1e-3)
    fast = sample_frames(path, num_frames=10, start=0.0, end=2.0)  # 30 fps there
    np.testing.assert_allclose(np.diff(fast.timestamps_s), 1.933 / 9, atol=0.02)
    two = np.array(sample_frames(path, fps=2.0).timestamps_s)  # uniform in time, not in index
    assert np.abs(two - np.linspace(two[0], two[-1], len(two))).max() < 0.11


def test_long_video_colours_and_window(samples):
    path = need(samples, "long.mp4")
    info = read_video_info(path)
    assert info.duration_s == pytest.approx(120.0) and (info.width, info.height) == (64, 64)
    vf = sample_frames(path, fps=0.5, start=60, end=90)
    assert vf.num_frames == 14 and all(60 <= t < 90 for t in vf.timestamps_s)
    for frame, t in zip(vf.frames, vf.timestamps_s):
        name, rgb = gen.LONG_COLORS[int(t // 10)]
        corner = frame[:, :6, :6].float().mean(dim=(1, 2))  # the dot never reaches the corner
        assert torch.allclose(corner, torch.tensor(rgb, dtype=torch.float32), atol=20), (t, name)


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("name, max_pixels, total_pixels", [
    ("odd_size.mp4", None, None), ("odd_size.mp4", 20000, None), ("odd_size.mp4", None, 8 * 28 * 28 * 30),
    ("portrait.mp4", None, None), ("portrait.mp4", 12000, None), ("portrait.mp4", 50000, 8 * 9000),
    ("shapes.mp4", 28 * 28 * 4, None),
])
def test_resize_rules(samples, name, max_pixels, total_pixels):
    path = need(samples, name)
    info = read_video_info(path)
    vf = sample_frames(path, num_frames=8, max_pixels=max_pixels, total_pixels=total_pixels)
    t, _, h, w = vf.frames.shape
    assert t == 8 and h % 28 == 0 and w % 28 == 0 and h >= 28 and w >= 28
    if max_pixels is not None:
        assert h * w <= max_pixels
    if total_pixels is not None:
        assert t * h * w <= total_pixels
    assert (h > w) == (info.height > info.width)
    # aspect kept up to the rounding to whole patches: each side is within one patch of the exact
    # scaling, so the two axes' scales differ by less than one patch over the shorter source side
    assert abs(h / info.height - w / info.width) < 28 / min(info.height, info.width)


def test_target_size_edge_cases():
    assert V.target_size(177, 321) == (168, 308)
    assert V.target_size(10, 10) == (28, 28)  # at least one multiple
    h, w = V.target_size(20, 6000, max_pixels=28 * 28 * 10)  # extreme aspect ratio
    assert h == 28 and w % 28 == 0 and h * w <= 28 * 28 * 10
    assert V.target_size(64, 64, min_pixels=100_000) == (336, 336)
    assert V.target_size(64, 64, min_pixels=100_000, max_pixels=50_000) == (56, 56)
    with pytest.raises(VideoError):
        V.target_size(240, 320, max_pixels=28 * 28 - 1)


def test_odd_size_portrait_rotation_info(samples):
    odd = read_video_info(need(samples, "odd_size.mp4"))
    assert (odd.width, odd.height, odd.codec) == (321, 177, "h264")
    por = read_video_info(need(samples, "portrait.mp4"))
    assert (por.width, por.height) == (180, 320)
    rot = read_video_info(need(samples, "rotated.mp4"))
    assert (rot.width, rot.height, rot.rotation) == (240, 320, 90)
    frames = sample_frames(need(samples, "rotated.mp4"), num_frames=4).frames
    assert frames.shape[2] > frames.shape[3]  # displayed portrait
    top = frames[:, :, :20].float().mean(dim=(0, 2, 3))
    assert top[0] > 180 and top[1] < 80 and top[2] < 80  # red band on top, as displayed


def test_manifest_matches_files(samples):
    manifest = json.loads((samples / "manifest.json").read_text())
    assert {v["file"] for v in manifest["videos"]} == AVAILABLE
    for v in manifest["videos"]:
        info = read_video_info(samples / v["file"])
        assert (info.width, info.height, info.num_frames) == (v["width"], v["height"], v["num_frames"])
        assert info.codec == v["codec"] and info.rotation == v["rotation_ccw_deg"]
        assert info.duration_s == pytest.approx(v["duration_s"], abs=0.1)


# ----------------------------------------------------------------------------- containers


@pytest.mark.parametrize("name, codec, backend, color", [
    ("mpeg4.mkv", "mpeg4", "decord", (240, 220, 30)),
    ("vp9.webm", "vp9", "decord", (30, 210, 220)),
    ("av1.mp4", "av1", "pyav", (210, 40, 200)),  # decord 0.6 cannot decode AV1: PyAV fallback
])
def test_other_containers(samples, name, codec, backend, color):
    path = need(samples, name)
    info = read_video_info(path)
    assert (info.codec, info.backend, info.width, info.height) == (codec, backend, 320, 240)
    n_expected = gen.SAMPLES[[s.name for s in gen.SAMPLES].index(name)].num_frames
    assert info.num_frames == n_expected
    vf = sample_frames(path, num_frames=6, start=0.5)
    assert vf.frames.shape == (6, 3, 252, 308)
    assert all(0.5 <= t for t in vf.timestamps_s) and np.all(np.diff(vf.timestamps_s) > 0)
    ball = (vf.frames.int() - torch.tensor(color).view(1, 3, 1, 1)).abs().amax(dim=1) < 40
    assert (ball.flatten(1).sum(dim=1) > 200).all()  # the ball is there, in its colour


@pytest.mark.parametrize("name", ["rotated.mp4", "vfr.mp4", "mpeg4.mkv"])
def test_pyav_fallback_matches_decord(samples, name):
    path = str(need(samples, name))
    dec, pav = V._DecordSource(path), V._AVSource(path)
    for field in ("num_frames", "width", "height", "rotation", "codec"):
        assert getattr(dec.info, field) == getattr(pav.info, field), field
    assert pav.info.duration_s == pytest.approx(dec.info.duration_s, abs=0.07)
    np.testing.assert_allclose(pav.ts, dec.ts, atol=2e-3)
    idx = [0, 5, dec.info.num_frames - 1]
    a = np.concatenate([arr for _, arr in dec.batches(idx)]).astype(np.float32)
    b = np.concatenate([arr for _, arr in pav.batches(idx)]).astype(np.float32)
    assert a.shape == b.shape and np.abs(a - b).mean() < 3  # same frames, same orientation


# ----------------------------------------------------------------------------- errors


def _png_bytes(w=8, h=8):
    raw = b"".join(b"\x00" + bytes([255, 0, 0]) * w for _ in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="not found") as err:
        read_video_info(tmp_path / "nope.mp4")
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(VideoError):
        sample_frames(tmp_path)  # a directory


@pytest.mark.parametrize("kind", ["text", "png", "empty", "first_half"])
def test_not_a_video(samples, tmp_path, kind):
    path = tmp_path / "clip.mp4"
    if kind == "text":
        path.write_text("this is not a video\n" * 20)
    elif kind == "png":
        path.write_bytes(_png_bytes())
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        data = (need(samples, "shapes.mp4")).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="clip.mp4"):
        read_video_info(path)
    with pytest.raises(VideoError):
        sample_frames(path)


def test_truncated_faststart_mp4(tmp_path):
    rng = np.random.default_rng(0)  # noise: big frames, so half the file loses real frame data
    path = tmp_path / "full.mp4"
    gen.encode(path, (rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(24)),
               width=160, height=120, fps=24, container_options={"movflags": "+faststart"})
    assert sample_frames(path, num_frames=4).num_frames == 4
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VideoError):
        sample_frames(cut, num_frames=24)


def test_bad_windows(samples):
    path = need(samples, "counting.mp4")
    for kw in [dict(start=3.0, end=3.0), dict(start=5.0, end=2.0), dict(start=9.5), dict(start=-1.0),
               dict(fps=2.0, num_frames=4), dict(max_pixels=100)]:
        with pytest.raises(VideoError):
            sample_frames(path, **kw)
    vf = sample_frames(path, start=8.0, end=50.0)  # end past the end is clamped
    assert all(8.0 <= t < 9.0 for t in vf.timestamps_s)


# ----------------------------------------------------------------------------- the generator


def test_generator_is_deterministic_and_skips_existing(tmp_path):
    a = gen.generate_all(tmp_path / "a", only={"odd_size.mp4"})
    gen.generate_all(tmp_path / "b", only={"odd_size.mp4"})
    assert (tmp_path / "a" / "odd_size.mp4").read_bytes() == (tmp_path / "b" / "odd_size.mp4").read_bytes()
    before = (tmp_path / "a" / "odd_size.mp4").stat().st_mtime_ns
    assert gen.generate_all(tmp_path / "a", only={"odd_size.mp4"}) == a
    assert (tmp_path / "a" / "odd_size.mp4").stat().st_mtime_ns == before
