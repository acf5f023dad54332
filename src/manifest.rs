//! The manifest: an append-only, CRC-framed log of version edits (`docs/format.md`, "Manifest"),
//! synced after every edit, rewritten as one snapshot edit (temporary name, sync, rename,
//! directory sync) at start-up and whenever it has grown. Knows edits and bytes; loading the
//! tables it names is the engine's job.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::checksum::masked_crc32c;
use crate::coding;
use crate::error::{Error, IoContext, Result};
use crate::filename::FileKind;
use crate::io::{round_down_to_block, round_up_to_block, AlignedBuf, DataFile, FileSystem, OpenMode};
use crate::version::{VersionEdit, LEVELS};

/// `masked_crc:u32 payload_len:u32`.
const FRAME_HEADER_BYTES: usize = 8;
const _: () = assert!(FRAME_HEADER_BYTES == 4 + 4, "masked crc, then payload length");
/// Rewrite once the log is this much larger than its last snapshot.
const REWRITE_GROWTH_BYTES: usize = 1 << 20;

const TAG_FLUSHED_SEQ: u8 = 1;
const TAG_FIRST_LIVE_WAL_SEGMENT: u8 = 2;
const TAG_NEXT_FILE_NUMBER: u8 = 3;
const TAG_ADD_TABLE: u8 = 4;
const TAG_REMOVE_TABLE: u8 = 5;

/// A table as the manifest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRecord {
    pub level: usize,
    pub number: u64,
    pub file_bytes: u64,
    pub entry_count: u64,
    pub smallest: Bytes,
    pub largest: Bytes,
}

/// The state the manifest describes, after replaying every edit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestState {
    /// Live tables, in the order they were added.
    pub tables: Vec<TableRecord>,
    pub flushed_seq: u64,
    pub first_live_wal_segment: u64,
    pub next_file_number: u64,
    /// Edits replayed.
    pub edits: u64,
}

/// The manifest's path in `dir`.
pub fn manifest_path(dir: &Path) -> PathBuf {
    FileKind::Manifest.path(dir)
}

fn encode_edit(edit: &VersionEdit) -> Vec<u8> {
    let mut out = Vec::new();
    let u64_field = |out: &mut Vec<u8>, tag: u8, value: Option<u64>| {
        if let Some(value) = value {
            out.push(tag);
            out.extend_from_slice(&value.to_le_bytes());
        }
    };
    u64_field(&mut out, TAG_FLUSHED_SEQ, edit.flushed_seq);
    u64_field(&mut out, TAG_FIRST_LIVE_WAL_SEGMENT, edit.first_live_wal_segment);
    u64_field(&mut out, TAG_NEXT_FILE_NUMBER, edit.next_file_number);
    for &(level, number) in &edit.removed {
        out.push(TAG_REMOVE_TABLE);
        out.push(u8::try_from(level).expect("LEVELS is 7"));
        out.extend_from_slice(&number.to_le_bytes());
    }
    for (level, table) in &edit.added {
        out.push(TAG_ADD_TABLE);
        out.push(u8::try_from(*level).expect("LEVELS is 7"));
        out.extend_from_slice(&table.number.to_le_bytes());
        out.extend_from_slice(&table.file_bytes.to_le_bytes());
        out.extend_from_slice(&table.entry_count().to_le_bytes());
        for key in [&table.smallest, &table.largest] {
            out.extend_from_slice(&coding::len_u32(key.len()).to_le_bytes());
            out.extend_from_slice(key);
        }
    }
    out
}

/// Frames a payload: `masked_crc(len ‖ payload) len payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&coding::len_u32(payload.len()).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = masked_crc32c(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The payload of a valid frame at `at`, and where the next frame starts.
fn unframe(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at + FRAME_HEADER_BYTES)?;
    let len = coding::get_u32(header, 4) as usize;
    if len == 0 {
        return None;
    }
    let end = (at + FRAME_HEADER_BYTES).checked_add(len)?;
    let body = bytes.get(at + 4..end)?;
    let stored = coding::get_u32(header, 0);
    (masked_crc32c(body) == stored).then(|| (&bytes[at + FRAME_HEADER_BYTES..end], end))
}

