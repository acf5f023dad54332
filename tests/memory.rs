//! Memory stays bounded however clients behave, measured from `/proc` on the real server
//! (`VmHWM`, the peak resident set, so a spike between samples is not missed).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::TestServer;

/// Peak resident memory of `pid`, in MiB.
fn peak_resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib >> 10
}

/// Reads one `Content-Length`-framed answer off `stream`; its status.
fn read_status(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    head[9..12].parse().unwrap()
}

/// A thousand writers at once under `always`: each write is queued with its own WAL batch, and
/// each batch's buffer is sized for its record, not for `--wal-batch-bytes` (1 MiB): a
/// thousand of those were a gigabyte, zeroed and so resident.
#[test]
fn a_thousand_concurrent_writers_under_always_keep_memory_bounded() {
    const WRITERS: usize = 1000;
    const BOUND_MIB: u64 = 128;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--fsync", "always"]);
    let mut streams: Vec<TcpStream> = (0..WRITERS)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    for round in 0..3 {
        // Every writer's request is sent before any answer is read: all are queued at once.
        for (i, stream) in streams.iter_mut().enumerate() {
            let body = format!("{{\"key\":\"r{round}w{i}\",\"value\":\"{}\"}}", "v".repeat(100));
            let request = format!(
                "POST /set HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).unwrap();
        }
        for stream in &mut streams {
            stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            assert_eq!(read_status(stream), 200);
        }
    }
    let peak = peak_resident_mib(server.pid());
    eprintln!(
        "{WRITERS} concurrent writers under always, 3 rounds: peak resident {peak} MiB (bound {BOUND_MIB})"
    );
    assert!(peak < BOUND_MIB, "peak resident {peak} MiB");
}
