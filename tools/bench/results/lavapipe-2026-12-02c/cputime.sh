#!/bin/bash
# Whole `petal bench` processes timed by the CPU time they used (user + sys,
# all threads: lavapipe's workers run in the process), alternated between the
# builds: the host moves wall-clock passes by up to 1.7x between runs minutes
# apart (table.sh's figures), and CPU time is what other guests cannot
# inflate. Pipelines come from Mesa's disk cache, filled by table.sh's run;
# set-up and the warm-up pass are included and are the same for both builds.
# Here "now" is b88d2aa and "direct" the same binary with PETAL_WINOGRAD=0
# (/tmp/petal_direct is a two-line wrapper that sets it and execs petal_now).
cd /work/main
OUT=${OUT:-tools/bench/results/lavapipe-2026-12-02c}
run() { # label, binary, args...
  local b=$1; shift; local p=$1; shift
  /usr/bin/time -f "$b $* | wall %e s | cpu %U + %S s" $p bench "$@" > /dev/null 2>> $OUT/cputime.log.tmp
  tail -1 $OUT/cputime.log.tmp | tee -a $OUT/cputime.log
}
echo "== start $(date +%T) load $(cat /proc/loadavg)" | tee -a $OUT/cputime.log
for i in 1 2 3; do
  for b in now direct; do
    run $b /tmp/petal_$b --config cifar10-32 --forward-batches 1,16 --sample-batches "" --train-batches "" --repeats 5
  done
done
for i in 1 2 3; do
  for b in now direct; do
    run $b /tmp/petal_$b --config small --forward-batches 1,16 --sample-batches "" --train-batches "" --repeats 10
  done
done
for i in 1 2 3; do
  for b in now direct; do
    run $b /tmp/petal_$b --config small --forward-batches "" --sample-batches "" --train-batches 64 --repeats 3
  done
done
for i in 1 2; do
  for b in now direct; do
    run $b /tmp/petal_$b --config cifar10-32 --forward-batches "" --sample-batches "" --train-batches 64 --repeats 1
  done
done
rm -f $OUT/cputime.log.tmp
echo "== end $(date +%T) load $(cat /proc/loadavg)" | tee -a $OUT/cputime.log
