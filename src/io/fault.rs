//! A fault-injecting file system for tests: real files on the real ring, plus a shadow of what
//! each file holds as of its last successful sync, so that a test can
//! - make syncs or writes fail (`EIO`) or run out of space (`ENOSPC`), and
//! - "crash": put every file back to its last synced content (dropping unsynced writes, or a
//!   chosen part of them), as a power failure would.
//!
//! It wraps [`UringFs`]; it must not be used by the server itself.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{AlignedBuf, DataFile, FileSystem, OpenMode, UringFile, UringFs};

/// Which faults are armed. Shared by every clone of a [`FaultFs`].
#[derive(Default)]
struct Faults {
    fail_syncs: AtomicBool,
    fail_writes: AtomicBool,
    /// Writes that would grow a file fail with `ENOSPC`, as on a full disk; overwrites of
    /// existing bytes still succeed, as they do on ext4.
    no_space: AtomicBool,
    syncs_ok: AtomicU64,
}

/// What a file holds durably, and the writes made since.
#[derive(Default)]
struct Shadow {
    /// The file's current name (renames move it; the open handle keeps the same shadow).
    path: PathBuf,
    /// `None`: the file was created and never synced, so a crash removes it.
    durable: Option<Vec<u8>>,
    unsynced: Vec<(u64, Vec<u8>)>,
    size: u64,
}

#[derive(Default)]
struct State {
    faults: Faults,
    /// Shadows by file identity, so that a handle opened before a rename stays tracked.
    files: Mutex<HashMap<u64, Shadow>>,
    ids_by_path: Mutex<HashMap<PathBuf, u64>>,
    next_id: AtomicU64,
}

impl State {
    // A panic while holding these locks is a test failure already; the maps stay usable.
    fn files(&self) -> MutexGuard<'_, HashMap<u64, Shadow>> {
        self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ids_by_path(&self) -> MutexGuard<'_, HashMap<PathBuf, u64>> {
        self.ids_by_path
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// See the module documentation.
#[derive(Clone, Default)]
pub struct FaultFs {
    inner: UringFs,
    state: Arc<State>,
}

/// A file of a [`FaultFs`].
pub struct FaultFile {
    inner: UringFile,
    id: u64,
    /// Opened `O_DSYNC`: a completed write is durable at once.
    dsync: bool,
    state: Arc<State>,
}

/// Writes `bytes` into a file image at `offset`, growing it as a write past the end would.
fn patch(image: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset as usize..end].copy_from_slice(bytes);
}

fn injected(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

impl FaultFs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every sync fails with `EIO` while set.
    pub fn set_fail_syncs(&self, on: bool) {
        self.state.faults.fail_syncs.store(on, Ordering::SeqCst);
    }

    /// Every write fails with `EIO` while set.
    pub fn set_fail_writes(&self, on: bool) {
        self.state.faults.fail_writes.store(on, Ordering::SeqCst);
    }

    /// Writes that grow a file fail with `ENOSPC` while set.
    pub fn set_no_space(&self, on: bool) {
        self.state.faults.no_space.store(on, Ordering::SeqCst);
    }

    /// How many syncs have succeeded.
    pub fn syncs_ok(&self) -> u64 {
        self.state.faults.syncs_ok.load(Ordering::SeqCst)
    }

    /// Simulates a power failure: every file goes back to its last synced content, and files never
    /// synced disappear. `keep(path, offset, len)` chooses unsynced writes that made it to disk
    /// anyway (in order, as a disk may persist some of them). Call only once the store using this
    /// file system has been dropped.
    pub fn crash(&self, mut keep: impl FnMut(&Path, u64, usize) -> bool) -> io::Result<()> {
        let mut files = self.state.files();
        for shadow in files.values_mut() {
            let mut image: Vec<u8> = shadow.durable.take().unwrap_or_default();
            for (offset, bytes) in shadow.unsynced.drain(..) {
                if keep(&shadow.path, offset, bytes.len()) {
                    patch(&mut image, offset, &bytes);
                }
            }
            std::fs::write(&shadow.path, &image)?;
            shadow.size = image.len() as u64;
            shadow.durable = Some(image);
        }
        Ok(())
    }

    /// The identity of the file at `path`, starting to shadow it if it is new to this layer.
    fn track(&self, path: &Path, created: bool) -> io::Result<u64> {
        if let Some(&id) = self.state.ids_by_path().get(path) {
            return Ok(id);
        }
        let shadow = if created {
            Shadow {
                path: path.to_path_buf(),
                ..Shadow::default()
            }
        } else {
            let image = std::fs::read(path)?;
            Shadow {
                path: path.to_path_buf(),
                size: image.len() as u64,
                durable: Some(image),
                unsynced: Vec::new(),
            }
        };
        let id = self.state.next_id.fetch_add(1, Ordering::SeqCst);
        self.state.files().insert(id, shadow);
        self.state.ids_by_path().insert(path.to_path_buf(), id);
        Ok(id)
    }
}

