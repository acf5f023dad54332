//! Raft's state machine is the LSM store: committed entries are applied at their index
//! (`Engine::apply_entry`), a snapshot is the store's live keys at the applied index
//! (`cluster::snapshot`), and installing one makes the store hold exactly that
//! (`Engine::install_replicated`).
//!
//! What a restart reports as applied is the store's flushed index (the memtable is rebuilt from
//! the log) or the last installed snapshot, whichever is later; memberships come from
//! `state.json` (`cluster::files`), the log holding those after the applied index.

use std::cell::{Cell, RefCell};
use std::io::Cursor;
use std::rc::Rc;

use bytes::Bytes;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};

use super::files::RaftFiles;
use super::snapshot;
use super::types::{
    first_seq, CommandResult, Entry, LogId, OpResult, Outcomes, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig, Write,
};
use crate::engine::{Applied, BatchWrite, Engine, ReplicatedWrite};
use crate::io::UringFs;

/// See the module documentation. Cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    shared: Rc<Shared>,
}

struct Shared {
    engine: Rc<Engine<UringFs>>,
    files: Rc<RaftFiles>,
    last_applied: Cell<Option<LogId>>,
    membership: RefCell<StoredMembership>,
    /// The newest snapshot built or installed, kept to send to followers that need it.
    current: RefCell<Option<(SnapshotMeta, Rc<Vec<u8>>)>>,
    snapshots_built: Cell<u64>,
}

fn sm_error(error: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(error.to_string())).into()
}

impl StateMachine {
    /// The state machine over `engine`, which holds every entry up to `applied`. Finishes an
    /// install a crash interrupted first.
    pub async fn open(
        engine: Rc<Engine<UringFs>>,
        files: Rc<RaftFiles>,
        applied: Option<LogId>,
    ) -> Result<Self, String> {
        engine.start_replicated(applied.map_or(0, |id| first_seq(id.index + 1)));
        let machine = StateMachine {
            shared: Rc::new(Shared {
                engine,
                membership: RefCell::new(files.state().membership_at(applied.map(|id| id.index))),
                files,
                last_applied: Cell::new(applied),
                current: RefCell::new(None),
                snapshots_built: Cell::new(0),
            }),
        };
        let unfinished = machine
            .shared
            .files
            .unfinished_install()
            .map_err(|error| format!("cannot read the snapshot being installed: {error}"))?;
        if let Some((meta, data)) = unfinished {
            tracing::warn!(
                "finishing the install of snapshot {} that a crash interrupted",
                meta.snapshot_id
            );
            machine
                .install(&meta, data)
                .await
                .map_err(|error| error.to_string())?;
        }
        Ok(machine)
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.shared.last_applied.get()
    }

    pub fn snapshots_built(&self) -> u64 {
        self.shared.snapshots_built.get()
    }

