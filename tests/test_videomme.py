"""Video-MME evaluation: table parsing and validation, prompt, subtitles, letter extraction,
scoring, resume after an interruption, and torchrun sharding equal to one process.

Runs on data/videomme-sample/ (made by videoqa_training/videomme_sample.py) with fake answerers:
the real pipeline is not needed to test the harness.
"""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import videoqa
from videoqa.eval.videomme import dataset as VM
from videoqa.choices import extract_letter, normalize_options
from videoqa.eval.videomme.cli import main as cli_main
from videoqa.eval.videomme.run import Journal, SettingsMismatch, read_answers, read_journal, run_eval
from videoqa.eval.videomme.score import render_markdown, score

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "videomme-sample"
SAMPLES = ROOT / "videoqa" / "assets" / "samples"
HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None
OPTS = ["A. a red circle", "B. a blue square", "C. a green triangle", "D. a yellow star"]


def sample_rows():
    return json.loads((SAMPLE / "videomme.json").read_text())


def gold_by_question():
    return {r["question"] + "|" + "|".join(r["options"]): r["answer"] for r in sample_rows()}


@dataclass
class FakeAnswer:
    text: str
    letter: str | None = None
    timings: dict = field(default_factory=dict)
    density: float | None = None
    visual_tokens: int = 100
    total_tokens: int = 150


class FakeAnswerer:
    """Knows the gold letters; dense is always right, sparse is wrong on questions ``*-2``;
    answers in messy forms; optionally raises after ``fail_after`` calls (an interruption)."""

    FORMS = ["{}", "The best answer is {}.", "({})", "**{}**", "Answer: {}"]

    def __init__(self, tag="run1", fail_after=None, video_error_for=()):
        self.gold = gold_by_question()
        self.calls, self.tag, self.fail_after, self.video_error_for = [], tag, fail_after, set(video_error_for)

    def __call__(self, video, question, options=None, *, model=None, sparse=True, config=None, fps=None,
                 max_frames=None, max_new_tokens=64):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls.append(dict(video=video, question=question, options=list(options), model=model, sparse=sparse,
                               config=config, fps=fps, max_frames=max_frames, max_new_tokens=max_new_tokens))
        if Path(video).stem in self.video_error_for:
            from videoqa.video import VideoError

            raise VideoError(f"cannot read {video}")
        q = question.split("\n")[-1]
        gold = self.gold[q + "|" + "|".join(options)]
        wrong = "ABCD"[("ABCD".index(gold) + 1) % 4]
        letter = wrong if sparse and self._qid(q, options).endswith("-2") else gold
        form = self.FORMS[len(self.calls) % len(self.FORMS)]
        prefill = 2.0 if not sparse else 1.0 + 0.25 * (len(self.calls) % 2)
        return FakeAnswer(f"{form.format(letter)} [{self.tag}]", None, {"prefill": prefill, "total": prefill + 1},
                          0.4 if sparse else None)

    @staticmethod
    def _qid(q, options):
        return next(r["question_id"] for r in sample_rows() if r["question"] == q and r["options"] == list(options))


def lines_of(out):
    return [json.loads(x) for x in (Path(out) / "results.jsonl").read_text().splitlines()]


def test_imports_this_checkout():
    assert Path(videoqa.__file__).resolve().parent == ROOT / "videoqa"


# ----------------------------------------------------------------------------- letter extraction


@pytest.mark.parametrize("text,expected", [
    ("C", "C"), ("The best answer is C.", "C"), ("The best answer is:\n\nB", "B"), ("Answer: (B)", "B"),
    ("**D**", "D"), ("C. a green triangle", "C"), ("(B) a blue square", "B"), ("Answer:C", "C"),
    ("C\n\nExplanation: A is wrong because of B.", "C"), ("The correct option is D", "D"),
    ("B is the correct answer.", "B"), ("The video shows it, so the answer is (A).", "A"),
    ("The answer is b.", "B"), ("a green triangle", "C"), ("A red circle moves to the right.", "A"),
    ("I cannot tell from the video.", None), ("", None),
    # several options named: no letter (these returned the first one before)
    ("The answer is A or B", None), ("The answer is B or C.", None), ("Answer: A, B", None),
    ("answer: A/B", None), ("Answer: B and D", None), ("The answer is (B) or (C)", None), ("(B) or (C)", None),
    ("B/C", None), ("A or B", None),
])
def test_extract_letter_messy_outputs(text, expected):
    assert extract_letter(text, OPTS) == expected


