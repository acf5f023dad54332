//! The file-system interface every piece of storage code is generic over, so that the same WAL
//! and engine run on io_uring in production and on a fault-injecting layer in tests.
//!
//! Only this folder imports `tokio_uring::fs`. Calls here return plain `io::Result`; callers add
//! the context (which file, which operation) when they turn it into [`crate::Error`].

mod aligned;
pub mod fault;
mod uring;

use std::io;
use std::path::{Path, PathBuf};

pub use aligned::{round_down_to_block, round_up_to_block, AlignedBuf, BLOCK_BYTES};
pub use fault::FaultFs;
pub use uring::{UringFile, UringFs};

/// How a file is opened. Files are opened for `O_DIRECT` unless `buffered` is set (only the WAL
/// offers that, as a mechanism to compare).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenMode {
    pub write: bool,
    /// Fail if the file exists (`O_CREAT | O_EXCL`).
    pub create_new: bool,
    /// Go through the page cache instead of `O_DIRECT`.
    pub buffered: bool,
    /// `O_DSYNC`: every write is durable when it completes.
    pub dsync: bool,
}

impl OpenMode {
    pub const READ: OpenMode = OpenMode {
        write: false,
        create_new: false,
        buffered: false,
        dsync: false,
    };
    pub const READ_WRITE: OpenMode = OpenMode {
        write: true,
        ..OpenMode::READ
    };
    pub const CREATE_NEW: OpenMode = OpenMode {
        write: true,
        create_new: true,
        ..OpenMode::READ
    };

    /// This mode with the WAL's write mechanism.
    pub const fn with_mechanism(self, buffered: bool, dsync: bool) -> OpenMode {
        OpenMode {
            buffered,
            dsync,
            ..self
        }
    }
}

/// A file opened for direct I/O. Buffers, lengths and offsets must be block-aligned (also when
/// opened buffered, so that callers need not care which).
//
// The futures are deliberately not `Send`: everything runs on one thread's ring.
#[allow(async_fn_in_trait)]
pub trait DataFile: 'static {
    /// Writes all of `buf` (its length, a whole number of blocks) at `offset`.
    async fn write_at(&self, buf: AlignedBuf, offset: u64) -> (io::Result<()>, AlignedBuf);

    /// Reads up to `buf.capacity()` bytes at `offset`; the buffer's length becomes the count read
    /// (short only at the end of the file).
    async fn read_at(&self, buf: AlignedBuf, offset: u64) -> (io::Result<usize>, AlignedBuf);

    /// Makes every completed write durable (`fdatasync`).
    async fn sync_data(&self) -> io::Result<()>;

    /// Makes every completed write and every metadata change durable (`fsync`).
    async fn sync_all(&self) -> io::Result<()>;

    /// The file's size in bytes.
    async fn size(&self) -> io::Result<u64>;
}

/// Directory-level operations and the way files are opened.
#[allow(async_fn_in_trait)]
pub trait FileSystem: Clone + Send + Sync + 'static {
    type File: DataFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File>;

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    async fn remove(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, renames, removals) durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// The names of the entries of `dir`. Used only while opening the store, before serving.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}
