"""Held-out accuracy of a video QA model on synthetic examples, with dense and with UniSparse prefill.

Why here and not through :func:`videoqa.answer`: the examples live in memory (no video files),
and the training loop needs the same scoring every few hundred steps. The prompt is the
pipeline's own (:func:`videoqa.prompt.build_inputs`), decoding is greedy, and the answer is
scored by :func:`videoqa_training.synthetic.is_correct`, so accuracy here is what a user of the
pipeline would see on the same frames.

The suites (:func:`build_suite`):

* ``single``: single-frame questions (2 identical frames = one temporal patch): colour, shape,
  digit, count, alternating free-form and multiple choice;
* ``needle``: a digit or a coloured shape on 2 frames at depth 10/50/90% of 64-256 frames
  (112x112, 16 visual tokens per frame pair, so 64 frames make about 600 tokens and 256 about
  2,100): the case where sparse prefill can lose the needle;
* ``clip``: the sample videos' kinds of question on new renders (:data:`~.synthetic.CLIP_KINDS`:
  what moves, which shape appears, a colour in a moving clip, where a bouncing ball travels,
  digits in sequence), 8-24 frames, alternating free-form and multiple choice;
* ``still``: digits drawn as needles draw them (:data:`~.synthetic.STILL_KINDS`: a palette
  background and the haystack's dot) on 2 identical frames: whether a needle digit is hard to
  find or hard to read;
* ``crowd``: the sample clips' layouts (:data:`~.synthetic.CROWD_KINDS`: what moves and the
  colour of a small shape among distractors up to three times its size, one possibly appearing
  late, and the first or last of many background colours or how often it changes);
* ``where``, ``does``: where a shape sits or ends up, what an object does;
* ``video``: the first video kinds the model was trained on (:data:`~.synthetic.VIDEO_KINDS`: in
  which direction a shape moves, what the scene shows, whether and how it changes), 6-32 frames;
  the sample clips ask these (``shapes.mp4``'s circle direction).

:func:`run` answers each example dense and sparse (UniSparse's default config with
``min_seq_len=0`` unless told: these prompts are far below the library's 32,768-token threshold,
under which production runs dense, and the point here is to measure the sparse path) and
:func:`summarise` reports, per group, dense and sparse accuracy, their ratio and the mean block
density over the layers that ran sparse (prompts shorter than a block run dense).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Callable, Iterable

import torch

from .synthetic import (ACTION_KINDS, CLIP_KINDS, CROWD_KINDS, NEEDLE_KINDS, PLACE_KINDS, STATIC_KINDS, STILL_KINDS,
                        VIDEO_KINDS, Example, is_correct, make_example)

# suites of --per-kind examples per kind: (kinds, frame count: the kind's default unless given)
PER_KIND_SUITES = {"clip": (CLIP_KINDS, {}), "still": (STILL_KINDS, {"num_frames": 2}), "crowd": (CROWD_KINDS, {}),
                   "where": (PLACE_KINDS, {}), "does": (ACTION_KINDS, {}), "video": (VIDEO_KINDS, {})}
BY_KIND = ("clip", "video")  # suites whose summary also has a row per kind
NEEDLE_DEPTHS = (0.1, 0.5, 0.9)
NEEDLE_FRAMES = (64, 128, 256)
NEEDLE_SIZE = (112, 112)
EVAL_NEEDLE_KINDS = ("needle_digit", "needle_color")


@dataclasses.dataclass
class Result:
    """One example answered once (dense or sparse)."""

    suite: str
    kind: str
    index: int
    mc: bool
    num_frames: int
    depth: float | None
    mode: str  # "dense" or "sparse"
    text: str
    target: str
    correct: bool
    density: float | None  # mean over the layers that ran sparse; None when none did
    tokens: int
    seconds: float


def build_suite(name: str, *, per_kind: int = 4, depths: Iterable[float] = NEEDLE_DEPTHS,
                frames: Iterable[int] = NEEDLE_FRAMES, per_cell: int = 2, split: str = "heldout",
                size: tuple[int, int] | None = None) -> list[tuple[str, Example]]:
    """``[(suite, example), ...]`` for ``name``: "single", "needle" or one of :data:`PER_KIND_SUITES`."""
    out = []
    if name == "single":
        for kind in STATIC_KINDS:
            for i in range(per_kind):
                out.append(("single", make_example(split, i, kind=kind, num_frames=2, mc=bool(i % 2), size=size)))
    elif name == "needle":
        i = 0
        for t in frames:
            for depth in depths:
                for j in range(per_cell):
                    kind = EVAL_NEEDLE_KINDS[j % len(EVAL_NEEDLE_KINDS)]
                    out.append(("needle", make_example(split, i, kind=kind, num_frames=int(t), depth=float(depth),
                                                       size=size or NEEDLE_SIZE, mc=bool((j // 2) % 2))))
                    i += 1
    elif name in PER_KIND_SUITES:
        kinds, frames_kw = PER_KIND_SUITES[name]
        for kind in kinds:
            for i in range(per_kind):
                out.append((name, make_example(split, i, kind=kind, mc=bool(i % 2), size=size, **frames_kw)))
    else:
        raise ValueError(f"unknown suite {name!r} (single, needle, {', '.join(PER_KIND_SUITES)})")
    return out


def static_examples(n: int, *, split: str = "heldout") -> list[Example]:
    """``n`` held-out single-picture examples cycling over the static kinds, half multiple choice."""
    return [make_example(split, i, kind=STATIC_KINDS[i % len(STATIC_KINDS)], num_frames=2, mc=bool((i // 4) % 2))
            for i in range(n)]


def _cycling(kinds: tuple, n: int, split: str, first: int, **kw) -> list[Example]:
    """``n`` examples from index ``first`` cycling over ``kinds``, every other round multiple choice."""
    return [make_example(split, first + i, kind=kinds[i % len(kinds)], mc=bool((i // len(kinds)) % 2), **kw)
            for i in range(n)]


def suite_examples(name: str, n: int, *, split: str = "heldout", first: int = 1000) -> list[Example]:
    """``n`` held-out examples of a :data:`PER_KIND_SUITES` suite (clip, still, crowd, where, does), cycling
    over its kinds, half multiple choice, for the evaluation during training.

    Indices from ``first`` (1000): disjoint from the suite's own, so a run picked on these is scored on others.
    """
    kinds, frames_kw = PER_KIND_SUITES[name]
    return _cycling(kinds, n, split, first, **frames_kw)


def mixed_examples(n: int, *, split: str = "heldout", max_frames: int = 64) -> list[Example]:
    """``n`` held-out examples cycling over every kind, short enough to score during training."""
    from .synthetic import KINDS, NEEDLE_SIZES

    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        t = None
        if kind in NEEDLE_KINDS:
            t = 2 * (8 + (i * 7) % max(1, max_frames // 2 - 7))  # 16 .. max_frames
            t = min(t, max_frames)
        out.append(make_example(split, i, kind=kind, num_frames=t, mc=bool(i % 2),
                                size=NEEDLE_SIZES[0] if kind in NEEDLE_KINDS else None))
    return out


def described_prompt_ids(processor, example: Example) -> torch.Tensor:
    """Token ids [L] of the text-only prompt: the picture described in words, then the question (stage A)."""
    from videoqa.prompt import question_text
    from .synthetic import describe

    text = describe(example) + "\n" + question_text(example.question, example.options)
    chat = processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": text}]}])
    return processor.tokenizer(chat, add_special_tokens=False, return_tensors="pt")["input_ids"][0]


@torch.inference_mode()
def generate_text(model, processor, example: Example, *, max_new_tokens: int = 8,
                  text_only: bool = False, video_layout: bool = False) -> tuple[str, int]:
    """Greedy answer to ``example`` with the pipeline's prompt (or the described one): ``(text, prompt tokens)``.

    ``video_layout``: tell UniSparse where the video sits (video-aware selection), as the pipeline does."""
    import contextlib

    import unisparse

    from videoqa.prompt import build_inputs

    device = next(model.parameters()).device
    if text_only:
        ids = described_prompt_ids(processor, example)[None].to(device)
        inputs, n = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ids.shape[1]
    else:
        prepared = build_inputs(processor, example.frames, example.question, example.options)
        inputs, n = {k: v.to(device) for k, v in prepared.inputs.items()}, prepared.num_tokens
    layout = None
    if video_layout and not text_only:
        layout = unisparse.layout_from_inputs(prepared.inputs["input_ids"], merge_size=processor.spec.merge_size,
                                              video_token_id=processor.video_token_id,
                                              video_grid_thw=[list(prepared.grid_thw)])
    eos = processor.eos_token_ids
    pad = processor.tokenizer.pad_token_id
    with unisparse.video_layout(layout) if layout is not None else contextlib.nullcontext():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                             top_k=None, eos_token_id=eos, pad_token_id=eos[0] if pad is None else pad)
    return processor.decode(out[0, n:]).strip(), n


def answer_example(model, processor, example: Example, *, sparse: bool, config=None, max_new_tokens: int = 8,
                   video_layout: bool = False):
    """``(text, density, tokens, seconds)`` with UniSparse on (``sparse``) or off for the language model;
    ``video_layout``: video-aware selection (UniSparse knows where the video sits)."""
    import time

    import unisparse

    if sparse:
        # sparse at every length; the "video" mode applies the layout at every length too (what it measures)
        unisparse.enable(model, config if config is not None else unisparse.UniSparseConfig(
            min_seq_len=0, max_density=1.0, video_aware_min_len=0))
    else:
        unisparse.disable(model)
    try:
        t0 = time.perf_counter()
        with unisparse.record(keep_masks=False) as rec:
            text, n = generate_text(model, processor, example, max_new_tokens=max_new_tokens,
                                    video_layout=sparse and video_layout)
        seconds = time.perf_counter() - t0
    finally:
        unisparse.disable(model)
    sparse_layers = [r.density for r in rec.layers if r.path == "sparse"]
    density = sum(sparse_layers) / len(sparse_layers) if sparse_layers else None
    return text, density, n, seconds


def accuracy(model, processor, examples: list[Example], *, max_new_tokens: int = 8, text_only: bool = False) -> dict:
    """Dense accuracy overall and per kind (what training logs); ``text_only``: on the described prompts."""
    per_kind: dict[str, list[bool]] = {}
    for ex in examples:
        if text_only:
            text, _ = generate_text(model, processor, ex, max_new_tokens=max_new_tokens, text_only=True)
        else:
            text, _, _, _ = answer_example(model, processor, ex, sparse=False, max_new_tokens=max_new_tokens)
        per_kind.setdefault(ex.kind, []).append(is_correct(ex, text))
    flat = [c for v in per_kind.values() for c in v]
    return {"accuracy": sum(flat) / max(1, len(flat)), "n": len(flat),
            "per_kind": {k: sum(v) / len(v) for k, v in sorted(per_kind.items())}}


def run(model, processor, suite: list[tuple[str, Example]], *, modes=("dense", "sparse"), config=None,
        max_new_tokens: int = 8, progress: Callable[[Result], None] | None = None) -> list[Result]:
    """Answer every example of ``suite`` in each mode."""
    results = []
    for name, ex in suite:
        for mode in modes:
            text, density, n, sec = answer_example(model, processor, ex, sparse=mode in ("sparse", "video"),
                                                   config=config, max_new_tokens=max_new_tokens,
                                                   video_layout=mode == "video")
            r = Result(name, ex.kind, ex.index, ex.options is not None, ex.num_frames, ex.meta.get("depth"), mode,
                       text, ex.target, is_correct(ex, text), density, n, sec)
            results.append(r)
            if progress is not None:
                progress(r)
    return results


def _group_key(r: Result) -> str:
    if r.suite == "needle":
        return f"needle T={r.num_frames} depth={r.depth:.0%}"
    if r.suite in BY_KIND:
        return f"{r.suite} {r.kind}"
    return r.suite


def summarise(results: list[Result]) -> list[dict]:
    """Per group (suite; needles by frames x depth, the :data:`BY_KIND` suites by kind) plus per suite: accuracies,
    ratio, density."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(_group_key(r), []).append(r)
        if r.suite == "needle" or r.suite in BY_KIND:
            groups.setdefault(f"{r.suite} (all)", []).append(r)
    groups["all"] = list(results)
    rows = []
    for key, rs in groups.items():
        dense = [r.correct for r in rs if r.mode == "dense"]
        sparse = [r.correct for r in rs if r.mode == "sparse"]
        dens = [r.density for r in rs if r.mode == "sparse" and r.density is not None]
        acc_d = sum(dense) / len(dense) if dense else math.nan
        acc_s = sum(sparse) / len(sparse) if sparse else math.nan
        row = {
            "group": key, "n": max(len(dense), len(sparse)), "dense_acc": acc_d, "sparse_acc": acc_s,
            "sparse_over_dense": acc_s / acc_d if dense and sparse and acc_d > 0 else math.nan,
            "mean_density": sum(dens) / len(dens) if dens else math.nan,
            "mean_tokens": sum(r.tokens for r in rs) / len(rs),
        }
        video = [r.correct for r in rs if r.mode == "video"]
        if video:  # video-aware selection beside the plain one
            v_dens = [r.density for r in rs if r.mode == "video" and r.density is not None]
            acc_v = sum(video) / len(video)
            row.update(n=max(row["n"], len(video)), video_acc=acc_v,
                       video_over_dense=acc_v / acc_d if dense and acc_d > 0 else math.nan,
                       video_density=sum(v_dens) / len(v_dens) if v_dens else math.nan)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    def f(v, pct=True):
        return "-" if isinstance(v, float) and math.isnan(v) else (f"{v:.1%}" if pct else f"{v:.3f}")

    video = any("video_acc" in r for r in rows)
    extra = " video-aware acc | video-aware/dense | video-aware density |" if video else ""
    lines = ["| group | n | dense acc | sparse acc | sparse/dense | mean density | mean tokens |" + extra,
             "| --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- | --- |" if video else "")]
    for r in rows:
        line = (f"| {r['group']} | {r['n']} | {f(r['dense_acc'])} | {f(r['sparse_acc'])} | "
                f"{f(r['sparse_over_dense'], False)} | {f(r['mean_density'], False)} | {r['mean_tokens']:.0f} |")
        if video:
            line += (f" {f(r.get('video_acc', math.nan))} | {f(r.get('video_over_dense', math.nan), False)} | "
                     f"{f(r.get('video_density', math.nan), False)} |")
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