# ----------------------------------------------------------------------------- the table


def test_sample_table_parses_in_both_formats():
    json_qs = VM.load_questions(SAMPLE / "videomme.json")
    assert len(json_qs) == len(sample_rows()) >= 15
    assert {q.duration for q in json_qs} == set(VM.DURATIONS)
    assert [q.question_id for q in json_qs] == sorted((q.question_id for q in json_qs), key=VM.natural_key)
    for q in json_qs:
        assert len(q.options) == 4 and q.answer in "ABCD"
    if HAS_PYARROW:
        assert VM.find_table(SAMPLE) == SAMPLE / VM.RELEASE_TABLE
        assert VM.load_questions(SAMPLE) == json_qs
    ds = VM.Dataset.load(SAMPLE, SAMPLE / "videomme.json")
    assert ds.missing_videos() == [] and set(ds.subtitles) >= {"counting", "scene_change"}


def test_sample_answers_come_from_the_manifest():
    manifest = {v["file"]: v["facts"] for v in json.loads((SAMPLES / "manifest.json").read_text())["videos"]}
    qs = {(q.videoID, q.question): q for q in VM.load_questions(SAMPLE / "videomme.json")}

    def gold_text(vid, question):
        q = qs[(vid, question)]
        return dict(normalize_options(q.options))[q.answer]

    bg = [c["value"] for c in manifest["long.mp4"]["background_colors"]]
    assert gold_text("long", "What colour is the background at the start of the video?") == bg[0]
    assert gold_text("long", "What colour is the background at the end of the video?") == bg[-1]
    assert gold_text("long", "How many times does the background colour change?") == str(len(bg) - 1)
    digits = [d["value"] for d in manifest["counting.mp4"]["digits"]]
    assert gold_text("counting", "What is the largest digit shown in the video?") == str(max(digits))
    assert gold_text("vp9", "What colour is the ball?") == manifest["vp9.webm"]["ball"]["color"]
    assert gold_text("scene_change", "What is the dominant colour at the start of the video?") == \
        manifest["scene_change.mp4"]["scenes"][0]["dominant_color"]
    letters = [q.answer for q in qs.values()]
    assert set(letters) == set("ABCD")


def test_nested_json_jsonl_and_url_fallback(tmp_path):
    rows = sample_rows()
    nested = {}
    for r in rows:
        v = nested.setdefault(r["video_id"], {k: r[k] for k in ("video_id", "duration", "domain", "sub_category",
                                                              "url", "videoID")} | {"questions": []})
        v["questions"].append({k: r[k] for k in ("question_id", "task_type", "question", "options", "answer")})
    (tmp_path / "nested.json").write_text(json.dumps(list(nested.values())))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ref = VM.load_questions(SAMPLE / "videomme.json")
    assert VM.load_questions(tmp_path / "nested.json") == ref
    assert VM.load_questions(tmp_path / "rows.jsonl") == ref
    # without videoID: from a YouTube url, or from a file name; options as the text of a list
    r = dict(rows[0], url="https://www.youtube.com/watch?v=fFjv93ACGo8", options=str(rows[0]["options"]))
    del r["videoID"]
    q = VM.parse_rows([r])[0]
    assert q.videoID == "fFjv93ACGo8" and q.options == tuple(rows[0]["options"])


def test_missing_columns_named_together(tmp_path):
    rows = [{k: v for k, v in r.items() if k not in ("task_type", "options")} for r in sample_rows()]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    with pytest.raises(VM.DatasetError) as e:
        VM.load_questions(tmp_path / "t.json")
    msg = str(e.value)
    assert "task_type" in msg and "options" in msg and "lacks column" in msg
    rows = [{k: v for k, v in r.items() if k not in ("videoID", "url")} for r in sample_rows()]
    with pytest.raises(VM.DatasetError, match=r"videoID \(or url\)"):
        VM.parse_rows(rows)


