//! Damage to the files a store depends on is reported, never silently turned into lost data.

use std::collections::BTreeSet;
use std::path::Path;

use ringkv::config::{FsyncStrategy, StoreConfig};
use ringkv::engine::Engine;
use ringkv::io::UringFs;

/// 4 KiB memtables and 16 KiB WAL segments: a few hundred writes make dozens of flushes, each a
/// manifest edit, and retire WAL segments as they go.
fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        memtable_bytes: 4 << 10,
        wal_segment_bytes: 16 << 10,
        max_key_bytes: 64,
        max_value_bytes: 1024,
        compaction_trigger: 64,
        l0_slowdown_tables: 64,
        l0_stop_tables: 80,
        background_write_bytes_per_sec: 0,
        ..StoreConfig::for_dir(dir)
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:04}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("\"value {i} {}\"", "x".repeat(80)).into_bytes()
}

/// Writes keys `0..writes` into a new store and closes it; with `flush`, everything ends up in
/// tables first.
fn write_keys(config: &StoreConfig, writes: usize, flush: bool) {
    write_keys_and_end(config, writes, flush, true);
}

/// As [`write_keys`]; without `close`, the store is dropped as a killed process leaves it (the
/// direct writes are on disk; no clean close seals the log).
fn write_keys_and_end(config: &StoreConfig, writes: usize, flush: bool, close: bool) {
    tokio_uring::start(async {
        let (engine, _) = Engine::open(UringFs, config).await.unwrap();
        for i in 0..writes {
            engine.set(&key(i), &value(i)).await.unwrap();
        }
        if flush {
            engine.flush().await.unwrap();
            engine.settle_background().await.unwrap();
        }
        if close {
            engine.close().await.unwrap();
        }
    });
}

fn names_ending(dir: &Path, suffix: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(suffix))
        .collect()
}

/// The manifest's last edit can be damaged after it was synced (a bad sector, a stray write).
/// Its bytes then look like a torn append, which recovery drops; the tables it named look like
/// leftovers of an unfinished flush. If that edit also retired WAL segments, those records exist
/// only in the tables: recovery must see that the log no longer starts where the older manifest
/// says, refuse to start, and delete nothing, so that restoring the manifest brings every key
/// back. If it retired nothing, the WAL still holds the records and opening loses nothing.
/// Stopping after different write counts makes both cases happen. Run without recycling, where
/// a retired segment is deleted at once; with it, the segments the damaged edit retired are
/// usually still there, kept for reuse, and the older manifest simply replays them (a segment
/// recycled since leaves a gap, refused the same way).
#[test]
fn a_damaged_last_manifest_edit_never_loses_acknowledged_writes() {
    for recycle in [0, 4] {
        let (mut refused, mut replayed) = (0, 0);
        for writes in (600..=720).step_by(10) {
            if damage_last_manifest_edit(writes, recycle) {
                refused += 1;
            } else {
                replayed += 1;
            }
        }
        eprintln!(
            "recycling {recycle}: last manifest edit damaged: {refused} stores refused to open, {replayed} opened with every write"
        );
        assert!(
            recycle > 0 || refused > 0,
            "no case where the damaged edit had deleted WAL segments"
        );
    }
}

