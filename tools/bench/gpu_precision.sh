#!/bin/bash
# FP32, FP16 and INT8 on a hardware GPU (issue 10), in one run: for both
# architectures (random weights), `petal bench --kernels gpu` per precision,
# FP16 and INT8 both with f16 activations (the default where the adapter
# offers SHADER_F16) and with PETAL_ACTIVATIONS=f32; then the bundled flower
# model's 16-image, 50-step sample from one seed in each precision and
# activation type, and `petal quantize`'s output error on it. A
# measurement, not a test.
#
#   tools/bench/gpu_precision.sh [OUT_DIR]     (default: $OUT, else target/bench-gpu-precision)
#
# Setup as tools/bench/gpu.sh (tools/bench/gpu_env.sh). Writes OUT_DIR/
# {log.txt,table.md} and the JSON of every bench run into OUT_DIR/json.tgz,
# and the sample grids as OUT_DIR/samples.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-${OUT:-target/bench-gpu-precision}}
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/log.txt") 2>&1
source tools/bench/gpu_env.sh

work=$(mktemp -d)
mkdir -p "$work/json" "$work/samples"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for config in ${CONFIGS:-cifar10-32 small}; do
  for run in fp32 fp16 fp16-f32acts int8 int8-f32acts; do
    p=${run%%-*}
    acts=$([ "$run" = "${run%-f32acts}" ] && echo auto || echo f32)
    env $([ "$acts" = f32 ] && echo PETAL_ACTIVATIONS=f32) timeout "${LIMIT_S:-120}" \
      "$PETAL" bench --kernels gpu --config "$config" --precision "$p" \
      --forward-batches "${FORWARD:-1,16,64}" --sample-batches "${SAMPLE:-1,16}" --steps "${STEPS:-50}" \
      --repeats 5 --sample-repeats 2 --out "$work/json/$config-$run.json" > /dev/null || echo "FAILED: $config $run"
  done
done
echo "load average after the benches: $(cut -d' ' -f1-3 /proc/loadavg)"

model=${MODEL:-assets/flowers}
for run in fp32 fp16 fp16-f32acts int8 int8-f32acts; do
  p=${run%%-*}
  env $([ "$run" != "${run%-f32acts}" ] && echo PETAL_ACTIVATIONS=f32) timeout 120 \
    "$PETAL" sample --kernels gpu --model "$model" --precision "$p" --batch 16 --seed 7 --out "$work/samples/$run.png" \
    2>&1 | grep -v '^adapter' || echo "FAILED: sample $run"
done
timeout 120 "$PETAL" quantize --kernels gpu --model "$model" --precision int8 --out "$work/q-int8" 2>&1 | tail -3
timeout 120 "$PETAL" quantize --kernels gpu --model "$model" --precision fp16 --out "$work/q-fp16" 2>&1 | tail -3

python3 - "$work" <<'PY' | tee "$OUT_DIR/table.md"
import json, os, sys
import numpy as np
from PIL import Image
work = sys.argv[1]
runs = ["fp32", "fp16", "fp16-f32acts", "int8", "int8-f32acts"]
keys = sorted({k for f in os.listdir(f"{work}/json") for k in json.load(open(f"{work}/json/{f}"))
               if k.endswith("_s") or k.endswith("_mib")})
configs = sorted({f.rsplit("-", 2)[0] if f.endswith("f32acts.json") else f.rsplit("-", 1)[0] for f in os.listdir(f"{work}/json")})
for config in configs:
    data = {r: json.load(open(f"{work}/json/{config}-{r}.json")) for r in runs if os.path.exists(f"{work}/json/{config}-{r}.json")}
    if not data:
        continue
    print(f"\n{config}: " + ", ".join(f"{r}: {d.get('activations')} activations" for r, d in data.items()))
    print("| figure | " + " | ".join(data) + " |")
    print("| --- |" + " --- |" * len(data))
    base = data.get("fp32", {})
    for k in keys:
        if not any(k in d for d in data.values()):
            continue
        cells = []
        for r, d in data.items():
            v = d.get(k)
            b = base.get(k)
            cells.append("" if v is None else f"{v:.4g}" + (f" ({v / b:.2f}x)" if b and r != "fp32" else ""))
        print(f"| {k} | " + " | ".join(cells) + " |")
print("\nbundled model, 16 x 50 DDPM steps, seed 7: mean |difference| on 0-255 against fp32")
ref = np.asarray(Image.open(f"{work}/samples/fp32.png")).astype(float)
for r in runs[1:]:
    path = f"{work}/samples/{r}.png"
    if os.path.exists(path):
        img = np.asarray(Image.open(path)).astype(float)
        print(f"- {r}: mean {np.abs(img - ref).mean():.3f}, max {np.abs(img - ref).max():.0f}")
PY
tar czf "$OUT_DIR/json.tgz" -C "$work" json
tar czf "$OUT_DIR/samples.tgz" -C "$work" samples
