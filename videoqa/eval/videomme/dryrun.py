"""A deterministic stand-in for the answering pipeline: ``videoqa eval --dry-run``.

Why: to check a Video-MME download (layout, table, every video opening) and the harness
(journals, resume, sharding, reports) on a machine without the model or a GPU, in seconds.
It opens each video's header (so an unreadable video shows up as it would in a real run), then
picks a letter from a hash of the question and options; a few sparse answers differ from dense.
Its accuracy is chance level and its timings and density are made up (labelled so in ``text``):
never report them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ...choices import LETTERS


@dataclass
class DryRunAnswer:
    text: str
    letter: str | None
    timings: dict = field(default_factory=dict)
    density: float | None = None
    visual_tokens: int = 0
    total_tokens: int = 0


def _h(*parts) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def answer(video, question, options=None, *, model=None, sparse=True, config=None, fps=None, max_frames=None,
           max_new_tokens=64, **_) -> DryRunAnswer:
    """Same signature as ``videoqa.pipeline.answer``; the answer depends only on its inputs."""
    from ...video import read_video_info

    info = read_video_info(video)
    n = len(options) if options else 4
    pick = _h(question, *(options or ())) % n
    if sparse and _h("flip", question) % 5 == 0:  # one sparse answer in five moves to the next option
        pick = (pick + 1) % n
    letter = LETTERS[pick]
    frames = max(2, min(int(max_frames or 768), int(info.duration_s * (fps or 2.0))) // 2 * 2)
    visual = frames // 2 * 64
    total = visual + len(question) // 4 + 32
    dense_prefill = 1e-6 * total * total / 64
    prefill = dense_prefill * (0.5 if sparse else 1.0)
    return DryRunAnswer(f"{letter} (dry run)", letter, {"prefill": prefill, "total": prefill + 0.01},
                        0.5 if sparse else None, visual, total)
