//! WAL record framing: encoding into a buffer and decoding at an offset. Pure bytes; see
//! `docs/format.md` ("WAL segments") for the grammar this implements.

use crate::coding::{get_u32, get_u64};

/// Bytes of a record header: masked crc, payload length, seq, durable claim, kind, segment tag.
pub const HEADER_BYTES: usize = 24;
/// Set in the kind byte of a record that carries its segment's number (the tag, and the whole
/// number under the checksum): every record written since 2026-12-01. Without it, a record is of
/// the first format, which no recycled segment holds.
const TAGGED: u8 = 0x80;
/// The tag is the segment number's low 24 bits; the checksum covers all 64.
const TAG_MASK: u64 = (1 << 24) - 1;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Put = 1,
    Delete = 2,
    /// The writer left this segment for the next one; nothing follows in this segment.
    SegmentEnd = 3,
    /// Written by a clean close after its final sync, and synced: claims every byte before it
    /// durable, so that damage to the last records reads as damage, not as a torn tail. Carries
    /// the last seq written; the log goes on after it.
    DurableMark = 4,
    /// Several puts and deletes under one checksum (`wal::batch`): op `i` has seq `seq + i`.
    /// The record's key is empty and its value is the batch body.
    Batch = 5,
    /// A Raft log entry (cluster mode's log, `src/cluster/log_store.rs`): the key is the
    /// entry's term and index (8 bytes each, little-endian), the value its payload (JSON).
    RaftEntry = 6,
    /// Drops the Raft log's entries from the index in the key (8 bytes, little-endian) on: a
    /// conflicting, uncommitted suffix the leader replaced.
    RaftTruncate = 7,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(RecordKind::Put),
            2 => Some(RecordKind::Delete),
            3 => Some(RecordKind::SegmentEnd),
            4 => Some(RecordKind::DurableMark),
            5 => Some(RecordKind::Batch),
            6 => Some(RecordKind::RaftEntry),
            7 => Some(RecordKind::RaftTruncate),
            _ => None,
        }
    }
}

/// A decoded record, borrowing from the segment bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: RecordKind,
    pub seq: u64,
    /// What was durable when this record reached the disk: 0 claims nothing; `n > 0` claims every
    /// earlier segment and the first `n - 1` bytes of this one. Recovery uses it to tell damage
    /// of once-durable bytes from a torn, unsynced tail (see [`Record::durable_prefix`]).
    pub durable_claim: u32,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl Record<'_> {
    /// How many bytes of this record's segment were durable when it reached the disk (every
    /// earlier segment was, in full), or `None` if it claims nothing.
    pub fn durable_prefix(&self) -> Option<u64> {
        self.durable_claim.checked_sub(1).map(u64::from)
    }

    /// The highest seq the record holds: a batch's ops take one each from `seq` on.
    pub fn last_seq(&self) -> u64 {
        match self.kind {
            RecordKind::Batch => self.seq + super::batch::count(self.value).saturating_sub(1),
            _ => self.seq,
        }
    }
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// A zero length: the zero fill after the last record (or a zeroed block).
    Zero,
    /// A record of the segment file's previous life (a recycled segment): its tag names
    /// another segment. Like the zero fill, where this life's records end.
    OtherLife {
        tag: u32,
    },
    /// The header does not fit before the end of the segment.
    HeaderTruncated,
    /// The length runs past the segment end or over the largest record the store accepts.
    BadLength {
        payload_len: u32,
    },
    ChecksumMismatch {
        expected: u32,
        actual: u32,
    },
    BadKind {
        kind: u8,
    },
    /// A put/delete payload whose key length does not fit in it.
    BadKeyLength {
        key_len: u32,
        payload_len: u32,
    },
    /// A batch record whose body does not parse (`wal::batch::decode` says why).
    BadBatch,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Zero => write!(f, "zero-filled record header"),
            Invalid::OtherLife { tag } => {
                write!(f, "record of the segment file's previous life (tag {tag:#08x})")
            }
            Invalid::HeaderTruncated => write!(f, "record header runs past the segment end"),
            Invalid::BadLength { payload_len } => write!(f, "impossible payload length {payload_len}"),
            Invalid::ChecksumMismatch { expected, actual } => {
                write!(
                    f,
                    "checksum mismatch: stored {expected:#010x}, computed {actual:#010x}"
                )
            }
            Invalid::BadKind { kind } => write!(f, "unknown record kind {kind}"),
            Invalid::BadBatch => write!(f, "batch record whose ops do not parse"),
            Invalid::BadKeyLength { key_len, payload_len } => {
                write!(
                    f,
                    "key length {key_len} does not fit in payload of {payload_len} bytes"
                )
            }
        }
    }
}

