//! The store facade: wires the WAL, the memtables, the tables and the background ring, and owns
//! no bytes format and no file I/O of its own. Runs on the serving ring's single thread. Rooms:
//! - `write.rs`: the write path (admit, WAL append, note, settle) and freezing full memtables;
//! - `conditional.rs`: writes that read the key first: deletes, conditional writes, batches;
//! - `read.rs`: the read path (memtables, then the current version's tables);
//! - `scan.rs`: range scans, and the snapshots their later pages read;
//! - `events.rs`: the serving ring's side of the background protocol (install, free, fail);
//! - `memtables.rs`: the active and frozen memtables and their write accounting;
//! - `open.rs`: opening a data directory and recovery;
//! - this file: the engine's state, its figures, and the operations of tests and shutdown.
//!
//! Writes become visible no earlier than they are acknowledged: a record enters a memtable only
//! after its WAL batch is durable (or written, for `periodic`/`never`).

mod conditional;
mod events;
mod memtables;
mod open;
mod read;
mod replicated;
mod scan;
mod write;

pub use conditional::{BatchResult, BatchWrite};
pub use replicated::{Applied, ReplicatedWrite};
pub use scan::{ScanPage, ScanRange, ScanStart, SnapshotId, SCAN_PAGE_BYTES};
pub use write::AppendedWrite;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::background::{Background, BackgroundStatus, Job};
use crate::config::StoreConfig;
use crate::dir_lock::DirLock;
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::sst::TableReaders;
use crate::version::Version;
use crate::wal::{Ticket, WalWriter};
use events::run_events;
use memtables::Memtables;

/// Frozen memtables allowed to wait for their flush before writes pause.
const FROZEN_MEMTABLES_MAX: usize = 1;

/// A value and the version (sequence number) it was written at. `value` is the value's JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedValue {
    pub version: u64,
    pub value: Bytes,
}

/// What a delete removed, and the sequence number of the delete itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub removed: VersionedValue,
    pub seq: u64,
}

/// What opening the store found, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// WAL records replayed (records already in tables are skipped).
    pub records: u64,
    pub segments: u64,
    pub tables: usize,
    pub next_seq: u64,
    pub torn_tail: bool,
    /// How long making the WAL segment the first write goes to ready took (pre-writing it, on a
    /// fresh data directory or after a full segment): done before the store is handed out, so
    /// the first write does not pay for it.
    pub wal_ready: std::time::Duration,
}

/// Figures for benchmarks and operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStats {
    pub memtable_bytes: u64,
    pub frozen_memtables: usize,
    pub tables_per_level: Vec<usize>,
    pub bytes_per_level: Vec<u64>,
    pub block_cache_hits: u64,
    pub block_cache_misses: u64,
    pub block_cache_bytes: usize,
    /// Memory the live tables' indexes and bloom filters hold (kept for every live table), and
    /// their data blocks.
    pub table_index_bytes: usize,
    pub table_filter_bytes: usize,
    pub table_blocks: usize,
    /// Table files open for reads (at most `max_open_tables`).
    pub open_table_files: usize,
    pub flushes: u64,
    pub compactions: u64,
    pub table_bytes_written: u64,
    /// Flushed memtables freed on the background thread, off the serving ring.
    pub memtables_freed_in_background: u64,
    pub compacting: bool,
    /// Every write with a sequence number up to this is in a table the manifest names.
    pub flushed_seq: u64,
    /// Level-0 tables, counting memtables being flushed (what the slowdown and stop compare).
    pub l0_tables_with_flushes: usize,
    pub stalls: StallStats,
}

/// Time writes spent held back because level 0 had too many tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StallStats {
    /// Writes delayed at the slowdown count, and their total delay.
    pub slowed_writes: u64,
    pub slowdown_micros: u64,
    /// Writes that waited at the stop count, and their total wait.
    pub stopped_writes: u64,
    pub stop_micros: u64,
}

impl Default for Stalls {
    fn default() -> Self {
        Stalls {
            stats: StallStats::default(),
            slowdown_latency: crate::metrics::Histogram::latency(),
            stop_latency: crate::metrics::Histogram::latency(),
            slowdown_next: None,
            stopped_since: None,
        }
    }
}

