//! The store's error type and `Result` alias. Errors carry what a user or an operator needs to act
//! on: the file, the offset, what was expected. This module knows nothing of HTTP; `http::routes`
//! maps errors to status codes.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong below the HTTP layer. `Clone`, so that one failed WAL batch can
/// hand the same error to every request in it (the `io::Error` inside is shared).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed. `op` says which call, `path` which file.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },

    /// The file system is full. Nothing acknowledged before is lost; writes work again once space
    /// is freed.
    #[error("no space left on device while {op} {path}")]
    NoSpace { op: &'static str, path: PathBuf },

    /// The process or the system ran out of file descriptors (`EMFILE`, `ENFILE`). Transient, as
    /// `NoSpace` is: nothing is poisoned, and the work is tried again. The storage side keeps a
    /// reserve connections cannot take (`crate::fd_budget`), so this means the limit changed
    /// under the server or another process took the system's last descriptors.
    #[error("too many open files while {op} {path}: the open-file limit is reached (raise it with ulimit -n, or lower --max-connections)")]
    OutOfDescriptors { op: &'static str, path: PathBuf },

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

    /// The store's configuration cannot work; `reason` says which option and why.
    #[error("invalid configuration: {reason}")]
    InvalidConfig { reason: String },

    /// Another process holds the data directory.
    #[error("data directory {path} is in use by another ringkv process (lock file {lock} is held)")]
    DataDirLocked { path: PathBuf, lock: PathBuf },

    /// A single record is larger than a WAL segment can hold.
    #[error("a record of {record_bytes} bytes does not fit in a WAL segment of {segment_bytes} bytes")]
    RecordTooLarge { record_bytes: usize, segment_bytes: u64 },

    /// The store is shutting down and takes no more writes.
    #[error("the server is shutting down")]
    ShuttingDown,

    /// A write that reads first (a delete, a conditional write, a batch) could not read the
    /// key's current value. Nothing was written and the store is not poisoned: only this
    /// request failed.
    #[error("reading the key's current value before the write failed: {0}")]
    ReadBeforeWrite(Box<Error>),

    /// A scan's cursor names a snapshot the server no longer keeps (`reason` says why): the scan
    /// must start again.
    #[error("the scan's snapshot is gone: {reason}; start the scan again without the cursor")]
    SnapshotGone { reason: &'static str },

    /// A conditional write's `if_version` did not match: `current` is the key's version (`None`
    /// if absent); `op` is the op's place in its batch (0 for a single write). Nothing was
    /// written.
    #[error("version mismatch")]
    VersionMismatch {
        op: usize,
        key: bytes::Bytes,
        current: Option<u64>,
    },
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

    /// Wraps an `io::Error` with the operation and file it happened on; `ENOSPC` and `EDQUOT`
    /// become [`Error::NoSpace`] (507), `EMFILE` and `ENFILE` [`Error::OutOfDescriptors`] (503),
    /// both transient, so that callers try again instead of poisoning the store.
    /// Not for a failed sync: see [`Error::failed_sync`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Error::NoSpace { op, path },
            Some(libc::EMFILE | libc::ENFILE) => Error::OutOfDescriptors { op, path },
            _ => Error::Io {
                op,
                path,
                source: Arc::new(source),
            },
        }
    }

    /// Whether the failed work can simply be tried again later (a full disk, no descriptor
    /// left): such an error never poisons the store.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::NoSpace { .. } | Error::OutOfDescriptors { .. })
    }

    /// A failed `fsync`/`fdatasync` or `O_DSYNC` write, whatever its errno: never
    /// [`Error::NoSpace`], which invites a retry. After a failed writeback Linux may have dropped
    /// the dirty pages and marked them clean, so a retried sync can succeed without making them
    /// durable (fsyncgate); an `ENOSPC` from a sync is such a failed writeback too.
    pub fn failed_sync(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// Adds the operation and the file to an `io::Result`, as [`Error::io`] does:
/// `file.read_at(buf, 0).await.0.context("read", &path)?`; a sync's result takes
/// `sync_context` ([`Error::failed_sync`]).
pub trait IoContext<T> {
    fn context(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
    fn sync_context(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|error| Error::io(op, path, error))
    }

    fn sync_context(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|error| Error::failed_sync("sync", path, error))
    }
}
