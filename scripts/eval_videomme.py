#!/usr/bin/env python3
"""Video-MME evaluation (the same as ``videoqa eval``): see videoqa/videomme_cli.py.

    python scripts/eval_videomme.py --dataset /data/Video-MME --output runs/videomme --mode both
    torchrun --nproc-per-node 8 scripts/eval_videomme.py --dataset /data/Video-MME --output runs/videomme
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from videoqa.videomme_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
