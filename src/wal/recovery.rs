//! WAL recovery: replays segments in order, finds where the log ends, and tells a torn tail from
//! corruption by the rules in `docs/format.md` ("Recovery"). Hands each record to the caller;
//! knows nothing of memtables.

use std::path::{Path, PathBuf};

use super::record::{self, Invalid, Record, RecordKind, RECORD_ALIGN};
use super::segment;
use super::writer::LogPosition;
use crate::error::{Error, IoContext, Result};
use crate::filename::FileKind;
use crate::io::{round_down_to_block, AlignedBuf, DataFile, FileSystem, OpenMode};

/// What recovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredLog {
    /// Where the writer continues.
    pub position: LogPosition,
    /// One more than the largest seq seen anywhere, torn records included.
    pub next_seq: u64,
    /// Put and delete records replayed.
    pub records: u64,
    pub segments: u64,
    /// Bytes after the end of the log that held part of an unacknowledged, torn batch.
    pub torn_tail: bool,
    /// The first segment number no file had at start: segments from here on are created (or
    /// recycled) by this process and hold only tagged records, so only they may be recycled.
    pub first_new_segment: u64,
}

/// Replays the WAL in `dir` from segment `first_live_segment` (older segments are retired: their
/// records are in tables, and they are deleted here if still present), calling `apply` for every
/// put and delete in log order. `max_payload_bytes` is the largest record payload the store could
/// have written.
pub async fn recover<F: FileSystem>(
    fs: &F,
    dir: &Path,
    first_live_segment: u64,
    max_payload_bytes: usize,
    mut apply: impl FnMut(&Record<'_>),
) -> Result<RecoveredLog> {
    let numbers = list_segments(fs, dir, first_live_segment).await?;
    let mut recovered = RecoveredLog {
        position: LogPosition {
            segment_number: numbers.last().map_or(first_live_segment.max(1), |last| last + 1),
            offset: 0,
            tail: Vec::new(),
        },
        next_seq: 1,
        records: 0,
        segments: numbers.len() as u64,
        torn_tail: false,
        first_new_segment: numbers.last().map_or(first_live_segment.max(1), |last| last + 1),
    };
    let mut last_seq = 0;
    for (index, &number) in numbers.iter().enumerate() {
        let path = segment::segment_path(dir, number);
        let bytes = read_segment(fs, &path).await?;
        let bytes = bytes.as_slice();
        let mut offset = 0;
        let stop = loop {
            match record::decode(bytes, offset, max_payload_bytes, number) {
                Ok((record, _)) if record.kind == RecordKind::SegmentEnd && record.seq >= last_seq => {
                    // Records in the next segment were written after this one: a record there
                    // with a lower seq is stale, left by a life whose tail an earlier recovery
                    // dropped (found by the simulator, seed 400000: a segment end written by a
                    // life that lost its other writes let such records come back).
                    last_seq = record.seq;
                    break None;
                }
                Ok((record, next)) if record.kind == RecordKind::DurableMark && record.seq >= last_seq => {
                    last_seq = record.seq;
                    offset = next;
                }
                Ok((record, next)) if record.seq > last_seq => {
                    apply(&record);
                    recovered.records += 1;
                    last_seq = record.last_seq();
                    offset = next;
                }
                Ok(_) => {
                    break Some((
                        "sequence number does not increase (stale record)".to_string(),
                        false,
                    ))
                }
                // Zeros, or a record of a recycled file's previous life, are where a segment's
                // records end; anything else is a damaged record.
                Err(invalid) => {
                    let end = matches!(invalid, Invalid::Zero | Invalid::OtherLife { .. });
                    break Some((invalid.to_string(), !end));
                }
            }
        };
        let Some((reason, damaged)) = stop else { continue };
        // A damaged record with nothing valid after it is dropped as a torn tail, and said so.
        recovered.torn_tail |= damaged;
        // The log ends here unless a record written later says these bytes were once durable.
        let mut max_seq = last_seq;
        let mut later_records = Vec::new();
        later_records.extend(
            valid_records_after(bytes, number, offset + RECORD_ALIGN, last_seq, max_payload_bytes)
                .map(|found| (path.clone(), found)),
        );
        for &later in &numbers[index + 1..] {
            let later_path = segment::segment_path(dir, later);
            let later_bytes = read_segment(fs, &later_path).await?;
            later_records.extend(
                valid_records_after(later_bytes.as_slice(), later, 0, last_seq, max_payload_bytes)
                    .map(|found| (later_path.clone(), found)),
            );
        }
        for (found_in, found) in &later_records {
            // A claim in this segment covers the stop only if it reaches past it; any claim in a
            // later segment covers all of this one.
            let covers_stop = match found.durable_prefix {
                Some(prefix) if *found_in == path => prefix > offset as u64,
                Some(_) => true,
                None => false,
            };
            if covers_stop {
                return Err(corruption(&path, offset, &reason, found_in, found));
            }
            max_seq = max_seq.max(found.seq);
            recovered.torn_tail = true;
        }
        let block = crate::coding::to_usize(round_down_to_block(offset as u64));
        recovered.position = LogPosition {
            segment_number: number,
            offset: offset as u64,
            tail: bytes[block..offset].to_vec(),
        };
        recovered.next_seq = max_seq + 1;
        return Ok(recovered);
    }
    recovered.next_seq = last_seq + 1;
    Ok(recovered)
}

/// A valid record found after the place where reading stopped.
struct LaterRecord {
    seq: u64,
    durable_prefix: Option<u64>,
    offset: usize,
}

fn corruption(path: &Path, offset: usize, reason: &str, found_in: &Path, found: &LaterRecord) -> Error {
    Error::WalCorruption {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: format!(
            "{reason}, but record seq {} at offset {} of {} was written when its segment was durable up to offset {} and every earlier segment in full, so these bytes were once a complete record",
            found.seq,
            found.offset,
            found_in.display(),
            found.durable_prefix.unwrap_or_default()
        ),
    }
}

/// Every checksum-valid record of segment `number` at or after `from` (at record alignment) with a
/// seq above `above_seq`, segment-end records included (they carry a durable claim too). Records
/// of a recycled file's previous life are not this segment's.
fn valid_records_after(
    bytes: &[u8],
    number: u64,
    from: usize,
    above_seq: u64,
    max_payload_bytes: usize,
) -> impl Iterator<Item = LaterRecord> + '_ {
    (from..bytes.len()).step_by(RECORD_ALIGN).filter_map(move |at| {
        match record::decode(bytes, at, max_payload_bytes, number) {
            Ok((record, _)) if record.seq > above_seq => Some(LaterRecord {
                seq: record.last_seq(),
                durable_prefix: record.durable_prefix(),
                offset: at,
            }),
            _ => None,
        }
    })
}

