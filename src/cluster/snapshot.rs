//! A Raft snapshot's bytes: every live key of the store at an applied index, with its version
//! and value, in key order. Format (`docs/replication.md`): the magic `RKVSNAP1`, then per key
//! `key_len u32 | key | version u64 | value_len u32 | value` (little-endian), then the key count
//! (u64) and the CRC32C of everything before it (u32).

use bytes::Bytes;

const MAGIC: &[u8; 8] = b"RKVSNAP1";

/// One live key: key, version, value (JSON text).
pub type Item = (Bytes, u64, Bytes);

pub fn encode(items: &[Item]) -> Vec<u8> {
    let size: usize = items
        .iter()
        .map(|(key, _, value)| 16 + key.len() + value.len())
        .sum();
    let mut out = Vec::with_capacity(MAGIC.len() + size + 12);
    out.extend_from_slice(MAGIC);
    for (key, version, value) in items {
        out.extend_from_slice(&len32(key.len()).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&len32(value.len()).to_le_bytes());
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn len32(len: usize) -> u32 {
    u32::try_from(len).expect("keys and values are far below 4 GiB")
}

/// The items of a snapshot, or what is wrong with its bytes.
pub fn decode(bytes: &[u8]) -> Result<Vec<Item>, String> {
    if bytes.len() < MAGIC.len() + 12 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a ringkv snapshot (bad magic or too short)".to_string());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("snapshot checksum mismatch".to_string());
    }
    let (mut rest, count) = body[MAGIC.len()..].split_at(body.len() - MAGIC.len() - 8);
    let count = u64::from_le_bytes(count.try_into().expect("8 bytes"));
    let mut items = Vec::new();
    let truncated = || "snapshot item truncated".to_string();
    let take = |n: usize, rest: &mut &[u8]| -> Result<Bytes, String> {
        if rest.len() < n {
            return Err(truncated());
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(Bytes::copy_from_slice(head))
    };
    while !rest.is_empty() {
        let key_len = u32::from_le_bytes(take(4, &mut rest)?[..].try_into().expect("4 bytes"));
        let key = take(crate::coding::to_usize(u64::from(key_len)), &mut rest)?;
        let version = u64::from_le_bytes(take(8, &mut rest)?[..].try_into().expect("8 bytes"));
        let value_len = u32::from_le_bytes(take(4, &mut rest)?[..].try_into().expect("4 bytes"));
        let value = take(crate::coding::to_usize(u64::from(value_len)), &mut rest)?;
        if items.last().is_some_and(|(last, _, _): &Item| *last >= key) {
            return Err("snapshot keys out of order".to_string());
        }
        items.push((key, version, value));
    }
    if items.len() as u64 != count {
        return Err(format!(
            "snapshot holds {} keys, its trailer says {count}",
            items.len()
        ));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let items = vec![
            (Bytes::from_static(b"a"), 3, Bytes::from_static(b"1")),
            (Bytes::from_static(b"b"), 9, Bytes::from_static(b"\"two\"")),
        ];
        let bytes = encode(&items);
        assert_eq!(decode(&bytes).unwrap(), items);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(decode(&damaged).is_err(), "a flip at {at} went unseen");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
