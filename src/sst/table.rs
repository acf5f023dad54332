//! A table's metadata, held in memory while the table is live: its key range, index and bloom
//! filter, read and checked once when the table is opened. Reading one data block is here too,
//! since both point reads and scans need the same aligned read and the same checks.

use crate::coding;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::bloom::BloomFilter;
use super::format::{self, Footer, IndexEntry, FOOTER_BYTES};
use crate::error::{Error, IoContext, Result};
use crate::io::{
    round_down_to_block, round_up_to_block, AlignedBuf, DataFile, FileSystem, OpenMode, BLOCK_BYTES,
};
use crate::key_prefix;

/// See the module documentation. Shared as `Arc<TableMeta>` by every version that names the
/// table (and by a compaction reading it): the `Arc` is the table's reference count, and the
/// table's lifetime ends with its last holder (see [`TableMeta::retire`]).
#[derive(Debug)]
pub struct TableMeta {
    pub number: u64,
    pub path: PathBuf,
    pub file_bytes: u64,
    pub footer: Footer,
    pub smallest: Bytes,
    pub largest: Bytes,
    pub index: Vec<IndexEntry>,
    /// `crate::key_prefix` of each index separator, in index order: a point read's binary
    /// search compares these contiguous integers and follows a separator only among equal
    /// prefixes (following each `Bytes` to `memcmp` was 20% of `lsm_load`'s idle reads).
    separator_prefixes: Box<[u128]>,
    pub filter: BloomFilter,
    /// What [`TableMeta::index_resident_bytes`] reports, summed once here: `stats()` (every
    /// `/metrics` scrape, and the LSM benchmark twice per read) sums it over every table, and
    /// walking every index entry each time took 75% of the CPU of `lsm_load`'s read phase.
    index_bytes: usize,
    /// Set once an edit that removes the table from the live set is durable.
    retired: OnceLock<Retirement>,
}

/// What to do with a table's number once nothing holds the table (queue its file's deletion).
#[derive(Clone)]
pub struct Retirement(Arc<dyn Fn(u64) + Send + Sync>);

impl Retirement {
    pub fn new(on_unused: impl Fn(u64) + Send + Sync + 'static) -> Self {
        Retirement(Arc::new(on_unused))
    }
}

impl std::fmt::Debug for Retirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Retirement")
    }
}

impl Drop for TableMeta {
    /// As leveldb keeps a file while any `Version` names it: the file of a retired table goes
    /// when its last holder (a version a read still uses, a compaction's input) lets go. A table
    /// that was never retired (dropped at shutdown, or replaced during manifest replay) keeps
    /// its file; start-up deletes the files no manifest names.
    fn drop(&mut self) {
        if let Some(retirement) = self.retired.get() {
            (retirement.0)(self.number);
        }
    }
}

impl TableMeta {
    /// Metadata of a table just written or read back.
    #[expect(clippy::too_many_arguments, reason = "one argument per field of the metadata")]
    pub fn new(
        number: u64,
        path: PathBuf,
        file_bytes: u64,
        footer: Footer,
        smallest: Bytes,
        largest: Bytes,
        index: Vec<IndexEntry>,
        filter: BloomFilter,
    ) -> Arc<Self> {
        assert!(smallest <= largest, "table {number}: smallest key above largest");
        let separator_prefixes: Box<[u128]> = index
            .iter()
            .map(|entry| key_prefix::prefix_of(&entry.separator))
            .collect();
        let index_bytes = index.len() * (std::mem::size_of::<IndexEntry>() + std::mem::size_of::<u128>())
            + index.iter().map(|entry| entry.separator.len()).sum::<usize>()
            + smallest.len()
            + largest.len();
        Arc::new(TableMeta {
            number,
            path,
            file_bytes,
            footer,
            smallest,
            largest,
            index,
            separator_prefixes,
            filter,
            index_bytes,
            retired: OnceLock::new(),
        })
    }

    /// Marks the table as out of the live set: `retirement` runs when the last `Arc` is dropped.
    /// Called once, after the edit that removes the table is durable (before that, a crash would
    /// bring the table back and its file must be there).
    pub fn retire(&self, retirement: Retirement) {
        let first = self.retired.set(retirement).is_ok();
        assert!(first, "table {} retired twice", self.number);
    }

    /// Bytes the index holds in memory: its entries and their separators, with the smallest
    /// and largest keys.
    pub fn index_resident_bytes(&self) -> usize {
        self.index_bytes
    }

    /// Whether the table has left the live set (its file goes with the last holder).
    pub fn is_retired(&self) -> bool {
        self.retired.get().is_some()
    }

