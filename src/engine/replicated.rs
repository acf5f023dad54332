//! Cluster mode's write path (`crate::cluster`): the Raft log is the write-ahead log, so a
//! committed entry goes straight into the memtable at its log index, with no append of its own.
//! Conditions (`if_version`, a delete's "was it there") are decided here, at apply time, by every
//! replica on the same state, so every replica decides the same.
//!
//! The memtable's freeze point is the applied index instead of the WAL's next seq: a flush then
//! claims every entry up to the index it froze at, writes or not, and the manifest's flushed seq
//! is exactly "applied and in tables up to here" (what a restart reports to Raft as applied).

use bytes::Bytes;

use super::{BatchResult, BatchWrite, Engine};
use crate::error::{Error, Result};
use crate::io::FileSystem;

/// What applying one entry's writes did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Every op was written at the entry's index; per op, for a delete, what it removed.
    Done(Vec<BatchResult>),
    /// A condition failed (op `op`, the key's current version): nothing was written.
    Mismatch { op: usize, current: Option<u64> },
    /// A single delete of an absent key: nothing was written.
    Absent,
}

impl<F: FileSystem> Engine<F> {
    /// Switches the store to cluster mode: writes come only through
    /// [`Engine::apply_replicated`], and `applied` is the last index already in the store
    /// (`None`: none; Raft's first entry, the initial membership, has index 0).
    pub fn start_replicated(&self, applied: Option<u64>) {
        assert!(
            self.pending.borrow().is_empty(),
            "cluster mode starts before any write"
        );
        self.replicated_next
            .set(Some(applied.map_or(0, |index| index + 1)));
    }

    /// The last log index applied, in cluster mode.
    pub fn applied_index(&self) -> Option<u64> {
        self.replicated_next.get().and_then(|next| next.checked_sub(1))
    }

    /// The seq every write below has been appended (single node) or applied (cluster mode):
    /// where a memtable freezes and what a scan's snapshot sees.
    pub(super) fn log_next_seq(&self) -> u64 {
        self.replicated_next.get().unwrap_or_else(|| self.wal.next_seq())
    }

    /// Applies the writes of committed entry `index` (in log order, each index once). A single
    /// delete (`absent_is_noop`) of a missing key writes nothing; a batch's delete of one writes
    /// a tombstone, as in single-node mode. Every op's version is `index`.
    pub async fn apply_replicated(
        &self,
        index: u64,
        writes: &[BatchWrite],
        absent_is_noop: bool,
    ) -> Result<Applied> {
        let next = self
            .replicated_next
            .get()
            .expect("apply_replicated runs in cluster mode");
        assert!(index >= next, "log index {index} applied again (next is {next})");
        let keys: Vec<&[u8]> = writes.iter().map(|write| &write.key[..]).collect();
        self.admit_memtable().await?;
        let states = self.current_states(&keys).await?;
        for (op, (write, state)) in writes.iter().zip(&states).enumerate() {
            if !state.satisfies(write.if_version) {
                return self.applied_nothing(
                    index,
                    Applied::Mismatch {
                        op,
                        current: state.version(),
                    },
                );
            }
        }
        if absent_is_noop && writes.len() == 1 && writes[0].value.is_none() && states[0].current.is_none() {
            return self.applied_nothing(index, Applied::Absent);
        }
        // Set before the accounting: a freeze it triggers must claim this entry.
        self.replicated_next.set(Some(index + 1));
        let bytes = writes
            .iter()
            .map(|write| {
                crate::memtable::Memtable::entry_bytes(
                    write.key.len(),
                    write.value.as_ref().map_or(0, Bytes::len),
                )
            })
            .sum();
        let slot = self.note_append_bytes(bytes);
        for write in writes {
            slot.table.insert(write.key.clone(), index, write.value.clone());
        }
        slot.settled();
        if slot.frozen_at().is_some() {
            self.request_ready_flushes();
        }
        Ok(Applied::Done(
            states
                .into_iter()
                .zip(writes)
                .map(|(state, write)| BatchResult {
                    version: index,
                    removed: if write.value.is_none() {
                        state.current
                    } else {
                        None
                    },
                })
                .collect(),
        ))
    }

