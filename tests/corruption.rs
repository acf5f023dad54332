//! Damage to the files a store depends on is reported, never silently turned into lost data.

use std::collections::BTreeSet;
use std::path::Path;

use ringkv::config::StoreConfig;
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
/// Stopping after different write counts makes both cases happen.
#[test]
fn a_damaged_last_manifest_edit_never_loses_acknowledged_writes() {
    let (mut refused, mut replayed) = (0, 0);
    for writes in (600..=720).step_by(10) {
        if damage_last_manifest_edit(writes) {
            refused += 1;
        } else {
            replayed += 1;
        }
    }
    eprintln!(
        "last manifest edit damaged: {refused} stores refused to open, {replayed} opened with every write"
    );
    assert!(
        refused > 0,
        "no case where the damaged edit had retired WAL segments"
    );
}

/// Returns whether opening was refused.
fn damage_last_manifest_edit(writes: usize) -> bool {
    let dir = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let (engine, _) = Engine::open(UringFs, &config(dir.path())).await.unwrap();
        for i in 0..writes {
            engine.set(&key(i), &value(i)).await.unwrap();
        }
        engine.flush().await.unwrap();
        engine.settle_background().await.unwrap();
        engine.close().await.unwrap();
    });
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
