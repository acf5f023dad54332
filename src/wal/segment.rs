//! WAL segment files: their names, and creating one pre-written with zeros (see
//! `docs/format.md`). Knows files, not records.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::{AlignedBuf, DataFile, FileSystem, OpenMode};

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".log";
const TMP_SUFFIX: &str = ".log.tmp";
/// Zeros are written in chunks of this size, one in flight, to leave room for WAL syncs.
const PREWRITE_CHUNK_BYTES: usize = 1 << 20;

pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{number:016}{SUFFIX}"))
}

fn tmp_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{number:016}{TMP_SUFFIX}"))
}

/// The segment number of a file name, if it names a segment.
pub fn segment_number(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether a file name is a segment that was being pre-written when the server stopped.
pub fn is_unfinished_segment(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(PREFIX) && name.ends_with(TMP_SUFFIX))
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
    let tmp = tmp_path(dir, number);
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
        .map_err(|error| Error::io("create", &tmp, error))?;
    let mut zeros = AlignedBuf::zeroed(PREWRITE_CHUNK_BYTES);
    let mut offset = 0;
    while offset < segment_bytes {
        let chunk = PREWRITE_CHUNK_BYTES.min((segment_bytes - offset) as usize);
        zeros.set_len(chunk);
        let (result, returned) = file.write_at(zeros, offset).await;
        zeros = returned;
        result.map_err(|error| Error::io("pre-write", &tmp, error))?;
        offset += chunk as u64;
    }
    file.sync_data()
        .await
        .map_err(|error| Error::io("sync", &tmp, error))?;
    fs.rename(&tmp, &path)
        .await
        .map_err(|error| Error::io("rename", &tmp, error))?;
    fs.sync_dir(dir)
        .await
        .map_err(|error| Error::io("sync directory", dir, error))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let path = segment_path(Path::new("/d"), 42);
        assert_eq!(path, Path::new("/d/wal-0000000000000042.log"));
        assert_eq!(segment_number(&path), Some(42));
        assert_eq!(segment_number(Path::new("/d/wal-42.log")), None);
        assert!(is_unfinished_segment(&tmp_path(Path::new("/d"), 3)));
        assert!(!is_unfinished_segment(&path));
    }
}
