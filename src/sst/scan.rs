//! Sequential reading of a whole table for compaction: aligned reads of the limiter's size, each block checked,
//! entries handed out in key order, each read paced by the same rate limiter as the background
//! writes (a burst of 1 MiB reads delays the serving ring's point reads as much as writes do).
//! Bypasses the block cache so that a compaction does not evict what the readers use.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::block::{self, Entry, EntryIter};
use super::table::TableMeta;
use crate::error::{Error, Result};
use crate::io::{round_down_to_block, round_up_to_block, AlignedBuf, DataFile, FileSystem, OpenMode};
use crate::rate_limit::RateLimiter;

/// See the module documentation.
pub struct TableScanner<'a, F: FileSystem> {
    file: F::File,
    limiter: &'a RateLimiter,
    meta: Arc<TableMeta>,
    next_block: usize,
    /// Bytes read ahead, from file offset `window_offset`.
    window: Bytes,
    window_offset: u64,
    entries: VecDeque<Entry>,
}

impl<'a, F: FileSystem> TableScanner<'a, F> {
    pub async fn open(fs: &F, meta: Arc<TableMeta>, limiter: &'a RateLimiter) -> Result<Self> {
        let file = fs
            .open(&meta.path, OpenMode::READ)
            .await
            .map_err(|error| Error::io("open", &meta.path, error))?;
        Ok(TableScanner {
            file,
            limiter,
            meta,
            next_block: 0,
            window: Bytes::new(),
            window_offset: 0,
            entries: VecDeque::new(),
        })
    }

    pub fn meta(&self) -> &Arc<TableMeta> {
        &self.meta
    }

    /// The next entry in key order, or `None` at the end of the table.
    pub async fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(entry) = self.entries.pop_front() {
                return Ok(Some(entry));
            }
            if self.next_block == self.meta.index.len() {
                return Ok(None);
            }
            let block = self.load_block(self.next_block).await?;
            self.next_block += 1;
            let offset = self.meta.index[self.next_block - 1].offset;
            let count = block::verify(&block)
                .map_err(|reason| Error::sst_corruption(&self.meta.path, offset, reason))?;
            for entry in EntryIter::new(block, count) {
                let entry = entry.map_err(|reason| Error::sst_corruption(&self.meta.path, offset, reason))?;
                self.entries.push_back(entry);
            }
        }
    }

    async fn load_block(&mut self, block: usize) -> Result<Bytes> {
        let entry = &self.meta.index[block];
        let end = entry.offset + u64::from(entry.len);
        let window_end = self.window_offset + self.window.len() as u64;
        if entry.offset < self.window_offset || end > window_end {
            let start = round_down_to_block(entry.offset);
            let len = round_up_to_block((end - start) as usize).max(self.limiter.request_bytes());
            let len = len
                .min((self.meta.file_bytes - start) as usize)
                .max(round_up_to_block((end - start) as usize));
            self.limiter.acquire(len).await;
            let (result, buf) = self.file.read_at(AlignedBuf::zeroed(len), start).await;
            let read = result.map_err(|error| Error::io("read", &self.meta.path, error))?;
            if (read as u64) < end - start {
                return Err(Error::sst_corruption(
                    &self.meta.path,
                    start + read as u64,
                    format!("file ends inside the block at {}", entry.offset),
                ));
            }
            self.window = Bytes::copy_from_slice(&buf.as_slice()[..read]);
            self.window_offset = start;
        }
        let from = (entry.offset - self.window_offset) as usize;
        Ok(self.window.slice(from..from + entry.len as usize))
    }
}
