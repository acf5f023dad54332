//! The background ring: a thread with its own ring (started through [`FileSystem::start_thread`])
//! that flushes frozen memtables to L0 tables, runs compactions, publishes each new version
//! through the manifest, and deletes what the manifest no longer needs (retired WAL segments at
//! once; a table an edit removed once its last holder drops it). It talks to the serving
//! ring only through the messages of [`protocol`]; it never touches the WAL writer or the live
//! memtable.
//!
//! Flushes and compactions run side by side (two loops on this ring), so writers never wait for a
//! compaction; they publish through one manifest lock, in order. `ENOSPC` backs off and retries
//! the same work (nothing is lost: a table is only published after it is complete and synced);
//! any other failure is reported and stops the worker.
//!
//! Rooms: this file, the handle the serving ring holds; [`protocol`], the messages and their
//! sequence; `worker.rs`, the two loops, failure handling and publishing; `flush.rs` and
//! `compaction.rs`, the two kinds of work.

mod compaction;
mod flush;
pub mod protocol;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::{self, UnboundedSender};

use crate::compaction::Policy;
use crate::error::{IoContext, Result};
use crate::io::{FileSystem, ThreadHandle};
use crate::version::Version;
pub use protocol::{Event, FlushJob, Job, Work, WorkKind};
use worker::Worker;

/// How the background work is shaped.
#[derive(Debug, Clone)]
pub struct BackgroundOptions {
    pub dir: PathBuf,
    pub policy: Policy,
    pub target_file_bytes: u64,
    pub write_bytes_per_sec: u64,
    /// Size of each background read or write.
    pub io_bytes: usize,
    /// Where retired WAL segments go for reuse.
    pub recycle: std::sync::Arc<crate::wal::RecyclePool>,
    /// How flushes and compactions store data blocks.
    pub compression: crate::sst::Compression,
}

/// Counters the benchmarks and tests read.
#[derive(Debug, Default)]
pub struct BackgroundStatus {
    pub compacting: AtomicBool,
    /// Set by the compaction loop while it waits with nothing to compact (or paused); cleared
    /// when it finds work. With no flush queued it means the background is idle.
    pub compaction_idle: AtomicBool,
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
        let weak_jobs = jobs.downgrade();
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(BackgroundStatus::default());
        let (thread_stop, thread_status) = (stop.clone(), status.clone());
        let starter = fs.clone();
        let body = move || {
            Box::pin(async move {
                let worker = Worker::start(
                    fs,
                    options,
                    version,
                    events.clone(),
                    weak_jobs,
                    thread_stop,
                    thread_status,
                );
                match worker.await {
                    Ok(worker) => worker.run(receiver).await,
                    Err(error) => {
                        tracing::error!("background ring failed to start: {error}");
                        let _ = events.send(Event::Failed(error.to_string()));
                    }
                }
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
        };
        let thread = starter
            .start_thread("ringkv-background", Box::new(body))
            .context("spawn background thread", "ringkv-background")?;
        Ok(Background {
            jobs: Some(jobs),
            stop,
            status,
            thread: Some(thread),
        })
    }

    /// A sender of jobs that does not keep the channel open (for holders that outlive the
    /// engine's use of it, such as a scan's snapshot handing back its memtables).
    pub fn weak_sender(&self) -> Option<mpsc::WeakUnboundedSender<Job>> {
        self.jobs.as_ref().map(UnboundedSender::downgrade)
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
                tracing::error!("background thread panicked");
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut thread) = self.stop() {
            if !thread.join_blocking() {
                tracing::error!("background thread panicked");
            }
        }
    }
}
