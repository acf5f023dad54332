//! The merge of a scan's sources: at each step the nearest key in the scan's direction among the
//! sources' heads, its newest version among them (the highest seq: a table's entries are older
//! than a newer table's or a memtable's, but comparing seqs needs no such order), tombstones
//! and shadowed versions skipped.

use std::ops::Bound;

use bytes::Bytes;

use super::sources::Source;
use super::{past, ScanItem};
use crate::error::Result;
use crate::io::FileSystem;
use crate::sst::TableReaders;

/// See the module documentation.
pub struct Merge {
    sources: Vec<Source>,
    reverse: bool,
    /// The far end of the range in the scan's direction.
    stop: Bound<Bytes>,
}

impl Merge {
    pub fn new(sources: Vec<Source>, reverse: bool, stop: Bound<Bytes>) -> Self {
        Merge {
            sources,
            reverse,
            stop,
        }
    }

    /// The next live key and its newest visible version, or `None` at the end of the range.
    pub async fn next<F: FileSystem>(&mut self, readers: &TableReaders<F>) -> Result<Option<ScanItem>> {
        loop {
            // The nearest key among the heads.
            let mut nearest: Option<Bytes> = None;
            for source in &mut self.sources {
                if let Some(head) = source.head(readers).await? {
                    let nearer = nearest.as_ref().is_none_or(|key| {
                        if self.reverse {
                            head.key > *key
                        } else {
                            head.key < *key
                        }
                    });
                    if nearer {
                        nearest = Some(head.key.clone());
                    }
                }
            }
            let Some(key) = nearest else { return Ok(None) };
            if past(&key, &self.stop, self.reverse) {
                return Ok(None);
            }
            // Its newest version; every source's version of it is consumed.
            let mut newest: Option<ScanItem> = None;
            for source in &mut self.sources {
                let Some(head) = source.head(readers).await? else {
                    continue;
                };
                if head.key != key {
                    continue;
                }
                if newest.as_ref().is_none_or(|item| head.seq > item.seq) {
                    newest = Some(head.clone());
                }
                source.pop();
            }
            match newest {
                Some(item) if item.value.is_some() => return Ok(Some(item)),
                // A tombstone: the key is deleted at this snapshot.
                _ => {}
            }
        }
    }
}
