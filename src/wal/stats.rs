//! What the WAL writer counts for `/metrics`: plain counters and histograms on the serving ring,
//! and the exposure window (what is acknowledged but not yet durable).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::metrics::histogram::{self, Histogram, Unit};

/// Acknowledged-but-not-durable batches remembered for the exposure age; past it, a batch is
/// folded into the newest one remembered (which then reports an older time for it, never a
/// younger one).
const EXPOSED_BATCHES_MAX: usize = 4096;

#[derive(Debug)]
pub struct WalStats {
    /// Batches written, and their bytes (records and the rewritten partial block before them).
    pub writes: Cell<u64>,
    pub written_bytes: Cell<u64>,
    /// Syncs that succeeded: a round of sync calls that made everything written before it
    /// durable (one call per segment it covered), or an `O_DSYNC` write.
    pub syncs: Cell<u64>,
    pub sync_errors: Cell<u64>,
    /// Segments made ready by renaming a retired one, and by creating a new one (with the zero
    /// bytes pre-written into it).
    pub segments_recycled: Cell<u64>,
    pub segments_created: Cell<u64>,
    pub zero_bytes: Cell<u64>,
    /// One WAL write, from its submission to its completion (an `O_DSYNC` write included).
    pub write_latency: Histogram,
    /// One sync call (`fdatasync` or `fsync`), or one `O_DSYNC` write.
    pub sync_latency: Histogram,
    pub batch_records: Histogram,
    pub batch_bytes: Histogram,
    /// The last sequence number written, and the last known durable.
    pub written_seq: Cell<u64>,
    pub durable_seq: Cell<u64>,
    /// (end position, acknowledged at) of batches acknowledged before they were durable, oldest
    /// first.
    exposed: RefCell<VecDeque<((u64, u64), Instant)>>,
}

impl WalStats {
    pub fn new(durable_seq: u64) -> Self {
        WalStats {
            writes: Cell::new(0),
            written_bytes: Cell::new(0),
            syncs: Cell::new(0),
            sync_errors: Cell::new(0),
            segments_recycled: Cell::new(0),
            segments_created: Cell::new(0),
            zero_bytes: Cell::new(0),
            write_latency: Histogram::latency(),
            sync_latency: Histogram::latency(),
            batch_records: Histogram::new(histogram::COUNT, Unit::Plain),
            batch_bytes: Histogram::new(histogram::BYTES, Unit::Plain),
            written_seq: Cell::new(durable_seq),
            durable_seq: Cell::new(durable_seq),
            exposed: RefCell::new(VecDeque::new()),
        }
    }

    pub(super) fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }

    /// A batch ending at `end` was acknowledged at `now` without being durable.
    pub(super) fn note_exposed(&self, end: (u64, u64), now: Instant) {
        let mut exposed = self.exposed.borrow_mut();
        if exposed.len() >= EXPOSED_BATCHES_MAX {
            if let Some(newest) = exposed.back_mut() {
                newest.0 = newest.0.max(end);
            }
        } else {
            exposed.push_back((end, now));
        }
    }

    /// Everything before `durable_end` is durable now.
    pub(super) fn note_durable(&self, durable_end: (u64, u64)) {
        let mut exposed = self.exposed.borrow_mut();
        while exposed.front().is_some_and(|(end, _)| *end <= durable_end) {
            exposed.pop_front();
        }
    }

    /// How long the oldest write acknowledged but not yet durable has been so: what a power loss
    /// now would take back, in time. Zero when every acknowledged write is durable.
    pub fn exposure_age(&self, now: Instant) -> Duration {
        self.exposed
            .borrow()
            .front()
            .map_or(Duration::ZERO, |(_, at)| now.saturating_duration_since(*at))
    }
}
