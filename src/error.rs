//! The store's error type and `Result` alias. Errors carry what a user or an operator needs to act
//! on: the file, the offset, what was expected. This module knows nothing of HTTP; `http::routes`
//! maps errors to status codes.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong below the HTTP layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed. `op` says which call, `path` which file.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file system is full. Nothing acknowledged before is lost; writes work again once space
    /// is freed.
    #[error("no space left on device while {op} {path}")]
    NoSpace { op: &'static str, path: PathBuf },

    /// A sync or WAL write failed earlier; the store refuses writes until restarted, because
    /// retrying a failed fsync can report success for data the kernel already dropped.
    #[error("the store is read-only after an earlier write or sync failure ({cause}); restart the server after fixing the disk")]
    Poisoned { cause: String },

    /// A WAL record that was once complete is damaged.
    #[error("WAL corruption in {path} at offset {offset}: {reason}")]
    WalCorruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// An SST file or the manifest fails its checksum or framing. `kind` names the file kind.
    #[error("{kind} corruption in {path} at offset {offset}: {reason}")]
    Corruption {
        kind: &'static str,
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// Another process holds the data directory.
    #[error("data directory {path} is in use by another ringkv process (lock file {lock} is held)")]
    DataDirLocked { path: PathBuf, lock: PathBuf },

    /// A single record is larger than a WAL segment can hold.
    #[error("a record of {record_bytes} bytes does not fit in a WAL segment of {segment_bytes} bytes")]
    RecordTooLarge { record_bytes: usize, segment_bytes: u64 },

    /// The store is shutting down and takes no more writes.
    #[error("the server is shutting down")]
    ShuttingDown,

    /// A delete could not read the value it would remove. Nothing was written and the store is
    /// not poisoned: only this request failed.
    #[error("reading the value to delete failed: {0}")]
    ReadBeforeDelete(Box<Error>),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A damaged SST file at `offset`.
    pub fn sst_corruption(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corruption {
            kind: "SST",
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// A damaged manifest at `offset`.
    pub fn manifest_corruption(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corruption {
            kind: "manifest",
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// Wraps an `io::Error` with the operation and file it happened on; `ENOSPC` becomes
    /// [`Error::NoSpace`] so callers can answer 507 instead of poisoning the store.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            Error::NoSpace { op, path }
        } else {
            Error::Io { op, path, source }
        }
    }

    /// A copy of this error to hand to every request of a failed batch (`io::Error` is not
    /// `Clone`, so the copy keeps the kind and the message).
    pub fn duplicate(&self) -> Self {
        match self {
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::NoSpace { op, path } => Error::NoSpace {
                op,
                path: path.clone(),
            },
            Error::Poisoned { cause } => Error::Poisoned { cause: cause.clone() },
            Error::WalCorruption { path, offset, reason } => Error::WalCorruption {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            Error::Corruption {
                kind,
                path,
                offset,
                reason,
            } => Error::Corruption {
                kind,
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            Error::DataDirLocked { path, lock } => Error::DataDirLocked {
                path: path.clone(),
                lock: lock.clone(),
            },
            Error::RecordTooLarge {
                record_bytes,
                segment_bytes,
            } => Error::RecordTooLarge {
                record_bytes: *record_bytes,
                segment_bytes: *segment_bytes,
            },
            Error::ShuttingDown => Error::ShuttingDown,
            Error::ReadBeforeDelete(cause) => Error::ReadBeforeDelete(Box::new(cause.duplicate())),
        }
    }
}
