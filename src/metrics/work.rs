//! What the background ring's flushes and compactions did, as the serving ring learns it from
//! each `Installed` message.

use std::cell::Cell;

use super::Histogram;
use crate::background::{Work, WorkKind};

#[derive(Debug)]
pub struct WorkStats {
    pub flushes: Cell<u64>,
    pub flush_written_bytes: Cell<u64>,
    pub flush_latency: Histogram,
    pub compactions: Cell<u64>,
    pub moves: Cell<u64>,
    pub compaction_read_bytes: Cell<u64>,
    pub compaction_written_bytes: Cell<u64>,
    pub compaction_latency: Histogram,
}

impl Default for WorkStats {
    fn default() -> Self {
        WorkStats {
            flushes: Cell::new(0),
            flush_written_bytes: Cell::new(0),
            flush_latency: Histogram::latency(),
            compactions: Cell::new(0),
            moves: Cell::new(0),
            compaction_read_bytes: Cell::new(0),
            compaction_written_bytes: Cell::new(0),
            compaction_latency: Histogram::latency(),
        }
    }
}

fn add(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get() + n);
}

impl WorkStats {
    pub fn note(&self, work: &Work) {
        match work.kind {
            WorkKind::Flush => {
                add(&self.flushes, 1);
                add(&self.flush_written_bytes, work.bytes_written);
                self.flush_latency.record_duration(work.duration);
            }
            WorkKind::Compaction => {
                add(&self.compactions, 1);
                add(&self.compaction_read_bytes, work.bytes_read);
                add(&self.compaction_written_bytes, work.bytes_written);
                self.compaction_latency.record_duration(work.duration);
            }
            WorkKind::Move => add(&self.moves, 1),
        }
    }
}
