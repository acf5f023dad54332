#!/usr/bin/env bash
# Installs what the fsync strategy matrix measures ringkv against, from Debian's packages:
# fio (the disk's own latency) and Redis 7 (redis-server, redis-benchmark). Optional: without
# them `cargo bench --bench fsync_strategies` still runs and says what it skipped. Neither the
# server nor the test suite needs them.
set -euo pipefail

missing=()
command -v fio >/dev/null || missing+=(fio)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-references: fio and redis are installed"
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
# Debian starts a redis-server service on 6379; the matrix runs its own on free ports.
$sudo systemctl stop redis-server 2>/dev/null || true
echo "install-references: installed ${missing[*]}"
