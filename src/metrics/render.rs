//! The `/metrics` page: every family, in the order of `docs/metrics.md`.

use super::exposition::Exposition;
use crate::config::Durability;
use crate::engine::Engine;
use crate::http::stats::{HttpStats, Op};
use crate::io::FileSystem;

/// The whole page, read from the owners of each figure; `open_connections` from the server.
pub fn render<F: FileSystem>(engine: &Engine<F>, http: &HttpStats, open_connections: usize) -> Vec<u8> {
    let mut page = Exposition::default();
    requests(&mut page, http, open_connections);
    wal(&mut page, engine);
    storage(&mut page, engine);
    super::process::write(&mut page, http.started);
    page.into_bytes()
}

fn requests(page: &mut Exposition, http: &HttpStats, open_connections: usize) {
    page.family(
        "ringkv_requests_total",
        "counter",
        "Requests answered, by operation and status code.",
    );
    for ((op, code), count) in http.requests.borrow().iter() {
        let code = code.to_string();
        page.sample(
            "ringkv_requests_total",
            &[("op", op.name()), ("code", &code)],
            *count,
        );
    }
    page.family(
        "ringkv_request_duration_seconds",
        "histogram",
        "From a request's last byte to its answer, by operation and (for writes) the durability class that applied: for a write, the acknowledgement latency.",
    );
    page.histogram(
        "ringkv_request_duration_seconds",
        &[("op", "get")],
        &http.get_latency,
    );
    page.histogram(
        "ringkv_request_duration_seconds",
        &[("op", "scan")],
        &http.scan_latency,
    );
    for op in [Op::Set, Op::Del, Op::Batch] {
        for class in Durability::ALL {
            if let Some(histogram) = http.write_latency(op, class) {
                page.histogram(
                    "ringkv_request_duration_seconds",
                    &[("op", op.name()), ("durability", class.name())],
                    histogram,
                );
            }
        }
    }
    page.single(
        "ringkv_connections_accepted_total",
        "counter",
        "Connections accepted and served.",
        http.connections_accepted.get(),
    );
    page.single(
        "ringkv_connections_refused_total",
        "counter",
        "Connections answered 503 and closed at --max-connections.",
        http.connections_refused.get(),
    );
    page.single(
        "ringkv_connections_open",
        "gauge",
        "Connections being served.",
        open_connections as u64,
    );
}

fn wal<F: FileSystem>(page: &mut Exposition, engine: &Engine<F>) {
    let wal = engine.wal();
    let stats = wal.stats();
    let now = engine.now();
    page.single(
        "ringkv_wal_writes_total",
        "counter",
        "WAL writes (one per group-commit batch).",
        stats.writes.get(),
    );
    page.single(
        "ringkv_wal_written_bytes_total",
        "counter",
        "Bytes of WAL writes, the rewritten partial block before each batch and its padding included.",
        stats.written_bytes.get(),
    );
    page.single(
        "ringkv_wal_syncs_total",
        "counter",
        "WAL syncs that succeeded: rounds of fdatasync or fsync calls that made everything written before them durable, and O_DSYNC writes.",
        stats.syncs.get(),
    );
    page.single(
        "ringkv_wal_sync_errors_total",
        "counter",
        "WAL syncs that failed (each poisons the WAL: writes are refused until a restart).",
        stats.sync_errors.get(),
    );
    page.single(
        "ringkv_wal_segments_recycled_total",
        "counter",
        "WAL segments made ready by renaming a retired one (no byte written).",
        stats.segments_recycled.get(),
    );
    page.single(
        "ringkv_wal_segments_created_total",
        "counter",
        "WAL segments created and pre-written with zeros (no retired one was free).",
        stats.segments_created.get(),
    );
    page.single(
        "ringkv_wal_zero_bytes_total",
        "counter",
        "Zero bytes pre-written into new WAL segments.",
        stats.zero_bytes.get(),
    );
    page.family(
        "ringkv_wal_write_duration_seconds",
        "histogram",
        "One WAL write, from submission to completion (an O_DSYNC write included).",
    );
    page.histogram("ringkv_wal_write_duration_seconds", &[], &stats.write_latency);
    page.family(
        "ringkv_wal_sync_duration_seconds",
        "histogram",
        "One WAL sync: an fdatasync or fsync call, or an O_DSYNC write.",
    );
    page.histogram("ringkv_wal_sync_duration_seconds", &[], &stats.sync_latency);
    page.family(
        "ringkv_wal_batch_records",
        "histogram",
        "Records per WAL write (group-commit batch size).",
    );
    page.histogram("ringkv_wal_batch_records", &[], &stats.batch_records);
    page.family(
        "ringkv_wal_batch_bytes",
        "histogram",
        "Record bytes per WAL write (group-commit batch size).",
    );
    page.histogram("ringkv_wal_batch_bytes", &[], &stats.batch_bytes);
    let (written, durable) = wal.positions();
    page.single(
        "ringkv_wal_written_sequence",
        "gauge",
        "The last sequence number (version) written to the WAL.",
        stats.written_seq.get(),
    );
    page.single(
        "ringkv_wal_durable_sequence",
        "gauge",
        "The last sequence number known durable: every write up to it survives a power loss.",
        stats.durable_seq.get(),
    );
    page.single(
        "ringkv_wal_written_position_bytes",
        "gauge",
        "Where the written log ends: segment number times segment size plus the offset.",
        written,
    );
    page.single(
        "ringkv_wal_durable_position_bytes",
        "gauge",
        "Where the durable log ends, in the same units as the written position.",
        durable,
    );
    page.single(
        "ringkv_wal_unsynced_bytes",
        "gauge",
        "Bytes written but not yet durable (written minus durable position).",
        written.saturating_sub(durable),
    );
    page.family(
        "ringkv_wal_exposure_seconds",
        "gauge",
        "Age of the oldest write acknowledged but not yet durable: the window a power loss now would take back (0 when none).",
    );
    page.sample_f64(
        "ringkv_wal_exposure_seconds",
        &[],
        stats.exposure_age(now).as_secs_f64(),
    );
}

