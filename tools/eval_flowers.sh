#!/bin/bash
# Issue 9's quality figures for a flower model: 240 samples (50 DDPM steps)
# scored with `petal eval` (SWD of Karras et al. 2018, x1e3 per level, and
# the nearest-training-image distance) against the held-out and the training
# images, beside the baselines from the same code: real against real
# (training against held-out) and real images blurred (8x8 and back), and,
# when given, a grid sampled by tools/torch_baseline.py.
#
#   tools/eval_flowers.sh MODEL_DIR TRAIN_DIR HELDOUT_DIR OUT_DIR [TORCH_GRID]
#
# TRAIN_DIR and HELDOUT_DIR are the split the model was trained on (the
# bundled model: 5 images per species held out, the last 5 by file name).
set -euo pipefail
MODEL=$1 TRAIN=$2 HELD=$3 OUT=$4 TORCH=${5:-}
cd "$(dirname "$0")/.."
PETAL=${PETAL:-target/release/petal}
mkdir -p "$OUT"
export NODEVICE_SELECT=1
"$PETAL" sample --model "$MODEL" --batch 240 --steps 50 --seed 1000 --out "$OUT/petal-samples.png"
"$PETAL" eval --real "$HELD" --generated "$OUT/petal-samples.png" --out "$OUT/petal-vs-heldout.json" --blur-baseline
"$PETAL" eval --real "$TRAIN" --generated "$OUT/petal-samples.png" --out "$OUT/petal-vs-train.json" --pairs "$OUT/petal-nearest.png"
"$PETAL" eval --real "$HELD" --generated "$TRAIN" --out "$OUT/train-vs-heldout.json"
if [ -n "$TORCH" ]; then
  "$PETAL" eval --real "$HELD" --generated "$TORCH" --out "$OUT/torch-vs-heldout.json"
  "$PETAL" eval --real "$TRAIN" --generated "$TORCH" --out "$OUT/torch-vs-train.json" --pairs "$OUT/torch-nearest.png"
fi
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
print(json.dumps({n: load(n + ".json") for n in ["petal-vs-heldout", "petal-vs-train", "train-vs-heldout", "torch-vs-heldout", "torch-vs-train"]}, indent=1))
PY
