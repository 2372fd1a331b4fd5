#!/bin/bash
# One idle run: this session's build ("new", 28cfcdf: 512-accumulator blocks for the
# 3x3 convolutions of wide layers) and the previous table's ("old", ec921a4), one
# after the other, both architectures, each with its own PyTorch run (compare.py
# runs diffusers on PyTorch's CPU kernels, 2 threads).
cd /work/main
OUT=${OUT:-tools/bench/results/lavapipe-2026-12-02}; mkdir -p $OUT
for cfg in cifar10-32 small; do
  if [ $cfg = cifar10-32 ]; then A="--forward-batches 1,16 --sample-batches 1 --train-batches 64"; else A="--forward-batches 1,16 --sample-batches 16 --train-batches 64"; fi
  for build in new old; do
    if [ $build = new ]; then P=/tmp/petal_new2; else P=/tmp/petal_old; fi
    echo "== $cfg $build $(date +%T) load $(cat /proc/loadavg)" | tee -a $OUT/log.txt
    /tmp/tv/bin/python tools/bench/compare.py --petal $P --config $cfg $A --repeats 2 --sample-repeats 1 --profile --out $OUT/$cfg-$build >> $OUT/log.txt 2>&1
    echo "== done $(date +%T) load $(cat /proc/loadavg)" | tee -a $OUT/log.txt
  done
done
