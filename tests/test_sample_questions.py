"""videoqa_training/sample_questions.py: its questions match the sample clips' facts, and its scoring."""

import json
from pathlib import Path
from types import SimpleNamespace

from videoqa_training import sample_questions as ask

ROOT = Path(__file__).resolve().parents[1]


def test_questions_are_about_clips_that_exist_and_agree_with_the_demo():
    from videoqa.demo.samples import SUGGESTED

    manifest = {v["file"]: v for v in json.loads((ROOT / "videoqa" / "assets" / "samples" / "manifest.json").read_text())["videos"]}
    for clip, question, options, expected in ask.QUESTIONS:
        assert clip in manifest and (ROOT / "videoqa" / "assets" / "samples" / clip).is_file()
        assert isinstance(expected, str) == bool(options)  # a letter for multiple choice, words otherwise
        if clip in SUGGESTED and SUGGESTED[clip][0] == question:
            assert SUGGESTED[clip][1] == options
    facts = manifest["shapes.mp4"]["facts"]
    assert facts["red_circle"]["motion"] == "left to right" and "blue_square" in facts
    assert [d["value"] for d in manifest["counting.mp4"]["facts"]["digits"]][-1] == 9  # option D
    assert manifest["long.mp4"]["facts"]["background_colors"][-1]["value"] == "brown"  # option D


def test_scoring_takes_letters_and_whole_words():
    mc, free = "A", ("red",)
    assert ask.is_right(SimpleNamespace(letter="A", text="A"), mc)
    assert not ask.is_right(SimpleNamespace(letter="C", text="C"), mc)
    assert ask.is_right(SimpleNamespace(letter=None, text="Red."), free)
    assert not ask.is_right(SimpleNamespace(letter=None, text="green"), free)
    assert not ask.is_right(SimpleNamespace(letter=None, text="bored"), free)  # a word, not a substring
    assert ask.is_right(SimpleNamespace(letter=None, text="It falls down"), ("fall", "down"))


def test_the_opposite_direction_is_not_scored_right():
    """'right to left' names the word "right" but is the wrong way round (scored right until 2026-12-03)."""
    direction = next(expected for clip, q, _, expected in ask.QUESTIONS if "which direction" in q.lower())
    assert ask.is_right(SimpleNamespace(letter=None, text="left to right"), direction)
    assert ask.is_right(SimpleNamespace(letter=None, text="It moves to the right."), direction)
    assert not ask.is_right(SimpleNamespace(letter=None, text="right to left"), direction)


def test_every_suggested_demo_question_is_asked_once():
    from videoqa.demo.samples import SUGGESTED

    picked = ask.suggested()
    assert sorted(ask.QUESTIONS[i][0] for i in picked) == sorted(SUGGESTED)
    for i in picked:
        clip, question, options, expected = ask.QUESTIONS[i]
        assert SUGGESTED[clip] == (question, options, expected)
