#!/bin/bash
# One idle run: new build (HEAD) and the previous session's build (d8d93a7) alternated, both architectures.
cd /work/main
OUT=/tmp/bench/out; mkdir -p $OUT
for cfg in cifar10-32 small; do
  if [ $cfg = cifar10-32 ]; then A="--forward-batches 1,16 --sample-batches 1 --train-batches 64"; else A="--forward-batches 1,16 --sample-batches 16 --train-batches 64"; fi
  for build in new old; do
    if [ $build = new ]; then P=/work/main/target/release/petal; else P=/tmp/oldt/release/petal; fi
    echo "== $cfg $build $(date +%T) load $(cat /proc/loadavg)" | tee -a $OUT/log.txt
    /tmp/tv/bin/python tools/bench/compare.py --petal $P --config $cfg $A --repeats 2 --sample-repeats 1 --profile --out $OUT/$cfg-$build >> $OUT/log.txt 2>&1
    echo "== done $(date +%T) load $(cat /proc/loadavg)" | tee -a $OUT/log.txt
  done
done
