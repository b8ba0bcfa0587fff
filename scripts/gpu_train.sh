#!/usr/bin/env bash
# Default-model training on the lent GPU machine (device tool), in calls of under 10 minutes.
# The machine is bare and keeps git-ignored paths (out/) between calls while it stays warm.
#   bash scripts/gpu_train.sh setup                 # join the two carried GGUF parts, install wheels
#   bash scripts/gpu_train.sh sweep SECONDS NAME="ARGS" [NAME="ARGS" ...]   # runs in parallel, one GPU
#   bash scripts/gpu_train.sh continue SECONDS [NAME ...]  # resume runs side by side (default: best last eval)
#   bash scripts/gpu_train.sh stages SECONDS        # stage A (text LoRA) and stage 0 (grounding) side by side
#   bash scripts/gpu_train.sh ground SECONDS [ARGS] # stage 0 alone (e.g. --kinds digit,digit,color,shape,count --digit-only --contrastive 1), then the digit probe
#   bash scripts/gpu_train.sh stage1 SECONDS        # stage 1 from both, two learning-rate settings (S, T) side by side
#   bash scripts/gpu_train.sh from-export SECONDS DIR [NAME [ARGS]]   # stage 1 continued from a compact export (NAME: W)
#   bash scripts/gpu_train.sh evaluate NAME [ARGS]  # held-out suites on NAME's export (EVAL_TAG: output suffix); model tarball to $OUT
#   bash scripts/gpu_train.sh train-evaluate SECONDS DIR NAME [ARGS]   # from-export, then every held-out suite, in one call:
#                                                   # $OUT gets NAME.jsonl, NAME-model.tgz and NAME-evals.tar
# Each run: checkpoints in out/runs/NAME/ckpt, a snapshot export in out/runs/NAME/model, its log
# copied to $OUT/NAME.jsonl. docs/default-model.md has the whole procedure.
set -uo pipefail
OUT="${OUT:-$(pwd)/out/results}"
mkdir -p "$OUT" out/runs
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
[ -d /tmp/site ] && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
[ -f out/smollm2.gguf ] && export VIDEOQA_SMOLLM2_GGUF="${VIDEOQA_SMOLLM2_GGUF:-$(pwd)/out/smollm2.gguf}"
LORA=(--lora-rank 16 --lora-targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj)
# stage 1's settings shared by `stage1` and `from-export`: float32 LM (both bf16 runs went NaN), the task mix
STAGE1="--lm-dtype float32 --visual-scale-weight 0.1 --group-weights caption=0.15,single=0.4,video=0.15,needle=0.3"
COMMON=(--steps 3000 --eval-every 300 --eval-examples 60 --checkpoint-every 300 --export-on-stop --log-every 20)

# held_out NAME OUTPUT_DIR [ARGS]: the held-out suites on NAME's export (EVAL_TAG: output suffix), the table printed
held_out() {
    local name=$1 dir=$2; shift 2
    python3 -m videoqa_training.evaluate --model "out/runs/$name/model" --device "${EVAL_DEVICE:-cuda}" \
        --output "$dir/eval-$name${EVAL_TAG:-}" --quiet "$@" 2>&1 | grep -v Convert | tail -30
}