def test_invalid_rows_reported_together():
    rows = sample_rows()
    rows[1] = dict(rows[1], answer="E")
    rows[3] = dict(rows[3], duration="very long")
    rows[5] = dict(rows[5], question_id=rows[4]["question_id"])
    rows[7] = dict(rows[7], options=["A. x", "C. y", "B. z", "D. w"])
    rows[8] = dict(rows[8], question="  ")
    with pytest.raises(VM.DatasetError) as e:
        VM.parse_rows(rows, "t")
    msg = str(e.value)
    assert "5 invalid row(s)" in msg
    for needle in ("row 1 ", "answer 'E'", "row 3 ", "very long", "row 5 ", "repeats row 4", "row 7 ",
                   "labelled 'C'", "row 8 ", "empty question"):
        assert needle in msg, needle


def test_table_discovery(tmp_path):
    with pytest.raises(VM.DatasetError, match="no question table"):
        VM.find_table(tmp_path)
    (tmp_path / "a.json").write_text("[]")
    (tmp_path / "b.json").write_text("[]")
    with pytest.raises(VM.DatasetError, match="several question tables"):
        VM.find_table(tmp_path)
    (tmp_path / "b.json").unlink()
    assert VM.find_table(tmp_path) == tmp_path / "a.json"
    with pytest.raises(VM.DatasetError, match="has no rows"):
        VM.load_questions(tmp_path)


def test_select_filters_and_limits():
    qs = VM.load_questions(SAMPLE / "videomme.json")
    short = VM.select(qs, durations=["short"])
    assert short and all(q.duration == "short" for q in short)
    assert VM.select(qs, durations=["short", "long"], limit=3) == [q for q in qs if q.duration in ("short", "long")][:3]
    with pytest.raises(ValueError):
        VM.select(qs, durations=["tiny"])


# ----------------------------------------------------------------------------- prompt and subtitles


def test_prompt_text_exactly():
    q = VM.Question("001-1", "001", "v", "short", "d", "s", "t", "What colour is the circle?",
                    ("A. red", "B. green", "C. blue", "D. yellow"), "A")
    assert VM.build_prompt(q) == ("What colour is the circle?\nA. red\nB. green\nC. blue\nD. yellow\n"
                                  "Answer with the option's letter from the given choices directly.")
    assert VM.build_prompt(q, "Hello.\nBye.") == (
        "This video's subtitles are listed below:\nHello.\nBye.\nWhat colour is the circle?\n"
        "A. red\nB. green\nC. blue\nD. yellow\nAnswer with the option's letter from the given choices directly.")
    assert VM.build_prompt(q, "") == VM.build_prompt(q)


def test_parse_srt_variants():
    text = ("\ufeff1\r\n00:00:01,500 --> 00:00:02,000\r\n<font color=\"white\" size=\".72c\">Hello</font>\r\n"
            "there\r\n\r\n2\r\nnot a time line\r\nskipped\r\n\r\n3\r\n01:02:03.25 --> 01:02:04.000\r\n{\\an8}<i>Bye</i>\r\n")
    cues = VM.parse_srt(text)
    assert cues == [VM.Cue(1.5, 2.0, "Hello there"), VM.Cue(3723.25, 3724.0, "Bye")]
    sample = VM.read_srt(SAMPLE / "subtitles" / "counting.srt")
    assert [c.text for c in sample][:2] == ["Number one.", "Number two."] and "<" not in sample[0].text


def test_subtitle_selection_and_budget():
    cues = [VM.Cue(float(i), i + 1.0, f"line {i:02d}") for i in range(20)] + [VM.Cue(20.0, 21.0, "line 19")]
    assert VM.subtitle_text(cues, max_chars=None).split("\n") == [f"line {i:02d}" for i in range(20)]  # repeat dropped
    assert VM.subtitle_text(cues, [0.5, 5.0, 5.5, 19.99], max_chars=None) == "line 00\nline 05\nline 19"
    assert VM.subtitle_text(cues, [100.0]) == ""
    text = VM.subtitle_text(cues, max_chars=40)
    kept = text.split("\n")
    assert len(text) <= 40 and kept[0] == "line 00" and kept[-1] == "line 19" and len(kept) >= 4
    assert kept == sorted(kept)
    assert VM.subtitle_text([VM.Cue(0, 1, "x" * 100)], max_chars=10) == "x" * 10


