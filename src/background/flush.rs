//! Flushing one frozen memtable: its newest entries into one L0 table, then the edit that names
//! the table and moves the flushed seq and the first live WAL segment, then the WAL segments that
//! edit retired.

use std::sync::atomic::Ordering;

use super::protocol::{FlushJob, WorkKind};
use super::worker::{WorkDone, Worker};
use crate::error::Result;
use crate::io::FileSystem;
use crate::sst::TableBuilder;
use crate::version::VersionEdit;
use crate::wal;

impl<F: FileSystem> Worker<F> {
    pub(super) async fn flush(&self, job: &FlushJob) -> Result<()> {
        // Flushes come in freeze order, each claiming every seq below its freeze point, so the
        // flushed seq never goes back.
        let flushed_before = self.version.borrow().flushed_seq;
        assert!(
            job.flushed_seq >= flushed_before,
            "flush of memtable {} claims seq {} after a flush claimed {flushed_before}",
            job.memtable_id,
            job.flushed_seq
        );
        let started = self.fs.now();
        let mut edit = VersionEdit {
            flushed_seq: Some(job.flushed_seq),
            first_live_wal_segment: Some(job.first_live_wal_segment),
            ..VersionEdit::default()
        };
        if let Some(key) = crate::panic_trigger::key_at(crate::panic_trigger::Place::Background) {
            if job.memtable.get(key).is_some() {
                crate::panic_trigger::fire(crate::panic_trigger::Place::Background);
            }
        }
        if !job.memtable.is_empty() {
            let number = self.allocate();
            let mut builder = TableBuilder::create(
                &self.fs,
                self.options.dir.clone(),
                number,
                &self.flush_limiter,
                self.options.compression,
            )
            .await?;
            let mut written = Ok(());
            for (key, entry) in job.memtable.newest_entries() {
                // A shutdown does not wait for a flush paced by the rate limit: the WAL still
                // holds these writes, and the next start replays them.
                if self.stop.load(Ordering::Relaxed) {
                    written = Err(crate::Error::ShuttingDown);
                    break;
                }
                written = builder.add(&key, entry.seq, entry.value.as_deref()).await;
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
        let work = WorkDone {
            kind: WorkKind::Flush,
            started,
            tables_in: 0,
            bytes_read: 0,
        };
        self.publish(edit, Some(job.memtable_id), work).await?;
        self.status.flushes.fetch_add(1, Ordering::Relaxed);
        let retired_below = self.wal_deleted_below.get();
        if retired_below < job.first_live_wal_segment {
            wal::retire_segments(
                &self.fs,
                &self.options.dir,
                retired_below,
                job.first_live_wal_segment,
                &self.options.recycle,
            )
            .await;
            self.wal_deleted_below.set(job.first_live_wal_segment);
        }
        Ok(())
    }
}
