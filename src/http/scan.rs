//! `GET /scan`: its parameters, its cursor, and its answer (`docs/api.md`, "Scans").
//!
//! The cursor is opaque to clients: `1` (its format), then hex of the snapshot's epoch and
//! number (8 bytes each, little-endian), the last key of the page, and a CRC32C of those bytes,
//! so that a cursor altered by hand is refused (400) rather than read as another scan's. The
//! scan's range lives with its snapshot on the server, so a cursor stays short.

use bytes::Bytes;

use super::request::{query_param, QueryError};
use super::response::{push_json_string, Response, Status};
use super::routes::{key_problem, store_error};
use crate::config::HttpConfig;
use crate::engine::{Engine, ScanPage, ScanRange, ScanStart, SnapshotId};
use crate::error::Error;
use crate::io::FileSystem;

/// A page's size when the request names none.
const DEFAULT_LIMIT: usize = 100;
const CURSOR_FORMAT: char = '1';

/// Answers `GET /scan?...`.
pub async fn answer<F: FileSystem>(
    engine: &Engine<F>,
    limits: &HttpConfig,
    query: &str,
) -> Result<Response, Response> {
    let param = |name: &str| {
        query_param(query, name).map_err(|error| {
            let why = match error {
                QueryError::BadPercentEncoding => "bad percent-encoding",
                QueryError::NotUtf8 => "not UTF-8 after percent-decoding",
            };
            bad(&format!("parameter {name}: {why}"))
        })
    };
    // A later page without a limit of its own takes its first page's.
    let limit = match param("limit")? {
        None => None,
        Some(text) => match text.parse::<usize>() {
            Ok(0) | Err(_) => return Err(bad("limit must be a positive number of keys")),
            Ok(limit) => Some(limit.min(limits.max_scan_limit)),
        },
    };
    let start = match param("cursor")? {
        Some(cursor) => {
            for name in ["start", "end", "prefix", "reverse", "keys_only"] {
                if param(name)?.is_some() {
                    return Err(bad(&format!(
                        "a cursor continues its scan's range and order: drop {name}"
                    )));
                }
            }
            let (id, after) = decode_cursor(&cursor)
                .ok_or_else(|| bad("malformed cursor: pass the \"next\" of the previous page unchanged"))?;
            ScanStart::Continue { id, after }
        }
        None => ScanStart::New(range(&param, limits)?),
    };
    let limit = match start {
        ScanStart::New(_) => Some(limit.unwrap_or(DEFAULT_LIMIT.min(limits.max_scan_limit))),
        ScanStart::Continue { .. } => limit,
    };
    let page = engine.scan(start, limit).await.map_err(scan_error)?;
    Ok(page_response(&page))
}

/// The range of a new scan: `prefix`, or `start` and `end`; `reverse`, `keys_only`.
fn range(
    param: &dyn Fn(&str) -> Result<Option<String>, Response>,
    limits: &HttpConfig,
) -> Result<ScanRange, Response> {
    let flag = |name: &str| -> Result<bool, Response> {
        match param(name)?.as_deref() {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1" | "") => Ok(true),
            Some(other) => Err(bad(&format!("{name} must be true or false, not {other:?}"))),
        }
    };
    let bound = |name: &str| -> Result<Option<Bytes>, Response> {
        match param(name)? {
            None => Ok(None),
            Some(key) if key.is_empty() => Ok(None),
            Some(key) => match key_problem(&key, limits) {
                Some((status, problem)) => Err(Response::error(status, &format!("{name}: {problem}"))),
                None => Ok(Some(Bytes::from(key.into_bytes()))),
            },
        }
    };
    let (lower, upper) = match bound("prefix")? {
        Some(prefix) => {
            if param("start")?.is_some() || param("end")?.is_some() {
                return Err(bad("prefix replaces start and end: give one or the other"));
            }
            let upper = prefix_end(&prefix);
            (prefix, upper)
        }
        None => (bound("start")?.unwrap_or_default(), bound("end")?),
    };
    Ok(ScanRange {
        lower,
        upper,
        reverse: flag("reverse")?,
        keys_only: flag("keys_only")?,
    })
}

