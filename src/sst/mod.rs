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
mod table;

use std::path::{Path, PathBuf};

pub use block::Entry;
pub use builder::TableBuilder;
pub use cache::BlockCache;
pub use reader::TableReaders;
pub use scan::TableScanner;
pub use table::{read_block, TableMeta};

const SUFFIX: &str = ".sst";
const TMP_SUFFIX: &str = ".sst.tmp";

/// `NNNNNNNNNNNNNNNN.sst`: sixteen decimal digits of the table's file number.
pub fn table_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}{SUFFIX}"))
}

fn tmp_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}{TMP_SUFFIX}"))
}

/// The file number of a table file name.
pub fn table_number(path: &Path) -> Option<u64> {
    let digits = path.file_name()?.to_str()?.strip_suffix(SUFFIX)?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether a file is a table that was still being written when the server stopped.
pub fn is_unfinished_table(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.ends_with(TMP_SUFFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let path = table_path(Path::new("/d"), 42);
        assert_eq!(path, Path::new("/d/0000000000000042.sst"));
        assert_eq!(table_number(&path), Some(42));
        assert_eq!(table_number(Path::new("/d/42.sst")), None);
        assert!(is_unfinished_table(&tmp_path(Path::new("/d"), 42)));
        assert!(!is_unfinished_table(&path));
    }
}
