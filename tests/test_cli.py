"""The videoqa command: info, ask (text and --json), one-line errors with exit status 2, the subcommand hook."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("decord")

from videoqa import cli  # noqa: E402
from videoqa.video import read_video_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "videoqa" / "assets" / "samples"


def test_info_text_and_json(capsys):
    path = SAMPLES / "rotated.mp4"
    info = read_video_info(path)
    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{info.duration_s:.3f} s" in out and f"{info.width}x{info.height}" in out
    assert f"frames     {info.num_frames}" in out and "h264" in out and "90 deg" in out
    assert cli.main(["info", "--json", str(SAMPLES / "vp9.webm")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["codec"], d["width"], d["height"]) == ("vp9", 320, 240) and d["duration_s"] > 0


def test_ask_json_in_a_subprocess():
    """`python -m videoqa ask ... --json`: the installed entry point's module, run from the repository."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VIDEOQA_MODEL", None)
    cmd = [sys.executable, "-m", "videoqa", "ask", str(SAMPLES / "shapes.mp4"), "What moves?",
           "--options", "A. a red circle", "B. a blue square", "C. a green triangle", "D. nothing",
           "--model", "random", "--max-frames", "8", "--max-new-tokens", "4", "--top-p", "0.9", "--min-seq-len", "0",
           "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["model"] == "random" and d["random_model"] is True and d["sparse"] is True
    assert d["options"][1] == "B. a blue square" and d["config"]["top_p"] == 0.9
    assert d["config"]["min_seq_len"] == 0  # --min-seq-len 0: sparse although the prompt is short
    assert d["frames"]["count"] == 8 and 1 <= d["new_tokens"] <= 4
    # on a CPU the blocks are selected, then dense attention runs (videoqa.models.set_sparsity)
    assert d["layers"] and all(r["path"] == "above_break_even" and "packed_mask" not in r for r in d["layers"])
    assert d["density"] == pytest.approx(sum(r["selected_density"] for r in d["layers"]) / len(d["layers"]))
    assert d["fallback_layers"] == len(d["layers"]) and d["config"]["max_density"] == 0.0
    assert set(d["timings"]) >= {"decode_video", "preprocess", "prefill", "generate", "total"}
    err = proc.stderr
    for step in ("decoding", "loading model random", "prefill", "generating"):
        assert step in err
    assert "meaningless" in err and "Traceback" not in err


def test_ask_text_output(capsys):
    code = cli.main(["ask", str(SAMPLES / "counting.mp4"), "Which digit comes first?", "--model", "random",
                     "--options", "one", "two", "--max-frames", "4", "--max-new-tokens", "3", "--dense"])
    assert code == 0
    out, err = capsys.readouterr()
    assert "letter:" in out and "dense" in out and "(random weights)" in out
    assert "[videoqa] decoding" in err


@pytest.mark.parametrize("argv, message", [
    (["ask", "{shapes}", "   "], "question is empty"),
    (["ask", "{shapes}", "Q?", "--options", "only"], "need 2 to 10 options"),
    (["ask", "{missing}", "Q?"], "not found"),
    (["ask", "{corrupt}", "Q?"], "corrupt.mp4"),
    (["info", "{corrupt}"], "corrupt.mp4"),
    (["ask", "{shapes}", "Q?", "--top-p", "1.5"], "top_p"),
    (["ask", "{shapes}", "Q?", "--model", "/nonexistent/model"], "model directory not found"),
])
def test_errors_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes((SAMPLES / "shapes.mp4").read_bytes()[:4000])
    paths = {"shapes": SAMPLES / "shapes.mp4", "missing": tmp_path / "missing.mp4", "corrupt": corrupt}
    assert cli.main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("videoqa: error: ") and message in last and "Traceback" not in err


def test_usage_errors_exit_2():
    for argv in [[], ["ask"], ["ask", "v.mp4", "q", "--max-new-tokens", "0"],
                 ["ask", "v.mp4", "q", "--min-seq-len", "-1"], ["nope"]]:
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2


def test_min_seq_len_flag_overrides_the_library_default(monkeypatch, capsys):
    """Without --min-seq-len, ask keeps the library's config (dense below 32768 tokens)."""
    import videoqa.pipeline
    from unisparse import UniSparseConfig

    seen = []

    class Result:
        random_model = False

        def to_dict(self):
            return {}

    def fake_answer(video, question, options=None, *, sparse=True, config=None, **kwargs):
        seen.append((sparse, config))
        return Result()

    monkeypatch.setattr(videoqa.pipeline, "answer", fake_answer)
    for extra in [[], ["--min-seq-len", "0"], ["--min-seq-len", "4096", "--top-p", "0.9"],
                  ["--dense", "--min-seq-len", "0"], ["--calibrate", "16"]]:
        assert cli.main(["ask", "v.mp4", "Q?", "--json", *extra]) == 0
    assert seen == [(True, None), (True, UniSparseConfig(min_seq_len=0)),
                    (True, UniSparseConfig(top_p=0.9, min_seq_len=4096)), (False, None),
                    (True, UniSparseConfig(calibration_blocks=16))]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["ask", "-h"])
    assert "--min-seq-len" in capsys.readouterr().out


def test_subcommand_hook(monkeypatch, capsys):
    seen = {}

    def add(parser):
        parser.add_argument("--port", type=int, default=7860)

    def run(args):
        seen["port"] = args.port
        print("demo started")
        return 0

    monkeypatch.setitem(cli.COMMANDS, "demo", cli.Command("demo", "web demo", add, run))
    assert cli.main(["demo", "--port", "9000"]) == 0 and seen == {"port": 9000}
    assert "demo started" in capsys.readouterr().out
    lazy = cli.Command("info2", "info again", "videoqa.cli.main:_info_arguments", "videoqa.cli.main:_run_info")
    monkeypatch.setitem(cli.COMMANDS, "info2", lazy)
    assert cli.main(["info2", str(SAMPLES / "shapes.mp4")]) == 0


def test_ask_then_answers_several_questions_about_one_video(capsys):
    assert cli.main(["ask", str(SAMPLES / "shapes.mp4"), "What moves?", "--then", "Which colour?", "--then", "Why?",
                     "--model", "random", "--max-frames", "4", "--max-new-tokens", "2", "--dense", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [d["question"] for d in out] == ["What moves?", "Which colour?", "Why?"]
    assert all(d["prefix_tokens"] == out[0]["prefix_tokens"] and "prefix_prefill" in d["reused"] for d in out)
    assert cli.main(["ask", str(SAMPLES / "shapes.mp4"), "What moves?", "--then", "Which colour?", "--model", "random",
                     "--max-frames", "4", "--max-new-tokens", "2", "--dense"]) == 0
    text = capsys.readouterr().out
    assert "Q1: What moves?" in text and "Q2: Which colour?" in text and "(once for the video)" in text
