//! The boundary between the storage engine and the outside world (leveldb's `Env`): files,
//! directories, the data-directory lock, tasks, threads and the clock. Every piece of storage
//! code is generic over [`FileSystem`], so that the same WAL, engine and background ring run on
//! `io_uring` in production, on a fault-injecting layer in tests, and in the deterministic
//! simulator ([`sim`]), where one seed fixes every latency, fault and interleaving.
//!
//! Only this folder imports `tokio_uring::fs` or spawns on a runtime, and storage code reads no
//! clock but [`FileSystem::now`]. Calls here return plain `io::Result`; callers add the context
//! (which file, which operation) when they turn it into [`crate::Error`].

#[expect(unsafe_code, reason = "the aligned allocation and its hand-over to the ring")]
mod aligned;
mod dir_op;
pub mod fault;
mod publish;
pub mod ring;
pub mod sim;
mod task;
mod uring;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use aligned::{round_down_to_block, round_up_to_block, AlignedBuf, BLOCK_BYTES, SECTOR_BYTES};
pub use fault::{FaultFs, SyncTargets};
pub use publish::publish;
pub use sim::SimFs;
pub use task::{Task, ThreadBody, ThreadHandle};
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
#[expect(
    async_fn_in_trait,
    reason = "the futures run on one thread's ring; no caller needs them Send"
)]
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

    /// The smallest unit (offset and length) a direct write to this file may have: the file
    /// system's direct-I/O alignment, which on ext4 is the device's logical sector (512 bytes
    /// here), or [`BLOCK_BYTES`] where it does not say (see [`write_unit_from`]). The WAL writes
    /// in these units, so that a small batch does not rewrite a whole 4 KiB block.
    fn direct_write_unit(&self) -> usize;
}

/// The direct-write unit for a reported direct-I/O offset alignment: the alignment when it is a
/// power of two from [`SECTOR_BYTES`] to [`BLOCK_BYTES`], else [`BLOCK_BYTES`] (always valid where
/// the store runs at all: every other direct write is whole blocks).
pub fn write_unit_from(reported: Option<u32>) -> usize {
    reported
        .and_then(|align| usize::try_from(align).ok())
        .filter(|align| align.is_power_of_two() && (SECTOR_BYTES..=BLOCK_BYTES).contains(align))
        .unwrap_or(BLOCK_BYTES)
}

/// Directory-level operations, the way files are opened, and the runtime the storage code runs
/// on (tasks, threads, the clock).
#[expect(
    async_fn_in_trait,
    reason = "the futures run on one thread's ring; no caller needs them Send"
)]
pub trait FileSystem: Clone + Send + Sync + 'static {
    type File: DataFile;
    /// Holds the data directory's lock until dropped.
    type DirLock: Send + 'static;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File>;

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    async fn remove(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, renames, removals) durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// The names of the entries of `dir`, in name order. Used only while opening the store,
    /// before serving.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;

    /// Creates `dir` and its missing parents; returns the directories it created, outermost
    /// first (their entries are not durable until their parents are synced).
    async fn create_dir_all(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;

    /// Takes the exclusive lock of the data directory `dir` (a `LOCK` file in it), or fails at
    /// once with [`io::ErrorKind::WouldBlock`] if another store holds it; never waits.
    fn lock_dir(&self, dir: &Path) -> io::Result<Self::DirLock>;

    /// Runs `future` as a task on the caller's ring.
    fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> Task<T>;

    /// Starts a thread with a ring of its own, running `body` (the background ring).
    fn start_thread(&self, name: &str, body: ThreadBody) -> io::Result<ThreadHandle>;

    /// Completes once `duration` has passed on this file system's clock.
    async fn sleep(&self, duration: Duration);

    /// This file system's clock.
    fn now(&self) -> Instant;
}

/// Deletes a file a failed operation left behind (a table never published, a segment whose
/// pre-write failed). Gone already is fine; another failure is logged and the file left to the
/// next start-up, which deletes every file the manifest does not name.
pub async fn remove_leftover<F: FileSystem>(fs: &F, path: &Path) {
    if let Err(error) = fs.remove(path).await {
        if error.kind() != io::ErrorKind::NotFound {
            tracing::warn!("could not delete {}: {error}", path.display());
        }
    }
}

/// Creates `tmp` for writing, new and empty, removing a stale one a crash left first (the file
/// a publish renames into place: the manifest, the sequence lease).
pub async fn create_fresh<F: FileSystem>(fs: &F, tmp: &Path) -> crate::Result<F::File> {
    use crate::error::IoContext;
    match fs.remove(tmp).await {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            return Err(crate::Error::io("remove", tmp, error))
        }
        _ => {}
    }
    fs.open(tmp, OpenMode::CREATE_NEW).await.context("create", tmp)
}