/// Returns whether opening was refused.
fn damage_last_manifest_edit(writes: usize, recycle: usize) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &Path| StoreConfig {
        wal_recycle_segments: recycle,
        ..config(dir)
    };
    write_keys(&config(dir.path()), writes, true);
    let tables = names_ending(dir.path(), ".sst");
    let segments = names_ending(dir.path(), ".log");
    assert!(tables.len() > 5, "{tables:?}");
    let manifest_path = ringkv::manifest::manifest_path(dir.path());
    let manifest = std::fs::read(&manifest_path).unwrap();
    // The last edit ends at the last non-zero byte (the rest of its block is padding).
    let last = manifest.iter().rposition(|&b| b != 0).unwrap();
    let mut damaged = manifest.clone();
    damaged[last] ^= 0x40;
    std::fs::write(&manifest_path, &damaged).unwrap();

    let opened = tokio_uring::start(async {
        let (engine, _) = Engine::open(UringFs, &config(dir.path())).await?;
        let mut missing = Vec::new();
        for i in 0..writes {
            match engine.get(&key(i)).await.unwrap() {
                Some(got) => assert_eq!(&got.value[..], &value(i)[..], "key {i}"),
                None => missing.push(i),
            }
        }
        engine.close().await.unwrap();
        Ok::<_, ringkv::Error>(missing)
    });
    match opened {
        Ok(missing) => {
            assert!(
                missing.is_empty(),
                "{writes} writes: opened without {} keys: {missing:?}",
                missing.len()
            );
            false
        }
        Err(error) => {
            assert!(error.to_string().contains("manifest edit"), "{error}");
            assert_eq!(names_ending(dir.path(), ".sst"), tables, "tables were deleted");
            assert_eq!(
                names_ending(dir.path(), ".log"),
                segments,
                "WAL segments were deleted"
            );
            // With the manifest restored, every write is there.
            std::fs::write(&manifest_path, &manifest).unwrap();
            tokio_uring::start(async {
                let (engine, _) = Engine::open(UringFs, &config(dir.path())).await.unwrap();
                for i in 0..writes {
                    let got = engine.get(&key(i)).await.unwrap().expect("every key is back");
                    assert_eq!(&got.value[..], &value(i)[..]);
                }
                engine.close().await.unwrap();
            });
            true
        }
    }
}

/// What one flipped bit did.
#[derive(Debug, Default)]
struct Sweep {
    flips: usize,
    refused_at_open: usize,
    refused_at_read: usize,
    torn_tail_dropped: usize,
    no_effect: usize,
}

/// Opens the store and reads every key. Every answer must be the written value, an error, or (only
/// where `allow_missing_suffix`) a missing key after which every later key is missing too: a
/// dropped torn tail. Returns how the damage showed.
fn open_and_read(
    config: &StoreConfig,
    writes: usize,
    damaged: &Path,
    sweep: &mut Sweep,
    allow_missing_suffix: bool,
) {
    let name = damaged.file_name().unwrap().to_string_lossy().into_owned();
    let outcome = tokio_uring::start(async {
        let (engine, report) = match Engine::open(UringFs, config).await {
            Ok(opened) => opened,
            Err(error) => return Err(error.to_string()),
        };
        let mut answers = Vec::with_capacity(writes);
        for i in 0..writes {
            answers.push(engine.get(&key(i)).await.map_err(|e| e.to_string()));
        }
        engine.close().await.map_err(|e| e.to_string())?;
        Ok((report.torn_tail, answers))
    });
    sweep.flips += 1;
    let (torn_tail, answers) = match outcome {
        Err(error) => {
            assert!(
                error.contains(&name) && error.contains("offset"),
                "refused without naming {name} and an offset: {error}"
            );
            sweep.refused_at_open += 1;
            return;
        }
        Ok(opened) => opened,
    };
    let mut read_errors = 0;
    let mut first_missing = None;
    for (i, answer) in answers.iter().enumerate() {
        match answer {
            Ok(Some(got)) => {
                assert_eq!(
                    &got.value[..],
                    &value(i)[..],
                    "key {i} served a wrong value after damage to {name}"
                );
                assert!(
                    first_missing.is_none(),
                    "key {i} present after missing key {first_missing:?}: a hole, not a torn tail"
                );
            }
            Ok(None) => {
                assert!(
                    allow_missing_suffix && torn_tail,
                    "key {i} missing after damage to {name}"
                );
                first_missing.get_or_insert(i);
            }
            Err(error) => {
                assert!(error.contains(&name), "read error not naming {name}: {error}");
                read_errors += 1;
            }
        }
    }
    if read_errors > 0 {
        sweep.refused_at_read += 1;
    } else if first_missing.is_some() {
        sweep.torn_tail_dropped += 1;
    } else {
        sweep.no_effect += 1;
    }
}

/// About `samples` offsets spread over `len` bytes, plus every offset in `dense`.
fn offsets(len: usize, samples: usize, dense: std::ops::Range<usize>) -> Vec<usize> {
    let mut offsets: Vec<usize> = (0..len).step_by((len / samples).max(1)).collect();
    offsets.extend(dense.start.min(len)..dense.end.min(len));
    offsets
}

