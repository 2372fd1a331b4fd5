#!/bin/bash
# One idle run: this session's build ("new", HEAD) and the session's starting
# point dbf30bb ("old"), alternated, both architectures, each with its own
# PyTorch run (compare.py runs diffusers on PyTorch's CPU kernels, 2 threads).
cd /work/main
OUT=${OUT:-/tmp/bench/out3}; mkdir -p $OUT
for cfg in cifar10-32 small; do
  if [ $cfg = cifar10-32 ]; then A="--forward-batches 1,16 --sample-batches 1 --train-batches 64"; else A="--forward-batches 1,16 --sample-batches 16 --train-batches 64"; fi
  for build in new old; do
    if [ $build = new ]; then P=/tmp/petal_new; else P=/tmp/petal_base; fi
    echo "== $cfg $build $(date +%T) load $(cat /proc/loadavg)" | tee -a $OUT/log.txt
    /tmp/tv/bin/python tools/bench/compare.py --petal $P --config $cfg $A --repeats 2 --sample-repeats 1 --profile --out $OUT/$cfg-$build >> $OUT/log.txt 2>&1
    echo "== done $(date +%T) load $(cat /proc/loadavg)" | tee -a $OUT/log.txt
  done
done
