//! The load generator against a real server: what it reports matches what the server stored,
//! the open loop sends on its schedule, and the matrix writes its report, figures and plots.

mod common;

use std::process::Command;

use common::TestServer;
use serde_json::Value;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringkv-bench"))
        .args(args)
        .output()
        .expect("run ringkv-bench")
}

/// 400 requests/s over 4 connections for 1 s after a 250 ms warm-up.
#[rustfmt::skip]
const OPEN_LOOP_AT_400: [&str; 10] = [
    "-c", "4", "--rate", "400", "-d", "1s", "--warmup", "250ms", "--mix", "set:1,get:1",
];

/// `ringkv-bench run` against `server`, with a JSON report on stdout.
fn run_command(server: &TestServer, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringkv-bench"));
    command
        .args([
            "run",
            "--target",
            &server.addr.to_string(),
            "--json",
            "-",
            "--quiet",
        ])
        .args(args);
    command
}

fn report_of(output: std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON report")
}

fn run_json(server: &TestServer, args: &[&str]) -> Value {
    report_of(run_command(server, args).output().expect("run ringkv-bench"))
}

#[test]
fn a_closed_loop_reports_what_the_server_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    // 50 keys, sets only: after the run every key holds a 64-byte value.
    let report = run_json(
        &server,
        &[
            "-c",
            "4",
            "-d",
            "1s",
            "--mix",
            "set:1",
            "--keys",
            "50",
            "--value-bytes",
            "64",
        ],
    );
    let total = &report["total"];
    let requests = total["requests"].as_u64().unwrap();
    assert!(requests > 200, "{report}");
    assert_eq!(total["ok"].as_u64(), Some(requests));
    assert_eq!(total["errors"].as_u64(), Some(0));
    assert!(total["p50_us"].as_u64().unwrap() <= total["p99_us"].as_u64().unwrap());
    assert!(total["p99_us"].as_u64().unwrap() <= total["max_us"].as_u64().unwrap());
    let mut client = server.connect();
    for key in 0..50 {
        let got = client.get(&format!("k{key:010}"));
        assert_eq!(got.status, 200, "key {key} was never set");
        assert_eq!(got.json()["value"].as_str().unwrap().len(), 64);
    }
    // Gets and deletes of the same keys: found ones are ok, absent ones 404, none are errors.
    let report = run_json(
        &server,
        &["-c", "2", "-d", "500ms", "--mix", "get:5,del:5", "--keys", "50"],
    );
    let ops: Vec<&str> = report["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op[0].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["get", "del"]);
    let total = &report["total"];
    assert!(total["not_found"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(total["errors"].as_u64(), Some(0));
}

#[test]
fn an_open_loop_sends_on_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    // Exactly the requests due in the measured second are counted, however fast the server
    // answers.
    let report = run_json(&server, &OPEN_LOOP_AT_400);
    assert_eq!(report["mode"], "open");
    // A stall longer than the catch-up limit leaves some never sent; they are reported as such.
    let requests = report["total"]["requests"].as_u64().unwrap() + report["unsent"].as_u64().unwrap();
    assert!((396..=404).contains(&requests), "{requests} requests: {report}");
}

/// Runs a 400 requests/s open loop (1 s after a 250 ms warm-up) while the server is stopped with
/// SIGSTOP from about 0.9 s after the start, for `stall`: across the end of the measured window.
fn open_loop_with_a_stall_at_the_end(stall: std::time::Duration) -> Value {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let child = run_command(&server, &OPEN_LOOP_AT_400)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ringkv-bench");
    std::thread::sleep(Duration::from_millis(900));
    let pid = server.pid();
    ringkv::sys::send_signal(pid, libc::SIGSTOP).expect("stop the server");
    std::thread::sleep(stall);
    ringkv::sys::send_signal(pid, libc::SIGCONT).expect("resume the server");
    report_of(child.wait_with_output().unwrap())
}

#[test]
fn an_open_loop_sends_late_what_a_stall_at_the_end_delayed() {
    // The stall covers the last ~350 ms of the window and ends ~450 ms after it: the ~140
    // requests due meanwhile go out late, are counted, and are charged from their due time.
    let report = open_loop_with_a_stall_at_the_end(std::time::Duration::from_millis(800));
    let total = &report["total"];
    let requests = total["requests"].as_u64().unwrap();
    assert!((396..=404).contains(&requests), "{requests} requests: {report}");
    assert_eq!(report["unsent"], 0, "{report}");
    assert!(total["max_us"].as_u64().unwrap() >= 300_000, "{report}");
    // Throughput runs to the last answer, after the stall: below the schedule's 400/s.
    assert!(total["ops_per_sec"].as_f64().unwrap() < 380.0, "{report}");
}

#[test]
fn an_open_loop_far_behind_at_the_end_counts_what_it_never_sent() {
    // A stall 2.5 s long: past the end of the window plus the 1 s catch-up limit. The loop stops
    // and reports the requests due in the window it never sent; with those answered, all 400.
    let report = open_loop_with_a_stall_at_the_end(std::time::Duration::from_millis(2500));
    let requests = report["total"]["requests"].as_u64().unwrap();
    let unsent = report["unsent"].as_u64().unwrap();
    assert!(unsent >= 50, "{unsent} unsent: {report}");
    assert!(
        (396..=404).contains(&(requests + unsent)),
        "{requests} answered + {unsent} unsent: {report}"
    );
}

#[test]
fn a_refused_connection_is_an_error_not_a_result() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let output = bench(&["run", "--target", &addr, "-d", "1s", "-q"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to"), "{stderr}");
}

#[test]
fn the_matrix_writes_report_figures_and_plots() {
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let output = bench(&[
        "matrix",
        &format!("--server={}", env!("CARGO_BIN_EXE_ringkv")),
        &format!("--out={}", out.path().display()),
        &format!("--data-root={}", data.path().display()),
        "--duration=300ms",
        "--warmup=0s",
        "--connections=1,4",
        "--strategies=group,never",
        "--mechanisms=direct+fdatasync,buffered+dsync",
        "--no-references",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    let runs = results["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2 * 2 * 2);
    for run in runs {
        assert!(run["report"]["total"]["requests"].as_u64().unwrap() > 0, "{run}");
        assert_eq!(run["report"]["total"]["errors"].as_u64(), Some(0), "{run}");
    }
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(report.contains("| group | buffered+dsync | 4 |"), "{report}");
    // Three rounds by default: every cell lists the ops/s of each.
    assert_eq!(results["all_runs"].as_array().unwrap().len(), 3 * runs.len());
    assert!(report.contains("not measured in this run"), "{report}");
    for strategy in ["group", "never"] {
        let svg = std::fs::read_to_string(out.path().join(format!("latency-{strategy}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{strategy}");
        assert!(svg.contains("direct+fdatasync"), "{strategy}: legend");
    }
    // The servers' data directories are cleaned up.
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}
