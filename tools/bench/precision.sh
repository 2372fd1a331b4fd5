#!/bin/bash
# Issue 10's speed and size figures: ms per denoising step (one UNet forward
# pass; the scheduler step is a single elementwise kernel) at batch 1 and 16,
# weights file size and GPU memory, for FP32, FP16 and INT8 weights, for the
# google/ddpm-cifar10-32 architecture and the small one of the bundled flower
# model (random weights: speed and size do not depend on the values).
#
#   tools/bench/precision.sh [OUT_DIR] [REPEATS]
#
# Run on an idle machine (pause a background run with kill -STOP, resume it
# with kill -CONT); the load average is printed with the figures. Writes one
# JSON per run into OUT_DIR (default target/bench-precision) and a table with
# each figure as a ratio to FP32 from the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/bench-precision}
REPEATS=${2:-2}
mkdir -p "$OUT"
cargo build --release --locked --quiet
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for config in cifar10-32 small; do
  for p in fp32 fp16 int8; do
    NODEVICE_SELECT=1 target/release/petal bench --config "$config" --precision "$p" \
      --forward-batches 1,16 --sample-batches "" --repeats "$REPEATS" \
      --out "$OUT/$config-$p.json" > /dev/null
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print(f"| config | precision | file MB | GPU MB | ms/step b1 | ms/step b16 |")
print("| --- | --- | --- | --- | --- | --- |")
for config in ["cifar10-32", "small"]:
    runs = {p: json.load(open(f"{out}/{config}-{p}.json")) for p in ["fp32", "fp16", "int8"]}
    base = runs["fp32"]
    for p, r in runs.items():
        def cell(key, scale, fmt):
            v, b = r[key] * scale, base[key] * scale
            return f"{v:{fmt}}" + ("" if p == "fp32" else f" ({v / b:.2f}x)")
        print(f"| {config} | {p} | {cell('weights_file_bytes', 1e-6, '.2f')} | {cell('weights_gpu_bytes', 1e-6, '.2f')} "
              f"| {cell('forward_b1_s', 1e3, '.0f')} | {cell('forward_b16_s', 1e3, '.0f')} |")
PY
