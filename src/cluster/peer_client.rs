//! One keep-alive HTTP/1.1 connection to a peer on the serving ring, for Raft's RPCs: POST a
//! JSON body, read the answer's status and body. Reconnects on the next call after any failure.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

use crate::http::response::answer_frame;

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
            if let Some((status, head, length)) = answer_frame(&self.received)? {
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
