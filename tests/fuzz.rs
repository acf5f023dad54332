//! Bounded fuzzing of everything that decodes untrusted bytes: the HTTP request parser (bytes
//! from the network) and the WAL, SST and manifest decoders (bytes from a disk that may have been
//! damaged). The property is the same everywhere: any input gives an answer or a typed error,
//! never a panic, and valid input still decodes to what was encoded. Case counts are fixed so the
//! run is bounded (a few seconds in CI); `PROPTEST_CASES` raises them for a longer campaign.

use bytes::Bytes;
use proptest::prelude::*;
use ringkv::checksum::masked_crc32c;
use ringkv::http::request::{self, Limits, Parsed};
use ringkv::sst::block::{self, EntryIter};
use ringkv::sst::format;
use ringkv::wal::record::{self, RecordKind};

const LIMITS: Limits = Limits {
    max_head_bytes: 16 << 10,
    max_body_bytes: 64 << 10,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Requests the server really gets, to mutate from.
const SEEDS: [&[u8]; 4] = [
    b"GET /get?key=a%20b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /set HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\n{\"key\":\"k\",\"value\":[1,2]}",
    b"POST /set HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\n{\"key\r\n0\r\n\r\n",
    b"DELETE /del?key=k HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n",
];

/// A seed with some bytes replaced, inserted or cut.
fn mutated_request() -> impl Strategy<Value = Vec<u8>> {
    (
        0..SEEDS.len(),
        prop::collection::vec((any::<u16>(), any::<u8>(), 0..3u8), 0..8),
        any::<u16>(),
    )
        .prop_map(|(seed, edits, cut)| {
            let mut bytes = SEEDS[seed].to_vec();
            for (at, byte, how) in edits {
                let at = at as usize % (bytes.len() + 1);
                match how {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            let keep = cut as usize % (bytes.len() + 1);
            if cut % 4 == 0 {
                bytes.truncate(keep);
            }
            bytes
        })
}

fn check_request(bytes: &[u8]) {
    match request::parse(bytes, LIMITS) {
        Ok(Parsed::Complete { consumed, .. }) => assert!(consumed <= bytes.len() && consumed > 0),
        Ok(Parsed::Partial { .. }) => {}
        Err(error) => assert!(error.status.code() >= 400, "{error:?}"),
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn http_parser_answers_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_request(&bytes);
    }

    #[test]
    fn http_parser_answers_damaged_requests(bytes in mutated_request()) {
        check_request(&bytes);
    }

    #[test]
    fn wal_records_round_trip_and_damage_is_refused(
        key in prop::collection::vec(any::<u8>(), 1..64),
        value in prop::collection::vec(any::<u8>(), 0..256),
        seq in 1..u64::MAX,
        flip in any::<(u16, u8)>(),
    ) {
        let len = record::encoded_len(&key, &value);
        let mut segment = vec![0u8; len + 64];
        record::encode(&mut segment[..len], RecordKind::Put, seq, 0, 7, &key, &value);
        let (decoded, next) = record::decode(&segment, 0, 1 << 20, 7).expect("a valid record");
        prop_assert_eq!((decoded.seq, decoded.key, decoded.value, next), (seq, &key[..], &value[..], len));
        // Any flipped bit is refused or, if it lands in padding, leaves the record as it was.
        let (at, bit) = (flip.0 as usize % len, flip.1 % 8);
        segment[at] ^= 1 << bit;
        if let Ok((again, _)) = record::decode(&segment, 0, 1 << 20, 7) {
            prop_assert_eq!((again.seq, again.key, again.value), (seq, &key[..], &value[..]));
        }
    }

    #[test]
    fn wal_decoder_answers_any_bytes_at_any_offset(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        offset in 0..600usize,
    ) {
        let _ = record::decode(&bytes, offset, 1 << 20, 7);
    }

    /// A block whose checksum is right but whose entries are garbage (a writer bug, or damage
    /// that happens to keep the CRC) is an error, never a panic.
    #[test]
    fn sst_block_with_a_valid_checksum_and_garbage_entries_is_an_error(
        content in prop::collection::vec(any::<u8>(), 0..300),
        count in 0..40u32,
        probe in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        // Stored raw (compression byte 0), as format 2 writes it.
        let mut block = content.clone();
        block.extend_from_slice(&count.to_le_bytes());
        block.push(0);
        let crc = masked_crc32c(&block);
        block.extend_from_slice(&crc.to_le_bytes());
        let (entries, verified) = block::decode(Bytes::from(block), 2).expect("the checksum was computed over it");
        prop_assert_eq!(verified, count);
        for entry in EntryIter::new(entries.clone(), verified).take(64) {
            let _ = entry;
        }
        let _ = EntryIter::new(entries, verified).find(&probe);
        // Garbage marked as LZ4 with a valid checksum: an error or some entries, never a panic
        // (nor an allocation of what a garbage size field claims).
        let mut compressed = content;
        compressed.push(1);
        let crc = masked_crc32c(&compressed);
        compressed.extend_from_slice(&crc.to_le_bytes());
        if let Ok((entries, count)) = block::decode(Bytes::from(compressed), 2) {
            for entry in EntryIter::new(entries, count).take(64) {
                let _ = entry;
            }
        }
    }

    #[test]
    fn sst_metadata_decoders_answer_any_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        file_bytes in any::<u64>(),
        block_count in 0..64u32,
        data_end in any::<u64>(),
    ) {
        let _ = block::decode(Bytes::from(bytes.clone()), 1);
        let _ = block::decode(Bytes::from(bytes.clone()), 2);
        let _ = format::Footer::decode(&bytes, file_bytes);
        let _ = format::decode_filter(&bytes);
        let _ = format::decode_index(&bytes, block_count, data_end);
    }
}

proptest! {
    // Each case writes a file and runs the real recovery on io_uring: fewer cases.
    #![proptest_config(config(200))]

    #[test]
    fn manifest_recovery_answers_any_file(bytes in prop::collection::vec(any::<u8>(), 0..9000)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(ringkv::manifest::manifest_path(dir.path()), &bytes).unwrap();
        tokio_uring::start(async {
            let _ = ringkv::manifest::recover(&ringkv::io::UringFs, dir.path()).await;
        });
    }
}

/// `body` sealed as the SST format seals its filter and index blocks: a masked CRC32C after it.
fn sealed(mut body: Vec<u8>) -> Vec<u8> {
    let crc = masked_crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

proptest! {
    #![proptest_config(config(3000))]

    /// A footer with the right magic number and checksum over garbage fields is checked field by
    /// field: an error names a field, never the magic or the checksum (the any-bytes property
    /// never got past those two).
    #[test]
    fn sst_footer_with_valid_framing_and_garbage_fields_is_checked(
        fields in prop::collection::vec(any::<u8>(), 52),
        version_is_right in any::<bool>(),
        file_bytes in any::<u64>(),
    ) {
        let mut footer = Vec::with_capacity(format::FOOTER_BYTES);
        footer.extend_from_slice(&format::MAGIC.to_le_bytes());
        footer.extend_from_slice(&fields);
        footer.extend_from_slice(&[0; 4]); // the checksum's place
        if version_is_right {
            footer[8..12].copy_from_slice(&format::FORMAT_VERSION.to_le_bytes());
        }
        let crc = masked_crc32c(&footer[..60]);
        footer[60..64].copy_from_slice(&crc.to_le_bytes());
        if let Err(reason) = format::Footer::decode(&footer, file_bytes) {
            prop_assert!(!reason.contains("magic") && !reason.contains("checksum"), "{reason}");
        }
    }

    /// A filter block with a valid checksum over a garbage header and bits decodes or is refused
    /// for its header, and a decoded one answers probes.
    #[test]
    fn sst_filter_with_valid_framing_and_garbage_content_is_checked(
        hash_count in any::<u8>(),
        words in 0..6usize,
        bit_count_is_right in any::<bool>(),
        bit_count in any::<u32>(),
        bits in prop::collection::vec(any::<u8>(), 0..48),
        probe in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut body = vec![hash_count, 0, 0, 0];
        let bit_count = if bit_count_is_right { u32::try_from(words * 64).unwrap() } else { bit_count };
        body.extend_from_slice(&bit_count.to_le_bytes());
        body.extend(bits.iter().copied().cycle().take(words * 8));
        match format::decode_filter(&sealed(body)) {
            Ok(filter) => {
                let _ = filter.may_contain(&probe);
            }
            Err(reason) => prop_assert!(!reason.contains("checksum"), "{reason}"),
        }
    }

    /// An index block with a valid checksum over garbage entries is refused for its content.
    #[test]
    fn sst_index_with_valid_framing_and_garbage_entries_is_checked(
        body in prop::collection::vec(any::<u8>(), 0..200),
        block_count in 0..8u32,
        data_end in any::<u64>(),
    ) {
        let mut body = body;
        body.extend_from_slice(&block_count.to_le_bytes());
        if let Err(reason) = format::decode_index(&sealed(body), block_count, data_end) {
            prop_assert!(!reason.contains("checksum"), "{reason}");
        }
    }
}

proptest! {
    // Each case writes a file and runs the real recovery on io_uring: fewer cases.
    #![proptest_config(config(200))]

    /// A manifest of frames with valid checksums over garbage payloads gets past the framing:
    /// recovery applies the payloads and refuses what they say, or opens; it never calls the file
    /// empty of valid edits, and never panics.
    #[test]
    fn manifest_frames_with_valid_checksums_and_garbage_payloads_are_applied(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 1..8),
    ) {
        let mut file = Vec::new();
        for payload in &payloads {
            let mut body = ringkv::coding::len_u32(payload.len()).to_le_bytes().to_vec();
            body.extend_from_slice(payload);
            let crc = masked_crc32c(&body);
            file.extend_from_slice(&crc.to_le_bytes());
            file.extend_from_slice(&body);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(ringkv::manifest::manifest_path(dir.path()), &file).unwrap();
        let outcome = tokio_uring::start(async {
            ringkv::manifest::recover(&ringkv::io::UringFs, dir.path()).await
        });
        if let Err(error) = outcome {
            let message = error.to_string();
            prop_assert!(!message.contains("no valid edit") && !message.contains("damaged edit"), "{message}");
        }
    }
}
