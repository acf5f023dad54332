//! `GET /scan` through the real server: the contract's rows (API.md "Scans", docs/api.md),
//! pages that see exactly their first page's snapshot while other clients write, batches that no
//! scan sees half of, cursors that outlive their snapshot (410), and scans that leave the block
//! cache alone.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{encode, Client, TestServer};
use prometheus_parse::{Scrape, Value};
use serde_json::{json, Value as Json};

/// Every page of a scan from `query` on, following `next`: the items, and the number of pages.
fn scan_all(client: &mut Client, query: &str) -> (Vec<Json>, usize) {
    let mut items = Vec::new();
    let mut target = format!("/scan?{query}");
    for pages in 1.. {
        let page = client.request("GET", &target, None);
        assert_eq!(
            page.status,
            200,
            "{target}: {:?}",
            String::from_utf8_lossy(&page.body)
        );
        let body = page.json();
        items.extend(body["kvs"].as_array().unwrap().iter().cloned());
        if body["more"] == json!(false) {
            assert!(body.get("next").is_none(), "next only with more");
            return (items, pages);
        }
        target = format!("/scan?cursor={}", body["next"].as_str().unwrap());
    }
    unreachable!()
}

/// Every key from `lower` on, ascending (for the tests that drive the engine directly).
fn ascending_from(lower: &'static [u8], keys_only: bool) -> ringkv::engine::ScanRange {
    ringkv::engine::ScanRange {
        lower: bytes::Bytes::from_static(lower),
        upper: None,
        reverse: false,
        keys_only,
    }
}

fn keys(items: &[Json]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn scans_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--max-scan-limit", "6"]);
    let mut client = server.connect();
    let mut versions = BTreeMap::new();
    for key in ["a", "b", "ba", "bb", "c", "d e", "é", "z"] {
        let answer = client.set(key, &json!({"k": key}));
        versions.insert(key.to_string(), answer.json()["version"].as_u64().unwrap());
    }
    client.del("c");
    versions.remove("c");

    // Ranges: [start, end), empty end to the last key.
    let (items, _) = scan_all(&mut client, "start=b&end=d");
    assert_eq!(keys(&items), ["b", "ba", "bb"]);
    assert_eq!(
        items[1],
        json!({"key":"ba","value":{"k":"ba"},"version":versions["ba"]})
    );
    let (items, _) = scan_all(&mut client, "start=d&end=");
    assert_eq!(keys(&items), ["d e", "z", "é"], "byte order of the UTF-8");
    // Prefix, reverse, keys only.
    let (items, _) = scan_all(&mut client, "prefix=b");
    assert_eq!(keys(&items), ["b", "ba", "bb"]);
    let (items, _) = scan_all(&mut client, "prefix=b&reverse=true&keys_only=true");
    assert_eq!(keys(&items), ["bb", "ba", "b"]);
    assert_eq!(items[0], json!({"key":"bb","version":versions["bb"]}));
    let (items, _) = scan_all(&mut client, &format!("start=a&end={}&reverse=1", encode("d e")));
    assert_eq!(keys(&items), ["bb", "ba", "b", "a"]);
    // Limits: pages of 2, and a limit over the cap lowered to it (6).
    let (items, pages) = scan_all(&mut client, "limit=2");
    assert_eq!(keys(&items), versions.keys().cloned().collect::<Vec<_>>());
    assert_eq!(pages, 4);
    let first = client.request("GET", "/scan?limit=1000", None).json();
    assert_eq!(first["kvs"].as_array().unwrap().len(), 6);
    assert_eq!(first["more"], json!(true));
    // A cursor may change the page size, nothing else.
    let next = first["next"].as_str().unwrap();
    let rest = client
        .request("GET", &format!("/scan?cursor={next}&limit=5"), None)
        .json();
    assert_eq!(keys(rest["kvs"].as_array().unwrap()), ["é"]);
    assert_eq!(
        client
            .request("GET", &format!("/scan?cursor={next}&reverse=true"), None)
            .status,
        400
    );
    // An empty range.
    let empty = client.request("GET", "/scan?start=x&end=y", None).json();
    assert_eq!(empty, json!({"kvs":[],"more":false}));

    for bad in [
        "limit=0",
        "limit=-1",
        "limit=ten",
        "reverse=maybe",
        "prefix=a&start=a",
        "cursor=zz",
        "cursor=1",
        "start=%zz",
    ] {
        let answer = client.request("GET", &format!("/scan?{bad}"), None);
        assert_eq!(answer.status, 400, "{bad}");
        assert!(answer.json()["error"].is_string());
    }
    // The last hex digit changed (to another digit: the cursor's epoch is random).
    let last = if next.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{last}", &next[..next.len() - 1]);
    assert_eq!(
        client
            .request("GET", &format!("/scan?cursor={tampered}"), None)
            .status,
        400
    );
    let wrong_method = client.request("POST", "/scan", Some("{}"));
    assert_eq!(
        (wrong_method.status, wrong_method.header("Allow")),
        (405, Some("GET"))
    );
}