    /// Opens the table at `path` and reads its footer, filter and index, checking each.
    pub async fn load<F: FileSystem>(fs: &F, path: &Path, number: u64) -> Result<Arc<Self>> {
        let file = fs.open(path, OpenMode::READ).await.context("open", path)?;
        let file_bytes = file.size().await.context("stat", path)?;
        if file_bytes < BLOCK_BYTES as u64 || file_bytes % BLOCK_BYTES as u64 != 0 {
            return Err(Error::sst_corruption(
                path,
                file_bytes,
                format!("file size {file_bytes} is not a whole number of 4 KiB blocks (truncated?)"),
            ));
        }
        let last_block = read_exact(&file, path, file_bytes - BLOCK_BYTES as u64, BLOCK_BYTES).await?;
        let footer_at = file_bytes - FOOTER_BYTES as u64;
        let footer = Footer::decode(&last_block[BLOCK_BYTES - FOOTER_BYTES..], file_bytes)
            .map_err(|reason| Error::sst_corruption(path, footer_at, reason))?;
        let tail_start = round_down_to_block(footer.filter_offset);
        let tail = read_exact(&file, path, tail_start, coding::to_usize(file_bytes - tail_start)).await?;
        let slice = |offset: u64, len: u32| {
            let from = coding::to_usize(offset - tail_start);
            &tail[from..from + len as usize]
        };
        let filter = format::decode_filter(slice(footer.filter_offset, footer.filter_len))
            .map_err(|reason| Error::sst_corruption(path, footer.filter_offset, reason))?;
        let (smallest, index) = format::decode_index(
            slice(footer.index_offset, footer.index_len),
            footer.block_count,
            footer.filter_offset,
        )
        .map_err(|reason| Error::sst_corruption(path, footer.index_offset, reason))?;
        let largest = index
            .last()
            .expect("block_count checked non-zero")
            .separator
            .clone();
        if smallest > largest {
            return Err(Error::sst_corruption(
                path,
                footer.index_offset,
                "the first key is above the last block's last key",
            ));
        }
        Ok(TableMeta::new(
            number,
            path.to_path_buf(),
            file_bytes,
            footer,
            smallest,
            largest,
            index,
            filter,
        ))
    }

    /// Whether the table may hold `key`: in its key range and passing the bloom filter.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        key >= &self.smallest[..] && key <= &self.largest[..] && self.filter.may_contain(key)
    }

    /// The block that would hold `key`, if any: the first whose separator is at or above it.
    pub fn block_for(&self, key: &[u8]) -> Option<usize> {
        let probe = key_prefix::prefix_of(key);
        // Separators below the probe's prefix are below the key, those above it above; only
        // the run of equal prefixes (long only for keys sharing their first 16 bytes) needs the
        // separators themselves.
        let equal_from = self.separator_prefixes.partition_point(|&prefix| prefix < probe);
        let equal_to =
            equal_from + self.separator_prefixes[equal_from..].partition_point(|&prefix| prefix == probe);
        let at =
            equal_from + self.index[equal_from..equal_to].partition_point(|entry| &entry.separator[..] < key);
        debug_assert_eq!(at, self.index.partition_point(|entry| &entry.separator[..] < key));
        (at < self.index.len()).then_some(at)
    }

    pub fn entry_count(&self) -> u64 {
        self.footer.entry_count
    }

    pub fn max_seq(&self) -> u64 {
        self.footer.max_seq
    }
}

async fn read_exact<D: DataFile>(file: &D, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let buf = AlignedBuf::zeroed(len);
    let (result, buf) = file.read_at(buf, offset).await;
    let read = result.context("read", path)?;
    if read < len {
        return Err(Error::sst_corruption(
            path,
            offset + read as u64,
            format!("file ends after {read} of {len} bytes at offset {offset}"),
        ));
    }
    Ok(buf.as_slice()[..len].to_vec())
}

/// Reads data block `block` of `meta` from `file`, checks and decodes it; returns its entries
/// (for `block::EntryIter`) and their count.
pub async fn read_block<D: DataFile>(file: &D, meta: &TableMeta, block: usize) -> Result<(Bytes, u32)> {
    let entry = &meta.index[block];
    let start = round_down_to_block(entry.offset);
    let end = round_up_to_block(coding::to_usize(entry.offset + u64::from(entry.len))) as u64;
    let len = coding::to_usize(end - start);
    let (result, buf) = file.read_at(AlignedBuf::zeroed(len), start).await;
    let read = result.context("read", &meta.path)?;
    if read < len {
        return Err(Error::sst_corruption(
            &meta.path,
            start + read as u64,
            format!("file ends after {read} of {len} bytes at offset {start}"),
        ));
    }
    // Copied out of the aligned read (up to two blocks larger) so that a cached block holds
    // exactly what the cache accounts for (a compressed one is decoded into its own buffer).
    let from = coding::to_usize(entry.offset - start);
    let stored = Bytes::copy_from_slice(&buf.as_slice()[from..from + entry.len as usize]);
    super::block::decode(stored, meta.footer.format_version)
        .map_err(|reason| Error::sst_corruption(&meta.path, entry.offset, reason))
}
