//! The memtable: a lock-free skiplist of `(key, seq)` entries, highest seq first within a
//! key, with its size accounting. No I/O, no knowledge of the WAL.

use std::cmp::Reverse;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;

/// Sort key: user key ascending, then seq descending, so the first entry at or after
/// `(key, MAX)` is the newest entry of `key`.
///
/// The key's first 16 bytes are also kept inline, big-endian and zero-padded (`prefix`): most
/// comparisons of a skiplist search are decided there, without following the `Bytes` pointer to
/// the key and calling `memcmp` (the search was 14% of the serving ring's CPU under 64
/// connections of sets, most of it in `memcmp`; BENCHMARKS.md, issue 14).
#[derive(Debug, Clone, PartialEq, Eq)]
struct InternalKey {
    prefix: u128,
    user_key: Bytes,
    seq: Reverse<u64>,
}

/// Bytes of a key kept inline in [`InternalKey::prefix`].
const PREFIX_BYTES: usize = 16;

impl InternalKey {
    fn new(user_key: Bytes, seq: u64) -> Self {
        let mut padded = [0u8; PREFIX_BYTES];
        let inline = user_key.len().min(PREFIX_BYTES);
        padded[..inline].copy_from_slice(&user_key[..inline]);
        InternalKey {
            prefix: u128::from_be_bytes(padded),
            user_key,
            seq: Reverse(seq),
        }
    }

    /// The user keys' order. Equal prefixes of keys that both fit in one mean one key is the
    /// other padded with zero bytes: the shorter is the smaller, as in byte order.
    fn cmp_user_key(&self, other: &Self) -> std::cmp::Ordering {
        self.prefix.cmp(&other.prefix).then_with(|| {
            if self.user_key.len() <= PREFIX_BYTES && other.user_key.len() <= PREFIX_BYTES {
                self.user_key.len().cmp(&other.user_key.len())
            } else {
                self.user_key.cmp(&other.user_key)
            }
        })
    }
}

impl Ord for InternalKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.cmp_user_key(other).then_with(|| self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for InternalKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The newest entry for a key: a value, or a tombstone (`value: None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub value: Option<Bytes>,
}

/// Per-entry bookkeeping a skiplist node costs beyond key and value (node, tower, `Bytes`
/// headers, allocator rounding); used to decide when to flush. Measured: 1M entries of a 16-byte
/// key and a 100-byte value grew the RSS by 228 bytes each under mimalloc (112 of overhead),
/// before the 16-byte inline prefix was added to the key (not measured again).
const ENTRY_OVERHEAD_BYTES: u64 = 128;

/// See the module documentation.
#[derive(Default)]
pub struct Memtable {
    entries: SkipMap<InternalKey, Option<Bytes>>,
    approximate_bytes: AtomicU64,
}

impl Memtable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes an entry is accounted for.
    pub fn entry_bytes(key_len: usize, value_len: usize) -> u64 {
        (key_len + value_len) as u64 + ENTRY_OVERHEAD_BYTES
    }

    /// Inserts an entry of `key` at `seq`; `value: None` is a tombstone.
    pub fn insert(&self, key: Bytes, seq: u64, value: Option<Bytes>) {
        let bytes = Self::entry_bytes(key.len(), value.as_ref().map_or(0, bytes::Bytes::len));
        self.entries.insert(InternalKey::new(key, seq), value);
        self.approximate_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The newest entry for `key`, tombstones included.
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        let probe = InternalKey::new(Bytes::copy_from_slice(key), u64::MAX);
        let found = self.entries.range(probe..).next()?;
        (found.key().user_key == key).then(|| Entry {
            seq: found.key().seq.0,
            value: found.value().clone(),
        })
    }

    /// The newest entry of every key, in key order (what a flush writes: older versions in the
    /// same memtable are shadowed and no reader can see them).
    pub fn newest_entries(&self) -> impl Iterator<Item = (Bytes, Entry)> + '_ {
        let mut last: Option<Bytes> = None;
        self.entries.iter().filter_map(move |entry| {
            let key = &entry.key().user_key;
            if last.as_ref() == Some(key) {
                return None;
            }
            last = Some(key.clone());
            Some((
                key.clone(),
                Entry {
                    seq: entry.key().seq.0,
                    value: entry.value().clone(),
                },
            ))
        })
    }

    /// Estimated memory held, for the flush threshold.
    pub fn approximate_bytes(&self) -> u64 {
        self.approximate_bytes.load(Ordering::Relaxed)
    }

    /// Number of entries (all versions, tombstones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inline_prefix_keeps_byte_order() {
        let keys: Vec<&[u8]> = vec![
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
        for a in &keys {
            for b in &keys {
                for (sa, sb) in [(1, 1), (1, 2), (2, 1)] {
                    let x = InternalKey::new(Bytes::copy_from_slice(a), sa);
                    let y = InternalKey::new(Bytes::copy_from_slice(b), sb);
                    let expected = a.cmp(b).then(sb.cmp(&sa));
                    assert_eq!(x.cmp(&y), expected, "{a:?} {sa} vs {b:?} {sb}");
                    assert_eq!(x == y, expected.is_eq());
                }
            }
        }
    }

    #[test]
    fn newest_version_wins_and_keys_do_not_bleed() {
        let memtable = Memtable::new();
        memtable.insert(Bytes::from_static(b"a"), 1, Some(Bytes::from_static(b"1")));
        memtable.insert(Bytes::from_static(b"a"), 3, None);
        memtable.insert(Bytes::from_static(b"a"), 2, Some(Bytes::from_static(b"2")));
        memtable.insert(Bytes::from_static(b"ab"), 4, Some(Bytes::from_static(b"4")));
        assert_eq!(memtable.get(b"a"), Some(Entry { seq: 3, value: None }));
        assert_eq!(memtable.get(b"ab").map(|e| e.seq), Some(4));
        assert_eq!(memtable.get(b""), None);
        assert_eq!(memtable.get(b"b"), None);
        assert_eq!(memtable.len(), 4);
        assert!(memtable.approximate_bytes() > 0);
        let newest: Vec<(Bytes, u64)> = memtable.newest_entries().map(|(k, e)| (k, e.seq)).collect();
        assert_eq!(
            newest,
            vec![(Bytes::from_static(b"a"), 3), (Bytes::from_static(b"ab"), 4)]
        );
    }
}
