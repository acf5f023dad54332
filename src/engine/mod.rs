//! The store facade: the write path (WAL append, durability wait, memtable insert, freezing full
//! memtables), the read path (memtables, then tables through the current version) and the
//! serving ring's side of the background work (requesting flushes, installing versions). Wires
//! the modules; owns no bytes format and no file I/O of its own. Opening and recovery: `open.rs`.
//!
//! Runs on the serving ring's single thread. Writes become visible no earlier than they are
//! acknowledged: a record enters a memtable only after its WAL batch is durable (or written, for
//! `periodic`/`never`). Read-modify-write (`delete`) reads the newest *appended* state of a key,
//! acknowledged or not, so that it serialises with writes in sequence order.

mod memtables;
mod open;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Notify;

use crate::background::{Background, BackgroundStatus, Event, FlushJob, Job};
use crate::config::StoreConfig;
use crate::dir_lock::DirLock;
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::memtable::{Entry, Memtable};
use crate::sst::TableReaders;
use crate::version::Version;
use crate::wal::{RecordKind, Ticket, WalWriter};
use memtables::{FrozenAt, Memtables, Slot};

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
    pub next_version: u64,
    pub torn_tail: bool,
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
    pub flushes: u64,
    pub compactions: u64,
    pub table_bytes_written: u64,
    /// Flushed memtables freed on the background thread, off the serving ring.
    pub memtables_freed_in_background: u64,
    pub compacting: bool,
    /// Every write with a sequence number up to this is in a table the manifest names.
    pub flushed_seq: u64,
}

/// A write appended to the WAL but not yet applied to a memtable.
struct Pending {
    version: u64,
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
    memtables: RefCell<Memtables>,
    version: RefCell<Arc<Version>>,
    /// Bumped on every version install: a read that awaited table I/O re-checks with it.
    version_changes: Cell<u64>,
    readers: TableReaders<F>,
    /// Tables that left the live set, by the install (`version_changes` value) that removed
    /// them. A read that holds an older version may still need them.
    retiring: RefCell<Vec<(u64, Vec<u64>)>>,
    /// How many reads in flight hold the version of each install, oldest install first.
    reads_by_install: RefCell<ReadsByInstall>,
    background: RefCell<Background>,
    background_status: Arc<BackgroundStatus>,
    /// Woken when a frozen memtable is flushed or the background fails.
    progress: Notify,
    /// Why the background ring stopped, if it did: writes are refused from then on.
    background_failure: RefCell<Option<String>>,
    /// Set while flushes fail for want of space (cleared by the next installed version): a write
    /// that would wait for a flush gets this error (507) instead of waiting without end.
    background_no_space: RefCell<Option<(&'static str, std::path::PathBuf)>>,
    _lock: DirLock,
}

/// Takes the tables no read can need any more out of `retiring` (tables, by the install that
/// removed them): those removed at or before `oldest_read`, the install whose version the oldest
/// read in flight holds (all of them when no read is in flight).
fn take_releasable(retiring: &mut Vec<(u64, Vec<u64>)>, oldest_read: Option<u64>) -> Vec<u64> {
    let mut released = Vec::new();
    retiring.retain_mut(|(removed_by, obsolete)| {
        if oldest_read.is_some_and(|oldest| oldest < *removed_by) {
            return true;
        }
        released.append(obsolete);
        false
    });
    released
}

/// Reads in flight counted by the install whose version they hold. A read always takes the
/// newest install, so entries stay in install order; emptied ones are dropped from the front.
/// No allocation per read once the deque has grown to the number of installs a read can span.
#[derive(Default)]
struct ReadsByInstall(VecDeque<(u64, usize)>);

impl ReadsByInstall {
    fn oldest(&self) -> Option<u64> {
        self.0.front().map(|&(install, _)| install)
    }
}

/// Counts a read as holding the version of one install until dropped (also when the read fails
/// or its future is dropped mid-way).
struct ReadPin<'a> {
    reads: &'a RefCell<ReadsByInstall>,
    install: u64,
}

