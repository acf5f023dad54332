//! Routing: (method, path) to a store call, and the store's answer or error to a response.
//! Knows the API contract (`../shared/API.md`), not sockets.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::request::{query_param, QueryError};
use super::response::{push_json_string, Response, Status};
use crate::config::{Durability, HttpConfig};
use crate::engine::{AppendedWrite, Engine, VersionedValue};
use crate::error::Error;
use crate::io::FileSystem;

/// A request started: answered already, or a set whose record is in the WAL and whose answer
/// waits for its batch.
pub enum Started<'e, F: FileSystem> {
    Answered(Response),
    Writing(SetInFlight<'e, F>),
}

/// A `POST /set` appended to the WAL; [`SetInFlight::answer`] waits for it.
pub struct SetInFlight<'e, F: FileSystem> {
    write: AppendedWrite<'e, F>,
    key: String,
    class: Durability,
}

impl<F: FileSystem> SetInFlight<'_, F> {
    /// The answer, once the write is acknowledged (or failed).
    pub async fn answer(self) -> Response {
        let SetInFlight { write, key, class } = self;
        let answer = match write.finish().await {
            Ok(version) => Ok(set_response(&key, version)),
            Err(error) => Err(store_error(error)),
        };
        with_durability(answer, class).unwrap_or_else(|response| response)
    }
}

/// Whether a request may start while earlier writes on its connection wait for their batch: a
/// set reads nothing, and its record goes into the WAL after theirs, so its answer can follow
/// theirs in order. Anything else (a get must see them, a delete or a conditional set reads
/// the key) starts once they are answered.
pub fn starts_before_earlier_writes_finish(method: &str, target: &str) -> bool {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    method == "POST" && path == "/set" && matches!(query_param(query, "if_version"), Ok(None))
}

/// Answers one request; `scrape` renders the `/metrics` page.
pub async fn handle<F: FileSystem>(
    engine: &Engine<F>,
    limits: &HttpConfig,
    scrape: &dyn Fn() -> Vec<u8>,
    method: &str,
    target: &str,
    body: &[u8],
) -> Response {
    match start(engine, limits, scrape, method, target, body).await {
        Started::Answered(response) => response,
        Started::Writing(set) => set.answer().await,
    }
}

/// Starts one request: answers it, or for a set, appends it and leaves the answer to
/// [`SetInFlight::answer`].
pub async fn start<'e, F: FileSystem>(
    engine: &'e Engine<F>,
    limits: &HttpConfig,
    scrape: &dyn Fn() -> Vec<u8>,
    method: &str,
    target: &str,
    body: &[u8],
) -> Started<'e, F> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (allowed, expected) = match path {
        "/get" | "/scan" | "/metrics" => ("GET", method == "GET"),
        "/set" | "/batch" => ("POST", method == "POST"),
        "/del" => ("DELETE", method == "DELETE"),
        _ => {
            return Started::Answered(Response::error(
                Status::NotFound,
                &format!(
                    "no endpoint {path}: use GET /get?key=K, POST /set, DELETE /del?key=K, POST /batch, GET /scan or GET /metrics"
                ),
            ))
        }
    };
    if !expected {
        let mut response = Response::error(
            Status::MethodNotAllowed,
            &format!("{path} takes {allowed}, not {method}"),
        );
        response.allow = Some(allowed);
        return Started::Answered(response);
    }
    let outcome = match path {
        "/metrics" => Ok(Response::prometheus_text(scrape())),
        "/get" => get(engine, limits, query).await,
        "/scan" => super::scan::answer(engine, limits, query).await,
        _ => {
            let (class, if_version) =
                match durability(engine, query).and_then(|class| Ok((class, if_version(query)?))) {
                    Ok(parsed) => parsed,
                    Err(response) => return Started::Answered(response),
                };
            let answer = match (path, if_version) {
                ("/set", None) => match begin_set(engine, limits, body, class).await {
                    Ok((write, key)) => return Started::Writing(SetInFlight { write, key, class }),
                    Err(response) => Err(response),
                },
                ("/set", Some(if_version)) => set_if(engine, limits, body, if_version, class).await,
                ("/batch", None) => batch(engine, limits, body, class).await,
                ("/batch", Some(_)) => Err(Response::error(
                    Status::BadRequest,
                    "a batch takes if_version on each op (\"if_version\":N), not in the query",
                )),
                _ => delete(engine, limits, query, if_version, class).await,
            };
            with_durability(answer, class)
        }
    };
    Started::Answered(outcome.unwrap_or_else(|response| response))
}

/// The `if_version` parameter of a conditional write, if given.
pub(super) fn if_version(query: &str) -> Result<Option<u64>, Response> {
    let bad = || {
        Response::error(
            Status::BadRequest,
            "if_version must be a version number (0: only if the key is absent)",
        )
    };
    match query_param(query, "if_version") {
        Ok(None) => Ok(None),
        Ok(Some(text)) => text.parse().map(Some).map_err(|_| bad()),
        Err(_) => Err(bad()),
    }
}

