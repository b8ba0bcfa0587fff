"""The web demo's entry at the repository root: ``python demo/app.py [--host H] [--port N] [--model M]``.

The demo itself lives in :mod:`videoqa.demo` (installed with the package, so ``videoqa demo`` works
anywhere); this file only re-exports :func:`build_app` and :func:`launch` for those who look for the
demo here, and runs the same command line as ``videoqa demo`` when executed.
"""

import sys

from videoqa.demo.ui import build_app, launch

__all__ = ["build_app", "launch"]

if __name__ == "__main__":
    from videoqa.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
