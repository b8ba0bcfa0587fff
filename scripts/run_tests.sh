#!/usr/bin/env bash
# Set everything up (see setup_env.sh) and run the test suite. Extra arguments go to pytest.
# Without a CUDA GPU the Triton kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec python -m pytest "$@"
