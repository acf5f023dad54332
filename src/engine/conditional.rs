//! Writes that read first: deletes (which answer with the value they removed), conditional
//! writes (`if_version`) and batches. Each reads the newest *appended* state of its keys,
//! acknowledged or not, and appends in the same synchronous step as its last check, so that it
//! serialises with every other write to those keys in sequence order (the serving ring is one
//! thread: nothing else appends between the check and the append).

use bytes::Bytes;

use super::read::visible;
use super::{Deletion, Engine, VersionedValue};
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::wal::{batch, BatchOp, Ticket};

/// A key's newest appended state.
pub(super) struct KeyState {
    pub(super) current: Option<VersionedValue>,
    /// The batch of the write that made it, while that write is not yet acknowledged: an answer
    /// that reports this state waits for it, so that it never reports what a failed batch takes
    /// back.
    unacknowledged: Option<Ticket>,
}

impl KeyState {
    pub(super) fn version(&self) -> Option<u64> {
        self.current.as_ref().map(|current| current.version)
    }

    /// Whether `if_version` holds: `0` for an absent key, else the current version.
    pub(super) fn satisfies(&self, if_version: Option<u64>) -> bool {
        match if_version {
            None => true,
            Some(0) => self.current.is_none(),
            Some(version) => self.version() == Some(version),
        }
    }

    async fn acknowledged(self) -> Result<Option<VersionedValue>> {
        if let Some(ticket) = self.unacknowledged {
            ticket.wait().await?;
        }
        Ok(self.current)
    }
}

/// One op of [`Engine::batch`]: a set (`value: Some`) or a delete, with an optional condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchWrite {
    pub key: Bytes,
    pub value: Option<Bytes>,
    pub if_version: Option<u64>,
}

/// What one op of a batch did: its version, and for a delete the value it removed (`None` if
/// the key was absent; the tombstone is written all the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResult {
    pub version: u64,
    pub removed: Option<VersionedValue>,
}

impl<F: FileSystem> Engine<F> {
    /// Admits a write of one version per key, then reads the keys' states. Reading awaits I/O,
    /// and other writes may take versions meanwhile: admitted again until the versions this
    /// write takes are still inside the durable lease when it appends.
    async fn admit_and_read(&self, keys: &[&[u8]]) -> Result<Vec<KeyState>> {
        let seqs = keys.len() as u64;
        loop {
            self.admit(seqs).await?;
            let states = self.current_states(keys).await?;
            if self.wal.next_seq() + seqs <= self.seq_lease_end.get() {
                return Ok(states);
            }
        }
    }

    /// The newest appended state of each key. Keys in no memtable are looked up in the tables,
    /// which awaits I/O; the answer is then taken in one synchronous pass (a write appended
    /// meanwhile is in `pending` or a memtable by then), again if a flush or compaction
    /// installed a version meanwhile (a lookup may have missed data that moved into a table).
    pub(super) async fn current_states(&self, keys: &[&[u8]]) -> Result<Vec<KeyState>> {
        loop {
            let changes = self.version_changes.get();
            let mut from_tables = Vec::with_capacity(keys.len());
            for key in keys {
                let found = if self.state_in_memory(key).is_some() {
                    None
                } else {
                    self.table_lookup(key)
                        .await
                        .map_err(|error| Error::ReadBeforeWrite(Box::new(error)))?
                };
                from_tables.push(found);
            }
            if self.version_changes.get() != changes {
                continue;
            }
            return Ok(keys
                .iter()
                .zip(from_tables)
                .map(|(key, found)| {
                    self.state_in_memory(key).unwrap_or_else(|| KeyState {
                        current: found.and_then(visible),
                        unacknowledged: None,
                    })
                })
                .collect());
        }
    }

    /// The key's state from the writes not yet applied, else from the memtables.
    fn state_in_memory(&self, key: &[u8]) -> Option<KeyState> {
        if let Some(pending) = self.pending.borrow().get(key) {
            return Some(KeyState {
                current: pending.value.clone().map(|value| VersionedValue {
                    version: pending.seq,
                    value,
                }),
                unacknowledged: Some(pending.ticket.clone()),
            });
        }
        self.memtables.borrow().get(key).map(|entry| KeyState {
            current: visible(entry),
            unacknowledged: None,
        })
    }