    /// Notes an entry that wrote nothing (a failed condition, a Raft membership or blank entry):
    /// it is applied all the same.
    pub fn applied_nothing(&self, index: u64, outcome: Applied) -> Result<Applied> {
        let next = self.replicated_next.get().expect("cluster mode");
        assert!(index >= next, "log index {index} applied again");
        self.replicated_next.set(Some(index + 1));
        Ok(outcome)
    }

    /// Waits while the memtables are full (as [`Engine::admit`], without the single-node
    /// sequence lease: in cluster mode versions are log indexes).
    async fn admit_memtable(&self) -> Result<()> {
        loop {
            let progress = self.progress.notified();
            if let Some(cause) = &*self.background_failure.borrow() {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
            if !self.memtables_full() {
                return Ok(());
            }
            if let Some((op, path)) = &*self.background_no_space.borrow() {
                return Err(Error::NoSpace {
                    op,
                    path: path.clone(),
                });
            }
            progress.await;
        }
    }

    /// Every live key with its newest version and value, in key order, as of now: what a Raft
    /// snapshot holds. Reads the tables' blocks (not through the cache, as scans do).
    pub async fn read_all(&self) -> Result<Vec<(Bytes, u64, Bytes)>> {
        let snapshot = self.take_snapshot();
        let range = super::ScanRange {
            lower: Bytes::new(),
            upper: None,
            reverse: false,
            keys_only: false,
        };
        let mut merge = self.merge_for(&snapshot, &range, None);
        let mut all = Vec::new();
        while let Some(item) = merge.next(&self.readers).await? {
            if let Some(value) = item.value {
                all.push((item.key, item.seq, value));
            }
        }
        Ok(all)
    }
}

impl<F: FileSystem> Engine<F> {
    /// Makes the store hold exactly `items` (live keys in key order, each with its version and
    /// value): the state of a Raft snapshot taken at index `last`. Writes only the difference
    /// (keys newer in the snapshot, and tombstones at `last` for keys it lacks), then flushes,
    /// so that every entry up to `last` is in tables when this returns. Not atomic: a crash
    /// midway leaves a mix, which installing the same snapshot again turns into its state (the
    /// caller keeps the snapshot until then, `cluster::files`).
    pub async fn install_replicated(&self, last: u64, items: Vec<(Bytes, u64, Bytes)>) -> Result<()> {
        let local = self.read_all().await?;
        let mut writes: Vec<(Bytes, u64, Option<Bytes>)> = Vec::new();
        let mut local = local.into_iter().peekable();
        for (key, version, value) in items {
            while let Some((gone, _, _)) = local.next_if(|(local_key, _, _)| *local_key < key) {
                writes.push((gone, last, None));
            }
            if let Some((_, local_version, _)) = local.next_if(|(local_key, _, _)| *local_key == key) {
                assert!(
                    local_version <= version,
                    "a snapshot at {last} is older than the store for a key (version {local_version} > {version})"
                );
                if local_version == version {
                    continue;
                }
            }
            writes.push((key, version, Some(value)));
        }
        writes.extend(local.map(|(gone, _, _)| (gone, last, None)));
        let next = self.replicated_next.get().expect("cluster mode");
        self.replicated_next.set(Some(next.max(last + 1)));
        for (key, seq, value) in writes {
            self.admit_memtable().await?;
            let slot = self.note_append_bytes(crate::memtable::Memtable::entry_bytes(
                key.len(),
                value.as_ref().map_or(0, Bytes::len),
            ));
            slot.table.insert(key, seq, value);
            slot.settled();
            if slot.frozen_at().is_some() {
                self.request_ready_flushes();
            }
        }
        self.flush().await
    }
}
