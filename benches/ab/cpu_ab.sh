#!/bin/bash
# CPU per request A/B (BENCHMARKS.md, issue 14 "CPU per request"): two server binaries
# $OUT/ringkv-$A and $OUT/ringkv-$B in turn, ROUNDS rounds (default 5), a fresh server per run:
# `group` SETs at 64 connections, then GETs of those keys at 64 connections, 4 s after 1 s
# (ringkv-bench). Server CPU per request is user+system from /proc/PID/stat over each measured
# run divided by its requests. Prints medians, ranges and paired B/A ratios.
. "$(dirname "$0")/../lib.sh"
OUT=${OUT:-/var/tmp/bench14}
BIN=${BIN:-target/release}
A=${A:-before}
B=${B:-after}
ROUNDS=${ROUNDS:-5}
PORT=18391
: > $OUT/cpu_ab.txt
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
hz=$(getconf CLK_TCK)
for r in $(seq 1 $ROUNDS); do
  for bin in $A $B; do
    rm -rf $OUT/cdata
    $OUT/ringkv-$bin --listen 127.0.0.1:$PORT --data-dir $OUT/cdata --fsync group > /dev/null 2>&1 &
    PID=$!; wait_for_port $PORT $PID || exit 1
    for op in set get; do
      $BIN/ringkv-bench run --target 127.0.0.1:$PORT --mix $op:100 --keys 100000 -c 64 -d 1s -q > /dev/null
      t0=$(ticks $PID)
      $BIN/ringkv-bench run --target 127.0.0.1:$PORT --mix $op:100 --keys 100000 -c 64 -d 4s -q --json $OUT/c.json > /dev/null
      t1=$(ticks $PID)
      python3 -c "import json; t=json.load(open('$OUT/c.json'))['total']; print('$r $bin $op', round(t['ops_per_sec']), round(($t1-$t0)/$hz*1e6/t['requests'], 2))" >> $OUT/cpu_ab.txt
    done
    kill $PID; wait $PID 2>/dev/null
  done
done
python3 - $OUT/cpu_ab.txt $A $B <<'PY'
import sys, statistics, collections
path, a, b = sys.argv[1:4]
runs = collections.defaultdict(list)
for line in open(path):
    r, binary, op, ops, cpu = line.split()
    runs[(binary, op)].append((float(ops), float(cpu)))
for op in ["set", "get"]:
    for binary in [a, b]:
        xs = runs[(binary, op)]
        ops = [x[0] for x in xs]; cpu = [x[1] for x in xs]
        print(f"{op} {binary}: ops/s {statistics.median(ops):.0f} ({min(ops):.0f}-{max(ops):.0f}), CPU us/req {statistics.median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f})")
    ratio = [y[0] / x[0] for x, y in zip(runs[(a, op)], runs[(b, op)])]
    cpu_ratio = [y[1] / x[1] for x, y in zip(runs[(a, op)], runs[(b, op)])]
    print(f"{op} {b}/{a} ops per round {[round(x, 2) for x in ratio]}, CPU per round {[round(x, 2) for x in cpu_ratio]}")
PY