/// The first key after every key that starts with `prefix` (none if the prefix is all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Bytes> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(Bytes::from(end));
        }
    }
    None
}

/// `{"kvs":[{"key":K,"value":V,"version":N},...],"more":bool,"next":CURSOR}`.
fn page_response(page: &ScanPage) -> Response {
    let bytes: usize = page
        .items
        .iter()
        .map(|item| item.key.len() + item.value.as_ref().map_or(0, Bytes::len) + 48)
        .sum();
    let mut body = Vec::with_capacity(bytes + 64);
    body.extend_from_slice(b"{\"kvs\":[");
    for (index, item) in page.items.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"key\":");
        push_json_string(&mut body, &String::from_utf8_lossy(&item.key));
        if !page.range.keys_only {
            body.extend_from_slice(b",\"value\":");
            body.extend_from_slice(item.value.as_deref().unwrap_or(b"null"));
        }
        body.extend_from_slice(format!(",\"version\":{}}}", item.seq).as_bytes());
    }
    body.extend_from_slice(format!("],\"more\":{}", page.more).as_bytes());
    if let (Some(id), Some(last)) = (page.snapshot, page.items.last()) {
        body.extend_from_slice(b",\"next\":\"");
        body.extend_from_slice(encode_cursor(id, &last.key).as_bytes());
        body.push(b'"');
    }
    body.push(b'}');
    Response::json(Status::Ok, body)
}

fn encode_cursor(id: SnapshotId, after: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(20 + after.len());
    bytes.extend_from_slice(&id.epoch.to_le_bytes());
    bytes.extend_from_slice(&id.number.to_le_bytes());
    bytes.extend_from_slice(after);
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    let mut text = String::with_capacity(1 + 2 * bytes.len());
    text.push(CURSOR_FORMAT);
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

fn decode_cursor(text: &str) -> Option<(SnapshotId, Bytes)> {
    let hex = text.strip_prefix(CURSOR_FORMAT)?;
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    if bytes.len() < 20 {
        return None;
    }
    let (content, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(content).to_le_bytes() != crc {
        return None;
    }
    let id = SnapshotId {
        epoch: u64::from_le_bytes(content[..8].try_into().ok()?),
        number: u64::from_le_bytes(content[8..16].try_into().ok()?),
    };
    Some((id, Bytes::copy_from_slice(&content[16..])))
}

fn scan_error(error: Error) -> Response {
    match error {
        Error::SnapshotGone { .. } => Response::error(Status::Gone, &error.to_string()),
        Error::Io { .. } | Error::Corruption { .. } => {
            tracing::error!("scan failed: {error}");
            Response::error(Status::InternalServerError, &format!("the scan failed: {error}"))
        }
        error => store_error(error),
    }
}

fn bad(message: &str) -> Response {
    Response::error(Status::BadRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_tampering() {
        let id = SnapshotId {
            epoch: 0x0123_4567_89ab_cdef,
            number: 42,
        };
        let cursor = encode_cursor(id, b"key \xe2\x82\xac");
        assert_eq!(
            decode_cursor(&cursor),
            Some((id, Bytes::from_static(b"key \xe2\x82\xac")))
        );
        for at in 1..cursor.len() {
            let mut altered = cursor.clone().into_bytes();
            altered[at] = if altered[at] == b'0' { b'1' } else { b'0' };
            let altered = String::from_utf8(altered).unwrap();
            assert_eq!(decode_cursor(&altered), None, "digit {at} altered");
        }
        assert_eq!(decode_cursor(""), None);
        assert_eq!(decode_cursor("1"), None);
        assert_eq!(decode_cursor(&cursor[1..]), None);
        assert_eq!(decode_cursor(&format!("{cursor}0")), None);
    }

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"ab"), Some(Bytes::from_static(b"ac")));
        assert_eq!(prefix_end(b"a\xff"), Some(Bytes::from_static(b"b")));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
