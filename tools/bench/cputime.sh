#!/bin/bash
# Builds compared by the CPU time (user + sys, all threads: lavapipe's
# workers run in the process) whole `petal bench` processes use, the builds
# alternated run by run. On this 2-core host wall-clock passes move by up to
# 1.7x between runs minutes apart (table.sh's figures), and CPU time is what
# other guests cannot inflate. A measurement, not a test: pause any
# background run first (kill -STOP) and read the load averages it logs.
#
#   tools/bench/cputime.sh OUT_DIR NAME=PETAL_BINARY [NAME=PETAL_BINARY ...]
#
# A "binary" may be a wrapper script that sets an environment variable and
# execs petal (e.g. PETAL_WINOGRAD=0), to compare one build with a kernel
# switched off. Appends "NAME ARGS | wall S s | cpu U + S s" lines to
# OUT_DIR/cputime.log. Workloads (ROUNDS rounds each, default 3; the
# cifar10-32 training step 2): cifar10-32 forward at batch 1 and 16 (5
# repeats), small forward at batch 1 and 16 (10 repeats), small training
# step at batch 64 (3 repeats), cifar10-32 training step at batch 64 (1
# repeat). WORKLOADS=forward skips the training steps, WORKLOADS=train the
# forward passes. Pipelines come from
# Mesa's disk cache when an earlier run filled it; set-up and the warm-up
# pass are included and are the same for every build.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: cputime.sh OUT_DIR NAME=PETAL_BINARY ...}
shift
[ $# -ge 1 ] || { echo "no build given (NAME=PETAL_BINARY)" >&2; exit 2; }
mkdir -p "$OUT"
ROUNDS=${ROUNDS:-3}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
run_all() { # rounds, bench args...
  local rounds=$1; shift
  for ((i = 0; i < rounds; i++)); do
    for build in "${BUILDS[@]}"; do
      local name=${build%%=*} bin=${build#*=}
      /usr/bin/time -f "$name $* | wall %e s | cpu %U + %S s" "$bin" bench "$@" > /dev/null 2>> "$tmp"
      tail -1 "$tmp" | tee -a "$OUT/cputime.log"
    done
  done
}
BUILDS=("$@")
echo "== start $(date +%T) load $(cat /proc/loadavg)" | tee -a "$OUT/cputime.log"
if [ "${WORKLOADS:-all}" != train ]; then
  run_all "$ROUNDS" --config cifar10-32 --forward-batches 1,16 --sample-batches "" --train-batches "" --repeats 5
  run_all "$ROUNDS" --config small --forward-batches 1,16 --sample-batches "" --train-batches "" --repeats 10
fi
if [ "${WORKLOADS:-all}" != forward ]; then
  run_all "$ROUNDS" --config small --forward-batches "" --sample-batches "" --train-batches 64 --repeats 3
  run_all $((ROUNDS > 2 ? 2 : ROUNDS)) --config cifar10-32 --forward-batches "" --sample-batches "" --train-batches 64 --repeats 1
fi
echo "== end $(date +%T) load $(cat /proc/loadavg)" | tee -a "$OUT/cputime.log"
