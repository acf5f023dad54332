//! One server per data directory: the exclusive lock of [`FileSystem::lock_dir`] (an `flock` on
//! `LOCK` in production), held for the life of the store. Owns the error a second server gets.

use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::FileSystem;

/// Holds the lock until dropped (closing the file releases it).
pub struct DirLock {
    _held: Box<dyn Send>,
}

impl DirLock {
    /// Takes the lock or fails at once with [`Error::DataDirLocked`]; never waits.
    pub fn acquire<F: FileSystem>(fs: &F, dir: &Path) -> Result<Self> {
        let lock = dir.join("LOCK");
        match fs.lock_dir(dir) {
            Ok(held) => Ok(DirLock {
                _held: Box::new(held),
            }),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Err(Error::DataDirLocked {
                path: dir.to_path_buf(),
                lock,
            }),
            Err(error) => Err(Error::io("lock", lock, error)),
        }
    }
}