fn payload_len(key: &[u8], value: &[u8]) -> usize {
    4 + key.len() + value.len()
}

/// Total bytes a record takes in a segment, padding included.
pub fn encoded_len(key: &[u8], value: &[u8]) -> usize {
    (HEADER_BYTES + payload_len(key, value)).next_multiple_of(RECORD_ALIGN)
}

/// Bytes of a segment-end record.
pub const SEGMENT_END_BYTES: usize = (HEADER_BYTES + 4).next_multiple_of(RECORD_ALIGN);
// crc 4, length 4, seq 8, claim 4, kind 1, reserved 3; records stay aligned, and a segment-end
// record always fits in the block it starts in.
const _: () = assert!(4 + 4 + 8 + 4 + 1 + 3 == HEADER_BYTES && HEADER_BYTES.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(SEGMENT_END_BYTES < crate::io::BLOCK_BYTES);

/// Encodes one record of segment `segment` into `out`, which must be exactly [`encoded_len`]
/// bytes long.
pub fn encode(
    out: &mut [u8],
    kind: RecordKind,
    seq: u64,
    durable_claim: u32,
    segment: u64,
    key: &[u8],
    value: &[u8],
) {
    encode_with(out, kind, seq, durable_claim, Some(segment), key, value);
}

/// Encodes a record in the first format (no segment tag), as binaries before 2026-12-01 wrote
/// it. Only for tests that check such logs still recover.
#[doc(hidden)]
pub fn encode_untagged(
    out: &mut [u8],
    kind: RecordKind,
    seq: u64,
    durable_claim: u32,
    key: &[u8],
    value: &[u8],
) {
    encode_with(out, kind, seq, durable_claim, None, key, value);
}

fn encode_with(
    out: &mut [u8],
    kind: RecordKind,
    seq: u64,
    durable_claim: u32,
    segment: Option<u64>,
    key: &[u8],
    value: &[u8],
) {
    let payload_len = payload_len(key, value);
    debug_assert_eq!(out.len(), encoded_len(key, value));
    let (header, rest) = out.split_at_mut(HEADER_BYTES);
    header[4..8].copy_from_slice(&crate::coding::len_u32(payload_len).to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..20].copy_from_slice(&durable_claim.to_le_bytes());
    if let Some(number) = segment {
        header[20] = kind as u8 | TAGGED;
        header[21..24].copy_from_slice(&(number & TAG_MASK).to_le_bytes()[..3]);
    } else {
        header[20] = kind as u8;
        header[21..24].fill(0);
    }
    let (payload, padding) = rest.split_at_mut(payload_len);
    payload[..4].copy_from_slice(&crate::coding::len_u32(key.len()).to_le_bytes());
    payload[4..4 + key.len()].copy_from_slice(key);
    payload[4 + key.len()..].copy_from_slice(value);
    padding.fill(0);
    let crc = checksum(segment, header, payload);
    header[..4].copy_from_slice(&crate::checksum::mask(crc).to_le_bytes());
}

/// The record checksum: over the segment number (tagged records), the header after the checksum
/// field, and the payload. The whole number is covered, so a record of a recycled file's life
/// 2^24 segments ago, whose tag matches, still fails it.
fn checksum(segment: Option<u64>, header: &[u8], payload: &[u8]) -> u32 {
    let seed = segment.map_or(0, |number| crc32c::crc32c(&number.to_le_bytes()));
    crc32c::crc32c_append(crc32c::crc32c_append(seed, &header[4..HEADER_BYTES]), payload)
}

/// Decodes the record at `offset` of `segment`, the bytes of segment number `number`. On success
/// also returns the offset of the next record. `max_payload_bytes` bounds the length field (a
/// larger one is damage, not a record).
pub fn decode(
    segment: &[u8],
    offset: usize,
    max_payload_bytes: usize,
    number: u64,
) -> Result<(Record<'_>, usize), Invalid> {
    let header = segment
        .get(offset..offset + HEADER_BYTES)
        .ok_or(Invalid::HeaderTruncated)?;
    let payload_len = get_u32(header, 4);
    if payload_len == 0 {
        return Err(Invalid::Zero);
    }
    let tagged = header[20] & TAGGED != 0;
    // The segment whose checksum this record must match: this one, or for a record that names
    // another, the latest earlier segment with that tag (a recycled file's previous life).
    let mut belongs_to = number;
    let mut other_life = None;
    if tagged {
        let tag = u32::from_le_bytes([header[21], header[22], header[23], 0]);
        if u64::from(tag) != number & TAG_MASK {
            let same_epoch = (number & !TAG_MASK) | u64::from(tag);
            let earlier = if same_epoch < number {
                Some(same_epoch)
            } else {
                same_epoch.checked_sub(TAG_MASK + 1)
            };
            // A tag naming no earlier segment is damage, reported by the checksum below.
            belongs_to = earlier.unwrap_or(number);
            other_life = earlier.map(|_| tag);
        }
    }
    let payload_start = offset + HEADER_BYTES;
    let payload_end = payload_start + payload_len as usize;
    if payload_len as usize > max_payload_bytes || payload_end > segment.len() || payload_len < 4 {
        return Err(Invalid::BadLength { payload_len });
    }
    let payload = &segment[payload_start..payload_end];
    let expected = get_u32(header, 0);
    let actual = crate::checksum::mask(checksum(tagged.then_some(belongs_to), header, payload));
    if expected != actual {
        return Err(Invalid::ChecksumMismatch { expected, actual });
    }
    // Only a record that checks out as another segment's is a previous life; a flipped tag bit
    // fails the checksum above and reads as damage.
    if let Some(tag) = other_life {
        return Err(Invalid::OtherLife { tag });
    }
    let kind = RecordKind::from_byte(header[20] & !TAGGED).ok_or(Invalid::BadKind { kind: header[20] })?;
    let key_len = get_u32(payload, 0);
    if key_len as usize > payload.len() - 4 {
        return Err(Invalid::BadKeyLength { key_len, payload_len });
    }
    let key_end = 4 + key_len as usize;
    let record = Record {
        kind,
        seq: get_u64(header, 8),
        durable_claim: get_u32(header, 16),
        key: &payload[4..key_end],
        value: &payload[key_end..],
    };
    if kind == RecordKind::Batch && (!record.key.is_empty() || super::batch::decode(record.value).is_err()) {
        return Err(Invalid::BadBatch);
    }
    Ok((record, payload_end.next_multiple_of(RECORD_ALIGN)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: u64 = 5;

    fn encoded(kind: RecordKind, seq: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0xee; encoded_len(key, value)];
        encode(&mut out, kind, seq, 0, SEGMENT, key, value);
        out
    }

    #[test]
    fn round_trips() {
        let bytes = encoded(RecordKind::Put, 7, b"key", b"\"value\"");
        assert_eq!(bytes.len() % RECORD_ALIGN, 0);
        let (record, next) = decode(&bytes, 0, 1 << 20, SEGMENT).unwrap();
        assert_eq!(next, bytes.len());
        assert_eq!(record.kind, RecordKind::Put);
        assert_eq!(record.seq, 7);
        assert_eq!(record.key, b"key");
        assert_eq!(record.value, b"\"value\"");
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = encoded(RecordKind::Delete, 9, b"abc", b"");
        let payload_end = HEADER_BYTES + 4 + 3;
        for bit in 0..payload_end * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&damaged, 0, 1 << 20, SEGMENT).is_err(),
                "bit {bit} flipped undetected"
            );
        }
    }

    #[test]
    fn carries_the_durable_claim() {
        let mut bytes = vec![0; encoded_len(b"k", b"1")];
        encode(&mut bytes, RecordKind::Put, 7, 4096 + 41, SEGMENT, b"k", b"1");
        let record = decode(&bytes, 0, 1 << 20, SEGMENT).unwrap().0;
        assert_eq!(record.durable_prefix(), Some(4136));
        encode(&mut bytes, RecordKind::Put, 7, 0, SEGMENT, b"k", b"1");
        assert_eq!(
            decode(&bytes, 0, 1 << 20, SEGMENT).unwrap().0.durable_prefix(),
            None
        );
        bytes[16] ^= 1;
        assert!(
            decode(&bytes, 0, 1 << 20, SEGMENT).is_err(),
            "the claim is under the checksum"
        );
    }

    #[test]
    fn zeros_are_not_a_record() {
        assert_eq!(decode(&[0; 64], 0, 1 << 20, SEGMENT), Err(Invalid::Zero));
    }

    #[test]
    fn length_past_the_end_is_rejected() {
        let bytes = encoded(RecordKind::Put, 1, b"k", b"1");
        assert!(matches!(
            decode(&bytes[..bytes.len() - 8], 0, 1 << 20, SEGMENT),
            Err(Invalid::BadLength { .. })
        ));
        assert!(matches!(
            decode(&bytes, 0, 2, SEGMENT),
            Err(Invalid::BadLength { .. })
        ));
    }

    #[test]
    fn a_record_of_another_segment_is_its_previous_life() {
        let bytes = encoded(RecordKind::Put, 3, b"k", b"1");
        assert_eq!(
            decode(&bytes, 0, 1 << 20, SEGMENT + 1),
            Err(Invalid::OtherLife { tag: 5 })
        );
        // Same tag 2^24 segments on: the checksum, over the whole number, still tells them apart.
        assert!(matches!(
            decode(&bytes, 0, 1 << 20, SEGMENT + (1 << 24)),
            Err(Invalid::ChecksumMismatch { .. })
        ));
        // A later segment's record, or a flipped tag bit, is damage, not a previous life.
        assert!(matches!(
            decode(&bytes, 0, 1 << 20, SEGMENT - 1),
            Err(Invalid::ChecksumMismatch { .. })
        ));
        let mut flipped = bytes.clone();
        flipped[21] ^= 2;
        assert!(matches!(
            decode(&flipped, 0, 1 << 20, SEGMENT),
            Err(Invalid::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn records_of_the_first_format_still_decode() {
        let mut bytes = vec![0; encoded_len(b"key", b"2")];
        encode_untagged(&mut bytes, RecordKind::Put, 9, 17, b"key", b"2");
        for number in [1, SEGMENT, 1 << 30] {
            let (record, _) = decode(&bytes, 0, 1 << 20, number).unwrap();
            assert_eq!(
                (record.kind, record.seq, record.durable_claim),
                (RecordKind::Put, 9, 17)
            );
            assert_eq!((record.key, record.value), (&b"key"[..], &b"2"[..]));
        }
    }

    #[test]
    fn the_tag_is_under_the_checksum() {
        let mut bytes = encoded(RecordKind::Delete, 4, b"k", b"");
        bytes[20] &= !TAGGED;
        assert!(
            decode(&bytes, 0, 1 << 20, SEGMENT).is_err(),
            "untagging is detected"
        );
    }
}
