#!/usr/bin/env bash
# The GPU release plan (benchmarks/GPU_RELEASE.md): each stage is one device call of at most 10 minutes.
#
#   benchmarks/gpu_release.sh prepare            # here, before the lease: fills .gpu/ (ignored) for `carry`
#   benchmarks/gpu_release.sh train              # on the GPU: probe the step and throughput, train, measure, install
#   benchmarks/gpu_release.sh bench              # on the GPU: benchmarks/speed.py --device cuda + bf16 check
#   benchmarks/gpu_release.sh all                # train, then bench, in one device call (no 30 s race between)
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
STEP_PROBE=${STEP_PROBE:-10}                # seconds per candidate of the training-step probe (train_step.py)
SPEEDUPS=${SPEEDUPS:-auto}                  # fit --speedups: auto = the step probe's choice; '' = eager
PROBE=${PROBE:-20}                          # seconds of the throughput probe (the whole pipeline, chosen speedups)
COMPILE=${COMPILE:-120}                     # seconds added to that probe when the chosen speedups compile
CALL=${CALL:-570}                           # seconds the whole call may take (the device tool stops it at 600)
RESERVE=${RESERVE:-230}                     # seconds kept after training: start-ups, measuring, installing, bench
TRAIN=${TRAIN:-auto}                        # seconds of training: auto = what CALL leaves after probes and RESERVE
WORKERS=${WORKERS:-15}                      # data workers: 16 cores, one left to the training process
BATCH=${BATCH:-32}
LR=${LR:-1e-3}
ANCHOR=${ANCHOR:-0}                         # --anchor-weight: the reference anchor of issue 16 (0: the paper's loss)
ADVERSARIAL=${ADVERSARIAL:-0}               # --adversarial-weight: PGD-attacked pairs of issue 16 ((2+2)× a step)
VAL_FRACTION=${VAL_FRACTION:-0.05}          # 12 of the 239 photographs, 1,500 pairs: the CPU release's split
RUN=${RUN:-/tmp/gsn-gpu-run}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$PWD/$GPU/site${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
model_flags=(--width "$WIDTH"); [[ $TINY == 1 ]] && model_flags=(--tiny)
init_flags=(); [[ -n $INIT ]] && init_flags=(--init "$INIT" --draw-offset "$DRAW_OFFSET")
data_flags=(--dataset synthetic-kadid --pristine "$GPU/pristine" --labels "$GPU/KADID-10k.csv"
            --val-fraction "$VAL_FRACTION" --seed 0 --patch-size 192)

install_wheels() {  # pytorch-msssim, which the device machine lacks, from the carried wheel
    python3 -m pip install -q --no-index --no-deps --upgrade --target "$GPU/site" "$GPU"/whl/*.whl
}

case $STAGE in
prepare)  # here: copy what the device machine lacks into .gpu/ (.gitignore'd), the folder `carry` names
    rm -rf "$GPU" && mkdir -p "$GPU/pristine" "$GPU/whl"
    cp ../shared/data/pristine/*.webp "$GPU/pristine/"
    cp ../shared/data/labels/KADID-10k.csv "$GPU/"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$GPU/whl" pytorch-msssim==1.0.0
    du -sh "$GPU"
    ;;
train|all)
    install_wheels
    python3 - <<'EOF'
import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
                    torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF
    rm -rf "$RUN" && mkdir -p "$RUN"
    # 0. the training step's candidates (fit --speedups), each checked against eager, the fastest chosen; any
    #    failure of the probe itself falls back to eager
    if [[ $SPEEDUPS == auto ]]; then
        : > "$RUN/speedups.txt"
        if [[ $STEP_PROBE != 0 ]]; then
            python3 benchmarks/train_step.py --device "$DEVICE" "${model_flags[@]}" --batch-size "$BATCH" \
                --patch-size 192 --seconds "$STEP_PROBE" --choose "$RUN/speedups.txt" --json "$OUT/step_probe.json" \
                2>&1 | tee "$OUT/step_probe.md" || echo "step probe failed: eager" | tee -a "$OUT/step_probe.md"
        fi
        SPEEDUPS=$(cat "$RUN/speedups.txt")
    fi
    echo "speedups: '${SPEEDUPS}'" | tee -a "$OUT/step_probe.md"
    # 1. throughput probe: the same pipeline, PROBE seconds once warm (plus COMPILE if compiling), thrown away
    probe_limit=$PROBE; [[ $SPEEDUPS == *compile* ]] && probe_limit=$((PROBE + COMPILE))
    python3 -m gsn_metric.train fit "${data_flags[@]}" "${model_flags[@]}" --device "$DEVICE" --workers "$WORKERS" \
        --speedups "$SPEEDUPS" \
        --batch-size "$BATCH" --anchor-weight "$ANCHOR" --adversarial-weight "$ADVERSARIAL" --epochs 1 --epoch-length 1000000 --time-limit "$probe_limit" \
        --out "$RUN/probe" \
        2>&1 | tee "$OUT/probe.log"
    # the steady rate (after the first steps: compiling, warming up) and how long it took to reach it
    read -r rate warm < <(python3 -c "import json; r = json.load(open('$RUN/probe/history.json'))[-1]; \
s = r.get('steady', {'pairs_per_s': r['pairs_per_s'], 'after_s': 0}); print(s['pairs_per_s'], s['after_s'])")
    # 2. plan TRAIN seconds of it as one cosine epoch (whole batches), train, measure, install into $OUT/weights
    [[ $TRAIN == auto ]] && TRAIN=$(( CALL - ($(date +%s) - START) - RESERVE )) && (( TRAIN < 30 )) && TRAIN=30
    length=$(python3 -c "print(max(1, int($rate * max($TRAIN - $warm, 10)) // $BATCH) * $BATCH)")
    echo "probe: $rate pairs/s once warm (after ${warm}s) -> epoch of $length pairs for ${TRAIN}s" | tee -a "$OUT/probe.log"
    python3 -m gsn_metric.train release "${data_flags[@]}" "${model_flags[@]}" --device "$DEVICE" \
        --workers "$WORKERS" --batch-size "$BATCH" --lr "$LR" --lr-schedule cosine --warmup-steps 50 \
        --speedups "$SPEEDUPS" \
        --anchor-weight "$ANCHOR" --adversarial-weight "$ADVERSARIAL" "${init_flags[@]}" --epochs 1 --epoch-length "$length" --val-every 0 --time-limit $((TRAIN + 60)) \
        --out "$RUN/release" --name "$NAME" --weights-dir "$OUT/weights" --must-beat "" 2>&1 | tee "$OUT/release.log" \
        || status=$?
    # the measurements come back even when the gate (beat the --init weights) installed nothing
    cp "$RUN/release/release.json" "$RUN/release/history.json" "$OUT/" || true
    [[ ${status:-0} == 0 ]] || exit "$status"
    mkdir -p "$RUN/weights" && cp "$OUT/weights/"* "$RUN/weights/"  # for bench on this machine
    ;;&
bench|all)
    [[ $STAGE == bench ]] && install_wheels
    weights="$RUN/weights/$NAME.safetensors"; [[ -f $weights ]] || weights="$GPU/weights/$NAME.safetensors"
    python3 benchmarks/speed.py --device "$DEVICE" --batch-sizes 1 8 64 --weights "$weights" 2>&1 | tee "$OUT/speed.md"
    # GSN as a loss and under attack on the new weights (issue 16): GSN rows only, seconds on a GPU
    python3 benchmarks/as_loss.py all --device "$DEVICE" --weights "$weights" --only GSN --out "$OUT/as_loss" \
        2>&1 | tee "$OUT/as_loss.md"
    ;;
esac
