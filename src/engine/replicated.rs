//! Cluster mode's write path (`crate::cluster`): the Raft log is the write-ahead log, so a
//! committed entry goes straight into the memtable at its log index, with no append of its own.
//! Conditions (`if_version`, a delete's "was it there") are decided here, at apply time, by every
//! replica on the same state, so every replica decides the same.
//!
//! The memtable's freeze point is the applied index instead of the WAL's next seq: a flush then
//! claims every entry up to the index it froze at, writes or not, and the manifest's flushed seq
//! is exactly "applied and in tables up to here" (what a restart reports to Raft as applied).

use bytes::Bytes;

use super::{BatchResult, BatchWrite, Engine, VersionedValue};
use crate::error::{Error, Result};
use crate::io::FileSystem;

/// One client command of a replicated entry: its ops (one, or a batch's), all or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatedWrite {
    pub writes: Vec<BatchWrite>,
    /// A single delete of a missing key writes nothing (`DELETE /del` answers 404).
    pub absent_is_noop: bool,
}

/// Whether a key at `version` (`None`: absent) satisfies `if_version` (`0`: absent).
fn satisfies(version: Option<u64>, if_version: Option<u64>) -> bool {
    match if_version {
        None => true,
        Some(0) => version.is_none(),
        Some(expected) => version == Some(expected),
    }
}

/// What applying one command did.
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
    /// Switches the store to cluster mode: writes come only through [`Engine::apply_entry`],
    /// and every seq below `next_seq` is in the store already.
    pub fn start_replicated(&self, next_seq: u64) {
        assert!(
            self.pending.borrow().is_empty(),
            "cluster mode starts before any write"
        );
        self.replicated_next.set(Some(next_seq));
    }

    /// The seq every write below has been appended (single node) or applied (cluster mode):
    /// where a memtable freezes and what a scan's snapshot sees.
    pub(super) fn log_next_seq(&self) -> u64 {
        self.replicated_next.get().unwrap_or_else(|| self.wal.next_seq())
    }

    /// Applies the commands of one committed entry, in order: each command's ops take the
    /// seqs from `first_seq` on, one per op, and the entry ends below `end_seq` (which no seq of
    /// a later entry is under). Conditions see the commands before them in the entry. A single
    /// delete (`absent_is_noop`) of a missing key writes nothing; a batch's delete of one writes
    /// a tombstone, as in single-node mode. Every write of the entry goes into one memtable in
    /// one synchronous step, so a freeze (which claims every seq below `end_seq` once the
    /// entry is applied) never splits an entry.
    pub async fn apply_entry(
        &self,
        first_seq: u64,
        end_seq: u64,
        commands: &[ReplicatedWrite],
    ) -> Result<Vec<Applied>> {
        let next = self
            .replicated_next
            .get()
            .expect("apply_entry runs in cluster mode");
        assert!(
            first_seq >= next && end_seq > first_seq,
            "entry at seq {first_seq} applied again (next is {next})"
        );
        let mut keys: Vec<&[u8]> = commands
            .iter()
            .flat_map(|command| command.writes.iter().map(|write| &write.key[..]))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        self.wait_for_memtable_room().await?;
        let states = self.current_states(&keys).await?;
        // From here on nothing awaits: the entry is decided and applied in one step.
        let mut current: std::collections::HashMap<&[u8], Option<VersionedValue>> = keys
            .iter()
            .copied()
            .zip(states.into_iter().map(|state| state.current))
            .collect();
        let mut seq = first_seq;
        let mut inserts: Vec<(Bytes, u64, Option<Bytes>)> = Vec::new();
        let mut outcomes = Vec::with_capacity(commands.len());
        for command in commands {
            let version_of = |key: &[u8]| current[key].as_ref().map(|found| found.version);
            let failed = command
                .writes
                .iter()
                .enumerate()
                .find(|(_, write)| !satisfies(version_of(&write.key), write.if_version));
            if let Some((op, write)) = failed {
                outcomes.push(Applied::Mismatch {
                    op,
                    current: version_of(&write.key),
                });
                continue;
            }
            if command.absent_is_noop
                && command.writes.len() == 1
                && command.writes[0].value.is_none()
                && current[&command.writes[0].key[..]].is_none()
            {
                outcomes.push(Applied::Absent);
                continue;
            }
            let mut results = Vec::with_capacity(command.writes.len());
            for write in &command.writes {
                assert!(
                    seq < end_seq,
                    "entry at {first_seq} holds more ops than its seq range"
                );
                let state = current.get_mut(&write.key[..]).expect("every key was read");
                let removed = if write.value.is_none() {
                    state.clone()
                } else {
                    None
                };
                *state = write
                    .value
                    .clone()
                    .map(|value| VersionedValue { version: seq, value });
                inserts.push((write.key.clone(), seq, write.value.clone()));
                results.push(BatchResult {
                    version: seq,
                    removed,
                });
                seq += 1;
            }
            outcomes.push(Applied::Done(results));
        }
        // Set before the accounting: a freeze it triggers must claim this entry.
        self.replicated_next.set(Some(end_seq));
        if !inserts.is_empty() {
            let bytes = inserts
                .iter()
                .map(|(key, _, value)| {
                    crate::memtable::Memtable::entry_bytes(key.len(), value.as_ref().map_or(0, Bytes::len))
                })
                .sum();
            let slot = self.note_append_bytes(bytes);
            for (key, seq, value) in inserts {
                slot.table.insert(key, seq, value);
            }
            slot.settled();
            if slot.frozen_at().is_some() {
                self.request_ready_flushes();
            }
        }
        Ok(outcomes)
    }

    /// Notes an entry that writes nothing (a Raft membership or blank entry), whose seqs end
    /// below `end_seq`: it is applied all the same.
    pub fn applied_nothing(&self, end_seq: u64) {
        let next = self.replicated_next.get().expect("cluster mode");
        assert!(
            end_seq > next,
            "an entry ending at seq {end_seq} applied again (next is {next})"
        );
        self.replicated_next.set(Some(end_seq));
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
        // `last` is the snapshot's last seq: every version in it is at or below.
        let local = self.read_all().await?;
        let mut writes: Vec<(Bytes, u64, Option<Bytes>)> = Vec::new();
        let mut local = local.into_iter().peekable();
        for (key, version, value) in items {
            while let Some((gone, _, _)) = local.next_if(|(local_key, _, _)| *local_key < key) {
                writes.push((gone, last, None));
            }
            if let Some((_, local_version, _)) = local.next_if(|(local_key, _, _)| *local_key == key) {
                if local_version > version {
                    return Err(Error::Corruption {
                        kind: "Raft snapshot",
                        path: std::path::PathBuf::from("(received)"),
                        offset: 0,
                        reason: format!(
                            "a snapshot up to seq {last} is older than this store for a key (version {local_version} > {version})"
                        ),
                    });
                }
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
            self.wait_for_memtable_room().await?;
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
