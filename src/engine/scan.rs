//! Range scans: a page of live keys from a snapshot, and the snapshots that later pages of the
//! same scan continue from.
//!
//! A snapshot is what a first page read: the version (its tables), the memtables, and the
//! versions it sees ([`Visibility`]: every seq up to the newest appended, except writes not yet
//! applied, which become visible later). Holding the version keeps its tables' files (a table's
//! file goes with its last holder) and holding the memtables keeps their entries, every version
//! of every key, so a later page sees exactly what the first one would have, whatever was
//! written, flushed or compacted since. A snapshot is kept for `scan_snapshot_ttl` after its
//! last page (`--scan-snapshot-ttl`), at most `SNAPSHOTS_MAX` at once (the least recently used
//! goes first), and their flushed memtables at most `PINNED_MEMTABLES_MAX` memtables' worth of
//! bytes (past it the least recently used go); a cursor whose snapshot is gone, or from
//! another run of the server, gets
//! [`Error::SnapshotGone`] (410). Expired snapshots are let go on the next scan and whenever a
//! flush or compaction installs a version, so their memtables and table files do not outlive
//! them by more than that. A memtable whose flush is done and that a snapshot was the last to
//! hold is freed on the background thread, as flushed memtables are.

use std::collections::HashMap;
use std::ops::Bound;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc::WeakUnboundedSender;

use super::Engine;
use crate::background::Job;
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::memtable::Memtable;
use crate::scan::sources::{MemtableSource, Source, TableSource};
use crate::scan::{Merge, ScanItem, Visibility};
use crate::version::Version;

/// Snapshots kept at once for cursors.
const SNAPSHOTS_MAX: usize = 1024;
/// Flushed memtables kept snapshots may pin, in memtables' worth of bytes (`--memtable-bytes`
/// each): past it the least recently used snapshots are let go (their cursors get 410).
const PINNED_MEMTABLES_MAX: u64 = 4;
/// Keys and values one page holds at most (past it the page ends early, `more` set): a page
/// of large values stays bounded in memory whatever its `limit`.
pub const SCAN_PAGE_BYTES: usize = 1 << 20;

/// What a scan reads: keys in `[lower, upper)` (`upper: None`, to the last key), in
/// descending order if `reverse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRange {
    pub lower: Bytes,
    pub upper: Option<Bytes>,
    pub reverse: bool,
    /// Only keys are wanted: values do not count against the page's bytes.
    pub keys_only: bool,
}

/// Where a page starts: a new scan, or the page after key `after` of the scan whose snapshot
/// is `id` (which keeps that scan's range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStart {
    New(ScanRange),
    Continue { id: SnapshotId, after: Bytes },
}

/// A snapshot's name in a cursor: the server run's epoch (random at open) and a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnapshotId {
    pub epoch: u64,
    pub number: u64,
}

/// One page: live keys with their newest version at the snapshot, in the scan's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub items: Vec<ScanItem>,
    /// The scan's range (a continued page's comes from its snapshot).
    pub range: ScanRange,
    /// Whether keys remain in the range after the last one; then `snapshot` names the snapshot
    /// the next page continues from.
    pub more: bool,
    pub snapshot: Option<SnapshotId>,
}

/// See the module documentation.
pub(super) struct Snapshot {
    version: Arc<Version>,
    /// Newest first.
    memtables: Vec<Arc<Memtable>>,
    visibility: Arc<Visibility>,
    /// Where a memtable this snapshot was the last to hold goes to be freed.
    background: Option<WeakUnboundedSender<Job>>,
}

impl Drop for Snapshot {
    /// Freeing a memtable walks every entry (about 100 ms for a full one): one whose flush is
    /// done and that only this snapshot still held goes to the background thread, as the flush
    /// hands back the ones no snapshot holds (`Job::Free`).
    fn drop(&mut self) {
        let background = self.background.as_ref().and_then(WeakUnboundedSender::upgrade);
        for memtable in self.memtables.drain(..) {
            if let (Some(last), Some(background)) = (Arc::into_inner(memtable), &background) {
                let _ = background.send(Job::Free(Arc::new(last)));
            }
        }
    }
}

