#!/usr/bin/env bash
# Installs what the benchmarks measure ringkv against, from Debian's packages: fio (the disk's
# own latency), Redis 7 (redis-server, redis-benchmark), RocksDB's db_bench (rocksdb-tools, for
# benches/rocksdb_side_by_side.sh) and wrk (pipelined HTTP load, benches/ab/pipelined.sh).
# Optional: without them the benchmarks still run and say what they skipped. Neither the server
# nor the test suite needs them.
set -euo pipefail

missing=()
command -v fio >/dev/null || missing+=(fio)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
command -v db_bench >/dev/null || missing+=(rocksdb-tools)
command -v wrk >/dev/null || missing+=(wrk)
command -v etcd >/dev/null || missing+=(etcd-server)
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-references: fio, redis, db_bench, wrk and etcd are installed"
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
# Debian starts a redis-server service on 6379; the matrix runs its own on free ports.
$sudo systemctl stop redis-server 2>/dev/null || true
# Likewise etcd on 2379/2380; the cluster benchmark runs its own three members.
$sudo systemctl stop etcd 2>/dev/null || true
$sudo systemctl disable etcd 2>/dev/null || true
echo "install-references: installed ${missing[*]}"
