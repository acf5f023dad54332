#!/bin/bash
# Issue 14's targets against Redis, in one run (BENCHMARKS.md, "Issue 14: against the targets"):
# per round, a fresh ringkv and a fresh Redis 7 for each pair, 100-byte values, 100k keys:
#   group SET, 64 connections    vs Redis appendfsync always, redis-benchmark -c 64
#   never SET, 64 connections    vs Redis appendfsync no
#   always SET, 1 connection     vs Redis appendfsync always, -c 1 (p50)
#   GET, 64 connections          (ringkv only: no slower than before)
# ringkv is driven by ringkv-bench (closed loop, 4 s after 1 s of warm-up), Redis by
# redis-benchmark (-n sized to about 4 s). Server CPU per request is user+system time from
# /proc/PID/stat over the measured run, divided by the requests; the client's (ringkv-bench or
# redis-benchmark, from /usr/bin/time) likewise: the two share the machine's two cores, so a
# cheaper client leaves more CPU to its server. ROUNDS rounds (default 5);
# prints one line per run; the medians are computed by the Python at the end.
. "$(dirname "$0")/../lib.sh"
OUT=${OUT:-/var/tmp/bench14}
BIN=${BIN:-target/release}
ROUNDS=${ROUNDS:-5}
PORT=18385
RPORT=18386
mkdir -p $OUT
: > $OUT/targets.txt
bash "$(dirname "$0")/../machine.sh" "$OUT"
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
hz=$(getconf CLK_TCK)
ringkv_run() { # label fsync conns mix
  rm -rf $OUT/tdata
  $BIN/ringkv --listen 127.0.0.1:$PORT --data-dir $OUT/tdata --fsync $2 > /dev/null 2>&1 &
  local pid=$!; wait_for_port $PORT $pid || exit 1
  local keys="--keys 100000"
  if [ "$4" = get ]; then
    $BIN/ringkv-bench run --target 127.0.0.1:$PORT --mix set:100 $keys -c 64 --requests 100000 -d 20s -q > /dev/null
  fi
  $BIN/ringkv-bench run --target 127.0.0.1:$PORT --mix $4:100 $keys -c $3 -d 1s -q > /dev/null
  local t0=$(cpu_ticks $pid)
  local client=$( { /usr/bin/time -f "%U %S" $BIN/ringkv-bench run --target 127.0.0.1:$PORT --mix $4:100 $keys -c $3 -d 4s -q --json $OUT/t.json > /dev/null; } 2>&1 | tail -1 | awk '{print $1 + $2}')
  local t1=$(cpu_ticks $pid)
  kill $pid; wait $pid 2>/dev/null
  python3 - "$1" $t0 $t1 $hz $OUT/t.json $client >> $OUT/targets.txt <<'PY'
import json, sys
label, t0, t1, hz, path, client = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
total = json.load(open(path))["total"]
n = total["ops"] if "ops" in total else total["requests"]
print(f"{label} ops/s {total['ops_per_sec']:.0f} p50_us {total['p50_us']} p99_us {total['p99_us']} cpu_us_per_req {(t1 - t0) / hz * 1e6 / n:.1f} client_cpu_us_per_req {client * 1e6 / n:.1f}")
PY
}
redis_run() { # label appendfsync conns n
  rm -rf $OUT/rdata; mkdir -p $OUT/rdata
  redis-server --port $RPORT --dir $OUT/rdata --appendonly yes --appendfsync $2 --save "" > /dev/null 2>&1 &
  local pid=$!; wait_for_port $RPORT $pid || exit 1
  timeout 120 redis-benchmark -p $RPORT -c $3 -n 20000 -t set -d 100 -r 100000 -q > /dev/null
  local t0=$(cpu_ticks $pid)
  local out=$( { /usr/bin/time -f "CLIENT %U %S" timeout 600 redis-benchmark -p $RPORT -c $3 -n $4 -t set -d 100 -r 100000 --csv; } 2>&1 | grep -E '^("SET"|CLIENT)')
  local t1=$(cpu_ticks $pid)
  local client=$(echo "$out" | awk '/^CLIENT/{print $2 + $3}')
  out=$(echo "$out" | grep '^"SET"')
  kill $pid; wait $pid 2>/dev/null
  [ -n "$out" ] || { echo "$1: redis-benchmark gave no result (timed out?)" >&2; exit 1; }
  # "SET","rps","avg","min","p50","p95","p99","max"
  echo "$out" | tr -d '"' | awk -F, -v l="$1" -v t0=$t0 -v t1=$t1 -v hz=$hz -v n=$4 -v c=$client \
    '{printf "%s ops/s %.0f p50_us %.0f p99_us %.0f cpu_us_per_req %.1f client_cpu_us_per_req %.1f\n", l, $2, $5*1000, $7*1000, (t1-t0)/hz*1e6/n, c*1e6/n}' >> $OUT/targets.txt
}
for r in $(seq 1 $ROUNDS); do
  ringkv_run "ringkv group set c64" group 64 set
  redis_run "redis always set c64" always 64 100000
  ringkv_run "ringkv never set c64" never 64 set
  redis_run "redis no set c64" no 64 160000
  ringkv_run "ringkv always set c1" always 1 set
  redis_run "redis always set c1" always 1 12000
  ringkv_run "ringkv get c64" group 64 get
done
python3 - $OUT/targets.txt <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, rest = line.split(" ops/s ")
    words = ("ops/s " + rest).split()
    fields = dict(zip(words[0::2], map(float, words[1::2])))
    runs[label].append(fields)
for label, rs in runs.items():
    med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
    rng = {k: (min(r[k] for r in rs), max(r[k] for r in rs)) for k in rs[0]}
    print(f"{label}: " + ", ".join(f"{k} {med[k]:.1f} ({rng[k][0]:.0f}-{rng[k][1]:.0f})" for k in med))
PY
python3 - $OUT/targets.txt <<'PY'
# Per-round ratios, ringkv over Redis (each round's pair ran back to back).
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, rest = line.split(" ops/s ")
    words = ("ops/s " + rest).split()
    runs[label].append(dict(zip(words[0::2], map(float, words[1::2]))))
for a, b, key in [("ringkv group set c64", "redis always set c64", "ops/s"),
                  ("ringkv group set c64", "redis always set c64", "cpu_us_per_req"),
                  ("ringkv never set c64", "redis no set c64", "ops/s"),
                  ("ringkv never set c64", "redis no set c64", "cpu_us_per_req"),
                  ("ringkv always set c1", "redis always set c1", "p50_us")]:
    ratios = [x[key] / y[key] for x, y in zip(runs[a], runs[b])]
    print(f"{a} / {b}, {key}: per round {[round(r, 2) for r in ratios]}, median {statistics.median(ratios):.2f}")
PY
