//! Point reads of live tables on the serving ring: bloom filter first, then the in-memory index,
//! then the block cache, and only then one aligned read through `io_uring`. Keeps the files of
//! the most recently read live tables open, at most `max_open_tables` (the share of the
//! descriptor limit `crate::fd_budget` gives tables), and opens any other per read, as leveldb's
//! table cache does; the caller opens a table's file before the table becomes visible to reads
//! (so a missing file fails the install, not a later read) and closes it when the table leaves
//! the live set.

use crate::coding;
use std::cell::RefCell;
use std::num::NonZeroUsize;
use std::rc::Rc;

use bytes::Bytes;
use lru::LruCache;

use super::block::EntryIter;
use super::cache::BlockCache;
use super::table::{read_block, TableMeta};
use crate::error::{Error, IoContext, Result};
use crate::io::{FileSystem, OpenMode};

/// See the module documentation.
pub struct TableReaders<F: FileSystem> {
    fs: F,
    files: RefCell<LruCache<u64, Rc<F::File>>>,
    cache: RefCell<BlockCache>,
}

/// A version of a key found in a table; `value: None` is a tombstone.
pub type Found = (u64, Option<Bytes>);

impl<F: FileSystem> TableReaders<F> {
    pub fn new(fs: F, cache_bytes: usize, max_open_tables: NonZeroUsize) -> Self {
        TableReaders {
            fs,
            files: RefCell::new(LruCache::new(max_open_tables)),
            cache: RefCell::new(BlockCache::new(cache_bytes)),
        }
    }

    /// Opens the file of a table about to become readable (closing the least recently read
    /// one if `max_open_tables` are open).
    pub async fn open(&self, meta: &TableMeta) -> Result<()> {
        if self.files.borrow().contains(&meta.number) {
            return Ok(());
        }
        let file = self
            .fs
            .open(&meta.path, OpenMode::READ)
            .await
            .context("open", &meta.path)?;
        self.files.borrow_mut().put(meta.number, Rc::new(file));
        Ok(())
    }

    /// Forgets a table that left the live set (reads in flight keep their handle).
    pub fn close(&self, number: u64) {
        self.files.borrow_mut().pop(&number);
    }

    /// How many table files are open for reads (reads in flight on closed ones aside).
    pub fn open_files(&self) -> usize {
        self.files.borrow().len()
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
            let (bytes, count) = read_block(&*self.file_for(meta).await?, meta, block).await?;
            self.cache
                .borrow_mut()
                .insert(meta.number, coding::len_u32(block), bytes.clone(), count);
            (bytes, count)
        };
        EntryIter::new(bytes, count)
            .find(key)
            .map_err(|reason| Error::sst_corruption(&meta.path, meta.index[block].offset, reason))
    }

    /// Data block `block` of `meta` and its entry count, for a scan: from the block cache if
    /// there, else read and checked but not cached, so that a scan does not evict the blocks
    /// point reads use.
    pub async fn scan_block(&self, meta: &TableMeta, block: usize) -> Result<(Bytes, u32)> {
        let cached = self.cache.borrow().peek(meta.number, coding::len_u32(block));
        match cached {
            Some(cached) => Ok(cached),
            None => read_block(&*self.file_for(meta).await?, meta, block).await,
        }
    }

    /// The open file of `meta`: kept open if it is a live table whose file was closed to stay
    /// within `max_open_tables`; opened for this read only if it is a retired one that an older
    /// version, still held by the reader, names (its file stays until that version is dropped).
    async fn file_for(&self, meta: &TableMeta) -> Result<Rc<F::File>> {
        if let Some(file) = self.files.borrow_mut().get(&meta.number).cloned() {
            return Ok(file);
        }
        let file = Rc::new(
            self.fs
                .open(&meta.path, OpenMode::READ)
                .await
                .context("open", &meta.path)?,
        );
        if !meta.is_retired() {
            self.files.borrow_mut().put(meta.number, file.clone());
        }
        Ok(file)
    }

    /// `(hits, misses, bytes held)` of the block cache.
    pub fn cache_stats(&self) -> (u64, u64, usize) {
        let cache = self.cache.borrow();
        let (hits, misses) = cache.hit_counts();
        (hits, misses, cache.bytes())
    }
}
