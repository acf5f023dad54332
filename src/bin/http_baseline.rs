//! The ceiling for ringkv's HTTP loop: the smallest useful tokio-uring server, answering every
//! request with one fixed 200 response of the same shape as a GET hit. Used only by the
//! benchmarks (BENCHMARKS.md) to express ringkv's request rate as a fraction of it.
//!
//! Usage: `http_baseline [ADDR]` (default 127.0.0.1:8090).

use std::net::SocketAddr;

use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 52\r\n\r\n{\"key\":\"bench-key\",\"value\":\"xxxxxxxxxx\",\"version\":1}";

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_string())
        .parse()
        .expect("address like 127.0.0.1:8090");
    let listener = std::net::TcpListener::bind(addr).expect("bind");
    ringkv::io::ring::start(256, async move {
        let listener = TcpListener::from_std(listener);
        eprintln!("http_baseline listening on {addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio_uring::spawn(serve(stream));
        }
    });
}

/// Answers each complete request head (`\r\n\r\n`) with the fixed response; bodies are not
/// expected (GET only).
async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut input = Vec::with_capacity(16 << 10);
    let mut output = Vec::with_capacity(16 << 10);
    loop {
        let (len, capacity) = (input.len(), input.capacity());
        let (read, slice) = stream.read(input.slice(len..capacity)).await;
        input = slice.into_inner();
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut start = 0;
        while let Some(end) = input[start..].windows(4).position(|w| w == b"\r\n\r\n") {
            output.extend_from_slice(RESPONSE);
            start += end + 4;
        }
        input.drain(..start);
        if input.capacity() == input.len() {
            input.reserve(16 << 10);
        }
        if !output.is_empty() {
            let (written, buf) = stream.write_all(output).await;
            output = buf;
            output.clear();
            if written.is_err() {
                return;
            }
        }
    }
}
