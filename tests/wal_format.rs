//! WAL format edge cases, one per test (`LevelDB`'s `log_test` style): records written by the real
//! writer through `io_uring` + `O_DIRECT`, bytes then damaged on disk, and recovery's verdict checked.

use std::path::Path;

use ringkv::config::{Durability, FsyncStrategy, SyncCall, WalIo};
use ringkv::io::UringFs;
use ringkv::wal::{self, record, LogPosition, RecordKind, WalOptions, WalWriter};
use ringkv::Error;

const SEGMENT_BYTES: u64 = 64 << 10;
const VALUE: &[u8] = &[b'v'; 100];

fn options(dir: &Path) -> WalOptions {
    WalOptions {
        dir: dir.to_path_buf(),
        segment_bytes: SEGMENT_BYTES,
        batch_bytes: 1 << 20,
        fsync: FsyncStrategy::Group,
        periodic_interval: std::time::Duration::from_secs(1),
        io: WalIo::Direct,
        sync_call: SyncCall::Fdatasync,
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

/// Bytes each test record takes (all keys have the same length).
fn record_bytes() -> u64 {
    record::encoded_len(&key(0), VALUE) as u64
}

/// Writes `batches[i]` records in batch i (each batch completes before the next starts), then
/// closes the writer cleanly (which ends the log with a durable mark).
fn write_log(dir: &Path, batches: &[usize]) {
    write_log_then(dir, batches, true);
}

/// As [`write_log`]; without `close`, the writer is dropped as a killed process leaves it.
fn write_log_then(dir: &Path, batches: &[usize], close: bool) {
    tokio_uring::start(async {
        let start = LogPosition {
            segment_number: 1,
            offset: 0,
            tail: Vec::new(),
        };
        let writer = WalWriter::start(UringFs, options(dir), start, 1);
        let mut i = 0;
        for &count in batches {
            let mut tickets = Vec::new();
            for _ in 0..count {
                tickets.push(
                    writer
                        .append(RecordKind::Put, &key(i), VALUE, Durability::Group)
                        .unwrap()
                        .1,
                );
                i += 1;
            }
            for ticket in tickets {
                ticket.wait().await.unwrap();
            }
        }
        if close {
            writer.close().await.unwrap();
        }
    });
}

/// Recovers; returns the keys replayed and the outcome.
fn recover(dir: &Path) -> (Vec<Vec<u8>>, Result<wal::RecoveredLog, Error>) {
    tokio_uring::start(async {
        let mut keys = Vec::new();
        let result = wal::recover(&UringFs, dir, 0, ringkv::coding::to_usize(SEGMENT_BYTES), |r| {
            keys.push(r.key.to_vec());
        })
        .await;
        (keys, result)
    })
}

fn segment(dir: &Path, number: u64) -> std::path::PathBuf {
    wal::segment::segment_path(dir, number)
}

fn damage(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

fn expect_corruption_at(result: Result<wal::RecoveredLog, Error>, expected_offset: u64) {
    match result {
        Err(Error::WalCorruption { path, offset, reason }) => {
            assert_eq!(offset, expected_offset, "{reason}");
            assert!(path.ends_with("wal-0000000000000001.log"), "{path:?}");
        }
        other => panic!("expected corruption at {expected_offset}, got {other:?}"),
    }
}

#[test]
fn clean_log_replays_everything_and_continues_after_it() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &[1, 3, 1]);
    let (keys, result) = recover(dir.path());
    let log = result.unwrap();
    assert_eq!(keys, (0..5).map(key).collect::<Vec<_>>());
    assert_eq!(log.next_seq, 6);
    assert_eq!(log.position.segment_number, 1);
    // After the durable mark the clean close wrote, which claims every byte before it.
    let mark_at = 5 * record_bytes();
    assert_eq!(log.position.offset, mark_at + record::SEGMENT_END_BYTES as u64);
    assert!(!log.torn_tail);
    let bytes = std::fs::read(segment(dir.path(), 1)).unwrap();
    let (mark, _) = record::decode(
        &bytes,
        ringkv::coding::to_usize(mark_at),
        ringkv::coding::to_usize(SEGMENT_BYTES),
    )
    .unwrap();
    assert_eq!(mark.kind, RecordKind::DurableMark);
    assert_eq!((mark.seq, mark.durable_prefix()), (5, Some(mark_at)));
}

/// A clean close claims its last batch durable: damage there is corruption, not a torn tail
/// (before the mark, recovery dropped the last batch's acknowledged writes as torn).
#[test]
fn damage_to_the_last_batch_after_a_clean_close_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &[2, 3]);
    let at = 2 * record_bytes();
    damage(&segment(dir.path(), 1), at + 30, b"\0\0\0\0\0\0");
    let (_, result) = recover(dir.path());
    expect_corruption_at(result, at);
}

