//! Fixed-width little-endian integers, as every on-disk integer of ringkv is written (leveldb's
//! `util/coding.h`). Reading is the one place that turns a slice into an array: callers check
//! lengths against the format first, so a short slice here is a bug, not bad input.

// File offsets and sizes (u64) index memory (usize) throughout: ringkv runs on 64-bit targets.
const _: () = assert!(usize::BITS == 64, "ringkv needs a 64-bit target");

/// A file offset or size as a memory index: lossless, `usize` being 64 bits (asserted above).
#[expect(
    clippy::cast_possible_truncation,
    reason = "usize is 64 bits, asserted at compile time"
)]
pub const fn to_usize(n: u64) -> usize {
    n as usize
}

/// A length as the `u32` a format stores. Keys, values, blocks, filters and indexes are bounded
/// far below 4 GiB (`StoreConfig::validate` caps keys and values), so a longer one is a bug.
pub fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("a length that fits the format's u32 field")
}

/// The `u32` at `bytes[at..at + 4]`.
pub fn get_u32(bytes: &[u8], at: usize) -> u32 {
    let word: [u8; 4] = bytes[at..at + 4].try_into().expect("a 4-byte slice");
    u32::from_le_bytes(word)
}

/// The `u64` at `bytes[at..at + 8]`.
pub fn get_u64(bytes: &[u8], at: usize) -> u64 {
    let word: [u8; 8] = bytes[at..at + 8].try_into().expect("an 8-byte slice");
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_at_an_offset() {
        let bytes = [9, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(get_u32(&bytes, 1), 1);
        assert_eq!(get_u64(&bytes, 5), 2);
        assert_eq!(get_u32(&[0xff; 4], 0), u32::MAX);
    }

    #[test]
    #[should_panic(expected = "range end index 5 out of range")]
    fn a_short_slice_is_a_bug() {
        get_u32(&[0; 4], 1);
    }
}
