//! A bug crashes the server, never hangs it: a panic planted (`RINGKV_PANIC_ON_KEY`, see
//! `src/panic_trigger.rs`) on the serving ring, in the WAL committer or on the background ring
//! ends the process with a non-zero exit and a log line naming the panic. A restart then finds
//! every acknowledged write. Before the abort hook, a panic on the background ring left the
//! server running with writes waiting forever once the memtables were full.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use common::TestServer;
use serde_json::json;

/// Writes `before` keys, then the planted key and fillers until the server dies; checks how it
/// died, restarts it and reads back every acknowledged write.
fn planted_panic_ends_the_process(place: &str) {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB memtables, so that the fillers after the planted key fill its memtable and a flush
    // starts (the background place).
    let args = ["--memtable-bytes", "65536"];
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringkv"));
    command.env("RINGKV_PANIC_ON_KEY", format!("{place}:planted"));
    let server = TestServer::start_command(dir.path(), command, &args);
    let mut client = server.connect();
    let value = json!("v".repeat(1000));
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        let key = format!("before{i}");
        assert_eq!(client.set(&key, &value).status, 200, "{key}");
        acknowledged.push(key);
    }
    // Each request on a new connection: the one that dies with the process fails alone.
    let addr = server.addr;
    let mut keys = std::iter::once("planted".to_string()).chain((0..1000).map(|i| format!("after{i}")));
    let died_at = loop {
        let Some(key) = keys.next() else {
            panic!("the server outlived 1,000 writes after the planted key")
        };
        let sent = std::panic::catch_unwind(|| common::Client::connect(addr).set(&key, &value).status);
        match sent {
            Ok(200) => acknowledged.push(key),
            Ok(status) => panic!("{key}: status {status}"),
            Err(_) => break key,
        }
    };
    let (status, log) = server.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "{place}: exit {status:?}");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{place}: {status:?}");
    let line = log
        .iter()
        .find(|line| line.starts_with("ringkv: panic on thread"))
        .unwrap_or_else(|| panic!("{place}: no panic line in {log:#?}"));
    assert!(line.contains("RINGKV_PANIC_ON_KEY"), "{line}");
    eprintln!(
        "{place}: died at {died_at} after {} acknowledged writes: {line}",
        acknowledged.len()
    );
    if place == "serving" || place == "wal" {
        assert_eq!(died_at, "planted", "{place}: the planted write itself fails");
    }

    let server = TestServer::start(dir.path(), &args);
    let mut client = server.connect();
    for key in &acknowledged {
        let found = client.get(key);
        assert_eq!(found.status, 200, "{place}: {key} lost");
        assert_eq!(found.json()["value"], value, "{place}: {key}");
    }
    let (status, _) = server.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_panic_on_the_serving_ring_aborts_and_a_restart_loses_nothing() {
    planted_panic_ends_the_process("serving");
}

#[test]
fn a_panic_in_the_wal_committer_aborts_and_a_restart_loses_nothing() {
    planted_panic_ends_the_process("wal");
}

#[test]
fn a_panic_on_the_background_ring_aborts_and_a_restart_loses_nothing() {
    planted_panic_ends_the_process("background");
}