#[test]
fn pages_see_exactly_the_first_pages_snapshot_while_others_write() {
    const KEYS: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    // Small memtables: flushes and compactions happen while the scan pages through.
    let server = TestServer::start(dir.path(), &["--memtable-bytes", "64KiB", "--fsync", "group"]);
    let mut client = server.connect();
    for n in 0..KEYS {
        if n % 7 != 3 {
            client.set(&format!("key{n:05}"), &json!({"n": n, "pad": "p".repeat(100)}));
        }
    }
    for reverse in [false, true] {
        let (snapshot, _) = scan_all(&mut client, &format!("prefix=key&reverse={reverse}"));
        let first = client
            .request(
                "GET",
                &format!("/scan?prefix=key&limit=25&reverse={reverse}"),
                None,
            )
            .json();
        let mut items: Vec<Json> = first["kvs"].as_array().unwrap().clone();
        let mut next = first["next"].as_str().unwrap().to_string();
        let stop = AtomicBool::new(false);
        let addr = server.addr;
        std::thread::scope(|scope| {
            for writer in 0..4u64 {
                let stop = &stop;
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    let mut n = writer;
                    while !stop.load(Ordering::Relaxed) && n < 40_000 {
                        let key = format!("key{:05}", (n * 7919) % (KEYS as u64 + 50));
                        match n % 3 {
                            0 => assert!(matches!(client.del(&key).status, 200 | 404)),
                            _ => assert_eq!(client.set(&key, &json!({"changed": n})).status, 200),
                        }
                        n += 4;
                    }
                });
            }
            loop {
                let page = client
                    .request("GET", &format!("/scan?cursor={next}"), None)
                    .json();
                items.extend(page["kvs"].as_array().unwrap().iter().cloned());
                if page["more"] == json!(false) {
                    break;
                }
                next = page["next"].as_str().unwrap().to_string();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(items.len(), snapshot.len(), "reverse={reverse}");
        assert_eq!(items, snapshot, "reverse={reverse}: the pages are the snapshot");
        // And the writers did change the range meanwhile.
        let (now, _) = scan_all(&mut client, "prefix=key");
        assert!(now.iter().any(|item| item["value"].get("changed").is_some()));
    }
}

#[test]
fn no_scan_sees_part_of_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--memtable-bytes", "64KiB", "--fsync", "group"]);
    let addr = server.addr;
    let ops = |i: u64| -> Json {
        json!({"ops": (0..10).map(|k| json!({"op":"set","key":format!("x{k}"),"value":{"i":i,"pad":"q".repeat(300)}})).collect::<Vec<_>>()})
    };
    assert_eq!(
        server
            .connect()
            .request("POST", "/batch", Some(&ops(0).to_string()))
            .status,
        200
    );
    let done = AtomicBool::new(false);
    let scans = std::thread::scope(|scope| {
        let done = &done;
        scope.spawn(move || {
            let mut client = Client::connect(addr);
            for i in 1..=400 {
                assert_eq!(
                    client.request("POST", "/batch", Some(&ops(i).to_string())).status,
                    200
                );
            }
            done.store(true, Ordering::Relaxed);
        });
        let readers: Vec<_> = (0..3)
            .map(|reader| {
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    let mut scans = 0;
                    while !done.load(Ordering::Relaxed) {
                        // Pages of 3 too: a batch must not straddle pages either.
                        let query = if reader == 0 {
                            "prefix=x&limit=3"
                        } else {
                            "prefix=x"
                        };
                        let (items, _) = scan_all(&mut client, query);
                        assert_eq!(items.len(), 10);
                        let seen: Vec<u64> = items
                            .iter()
                            .map(|item| item["value"]["i"].as_u64().unwrap())
                            .collect();
                        assert!(
                            seen.iter().all(|&i| i == seen[0]),
                            "a scan saw part of a batch: {seen:?}"
                        );
                        scans += 1;
                    }
                    scans
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|reader| reader.join().unwrap())
            .sum::<u64>()
    });
    assert!(scans > 10, "only {scans} scans ran alongside the batches");
}

#[test]
fn a_cursor_whose_snapshot_is_gone_gets_410() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--scan-snapshot-ttl", "1s"];
    let server = TestServer::start(dir.path(), &args);
    let mut client = server.connect();
    for n in 0..10 {
        client.set(&format!("k{n}"), &json!(n));
    }
    let first = client.request("GET", "/scan?limit=3", None).json();
    let next = first["next"].as_str().unwrap().to_string();
    // Used within its time, the snapshot stays (and its time starts again).
    std::thread::sleep(std::time::Duration::from_millis(600));
    let second = client
        .request("GET", &format!("/scan?cursor={next}"), None)
        .json();
    std::thread::sleep(std::time::Duration::from_millis(600));
    let third = client.request(
        "GET",
        &format!("/scan?cursor={}", second["next"].as_str().unwrap()),
        None,
    );
    assert_eq!(third.status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let expired = client.request("GET", &format!("/scan?cursor={next}"), None);
    assert_eq!(expired.status, 410);
    assert!(expired.json()["error"]
        .as_str()
        .unwrap()
        .contains("start the scan again"));
    // A restart forgets every snapshot: an old cursor is refused, not read against new data.
    let fresh = client.request("GET", "/scan?limit=3", None).json();
    let cursor = fresh["next"].as_str().unwrap().to_string();
    server.kill();
    let server = TestServer::start(dir.path(), &args);
    let after_restart = server
        .connect()
        .request("GET", &format!("/scan?cursor={cursor}"), None);
    assert_eq!(after_restart.status, 410);
    assert!(after_restart.json()["error"]
        .as_str()
        .unwrap()
        .contains("earlier run"));
}

#[test]
fn a_scan_leaves_the_block_cache_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--memtable-bytes", "64KiB"]);
    let mut client = server.connect();
    for n in 0..2000 {
        client.set(&format!("key{n:05}"), &json!({"pad": "v".repeat(100)}));
    }
    // Restart: the cache starts empty, and most keys are in tables.
    server.kill();
    assert!(common::files_ending(dir.path(), ".sst") > 2);
    let server = TestServer::start(dir.path(), &["--memtable-bytes", "64KiB"]);
    let mut client = server.connect();
    let (items, _) = scan_all(&mut client, "limit=1000");
    assert_eq!(items.len(), 2000);
    let cache = |client: &mut Client| {
        let text = String::from_utf8(client.request("GET", "/metrics", None).body).unwrap();
        let scrape = Scrape::parse(text.as_bytes().lines().map(|line| Ok(line.unwrap()))).unwrap();
        let value = |name: &str| {
            scrape
                .samples
                .iter()
                .find(|sample| sample.metric == name)
                .map(|sample| match sample.value {
                    Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                    _ => panic!("{name} is not a number"),
                })
                .unwrap()
        };
        (
            value("ringkv_block_cache_bytes"),
            value("ringkv_block_cache_hits_total") + value("ringkv_block_cache_misses_total"),
        )
    };
    assert_eq!(
        cache(&mut client),
        (0.0, 0.0),
        "the scan neither filled nor counted in the cache"
    );
    // Point reads still fill it, and count: a miss, then a hit.
    assert_eq!(client.get("key00042").status, 200);
    let (bytes, lookups) = cache(&mut client);
    assert!(bytes > 0.0 && lookups >= 1.0);
    assert_eq!(client.get("key00042").status, 200);
    let text = String::from_utf8(client.request("GET", "/metrics", None).body).unwrap();
    assert!(
        text.lines()
            .any(|line| line.starts_with("ringkv_block_cache_hits_total ") && !line.ends_with(" 0")),
        "a second read of the same block is a hit"
    );
}

