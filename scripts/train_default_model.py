"""Train the embedded default model's vision tower (SmolLM2-135M-Instruct frozen) on synthetic videos.

    python scripts/train_default_model.py --checkpoint-dir out/default-ckpt --time-limit-s 540 --resume \
        --export data/models/default

See ``docs/default-model.md`` for the run plan and ``videoqa/default/training.py`` for the details.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from videoqa.default.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