def test_planned_frame_times_match_sampled_frames():
    pytest.importorskip("decord")
    from videoqa.video import sample_frames

    video = SAMPLE / "videos" / "counting.mp4"
    for fps, max_frames in ((2.0, 768), (1.0, 6), (None, None)):
        planned = VM.planned_frame_times(video, fps=fps, max_frames=max_frames)
        got = sample_frames(video, fps=2.0 if fps is None else fps, max_frames=768 if max_frames is None else max_frames)
        assert len(planned) == got.num_frames
        assert max(abs(a - b) for a, b in zip(planned, got.timestamps_s)) <= 0.5 / 24 + 1e-6


# ----------------------------------------------------------------------------- scoring


def _r(qid, mode, correct, duration="short", density=None, prefill=None, letter="A", error=None, task="T1"):
    return {"question_id": qid, "mode": mode, "correct": correct, "duration": duration, "domain": "D",
            "sub_category": "S", "task_type": task, "density": density, "letter": letter, "error": error,
            "timings": {} if prefill is None else {"prefill": prefill}}


def test_scores_on_hand_made_results():
    lines = [
        _r("1", "dense", True, "short", prefill=4.0), _r("1", "sparse", True, "short", 0.5, 1.0),
        _r("2", "dense", True, "short", prefill=2.0), _r("2", "sparse", False, "short", 0.3, 1.0, letter=None),
        _r("3", "dense", False, "long", prefill=10.0, task="T2"), _r("3", "sparse", True, "long", 0.2, 4.0, task="T2"),
        _r("4", "dense", True, "long", task="T2"),  # sparse not answered yet (interrupted run)
        _r("5", "sparse", False, "medium", 0.6, letter=None, error="VideoError: x"),
    ]
    rep = score(lines)
    o = rep["overall"]
    assert o["questions"] == 5 and rep["modes"] == ["dense", "sparse"]
    assert o["dense"] == {"answered": 4, "correct": 3, "accuracy": 0.75, "no_letter": 0, "errors": 0}
    assert o["sparse"] == {"answered": 4, "correct": 2, "accuracy": 0.5, "no_letter": 1, "errors": 1}
    assert o["paired"] == 3 and o["accuracy_ratio"] == pytest.approx(2 / 2)  # paired: dense 1,2 / sparse 1,3
    assert o["mean_density"] == pytest.approx((0.5 + 0.3 + 0.2 + 0.6) / 4)
    assert o["prefill_speedup"] == pytest.approx((4 + 2 + 10) / (1 + 1 + 4))
    assert list(rep["by_duration"]) == ["short", "medium", "long"]
    s = rep["by_duration"]["short"]
    assert (s["dense"]["accuracy"], s["sparse"]["accuracy"], s["accuracy_ratio"]) == (1.0, 0.5, 0.5)
    assert s["prefill_speedup"] == pytest.approx(3.0)
    m = rep["by_duration"]["medium"]
    assert "dense" not in m and m["accuracy_ratio"] is None and m["prefill_speedup"] is None
    lg = rep["by_duration"]["long"]
    assert lg["accuracy_ratio"] is None and lg["paired"] == 1  # dense got 0 of 1 paired right
    assert rep["by_task_type"]["T2"]["questions"] == 2
    md = render_markdown(rep)
    assert "| short | 2 | 100.0% | 50.0% | 0.500 | 0.400 | 3.00x |" in md
    assert "| overall | 5 | 75.0% | 50.0% | 1.000 | 0.400 | 2.67x |" in md
    assert "1 sparse answer(s) without a readable letter, 1 error(s)" in md
    assert "## By task type" in md and "| T2 | 2 | 50.0% | 100.0% |" in md


# ----------------------------------------------------------------------------- running, resuming


def test_both_mode_pairs_frames_and_model(tmp_path):
    fake, model = FakeAnswerer(), object()
    rep = run_eval(SAMPLE, tmp_path, answer_fn=fake, model=model, model_name="fake-model", mode="both",
                   fps=1.0, max_frames=8, max_new_tokens=16, progress=False, log=lambda *a, **k: None)
    n = len(sample_rows())
    assert len(fake.calls) == 2 * n
    for dense, sparse in zip(fake.calls[::2], fake.calls[1::2]):
        assert (dense["sparse"], sparse["sparse"]) == (False, True)
        for k in ("video", "question", "options", "fps", "max_frames", "max_new_tokens"):
            assert dense[k] == sparse[k]
        assert dense["model"] is model and sparse["model"] is model
        assert (dense["fps"], dense["max_frames"], dense["max_new_tokens"]) == (1.0, 8, 16)
    lines = lines_of(tmp_path)
    assert [(x["question_id"], x["mode"]) for x in lines] == [(r["question_id"], m) for r in sample_rows()
                                                             for m in ("dense", "sparse")]
    assert all(x["correct"] for x in lines if x["mode"] == "dense")
    n2 = sum(r["question_id"].endswith("-2") for r in sample_rows())
    assert rep["overall"]["sparse"]["correct"] == n - n2
    assert rep["overall"]["accuracy_ratio"] == pytest.approx((n - n2) / n)
    assert rep["overall"]["mean_density"] == pytest.approx(0.4)
    assert json.loads((tmp_path / "report.json").read_text())["overall"] == rep["overall"]
    assert "| overall |" in (tmp_path / "report.md").read_text()
    assert all(x["prompt"].endswith("Answer with the option's letter from the given choices directly.") for x in lines)