impl<'a> ReadPin<'a> {
    fn new(reads: &'a RefCell<ReadsByInstall>, install: u64) -> Self {
        let mut reads_mut = reads.borrow_mut();
        match reads_mut.0.back_mut() {
            Some((newest, count)) if *newest == install => *count += 1,
            _ => reads_mut.0.push_back((install, 1)),
        }
        ReadPin { reads, install }
    }
}

impl Drop for ReadPin<'_> {
    fn drop(&mut self) {
        let mut reads = self.reads.borrow_mut();
        if let Some((_, count)) = reads.0.iter_mut().find(|(install, _)| *install == self.install) {
            *count -= 1;
        }
        while reads.0.front().is_some_and(|&(_, count)| count == 0) {
            reads.0.pop_front();
        }
    }
}

impl<F: FileSystem> Engine<F> {
    /// The newest acknowledged value of `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<VersionedValue>> {
        if let Some(entry) = self.memtables.borrow().get(key) {
            return Ok(visible(entry));
        }
        Ok(self.table_lookup(key).await?.and_then(visible))
    }

    /// The newest version of `key` in the tables of the current version.
    async fn table_lookup(&self, key: &[u8]) -> Result<Option<Entry>> {
        let version = self.version.borrow().clone();
        let pin = ReadPin::new(&self.reads_by_install, self.version_changes.get());
        let mut found = None;
        for table in version.tables_for(key) {
            if let Some((version, value)) = self.readers.get(table, key).await? {
                found = Some(Entry { version, value });
                break;
            }
        }
        drop(pin);
        self.release_unused_tables();
        Ok(found)
    }

    /// Closes and hands back for deletion the tables that left the live set, once no read holds
    /// a version that still names them. A read keeps the version it started with across its
    /// awaits, and may still have to open one of its tables; a table removed by install `i` is
    /// named by every version before `i`, so it waits for every read that started before `i`.
    fn release_unused_tables(&self) {
        let released: Vec<u64> = {
            let mut retiring = self.retiring.borrow_mut();
            if retiring.is_empty() {
                return;
            }
            let oldest_read = self.reads_by_install.borrow().oldest();
            take_releasable(&mut retiring, oldest_read)
        };
        if released.is_empty() {
            return;
        }
        for &number in &released {
            self.readers.close(number);
        }
        self.background.borrow().send(Job::Release(released));
    }

    /// Stores `value` (JSON text) under `key`; returns its version once durable per the fsync
    /// strategy.
    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        self.admit().await?;
        let (version, ticket) = self.wal.append(RecordKind::Put, key, value)?;
        let slot = self.note_append(key, value);
        let key = Bytes::copy_from_slice(key);
        let value = Bytes::copy_from_slice(value);
        self.settle(slot, key, version, Some(value), ticket).await?;
        Ok(version)
    }

    /// Deletes `key`; returns the value it removed, or `None` if there was none (then nothing is
    /// written).
    pub async fn delete(&self, key: &[u8]) -> Result<Option<Deletion>> {
        self.admit().await?;
        let (current, unacknowledged) = loop {
            if let Some(pending) = self.pending.borrow().get(key) {
                let value = pending.value.clone().map(|value| VersionedValue {
                    version: pending.version,
                    value,
                });
                break (value, Some(pending.ticket.clone()));
            }
            if let Some(entry) = self.memtables.borrow().get(key) {
                break (visible(entry), None);
            }
            let changes = self.version_changes.get();
            let from_tables = self
                .table_lookup(key)
                .await
                .map_err(|error| Error::ReadBeforeDelete(Box::new(error)))?;
            // The lookup awaited I/O: a write to the key, or a flush that moved memtable data to a
            // table this lookup did not see, may have happened meanwhile. Look again.
            let raced = self.pending.borrow().contains_key(key)
                || self.memtables.borrow().get(key).is_some()
                || self.version_changes.get() != changes;
            if !raced {
                break (from_tables.and_then(visible), None);
            }
        };
        let Some(removed) = current else {
            // Absent only because of a delete not yet durable: answer once it is, so that a 404
            // never reports a state a crash could take back.
            if let Some(ticket) = unacknowledged {
                ticket.wait().await?;
            }
            return Ok(None);
        };
        let (seq, ticket) = self.wal.append(RecordKind::Delete, key, b"")?;
        let slot = self.note_append(key, b"");
        self.settle(slot, Bytes::copy_from_slice(key), seq, None, ticket)
            .await?;
        Ok(Some(Deletion { removed, seq }))
    }

    /// Waits while too many memtables wait for their flush; refuses writes after a background
    /// failure.
    async fn admit(&self) -> Result<()> {
        loop {
            // Created before the checks so that a wake-up in between is not missed.
            let progress = self.progress.notified();
            if let Some(cause) = &*self.background_failure.borrow() {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
            if !self.memtables_full() {
                return Ok(());
            }
            if let Some((op, path)) = &*self.background_no_space.borrow() {
                return Err(Error::NoSpace {
                    op,
                    path: path.clone(),
                });
            }
            progress.await;
        }
    }

    /// Accounts a write just appended and freezes the active memtable once it is full. Runs in
    /// the same synchronous step as the append, so every write below a freeze's `end_seq`
    /// belongs to the frozen memtable.
    fn note_append(&self, key: &[u8], value: &[u8]) -> Rc<Slot> {
        let bytes = Memtable::entry_bytes(key.len(), value.len());
        let slot = self.memtables.borrow_mut().note_append(bytes);
        let can_freeze = self.memtables.borrow().frozen_count() < FROZEN_MEMTABLES_MAX;
        if can_freeze && self.memtables.borrow().active_bytes() >= self.config.memtable_bytes {
            self.freeze();
        }
        slot
    }

    /// Whether writes must pause: the active memtable is full and cannot be frozen, because as
    /// many frozen ones as allowed still wait for their flush. (Pausing while any memtable was
    /// frozen stalled every write for the whole of each flush: 200 ms at 64 connections.)
    fn memtables_full(&self) -> bool {
        let memtables = self.memtables.borrow();
        memtables.frozen_count() >= FROZEN_MEMTABLES_MAX
            && memtables.active_bytes() >= self.config.memtable_bytes
    }

    fn freeze(&self) {
        let at = FrozenAt {
            end_seq: self.wal.next_seq(),
            first_live_wal_segment: self.wal.live_segment_floor(),
        };
        self.memtables.borrow_mut().freeze(at);
        self.request_ready_flushes();
    }

    fn request_ready_flushes(&self) {
        let ready = self.memtables.borrow_mut().take_ready_flushes();
        for slot in ready {
            let at = slot.frozen_at().expect("only frozen memtables are flushed");
            self.background.borrow().send(Job::Flush(FlushJob {
                memtable_id: slot.id,
                memtable: slot.table.clone(),
                flushed_seq: at.end_seq - 1,
                first_live_wal_segment: at.first_live_wal_segment,
            }));
        }
    }

    /// Records a write as pending, waits for its batch, then applies it (or forgets it on failure).
    async fn settle(
        &self,
        slot: Rc<Slot>,
        key: Bytes,
        version: u64,
        value: Option<Bytes>,
        ticket: Ticket,
    ) -> Result<()> {
        self.pending.borrow_mut().insert(
            key.clone(),
            Pending {
                version,
                value: value.clone(),
                ticket: ticket.clone(),
            },
        );
        let outcome = ticket.wait().await;
        if outcome.is_ok() {
            slot.table.insert(key.clone(), version, value);
        }
        {
            let mut pending = self.pending.borrow_mut();
            if pending.get(&key).is_some_and(|p| p.version == version) {
                pending.remove(&key);
            }
        }
        slot.settled();
        if slot.frozen_at().is_some() {
            self.request_ready_flushes();
        }
        outcome
    }

    /// Applies what the background ring reports.
    async fn on_event(&self, event: Event) {
        match event {
            Event::Installed {
                version,
                flushed_memtable,
                obsolete,
            } => {
                // Open new tables before any read can pick them from the version.
                for table in version.tables() {
                    if let Err(error) = self.readers.open(table).await {
                        self.fail(format!("cannot open new table: {error}"));
                        return;
                    }
                }
                self.background_no_space.borrow_mut().take();
                let previous = std::mem::replace(&mut *self.version.borrow_mut(), version);
                self.version_changes.set(self.version_changes.get() + 1);
                if let Some(id) = flushed_memtable {
                    let flushed = self.memtables.borrow_mut().remove_flushed(id);
                    if let Some(memtable) = flushed {
                        self.background.borrow().send(Job::Free(memtable));
                    }
                }
                drop(previous);
                if !obsolete.is_empty() {
                    self.retiring
                        .borrow_mut()
                        .push((self.version_changes.get(), obsolete));
                }
                self.release_unused_tables();
                self.progress.notify_waiters();
            }
            Event::Failed(cause) => self.fail(cause),
            Event::NoSpace { op, path } => {
                *self.background_no_space.borrow_mut() = Some((op, path));
                self.progress.notify_waiters();
            }
        }
    }

    fn fail(&self, cause: String) {
        eprintln!("ringkv: refusing writes until restart: {cause}");
        self.background_failure.borrow_mut().get_or_insert(cause);
        self.progress.notify_waiters();
    }

    /// The version the next write will get.
    pub fn next_version(&self) -> u64 {
        self.wal.next_seq()
    }

    /// How many WAL syncs have completed since start.
    pub fn wal_syncs(&self) -> u64 {
        self.wal.syncs()
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
            flushes: status.flushes.load(Relaxed),
            compactions: status.compactions.load(Relaxed),
            table_bytes_written: status.table_bytes_written.load(Relaxed),
            memtables_freed_in_background: status.memtables_freed.load(Relaxed),
            compacting: status.compacting.load(Relaxed),
            flushed_seq: version.flushed_seq,
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
            self.background.borrow().send(Job::Wake);
        }
    }

    /// Waits until the background ring has nothing left to do: no memtable waiting and no
    /// compaction due. For tests and benchmarks.
    pub async fn settle_background(&self) -> Result<()> {
        self.flush().await?;
        let mut idle_checks = 0;
        while idle_checks < 3 {
            let version = self.version.borrow().clone();
            let due = crate::compaction::choose(&version.summaries(), &[], &self.policy()).is_some();
            let busy = due
                || self
                    .background_status
                    .compacting
                    .load(std::sync::atomic::Ordering::SeqCst);
            idle_checks = if busy { 0 } else { idle_checks + 1 };
            self.fs.sleep(std::time::Duration::from_millis(20)).await;
            if let Some(cause) = &*self.background_failure.borrow() {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
        }
        Ok(())
    }

    fn policy(&self) -> crate::compaction::Policy {
        open::policy(&self.config)
    }

    /// Stops taking writes, makes everything written durable, and stops the WAL tasks and the
    /// background ring (a compaction in progress is abandoned; its inputs stay live).
    pub async fn close(&self) -> Result<()> {
        let outcome = self.wal.close().await;
        // Taken out of its cell: the wait below must not hold a borrow across the await.
        let mut background = std::mem::replace(&mut *self.background.borrow_mut(), Background::stopped());
        background.shutdown().await;
        outcome
    }
}

