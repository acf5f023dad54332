//! The bloom filter of one SST: a `bitvec` bitset probed by double hashing (Kirsch–Mitzenmacher),
//! about 10 bits per key and 7 probes, about 1% false positives. Knows keys and bits, not files.

use crate::coding;
use bitvec::prelude::{BitVec, Lsb0};

pub const BITS_PER_KEY: usize = 10;
/// ln 2 × bits per key, rounded: the probe count that minimises false positives.
const HASH_COUNT: u8 = 7;
/// `hash_count:u8 reserved:[u8;3] bit_count:u32` before the words.
const HEADER_BYTES: usize = 8;

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BloomFilter {
    bits: BitVec<u64, Lsb0>,
    hash_count: u8,
}

/// A 64-bit hash of a key: FNV-1a, then the splitmix64 finaliser to spread the bits.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

impl BloomFilter {
    /// A filter holding the keys whose [`key_hash`]es are given.
    pub fn build(hashes: &[u64]) -> Self {
        let bit_count = (hashes.len() * BITS_PER_KEY).max(64).next_multiple_of(64);
        let mut bits = BitVec::<u64, Lsb0>::repeat(false, bit_count);
        for &hash in hashes {
            for position in probes(hash, HASH_COUNT, bit_count) {
                bits.set(position, true);
            }
        }
        BloomFilter {
            bits,
            hash_count: HASH_COUNT,
        }
    }

    /// False means the key is certainly absent.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hash(key_hash(key))
    }

    pub fn may_contain_hash(&self, hash: u64) -> bool {
        probes(hash, self.hash_count, self.bits.len()).all(|position| self.bits[position])
    }

    /// Bytes the filter holds in memory.
    pub fn resident_bytes(&self) -> usize {
        self.bits.as_raw_slice().len() * 8
    }

    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES + self.bits.as_raw_slice().len() * 8
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.hash_count);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&coding::len_u32(self.bits.len()).to_le_bytes());
        for word in self.bits.as_raw_slice() {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < HEADER_BYTES {
            return Err(format!(
                "filter of {} bytes is shorter than its header",
                bytes.len()
            ));
        }
        let hash_count = bytes[0];
        let bit_count = coding::get_u32(bytes, 4) as usize;
        let words = &bytes[HEADER_BYTES..];
        if hash_count == 0
            || hash_count > 30
            || bit_count == 0
            || !bit_count.is_multiple_of(64)
            || words.len() != bit_count / 8
        {
            return Err(format!(
                "filter header says {hash_count} probes over {bit_count} bits, with {} bytes of bits",
                words.len()
            ));
        }
        let words: Vec<u64> = words
            .chunks_exact(8)
            .map(|chunk| coding::get_u64(chunk, 0))
            .collect();
        Ok(BloomFilter {
            bits: BitVec::from_vec(words),
            hash_count,
        })
    }
}

fn probes(hash: u64, count: u8, bit_count: usize) -> impl Iterator<Item = usize> {
    let h1 = hash;
    let h2 = hash.rotate_left(32) | 1;
    (0..u64::from(count))
        .map(move |i| coding::to_usize(h1.wrapping_add(i.wrapping_mul(h2)) % bit_count as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn false_positive_rate_over_100k_keys_is_near_one_percent() {
        let keys = 100_000;
        let hashes: Vec<u64> = (0..keys)
            .map(|i| key_hash(format!("key{i:012}").as_bytes()))
            .collect();
        let filter = BloomFilter::build(&hashes);
        for i in 0..keys {
            assert!(
                filter.may_contain(format!("key{i:012}").as_bytes()),
                "false negative {i}"
            );
        }
        let false_positives = (0..keys)
            .filter(|i| filter.may_contain(format!("absent{i:012}").as_bytes()))
            .count();
        let rate = false_positives as f64 / f64::from(keys);
        println!(
            "bloom false-positive rate over {keys} absent keys: {:.3}%",
            rate * 100.0
        );
        assert!((0.002..0.015).contains(&rate), "false-positive rate {rate}");
    }

    #[test]
    fn encode_decode_round_trip_and_bad_headers() {
        let filter = BloomFilter::build(&[key_hash(b"a"), key_hash(b"b")]);
        let mut bytes = Vec::new();
        filter.encode(&mut bytes);
        assert_eq!(bytes.len(), filter.encoded_len());
        assert_eq!(BloomFilter::decode(&bytes).unwrap(), filter);
        assert!(BloomFilter::decode(&bytes[..bytes.len() - 8]).is_err());
        let mut zero_probes = bytes.clone();
        zero_probes[0] = 0;
        assert!(BloomFilter::decode(&zero_probes).is_err());
    }
}
