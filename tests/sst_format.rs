//! SST and manifest format edge cases, one per test, on real files through `io_uring` and `O_DIRECT`
//! (`docs/format.md`, "SST files" and "Manifest"): a table round-trips; a flipped bit in a data
//! block, the footer, the filter or the index is reported with the file and the offset; a
//! truncated table is refused; a torn manifest tail is dropped, damage before a valid edit is not.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringkv::error::Error;
use ringkv::filename::FileKind;
use ringkv::io::UringFs;
use ringkv::manifest;
use ringkv::rate_limit::RateLimiter;
use ringkv::sst::{format::FOOTER_BYTES, Compression, TableBuilder, TableMeta, TableReaders, TableScanner};

/// Key `i` and its value; every 7th key is a tombstone, every 50th value is 10 KiB (a block of
/// its own), so blocks of every shape appear.
fn entry(i: u32) -> (Vec<u8>, u64, Option<Vec<u8>>) {
    let key = format!("key{i:06}").into_bytes();
    let value = match i {
        _ if i.is_multiple_of(7) => None,
        _ if i.is_multiple_of(50) => Some(vec![b'v'; 10 << 10]),
        _ => Some(format!("\"value {i}\"").into_bytes()),
    };
    (key, u64::from(i) + 1000, value)
}

const ENTRIES: u32 = 5000;

async fn write_table(dir: &Path) -> Arc<TableMeta> {
    let limiter = RateLimiter::new(0, 1 << 20);
    let mut builder = TableBuilder::create(&UringFs, dir.to_path_buf(), 7, &limiter, Compression::Lz4)
        .await
        .unwrap();
    for i in 0..ENTRIES {
        let (key, version, value) = entry(i);
        builder.add(&key, version, value.as_deref()).await.unwrap();
    }
    builder.finish().await.unwrap()
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[ringkv::coding::to_usize(offset)] ^= 0x04;
    std::fs::write(path, bytes).unwrap();
}

fn corruption_at(error: Error) -> (PathBuf, u64, String) {
    match error {
        Error::Corruption {
            kind: "SST",
            path,
            offset,
            reason,
        } => (path, offset, reason),
        other => panic!("expected SST corruption, got {other:?}"),
    }
}

#[test]
fn table_round_trips_through_point_reads_and_scans() {
    let dir = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let written = write_table(dir.path()).await;
        assert_eq!(written.path, FileKind::Table(7).path(dir.path()));
        assert!(!dir.path().join("0000000000000007.sst.tmp").exists());
        assert_eq!(written.file_bytes % 4096, 0);
        let meta = TableMeta::load(&UringFs, &written.path, 7).await.unwrap();
        assert_eq!(meta.entry_count(), u64::from(ENTRIES));
        assert_eq!(meta.max_seq(), u64::from(ENTRIES) + 999);
        assert_eq!(&meta.smallest[..], b"key000000");
        assert_eq!(&meta.largest[..], format!("key{:06}", ENTRIES - 1).as_bytes());
        let readers = TableReaders::new(UringFs, 1 << 20, std::num::NonZeroUsize::new(16).unwrap());
        readers.open(&meta).await.unwrap();
        for i in (0..ENTRIES).step_by(3) {
            let (key, version, value) = entry(i);
            let found = readers.get(&meta, &key).await.unwrap();
            assert_eq!(
                found.map(|(v, value)| (v, value.map(|b| b.to_vec()))),
                Some((version, value))
            );
        }
        for absent in [&b"key"[..], b"key000000x", b"key999999", b"a", b"z"] {
            assert_eq!(readers.get(&meta, absent).await.unwrap(), None);
        }
        let unlimited = RateLimiter::new(0, 1 << 20);
        let mut scanner = TableScanner::open(&UringFs, meta.clone(), &unlimited)
            .await
            .unwrap();
        let mut i = 0;
        while let Some(found) = scanner.next().await.unwrap() {
            let (key, version, value) = entry(i);
            assert_eq!(
                (found.key.to_vec(), found.seq, found.value.map(|b| b.to_vec())),
                (key, version, value)
            );
            i += 1;
        }
        assert_eq!(i, ENTRIES);
    });
}