    /// Stores `value` under `key` only if the key's version is `if_version` (`0`: the key is
    /// absent); otherwise [`Error::VersionMismatch`] with the current version.
    pub async fn set_if(
        &self,
        key: &[u8],
        value: &[u8],
        if_version: u64,
        durability: Durability,
    ) -> Result<u64> {
        let state = self.admit_and_read(&[key]).await?.remove(0);
        if !state.satisfies(Some(if_version)) {
            return Err(mismatch(0, key, state).await);
        }
        self.append_one(key, Some(value), durability)?.finish().await
    }

    /// Deletes `key`; returns the value it removed, or `None` if there was none (then nothing is
    /// written).
    pub async fn delete(&self, key: &[u8]) -> Result<Option<Deletion>> {
        self.delete_with(key, None, self.config.durability_for(None))
            .await
    }

    /// As [`Engine::delete`], only if the key's version is `if_version` when given (`0`: the
    /// key is absent, and then there is nothing to delete), acknowledged as `durability` says.
    pub async fn delete_with(
        &self,
        key: &[u8],
        if_version: Option<u64>,
        durability: Durability,
    ) -> Result<Option<Deletion>> {
        let state = self.admit_and_read(&[key]).await?.remove(0);
        if !state.satisfies(if_version) {
            return Err(mismatch(0, key, state).await);
        }
        let Some(removed) = state.current.clone() else {
            // Absent only because of a delete not yet acknowledged: answer once it is, so that a
            // 404 never reports a state that delete's class could take back.
            state.acknowledged().await?;
            return Ok(None);
        };
        let seq = self.append_one(key, None, durability)?.finish().await?;
        Ok(Some(Deletion { removed, seq }))
    }

    /// Applies `writes` atomically: one WAL record, so a crash keeps all of them or none, and
    /// one synchronous step into the memtable, so no reader sees some without the others. If a
    /// condition fails, nothing is written and the error names that op. Keys must be distinct
    /// (checked by the caller; a repeated key would make "the state before the batch" and
    /// the conditions ambiguous).
    pub async fn batch(&self, writes: &[BatchWrite], durability: Durability) -> Result<Vec<BatchResult>> {
        assert!(!writes.is_empty(), "a batch has at least one op");
        let ops = writes.len() as u64;
        let keys: Vec<&[u8]> = writes.iter().map(|write| &write.key[..]).collect();
        let states = self.admit_and_read(&keys).await?;
        for (index, (write, state)) in writes.iter().zip(&states).enumerate() {
            if !state.satisfies(write.if_version) {
                let state = states.into_iter().nth(index).expect("a state per op");
                return Err(mismatch(index, &write.key, state).await);
            }
        }
        let body = batch::encode(
            &writes
                .iter()
                .map(|write| BatchOp {
                    key: &write.key,
                    value: write.value.as_deref(),
                })
                .collect::<Vec<_>>(),
        );
        let (first_seq, ticket) = self.wal.append_batch(&body, ops, durability)?;
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
        let applies = writes
            .iter()
            .zip(first_seq..)
            .map(|(write, seq)| (write.key.clone(), seq, write.value.clone()))
            .collect();
        self.appended_batch(slot, applies, ticket).finish().await?;
        Ok(states
            .into_iter()
            .zip(writes)
            .zip(first_seq..)
            .map(|((state, write), version)| BatchResult {
                version,
                removed: if write.value.is_none() {
                    state.current
                } else {
                    None
                },
            })
            .collect())
    }
}

/// The error of a failed condition, once the state it reports is acknowledged.
async fn mismatch(op: usize, key: &[u8], state: KeyState) -> Error {
    match state.acknowledged().await {
        Ok(current) => Error::VersionMismatch {
            op,
            key: Bytes::copy_from_slice(key),
            current: current.map(|current| current.version),
        },
        Err(error) => error,
    }
}
