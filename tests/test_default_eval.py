"""`python -m videoqa_training.evaluate` on a tiny model (numbers meaningless): suites, dense vs sparse, outputs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from videoqa_training.build import build_default_model, tiny_source  # noqa: E402
from videoqa_training.evaluate import build_suite, main, summarise  # noqa: E402
from videoqa_training.export import save_full  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_suites_have_the_asked_layout():
    single = build_suite("single", per_kind=2)
    assert len(single) == 8 and all(e.num_frames == 2 for _, e in single)
    needle = build_suite("needle", depths=(0.1, 0.9), frames=(64, 128), per_cell=2)
    assert len(needle) == 8
    assert sorted({(e.num_frames, e.meta["depth"]) for _, e in needle}) == [(64, 0.1), (64, 0.9), (128, 0.1), (128, 0.9)]
    assert {e.kind for _, e in needle} == {"needle_digit", "needle_color"}
    clip = build_suite("clip", per_kind=2)
    assert [e.kind for _, e in clip] == [k for k in ("mover", "appear", "clip_color", "travel", "digit_seq") for _ in (0, 1)]
    assert all(8 <= e.num_frames <= 24 for _, e in clip) and [e.options is not None for _, e in clip[:2]] == [False, True]
    still = build_suite("still", per_kind=3, size=(224, 224))
    assert [e.kind for _, e in still] == ["digit_on_color"] * 3 and all(e.num_frames == 2 for _, e in still)
    assert [e.options is not None for _, e in still] == [False, True, False]
    crowd = build_suite("crowd", per_kind=2)
    assert [e.kind for _, e in crowd] == [k for k in ("crowd_mover", "crowd_color", "scene_seq") for _ in (0, 1)]
    assert [e.options is not None for _, e in crowd[:2]] == [False, True]
    video = build_suite("video", per_kind=2)
    assert [e.kind for _, e in video] == [k for k in ("motion", "scene", "scene_change") for _ in (0, 1)]
    assert all(6 <= e.num_frames <= 32 for _, e in video) and [e.options is not None for _, e in video[:2]] == [False, True]
    with pytest.raises(ValueError, match="unknown suite"):
        build_suite("clips")


def test_summary_groups_clips_by_kind():
    from videoqa_training.evaluate import Result

    def r(kind, mode, correct):
        return Result("clip", kind, 0, False, 12, None, mode, "", "x", correct, None, 300, 0.1)

    rows = {x["group"]: x for x in summarise([r("mover", "dense", True), r("travel", "dense", False),
                                               r("mover", "sparse", False), r("travel", "sparse", False)])}
    assert rows["clip mover"]["dense_acc"] == 1.0 and rows["clip travel"]["dense_acc"] == 0.0
    assert rows["clip (all)"]["n"] == 2 and rows["clip (all)"]["dense_acc"] == 0.5


def test_eval_script_dense_and_sparse_on_a_tiny_model(tmp_path, capsys):
    model, processor = build_default_model({"depth": 1, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2},
                                           source=tiny_source())
    save_full(model, processor, tmp_path / "tiny", dtype=None)
    out = tmp_path / "eval"
    main(["--model", str(tmp_path / "tiny"), "--device", "cpu", "--per-kind", "1", "--needle-frames", "64",
          "--depths", "0.5", "--per-cell", "1", "--max-new-tokens", "3", "--output", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert "| needle (all) |" in printed and "| single |" in printed
    data = json.loads(out.with_suffix(".json").read_text())
    results = data["results"]
    assert len(results) == 2 * (4 + 1)  # 4 single-frame + 1 needle question, each dense and sparse
    needle = [r for r in results if r["suite"] == "needle"]
    dense = next(r for r in needle if r["mode"] == "dense")
    sparse = next(r for r in needle if r["mode"] == "sparse")
    assert dense["density"] is None and dense["tokens"] > 512  # 64 frames at 112x112: 32 x 16 visual tokens
    assert 0 < sparse["density"] <= 1  # long enough for UniSparse's 128-token blocks
    assert data["config"]["min_seq_len"] == 0  # the sparse path although the prompt is below 32768 tokens
    rows = {r["group"]: r for r in data["summary"]}
    assert rows["all"]["n"] == 5 and "needle T=64 depth=50%" in rows
    assert out.with_suffix(".csv").read_text().count("\n") == 11


def test_summary_ratio_and_density():
    from videoqa_training.evaluate import Result

    def r(mode, correct, density=None):
        return Result("needle", "needle_digit", 0, False, 64, 0.5, mode, "", "1", correct, density, 600, 0.1)

    rows = {x["group"]: x for x in summarise([r("dense", True), r("dense", True), r("sparse", True, 0.4),
                                               r("sparse", False, 0.6)])}
    assert rows["all"]["dense_acc"] == 1.0 and rows["all"]["sparse_acc"] == 0.5
    assert rows["all"]["sparse_over_dense"] == 0.5 and rows["all"]["mean_density"] == pytest.approx(0.5)
    assert "video_acc" not in rows["all"]
    # video-aware selection reported beside the plain one, with its own density
    rows = summarise([r("dense", True), r("dense", True), r("sparse", True, 0.4), r("sparse", False, 0.6),
                      r("video", True, 0.3), r("video", True, 0.2)])
    row = {x["group"]: x for x in rows}["all"]
    assert row["video_acc"] == 1.0 and row["video_over_dense"] == 1.0 and row["video_density"] == pytest.approx(0.25)
    from videoqa_training.evaluate import format_table

    table = format_table(rows)
    assert "video-aware acc" in table.splitlines()[0] and "| 100.0% | 1.000 | 0.250 |" in table


def test_training_commands_show_help():
    for module in ("videoqa_training.training", "videoqa_training.evaluate"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, cwd=ROOT,
                              text=True, timeout=120)
        assert done.returncode == 0 and "usage" in done.stdout
