#!/usr/bin/env bash
# The one command to run on a new GPU machine (docs/scaling.md#one-command-on-a-new-gpu-machine):
#
#     bash benchmarks/gpu_check.sh [--dry] [--out DIR]          # DRY=1 is --dry
#
# Needs no dataset and no weights: it generates a small synthetic Human3.6M set, trains the four
# lifters for a few steps, then runs the real training loop (run/train_hrnet.py) at W32 384x288
# 2D-only, guided by sb and by four lifters, each in fp32, bf16 and bf16 + channels-last, plus
# the sb row under torchrun; validation against the original's per-sample loops; the DataLoader
# with the config's worker settings. One JSON (<out>/gpu_check.json, with the GPU's name) and a
# table of samples/s, ms per step and peak memory per row (benchmarks/gpu_check.py explains each
# figure). Sized to finish within 8 minutes on one GPU (not yet timed on one). The GPU is the
# first visible one (choose it with CUDA_VISIBLE_DEVICES).
#
# --dry: everything on the CPU at tiny sizes (experiments/demo/tiny_96x128.yaml, 2 steps,
# USE_CUDA False) -- what CI runs (tests/test_gpu_check.py); its figures mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
DRY=${DRY:-0}
OUT=${OUT:-output/gpu_check}
while [ $# -gt 0 ]; do
    case "$1" in
        --dry) DRY=1 ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (use --dry, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done

# >>> TF32: the config has no switch for TF32 matrix products yet. When the engine gains one (e.g.
# TRAIN.TF32), set it here, e.g. TF32_OPTS="TRAIN.TF32 True": it is passed to every training row.
TF32_OPTS=${TF32_OPTS:-}
# <<<

if [ "$DRY" = 1 ]; then
    CFG=experiments/demo/tiny_96x128.yaml
    LIFTER_CFG=experiments/demo/lifters_cpu.yaml     # small IGANet / MixSTE
    SIZES=(--dry --batch 2 --windows 1 --window-steps 1 --lifter-steps 1
           --valid-batch 2 --valid-batches 2 --valid-repeats 1 --loader-batches 2)
    OPTS="DATASET.MAX_SAMPLES 8"                     # of the 40 training, 16 validation frames
    FRAMES=1
    IMAGE=128
else
    CFG=experiments/h36m/w32_384x288_adam_lr1e-3.yaml
    LIFTER_CFG=$CFG                                  # the lifters' published sizes
    SIZES=(--batch 32 --windows 3 --window-steps 10 --lifter-steps 20
           --valid-batch 64 --valid-batches 8 --valid-repeats 3 --loader-batches 20)
    OPTS=""
    FRAMES=26                                        # 1040 training frames: 31 steps of 32
    IMAGE=256
fi

mkdir -p "$OUT"
echo "=== synthetic Human3.6M set ($FRAMES frames per sequence and camera, ${IMAGE} px) in $OUT"
rm -rf "$OUT/raw" "$OUT/data"
"$PYTHON" run/make_demo_data.py --dst "$OUT/raw" --frames-per-seq "$FRAMES" --image-size "$IMAGE" > "$OUT/make_demo_data.txt"
"$PYTHON" run/prepare_h36m.py --src "$OUT/raw" --dst "$OUT/data" --train-interval 1 --valid-interval 1 \
    --no-check-images > "$OUT/prepare_h36m.txt"

"$PYTHON" benchmarks/gpu_check.py --data "$OUT/data" --work "$OUT" --cfg "$CFG" --lifter-cfg "$LIFTER_CFG" \
    "${SIZES[@]}" --opts "$OPTS $TF32_OPTS" --json-out "$OUT/gpu_check.json"