/// Applies one edit's payload to `state`.
fn apply_payload(state: &mut ManifestState, payload: &[u8]) -> Result<(), String> {
    let mut at = 0;
    let take = |at: &mut usize, len: usize| -> Result<&[u8], String> {
        let field = payload
            .get(*at..*at + len)
            .ok_or_else(|| format!("field of {len} bytes at payload offset {at} runs past the edit"))?;
        *at += len;
        Ok(field)
    };
    let u64_of = |bytes: &[u8]| coding::get_u64(bytes, 0);
    while at < payload.len() {
        let tag = take(&mut at, 1)?[0];
        match tag {
            TAG_FLUSHED_SEQ => state.flushed_seq = u64_of(take(&mut at, 8)?),
            TAG_FIRST_LIVE_WAL_SEGMENT => state.first_live_wal_segment = u64_of(take(&mut at, 8)?),
            TAG_NEXT_FILE_NUMBER => state.next_file_number = u64_of(take(&mut at, 8)?),
            TAG_REMOVE_TABLE => {
                let level = take(&mut at, 1)?[0] as usize;
                let number = u64_of(take(&mut at, 8)?);
                let before = state.tables.len();
                state.tables.retain(|t| !(t.level == level && t.number == number));
                if state.tables.len() == before {
                    return Err(format!(
                        "edit removes table {number} at level {level}, which is not live"
                    ));
                }
            }
            TAG_ADD_TABLE => {
                let level = take(&mut at, 1)?[0] as usize;
                if level >= LEVELS {
                    return Err(format!("table at level {level}"));
                }
                let number = u64_of(take(&mut at, 8)?);
                let file_bytes = u64_of(take(&mut at, 8)?);
                let entry_count = u64_of(take(&mut at, 8)?);
                let mut keys = [Bytes::new(), Bytes::new()];
                for key in &mut keys {
                    let len = coding::get_u32(take(&mut at, 4)?, 0) as usize;
                    *key = Bytes::copy_from_slice(take(&mut at, len)?);
                }
                let [smallest, largest] = keys;
                if state.tables.iter().any(|t| t.number == number) {
                    return Err(format!("edit adds table {number} twice"));
                }
                state.tables.push(TableRecord {
                    level,
                    number,
                    file_bytes,
                    entry_count,
                    smallest,
                    largest,
                });
            }
            other => return Err(format!("unknown edit field tag {other}")),
        }
    }
    Ok(())
}

/// Replays the manifest in `dir`; a missing manifest is an empty store. A damaged record is
/// tolerated only as the torn tail of the last edit (no valid record after it): that edit was
/// never synced, so nothing acknowledged depends on it.
pub async fn recover<F: FileSystem>(fs: &F, dir: &Path) -> Result<ManifestState> {
    let path = manifest_path(dir);
    let file = match fs.open(&path, OpenMode::READ).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(ManifestState::default()),
        Err(error) => return Err(Error::io("open", &path, error)),
    };
    let size = coding::to_usize(file.size().await.context("stat", &path)?);
    let (result, buf) = file.read_at(AlignedBuf::zeroed(size), 0).await;
    let read = result.context("read", &path)?;
    let bytes = &buf.as_slice()[..read];
    let mut state = ManifestState::default();
    let mut at = 0;
    while at < bytes.len() {
        if let Some((payload, next)) = unframe(bytes, at) {
            apply_payload(&mut state, payload)
                .map_err(|reason| Error::manifest_corruption(&path, at as u64, reason))?;
            state.edits += 1;
            at = next;
        } else {
            if let Some(later) = (at + 1..bytes.len()).find(|&later| unframe(bytes, later).is_some()) {
                return Err(Error::manifest_corruption(
                    &path,
                    at as u64,
                    format!("damaged edit, but a valid edit follows at offset {later}"),
                ));
            }
            break;
        }
    }
    if state.edits == 0 {
        return Err(Error::manifest_corruption(
            &path,
            0,
            "no valid edit (the first edit is always a synced snapshot)",
        ));
    }
    Ok(state)
}

/// Appends edits to the manifest in `dir`.
pub struct ManifestWriter<F: FileSystem> {
    path: PathBuf,
    file: F::File,
    /// The whole file as written (the last partial block is rewritten with each edit).
    bytes: Vec<u8>,
    snapshot_bytes: usize,
    /// Set by a failed sync: what the file holds is unknown from then on, and a later edit's
    /// sync would make durable whatever part of the failed edit shares its block (found by the
    /// simulator: the flush loop's edit, synced after the compaction loop's failed one, left
    /// half an edit in the middle of the log and a store that refused to open).
    failed: Option<String>,
}