/// Flips one bit at each of `offsets` of the file at `path` in turn, checking after each flip,
/// then restores the file.
fn sweep_file(
    config: &StoreConfig,
    writes: usize,
    path: &Path,
    offsets: Vec<usize>,
    allow_missing_suffix: bool,
) -> Sweep {
    // Each flip is judged on the directory the writer left: an open and a clean close change it
    // (a durable mark at the end of the log, a spare segment, the lease), and a mark left by
    // one flip's open would claim, and so refuse, the next flip's torn tail.
    let dir = path.parent().unwrap();
    let snapshot = directory_files(dir);
    let original = std::fs::read(path).unwrap();
    let mut sweep = Sweep::default();
    for (n, offset) in offsets.into_iter().enumerate() {
        let mut damaged = original.clone();
        damaged[offset] ^= 1 << (n % 8);
        std::fs::write(path, &damaged).unwrap();
        open_and_read(config, writes, path, &mut sweep, allow_missing_suffix);
        restore_directory(dir, &snapshot);
    }
    sweep
}

fn directory_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

fn restore_directory(dir: &Path, snapshot: &[(std::path::PathBuf, Vec<u8>)]) {
    for path in std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()) {
        if path.is_file() && !snapshot.iter().any(|(kept, _)| *kept == path) {
            std::fs::remove_file(&path).unwrap();
        }
    }
    for (path, bytes) in snapshot {
        std::fs::write(path, bytes).unwrap();
    }
}

/// Every region of an SST (data blocks, padding, bloom filter, index, footer): a flipped bit is
/// refused when the table is opened or when a read reaches the block, naming the file and the
/// offset, and no read ever answers a wrong value or "not found" for a written key.
#[test]
fn flipped_bits_in_an_sst_are_detected_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        memtable_bytes: 64 << 10,
        ..config(dir.path())
    };
    let writes = 400;
    write_keys(&config, writes, true);
    let largest = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sst"))
        .max_by_key(|path| std::fs::metadata(path).unwrap().len())
        .unwrap();
    let len = ringkv::coding::to_usize(std::fs::metadata(&largest).unwrap().len());
    let sweep = sweep_file(&config, writes, &largest, offsets(len, 150, len - 64..len), false);
    eprintln!("SST {}: {sweep:?}", largest.display());
    assert!(
        sweep.refused_at_open > 0 && sweep.refused_at_read > 0,
        "{sweep:?}"
    );
}

/// Every region of WAL segments, under every fsync strategy (each lays records out in its own
/// batches, with or without sync claims), after a clean close and after a kill:
/// - after a clean close every byte is durable, and the log says so (its last record claims
///   everything before it): a flipped bit anywhere is refused at open, naming the segment and the
///   offset, or lands where it changes nothing; no write is ever missing. Before the claim was
///   written, under `periodic` and `never` a flip in the last records read as a torn tail and
///   silently dropped every write after it;
/// - after a kill, in a sealed segment the same, except under `never` (nothing claims a segment
///   durable before a clean close, so damage there reads as a torn tail); in the newest segment a
///   flip may also be dropped as a torn tail, and then only a suffix of the writes is missing.
#[test]
fn flipped_bits_in_wal_segments_are_refused_or_only_cut_the_newest_tail() {
    // `always` lays out one writer's records as `group` does (one record per batch), so it adds
    // nothing here; `tests/crash_images.rs` covers it under concurrent writers.
    for fsync in [
        FsyncStrategy::Group,
        FsyncStrategy::Periodic { interval_ms: 5 },
        FsyncStrategy::Never,
    ] {
        sweep_wal(fsync, true);
        sweep_wal(fsync, false);
    }
}