case "${1:-}" in
setup)
    cat out/carry/smollm2.gguf.part0* > out/smollm2.gguf
    echo "$(cat out/carry/smollm2.gguf.sha256)  out/smollm2.gguf" | sha256sum -c || exit 1
    # transformers as where the model is served (M-RoPE positions after a video differ between versions)
    pip install --quiet --no-deps --target /tmp/site out/carry/wheels/*.whl 2>&1 | tail -2
    if ! PYTHONPATH=/tmp/site python3 -c "import transformers, gguf; print('transformers', transformers.__version__)"; then
        echo "carried transformers does not import here; using the machine's own"; rm -rf /tmp/site
        pip install --quiet --no-deps --target /tmp/site out/carry/wheels/gguf-*.whl
    fi
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    ;;
sweep)
    seconds=$2; shift 2
    for spec in "$@"; do
        name=${spec%%=*}; args=${spec#*=}
        mkdir -p "out/runs/$name"
        # shellcheck disable=SC2086
        python3 -m videoqa_training.training "${COMMON[@]}" $args --checkpoint-dir "out/runs/$name/ckpt" --resume \
            --time-limit-s "$seconds" --export "out/runs/$name/model" > "out/runs/$name/stdout.log" 2>&1 &
        echo "$args" > "out/runs/$name/args"
    done
    wait
    for spec in "$@"; do
        name=${spec%%=*}
        cp "out/runs/$name/ckpt/log.jsonl" "$OUT/$name.jsonl" 2>/dev/null
        # the trainable weights travel back (a cold machine loses out/): resume from them with --init-*
        latest=$(cat "out/runs/$name/ckpt/latest" 2>/dev/null) && \
            split -b 15M "out/runs/$name/ckpt/$latest/trainable.pt" "$OUT/$name-trainable.pt.part"
        echo "== $name: $(cat out/runs/$name/args)"; grep -v Convert "out/runs/$name/stdout.log" | grep -E '"eval"|exported|stopped|Error|error' | cut -c1-400 | tail -6
        grep '"train"' "out/runs/$name/stdout.log" | tail -1 | cut -c1-300
    done
    status=0  # the status: every run left a checkpoint (a grep above that matched nothing must not decide it)
    for spec in "$@"; do [ -f "out/runs/${spec%%=*}/ckpt/latest" ] || { echo "${spec%%=*} left no checkpoint"; status=1; }; done
    exit $status
    ;;
continue)
    # Resume runs from their checkpoints on the same machine, side by side (one run: 12 data workers).
    seconds=$2; shift 2; names=("$@")
    if [ ${#names[@]} -eq 0 ]; then
        names=("$(python3 - <<'PY'
import glob, json, os
best = None
for log in glob.glob("out/runs/*/ckpt/log.jsonl"):
    evals = [json.loads(l) for l in open(log) if '"eval"' in l]
    score = evals[-1]["accuracy"] if evals else -1.0
    if best is None or score > best[0]:
        best = (score, log.split(os.sep)[2])
print(best[1] if best else "")
PY
)")
    fi
    [ -n "${names[0]}" ] || { echo "no run to continue"; exit 1; }
    workers=$(( 12 / ${#names[@]} ))
    for name in "${names[@]}"; do
        echo "continuing $name: $(cat out/runs/$name/args)"
        # shellcheck disable=SC2046
        python3 -m videoqa_training.training "${COMMON[@]}" $(cat "out/runs/$name/args") --workers "$workers" \
            --checkpoint-dir "out/runs/$name/ckpt" --resume --time-limit-s "$seconds" --export "out/runs/$name/model" \
            > "out/runs/$name/stdout-continued.log" 2>&1 &
    done
    wait
    status=0  # the status: every run has its log and its export tarball
    for name in "${names[@]}"; do
        cp "out/runs/$name/ckpt/log.jsonl" "$OUT/$name.jsonl" || status=1
        echo "== $name"; grep -v Convert "out/runs/$name/stdout-continued.log" | grep -E '"eval"|exported|stopped|Error|error|resumed' | cut -c1-400 | tail -8
        tar czf "$OUT/$name-model.tgz" -C "out/runs/$name" model || status=1
    done
    ls -la "$OUT"
    exit $status
    ;;
stages)
    # Stage A: SmolLM2 learns to answer from described pictures (LoRA only). Stage 0: the tower learns
    # to write word embeddings (no LM forward). Independent, so they share the GPU; stage 1 starts
    # from both (--init-lora out/textA/<latest>/trainable.pt --init-vision out/ground.pt).
    seconds=$2
    python3 -m videoqa_training.training --text-only "${LORA[@]}" --lora-lr 1e-3 --steps 1500 --warmup 50 \
        --batch-size 32 --eval-every 500 --eval-examples 48 --checkpoint-dir out/textA --lm-dtype float32 \
        --workers 2 --log-every 50 --time-limit-s "$seconds" > out/textA.log 2>&1 &
    python3 -m videoqa_training.grounding --steps 2000 --batch-size 16 --workers 12 --time-limit-s "$((seconds - 60))" \
        --output out/ground.pt > out/ground.log 2>&1 &
    wait
    cp out/textA/log.jsonl "$OUT/textA.jsonl"; grep '"ground' out/ground.log > "$OUT/ground.jsonl"
    cp out/ground.pt "$OUT/ground.pt"
    grep -E '"eval"|stopped|Error' out/textA.log | cut -c1-400 | tail -4; tail -2 out/ground.log | cut -c1-300
    grep -iE 'error|Traceback' out/textA.log out/ground.log | head -5
    [ -f out/ground.pt ] && [ -f out/textA/latest ]  # the status: both stages left their output
    ;;
ground)
    seconds=$2; shift 2
    python3 -m videoqa_training.grounding --steps 10000 --batch-size 16 --workers 14 --time-limit-s "$seconds" \
        --output out/ground.pt "$@" > out/ground.log 2>&1
    grep '"ground' out/ground.log > "$OUT/ground.jsonl"; tail -2 out/ground.log | cut -c1-300
    python3 -m experiments.default_model.probe_tower --tower out/ground.pt --threads 8 2>&1 | grep heldout | tee "$OUT/probe.jsonl"
    [ -f out/ground.pt ]
    ;;
stage1)
    # Joint answer training from stages A and 0.
    # A resumed call must pass the same arguments, which this preset guarantees.
    seconds=$2
    base="--workers 6 ${LORA[*]} --init-lora out/textA/$(cat out/textA/latest)/trainable.pt --init-vision out/ground.pt"
    base="$base $STAGE1 --steps 2000"
    bash "$0" sweep "$seconds" S="$base --lr 3e-4 --lora-lr 5e-4" T="$base --lr 1e-3 --lora-lr 1e-3"
    ;;
