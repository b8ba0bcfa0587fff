#!/usr/bin/env python3
"""Generate ``data/videomme-sample/``: a tiny Video-MME in the release's layout, from videoqa/assets/samples/.

Why: the real Video-MME cannot be downloaded here, yet the evaluation must be run end to end on
data in exactly its format. Every answer is known by construction: each question's correct
option is read from the facts in ``videoqa/assets/samples/manifest.json`` (which ``tests/test_video.py``
checks against the decoded frames), and the distractors are other values of the same kind.

Written (deterministically; the same files on every run):

- ``videomme/test-00000-of-00001.parquet`` (the release's table; needs pyarrow, skipped without)
  and ``videomme.json`` (the same rows as JSON, readable without pyarrow);
- ``videos/<videoID>.<ext>``: relative symbolic links to the files in ``videoqa/assets/samples/`` (copies
  where links cannot be made), so the repository holds each video once;
- ``subtitles/<videoID>.srt`` for three videos, the first with the release's ``<font>`` markup.

Duration classes are relative to these clips (seconds, not Video-MME's minutes): ``short`` for
clips of 4 s or less, ``medium`` for 8-10 s, ``long`` for the 2-minute clip. Domain is
``Synthetic``; task types use Video-MME's names. The correct letters cycle A, B, C, D.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "videoqa" / "assets" / "samples"
DEFAULT_OUT = ROOT / "data" / "videomme-sample"
COLUMNS = ("video_id", "duration", "domain", "sub_category", "url", "videoID", "question_id", "task_type",
           "question", "options", "answer")
COLOURS = ["red", "green", "blue", "yellow", "cyan", "magenta", "white", "orange", "purple", "gray", "pink",
           "brown"]


def _others(gold, pool, k=3):
    return [x for x in pool if x != gold][:k]


def _questions(facts: dict[str, dict]) -> list[tuple[str, str, str, list[tuple]]]:
    """(file, duration, sub_category, [(task_type, question, gold, distractors), ...]) per video."""
    shapes, counting, scene, long_ = (facts[f] for f in ("shapes.mp4", "counting.mp4", "scene_change.mp4",
                                                         "long.mp4"))
    digits = [d["value"] for d in counting["digits"]]
    bg = [c["value"] for c in long_["background_colors"]]
    circle = "red" if "red_circle" in shapes else None
    shape_new = next(k for k, v in shapes.items() if isinstance(v, dict) and "appears_at_s" in v).split("_")[1]
    ball = {f: facts[f]["ball"]["color"] for f in ("mpeg4.mkv", "vp9.webm", "av1.mp4")}
    if not all("moving right" in facts[f]["ball"]["motion"] for f in ball):
        raise ValueError("the bouncing balls no longer move right: update the questions")
    direction = ["left to right", "right to left", "top to bottom", "bottom to top"]
    return [
        ("shapes.mp4", "medium", "Shapes", [
            ("Attribute Perception", "What colour is the circle?", circle, _others(circle, COLOURS)),
            ("Temporal Perception", "Which shape appears partway through the video?", shape_new,
             ["square", "circle", "star"]),
            ("Spatial Perception", "In which direction does the red circle move?",
             shapes["red_circle"]["motion"], _others(shapes["red_circle"]["motion"], direction))]),
        ("counting.mp4", "medium", "Digits", [
            ("OCR Problems", "What is the largest digit shown in the video?", str(max(digits)),
             _others(str(max(digits)), ["5", "7", "8", "9"])),
            ("Counting Problem", "How many different digits are shown?", str(len(set(digits))),
             _others(str(len(set(digits))), ["3", "5", "7", "9"])),
            ("Temporal Perception", "Which digit is shown first?", str(digits[0]),
             _others(str(digits[0]), ["0", "1", "5", "9"]))]),
        ("scene_change.mp4", "medium", "Scenes", [
            ("Attribute Perception", "What is the dominant colour at the start of the video?",
             scene["scenes"][0]["dominant_color"], _others(scene["scenes"][0]["dominant_color"], COLOURS)),
            ("Attribute Perception", "What is the dominant colour at the end of the video?",
             scene["scenes"][-1]["dominant_color"], _others(scene["scenes"][-1]["dominant_color"], COLOURS)),
            ("Temporal Reasoning", f"What happens at about {scene['scene_change_s']:g} seconds?",
             scene["events"][0]["event"], ["a boat sinks", "the screen goes black", "a green triangle appears"])]),
        ("long.mp4", "long", "Colours", [
            ("Attribute Perception", "What colour is the background at the start of the video?", bg[0],
             _others(bg[0], ["blue", "white", "gray", "red"])),
            ("Temporal Perception", "What colour is the background at the end of the video?", bg[-1],
             _others(bg[-1], ["black", "red", "green", "brown"])),
            ("Counting Problem", "How many times does the background colour change?", str(len(bg) - 1),
             _others(str(len(bg) - 1), ["5", "9", "11", "12"]))]),
        ("portrait.mp4", "short", "Motion", [
            ("Action Recognition", "In which direction does the red ball move?",
             facts["portrait.mp4"]["red_ball"]["motion"], _others(facts["portrait.mp4"]["red_ball"]["motion"],
                                                                   direction))]),
        ("rotated.mp4", "short", "Layout", [
            ("Spatial Perception", "Where is the red band in the picture?",
             "at the " + facts["rotated.mp4"]["red_band"].split()[0], ["at the bottom", "on the left", "on the right"])]),
        *[(f, "short", "Colours", [
            ("Attribute Perception", "What colour is the ball?", ball[f], _others(ball[f], COLOURS)),
            ("Action Recognition", "Which way does the ball travel overall?", "to the right",
             ["to the left", "upwards", "it stays in place"])]) for f in ("mpeg4.mkv", "vp9.webm", "av1.mp4")],
    ]


def _srt_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _srt(cues, markup=False) -> str:
    blocks = []
    for i, (a, b, text) in enumerate(cues, 1):
        body = f'<font color="white" size=".72c">{text}</font>' if markup else text
        blocks.append(f"{i}\n{_srt_time(a)} --> {_srt_time(b)}\n{body}\n")
    return "\n".join(blocks)


def _subtitles(facts) -> dict[str, str]:
    words = "zero one two three four five six seven eight nine".split()
    counting = [(d["start_s"], d["end_s"], f"Number {words[d['value']]}.") for d in facts["counting.mp4"]["digits"]]
    scene = [(s["start_s"], s["end_s"], f"Here everything is {s['dominant_color']}: {s['content']}.")
             for s in facts["scene_change.mp4"]["scenes"]]
    long_ = [(c["start_s"], c["end_s"], f"The background is {c['value']} now.")
             for c in facts["long.mp4"]["background_colors"]]
    return {"counting": _srt(counting, markup=True), "scene_change": _srt(scene), "long": _srt(long_)}


def build_rows(manifest: dict) -> list[dict]:
    facts = {v["file"]: v["facts"] for v in manifest["videos"]}
    rows, k = [], 0
    for n, (file, duration, sub, items) in enumerate(_questions(facts), 1):
        for j, (task, question, gold, wrong) in enumerate(items, 1):
            if gold is None or len(wrong) != 3 or gold in wrong:
                raise ValueError(f"bad question for {file}: {question!r} {gold!r} {wrong!r}")
            pos = k % 4
            texts = wrong[:pos] + [gold] + wrong[pos:]
            rows.append({"video_id": f"{n:03d}", "duration": duration, "domain": "Synthetic", "sub_category": sub,
                         "url": f"videoqa/assets/samples/{file}", "videoID": Path(file).stem, "question_id": f"{n:03d}-{j}",
                         "task_type": task, "question": question,
                         "options": [f"{'ABCD'[i]}. {t}" for i, t in enumerate(texts)], "answer": "ABCD"[pos]})
            k += 1
    return rows


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    try:
        os.symlink(os.path.relpath(src, dst.parent), dst)
    except OSError:  # no symlinks (some Windows set-ups): copy the small file
        shutil.copyfile(src, dst)


def generate(out=DEFAULT_OUT, samples=SAMPLES) -> list[dict]:
    """Write the sample dataset into ``out``; return its rows."""
    out, samples = Path(out), Path(samples)
    manifest = json.loads((samples / "manifest.json").read_text())
    rows = build_rows(manifest)
    for d in ("videomme", "videos", "subtitles"):
        (out / d).mkdir(parents=True, exist_ok=True)
    (out / "videomme.json").write_text(json.dumps(rows, indent=1) + "\n")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        print("warning: pyarrow missing, the parquet table is not written", file=sys.stderr)
    else:
        table = pa.Table.from_pylist(rows).select(list(COLUMNS))
        pq.write_table(table, out / "videomme" / "test-00000-of-00001.parquet")
    for row in rows:
        _link(samples / Path(row["url"]).name, out / "videos" / Path(row["url"]).name)
    for key, text in _subtitles({v["file"]: v["facts"] for v in manifest["videos"]}).items():
        (out / "subtitles" / f"{key}.srt").write_text(text)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default data/videomme-sample)")
    parser.add_argument("--samples", default=str(SAMPLES), help="sample videos with manifest.json (videoqa/assets/samples)")
    args = parser.parse_args(argv)
    rows = generate(args.out, args.samples)
    print(f"wrote {len(rows)} questions on {len({r['videoID'] for r in rows})} videos to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
