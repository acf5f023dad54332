//! Group commit for the Raft log. openraft 0.9 appends each proposed entry to the leader's log
//! and waits for that append to be durable before it takes the next (`RaftCore::append_to_log`),
//! so one request per entry costs one log sync per request: 4.7k writes/s at 64 connections
//! here. Requests that arrive while earlier proposals are in flight are therefore proposed
//! together, as one entry (`Proposal`), and each gets its own outcome back; every op still has
//! its own version (`types::first_seq`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use tokio::sync::{oneshot, Notify};

use super::types::{Command, CommandResult, Proposal, Raft, SEQS_PER_ENTRY};

/// Proposals in flight at once: the next entry is appended on the leader while the ones before
/// it replicate. More would only queue inside Raft, each at the cost of a sync.
const IN_FLIGHT_MAX: usize = 2;
/// Requests in one entry, at most.
const COMMANDS_MAX: usize = 1024;
/// A rough bound on an entry's size, so that appends stay well below a node's request limit.
const ENTRY_BYTES_MAX: usize = 4 << 20;

/// Why a request got no outcome.
#[derive(Debug, Clone)]
pub enum ProposeError {
    /// Proposed, then not known to commit (leadership lost, Raft stopped): it may still commit
    /// under the next leader.
    Unknown(String),
}

struct Pending {
    command: Command,
    bytes: usize,
    reply: oneshot::Sender<Result<CommandResult, ProposeError>>,
}

/// See the module documentation.
pub struct Proposer {
    raft: Raft,
    pending: RefCell<VecDeque<Pending>>,
    /// Shared with the task, which waits on it without keeping the proposer alive.
    wake: Rc<Notify>,
    in_flight: Cell<usize>,
}

impl Proposer {
    /// A proposer for `raft`, with its task on the serving ring (it ends with the proposer).
    pub fn start(raft: Raft) -> Rc<Proposer> {
        let proposer = Rc::new(Proposer {
            raft,
            pending: RefCell::new(VecDeque::new()),
            wake: Rc::new(Notify::new()),
            in_flight: Cell::new(0),
        });
        drop(tokio_uring::spawn(run(Rc::downgrade(&proposer))));
        proposer
    }

    /// Proposes `command` (in an entry with whatever else is waiting) and returns what applying
    /// it did, once committed and applied on this node.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        let (reply, answer) = oneshot::channel();
        let bytes = command.approximate_bytes();
        self.pending.borrow_mut().push_back(Pending {
            command,
            bytes,
            reply,
        });
        self.wake.notify_one();
        answer
            .await
            .unwrap_or_else(|_| Err(ProposeError::Unknown("the node is shutting down".to_string())))
    }
}

async fn run(proposer: Weak<Proposer>) {
    loop {
        let Some(this) = proposer.upgrade() else { return };
        if this.pending.borrow().is_empty() || this.in_flight.get() >= IN_FLIGHT_MAX {
            let wake = this.wake.clone();
            drop(this);
            wake.notified().await;
            continue;
        }
        let batch = take_batch(&mut this.pending.borrow_mut());
        this.in_flight.set(this.in_flight.get() + 1);
        drop(tokio_uring::spawn(propose_batch(this, batch)));
    }
}

/// The waiting requests that fit one entry, oldest first (at least one).
fn take_batch(pending: &mut VecDeque<Pending>) -> Vec<Pending> {
    let mut batch = Vec::new();
    let (mut ops, mut bytes) = (0, 0);
    while let Some(next) = pending.front() {
        let next_ops = next.command.ops();
        let full = batch.len() == COMMANDS_MAX
            || ops + next_ops >= usize::try_from(SEQS_PER_ENTRY).unwrap_or(usize::MAX)
            || bytes + next.bytes > ENTRY_BYTES_MAX;
        if full && !batch.is_empty() {
            break;
        }
        ops += next_ops;
        bytes += next.bytes;
        batch.push(pending.pop_front().expect("front exists"));
    }
    batch
}

async fn propose_batch(proposer: Rc<Proposer>, batch: Vec<Pending>) {
    let (commands, replies): (Vec<Command>, Vec<_>) = batch
        .into_iter()
        .map(|pending| (pending.command, pending.reply))
        .unzip();
    let count = commands.len();
    let outcome = proposer.raft.client_write(Proposal { commands }).await;
    proposer.in_flight.set(proposer.in_flight.get() - 1);
    proposer.wake.notify_one();
    match outcome {
        Ok(response) => {
            let outcomes = response.data.0;
            assert_eq!(outcomes.len(), count, "one outcome per command of the entry");
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(error) => {
            let error = ProposeError::Unknown(error.to_string());
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
