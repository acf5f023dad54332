//! The sequence-number lease: a durable high-water mark of the versions (sequence numbers) the
//! store may hand out, kept ahead of use, so that no version is ever handed out twice.
//!
//! Under `periodic` and `never` a power loss can take back acknowledged writes with the WAL
//! tail; recovery then finds a lower last version than the one clients were told, and without
//! the lease the next life handed those versions out again, to other writes. With it, recovery
//! starts at the recorded lease end, and a write is given a version only below a lease end that
//! is durable: the lease is extended in steps of `LEASE_SPAN`, when less than half of it is left.
//! Versions stay increasing, not dense: a restart skips what the last lease had not used.
//!
//! The file, `SEQ_LEASE`, is two 4 KiB slots, each `magic:u64 ("RKVLEASE") lease_end:u64
//! masked_crc32c:u32` over the first 16 bytes, then zeros (`docs/format.md`). It is created once
//! (written, synced, renamed into place); an extension overwrites the older slot in place and
//! syncs it, so it needs no new space on a full disk, and a torn slot write leaves the other
//! slot's lease, which still covers every version handed out. The lease is the larger valid
//! slot. A failed sync is never retried: extensions fail from then on.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use crate::checksum::masked_crc32c;
use crate::coding;
use crate::error::{Error, IoContext, Result};
use crate::filename::FileKind;
use crate::io::{AlignedBuf, DataFile, FileSystem, OpenMode, BLOCK_BYTES};

/// Versions one lease covers: a lease write and sync per half of it.
pub const LEASE_SPAN: u64 = 1 << 20;

const MAGIC: &[u8; 8] = b"RKVLEASE";
const SLOTS: usize = 2;

/// The open lease file. See the module documentation.
pub struct SeqLease<F: FileSystem> {
    path: PathBuf,
    file: F::File,
    /// The slot the next extension overwrites (the older one).
    next_slot: Cell<usize>,
    failed: RefCell<Option<String>>,
}

fn encode_slot(lease_end: u64) -> AlignedBuf {
    let mut record = Vec::with_capacity(20);
    record.extend_from_slice(MAGIC);
    record.extend_from_slice(&lease_end.to_le_bytes());
    let crc = masked_crc32c(&record);
    record.extend_from_slice(&crc.to_le_bytes());
    let mut buf = AlignedBuf::zeroed(BLOCK_BYTES);
    buf.set_len(0);
    let copied = buf.extend_from_slice(&record);
    debug_assert!(copied);
    buf.pad_to_block();
    buf
}

/// The lease a slot records, if it holds a valid one.
fn decode_slot(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return None;
    }
    let stored = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    (stored == masked_crc32c(&bytes[..16])).then(|| coding::get_u64(bytes, 8))
}

impl<F: FileSystem> SeqLease<F> {
    /// Opens the lease of `dir` and returns it with the lease end it records; a store without
    /// one (new, or written by an older ringkv) gets a file recording `initial_end`.
    pub async fn open(fs: &F, dir: &Path, initial_end: u64) -> Result<(Self, u64)> {
        let path = FileKind::SeqLease.path(dir);
        let file = match fs.open(&path, OpenMode::READ_WRITE).await {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Self::create(fs, dir, initial_end).await?;
                fs.open(&path, OpenMode::READ_WRITE)
                    .await
                    .context("open", &path)?
            }
            Err(error) => return Err(Error::io("open", path, error)),
        };
        let (result, buf) = file.read_at(AlignedBuf::zeroed(SLOTS * BLOCK_BYTES), 0).await;
        let read = result.context("read", &path)?;
        let bytes = &buf.as_slice()[..read];
        let slots: Vec<Option<u64>> = (0..SLOTS)
            .map(|slot| {
                bytes
                    .get(slot * BLOCK_BYTES..(slot + 1) * BLOCK_BYTES)
                    .and_then(decode_slot)
            })
            .collect();
        let Some(recorded) = slots.iter().flatten().copied().max() else {
            return Err(Error::Corruption {
                kind: "sequence lease",
                path,
                offset: 0,
                reason: "neither slot holds a valid lease".to_string(),
            });
        };
        // Overwrite the older (or damaged) slot first.
        let newest = slots.iter().position(|slot| *slot == Some(recorded)).unwrap_or(0);
        let lease = SeqLease {
            path,
            file,
            next_slot: Cell::new((newest + 1) % SLOTS),
            failed: RefCell::new(None),
        };
        Ok((lease, recorded))
    }

    async fn create(fs: &F, dir: &Path, lease_end: u64) -> Result<()> {
        let tmp = FileKind::SeqLeaseTmp.path(dir);
        let file = crate::io::create_fresh(fs, &tmp).await?;
        let mut written = Ok(());
        for slot in 0..SLOTS {
            let (result, _) = file
                .write_at(encode_slot(lease_end), (slot * BLOCK_BYTES) as u64)
                .await;
            written = written.and(result);
        }
        let published = match written {
            Ok(()) => crate::io::publish(fs, &file, &tmp, &FileKind::SeqLease.path(dir)).await,
            Err(error) => Err(Error::io("write", &tmp, error)),
        };
        if published.is_err() {
            drop(file);
            crate::io::remove_leftover(fs, &tmp).await;
        }
        published
    }

    /// Makes `lease_end` durable: when this returns `Ok`, versions below it may be handed out.
    pub async fn extend(&self, lease_end: u64) -> Result<()> {
        if let Some(cause) = &*self.failed.borrow() {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        let slot = self.next_slot.get();
        let (result, _) = self
            .file
            .write_at(encode_slot(lease_end), (slot * BLOCK_BYTES) as u64)
            .await;
        result.context("write", &self.path)?;
        if let Err(error) = self.file.sync_data().await {
            let error = Error::failed_sync("sync", &self.path, error);
            *self.failed.borrow_mut() = Some(error.to_string());
            return Err(error);
        }
        self.next_slot.set((slot + 1) % SLOTS);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_round_trips_and_any_damage_is_refused() {
        let slot = encode_slot(123_456);
        assert_eq!(decode_slot(slot.as_slice()), Some(123_456));
        for byte in 0..20 {
            let mut damaged = slot.as_slice().to_vec();
            damaged[byte] ^= 0x04;
            assert_eq!(decode_slot(&damaged), None, "byte {byte}");
        }
        assert_eq!(decode_slot(&[0; BLOCK_BYTES]), None);
    }
}
