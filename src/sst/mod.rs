//! Sorted string tables: immutable files of sorted entries with a bloom filter and an index
//! (`docs/format.md`, "SST files"). This folder knows bytes and files, not levels or versions:
//! - `block`: data blocks; `bloom`: the filter; `format`: footer, filter and index blocks;
//! - `builder`: writes a table in direct chunks, paced;
//! - `table`: a table's in-memory metadata (index, filter) and block reads;
//! - `scan`: sequential reading for compaction; `reader`: point reads with a block cache.

pub mod block;
pub mod bloom;
mod builder;
mod cache;
pub mod format;
mod reader;
mod scan;
pub mod separator;
mod table;

pub use block::{Compression, Entry};
pub use builder::TableBuilder;
pub use cache::BlockCache;
pub use reader::TableReaders;
pub use scan::TableScanner;
pub use table::{read_block, Retirement, TableMeta};
