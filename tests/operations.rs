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
fn a_restart_right_after_kill_9_gets_the_same_port() {
    // The kernel releases a killed server's listening socket only once it has torn down the
    // server's io_uring (where an accept was pending); a restart must wait for that, not fail.
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    for round in 0..3 {
        let server = TestServer::start_at(dir.path(), &listen, &[]);
        let written = server.connect().set("k", &json!(round));
        assert_eq!(written.status, 200);
        server.kill();
    }
    let server = TestServer::start_at(dir.path(), &listen, &[]);
    assert_eq!(server.connect().get("k").json()["value"], json!(2));
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
        &["--wal-io", "mmap"],
        &["--sync-call", "osync"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
    }
    // Options that parse but cannot work together: refused before anything is opened.
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args([
            "--wal-segment-bytes",
            "4096",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WAL segment size 4096 is too small"), "{stderr}");
    let help = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--fsync",
        "--wal-io",
        "--sync-call",
        "--memtable-bytes",
        "--compaction-trigger",
        "--max-key-bytes",
        "--max-value-bytes",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

/// The open flags of each descriptor the server holds on its current WAL segment (the newest
/// `wal-*.log` it has open; the spare being prepared has a higher number but is opened once, as
/// is a segment without `dsync`), as the kernel reports them in `/proc/PID/fdinfo` (octal).
fn wal_open_flags(pid: u32) -> Vec<i32> {
    let mut by_segment: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let name = target
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("wal-") && name.ends_with(".log") {
            let fd = entry.file_name().to_string_lossy().into_owned();
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
            let flags = info
                .lines()
                .find_map(|line| line.strip_prefix("flags:"))
                .unwrap()
                .trim();
            by_segment
                .entry(name)
                .or_default()
                .push(i32::from_str_radix(flags, 8).unwrap());
        }
    }
    // The segment being written is the lowest open one (the spare is the next number).
    by_segment
        .into_values()
        .next()
        .unwrap_or_else(|| panic!("no WAL segment open in process {pid}"))
}

/// The mechanism flags reach the kernel: the segment the server writes is opened with exactly
/// the `O_DIRECT` the flags ask for, and under `dsync` a second time with `O_DSYNC` (durable
/// writes go through that one, the others through the plain one); each combination serves and
/// recovers.
#[test]
fn wal_mechanism_flags_set_the_segment_open_flags() {
    for (args, direct, dsync) in [
        (
            &["--wal-io", "direct", "--sync-call", "fdatasync"][..],
            true,
            false,
        ),
        (&["--wal-io", "buffered", "--sync-call", "fsync"], false, false),
        (&["--wal-io", "direct", "--sync-call", "dsync"], true, true),
        (&["--wal-io", "buffered", "--sync-call", "dsync"], false, true),
        // The default is dsync under every strategy: any request may ask for a durable write.
        (&["--fsync", "group"], true, true),
        (&["--fsync", "always"], true, true),
        (&["--fsync", "periodic:1000"], true, true),
        (&["--fsync", "never"], true, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let wal_io = args.join(" ");
        let wal_io = wal_io.as_str();
        let server = TestServer::start(dir.path(), args);
        let mut client = server.connect();
        assert_eq!(client.set("m", &json!(wal_io)).status, 200);
        let flags = wal_open_flags(server.pid());
        let shown: Vec<String> = flags.iter().map(|f| format!("{f:o}")).collect();
        for flag in &flags {
            assert_eq!(flag & libc::O_DIRECT != 0, direct, "{args:?}: flags {shown:?}");
        }
        let with_dsync = flags.iter().filter(|&&f| f & libc::O_DSYNC != 0).count();
        let plain = flags.len() - with_dsync;
        assert_eq!(
            (with_dsync, plain),
            (usize::from(dsync), 1),
            "{args:?}: flags {shown:?}"
        );
        server.kill();
        let server = TestServer::start(dir.path(), args);
        assert_eq!(server.connect().get("m").json()["value"], wal_io, "{args:?}");
    }
}