impl<F: FileSystem> ManifestWriter<F> {
    /// Writes a new manifest holding `snapshot` alone and makes it the manifest.
    pub async fn create(fs: &F, dir: &Path, snapshot: &VersionEdit) -> Result<Self> {
        let tmp = FileKind::ManifestTmp.path(dir);
        let file = crate::io::create_fresh(fs, &tmp).await?;
        let mut writer = ManifestWriter {
            path: tmp.clone(),
            file,
            bytes: Vec::new(),
            snapshot_bytes: 0,
            failed: None,
        };
        writer.write(snapshot).await?;
        writer.snapshot_bytes = writer.bytes.len();
        let path = manifest_path(dir);
        crate::io::publish(fs, &writer.file, &tmp, &path).await?;
        writer.path = path;
        Ok(writer)
    }

    /// Appends `edit` and syncs. When this returns `Ok`, the edit survives a crash.
    /// After a failed sync every append fails: nothing is written or synced again.
    pub async fn append(&mut self, edit: &VersionEdit) -> Result<()> {
        if let Some(cause) = &self.failed {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        self.write(edit).await?;
        // A failed sync is not retried (see the crate's fault rules), by this caller or another.
        if let Err(error) = self.file.sync_data().await {
            let error = Error::failed_sync("sync", &self.path, error);
            self.failed = Some(error.to_string());
            return Err(error);
        }
        Ok(())
    }

    /// Writes `edit` after the others (rewriting the last partial block), without a sync.
    async fn write(&mut self, edit: &VersionEdit) -> Result<()> {
        let record = frame(&encode_edit(edit));
        let old_len = self.bytes.len();
        let start = coding::to_usize(round_down_to_block(old_len as u64));
        self.bytes.extend_from_slice(&record);
        let end = round_up_to_block(self.bytes.len());
        let mut buf = AlignedBuf::zeroed(end - start);
        let copied = buf.extend_from_slice(&self.bytes[start..]);
        debug_assert!(copied);
        buf.pad_to_block();
        let (result, _) = self.file.write_at(buf, start as u64).await;
        if let Err(error) = result {
            // Not written: the next append rewrites the same block without this edit.
            self.bytes.truncate(old_len);
            return Err(Error::io("write", &self.path, error));
        }
        Ok(())
    }

    /// Whether the log has grown enough to be worth rewriting as a snapshot.
    pub fn wants_rewrite(&self) -> bool {
        self.bytes.len() > self.snapshot_bytes + REWRITE_GROWTH_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reject_damage_and_zeros() {
        let framed = frame(b"\x01\x02\x00\x00\x00\x00\x00\x00\x00");
        assert_eq!(
            unframe(&framed, 0).map(|(p, n)| (p.len(), n)),
            Some((9, framed.len()))
        );
        assert!(unframe(&[0; 32], 0).is_none());
        for byte in 0..framed.len() {
            let mut damaged = framed.clone();
            damaged[byte] ^= 0x10;
            assert!(unframe(&damaged, 0).is_none(), "byte {byte}");
        }
    }

    #[test]
    fn payload_fields_apply_and_bad_ones_are_named() {
        let mut state = ManifestState::default();
        let mut payload = vec![TAG_FLUSHED_SEQ];
        payload.extend_from_slice(&7u64.to_le_bytes());
        payload.push(TAG_ADD_TABLE);
        payload.push(1);
        for n in [5u64, 4096, 3] {
            payload.extend_from_slice(&n.to_le_bytes());
        }
        for key in [&b"a"[..], b"z"] {
            payload.extend_from_slice(&1u32.to_le_bytes());
            payload.extend_from_slice(key);
        }
        apply_payload(&mut state, &payload).unwrap();
        assert_eq!(state.flushed_seq, 7);
        assert_eq!(state.tables[0].number, 5);
        assert_eq!(&state.tables[0].largest[..], b"z");
        let mut remove = vec![TAG_REMOVE_TABLE, 2];
        remove.extend_from_slice(&5u64.to_le_bytes());
        assert!(apply_payload(&mut state.clone(), &remove)
            .unwrap_err()
            .contains("not live"));
        assert!(apply_payload(&mut state.clone(), &[99])
            .unwrap_err()
            .contains("tag 99"));
        assert!(apply_payload(&mut state.clone(), &payload[..20]).is_err());
    }
}