/// A kept snapshot: what it sees, the range of the scan that took it, and when it expires.
struct Kept {
    snapshot: Rc<Snapshot>,
    range: ScanRange,
    /// The first page's size, for later pages that name none.
    limit: usize,
    expires: Instant,
}

/// The snapshots later pages continue from.
pub(super) struct Snapshots {
    epoch: u64,
    next_number: u64,
    live: HashMap<u64, Kept>,
}

impl Snapshots {
    pub(super) fn new() -> Self {
        Snapshots {
            epoch: rand::random(),
            next_number: 1,
            live: HashMap::new(),
        }
    }
}

impl<F: FileSystem> Engine<F> {
    /// One page of at most `limit` keys (see the module documentation); a later page without
    /// a `limit` of its own takes the first page's.
    pub async fn scan(&self, start: ScanStart, limit: Option<usize>) -> Result<ScanPage> {
        self.release_expired_snapshots();
        let (snapshot, range, kept, after, limit) = match start {
            ScanStart::New(range) => {
                let limit = limit.expect("a new scan names its page size");
                (Rc::new(self.take_snapshot()), range, None, None, limit)
            }
            ScanStart::Continue { id, after } => {
                let (snapshot, range, first_limit) = self.continue_snapshot(id)?;
                (
                    snapshot,
                    range,
                    Some(id),
                    Some(after),
                    limit.unwrap_or(first_limit),
                )
            }
        };
        assert!(limit > 0, "a page holds at least one key");
        let mut merge = self.merge_for(&snapshot, &range, after);
        let mut items = Vec::new();
        let mut bytes = 0;
        let more = loop {
            let Some(item) = merge.next(&self.readers).await? else {
                break false;
            };
            if items.len() == limit || (bytes >= SCAN_PAGE_BYTES && !items.is_empty()) {
                break true;
            }
            bytes += item.key.len();
            if !range.keys_only {
                bytes += item.value.as_ref().map_or(0, Bytes::len);
            }
            items.push(item);
        };
        let snapshot =
            more.then(|| kept.unwrap_or_else(|| self.keep_snapshot(snapshot, range.clone(), limit)));
        Ok(ScanPage {
            items,
            range,
            more,
            snapshot,
        })
    }

    /// Snapshots kept for cursors now.
    pub fn scan_snapshots(&self) -> usize {
        self.snapshots.borrow().live.len()
    }

    pub(super) fn take_snapshot(&self) -> Snapshot {
        let seq = self.log_next_seq().saturating_sub(1);
        let excluded: Vec<u64> = self.unsettled_seqs.borrow().range(..=seq).copied().collect();
        Snapshot {
            version: self.version.borrow().clone(),
            memtables: self.memtables.borrow().all(),
            visibility: Arc::new(Visibility { seq, excluded }),
            background: self
                .background
                .borrow()
                .as_ref()
                .and_then(crate::background::Background::weak_sender),
        }
    }

    pub(super) fn merge_for(&self, snapshot: &Snapshot, range: &ScanRange, after: Option<Bytes>) -> Merge {
        let (from, stop) = if range.reverse {
            let from = match (after, &range.upper) {
                (Some(after), _) => Bound::Excluded(after),
                (None, Some(upper)) => Bound::Excluded(upper.clone()),
                (None, None) => Bound::Unbounded,
            };
            (from, Bound::Included(range.lower.clone()))
        } else {
            let from = match after {
                Some(after) => Bound::Excluded(after),
                None => Bound::Included(range.lower.clone()),
            };
            (
                from,
                range.upper.clone().map_or(Bound::Unbounded, Bound::Excluded),
            )
        };
        let memtables = snapshot.memtables.iter().map(|table| {
            Source::Memtable(MemtableSource::new(
                table.clone(),
                snapshot.visibility.clone(),
                from.clone(),
                range.reverse,
            ))
        });
        let level0 = snapshot.version.levels[0].iter().map(|table| vec![table.clone()]);
        let deeper = snapshot.version.levels[1..]
            .iter()
            .filter(|level| !level.is_empty())
            .cloned();
        let tables = level0
            .chain(deeper)
            .map(|tables| Source::Tables(TableSource::new(tables, from.clone(), range.reverse)));
        Merge::new(memtables.chain(tables).collect(), range.reverse, stop)
    }

