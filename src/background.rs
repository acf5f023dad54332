//! The background ring: a thread with its own tokio-uring runtime that flushes frozen memtables to
//! L0 tables, runs compactions, publishes each new version through the manifest, and deletes what
//! the manifest no longer needs (retired WAL segments at once; obsolete tables once the serving
//! ring has stopped reading them). It talks to the serving ring only through channels; it never
//! touches the WAL writer or the live memtable.
//!
//! Flushes and compactions run side by side (two loops on this ring), so writers never wait for a
//! compaction; they publish through one manifest lock, in order. `ENOSPC` backs off and retries the same work (nothing is lost: a table is only published after
//! it is complete and synced); any other failure is reported and stops the worker.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use crate::compaction::{self, Policy, Task};
use crate::error::{Error, Result};
use crate::io::{FileSystem, ThreadHandle};
use crate::manifest::ManifestWriter;
use crate::memtable::Memtable;
use crate::rate_limit::RateLimiter;
use crate::sst::{self, TableBuilder, TableMeta};
use crate::version::{Version, VersionEdit, LEVELS};
use crate::wal;

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
    /// The serving ring no longer reads these tables: their files can go.
    Release(Vec<u64>),
    /// Look for compaction work again (after compactions were resumed).
    Wake,
    /// A flushed memtable the serving ring has let go of. Freeing one is a walk over every entry
    /// (about 100 ms for a 64 MiB memtable of small values here), so it is done on this thread:
    /// on the serving ring it stalled every request in flight.
    Free(Arc<Memtable>),
}

