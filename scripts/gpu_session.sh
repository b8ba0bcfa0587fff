#!/usr/bin/env bash
# Everything a GPU session checks and measures, in one call of the device tool (its machine has
# torch, triton and transformers; this repo is the working directory; results go to $OUT):
#   1. the GPU test suite (bf16 equivalence up to 32K) and the CPU suite's kernel tests on CUDA;
#   2. the attention benchmark at head dims 128 and 64.
# Usage (device tool): bash scripts/gpu_session.sh [bench lengths...]
set -uo pipefail
OUT="${OUT:-$(pwd)/out}"
mkdir -p "$OUT"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LENGTHS=("${@:-8192 16384 32768 65536 131072}")
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
timeout 300 python3 -m pytest -q -rf --tb=short -p no:cacheprovider -o addopts="" -m gpu -s tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log" | grep -E "^(FAILED|E  |L=)|passed|failed"
timeout 150 python3 -m pytest -q -rf --tb=short -p no:cacheprovider -o addopts="" tests/test_kernels.py tests/test_api.py 2>&1 | tee "$OUT/kernel_tests_cuda.log" | tail -5
python3 benchmarks/attention/bench_attention.py --lengths ${LENGTHS[*]} --head-dim 128 --output "$OUT/attention_d128" 2>&1 | tee "$OUT/bench_d128.log" | tail -60
python3 benchmarks/attention/bench_attention.py --lengths 8192 32768 --head-dim 64 --output "$OUT/attention_d64" 2>&1 | tee "$OUT/bench_d64.log" | tail -30
