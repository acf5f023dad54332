//! A version: the set of live tables per level, with the point up to which the WAL is flushed.
//! Immutable once built; a new one is made by applying an edit. The serving ring reads through
//! the current version; the background ring owns producing the next. No I/O.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use crate::sst::TableMeta;

/// What the compaction choice needs to know about a table: a version's view of it without its
/// index and filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    pub number: u64,
    pub file_bytes: u64,
    pub smallest: Bytes,
    pub largest: Bytes,
}

/// Levels L0 to L6.
pub const LEVELS: usize = 7;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Version {
    /// `levels[0]` newest first (files may overlap); deeper levels sorted by key, disjoint.
    pub levels: Vec<Vec<Arc<TableMeta>>>,
    /// Every WAL record with a seq at or below this is in a table of this version.
    pub flushed_seq: u64,
    /// WAL segments below this number hold only flushed records.
    pub first_live_wal_segment: u64,
    /// The next table file number to hand out.
    pub next_file_number: u64,
}

impl Default for Version {
    fn default() -> Self {
        Version {
            levels: vec![Vec::new(); LEVELS],
            flushed_seq: 0,
            first_live_wal_segment: 0,
            next_file_number: 1,
        }
    }
}

/// A change to a version, as the manifest records it.
#[derive(Debug, Clone, Default)]
pub struct VersionEdit {
    pub added: Vec<(usize, Arc<TableMeta>)>,
    pub removed: Vec<(usize, u64)>,
    pub flushed_seq: Option<u64>,
    pub first_live_wal_segment: Option<u64>,
    pub next_file_number: Option<u64>,
}

impl Version {
    /// The version after `edit`, which the background ring just made: an edit that breaks a
    /// version's invariants is a bug, and stops the background ring.
    pub fn apply(&self, edit: &VersionEdit) -> Version {
        match self.try_apply(edit) {
            Ok(next) => next,
            Err(broken) => panic!("edit {edit:?} breaks the version: {broken}"),
        }
    }

    /// The version after `edit`, or why it would break a version's invariants (for edits read
    /// back from disk, where that is corruption, not a bug).
    pub fn try_apply(&self, edit: &VersionEdit) -> Result<Version, String> {
        let mut next = self.clone();
        let removed: HashSet<(usize, u64)> = edit.removed.iter().copied().collect();
        for (level, tables) in next.levels.iter_mut().enumerate() {
            tables.retain(|table| !removed.contains(&(level, table.number)));
        }
        for (level, table) in &edit.added {
            next.levels[*level].push(table.clone());
        }
        next.levels[0].sort_by_key(|table| std::cmp::Reverse(table.number));
        for tables in &mut next.levels[1..] {
            tables.sort_by(|a, b| a.smallest.cmp(&b.smallest));
        }
        if let Some(seq) = edit.flushed_seq {
            next.flushed_seq = next.flushed_seq.max(seq);
        }
        if let Some(segment) = edit.first_live_wal_segment {
            next.first_live_wal_segment = next.first_live_wal_segment.max(segment);
        }
        if let Some(number) = edit.next_file_number {
            next.next_file_number = next.next_file_number.max(number);
        }
        next.check()?;
        Ok(next)
    }

    /// The edit that rebuilds this version from nothing (a manifest snapshot).
    pub fn snapshot(&self) -> VersionEdit {
        VersionEdit {
            added: self
                .levels
                .iter()
                .enumerate()
                .flat_map(|(level, tables)| tables.iter().map(move |table| (level, table.clone())))
                .collect(),
            removed: Vec::new(),
            flushed_seq: Some(self.flushed_seq),
            first_live_wal_segment: Some(self.first_live_wal_segment),
            next_file_number: Some(self.next_file_number),
        }
    }

    /// Levels 1 and deeper must hold disjoint, sorted key ranges; L0 is newest first; a table
    /// is named once, with a number below the next one to hand out (numbers are never reused).
    pub fn check(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for table in self.tables() {
            if !seen.insert(table.number) {
                return Err(format!("table {} is named twice", table.number));
            }
            if table.number >= self.next_file_number {
                return Err(format!(
                    "table {} is not below the next file number {}",
                    table.number, self.next_file_number
                ));
            }
        }
        if self.levels[0]
            .windows(2)
            .any(|pair| pair[0].number < pair[1].number)
        {
            return Err("level 0 is not newest first".to_string());
        }
        for (level, tables) in self.levels.iter().enumerate().skip(1) {
            for pair in tables.windows(2) {
                if pair[0].largest >= pair[1].smallest {
                    return Err(format!(
                        "level {level}: tables {} and {} overlap",
                        pair[0].number, pair[1].number
                    ));
                }
            }
        }
        Ok(())
    }

