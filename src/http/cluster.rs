//! The HTTP API in cluster mode (`docs/replication.md`): Raft's RPCs under `/raft/`, the
//! cluster's administration under `/cluster`, and the client API with writes proposed to the
//! Raft log and reads linearizable unless `?consistency=local`. A node that is not the leader
//! answers writes and linearizable reads with `307` to the leader (`Location`, `Leader`), or
//! `503` with `Retry-After` while no leader is known.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::request::query_param;
use super::response::{Response, Status};
use super::routes::{self, Answer};
use crate::cluster::proposer::ProposeError;
use crate::cluster::types::{Command, CommandResult, NodeId, Op, Write};
use crate::cluster::ClusterNode;
use crate::config::HttpConfig;
use crate::engine::{BatchResult, VersionedValue};

const NO_LEADER: &str =
    "no leader is known: an election is under way, or this node is cut off from the others";

/// What the server hands every request to in cluster mode.
pub trait ClusterRoutes {
    fn answer<'a>(
        &'a self,
        method: &'a str,
        target: &'a str,
        body: &'a [u8],
        scrape: &'a dyn Fn() -> Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Response> + 'a>>;
}

/// See the module documentation.
pub struct ClusterHttp {
    pub node: Rc<ClusterNode>,
    pub limits: HttpConfig,
}

impl ClusterRoutes for ClusterHttp {
    fn answer<'a>(
        &'a self,
        method: &'a str,
        target: &'a str,
        body: &'a [u8],
        scrape: &'a dyn Fn() -> Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Response> + 'a>> {
        Box::pin(self.route(method, target, body, scrape))
    }
}

impl ClusterHttp {
    async fn route(&self, method: &str, target: &str, body: &[u8], scrape: &dyn Fn() -> Vec<u8>) -> Response {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let raft = &self.node.raft;
        let answer = match (method, path) {
            ("POST", "/raft/append") => rpc(body, |request| raft.append_entries(request)).await,
            ("POST", "/raft/vote") => rpc(body, |request| raft.vote(request)).await,
            ("POST", "/raft/snapshot") => rpc(body, |request| raft.install_snapshot(request)).await,
            ("GET", "/cluster") => Ok(self.status().await),
            ("POST", "/cluster/init") => self.init().await,
            ("POST", "/cluster/learner") => self.add_learner(body, target).await,
            ("POST", "/cluster/membership") => self.change_membership(body, target).await,
            ("GET", "/metrics") => {
                let mut text = scrape();
                text.extend_from_slice(self.metrics().await.as_bytes());
                Ok(Response::prometheus_text(text))
            }
            ("GET", "/get" | "/scan") => self.read(path, query, target).await,
            ("POST", "/set" | "/batch") | ("DELETE", "/del") => self.write(path, query, body, target).await,
            // Anything else is answered as on a single node (404, 405); none of it writes.
            _ => {
                let engine = &self.node.engine;
                return routes::handle(engine, &self.limits, scrape, method, target, body).await;
            }
        };
        answer.unwrap_or_else(|response| response)
    }