#[test]
fn bloom_filter_skips_absent_keys_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let meta = write_table(dir.path()).await;
        let false_positives = (0..10_000)
            .filter(|i| meta.filter.may_contain(format!("key{i:06}x").as_bytes()))
            .count();
        assert!(
            false_positives < 200,
            "{false_positives} of 10,000 absent keys pass the filter"
        );
        let readers = TableReaders::new(UringFs, 1 << 20, std::num::NonZeroUsize::new(16).unwrap());
        readers.open(&meta).await.unwrap();
        for i in 0..1000 {
            readers
                .get(&meta, format!("key{i:06}x").as_bytes())
                .await
                .unwrap();
        }
        let (_, misses, _) = readers.cache_stats();
        assert!(misses < 30, "{misses} block reads for 1,000 absent keys");
    });
}

#[test]
fn bad_block_checksum_names_the_file_and_block_offset() {
    let dir = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let meta = write_table(dir.path()).await;
        let block = &meta.index[3];
        flip(&meta.path, block.offset + 20);
        // The footer, filter and index are intact: the table opens, and the damage shows on read.
        let meta = TableMeta::load(&UringFs, &meta.path, 7).await.unwrap();
        let readers = TableReaders::new(UringFs, 1 << 20, std::num::NonZeroUsize::new(16).unwrap());
        readers.open(&meta).await.unwrap();
        // A key the table holds in block 3 (index entries hold separators, not keys).
        let key_in = |block: usize| {
            (0..ENTRIES)
                .map(|i| entry(i).0)
                .find(|key| meta.block_for(key) == Some(block))
                .expect("every block holds a key")
        };
        let key = key_in(3);
        let (path, offset, reason) = corruption_at(readers.get(&meta, &key).await.unwrap_err());
        assert_eq!((path, offset), (meta.path.clone(), meta.index[3].offset));
        assert!(reason.contains("checksum"), "{reason}");
        // Other blocks still read.
        let other = key_in(10);
        assert!(readers.get(&meta, &other).await.is_ok());
        let unlimited = RateLimiter::new(0, 1 << 20);
        let mut scanner = TableScanner::open(&UringFs, meta.clone(), &unlimited)
            .await
            .unwrap();
        let error = loop {
            match scanner.next().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the scan missed the damaged block"),
                Err(error) => break error,
            }
        };
        assert_eq!(corruption_at(error).1, meta.index[3].offset);
    });
}

#[test]
fn bad_footer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let meta = write_table(dir.path()).await;
        let footer_at = meta.file_bytes - FOOTER_BYTES as u64;
        for (field, at) in [("magic", 0), ("entry count", 16), ("checksum", 61)] {
            flip(&meta.path, footer_at + at);
            let error = TableMeta::load(&UringFs, &meta.path, 7).await.unwrap_err();
            let (path, offset, reason) = corruption_at(error);
            assert_eq!(
                (path, offset),
                (meta.path.clone(), footer_at),
                "{field}: {reason}"
            );
            flip(&meta.path, footer_at + at);
        }
        assert!(TableMeta::load(&UringFs, &meta.path, 7).await.is_ok());
    });
}

#[test]
fn bad_filter_or_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let meta = write_table(dir.path()).await;
        let footer = meta.footer;
        flip(&meta.path, footer.filter_offset + 100);
        let (_, offset, reason) = corruption_at(TableMeta::load(&UringFs, &meta.path, 7).await.unwrap_err());
        assert_eq!(offset, footer.filter_offset, "{reason}");
        flip(&meta.path, footer.filter_offset + 100);
        flip(&meta.path, footer.index_offset + 30);
        let (_, offset, reason) = corruption_at(TableMeta::load(&UringFs, &meta.path, 7).await.unwrap_err());
        assert_eq!(offset, footer.index_offset, "{reason}");
    });
}

#[test]
fn truncated_table_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let meta = write_table(dir.path()).await;
        let file = std::fs::OpenOptions::new().write(true).open(&meta.path).unwrap();
        // Cut at a block boundary (a torn copy), then mid-block.
        file.set_len(meta.file_bytes - 4096).unwrap();
        let (_, _, reason) = corruption_at(TableMeta::load(&UringFs, &meta.path, 7).await.unwrap_err());
        assert!(reason.contains("magic") || reason.contains("footer"), "{reason}");
        file.set_len(meta.file_bytes - 4096 - 100).unwrap();
        let (_, _, reason) = corruption_at(TableMeta::load(&UringFs, &meta.path, 7).await.unwrap_err());
        assert!(reason.contains("truncated"), "{reason}");
        file.set_len(0).unwrap();
        assert!(TableMeta::load(&UringFs, &meta.path, 7).await.is_err());
    });
}