/// A memtable or table entry as a reader sees it: tombstones are absent.
fn visible(entry: Entry) -> Option<VersionedValue> {
    entry.value.map(|value| VersionedValue {
        version: entry.version,
        value,
    })
}

/// Forwards background events to the engine for as long as it lives.
async fn run_events<F: FileSystem>(engine: Weak<Engine<F>>, mut events: UnboundedReceiver<Event>) {
    while let Some(event) = events.recv().await {
        let Some(engine) = engine.upgrade() else { return };
        engine.on_event(event).await;
    }
}

#[cfg(test)]
mod tests {
    use super::take_releasable;

    /// A read that started two installs ago still needs a table the latest install removed,
    /// though no read holds the version just before it (the rule this replaced deleted it).
    #[test]
    fn a_table_waits_for_every_read_that_started_before_its_removal() {
        let mut retiring = vec![(3, vec![30])];
        assert_eq!(take_releasable(&mut retiring, Some(1)), Vec::<u64>::new());
        assert_eq!(take_releasable(&mut retiring, Some(2)), Vec::<u64>::new());
        assert_eq!(take_releasable(&mut retiring, Some(3)), vec![30]);
        let mut retiring = vec![(2, vec![20, 21]), (4, vec![40])];
        assert_eq!(take_releasable(&mut retiring, Some(3)), vec![20, 21]);
        assert_eq!(take_releasable(&mut retiring, None), vec![40]);
        assert!(retiring.is_empty());
    }
}
