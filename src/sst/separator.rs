//! Short index keys, as leveldb's `FindShortestSeparator` and `FindShortSuccessor`: the index
//! entry of a data block (every block but the last) holds a separator, a short key at or above
//! every key of the block and below every key of the next, instead of the block's last key.
//! With 4 KiB keys the index then holds a few bytes per block instead of 4 KiB.

/// A short key `s` with `start <= s < limit`; `start < limit` is required.
pub fn shortest_separator(start: &[u8], limit: &[u8]) -> Vec<u8> {
    assert!(start < limit, "a separator needs start < limit");
    let common = start.iter().zip(limit).take_while(|(a, b)| a == b).count();
    if common == start.len() {
        // `start` is a prefix of `limit`: nothing shorter than `start` is at or above it.
        return start.to_vec();
    }
    // Here start[common] < limit[common]. Keeping start[..common] and raising one later byte
    // gives a key above `start` and, since it still has start[common] < limit[common], below
    // `limit`. Raising start[common] itself is shortest, if it stays below limit[common].
    if start[common] < 0xff && start[common] + 1 < limit[common] {
        let mut separator = start[..=common].to_vec();
        separator[common] += 1;
        return separator;
    }
    match start[common + 1..].iter().position(|&byte| byte < 0xff) {
        Some(offset) => {
            let at = common + 1 + offset;
            let mut separator = start[..=at].to_vec();
            separator[at] += 1;
            separator
        }
        None => start.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn separators_are_short_and_in_range() {
        assert_eq!(shortest_separator(b"abc1zzz", b"abc9"), b"abc2");
        assert_eq!(shortest_separator(b"abc1zzz", b"abc2"), b"abc1{");
        assert_eq!(shortest_separator(b"abc", b"abcd"), b"abc");
        assert_eq!(shortest_separator(b"a\xff\xff", b"b"), b"a\xff\xff");
        let long_a = [vec![b'a'], vec![b'x'; 4095]].concat();
        let long_b = [vec![b'q'], vec![b'y'; 4095]].concat();
        assert_eq!(shortest_separator(&long_a, &long_b), b"b");
    }

    proptest! {
        #[test]
        fn a_separator_is_at_or_above_start_and_below_limit(
            a in proptest::collection::vec(any::<u8>(), 0..12),
            b in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            prop_assume!(a != b);
            let (start, limit) = if a < b { (a, b) } else { (b, a) };
            let separator = shortest_separator(&start, &limit);
            prop_assert!(start <= separator && separator < limit);
            prop_assert!(separator.len() <= start.len());
        }
    }
}
