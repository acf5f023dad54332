//! Model test: random sets, deletes, gets, flushes, compactions, clean restarts and simulated
//! power failures against the real engine (real files, real `io_uring`, the real background ring)
//! and a `BTreeMap`. Memtables are a few KiB and L0 compacts at 2 files, so a run goes through
//! hundreds of flushes and compactions and several levels. Under `group` and `always` every
//! acknowledged write is synced, so a power failure (the fault layer dropping all unsynced
//! bytes) must lose nothing acknowledged. With mixed classes (each write a random
//! `?durability=`), power fails right after a durable write, which must keep every write before
//! it, whatever its class.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv::config::{Durability as Class, FsyncStrategy, StoreConfig, SyncCall, WalIo};
use ringkv::engine::Engine;
use ringkv::io::FaultFs;

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
                0..=449 => {
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
                450..=649 => {
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
                650..=969 => {
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

/// Every key of the key space reads as the model says: present with its version, or absent.
async fn check_all(engine: &Engine<FaultFs>, model: &Model) {
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
