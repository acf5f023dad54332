//! The small files of a node's Raft state beside its log, each replaced atomically (written to a
//! temporary name, synced, renamed, the directory synced): `vote.json` (the term and the vote
//! cast in it), `state.json` ([`PersistedState`]) and, while a snapshot is being installed,
//! `installing.snap`. They change at elections, membership changes, snapshot installs and
//! log retirement, never per write, so plain blocking calls are used (each is a few
//! hundred microseconds on this machine's ext4).

use std::cell::RefCell;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::types::{LogId, NodeId, SnapshotMeta, StoredMembership};

/// Memberships kept: a restart reports the newest at or below its applied index, and the log
/// holds those above it.
const MEMBERSHIPS_KEPT: usize = 8;

/// What the log and the state machine must find again after a restart, besides the tables
/// and the log itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PersistedState {
    /// Log segments below this are retired (every entry in them is in tables).
    pub first_live_segment: u64,
    /// The memberships applied most recently, oldest first.
    pub memberships: Vec<StoredMembership>,
    /// The last snapshot installed: the state holds every entry up to it.
    pub installed: Option<LogId>,
}

impl PersistedState {
    /// The newest membership applied at or below `index`.
    pub fn membership_at(&self, index: Option<u64>) -> StoredMembership {
        self.memberships
            .iter()
            .rev()
            .find(|stored| stored.log_id().map(|id| id.index) <= index)
            .cloned()
            .unwrap_or_default()
    }

    pub fn note_membership(&mut self, membership: StoredMembership) {
        if self.memberships.last().map(StoredMembership::log_id) == Some(membership.log_id()) {
            return;
        }
        self.memberships.push(membership);
        if self.memberships.len() > MEMBERSHIPS_KEPT {
            self.memberships.remove(0);
        }
    }
}

/// See the module documentation.
pub struct RaftFiles {
    dir: PathBuf,
    state: RefCell<PersistedState>,
}

const STATE: &str = "state.json";
const VOTE: &str = "vote.json";
const INSTALLING: &str = "installing.snap";

impl RaftFiles {
    /// Reads the files in `dir` (created if missing).
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let state = read_json(&dir.join(STATE))?.unwrap_or_default();
        Ok(RaftFiles {
            dir: dir.to_path_buf(),
            state: RefCell::new(state),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state(&self) -> PersistedState {
        self.state.borrow().clone()
    }

    /// Changes the state and makes the change durable before returning.
    pub fn update(&self, change: impl FnOnce(&mut PersistedState)) -> io::Result<()> {
        let mut next = self.state.borrow().clone();
        change(&mut next);
        write_atomically(
            &self.dir,
            STATE,
            &serde_json::to_vec_pretty(&next).map_err(io::Error::other)?,
        )?;
        *self.state.borrow_mut() = next;
        Ok(())
    }

    pub fn read_vote(&self) -> io::Result<Option<openraft::Vote<NodeId>>> {
        read_json(&self.dir.join(VOTE))
    }

    pub fn save_vote(&self, vote: &openraft::Vote<NodeId>) -> io::Result<()> {
        write_atomically(
            &self.dir,
            VOTE,
            &serde_json::to_vec(vote).map_err(io::Error::other)?,
        )
    }

    /// Keeps a snapshot being installed until [`RaftFiles::installed`]: a restart in between
    /// installs it again before anything else (an install is not atomic in the store; doing it
    /// again over a partly installed state gives the same result).
    pub fn begin_install(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let meta = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let mut bytes = Vec::with_capacity(4 + meta.len() + data.len());
        bytes.extend_from_slice(&u32::try_from(meta.len()).map_err(io::Error::other)?.to_le_bytes());
        bytes.extend_from_slice(&meta);
        bytes.extend_from_slice(data);
        write_atomically(&self.dir, INSTALLING, &bytes)
    }

    /// The snapshot an install was interrupted in, if any.
    pub fn unfinished_install(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let bytes = match fs::read(self.dir.join(INSTALLING)) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "installing.snap is damaged");
        let length = usize::try_from(u32::from_le_bytes(
            bytes.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?,
        ))
        .map_err(|_| bad())?;
        let meta = serde_json::from_slice(bytes.get(4..4 + length).ok_or_else(bad)?).map_err(|_| bad())?;
        Ok(Some((meta, bytes[4 + length..].to_vec())))
    }

    /// The install is complete and durable in the store: the kept snapshot goes.
    pub fn installed(&self) -> io::Result<()> {
        fs::remove_file(self.dir.join(INSTALLING))?;
        fs::File::open(&self.dir)?.sync_all()
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {error}", path.display()))
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}
