//! WAL segment files: making the next one ready (recycling a retired one, or pre-writing a new
//! one with zeros; see `docs/format.md`), and retiring old ones (kept for reuse or deleted).
//! Names are `filename`'s. Knows files, not records.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::filename::FileKind;
use crate::io::{AlignedBuf, DataFile, FileSystem, OpenMode};
use crate::wal::recycle::RecyclePool;

/// Zeros are written in chunks of this size, one in flight, to leave room for WAL syncs.
const PREWRITE_CHUNK_BYTES: usize = 1 << 20;

/// The path of segment `number` in `dir`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    FileKind::WalSegment(number).path(dir)
}

/// How a segment file was made ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// It existed (the segment recovery ended in, or one after it).
    Existing,
    /// A retired segment's file, renamed: no byte written.
    Recycled { from: u64 },
    /// A new file, pre-written with this many zero bytes.
    Created { zero_bytes: u64 },
}

/// Opens segment `number` for writing with `mode`'s mechanism (buffered, dsync). If it does not
/// exist yet, renames a retired segment from `pool` to it, or else creates it pre-written with
/// `segment_bytes` zeros (under a temporary name, synced, renamed, directory synced). Either way
/// every block of the file is written and allocated before a record goes in.
pub async fn open_or_create<F: FileSystem>(
    fs: &F,
    dir: &Path,
    number: u64,
    segment_bytes: u64,
    mode: OpenMode,
    pool: &RecyclePool,
) -> Result<(F::File, Prepared)> {
    let path = segment_path(dir, number);
    let existing = OpenMode {
        create_new: false,
        ..mode
    };
    match fs.open(&path, existing).await {
        Ok(file) => return Ok((file, Prepared::Existing)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::io("open", path, error)),
    }
    while let Some(from) = pool.take() {
        if let Some(file) = recycle(fs, dir, from, &path, existing).await? {
            return Ok((file, Prepared::Recycled { from }));
        }
    }
    let tmp = FileKind::WalSegmentTmp(number).path(dir);
    match fs.remove(&tmp).await {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::io("remove", tmp, error)),
    }
    let file = fs
        .open(
            &tmp,
            OpenMode {
                create_new: true,
                ..mode
            },
        )
        .await
        .context("create", &tmp)?;
    match prewrite_and_publish(fs, &file, &tmp, &path, segment_bytes).await {
        Ok(()) => Ok((
            file,
            Prepared::Created {
                zero_bytes: segment_bytes,
            },
        )),
        Err(error) => {
            // A full disk must not keep a half-written segment (up to a segment's bytes) until
            // the next attempt or start-up. Nothing names it: the writer uses it only once this
            // returns `Ok`.
            drop(file);
            crate::io::remove_leftover(fs, &tmp).await;
            crate::io::remove_leftover(fs, &path).await;
            Err(error)
        }
    }
}

/// Renames retired segment `from` to `path` and makes the rename durable before anything is
/// written into it (a record synced into a file whose new name a crash undoes would be lost:
/// recovery skips segments below the manifest's first live one). `None` if the retired file is
/// gone.
async fn recycle<F: FileSystem>(
    fs: &F,
    dir: &Path,
    from: u64,
    path: &Path,
    mode: OpenMode,
) -> Result<Option<F::File>> {
    let retired = segment_path(dir, from);
    match fs.rename(&retired, path).await {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io("rename", retired, error)),
    }
    let ready = async {
        fs.sync_dir(dir).await.sync_context(dir)?;
        fs.open(path, mode).await.context("open", path)
    };
    match ready.await {
        Ok(file) => Ok(Some(file)),
        Err(error) => {
            // Back under its retired name, so that no record goes into a file whose name may
            // not be durable; the next attempt recycles or creates again.
            if let Err(back) = fs.rename(path, &retired).await {
                tracing::warn!("could not rename {} back: {back}", path.display());
            }
            Err(error)
        }
    }
}

async fn prewrite_and_publish<F: FileSystem>(
    fs: &F,
    file: &F::File,
    tmp: &Path,
    path: &Path,
    segment_bytes: u64,
) -> Result<()> {
    let mut zeros = AlignedBuf::zeroed(PREWRITE_CHUNK_BYTES);
    let mut offset = 0;
    while offset < segment_bytes {
        let chunk = PREWRITE_CHUNK_BYTES.min(crate::coding::to_usize(segment_bytes - offset));
        zeros.set_len(chunk);
        let (result, returned) = file.write_at(zeros, offset).await;
        zeros = returned;
        result.context("pre-write", tmp)?;
        offset += chunk as u64;
    }
    crate::io::publish(fs, file, tmp, path).await
}

/// Retires segments `from..to`, which the manifest now says hold only flushed records: each is
/// kept in `pool` for reuse, or deleted once the pool is full. A segment already gone is fine;
/// another failure is logged and the segment left (recovery removes segments below the
/// manifest's first live one).
pub async fn retire_segments<F: FileSystem>(fs: &F, dir: &Path, from: u64, to: u64, pool: &RecyclePool) {
    for number in from..to {
        if pool.offer(number) {
            continue;
        }
        let path = segment_path(dir, number);
        if let Err(error) = fs.remove(&path).await {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!("could not delete retired WAL segment {}: {error}", path.display());
            }
        }
    }
}
