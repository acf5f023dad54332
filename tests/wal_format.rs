//! WAL format edge cases, one per test (`LevelDB`'s `log_test` style): records written by the real
//! writer through `io_uring` + `O_DIRECT`, bytes then damaged on disk, and recovery's verdict checked.

use std::path::Path;

use ringkv::config::{Durability, FsyncStrategy, SyncCall, WalIo};
use ringkv::io::UringFs;
use ringkv::wal::{self, record, LogPosition, RecordKind, RecyclePool, WalOptions, WalWriter};
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
        recycle: std::sync::Arc::new(RecyclePool::new(0, 0)),
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
    recover_from(dir, 0)
}

/// Recovers from segment `first_live` on (the ones below are retired).
fn recover_from(dir: &Path, first_live: u64) -> (Vec<Vec<u8>>, Result<wal::RecoveredLog, Error>) {
    tokio_uring::start(async {
        let mut keys = Vec::new();
        let result = wal::recover(
            &UringFs,
            dir,
            first_live,
            ringkv::coding::to_usize(SEGMENT_BYTES),
            |r| {
                keys.push(r.key.to_vec());
            },
        )
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
        1,
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

/// Retires segment 1 (written by [`write_log`]) into a pool, as a flush does, and starts a writer
/// at the start of segment 2 with it: the writer recycles segment 1's file. Appends `records`
/// (key, value) in one go; closes cleanly if `close`. Returns how segment 2 was made ready.
fn write_recycled_life(dir: &Path, records: &[(Vec<u8>, Vec<u8>)], close: bool) -> (u64, u64) {
    // The spare the first writer prepared: recycling is for a segment that does not exist yet.
    let _ = std::fs::remove_file(segment(dir, 2));
    let pool = std::sync::Arc::new(RecyclePool::new(1, 0));
    assert!(pool.offer(1));
    tokio_uring::start(async {
        let start = LogPosition {
            segment_number: 2,
            offset: 0,
            tail: Vec::new(),
        };
        let options = WalOptions {
            recycle: pool.clone(),
            ..options(dir)
        };
        let writer = WalWriter::start(UringFs, options, start, 1000);
        writer.prepare().await.unwrap();
        let tickets: Vec<_> = records
            .iter()
            .map(|(key, value)| {
                writer
                    .append(RecordKind::Put, key, value, Durability::Group)
                    .unwrap()
                    .1
            })
            .collect();
        for ticket in tickets {
            ticket.wait().await.unwrap();
        }
        if close {
            writer.close().await.unwrap();
        }
        let stats = writer.stats();
        (stats.segments_recycled.get(), stats.segments_created.get())
    })
}

fn new_records(count: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..count)
        .map(|i| (format!("new-{i:04}").into_bytes(), VALUE.to_vec()))
        .collect()
}

#[test]
fn a_recycled_segment_replays_only_its_new_life() {
    let dir = tempfile::tempdir().unwrap();
    // The old life fills a quarter of the segment with valid records.
    write_log(dir.path(), &[40, 40, 40]);
    let (recycled, created) = write_recycled_life(dir.path(), &new_records(3), true);
    assert_eq!(
        (recycled, created),
        (1, 0),
        "segment 2 is segment 1's file, renamed"
    );
    assert!(!segment(dir.path(), 1).exists());
    assert_eq!(
        std::fs::metadata(segment(dir.path(), 2)).unwrap().len(),
        SEGMENT_BYTES
    );
    let (keys, result) = recover_from(dir.path(), 2);
    let log = result.unwrap();
    assert_eq!(
        keys,
        new_records(3).into_iter().map(|(key, _)| key).collect::<Vec<_>>()
    );
    assert!(!log.torn_tail, "the previous life reads as the end of this one");
    assert_eq!(log.next_seq, 1003);
    assert_eq!(log.position.segment_number, 2);
}

#[test]
fn an_empty_new_life_reads_as_an_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &[40, 40, 40]);
    // Killed right after the segment was made ready: the file holds only its previous life.
    write_recycled_life(dir.path(), &[], false);
    let (keys, result) = recover_from(dir.path(), 2);
    let log = result.unwrap();
    assert!(
        keys.is_empty(),
        "{} records of the previous life replayed",
        keys.len()
    );
    assert!(!log.torn_tail);
    assert_eq!((log.position.segment_number, log.position.offset), (2, 0));
}

