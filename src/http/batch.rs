//! `POST /batch`: parsing its body into ops, and its answer. Knows the API contract's "Batches"
//! (`docs/api.md`), not the WAL: the engine makes the ops atomic.

use std::collections::HashSet;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::response::{push_json_string, Response, Status};
use super::routes::{key_problem, value_problem};
use crate::config::HttpConfig;
use crate::engine::{BatchResult, BatchWrite};

/// The body: `{"ops":[...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    #[serde(borrow)]
    ops: Vec<OpBody<'a>>,
}

/// One op: `{"op":"set","key":K,"value":V}` or `{"op":"del","key":K}`, each with an optional
/// `"if_version":N`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpBody<'a> {
    op: &'a str,
    key: String,
    #[serde(borrow, default, deserialize_with = "super::routes::present")]
    value: Option<&'a RawValue>,
    #[serde(default)]
    if_version: Option<u64>,
}

/// A batch's ops, checked: known op names, keys and values within the limits, distinct keys,
/// at most `max_batch_ops` of them.
pub fn parse(body: &[u8], limits: &HttpConfig) -> Result<Vec<BatchWrite>, Response> {
    let parsed: BatchBody = serde_json::from_slice(body).map_err(|error| {
        Response::error(
            Status::BadRequest,
            &format!("malformed batch body: {error} (expected {{\"ops\":[{{\"op\":\"set\",\"key\":K,\"value\":V}},{{\"op\":\"del\",\"key\":K}}]}})"),
        )
    })?;
    if parsed.ops.is_empty() {
        return Err(Response::error(
            Status::BadRequest,
            "a batch needs at least one op",
        ));
    }
    if parsed.ops.len() > limits.max_batch_ops {
        return Err(Response::error(
            Status::ContentTooLarge,
            &format!(
                "a batch of {} ops; the limit is {} (--max-batch-ops)",
                parsed.ops.len(),
                limits.max_batch_ops
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(parsed.ops.len());
    let mut writes = Vec::with_capacity(parsed.ops.len());
    for (index, op) in parsed.ops.into_iter().enumerate() {
        let at = |message: &str| format!("op {index}: {message}");
        if let Some((status, problem)) = key_problem(&op.key, limits) {
            return Err(Response::error(status, &at(&problem)));
        }
        if !seen.insert(op.key.clone()) {
            return Err(Response::error(
                Status::BadRequest,
                &at(&format!(
                    "key {:?} appears twice; a batch writes each key at most once",
                    op.key
                )),
            ));
        }
        let value = match (op.op, op.value) {
            ("set", Some(value)) => {
                let value = value.get().as_bytes();
                if let Some((status, problem)) = value_problem(value, limits) {
                    return Err(Response::error(status, &at(&problem)));
                }
                Some(Bytes::copy_from_slice(value))
            }
            ("set", None) => {
                return Err(Response::error(
                    Status::BadRequest,
                    &at("a set needs a \"value\""),
                ))
            }
            ("del", None) => None,
            ("del", Some(_)) => {
                return Err(Response::error(
                    Status::BadRequest,
                    &at("a del takes no \"value\""),
                ))
            }
            (other, _) => {
                return Err(Response::error(
                    Status::BadRequest,
                    &at(&format!("unknown op {other:?}: use \"set\" or \"del\"")),
                ))
            }
        };
        writes.push(BatchWrite {
            key: Bytes::from(op.key.into_bytes()),
            value,
            if_version: op.if_version,
        });
    }
    Ok(writes)
}

/// `{"results":[{"key":K,"version":N},{"key":K,"version":N,"removed":{"value":V,"version":M}|null}]}`:
/// per op in order, its version; a del also says what it removed.
pub fn response(writes: &[BatchWrite], results: &[BatchResult]) -> Response {
    let mut body = Vec::with_capacity(64 * results.len() + 16);
    body.extend_from_slice(b"{\"results\":[");
    for (index, (write, result)) in writes.iter().zip(results).enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"key\":");
        push_json_string(&mut body, &String::from_utf8_lossy(&write.key));
        body.extend_from_slice(format!(",\"version\":{}", result.version).as_bytes());
        if write.value.is_none() {
            match &result.removed {
                Some(removed) => {
                    body.extend_from_slice(b",\"removed\":{\"value\":");
                    body.extend_from_slice(&removed.value);
                    body.extend_from_slice(format!(",\"version\":{}}}", removed.version).as_bytes());
                }
                None => body.extend_from_slice(b",\"removed\":null"),
            }
        }
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    Response::json(Status::Ok, body)
}
