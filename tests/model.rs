//! Model test: random sets, deletes, conditional sets, batches, gets, scans (their pages
//! interleaved with writes, flushes and compactions, each scan checked against the model as it
//! was at its first page), flushes, compactions, clean restarts and simulated power failures
//! against the real engine (real files, real `io_uring`, the real background ring)
//! and a `BTreeMap`. Memtables are a few KiB and L0 compacts at 2 files, so a run goes through
//! hundreds of flushes and compactions and several levels. Under `group` and `always` every
//! acknowledged write is synced, so a power failure (the fault layer dropping all unsynced
//! bytes) must lose nothing acknowledged. With mixed classes (each write a random
//! `?durability=`), power fails right after a durable write, which must keep every write before
//! it, whatever its class.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv::config::{Durability as Class, FsyncStrategy, StoreConfig, SyncCall, WalIo};
use ringkv::engine::{BatchWrite, Engine, ScanRange, ScanStart};
use ringkv::io::FaultFs;
use ringkv::Error;

const KEYS: u32 = 300;

/// The fsync strategy and the WAL mechanism a run uses.
#[derive(Clone, Copy)]
struct Durability {
    fsync: FsyncStrategy,
    wal_io: WalIo,
    sync_call: SyncCall,
    /// Each write asks for a random class.
    mixed: bool,
}

impl Durability {
    const fn new(fsync: FsyncStrategy) -> Self {
        Durability {
            fsync,
            wal_io: WalIo::Direct,
            sync_call: SyncCall::Fdatasync,
            mixed: false,
        }
    }
}

fn config(dir: &Path, durability: Durability) -> StoreConfig {
    StoreConfig {
        fsync: durability.fsync,
        wal_io: durability.wal_io,
        sync_call: durability.sync_call,
        // Small segments so that runs cross many segment boundaries, and small memtables so that
        // they flush every few dozen writes.
        wal_segment_bytes: 64 << 10,
        wal_batch_bytes: 8 << 10,
        max_value_bytes: 8 << 10,
        memtable_bytes: 4 << 10,
        compaction_trigger: 2,
        block_cache_bytes: 16 << 10,
        background_write_bytes_per_sec: 0,
        ..StoreConfig::for_dir(dir)
    }
}

/// Model entry: value JSON text and version.
type Model = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

fn key(n: u32) -> Vec<u8> {
    format!("k{n:04}").into_bytes()
}

