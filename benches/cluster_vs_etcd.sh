#!/usr/bin/env bash
# Replication benchmark behind BENCHMARKS.md ("Issue 16"): durable writes of 100-byte values
# with unique keys at 1, 16 and 64 connections against
#   - ringkv, 3 nodes in cluster mode on loopback (writes to the leader; --fsync group on each),
#   - ringkv, a single node (--fsync group),
#   - etcd 3.4, 3 members on loopback (Debian etcd-server), through its JSON gateway /v3/kv/put
#     (to the leader; etcd fsyncs its WAL before acknowledging, as ringkv group does),
# all running at once, rounds interleaved (system by system within a round) so that the machine's
# drift hits all three alike; then the time from kill -9 of ringkv's leader to the first write
# acknowledged by the new one. Prints one line per run and the medians. Needs wrk; etcd is
# skipped (and said so) when not installed (benches/install-references.sh installs both).
#
# Usage: benches/cluster_vs_etcd.sh [SECONDS_PER_RUN] [ROUNDS] [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-5}
rounds=${2:-5}
kills=${3:-5}
command -v wrk >/dev/null || { echo "wrk not found: benches/install-references.sh" >&2; exit 1; }
have_etcd=1
command -v etcd >/dev/null || { have_etcd=0; echo "etcd not found: skipping it (benches/install-references.sh)" >&2; }
cargo build --release --quiet --bins
work=$(mktemp -d /var/tmp/ringkv-cluster-bench.XXXXXX)   # a real disk, not tmpfs
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.5; rm -rf "$work"' EXIT

peers="1=127.0.0.1:19181,2=127.0.0.1:19182,3=127.0.0.1:19183"
start_node() {
  ./target/release/ringkv --listen "127.0.0.1:1918$1" --data-dir "$work/n$1" --node-id "$1" --peers "$peers" \
    >> "$work/n$1.log" 2>&1 &
  echo $! > "$work/n$1.pid"
}
for i in 1 2 3; do start_node $i; done
./target/release/ringkv --listen 127.0.0.1:19190 --data-dir "$work/single" >> "$work/single.log" 2>&1 &
sleep 1
curl -sf -X POST 127.0.0.1:19181/cluster/init > /dev/null
ringkv_leader() {
  for _ in $(seq 100); do
    for i in 1 2 3; do
      if curl -sf -m 1 "127.0.0.1:1918$i/cluster" 2>/dev/null | grep -q '"state":"Leader"'; then echo $i; return; fi
    done
    sleep 0.1
  done
  echo "no ringkv leader" >&2; exit 1
}

etcd_cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
etcd_leader=""
if [ $have_etcd = 1 ]; then
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$work/e$i" \
      --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
      --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
      --initial-cluster "$etcd_cluster" --initial-cluster-state new --log-level error >> "$work/e$i.log" 2>&1 &
  done
  for _ in $(seq 100); do
    for i in 1 2 3; do
      status=$(curl -sf -m 1 -X POST "127.0.0.1:2379$i/v3/maintenance/status" -d '{}' 2>/dev/null || true)
      if [ -n "$status" ] && python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s.get("leader") and s["leader"]==s["header"]["member_id"] else 1)' "$status"; then
        etcd_leader=$i; break 2
      fi
    done
    sleep 0.2
  done
  [ -n "$etcd_leader" ] || { echo "no etcd leader" >&2; exit 1; }
fi

cat > "$work/ringkv.lua" <<'LUA'
local n = 0
local id = math.random(1, 1000000000)
local value = string.rep("x", 100)
request = function()
  n = n + 1
  return wrk.format("POST", "/set", {["Content-Type"] = "application/json"},
    '{"key":"k-' .. id .. '-' .. n .. '","value":"' .. value .. '"}')
end
LUA
cat > "$work/etcd.lua" <<'LUA'
local chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function b64(data)
  return ((data:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end
local n = 0
local id = math.random(1, 1000000000)
local value = b64(string.rep("x", 100))
request = function()
  n = n + 1
  return wrk.format("POST", "/v3/kv/put", {["Content-Type"] = "application/json"},
    '{"key":"' .. b64('k-' .. id .. '-' .. n) .. '","value":"' .. value .. '"}')
end
LUA

# run LABEL URL CONNS SCRIPT -> "LABEL conns rps p50_us p99_us"
run() {
  local label=$1 url=$2 conns=$3 script=$4
  wrk -t1 -c"$conns" -d"${duration}s" --latency -s "$script" "$url" > "$work/out"
  awk -v label="$label" -v conns="$conns" '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1000000; return v }
    /^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } /^Requests\/sec/ { rps = $2 }
    /Non-2xx/ { bad = $NF }
    END { if (bad) { print label " " conns ": non-2xx answers: " bad > "/dev/stderr"; exit 1 } printf "%s %s %.0f %.0f %.0f\n", label, conns, rps, p50, p99 }' "$work/out"
}

results="$work/results"
: > "$results"
for conns in 1 16 64; do
  for r in $(seq "$rounds"); do
    leader=$(ringkv_leader)
    run ringkv-3 "http://127.0.0.1:1918$leader" "$conns" "$work/ringkv.lua" | tee -a "$results"
    run ringkv-1 "http://127.0.0.1:19190" "$conns" "$work/ringkv.lua" | tee -a "$results"
    [ $have_etcd = 1 ] && run etcd-3 "http://127.0.0.1:2379$etcd_leader" "$conns" "$work/etcd.lua" | tee -a "$results"
  done
done

echo
echo "medians of $rounds rounds of ${duration}s (wrk -t1), ops/s, p50 and p99 in microseconds:"
printf '%-10s %6s %9s %9s %9s\n' system conns ops/s p50 p99
for label in ringkv-3 ringkv-1 etcd-3; do
  for conns in 1 16 64; do
    grep "^$label $conns " "$results" | awk '{print $3, $4, $5}' > "$work/sel" || continue
    [ -s "$work/sel" ] || continue
    med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    printf '%-10s %6s %9s %9s %9s\n' "$label" "$conns" \
      "$(cut -d' ' -f1 "$work/sel" | med)" "$(cut -d' ' -f2 "$work/sel" | med)" "$(cut -d' ' -f3 "$work/sel" | med)"
  done
done

# Failover: kill -9 the leader, then time until a write is acknowledged by any node (tried
# round robin, 200 ms per try); the killed node restarts and catches up before the next kill.
echo
echo "failover: kill -9 of the leader to the first acknowledged write, $kills kills:"
for k in $(seq "$kills"); do
  leader=$(ringkv_leader)
  pid=$(cat "$work/n$leader.pid")
  start=$(date +%s%N)
  kill -9 "$pid"
  acked=""
  while [ -z "$acked" ]; do
    for i in 1 2 3; do
      [ "$i" = "$leader" ] && continue
      code=$(curl -s -o /dev/null -w '%{http_code}' -m 0.2 -X POST "127.0.0.1:1918$i/set" -d "{\"key\":\"failover-$k\",\"value\":$k}" 2>/dev/null || true)
      if [ "$code" = 200 ]; then
        acked=$i; break
      fi
    done
  done
  end=$(date +%s%N)
  echo "kill $k: leader node $leader killed; node $acked acknowledged after $(( (end - start) / 1000000 )) ms"
  start_node "$leader"
  sleep 3
done
