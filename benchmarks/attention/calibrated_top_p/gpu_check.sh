#!/usr/bin/env bash
# Calibrated Top-P on the lent GPU, in one device call (run from the repository root; $OUT comes back):
# the calibration and video-aware tests on CUDA (SKIP_TESTS=1: none; TESTS_K: a pytest -k filter), the
# profile of calibrated selection, then the benchmark at the given lengths (default 32K) with cuDNN timed beside it.
#   bash benchmarks/attention/calibrated_top_p/gpu_check.sh [LENGTH ...]
set -uo pipefail
OUT="${OUT:-$(pwd)/out/results}"; mkdir -p "$OUT"
lengths=("${@:-32768}")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"
[ "${SKIP_TESTS:-0}" = 1 ] || timeout "${TEST_LIMIT:-150}" python3 -m pytest -q tests/test_calibration.py \
    "tests/test_gpu.py::test_calibrated_selection_on_video_shaped_attention" tests/test_reordered.py ${TESTS_K:+-k "$TESTS_K"} \
    2>&1 | tail -15 | tee "$OUT/pytest_calibration.log"
# where calibrated selection spends its time (stages, exact-mass tilings, kernel tables): PROFILE=0 skips it
[ "${PROFILE:-1}" = 0 ] || timeout "${PROFILE_LIMIT:-120}" env PYTHONPATH="$(pwd)" python3 benchmarks/attention/profile_calibrated_selection.py \
    --length "${lengths[0]}" --output "$OUT/profile_$((lengths[0] / 1024))k" 2>&1 | grep -v '^{' | head -5
tag=""; for l in "${lengths[@]}"; do tag+="$((l / 1024))k_"; done; tag=${tag%_}
cd benchmarks/attention && timeout "${BENCH_LIMIT:-300}" env PYTHONPATH=../.. python3 calibrated_top_p.py --lengths "${lengths[@]}" \
    --device cuda --calibration-blocks 16 \
    --families ${FAMILIES:-video_mixed video_grid video_heldout grid_400 structured mixed_144} --rep 30 --per-head --output "$OUT/gpu_$tag" 2>&1 | tee "$OUT/gpu_$tag.log" | grep -v '^{'
