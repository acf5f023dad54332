//! One server per data directory: an exclusive `flock` on `LOCK`, held for the life of the store.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
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
        // SAFETY-free: flock takes a plain descriptor we own for the call's duration.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::DataDirLocked {
                    path: dir.to_path_buf(),
                    lock: path,
                });
            }
            return Err(Error::io("flock", &path, error));
        }
        // The pid is for an operator wondering who holds the directory; the lock is the flock.
        file.set_len(0)
            .map_err(|error| Error::io("truncate", &path, error))?;
        writeln!(file, "{}", std::process::id()).map_err(|error| Error::io("write", &path, error))?;
        Ok(DirLock { _file: file })
    }
}
