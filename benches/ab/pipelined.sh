#!/bin/bash
# Pipelined sets A/B (BENCHMARKS.md, "Pipelined sets share a sync"): wrk sends DEPTH pipelined
# `group` SETs per connection at a time (wrk's pipeline mode: a Lua `init` that concatenates
# DEPTH requests), CONNS connections, 5 s after 1 s of warm-up; ROUNDS alternating rounds of
# $OUT/ringkv-before and $OUT/ringkv-after, a fresh server per run. Prints ops/s and the server's
# WAL syncs per set (from /metrics).
. "$(dirname "$0")/../lib.sh"
OUT=${OUT:-/var/tmp/bench14}
DEPTH=${DEPTH:-16}
CONNS=${CONNS:-4}
ROUNDS=${ROUNDS:-5}
PORT=18384
cat > $OUT/pipeline.lua <<LUA
init = function(args)
  local r = {}
  for i = 1, $DEPTH do
    local key = "p" .. math.random(1, 100000)
    local body = '{"key":"' .. key .. '","value":"' .. string.rep("v", 100) .. '"}'
    r[i] = wrk.format("POST", "/set", {["Content-Type"] = "application/json"}, body)
  end
  req = table.concat(r)
end
request = function() return req end
LUA
metric() { curl -s 127.0.0.1:$PORT/metrics | awk -v m="$1" '$1 == m {print $2}'; }
for r in $(seq 1 $ROUNDS); do
  for bin in before after; do
    rm -rf $OUT/pdata
    $OUT/ringkv-$bin --listen 127.0.0.1:$PORT --data-dir $OUT/pdata --fsync group > /dev/null 2>&1 &
    PID=$!; wait_for_port $PORT $PID || exit 1
    wrk -t1 -c$CONNS -d1s -s $OUT/pipeline.lua http://127.0.0.1:$PORT > /dev/null
    s0=$(metric ringkv_wal_syncs_total)
    ops=$(wrk -t1 -c$CONNS -d5s -s $OUT/pipeline.lua http://127.0.0.1:$PORT | awk '/Requests\/sec/ {print $2}')
    s1=$(metric ringkv_wal_syncs_total)
    echo "round $r $bin ops/s $ops syncs/set $(echo "($s1 - $s0) / ($ops * 5)" | bc -l | cut -c1-6)"
    kill $PID; wait $PID 2>/dev/null
  done
done
