//! The Raft log, kept by ringkv's own WAL writer (batched `O_DIRECT` writes, group commit, the
//! node's fsync strategy, CRC32C records, recycled segments) in `raft/log/`. An entry is one
//! `RaftEntry` record (its index in the key, the entry as JSON in the value); a conflicting
//! suffix is dropped by a `RaftTruncate` record. Recovery reads the records in log order, so a
//! later entry at an index replaces an earlier one, as a truncation does.
//!
//! This log is the only write-ahead log in cluster mode: committed entries go straight into the
//! memtable (`Engine::apply_entry`). Entries stay in memory from their append until Raft
//! purges them (after a snapshot); on disk a segment is retired once every entry in it is at or
//! below the store's flushed index, keeping the entry *at* that index for its term.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::rc::Rc;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError, Vote};

use super::files::RaftFiles;
use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::config::StoreConfig;
use crate::io::{FileSystem, UringFs};
use crate::wal::{self, RecordKind, RecyclePool, WalOptions, WalWriter};

/// See the module documentation. Cheap to clone: one shared log.
#[derive(Clone)]
pub struct LogStore {
    shared: Rc<Shared>,
}

struct Shared {
    wal: Rc<WalWriter<UringFs>>,
    files: Rc<RaftFiles>,
    config: StoreConfig,
    state: RefCell<State>,
}

struct State {
    /// Entries after `last_purged`, by index.
    entries: BTreeMap<u64, Entry>,
    /// For each entry appended by this process (none recovered at start), a segment at or below
    /// the one holding it.
    segment_of: BTreeMap<u64, u64>,
    last_purged: Option<LogId>,
    vote: Option<Vote<NodeId>>,
}

/// What opening the log found, for the state machine and the start-up line.
pub struct OpenedLog {
    pub log: LogStore,
    /// The last entry known applied: the store's flushed index or the last installed snapshot.
    pub applied: Option<LogId>,
    pub entries: usize,
}

fn log_error(error: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_logs(AnyError::error(error.to_string())).into()
}

impl LogStore {
    /// Opens the log in `files.dir()/log`, given the store's flushed index: entries at or below
    /// it are applied already (the one at it is read for its term).
    pub async fn open(
        config: &StoreConfig,
        files: Rc<RaftFiles>,
        flushed_index: Option<u64>,
    ) -> Result<OpenedLog, String> {
        let fs = UringFs;
        let dir = files.dir().join("log");
        fs.create_dir_all(&dir)
            .await
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let persisted = files.state();
        let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
        let mut damaged = None;
        let log = wal::recover(
            &fs,
            &dir,
            persisted.first_live_segment,
            crate::coding::to_usize(config.wal_segment_bytes),
            |record| match record.kind {
                RecordKind::RaftEntry => match serde_json::from_slice::<Entry>(record.value) {
                    Ok(entry) => {
                        entries.split_off(&entry.log_id.index);
                        entries.insert(entry.log_id.index, entry);
                    }
                    Err(error) => damaged = Some(format!("a Raft log entry does not parse: {error}")),
                },
                RecordKind::RaftTruncate => {
                    let index = u64::from_le_bytes(record.key.try_into().unwrap_or([0xff; 8]));
                    entries.split_off(&index);
                }
                _ => damaged = Some(format!("a {:?} record in the Raft log", record.kind)),
            },
        )
        .await
        .map_err(|error| format!("cannot recover the Raft log in {}: {error}", dir.display()))?;
        if let Some(damage) = damaged {
            return Err(format!("{}: {damage}", dir.display()));
        }
        // A snapshot whose install a crash interrupted counts as installed: the state machine
        // installs it again before Raft starts, and the store may hold parts of it already
        // (its flushed index among them).
        let installing = files
            .unfinished_install()
            .map_err(|error| format!("cannot read the snapshot being installed: {error}"))?
            .and_then(|(meta, _)| meta.last_log_id);
        let installed = persisted.installed.max(installing);
        let floor = flushed_index.max(installed.map(|id| id.index));
        let applied = match floor {
            None => None,
            Some(floor) if installed.is_some_and(|id| id.index == floor) => installed,
            Some(floor) => match entries.get(&floor) {
                Some(entry) => Some(entry.log_id),
                None => {
                    return Err(format!(
                        "the Raft log in {} lacks entry {floor}, the store's last applied one: the log and the tables do not belong together",
                        dir.display()
                    ))
                }
            },
        };
        let entries = match applied {
            Some(id) => entries.split_off(&(id.index + 1)),
            None => entries,
        };
        let count = entries.len();
        let recycle = Arc::new(RecyclePool::new(
            config.wal_recycle_segments,
            log.first_new_segment,
        ));
        let options = WalOptions::for_store(config, dir, recycle);
        let writer = WalWriter::start(fs, options, log.position, log.next_seq);
        writer
            .prepare()
            .await
            .map_err(|error| format!("cannot prepare the Raft log's segment: {error}"))?;
        let vote = files
            .read_vote()
            .map_err(|error| format!("cannot read the Raft vote: {error}"))?;
        Ok(OpenedLog {
            log: LogStore {
                shared: Rc::new(Shared {
                    wal: writer,
                    files,
                    config: config.clone(),
                    state: RefCell::new(State {
                        entries,
                        segment_of: BTreeMap::new(),
                        last_purged: applied,
                        vote,
                    }),
                }),
            },
            applied,
            entries: count,
        })
    }

