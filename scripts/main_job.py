"""The main job: answer a question about a bundled sample video, dense and with UniSparse prefill,
print what each took, then serve the web demo (``--no-demo`` stops after the answers).

Uses the default model (``videoqa.models``: ``$VIDEOQA_MODEL``, ``videoqa/assets/default_model/``, else the
random stand-in, whose answers are meaningless and which the output says it is). The UniSparse run
has ``min_seq_len=0`` and ``max_density=1.0``: the sample videos make prompts far below 32,768
tokens, under which the library default runs dense (where sparse is slower), and this job shows
the method itself. Where the sample's manifest knows the answer, it is printed, and so is whether
each mode got it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videoqa.assets import SAMPLES_DIR


SAMPLE = SAMPLES_DIR / "shapes.mp4"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=SAMPLE)
    p.add_argument("--model", default=None, help="model directory or hub id (default: the default model)")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--no-demo", action="store_true", help="print the answers and exit")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None)
    args = p.parse_args(argv)

    import unisparse
    from videoqa import answer
    from videoqa.demo.samples import describe_answer, is_right, known_answer, suggestion

    question, options = suggestion(args.video.name)
    right = known_answer(args.video.name, question, options)
    # the method itself at any length: sparse even on these short prompts (min_seq_len=0) and on a
    # CPU (max_density=1.0; elsewhere on a CPU the application computes dense attention, README)
    config = unisparse.UniSparseConfig(top_p=args.top_p, min_seq_len=0, max_density=1.0)
    print(f"video: {args.video}\nquestion: {question}" + (f"\noptions: {options}" if options else ""))
    if right is not None:
        print(f"right answer (from the sample's manifest): {describe_answer(right, options)}")
    results = {}
    for mode, sparse in (("dense", False), ("UniSparse", True)):
        results[mode] = a = answer(str(args.video), question, options or None, model=args.model,
                                   sparse=sparse, config=config, max_new_tokens=16)
        density = "-" if a.density is None else f"{a.density:.3f}"
        verdict = "" if right is None else ("  RIGHT" if is_right(a.text, a.letter, right) else "  WRONG")
        print(f"[{mode:9s}] answer {a.text!r} letter {a.letter}{verdict} | prefill {a.timings['prefill']:.3f} s | "
              f"density {density} | tokens {a.total_tokens} ({a.visual_tokens} visual) | {a.model}")
    if results["dense"].random_model:
        print("note: the default model here is the random stand-in (no trained model is installed): "
              "its answers are meaningless; see README, 'Video QA'.")
    if args.no_demo:
        return 0
    from videoqa.demo.ui import launch

    print("starting the web demo (Ctrl-C stops it; --no-demo skips it)", flush=True)
    launch(args.host, args.port, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
