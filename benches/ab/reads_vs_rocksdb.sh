#!/bin/bash
# Random reads, ringkv's engine against RocksDB, ROUNDS rounds (default 5) alternating, for the
# ratio issue 14 asks for (BENCHMARKS.md, issue 14, "Random reads"). Each round: RocksDB
# `db_bench` loads KEYS keys (filluniquerandom, fresh directory) and runs readrandom with 16
# threads over them; then `lsm_load` (the binary in LSM, built by `cargo bench --no-run --bench
# lsm_load`) loads KEYS keys and runs its idle random reads with 16 readers. Both: 16-byte keys,
# 100-byte values, no compression, 64 MiB memtable and block cache, O_DIRECT reads and
# background I/O, bloom filters of 10 bits per key; every key read is present.
#   LSM=target/release/deps/lsm_load-<hash> bash benches/ab/reads_vs_rocksdb.sh
set -euo pipefail
ROUNDS=${ROUNDS:-5}
KEYS=${KEYS:-1000000}
READS=${READS:-1000000}
DIR=${DIR:-/var/tmp}
LSM=${LSM:?set LSM to the lsm_load binary}
OUT=${OUT:-$DIR/reads_vs_rocksdb.txt}
command -v db_bench >/dev/null || { echo "db_bench not found (benches/install-references.sh): nothing to compare"; exit 1; }
ROCKS_DIR="$DIR/rocksdb-reads-$$"
flags=(--db="$ROCKS_DIR" --num="$KEYS" --key_size=16 --value_size=100 --compression_type=none
       --write_buffer_size=$((64 << 20)) --cache_size=$((64 << 20)) --use_direct_reads=true
       --use_direct_io_for_flush_and_compaction=true --bloom_bits=10)
: > "$OUT"
for r in $(seq 1 "$ROUNDS"); do
    rm -rf "$ROCKS_DIR"
    db_bench "${flags[@]}" --benchmarks=filluniquerandom --threads=1 --sync=false > /dev/null 2>&1
    log=$(mktemp)
    db_bench "${flags[@]}" --benchmarks=readrandom --threads=16 --reads=$((READS / 16)) \
        --use_existing_db=true --histogram=1 > "$log" 2>&1
    rocks=$(awk '$1 == "readrandom" && $2 == ":" {print $5; exit}' "$log")
    rocks_p=$(awk '/^Percentiles:/ {print $3, $7; exit}' "$log")
    rm -rf "$ROCKS_DIR"
    "$LSM" --keys "$KEYS" --reads "$READS" --compression none --dir "$DIR" > "$log" 2>&1
    read -r ringkv ringkv_p50 ringkv_p99 <<<"$(awk -F'|' '/^\| get, idle/ {gsub(/ /,""); print $4, $5, $6}' "$log")"
    rm -f "$log"
    echo "$r rocksdb $rocks p50/p99 $rocks_p ringkv $ringkv p50/p99 $ringkv_p50 $ringkv_p99 ratio $(python3 -c "print(round($ringkv / $rocks, 2))")" | tee -a "$OUT"
done
python3 - "$OUT" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
rocks = [float(r[2]) for r in rows]; ringkv = [float(r[7]) for r in rows]; ratio = [float(r[-1]) for r in rows]
print(f"RocksDB readrandom {st.median(rocks):.0f}/s ({min(rocks):.0f}-{max(rocks):.0f}); "
      f"ringkv {st.median(ringkv):.0f}/s ({min(ringkv):.0f}-{max(ringkv):.0f}); "
      f"ringkv/RocksDB per round {ratio}, median {st.median(ratio)}")
PY
