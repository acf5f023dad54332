//! One keep-alive HTTP/1.1 connection on the thread's `io_uring`: send a request, read its answer.

use std::io;
use std::net::SocketAddr;

use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

/// Answers bigger than this are refused (the API's largest answer is a value at the server's
/// limit, 1 MiB by default).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

pub struct Connection {
    stream: TcpStream,
    /// Received bytes not yet consumed; `len()` is how many.
    received: Vec<u8>,
}

impl Connection {
    pub async fn connect(addr: SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            received: Vec::with_capacity(16 << 10),
        })
    }

    /// Sends `request` (whole HTTP requests) and waits for one answer; returns its status and
    /// gives the request buffer back for reuse.
    pub async fn exchange(&mut self, request: Vec<u8>) -> (io::Result<u16>, Vec<u8>) {
        let (written, request) = self.stream.write_all(request).await;
        if let Err(error) = written {
            return (Err(error), request);
        }
        (self.read_response().await, request)
    }

    async fn read_response(&mut self) -> io::Result<u16> {
        loop {
            if let Some((status, length)) = parse(&self.received)? {
                self.received.drain(..length);
                return Ok(status);
            }
            if self.received.len() == self.received.capacity() {
                if self.received.len() >= MAX_RESPONSE_BYTES {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "answer too large"));
                }
                self.received.reserve(self.received.len());
            }
            let buf = std::mem::take(&mut self.received);
            let filled = buf.len();
            let capacity = buf.capacity();
            let (result, slice) = self.stream.read(buf.slice(filled..capacity)).await;
            self.received = slice.into_inner();
            if result? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
        }
    }
}

/// The status and total length of the complete answer at the start of `bytes`, if it is all there.
fn parse(bytes: &[u8]) -> io::Result<Option<(u16, usize)>> {
    Ok(ringkv::http::response::answer_frame(bytes)?.map(|(status, _, length)| (status, length)))
}