from-export)
    # A fresh machine has lost every checkpoint: start tower and LoRA from an export that came back
    # (e.g. videoqa/assets/default_model) with S's settings; later calls resume it with `continue SECONDS NAME`.
    # Extra arguments after NAME are added (and win), e.g. --init-vision out/ground.pt for a new tower.
    seconds=$2; src=$3; name=${4:-W}; shift $(( $# < 4 ? $# : 4 ))
    base="--workers 12 ${LORA[*]} --init-from $src $STAGE1 --steps 3000 --warmup 50 --lr 3e-4 --lora-lr 5e-4 $*"
    bash "$0" sweep "$seconds" "$name=$base"
    ;;
evaluate)
    name=$2; shift 2
    # EVAL_TAG names a second evaluation of the same run (e.g. EVAL_TAG=-224 ... --size 224x224 --suites needle)
    held_out "$name" "$OUT" "$@"
    tar czf - -C "out/runs/$name" model | split -b 15M - "$OUT/$name-model.tgz.part" && ls -la "$OUT"
    ;;
train-evaluate)
    # The whole of a training call once the GGUF is set up: train from an export, then the held-out suites
    # (EVAL_SUITES, and the 224x224 needles unless EVAL_224=0) side by side, packed into three files that
    # come back from the device (8 files of 16 MiB at most). The evaluations inherit this script's environment
    # (VIDEOQA_SMOLLM2_GGUF): a bare `python3 -m videoqa_training.evaluate` there finds no language model.
    seconds=$2; src=$3; name=$4; shift 4
    bash "$0" from-export "$seconds" "$src" "$name" "$@"; status=$?
    rm -f "$OUT/$name-trainable.pt.part"*
    [ -f "out/runs/$name/model/videoqa_default.json" ] || { echo "$name left no export"; exit 1; }
    tar czf "$OUT/$name-model.tgz" -C "out/runs/$name" model
    ev="out/runs/$name/evals"; mkdir -p "$ev"
    # shellcheck disable=SC2086
    held_out "$name" "$ev" --suites ${EVAL_SUITES:-single needle clip still crowd where does video} > "$ev/eval.log" 2>&1 &
    if [ "${EVAL_224:-1}" != 0 ]; then
        EVAL_TAG=-224x16 held_out "$name" "$ev" --size 224x224 --suites needle --per-cell 16 > "$ev/eval224.log" 2>&1 &
    fi
    wait
    tar cf "$OUT/$name-evals.tar" -C "out/runs/$name" evals
    grep -hE '^\| [a-z]' "$ev"/eval*.log | grep -vE 'needle T=|^\| --' || { echo "no evaluation table:"; tail -5 "$ev"/eval*.log; status=1; }
    exit $status
    ;;
*)
    sed -n 2,13p "$0"; exit 2 ;;
esac
