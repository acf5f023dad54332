//! The active memtable and the frozen ones waiting for their flush, with the bookkeeping that
//! decides when a frozen memtable may be flushed: only once every write appended while it was
//! active has settled (applied, or failed), so that "flushed up to seq S" is exactly true.
//! Lives on the serving ring; no I/O.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use crate::memtable::{Entry, Memtable};

/// Where the log stood when a memtable was frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrozenAt {
    /// Every write with a smaller seq was appended while the memtable was active.
    pub end_seq: u64,
    /// WAL segments below this hold no write appended after the freeze.
    pub first_live_wal_segment: u64,
}

/// One memtable and its write accounting.
pub struct Slot {
    pub id: u64,
    pub table: Arc<Memtable>,
    appended_bytes: Cell<u64>,
    /// Writes appended to the WAL for this memtable and not yet applied or failed.
    unsettled: Cell<u64>,
    frozen: Cell<Option<FrozenAt>>,
    flush_sent: Cell<bool>,
}

impl Slot {
    fn new(id: u64, table: Arc<Memtable>) -> Rc<Self> {
        let appended_bytes = table.approximate_bytes();
        Rc::new(Slot {
            id,
            table,
            appended_bytes: Cell::new(appended_bytes),
            unsettled: Cell::new(0),
            frozen: Cell::new(None),
            flush_sent: Cell::new(false),
        })
    }

    /// A write for this memtable settled.
    pub fn settled(&self) {
        let unsettled = self.unsettled.get();
        assert!(
            unsettled > 0,
            "memtable {}: more writes settled than were appended",
            self.id
        );
        self.unsettled.set(unsettled - 1);
    }

    pub fn frozen_at(&self) -> Option<FrozenAt> {
        self.frozen.get()
    }
}

/// See the module documentation.
pub struct Memtables {
    active: Rc<Slot>,
    /// Newest first.
    frozen: VecDeque<Rc<Slot>>,
    next_id: u64,
}

impl Memtables {
    pub fn new(table: Memtable) -> Self {
        Memtables {
            active: Slot::new(0, Arc::new(table)),
            frozen: VecDeque::new(),
            next_id: 1,
        }
    }

    /// Accounts a write just appended to the WAL; returns the memtable it belongs to.
    pub fn note_append(&mut self, bytes: u64) -> Rc<Slot> {
        let slot = self.active.clone();
        slot.unsettled.set(slot.unsettled.get() + 1);
        slot.appended_bytes.set(slot.appended_bytes.get() + bytes);
        slot
    }

    pub fn active_bytes(&self) -> u64 {
        self.active.appended_bytes.get()
    }

    pub fn active_is_empty(&self) -> bool {
        self.active.table.is_empty() && self.active.unsettled.get() == 0
    }

    /// Freezes the active memtable and starts an empty one.
    pub fn freeze(&mut self, at: FrozenAt) {
        let fresh = Slot::new(self.next_id, Arc::new(Memtable::new()));
        self.next_id += 1;
        let old = std::mem::replace(&mut self.active, fresh);
        old.frozen.set(Some(at));
        self.frozen.push_front(old);
    }

    /// Frozen memtables whose flush can be requested now, oldest first. Flushes must be published
    /// in freeze order (each one claims every seq below its `end_seq`), so a memtable that still
    /// waits for a write holds back the newer ones.
    pub fn take_ready_flushes(&mut self) -> Vec<Rc<Slot>> {
        let mut ready = Vec::new();
        for slot in self.frozen.iter().rev() {
            if slot.flush_sent.get() {
                continue;
            }
            if slot.unsettled.get() > 0 {
                break;
            }
            slot.flush_sent.set(true);
            ready.push(slot.clone());
        }
        ready
    }

    /// A flushed memtable's data is now in a table of the live version. Returns the memtable so
    /// that the caller decides which thread frees it.
    pub fn remove_flushed(&mut self, id: u64) -> Option<Arc<Memtable>> {
        let at = self.frozen.iter().position(|slot| slot.id == id)?;
        let slot = self.frozen.remove(at)?;
        Some(match Rc::try_unwrap(slot) {
            Ok(slot) => slot.table,
            // Not expected (a flushed memtable has no write in flight), but then the last
            // holder of the slot frees it.
            Err(shared) => shared.table.clone(),
        })
    }

    pub fn frozen_count(&self) -> usize {
        self.frozen.len()
    }

    /// The newest entry of `key` in any memtable.
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        std::iter::once(&self.active)
            .chain(self.frozen.iter())
            .find_map(|slot| slot.table.get(key))
    }

    /// Every memtable, newest first (what a scan's snapshot holds).
    pub fn all(&self) -> Vec<Arc<Memtable>> {
        std::iter::once(&self.active)
            .chain(self.frozen.iter())
            .map(|slot| slot.table.clone())
            .collect()
    }

    /// Estimated bytes held by every memtable.
    pub fn approximate_bytes(&self) -> u64 {
        std::iter::once(&self.active)
            .chain(self.frozen.iter())
            .map(|slot| slot.table.approximate_bytes())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn flushes_are_released_in_freeze_order_once_settled() {
        let mut memtables = Memtables::new(Memtable::new());
        let first = memtables.note_append(10);
        memtables.freeze(FrozenAt {
            end_seq: 2,
            first_live_wal_segment: 1,
        });
        let second = memtables.note_append(10);
        memtables.freeze(FrozenAt {
            end_seq: 3,
            first_live_wal_segment: 1,
        });
        second.settled();
        assert!(
            memtables.take_ready_flushes().is_empty(),
            "the older one still waits"
        );
        first.table.insert(Bytes::from_static(b"k"), 1, None);
        first.settled();
        let ready: Vec<u64> = memtables.take_ready_flushes().iter().map(|s| s.id).collect();
        assert_eq!(ready, vec![0, 1]);
        assert!(memtables.take_ready_flushes().is_empty(), "sent only once");
        assert_eq!(memtables.get(b"k").map(|e| e.seq), Some(1));
        // Writers hold their slot only until their write settles.
        drop((first, second));
        let flushed = memtables.remove_flushed(0).expect("memtable 0 was frozen");
        assert_eq!(
            Arc::strong_count(&flushed),
            1,
            "the caller gets the only reference, and with it the choice of the thread that frees it"
        );
        assert!(memtables.remove_flushed(0).is_none());
        assert_eq!(memtables.get(b"k"), None);
        assert_eq!(memtables.frozen_count(), 1);
    }
}
