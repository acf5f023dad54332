#!/bin/bash
# The cost of a 1 s /metrics scrape (BENCHMARKS.md, "Scraping /metrics under load"): GET at 64
# connections with a scrape every second (ringkv-bench --metrics) and without, 7 runs of each,
# alternating, against one server. BIN: the directory holding ringkv and ringkv-bench.
set -e
BIN=${BIN:-target/release}
OUT=${OUT:-/var/tmp/bench13}
mkdir -p $OUT
DATA=$OUT/data
rm -rf $DATA
$BIN/ringkv --listen 127.0.0.1:18282 --data-dir $DATA > $OUT/server.log 2>&1 &
PID=$!
sleep 1
$BIN/ringkv-bench run --target 127.0.0.1:18282 --mix set:100 --keys 100000 -c 64 -d 10s -q > $OUT/fill.txt
for round in 1 2 3 4 5 6 7; do
  for mode in none scrape; do
    extra=""
    [ $mode = scrape ] && extra="--metrics --metrics-interval 1s"
    $BIN/ringkv-bench run --target 127.0.0.1:18282 --mix get:100 --keys 100000 -c 64 -d 5s --warmup 1s -q $extra --json $OUT/get-$mode-$round.json > $OUT/get-$mode-$round.txt
  done
done
kill $PID; wait $PID || true
OUT=$OUT python3 - <<'PY'
import json, os, statistics
OUT=os.environ["OUT"]
for mode in ["none", "scrape"]:
    runs=[json.load(open(f"{OUT}/get-{mode}-{r}.json")) for r in range(1,8)]
    ops=[r["total"]["ops_per_sec"] for r in runs]
    p99=[r["total"]["p99_us"] for r in runs]
    p50=[r["total"]["p50_us"] for r in runs]
    scrapes=[(r.get("server") or {}).get("scrapes") for r in runs]
    print(mode, "ops/s median", round(statistics.median(ops)), "range", round(min(ops)), round(max(ops)), "p50 median", statistics.median(p50), "p99 median", statistics.median(p99), "p99 range", min(p99), max(p99), "scrapes", scrapes)
PY