fn sweep_wal(fsync: FsyncStrategy, clean_close: bool) {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        memtable_bytes: 64 << 20,
        fsync,
        ..config(dir.path())
    };
    let writes = 300;
    write_keys_and_end(&config, writes, false, clean_close);
    let end = if clean_close { "clean close" } else { "kill" };
    let claims_sealed_segments = clean_close || fsync != FsyncStrategy::Never;
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    segments.sort();
    // The newest segment holding records (a pre-created spare after it is all zeros).
    let last_byte = |path: &Path| std::fs::read(path).unwrap().iter().rposition(|&b| b != 0);
    let newest = segments
        .iter()
        .rposition(|path| last_byte(path).is_some())
        .unwrap();
    assert!(newest >= 2, "{segments:?}");
    for segment in &segments[..newest] {
        let len = ringkv::coding::to_usize(std::fs::metadata(segment).unwrap().len());
        let offsets = offsets(len, 60, len - 64..len);
        let sweep = sweep_file(&config, writes, segment, offsets, !claims_sealed_segments);
        eprintln!("{fsync}, {end}: sealed {}: {sweep:?}", segment.display());
        if claims_sealed_segments {
            assert!(sweep.refused_at_open > 0, "{sweep:?}");
            assert_eq!(sweep.torn_tail_dropped, 0);
        } else {
            assert!(sweep.torn_tail_dropped > 0, "{sweep:?}");
        }
    }
    // In the newest, every byte of its last records (and the zeros just after them).
    let last = last_byte(&segments[newest]).unwrap() + 1;
    let len = ringkv::coding::to_usize(std::fs::metadata(&segments[newest]).unwrap().len());
    let sweep = sweep_file(
        &config,
        writes,
        &segments[newest],
        offsets(len, 60, last.saturating_sub(400)..last + 64),
        !clean_close,
    );
    eprintln!("{fsync}, {end}: newest {}: {sweep:?}", segments[newest].display());
    if clean_close {
        assert!(
            sweep.refused_at_open > 0 && sweep.torn_tail_dropped == 0,
            "{sweep:?}"
        );
    } else {
        assert!(sweep.torn_tail_dropped > 0, "{sweep:?}");
        if fsync.syncs_before_ack() {
            // Each batch claims every earlier one: damage before the last is refused.
            assert!(sweep.refused_at_open > 0, "{sweep:?}");
        }
    }
}

/// Every edit of the manifest but the last (which `a_damaged_last_manifest_edit_...` covers): a
/// later valid edit proves the damaged one was synced, so each flipped bit is refused at open,
/// naming the manifest and the offset.
#[test]
fn flipped_bits_in_earlier_manifest_edits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        compaction_trigger: 4,
        ..config(dir.path())
    };
    let writes = 400;
    write_keys(&config, writes, true);
    let path = ringkv::manifest::manifest_path(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    // Walk the frames (masked crc, length, payload) to find where the last edit starts.
    let (mut at, mut starts) = (0, Vec::new());
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        starts.push(at);
        at += 8 + len;
    }
    assert!(starts.len() > 10, "only {} edits", starts.len());
    let last_start = *starts.last().unwrap();
    // Every header byte of every edit, and bytes spread over their payloads.
    let mut places: Vec<usize> = starts[..starts.len() - 1]
        .iter()
        .flat_map(|&start| start..start + 8)
        .collect();
    places.extend(offsets(last_start, 150, 0..0));
    let sweep = sweep_file(&config, writes, &path, places, false);
    eprintln!("manifest ({} edits): {sweep:?}", starts.len());
    assert_eq!(sweep.refused_at_open, sweep.flips, "{sweep:?}");
}