fn run_model(seed: u64, fsync: Durability, steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let fs = FaultFs::new();
    let mut model = Model::new();
    let mut last_version = 0;
    let (mut flushes, mut compactions) = (0, 0);
    // Whether the last write was acknowledged as durable (a power failure may come now).
    let mut last_write_durable = true;
    tokio_uring::start(async {
        let (mut engine, _) = Engine::open(fs.clone(), &config(dir.path(), fsync))
            .await
            .unwrap();
        for step in 0..steps {
            let key = key(rng.gen_range(0..KEYS));
            let requested = fsync.mixed.then(|| Class::ALL[rng.gen_range(0..4)]);
            let class = engine.config().durability_for(requested);
            match rng.gen_range(0..1000) {
                0..=379 => {
                    let len = if rng.gen_bool(0.03) {
                        rng.gen_range(1000..6000)
                    } else {
                        rng.gen_range(0..60)
                    };
                    let value = format!("\"{step}:{}\"", "x".repeat(len)).into_bytes();
                    let version = engine.set_with(&key, &value, class).await.unwrap();
                    last_write_durable = class.syncs_before_ack();
                    assert!(
                        version > last_version,
                        "step {step}: version {version} after {last_version}"
                    );
                    last_version = version;
                    model.insert(key, (value, version));
                }
                380..=549 => {
                    let removed = engine.delete_with(&key, None, class).await.unwrap();
                    if removed.is_some() {
                        last_write_durable = class.syncs_before_ack();
                    }
                    let expected = model.remove(&key);
                    assert_eq!(
                        removed
                            .as_ref()
                            .map(|r| (r.removed.value.to_vec(), r.removed.version)),
                        expected,
                        "step {step}: delete"
                    );
                    if let Some(deletion) = removed {
                        assert_eq!(
                            deletion.seq,
                            engine.next_seq() - 1,
                            "step {step}: the delete's seq"
                        );
                    }
                    last_version = engine.next_seq() - 1;
                }
                550..=599 => {
                    let applied = random_batch(&engine, &mut rng, &mut model, step, class).await;
                    if applied {
                        last_write_durable = class.syncs_before_ack();
                        let version = engine.next_seq() - 1;
                        assert!(
                            version > last_version,
                            "step {step}: batch version {version} after {last_version}"
                        );
                        last_version = version;
                    }
                }
                600..=629 => {
                    let current = model.get(&key).map_or(0, |(_, version)| *version);
                    let right = rng.gen_bool(0.7);
                    let if_version = if right {
                        current
                    } else {
                        current + 1 + rng.gen_range(0..3)
                    };
                    let value = format!("\"{step}:cas\"").into_bytes();
                    match engine.set_if(&key, &value, if_version, class).await {
                        Ok(version) => {
                            assert!(right, "step {step}: CAS at {if_version} applied over {current}");
                            assert!(version > last_version);
                            last_version = version;
                            last_write_durable = class.syncs_before_ack();
                            model.insert(key, (value, version));
                        }
                        Err(Error::VersionMismatch {
                            current: reported, ..
                        }) => {
                            assert!(
                                !right,
                                "step {step}: CAS at the current version {current} refused"
                            );
                            assert_eq!(
                                reported,
                                model.get(&key).map(|(_, version)| *version),
                                "step {step}"
                            );
                        }
                        Err(error) => panic!("step {step}: CAS failed: {error}"),
                    }
                }
                900..=969 => {
                    let writes = scan_through_writes(&engine, &mut rng, &mut model, step, class).await;
                    if let Some(version) = writes {
                        last_version = version;
                        last_write_durable = class.syncs_before_ack();
                    }
                }
                630..=899 => {
                    let got = engine.get(&key).await.unwrap();
                    let got = got.map(|v| (v.value.to_vec(), v.version));
                    assert_eq!(got, model.get(&key).cloned(), "step {step}: get");
                }
                970..=979 => engine.settle_background().await.unwrap(),
                980..=989 => {
                    flushes += engine.stats().flushes;
                    compactions += engine.stats().compactions;
                    engine.close().await.unwrap();
                    release(engine).await;
                    engine = reopen(&fs, dir.path(), fsync, &model, last_version).await;
                }
                _ => {
                    if !last_write_durable {
                        // One durable write makes every write before it durable.
                        let value = format!("\"{step}:durable\"").into_bytes();
                        let version = engine.set_with(&key, &value, Class::Group).await.unwrap();
                        last_version = version;
                        model.insert(key, (value, version));
                        last_write_durable = true;
                    }
                    // Power failure: no close, and every unsynced byte is lost.
                    flushes += engine.stats().flushes;
                    compactions += engine.stats().compactions;
                    release(engine).await;
                    fs.crash(|_, _, _| false).unwrap();
                    engine = reopen(&fs, dir.path(), fsync, &model, last_version).await;
                }
            }
        }
        engine.settle_background().await.unwrap();
        let stats = engine.stats();
        flushes += stats.flushes;
        compactions += stats.compactions;
        eprintln!("seed {seed}: {flushes} flushes, {compactions} compactions; at the end {stats:?}");
        assert!(
            flushes > 10 && compactions > 5,
            "{flushes} flushes, {compactions} compactions"
        );
        assert!(stats.tables_per_level[1..].iter().sum::<usize>() > 0, "{stats:?}");
        check_all(&engine, &model).await;
        engine.close().await.unwrap();
    });
}

