//! What a scan merges: the newest visible version of each key in one memtable
//! ([`MemtableSource`]), and the entries of a run of tables with disjoint key ranges, one level-0
//! table or a whole deeper level ([`TableSource`]). Each yields at most one item per key, in
//! the scan's direction, from its start bound on, and reads lazily: a page that ends early reads
//! no further.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::{at_or_after, ScanItem, Visibility};
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::memtable::Memtable;
use crate::sst::block::EntryIter;
use crate::sst::{TableMeta, TableReaders};

/// Keys a memtable source examines per refill: bounds the work (and the items buffered) of one
/// synchronous step on the serving ring.
const MEMTABLE_CHUNK_KEYS: usize = 256;

/// See the module documentation.
pub enum Source {
    Memtable(MemtableSource),
    Tables(TableSource),
}

impl Source {
    /// The next item without taking it; `None` once the source is exhausted.
    pub async fn head<F: FileSystem>(&mut self, readers: &TableReaders<F>) -> Result<Option<&ScanItem>> {
        match self {
            Source::Memtable(source) => Ok(source.head()),
            Source::Tables(source) => source.head(readers).await,
        }
    }

    /// Drops the head (after [`Source::head`] returned it).
    pub fn pop(&mut self) {
        match self {
            Source::Memtable(source) => source.buffered.pop_front(),
            Source::Tables(source) => source.buffered.pop_front(),
        };
    }
}

/// See the module documentation.
pub struct MemtableSource {
    table: Arc<Memtable>,
    visibility: Arc<Visibility>,
    reverse: bool,
    /// Where the next refill starts; `None` once the memtable is exhausted.
    next: Option<Bound<Bytes>>,
    buffered: VecDeque<ScanItem>,
}

impl MemtableSource {
    pub fn new(table: Arc<Memtable>, visibility: Arc<Visibility>, from: Bound<Bytes>, reverse: bool) -> Self {
        MemtableSource {
            table,
            visibility,
            reverse,
            next: Some(from),
            buffered: VecDeque::new(),
        }
    }

    fn head(&mut self) -> Option<&ScanItem> {
        while self.buffered.is_empty() {
            let from = self.next.take()?;
            let visibility = &self.visibility;
            let (items, last) = self.table.chunk(&from, self.reverse, MEMTABLE_CHUNK_KEYS, |seq| {
                visibility.admits(seq)
            });
            self.buffered.extend(items);
            self.next = last.map(Bound::Excluded);
        }
        self.buffered.front()
    }
}

/// See the module documentation.
pub struct TableSource {
    /// In the scan's direction, key ranges disjoint.
    tables: Vec<Arc<TableMeta>>,
    reverse: bool,
    from: Bound<Bytes>,
    /// The table being read, and the next block of it to read (`None`: not started).
    table: usize,
    block: Option<usize>,
    buffered: VecDeque<ScanItem>,
}

impl TableSource {
    /// `tables` sorted by key, ranges disjoint (one level-0 table, or a deeper level).
    pub fn new(mut tables: Vec<Arc<TableMeta>>, from: Bound<Bytes>, reverse: bool) -> Self {
        debug_assert!(tables.windows(2).all(|pair| pair[0].largest < pair[1].smallest));
        // Tables wholly before the start are never read.
        tables.retain(|table| {
            if table.index.is_empty() {
                return false;
            }
            let near_end = if reverse { &table.smallest } else { &table.largest };
            at_or_after(near_end, &from, reverse)
        });
        if reverse {
            tables.reverse();
        }
        TableSource {
            tables,
            reverse,
            from,
            table: 0,
            block: None,
            buffered: VecDeque::new(),
        }
    }

    async fn head<F: FileSystem>(&mut self, readers: &TableReaders<F>) -> Result<Option<&ScanItem>> {
        while self.buffered.is_empty() {
            let Some(meta) = self.tables.get(self.table).cloned() else {
                return Ok(None);
            };
            let block = match self.block {
                Some(block) => block,
                None => self.first_block(&meta),
            };
            let (bytes, count) = readers.scan_block(&meta, block).await?;
            let offset = meta.index[block].offset;
            let mut items = Vec::with_capacity(count as usize);
            for entry in EntryIter::new(bytes, count) {
                let entry = entry.map_err(|reason| Error::sst_corruption(&meta.path, offset, reason))?;
                if at_or_after(&entry.key, &self.from, self.reverse) {
                    items.push(ScanItem {
                        key: entry.key,
                        seq: entry.seq,
                        value: entry.value,
                    });
                }
            }
            if self.reverse {
                items.reverse();
            }
            self.buffered.extend(items);
            // The next block in the scan's direction, or the next table.
            let next = if self.reverse {
                block.checked_sub(1)
            } else {
                Some(block + 1).filter(|&next| next < meta.index.len())
            };
            if next.is_none() {
                self.table += 1;
            }
            self.block = next;
        }
        Ok(self.buffered.front())
    }

    /// The block a table's reading starts at: the one that would hold the start bound.
    fn first_block(&self, meta: &TableMeta) -> usize {
        let last = meta.index.len() - 1;
        match &self.from {
            Bound::Unbounded if self.reverse => last,
            Bound::Unbounded => 0,
            // Tables wholly before the start were dropped in `new`, so a forward start has a
            // block at or after it.
            Bound::Included(key) | Bound::Excluded(key) => meta.block_for(key).unwrap_or(last),
        }
    }
}