    /// The log's WAL writer, for its figures.
    pub fn wal(&self) -> &WalWriter<UringFs> {
        &self.shared.wal
    }

    /// The newest entry's index (0 for none).
    pub fn last_index(&self) -> u64 {
        let state = self.shared.state.borrow();
        state
            .entries
            .last_key_value()
            .map(|(index, _)| *index)
            .or(state.last_purged.map(|id| id.index))
            .unwrap_or(0)
    }

    /// Retires the segments whose entries are all at or below `flushed_index` (the store holds
    /// them in tables), keeping the one holding that entry (its term is what a restart reports).
    /// Called after flushes; the new floor is durable before any file goes.
    pub async fn retire_flushed(&self, flushed_index: Option<u64>) {
        let Some(flushed_index) = flushed_index else {
            return;
        };
        let (old_floor, new_floor) = {
            let mut state = self.shared.state.borrow_mut();
            // Only with the flushed entry's own segment known: every later entry was appended
            // after it (an entry appended again replaced every entry after it), so no later one
            // is below that segment. An entry recovered at start has no segment here; the first
            // of a later start's entries would do, and retired the recovered ones the store does
            // not hold yet (found by the benchmark's second leader kill: "the Raft log lacks
            // entry 114832"; `a_node_killed_twice_before_a_flush_keeps_its_log`).
            let Some(&segment) = state.segment_of.get(&flushed_index) else {
                return;
            };
            let new_floor = segment.min(self.shared.wal.live_segment_floor());
            let kept = state.segment_of.split_off(&flushed_index);
            state.segment_of = kept;
            (self.shared.files.state().first_live_segment, new_floor)
        };
        if new_floor <= old_floor {
            return;
        }
        if let Err(error) = self
            .shared
            .files
            .update(|state| state.first_live_segment = new_floor)
        {
            tracing::warn!("could not record the Raft log's retired segments: {error}");
            return;
        }
        let options_dir = self.shared.files.dir().join("log");
        let pool = RecyclePool::new(0, u64::MAX);
        wal::retire_segments(&UringFs, &options_dir, old_floor, new_floor, &pool).await;
    }

    pub async fn close(&self) -> crate::error::Result<()> {
        self.shared.wal.close().await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let state = self.shared.state.borrow();
        Ok(state
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let state = self.shared.state.borrow();
        let last_log_id = state
            .entries
            .last_key_value()
            .map(|(_, entry)| entry.log_id)
            .or(state.last_purged);
        Ok(LogState {
            last_purged_log_id: state.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.shared
            .files
            .save_vote(vote)
            .map_err(|error| StorageError::from(StorageIOError::write_vote(AnyError::new(&error))))?;
        self.shared.state.borrow_mut().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.shared.state.borrow().vote)
    }

    /// Appends every entry to the WAL in one synchronous pass (they join the group commit
    /// together), then reports them durable once the strongest class among them is.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut tickets = Vec::new();
        {
            let mut state = self.shared.state.borrow_mut();
            for entry in entries {
                // The strongest class any of the entry's requests asked for.
                let requested = match &entry.payload {
                    openraft::EntryPayload::Normal(proposal) => proposal
                        .commands
                        .iter()
                        .filter_map(|command| command.durability)
                        .max(),
                    _ => None,
                };
                let durability = self.shared.config.durability_for(requested);
                let value = serde_json::to_vec(&entry).map_err(log_error)?;
                let index = entry.log_id.index;
                let segment = self.shared.wal.live_segment_floor();
                let (_, ticket) = self
                    .shared
                    .wal
                    .append(RecordKind::RaftEntry, &index.to_le_bytes(), &value, durability)
                    .map_err(log_error)?;
                tickets.push(ticket);
                state.segment_of.insert(index, segment);
                state.entries.split_off(&index);
                state.entries.insert(index, entry);
            }
        }
        drop(tokio_uring::spawn(async move {
            for ticket in tickets {
                if let Err(error) = ticket.wait().await {
                    callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                    return;
                }
            }
            callback.log_io_completed(Ok(()));
        }));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let index = log_id.index;
        // Not waited for: an entry appended after it reaches the disk after it, and without
        // one the dropped entries coming back after a crash is as if this never happened.
        self.shared
            .wal
            .append(
                RecordKind::RaftTruncate,
                &index.to_le_bytes(),
                b"",
                crate::config::Durability::Never,
            )
            .map_err(log_error)?;
        let mut state = self.shared.state.borrow_mut();
        state.entries.split_off(&index);
        state.segment_of.split_off(&index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut state = self.shared.state.borrow_mut();
        state.entries = state.entries.split_off(&(log_id.index + 1));
        state.last_purged = Some(log_id);
        Ok(())
    }
}
