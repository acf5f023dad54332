//! The store facade: the write path (WAL append, durability wait, memtable insert), the read path,
//! and recovery. Wires the WAL and the memtable; owns no bytes format and no I/O of its own.
//!
//! Runs on the serving ring's single thread. Writes become visible no earlier than they are
//! acknowledged: a record enters the memtable only after its WAL batch is durable (or written, for
//! `periodic`/`never`). Read-modify-write (`delete`) reads the newest *appended* state of a key,
//! acknowledged or not, so that it serialises with writes in sequence order.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::config::StoreConfig;
use crate::dir_lock::DirLock;
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::memtable::Memtable;
use crate::wal::{self, RecordKind, Ticket, WalOptions, WalWriter};

/// A value and the version (sequence number) it was written at. `value` is the value's JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedValue {
    pub version: u64,
    pub value: Bytes,
}

/// What opening the store found, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub records: u64,
    pub segments: u64,
    pub next_version: u64,
    pub torn_tail: bool,
}

/// A write appended to the WAL but not yet applied to the memtable.
struct Pending {
    version: u64,
    value: Option<Bytes>,
    ticket: Ticket,
}

/// See the module documentation.
pub struct Engine<F: FileSystem> {
    memtable: Memtable,
    wal: Rc<WalWriter<F>>,
    /// The newest unapplied write of each key, for read-modify-write.
    pending: RefCell<HashMap<Bytes, Pending>>,
    _lock: DirLock,
}

impl<F: FileSystem> Engine<F> {
    /// Opens (or creates) the store in `config.data_dir`: takes the directory lock, replays the
    /// WAL and starts the writer. Must run inside a tokio-uring runtime.
    pub async fn open(fs: F, config: &StoreConfig) -> Result<(Rc<Self>, RecoveryReport)> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|error| Error::io("create directory", dir, error))?;
        let lock = DirLock::acquire(dir)?;
        let memtable = Memtable::new();
        let max_payload_bytes = config.wal_segment_bytes as usize;
        let log = wal::recover(&fs, dir, max_payload_bytes, |record| {
            let key = Bytes::copy_from_slice(record.key);
            match record.kind {
                RecordKind::Put => {
                    memtable.insert(key, record.seq, Some(Bytes::copy_from_slice(record.value)))
                }
                RecordKind::Delete => memtable.insert(key, record.seq, None),
                RecordKind::SegmentEnd => {}
            }
        })
        .await?;
        let report = RecoveryReport {
            records: log.records,
            segments: log.segments,
            next_version: log.next_seq,
            torn_tail: log.torn_tail,
        };
        let options = WalOptions {
            dir: dir.clone(),
            segment_bytes: config.wal_segment_bytes,
            batch_bytes: config.wal_batch_bytes,
            fsync: config.fsync,
        };
        let wal = WalWriter::start(fs, options, log.position, log.next_seq);
        let engine = Engine {
            memtable,
            wal,
            pending: RefCell::new(HashMap::new()),
            _lock: lock,
        };
        Ok((Rc::new(engine), report))
    }

    /// The newest acknowledged value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<VersionedValue> {
        let entry = self.memtable.get(key)?;
        entry.value.map(|value| VersionedValue {
            version: entry.version,
            value,
        })
    }

    /// Stores `value` (JSON text) under `key`; returns its version once durable per the fsync
    /// strategy.
    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        let (version, ticket) = self.wal.append(RecordKind::Put, key, value)?;
        let key = Bytes::copy_from_slice(key);
        let value = Bytes::copy_from_slice(value);
        self.settle(key, version, Some(value), ticket).await?;
        Ok(version)
    }

    /// Deletes `key`; returns the value it removed, or `None` if there was none.
    pub async fn delete(&self, key: &[u8]) -> Result<Option<VersionedValue>> {
        let (current, unacknowledged) = match self.pending.borrow().get(key) {
            Some(pending) => (
                pending.value.clone().map(|value| VersionedValue {
                    version: pending.version,
                    value,
                }),
                Some(pending.ticket.clone()),
            ),
            None => (self.get(key), None),
        };
        let Some(removed) = current else {
            // Absent only because of a delete not yet durable: answer once it is, so that a 404
            // never reports a state a crash could take back.
            if let Some(ticket) = unacknowledged {
                ticket.wait().await?;
            }
            return Ok(None);
        };
        let (version, ticket) = self.wal.append(RecordKind::Delete, key, b"")?;
        self.settle(Bytes::copy_from_slice(key), version, None, ticket)
            .await?;
        Ok(Some(removed))
    }

    /// Records a write as pending, waits for its batch, then applies it (or forgets it on failure).
    async fn settle(&self, key: Bytes, version: u64, value: Option<Bytes>, ticket: Ticket) -> Result<()> {
        self.pending.borrow_mut().insert(
            key.clone(),
            Pending {
                version,
                value: value.clone(),
                ticket: ticket.clone(),
            },
        );
        let outcome = ticket.wait().await;
        if outcome.is_ok() {
            self.memtable.insert(key.clone(), version, value);
        }
        let mut pending = self.pending.borrow_mut();
        if pending.get(&key).is_some_and(|p| p.version == version) {
            pending.remove(&key);
        }
        outcome
    }

    /// The version the next write will get.
    pub fn next_version(&self) -> u64 {
        self.wal.next_seq()
    }

    /// How many WAL syncs have completed since start.
    pub fn wal_syncs(&self) -> u64 {
        self.wal.syncs()
    }

    /// Stops taking writes, makes everything written durable, and stops the WAL tasks.
    pub async fn close(&self) -> Result<()> {
        self.wal.close().await
    }
}
