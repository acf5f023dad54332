//! Range scans over a snapshot: a merge of the memtables and tables a snapshot holds
//! (`merge`), fed by one source per memtable, per level-0 table and per deeper level
//! (`sources`). Knows keys, versions and blocks; snapshots and pages belong to the engine
//! (`engine::scan`), cursors to HTTP (`http::scan`).

pub mod merge;
pub mod sources;

use std::ops::Bound;

use bytes::Bytes;

pub use crate::memtable::ScanItem;
pub use merge::Merge;

/// Which versions a snapshot sees: those at or below `seq`, except the writes that were
/// appended but not yet applied when it was taken (`excluded`, sorted): they became visible
/// after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visibility {
    pub seq: u64,
    pub excluded: Vec<u64>,
}

impl Visibility {
    pub fn admits(&self, seq: u64) -> bool {
        seq <= self.seq && self.excluded.binary_search(&seq).is_err()
    }
}

/// Whether `key` lies at or beyond `from` in the scan's direction.
pub fn at_or_after(key: &[u8], from: &Bound<Bytes>, reverse: bool) -> bool {
    match from {
        Bound::Unbounded => true,
        Bound::Included(bound) if reverse => key <= &bound[..],
        Bound::Included(bound) => key >= &bound[..],
        Bound::Excluded(bound) if reverse => key < &bound[..],
        Bound::Excluded(bound) => key > &bound[..],
    }
}

/// Whether `key` has passed `stop`, the far end of the range in the scan's direction.
pub fn past(key: &[u8], stop: &Bound<Bytes>, reverse: bool) -> bool {
    match stop {
        Bound::Unbounded => false,
        Bound::Included(bound) if reverse => key < &bound[..],
        Bound::Included(bound) => key > &bound[..],
        Bound::Excluded(bound) if reverse => key <= &bound[..],
        Bound::Excluded(bound) => key >= &bound[..],
    }
}
