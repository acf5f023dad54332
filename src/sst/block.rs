//! Data blocks: sorted entries followed by an entry count and a checksum (`docs/format.md`,
//! "SST data block"). Knows bytes only; files, offsets and caching belong to the table code.

use bytes::Bytes;

use crate::checksum::masked_crc32c;
use crate::coding;

/// `kind:u8 key_len:u32 value_len:u32 seq:u64`.
pub const ENTRY_HEADER_BYTES: usize = 17;
/// `entry_count:u32 masked_crc:u32`.
pub const BLOCK_TRAILER_BYTES: usize = 8;
const _: () = assert!(ENTRY_HEADER_BYTES == 1 + 4 + 4 + 8 && BLOCK_TRAILER_BYTES == 4 + 4);
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

    /// The finished block (entries and trailer); the builder is empty afterwards.
    pub fn finish(&mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        let crc = masked_crc32c(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.count = 0;
        std::mem::take(&mut self.buf)
    }
}

/// Checks a whole block (trailer included) and returns its entry count.
pub fn verify(block: &[u8]) -> Result<u32, String> {
    if block.len() < BLOCK_TRAILER_BYTES {
        return Err(format!(
            "block of {} bytes is shorter than its trailer",
            block.len()
        ));
    }
    let crc_at = block.len() - 4;
    let stored = coding::get_u32(block, crc_at);
    let actual = masked_crc32c(&block[..crc_at]);
    if stored != actual {
        return Err(format!(
            "block checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
        ));
    }
    Ok(coding::get_u32(block, crc_at - 4))
}

/// An entry decoded in place: key, seq, value (`None`: tombstone), and where the next starts.
type RawEntry<'a> = (&'a [u8], u64, Option<&'a [u8]>, usize);

/// The entries of a verified block, as slices of it.
pub struct EntryIter {
    block: Bytes,
    at: usize,
    end: usize,
    remaining: u32,
}

impl EntryIter {
    /// `block` must have passed [`verify`]; `count` is what it returned.
    pub fn new(block: Bytes, count: u32) -> Self {
        let end = block.len() - BLOCK_TRAILER_BYTES;
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

    fn sample() -> Vec<u8> {
        let mut builder = BlockBuilder::default();
        builder.add(b"a", 7, Some(b"\"one\""));
        builder.add(b"b", 3, None);
        builder.add(b"c", 9, Some(b""));
        builder.finish()
    }

    #[test]
    fn round_trip_and_find() {
        let block = Bytes::from(sample());
        let count = verify(&block).unwrap();
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

    #[test]
    fn every_flipped_bit_is_caught() {
        let block = sample();
        for bit in 0..block.len() * 8 {
            let mut damaged = block.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(verify(&damaged).is_err(), "bit {bit} not detected");
        }
    }
}
