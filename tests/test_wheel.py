"""A wheel built from the project (not an editable install) carries the default model and the sample
videos as package data, and answers a sample question with that model from outside the checkout.

Only the project's own wheel is new: its dependencies are the test environment's, and it is
built without network access (``setuptools`` and ``wheel`` come with the ``test`` extra)."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "unisparse", "videoqa", "videoqa_training")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:  # a copy, so that building leaves the checkout untouched
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("*.whl")
    return whl


def test_the_wheel_holds_the_assets_and_no_research(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("videoqa/assets/default_model/vision.safetensors", "videoqa/assets/default_model/config.json",
                  "videoqa/assets/default_model/tokenizer.json", "videoqa/assets/samples/manifest.json",
                  "videoqa/assets/samples/shapes.mp4", "unisparse/kernels/block_sparse.py", "videoqa/cli/main.py"):
        assert asset in names, asset
    assert not [n for n in names if n.startswith(("benchmarks/", "experiments/", "scripts/", "tests/", "data/"))]


def test_an_installed_wheel_answers_a_sample_question_with_the_default_model(wheel, tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                           "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    code = f"""
import json, videoqa
from videoqa import answer
from videoqa.assets import SAMPLES_DIR
from videoqa.demo.samples import suggestion
assert videoqa.__file__.startswith({str(site)!r}), videoqa.__file__
question, options = suggestion("shapes.mp4")
a = answer(SAMPLES_DIR / "shapes.mp4", question, options, sparse=False, max_new_tokens=4, device="cpu")
print(json.dumps({{"model": a.model, "random": a.random_model, "letter": a.letter, "text": a.text}}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("VIDEOQA_MODEL", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not result["random"] and result["model"].startswith(str(site)), result
    assert result["model"].endswith(os.path.join("videoqa", "assets", "default_model"))
    assert result["letter"] in ("A", "B", "C", "D"), result  # an option was read from the model's text
