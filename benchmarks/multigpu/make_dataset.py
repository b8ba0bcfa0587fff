"""A Video-MME-layout set of generated videos, three questions each with known answers, for the multi-GPU run.

Issue "Video-MME across GPUs for real" asks for at least 12 videos and 36 questions in the
release's layout. Each video is the generator's background-sequence clip
(``videoqa_training.synthetic``, kind ``scene_seq``: a plain background that changes colour 2-11
times, a black dot circling on half of them), rendered at ``--size`` and encoded as H.264 at 2 fps;
its three questions (the first colour, the last colour, how many times it changes) are answered by
what was drawn. Written here with PyAV, then carried to a GPU machine that has no encoder.

  python benchmarks/multigpu/make_dataset.py --videos 12 --frames 128 --size 448 --output .gpu_carry/videomme12
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def options_for(gold: str, pool: list[str], rng) -> tuple[list[str], str]:
    """Four lettered options holding ``gold`` at a random place, and its letter."""
    others = [p for p in pool if p != gold]
    picked = [str(x) for x in rng.choice(others, size=3, replace=False)] + [gold]
    rng.shuffle(picked)
    letter = "ABCD"[picked.index(gold)]
    return [f"{l}. {p}" for l, p in zip("ABCD", picked)], letter


def write_mp4(path: Path, frames: np.ndarray, fps: int = 2) -> None:
    import av

    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.options = {"preset": "medium", "crf": "28"}  # plain colours: a few hundred KB a video
    for img in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def make(output: Path, videos: int, frames: int, size: int, seed: int = 0) -> list[dict]:
    from videoqa_training.synthetic import COLORS, make_example

    (output / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(videos):
        ex = make_example("heldout", 10_000 + seed * 1000 + i, kind="scene_seq", num_frames=frames, size=(size, size))
        names = ex.meta["colors"]
        vid = f"mg{i:03d}"
        write_mp4(output / "videos" / f"{vid}.mp4", ex.frames.permute(0, 2, 3, 1).numpy())
        rng = np.random.default_rng([seed, i])
        asked = [("Temporal Perception", "What colour is the background at the very beginning?", names[0], list(COLORS)),
                 ("Temporal Perception", "What colour is the background at the very end?", names[-1], list(COLORS)),
                 ("Counting Problem", "How many times does the background colour change?", str(len(names) - 1),
                  [str(n) for n in range(12)])]
        for j, (task, question, gold, pool) in enumerate(asked, 1):
            opts, letter = options_for(gold, pool, rng)
            rows.append({"video_id": f"{i + 1:03d}", "duration": "short" if frames <= 16 else "medium",
                         "domain": "Synthetic", "sub_category": "Background colours", "url": f"videos/{vid}.mp4",
                         "videoID": vid, "question_id": f"{i + 1:03d}-{j}", "task_type": task,
                         "question": question, "options": opts, "answer": letter})
    (output / "videomme.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--frames", type=int, default=128, help="frames per video, even (2 fps: 64 s at 128)")
    p.add_argument("--size", type=int, default=448, help="frame side in pixels, a multiple of 28")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    rows = make(args.output, args.videos, args.frames, args.size, args.seed)
    print(f"{len(rows)} questions on {args.videos} videos in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
