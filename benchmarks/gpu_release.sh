#!/usr/bin/env bash
# The GPU release plan (benchmarks/GPU_RELEASE.md): each stage is one device call of at most 10 minutes.
#
#   benchmarks/gpu_release.sh prepare            # here, before the lease: fills .gpu/ (ignored) for `carry`
#   benchmarks/gpu_release.sh train              # on the GPU: probe the step and throughput, train, measure, install
#   benchmarks/gpu_release.sh bench              # on the GPU: benchmarks/speed.py --device cuda + bf16 check
#   benchmarks/gpu_release.sh all                # train, then bench, in one device call (no 30 s race between)
#
# What comes back (at most 8 files return from a device call): OUT/weights/NAME.safetensors, its manifest.json and
# OUT/logs.tar, every log, table and picture of the call, re-packed after each step so a call stopped at its time
# limit still brings back what it did.
#
# Every knob is an environment variable, so the same script is rehearsed on the CPU at tiny scale:
#   DEVICE=cpu TINY=1 PROBE=5 TRAIN=20 WORKERS=1 VAL_FRACTION=0.0125 OUT=/tmp/rehearsal benchmarks/gpu_release.sh train
START=$(date +%s)
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:?usage: $0 prepare|train|bench|all}
case $STAGE in prepare|train|bench|all) ;; *) echo "unknown stage $STAGE" >&2; exit 2 ;; esac
GPU=.gpu                                    # carried folder: pristine photos, labels, wheels
OUT=${OUT:-/tmp/gsn-gpu-out}                # the device tool's $OUT: what comes back
DEVICE=${DEVICE:-cuda}
NAME=${NAME:-gsn-w1-synthkadid-gpu}         # name the card: gsn-w1-synthkadid-h200, ...
INIT=${INIT:-}                              # train on from these weights (a released name or a file), if set
DRAW_OFFSET=${DRAW_OFFSET:-0}               # with INIT: epochs of pairs the earlier pieces drew (new pairs)
WIDTH=${WIDTH:-1}
TINY=${TINY:-0}
STEP_PROBE=${STEP_PROBE:-5}                 # seconds per candidate of the training-step probe (train_step.py)
SPEEDUPS=${SPEEDUPS:-auto}                  # fit --speedups: auto = the step probe's choice; '' = eager
PROBE=${PROBE:-20}                          # seconds of the throughput probe (the whole pipeline, chosen speedups)
COMPILE=${COMPILE:-120}                     # seconds added to that probe when the chosen speedups compile
CALL=${CALL:-570}                           # seconds the whole call may take (the device tool stops it at 600)
RESERVE=${RESERVE:-210}                     # seconds kept after training: start-ups, measuring, installing, bench
TRAIN=${TRAIN:-auto}                        # seconds of training: auto = what CALL leaves after probes and RESERVE
WORKERS=${WORKERS:-15}                      # data workers: 16 cores, one left to the training process
BATCH=${BATCH:-32}
LR=${LR:-1e-3}
ANCHOR=${ANCHOR:-0}                         # --anchor-weight: the reference anchor of issue 16 (0: the paper's loss)
ADVERSARIAL=${ADVERSARIAL:-0}               # --adversarial-weight: PGD-attacked pairs of issue 16 ((2+2)× a step)
BENCH=${BENCH:-1}                           # all: 0 ends after installing (give RESERVE's bench time to training)
VAL_FRACTION=${VAL_FRACTION:-0.05}          # 12 of the 239 photographs, 1,500 pairs: the CPU release's split
RUN=${RUN:-/tmp/gsn-gpu-run}
LOG=${LOG:-$RUN-logs}                       # the call's logs and tables, packed into OUT/logs.tar
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$PWD/$GPU/site${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
[[ $STAGE == train || $STAGE == all ]] && rm -rf "$LOG"
mkdir -p "$LOG"
pack() {  # one file for all of LOG: the device call brings back 8 files at most
    tar -C "$LOG" -cf "$OUT/logs.tar.part" . && mv "$OUT/logs.tar.part" "$OUT/logs.tar"
}
[[ $STAGE == prepare ]] || trap pack EXIT
model_flags=(--width "$WIDTH"); [[ $TINY == 1 ]] && model_flags=(--tiny)
init_flags=(); [[ -n $INIT ]] && init_flags=(--init "$INIT" --draw-offset "$DRAW_OFFSET")
# the list names all 239 photographs: the split and the validation pairs stay the same when prepare had to leave
# training photographs behind to fit the call
data_flags=(--dataset synthetic-kadid --pristine "$GPU/pristine" --pristine-list "$GPU/pristine-list.txt"
            --labels "$GPU/KADID-10k.csv" --val-fraction "$VAL_FRACTION" --seed 0 --patch-size 192)

install_wheels() {  # pytorch-msssim, which the device machine lacks, from the carried wheel
    python3 -m pip install -q --no-index --no-deps --upgrade --target "$GPU/site" "$GPU"/whl/*.whl
}

case $STAGE in
prepare)  # here: copy what the device machine lacks into .gpu/ (.gitignore'd), the folder `carry` names
    python3 -c "import gsn_metric.train.synthetic" \
        || { echo "prepare needs the project's environment (README, Install): activate it first" >&2; exit 1; }
    rm -rf "$GPU" && mkdir -p "$GPU/pristine" "$GPU/whl"
    cp ../shared/data/pristine/*.webp "$GPU/pristine/"
    (cd "$GPU/pristine" && ls -1 -- *.webp) > "$GPU/pristine-list.txt"
    cp ../shared/data/labels/KADID-10k.csv "$GPU/"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$GPU/whl" pytorch-msssim==1.0.0
    # what a device call carries: tracked and untracked-not-ignored files, and $GPU; it refuses more than 64 MiB
    tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null \
        | awk '{s += $1} END {print s + 0}')
    limit=$((64 * 1024 * 1024))
    # over the limit: leave training photographs behind (seeded order, never a validation one) until it fits,
    # with 256 KiB to spare; the list keeps the split and the validation pairs as they are with all 239
    python3 benchmarks/thin_pristine.py "$GPU" --val-fraction "$VAL_FRACTION" --room $((limit - 256 * 1024 - tree))
    carried=$(du -sb "$GPU" | cut -f1)
    echo "a call carries $(( (tree + carried) / 1024 )) KiB: working tree $(( tree / 1024 )) KiB + $GPU $(( carried / 1024 )) KiB;" \
         "the limit is $(( limit / 1024 )) KiB ($(( (limit - tree - carried) / 1024 )) KiB left)"
    if (( tree + carried > limit )); then
        echo "too large for a device call: shrink the working tree (GPU_RELEASE.md, 'What travels')" >&2
        exit 1
    fi
    ;;
train|all)
    install_wheels
    python3 - <<'EOF'
import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
                    torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF
    rm -rf "$RUN" && mkdir -p "$RUN"
    # 0. the training step's candidates (fit --speedups), each checked against eager, the fastest chosen; any
    #    failure of the probe itself falls back to eager. --profile: where the eager step's time goes at full
    #    scale (issue 17's table; one profiled step, seconds)
    if [[ $SPEEDUPS == auto ]]; then
        : > "$RUN/speedups.txt"
        if [[ $STEP_PROBE != 0 ]]; then
            python3 benchmarks/train_step.py --device "$DEVICE" "${model_flags[@]}" --batch-size "$BATCH" \
                --patch-size 192 --anchor-weight "$ANCHOR" --profile \
                --seconds "$STEP_PROBE" --choose "$RUN/speedups.txt" \
                --json "$LOG/step_probe.json" 2>&1 | tee "$LOG/step_probe.md" \
                || echo "step probe failed: eager" | tee -a "$LOG/step_probe.md"
        fi
        SPEEDUPS=$(cat "$RUN/speedups.txt")
    fi
    echo "speedups: '${SPEEDUPS}'" | tee -a "$LOG/step_probe.md"
    pack
    # 1. throughput probe: the same pipeline, PROBE seconds once warm (plus COMPILE if compiling), thrown away;
    #    it stops after the steps the step probe's rate says PROBE seconds hold (compiling is cached by then, so
    #    COMPILE is a guard, not a cost); if it fails with speedups, once more without them: a failed speedup
    #    costs this probe, not the lease
    throughput_probe() {
        local limit=$PROBE steps; [[ $SPEEDUPS == *compile* ]] && limit=$((PROBE + COMPILE))
        steps=$(python3 -c "import json, sys; rows = {r[0]: r[1] for r in json.load(open(sys.argv[1]))['probe']}; \
r = rows.get(sys.argv[2] or 'eager', '-'); print(max(12, 6 + int(float(r) * float(sys.argv[3]) / int(sys.argv[4]))))" \
            "$LOG/step_probe.json" "$SPEEDUPS" "$PROBE" "$BATCH" 2>/dev/null) || steps=
        rm -rf "$RUN/probe"
        python3 -m gsn_metric.train fit "${data_flags[@]}" "${model_flags[@]}" --device "$DEVICE" \
            --workers "$WORKERS" --speedups "$SPEEDUPS" --batch-size "$BATCH" --anchor-weight "$ANCHOR" \
            --adversarial-weight "$ADVERSARIAL" --epochs 1 --epoch-length 1000000 --time-limit "$limit" \
            ${steps:+--max-steps "$steps"} --val-every 0 --out "$RUN/probe" 2>&1 | tee -a "$LOG/probe.log"
    }
    if ! throughput_probe; then
        [[ -n $SPEEDUPS ]] || exit 1
        echo "throughput probe failed with --speedups '$SPEEDUPS': again, eager" | tee -a "$LOG/probe.log"
        SPEEDUPS=; throughput_probe
    fi
    # the steady rate (after the first steps: compiling, warming up) and how long it took to reach it
    read -r rate warm < <(python3 -c "import json; r = json.load(open('$RUN/probe/history.json'))[-1]; \
s = r.get('steady', {'pairs_per_s': r['pairs_per_s'], 'after_s': 0}); print(s['pairs_per_s'], s['after_s'])")
    # 2. plan TRAIN seconds of it as one cosine epoch (whole batches), train, measure, install into $OUT/weights
    [[ $TRAIN == auto ]] && TRAIN=$(( CALL - ($(date +%s) - START) - RESERVE )) && (( TRAIN < 30 )) && TRAIN=30
    length=$(python3 -c "print(max(1, int($rate * max($TRAIN - $warm, 10)) // $BATCH) * $BATCH)")
    echo "probe: $rate pairs/s once warm (after ${warm}s) -> epoch of $length pairs for ${TRAIN}s" | tee -a "$LOG/probe.log"
    pack
    python3 -m gsn_metric.train release "${data_flags[@]}" "${model_flags[@]}" --device "$DEVICE" \
        --workers "$WORKERS" --batch-size "$BATCH" --lr "$LR" --lr-schedule cosine --warmup-steps 50 \
        --speedups "$SPEEDUPS" \
        --anchor-weight "$ANCHOR" --adversarial-weight "$ADVERSARIAL" "${init_flags[@]}" --epochs 1 --epoch-length "$length" --val-every 0 --time-limit $((TRAIN + 60)) \
        --out "$RUN/release" --name "$NAME" --weights-dir "$OUT/weights" --must-beat "" 2>&1 | tee "$LOG/release.log" \
        || status=$?
    # the measurements come back even when the gate (beat the --init weights) installed nothing
    cp "$RUN/release/release.json" "$RUN/release/history.json" "$LOG/" || true
    pack
    mkdir -p "$RUN/weights"
    if [[ ${status:-0} == 0 ]]; then
        cp "$OUT/weights/"* "$RUN/weights/"  # for bench on this machine
    elif [[ $STAGE == all && $BENCH == 1 && -f $RUN/release/best.safetensors ]]; then
        # not installed: bench the trained candidate anyway (the GPU speed rows, GPU tests and as_loss's rows of
        # the anchored weights are worth having), then exit with the gate's status
        echo "not installed: bench runs on the candidate $RUN/release/best.safetensors" | tee -a "$LOG/release.log"
        cp "$RUN/release/best.safetensors" "$RUN/weights/$NAME.safetensors"
    else
        exit "$status"
    fi
    ;;&
bench|all)
    [[ $STAGE == all && $BENCH == 0 ]] && exit "${status:-0}"
    [[ $STAGE == bench ]] && install_wheels
    # the GPU-only tests first (seconds; TF32 immunity, bare-cuda resume, GPU = CPU scores): pytest is on the
    # device machine's image. Each part has a time limit of its own, so one that hangs leaves time to the next.
    timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors tests/ 2>&1 \
        | tee "$LOG/gpu_tests.log" || true
    pack
    weights="$RUN/weights/$NAME.safetensors"; [[ -f $weights ]] || weights="$GPU/weights/$NAME.safetensors"
    # table 6 (padded, graphs, compile, bf16: issue 18) and table 4 (bf16 vs fp32 on these weights); tables 1-3
    # and 5 do not depend on the weights and were measured in the first lease (benchmarks/README.md)
    timeout 300 python3 benchmarks/speed.py --device "$DEVICE" --only-precisions --weights "$weights" 2>&1 \
        | tee "$LOG/speed.md" || echo "speed.py stopped: exit $?" | tee -a "$LOG/speed.md"
    pack
    # GSN as a loss and under attack on the new weights (issue 16): GSN rows only, seconds on a GPU
    python3 benchmarks/as_loss.py all --device "$DEVICE" --weights "$weights" --only GSN --out "$LOG/as_loss" \
        2>&1 | tee "$LOG/as_loss.md"
    ;;
esac
exit "${status:-0}"
