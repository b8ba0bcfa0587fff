#!/usr/bin/env bash
# What a GPU session checks and measures, in one call of the device tool (its machine has torch,
# triton and transformers; this repo is the working directory; results go to $OUT). Steps, in the
# order given:
#   info                      GPU, driver and library versions
#   tests [N]                 the GPU suite N times (default 3) with fresh seeds, then the CPU suite's
#                             kernel and API tests on CUDA
#   breakeven                 the break-even table (benchmarks/breakeven/measure_breakeven.py), merged into
#                             unisparse/breakeven.json here so that later steps of this call use it
#   families [CAPTURED.pt]    UniSparse end to end by input family (benchmarks/attention/bench_families.py)
#   attention                 the kernel/selection benchmark at d=128 and d=64 (bench_attention.py)
# Usage (device tool): bash scripts/gpu_session.sh info breakeven families .kexp_data/default_qk.pt tests 3
set -uo pipefail
OUT="${OUT:-$(pwd)/out}"
mkdir -p "$OUT"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
while [ $# -gt 0 ]; do
  step="$1"; shift
  case "$step" in
    info)
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
      python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt" ;;
    tests)
      n=3; if [[ "${1:-}" =~ ^[0-9]+$ ]]; then n="$1"; shift; fi
      for i in $(seq 1 "$n"); do
        timeout 420 python3 -m pytest -q -rf --tb=short -p no:cacheprovider -o addopts="" -m gpu -s tests/test_gpu.py 2>&1 \
          | tee "$OUT/gpu_tests_run$i.log" | grep -E "^(FAILED|E  )|passed|failed"
      done
      timeout 200 python3 -m pytest -q -rf --tb=short -p no:cacheprovider -o addopts="" tests/test_kernels.py tests/test_api.py \
        tests/test_breakeven.py 2>&1 | tee "$OUT/kernel_tests_cuda.log" | tail -3 ;;
    breakeven)
      python3 benchmarks/breakeven/measure_breakeven.py --output "$OUT/breakeven" --merge unisparse/breakeven.json 2>&1 \
        | tee "$OUT/breakeven.log" | tail -12
      [ -f "$OUT/breakeven.json" ] && cp "$OUT/breakeven.json" unisparse/breakeven.json ;;
    families)
      cap=(); if [[ "${1:-}" == *.pt ]]; then cap=(--captured "$1"); shift; fi
      python3 benchmarks/attention/bench_families.py "${cap[@]}" --output "$OUT/families" 2>&1 \
        | tee "$OUT/families.log" | grep -E "^\| |x cuDNN" | tail -30 ;;
    attention)
      python3 benchmarks/attention/bench_attention.py --lengths 8192 16384 32768 65536 131072 --head-dim 128 \
        --output "$OUT/attention_d128" 2>&1 | tee "$OUT/bench_d128.log" | tail -40
      python3 benchmarks/attention/bench_attention.py --lengths 8192 32768 --head-dim 64 --output "$OUT/attention_d64" \
        2>&1 | tee "$OUT/bench_d64.log" | tail -20 ;;
    *) echo "unknown step: $step" >&2; exit 2 ;;
  esac
done
