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

/// Sends `set slow{i}` with a 1 MB value in pieces of 100 KB, `pause` apart, on a new
/// connection; stops sending if the server closes. The connection, to read the answer from.
fn send_slowly(addr: std::net::SocketAddr, i: usize, pause: Duration) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let body = format!("{{\"key\":\"slow{i}\",\"value\":\"{}\"}}", "s".repeat(1_000_000));
    let head = format!(
        "POST /set HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    for piece in body.as_bytes().chunks(100_000) {
        if stream.write_all(piece).is_err() {
            break;
        }
        std::thread::sleep(pause);
    }
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream
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

/// Clients that pipeline thousands of GETs of a 1 MB value and never read, and clients that
/// send 1 MB bodies slowly, beside a well-behaved client: answers are written out once 256 KiB
/// wait (so a client that does not read holds about that plus one answer, until
/// `--request-timeout` cuts it), and the server's peak resident memory stays under a bound while
/// the well-behaved client keeps being served. Answering every pipelined request before
/// writing held every answer: about 400 MB per client that never reads.
#[test]
fn clients_that_never_read_or_send_slowly_keep_memory_bounded() {
    const HOGS: usize = 10;
    const SLOW_SENDERS: usize = 10;
    const BOUND_MIB: u64 = 256;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--request-timeout", "3s"]);
    let mut client = server.connect();
    let big = serde_json::json!("b".repeat(1_000_000));
    assert_eq!(client.set("big", &big).status, 200);
    let addr = server.addr;
    let hogs: Vec<TcpStream> = (0..HOGS)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            let requests = "GET /get?key=big HTTP/1.1\r\nHost: t\r\n\r\n".repeat(2000);
            stream.write_all(requests.as_bytes()).unwrap();
            stream
        })
        .collect();
    let senders: Vec<_> = (0..SLOW_SENDERS)
        .map(|i| {
            std::thread::spawn(move || {
                let mut stream = send_slowly(addr, i, Duration::from_millis(100));
                read_status(&mut stream)
            })
        })
        .collect();
    // The well-behaved client, meanwhile.
    let begun = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    let mut served = 0;
    while begun.elapsed() < Duration::from_secs(2) {
        let asked = std::time::Instant::now();
        assert_eq!(
            client
                .set(&format!("good{served}"), &serde_json::json!(served))
                .status,
            200
        );
        assert_eq!(client.get(&format!("good{served}")).status, 200);
        slowest = slowest.max(asked.elapsed());
        served += 1;
    }
    for sender in senders {
        assert_eq!(sender.join().unwrap(), 200);
    }
    let peak = peak_resident_mib(server.pid());
    eprintln!(
        "{HOGS} clients pipelining 2,000 GETs of 1 MB without reading, {SLOW_SENDERS} sending 1 MB bodies over 1 s: peak resident {peak} MiB (bound {BOUND_MIB}); the well-behaved client made {served} set+get pairs, slowest {slowest:?}"
    );
    assert!(peak < BOUND_MIB, "peak resident {peak} MiB");
    assert!(served > 20, "the well-behaved client was starved: {served}");
    drop(hogs);
}

/// The global budget (`--max-buffered-bytes`): with 4 MiB for all connections, ten clients
/// sending 1 MB bodies slowly cannot all be buffered at once. Each gets an answer (200, or 408
/// for one that waited past its deadline for buffers), none hangs, peak memory stays small,
/// and a client with small requests is served throughout.
#[test]
fn the_buffer_budget_holds_slow_large_requests_back_and_small_ones_go_on() {
    const SENDERS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &["--request-timeout", "3s", "--max-buffered-bytes", "4194304"],
    );
    let addr = server.addr;
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            std::thread::spawn(move || {
                let mut stream = send_slowly(addr, i, Duration::from_millis(50));
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
                String::from_utf8_lossy(&answer)
                    .get(9..12)
                    .map(ToString::to_string)
            })
        })
        .collect();
    let mut client = server.connect();
    let begun = std::time::Instant::now();
    let mut served = 0;
    while begun.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            client
                .set(&format!("small{served}"), &serde_json::json!(served))
                .status,
            200
        );
        served += 1;
    }
    let answers: Vec<Option<String>> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    let peak = peak_resident_mib(server.pid());
    eprintln!("budget 4 MiB, {SENDERS} slow 1 MB bodies: answers {answers:?}; peak resident {peak} MiB; {served} small writes meanwhile");
    for answer in &answers {
        assert!(matches!(answer.as_deref(), Some("200" | "408")), "{answers:?}");
    }
    assert!(answers.iter().any(|a| a.as_deref() == Some("200")), "{answers:?}");
    assert!(served > 20, "small requests starved: {served}");
    assert!(peak < 128, "peak resident {peak} MiB");
}
