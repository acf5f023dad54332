//! One server per data directory: an exclusive `flock` on `LOCK`, held for the life of the store.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Holds the lock until dropped (closing the file releases it).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock or fails at once with [`Error::DataDirLocked`]; never waits.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path: PathBuf = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| Error::io("open", &path, error))?;
        // std's try_lock is flock(LOCK_EX | LOCK_NB) on Linux: released by the kernel when the
        // process dies, however it dies.
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::DataDirLocked {
                    path: dir.to_path_buf(),
                    lock: path,
                })
            }
            Err(TryLockError::Error(error)) => return Err(Error::io("flock", &path, error)),
        }
        // The pid is for an operator wondering who holds the directory; the lock is the flock.
        file.set_len(0)
            .map_err(|error| Error::io("truncate", &path, error))?;
        writeln!(file, "{}", std::process::id()).map_err(|error| Error::io("write", &path, error))?;
        Ok(DirLock { _file: file })
    }
}