/// Live segment numbers in `dir`, ascending and without gaps; retired segments and leftovers of an
/// unfinished pre-write are removed.
async fn list_segments<F: FileSystem>(fs: &F, dir: &Path, first_live_segment: u64) -> Result<Vec<u64>> {
    let mut numbers = Vec::new();
    let entries = fs.list_dir(dir).context("list", dir)?;
    for path in entries {
        let retired_or_unfinished = match FileKind::of_path(&path) {
            Some(FileKind::WalSegment(number)) if number >= first_live_segment => {
                numbers.push(number);
                false
            }
            Some(FileKind::WalSegment(_) | FileKind::WalSegmentTmp(_)) => true,
            _ => false,
        };
        if retired_or_unfinished {
            fs.remove(&path).await.context("remove", &path)?;
        }
    }
    numbers.sort_unstable();
    // The log starts at the manifest's first live segment (segment 1 in a new store). A later
    // first segment means segments were retired by a manifest edit that recovery no longer sees
    // (damaged after it was synced): their records are only in tables the older manifest does
    // not name, so going on would lose them.
    if let Some(&first) = numbers.first() {
        let expected = first_live_segment.max(1);
        if first > expected {
            return Err(Error::WalCorruption {
                path: segment::segment_path(dir, expected),
                offset: 0,
                reason: format!(
                    "the manifest says the log starts at segment {expected}, but the oldest segment is {first}: a manifest edit that retired segments is missing"
                ),
            });
        }
    }
    for pair in numbers.windows(2) {
        if pair[1] != pair[0] + 1 {
            let missing: PathBuf = segment::segment_path(dir, pair[0] + 1);
            return Err(Error::WalCorruption {
                path: missing,
                offset: 0,
                reason: format!("segment missing between {} and {}", pair[0], pair[1]),
            });
        }
    }
    Ok(numbers)
}

async fn read_segment<F: FileSystem>(fs: &F, path: &Path) -> Result<AlignedBuf> {
    let file = fs.open(path, OpenMode::READ).await.context("open", path)?;
    let size = file.size().await.context("stat", path)?;
    let buf = AlignedBuf::zeroed(crate::coding::to_usize(size));
    let (result, buf) = file.read_at(buf, 0).await;
    let read = result.context("read", path)?;
    if (read as u64) < size {
        return Err(Error::io(
            "read",
            path,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("read {read} of {size} bytes"),
            ),
        ));
    }
    // A killed process under `never` or `periodic` leaves written but unsynced records. Making
    // them durable now lets every record appended from here on claim all of the log before it.
    file.sync_data().await.sync_context(path)?;
    Ok(buf)
}
