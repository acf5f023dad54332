//! The messages between the serving ring and the background ring, and the order they come in.
//! The serving ring sends [`Job`]s; the background ring answers with [`Event`]s.
//!
//! ```text
//!  serving ring                                 background ring
//!  ────────────                                 ───────────────
//!  memtable full: freeze it
//!  every write to it settled ── Job::Flush ──▶  write an L0 table, sync, rename
//!                                               append the edit to the manifest (synced)
//!  open the new tables,      ◀── Event::Installed { flushed_memtable: Some(id) } ──
//!  install the version, drop the frozen memtable from reads
//!  hand it back              ── Job::Free ───▶  free it here (a walk over every entry)
//!                                               delete the WAL segments it retired
//!
//!                                               compaction due: choose a task, merge
//!                                               append the edit to the manifest (synced)
//!                                               retire the tables it removed
//!  open the new tables,      ◀── Event::Installed { flushed_memtable: None } ──
//!  install the version, close the files of
//!  tables it no longer names; drop the old one
//!
//!  (on either ring) the last `Arc` of a retired
//!  table is dropped: no version names it, no
//!  read or compaction holds it ── Job::DeleteTable ─▶  delete its file
//! ```
//!
//! Flushes are published in freeze order (each claims every seq below its freeze point); an
//! `Installed` is sent only after its edit is durable. `Event::NoSpace` says a flush or
//! compaction is waiting for space; `Event::Failed` that the worker stopped: the serving ring
//! then refuses writes.

use std::path::PathBuf;
use std::sync::Arc;

use crate::memtable::Memtable;
use crate::version::Version;

/// A frozen memtable to write out. Every WAL record up to `flushed_seq` is in it (or failed).
pub struct FlushJob {
    pub memtable_id: u64,
    pub memtable: Arc<Memtable>,
    pub flushed_seq: u64,
    /// WAL segments below this hold no record above `flushed_seq`.
    pub first_live_wal_segment: u64,
}

/// Work sent by the serving ring.
pub enum Job {
    Flush(FlushJob),
    /// Nothing holds this retired table any more (sent by its last `Arc` as it is dropped, see
    /// `TableMeta::retire`): its file can go.
    DeleteTable(u64),
    /// Look for compaction work again (after compactions were resumed).
    Wake,
    /// A flushed memtable the serving ring has let go of. Freeing one is a walk over every entry
    /// (about 100 ms for a 64 MiB memtable of small values here), so it is done on this thread:
    /// on the serving ring it stalled every request in flight.
    Free(Arc<Memtable>),
}

/// News for the serving ring.
/// What one flush or compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub kind: WorkKind,
    /// From the job's start to its edit being durable in the manifest.
    pub duration: std::time::Duration,
    pub tables_in: usize,
    pub tables_out: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    Flush,
    /// A merge of tables into new ones.
    Compaction,
    /// A table moved to the next level unchanged (no I/O but the manifest edit).
    Move,
}

pub enum Event {
    /// A new version is durable in the manifest. `flushed_memtable` is now in a table.
    Installed {
        version: Arc<Version>,
        flushed_memtable: Option<u64>,
        /// The flush or compaction that made it, for `/metrics` and the log.
        work: Work,
    },
    /// The worker stopped on an error; the store must refuse writes.
    Failed(String),
    /// A flush or compaction ran out of space and will retry. Writes that would have to wait for
    /// a flush are refused with `NoSpace` until the next `Installed`.
    NoSpace { op: &'static str, path: PathBuf },
}
