"""Held-out accuracy on synthetic video questions (single-frame, and needles at 10/50/90% depth of
64-256 frames), dense and with UniSparse's default config (min_seq_len=0: the sparse path at any
length, although production runs dense below 12,288 tokens): accuracy, sparse/dense ratio, mean density.

    python scripts/eval_default_model.py --output benchmarks/default-model-eval
    python scripts/eval_default_model.py --model Qwen/Qwen2-VL-2B-Instruct --device cuda

See ``videoqa/default/evaluate.py``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from videoqa.default.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
