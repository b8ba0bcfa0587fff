#!/usr/bin/env bash
# Set everything up (see setup_env.sh) and run the main job. Extra arguments go to it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec python scripts/quickstart.py "$@"
