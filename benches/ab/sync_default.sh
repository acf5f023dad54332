#!/bin/bash
# Which sync mechanism `group` and `always` default to (BENCHMARKS.md, "The sync default"):
# --sync-call dsync against fdatasync, alternating, ROUNDS rounds (default 6), a fresh server per
# run: group SETs at 64 connections and always SETs at 1 connection, 4 s after 1 s of warm-up
# (ringkv-bench). Prints per run ops/s, p50 and p99; then medians, ranges and paired ratios.
. "$(dirname "$0")/../lib.sh"
OUT=${OUT:-/var/tmp/bench14}
BIN=${BIN:-target/release}
ROUNDS=${ROUNDS:-6}
PORT=18387
mkdir -p $OUT
: > $OUT/sync_default.txt
for r in $(seq 1 $ROUNDS); do
  for call in dsync fdatasync; do
    for load in "group 64" "always 1"; do
      set -- $load
      rm -rf $OUT/sdata
      $BIN/ringkv --listen 127.0.0.1:$PORT --data-dir $OUT/sdata --fsync $1 --sync-call $call > /dev/null 2>&1 &
      PID=$!; wait_for_port $PORT $PID || exit 1
      $BIN/ringkv-bench run --target 127.0.0.1:$PORT --mix set:100 -c $2 -d 4s --warmup 1s -q --json $OUT/s.json > /dev/null
      kill $PID; wait $PID 2>/dev/null
      python3 -c "import json; t=json.load(open('$OUT/s.json'))['total']; print('$r $call $1 $2', round(t['ops_per_sec']), t['p50_us'], t['p99_us'])" >> $OUT/sync_default.txt
    done
  done
done
python3 - $OUT/sync_default.txt <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    r, call, fsync, conns, ops, p50, p99 = line.split()
    runs[(fsync, conns)].setdefault(call, []).append((int(r), float(ops), float(p50), float(p99)))
for (fsync, conns), calls in runs.items():
    for call, rs in calls.items():
        ops = [x[1] for x in rs]; p50 = [x[2] for x in rs]; p99 = [x[3] for x in rs]
        print(f"{fsync} c{conns} {call}: ops/s median {statistics.median(ops):.0f} ({min(ops):.0f}-{max(ops):.0f}), p50 median {statistics.median(p50):.0f} us, p99 median {statistics.median(p99):.0f} us")
    ratios = [d[1] / f[1] for d, f in zip(calls["dsync"], calls["fdatasync"])]
    print(f"{fsync} c{conns} dsync/fdatasync ops per round: {[round(x, 2) for x in ratios]}, median {statistics.median(ratios):.2f}")
PY
