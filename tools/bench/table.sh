#!/bin/bash
# The issue-8 table on lavapipe: one idle run of tools/bench/compare.py (Petal
# against diffusers on PyTorch's CPU kernels, 2 threads) for each build given,
# both architectures, each build with its own PyTorch run right after it. A
# measurement, not a test; pause any background run first (kill -STOP) and
# read the load averages it logs.
#
#   tools/bench/table.sh OUT_DIR NAME=PETAL_BINARY [NAME=PETAL_BINARY ...]
#
# e.g. tools/bench/table.sh tools/bench/results/lavapipe-DATE new=/tmp/petal_new old=/tmp/petal_old
# (copy each build's binary out of target/ first: a build in a git worktree
# that shares target/ replaces target/release/petal without cargo noticing).
# PYTHON (default /tmp/tv/bin/python, else python3) must import torch and
# diffusers. Writes OUT_DIR/<config>-<name>/{petal.json,torch.json,table.md}
# and appends to OUT_DIR/log.txt. CONFIGS (default "cifar10-32 small") picks
# the architectures; the workloads are the issue's: cifar10-32 forward at
# batch 1 and 16, 50-step sample at batch 1 and training step at batch 64;
# small forward at batch 1 and 16, 50-step sample at batch 16 and training
# step at batch 64.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: table.sh OUT_DIR NAME=PETAL_BINARY ...}
shift
[ $# -ge 1 ] || { echo "no build given (NAME=PETAL_BINARY)" >&2; exit 2; }
PY=${PYTHON:-/tmp/tv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
status=0
for cfg in ${CONFIGS:-cifar10-32 small}; do
  if [ "$cfg" = cifar10-32 ]; then
    A=(--forward-batches 1,16 --sample-batches 1 --train-batches 64)
  else
    A=(--forward-batches 1,16 --sample-batches 16 --train-batches 64)
  fi
  for build in "$@"; do
    name=${build%%=*}
    bin=${build#*=}
    echo "== $cfg $name ($bin) $(date +%T) load $(cat /proc/loadavg)" | tee -a "$OUT/log.txt"
    "$PY" tools/bench/compare.py --petal "$bin" --config "$cfg" "${A[@]}" --repeats 2 --sample-repeats 1 \
      --profile --out "$OUT/$cfg-$name" >> "$OUT/log.txt" 2>&1 || status=1
    echo "== done $(date +%T) load $(cat /proc/loadavg)" | tee -a "$OUT/log.txt"
  done
done
exit $status
