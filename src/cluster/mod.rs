//! Cluster mode: several ringkv nodes replicate one store through Raft (`openraft`), so that
//! losing a node loses nothing acknowledged. Off by default: a single node neither loads nor
//! pays for any of this. Design and guarantees: `docs/replication.md`. Rooms:
//! - `types.rs`: what the log carries (client writes) and what applying answers;
//! - `log_store.rs`: the Raft log in ringkv's WAL writer (the only write-ahead log then);
//! - `state_machine.rs`: the LSM store as Raft's state machine; `snapshot.rs` its snapshots;
//! - `files.rs`: the vote, memberships and retirement floor beside the log;
//! - `network.rs` and `peer_client.rs`: Raft's RPCs over HTTP to the peers' `/raft/` paths;
//! - this file: a node's start, its handle for the HTTP routes (`http::cluster`), its figures.

pub mod files;
pub mod log_store;
pub mod network;
pub mod peer_client;
pub mod proposer;
pub mod snapshot;
pub mod state_machine;
pub mod types;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;

use crate::config::StoreConfig;
use crate::engine::Engine;
use crate::io::UringFs;
use files::RaftFiles;
use log_store::LogStore;
use state_machine::StateMachine;
use types::{NodeId, Raft};

/// How a node joins a cluster (`--node-id`, `--peers`, and the Raft timings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// Every initial member's client address (`HOST:PORT`), this node's included; Raft's RPCs
    /// go to the same port, under `/raft/`.
    pub peers: BTreeMap<NodeId, String>,
    /// A follower that hears no leader for a random time in this range stands for election.
    pub election_timeout: (Duration, Duration),
    pub heartbeat_interval: Duration,
    /// A snapshot is built once this many entries were applied since the last one; the log
    /// before it (less `catchup_entries`) is then dropped from memory.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot, so that a follower a little behind catches up from the
    /// log rather than by a whole snapshot (etcd's `--snapshot-catchup-entries`).
    pub catchup_entries: u64,
}

impl ClusterConfig {
    /// Parses `--peers 1=HOST:PORT,2=HOST:PORT,...`.
    pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>, String> {
        let mut peers = BTreeMap::new();
        for item in text.split(',').filter(|item| !item.trim().is_empty()) {
            let (id, address) = item
                .split_once('=')
                .ok_or_else(|| format!("peer {item:?} is not ID=HOST:PORT"))?;
            let id: NodeId = id
                .trim()
                .parse()
                .map_err(|_| format!("peer id {id:?} is not a number"))?;
            if peers.insert(id, address.trim().to_string()).is_some() {
                return Err(format!("peer id {id} is given twice"));
            }
        }
        Ok(peers)
    }

    fn raft_config(&self) -> Result<openraft::Config, String> {
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: "ringkv".to_string(),
            election_timeout_min: millis(self.election_timeout.0),
            election_timeout_max: millis(self.election_timeout.1),
            heartbeat_interval: millis(self.heartbeat_interval),
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.catchup_entries,
            max_payload_entries: 1000,
            snapshot_max_chunk_size: 4 << 20,
            ..Default::default()
        }
        .validate()
        .map_err(|error| format!("bad Raft timings: {error}"))
    }
}

/// Per peer, how long appends to it took (for `/metrics`).
#[derive(Debug, Default, Clone, Copy)]
pub struct AppendTimes {
    pub count: u64,
    pub seconds: f64,
}

/// A running node: the Raft handle and what the routes need beside it.
pub struct ClusterNode {
    pub id: NodeId,
    pub raft: Raft,
    /// Where client writes go: concurrent ones share a log entry.
    pub proposer: Rc<proposer::Proposer>,
    pub engine: Rc<Engine<UringFs>>,
    log: LogStore,
    state_machine: StateMachine,
    pub peers: BTreeMap<NodeId, String>,
    /// Times this node saw a new leader elected (a term with a leader it had not seen).
    pub leader_changes: Cell<u64>,
    pub append_times: Rc<std::cell::RefCell<BTreeMap<NodeId, AppendTimes>>>,
}

