//! The background worker: its state, the flush and compaction loops, what a failure does to
//! them, and publishing a version (manifest first, then the serving ring). The work itself is in
//! `flush.rs` and `compaction.rs`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, WeakUnboundedSender};
use tokio::sync::Notify;

use super::protocol::{Event, FlushJob, Job, Work, WorkKind};
use super::{BackgroundOptions, BackgroundStatus};
use crate::error::{Error, Result};
use crate::filename::FileKind;
use crate::io::FileSystem;
use crate::manifest::ManifestWriter;
use crate::rate_limit::RateLimiter;
use crate::sst::Retirement;
use crate::version::{Version, VersionEdit, LEVELS};

pub(super) struct Worker<F: FileSystem> {
    pub(super) fs: F,
    pub(super) options: BackgroundOptions,
    pub(super) version: RefCell<Arc<Version>>,
    /// Held across a manifest append and the version change it makes, so that edits and
    /// versions are published in the same order by the flush and the compaction loops.
    pub(super) manifest: tokio::sync::Mutex<ManifestWriter<F>>,
    pub(super) events: UnboundedSender<Event>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) status: Arc<BackgroundStatus>,
    /// Flushes and compactions are paced separately, each at the configured rate: a flush (what
    /// writers may be waiting for) never waits for budget a compaction used.
    pub(super) flush_limiter: RateLimiter,
    pub(super) compaction_limiter: RateLimiter,
    pub(super) pointers: RefCell<Vec<Option<Bytes>>>,
    pub(super) next_file_number: Cell<u64>,
    pub(super) wal_deleted_below: Cell<u64>,
    /// Wakes the compaction loop: a new version, compactions resumed, or the worker stopping.
    pub(super) compaction_wake: Notify,
    pub(super) failed: Cell<bool>,
    /// Given to every table an edit removes: queues its file's deletion on this ring when the
    /// last holder drops it. Holds the job queue weakly, so that it never keeps this worker
    /// running; a table let go after the worker stopped keeps its file until the next start-up.
    pub(super) retirement: Retirement,
    /// Tables written for an edit whose manifest append failed with a transient error: named
    /// by no version. Deleted once a later append has succeeded (see `publish`).
    pub(super) unpublished_tables: RefCell<Vec<std::path::PathBuf>>,
}

/// What a flush or compaction tells `publish` about itself (the rest comes from its edit).
pub(super) struct WorkDone {
    pub kind: WorkKind,
    pub started: std::time::Instant,
    pub tables_in: usize,
    pub bytes_read: u64,
}

/// How long to wait before retrying work that hit a transient error (`ENOSPC`, `EMFILE`).
const TRANSIENT_RETRY: Duration = Duration::from_secs(1);

/// After a transient error ([`Error::is_transient`]): says so (a log line; after `ENOSPC` also
/// the serving ring, which then refuses writes that would wait for a flush with 507) and waits
/// before the same work is tried again.
async fn wait_to_retry<F: FileSystem>(fs: &F, events: &UnboundedSender<Event>, error: Error) {
    tracing::warn!("{error}; background work retries in {TRANSIENT_RETRY:?}");
    if let Error::NoSpace { op, path } = error {
        let _ = events.send(Event::NoSpace { op, path });
    }
    fs.sleep(TRANSIENT_RETRY).await;
}

