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
/// theirs in order. Anything else (a get must see them, a delete reads the key) starts once they
/// are answered.
pub fn starts_before_earlier_writes_finish(method: &str, target: &str) -> bool {
    method == "POST" && target.split_once('?').map_or(target, |(path, _)| path) == "/set"
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
        "/get" => ("GET", method == "GET"),
        "/set" => ("POST", method == "POST"),
        "/del" => ("DELETE", method == "DELETE"),
        "/metrics" => ("GET", method == "GET"),
        _ => {
            return Started::Answered(Response::error(
                Status::NotFound,
                &format!(
                    "no endpoint {path}: use GET /get?key=K, POST /set, DELETE /del?key=K or GET /metrics"
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
        "/set" => match durability(engine, query) {
            Ok(class) => match begin_set(engine, limits, body, class).await {
                Ok(write) => {
                    return Started::Writing(SetInFlight {
                        write: write.0,
                        key: write.1,
                        class,
                    })
                }
                Err(response) => with_durability(Err(response), class),
            },
            Err(response) => Err(response),
        },
        _ => match durability(engine, query) {
            Ok(class) => with_durability(delete(engine, limits, query, class).await, class),
            Err(response) => Err(response),
        },
    };
    Started::Answered(outcome.unwrap_or_else(|response| response))
}

/// The class a write gets: its `?durability=`, else the server's, never below the floor.
fn durability<F: FileSystem>(engine: &Engine<F>, query: &str) -> Result<Durability, Response> {
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
fn with_durability(answer: Answer, class: Durability) -> Answer {
    let name = |mut response: Response| {
        response.durability = Some(class);
        response
    };
    answer.map(name).map_err(name)
}

type Answer = Result<Response, Response>;

async fn get<F: FileSystem>(engine: &Engine<F>, limits: &HttpConfig, query: &str) -> Answer {
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
    durability: Durability,
) -> Answer {
    let key = key_from_query(query, limits)?;
    match engine
        .delete_with(key.as_bytes(), durability)
        .await
        .map_err(store_error)?
    {
        Some(deletion) => Ok(value_response(&key, &deletion.removed)),
        None => Ok(Response::error_with_key(Status::NotFound, "key not found", &key)),
    }
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
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Checks a set's body and appends it; returns the write and its key.
async fn begin_set<'e, F: FileSystem>(
    engine: &'e Engine<F>,
    limits: &HttpConfig,
    body: &[u8],
    durability: Durability,
) -> Result<(AppendedWrite<'e, F>, String), Response> {
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
    if value.len() > limits.max_value_bytes {
        return Err(Response::error(
            Status::ContentTooLarge,
            &format!(
                "value is {} bytes, the limit is {}",
                value.len(),
                limits.max_value_bytes
            ),
        ));
    }
    crate::panic_trigger::check(crate::panic_trigger::Place::Serving, key.as_bytes());
    let write = engine
        .begin_set(key.as_bytes(), value, durability)
        .await
        .map_err(store_error)?;
    Ok((write, key))
}

/// `{"key":K,"version":N}`.
fn set_response(key: &str, version: u64) -> Response {
    let mut body = Vec::with_capacity(key.len() + 32);
    body.extend_from_slice(b"{\"key\":");
    push_json_string(&mut body, key);
    body.extend_from_slice(format!(",\"version\":{version}}}").as_bytes());
    Response::json(Status::Ok, body)
}

fn key_from_query(query: &str, limits: &HttpConfig) -> Result<String, Response> {
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
    if key.is_empty() {
        return Err(Response::error(Status::BadRequest, "key must not be empty"));
    }
    if key.len() > limits.max_key_bytes {
        return Err(Response::error(
            Status::ContentTooLarge,
            &format!(
                "key is {} bytes, the limit is {}",
                key.len(),
                limits.max_key_bytes
            ),
        ));
    }
    Ok(())
}

/// `{"key":K,"value":V,"version":N}`.
fn value_response(key: &str, found: &VersionedValue) -> Response {
    let mut body = Vec::with_capacity(key.len() + found.value.len() + 40);
    body.extend_from_slice(b"{\"key\":");
    push_json_string(&mut body, key);
    body.extend_from_slice(b",\"value\":");
    body.extend_from_slice(&found.value);
    body.extend_from_slice(format!(",\"version\":{}}}", found.version).as_bytes());
    Response::json(Status::Ok, body)
}

/// A read failed (an I/O error or a damaged block): this request fails, the server goes on.
fn read_error(error: Error) -> Response {
    tracing::error!("read failed: {error}");
    Response::error(Status::InternalServerError, &format!("the read failed: {error}"))
}

fn store_error(error: Error) -> Response {
    let status = match error {
        Error::NoSpace { .. } => Status::InsufficientStorage,
        // A failed read before a delete fails that request only, as a failed get does.
        Error::WalCorruption { .. } | Error::Corruption { .. } | Error::ReadBeforeDelete(_) => {
            Status::InternalServerError
        }
        _ => Status::ServiceUnavailable,
    };
    Response::error(status, &format!("the write was not stored: {error}"))
}
