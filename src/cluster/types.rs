//! What the Raft log carries and what applying it answers: the cluster's `openraft` type
//! configuration. Entries are JSON on the wire and in the WAL (`docs/replication.md`).

use serde::{Deserialize, Serialize};

use crate::config::Durability;

openraft::declare_raft_types!(
    /// ringkv's Raft types: node ids are numbers, a node is known by its client address.
    pub TypeConfig:
        D = Proposal,
        R = Outcomes,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

/// One write, as a client sent it: a set (`value: Some`, the value's JSON text) or a delete,
/// with an optional condition (`if_version`, `0`: absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
}

/// Seqs (versions) each log entry owns: entry `i`'s ops get `i * SEQS_PER_ENTRY` on, one per
/// op, in order. Strictly increasing across leaders and restarts, as log indexes are; see
/// `docs/replication.md` for why versions are not the bare index.
pub const SEQS_PER_ENTRY: u64 = 1 << 20;

/// The first seq of entry `index`.
pub fn first_seq(index: u64) -> u64 {
    index
        .checked_mul(SEQS_PER_ENTRY)
        .expect("log indexes stay far below 2^44")
}

/// The last entry whose every seq is below `next_seq` (`None`: not even entry 0's).
pub fn last_entry_below(next_seq: u64) -> Option<u64> {
    (next_seq / SEQS_PER_ENTRY).checked_sub(1)
}

/// What one log entry carries: the client writes proposed together (concurrent requests share
/// an entry, and so one log append on the leader; `cluster::proposer`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Proposal {
    pub commands: Vec<Command>,
}

impl Proposal {
    /// Ops in all commands: how many seqs the entry uses.
    pub fn ops(&self) -> usize {
        self.commands.iter().map(Command::ops).sum()
    }
}

/// Per command of an entry, what applying it did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Outcomes(pub Vec<CommandResult>);

/// A client write in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub write: Write,
    /// The class the request asked for (`?durability=`): how durable the log append must be
    /// on the leader before the entry counts as appended there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<Durability>,
}

impl Command {
    /// The command's ops: one, or a batch's.
    pub fn op_list(&self) -> &[Op] {
        match &self.write {
            Write::One(op) => std::slice::from_ref(op),
            Write::Batch(ops) => ops,
        }
    }

    pub fn ops(&self) -> usize {
        self.op_list().len()
    }

    /// A rough size of the command as an entry's JSON (values are JSON text, escaped once more).
    pub fn approximate_bytes(&self) -> usize {
        self.op_list()
            .iter()
            .map(|op| 2 * (op.key.len() + op.value.as_ref().map_or(0, String::len)) + 64)
            .sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// `POST /set` or `DELETE /del` (a delete of an absent key writes nothing: 404).
    One(Op),
    /// `POST /batch`: all ops or none, every one at the entry's index.
    Batch(Vec<Op>),
}

/// What applying an entry did, handed back to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CommandResult {
    /// Per op, its version and, for a delete, the value and version it removed.
    Done(Vec<OpResult>),
    /// Op `op`'s condition failed; `current` is its key's version. Nothing was written.
    Mismatch { op: usize, current: Option<u64> },
    /// A delete found no key. Nothing was written.
    Absent,
    /// The proposal did not commit, or its outcome is unknown (`cluster::proposer`).
    #[default]
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpResult {
    pub version: u64,
    /// For a delete, the value's JSON text and version it removed.
    pub removed: Option<(String, u64)>,
}
