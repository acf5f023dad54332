//! Data blocks: sorted entries and their count, stored raw or LZ4-compressed, followed by the
//! compression byte and a checksum of what is on disk (`docs/format.md`, "SST files"; tables of
//! format 1 have no compression byte). Knows bytes only; files, offsets and caching belong to
//! the table code.

use bytes::Bytes;

use crate::checksum::masked_crc32c;
use crate::coding;

/// `kind:u8 key_len:u32 value_len:u32 seq:u64`.
pub const ENTRY_HEADER_BYTES: usize = 17;
/// `entry_count:u32`, after the entries of a decoded block.
const COUNT_BYTES: usize = 4;
const _: () = assert!(ENTRY_HEADER_BYTES == 1 + 4 + 4 + 8);
/// A compressed block is kept only if at least this fraction (1/8, 12.5%) smaller than raw,
/// `LevelDB`'s and `RocksDB`'s rule: less saves too little to pay for decompressing on every read.
const MIN_SAVING_DIVISOR: usize = 8;
/// A decoded block's size a compressed block may claim: a block is 4 KiB plus one entry, and an
/// entry is bounded by the key and value limits (`config::MAX_KEY_OR_VALUE_BYTES` each).
const MAX_DECODED_BYTES: usize = 2 * crate::config::MAX_KEY_OR_VALUE_BYTES + TARGET_BLOCK_BYTES + 64;

/// How data blocks are stored (`--compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// LZ4 (`lz4_flex`'s block format, decoded size prepended), kept where it saves 12.5%.
    Lz4,
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            other => Err(format!("unknown compression {other:?}: use none or lz4")),
        }
    }
}

/// The compression byte of a stored block (format 2).
const STORED_RAW: u8 = 0;
const STORED_LZ4: u8 = 1;
/// A block is closed once it holds at least this many bytes (one large entry makes a large block).
pub const TARGET_BLOCK_BYTES: usize = 4096;

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;

/// One entry of one key (its seq, the version the API reports); `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Bytes,
    pub seq: u64,
    pub value: Option<Bytes>,
}

/// Gathers the entries of one block.
#[derive(Default)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    count: u32,
}

impl BlockBuilder {
    pub fn add(&mut self, key: &[u8], seq: u64, value: Option<&[u8]>) {
        let (kind, value) = match value {
            Some(value) => (KIND_PUT, value),
            None => (KIND_DELETE, &[][..]),
        };
        self.buf.push(kind);
        self.buf
            .extend_from_slice(&coding::len_u32(key.len()).to_le_bytes());
        self.buf
            .extend_from_slice(&coding::len_u32(value.len()).to_le_bytes());
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(value);
        self.count += 1;
    }

    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished block as stored (format 2): its body (entries and count), compressed if
    /// `compression` says so and that saves enough, then the compression byte and a checksum
    /// of both. The builder is empty afterwards.
    pub fn finish(&mut self, compression: Compression) -> Vec<u8> {
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        self.count = 0;
        let raw = std::mem::take(&mut self.buf);
        let compressed = match compression {
            Compression::None => None,
            Compression::Lz4 => Some(lz4_flex::compress_prepend_size(&raw))
                .filter(|compressed| compressed.len() <= raw.len() - raw.len() / MIN_SAVING_DIVISOR),
        };
        let (mut stored, kind) = match compressed {
            Some(compressed) => (compressed, STORED_LZ4),
            None => (raw, STORED_RAW),
        };
        stored.push(kind);
        let crc = masked_crc32c(&stored);
        stored.extend_from_slice(&crc.to_le_bytes());
        stored
    }
}