impl<F: FileSystem> Worker<F> {
    pub(super) async fn start(
        fs: F,
        options: BackgroundOptions,
        version: Arc<Version>,
        events: UnboundedSender<Event>,
        jobs: WeakUnboundedSender<Job>,
        stop: Arc<AtomicBool>,
        status: Arc<BackgroundStatus>,
    ) -> Result<Self> {
        // The start-up snapshot waits for space as flushes do: the store serves reads and takes
        // writes into the memtable meanwhile (a write that needs a flush gets 507). It used to
        // fail the background ring, leaving the store read-only until a restart (simulator
        // seed 147, once errors had to match their injected fault).
        let manifest = loop {
            match ManifestWriter::create(&fs, &options.dir, &version.snapshot()).await {
                Ok(manifest) => break manifest,
                Err(error) if error.is_transient() && !stop.load(Ordering::SeqCst) => {
                    wait_to_retry(&fs, &events, error).await;
                }
                Err(error) => return Err(error),
            }
        };
        Ok(Worker {
            flush_limiter: RateLimiter::new(options.write_bytes_per_sec, options.io_bytes)
                .lifted_by(stop.clone()),
            compaction_limiter: RateLimiter::new(options.write_bytes_per_sec, options.io_bytes)
                .lifted_by(stop.clone()),
            next_file_number: Cell::new(version.next_file_number),
            wal_deleted_below: Cell::new(version.first_live_wal_segment),
            fs,
            options,
            version: RefCell::new(version),
            manifest: tokio::sync::Mutex::new(manifest),
            events,
            stop,
            status,
            pointers: RefCell::new(vec![None; LEVELS]),
            compaction_wake: Notify::new(),
            failed: Cell::new(false),
            retirement: Retirement::new(move |number| {
                if let Some(jobs) = jobs.upgrade() {
                    let _ = jobs.send(Job::DeleteTable(number));
                }
            }),
            unpublished_tables: RefCell::new(Vec::new()),
        })
    }

    /// Flushes and compactions run side by side on this ring, so that a long compaction never
    /// holds back a flush that writers may be waiting for.
    pub(super) async fn run(self, jobs: UnboundedReceiver<Job>) {
        tokio::join!(self.flush_loop(jobs), self.compaction_loop());
    }

    pub(super) fn halted(&self) -> bool {
        self.failed.get() || self.stop.load(Ordering::SeqCst)
    }

