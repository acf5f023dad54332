//! Raft's RPCs between nodes: JSON over HTTP/1.1 to the peer's client port, under `/raft/`
//! (`cluster::routes` answers them). One keep-alive connection per peer and purpose; any
//! failure closes it and the next call reconnects.

use std::net::{SocketAddr, ToSocketAddrs};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use super::peer_client::PeerClient;
use super::types::{NodeId, TypeConfig};
use super::AppendTimes;

/// The largest Raft request body a node reads (`HttpConfig::raft_body_bytes`). An append of
/// more is split: openraft is told to send fewer entries.
pub const RAFT_BODY_BYTES: usize = 32 << 20;

/// Makes a [`PeerLink`] per peer.
pub struct Network {
    /// Where the links record how long appends took.
    pub times: Rc<RefCell<BTreeMap<NodeId, AppendTimes>>>,
    /// This node's `--peers`: where it sends a peer's messages, before the address the
    /// membership gives (which is what clients are sent to). Each node may route differently,
    /// through a proxy, a tunnel, or another interface.
    pub routes: BTreeMap<NodeId, String>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerLink {
        PeerLink {
            target,
            address: resolve(self.routes.get(&target).unwrap_or(&node.addr)),
            client: None,
            times: self.times.clone(),
        }
    }
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    address
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {address}: {error}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))
}

/// The link to one peer.
pub struct PeerLink {
    target: NodeId,
    address: Result<SocketAddr, String>,
    client: Option<PeerClient>,
    times: Rc<RefCell<BTreeMap<NodeId, AppendTimes>>>,
}

type Rpc<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerLink {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &mut self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Rpc<Resp, E> {
        let body =
            serde_json::to_vec(request).map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        let address = match &self.address {
            Ok(address) => *address,
            Err(problem) => {
                return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                    problem.clone(),
                ))))
            }
        };
        let client = self.client.get_or_insert_with(|| PeerClient::new(address));
        let (status, answer) =
            client
                .post(path, &body, option.hard_ttl())
                .await
                .map_err(|error| match error.kind() {
                    std::io::ErrorKind::ConnectionRefused => RPCError::Unreachable(Unreachable::new(&error)),
                    _ => RPCError::Network(NetworkError::new(&error)),
                })?;
        if status != 200 {
            let error = std::io::Error::other(format!(
                "{path} on node {} answered {status}: {}",
                self.target,
                String::from_utf8_lossy(&answer)
            ));
            return Err(RPCError::Network(NetworkError::new(&error)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&answer).map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<NodeId>> {
        // A rough size (values are JSON strings, escaped once more): more than a node reads is
        // sent in smaller appends.
        let size: usize = request
            .entries
            .iter()
            .map(|entry| match &entry.payload {
                openraft::EntryPayload::Normal(proposal) => proposal
                    .commands
                    .iter()
                    .map(super::types::Command::approximate_bytes)
                    .sum(),
                _ => 256,
            })
            .sum();
        if size > RAFT_BODY_BYTES / 2 && request.entries.len() > 1 {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(
                (request.entries.len() / 2) as u64,
            )));
        }
        let started = std::time::Instant::now();
        let answer = self.call("/raft/append", &request, &option).await;
        if answer.is_ok() {
            let mut times = self.times.borrow_mut();
            let times = times.entry(self.target).or_default();
            times.count += 1;
            times.seconds += started.elapsed().as_secs_f64();
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call("/raft/snapshot", &request, &option).await
    }

    async fn vote(&mut self, request: VoteRequest<NodeId>, option: RPCOption) -> Rpc<VoteResponse<NodeId>> {
        self.call("/raft/vote", &request, &option).await
    }
}
