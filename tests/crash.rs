//! Crash test: the real server under concurrent writes is SIGKILLed at a random moment; after a
//! restart every acknowledged write must be there (sled's kill loop, on a real process).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, TestServer};
use rand::Rng;
use serde_json::json;

const WRITERS: usize = 8;

/// One kill round: returns how many acknowledged writes were checked.
fn kill_round(dir: &std::path::Path, fsync: &str, round: usize) -> usize {
    let args = ["--fsync", fsync, "--wal-segment-bytes", "4194304"];
    let server = TestServer::start(dir, &args);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                // Bounded: at most this many writes, or until the server dies.
                for i in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let key = format!("r{round}-w{writer}-{i}");
                    let body = json!({"key": key, "value": i}).to_string();
                    let raw = format!(
                        "POST /set HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    // A dead server shows up as a failed send or a failed read; stop there.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        client.send_raw(raw.as_bytes());
                        client.read_response()
                    }));
                    match outcome {
                        Ok(response) if response.status == 200 => {
                            let version = response.json()["version"].as_u64().unwrap();
                            acknowledged.lock().unwrap().push((key, i, version));
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(150..600)));
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.join();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        !acknowledged.is_empty(),
        "no write was acknowledged before the kill"
    );
    let max_version = acknowledged.iter().map(|(_, _, v)| *v).max().unwrap();

    let server = TestServer::start(dir, &args);
    let mut client = server.connect();
    for (key, value, version) in &acknowledged {
        let got = client.get(key);
        assert_eq!(
            got.status, 200,
            "acknowledged write {key} lost after SIGKILL ({fsync})"
        );
        assert_eq!(
            got.json(),
            json!({"key": key, "value": value, "version": version})
        );
    }
    let after = client.set("after-restart", &json!(round)).json()["version"]
        .as_u64()
        .unwrap();
    assert!(
        after > max_version,
        "version {after} reused after restart (max acknowledged {max_version})"
    );
    server.kill();
    acknowledged.len()
}

fn kill_loop(fsync: &str, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for round in 0..rounds {
        checked += kill_round(dir.path(), fsync, round);
    }
    eprintln!("{fsync}: {rounds} kills, {checked} acknowledged writes all found");
}

#[test]
fn sigkill_under_group_commit_loses_no_acknowledged_write() {
    kill_loop("group", 4);
}

#[test]
fn sigkill_under_always_loses_no_acknowledged_write() {
    kill_loop("always", 3);
}

/// O_DIRECT writes are in the device once complete, so even the strategies that do not sync
/// before acknowledging survive a process kill (not a power failure).
#[test]
fn sigkill_under_never_loses_no_acknowledged_write() {
    kill_loop("never", 2);
}
