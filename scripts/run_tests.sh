#!/usr/bin/env bash
# Set everything up (see setup_env.sh) and run the test suite. Extra arguments go to pytest.
# Without a CUDA GPU the Triton kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1).
# The web demo's browser test needs Chromium: setup_browser.sh installs it with apt-get if missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
bash "$ROOT/scripts/setup_browser.sh"  # Chromium for the demo's browser test (apt-get when missing)
cd "$ROOT"
exec python -m pytest "$@"
