//! Writes one SST: entries in key order go into data blocks, which stream to the file in aligned
//! `O_DIRECT` chunks of the limiter's request size, each paced by it. One write is in flight
//! while the next chunk fills (write-behind), never two. `finish` adds
//! the filter, the index and the footer, syncs, renames the file from its temporary name and syncs
//! the directory, so a table is either complete and durable under its final name or absent.

use crate::coding;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::block::{BlockBuilder, Compression};
use super::bloom::{key_hash, BloomFilter};
use super::format::{self, Footer, IndexEntry, FOOTER_BYTES};
use super::table::TableMeta;
use crate::error::{IoContext, Result};
use crate::filename::FileKind;
use crate::io::{round_up_to_block, AlignedBuf, DataFile, FileSystem, OpenMode, Task};
use crate::rate_limit::RateLimiter;

/// See the module documentation.
pub struct TableBuilder<'a, F: FileSystem> {
    fs: F,
    dir: PathBuf,
    number: u64,
    file: Rc<F::File>,
    /// The write in flight, if any; it hands its buffer back for the next chunk.
    in_flight: Option<Task<(io::Result<()>, AlignedBuf)>>,
    tmp_path: PathBuf,
    limiter: &'a RateLimiter,
    /// Bytes not yet written; `chunk_offset` is their file offset.
    chunk: AlignedBuf,
    chunk_offset: u64,
    block: BlockBuilder,
    block_last_key: Vec<u8>,
    /// A finished block whose index entry waits for the next key (its separator lies between
    /// the block's last key and that key): offset and length.
    unindexed_block: Option<(u64, u32)>,
    index: Vec<IndexEntry>,
    hashes: Vec<u64>,
    smallest: Option<Bytes>,
    entry_count: u64,
    max_seq: u64,
    /// Bytes of finished blocks so far.
    data_bytes: u64,
    compression: Compression,
}

impl<'a, F: FileSystem> TableBuilder<'a, F> {
    /// Creates `<number>.sst.tmp` in `dir`.
    pub async fn create(
        fs: &F,
        dir: PathBuf,
        number: u64,
        limiter: &'a RateLimiter,
        compression: Compression,
    ) -> Result<Self> {
        let tmp_path = FileKind::TableTmp(number).path(&dir);
        let file = fs
            .open(&tmp_path, OpenMode::CREATE_NEW)
            .await
            .context("create", &tmp_path)?;
        Ok(TableBuilder {
            fs: fs.clone(),
            dir,
            number,
            file: Rc::new(file),
            in_flight: None,
            tmp_path,
            limiter,
            chunk: AlignedBuf::zeroed(limiter.request_bytes()),
            chunk_offset: 0,
            block: BlockBuilder::default(),
            block_last_key: Vec::new(),
            unindexed_block: None,
            index: Vec::new(),
            hashes: Vec::new(),
            smallest: None,
            entry_count: 0,
            max_seq: 0,
            data_bytes: 0,
            compression,
        })
    }

    /// Adds an entry; keys must come in strictly ascending order.
    pub async fn add(&mut self, key: &[u8], seq: u64, value: Option<&[u8]>) -> Result<()> {
        // `block_last_key` is the last key added, across blocks (it used to be checked within
        // the first block only).
        assert!(
            self.smallest.is_none() || key > self.block_last_key.as_slice(),
            "table {}: key {key:?} added after {:?}",
            self.number,
            self.block_last_key
        );
        if self.smallest.is_none() {
            self.smallest = Some(Bytes::copy_from_slice(key));
        }
        if let Some((offset, len)) = self.unindexed_block.take() {
            let separator = super::separator::shortest_separator(&self.block_last_key, key);
            self.index.push(IndexEntry {
                separator: Bytes::from(separator),
                offset,
                len,
            });
        }
        self.block.add(key, seq, value);
        self.block_last_key.clear();
        self.block_last_key.extend_from_slice(key);
        self.hashes.push(key_hash(key));
        self.entry_count += 1;
        self.max_seq = self.max_seq.max(seq);
        if self.block.len_bytes() >= super::block::TARGET_BLOCK_BYTES {
            self.finish_block().await?;
        }
        Ok(())
    }

    /// Bytes the table would take if finished now (without filter and index).
    pub fn estimated_bytes(&self) -> u64 {
        self.data_bytes + self.block.len_bytes() as u64
    }

    pub fn entry_count(&self) -> u64 {
        self.entry_count
    }

    /// Writes the block out; its index entry is made with the next key (or by `finish`).
    async fn finish_block(&mut self) -> Result<()> {
        let block = self.block.finish(self.compression);
        debug_assert!(self.unindexed_block.is_none());
        self.unindexed_block = Some((self.data_bytes, coding::len_u32(block.len())));
        self.data_bytes += block.len() as u64;
        self.append(&block).await
    }