/// A write appended but not yet acknowledged when a scan's first page is read has a version
/// below the snapshot's, and becomes visible after it: no later page of that scan shows it.
#[test]
fn a_write_in_flight_at_the_first_page_stays_out_of_later_pages() {
    use bytes::Bytes;
    use ringkv::config::{Durability, StoreConfig};
    use ringkv::engine::{Engine, ScanStart};
    use ringkv::io::UringFs;

    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::for_dir(dir.path());
    tokio_uring::start(async {
        let (engine, _) = Engine::open(UringFs, &config).await.unwrap();
        for key in ["a", "c"] {
            engine.set(key.as_bytes(), b"1").await.unwrap();
        }
        // `b` is in the WAL's open batch, not yet durable nor applied.
        let in_flight = engine.begin_set(b"b", b"2", Durability::Group).await.unwrap();
        let also_later = engine.begin_set(b"d", b"2", Durability::Group).await.unwrap();
        let range = ascending_from(b"", false);
        let first = engine.scan(ScanStart::New(range), Some(1)).await.unwrap();
        assert_eq!(first.items[0].key, "a");
        in_flight.finish().await.unwrap();
        also_later.finish().await.unwrap();
        assert_eq!(
            engine.get(b"b").await.unwrap().unwrap().value,
            "2",
            "acknowledged and visible to reads"
        );
        let second = engine
            .scan(
                ScanStart::Continue {
                    id: first.snapshot.unwrap(),
                    after: Bytes::from_static(b"a"),
                },
                Some(10),
            )
            .await
            .unwrap();
        let keys: Vec<&[u8]> = second.items.iter().map(|item| &item.key[..]).collect();
        assert_eq!(
            keys,
            [&b"c"[..]],
            "the writes in flight at the first page stay out of its scan"
        );
        engine.close().await.unwrap();
    });
}

