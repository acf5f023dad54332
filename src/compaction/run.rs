//! Runs a compaction: a k-way merge of the input tables (newest entry of each key first) into
//! new tables of the target level, split at the target file size. Shadowed versions are dropped,
//! and tombstones too when the task is bottommost. Writes go through the table builder (1 MiB
//! direct chunks); reads and writes share the background rate limit. Returns the new tables; publishing them is the caller's job.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::Task;
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::rate_limit::RateLimiter;
use crate::sst::{Compression, Entry, TableBuilder, TableMeta, TableScanner};

/// The shape of a compaction's output tables.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// A table is closed once it reaches this size.
    pub target_file_bytes: u64,
    pub compression: Compression,
}

/// Heap order: smallest key first, then the highest seq, then the newer source.
type HeapItem = Reverse<(Bytes, Reverse<u64>, usize)>;

/// See the module documentation. `sources` are the task's tables, L0 newest first then the
/// target level's; `allocate` hands out file numbers; `stop` abandons the work early.
#[expect(
    clippy::too_many_arguments,
    reason = "the merge's inputs are independent: the task, its tables, the outputs' shape, pacing, numbering and the stop flag"
)]
pub async fn run<F: FileSystem>(
    fs: &F,
    dir: &Path,
    task: &Task,
    sources: Vec<Arc<TableMeta>>,
    output: Output,
    limiter: &RateLimiter,
    mut allocate: impl FnMut() -> u64,
    stop: &AtomicBool,
) -> Result<Vec<Arc<TableMeta>>> {
    let mut scanners = Vec::with_capacity(sources.len());
    for meta in sources {
        scanners.push(TableScanner::open(fs, meta, limiter).await?);
    }
    let mut heads: Vec<Option<Entry>> = Vec::with_capacity(scanners.len());
    let mut heap: BinaryHeap<HeapItem> = BinaryHeap::new();
    for (source, scanner) in scanners.iter_mut().enumerate() {
        let head = scanner.next().await?;
        if let Some(entry) = &head {
            heap.push(Reverse((entry.key.clone(), Reverse(entry.seq), source)));
        }
        heads.push(head);
    }
    let mut outputs = Vec::new();
    let mut builder: Option<TableBuilder<'_, F>> = None;
    // The key last taken, and the seq of its newest entry.
    let mut last: Option<(Bytes, u64)> = None;
    let outcome: Result<()> = async {
        while let Some(Reverse((key, _, source))) = heap.pop() {
            let entry = heads[source].take().expect("a source in the heap has a head");
            let next = scanners[source].next().await?;
            if let Some(next) = &next {
                heap.push(Reverse((next.key.clone(), Reverse(next.seq), source)));
            }
            heads[source] = next;
            if let Some((last_key, newest_seq)) = &last {
                if *last_key == key {
                    // Versions are never reused: two entries of a key with one seq are damage
                    // (checksums cannot see it, since each table is valid alone).
                    if entry.seq >= *newest_seq {
                        return Err(Error::sst_corruption(
                            scanners[source].path(),
                            0,
                            format!(
                                "key {:?} has seq {} here and seq {newest_seq} in a newer table: a version was reused",
                                String::from_utf8_lossy(&key),
                                entry.seq
                            ),
                        ));
                    }
                    continue; // An older entry of a key already written.
                }
            }
            last = Some((key, entry.seq));
            if entry.value.is_none() && task.bottommost {
                continue;
            }
            if stop.load(Ordering::Relaxed) {
                return Err(Error::ShuttingDown);
            }
            if builder.is_none() {
                builder = Some(
                    TableBuilder::create(fs, dir.to_path_buf(), allocate(), limiter, output.compression).await?,
                );
            }
            let table = builder.as_mut().expect("created above");
            table.add(&entry.key, entry.seq, entry.value.as_deref()).await?;
            if table.estimated_bytes() >= output.target_file_bytes {
                let full = builder.take().expect("present");
                outputs.push(full.finish().await?);
            }
        }
        if let Some(table) = builder.take() {
            outputs.push(table.finish().await?);
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => Ok(outputs),
        Err(error) => {
            if let Some(table) = builder.take() {
                table.abandon().await;
            }
            for table in outputs {
                let _ = fs.remove(&table.path).await;
            }
            Err(error)
        }
    }
}
