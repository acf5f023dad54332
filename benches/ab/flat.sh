#!/bin/bash
# A ready first segment (BENCHMARKS.md, "A ready first segment"): group SETs in the first 5 s after
# a fresh server answers and in the next 5 s, at 1 and 64 connections, ROUNDS (default 3)
# alternating rounds of $OUT/ringkv-$A (before; default flags) and $OUT/ringkv-$B (after; default
# flat).
OUT=${OUT:-/var/tmp/bench13}
A=${A:-flags}
B=${B:-flat}
ROUNDS=${ROUNDS:-3}
BENCH=${BIN:-target/release}/ringkv-bench
for r in $(seq 1 $ROUNDS); do
  for bin in $A $B; do
    for c in 1 64; do
      rm -rf $OUT/flatdata
      $OUT/ringkv-$bin --listen 127.0.0.1:18484 --data-dir $OUT/flatdata > $OUT/flat-$bin.log 2>&1 &
      PID=$!
      until curl -s -o /dev/null localhost:18484/get?key=x; do sleep 0.01; done
      $BENCH run --target 127.0.0.1:18484 --mix set:100 -c $c -d 5s -q --json $OUT/flat-$bin-$c-$r-a.json > /dev/null
      $BENCH run --target 127.0.0.1:18484 --mix set:100 -c $c -d 5s -q --json $OUT/flat-$bin-$c-$r-b.json > /dev/null
      kill $PID; wait $PID 2>/dev/null
    done
  done
done
OUT=$OUT A=$A B=$B ROUNDS=$ROUNDS python3 - <<'PY'
import json, os, statistics
OUT=os.environ["OUT"]
ROUNDS=int(os.environ["ROUNDS"])
for c in [1,64]:
    for bin in [os.environ["A"], os.environ["B"]]:
        a=[json.load(open(f"{OUT}/flat-{bin}-{c}-{r}-a.json"))["total"]["p99_us"] for r in range(1,ROUNDS+1)]
        b=[json.load(open(f"{OUT}/flat-{bin}-{c}-{r}-b.json"))["total"]["p99_us"] for r in range(1,ROUNDS+1)]
        mx=[json.load(open(f"{OUT}/flat-{bin}-{c}-{r}-a.json"))["total"]["max_us"] for r in range(1,ROUNDS+1)]
        print(c, bin, "first 5 s p99", a, "next 5 s p99", b, "ratios", [round(x/y,2) for x,y in zip(a,b)], "first max", mx)
PY
grep -o "WAL segment ready in [0-9]* ms" $OUT/flat-$B.log
