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
    /// The version after `edit`.
    pub fn apply(&self, edit: &VersionEdit) -> Version {
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
        debug_assert!(next.check().is_ok(), "{:?}", next.check());
        next
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

    /// Levels 1 and deeper must hold disjoint, sorted key ranges.
    pub fn check(&self) -> Result<(), String> {
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

    /// The largest version any table holds.
    pub fn max_entry_version(&self) -> u64 {
        self.tables().map(|table| table.max_version()).max().unwrap_or(0)
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
