#!/usr/bin/env bash
# Set everything up (see setup_env.sh) and run the main job (scripts/main_job.py: a question about a
# sample video, dense and UniSparse, then the web demo; --no-demo stops after the answers).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec python scripts/main_job.py "$@"
