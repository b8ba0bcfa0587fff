#!/usr/bin/env bash
# Video-MME across GPUs, in one scripted call (issue "Video-MME across GPUs for real"): the same
# `videoqa eval` command in one process and under `torchrun --nproc-per-node N` (NCCL on GPUs,
# gloo on a CPU), then an N-process run with rank 1 killed after a few answers and rerun; the
# merged answers and reports compared with the one-process run, apart from timings.
#   bash benchmarks/multigpu/run_eval.sh DATASET WORKDIR [N]
# DATASET: a Video-MME-layout folder (benchmarks/multigpu/make_dataset.py writes one: 12 videos, 36
# questions). Environment: ARCH (7b, the default: Qwen2-VL-7B's shapes with random weights, saved
# to WORKDIR/model first; tiny: a CPU smoke test), EVAL_ARGS (more `videoqa eval` arguments),
# KILL_AFTER (answers rank 1 journals before it is killed, default 4). Writes WORKDIR/multigpu.md.
set -uo pipefail
DATA=$1; WORK=$2; N=${3:-2}
ARCH=${ARCH:-7b}; KILL_AFTER=${KILL_AFTER:-4}
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1
now() { date +%s.%N; }
elapsed() { awk "BEGIN{printf \"%.1f\", $2 - $1}"; }
port() { python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
lines() { cat "$1"/answers.rank*.jsonl 2>/dev/null | grep -c . ; }

python3 benchmarks/sessions/bench_sessions.py --arch "$ARCH" --save-model "$WORK/model" | tail -1 || exit 1
# shellcheck disable=SC2206
COMMON=(--dataset "$DATA" --model "$WORK/model" --mode both --fps 2 --max-frames 128 --no-progress ${EVAL_ARGS:-})
torchrun_eval() { python3 -m torch.distributed.run --nnodes 1 --nproc-per-node "$N" --master-addr 127.0.0.1 \
    --master-port "$(port)" -m videoqa eval "${COMMON[@]}" --output "$1"; }

t0=$(now); python3 -m videoqa eval "${COMMON[@]}" --output "$WORK/one" > "$WORK/one.log" 2>&1 || { tail -20 "$WORK/one.log"; exit 1; }
t1=$(now); torchrun_eval "$WORK/two" > "$WORK/two.log" 2>&1 || { tail -30 "$WORK/two.log"; exit 1; }
t2=$(now)
echo "one process: $(elapsed "$t0" "$t1") s; $N processes: $(elapsed "$t1" "$t2") s"

# a crash: rank 1 killed after KILL_AFTER answers (torchrun then stops the others), then the same command again
torchrun_eval "$WORK/killed" > "$WORK/killed.log" 2>&1 &
run=$!
python3 benchmarks/multigpu/kill_rank.py --output "$WORK/killed" --rank 1 --after "$KILL_AFTER"
wait $run; status=$?
before=$(lines "$WORK/killed")
t3=$(now); torchrun_eval "$WORK/killed" > "$WORK/rerun.log" 2>&1 || { tail -30 "$WORK/rerun.log"; exit 1; }
t4=$(now)
after=$(lines "$WORK/killed")
note="killed: torchrun exited $status with $before answers journaled; the rerun ($(elapsed "$t3" "$t4") s) added $((after - before)), $after in all."
echo "$note"

python3 benchmarks/multigpu/compare_runs.py --reference "$WORK/one" --runs "$WORK/two" "$WORK/killed" \
    --wall "one=$(elapsed "$t0" "$t1")" "two=$(elapsed "$t1" "$t2")" \
    --title "Video-MME: $N processes against one ($(python3 -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU, gloo")'), ARCH=$ARCH)" \
    --notes "$note Dataset: $DATA. Command: \`bash benchmarks/multigpu/run_eval.sh $*\`" --output "$WORK/multigpu.md"
