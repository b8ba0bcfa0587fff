"""The answer and its measurements as Markdown, for the page (and readable as plain text too).

Kept apart from the handlers so that the wording can be tested without a browser or gradio. The
model's text is escaped: a random stand-in (or a real model) can emit Markdown or HTML, which must
be shown as written, not rendered.
"""

from __future__ import annotations

import html
import re

from ..models import RANDOM_NOTICE

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def escape(text: str) -> str:
    """``text`` shown literally in Markdown: HTML escaped, Markdown punctuation backslashed, one line."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(" ".join(text.split()), quote=False)) or "(empty)"


def random_warning() -> str:
    return (f"**Random stand-in model** ({RANDOM_NOTICE}). The timings, token counts and attention "
            "masks below are real; the answers are not. Name a Qwen2-VL model with `--model` for real answers.")


def default_model_note() -> str:
    return ("**Embedded default model**: a small Qwen2-VL (SmolLM2-135M and a 3M-parameter vision tower) "
            "trained only on generated videos of shapes, colours and digits, so it answers about pictures like "
            "the bundled samples and little else. Start the demo with `--model Qwen/Qwen2-VL-7B-Instruct` "
            "(or any Qwen2-VL) for real videos.")


def _answer_line(label: str, a) -> str:
    line = f"**{label}:** {escape(a.text)}"
    if a.options is not None:
        if a.letter is None:
            line += " (no option letter recognised)"
        else:
            option = a.options["ABCDEFGHIJ".index(a.letter)]
            line += f" → option **{a.letter}** ({escape(option)})"
    return line


def answer_markdown(dense=None, sparse=None, *, right=None) -> str:
    """The answer(s); with both, whether they agree; the known right answer and which run got it
    (``right``: a bundled sample's suggested question); a warning when the random stand-in answered."""
    runs = [(label, a) for label, a in (("UniSparse", sparse), ("Dense", dense)) if a is not None]
    if not runs:
        return ""
    first = runs[0][1]
    lines = ["### Answer", f"*{escape(first.question)}*", ""]
    lines += [_answer_line(label, a) + "  " for label, a in runs]
    if dense is not None and sparse is not None:
        if dense.letter is not None and sparse.letter is not None:
            same, what = dense.letter == sparse.letter, "option"
        else:
            same, what = dense.text == sparse.text, "answer"
        verdict = f"give the same {what}" if same else f"give different {what}s"
        lines += ["", f"Dense and UniSparse {verdict}."]
    if right is not None:
        from .samples import describe_answer, is_right

        marks = ", ".join(f"{label}: {'right' if is_right(a.text, a.letter, right) else '**wrong**'}"
                          for label, a in runs)
        lines += ["", f"**Known answer** (from the sample's facts): {escape(describe_answer(right, first.options))}. "
                      f"{marks}."]
    if any(a.random_model for _, a in runs):
        lines += ["", "> " + random_warning()]
    return "\n".join(lines)


def _s(seconds: float) -> str:
    return f"{seconds:.3f} s"


def _prefill(a, reused: bool) -> float:
    """The prefill this question cost: with a session, its own suffix, plus the video's prefix
    prefill unless an earlier question on the same video already paid it."""
    t = a.timings
    return t["prefill"] + (0.0 if reused else t.get("prefix_prefill", 0.0))


def _vision(a, reused: bool) -> float:
    return 0.0 if reused else a.timings["vision_encoder"]


def metrics_markdown(dense=None, sparse=None, *, device: str | None = None, reused=frozenset()) -> str:
    """Prefill time (and the speedup when both ran), token counts, density, frames; ``reused``: the
    modes ("Dense", "UniSparse") whose video prefill came from an earlier question."""
    runs = [(label, a) for label, a in (("Dense", dense), ("UniSparse", sparse)) if a is not None]
    if not runs:
        return ""
    was = {id(a): label in reused for label, a in runs}
    a0 = runs[-1][1]
    head = "| | " + " | ".join(label for label, _ in runs) + " |"
    rows = [head, "|---" * (len(runs) + 1) + "|"]

    def row(name, fn):
        rows.append(f"| {name} | " + " | ".join(fn(a) for _, a in runs) + " |")

    row("**prefill** (time to first token)", lambda a: f"**{_s(_prefill(a, was[id(a)]))}**")
    row("of which vision encoder", lambda a: _s(_vision(a, was[id(a)])))
    row("of which language model", lambda a: _s(_prefill(a, was[id(a)]) - _vision(a, was[id(a)])))
    row("decoding", lambda a: f"{_s(a.timings['generate'])} ({a.new_tokens} tokens)")
    row("block density", lambda a: "1 (dense)" if not a.sparse else
        ("1 (prompt shorter than a block)" if a.density is None else
         f"{a.density:.3f}" + (" selected, computed dense" if a.fallback_layers else "")))
    lines = ["### Measurements"]
    if reused:
        lines.append(f"**Follow-up on the same video**: its frames, vision encoding and {a0.prefix_tokens}-token "
                     f"prompt prefix were reused ({', '.join(sorted(reused))}); the prefill below is this "
                     f"question's own {a0.total_tokens - a0.prefix_tokens} tokens.")
    elif dense is not None and sparse is not None:
        p_d, p_s = _prefill(dense, False), _prefill(sparse, False)
        speed = p_d / p_s if p_s > 0 else float("inf")
        lm_d, lm_s = p_d - _vision(dense, False), p_s - _vision(sparse, False)
        lm = f"{lm_d / lm_s:.2f}x" if lm_s > 0 else "n/a"
        lines.append(f"**Prefill speedup of UniSparse over dense: {speed:.2f}x** (language-model part: {lm})")
    f = a0.frames
    lines += ["", *rows, "",
              f"**Tokens:** {a0.total_tokens} in the prompt, {a0.visual_tokens} of them visual "
              f"({a0.visual_tokens / max(a0.total_tokens, 1):.0%}).  ",
              f"**Frames:** {f.count} sampled at {f.sample_fps:.2f} per second, {f.width}x{f.height} each, "
              f"from a {f.video_duration_s:.1f} s video ({f.video_size[0]}x{f.video_size[1]}, "
              f"{f.video_fps:.1f} fps).  ",
              f"**Model:** `{a0.model}`" + (f" on {device}" if device else "") + "."]
    if dense is not None and sparse is not None:
        note = "One run each, dense first, on a model warmed up by one question in each mode."
        if device is not None and not str(device).startswith("cuda"):
            note += (" On a CPU, UniSparse runs its plain PyTorch reference, written to be exact rather "
                     "than fast, so expect no speedup here.")
        lines += ["", f"<small>{note}</small>"]
    return "\n".join(lines)
