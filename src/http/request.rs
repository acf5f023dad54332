//! Parsing one HTTP/1.x request out of a connection's buffered bytes, with every size limit
//! enforced before a byte beyond it is accepted. Pure: no sockets, no store.

use std::borrow::Cow;

use super::response::Status;

/// Headers beyond this many are refused with 431.
const MAX_HEADERS: usize = 64;

/// Size limits applied while parsing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_body_bytes: usize,
}

/// A complete request, borrowing from the connection buffer (a chunked body is reassembled).
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
    /// HTTP/1.0 (answers carry `Connection: keep-alive` when kept open).
    pub http10: bool,
    pub keep_alive: bool,
    pub body: Cow<'a, [u8]>,
}

/// The outcome of looking at the buffered bytes.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A whole request and how many buffered bytes it took.
    Complete { request: Request<'a>, consumed: usize },
    /// More bytes are needed. `expects_continue`: the head is complete and asked for
    /// `100 Continue` before the client sends the body.
    Partial { expects_continue: bool },
}

/// A request that cannot be served. The connection is always closed after the answer: once a
/// request's framing is in doubt, nothing after it in the buffer can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: Status,
    pub message: String,
}

impl HttpError {
    fn closing(status: Status, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }
}

enum BodyFraming {
    None,
    Length(usize),
    Chunked,
}

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8], limits: Limits) -> Result<Parsed<'_>, HttpError> {
    parse_resuming(buf, limits, &mut ChunkedProgress::default())
}

/// What of a chunked body earlier calls decoded, so that each read decodes only the bytes that
/// are new (a body sent in many reads, or in one-byte chunks, was decoded from its start on every
/// read: quadratic). Belongs to the request at the start of the buffer; reset once it is
/// complete or refused.
#[derive(Debug, Default)]
pub struct ChunkedProgress {
    body: Vec<u8>,
    /// Bytes after the head that `body` decodes (whole chunks).
    raw_decoded: usize,
    /// Chunk bytes decoding has looked at, over every call: linear in the body's raw size.
    examined: usize,
}

/// As [`parse`], resuming a chunked body where `progress` left it. The caller passes the same
/// buffer start (grown by the bytes read since) until the request is complete or refused.
pub fn parse_resuming<'a>(
    buf: &'a [u8],
    limits: Limits,
    progress: &mut ChunkedProgress,
) -> Result<Parsed<'a>, HttpError> {
    let parsed = parse_with(buf, limits, progress);
    if !matches!(parsed, Ok(Parsed::Partial { .. })) {
        *progress = ChunkedProgress::default();
    }
    parsed
}

