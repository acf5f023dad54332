//! `GET /metrics` over real sockets to the real server, parsed with a real text-format parser
//! (the `prometheus-parse` crate): every documented family is there with its type, and the
//! counters move as a known workload says they must.

mod common;

use std::collections::HashMap;
use std::io::BufRead;

use common::{set_request, Client, TestServer};
use prometheus_parse::{Scrape, Value};

/// One scrape, parsed.
struct Page {
    scrape: Scrape,
    text: String,
}

impl Page {
    fn fetch(client: &mut Client) -> Page {
        let answer = client.request("GET", "/metrics", None);
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = String::from_utf8(answer.body.clone()).expect("the page is UTF-8");
        let scrape = Scrape::parse(text.as_bytes().lines()).expect("the page parses");
        Page { scrape, text }
    }

    /// The value of the sample `name` whose labels include `labels` (counters and gauges).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => panic!("{name} is a histogram"),
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}\n{}", self.text);
        found[0]
    }

    /// As [`Page::value`], 0 when there is no such sample yet (a counter with labels appears with
    /// its first event).
    fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let present = self
            .scrape
            .samples
            .iter()
            .any(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
        if present {
            self.value(name, labels)
        } else {
            0.0
        }
    }

    /// A histogram's buckets (upper bound, cumulative count).
    fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let found: Vec<Vec<(f64, f64)>> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .filter_map(|s| match &s.value {
                Value::Histogram(buckets) => Some(buckets.iter().map(|b| (b.less_than, b.count)).collect()),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}\n{}", self.text);
        found[0].clone()
    }

    /// Observations in a histogram (its `+Inf` bucket).
    fn observations(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.buckets(name, labels).last().expect("a +Inf bucket").1
    }

    fn types(&self) -> HashMap<String, String> {
        self.text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_once(' '))
            .map(|(name, kind)| (name.to_string(), kind.to_string()))
            .collect()
    }
}

/// Writes per class in the sequential test.
const N: usize = 50;
const CONNECTIONS: usize = 64;
const PER_CONNECTION: usize = 30;

fn set(client: &mut Client, key: &str, durability: &str) {
    let body = format!(r#"{{"key":"{key}","value":"v"}}"#);
    let answer = client.request("POST", &format!("/set?durability={durability}"), Some(&body));
    assert_eq!(answer.status, 200, "{key}");
}

#[test]
fn every_documented_family_is_there_with_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut client = server.connect();
    set(&mut client, "a", "always");
    let page = Page::fetch(&mut client);
    let types = page.types();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    // Every family on the page is documented, with its type; every documented one is on the page.
    for (name, kind) in &types {
        assert!(
            docs.contains(&format!("| `{name}` | {kind} |")),
            "{name} ({kind}) is not in docs/metrics.md"
        );
    }
    // Cluster mode's families are on a cluster node's page only (`tests/cluster.rs` checks them).
    let single_node_docs = docs.split("\n## Cluster mode").next().unwrap();
    let documented: Vec<&str> = single_node_docs
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("ringkv_") || name.starts_with("process_"))
        .collect();
    assert!(documented.len() > 30, "{documented:?}");
    for name in documented {
        assert!(
            types.contains_key(name),
            "{name} is documented but not on the page"
        );
    }
    // Buckets from 1 µs to 10 s, with the durability label on writes.
    let buckets = page.buckets(
        "ringkv_request_duration_seconds",
        &[("op", "set"), ("durability", "always")],
    );
    assert_eq!(buckets.first().map(|b| b.0), Some(0.000_001));
    assert!(buckets.iter().any(|b| b.0 == 10.0));
    assert_eq!(buckets.last().map(|b| b.1), Some(1.0));
    assert!(page.value("process_resident_memory_bytes", &[]) > 1e6);
    assert!(page.value("process_open_fds", &[]) > 3.0);
    assert!(page.value("process_start_time_seconds", &[]) > 1.7e9);
}