/// Damage at the very end of a sealed segment, with only one write in the next segment: that
/// write was made only after the sealed segment was durable (under `group` every batch is synced
/// before the next is written), so the damage is corruption and must be refused, not dropped as a
/// torn tail along with the acknowledged writes after it.
#[test]
fn damage_at_the_end_of_a_sealed_segment_is_refused_even_with_one_write_after_it() {
    use ringkv::wal::record::{self, RecordKind};
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        memtable_bytes: 64 << 20,
        ..config(dir.path())
    };
    let segment = |number: u64| ringkv::wal::segment_path(dir.path(), number);
    let holds_records =
        |number: u64| std::fs::read(segment(number)).is_ok_and(|bytes| bytes.iter().any(|&b| b != 0));
    // Bursts of concurrent writes (so that batches hold several records, the segment-end record
    // among them) until the first burst that reaches segment 2.
    let writes = tokio_uring::start(async {
        let (engine, _) = Engine::open(UringFs, &config).await.unwrap();
        let mut writes = 0;
        while !holds_records(2) {
            let burst: Vec<_> = (writes..writes + 8)
                .map(|i| {
                    let engine = engine.clone();
                    tokio_uring::spawn(async move { engine.set(&key(i), &value(i)).await.unwrap() })
                })
                .collect();
            for write in burst {
                write.await.unwrap();
            }
            writes += 8;
        }
        engine.close().await.unwrap();
        writes
    });
    // The last put of segment 1.
    let bytes = std::fs::read(segment(1)).unwrap();
    let (mut at, mut last_put) = (0, None);
    while let Ok((found, next)) = record::decode(&bytes, at, 1 << 20, 1) {
        if found.kind == RecordKind::SegmentEnd {
            break;
        }
        last_put = Some(at);
        at = next;
    }
    let last_put = last_put.unwrap();
    let mut damaged = bytes.clone();
    damaged[last_put + record::HEADER_BYTES + 6] ^= 0x10;
    std::fs::write(segment(1), &damaged).unwrap();
    let mut sweep = Sweep::default();
    open_and_read(&config, writes, &segment(1), &mut sweep, false);
    assert_eq!(sweep.refused_at_open, 1, "{writes} writes: {sweep:?}");
}

/// Damage that a compaction finds (a flipped bit in a data block no read had touched): the
/// compaction fails and is reported (a log line; writes answer 503 naming the table and the
/// offset, since the background ring stops rather than merge around lost data), nothing is
/// deleted, reads of undamaged keys go on, and a read of the damaged block fails (500) instead
/// of answering a wrong value or a false "not found".
#[test]
fn damage_found_by_a_compaction_fails_it_and_undamaged_keys_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = StoreConfig {
        memtable_bytes: 64 << 20,
        compaction_trigger: 64,
        ..config(dir.path())
    };
    let per_table = 200;
    let table_key = |table: usize, i: usize| format!("t{table}k{i:04}").into_bytes();
    tokio_uring::start(async {
        let (engine, _) = Engine::open(UringFs, &quiet).await.unwrap();
        for table in 0..4 {
            for i in 0..per_table {
                engine.set(&table_key(table, i), b"\"v\"").await.unwrap();
            }
            engine.flush().await.unwrap();
        }
        engine.close().await.unwrap();
    });
    let tables = names_ending(dir.path(), ".sst");
    assert_eq!(tables.len(), 4, "{tables:?}");
    let damaged = dir.path().join(tables.iter().nth(1).unwrap());
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[100] ^= 0x10;
    std::fs::write(&damaged, &bytes).unwrap();

    // A trigger of 2: the background ring compacts level 0 as soon as it starts.
    let compacting = StoreConfig {
        compaction_trigger: 2,
        ..quiet.clone()
    };
    tokio_uring::start(async {
        let (engine, _) = Engine::open(UringFs, &compacting).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let refusal = loop {
            if let Err(error) = engine.set(b"probe", b"1").await {
                break error;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the compaction never failed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let message = refusal.to_string();
        eprintln!("writes refused: {message}");
        assert!(matches!(refusal, ringkv::Error::Poisoned { .. }), "{refusal:?}");
        assert!(
            message.contains("corruption") && message.contains(".sst"),
            "{message}"
        );
        // Undamaged tables are read; the damaged block fails its read, never answers wrongly.
        for table in [0, 2, 3] {
            for i in (0..per_table).step_by(17) {
                let found = engine.get(&table_key(table, i)).await.unwrap();
                assert!(found.is_some(), "t{table}k{i} lost");
            }
        }
        let first_of_damaged = engine.get(&table_key(1, 0)).await;
        assert!(first_of_damaged.is_err(), "{first_of_damaged:?}");
        drop(engine);
    });
    assert_eq!(
        names_ending(dir.path(), ".sst"),
        tables,
        "the failed compaction deleted tables"
    );
}
