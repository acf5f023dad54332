//! Point reads of live tables on the serving ring: bloom filter first, then the in-memory index,
//! then the block cache, and only then one aligned read through `io_uring`. Holds one open file per
//! live table; the caller opens a table's file before the table becomes visible to reads and
//! closes it when the table leaves the live set.

use crate::coding;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use super::block::EntryIter;
use super::cache::BlockCache;
use super::table::{read_block, TableMeta};
use crate::error::{Error, IoContext, Result};
use crate::io::{FileSystem, OpenMode};

/// See the module documentation.
pub struct TableReaders<F: FileSystem> {
    fs: F,
    files: RefCell<HashMap<u64, Rc<F::File>>>,
    cache: RefCell<BlockCache>,
}

/// A version of a key found in a table; `value: None` is a tombstone.
pub type Found = (u64, Option<Bytes>);

impl<F: FileSystem> TableReaders<F> {
    pub fn new(fs: F, cache_bytes: usize) -> Self {
        TableReaders {
            fs,
            files: RefCell::new(HashMap::new()),
            cache: RefCell::new(BlockCache::new(cache_bytes)),
        }
    }

    /// Opens the file of a table about to become readable.
    pub async fn open(&self, meta: &TableMeta) -> Result<()> {
        if self.files.borrow().contains_key(&meta.number) {
            return Ok(());
        }
        let file = self
            .fs
            .open(&meta.path, OpenMode::READ)
            .await
            .context("open", &meta.path)?;
        self.files.borrow_mut().insert(meta.number, Rc::new(file));
        Ok(())
    }

    /// Forgets a table that left the live set (reads in flight keep their handle).
    pub fn close(&self, number: u64) {
        self.files.borrow_mut().remove(&number);
    }

    /// The version of `key` that `meta` holds, if any.
    pub async fn get(&self, meta: &TableMeta, key: &[u8]) -> Result<Option<Found>> {
        if !meta.may_contain(key) {
            return Ok(None);
        }
        let Some(block) = meta.block_for(key) else {
            return Ok(None);
        };
        let cached = self.cache.borrow_mut().get(meta.number, coding::len_u32(block));
        let (bytes, count) = if let Some(cached) = cached {
            cached
        } else {
            let file = self.files.borrow().get(&meta.number).cloned();
            let file = match file {
                Some(file) => file,
                // Every live table is opened before it becomes visible; a table without a
                // handle is one an older version, still held by this read, names. Open it for this read
                // only (its file stays until the read drops that version).
                None => Rc::new(
                    self.fs
                        .open(&meta.path, OpenMode::READ)
                        .await
                        .context("open", &meta.path)?,
                ),
            };
            let (bytes, count) = read_block(&*file, meta, block).await?;
            self.cache
                .borrow_mut()
                .insert(meta.number, coding::len_u32(block), bytes.clone(), count);
            (bytes, count)
        };
        EntryIter::new(bytes, count)
            .find(key)
            .map_err(|reason| Error::sst_corruption(&meta.path, meta.index[block].offset, reason))
    }

    /// `(hits, misses, bytes held)` of the block cache.
    pub fn cache_stats(&self) -> (u64, u64, usize) {
        let cache = self.cache.borrow();
        let (hits, misses) = cache.hit_counts();
        (hits, misses, cache.bytes())
    }
}