fn parse_with<'a>(
    buf: &'a [u8],
    limits: Limits,
    progress: &mut ChunkedProgress,
) -> Result<Parsed<'a>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head_bytes {
                return Err(head_too_large(limits));
            }
            return Ok(Parsed::Partial {
                expects_continue: false,
            });
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::closing(
                Status::HeaderFieldsTooLarge,
                format!("more than {MAX_HEADERS} request headers"),
            ))
        }
        Err(error) => {
            return Err(HttpError::closing(
                Status::BadRequest,
                format!("malformed HTTP request: {error}"),
            ))
        }
    };
    if head_len > limits.max_head_bytes {
        return Err(head_too_large(limits));
    }
    // httparse only completes a head with a method, a target and a version.
    let (Some(method), Some(target), Some(version)) = (head.method, head.path, head.version) else {
        return Err(HttpError::closing(Status::BadRequest, "incomplete request line"));
    };
    let http10 = version == 0;
    let mut framing = BodyFraming::None;
    let mut close_requested = false;
    let mut keep_alive_requested = false;
    let mut expects_continue = false;
    for header in head.headers.iter() {
        let name = header.name;
        let value = std::str::from_utf8(header.value).unwrap_or("").trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length: usize = value.parse().map_err(|_| {
                HttpError::closing(Status::BadRequest, format!("invalid Content-Length {value:?}"))
            })?;
            match framing {
                BodyFraming::None => framing = BodyFraming::Length(length),
                BodyFraming::Length(previous) if previous == length => {}
                _ => {
                    return Err(HttpError::closing(
                        Status::BadRequest,
                        "conflicting Content-Length / Transfer-Encoding headers",
                    ))
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(HttpError::closing(
                    Status::BadRequest,
                    format!("unsupported Transfer-Encoding {value:?}: only chunked is accepted"),
                ));
            }
            if !matches!(framing, BodyFraming::None) {
                return Err(HttpError::closing(
                    Status::BadRequest,
                    "conflicting Content-Length / Transfer-Encoding headers",
                ));
            }
            framing = BodyFraming::Chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close_requested |= token.eq_ignore_ascii_case("close");
                keep_alive_requested |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    let keep_alive = if http10 {
        keep_alive_requested && !close_requested
    } else {
        !close_requested
    };
    let rest = &buf[head_len..];
    let (body, body_len) = match framing {
        BodyFraming::None => (Cow::Borrowed(&rest[..0]), 0),
        BodyFraming::Length(length) => {
            if length > limits.max_body_bytes {
                return Err(body_too_large(limits));
            }
            if rest.len() < length {
                return Ok(Parsed::Partial { expects_continue });
            }
            (Cow::Borrowed(&rest[..length]), length)
        }
        BodyFraming::Chunked => match decode_chunked(rest, limits, progress)? {
            Some((body, consumed)) => (Cow::Owned(body), consumed),
            None => return Ok(Parsed::Partial { expects_continue }),
        },
    };
    Ok(Parsed::Complete {
        request: Request {
            method,
            target,
            http10,
            keep_alive,
            body,
        },
        consumed: head_len + body_len,
    })
}

fn head_too_large(limits: Limits) -> HttpError {
    HttpError::closing(
        Status::HeaderFieldsTooLarge,
        format!("request line and headers exceed {} bytes", limits.max_head_bytes),
    )
}

fn body_too_large(limits: Limits) -> HttpError {
    HttpError::closing(
        Status::ContentTooLarge,
        format!("request body exceeds {} bytes", limits.max_body_bytes),
    )
}

/// Decodes a chunked body at the start of `data`, from where `progress` stopped: the body and
/// the bytes it took, or `None` if incomplete (`progress` then holds every whole chunk so far).
/// Trailers are read and ignored.
fn decode_chunked(
    data: &[u8],
    limits: Limits,
    progress: &mut ChunkedProgress,
) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    debug_assert!(
        progress.raw_decoded <= data.len(),
        "the buffer shrank under a partial body"
    );
    let mut pos = progress.raw_decoded;
    loop {
        let (size_line_len, size) = match httparse::parse_chunk_size(&data[pos..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => {
                return Err(HttpError::closing(
                    Status::BadRequest,
                    "malformed chunk size line",
                ))
            }
        };
        let data_at = pos + size_line_len;
        if size == 0 {
            // Trailer section: header lines, then an empty line.
            let mut at = data_at;
            loop {
                let Some(line_len) = data[at..].windows(2).position(|w| w == b"\r\n") else {
                    if data.len() - at > limits.max_head_bytes {
                        return Err(head_too_large(limits));
                    }
                    return Ok(None);
                };
                at += line_len + 2;
                if line_len == 0 {
                    return Ok(Some((std::mem::take(&mut progress.body), at)));
                }
            }
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > limits.max_body_bytes - progress.body.len() {
            return Err(body_too_large(limits));
        }
        if data.len() - data_at < size + 2 {
            return Ok(None);
        }
        if &data[data_at + size..data_at + size + 2] != b"\r\n" {
            return Err(HttpError::closing(
                Status::BadRequest,
                "chunk data not followed by CRLF",
            ));
        }
        progress.body.extend_from_slice(&data[data_at..data_at + size]);
        progress.examined += data_at + size + 2 - pos;
        pos = data_at + size + 2;
        progress.raw_decoded = pos;
    }
}

/// Why a query parameter could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    BadPercentEncoding,
    NotUtf8,
}

/// The decoded value of parameter `name` in a query string (`+` is a space, `%XX` a byte, the
/// result must be UTF-8). The first occurrence wins.
pub fn query_param(query: &str, name: &str) -> Result<Option<String>, QueryError> {
    for pair in query.split('&') {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(raw_name)? == name {
            return percent_decode(raw_value).map(Some);
        }
    }
    Ok(None)
}

fn percent_decode(text: &str) -> Result<String, QueryError> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(QueryError::BadPercentEncoding)?;
                let hex = std::str::from_utf8(hex).map_err(|_| QueryError::BadPercentEncoding)?;
                let byte = u8::from_str_radix(hex, 16).map_err(|_| QueryError::BadPercentEncoding)?;
                decoded.push(byte);
                i += 2;
            }
            other => decoded.push(other),
        }
        i += 1;
    }
    String::from_utf8(decoded).map_err(|_| QueryError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head_bytes: 256,
        max_body_bytes: 32,
    };

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf, LIMITS) {
            Ok(Parsed::Complete { request, consumed }) => (request, consumed),
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[test]
    fn keep_alive_defaults_follow_the_version() {
        assert!(complete(b"GET / HTTP/1.1\r\n\r\n").0.keep_alive);
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .0
                .keep_alive
        );
    }

    #[test]
    fn content_length_body_and_pipelined_rest() {
        let buf = b"POST /set HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET";
        let (request, consumed) = complete(buf);
        assert_eq!(&*request.body, b"abc");
        assert_eq!(&buf[consumed..], b"GET");
    }

    #[test]
    fn partial_body_reports_expect_continue() {
        let buf = b"POST /set HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
        assert!(matches!(
            parse(buf, LIMITS),
            Ok(Parsed::Partial {
                expects_continue: true
            })
        ));
    }

    #[test]
    fn chunked_body_with_trailer() {
        let buf = b"POST /set HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\nrest";
        let (request, consumed) = complete(buf);
        assert_eq!(&*request.body, b"abcde");
        assert_eq!(&buf[consumed..], b"rest");
        let cut = b"POST /set HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab";
        assert!(matches!(parse(cut, LIMITS), Ok(Parsed::Partial { .. })));
    }

    #[test]
    fn limits_give_413_and_431() {
        let big = b"POST /set HTTP/1.1\r\nContent-Length: 33\r\n\r\n";
        assert_eq!(parse(big, LIMITS).unwrap_err().status, Status::ContentTooLarge);
        let chunked = b"POST /set HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n21\r\n";
        assert_eq!(
            parse(chunked, LIMITS).unwrap_err().status,
            Status::ContentTooLarge
        );
        let long_head = format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
        assert_eq!(
            parse(long_head.as_bytes(), LIMITS).unwrap_err().status,
            Status::HeaderFieldsTooLarge
        );
    }

    #[test]
    fn garbage_and_smuggling_are_refused() {
        assert_eq!(
            parse(b"\x01\x02 nonsense\r\n\r\n", LIMITS).unwrap_err().status,
            Status::BadRequest
        );
        let both = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(both, LIMITS).unwrap_err().status, Status::BadRequest);
    }

    #[test]
    fn query_decoding() {
        assert_eq!(query_param("key=a%20b+c", "key"), Ok(Some("a b c".to_string())));
        assert_eq!(
            query_param("x=1&key=%26%C3%A9", "key"),
            Ok(Some("&é".to_string()))
        );
        assert_eq!(query_param("x=1", "key"), Ok(None));
        assert_eq!(query_param("key=%2", "key"), Err(QueryError::BadPercentEncoding));
        assert_eq!(query_param("key=%zz", "key"), Err(QueryError::BadPercentEncoding));
        assert_eq!(query_param("key=%ff", "key"), Err(QueryError::NotUtf8));
    }

    #[test]
    fn a_chunked_body_arriving_in_pieces_is_decoded_once() {
        let mut raw = b"POST /set HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let head_len = raw.len();
        let body: Vec<u8> = (0..20_000u32)
            .map(|i| b'a' + u8::try_from(i % 26).unwrap())
            .collect();
        for byte in &body {
            raw.extend_from_slice(b"1\r\n");
            raw.push(*byte);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        let limits = Limits {
            max_head_bytes: 1024,
            max_body_bytes: 1 << 20,
        };
        let mut progress = ChunkedProgress::default();
        let mut examined = 0;
        // The bytes arrive 1,000 at a time, as reads would bring them.
        for end in (1000..raw.len()).step_by(1000) {
            assert!(matches!(
                parse_resuming(&raw[..end], limits, &mut progress),
                Ok(Parsed::Partial { .. })
            ));
            examined = progress.examined;
        }
        // Every chunk but the last few was looked at once, not once per read.
        assert!(examined <= raw.len() - head_len, "{examined} bytes examined");
        assert!(examined > raw.len() - head_len - 2000, "{examined}: not resumed");
        match parse_resuming(&raw, limits, &mut progress) {
            Ok(Parsed::Complete { request, consumed }) => {
                assert_eq!(consumed, raw.len());
                assert_eq!(&request.body[..], &body[..]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(progress.raw_decoded, 0, "reset once complete");
    }
}