/// A batch of 1 to 5 distinct keys, sets and deletes, some with a condition (most right, some
/// wrong): applied whole with consecutive versions, or refused whole. Returns whether applied.
async fn random_batch(
    engine: &Engine<FaultFs>,
    rng: &mut StdRng,
    model: &mut Model,
    step: usize,
    class: Class,
) -> bool {
    let mut keys: Vec<u32> = (0..rng.gen_range(1..=5))
        .map(|_| rng.gen_range(0..KEYS))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut wrong = None;
    let writes: Vec<BatchWrite> = keys
        .iter()
        .enumerate()
        .map(|(index, &n)| {
            let key = key(n);
            let current = model.get(&key).map_or(0, |(_, version)| *version);
            let if_version = match rng.gen_range(0..10) {
                0..=2 => Some(current),
                3 => {
                    wrong.get_or_insert(index);
                    Some(current + 1)
                }
                _ => None,
            };
            let value = rng
                .gen_bool(0.7)
                .then(|| Bytes::from(format!("\"{step}:batch{index}\"").into_bytes()));
            BatchWrite {
                key: Bytes::from(key),
                value,
                if_version,
            }
        })
        .collect();
    match engine.batch(&writes, class).await {
        Ok(results) => {
            assert!(
                wrong.is_none(),
                "step {step}: a batch with a wrong condition applied"
            );
            let first = results[0].version;
            for ((write, result), version) in writes.iter().zip(&results).zip(first..) {
                assert_eq!(
                    result.version, version,
                    "step {step}: batch versions run in op order"
                );
                let key = write.key.to_vec();
                if let Some(value) = &write.value {
                    model.insert(key, (value.to_vec(), version));
                } else {
                    let removed = model.remove(&key);
                    let got = result.removed.as_ref().map(|r| (r.value.to_vec(), r.version));
                    assert_eq!(got, removed, "step {step}: batch delete");
                }
            }
            true
        }
        Err(Error::VersionMismatch { op, .. }) => {
            assert_eq!(Some(op), wrong, "step {step}: the first wrong condition is named");
            false
        }
        Err(error) => panic!("step {step}: batch failed: {error}"),
    }
}

/// A scan of a random range, order and page size, followed page by page with writes (and now
/// and then a flush or a full settle, which compacts) between pages: the pages together are the
/// range exactly as the model was at the first page. Returns the last version written, if any.
async fn scan_through_writes(
    engine: &Engine<FaultFs>,
    rng: &mut StdRng,
    model: &mut Model,
    step: usize,
    class: Class,
) -> Option<u64> {
    let a = rng.gen_range(0..KEYS);
    let lower = if rng.gen_bool(0.2) { Vec::new() } else { key(a) };
    let upper = rng.gen_bool(0.7).then(|| key(rng.gen_range(a..=KEYS)));
    let reverse = rng.gen_bool(0.4);
    let keys_only = rng.gen_bool(0.2);
    let limit = rng.gen_range(1..=40);
    let range = ScanRange {
        lower: Bytes::from(lower.clone()),
        upper: upper.clone().map(Bytes::from),
        reverse,
        keys_only,
    };
    let mut expected: Vec<(Vec<u8>, Vec<u8>, u64)> = model
        .range(lower.clone()..)
        .filter(|(key, _)| upper.as_ref().is_none_or(|upper| *key < upper))
        .map(|(key, (value, version))| (key.clone(), value.clone(), *version))
        .collect();
    if reverse {
        expected.reverse();
    }
    let mut got = Vec::new();
    let mut start = ScanStart::New(range);
    let mut last_written = None;
    for page_number in 0.. {
        let page = engine.scan(start, Some(limit)).await.unwrap();
        assert!(page.items.len() <= limit, "step {step}: page over its limit");
        assert!(
            !page.items.is_empty() || !page.more,
            "step {step}: an empty page with more"
        );
        got.extend(
            page.items
                .iter()
                .map(|item| (item.key.to_vec(), item.value.clone().unwrap().to_vec(), item.seq)),
        );
        if !page.more {
            break;
        }
        let id = page.snapshot.expect("a page with more names its snapshot");
        start = ScanStart::Continue {
            id,
            after: page.items.last().unwrap().key.clone(),
        };
        // Writes the later pages must not see, in the range and around it.
        for write in 0..rng.gen_range(0..4) {
            let key = key(rng.gen_range(0..KEYS));
            if rng.gen_bool(0.6) {
                let value = format!("\"{step}:page{page_number}:{write}\"").into_bytes();
                let version = engine.set_with(&key, &value, class).await.unwrap();
                model.insert(key, (value, version));
                last_written = Some(version);
            } else if let Some(deletion) = engine.delete_with(&key, None, class).await.unwrap() {
                model.remove(&key);
                last_written = Some(deletion.seq);
            }
        }
        match rng.gen_range(0..10) {
            0 => engine.flush().await.unwrap(),
            1 => engine.settle_background().await.unwrap(),
            _ => {}
        }
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "step {step}: scan found {} keys, the model has {}",
        got.len(),
        expected.len()
    );
    for (got, expected) in got.iter().zip(&expected) {
        assert_eq!(got.0, expected.0, "step {step}: scan key");
        assert_eq!(
            got.2,
            expected.2,
            "step {step}: version of {}",
            String::from_utf8_lossy(&got.0)
        );
        assert_eq!(
            got.1,
            expected.1,
            "step {step}: value of {}",
            String::from_utf8_lossy(&got.0)
        );
    }
    last_written
}

