//! Leveled logs through `tracing`: `--log-format json` writes one JSON object per line (the
//! start-up line included, as an event), each flush and compaction is an event with its figures,
//! and requests write no line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn json_logs_are_one_object_per_line_with_flushes_and_no_request_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--memtable-bytes",
            "64KiB",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, log) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let parse = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
    };
    let first = parse(&log.recv_timeout(Duration::from_secs(30)).unwrap());
    let message = first["fields"]["message"].as_str().unwrap();
    assert!(message.starts_with("ringkv listening on 127.0.0.1:"), "{first}");
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["fields"]["ready"], true);
    let addr: std::net::SocketAddr = message
        .trim_start_matches("ringkv listening on ")
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // 600 writes of 1 KB: several flushes of 64 KiB memtables (`never`: no sync to wait for).
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let value = "v".repeat(1000);
    for i in 0..600 {
        use std::io::{Read, Write};
        let body = format!(r#"{{"key":"k{i}","value":"{value}"}}"#);
        // One write per request (several small ones would wait for Nagle's algorithm).
        let request = format!(
            "POST /set?durability=never HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = [0u8; 512];
        let n = stream.read(&mut answer).unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer[..n])
        );
    }
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !events
            .iter()
            .any(|e: &serde_json::Value| e["fields"]["message"] == "flush done")
    {
        if let Ok(line) = log.recv_timeout(Duration::from_millis(100)) {
            events.push(parse(&line));
        }
    }
    let flush = events
        .iter()
        .find(|e| e["fields"]["message"] == "flush done")
        .unwrap_or_else(|| panic!("no flush event: {events:?}"));
    assert!(flush["fields"]["bytes_written"].as_u64().unwrap() > 0, "{flush}");
    assert!(flush["fields"]["duration_ms"].is_u64(), "{flush}");
    ringkv::sys::send_signal(child.id(), libc::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(100));
    events.extend(log.try_iter().map(|line| parse(&line)));
    // Events, not one line per request: 600 writes, a few dozen lines at most.
    assert!(events.len() < 50, "{} lines for 600 requests", events.len());
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "stopped; WAL synced"),
        "{events:?}"
    );
}
