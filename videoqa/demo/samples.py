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

# file -> (question, options); options [] means a free-text question. The right option is the
# one the manifest's facts give (noted after each entry).
SUGGESTED: dict[str, tuple[str, list[str]]] = {
    "shapes.mp4": ("What moves from left to right?",
                   ["a red circle", "a blue square", "a green triangle", "nothing"]),  # A
    "counting.mp4": ("Which digit is shown last?", ["1", "5", "7", "9"]),  # D
    "scene_change.mp4": ("Where does the video end?",
                         ["on a blue sea with a boat", "in a red desert with a sun", "in a snowy forest",
                          "in a city at night"]),  # B
    "long.mp4": ("What colour is the background at the very end?", ["red", "green", "white", "brown"]),  # D
    "portrait.mp4": ("What does the red ball do?", []),
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
    question, options = SUGGESTED.get(file, ("What happens in this video?", []))
    return question, list(options)