def parse_args(argv=None):
    import argparse

    p = argparse.ArgumentParser(description="Held-out synthetic video QA accuracy, dense and with UniSparse.")
    p.add_argument("--model", help="model directory or hub id (default: videoqa's default model resolution)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--suites", nargs="+", default=["single", "needle"], choices=["single", "needle", *PER_KIND_SUITES],
                   help="single-frame, needle, the sample videos' kinds of question (clip), digits drawn as needles "
                        "are (still), the sample clips' layouts (crowd), where, does, the first video kinds: "
                        "direction, scene, scene change (video); --per-kind each for all but needle")
    p.add_argument("--per-kind", type=int, default=8, help="single-frame (clip, still, crowd) questions per kind")
    p.add_argument("--needle-frames", type=int, nargs="+", default=list(NEEDLE_FRAMES))
    p.add_argument("--depths", type=float, nargs="+", default=list(NEEDLE_DEPTHS))
    p.add_argument("--per-cell", type=int, default=4, help="needle questions per (frames, depth)")
    p.add_argument("--size", default=None, help="HxW frame size for every example (default: single random, needle 112x112)")
    p.add_argument("--modes", nargs="+", default=["dense", "sparse"], choices=["dense", "sparse", "video"],
                   help="video: UniSparse with video-aware selection (the video's layout passed down)")
    p.add_argument("--top-p", type=float, default=None, help="UniSparse top_p (default: UniSparseConfig's); "
                   "sparse mode runs the sparse path at any length (min_seq_len=0)")
    p.add_argument("--calibrate", type=int, default=0, metavar="N",
                   help="UniSparse calibration_blocks: each head's Top-P from the exact attention of N query blocks")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--output", help="write PREFIX.json (results and summary) and PREFIX.csv (one row per answer)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import csv
    import json
    import os

    import unisparse

    from videoqa.models import load_model

    a = parse_args(argv)
    size = None
    if a.size:
        h, _, w = a.size.lower().partition("x")
        size = (int(h), int(w or h))
    # the method itself at any length: no dense fallback (min_seq_len=0, max_density=1.0)
    config = unisparse.UniSparseConfig(min_seq_len=0, max_density=1.0, calibration_blocks=a.calibrate,
                                       **({} if a.top_p is None else {"top_p": a.top_p}))
    loaded = load_model(a.model, device=a.device, dtype=a.dtype)
    suite = []
    for name in a.suites:
        suite += build_suite(name, per_kind=a.per_kind, depths=a.depths, frames=a.needle_frames,
                             per_cell=a.per_cell, size=size)

    def show(r: Result):
        if not a.quiet:
            d = "-" if r.density is None else f"{r.density:.3f}"
            print(f"{r.suite:6s} {r.kind:13s} T={r.num_frames:<4d} {r.mode:6s} tokens={r.tokens:<5d} density={d:5s} "
                  f"{'ok ' if r.correct else 'BAD'} {r.text!r} (target {r.target!r})", flush=True)

    results = run(loaded.model, loaded.processor, suite, modes=tuple(a.modes), config=config,
                  max_new_tokens=a.max_new_tokens, progress=show)
    rows = summarise(results)
    print(f"model: {loaded.description}; UniSparse: {config}")
    print(format_table(rows))
    if a.output:
        os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
        with open(a.output + ".json", "w") as f:
            json.dump({"model": loaded.name, "random_model": loaded.random, "config": dataclasses.asdict(config),
                       "summary": rows, "results": [dataclasses.asdict(r) for r in results]}, f, indent=1)
        with open(a.output + ".csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[fl.name for fl in dataclasses.fields(Result)])
            w.writeheader()
            for r in results:
                w.writerow(dataclasses.asdict(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