#[test]
fn torn_tail_of_the_last_batch_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    write_log_then(dir.path(), &[2, 3], false);
    // The crash tore the last batch: its first record's bytes never reached the disk, its later
    // records did.
    let torn_at = 2 * record_bytes();
    damage(&segment(dir.path(), 1), torn_at + 30, b"\0\0\0\0\0\0");
    let (keys, result) = recover(dir.path());
    let log = result.unwrap();
    assert_eq!(keys, vec![key(0), key(1)]);
    assert!(log.torn_tail);
    assert_eq!(log.position.offset, torn_at);
    // Versions seen in the torn batch are never handed out again.
    assert_eq!(log.next_seq, 6);
}

#[test]
fn checksum_mismatch_before_a_later_batch_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &[1, 1, 1, 1]);
    let at = record_bytes();
    damage(&segment(dir.path(), 1), at + 40, b"X");
    let (_, result) = recover(dir.path());
    expect_corruption_at(result, at);
}

#[test]
fn bad_length_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &[1, 1, 1]);
    let at = record_bytes();
    damage(&segment(dir.path(), 1), at + 4, &u32::MAX.to_le_bytes());
    let (_, result) = recover(dir.path());
    expect_corruption_at(result, at);
}

#[test]
fn zeroed_block_inside_the_log_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    // 40 records in separate batches span several 4 KiB blocks.
    write_log(dir.path(), &[1; 40]);
    damage(&segment(dir.path(), 1), 0, &[0; 4096]);
    let (_, result) = recover(dir.path());
    expect_corruption_at(result, 0);
}

#[test]
fn zeroed_tail_after_the_last_record_is_the_end_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &[1, 1]);
    let end = 2 * record_bytes();
    damage(&segment(dir.path(), 1), end, &vec![0; 8192]);
    let (keys, result) = recover(dir.path());
    assert_eq!(keys.len(), 2);
    assert_eq!(result.unwrap().position.offset, end);
}

#[test]
fn damage_in_a_full_segment_is_found_through_the_next_segment() {
    let dir = tempfile::tempdir().unwrap();
    // Enough single-record batches to fill segment 1 and spill into segment 2.
    let per_segment = ringkv::coding::to_usize(SEGMENT_BYTES / record_bytes());
    write_log(dir.path(), &vec![1; per_segment + 20]);
    let (keys, result) = recover(dir.path());
    assert_eq!(keys.len(), per_segment + 20);
    assert_eq!(result.unwrap().position.segment_number, 2);
    // The last record of segment 1 is damaged: segment 2's records prove it was once complete.
    let last = (per_segment as u64 - 2) * record_bytes();
    damage(&segment(dir.path(), 1), last + 30, b"XYZ");
    let (_, result) = recover(dir.path());
    expect_corruption_at(result, last);
}

#[test]
fn missing_middle_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let per_segment = ringkv::coding::to_usize(SEGMENT_BYTES / record_bytes());
    write_log(dir.path(), &vec![1; 2 * per_segment + 10]);
    std::fs::remove_file(segment(dir.path(), 2)).unwrap();
    let (_, result) = recover(dir.path());
    assert!(matches!(result, Err(Error::WalCorruption { .. })), "{result:?}");
}

#[test]
fn writing_resumes_at_the_recovered_position() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &[3]);
    let (_, result) = recover(dir.path());
    let log = result.unwrap();
    tokio_uring::start(async {
        let writer = WalWriter::start(UringFs, options(dir.path()), log.position.clone(), log.next_seq);
        let (seq, ticket) = writer
            .append(RecordKind::Delete, &key(0), b"", Durability::Group)
            .unwrap();
        assert_eq!(seq, 4);
        ticket.wait().await.unwrap();
        writer.close().await.unwrap();
    });
    let (keys, result) = recover(dir.path());
    assert_eq!(keys.len(), 4);
    assert_eq!(result.unwrap().next_seq, 5);
}