    fn continue_snapshot(&self, id: SnapshotId) -> Result<(Rc<Snapshot>, ScanRange, usize)> {
        let expires = self.fs.now() + self.config.scan_snapshot_ttl;
        let mut snapshots = self.snapshots.borrow_mut();
        if id.epoch != snapshots.epoch {
            return Err(Error::SnapshotGone {
                reason: "the cursor is from an earlier run of the server",
            });
        }
        let Some(kept) = snapshots.live.get_mut(&id.number) else {
            return Err(Error::SnapshotGone {
                reason: "its snapshot expired (--scan-snapshot-ttl after the last page) or was let go for newer ones",
            });
        };
        kept.expires = expires;
        Ok((kept.snapshot.clone(), kept.range.clone(), kept.limit))
    }

    fn keep_snapshot(&self, snapshot: Rc<Snapshot>, range: ScanRange, limit: usize) -> SnapshotId {
        let expires = self.fs.now() + self.config.scan_snapshot_ttl;
        let mut snapshots = self.snapshots.borrow_mut();
        if snapshots.live.len() >= SNAPSHOTS_MAX {
            let oldest = snapshots
                .live
                .iter()
                .min_by_key(|(_, kept)| kept.expires)
                .map(|(number, _)| *number);
            if let Some(kept) = oldest.and_then(|number| snapshots.live.remove(&number)) {
                // Dropped outside the borrow: its `Drop` sends memtables to the background.
                drop(snapshots);
                drop(kept);
                snapshots = self.snapshots.borrow_mut();
            }
        }
        let number = snapshots.next_number;
        snapshots.next_number += 1;
        snapshots.live.insert(
            number,
            Kept {
                snapshot,
                range,
                limit,
                expires,
            },
        );
        SnapshotId {
            epoch: snapshots.epoch,
            number,
        }
    }

    /// Lets go of the snapshots whose time is up.
    pub(super) fn release_expired_snapshots(&self) {
        let now = self.fs.now();
        let released: Vec<Rc<Snapshot>> = {
            let mut snapshots = self.snapshots.borrow_mut();
            if snapshots.live.is_empty() {
                return;
            }
            let mut numbers: Vec<u64> = snapshots
                .live
                .iter()
                .filter(|(_, kept)| kept.expires <= now)
                .map(|(number, _)| *number)
                .collect();
            numbers.extend(self.over_pinned_budget(&snapshots, &numbers));
            numbers
                .into_iter()
                .filter_map(|number| snapshots.live.remove(&number).map(|kept| kept.snapshot))
                .collect()
        };
        // Dropped outside the borrow (a page being read may still hold one: it goes when that
        // page is done).
        drop(released);
    }

    /// The snapshots (least recently used first, beyond those in `leaving`) to let go so that
    /// the flushed memtables kept snapshots pin stay within `PINNED_MEMTABLES_MAX` memtables'
    /// worth of bytes: many slow scans under a heavy write load would otherwise pin a memtable
    /// each per flush until their time is up.
    fn over_pinned_budget(&self, snapshots: &Snapshots, leaving: &[u64]) -> Vec<u64> {
        let live: Vec<Arc<Memtable>> = self.memtables.borrow().all();
        let is_live = |table: &Arc<Memtable>| live.iter().any(|l| Arc::ptr_eq(l, table));
        let mut kept: Vec<(&u64, &Kept)> = snapshots
            .live
            .iter()
            .filter(|(number, _)| !leaving.contains(number))
            .collect();
        // Most recently used first: the oldest go first.
        kept.sort_by_key(|(_, kept)| std::cmp::Reverse(kept.expires));
        let budget = PINNED_MEMTABLES_MAX * self.config.memtable_bytes;
        let mut pinned: Vec<*const Memtable> = Vec::new();
        let mut bytes = 0;
        let mut over = Vec::new();
        for (number, kept) in kept {
            let mut adds = 0;
            let mut new_tables = Vec::new();
            for table in kept.snapshot.memtables.iter().filter(|table| !is_live(table)) {
                let at = Arc::as_ptr(table);
                if !pinned.contains(&at) && !new_tables.contains(&at) {
                    adds += table.approximate_bytes();
                    new_tables.push(at);
                }
            }
            if bytes + adds > budget {
                over.push(*number);
            } else {
                bytes += adds;
                pinned.extend(new_tables);
            }
        }
        over
    }
}
