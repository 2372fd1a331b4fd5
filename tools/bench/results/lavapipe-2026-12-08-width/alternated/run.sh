#!/bin/bash
# 256- vs 512-bit lavapipe on this host, alternated, same binary.
B=/tmp/petal_base
cd /tmp/wbench
for round in 1 2; do
 for w in 512 256; do
  if [ $w = 256 ]; then E="PETAL_WIDE_VECTORS=0"; else E="PETAL_WIDE_VECTORS=1"; fi
  echo "== round $round width $w small $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  env $E $B bench --config small --forward-batches 1,16 --sample-batches 16 --train-batches 64 --repeats 3 --sample-repeats 1 --out small-$w-$round.json > /dev/null 2>small-$w-$round.err
  echo "== round $round width $w cifar $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  env $E $B bench --config cifar10-32 --forward-batches 1,16 --sample-batches 1 --train-batches "" --repeats 3 --sample-repeats 1 --out cifar-$w-$round.json > /dev/null 2>cifar-$w-$round.err
 done
done
echo "== done $(date +%T)"