/// Checks a block as stored in a table of `format_version` (1 or 2) and decodes it: the
/// entries (for [`EntryIter`]) and their count. The checksum covers what is on disk, so damage
/// is found before decompression.
pub fn decode(stored: Bytes, format_version: u32) -> Result<(Bytes, u32), String> {
    if stored.len() < 4 {
        return Err(format!(
            "block of {} bytes is shorter than its checksum",
            stored.len()
        ));
    }
    let crc_at = stored.len() - 4;
    let expected = coding::get_u32(&stored, crc_at);
    let actual = masked_crc32c(&stored[..crc_at]);
    if expected != actual {
        return Err(format!(
            "block checksum mismatch: stored {expected:#010x}, computed {actual:#010x}"
        ));
    }
    let body = if format_version == 1 {
        stored.slice(..crc_at)
    } else {
        let kind_at = crc_at.checked_sub(1).ok_or("block has no compression byte")?;
        match stored[kind_at] {
            STORED_RAW => stored.slice(..kind_at),
            STORED_LZ4 => {
                let compressed = &stored[..kind_at];
                let claimed = compressed
                    .get(..4)
                    .map_or(0, |size| coding::get_u32(size, 0) as usize);
                if claimed > MAX_DECODED_BYTES {
                    return Err(format!("compressed block claims {claimed} bytes decoded"));
                }
                Bytes::from(
                    lz4_flex::decompress_size_prepended(compressed)
                        .map_err(|error| format!("LZ4 block does not decompress: {error}"))?,
                )
            }
            other => return Err(format!("unknown block compression {other}")),
        }
    };
    let count_at = body
        .len()
        .checked_sub(COUNT_BYTES)
        .ok_or_else(|| format!("block body of {} bytes has no entry count", body.len()))?;
    let count = coding::get_u32(&body, count_at);
    Ok((body.slice(..count_at), count))
}

/// An entry decoded in place: key, seq, value (`None`: tombstone), and where the next starts.
type RawEntry<'a> = (&'a [u8], u64, Option<&'a [u8]>, usize);

/// The entries of a decoded block, as slices of it.
pub struct EntryIter {
    block: Bytes,
    at: usize,
    end: usize,
    remaining: u32,
}

impl EntryIter {
    /// `entries` and `count` as [`decode`] returned them.
    pub fn new(entries: Bytes, count: u32) -> Self {
        let end = entries.len();
        let block = entries;
        EntryIter {
            block,
            at: 0,
            end,
            remaining: count,
        }
    }

    /// The entry at the current position without building `Bytes`: `(key, seq, value)`.
    fn decode_at(&self) -> Result<RawEntry<'_>, String> {
        let bytes = &self.block[..self.end];
        let at = self.at;
        let header = bytes
            .get(at..at + ENTRY_HEADER_BYTES)
            .ok_or_else(|| format!("entry header at block offset {at} runs past the block"))?;
        let kind = header[0];
        let key_len = coding::get_u32(header, 1) as usize;
        let value_len = coding::get_u32(header, 5) as usize;
        let seq = coding::get_u64(header, 9);
        let key_at = at + ENTRY_HEADER_BYTES;
        let next = key_at
            .checked_add(key_len)
            .and_then(|v| v.checked_add(value_len))
            .filter(|&next| next <= bytes.len())
            .ok_or_else(|| format!("entry at block offset {at} runs past the block"))?;
        let key = &bytes[key_at..key_at + key_len];
        let value = match kind {
            KIND_PUT => Some(&bytes[key_at + key_len..next]),
            KIND_DELETE if value_len == 0 => None,
            other => return Err(format!("entry at block offset {at} has kind {other}")),
        };
        Ok((key, seq, value, next))
    }

    /// Finds `key` by a linear scan (blocks are small); `Ok(None)` if the block does not hold it.
    pub fn find(mut self, key: &[u8]) -> Result<Option<(u64, Option<Bytes>)>, String> {
        while self.remaining > 0 {
            let (found, seq, value, next) = self.decode_at()?;
            match found.cmp(key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    let value = value.map(|v| self.block.slice_ref(v));
                    return Ok(Some((seq, value)));
                }
                std::cmp::Ordering::Greater => return Ok(None),
            }
            self.at = next;
            self.remaining -= 1;
        }
        Ok(None)
    }
}

