"""The default model on video files as people have them, on a CPU: time per step of ``answer()``.

Writes (once, into ``--workdir``) three H.264 files shaped like real footage: a 3-minute 1280x720
30 fps clip, a 60-second 720x1280 portrait clip at 30 fps, and a 45-second 1920x1080 clip with a
variable frame rate (frames 1/50 s to 1/15 s apart); moving shapes and text over gradients, with
noise so the encoder cannot cheat. Then asks each one question with the default model (dense, and
UniSparse with the library defaults), with the model's own frame budget, and prints the time of
every step (``Answer.timings``). The model is loaded once before the first question (its load is
reported separately).

  OMP_NUM_THREADS=2 python benchmarks/cpu_answer/bench_real_videos.py --workdir /tmp/videos --output benchmarks/cpu_answer/results.md
"""

from __future__ import annotations

import argparse
import platform
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

FILES = {  # name: (width, height, seconds, fps or None for variable)
    "landscape_720p_3min.mp4": (1280, 720, 180, 30),
    "portrait_720x1280_60s.mp4": (720, 1280, 60, 30),
    "vfr_1080p_45s.mp4": (1920, 1080, 45, None),
}


def write_video(path: Path, width: int, height: int, seconds: float, fps: int | None, seed: int = 0) -> None:
    import av

    rng = np.random.default_rng(seed)
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps or 30)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"preset": "ultrafast", "crf": "28"}
    stream.codec_context.time_base = Fraction(1, 1000)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t, i = 0.0, 0
    while t < seconds:
        img = np.empty((height, width, 3), np.uint8)
        img[..., 0] = (127 + 100 * np.sin(xx / width * 6.28 + t * 0.3)).astype(np.uint8)
        img[..., 1] = (127 + 100 * np.cos(yy / height * 6.28 - t * 0.2)).astype(np.uint8)
        img[..., 2] = 90
        for k, colour in enumerate(((230, 40, 40), (40, 200, 60), (40, 80, 230))):
            cx = int((0.5 + 0.4 * np.sin(t * (0.4 + 0.3 * k) + k)) * width)
            cy = int((0.3 + 0.2 * k) * height)
            r = max(8, min(width, height) // 12)
            img[max(0, cy - r):cy + r, max(0, cx - r):cx + r] = colour
        img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
        step = 1 / fps if fps else (1 / 50 if (i // 40) % 2 == 0 else 1 / 15)
        t, i = t + step, i + 1
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--output", type=Path, default=None)
    p.add_argument("--question", default="What colour is the square that moves fastest?")
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for name, (w, h, s, fps) in FILES.items():
        if not (args.workdir / name).is_file():
            t0 = time.perf_counter()
            write_video(args.workdir / name, w, h, s, fps)
            print(f"wrote {name} in {time.perf_counter() - t0:.0f} s", flush=True)

    from videoqa import answer, read_video_info
    from videoqa.models import load_model

    t0 = time.perf_counter()
    loaded = load_model(None, device="cpu")
    load_s = time.perf_counter() - t0
    rows = []
    steps = ("decode_video", "preprocess", "prefill", "vision_encoder", "generate", "total")
    for name in FILES:
        info = read_video_info(args.workdir / name)
        for sparse in (False, True):
            a = answer(args.workdir / name, args.question, model=loaded, sparse=sparse, max_new_tokens=16)
            rows.append((name, info, "UniSparse" if sparse else "dense", a))
            print(f"{name} {'UniSparse' if sparse else 'dense'}: " + ", ".join(f"{k} {a.timings[k]:.2f} s" for k in steps)
                  + f"; {a.frames.count} frames {a.frames.width}x{a.frames.height}, {a.total_tokens} tokens; "
                  f"answer {a.text!r}", flush=True)
    lines = [f"## The default model on real-world video files, CPU ({platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__})", "",
             f"Model load (once, before the first question): {load_s:.1f} s. Frame budget: the model's own "
             f"({loaded.video_defaults}). Question: *{args.question}*; 16 new tokens at most.", "",
             "| file | source | mode | frames | tokens | decode s | preprocess s | prefill s (vision) | generate s | total s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, info, mode, a in rows:
        t = a.timings
        lines.append(f"| {name} | {info.width}x{info.height}, {info.duration_s:.0f} s, {info.fps:.1f} fps avg | {mode} | "
                     f"{a.frames.count} of {a.frames.width}x{a.frames.height} | {a.total_tokens} | {t['decode_video']:.2f} | "
                     f"{t['preprocess']:.2f} | {t['prefill']:.2f} ({t['vision_encoder']:.2f}) | {t['generate']:.2f} | "
                     f"**{t['total']:.2f}** |")
    lines += ["", f"Command: `OMP_NUM_THREADS={torch.get_num_threads()} python benchmarks/cpu_answer/bench_real_videos.py "
                  f"--workdir {args.workdir}`"]
    md = "\n".join(lines) + "\n"
    print(md)
    if args.output:
        args.output.write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
