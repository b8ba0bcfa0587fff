"""A session's answer against answer()'s, token by token, on Qwen2-VL-7B's shapes with random weights.

``bench_sessions.py --synthetic-7b`` found the two ways' answers different on the GPU, in bf16 and
in float32, while they agree on the CPU (tiny shapes, the default model). This script says whether
that is rounding or a fault: per question, ``answer()``'s way decodes greedily with its scores and the session
answers through :meth:`VideoSession.ask` with a logits processor that keeps them, and it reports the first step where the tokens differ, the largest logit difference at the first step, and
the margin between the two best tokens there (a flip is rounding when the margin is within the
logit difference). ``answer()``'s way is decoded twice, to show whether it agrees with itself. It also
times the session's suffix prefill (one new token) with SDPA's default backends and with cuDNN
attention left out, since a new query length per question may make cuDNN build a new plan each time.

  python benchmarks/sessions/check_exactness.py --visual-tokens 4096 --dtype float32 bfloat16 --output $OUT/exactness.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import torch

from bench_sessions import ARCH, QUESTIONS, clock, synthetic_model, video_file


class ScoreRecorder:
    """A logits processor that keeps each step's scores (the session's answer, step by step)."""

    def __init__(self):
        self.steps = []

    def __call__(self, input_ids, scores):
        self.steps.append(scores[0].detach().float().clone())
        return scores


def generate(loaded, inputs, new_tokens: int, cache=None):
    """Greedy ``(token ids, per-step logits)`` of ``model.generate`` (over ``cache`` when given)."""
    from videoqa.pipeline import greedy_args
    from videoqa.timing import FirstTokenClock

    args = greedy_args(loaded, new_tokens, {"output_scores": True, "return_dict_in_generate": True},
                       FirstTokenClock(loaded.device))
    if cache is not None:
        args["past_key_values"] = cache
        inputs = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        out = loaded.model.generate(**inputs, **args)
    n = inputs["input_ids"].shape[1]
    return out.sequences[0, n:].tolist(), [x[0].float() for x in out.scores]


def compare(a, b) -> dict:
    """Where two greedy decodes part, and the first step's logit difference and margin."""
    (ta, sa), (tb, sb) = a, b
    first = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), None)
    top2 = sa[0].topk(2).values
    row = {"same": ta == tb, "first_diff_step": first, "step0_max_logit_diff": (sa[0] - sb[0]).abs().max().item(),
           "step0_margin": (top2[0] - top2[1]).item()}
    if first is not None and first < len(sa):
        t2 = sa[first].topk(2).values
        row["margin_at_diff"] = (t2[0] - t2[1]).item()
        row["logit_diff_at_diff"] = (sa[first] - sb[first]).abs().max().item()
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--visual-tokens", type=int, default=4096)
    p.add_argument("--dtype", nargs="+", choices=["bfloat16", "float32"], default=["float32", "bfloat16"])
    p.add_argument("--arch", choices=sorted(ARCH), default="7b")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--video-dir", type=Path, default=None)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from videoqa.pipeline import model_inputs
    from videoqa.session import VideoSession, _crop, _set_rope_deltas

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.machine()})"
    path, frames = video_file(args.video_dir or Path(tempfile.mkdtemp()), args.visual_tokens)
    lines = [f"## A session's answers against answer()'s, token by token ({device}, torch {torch.__version__})", "",
             f"Qwen2-VL {args.arch} shapes, random weights, {args.visual_tokens} visual tokens, {args.new_tokens} new "
             "tokens, dense attention.", "",
             "| dtype | question | answer() twice same | session same | first differing step | step-0 max logit diff "
             "| step-0 margin | margin where they part | logit diff there | suffix prefill ms, SDPA default | "
             "without cuDNN |", "|" + " --- |" * 11]
    for dtype_name in args.dtype:
        loaded = synthetic_model(args.arch, getattr(torch, dtype_name))
        session = VideoSession(path, model=loaded, sparse=False, num_frames=frames, max_pixels=448 * 448)
        model = loaded.model
        for q in QUESTIONS:
            _, full_inputs = model_inputs(loaded, session.frames, q, None, None)
            full = generate(loaded, full_inputs, args.new_tokens)
            again = generate(loaded, full_inputs, args.new_tokens)
            recorder = ScoreRecorder()
            session.ask(q, max_new_tokens=args.new_tokens, generate_kwargs={"logits_processor": [recorder]})
            part = ([int(x.argmax()) for x in recorder.steps], recorder.steps)
            _, suffix_inputs = model_inputs(loaded, session.frames, q, None, None, pixels=session._pixels,
                                            text_only=True)
            times = []
            for backends in (None, [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
                best = float("inf")
                for _ in range(3):
                    _set_rope_deltas(model, session._deltas(suffix_inputs["input_ids"].shape[1])[0])
                    t0 = clock()
                    if backends is None:
                        generate(loaded, suffix_inputs, 1, cache=session._cache)
                    else:
                        with sdpa_kernel(backends):
                            generate(loaded, suffix_inputs, 1, cache=session._cache)
                    best = min(best, clock() - t0)
                    _crop(session._cache, session.prefix_len)
                times.append(1e3 * best)
            row = compare(full, part)
            fmt = lambda x: "-" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)  # noqa: E731
            lines.append(f"| {dtype_name} | {q} | {full[0] == again[0]} | {row['same']} | {fmt(row['first_diff_step'])} | "
                         f"{fmt(row['step0_max_logit_diff'])} | {fmt(row['step0_margin'])} | "
                         f"{fmt(row.get('margin_at_diff'))} | {fmt(row.get('logit_diff_at_diff'))} | "
                         f"{times[0]:.1f} | {times[1]:.1f} |")
            print(lines[-1], flush=True)
        session.close()
        del session, model, loaded
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    lines += ["", f"Command: `python {' '.join(sys.argv)}`"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