impl Iterator for EntryIter {
    type Item = Result<Entry, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return (self.at != self.end)
                .then(|| Err(format!("{} bytes after the last entry", self.end - self.at)));
        }
        let decoded = self.decode_at().map(|(key, seq, value, next)| {
            (
                self.block.slice_ref(key),
                seq,
                value.map(|v| self.block.slice_ref(v)),
                next,
            )
        });
        Some(match decoded {
            Ok((key, seq, value, next)) => {
                self.at = next;
                self.remaining -= 1;
                Ok(Entry { key, seq, value })
            }
            Err(reason) => {
                self.remaining = 0;
                self.at = self.end;
                Err(reason)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(compression: Compression) -> Vec<u8> {
        let mut builder = BlockBuilder::default();
        builder.add(b"a", 7, Some(b"\"one\""));
        builder.add(b"b", 3, None);
        builder.add(b"c", 9, Some(b""));
        builder.finish(compression)
    }

    /// A block LZ4 shrinks: values that repeat, as JSON documents do.
    fn compressible() -> Vec<u8> {
        let mut builder = BlockBuilder::default();
        for i in 0..40u64 {
            let value = format!("{{\"name\":\"user {i}\",\"email\":\"user{i}@example.com\"}}");
            builder.add(format!("key{i:04}").as_bytes(), i, Some(value.as_bytes()));
        }
        builder.finish(Compression::Lz4)
    }

    #[test]
    fn round_trip_and_find() {
        for compression in [Compression::None, Compression::Lz4] {
            let (block, count) = decode(Bytes::from(sample(compression)), 2).unwrap();
            let entries: Vec<Entry> = EntryIter::new(block.clone(), count).map(Result::unwrap).collect();
            assert_eq!(entries.len(), 3);
            assert_eq!(
                entries[1],
                Entry {
                    key: Bytes::from_static(b"b"),
                    seq: 3,
                    value: None
                }
            );
            assert_eq!(entries[2].value.as_deref(), Some(&b""[..]));
            let find = |key: &[u8]| EntryIter::new(block.clone(), count).find(key).unwrap();
            assert_eq!(find(b"a"), Some((7, Some(Bytes::from_static(b"\"one\"")))));
            assert_eq!(find(b"b"), Some((3, None)));
            assert_eq!(find(b"bb"), None);
            assert_eq!(find(b"d"), None);
        }
    }

    #[test]
    fn compression_is_kept_only_where_it_saves_an_eighth() {
        // Three short entries do not shrink: stored raw, compression byte 0.
        let small = sample(Compression::Lz4);
        assert_eq!(small[small.len() - 5], STORED_RAW);
        assert_eq!(small, sample(Compression::None));
        let block = compressible();
        assert_eq!(block[block.len() - 5], STORED_LZ4);
        let (entries, count) = decode(Bytes::from(block.clone()), 2).unwrap();
        assert_eq!(count, 40);
        assert!(
            block.len() * 2 < entries.len(),
            "{} stored for {} decoded",
            block.len(),
            entries.len()
        );
        let decoded: Vec<Entry> = EntryIter::new(entries, count).map(Result::unwrap).collect();
        assert_eq!(decoded[39].key, "key0039");
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        for block in [sample(Compression::None), compressible()] {
            for bit in 0..block.len() * 8 {
                let mut damaged = block.clone();
                damaged[bit / 8] ^= 1 << (bit % 8);
                assert!(decode(Bytes::from(damaged), 2).is_err(), "bit {bit} not detected");
            }
        }
    }

    #[test]
    fn format_1_blocks_still_decode() {
        // Format 1: entries, count, checksum; no compression byte.
        let mut builder = BlockBuilder::default();
        builder.add(b"a", 7, Some(b"1"));
        let mut block = builder.buf.clone();
        block.extend_from_slice(&1u32.to_le_bytes());
        let crc = masked_crc32c(&block);
        block.extend_from_slice(&crc.to_le_bytes());
        let (entries, count) = decode(Bytes::from(block), 1).unwrap();
        assert_eq!(
            EntryIter::new(entries, count).find(b"a").unwrap(),
            Some((7, Some(Bytes::from_static(b"1"))))
        );
    }
}
