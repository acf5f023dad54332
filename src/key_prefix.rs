//! A key's first 16 bytes as one big-endian, zero-padded `u128`, for the searches that compare a
//! probe key with many stored keys (the memtable's skiplist, a table's block index): most
//! comparisons are decided by one integer comparison, without following a pointer to the stored
//! key and calling `memcmp`.
//!
//! Why it is sound: zero-padding and cutting at 16 bytes never reverse byte order, so a smaller
//! prefix means a smaller key; only equal prefixes need the keys themselves.

use std::cmp::Ordering;

/// Bytes of a key a prefix holds.
pub const PREFIX_BYTES: usize = 16;

/// The prefix of `key` (see the module documentation).
pub fn prefix_of(key: &[u8]) -> u128 {
    let mut padded = [0u8; PREFIX_BYTES];
    let inline = key.len().min(PREFIX_BYTES);
    padded[..inline].copy_from_slice(&key[..inline]);
    u128::from_be_bytes(padded)
}

/// Byte order of `a` and `b`, given their prefixes. Equal prefixes of keys that both fit in one
/// mean one key is the other padded with zero bytes: the shorter is the smaller, as in byte order.
pub fn compare(a_prefix: u128, a: &[u8], b_prefix: u128, b: &[u8]) -> Ordering {
    debug_assert_eq!(a_prefix, prefix_of(a));
    debug_assert_eq!(b_prefix, prefix_of(b));
    a_prefix.cmp(&b_prefix).then_with(|| {
        if a.len() <= PREFIX_BYTES && b.len() <= PREFIX_BYTES {
            a.len().cmp(&b.len())
        } else {
            a.cmp(b)
        }
    })
}

/// Keys whose byte order is easy to get wrong with prefixes (zero bytes, lengths around 16, high
/// bytes), for the tests of every order built on them.
#[cfg(test)]
pub(crate) const ORDER_SAMPLES: [&[u8]; 17] = [
    b"",
    b"\0",
    b"\0\0",
    b"a",
    b"a\0",
    b"a\0\0",
    b"a\x01",
    b"ab",
    b"k0000012345",
    b"k0000012346",
    b"0123456789abcdef",
    b"0123456789abcdef\0",
    b"0123456789abcdef0",
    b"0123456789abcdee\xff\xff",
    b"0123456789abcdef\xff",
    b"\xff\xff",
    b"0123456789abcdef0123",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_keep_byte_order() {
        for a in ORDER_SAMPLES {
            for b in ORDER_SAMPLES {
                assert_eq!(
                    compare(prefix_of(a), a, prefix_of(b), b),
                    a.cmp(b),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }
}
