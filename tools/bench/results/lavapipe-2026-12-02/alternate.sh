#!/bin/bash
# After the table run (run.sh): the two builds alternated twice, Petal only,
# same workloads, since the host moves timings by up to 1.4x between runs.
cd /work/main
OUT=${OUT:-tools/bench/results/lavapipe-2026-12-02}
for i in 1 2; do
  for build in new old; do
    if [ $build = new ]; then P=/tmp/petal_new2; else P=/tmp/petal_old; fi
    for cfg in cifar10-32 small; do
      if [ $cfg = cifar10-32 ]; then A="--forward-batches 1,16 --sample-batches 1 --train-batches 64"; else A="--forward-batches 16 --sample-batches 16 --train-batches 64"; fi
      echo "== round $i $cfg $build $(date +%T) load $(cat /proc/loadavg)" | tee -a $OUT/alternate.log
      $P bench --config $cfg $A --repeats 2 --sample-repeats 1 --out $OUT/alt-$i-$cfg-$build.json 2>&1 | grep -E "^(forward|sample|train)" >> $OUT/alternate.log
    done
  done
done
echo "== end $(date +%T) load $(cat /proc/loadavg)" | tee -a $OUT/alternate.log