def test_resume_after_crash_and_truncated_line(tmp_path):
    n = len(sample_rows())
    first = FakeAnswerer("run1", fail_after=7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_eval(SAMPLE, tmp_path, answer_fn=first, mode="both", progress=False, log=lambda *a, **k: None)
    journal = tmp_path / "answers.rank0.jsonl"
    saved = read_journal(journal)
    assert len(saved) == 7 and not (tmp_path / "results.jsonl").exists()
    with open(journal, "a") as f:  # the process died in the middle of writing the 8th line
        f.write(json.dumps(dict(saved[0], question_id="999-9"))[:40])
    assert len(read_journal(journal)) == 7
    second = FakeAnswerer("run2")
    with pytest.warns(UserWarning, match="incomplete last line"):
        rep = run_eval(SAMPLE, tmp_path, answer_fn=second, mode="both", progress=False, log=lambda *a, **k: None)
    assert len(second.calls) == 2 * n - 7  # nothing redone
    lines = lines_of(tmp_path)
    keys = [(x["question_id"], x["mode"]) for x in lines]
    assert len(keys) == len(set(keys)) == 2 * n  # nothing lost, nothing twice
    assert lines[:7] == saved[:7] and all("[run1]" in x["response"] for x in lines[:7])
    assert all("[run2]" in x["response"] for x in lines[7:])
    assert json.loads(journal.read_text().splitlines()[7])["question_id"] != "999-9"  # fragment cut away
    assert rep["overall"]["dense"]["answered"] == n
    third = FakeAnswerer("run3")  # a third run has nothing to do and gives the same report
    assert run_eval(SAMPLE, tmp_path, answer_fn=third, mode="both", progress=False, log=lambda *a, **k: None) == rep
    assert third.calls == []


def test_resume_across_selection_and_mode_changes(tmp_path):
    quiet = dict(progress=False, log=lambda *a, **k: None)
    a = FakeAnswerer()
    run_eval(SAMPLE, tmp_path, answer_fn=a, mode="sparse", durations=["short"], limit=3, **quiet)
    assert len(a.calls) == 3 and {x["duration"] for x in lines_of(tmp_path)} == {"short"}
    b = FakeAnswerer()
    rep = run_eval(SAMPLE, tmp_path, answer_fn=b, mode="both", **quiet)
    n = len(sample_rows())
    assert len(b.calls) == 2 * n - 3 and rep["overall"]["paired"] == n
    with pytest.raises(SettingsMismatch, match="fps"):
        run_eval(SAMPLE, tmp_path, answer_fn=b, mode="both", fps=4.0, **quiet)
    assert len(read_answers(tmp_path)) == 2 * n


def test_video_errors_recorded_and_missing_videos_listed_once(tmp_path):
    data = tmp_path / "ds"
    shutil.copytree(SAMPLE, data, symlinks=False)
    (data / "videomme").exists() and shutil.rmtree(data / "videomme")  # JSON table only
    for name in ("long.mp4", "vp9.webm"):
        (data / "videos" / name).unlink()
    quiet = dict(progress=False, log=lambda *a, **k: None)
    fake = FakeAnswerer(video_error_for={"av1"})
    with pytest.raises(VM.DatasetError) as e:
        run_eval(data, tmp_path / "out", answer_fn=fake, mode="sparse", **quiet)
    msg = str(e.value)
    assert "2 video(s) missing for 5 of 20 question(s)" in msg and "long" in msg and "vp9" in msg
    assert fake.calls == []
    rep = run_eval(data, tmp_path / "out", answer_fn=fake, mode="sparse", skip_missing=True, **quiet)
    assert len(fake.calls) == 15 and rep["skipped_missing_videos"] == 5
    errs = [x for x in lines_of(tmp_path / "out") if x["error"]]
    assert len(errs) == 2 and all(x["videoID"] == "av1" and not x["correct"] for x in errs)
    assert rep["overall"]["sparse"]["errors"] == 2
    assert "5 question(s) skipped" in (tmp_path / "out" / "report.md").read_text()


def test_subtitles_reach_the_answerer(tmp_path):
    pytest.importorskip("decord")
    fake = FakeAnswerer()
    run_eval(SAMPLE, tmp_path, answer_fn=fake, mode="dense", subtitles=True, fps=1.0, durations=["medium"],
             progress=False, log=lambda *a, **k: None)
    by_video = {Path(c["video"]).stem: c["question"] for c in fake.calls}
    assert by_video["counting"].startswith(VM.SUBTITLE_HEADER + "\nNumber one.\nNumber two.\n")
    assert "Number nine." in by_video["counting"]
    assert by_video["scene_change"].count("Here everything is") == 2
    assert by_video["shapes"] == "In which direction does the red circle move?"  # no .srt: no block
    line = next(x for x in lines_of(tmp_path) if x["videoID"] == "counting")
    assert line["prompt"].startswith(VM.SUBTITLE_HEADER) and line["subtitle_chars"] > 0


def test_journal_write_is_complete_lines(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2')
    with pytest.warns(UserWarning, match="incomplete last line"), Journal(path) as j:
        j.write({"c": "é"})
    assert read_journal(path) == [{"a": 1}, {"c": "é"}]
    path.write_bytes(b'{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(Exception, match=r"j.jsonl:2"):
        read_journal(path)


def test_cli_dry_run_and_errors(tmp_path, capsys):
    assert cli_main(["--dataset", str(tmp_path / "nope"), "--output", str(tmp_path / "o"), "--dry-run"]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    rc = cli_main(["--dataset", str(SAMPLE), "--output", str(tmp_path / "o"), "--dry-run", "--limit", "4",
                   "--mode", "sparse", "--no-progress", "--duration", "short"])
    assert rc == 0 and "| overall | 4 |" in capsys.readouterr().out
    assert len(lines_of(tmp_path / "o")) == 4


def test_cli_min_seq_len_reaches_the_answerer(tmp_path, capsys):
    from unisparse import UniSparseConfig

    common = ["--dataset", str(SAMPLE), "--limit", "2", "--mode", "sparse", "--no-progress"]
    default, opted = FakeAnswerer(), FakeAnswerer()
    assert cli_main(common + ["--output", str(tmp_path / "a")], answer_fn=default) == 0
    assert cli_main(common + ["--output", str(tmp_path / "b"), "--min-seq-len", "0"], answer_fn=opted) == 0
    # the library default, measured as the method itself (never the speed fallback to dense)
    assert [c["config"] for c in default.calls] == [UniSparseConfig(max_density=1.0)] * 2
    assert [c["config"] for c in opted.calls] == [UniSparseConfig(min_seq_len=0, max_density=1.0)] * 2
    assert json.loads((tmp_path / "a" / "run.json").read_text())["config"] is None  # as given


# ----------------------------------------------------------------------------- interruption and sharding


def slow_answer(video, question, options=None, **kw):
    """For the kill test (imported by the child process): a dry-run answer, 0.2 s each."""
    from videoqa.eval.videomme.dryrun import answer

    time.sleep(0.2)
    return answer(video, question, options, **kw)


def _env():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                                       os.environ.get("PYTHONPATH", "")]),
               GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def test_killed_process_resumes_without_loss(tmp_path):
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "videoqa", "eval", "--dataset", str(SAMPLE), "--output",
           str(out), "--answerer", "test_videomme:slow_answer", "--mode", "both", "--no-progress"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = out / "answers.rank0.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not journal.exists() or len(read_journal(journal)) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    before = read_journal(journal)
    assert 3 <= len(before) < 40
    fake = FakeAnswerer()
    run_eval(SAMPLE, out, answer_fn=fake, mode="both", progress=False, log=lambda *a, **k: None)
    lines = lines_of(out)
    assert len(fake.calls) == 40 - len(before)
    assert len({(x["question_id"], x["mode"]) for x in lines}) == len(lines) == 40
    assert lines[:len(before)] == before


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_equal_one(tmp_path):
    common = ["--dataset", str(SAMPLE), "--mode", "both", "--dry-run", "--subtitles", "--fps", "1",
              "--no-progress"]
    assert cli_main(common + ["--output", str(tmp_path / "one")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "videoqa", "eval"] + common + ["--output", str(tmp_path / "two")]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    one, two = tmp_path / "one", tmp_path / "two"
    for name in ("results.jsonl", "report.json", "report.md", "run.json"):
        assert (one / name).read_text() == (two / name).read_text(), name
    r0, r1 = read_journal(two / "answers.rank0.jsonl"), read_journal(two / "answers.rank1.jsonl")
    questions = VM.load_questions(SAMPLE / "videomme.json")
    videos = sorted({q.videoID for q in questions}, key=VM.natural_key)
    # by video, round-robin over the sorted videos: a video's questions stay on one rank
    assert {x["videoID"] for x in r0} == set(videos[0::2]) and {x["videoID"] for x in r1} == set(videos[1::2])
    assert len(r0) + len(r1) == 2 * len(questions)


def test_the_multi_gpu_comparison_ignores_timings_and_catches_a_changed_answer(tmp_path):
    """benchmarks/multigpu/compare_runs.py: two dry runs of one command compare equal (their timings
    and sessions differ); a changed response is reported and fails the comparison."""
    common = ["--dataset", str(SAMPLE), "--mode", "both", "--dry-run", "--no-progress"]
    for name in ("one", "two"):
        assert cli_main(common + ["--output", str(tmp_path / name)]) == 0
    script = [sys.executable, str(ROOT / "benchmarks" / "multigpu" / "compare_runs.py"),
              "--reference", str(tmp_path / "one"), "--runs", str(tmp_path / "two")]
    same = subprocess.run(script, capture_output=True, text=True, timeout=60)
    assert same.returncode == 0 and "| two | 40 |" in same.stdout and "| yes |" in same.stdout, same.stdout
    lines = (tmp_path / "two" / "results.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["response"] = "Z" + first["response"]
    (tmp_path / "two" / "results.jsonl").write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n")
    changed = subprocess.run(script, capture_output=True, text=True, timeout=60)
    assert changed.returncode == 1 and f"{first['question_id']} {first['mode']}: response differ" in changed.stdout


# ----------------------------------------------------------------------------- the generator


def test_generator_reproduces_the_committed_sample(tmp_path):
    from videoqa_training.videomme_sample import generate

    generate(tmp_path)
    assert (tmp_path / "videomme.json").read_bytes() == (SAMPLE / "videomme.json").read_bytes()
    for srt in (SAMPLE / "subtitles").glob("*.srt"):
        assert (tmp_path / "subtitles" / srt.name).read_bytes() == srt.read_bytes()
    assert sorted(p.name for p in (tmp_path / "subtitles").iterdir()) == \
        sorted(p.name for p in (SAMPLE / "subtitles").iterdir())
    for v in (SAMPLE / "videos").iterdir():
        assert (tmp_path / "videos" / v.name).read_bytes() == v.read_bytes() == (SAMPLES / v.name).read_bytes()
    if HAS_PYARROW:
        assert VM.load_questions(tmp_path / VM.RELEASE_TABLE) == VM.load_questions(SAMPLE / VM.RELEASE_TABLE)


# ----------------------------------------------------------------------------- one video, many questions


class FakeSessions:
    """A session_fn: one 'prefill' per (video, mode), answers by the FakeAnswerer; a crash after
    ``fail_after`` answers in all."""

    def __init__(self, fail_after=None):
        self.answerer, self.opened, self.fail_after, self.asked = FakeAnswerer(), [], fail_after, 0

    def __call__(self, video, *, model=None, sparse=True, config=None, fps=None, max_frames=None):
        sessions = self
        self.opened.append((Path(video).stem, sparse))

        class Session:
            def ask(self, question, options, max_new_tokens=64):
                if sessions.fail_after is not None and sessions.asked >= sessions.fail_after:
                    raise RuntimeError("simulated crash")
                sessions.asked += 1
                a = sessions.answerer(video, question, options, sparse=sparse, config=config, fps=fps,
                                      max_frames=max_frames, max_new_tokens=max_new_tokens)
                a.timings = {"prefill": 0.1, "prefix_prefill": 3.0, "total": 0.2}
                return a

        return Session()


def test_questions_of_one_video_share_one_session_and_the_prefix_counts_once(tmp_path):
    quiet = dict(progress=False, log=lambda *a, **k: None)
    fake = FakeSessions()
    report = run_eval(SAMPLE, tmp_path, session_fn=fake, mode="both", **quiet)
    questions = VM.load_questions(SAMPLE / "videomme.json")
    per_video = {}
    for q in questions:
        per_video[q.videoID] = per_video.get(q.videoID, 0) + 1
    assert sorted(fake.opened) == sorted((v, s) for v in per_video for s in (False, True))  # one per video and mode
    lines = lines_of(tmp_path)
    assert len(lines) == 40 and all(x["session"] for x in lines)
    for x in lines:  # the session's prefix prefill spread over its questions
        assert x["timings"]["prefix_share"] == pytest.approx(3.0 / per_video[x["videoID"]])
    total = sum(0.1 + 3.0 / per_video[x["videoID"]] for x in lines if x["mode"] == "dense")
    assert report["overall"]["prefill_dense_s"] == pytest.approx(total)  # = 0.1 per question + 3.0 per video
    assert total == pytest.approx(0.1 * len(questions) + 3.0 * len(per_video))


def test_a_crash_between_two_questions_of_one_video_loses_neither(tmp_path):
    quiet = dict(progress=False, log=lambda *a, **k: None)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_eval(SAMPLE, tmp_path, session_fn=FakeSessions(fail_after=5), mode="dense", **quiet)
    before = read_journal(tmp_path / "answers.rank0.jsonl")
    assert len(before) == 5
    resumed = FakeSessions()
    run_eval(SAMPLE, tmp_path, session_fn=resumed, mode="dense", **quiet)
    lines = lines_of(tmp_path)
    assert len(lines) == 20 and resumed.asked == 15  # only the missing answers
    cut = before[-1]["videoID"]  # the video the crash interrupted: its questions span two sessions
    sessions = {x["session"] for x in lines if x["videoID"] == cut}
    counted = {x["question_id"]: x["timings"]["prefix_share"] for x in lines if x["videoID"] == cut}
    assert len(sessions) <= 2 and all(v > 0 for v in counted.values())


def test_a_second_run_on_a_folder_a_live_run_writes_is_refused_and_a_dead_ones_lock_is_not(tmp_path):
    from videoqa.eval.videomme.run import RunLocked

    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                               "os.write(fd, b'pid test holder'); fcntl.flock(fd, fcntl.LOCK_EX); "
                               "print('locked', flush=True); time.sleep(60)", str(tmp_path / ".lock.rank0")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match="live run.*test holder"):
            run_eval(SAMPLE, tmp_path, answer_fn=FakeAnswerer(), mode="dense", progress=False,
                     log=lambda *a, **k: None)
        assert not (tmp_path / "answers.rank0.jsonl").exists()
        assert cli_main(["--dataset", str(SAMPLE), "--output", str(tmp_path), "--dry-run", "--no-progress"]) == 2
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead; its lock file is left behind but locks nothing
    report = run_eval(SAMPLE, tmp_path, answer_fn=FakeAnswerer(), mode="dense", progress=False,
                      log=lambda *a, **k: None)
    assert report["overall"]["questions"] == 20


def test_the_default_answerer_uses_real_sessions(tmp_path):
    from videoqa.models import load_model

    loaded = load_model("random")
    report = run_eval(SAMPLE, tmp_path, model=loaded, model_name="random", mode="both", limit=4, max_frames=4,
                      max_new_tokens=2, progress=False, log=lambda *a, **k: None)
    lines = lines_of(tmp_path)
    assert len(lines) == 8 and report["overall"]["paired"] == 4
    for x in lines:
        assert x["session"] and x["timings"]["prefix_prefill"] > 0 and x["timings"]["prefix_share"] > 0
        assert x["error"] is None and x["total_tokens"] > x["visual_tokens"] > 0
    by_session = {}
    for x in lines:
        by_session.setdefault(x["session"], set()).add((x["videoID"], x["mode"]))
    assert all(len(v) == 1 for v in by_session.values())  # a session serves one video in one mode
