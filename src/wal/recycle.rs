//! The pool of retired WAL segments kept for reuse (`RocksDB`'s `recycle_log_file_num`): a flush
//! that retires segments offers them here instead of deleting them, and the writer renames one
//! to the next segment's name instead of pre-writing a new file with zeros. Shared by the
//! background thread (which retires) and the serving thread (which takes); one lock, taken once
//! per segment.
//!
//! A recycled file still holds its previous life's records; the segment tag in every record
//! (`docs/format.md`) is what tells them from the new life's. Files from before this process
//! started may hold records without a tag, so only segments this process created are taken.

use std::collections::VecDeque;
use std::sync::Mutex;

/// See the module documentation.
#[derive(Debug)]
pub struct RecyclePool {
    capacity: usize,
    /// Segments below this existed when the process started: never recycled.
    first_recyclable: u64,
    /// Retired segment numbers whose files are still on disk under their own name, oldest first.
    retired: Mutex<VecDeque<u64>>,
}

impl RecyclePool {
    /// A pool that keeps up to `capacity` retired segments numbered `first_recyclable` or more
    /// (0 keeps none: every retired segment is deleted).
    pub fn new(capacity: usize, first_recyclable: u64) -> Self {
        RecyclePool {
            capacity,
            first_recyclable,
            retired: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    /// Offers retired segment `number` (its records are all in tables, and the manifest edit
    /// that says so is durable). Returns whether the pool keeps it; if not, the caller deletes it.
    pub fn offer(&self, number: u64) -> bool {
        if number < self.first_recyclable {
            return false;
        }
        let mut retired = self.lock();
        if retired.len() >= self.capacity {
            return false;
        }
        debug_assert!(
            retired.back().is_none_or(|&last| last < number),
            "retired in order"
        );
        retired.push_back(number);
        true
    }

    /// Takes the oldest retired segment, to be renamed to a new segment's name.
    pub fn take(&self) -> Option<u64> {
        self.lock().pop_front()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<u64>> {
        // The list stays consistent through a panic (each operation is one push or pop).
        self.retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_its_capacity_and_only_this_process_segments() {
        let pool = RecyclePool::new(2, 5);
        assert!(!pool.offer(4), "existed at start: may hold untagged records");
        assert!(pool.offer(5));
        assert!(pool.offer(6));
        assert!(!pool.offer(7), "full");
        assert_eq!(pool.take(), Some(5));
        assert!(pool.offer(8));
        assert_eq!((pool.take(), pool.take(), pool.take()), (Some(6), Some(8), None));
        let none = RecyclePool::new(0, 0);
        assert!(!none.offer(9));
        assert_eq!(none.take(), None);
    }
}