/// Every key of the key space reads as the model says: present with its version, or absent;
/// and a whole scan is the model.
async fn check_all(engine: &Engine<FaultFs>, model: &Model) {
    let range = ScanRange {
        lower: Bytes::new(),
        upper: None,
        reverse: false,
        keys_only: false,
    };
    let mut scanned: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut start = ScanStart::New(range);
    loop {
        let page = engine.scan(start, Some(usize::MAX)).await.unwrap();
        scanned.extend(page.items.iter().map(|item| (item.key.to_vec(), item.seq)));
        let Some(id) = page.snapshot else { break };
        start = ScanStart::Continue {
            id,
            after: page.items.last().unwrap().key.clone(),
        };
    }
    let modelled: Vec<(Vec<u8>, u64)> = model
        .iter()
        .map(|(key, (_, version))| (key.clone(), *version))
        .collect();
    assert_eq!(scanned, modelled, "a whole scan");
    for n in 0..KEYS {
        let key = key(n);
        let got = engine.get(&key).await.unwrap();
        let got = got.map(|v| (v.value.to_vec(), v.version));
        assert_eq!(
            got.as_ref(),
            model.get(&key),
            "key {}",
            String::from_utf8_lossy(&key)
        );
    }
}

/// Drops the engine once no task of its own holds it (the background ring stops and is joined in
/// the drop), then lets its WAL tasks (committer, segment preparation) wind down.
async fn release(engine: Rc<Engine<FaultFs>>) {
    // Sleep rather than yield: tokio-uring submits queued operations only when the thread parks,
    // so a yield loop would starve the very operation the other holder waits for.
    while Rc::strong_count(&engine) > 1 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    drop(engine);
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
}

async fn reopen(
    fs: &FaultFs,
    dir: &Path,
    fsync: Durability,
    model: &Model,
    last_version: u64,
) -> Rc<Engine<FaultFs>> {
    let (engine, report) = Engine::open(fs.clone(), &config(dir, fsync)).await.unwrap();
    assert!(
        report.next_seq > last_version,
        "versions must not go back after restart: {report:?} after {last_version}"
    );
    check_all(&engine, model).await;
    engine
}

#[test]
fn model_group_commit() {
    for seed in 0..4 {
        run_model(seed, Durability::new(FsyncStrategy::Group), 2000);
    }
}

#[test]
fn model_always() {
    run_model(100, Durability::new(FsyncStrategy::Always), 1200);
}

/// Buffered WAL writes made durable by `fsync`: a power loss keeps every acknowledged write.
#[test]
fn model_group_commit_buffered_fsync() {
    let durability = Durability {
        wal_io: WalIo::Buffered,
        sync_call: SyncCall::Fsync,
        ..Durability::new(FsyncStrategy::Group)
    };
    run_model(200, durability, 1200);
}

/// Mixed classes on one log, with each mechanism for durable writes: `O_DSYNC` (direct and
/// buffered), and `fdatasync`. A power failure right after a durable write loses nothing
/// acknowledged before it, `never` and `periodic` writes included.
#[test]
fn model_mixed_classes_a_durable_write_keeps_every_write_before_it() {
    for (seed, wal_io, sync_call) in [
        (300, WalIo::Direct, SyncCall::Dsync),
        (301, WalIo::Buffered, SyncCall::Dsync),
        (302, WalIo::Direct, SyncCall::Fdatasync),
    ] {
        let durability = Durability {
            wal_io,
            sync_call,
            mixed: true,
            ..Durability::new(FsyncStrategy::Never)
        };
        run_model(seed, durability, 1000);
    }
}
