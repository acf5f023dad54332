//! CRC32C checksums as every on-disk structure stores them (WAL records, SST blocks and footer,
//! manifest records): masked, so that bytes that themselves hold CRCs, or all zeros, do not
//! checksum to a recognisable value (the `LevelDB` convention).

const MASK_DELTA: u32 = 0xa282_ead8;

/// Masks a raw CRC32C.
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// The masked CRC32C of `bytes`.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    mask(crc32c::crc32c(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_do_not_checksum_to_zero() {
        assert_ne!(masked_crc32c(&[0; 64]), 0);
        assert_ne!(masked_crc32c(b"a"), masked_crc32c(b"b"));
    }
}
