//! One keep-alive HTTP/1.1 connection to a peer on the serving ring, for Raft's RPCs: POST a
//! JSON body, read the answer's status and body. Reconnects on the next call after any failure.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

/// Answers larger than this are refused (a snapshot chunk is the largest, a few MiB as JSON).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// See the module documentation.
pub struct PeerClient {
    address: SocketAddr,
    /// `None` until connected, and after a failure.
    stream: Option<TcpStream>,
    received: Vec<u8>,
}

impl PeerClient {
    pub fn new(address: SocketAddr) -> Self {
        PeerClient {
            address,
            stream: None,
            received: Vec::new(),
        }
    }

    /// POSTs `body` to `path` and returns the answer's status and body, within `timeout`
    /// (connecting included). Any failure drops the connection.
    pub async fn post(&mut self, path: &str, body: &[u8], timeout: Duration) -> io::Result<(u16, Vec<u8>)> {
        match tokio::time::timeout(timeout, self.exchange(path, body)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                self.stream = None;
                Err(error)
            }
            Err(_) => {
                self.stream = None;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer from {} within {timeout:?}", self.address),
                ))
            }
        }
    }

    async fn exchange(&mut self, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.address).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.received.clear();
        }
        let stream = self.stream.as_ref().expect("connected above");
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.address,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        let (written, _) = stream.write_all(request).await;
        written?;
        loop {
            if let Some((status, head, length)) = parse(&self.received)? {
                let body = self.received[head..length].to_vec();
                self.received.drain(..length);
                return Ok((status, body));
            }
            if self.received.len() >= MAX_RESPONSE_BYTES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "answer too large"));
            }
            self.received.reserve((self.received.len()).max(16 << 10));
            let buf = std::mem::take(&mut self.received);
            let filled = buf.len();
            let capacity = buf.capacity();
            let (result, slice) = stream.read(buf.slice(filled..capacity)).await;
            self.received = slice.into_inner();
            if result? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection",
                ));
            }
        }
    }
}

/// The status, head length and total length of the complete answer at the start of `bytes`.
fn parse(bytes: &[u8]) -> io::Result<Option<(u16, usize, usize)>> {
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
        assert_eq!(parse(&answer[..40]).unwrap(), None);
        assert_eq!(parse(answer).unwrap(), Some((200, 38, 43)));
        assert!(parse(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
