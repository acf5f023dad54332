//! The read path: the memtables, then the tables of the current version, newest first. A read
//! holds the version it started with (an `Arc`) across its awaits; the version holds its tables,
//! and a table's file is deleted only when its last holder lets go (`TableMeta::retire`), so no
//! table a read may still open is deleted under it. Reads see only acknowledged writes.

use super::{Engine, VersionedValue};
use crate::error::Result;
use crate::io::FileSystem;
use crate::memtable::Entry;

impl<F: FileSystem> Engine<F> {
    /// The newest acknowledged value of `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<VersionedValue>> {
        if let Some(entry) = self.memtables.borrow().get(key) {
            return Ok(visible(entry));
        }
        Ok(self.table_lookup(key).await?.and_then(visible))
    }

    /// The newest version of `key` in the tables of the current version.
    pub(super) async fn table_lookup(&self, key: &[u8]) -> Result<Option<Entry>> {
        let version = self.version.borrow().clone();
        for table in version.tables_for(key) {
            if let Some((seq, value)) = self.readers.get(table, key).await? {
                return Ok(Some(Entry { seq, value }));
            }
        }
        Ok(None)
    }
}

/// A memtable or table entry as a reader sees it: tombstones are absent.
pub(super) fn visible(entry: Entry) -> Option<VersionedValue> {
    entry.value.map(|value| VersionedValue {
        version: entry.seq,
        value,
    })
}
