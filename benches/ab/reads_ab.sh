#!/bin/bash
# Engine point reads A/B (BENCHMARKS.md, issue 14 "Random reads"): two `lsm_load` binaries
# $OUT/lsm_$A and $OUT/lsm_$B in turn, ROUNDS rounds (default 5), a fresh data directory per run:
# KEYS keys loaded (default 1,000,000), then READS idle random reads by 16 readers (the phase
# the RocksDB comparison uses), no compression. The process's CPU over the read phase is not
# separable from the load, so the figures are the phase's ops/s, p50 and p99, the block cache
# hits, and the misses per second (each miss is one device read). Prints medians, ranges and
# paired B/A ratios.
#   cp target/release/deps/lsm_load-<hash> $OUT/lsm_before   (build each side first)
OUT=${OUT:-/var/tmp/ab}
A=${A:-before}
B=${B:-after}
ROUNDS=${ROUNDS:-5}
KEYS=${KEYS:-1000000}
READS=${READS:-900000}
: > "$OUT/reads_ab.txt"
for r in $(seq 1 "$ROUNDS"); do
  for bin in $A $B; do
    log="$OUT/reads-$bin-$r.log"
    "$OUT/lsm_$bin" --keys "$KEYS" --reads "$READS" --compression none --dir /var/tmp > "$log" 2>&1
    read -r ops p50 p99 secs <<<"$(awk -F'|' '/^\| get, idle/ {gsub(/ /,""); sub(/s$/,"",$9); print $4, $5, $6, $9}' "$log")"
    read -r hits misses <<<"$(grep -o 'idle reads: [0-9]* hits, [0-9]* misses' "$log" | grep -o '[0-9]*' | xargs)"
    echo "$r $bin $ops $p50 $p99 $hits $(python3 -c "print(round($misses / $secs))")" >> "$OUT/reads_ab.txt"
  done
done
echo "round binary ops/s p50 p99 cache_hits misses/s"
cat "$OUT/reads_ab.txt"
python3 - "$OUT/reads_ab.txt" "$A" "$B" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
a, b = sys.argv[2], sys.argv[3]
def col(bin, i): return [float(r[i]) for r in rows if r[1] == bin]
for i, name in [(2, "ops/s"), (3, "p50 us"), (4, "p99 us"), (6, "misses/s")]:
    x, y = col(a, i), col(b, i)
    ratios = [round(q / p, 2) for p, q in zip(x, y)]
    print(f"{name}: {a} {st.median(x):.0f} ({min(x):.0f}-{max(x):.0f})  {b} {st.median(y):.0f} ({min(y):.0f}-{max(y):.0f})  {b}/{a} per round {ratios} median {st.median(ratios)}")
PY
