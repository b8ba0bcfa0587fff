"""scripts/gpu_train.sh, the driver of the GPU training calls, on tiny CPU runs.

Why: a broken subcommand is found only on the lent GPU machine otherwise, where each call costs
minutes of a 30-minute session. This runs `sweep` (two runs side by side, stopped by the time
limit at once) and then `continue` of both, which must resume each from its checkpoint, finish
it, and leave its log and export tarball in $OUT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = "--tiny --steps 3 --batch-size 2 --token-budget 4096 --device cpu --workers 0 --eval-examples 2"


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(cwd / "res"), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "scripts/gpu_train.sh", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_sweep_then_continue_resumes_each_run_to_the_end(tmp_path):
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")  # the script and train_default_model.py run from here
    first = _run(tmp_path, "sweep", "1", f"A={TINY}", f"B={TINY} --seed 1")
    assert first.returncode == 0, first.stdout + first.stderr
    for name in "AB":
        stop = [e for e in _events(tmp_path / "out/runs" / name / "ckpt/log.jsonl") if e["event"].startswith("stopped")]
        assert stop and stop[-1]["step"] == 0  # the 1-second limit stopped it before its first step

    second = _run(tmp_path, "continue", "120", "A", "B")
    assert second.returncode == 0, second.stdout + second.stderr
    for name in "AB":
        events = _events(tmp_path / "res" / f"{name}.jsonl")  # the log, continued across both calls
        assert events[0]["event"].startswith("stopped") and events[0]["step"] == 0
        assert [e["step"] for e in events if e["event"] == "train"] == [1, 3]  # steps 1-3 ran once, after the resume
        assert events[-1]["event"] == "exported"
        assert f'"resumed", "step": 0, "from": "out/runs/{name}/ckpt/step-0000000"' in \
            (tmp_path / "out/runs" / name / "stdout-continued.log").read_text()
        assert (tmp_path / "out/runs" / name / "model" / "videoqa_default.json").is_file()
        assert (tmp_path / "res" / f"{name}-model.tgz").stat().st_size > 0
    assert "continuing A" in second.stdout and "continuing B" in second.stdout

    usage = _run(tmp_path, "no-such-subcommand")
    assert usage.returncode == 2 and "continue SECONDS" in usage.stdout


def test_train_evaluate_trains_from_an_export_packs_three_files_and_reports_a_failed_evaluation(tmp_path):
    """The tiny stand-in's export cannot be loaded by `videoqa_training.evaluate` (its language model is not
    rebuilt from a marker), so here the evaluation fails: the call must still pack the run's log, export and
    evaluation logs, print why, and exit 1. The evaluation itself runs on the GPU machine."""
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    lora = "--lora-rank 16 --lora-targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    base = _run(tmp_path, "sweep", "120", f"A={TINY} {lora}")
    assert base.returncode == 0, base.stdout + base.stderr
    env = {**os.environ, "EVAL_DEVICE": "cpu", "EVAL_SUITES": "single", "EVAL_224": "0", "OUT": str(tmp_path / "res2"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(["bash", "scripts/gpu_train.sh", "train-evaluate", "120", "out/runs/A/model", "H", *TINY.split()],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    res = tmp_path / "res2"
    assert sorted(p.name for p in res.iterdir()) == ["H-evals.tar", "H-model.tgz", "H.jsonl"]
    assert _events(res / "H.jsonl")[-1]["event"] == "exported"
    assert [e["step"] for e in _events(res / "H.jsonl") if e["event"] == "train"] == [1, 3]
    import tarfile

    with tarfile.open(res / "H-evals.tar") as tar:
        names = tar.getnames()
        log = tar.extractfile("evals/eval.log").read().decode()
    assert "cannot be rebuilt automatically" in log and not any("model.tgz" in n for n in names)
    with tarfile.open(res / "H-model.tgz") as tar:
        assert "model/videoqa_default.json" in tar.getnames()
    assert "no evaluation table" in run.stdout