#[test]
fn manifest_torn_tail_is_dropped_but_damage_before_a_valid_edit_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        use ringkv::version::{Version, VersionEdit};
        let snapshot = Version::default().snapshot();
        let mut writer = manifest::ManifestWriter::create(&UringFs, dir.path(), &snapshot)
            .await
            .unwrap();
        for seq in [10, 20, 30] {
            let edit = VersionEdit {
                flushed_seq: Some(seq),
                ..VersionEdit::default()
            };
            writer.append(&edit).await.unwrap();
        }
        drop(writer);
        let state = manifest::recover(&UringFs, dir.path()).await.unwrap();
        assert_eq!((state.edits, state.flushed_seq), (4, 30));
        let path = manifest::manifest_path(dir.path());
        // The snapshot is an 8-byte frame header and three 9-byte fields; each later edit is a
        // header and one 9-byte field.
        let edit_bytes = 8 + 9;
        let end = 8 + 27 + 3 * edit_bytes;
        assert_eq!(std::fs::read(&path).unwrap().len(), 4096);
        // The last edit torn: dropped.
        flip(&path, u64::try_from(end - 3).unwrap());
        let state = manifest::recover(&UringFs, dir.path()).await.unwrap();
        assert_eq!((state.edits, state.flushed_seq), (3, 20));
        flip(&path, u64::try_from(end - 3).unwrap());
        // The second-to-last damaged while the last is intact: corruption at that edit's offset.
        let second_last = end - 2 * edit_bytes;
        flip(&path, u64::try_from(second_last + 10).unwrap());
        match manifest::recover(&UringFs, dir.path()).await.unwrap_err() {
            Error::Corruption {
                kind: "manifest",
                offset,
                ..
            } => assert_eq!(offset, u64::try_from(second_last).unwrap()),
            other => panic!("{other:?}"),
        }
    });
}

/// `tests/fixtures/sst-format-1`: a data directory written by ringkv before data blocks could be
/// compressed (SST format 1, at `6553e45`): 1,500 JSON documents `doc:00000` to `doc:01499` set
/// over HTTP with `--memtable-bytes 64KiB --wal-segment-bytes 256KiB --max-value-bytes 64KiB`,
/// every tenth deleted, then a clean SIGTERM. Today's code reads it, and compaction rewrites its
/// tables in format 2 without losing anything.
#[test]
fn tables_of_format_1_are_read_and_rewritten_by_compaction() {
    use ringkv::config::StoreConfig;
    use ringkv::engine::Engine;

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sst-format-1");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let formats = |dir: &Path| -> Vec<u32> {
        let mut formats = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "sst") {
                let bytes = std::fs::read(&path).unwrap();
                let footer = &bytes[bytes.len() - FOOTER_BYTES..];
                formats.push(u32::from_le_bytes(footer[8..12].try_into().unwrap()));
            }
        }
        formats
    };
    assert!(formats(dir.path()).iter().all(|&format| format == 1));
    assert!(formats(dir.path()).len() >= 3);
    let document = |i: u32| {
        let tags = ["[]", "[\"a\"]", "[\"a\", \"b\"]"][(i % 3) as usize];
        format!(
            "{{\"id\": {i}, \"name\": \"user {i}\", \"email\": \"user{i}@example.com\", \"tags\": {tags}, \"score\": {}}}",
            i * 7 % 101
        )
    };
    let config = StoreConfig {
        wal_segment_bytes: 256 << 10,
        max_value_bytes: 64 << 10,
        memtable_bytes: 64 << 10,
        ..StoreConfig::for_dir(dir.path())
    };
    tokio_uring::start(async {
        let (engine, _) = Engine::open(UringFs, &config).await.unwrap();
        let check = |engine: std::rc::Rc<Engine<UringFs>>| async move {
            for i in 0..1500 {
                let got = engine.get(format!("doc:{i:05}").as_bytes()).await.unwrap();
                if i % 10 == 0 {
                    assert_eq!(got, None, "doc {i} was deleted");
                } else {
                    assert_eq!(got.map(|v| v.value), Some(document(i).into()), "doc {i}");
                }
            }
        };
        check(engine.clone()).await;
        // New keys between the old ones: every compaction of level 0 overlaps the old tables.
        for round in 0..4 {
            for i in 0..1500 {
                let key = format!("doc:{i:05}/{round}");
                engine.set(key.as_bytes(), document(i).as_bytes()).await.unwrap();
            }
            engine.flush().await.unwrap();
        }
        engine.settle_background().await.unwrap();
        check(engine.clone()).await;
        engine.close().await.unwrap();
    });
    let after = formats(dir.path());
    assert!(
        after.iter().all(|&format| format == 2),
        "compaction rewrote every format-1 table: {after:?}"
    );
}
