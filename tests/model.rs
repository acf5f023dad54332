//! Model test: random sets, deletes, gets, clean restarts and simulated power failures against
//! the real engine (real files, real io_uring) and a `BTreeMap`. Under `group` and `always` every
//! acknowledged write is synced, so a power failure (the fault layer dropping all unsynced bytes)
//! must lose nothing acknowledged.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv::config::{FsyncStrategy, StoreConfig};
use ringkv::engine::Engine;
use ringkv::io::FaultFs;

fn config(dir: &Path, fsync: FsyncStrategy) -> StoreConfig {
    StoreConfig {
        fsync,
        // Small segments so that runs cross many segment boundaries.
        wal_segment_bytes: 64 << 10,
        wal_batch_bytes: 8 << 10,
        max_value_bytes: 8 << 10,
        ..StoreConfig::for_dir(dir)
    }
}

/// Model entry: value JSON text and version.
type Model = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

fn run_model(seed: u64, fsync: FsyncStrategy, steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let fs = FaultFs::new();
    let mut model = Model::new();
    let mut last_version = 0;
    tokio_uring::start(async {
        let (mut engine, _) = Engine::open(fs.clone(), &config(dir.path(), fsync))
            .await
            .unwrap();
        for step in 0..steps {
            let key = format!("k{}", rng.gen_range(0..40)).into_bytes();
            match rng.gen_range(0..100) {
                0..=44 => {
                    let len = if rng.gen_bool(0.05) {
                        rng.gen_range(1000..6000)
                    } else {
                        rng.gen_range(0..40)
                    };
                    let value = format!("\"{}\"", "x".repeat(len)).into_bytes();
                    let version = engine.set(&key, &value).await.unwrap();
                    assert!(
                        version > last_version,
                        "step {step}: version {version} after {last_version}"
                    );
                    last_version = version;
                    model.insert(key, (value, version));
                }
                45..=64 => {
                    let removed = engine.delete(&key).await.unwrap();
                    let expected = model.remove(&key);
                    assert_eq!(
                        removed.map(|r| (r.value.to_vec(), r.version)),
                        expected,
                        "step {step}: delete"
                    );
                    last_version = engine.next_version() - 1;
                }
                65..=94 => {
                    let got = engine.get(&key).map(|v| (v.value.to_vec(), v.version));
                    assert_eq!(got, model.get(&key).cloned(), "step {step}: get");
                }
                95..=97 => {
                    engine.close().await.unwrap();
                    drop(engine);
                    engine = reopen(&fs, dir.path(), fsync, &model, last_version).await;
                }
                _ => {
                    // Power failure: no close, and every unsynced byte is lost.
                    drop(engine);
                    fs.crash(|_, _, _| false).unwrap();
                    engine = reopen(&fs, dir.path(), fsync, &model, last_version).await;
                }
            }
        }
        engine.close().await.unwrap();
    });
}

async fn reopen(
    fs: &FaultFs,
    dir: &Path,
    fsync: FsyncStrategy,
    model: &Model,
    last_version: u64,
) -> Rc<Engine<FaultFs>> {
    // Let the dropped engine's tasks (committer, segment preparation) wind down first.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let (engine, report) = Engine::open(fs.clone(), &config(dir, fsync)).await.unwrap();
    assert!(
        report.next_version > last_version,
        "versions must not go back after restart: {report:?} after {last_version}"
    );
    for (key, (value, version)) in model {
        let got = engine
            .get(key)
            .unwrap_or_else(|| panic!("lost {:?}", String::from_utf8_lossy(key)));
        assert_eq!((&got.value.to_vec(), got.version), (value, *version));
    }
    engine
}

#[test]
fn model_group_commit() {
    for seed in 0..4 {
        run_model(seed, FsyncStrategy::Group, 1500);
    }
}

#[test]
fn model_always() {
    run_model(100, FsyncStrategy::Always, 1000);
}