#[test]
fn always_writes_each_take_a_sync_and_never_writes_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--fsync", "group"]);
    let mut client = server.connect();
    let before = Page::fetch(&mut client);
    for i in 0..N {
        set(&mut client, &format!("always-{i}"), "always");
    }
    let after_always = Page::fetch(&mut client);
    let syncs = |page: &Page| page.value("ringkv_wal_syncs_total", &[]);
    assert!(
        syncs(&after_always) - syncs(&before) >= N as f64,
        "{N} always writes, {} syncs",
        syncs(&after_always) - syncs(&before)
    );
    let acks = |page: &Page, class| {
        page.observations(
            "ringkv_request_duration_seconds",
            &[("op", "set"), ("durability", class)],
        )
    };
    assert_eq!(acks(&after_always, "always") - acks(&before, "always"), N as f64);
    let sets = |page: &Page| page.value_or_zero("ringkv_requests_total", &[("op", "set"), ("code", "200")]);
    assert_eq!(sets(&after_always) - sets(&before), N as f64);
    assert_eq!(
        after_always.value("ringkv_wal_durable_sequence", &[]),
        after_always.value("ringkv_wal_written_sequence", &[])
    );

    // Never writes: written, not synced; the exposure window opens.
    for i in 0..N {
        set(&mut client, &format!("never-{i}"), "never");
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    let after_never = Page::fetch(&mut client);
    assert_eq!(
        syncs(&after_never),
        syncs(&after_always),
        "never writes made a sync"
    );
    let written = after_never.value("ringkv_wal_written_sequence", &[]);
    let durable = after_never.value("ringkv_wal_durable_sequence", &[]);
    assert_eq!(written - durable, N as f64);
    assert!(after_never.value("ringkv_wal_unsynced_bytes", &[]) > 0.0);
    assert!(after_never.value("ringkv_wal_exposure_seconds", &[]) >= 0.02);

    // One group write makes every write before it durable, and the window closes.
    set(&mut client, "group", "group");
    let after_group = Page::fetch(&mut client);
    assert_eq!(
        after_group.value("ringkv_wal_durable_sequence", &[]),
        after_group.value("ringkv_wal_written_sequence", &[])
    );
    assert_eq!(after_group.value("ringkv_wal_unsynced_bytes", &[]), 0.0);
    assert_eq!(after_group.value("ringkv_wal_exposure_seconds", &[]), 0.0);
}

#[test]
fn group_writes_from_64_connections_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--fsync", "group"]);
    let before = Page::fetch(&mut server.connect());
    std::thread::scope(|scope| {
        for c in 0..CONNECTIONS {
            let mut client = server.connect();
            scope.spawn(move || {
                for i in 0..PER_CONNECTION {
                    set(&mut client, &format!("c{c}-{i}"), "group");
                }
            });
        }
    });
    let after = Page::fetch(&mut server.connect());
    let writes = (CONNECTIONS * PER_CONNECTION) as f64;
    let delta = |name: &str| after.value(name, &[]) - before.value(name, &[]);
    let syncs = delta("ringkv_wal_syncs_total");
    assert!(
        syncs > 0.0 && syncs < writes,
        "{writes} group writes, {syncs} syncs"
    );
    // Every record went in some batch: the batches' records add up to at least the writes.
    let records: f64 = after
        .scrape
        .samples
        .iter()
        .filter(|s| s.metric == "ringkv_wal_batch_records_sum")
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(
        records >= writes,
        "{records} records in batches for {writes} writes"
    );
    assert!(delta("ringkv_connections_accepted_total") >= CONNECTIONS as f64);
    // The writers' connections close (the server sees each end of stream); the scraper's stays.
    let mut scraper = server.connect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while Page::fetch(&mut scraper).value("ringkv_connections_open", &[]) != 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "writers' connections still open"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Keys written in the recycling test.
const KEYS: usize = 3000;