/// See [`Engine::admit`].
struct Stalls {
    stats: StallStats,
    /// Per stalled write: its delay at the slowdown count, its wait at the stop count.
    slowdown_latency: crate::metrics::Histogram,
    stop_latency: crate::metrics::Histogram,
    /// When the next slowed write may go (the pace is shared by every writer).
    slowdown_next: Option<std::time::Instant>,
    /// When the current stop began, while writes are stopped (for the log lines).
    stopped_since: Option<std::time::Instant>,
}

/// A write appended to the WAL but not yet applied to a memtable.
struct Pending {
    seq: u64,
    value: Option<Bytes>,
    ticket: Ticket,
}

/// See the module documentation.
pub struct Engine<F: FileSystem> {
    fs: F,
    config: StoreConfig,
    wal: Rc<WalWriter<F>>,
    /// The newest unapplied write of each key, for read-modify-write.
    pending: RefCell<HashMap<Bytes, Pending>>,
    /// The seq of every write appended and not yet settled (applied or failed): a scan's
    /// snapshot leaves them out, since they become visible after it was taken.
    unsettled_seqs: RefCell<std::collections::BTreeSet<u64>>,
    /// The snapshots of scans whose later pages are still to come.
    snapshots: RefCell<scan::Snapshots>,
    memtables: RefCell<Memtables>,
    version: RefCell<Arc<Version>>,
    /// Bumped on every version install: a read that awaited table I/O re-checks with it.
    version_changes: Cell<u64>,
    readers: TableReaders<F>,
    /// Taken by `close`, which waits for the thread.
    background: RefCell<Option<Background>>,
    background_status: Arc<BackgroundStatus>,
    /// Woken when a frozen memtable is flushed or the background fails.
    progress: Notify,
    /// Why the background ring stopped, if it did: writes are refused from then on.
    background_failure: RefCell<Option<String>>,
    /// Set while flushes fail for want of space (cleared by the next installed version): a write
    /// that would wait for a flush gets this error (507) instead of waiting without end.
    background_no_space: RefCell<Option<(&'static str, std::path::PathBuf)>>,
    /// The end of the durable sequence-number lease: writes get versions below it only
    /// (`crate::seq_lease`). One writer at a time extends it; after a failed extension the
    /// next try waits until `seq_lease_retry_at`, unless no version is left.
    seq_lease: crate::seq_lease::SeqLease<F>,
    seq_lease_end: Cell<u64>,
    seq_lease_extending: Cell<bool>,
    seq_lease_retry_at: Cell<u64>,
    /// Level-0 write stalls: the slowdown's shared pace and the time writes spent delayed or
    /// stopped.
    stalls: RefCell<Stalls>,
    /// What the background ring reported doing.
    work: crate::metrics::WorkStats,
    /// Set when `close` starts: background events still queued are dropped from then on (their
    /// edits are in the manifest; the next open reads them there).
    closing: Cell<bool>,
    /// In cluster mode (`crate::cluster`), one more than the last log index applied: writes
    /// come only from the Raft log, at their index. `None` on a single node.
    replicated_next: Cell<Option<u64>>,
    _lock: DirLock,
}

impl<F: FileSystem> Engine<F> {
    /// The seq (version) the next write will get.
    pub fn next_seq(&self) -> u64 {
        self.wal.next_seq()
    }

    /// How many WAL syncs have completed since start.
    pub fn wal_syncs(&self) -> u64 {
        self.wal.syncs()
    }

    /// The WAL writer, for its figures (`/metrics`).
    pub fn wal(&self) -> &WalWriter<F> {
        &self.wal
    }

    /// The store's clock (virtual under the simulator).
    pub fn now(&self) -> std::time::Instant {
        self.fs.now()
    }

    /// What the background ring's flushes and compactions did.
    pub fn work_stats(&self) -> &crate::metrics::WorkStats {
        &self.work
    }