    /// The tables that may hold `key`, in the order a read must consult them: L0 newest first,
    /// then at most one table per deeper level.
    pub fn tables_for<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a Arc<TableMeta>> + 'a {
        let level0 = self.levels[0]
            .iter()
            .filter(move |table| key >= &table.smallest[..] && key <= &table.largest[..]);
        let deeper = self.levels[1..].iter().filter_map(move |tables| {
            let at = tables.partition_point(|table| &table.largest[..] < key);
            tables.get(at).filter(|table| key >= &table.smallest[..])
        });
        level0.chain(deeper)
    }

    /// Every live table.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<TableMeta>> {
        self.levels.iter().flatten()
    }

    /// The tables of this version that `next` no longer names, at any level.
    pub fn tables_not_in<'a>(&'a self, next: &Version) -> impl Iterator<Item = &'a Arc<TableMeta>> + 'a {
        let kept: HashSet<u64> = next.tables().map(|table| table.number).collect();
        self.tables().filter(move |table| !kept.contains(&table.number))
    }

    /// The largest version any table holds.
    pub fn max_entry_seq(&self) -> u64 {
        self.tables().map(|table| table.max_seq()).max().unwrap_or(0)
    }

    /// What the compaction choice looks at.
    pub fn summaries(&self) -> Vec<Vec<TableSummary>> {
        self.levels
            .iter()
            .map(|tables| {
                tables
                    .iter()
                    .map(|table| TableSummary {
                        number: table.number,
                        file_bytes: table.file_bytes,
                        smallest: table.smallest.clone(),
                        largest: table.largest.clone(),
                    })
                    .collect()
            })
            .collect()
    }

    /// Bytes of tables per level.
    pub fn level_bytes(&self) -> Vec<u64> {
        self.levels
            .iter()
            .map(|tables| tables.iter().map(|table| table.file_bytes).sum())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sst::bloom::BloomFilter;
    use crate::sst::format::Footer;
    use crate::sst::Retirement;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn table(number: u64, smallest: &'static [u8], largest: &'static [u8]) -> Arc<TableMeta> {
        TableMeta::new(
            number,
            format!("/d/{number}.sst").into(),
            4096,
            Footer::default(),
            Bytes::from_static(smallest),
            Bytes::from_static(largest),
            Vec::new(),
            BloomFilter::build(&[]),
        )
    }

    /// A compaction replaces tables 1 and 2 with 3 while a read still holds the old version:
    /// the retired tables' files go only when that read lets go, each once; a moved table and
    /// tables dropped without retirement (a shutdown) keep their files.
    #[test]
    fn a_retired_table_is_deleted_by_its_last_holder_only() {
        let deleted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let retirement = {
            let (deleted, calls) = (deleted.clone(), calls.clone());
            Retirement::new(move |number| {
                calls.fetch_add(1, Ordering::SeqCst);
                deleted.lock().unwrap().push(number);
            })
        };
        let start = Version::default().apply(&VersionEdit {
            added: vec![
                (0, table(2, b"a", b"m")),
                (0, table(1, b"c", b"z")),
                (1, table(4, b"a", b"b")),
            ],
            next_file_number: Some(5),
            ..VersionEdit::default()
        });
        let compacted = start.apply(&VersionEdit {
            added: vec![(1, table(3, b"c", b"z")), (2, start.levels[1][0].clone())],
            removed: vec![(0, 1), (0, 2), (1, 4)],
            ..VersionEdit::default()
        });
        let retired: Vec<u64> = start.tables_not_in(&compacted).map(|t| t.number).collect();
        assert_eq!(retired, vec![2, 1], "table 4 moved a level down and stays live");
        for table in start.tables_not_in(&compacted) {
            table.retire(retirement.clone());
        }
        let read_in_flight = Arc::new(start);
        let held_by_read = read_in_flight.clone();
        drop(read_in_flight);
        assert!(
            deleted.lock().unwrap().is_empty(),
            "a read still holds the old version"
        );
        drop(held_by_read);
        assert_eq!(*deleted.lock().unwrap(), vec![2, 1]);
        drop(compacted);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "live tables dropped at shutdown keep their files"
        );
    }

    #[test]
    #[should_panic(expected = "named twice")]
    fn an_edit_that_names_a_table_twice_is_refused() {
        let version = Version::default().apply(&VersionEdit {
            added: vec![(1, table(1, b"a", b"b"))],
            next_file_number: Some(2),
            ..VersionEdit::default()
        });
        let _ = version.apply(&VersionEdit {
            added: vec![(2, version.levels[1][0].clone())],
            ..VersionEdit::default()
        });
    }
}
