//! Writing HTTP/1.1 responses and their JSON bodies into a connection's output buffer.

use std::io::Write;

use crate::config::Durability;

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    TemporaryRedirect,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    Conflict,
    Gone,
    RequestTimeout,
    ContentTooLarge,
    HeaderFieldsTooLarge,
    InternalServerError,
    ServiceUnavailable,
    InsufficientStorage,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::TemporaryRedirect => 307,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::Conflict => 409,
            Status::Gone => 410,
            Status::RequestTimeout => 408,
            Status::ContentTooLarge => 413,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::ServiceUnavailable => 503,
            Status::InsufficientStorage => 507,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::TemporaryRedirect => "Temporary Redirect",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::Conflict => "Conflict",
            Status::Gone => "Gone",
            Status::RequestTimeout => "Request Timeout",
            Status::ContentTooLarge => "Content Too Large",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::InsufficientStorage => "Insufficient Storage",
        }
    }
}

/// A response before it is written: status, body, and the headers some answers carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
    /// Seconds for a `Retry-After` header (a 503 that will pass).
    pub retry_after: Option<u32>,
    /// The `Durability` header of a write's answer: the class that applied.
    pub durability: Option<Durability>,
    /// Cluster mode: where the leader is (`Location` gets the whole URL, `Leader` its address).
    pub leader: Option<(String, String)>,
}

impl Response {
    pub fn json(status: Status, body: Vec<u8>) -> Self {
        Response {
            status,
            content_type: "application/json",
            body,
            allow: None,
            retry_after: None,
            durability: None,
            leader: None,
        }
    }

    /// A `200` in the Prometheus text exposition format.
    pub fn prometheus_text(body: Vec<u8>) -> Self {
        Response {
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            ..Response::json(Status::Ok, body)
        }
    }

    /// `{"error":message}`.
    pub fn error(status: Status, message: &str) -> Self {
        let mut body = Vec::with_capacity(message.len() + 16);
        body.extend_from_slice(b"{\"error\":");
        push_json_string(&mut body, message);
        body.push(b'}');
        Response::json(status, body)
    }

    /// `{"error":message,"key":key}`.
    pub fn error_with_key(status: Status, message: &str, key: &str) -> Self {
        let mut body = Vec::with_capacity(message.len() + key.len() + 24);
        body.extend_from_slice(b"{\"error\":");
        push_json_string(&mut body, message);
        body.extend_from_slice(b",\"key\":");
        push_json_string(&mut body, key);
        body.push(b'}');
        Response::json(status, body)
    }

    /// Appends the status line, headers and body to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>, keep_alive: bool, http10: bool) {
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status.code(),
            self.status.reason(),
            self.content_type,
            self.body.len()
        );
        if let Some(allow) = self.allow {
            let _ = write!(out, "Allow: {allow}\r\n");
        }
        if let Some(durability) = self.durability {
            let _ = write!(out, "Durability: {}\r\n", durability.name());
        }
        if let Some((location, address)) = &self.leader {
            let _ = write!(out, "Location: {location}\r\nLeader: {address}\r\n");
        }
        if let Some(seconds) = self.retry_after {
            let _ = write!(out, "Retry-After: {seconds}\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }
}

/// Appends `text` as a JSON string literal.
pub fn push_json_string(out: &mut Vec<u8>, text: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// The framing of the complete answer at the start of `bytes`, if it is all there: its status,
/// the length of its head, and its whole length (head and `Content-Length` body). For this
/// crate's own clients (cluster nodes, the load generator), which only ever read this server's
/// answers.
pub fn answer_frame(bytes: &[u8]) -> std::io::Result<Option<(u16, usize, usize)>> {
    use std::io;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
    };
    let body = response
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-length"))
        .and_then(|header| {
            std::str::from_utf8(header.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "answer without Content-Length"))?;
    let status = response.code.unwrap_or(0);
    Ok((bytes.len() >= head + body).then_some((status, head, head + body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_complete_only_with_its_whole_body() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404";
        assert_eq!(answer_frame(&answer[..20]).unwrap(), None);
        assert_eq!(answer_frame(&answer[..40]).unwrap(), None);
        assert_eq!(answer_frame(answer).unwrap(), Some((200, 38, 43)));
        assert!(answer_frame(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(answer_frame(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn writes_headers_and_escapes() {
        let mut out = Vec::new();
        Response::error_with_key(Status::NotFound, "key not found", "a\"b").write_to(&mut out, true, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Connection: keep-alive\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"error\":\"key not found\",\"key\":\"a\\\"b\"}"));
        assert!(text.contains("Content-Length: 38\r\n"));
    }
}
