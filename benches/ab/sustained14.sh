#!/bin/bash
# Server CPU per durable write under a sustained load, ringkv against Redis (BENCHMARKS.md,
# "Issue 14, continued: keeping freed memory"). targets14.sh measures 4 s after a fresh start,
# before the first memtable is even flushed; a server that runs for a month spends its time in
# the cycle of memtables filled, frozen, flushed and freed, which this measures.
# Per round, a fresh ringkv and a fresh Redis 7: group SETs at 64 connections against
# appendfsync always, 100-byte values, 100k keys; ringkv-bench for MEASURE_SECONDS (default 30) after 1 s
# of warm-up, redis-benchmark for REDIS_REQUESTS (default 1.5M, about as long). Server CPU is
# user+system from /proc/PID/stat over the measured run, Redis's including its reaped children
# (the AOF rewrites a run this long starts: its compaction, as ringkv's flushes and compactions
# are threads of its own process). ROUNDS rounds (default 5). FSYNC=never pairs ringkv's never
# with appendfsync no instead.
. "$(dirname "$0")/../lib.sh"
OUT=${OUT:-/var/tmp/sustained14}
BIN=${BIN:-target/release}
ROUNDS=${ROUNDS:-5}
SECONDS_MEASURED=${MEASURE_SECONDS:-30}
REDIS_REQUESTS=${REDIS_REQUESTS:-1500000}
FSYNC=${FSYNC:-group}
case $FSYNC in
  group) APPENDFSYNC=always ;;
  never) APPENDFSYNC=no ;;
  *) echo "FSYNC must be group or never" >&2; exit 2 ;;
esac
PORT=18385
RPORT=18386
mkdir -p $OUT
: > $OUT/sustained.txt
bash "$(dirname "$0")/../machine.sh" "$OUT"
# user + system, and the reaped children's (fields 16 and 17).
cpu_ticks() { awk '{print $14 + $15 + $16 + $17}' /proc/$1/stat; }
own_cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
hz=$(getconf CLK_TCK)
if ! command -v redis-server > /dev/null; then
  echo "redis-server not installed (benches/install-references.sh): ringkv only" >&2
fi
for r in $(seq 1 $ROUNDS); do
  rm -rf $OUT/tdata
  $BIN/ringkv --listen 127.0.0.1:$PORT --data-dir $OUT/tdata --fsync $FSYNC > /dev/null 2>&1 &
  pid=$!; wait_for_port $PORT $pid || exit 1
  $BIN/ringkv-bench run --target 127.0.0.1:$PORT --mix set:100 --keys 100000 -c 64 -d 1s -q > /dev/null
  t0=$(cpu_ticks $pid); f0=$(awk '{print $10}' /proc/$pid/stat)
  $BIN/ringkv-bench run --target 127.0.0.1:$PORT --mix set:100 --keys 100000 -c 64 -d ${SECONDS_MEASURED}s -q --json $OUT/t.json > /dev/null
  t1=$(cpu_ticks $pid); f1=$(awk '{print $10}' /proc/$pid/stat)
  huge=$(awk '/^AnonHugePages/{h=$2} /^Rss/{r=$2} END{printf "%.2f", h/r}' /proc/$pid/smaps_rollup)
  kill $pid; wait $pid 2>/dev/null
  python3 - $t0 $t1 $hz $OUT/t.json $f0 $f1 $huge >> $OUT/sustained.txt <<'PY'
import json, sys
t0, t1, hz = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
total = json.load(open(sys.argv[4])); total = total["total"]
n = total["ops"] if "ops" in total else total["requests"]
faults = (int(sys.argv[6]) - int(sys.argv[5])) / n
print(f"ringkv ops/s {total['ops_per_sec']:.0f} cpu_us_per_req {(t1 - t0) / hz * 1e6 / n:.2f} faults_per_req {faults:.4f} huge_share {sys.argv[7]}")
PY
  command -v redis-server > /dev/null || continue
  rm -rf $OUT/rdata; mkdir -p $OUT/rdata
  redis-server --port $RPORT --dir $OUT/rdata --appendonly yes --appendfsync $APPENDFSYNC --save "" > /dev/null 2>&1 &
  pid=$!; wait_for_port $RPORT $pid || exit 1
  timeout 120 redis-benchmark -p $RPORT -c 64 -n 20000 -t set -d 100 -r 100000 -q > /dev/null
  t0=$(cpu_ticks $pid); o0=$(own_cpu_ticks $pid)
  out=$(timeout 600 redis-benchmark -p $RPORT -c 64 -n $REDIS_REQUESTS -t set -d 100 -r 100000 --csv | grep '^"SET"')
  t1=$(cpu_ticks $pid); o1=$(own_cpu_ticks $pid)
  kill $pid; wait $pid 2>/dev/null
  [ -n "$out" ] || { echo "round $r: redis-benchmark gave no result (timed out?)" >&2; exit 1; }
  echo "$out" | tr -d '"' | awk -F, -v t0=$t0 -v t1=$t1 -v o0=$o0 -v o1=$o1 -v hz=$hz -v n=$REDIS_REQUESTS \
    '{printf "redis ops/s %.0f cpu_us_per_req %.2f own_cpu_us_per_req %.2f\n", $2, (t1-t0)/hz*1e6/n, (o1-o0)/hz*1e6/n}' >> $OUT/sustained.txt
done
cat $OUT/sustained.txt
python3 - $OUT/sustained.txt <<'PY'
import sys, statistics
rows = {"ringkv": [], "redis": []}
for line in open(sys.argv[1]):
    words = line.split()
    rows[words[0]].append(dict(zip(words[1::2], map(float, words[2::2]))))
for name, rs in rows.items():
    if rs:
        print(name, {k: statistics.median(r[k] for r in rs) for k in rs[0]})
if rows["redis"]:
    for key, redis_key in (("ops/s", "ops/s"), ("cpu_us_per_req", "cpu_us_per_req"),
                           ("cpu_us_per_req", "own_cpu_us_per_req")):
        ratios = [a[key] / b[redis_key] for a, b in zip(rows["ringkv"], rows["redis"])]
        print(f"ringkv {key} / redis {redis_key}: per round {[round(x, 2) for x in ratios]}, median {statistics.median(ratios):.2f}")
PY
