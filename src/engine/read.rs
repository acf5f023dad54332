//! The read path: the memtables, then the tables of the current version, newest first. A read
//! keeps the version it started with across its awaits and pins it (see `retire.rs`), so no table
//! it may still open is deleted under it. Reads see only acknowledged writes.

use super::retire::{take_releasable, ReadPin};
use super::{Engine, VersionedValue};
use crate::background::Job;
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
        let pin = ReadPin::new(&self.reads_by_install, self.version_changes.get());
        let mut found = None;
        for table in version.tables_for(key) {
            if let Some((version, value)) = self.readers.get(table, key).await? {
                found = Some(Entry { version, value });
                break;
            }
        }
        drop(pin);
        self.release_unused_tables();
        Ok(found)
    }

    /// Closes and hands back for deletion the tables that left the live set, once no read holds
    /// a version that still names them. A read keeps the version it started with across its
    /// awaits, and may still have to open one of its tables; a table removed by install `i` is
    /// named by every version before `i`, so it waits for every read that started before `i`.
    pub(super) fn release_unused_tables(&self) {
        let released: Vec<u64> = {
            let mut retiring = self.retiring.borrow_mut();
            if retiring.is_empty() {
                return;
            }
            let oldest_read = self.reads_by_install.borrow().oldest();
            take_releasable(&mut retiring, oldest_read)
        };
        if released.is_empty() {
            return;
        }
        for &number in &released {
            self.readers.close(number);
        }
        self.background.borrow().send(Job::Release(released));
    }
}

/// A memtable or table entry as a reader sees it: tombstones are absent.
pub(super) fn visible(entry: Entry) -> Option<VersionedValue> {
    entry.value.map(|value| VersionedValue {
        version: entry.version,
        value,
    })
}