#[test]
fn retired_wal_segments_are_recycled_and_what_went_through_them_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--fsync",
        "group",
        "--wal-segment-bytes",
        "256KiB",
        "--memtable-bytes",
        "256KiB",
        "--wal-recycle-segments",
        "2",
        "--max-value-bytes",
        "4KiB",
    ];
    let server = TestServer::start(dir.path(), &args);
    let mut client = server.connect();
    let value = serde_json::json!("r".repeat(1000));
    // About 3 MiB of records: a dozen segments, each retired by a flush soon after it fills.
    for i in 0..KEYS {
        assert_eq!(client.set(&format!("key-{i}"), &value).status, 200);
    }
    let page = Page::fetch(&mut client);
    let recycled = page.value("ringkv_wal_segments_recycled_total", &[]);
    let created = page.value("ringkv_wal_segments_created_total", &[]);
    assert!(recycled >= 4.0, "{recycled} segments recycled, {created} created");
    assert_eq!(
        page.value("ringkv_wal_zero_bytes_total", &[]),
        created * 262_144.0,
        "zeros are written only into created segments"
    );
    // Kept for reuse, not piled up: the live segments, the spare and at most two retired ones.
    let segments = common::files_ending(dir.path(), ".log");
    assert!(segments <= 8, "{segments} WAL segment files");
    server.kill();
    let server = TestServer::start(dir.path(), &args);
    let mut client = server.connect();
    for i in 0..KEYS {
        let answer = client.get(&format!("key-{i}"));
        assert_eq!(answer.status, 200, "key-{i} lost after the kill");
        assert_eq!(answer.json()["value"], value);
    }
}

#[test]
fn pipelined_sets_on_one_connection_share_syncs_and_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--fsync", "group"]);
    let mut client = server.connect();
    let before = Page::fetch(&mut client);
    // 100 sets, a get and a delete that must see them, a malformed set, 20 more sets: one send.
    let mut raw = String::new();
    for i in 0..100 {
        raw.push_str(&set_request(&format!("p{i}"), &serde_json::json!(i)));
    }
    raw.push_str("GET /get?key=p7 HTTP/1.1\r\nHost: test\r\n\r\n");
    raw.push_str("DELETE /del?key=p0 HTTP/1.1\r\nHost: test\r\n\r\n");
    raw.push_str("POST /set HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n{}");
    for i in 100..120 {
        raw.push_str(&set_request(&format!("p{i}"), &serde_json::json!(i)));
    }
    client.send_raw(raw.as_bytes());
    let mut last_version = 0;
    let mut check_set = |client: &mut Client, i: usize| {
        let answer = client.read_response();
        assert_eq!(answer.status, 200, "set {i}");
        let body = answer.json();
        assert_eq!(body["key"], format!("p{i}"), "answers out of order");
        let version = body["version"].as_u64().unwrap();
        assert!(version > last_version, "versions follow the request order");
        last_version = version;
        assert_eq!(answer.header("durability"), Some("group"));
    };
    for i in 0..100 {
        check_set(&mut client, i);
    }
    let got = client.read_response();
    assert_eq!(
        (got.status, got.json()["value"].clone()),
        (200, serde_json::json!(7))
    );
    let deleted = client.read_response();
    assert_eq!(
        (deleted.status, deleted.json()["value"].clone()),
        (200, serde_json::json!(0))
    );
    assert_eq!(client.read_response().status, 400);
    for i in 100..120 {
        check_set(&mut client, i);
    }
    let after = Page::fetch(&mut client);
    let syncs = after.value("ringkv_wal_syncs_total", &[]) - before.value("ringkv_wal_syncs_total", &[]);
    // Answered one at a time, each set would take its own sync: 120 (and the delete one more).
    assert!(syncs <= 12.0, "{syncs} syncs for 121 pipelined writes");
    assert_eq!(client.get("p119").json()["value"], serde_json::json!(119));
}