    async fn read(&self, path: &str, query: &str, target: &str) -> Answer {
        let local = match query_param(query, "consistency") {
            Ok(None) => false,
            Ok(Some(value)) if value == "linearizable" => false,
            Ok(Some(value)) if value == "local" => true,
            _ => {
                return Err(Response::error(
                    Status::BadRequest,
                    "consistency must be linearizable (the default) or local",
                ))
            }
        };
        if !local {
            match self.node.raft.ensure_linearizable().await {
                Ok(_) => {}
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                    return Err(self.redirect(&forward, target))
                }
                Err(error) => {
                    return Err(unavailable(&format!(
                        "the read could not be made linearizable: {error}"
                    )))
                }
            }
        }
        let engine = &self.node.engine;
        if path == "/get" {
            routes::get(engine, &self.limits, query).await
        } else {
            super::scan::answer(engine, &self.limits, query).await
        }
    }

    async fn write(&self, path: &str, query: &str, body: &[u8], target: &str) -> Answer {
        let engine = &self.node.engine;
        let class = routes::durability(engine, query)?;
        let if_version = routes::if_version(query)?;
        let (write, batch) = match path {
            "/set" => {
                let (key, value) = routes::parse_set(body, &self.limits)?;
                let value = String::from_utf8(value.to_vec()).expect("JSON text is UTF-8");
                (
                    Write::One(Op {
                        key,
                        value: Some(value),
                        if_version,
                    }),
                    None,
                )
            }
            "/del" => {
                let key = routes::key_from_query(query, &self.limits)?;
                (
                    Write::One(Op {
                        key,
                        value: None,
                        if_version,
                    }),
                    None,
                )
            }
            _ => {
                if if_version.is_some() {
                    return Err(Response::error(
                        Status::BadRequest,
                        "a batch takes if_version on each op (\"if_version\":N), not in the query",
                    ));
                }
                let writes = super::batch::parse(body, &self.limits)?;
                let ops = writes
                    .iter()
                    .map(|write| Op {
                        key: String::from_utf8_lossy(&write.key).into_owned(),
                        value: write
                            .value
                            .as_ref()
                            .map(|value| String::from_utf8_lossy(value).into_owned()),
                        if_version: write.if_version,
                    })
                    .collect();
                (Write::Batch(ops), Some(writes))
            }
        };
        let key = match &write {
            Write::One(op) => op.key.clone(),
            Write::Batch(_) => String::new(),
        };
        let command = Command {
            write,
            durability: Some(class),
        };
        // A node that knows it does not lead redirects before proposing anything: a 307 means
        // the write was not made, and `curl -L` may send it again. Once proposed, a lost
        // leadership leaves the outcome unknown (the entry may still commit under the next
        // leader): that is a 503 saying so, never a redirect a client would follow.
        let leads = self.node.raft.metrics().borrow().state == openraft::ServerState::Leader;
        if !leads {
            let forward = self
                .node
                .raft
                .current_leader()
                .await
                .map(|leader_id| ForwardToLeader {
                    leader_id: Some(leader_id),
                    leader_node: None,
                });
            return Err(match forward {
                Some(forward) => self.redirect(&forward, target),
                None => unavailable(NO_LEADER),
            });
        }
        let result = match self.node.proposer.propose(command).await {
            Ok(result) => result,
            Err(ProposeError::Unknown(error)) => {
                return Err(unavailable(&format!(
                    "the write's outcome is unknown: it was proposed, then {error}; read the key to see whether it was made"
                )))
            }
        };
        let answer = match (result, batch) {
            (CommandResult::Done(results), Some(writes)) => {
                let results: Vec<BatchResult> = results
                    .into_iter()
                    .map(|result| BatchResult {
                        version: result.version,
                        removed: result.removed.map(|(value, version)| VersionedValue {
                            version,
                            value: value.into(),
                        }),
                    })
                    .collect();
                Ok(super::batch::response(&writes, &results))
            }
            (CommandResult::Done(results), None) => {
                let result = &results[0];
                match &result.removed {
                    Some((value, version)) => Ok(routes::value_response(
                        &key,
                        &VersionedValue {
                            version: *version,
                            value: value.clone().into(),
                        },
                    )),
                    None if path == "/del" => {
                        Err(Response::error_with_key(Status::NotFound, "key not found", &key))
                    }
                    None => Ok(routes::set_response(&key, result.version)),
                }
            }
            (CommandResult::Mismatch { op, current }, Some(writes)) => {
                Err(routes::version_mismatch(Some(op), &writes[op].key, current))
            }
            (CommandResult::Mismatch { current, .. }, None) => {
                Err(routes::version_mismatch(None, key.as_bytes(), current))
            }
            (CommandResult::Absent, _) => {
                Err(Response::error_with_key(Status::NotFound, "key not found", &key))
            }
            (CommandResult::Nothing, _) => Err(Response::error(
                Status::InternalServerError,
                "a write applied as nothing",
            )),
        };
        routes::with_durability(answer, class)
    }

    /// `307` to the leader, or `503` while none is known.
    fn redirect(&self, forward: &ForwardToLeader<NodeId, BasicNode>, target: &str) -> Response {
        let address = forward
            .leader_node
            .as_ref()
            .map(|node| node.addr.clone())
            .or_else(|| forward.leader_id.and_then(|id| self.node.address_of(id)));
        match (forward.leader_id, address) {
            (Some(leader), Some(address)) if leader != self.node.id => {
                let mut response = Response::json(
                    Status::TemporaryRedirect,
                    serde_json::to_vec(&serde_json::json!({
                        "error": "not the leader",
                        "leader": leader,
                        "address": address,
                    }))
                    .expect("JSON"),
                );
                response.leader = Some((format!("http://{address}{target}"), address));
                response
            }
            _ => unavailable(NO_LEADER),
        }
    }

    async fn status(&self) -> Response {
        let metrics = self.node.raft.metrics().borrow().clone();
        let committed = self.node.committed_index().await;
        let membership = metrics.membership_config.membership().clone();
        let last = metrics.last_log_index.unwrap_or(0);
        let followers: serde_json::Map<String, serde_json::Value> = metrics
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| **id != self.node.id)
            .map(|(id, matched)| {
                let matched = matched.map_or(0, |id| id.index);
                (
                    id.to_string(),
                    serde_json::json!({"matched": matched, "lag": last.saturating_sub(matched)}),
                )
            })
            .collect();
        let members: serde_json::Map<String, serde_json::Value> = membership
            .nodes()
            .map(|(id, node)| (id.to_string(), serde_json::Value::from(node.addr.clone())))
            .collect();
        let status = serde_json::json!({
            "id": self.node.id,
            "state": format!("{:?}", metrics.state),
            "term": metrics.current_term,
            "leader": metrics.current_leader,
            "voters": membership.voter_ids().collect::<Vec<_>>(),
            "learners": membership.learner_ids().collect::<Vec<_>>(),
            "members": members,
            "last_log_index": metrics.last_log_index,
            "committed_index": committed,
            "applied_index": metrics.last_applied.map(|id| id.index),
            "snapshot_index": metrics.snapshot.map(|id| id.index),
            "purged_index": metrics.purged.map(|id| id.index),
            "followers": if metrics.replication.is_some() { serde_json::Value::Object(followers) } else { serde_json::Value::Null },
        });
        Response::json(Status::Ok, serde_json::to_vec(&status).expect("JSON"))
    }

    async fn init(&self) -> Answer {
        match self.node.initialize().await {
            Ok(()) => Ok(Response::json(
                Status::Ok,
                serde_json::to_vec(&serde_json::json!({"initialized": self.node.peers})).expect("JSON"),
            )),
            Err(error) => Err(Response::error(
                Status::Conflict,
                &format!("cannot initialize: {error}"),
            )),
        }
    }

    async fn add_learner(&self, body: &[u8], target: &str) -> Answer {
        #[derive(Deserialize)]
        struct Learner {
            id: NodeId,
            address: String,
        }
        let learner: Learner = parse_body(body, "{\"id\":N,\"address\":\"HOST:PORT\"}")?;
        let outcome = self
            .node
            .raft
            .add_learner(learner.id, BasicNode::new(&learner.address), true)
            .await;
        self.membership_answer(outcome, target)
    }

    async fn change_membership(&self, body: &[u8], target: &str) -> Answer {
        #[derive(Deserialize)]
        struct Voters {
            voters: BTreeSet<NodeId>,
        }
        let voters: Voters = parse_body(body, "{\"voters\":[1,2,3]}")?;
        let outcome = self.node.raft.change_membership(voters.voters, false).await;
        self.membership_answer(outcome, target)
    }

    fn membership_answer(
        &self,
        outcome: Result<
            openraft::raft::ClientWriteResponse<crate::cluster::types::TypeConfig>,
            RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
        >,
        target: &str,
    ) -> Answer {
        match outcome {
            Ok(response) => Ok(Response::json(
                Status::Ok,
                serde_json::to_vec(&serde_json::json!({
                    "log_index": response.log_id.index,
                    "membership": response.membership.map(|m| m.voter_ids().collect::<Vec<_>>()),
                }))
                .expect("JSON"),
            )),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(self.redirect(&forward, target))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                Err(Response::error(Status::Conflict, &error.to_string()))
            }
            Err(error) => Err(unavailable(&error.to_string())),
        }
    }

    /// The cluster's lines of `/metrics` (`docs/metrics.md`).
    async fn metrics(&self) -> String {
        let metrics = self.node.raft.metrics().borrow().clone();
        let committed = self.node.committed_index().await;
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
        };
        gauge(
            "ringkv_raft_term",
            "The node's current Raft term.",
            metrics.current_term,
        );
        gauge(
            "ringkv_raft_is_leader",
            "1 if this node is the leader.",
            u64::from(metrics.current_leader == Some(self.node.id)),
        );
        gauge(
            "ringkv_raft_last_log_index",
            "The last entry in this node's log.",
            metrics.last_log_index.unwrap_or(0),
        );
        gauge(
            "ringkv_raft_committed_index",
            "The last entry this node knows committed.",
            committed.unwrap_or(0),
        );
        gauge(
            "ringkv_raft_applied_index",
            "The last entry applied to this node's store.",
            metrics.last_applied.map_or(0, |id| id.index),
        );
        let _ = write!(
            out,
            "# HELP ringkv_raft_leader_changes_total Leaders this node saw elected.\n# TYPE ringkv_raft_leader_changes_total counter\nringkv_raft_leader_changes_total {}\n",
            self.node.leader_changes.get()
        );
        let _ = write!(
            out,
            "# HELP ringkv_raft_snapshots_built_total Snapshots this node built.\n# TYPE ringkv_raft_snapshots_built_total counter\nringkv_raft_snapshots_built_total {}\n",
            self.node.snapshots_built()
        );
        let _ = write!(
            out,
            "# HELP ringkv_raft_log_syncs_total Syncs of the Raft log.\n# TYPE ringkv_raft_log_syncs_total counter\nringkv_raft_log_syncs_total {}\n",
            self.node.log().wal().syncs()
        );
        if let Some(replication) = &metrics.replication {
            let last = metrics.last_log_index.unwrap_or(0);
            out.push_str("# HELP ringkv_raft_follower_lag_entries Entries a follower lacks (leader only).\n# TYPE ringkv_raft_follower_lag_entries gauge\n");
            for (peer, matched) in replication.iter().filter(|(peer, _)| **peer != self.node.id) {
                let matched = matched.map_or(0, |id| id.index);
                let _ = writeln!(
                    out,
                    "ringkv_raft_follower_lag_entries{{peer=\"{peer}\"}} {}",
                    last.saturating_sub(matched)
                );
            }
        }
        let times = self.node.append_times.borrow();
        if !times.is_empty() {
            out.push_str("# HELP ringkv_raft_append_seconds Round trips of appends to each peer (leader only).\n# TYPE ringkv_raft_append_seconds summary\n");
            for (peer, times) in times.iter() {
                let _ = writeln!(
                    out,
                    "ringkv_raft_append_seconds_sum{{peer=\"{peer}\"}} {}",
                    times.seconds
                );
                let _ = writeln!(
                    out,
                    "ringkv_raft_append_seconds_count{{peer=\"{peer}\"}} {}",
                    times.count
                );
            }
        }
        out
    }
}

fn unavailable(message: &str) -> Response {
    let mut response = Response::error(Status::ServiceUnavailable, message);
    response.retry_after = Some(1);
    response
}

fn parse_body<T: DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|error| {
        Response::error(
            Status::BadRequest,
            &format!("malformed body: {error} (expected {shape})"),
        )
    })
}

/// Answers one Raft RPC: the request's JSON in, `Result<answer, RaftError>` as JSON out.
async fn rpc<Req, Resp, E, Fut>(body: &[u8], call: impl FnOnce(Req) -> Fut) -> Answer
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: Serialize,
    Fut: Future<Output = Result<Resp, E>>,
{
    let request: Req = serde_json::from_slice(body)
        .map_err(|error| Response::error(Status::BadRequest, &format!("malformed Raft request: {error}")))?;
    let result = call(request).await;
    Ok(Response::json(
        Status::Ok,
        serde_json::to_vec(&result).expect("Raft messages serialize"),
    ))
}