/// The write unit the file system gives segments in `dir` (what the writer should find).
fn sector_of(dir: &Path) -> usize {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("probe");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .unwrap();
    let unit = ringkv::io::write_unit_from(ringkv::sys::direct_io_offset_align(file.as_raw_fd()).unwrap());
    std::fs::remove_file(probe).unwrap();
    unit
}

#[test]
fn a_small_batch_writes_one_sector_not_a_block() {
    let dir = tempfile::tempdir().unwrap();
    let unit = sector_of(dir.path());
    // ext4 on this machine's disk (512-byte logical sectors) takes direct writes in sectors.
    eprintln!("direct-I/O unit here: {unit} bytes");
    let (written, writer_unit) = tokio_uring::start(async {
        let start = LogPosition {
            segment_number: 1,
            offset: 0,
            tail: Vec::new(),
        };
        let writer = WalWriter::start(UringFs, options(dir.path()), start, 1);
        writer.prepare().await.unwrap();
        for i in 0..2 {
            let (_, ticket) = writer
                .append(RecordKind::Put, &key(i), VALUE, Durability::Group)
                .unwrap();
            ticket.wait().await.unwrap();
        }
        (writer.stats().written_bytes.get(), writer.write_unit())
    });
    assert_eq!(writer_unit, unit);
    // Two records of 136 bytes, each its own batch: one unit each (the second rewrites the
    // first's unit), not a 4 KiB block each.
    assert_eq!(record_bytes(), 136);
    assert_eq!(written, 2 * unit as u64);
    let (keys, result) = recover(dir.path());
    assert_eq!(keys.len(), 2);
    assert!(!result.unwrap().torn_tail);
}

#[test]
fn a_new_life_ending_on_a_unit_boundary_ends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let unit = sector_of(dir.path());
    write_log(dir.path(), &[40, 40, 40]);
    // Records of the usual size and a longer last one that together end exactly at the first
    // unit boundary, where the previous life has the middle of a record: the writer writes the
    // next unit's zeros too.
    let usual = ringkv::coding::to_usize(record_bytes());
    let full = unit / usual - 1;
    let mut records = new_records(full + 1);
    let framing = record::encoded_len(&records[full].0, b"");
    records[full].1 = vec![b'w'; unit - full * usual - framing];
    let total: usize = records
        .iter()
        .map(|(key, value)| record::encoded_len(key, value))
        .sum();
    assert_eq!(total, unit);
    write_recycled_life(dir.path(), &records, false);
    let (keys, result) = recover_from(dir.path(), 2);
    let log = result.unwrap();
    assert_eq!(keys.len(), full + 1);
    assert!(!log.torn_tail, "the end of the log read as a torn record");
    assert_eq!(log.position.offset, unit as u64);
}

#[test]
fn segments_of_the_first_format_still_recover_and_continue() {
    let dir = tempfile::tempdir().unwrap();
    // A segment as binaries before the segment tag wrote it: records without a tag, each
    // its own durable batch (claiming everything before it).
    let mut bytes = vec![0u8; ringkv::coding::to_usize(SEGMENT_BYTES)];
    let mut at = 0;
    for i in 0..3 {
        let len = record::encoded_len(&key(i), VALUE);
        let claim = u32::try_from(at + 1).unwrap();
        record::encode_untagged(
            &mut bytes[at..at + len],
            RecordKind::Put,
            i as u64 + 1,
            claim,
            &key(i),
            VALUE,
        );
        at += len;
    }
    std::fs::write(segment(dir.path(), 1), &bytes).unwrap();
    let (keys, result) = recover(dir.path());
    let log = result.unwrap();
    assert_eq!(keys, (0..3).map(key).collect::<Vec<_>>());
    assert!(!log.torn_tail);
    // Today's writer continues the same segment with tagged records.
    tokio_uring::start(async {
        let writer = WalWriter::start(UringFs, options(dir.path()), log.position, log.next_seq);
        for i in 3..5 {
            let (_, ticket) = writer
                .append(RecordKind::Put, &key(i), VALUE, Durability::Group)
                .unwrap();
            ticket.wait().await.unwrap();
        }
        writer.close().await.unwrap();
    });
    let (keys, result) = recover(dir.path());
    assert_eq!(keys, (0..5).map(key).collect::<Vec<_>>());
    assert!(!result.unwrap().torn_tail);
}