impl Shadow {
    /// Folds the unsynced writes into the durable image.
    fn make_durable(&mut self) {
        let mut image = self.durable.take().unwrap_or_default();
        for (offset, bytes) in self.unsynced.drain(..) {
            patch(&mut image, offset, &bytes);
        }
        self.durable = Some(image);
    }
}

impl FaultFile {
    async fn sync(&self, all: bool) -> io::Result<()> {
        if self.state.faults.fail_syncs.load(Ordering::SeqCst) {
            // Like Linux after a failed writeback: the unsynced data is gone for good.
            if let Some(shadow) = self.state.files().get_mut(&self.id) {
                shadow.unsynced.clear();
            }
            return Err(injected(libc::EIO));
        }
        if all {
            self.inner.sync_all().await?;
        } else {
            self.inner.sync_data().await?;
        }
        self.state.faults.syncs_ok.fetch_add(1, Ordering::SeqCst);
        if let Some(shadow) = self.state.files().get_mut(&self.id) {
            shadow.make_durable();
        }
        Ok(())
    }
}

impl DataFile for FaultFile {
    async fn write_at(&self, buf: AlignedBuf, offset: u64) -> (io::Result<()>, AlignedBuf) {
        let faults = &self.state.faults;
        if faults.fail_writes.load(Ordering::SeqCst) {
            return (Err(injected(libc::EIO)), buf);
        }
        let end = offset + buf.len() as u64;
        let size = self.state.files().get(&self.id).map_or(0, |s| s.size);
        if faults.no_space.load(Ordering::SeqCst) && end > size {
            return (Err(injected(libc::ENOSPC)), buf);
        }
        if self.dsync && faults.fail_syncs.load(Ordering::SeqCst) {
            // An `O_DSYNC` write carries its own sync, so it fails as a sync would.
            if let Some(shadow) = self.state.files().get_mut(&self.id) {
                shadow.unsynced.clear();
            }
            return (Err(injected(libc::EIO)), buf);
        }
        let (result, buf) = self.inner.write_at(buf, offset).await;
        if result.is_ok() {
            if let Some(shadow) = self.state.files().get_mut(&self.id) {
                shadow.unsynced.push((offset, buf.as_slice().to_vec()));
                shadow.size = shadow.size.max(end);
                if self.dsync {
                    shadow.make_durable();
                }
            }
        }
        (result, buf)
    }

    async fn read_at(&self, buf: AlignedBuf, offset: u64) -> (io::Result<usize>, AlignedBuf) {
        self.inner.read_at(buf, offset).await
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.sync(false).await
    }

    async fn sync_all(&self) -> io::Result<()> {
        self.sync(true).await
    }

    async fn size(&self) -> io::Result<u64> {
        self.inner.size().await
    }
}

impl FileSystem for FaultFs {
    type File = FaultFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FaultFile> {
        let inner = self.inner.open(path, mode).await?;
        let id = self.track(path, mode.create_new)?;
        Ok(FaultFile {
            inner,
            id,
            dsync: mode.dsync,
            state: self.state.clone(),
        })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to).await?;
        let mut ids = self.state.ids_by_path();
        // The file that `to` named is gone: a crash must not bring its content back.
        if let Some(replaced) = ids.remove(to) {
            self.state.files().remove(&replaced);
        }
        if let Some(id) = ids.remove(from) {
            ids.insert(to.to_path_buf(), id);
            if let Some(shadow) = self.state.files().get_mut(&id) {
                shadow.path = to.to_path_buf();
            }
        }
        Ok(())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path).await?;
        if let Some(id) = self.state.ids_by_path().remove(path) {
            self.state.files().remove(&id);
        }
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.state.faults.fail_syncs.load(Ordering::SeqCst) {
            return Err(injected(libc::EIO));
        }
        self.inner.sync_dir(dir).await
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list_dir(dir)
    }
}
