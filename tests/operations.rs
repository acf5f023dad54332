//! Operating the process: refusing a taken port or a held data directory, and a clean SIGTERM.

mod common;

use std::process::Command;

use common::TestServer;
use serde_json::json;

#[test]
fn a_taken_port_ends_the_program_with_a_clear_message() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already in use"), "{stderr}");
}

#[test]
fn a_second_server_on_the_same_port_is_refused_despite_so_reuseport() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestServer::start(dir.path(), &[]);
    let other_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["--listen", &first.addr.to_string(), "--data-dir"])
        .arg(other_dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already in use"));
}

#[test]
fn a_held_data_directory_ends_the_program_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let _first = TestServer::start(dir.path(), &[]);
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another ringkv"), "{stderr}");
}

#[test]
fn sigterm_finishes_syncs_and_exits_zero_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    // `never` only syncs at shutdown: the clean exit is what makes these writes durable.
    let server = TestServer::start(dir.path(), &["--fsync", "never"]);
    let mut client = server.connect();
    for i in 0..100 {
        assert_eq!(client.set(&format!("k{i}"), &json!(i)).status, 200);
    }
    let idle = server.connect();
    let (status, log) = server.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "exit status {status:?}, log {log:?}");
    assert!(log.iter().any(|line| line.contains("WAL synced")), "{log:?}");
    drop(idle);

    let server = TestServer::start(dir.path(), &[]);
    let mut client = server.connect();
    for i in 0..100 {
        assert_eq!(client.get(&format!("k{i}")).json()["value"], i);
    }
    let (status, _) = server.signal_and_wait(libc::SIGINT);
    assert!(status.success());
}

#[test]
fn periodic_strategy_serves_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--fsync", "periodic:5"]);
    let mut client = server.connect();
    assert_eq!(client.set("p", &json!("v")).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(50));
    server.kill();
    let server = TestServer::start(dir.path(), &[]);
    assert_eq!(server.connect().get("p").json()["value"], "v");
}

#[test]
fn bad_flags_are_refused_with_help() {
    for args in [
        &["--fsync", "sometimes"][..],
        &["--fsync", "periodic:x"],
        &["--wal-segment-bytes", "1000"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--fsync",
        "--memtable-bytes",
        "--compaction-trigger",
        "--max-key-bytes",
        "--max-value-bytes",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}
