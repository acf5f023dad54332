#!/bin/bash
# Serving ring flags A/B (BENCHMARKS.md, "Serving ring flags"): SET then GET at 64 connections,
# 5 alternating rounds of two server binaries, $OUT/ringkv-new (before) and $OUT/ringkv-flags
# (after), a fresh server per run.
. "$(dirname "$0")/../lib.sh"
OUT=${OUT:-/var/tmp/bench13}
B=${BIN:-target/release}/ringkv-bench
for r in 1 2 3 4 5; do
  for bin in new flags; do
    rm -rf $OUT/fdata
    $OUT/ringkv-$bin --listen 127.0.0.1:18383 --data-dir $OUT/fdata > /dev/null 2>&1 &
    PID=$!; wait_for_port 18383 $PID || exit 1
    $B run --target 127.0.0.1:18383 --mix set:100 --keys 100000 -c 64 -d 4s --warmup 1s -q --json $OUT/flags-$bin-set-$r.json > /dev/null
    $B run --target 127.0.0.1:18383 --mix get:100 --keys 100000 -c 64 -d 4s --warmup 1s -q --json $OUT/flags-$bin-get-$r.json > /dev/null
    kill $PID; wait $PID 2>/dev/null
  done
done
OUT=$OUT python3 - <<'PY'
import json, os, statistics
OUT=os.environ["OUT"]
for w in ["set","get"]:
    for bin in ["new","flags"]:
        runs=[json.load(open(f"{OUT}/flags-{bin}-{w}-{r}.json")) for r in range(1,6)]
        ops=[r["total"]["ops_per_sec"] for r in runs]; p99=[r["total"]["p99_us"] for r in runs]
        print(w, bin, "ops median", round(statistics.median(ops)), "range", round(min(ops)), round(max(ops)), "p99 median", statistics.median(p99))
    print(w, "paired ratios", [round(json.load(open(f"{OUT}/flags-flags-{w}-{r}.json"))["total"]["ops_per_sec"]/json.load(open(f"{OUT}/flags-new-{w}-{r}.json"))["total"]["ops_per_sec"],3) for r in range(1,6)])
PY