fn storage<F: FileSystem>(page: &mut Exposition, engine: &Engine<F>) {
    let stats = engine.stats();
    let work = engine.work_stats();
    page.single(
        "ringkv_flushes_total",
        "counter",
        "Memtable flushes published.",
        work.flushes.get(),
    );
    page.single(
        "ringkv_flush_written_bytes_total",
        "counter",
        "Bytes of tables written by flushes.",
        work.flush_written_bytes.get(),
    );
    page.family(
        "ringkv_flush_duration_seconds",
        "histogram",
        "One flush, from its start to its manifest edit being durable.",
    );
    page.histogram("ringkv_flush_duration_seconds", &[], &work.flush_latency);
    page.family(
        "ringkv_compactions_total",
        "counter",
        "Compactions published: merges rewrite tables, moves pass one to the next level unchanged.",
    );
    page.sample(
        "ringkv_compactions_total",
        &[("kind", "merge")],
        work.compactions.get(),
    );
    page.sample("ringkv_compactions_total", &[("kind", "move")], work.moves.get());
    page.single(
        "ringkv_compaction_read_bytes_total",
        "counter",
        "Bytes of input tables merged by compactions.",
        work.compaction_read_bytes.get(),
    );
    page.single(
        "ringkv_compaction_written_bytes_total",
        "counter",
        "Bytes of tables written by compactions.",
        work.compaction_written_bytes.get(),
    );
    page.family(
        "ringkv_compaction_duration_seconds",
        "histogram",
        "One merge, from its start to its manifest edit being durable.",
    );
    page.histogram(
        "ringkv_compaction_duration_seconds",
        &[],
        &work.compaction_latency,
    );
    page.family(
        "ringkv_write_stall_seconds",
        "histogram",
        "Time one write was held back because level 0 had too many tables: delayed at the slowdown count, or waiting at the stop count.",
    );
    let (slowed, stopped) = engine.stall_latency();
    page.histogram("ringkv_write_stall_seconds", &[("kind", "slowdown")], &slowed);
    page.histogram("ringkv_write_stall_seconds", &[("kind", "stop")], &stopped);
    page.single(
        "ringkv_memtable_bytes",
        "gauge",
        "Bytes in the active memtable.",
        stats.memtable_bytes,
    );
    page.single(
        "ringkv_scan_snapshots",
        "gauge",
        "Scan snapshots kept for the cursors of later pages (each holds the tables and memtables it reads until --scan-snapshot-ttl after its last page).",
        engine.scan_snapshots() as u64,
    );
    page.single(
        "ringkv_memtables_frozen",
        "gauge",
        "Frozen memtables waiting for their flush.",
        stats.frozen_memtables as u64,
    );
    page.family("ringkv_level_tables", "gauge", "Tables per LSM level.");
    for (level, tables) in stats.tables_per_level.iter().enumerate() {
        page.sample(
            "ringkv_level_tables",
            &[("level", &level.to_string())],
            *tables as u64,
        );
    }
    page.family(
        "ringkv_level_bytes",
        "gauge",
        "Bytes of table files per LSM level.",
    );
    for (level, bytes) in stats.bytes_per_level.iter().enumerate() {
        page.sample("ringkv_level_bytes", &[("level", &level.to_string())], *bytes);
    }
    page.single(
        "ringkv_block_cache_hits_total",
        "counter",
        "Table block reads served from the block cache.",
        stats.block_cache_hits,
    );
    page.single(
        "ringkv_block_cache_misses_total",
        "counter",
        "Table block reads that went to the disk.",
        stats.block_cache_misses,
    );
    page.single(
        "ringkv_block_cache_bytes",
        "gauge",
        "Bytes of blocks held by the block cache.",
        stats.block_cache_bytes as u64,
    );
}
