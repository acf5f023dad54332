//! Writes and flushes: a write waits for a flush only when the active memtable is full while
//! another one is still being flushed, never merely because a flush is running.

use std::path::Path;

use ringkv::config::StoreConfig;
use ringkv::engine::Engine;
use ringkv::io::UringFs;

/// 16 KiB memtables flushed at 4 KiB/s in 4 KiB requests: a flush takes seconds. Blocks are
/// stored uncompressed: the background pace is in bytes written, and these tests size their
/// memtables and values (a repeated letter, which LZ4 shrinks tenfold) on the table bytes.
fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        compression: ringkv::sst::Compression::None,
        memtable_bytes: 16 << 10,
        background_write_bytes_per_sec: 4096,
        background_io_bytes: 4096,
        compaction_trigger: 64,
        l0_slowdown_tables: 64,
        l0_stop_tables: 80,
        ..StoreConfig::for_dir(dir)
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

#[test]
fn writes_go_on_during_a_flush_and_pause_only_when_the_next_memtable_fills() {
    let dir = tempfile::tempdir().unwrap();
    let value = format!("\"{}\"", "v".repeat(100)).into_bytes();
    tokio_uring::start(async {
        let (engine, _) = Engine::open(UringFs, &config(dir.path())).await.unwrap();
        let mut written = 0;
        while engine.stats().frozen_memtables == 0 {
            engine.set(&key(written), &value).await.unwrap();
            written += 1;
        }
        // The first memtable is frozen and its flush has a second or more to go. Writes into
        // the next one (half a memtable's worth) complete meanwhile.
        let during_flush = written + 30;
        while written < during_flush {
            engine.set(&key(written), &value).await.unwrap();
            written += 1;
        }
        let stats = engine.stats();
        assert_eq!(
            (stats.frozen_memtables, stats.flushes),
            (1, 0),
            "writes waited for the flush to finish: {stats:?}"
        );
        // Filling the next memtable too: the writes pause until the first flush is done, and
        // then go on; nothing is lost.
        while engine.stats().flushes == 0 {
            engine.set(&key(written), &value).await.unwrap();
            written += 1;
        }
        assert!(
            written > during_flush + 30,
            "only {written} writes before the flush finished"
        );
        engine.flush().await.unwrap();
        for i in 0..written {
            let got = engine.get(&key(i)).await.unwrap().expect("every write is kept");
            assert_eq!(&got.value[..], &value[..]);
        }
        engine.close().await.unwrap();
    });
}

/// Freeing a flushed memtable walks every entry (about 100 ms for a 64 MiB one of small values):
/// it must happen on the background thread, never on the serving ring, where it stalled every
/// request in flight.
#[test]
fn flushed_memtables_are_freed_on_the_background_thread() {
    let dir = tempfile::tempdir().unwrap();
    let value = format!("\"{}\"", "v".repeat(100)).into_bytes();
    tokio_uring::start(async {
        let config = StoreConfig {
            memtable_bytes: 64 << 10,
            ..StoreConfig::for_dir(dir.path())
        };
        let (engine, _) = Engine::open(UringFs, &config).await.unwrap();
        for i in 0..5000 {
            engine.set(&key(i % 2000), &value).await.unwrap();
        }
        engine.settle_background().await.unwrap();
        // The hand-over is a job after the install: give the background thread a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut stats = engine.stats();
        while stats.memtables_freed_in_background < stats.flushes && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            stats = engine.stats();
        }
        assert!(stats.flushes >= 5, "{stats:?}");
        assert_eq!(stats.memtables_freed_in_background, stats.flushes, "{stats:?}");
        engine.close().await.unwrap();
    });
}

/// Level 0 cannot run away. Compaction is slowed (96 KiB/s) below the rate writes fill 16 KiB
/// memtables, with the trigger at 2, the slowdown at 3 and the stop at 4 level-0 tables: level
/// 0 (counting memtables being flushed) never passes 4, so a read checks at most 4 level-0
/// tables; writes are first slowed, then stopped until compaction catches up, and the time
/// they spent so is reported. Every write completes and reads back.
#[test]
fn level_0_never_passes_the_stop_count_and_stalls_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let value = format!("\"{}\"", "v".repeat(100)).into_bytes();
    let config = StoreConfig {
        // Uncompressed, as `config` says: the pace is in table bytes.
        compression: ringkv::sst::Compression::None,
        memtable_bytes: 16 << 10,
        background_write_bytes_per_sec: 96 << 10,
        background_io_bytes: 4096,
        compaction_trigger: 2,
        l0_slowdown_tables: 3,
        l0_stop_tables: 4,
        ..StoreConfig::for_dir(dir.path())
    };
    tokio_uring::start(async {
        let (engine, _) = Engine::open(UringFs, &config).await.unwrap();
        let started = std::time::Instant::now();
        let mut highest = 0;
        let writes = 1500;
        for i in 0..writes {
            engine.set(&key(i), &value).await.unwrap();
            let stats = engine.stats();
            highest = highest.max(stats.l0_tables_with_flushes);
            assert!(stats.l0_tables_with_flushes <= 4, "write {i}: {stats:?}");
            if i % 100 == 99 {
                let got = engine.get(&key(i / 2)).await.unwrap().expect("an earlier write");
                assert_eq!(&got.value[..], &value[..]);
            }
        }
        let stats = engine.stats();
        eprintln!(
            "{writes} writes in {:?}: level 0 at most {highest} (stop 4); {:?}; {} flushes, {} compactions",
            started.elapsed(),
            stats.stalls,
            stats.flushes,
            stats.compactions
        );
        assert_eq!(highest, 4, "the stop count was never reached: {stats:?}");
        assert!(
            stats.stalls.stopped_writes > 0 && stats.stalls.stop_micros > 0,
            "{stats:?}"
        );
        assert!(stats.stalls.slowed_writes > 0, "{stats:?}");
        for i in 0..writes {
            assert!(engine.get(&key(i)).await.unwrap().is_some(), "write {i} lost");
        }
        engine.close().await.unwrap();
    });
}
