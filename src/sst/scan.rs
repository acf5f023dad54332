//! Sequential reading of a whole table for compaction: aligned reads of the limiter's request
//! size, each paced by the same limiter as the background writes (a point read queued behind a
//! background read waits as long as behind a write), with the next read in flight while the
//! current window is consumed (read-ahead, one read at a time). Each block is checked; entries
//! come out in key order. Bypasses the block cache so that a compaction does not evict what the
//! readers use.

use crate::coding;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::block::{self, Entry, EntryIter};
use super::table::TableMeta;
use crate::error::{Error, IoContext, Result};
use crate::io::{round_down_to_block, round_up_to_block, AlignedBuf, DataFile, FileSystem, OpenMode, Task};
use crate::rate_limit::RateLimiter;

/// A read in flight: where it starts and the task doing it.
struct ReadAhead {
    start: u64,
    len: usize,
    read: Task<(io::Result<usize>, AlignedBuf)>,
}

/// See the module documentation.
pub struct TableScanner<'a, F: FileSystem> {
    fs: F,
    file: Rc<F::File>,
    limiter: &'a RateLimiter,
    meta: Arc<TableMeta>,
    next_block: usize,
    /// Bytes read, from file offset `window_offset`.
    window: Bytes,
    window_offset: u64,
    ahead: Option<ReadAhead>,
    entries: VecDeque<Entry>,
}

impl<'a, F: FileSystem> TableScanner<'a, F> {
    pub async fn open(fs: &F, meta: Arc<TableMeta>, limiter: &'a RateLimiter) -> Result<Self> {
        let file = fs
            .open(&meta.path, OpenMode::READ)
            .await
            .context("open", &meta.path)?;
        Ok(TableScanner {
            fs: fs.clone(),
            file: Rc::new(file),
            limiter,
            meta,
            next_block: 0,
            window: Bytes::new(),
            window_offset: 0,
            ahead: None,
            entries: VecDeque::new(),
        })
    }

    /// The next entry in key order, or `None` at the end of the table.
    pub fn path(&self) -> &std::path::Path {
        &self.meta.path
    }

    pub async fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(entry) = self.entries.pop_front() {
                return Ok(Some(entry));
            }
            if self.next_block == self.meta.index.len() {
                self.finish_read_ahead().await;
                return Ok(None);
            }
            let block = self.load_block(self.next_block).await?;
            let offset = self.meta.index[self.next_block].offset;
            self.next_block += 1;
            let (entries, count) = block::decode(block, self.meta.footer.format_version)
                .map_err(|reason| Error::sst_corruption(&self.meta.path, offset, reason))?;
            for entry in EntryIter::new(entries, count) {
                let entry = entry.map_err(|reason| Error::sst_corruption(&self.meta.path, offset, reason))?;
                self.entries.push_back(entry);
            }
        }
    }

    /// The aligned range to read so that block `block` is whole in it.
    fn range_for(&self, block: usize) -> (u64, usize) {
        let entry = &self.meta.index[block];
        let start = round_down_to_block(entry.offset);
        let needed = round_up_to_block(coding::to_usize(entry.offset + u64::from(entry.len) - start));
        let data_end = self
            .meta
            .footer
            .filter_offset
            .max(entry.offset + u64::from(entry.len));
        let room = coding::to_usize(data_end - start);
        let len = self
            .limiter
            .request_bytes()
            .min(round_up_to_block(room))
            .max(needed);
        (start, len)
    }

    async fn start_read(&self, start: u64, len: usize) -> ReadAhead {
        self.limiter.acquire(&self.fs, len).await;
        let file = self.file.clone();
        let read = self
            .fs
            .spawn(async move { file.read_at(AlignedBuf::zeroed(len), start).await });
        ReadAhead { start, len, read }
    }

    async fn finish_read_ahead(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            let _ = ahead.read.await;
        }
    }

    async fn load_block(&mut self, block: usize) -> Result<Bytes> {
        let entry = &self.meta.index[block];
        let (offset, len) = (entry.offset, entry.len as usize);
        let end = offset + len as u64;
        let window_end = self.window_offset + self.window.len() as u64;
        if offset < self.window_offset || end > window_end {
            let (start, read_len) = self.range_for(block);
            let ahead = match self.ahead.take() {
                Some(ahead) if ahead.start == start && ahead.len >= read_len => ahead,
                stale => {
                    if let Some(stale) = stale {
                        let _ = stale.read.await;
                    }
                    self.start_read(start, read_len).await
                }
            };
            let (result, buf) = ahead.read.await;
            let read = result.context("read", &self.meta.path)?;
            if (read as u64) < end - start {
                return Err(Error::sst_corruption(
                    &self.meta.path,
                    start + read as u64,
                    format!("file ends inside the block at {offset}"),
                ));
            }
            let mut window = Bytes::from_owner(buf);
            window.truncate(read);
            self.window = window;
            self.window_offset = start;
            // Read ahead: the first block that does not fit whole in this window.
            let window_end = start + read as u64;
            let next = (block..self.meta.index.len()).find(|&i| {
                let e = &self.meta.index[i];
                e.offset + u64::from(e.len) > window_end
            });
            if let Some(next) = next {
                let (start, len) = self.range_for(next);
                self.ahead = Some(self.start_read(start, len).await);
            }
        }
        let from = coding::to_usize(offset - self.window_offset);
        Ok(self.window.slice(from..from + len))
    }
}
