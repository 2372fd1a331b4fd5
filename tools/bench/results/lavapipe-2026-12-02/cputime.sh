#!/bin/bash
# The host moved whole passes by up to 1.4x between runs (alternate.log), so
# this times whole `petal bench` processes by the CPU time they used (user +
# sys, all threads: lavapipe's workers run in the process), which time stolen
# by other guests does not inflate. The warm-up pass and model set-up are
# included and are the same for both builds; pipelines come from Mesa's disk
# cache, which the earlier runs filled.
cd /work/main
OUT=${OUT:-tools/bench/results/lavapipe-2026-12-02}
run() { # build label, binary, args...
  local b=$1; shift; local p=$1; shift
  /usr/bin/time -f "$b $* | wall %e s | cpu %U + %S s" $p bench "$@" > /dev/null 2>> $OUT/cputime.log.tmp
  tail -1 $OUT/cputime.log.tmp | tee -a $OUT/cputime.log
}
echo "== start $(date +%T) load $(cat /proc/loadavg)" | tee -a $OUT/cputime.log
for i in 1 2 3; do
  for b in new old; do
    if [ $b = new ]; then P=/tmp/petal_new2; else P=/tmp/petal_old; fi
    run $b $P --config cifar10-32 --forward-batches 16 --sample-batches "" --train-batches "" --repeats 5
  done
done
for i in 1 2; do
  for b in new old; do
    if [ $b = new ]; then P=/tmp/petal_new2; else P=/tmp/petal_old; fi
    run $b $P --config cifar10-32 --forward-batches "" --sample-batches "" --train-batches 64 --repeats 2
  done
done
rm -f $OUT/cputime.log.tmp
echo "== end $(date +%T) load $(cat /proc/loadavg)" | tee -a $OUT/cputime.log