    /// Copies `bytes` into the chunk, writing the chunk out each time it fills.
    async fn append(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let room = self.chunk.capacity() - self.chunk.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            let copied = self.chunk.extend_from_slice(now);
            debug_assert!(copied);
            bytes = rest;
            if self.chunk.len() == self.chunk.capacity() {
                self.write_chunk().await?;
            }
        }
        Ok(())
    }

    /// Starts writing the full chunk once the previous write has completed.
    async fn write_chunk(&mut self) -> Result<()> {
        self.chunk.pad_to_block();
        let len = self.chunk.len();
        let next = match self.complete_write().await? {
            Some(buf) => buf,
            None => AlignedBuf::zeroed(self.limiter.request_bytes()),
        };
        self.limiter.acquire(&self.fs, len).await;
        let chunk = std::mem::replace(&mut self.chunk, next);
        let (file, offset) = (self.file.clone(), self.chunk_offset);
        self.in_flight = Some(self.fs.spawn(async move { file.write_at(chunk, offset).await }));
        self.chunk_offset += len as u64;
        Ok(())
    }

    /// Waits for the write in flight; returns its emptied buffer.
    async fn complete_write(&mut self) -> Result<Option<AlignedBuf>> {
        let Some(write) = self.in_flight.take() else {
            return Ok(None);
        };
        let (result, mut buf) = write.await;
        result.context("write", &self.tmp_path)?;
        buf.set_len(0);
        Ok(Some(buf))
    }

    /// Writes the filter, index and footer, makes the table durable under its final name, and
    /// returns its metadata. At least one entry must have been added.
    /// On failure the table's file is deleted, under either name (a full disk must leave no
    /// half-written table behind; its number was never published, so nothing needs it).
    pub async fn finish(mut self) -> Result<Arc<TableMeta>> {
        match self.write_tail_and_publish().await {
            Ok(meta) => Ok(meta),
            Err(error) => {
                self.abandon().await;
                Err(error)
            }
        }
    }

    async fn write_tail_and_publish(&mut self) -> Result<Arc<TableMeta>> {
        assert!(self.entry_count > 0, "an SST holds at least one entry");
        if !self.block.is_empty() {
            self.finish_block().await?;
        }
        // The last block's entry holds its last key: the table's largest key, exact.
        let (offset, len) = self
            .unindexed_block
            .take()
            .expect("the last block was just finished");
        self.index.push(IndexEntry {
            separator: Bytes::copy_from_slice(&self.block_last_key),
            offset,
            len,
        });
        let filter = BloomFilter::build(&self.hashes);
        let smallest = self.smallest.take().expect("set with the first entry");
        let mut tail = Vec::with_capacity(filter.encoded_len() + 64 * self.index.len() + FOOTER_BYTES);
        format::encode_filter(&filter, &mut tail);
        let filter_len = coding::len_u32(tail.len());
        format::encode_index(&smallest, &self.index, &mut tail);
        let index_len = coding::len_u32(tail.len()) - filter_len;
        let filter_offset = self.data_bytes;
        let footer = Footer {
            format_version: format::FORMAT_VERSION,
            block_count: coding::len_u32(self.index.len()),
            entry_count: self.entry_count,
            filter_offset,
            filter_len,
            index_offset: filter_offset + u64::from(filter_len),
            index_len,
            max_seq: self.max_seq,
        };
        let unpadded = coding::to_usize(filter_offset) + tail.len() + FOOTER_BYTES;
        let file_bytes = round_up_to_block(unpadded);
        tail.resize(tail.len() + file_bytes - unpadded, 0);
        tail.extend_from_slice(&footer.encode());
        self.append(&tail).await?;
        if !self.chunk.is_empty() {
            self.write_chunk().await?;
        }
        self.complete_write().await?;
        assert_eq!(
            self.chunk_offset, file_bytes as u64,
            "table {}: bytes written",
            self.number
        );
        let path = FileKind::Table(self.number).path(&self.dir);
        crate::io::publish(&self.fs, &self.file, &self.tmp_path, &path).await?;
        let largest = self.index.last().expect("at least one block").separator.clone();
        Ok(TableMeta::new(
            self.number,
            path,
            file_bytes as u64,
            footer,
            smallest,
            largest,
            std::mem::take(&mut self.index),
            filter,
        ))
    }

    /// Gives up on the table and removes its file, under either name (`finish` may have
    /// renamed it before failing; its number was never published, so nothing needs it).
    pub async fn abandon(mut self) {
        // Never leave a write running against a file about to be removed.
        let _ = self.complete_write().await;
        let TableBuilder {
            fs,
            dir,
            number,
            tmp_path,
            file,
            ..
        } = self;
        drop(file);
        crate::io::remove_leftover(&fs, &tmp_path).await;
        crate::io::remove_leftover(&fs, &FileKind::Table(number).path(&dir)).await;
    }
}
