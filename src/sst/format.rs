//! The SST footer, filter block and index block (`docs/format.md`, "SST files"): encoding and
//! checked decoding. Knows bytes only.

use crate::coding;
use bytes::Bytes;

use super::bloom::BloomFilter;
use crate::checksum::masked_crc32c;

pub const MAGIC: u64 = u64::from_le_bytes(*b"RINGKVST");
/// Written since 2026-12-01: data blocks carry a compression byte (`block::decode`). Format 1
/// tables (no compression byte) are still read; compaction rewrites them in format 2.
pub const FORMAT_VERSION: u32 = 2;
pub const FOOTER_BYTES: usize = 64;
// Magic 8, version 4, blocks 4, entries 8, filter offset 8 and length 4, index length 4 and offset
// 8, max version 8, 4 reserved, checksum 4; inside the file's last block, which is read whole.
const _: () = assert!(8 + 4 + 4 + 8 + 8 + 4 + 4 + 8 + 8 + 4 + 4 == FOOTER_BYTES);
const _: () = assert!(FOOTER_BYTES <= crate::io::BLOCK_BYTES);

/// The fixed-size record at the end of every SST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footer {
    /// 1 or 2 (`FORMAT_VERSION`): how the data blocks are stored.
    pub format_version: u32,
    pub block_count: u32,
    pub entry_count: u64,
    pub filter_offset: u64,
    pub filter_len: u32,
    pub index_offset: u64,
    pub index_len: u32,
    pub max_seq: u64,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_BYTES] {
        let mut out = [0u8; FOOTER_BYTES];
        out[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        out[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        out[12..16].copy_from_slice(&self.block_count.to_le_bytes());
        out[16..24].copy_from_slice(&self.entry_count.to_le_bytes());
        out[24..32].copy_from_slice(&self.filter_offset.to_le_bytes());
        out[32..36].copy_from_slice(&self.filter_len.to_le_bytes());
        out[36..40].copy_from_slice(&self.index_len.to_le_bytes());
        out[40..48].copy_from_slice(&self.index_offset.to_le_bytes());
        out[48..56].copy_from_slice(&self.max_seq.to_le_bytes());
        let crc = masked_crc32c(&out[..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a footer that ends a file of `file_bytes`.
    pub fn decode(bytes: &[u8], file_bytes: u64) -> Result<Self, String> {
        let bytes: &[u8; FOOTER_BYTES] = bytes
            .try_into()
            .map_err(|_| "footer is not 64 bytes".to_string())?;
        let u32_at = |at: usize| coding::get_u32(bytes, at);
        let u64_at = |at: usize| coding::get_u64(bytes, at);
        if u64_at(0) != MAGIC {
            return Err(format!("bad magic number {:#018x}", u64_at(0)));
        }
        let stored = u32_at(60);
        let actual = masked_crc32c(&bytes[..60]);
        if stored != actual {
            return Err(format!(
                "footer checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
            ));
        }
        if !(1..=FORMAT_VERSION).contains(&u32_at(8)) {
            return Err(format!(
                "format version {} (this build reads 1 to {FORMAT_VERSION})",
                u32_at(8)
            ));
        }
        let footer = Footer {
            format_version: u32_at(8),
            block_count: u32_at(12),
            entry_count: u64_at(16),
            filter_offset: u64_at(24),
            filter_len: u32_at(32),
            index_len: u32_at(36),
            index_offset: u64_at(40),
            max_seq: u64_at(48),
        };
        let footer_at = file_bytes
            .checked_sub(FOOTER_BYTES as u64)
            .ok_or("file shorter than a footer")?;
        if footer.filter_offset + u64::from(footer.filter_len) != footer.index_offset
            || footer.index_offset + u64::from(footer.index_len) > footer_at
            || footer.block_count == 0
            || footer.entry_count < u64::from(footer.block_count)
        {
            return Err(format!(
                "footer fields are inconsistent with a file of {file_bytes} bytes: {footer:?}"
            ));
        }
        Ok(footer)
    }
}

/// Where one data block is, and its separator: a key at or above every key of the block and
/// below every key of the next (`super::separator`); for the last block, its last key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub separator: Bytes,
    pub offset: u64,
    pub len: u32,
}

/// Appends a checksum of everything in `out` since `start`.
fn seal(out: &mut Vec<u8>, start: usize) {
    let crc = masked_crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Splits off and checks the trailing checksum of a sealed region.
fn unseal<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8], String> {
    let body_len = bytes
        .len()
        .checked_sub(4)
        .ok_or_else(|| format!("{what} shorter than its checksum"))?;
    let stored = coding::get_u32(bytes, body_len);
    let actual = masked_crc32c(&bytes[..body_len]);
    if stored != actual {
        return Err(format!(
            "{what} checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
        ));
    }
    Ok(&bytes[..body_len])
}

pub fn encode_filter(filter: &BloomFilter, out: &mut Vec<u8>) {
    let start = out.len();
    filter.encode(out);
    seal(out, start);
}

pub fn decode_filter(bytes: &[u8]) -> Result<BloomFilter, String> {
    BloomFilter::decode(unseal(bytes, "filter block")?)
}

pub fn encode_index(smallest: &[u8], entries: &[IndexEntry], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&coding::len_u32(smallest.len()).to_le_bytes());
    out.extend_from_slice(smallest);
    for entry in entries {
        out.extend_from_slice(&entry.offset.to_le_bytes());
        out.extend_from_slice(&entry.len.to_le_bytes());
        out.extend_from_slice(&coding::len_u32(entry.separator.len()).to_le_bytes());
        out.extend_from_slice(&entry.separator);
    }
    out.extend_from_slice(&coding::len_u32(entries.len()).to_le_bytes());
    seal(out, start);
}

/// Decodes an index block: the smallest key and the block entries, checked to be in key and
/// offset order and to lie before `data_end`.
pub fn decode_index(
    bytes: &[u8],
    block_count: u32,
    data_end: u64,
) -> Result<(Bytes, Vec<IndexEntry>), String> {
    let body = unseal(bytes, "index block")?;
    let mut reader = Reader { bytes: body, at: 0 };
    let smallest_len = reader.u32()? as usize;
    let smallest = Bytes::copy_from_slice(reader.take(smallest_len)?);
    let count_at = body.len().checked_sub(4).ok_or("index block has no count")?;
    let count = coding::get_u32(body, count_at);
    if count != block_count {
        return Err(format!("index holds {count} blocks, footer says {block_count}"));
    }
    reader.bytes = &body[..count_at];
    let mut entries = Vec::with_capacity(count as usize);
    let mut data_at = 0;
    for _ in 0..count {
        let offset = reader.u64()?;
        let len = reader.u32()?;
        let key_len = reader.u32()? as usize;
        let separator = Bytes::copy_from_slice(reader.take(key_len)?);
        if offset != data_at || offset + u64::from(len) > data_end {
            return Err(format!(
                "index entry for block at {offset} (+{len}) is out of place"
            ));
        }
        if entries
            .last()
            .is_some_and(|previous: &IndexEntry| previous.separator >= separator)
        {
            return Err(format!("index keys out of order at block {offset}"));
        }
        data_at = offset + u64::from(len);
        entries.push(IndexEntry {
            separator,
            offset,
            len,
        });
    }
    if reader.at != reader.bytes.len() {
        return Err("index block has trailing bytes".to_string());
    }
    if entries.last().is_some_and(|last| last.separator < smallest) {
        return Err("smallest key is above the largest".to_string());
    }
    Ok((smallest, entries))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(len).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| format!("field of {len} bytes at {} runs past the block", self.at))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(coding::get_u32(self.take(4)?, 0))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(coding::get_u64(self.take(8)?, 0))
    }
}
