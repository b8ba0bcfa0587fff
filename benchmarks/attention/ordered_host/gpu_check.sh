#!/usr/bin/env bash
# The reordered attention without host syncs, in one device call (run from the repository root; $OUT comes back):
# its GPU tests, then the attention profile and the families benchmark with the code before the change
# (BEFORE: a copy of the old unisparse/ tree's parent, e.g. out/before) and after it, side by side on one GPU.
#   BEFORE=out/before bash benchmarks/attention/ordered_host/gpu_check.sh
set -uo pipefail
OUT="${OUT:-$(pwd)/out/results}"; mkdir -p "$OUT"
root=$(pwd)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"
[ "${SKIP_TESTS:-0}" = 1 ] || timeout "${TEST_LIMIT:-150}" python3 -m pytest -q tests/test_kept_lists.py \
    tests/test_gpu.py -k "ordered or kept or reordered or video" 2>&1 | tail -8 | tee "$OUT/pytest.log"
cd benchmarks/attention
for tag in ${TAGS:-before after}; do
    src=$root; [ "$tag" = before ] && src=$root/${BEFORE:-out/before}
    timeout "${PROFILE_LIMIT:-90}" env PYTHONPATH="$src" python3 profile_video_attention.py --seq-len 32768 \
        --families video_grid video_heldout --calls 3 --output "$OUT/profile_attn_${tag}_32k" 2>&1 | grep -v '^{' | head -8
    timeout "${BENCH_LIMIT:-150}" env PYTHONPATH="$src" python3 bench_families.py --lengths ${LENGTHS:-32768 65536} \
        --families video_mixed video_grid video_heldout --video-aware --rep 30 --output "$OUT/families_${tag}" \
        > "$OUT/families_${tag}.log" 2>&1
    grep -v '^{' "$OUT/families_${tag}.log" | tail -12
done
