"""The sample videos bundled in ``videoqa/assets/samples`` (package data), offered in the demo's "sample" menu.

The list comes from the samples' ``manifest.json`` (written by ``videoqa_training/sample_videos.py``)
so that a new sample shows up without touching the demo. Where the manifest's facts give a
question with a known answer, :data:`SUGGESTED` holds it, so a visitor can try a question that has
a right answer (the random stand-in model will not find it; a real model should).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..assets import SAMPLES_DIR

# file -> (question, options, right answer). options [] means a free-text question; the right answer
# is then the words any of which a right answer contains, else the right option's letter. Both
# follow from the manifest's facts (tests/test_sample_questions.py checks them against it).
SUGGESTED: dict[str, tuple[str, list[str], str | tuple[str, ...]]] = {
    "shapes.mp4": ("What moves from left to right?",
                   ["a red circle", "a blue square", "a green triangle", "nothing"], "A"),
    "counting.mp4": ("Which digit is shown last?", ["1", "5", "7", "9"], "D"),
    "scene_change.mp4": ("Where does the video end?",
                         ["on a blue sea with a boat", "in a red desert with a sun", "in a snowy forest",
                          "in a city at night"], "B"),
    "long.mp4": ("What colour is the background at the very end?", ["red", "green", "white", "brown"], "D"),
    "portrait.mp4": ("What does the red ball do?", [], ("fall", "down", "top to bottom")),
}


@dataclass(frozen=True)
class Sample:
    file: str
    path: Path
    description: str
    duration_s: float

    @property
    def label(self) -> str:
        return f"{self.file} ({self.duration_s:g} s): {self.description}"


def list_samples(directory: Path | str = SAMPLES_DIR) -> list[Sample]:
    """The samples the manifest lists and that exist on disk, in the manifest's order; [] without a manifest."""
    directory = Path(directory)
    try:
        entries = json.loads((directory / "manifest.json").read_text())["videos"]
    except (OSError, ValueError, KeyError):
        return []
    return [Sample(e["file"], directory / e["file"], e.get("description", ""), float(e.get("duration_s", 0)))
            for e in entries if (directory / e["file"]).is_file()]


def suggestion(file: str) -> tuple[str, list[str]]:
    """``(question, up to 4 options)`` suggested for a sample; a generic free-text question otherwise."""
    question, options, _ = SUGGESTED.get(file, ("What happens in this video?", [], None))
    return question, list(options)


def known_answer(file: str, question: str, options=None):
    """The right answer to a sample's suggested question (a letter, or the words a free-text answer
    must contain), when ``question`` and ``options`` are the suggested ones; None otherwise."""
    if file not in SUGGESTED:
        return None
    q, opts, right = SUGGESTED[file]
    given = [o for o in (options or []) if o]
    same_options = [_plain(o) for o in given] == [_plain(o) for o in opts]
    return right if question.strip() == q and same_options else None


def _plain(option: str) -> str:
    """``"A. a red circle"`` and ``"a red circle"`` name the same option."""
    text = option.strip()
    return text[3:].strip() if len(text) > 2 and text[1] in ".)" and text[0].isalpha() and text[2] == " " else text


def is_right(text: str, letter: str | None, right) -> bool:
    """Whether an answer (its text and the letter read from it) is the known right one."""
    if isinstance(right, str):
        return letter == right
    padded = f" {text.lower()} "
    return any(f" {w}" in padded for w in right)


def describe_answer(right, options=None) -> str:
    """The right answer as a person reads it: ``"A (a red circle)"`` or ``"fall / down / ..."``."""
    if isinstance(right, str):
        opts = list(options or [])
        i = ord(right) - ord("A")
        return f"{right} ({_plain(opts[i])})" if 0 <= i < len(opts) else right
    return " / ".join(right)