    /// A snapshot of the store as it is now (nothing is applied while it is read: it runs on
    /// the state machine's task).
    async fn build(&self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let last = self.shared.last_applied.get();
        if let Some((meta, data)) = &*self.shared.current.borrow() {
            if meta.last_log_id == last {
                return Ok(Snapshot {
                    meta: meta.clone(),
                    snapshot: Box::new(Cursor::new(data.to_vec())),
                });
            }
        }
        let items = self.shared.engine.read_all().await.map_err(sm_error)?;
        let data = Rc::new(snapshot::encode(&items));
        let number = self.shared.snapshots_built.get() + 1;
        self.shared.snapshots_built.set(number);
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.shared.membership.borrow().clone(),
            snapshot_id: format!("{}-{number}", last.map_or(0, |id| id.index)),
        };
        tracing::info!(
            "built snapshot {} ({} keys, {} bytes)",
            meta.snapshot_id,
            items.len(),
            data.len()
        );
        *self.shared.current.borrow_mut() = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        })
    }

    async fn install(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), StorageError> {
        let items = snapshot::decode(&data).map_err(sm_error)?;
        let last = meta.last_log_id.map_or(0, |id| id.index);
        let last_seq = meta.last_log_id.map_or(0, |id| first_seq(id.index + 1) - 1);
        self.shared.files.begin_install(meta, &data).map_err(sm_error)?;
        self.shared
            .engine
            .install_replicated(last_seq, items)
            .await
            .map_err(sm_error)?;
        self.shared
            .files
            .update(|state| {
                state.installed = meta.last_log_id;
                state.note_membership(meta.last_membership.clone());
            })
            .map_err(sm_error)?;
        self.shared.files.installed().map_err(sm_error)?;
        self.shared.last_applied.set(meta.last_log_id);
        *self.shared.membership.borrow_mut() = meta.last_membership.clone();
        *self.shared.current.borrow_mut() = Some((meta.clone(), Rc::new(data)));
        tracing::info!("installed snapshot {} (up to index {last})", meta.snapshot_id);
        Ok(())
    }

    async fn apply_one(&self, entry: Entry) -> Result<Outcomes, StorageError> {
        let log_id = entry.log_id;
        let (first, end) = (first_seq(log_id.index), first_seq(log_id.index + 1));
        let engine = &self.shared.engine;
        let outcomes = match entry.payload {
            EntryPayload::Blank => {
                engine.applied_nothing(end);
                Outcomes::default()
            }
            EntryPayload::Membership(membership) => {
                engine.applied_nothing(end);
                let stored = StoredMembership::new(Some(log_id), membership);
                self.shared
                    .files
                    .update(|state| state.note_membership(stored.clone()))
                    .map_err(sm_error)?;
                *self.shared.membership.borrow_mut() = stored;
                Outcomes::default()
            }
            EntryPayload::Normal(proposal) => {
                let commands: Vec<ReplicatedWrite> = proposal
                    .commands
                    .into_iter()
                    .map(|command| {
                        let (ops, single) = match command.write {
                            Write::One(op) => (vec![op], true),
                            Write::Batch(ops) => (ops, false),
                        };
                        ReplicatedWrite {
                            writes: ops
                                .into_iter()
                                .map(|op| BatchWrite {
                                    key: Bytes::from(op.key),
                                    value: op.value.map(Bytes::from),
                                    if_version: op.if_version,
                                })
                                .collect(),
                            absent_is_noop: single,
                        }
                    })
                    .collect();
                let applied = engine.apply_entry(first, end, &commands).await.map_err(|error| {
                    StorageError::from(StorageIOError::apply(log_id, AnyError::error(error.to_string())))
                })?;
                Outcomes(applied.into_iter().map(command_result).collect())
            }
        };
        self.shared.last_applied.set(Some(log_id));
        Ok(outcomes)
    }
}

fn command_result(applied: Applied) -> CommandResult {
    match applied {
        Applied::Done(results) => CommandResult::Done(
            results
                .into_iter()
                .map(|result| OpResult {
                    version: result.version,
                    removed: result.removed.map(|removed| {
                        (
                            String::from_utf8_lossy(&removed.value).into_owned(),
                            removed.version,
                        )
                    }),
                })
                .collect(),
        ),
        Applied::Mismatch { op, current } => CommandResult::Mismatch { op, current },
        Applied::Absent => CommandResult::Absent,
    }
}

/// A snapshot built when Raft asked for the builder (so that it is of exactly the applied index
/// Raft saw then), handed over when it asks for the snapshot.
pub struct Built(Option<Snapshot<TypeConfig>>);

impl RaftSnapshotBuilder<TypeConfig> for Built {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.0
            .take()
            .ok_or_else(|| sm_error("a snapshot builder used twice"))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Built;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((
            self.shared.last_applied.get(),
            self.shared.membership.borrow().clone(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcomes>, StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut results = Vec::new();
        for entry in entries {
            results.push(self.apply_one(entry).await?);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        match self.build().await {
            Ok(snapshot) => Built(Some(snapshot)),
            Err(error) => {
                tracing::error!("could not build a snapshot: {error}");
                Built(None)
            }
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.install(meta, snapshot.into_inner()).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        if self.shared.last_applied.get().is_none() {
            return Ok(None);
        }
        self.build().await.map(Some)
    }
}