impl ClusterNode {
    /// Opens the Raft log and state beside `engine`'s data and starts Raft. The cluster is not
    /// formed until one node is told `POST /cluster/init` (`docs/replication.md`).
    /// `holds_data`: the store recovered records or tables (a single-node store, unless it
    /// has a `raft/` directory beside).
    pub async fn start(
        engine: Rc<Engine<UringFs>>,
        store: &StoreConfig,
        config: &ClusterConfig,
        holds_data: bool,
    ) -> Result<Rc<ClusterNode>, String> {
        if !config.peers.contains_key(&config.node_id) {
            return Err(format!(
                "--peers names no address for this node ({}): list every member, this one included",
                config.node_id
            ));
        }
        let raft_dir = store.data_dir.join("raft");
        let stats = engine.stats();
        if !raft_dir.exists() && (holds_data || stats.flushed_seq > 0) {
            return Err(format!(
                "{} holds a single-node store: cluster mode starts on an empty data directory (or one it made)",
                store.data_dir.display()
            ));
        }
        let files = Rc::new(
            RaftFiles::open(&raft_dir)
                .map_err(|error| format!("cannot open {}: {error}", raft_dir.display()))?,
        );
        let flushed_index = (stats.flushed_seq > 0)
            .then(|| types::last_entry_below(stats.flushed_seq + 1))
            .flatten();
        let opened = LogStore::open(store, files.clone(), flushed_index).await?;
        let state_machine = StateMachine::open(engine.clone(), files, opened.applied).await?;
        let raft_config = Arc::new(config.raft_config()?);
        let append_times = Rc::new(std::cell::RefCell::new(BTreeMap::new()));
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network::Network {
                times: append_times.clone(),
                routes: config.peers.clone(),
            },
            opened.log.clone(),
            state_machine.clone(),
        )
        .await
        .map_err(|error| format!("cannot start Raft: {error}"))?;
        tracing::info!(
            "cluster node {} of {:?}: Raft log holds {} entries after index {}",
            config.node_id,
            config.peers,
            opened.entries,
            opened.applied.map_or(0, |id| id.index)
        );
        let node = Rc::new(ClusterNode {
            id: config.node_id,
            proposer: proposer::Proposer::start(raft.clone()),
            raft,
            engine,
            log: opened.log,
            state_machine,
            peers: config.peers.clone(),
            leader_changes: Cell::new(0),
            append_times,
        });
        drop(tokio_uring::spawn(retire_log(Rc::downgrade(&node))));
        drop(tokio_uring::spawn(watch_leaders(Rc::downgrade(&node))));
        Ok(node)
    }

    /// Forms the cluster of every `--peers` member as voters (once, on one node).
    pub async fn initialize(&self) -> Result<(), String> {
        let members: BTreeMap<NodeId, BasicNode> = self
            .peers
            .iter()
            .map(|(id, address)| (*id, BasicNode::new(address)))
            .collect();
        self.raft
            .initialize(members)
            .await
            .map_err(|error| error.to_string())
    }

    /// The address clients reach node `id` at, from the current membership (or `--peers`).
    pub fn address_of(&self, id: NodeId) -> Option<String> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let known = membership
            .nodes()
            .find(|(node, _)| **node == id)
            .map(|(_, node)| node.addr.clone());
        known.or_else(|| self.peers.get(&id).cloned())
    }

    /// The last entry this node knows committed.
    pub async fn committed_index(&self) -> Option<u64> {
        self.raft
            .with_raft_state(|state| state.committed.map(|id| id.index))
            .await
            .ok()
            .flatten()
    }

    pub fn log(&self) -> &LogStore {
        &self.log
    }

    pub fn snapshots_built(&self) -> u64 {
        self.state_machine.snapshots_built()
    }

    /// Voters of the current membership.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Stops Raft, then makes the log durable.
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!("Raft did not stop cleanly: {error}");
        }
        if let Err(error) = self.log.close().await {
            tracing::warn!("could not make the Raft log durable on shutdown: {error}");
        }
    }
}

/// Retires log segments behind the store's flushes, once a second.
async fn retire_log(node: Weak<ClusterNode>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(node) = node.upgrade() else { return };
        let flushed = node.engine.stats().flushed_seq;
        let flushed_index = (flushed > 0)
            .then(|| types::last_entry_below(flushed + 1))
            .flatten();
        node.log.retire_flushed(flushed_index).await;
    }
}

/// Counts the leaders this node sees elected.
async fn watch_leaders(node: Weak<ClusterNode>) {
    let Some(mut metrics) = node.upgrade().map(|node| node.raft.metrics()) else {
        return;
    };
    let mut last = (0, None);
    while metrics.changed().await.is_ok() {
        let Some(node) = node.upgrade() else { return };
        let now = {
            let current = metrics.borrow();
            (current.current_term, current.current_leader)
        };
        if let Err(fatal) = &metrics.borrow().running_state {
            tracing::error!(
                "Raft stopped on this node: {fatal}; it no longer takes part in the cluster (writes answer 503); restart it"
            );
            return;
        }
        if now.1.is_some() && now != last {
            node.leader_changes.set(node.leader_changes.get() + 1);
            tracing::info!("term {}: node {} leads", now.0, now.1.unwrap_or_default());
        }
        last = now;
    }
}
