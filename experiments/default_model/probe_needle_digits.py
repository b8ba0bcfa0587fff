"""Why a model misses needle digits: reading or finding? Free-form digit questions, dense, greedy.

Each row changes one thing between a `digit` picture (what single-frame training shows) and a
needle digit (what the needle suite asks):

  python -m experiments.default_model.probe_needle_digits --model videoqa/assets/default_model --device cpu --n 30

Rows: `digit` pictures as drawn and recoloured onto a palette background; `digit_on_color`
pictures; needle digits in 4- and 16-frame videos; the needle's two frames alone with the
`digit` question; needle on one temporal patch or split over two (8 frames). Needle rows
alternate the needle between the first and the last frames (the 8-frame row between the two
aligned and the two split starts). Fixed example indices, so two models are compared on the
same questions. Output: one line per row, and ``--output FILE.json`` keeps them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch


from videoqa_training import synthetic as S
from videoqa_training.evaluate import generate_text

DIGIT_QUESTION = "Which digit is shown? Answer with a number."


def on_palette(example: S.Example, rng) -> S.Example:
    """A `digit` picture with its background pixels recoloured to a palette colour far from the digit."""
    m = example.meta
    h, w = example.frames.shape[-2:]
    mask = torch.from_numpy(S.digit_mask(m["digit"], h, w, *m["cell_xy"], m["height"]))
    fg = S.COLORS[m["color"]]
    choices = [c for c in S.COLORS.values() if S._dist(c, fg) >= S.MIN_CONTRAST]
    frames = example.frames.clone()
    frames.permute(0, 2, 3, 1)[:, ~mask] = torch.tensor(choices[rng.integers(len(choices))], dtype=torch.uint8)
    return dataclasses.replace(example, frames=frames)


def rows(n: int):
    """``(name, [example, ...])`` for every probe row."""
    rng = np.random.default_rng(0)
    pictures = [S.make_example("heldout", 8000 + i, kind="digit", num_frames=2, size=(224, 224), mc=False)
                for i in range(n)]
    yield "digit 224x224, plain background (as drawn)", pictures
    yield "digit 224x224, recoloured onto a palette background", [on_palette(e, rng) for e in pictures]
    yield "digit_on_color 224x224", [S.make_example("heldout", 8000 + i, kind="digit_on_color", num_frames=2,
                                                    size=(224, 224), mc=False) for i in range(n)]
    yield "digit 112x112", [S.make_example("heldout", 7000 + i, kind="digit", num_frames=2, size=(112, 112), mc=False)
                            for i in range(n)]
    for t, size in ((4, (112, 112)), (4, (224, 224)), (16, (224, 224))):
        yield f"needle_digit {t} frames {size[0]}x{size[1]}", [
            S.make_example("heldout", 7000 + i, kind="needle_digit", num_frames=t, size=size, mc=False,
                           depth=(i % 2) * 1.0) for i in range(n)]
    needles = [S.make_example("heldout", 7000 + i, kind="needle_digit", num_frames=4, size=(224, 224), mc=False,
                              depth=(i % 2) * 1.0) for i in range(n)]
    alone = [dataclasses.replace(e, frames=e.frames[e.meta["needle_start"]:e.meta["needle_start"] + 2],
                                 question=DIGIT_QUESTION) for e in needles]
    yield "needle's two frames alone, digit question (224x224)", alone
    t = 8
    for parity, starts in (("on one temporal patch", (2, 4)), ("split over two patches", (1, 3))):
        examples = [S.make_example("heldout", 5000 + i, kind="needle_digit", num_frames=t, size=(112, 112), mc=False,
                                   depth=starts[i % 2] / (t - 2)) for i in range(n)]
        assert all(e.meta["needle_start"] in starts for e in examples)
        yield f"needle_digit 8 frames 112x112, {parity}", examples


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=30, help="questions per row")
    p.add_argument("--output", help="write the rows as JSON here")
    a = p.parse_args(argv)
    from videoqa.models import load_model

    loaded = load_model(a.model, device=a.device)
    out = []
    for name, examples in rows(a.n):
        answers = []
        with torch.no_grad():
            for e in examples:
                answers.append(generate_text(loaded.model, loaded.processor, e)[0].strip())
        correct = sum(S.is_correct(e, text) for e, text in zip(examples, answers))
        out.append({"row": name, "correct": correct, "n": len(examples),
                    "confusions": [f"{e.target}->{text}" for e, text in zip(examples, answers) if not S.is_correct(e, text)]})
        print(f"{correct:3d}/{len(examples)}  {name}", flush=True)
    if a.output:
        with open(a.output, "w") as f:
            json.dump({"model": a.model, "rows": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
