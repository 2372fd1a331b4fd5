#!/bin/bash
# Petal against diffusers on PyTorch CUDA (fp32, eager, TF32 off) on a machine
# with an NVIDIA GPU, in one run: a few minutes of a lent GPU measure it all.
# A measurement, not a test.
#
#   tools/bench/gpu.sh [OUT_DIR]          (default: $OUT, else target/bench-gpu)
#
# What it needs, and where it takes it from (nothing is downloaded):
# - Vulkan's loader: the system's, else the .deb files in .gl/ unpacked into /
#   (fetch them once on a machine with apt: see ../.library/device/README.md;
#   libvulkan1 is the one that matters);
# - the NVIDIA Vulkan driver: the system's ICD, else /usr/local/nvidia's;
# - diffusers: installed, else the wheels in .whl/ (diffusers, importlib_metadata);
# - petal: $PETAL, else a fresh `cargo build --release` where cargo exists,
#   else .devbin/petal (a stripped release binary carried from the build machine).
#
# For each architecture (cifar10-32, then small) it runs tools/bench/compare.py
# with `--kernels gpu --torch-device cuda --profile`: Petal's forward pass at
# batch 1, 16 and 64, the 50-step sample at batch 1 and 16 and the training step
# at batch 16 and 64 against the same in PyTorch, as a table of seconds and
# ratios (Petal / PyTorch), plus Petal's seconds per op kind. Then Petal alone
# on cifar10-32 with the split-K conv forward on and off (SPLIT_AB=0 skips it),
# and, when PETAL_BASE (or .devbin/petal-base) is an earlier build's binary,
# that build on the same workloads, for a before/after in one run.
# Writes into OUT_DIR: <config>/{petal.json,torch.json,table.md},
# split-max-{16,1}.json, base.json, machine.txt and log.txt.
# Each architecture gets at most LIMIT_S seconds (default 300). A smoke test
# on any machine: CONFIGS=tiny AB_CONFIG=tiny FORWARD=1 SAMPLE=1 TRAIN=2 STEPS=2 TORCH_DEVICE=cpu.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-${OUT:-target/bench-gpu}}
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/log.txt") 2>&1

source tools/bench/gpu_env.sh

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2> /dev/null
  python3 -c 'import torch, diffusers; print("torch", torch.__version__, "cuda", torch.version.cuda, "diffusers", diffusers.__version__)'
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PETAL" bench --kernels gpu --config tiny --forward-batches 1 --sample-batches '' --repeats 1 2>&1 \
    | grep -m1 -i 'adapter' || true
} | tee "$OUT_DIR/machine.txt"

status=0
for config in ${CONFIGS:-cifar10-32 small}; do
  timeout "${LIMIT_S:-300}" python3 tools/bench/compare.py --petal "$PETAL" --config "$config" \
    --kernels gpu --torch-device "${TORCH_DEVICE:-cuda}" --profile \
    --forward-batches "${FORWARD:-1,16,64}" --sample-batches "${SAMPLE:-1,16}" --train-batches "${TRAIN:-16,64}" \
    --steps "${STEPS:-50}" --repeats 5 --sample-repeats 2 --out "$OUT_DIR/$config" || status=1
done
# The split-K conv forward (tiled_split_for in src/kernels/conv2d.rs: small
# batches cut the K loop over workgroups) against the same binary with it off,
# back to back: forward at batch 1 and 16, the 50-step sample at batch 1.
if [ "${SPLIT_AB:-1}" = 1 ]; then
  for split in 16 1; do
    PETAL_CONV_SPLIT_MAX=$split timeout "${LIMIT_S:-300}" "$PETAL" bench --kernels gpu --config "${AB_CONFIG:-cifar10-32}" \
      --forward-batches 1,16 --sample-batches 1 --repeats 5 --sample-repeats 2 \
      --steps "${STEPS:-50}" --out "$OUT_DIR/split-max-$split.json" || status=1
  done
fi
# An earlier build for a same-run before/after of every change since it
# (Petal alone, cifar10-32): PETAL_BASE, else .devbin/petal-base when carried.
BASE=${PETAL_BASE:-.devbin/petal-base}
if [ -x "$BASE" ]; then
  timeout "${LIMIT_S:-300}" "$BASE" bench --kernels gpu --config "${AB_CONFIG:-cifar10-32}" --profile \
    --forward-batches "${FORWARD:-1,16,64}" --sample-batches 1 --train-batches "${TRAIN:-16,64}" \
    --repeats 5 --sample-repeats 2 --steps "${STEPS:-50}" --out "$OUT_DIR/base.json" || status=1
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