/// The class a write gets: its `?durability=`, else the server's, never below the floor.
pub(super) fn durability<F: FileSystem>(engine: &Engine<F>, query: &str) -> Result<Durability, Response> {
    let requested = match query_param(query, "durability") {
        Ok(None) => None,
        Ok(Some(name)) => Some(name.parse::<Durability>().map_err(|_| {
            Response::error(
                Status::BadRequest,
                &format!(
                    "unknown durability {name:?}: use one of {}",
                    Durability::ALL
                        .map(Durability::name)
                        .iter()
                        .rev()
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?),
        Err(_) => {
            return Err(Response::error(
                Status::BadRequest,
                "bad durability parameter: use ?durability=always|group|periodic|never",
            ))
        }
    };
    Ok(engine.config().durability_for(requested))
}

/// Every answer of a write whose class is known names it, failures included.
pub(super) fn with_durability(answer: Answer, class: Durability) -> Answer {
    let name = |mut response: Response| {
        response.durability = Some(class);
        response
    };
    answer.map(name).map_err(name)
}

pub(super) type Answer = Result<Response, Response>;

pub(super) async fn get<F: FileSystem>(engine: &Engine<F>, limits: &HttpConfig, query: &str) -> Answer {
    let key = key_from_query(query, limits)?;
    match engine.get(key.as_bytes()).await.map_err(read_error)? {
        Some(found) => Ok(value_response(&key, &found)),
        None => Ok(Response::error_with_key(Status::NotFound, "key not found", &key)),
    }
}

async fn delete<F: FileSystem>(
    engine: &Engine<F>,
    limits: &HttpConfig,
    query: &str,
    if_version: Option<u64>,
    durability: Durability,
) -> Answer {
    let key = key_from_query(query, limits)?;
    match engine
        .delete_with(key.as_bytes(), if_version, durability)
        .await
        .map_err(store_error)?
    {
        Some(deletion) => Ok(value_response(&key, &deletion.removed)),
        None => Ok(Response::error_with_key(Status::NotFound, "key not found", &key)),
    }
}

async fn set_if<F: FileSystem>(
    engine: &Engine<F>,
    limits: &HttpConfig,
    body: &[u8],
    if_version: u64,
    durability: Durability,
) -> Answer {
    let (key, value) = parse_set(body, limits)?;
    let version = engine
        .set_if(key.as_bytes(), value, if_version, durability)
        .await
        .map_err(store_error)?;
    Ok(set_response(&key, version))
}

async fn batch<F: FileSystem>(
    engine: &Engine<F>,
    limits: &HttpConfig,
    body: &[u8],
    durability: Durability,
) -> Answer {
    let writes = super::batch::parse(body, limits)?;
    let results = engine
        .batch(&writes, durability)
        .await
        .map_err(|error| match error {
            Error::VersionMismatch { op, key, current } => version_mismatch(Some(op), &key, current),
            error => store_error(error),
        })?;
    Ok(super::batch::response(&writes, &results))
}

/// The body of `POST /set`: both fields kept as raw JSON so that the value is stored byte for
/// byte and the key's type can be checked with a clear message.
#[derive(Deserialize)]
struct SetBody<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    key: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    value: Option<&'a RawValue>,
}

/// A field that is present, `null` included (plain `Option` would read `null` as absent, and
/// `null` is a value users may store).
pub(super) fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Checks a set's body and appends it; returns the write and its key.
async fn begin_set<'e, F: FileSystem>(
    engine: &'e Engine<F>,
    limits: &HttpConfig,
    body: &[u8],
    durability: Durability,
) -> Result<(AppendedWrite<'e, F>, String), Response> {
    let (key, value) = parse_set(body, limits)?;
    let write = engine
        .begin_set(key.as_bytes(), value, durability)
        .await
        .map_err(store_error)?;
    Ok((write, key))
}

/// A set's key and value (the value's JSON text, as sent), checked against the limits.
pub(super) fn parse_set<'b>(body: &'b [u8], limits: &HttpConfig) -> Result<(String, &'b [u8]), Response> {
    let parsed: SetBody = serde_json::from_slice(body)
        .map_err(|error| Response::error(Status::BadRequest, &format!("malformed JSON body: {error}")))?;
    let raw_key = parsed
        .key
        .ok_or_else(|| Response::error(Status::BadRequest, "missing \"key\" in body"))?;
    let value = parsed
        .value
        .ok_or_else(|| Response::error(Status::BadRequest, "missing \"value\" in body"))?;
    let key: String = serde_json::from_str(raw_key.get())
        .map_err(|_| Response::error(Status::BadRequest, "\"key\" must be a JSON string"))?;
    check_key(&key, limits)?;
    let value = value.get().as_bytes();
    if let Some((status, problem)) = value_problem(value, limits) {
        return Err(Response::error(status, &problem));
    }
    crate::panic_trigger::check(crate::panic_trigger::Place::Serving, key.as_bytes());
    Ok((key, value))
}

/// `{"key":K,"version":N}`.
pub(super) fn set_response(key: &str, version: u64) -> Response {
    let mut body = Vec::with_capacity(key.len() + 32);
    body.extend_from_slice(b"{\"key\":");
    push_json_string(&mut body, key);
    body.extend_from_slice(format!(",\"version\":{version}}}").as_bytes());
    Response::json(Status::Ok, body)
}

pub(super) fn key_from_query(query: &str, limits: &HttpConfig) -> Result<String, Response> {
    let key = match query_param(query, "key") {
        Ok(Some(key)) => key,
        Ok(None) => {
            return Err(Response::error(
                Status::BadRequest,
                "missing key parameter: use ?key=K",
            ))
        }
        Err(QueryError::BadPercentEncoding) => {
            return Err(Response::error(
                Status::BadRequest,
                "bad percent-encoding in the query string",
            ))
        }
        Err(QueryError::NotUtf8) => {
            return Err(Response::error(
                Status::BadRequest,
                "key is not valid UTF-8 after percent-decoding",
            ))
        }
    };
    check_key(&key, limits)?;
    Ok(key)
}

fn check_key(key: &str, limits: &HttpConfig) -> Result<(), Response> {
    key_problem(key, limits).map_or(Ok(()), |(status, problem)| Err(Response::error(status, &problem)))
}

/// What is wrong with a key, if anything: empty (400) or over the limit (413).
pub(super) fn key_problem(key: &str, limits: &HttpConfig) -> Option<(Status, String)> {
    if key.is_empty() {
        return Some((Status::BadRequest, "key must not be empty".to_string()));
    }
    (key.len() > limits.max_key_bytes).then(|| {
        (
            Status::ContentTooLarge,
            format!(
                "key is {} bytes, the limit is {}",
                key.len(),
                limits.max_key_bytes
            ),
        )
    })
}

/// What is wrong with a value (its JSON text), if anything: over the limit (413).
pub(super) fn value_problem(value: &[u8], limits: &HttpConfig) -> Option<(Status, String)> {
    (value.len() > limits.max_value_bytes).then(|| {
        (
            Status::ContentTooLarge,
            format!(
                "value is {} bytes, the limit is {}",
                value.len(),
                limits.max_value_bytes
            ),
        )
    })
}

/// `{"key":K,"value":V,"version":N}`.
pub(super) fn value_response(key: &str, found: &VersionedValue) -> Response {
    let mut body = Vec::with_capacity(key.len() + found.value.len() + 40);
    body.extend_from_slice(b"{\"key\":");
    push_json_string(&mut body, key);
    body.extend_from_slice(b",\"value\":");
    body.extend_from_slice(&found.value);
    body.extend_from_slice(format!(",\"version\":{}}}", found.version).as_bytes());
    Response::json(Status::Ok, body)
}

/// A read failed (an I/O error or a damaged block): this request fails, the server goes on.
pub(super) fn read_error(error: Error) -> Response {
    tracing::error!("read failed: {error}");
    Response::error(Status::InternalServerError, &format!("the read failed: {error}"))
}

pub(super) fn store_error(error: Error) -> Response {
    let status = match error {
        Error::VersionMismatch { key, current, .. } => return version_mismatch(None, &key, current),
        Error::NoSpace { .. } => Status::InsufficientStorage,
        Error::RecordTooLarge { .. } => Status::ContentTooLarge,
        // A failed read before a delete fails that request only, as a failed get does.
        Error::WalCorruption { .. } | Error::Corruption { .. } | Error::ReadBeforeWrite(_) => {
            Status::InternalServerError
        }
        _ => Status::ServiceUnavailable,
    };
    Response::error(status, &format!("the write was not stored: {error}"))
}

/// `409` `{"error":"version mismatch","key":K,"version":CURRENT|null}`, and for a batch's op
/// `"op":I`, its place in the batch.
pub(super) fn version_mismatch(op: Option<usize>, key: &[u8], current: Option<u64>) -> Response {
    let mut body = Vec::with_capacity(key.len() + 64);
    body.extend_from_slice(b"{\"error\":\"version mismatch\",\"key\":");
    push_json_string(&mut body, &String::from_utf8_lossy(key));
    match current {
        Some(version) => body.extend_from_slice(format!(",\"version\":{version}").as_bytes()),
        None => body.extend_from_slice(b",\"version\":null"),
    }
    if let Some(op) = op {
        body.extend_from_slice(format!(",\"op\":{op}").as_bytes());
    }
    body.push(b'}');
    Response::json(Status::Conflict, body)
}
