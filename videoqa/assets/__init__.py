"""Files the application ships as package data, found beside this module (so a wheel has them too).

- ``default_model/``: the embedded default model, a compact export (:mod:`videoqa.models.compact`).
- ``samples/``: small sample videos and their ``manifest.json`` of known facts
  (``videoqa_training/sample_videos.py`` writes them), offered by the demo and the main job.
"""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = ASSETS_DIR / "default_model"
SAMPLES_DIR = ASSETS_DIR / "samples"