    pub(super) async fn flush_loop(&self, mut jobs: UnboundedReceiver<Job>) {
        let mut flushes: VecDeque<FlushJob> = VecDeque::new();
        loop {
            if flushes.is_empty() {
                match jobs.recv().await {
                    Some(job) => self.take(job, &mut flushes).await,
                    None => break,
                }
            }
            while let Ok(job) = jobs.try_recv() {
                self.take(job, &mut flushes).await;
            }
            if self.halted() {
                break;
            }
            let Some(job) = flushes.front() else { continue };
            match self.flush(job).await {
                Ok(()) => {
                    flushes.pop_front();
                }
                // Retried after ENOSPC; dropped with the worker otherwise (the WAL still has it).
                Err(error) => {
                    if !self.recover_from(error).await {
                        break;
                    }
                }
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        self.compaction_wake.notify_one();
    }

    pub(super) async fn compaction_loop(&self) {
        loop {
            let woken = self.compaction_wake.notified();
            if self.halted() {
                return;
            }
            if let Some(task) = self.choose() {
                self.status.compaction_idle.store(false, Ordering::SeqCst);
                if let Err(error) = self.compact(task).await {
                    if !self.recover_from(error).await {
                        return;
                    }
                }
            } else {
                self.status.compaction_idle.store(true, Ordering::SeqCst);
                woken.await;
            }
        }
    }

    /// Whether the loop that hit `error` should go on: after a transient error (`ENOSPC`,
    /// `EMFILE`), yes, once a pause has
    /// passed; after anything else the worker stops and the engine is told to refuse writes.
    pub(super) async fn recover_from(&self, error: Error) -> bool {
        match error {
            Error::ShuttingDown => false,
            error if error.is_transient() => {
                wait_to_retry(&self.fs, &self.events, error).await;
                !self.halted()
            }
            error => {
                if !self.failed.replace(true) {
                    tracing::error!("background failure, refusing writes until restart: {error}");
                    let _ = self.events.send(Event::Failed(error.to_string()));
                }
                self.compaction_wake.notify_one();
                false
            }
        }
    }

    pub(super) async fn take(&self, job: Job, flushes: &mut VecDeque<FlushJob>) {
        match job {
            Job::Flush(flush) => flushes.push_back(flush),
            Job::Wake => self.compaction_wake.notify_one(),
            Job::Free(memtable) => {
                // The flush job's own reference is gone by now: this thread dropped it as the
                // flush returned, before it could take any further job; the serving ring let go
                // of its slots before it sent this. A scan's snapshot may still hold it: the last
                // of the two to let go (`Arc::into_inner` decides, atomically) frees it, and a
                // snapshot hands it back here to do so.
                if let Some(last) = Arc::into_inner(memtable) {
                    drop(last);
                    self.status.memtables_freed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Job::DeleteTable(number) => {
                let path = FileKind::Table(number).path(&self.options.dir);
                if let Err(error) = self.fs.remove(&path).await {
                    tracing::warn!("could not delete obsolete table {}: {error}", path.display());
                }
            }
        }
    }

    pub(super) fn allocate(&self) -> u64 {
        let number = self.next_file_number.get();
        self.next_file_number.set(number + 1);
        number
    }

    /// Makes `edit` durable in the manifest, retires the tables it removed from the live set
    /// (a table moved to another level stays), then announces the new version.
    pub(super) async fn publish(
        &self,
        mut edit: VersionEdit,
        flushed_memtable: Option<u64>,
        work: WorkDone,
    ) -> Result<()> {
        let mut manifest = self.manifest.lock().await;
        edit.next_file_number = Some(self.next_file_number.get());
        if let Err(error) = manifest.append(&edit).await {
            if error.is_transient() {
                // The flush or compaction is redone into new tables; these are named by nothing.
                self.unpublished_tables
                    .borrow_mut()
                    .extend(edit.added.iter().map(|(_, table)| table.path.clone()));
            }
            return Err(error);
        }
        // Deleted only now: the failed edit's bytes may have reached the file, and until an
        // append (which rewrites its block and syncs) succeeded, a crash could bring it back.
        let unpublished = std::mem::take(&mut *self.unpublished_tables.borrow_mut());
        for path in unpublished {
            crate::io::remove_leftover(&self.fs, &path).await;
        }
        // `apply` takes the edit's next file number, recorded just above.
        let previous = self.version.borrow().clone();
        let version = Arc::new(previous.apply(&edit));
        for table in previous.tables_not_in(&version) {
            table.retire(self.retirement.clone());
        }
        drop(previous);
        *self.version.borrow_mut() = version.clone();
        let work = Work {
            kind: work.kind,
            duration: self.fs.now().saturating_duration_since(work.started),
            tables_in: work.tables_in,
            tables_out: edit.added.len(),
            bytes_read: work.bytes_read,
            bytes_written: edit.added.iter().map(|(_, table)| table.file_bytes).sum(),
        };
        let name = match work.kind {
            WorkKind::Flush => "flush",
            WorkKind::Compaction => "compaction",
            WorkKind::Move => "table move",
        };
        tracing::info!(
            tables_in = work.tables_in,
            tables_out = work.tables_out,
            bytes_read = work.bytes_read,
            bytes_written = work.bytes_written,
            duration_ms = u64::try_from(work.duration.as_millis()).unwrap_or(u64::MAX),
            "{name} done"
        );
        let _ = self.events.send(Event::Installed {
            version: version.clone(),
            flushed_memtable,
            work,
        });
        if manifest.wants_rewrite() {
            match ManifestWriter::create(&self.fs, &self.options.dir, &version.snapshot()).await {
                Ok(rewritten) => *manifest = rewritten,
                // The edit is durable and announced: failing here would make the flush loop
                // retry a published flush (a second table with the same entries). The old log
                // stays valid and is rewritten at a later publish.
                Err(error) if error.is_transient() => {
                    tracing::warn!("{error}; the manifest is rewritten later");
                }
                Err(error) => return Err(error),
            }
        }
        drop(manifest);
        // Not idle until the loop has looked at the new version.
        self.status.compaction_idle.store(false, Ordering::SeqCst);
        self.compaction_wake.notify_one();
        Ok(())
    }
}
