#!/usr/bin/env bash
# The HTTP benchmark matrix behind BENCHMARKS.md: GET of an existing key and SET of 100-byte
# values at 1, 16 and 64 connections, for every fsync strategy, each run REPS times; plus the
# same GET load against a fixed-response tokio-uring server (the HTTP loop's ceiling).
# Prints one line per run and a table of medians. Needs wrk (Debian: apt-get install wrk).
#
# Usage: benches/http_matrix.sh [SECONDS_PER_RUN] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
duration=${1:-5}
reps=${2:-3}
port=18181
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bins
work=$(mktemp -d /var/tmp/ringkv-bench.XXXXXX)   # /var/tmp: a real disk (O_DIRECT), not tmpfs
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/set.lua" <<'LUA'
local n = 0
local value = string.rep("x", 100)
request = function()
  n = n + 1
  return wrk.format("POST", "/set", {["Content-Type"] = "application/json"},
    '{"key":"bench-' .. (n % 100000) .. '","value":"' .. value .. '"}')
end
LUA

# run LABEL URL CONNS [SCRIPT] -> "LABEL conns rps p50_us p99_us"
run() {
  local label=$1 url=$2 conns=$3 script=${4:-}
  local args=(-t1 -c"$conns" -d"${duration}s" --latency)
  [ -n "$script" ] && args+=(-s "$script")
  wrk "${args[@]}" "$url" > "$work/out"
  awk -v label="$label" -v conns="$conns" '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1000000; return v }
    /^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } /^Requests\/sec/ { rps = $2 }
    /Non-2xx/ { bad = $NF }
    END { if (bad) { print "non-2xx answers: " bad > "/dev/stderr"; exit 1 } printf "%s %s %.0f %.0f %.0f\n", label, conns, rps, p50, p99 }' "$work/out"
}

results="$work/results"
: > "$results"
./target/release/http_baseline 127.0.0.1:$port 2>/dev/null &
baseline=$!
wait_for_port $port $baseline || exit 1
for conns in 1 16 64; do for r in $(seq "$reps"); do run baseline-get "http://127.0.0.1:$port/get?key=bench-key" "$conns" | tee -a "$results"; done; done
kill $baseline; wait $baseline 2>/dev/null || true

for fsync in always group periodic:100 never; do
  rm -rf "$work/data"
  ./target/release/ringkv --listen 127.0.0.1:$port --data-dir "$work/data" --fsync "$fsync" 2>/dev/null &
  server=$!
  wait_for_port $port $server || exit 1
  curl -s -X POST "127.0.0.1:$port/set" -d '{"key":"bench-key","value":"xxxxxxxxxx"}' >/dev/null
  for conns in 1 16 64; do
    for r in $(seq "$reps"); do run "$fsync-get" "http://127.0.0.1:$port/get?key=bench-key" "$conns" | tee -a "$results"; done
    for r in $(seq "$reps"); do run "$fsync-set" "http://127.0.0.1:$port/" "$conns" "$work/set.lua" | tee -a "$results"; done
  done
  kill -TERM $server; wait $server 2>/dev/null || true
done

echo
echo "medians of $reps runs of ${duration}s (wrk -t1; p50/p99 in microseconds)"
bash benches/machine.sh
printf '%-18s %5s %10s %8s %8s\n' workload conns req/s p50 p99
sort -k1,1 -k2,2n -k3,3n "$results" | awk -v reps="$reps" '
  { key = $1 " " $2; n[key]++; if (n[key] == int((reps + 1) / 2)) { printf "%-18s %5s %10s %8s %8s\n", $1, $2, $3, $4, $5 } }'