/// News for the serving ring.
pub enum Event {
    /// A new version is durable in the manifest. `flushed_memtable` is now in a table;
    /// `obsolete` tables are out of the version (release them once no read uses them).
    Installed {
        version: Arc<Version>,
        flushed_memtable: Option<u64>,
        obsolete: Vec<u64>,
    },
    /// The worker stopped on an error; the store must refuse writes.
    Failed(String),
    /// A flush or compaction ran out of space and will retry. Writes that would have to wait for
    /// a flush are refused with `NoSpace` until the next `Installed`.
    NoSpace { op: &'static str, path: PathBuf },
}

/// How the background work is shaped.
#[derive(Debug, Clone)]
pub struct BackgroundOptions {
    pub dir: PathBuf,
    pub policy: Policy,
    pub target_file_bytes: u64,
    pub write_bytes_per_sec: u64,
    /// Size of each background read or write.
    pub io_bytes: usize,
}

/// Counters the benchmarks and tests read.
#[derive(Debug, Default)]
pub struct BackgroundStatus {
    pub compacting: AtomicBool,
    /// No new compaction starts while set (flushes go on).
    pub compaction_paused: AtomicBool,
    pub flushes: AtomicU64,
    pub compactions: AtomicU64,
    pub table_bytes_written: AtomicU64,
    /// Flushed memtables freed on this thread (see [`Job::Free`]).
    pub memtables_freed: AtomicU64,
}

/// Handle to the background thread. Dropping it stops the thread (abandoning a compaction in
/// progress, finishing a flush in progress) and waits for it.
pub struct Background {
    jobs: Option<UnboundedSender<Job>>,
    stop: Arc<AtomicBool>,
    status: Arc<BackgroundStatus>,
    thread: Option<ThreadHandle>,
}

impl Background {
    /// Starts the thread. It first rewrites the manifest as a snapshot of `version`.
    pub fn spawn<F: FileSystem>(
        fs: F,
        options: BackgroundOptions,
        version: Arc<Version>,
        events: UnboundedSender<Event>,
    ) -> Result<Self> {
        let (jobs, receiver) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(BackgroundStatus::default());
        let (thread_stop, thread_status) = (stop.clone(), status.clone());
        let starter = fs.clone();
        let body = move || {
            Box::pin(async move {
                let worker = Worker::start(fs, options, version, events.clone(), thread_stop, thread_status);
                match worker.await {
                    Ok(worker) => worker.run(receiver).await,
                    Err(error) => {
                        eprintln!("ringkv: background ring failed to start: {error}");
                        let _ = events.send(Event::Failed(error.to_string()));
                    }
                }
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
        };
        let thread = starter
            .start_thread("ringkv-background", Box::new(body))
            .map_err(|error| Error::io("spawn background thread", "ringkv-background", error))?;
        Ok(Background {
            jobs: Some(jobs),
            stop,
            status,
            thread: Some(thread),
        })
    }

    /// A handle with no thread behind it, as a stopped one is.
    pub fn stopped() -> Self {
        Background {
            jobs: None,
            stop: Arc::new(AtomicBool::new(true)),
            status: Arc::default(),
            thread: None,
        }
    }

    /// Queues a job (ignored once the worker has stopped; its failure was already reported).
    pub fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }

    pub fn status(&self) -> &Arc<BackgroundStatus> {
        &self.status
    }

    /// Tells the worker to stop; returns its thread, to wait for (once only).
    fn stop(&mut self) -> Option<ThreadHandle> {
        self.stop.store(true, Ordering::SeqCst);
        self.jobs = None;
        self.thread.take()
    }

    /// Stops the worker and waits for its thread without blocking the caller's ring.
    pub async fn shutdown(&mut self) {
        if let Some(thread) = self.stop() {
            if !thread.join().await {
                eprintln!("ringkv: background thread panicked");
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut thread) = self.stop() {
            if !thread.join_blocking() {
                eprintln!("ringkv: background thread panicked");
            }
        }
    }
}

struct Worker<F: FileSystem> {
    fs: F,
    options: BackgroundOptions,
    version: RefCell<Arc<Version>>,
    /// Held across a manifest append and the version change it makes, so that edits and
    /// versions are published in the same order by the flush and the compaction loops.
    manifest: tokio::sync::Mutex<ManifestWriter<F>>,
    events: UnboundedSender<Event>,
    stop: Arc<AtomicBool>,
    status: Arc<BackgroundStatus>,
    /// Flushes and compactions are paced separately, each at the configured rate: a flush (what
    /// writers may be waiting for) never waits for budget a compaction used.
    flush_limiter: RateLimiter,
    compaction_limiter: RateLimiter,
    pointers: RefCell<Vec<Option<Bytes>>>,
    next_file_number: Cell<u64>,
    wal_deleted_below: Cell<u64>,
    /// Wakes the compaction loop: a new version, compactions resumed, or the worker stopping.
    compaction_wake: Notify,
    failed: Cell<bool>,
}

/// How long to wait before retrying work that hit `ENOSPC`.
const NO_SPACE_RETRY: Duration = Duration::from_secs(1);

impl<F: FileSystem> Worker<F> {
    async fn start(
        fs: F,
        options: BackgroundOptions,
        version: Arc<Version>,
        events: UnboundedSender<Event>,
        stop: Arc<AtomicBool>,
        status: Arc<BackgroundStatus>,
    ) -> Result<Self> {
        let manifest = ManifestWriter::create(&fs, &options.dir, &version.snapshot()).await?;
        Ok(Worker {
            flush_limiter: RateLimiter::new(options.write_bytes_per_sec, options.io_bytes),
            compaction_limiter: RateLimiter::new(options.write_bytes_per_sec, options.io_bytes),
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
        })
    }

    /// Flushes and compactions run side by side on this ring, so that a long compaction never
    /// holds back a flush that writers may be waiting for.
    async fn run(self, jobs: UnboundedReceiver<Job>) {
        tokio::join!(self.flush_loop(jobs), self.compaction_loop());
    }

    fn halted(&self) -> bool {
        self.failed.get() || self.stop.load(Ordering::SeqCst)
    }

    async fn flush_loop(&self, mut jobs: UnboundedReceiver<Job>) {
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

    async fn compaction_loop(&self) {
        loop {
            let woken = self.compaction_wake.notified();
            if self.halted() {
                return;
            }
            match self.choose() {
                Some(task) => {
                    if let Err(error) = self.compact(task).await {
                        if !self.recover_from(error).await {
                            return;
                        }
                    }
                }
                None => woken.await,
            }
        }
    }

    /// Whether the loop that hit `error` should go on: after `ENOSPC`, yes, once a pause has
    /// passed; after anything else the worker stops and the engine is told to refuse writes.
    async fn recover_from(&self, error: Error) -> bool {
        match error {
            Error::ShuttingDown => false,
            Error::NoSpace { op, path } => {
                eprintln!(
                    "ringkv: no space left while {op} {}; background work retries in {NO_SPACE_RETRY:?}",
                    path.display()
                );
                let _ = self.events.send(Event::NoSpace { op, path });
                self.fs.sleep(NO_SPACE_RETRY).await;
                !self.halted()
            }
            error => {
                if !self.failed.replace(true) {
                    eprintln!("ringkv: background failure, refusing writes until restart: {error}");
                    let _ = self.events.send(Event::Failed(error.to_string()));
                }
                self.compaction_wake.notify_one();
                false
            }
        }
    }

    async fn take(&self, job: Job, flushes: &mut VecDeque<FlushJob>) {
        match job {
            Job::Flush(flush) => flushes.push_back(flush),
            Job::Wake => self.compaction_wake.notify_one(),
            Job::Free(memtable) => {
                // The flush job's own reference is gone by now: this thread dropped it as the
                // flush returned, before it could take any further job. So this is the last one.
                if Arc::into_inner(memtable).is_some() {
                    self.status.memtables_freed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Job::Release(numbers) => {
                for number in numbers {
                    let path = sst::table_path(&self.options.dir, number);
                    if let Err(error) = self.fs.remove(&path).await {
                        eprintln!(
                            "ringkv: could not delete obsolete table {}: {error}",
                            path.display()
                        );
                    }
                }
            }
        }
    }

    fn allocate(&self) -> u64 {
        let number = self.next_file_number.get();
        self.next_file_number.set(number + 1);
        number
    }

    async fn flush(&self, job: &FlushJob) -> Result<()> {
        let mut edit = VersionEdit {
            flushed_seq: Some(job.flushed_seq),
            first_live_wal_segment: Some(job.first_live_wal_segment),
            ..VersionEdit::default()
        };
        if !job.memtable.is_empty() {
            let number = self.allocate();
            let mut builder =
                TableBuilder::create(&self.fs, self.options.dir.clone(), number, &self.flush_limiter).await?;
            let mut written = Ok(());
            for (key, entry) in job.memtable.newest_entries() {
                written = builder.add(&key, entry.version, entry.value.as_deref()).await;
                if written.is_err() {
                    break;
                }
            }
            let table = match written {
                Ok(()) => builder.finish().await?,
                Err(error) => {
                    builder.abandon().await;
                    return Err(error);
                }
            };
            self.status
                .table_bytes_written
                .fetch_add(table.file_bytes, Ordering::Relaxed);
            edit.added.push((0, table));
        }
        self.publish(edit, Some(job.memtable_id), Vec::new()).await?;
        self.status.flushes.fetch_add(1, Ordering::Relaxed);
        self.retire_wal_segments(job.first_live_wal_segment).await;
        Ok(())
    }

    fn choose(&self) -> Option<Task> {
        if self.status.compaction_paused.load(Ordering::SeqCst) {
            return None;
        }
        let version = self.version.borrow().clone();
        compaction::choose(
            &version.summaries(),
            &self.pointers.borrow(),
            &self.options.policy,
        )
    }

    fn table(&self, level: usize, number: u64) -> Arc<TableMeta> {
        let version = self.version.borrow();
        let found = version.levels[level].iter().find(|t| t.number == number);
        // The task was chosen from the current version; only this loop removes tables from it.
        found.expect("a chosen table is in the version").clone()
    }

    async fn compact(&self, task: Task) -> Result<()> {
        self.pointers.borrow_mut()[task.level] = Some(task.largest.clone());
        let target = task.target_level();
        let inputs: Vec<Arc<TableMeta>> = task.inputs.iter().map(|&n| self.table(task.level, n)).collect();
        let overlapping: Vec<Arc<TableMeta>> =
            task.overlapping.iter().map(|&n| self.table(target, n)).collect();
        let mut edit = VersionEdit::default();
        edit.removed.extend(inputs.iter().map(|t| (task.level, t.number)));
        edit.removed
            .extend(overlapping.iter().map(|t| (target, t.number)));
        if task.is_move() {
            edit.added.push((target, inputs[0].clone()));
            return self.publish(edit, None, Vec::new()).await;
        }
        let obsolete: Vec<u64> = edit.removed.iter().map(|&(_, number)| number).collect();
        let sources: Vec<Arc<TableMeta>> = inputs.into_iter().chain(overlapping).collect();
        self.status.compacting.store(true, Ordering::SeqCst);
        let outputs = compaction::run(
            &self.fs,
            &self.options.dir,
            &task,
            sources,
            self.options.target_file_bytes,
            &self.compaction_limiter,
            || self.allocate(),
            &self.stop,
        )
        .await;
        self.status.compacting.store(false, Ordering::SeqCst);
        let outputs = outputs?;
        let written: u64 = outputs.iter().map(|t| t.file_bytes).sum();
        self.status
            .table_bytes_written
            .fetch_add(written, Ordering::Relaxed);
        edit.added.extend(outputs.into_iter().map(|t| (target, t)));
        self.publish(edit, None, obsolete).await?;
        self.status.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes `edit` durable in the manifest, then announces the new version.
    async fn publish(
        &self,
        mut edit: VersionEdit,
        flushed_memtable: Option<u64>,
        obsolete: Vec<u64>,
    ) -> Result<()> {
        let mut manifest = self.manifest.lock().await;
        edit.next_file_number = Some(self.next_file_number.get());
        manifest.append(&edit).await?;
        // `apply` takes the edit's next file number, recorded just above.
        let version = Arc::new(self.version.borrow().apply(&edit));
        *self.version.borrow_mut() = version.clone();
        let _ = self.events.send(Event::Installed {
            version: version.clone(),
            flushed_memtable,
            obsolete,
        });
        if manifest.wants_rewrite() {
            *manifest = ManifestWriter::create(&self.fs, &self.options.dir, &version.snapshot()).await?;
        }
        drop(manifest);
        self.compaction_wake.notify_one();
        Ok(())
    }

    /// Deletes WAL segments the manifest now says are flushed.
    async fn retire_wal_segments(&self, first_live: u64) {
        while self.wal_deleted_below.get() < first_live {
            let path = wal::segment_path(&self.options.dir, self.wal_deleted_below.get());
            if let Err(error) = self.fs.remove(&path).await {
                if error.kind() != std::io::ErrorKind::NotFound {
                    eprintln!(
                        "ringkv: could not delete retired WAL segment {}: {error}",
                        path.display()
                    );
                }
            }
            self.wal_deleted_below.set(self.wal_deleted_below.get() + 1);
        }
    }
}
