//! WAL segment files: creating one pre-written with zeros (see `docs/format.md`), and deleting
//! retired ones. Names are `filename`'s. Knows files, not records.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::filename::FileKind;
use crate::io::{AlignedBuf, DataFile, FileSystem, OpenMode};

/// Zeros are written in chunks of this size, one in flight, to leave room for WAL syncs.
const PREWRITE_CHUNK_BYTES: usize = 1 << 20;

/// The path of segment `number` in `dir`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    FileKind::WalSegment(number).path(dir)
}

/// Opens segment `number` for writing with `mode`'s mechanism (buffered, dsync), creating it
/// pre-written with `segment_bytes` zeros (under a temporary name, synced, renamed, directory
/// synced) if it does not exist yet.
pub async fn open_or_create<F: FileSystem>(
    fs: &F,
    dir: &Path,
    number: u64,
    segment_bytes: u64,
    mode: OpenMode,
) -> Result<F::File> {
    let path = segment_path(dir, number);
    let existing = OpenMode {
        create_new: false,
        ..mode
    };
    match fs.open(&path, existing).await {
        Ok(file) => return Ok(file),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::io("open", path, error)),
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
        Ok(()) => Ok(file),
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

/// Deletes segments `from..to`, which the manifest now says hold only flushed records: WAL
/// retirement. A segment already gone is fine; another failure is logged and the segment left
/// (recovery skips segments below the manifest's first live one).
pub async fn retire_segments<F: FileSystem>(fs: &F, dir: &Path, from: u64, to: u64) {
    for number in from..to {
        let path = segment_path(dir, number);
        if let Err(error) = fs.remove(&path).await {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!("could not delete retired WAL segment {}: {error}", path.display());
            }
        }
    }
}
