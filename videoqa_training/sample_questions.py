"""Ask a model the bundled sample clips' questions and score them against what the clips show.

The held-out generated suites (`python -m videoqa_training.evaluate`) are drawn like the training videos;
these clips (videoqa/assets/samples, facts in their manifest) are not, so this is the check that a model
answers about the project's own videos. Dense prefill, the pipeline's frame defaults.

  python -m videoqa_training.sample_questions                       # the default model
  python -m videoqa_training.sample_questions --model DIR [--sparse]
"""

from __future__ import annotations

import argparse
import sys

from videoqa.demo import samples


# (clip, question, options, right answer: the option's letter, or words any of which a free-form answer must contain)
QUESTIONS = [
    ("shapes.mp4", "What moves from left to right?", ["a red circle", "a blue square", "a green triangle", "nothing"], "A"),
    ("shapes.mp4", "What colour is the circle?", [], ("red",)),
    ("shapes.mp4", "What colour is the square?", [], ("blue",)),
    ("shapes.mp4", "What colour is the triangle?", [], ("green",)),
    ("shapes.mp4", "Which shape moves?", [], ("circle",)),
    ("shapes.mp4", "In which direction does the red circle move?", [], ("left to right", "to the right")),
    ("counting.mp4", "Which digit is shown last?", ["1", "5", "7", "9"], "D"),
    ("counting.mp4", "Which digit is shown first?", [], ("1", "one")),
    ("counting.mp4", "How many different digits are shown?", [], ("9", "nine")),
    ("scene_change.mp4", "Where does the video end?", ["on a blue sea with a boat", "in a red desert with a sun",
                                                       "in a snowy forest", "in a city at night"], "B"),
    ("scene_change.mp4", "Does the scene change?", ["yes", "no"], "A"),
    ("long.mp4", "What colour is the background at the very end?", ["red", "green", "white", "brown"], "D"),
    ("portrait.mp4", "What does the red ball do?", [], ("fall", "down", "top to bottom")),
]


def is_right(answer, expected) -> bool:
    return samples.is_right(answer.text, answer.letter, expected)


def suggested(questions=QUESTIONS) -> list[int]:
    """Indices into ``questions`` of the demo's suggested questions (:data:`videoqa.demo.samples.SUGGESTED`), one per clip."""
    return [i for i, (clip, question, options, _) in enumerate(questions)
            if clip in samples.SUGGESTED and samples.SUGGESTED[clip][:2] == (question, list(options))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory or hub id (default: the default model)")
    p.add_argument("--sparse", action="store_true", help="UniSparse prefill (min_seq_len 0) instead of dense")
    args = p.parse_args(argv)

    from unisparse import UniSparseConfig
    from videoqa import answer
    from videoqa.demo.samples import SAMPLES_DIR

    right, marks = 0, []
    for clip, question, options, expected in QUESTIONS:
        a = answer(str(SAMPLES_DIR / clip), question, options or None, model=args.model, sparse=args.sparse,
                   config=UniSparseConfig(min_seq_len=0, max_density=1.0), max_new_tokens=16)  # the method itself
        ok = is_right(a, expected)
        right += ok
        marks.append(ok)
        print(f"{'right' if ok else 'WRONG'}  {clip:17s} {question!r} -> {a.text!r}"
              + (f" (letter {a.letter}, right {expected})" if options else f" (right: {expected[0]})"), flush=True)
    demo = suggested()
    print(f"{right}/{len(QUESTIONS)} right ({'UniSparse' if args.sparse else 'dense'}, {a.model}); "
          f"the demo's suggested questions: {sum(marks[i] for i in demo)}/{len(demo)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
