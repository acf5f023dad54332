//! The memtable: a lock-free skiplist of `(key, seq)` entries, highest seq first within a
//! key, with its size accounting. No I/O, no knowledge of the WAL.

use std::cmp::Reverse;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;

use crate::key_prefix;

/// Sort key: user key ascending, then seq descending, so the first entry at or after
/// `(key, MAX)` is the newest entry of `key`.
///
/// The key's first 16 bytes are also kept inline (`crate::key_prefix`): most
/// comparisons of a skiplist search are decided there, without following the `Bytes` pointer to
/// the key and calling `memcmp` (the search was 14% of the serving ring's CPU under 64
/// connections of sets, most of it in `memcmp`; BENCHMARKS.md, issue 14).
#[derive(Debug, Clone, PartialEq, Eq)]
struct InternalKey {
    prefix: u128,
    user_key: Bytes,
    seq: Reverse<u64>,
}

impl InternalKey {
    fn new(user_key: Bytes, seq: u64) -> Self {
        InternalKey {
            prefix: key_prefix::prefix_of(&user_key),
            user_key,
            seq: Reverse(seq),
        }
    }

    /// The user keys' order.
    fn cmp_user_key(&self, other: &Self) -> std::cmp::Ordering {
        key_prefix::compare(self.prefix, &self.user_key, other.prefix, &other.user_key)
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

/// One version of one key as a scan reads it; `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanItem {
    pub key: Bytes,
    pub seq: u64,
    pub value: Option<Bytes>,
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

    /// For scans: the newest version of each key that `visible` admits (tombstones included:
    /// they hide older tables' entries), in key order (descending if `reverse`), from `from`
    /// on in that direction, at most `max_keys` keys examined. Returns them and, unless the
    /// range ran out, the last key examined: the next chunk starts after it.
    pub fn chunk(
        &self,
        from: &Bound<Bytes>,
        reverse: bool,
        max_keys: usize,
        visible: impl Fn(u64) -> bool,
    ) -> (Vec<ScanItem>, Option<Bytes>) {
        // Within a key, versions run newest first: `(key, MAX)` is its first entry and
        // `(key, 0)` its last.
        let bounds = match (from, reverse) {
            (Bound::Unbounded, _) => (Bound::Unbounded, Bound::Unbounded),
            (Bound::Included(key), false) => (
                Bound::Included(InternalKey::new(key.clone(), u64::MAX)),
                Bound::Unbounded,
            ),
            (Bound::Excluded(key), false) => (
                Bound::Excluded(InternalKey::new(key.clone(), 0)),
                Bound::Unbounded,
            ),
            (Bound::Included(key), true) => (
                Bound::Unbounded,
                Bound::Included(InternalKey::new(key.clone(), 0)),
            ),
            (Bound::Excluded(key), true) => (
                Bound::Unbounded,
                Bound::Excluded(InternalKey::new(key.clone(), u64::MAX)),
            ),
        };
        let range = self.entries.range(bounds);
        let entries: Box<dyn Iterator<Item = _>> = if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut items: Vec<ScanItem> = Vec::new();
        let mut current: Option<Bytes> = None;
        let mut keys = 0;
        for entry in entries {
            let internal = entry.key();
            if current.as_ref() != Some(&internal.user_key) {
                if keys == max_keys {
                    return (items, current);
                }
                keys += 1;
                current = Some(internal.user_key.clone());
            }
            let seq = internal.seq.0;
            if !visible(seq) {
                continue;
            }
            match items.last_mut() {
                Some(last) if last.key == internal.user_key => {
                    if seq > last.seq {
                        last.seq = seq;
                        last.value = entry.value().clone();
                    }
                }
                _ => items.push(ScanItem {
                    key: internal.user_key.clone(),
                    seq,
                    value: entry.value().clone(),
                }),
            }
        }
        (items, None)
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
        for a in key_prefix::ORDER_SAMPLES {
            for b in key_prefix::ORDER_SAMPLES {
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
    fn chunks_give_the_newest_visible_version_in_either_direction() {
        let memtable = Memtable::new();
        let put = |key: &'static [u8], seq: u64, value: Option<&'static [u8]>| {
            memtable.insert(Bytes::from_static(key), seq, value.map(Bytes::from_static));
        };
        put(b"a", 1, Some(b"a1"));
        put(b"b", 2, Some(b"b2"));
        put(b"b", 5, Some(b"b5"));
        put(b"c", 3, None);
        put(b"d", 4, Some(b"d4"));
        put(b"d", 6, Some(b"d6"));
        let below_5 = |seq: u64| seq < 5;
        let render = |(items, next): (Vec<ScanItem>, Option<Bytes>)| {
            let items: Vec<(Vec<u8>, u64)> = items
                .into_iter()
                .map(|item| (item.key.to_vec(), item.seq))
                .collect();
            (items, next.map(|key| key.to_vec()))
        };
        let all = |seq: u64| seq > 0;
        assert_eq!(
            render(memtable.chunk(&Bound::Unbounded, false, 10, below_5)),
            (
                vec![
                    (b"a".to_vec(), 1),
                    (b"b".to_vec(), 2),
                    (b"c".to_vec(), 3),
                    (b"d".to_vec(), 4)
                ],
                None
            )
        );
        assert_eq!(
            render(memtable.chunk(&Bound::Unbounded, true, 10, all)),
            (
                vec![
                    (b"d".to_vec(), 6),
                    (b"c".to_vec(), 3),
                    (b"b".to_vec(), 5),
                    (b"a".to_vec(), 1)
                ],
                None
            )
        );
        assert_eq!(
            render(memtable.chunk(&Bound::Excluded(Bytes::from_static(b"a")), false, 2, all)),
            (vec![(b"b".to_vec(), 5), (b"c".to_vec(), 3)], Some(b"c".to_vec()))
        );
        assert_eq!(
            render(memtable.chunk(&Bound::Included(Bytes::from_static(b"b")), false, 1, all)),
            (vec![(b"b".to_vec(), 5)], Some(b"b".to_vec()))
        );
        assert_eq!(
            render(memtable.chunk(&Bound::Excluded(Bytes::from_static(b"d")), true, 2, below_5)),
            (vec![(b"c".to_vec(), 3), (b"b".to_vec(), 2)], Some(b"b".to_vec()))
        );
        assert_eq!(
            render(memtable.chunk(&Bound::Included(Bytes::from_static(b"b")), true, 5, all)),
            (vec![(b"b".to_vec(), 5), (b"a".to_vec(), 1)], None)
        );
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
