#!/usr/bin/env bash
# ringkv's engine (`cargo bench --bench lsm_load`) and RocksDB's `db_bench` (Debian package
# rocksdb-tools, installed by benches/install-references.sh) on the same machine, one after the
# other, with the same shape: 16-byte keys, 100-byte values, no compression, 64 MiB memtable and
# block cache, O_DIRECT reads and background I/O, the same concurrency and equal durability.
#
#   loads without sync:  db_bench filluniquerandom sync=false, 1 thread  | lsm_load --fsync never, 1 writer
#                        (and again with --wal-io buffered: RocksDB's WAL goes to the page cache)
#   loads with sync:     db_bench fillrandom sync=true, 16 threads        | lsm_load --fsync group, 16 writers
#   random reads:        db_bench readrandom, 16 threads, all keys present| lsm_load's idle reads, 16 readers
#
# Reported per engine: ops/s, p50/p99/p99.9 (µs), write amplification (bytes the process wrote,
# /proc/PID/io write_bytes, over the keys and values loaded), space amplification (the data
# directory after the load over the keys and values), peak RSS (VmHWM).
#
# Usage: benches/rocksdb_side_by_side.sh [KEYS] [SYNC_KEYS]
#   KEYS       keys for the unsynced load and the reads (default 2,000,000)
#   SYNC_KEYS  writes for the synced loads (default 200,000; each one waits for a sync)
# Environment: DIR (default /var/tmp; needs O_DIRECT, not tmpfs), OUT (report file).
# Without db_bench it runs ringkv only and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${1:-2000000}
SYNC_KEYS=${2:-200000}
DIR=${DIR:-/var/tmp}
OUT=${OUT:-/dev/stdout}
ROCKS_DIR="$DIR/rocksdb-side-by-side-$$"

have_db_bench=true
command -v db_bench >/dev/null || have_db_bench=false

# Runs "$@" and samples its /proc entries until it exits; prints "write_bytes hwm_kib" on fd 3.
watch_process() {
    "$@" &
    local pid=$! written=0 hwm=0 sample
    while kill -0 "$pid" 2>/dev/null; do
        # A sample taken as the process exits can come back empty (a zombie's status has no
        # VmHWM line): keep the last good one, or the report prints 0 (it did, 2026-12-01).
        sample=$(awk '/^write_bytes/ {print $2}' "/proc/$pid/io" 2>/dev/null || true)
        [ -n "$sample" ] && written=$sample
        sample=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [ -n "$sample" ] && hwm=$sample
        sleep 0.2
    done
    wait "$pid"
    echo "$written $hwm" >&3
}

# Extracts "ops/s p50 p99 p99.9" of benchmark $2 from db_bench output $1.
db_bench_figures() {
    awk -v name="$2" '
        $1 == name && $2 == ":" { ops = $5 }
        found == 0 && /^Percentiles:/ && ops != "" { p50 = $3; p99 = $7; p999 = $9; found = 1 }
        END { printf "%s %s %s %s\n", ops, p50, p99, p999 }
    ' "$1"
}

rocksdb_run() {
    local label=$1 benchmark=$2 threads=$3 num=$4 writes=$5 sync=$6 existing=$7 log
    log=$(mktemp)
    local flags=(
        --db="$ROCKS_DIR" --benchmarks="$benchmark" --num="$num" --threads="$threads"
        --key_size=16 --value_size=100 --compression_type=none
        --write_buffer_size=$((64 << 20)) --cache_size=$((64 << 20))
        --use_direct_reads=true --use_direct_io_for_flush_and_compaction=true
        --bloom_bits=10 --histogram=1 --sync="$sync" --use_existing_db="$existing"
    )
    [ "$writes" -gt 0 ] && flags+=(--writes="$writes")
    [ "$benchmark" = readrandom ] && flags+=(--reads=$((num / threads)))
    local io
    io=$( { watch_process db_bench "${flags[@]}" >"$log" 2>&1; } 3>&1 )
    read -r ops p50 p99 p999 <<<"$(db_bench_figures "$log" "$benchmark")"
    read -r written hwm <<<"$io"
    local user=$(( (writes > 0 ? writes * threads : num) * 116 ))
    local space
    space=$(du -sb "$ROCKS_DIR" | cut -f1)
    printf '| RocksDB %s | %s | %s | %s | %s | %.2f | %.2f | %.0f |\n' "$label" "$ops" "$p50" "$p99" "$p999" \
        "$(echo "$written / $user" | bc -l)" "$(echo "$space / ($num * 116)" | bc -l)" "$(echo "$hwm / 1024" | bc -l)" >>"$OUT"
    rm -f "$log"
}

ringkv_run() {
    local label=$1; shift
    local log
    log=$(mktemp)
    # `--compression none`: lsm_load's default is LZ4 (the server's), db_bench runs without.
    cargo bench --bench lsm_load -- --dir "$DIR" --compression none "$@" >"$log" 2>&1
    grep -E '^\| (load|get, idle)' "$log" | sed "s/^| /| ringkv $label: /" >>"$OUT"
    grep -E '^- (write amplification|space amplification|RSS|WAL)' "$log" | sed 's/^/    /' >>"$OUT"
    rm -f "$log"
}

{
    echo "## ringkv and RocksDB side by side ($(date -u +%Y-%m-%d), ringkv $(git rev-parse --short HEAD), $(db_bench --version 2>/dev/null | head -1 || true))"
    echo
    echo "$KEYS keys unsynced and for reads, $SYNC_KEYS synced writes; 16-byte keys, 100-byte values, no compression, 64 MiB memtable and block cache, O_DIRECT."
    echo
    bash benches/machine.sh "$DIR"
    echo
} >>"$OUT"

if $have_db_bench; then
    echo "| run | ops/s | p50 µs | p99 µs | p99.9 µs | write amp | space amp | peak RSS MiB |" >>"$OUT"
    echo "|---|---|---|---|---|---|---|---|" >>"$OUT"
    rm -rf "$ROCKS_DIR"
    rocksdb_run "load, sync=false, 1 thread" filluniquerandom 1 "$KEYS" 0 false false
    rocksdb_run "random reads, 16 threads" readrandom 16 "$KEYS" 0 false true
    rm -rf "$ROCKS_DIR"
    rocksdb_run "load, sync=true, 16 threads" fillrandom 16 "$SYNC_KEYS" $((SYNC_KEYS / 16)) true false
    rm -rf "$ROCKS_DIR"
else
    echo "db_bench not found (benches/install-references.sh installs rocksdb-tools): RocksDB skipped." >>"$OUT"
fi
echo >>"$OUT"
echo "ringkv (lsm_load tables: ops, ops/s, p50, p99, p99.9, max µs, time):" >>"$OUT"
ringkv_run "never, 1 writer, 16 readers" --keys "$KEYS" --fsync never --writers 1 --readers 16 --reads "$KEYS"
# The same load with the WAL in the page cache, as RocksDB's is (`--wal-io buffered`): what the
# unsynced comparison is without O_DIRECT.
ringkv_run "never, 1 writer, WAL buffered" --keys "$KEYS" --fsync never --wal-io buffered --writers 1 --readers 1 --reads 0
ringkv_run "group, 16 writers" --keys "$SYNC_KEYS" --fsync group --writers 16 --readers 16 --reads "$SYNC_KEYS"
