//! One compaction: the task the chooser picks from the current version, the merge (or a move),
//! and the edit it makes ([`crate::compaction::edit_for`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::protocol::WorkKind;
use super::worker::{WorkDone, Worker};
use crate::compaction::{self, Task};
use crate::error::Result;
use crate::io::FileSystem;
use crate::sst::TableMeta;

impl<F: FileSystem> Worker<F> {
    pub(super) fn choose(&self) -> Option<Task> {
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

    pub(super) fn table(&self, level: usize, number: u64) -> Arc<TableMeta> {
        let version = self.version.borrow();
        let found = version.levels[level].iter().find(|t| t.number == number);
        // The task was chosen from the current version; only this loop removes tables from it.
        found.expect("a chosen table is in the version").clone()
    }

    pub(super) async fn compact(&self, task: Task) -> Result<()> {
        self.pointers.borrow_mut()[task.level] = Some(task.largest.clone());
        let target = task.target_level();
        let inputs: Vec<Arc<TableMeta>> = task.inputs.iter().map(|&n| self.table(task.level, n)).collect();
        let mut work = WorkDone {
            kind: WorkKind::Move,
            started: self.fs.now(),
            tables_in: inputs.len(),
            bytes_read: 0,
        };
        if task.is_move() {
            let edit = compaction::edit_for(&task, inputs);
            return self.publish(edit, None, work).await;
        }
        let overlapping: Vec<Arc<TableMeta>> =
            task.overlapping.iter().map(|&n| self.table(target, n)).collect();
        let sources: Vec<Arc<TableMeta>> = inputs.into_iter().chain(overlapping).collect();
        work.kind = WorkKind::Compaction;
        work.tables_in = sources.len();
        work.bytes_read = sources.iter().map(|table| table.file_bytes).sum();
        self.status.compacting.store(true, Ordering::SeqCst);
        let outputs = compaction::run(
            &self.fs,
            &self.options.dir,
            &task,
            sources,
            compaction::Output {
                target_file_bytes: self.options.target_file_bytes,
                compression: self.options.compression,
            },
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
        let edit = compaction::edit_for(&task, outputs);
        self.publish(edit, None, work).await?;
        self.status.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
