//! The body of a batch record (`RecordKind::Batch`): several puts and deletes written as one
//! record, so that one checksum covers them all and recovery finds all of them or none. Op `i`
//! has version `record.seq + i`. Pure bytes; grammar in `docs/format.md` ("Batch records").
//!
//! ```text
//! count u32 | count × (kind u8 | key_len u32 | value_len u32 | key | value)
//! ```
//! `kind` is 1 for a put and 2 for a delete (whose `value_len` is 0).

use crate::coding::{get_u32, len_u32};

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_HEADER_BYTES: usize = 1 + 4 + 4;

/// One op of a batch; `value: None` is a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOp<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Bytes the body of `ops` takes.
pub fn encoded_len<'a>(ops: impl IntoIterator<Item = BatchOp<'a>>) -> usize {
    4 + ops
        .into_iter()
        .map(|op| OP_HEADER_BYTES + op.key.len() + op.value.map_or(0, <[u8]>::len))
        .sum::<usize>()
}

/// The body of a batch of `ops`.
pub fn encode<'a>(ops: &[BatchOp<'a>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(ops.iter().copied()));
    out.extend_from_slice(&len_u32(ops.len()).to_le_bytes());
    for op in ops {
        let value = op.value.unwrap_or_default();
        out.push(if op.value.is_some() { OP_PUT } else { OP_DELETE });
        out.extend_from_slice(&len_u32(op.key.len()).to_le_bytes());
        out.extend_from_slice(&len_u32(value.len()).to_le_bytes());
        out.extend_from_slice(op.key);
        out.extend_from_slice(value);
    }
    out
}

/// The ops of a batch body, in order; an error says why the body is not one (a body that
/// passed its record's checksum but does not parse is damage all the same).
pub fn decode(body: &[u8]) -> Result<Vec<BatchOp<'_>>, String> {
    if body.len() < 4 {
        return Err(format!("batch body of {} bytes has no op count", body.len()));
    }
    let count = get_u32(body, 0) as usize;
    if count == 0 {
        return Err("batch of no ops".to_string());
    }
    // Every op takes at least its header: a count past that is damage, not an allocation.
    if count > (body.len() - 4) / OP_HEADER_BYTES {
        return Err(format!(
            "batch count {count} does not fit in {} bytes",
            body.len()
        ));
    }
    let mut ops = Vec::with_capacity(count);
    let mut at = 4;
    for index in 0..count {
        let header = body
            .get(at..at + OP_HEADER_BYTES)
            .ok_or_else(|| format!("batch op {index} runs past the body"))?;
        let kind = header[0];
        let key_len = get_u32(header, 1) as usize;
        let value_len = get_u32(header, 5) as usize;
        at += OP_HEADER_BYTES;
        let end = at
            .checked_add(key_len)
            .and_then(|n| n.checked_add(value_len))
            .filter(|&end| end <= body.len())
            .ok_or_else(|| format!("batch op {index} runs past the body"))?;
        let key = &body[at..at + key_len];
        let value = &body[at + key_len..end];
        let value = match kind {
            OP_PUT => Some(value),
            OP_DELETE if value_len == 0 => None,
            _ => {
                return Err(format!(
                    "batch op {index} has kind {kind} with a {value_len}-byte value"
                ))
            }
        };
        ops.push(BatchOp { key, value });
        at = end;
    }
    if at != body.len() {
        return Err(format!("{} bytes after the last batch op", body.len() - at));
    }
    Ok(ops)
}

/// The number of ops a body holds, without checking the rest (for a record already decoded).
pub fn count(body: &[u8]) -> u64 {
    if body.len() < 4 {
        return 0;
    }
    u64::from(get_u32(body, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ops = [
            BatchOp {
                key: b"a",
                value: Some(b"1"),
            },
            BatchOp {
                key: b"bb",
                value: None,
            },
            BatchOp {
                key: b"c",
                value: Some(b""),
            },
        ];
        let body = encode(&ops);
        assert_eq!(body.len(), encoded_len(ops.iter().copied()));
        assert_eq!(decode(&body).unwrap(), ops);
        assert_eq!(count(&body), 3);
    }

    #[test]
    fn every_truncation_and_bad_count_is_rejected() {
        let body = encode(&[
            BatchOp {
                key: b"key",
                value: Some(b"value"),
            },
            BatchOp {
                key: b"k2",
                value: None,
            },
        ]);
        for len in 0..body.len() {
            assert!(decode(&body[..len]).is_err(), "truncated to {len}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        for count in [0u32, 3, u32::MAX] {
            let mut bad = body.clone();
            bad[..4].copy_from_slice(&count.to_le_bytes());
            assert!(decode(&bad).is_err(), "count {count}");
        }
        let mut bad_kind = body.clone();
        bad_kind[4] = 7;
        assert!(decode(&bad_kind).is_err());
    }
}