    /// Per stalled write, the time it was held back: (at the slowdown count, at the stop count).
    pub fn stall_latency(
        &self,
    ) -> (
        std::cell::Ref<'_, crate::metrics::Histogram>,
        std::cell::Ref<'_, crate::metrics::Histogram>,
    ) {
        let stalls = self.stalls.borrow();
        let (slowdown, stop) = std::cell::Ref::map_split(stalls, |s| (&s.slowdown_latency, &s.stop_latency));
        (slowdown, stop)
    }

    /// The options the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn stats(&self) -> EngineStats {
        use std::sync::atomic::Ordering::Relaxed;
        let version = self.version.borrow();
        let memtables = self.memtables.borrow();
        let (hits, misses, cache_bytes) = self.readers.cache_stats();
        let status = &self.background_status;
        EngineStats {
            memtable_bytes: memtables.approximate_bytes(),
            frozen_memtables: memtables.frozen_count(),
            tables_per_level: version.levels.iter().map(Vec::len).collect(),
            bytes_per_level: version.level_bytes(),
            block_cache_hits: hits,
            block_cache_misses: misses,
            block_cache_bytes: cache_bytes,
            table_index_bytes: version.tables().map(|table| table.index_resident_bytes()).sum(),
            table_filter_bytes: version.tables().map(|table| table.filter.resident_bytes()).sum(),
            table_blocks: version.tables().map(|table| table.index.len()).sum(),
            open_table_files: self.readers.open_files(),
            flushes: status.flushes.load(Relaxed),
            compactions: status.compactions.load(Relaxed),
            table_bytes_written: status.table_bytes_written.load(Relaxed),
            memtables_freed_in_background: status.memtables_freed.load(Relaxed),
            compacting: status.compacting.load(Relaxed),
            flushed_seq: version.flushed_seq,
            l0_tables_with_flushes: version.levels[0].len() + memtables.frozen_count(),
            stalls: self.stalls.borrow().stats,
        }
    }

    /// Freezes the active memtable (if it holds anything) and waits until every frozen memtable
    /// is in a table. For tests and benchmarks.
    pub async fn flush(&self) -> Result<()> {
        if !self.memtables.borrow().active_is_empty() {
            self.freeze();
        }
        loop {
            let progress = self.progress.notified();
            if let Some(cause) = &*self.background_failure.borrow() {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
            if self.memtables.borrow().frozen_count() == 0 {
                return Ok(());
            }
            progress.await;
        }
    }

    /// Stops starting compactions (flushes go on), or resumes them. For benchmarks that measure
    /// reads with and without a compaction running.
    pub fn pause_compactions(&self, paused: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        self.background_status.compaction_paused.store(paused, SeqCst);
        if !paused {
            self.send_background(Job::Wake);
        }
    }

    /// Waits until the background ring has nothing left to do: no memtable waiting and no
    /// compaction due. For tests and benchmarks.
    pub async fn settle_background(&self) -> Result<()> {
        self.flush().await?;
        let mut idle_checks = 0;
        // The background says when it is idle: the engine never runs the chooser itself.
        while idle_checks < 3 {
            let idle = self
                .background_status
                .compaction_idle
                .load(std::sync::atomic::Ordering::SeqCst);
            idle_checks = if idle { idle_checks + 1 } else { 0 };
            self.fs.sleep(std::time::Duration::from_millis(20)).await;
            if let Some(cause) = &*self.background_failure.borrow() {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
        }
        Ok(())
    }

    /// Stops taking writes, makes everything written durable, and stops the WAL tasks and the
    /// background ring (a compaction in progress is abandoned; its inputs stay live).
    pub async fn close(&self) -> Result<()> {
        self.closing.set(true);
        let outcome = self.wal.close().await;
        // Taken out of its cell: the wait below must not hold a borrow across the await.
        let background = self.background.borrow_mut().take();
        if let Some(mut background) = background {
            background.shutdown().await;
        }
        outcome
    }

    /// Queues a job for the background ring (dropped once it has stopped or been shut down: a
    /// failure was reported then, or the store is closing).
    pub(super) fn send_background(&self, job: Job) {
        if let Some(background) = &*self.background.borrow() {
            background.send(job);
        }
    }
}