/// A kept snapshot holds the memtables it reads past their flush; when it expires they are
/// freed on the background thread like every flushed memtable, not on the serving ring.
#[test]
fn memtables_a_snapshot_held_are_freed_on_the_background_thread_when_it_expires() {
    use ringkv::config::{Durability, StoreConfig};
    use ringkv::engine::{Engine, ScanStart};
    use ringkv::io::FaultFs;

    // The snapshot expires when the test moves the store's clock past its time to live, never
    // early: with a 1 s one on the real clock, a loaded machine let it expire during the writes.
    const TTL: std::time::Duration = std::time::Duration::from_secs(3600);
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        memtable_bytes: 64 << 10,
        scan_snapshot_ttl: TTL,
        ..StoreConfig::for_dir(dir.path())
    };
    let value = format!("\"{}\"", "v".repeat(100)).into_bytes();
    tokio_uring::start(async {
        // Real files on the real ring; the layer is here for its clock.
        let fs = FaultFs::new();
        let (engine, _) = Engine::open(fs.clone(), &config).await.unwrap();
        // Fewer than fill the memtable: the snapshot must hold exactly one, the active one. (With
        // 300 the memtable froze before the scan, and whether its flush was done by then decided
        // whether the snapshot held one memtable or two.)
        for i in 0..200 {
            engine.set(format!("k{i:05}").as_bytes(), &value).await.unwrap();
        }
        let before = engine.stats();
        assert_eq!((before.flushes, before.frozen_memtables), (0, 0), "{before:?}");
        let range = ascending_from(b"", false);
        let first = engine.scan(ScanStart::New(range), Some(10)).await.unwrap();
        assert!(first.more);
        assert_eq!(engine.scan_snapshots(), 1);
        // Enough writes that the memtable the snapshot holds is frozen and flushed.
        for i in 0..3000 {
            engine
                .set_with(format!("k{:05}", i % 1000).as_bytes(), &value, Durability::Never)
                .await
                .unwrap();
        }
        engine.settle_background().await.unwrap();
        let stats = engine.stats();
        assert!(stats.flushes >= 2, "{stats:?}");
        assert_eq!(
            stats.memtables_freed_in_background,
            stats.flushes - 1,
            "the memtable the snapshot holds is not freed yet: {stats:?}"
        );
        // Still readable through the cursor: the snapshot's memtable is intact.
        let second = engine
            .scan(
                ScanStart::Continue {
                    id: first.snapshot.unwrap(),
                    after: first.items.last().unwrap().key.clone(),
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(second.items.len(), 10);
        assert_eq!(second.items[0].key, "k00010");
        // Expired, it is let go at the next flush or scan, and its memtable freed off this ring.
        assert_eq!(engine.scan_snapshots(), 1, "expired before its time");
        fs.advance_clock(TTL * 2);
        let range = ascending_from(b"zz", false);
        engine.scan(ScanStart::New(range), Some(1)).await.unwrap();
        assert_eq!(engine.scan_snapshots(), 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut stats = engine.stats();
        while stats.memtables_freed_in_background < stats.flushes && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            stats = engine.stats();
        }
        assert_eq!(stats.memtables_freed_in_background, stats.flushes, "{stats:?}");
        engine.close().await.unwrap();
    });
}

/// Slow scans under a heavy write load would each pin a flushed memtable until their time is
/// up: kept snapshots may pin at most four memtables' worth, and past it the least recently used
/// snapshot goes (its cursor gets 410), not the memory.
#[test]
fn kept_snapshots_pin_at_most_four_flushed_memtables() {
    use ringkv::config::{Durability, StoreConfig};
    use ringkv::engine::{Engine, ScanStart};
    use ringkv::io::UringFs;
    use ringkv::Error;

    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        memtable_bytes: 64 << 10,
        ..StoreConfig::for_dir(dir.path())
    };
    let value = format!("\"{}\"", "v".repeat(100)).into_bytes();
    tokio_uring::start(async {
        let (engine, _) = Engine::open(UringFs, &config).await.unwrap();
        let mut cursors = Vec::new();
        for snapshot in 0..8u32 {
            // About one memtable of writes, then a scan that stops after its first page.
            for i in 0..300u32 {
                let key = format!("k{snapshot}-{i:04}");
                engine
                    .set_with(key.as_bytes(), &value, Durability::Never)
                    .await
                    .unwrap();
            }
            let range = ascending_from(b"", true);
            let page = engine.scan(ScanStart::New(range), Some(1)).await.unwrap();
            cursors.push((page.snapshot.unwrap(), page.items[0].key.clone()));
        }
        engine.settle_background().await.unwrap();
        // One more scan: releases run on scans and on installs.
        let range = ascending_from(b"zz", true);
        engine.scan(ScanStart::New(range), Some(1)).await.unwrap();
        assert!(
            engine.scan_snapshots() < 8,
            "{} snapshots kept",
            engine.scan_snapshots()
        );
        let mut gone = Vec::new();
        for (n, (id, after)) in cursors.into_iter().enumerate() {
            match engine.scan(ScanStart::Continue { id, after }, Some(1)).await {
                Ok(_) => {}
                Err(Error::SnapshotGone { .. }) => gone.push(n),
                Err(error) => panic!("{error}"),
            }
        }
        assert!(!gone.is_empty() && gone[0] == 0, "the oldest go first: {gone:?}");
        assert!(!gone.contains(&7), "the newest stays: {gone:?}");
        engine.close().await.unwrap();
    });
}
