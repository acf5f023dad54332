//! A fault-injecting file system for tests: real files on the real ring, plus a shadow of what
//! each file holds as of its last successful sync, so that a test can
//! - make syncs or writes fail (`EIO`) or run out of space (`ENOSPC`), and
//! - "crash": put every file back to its last synced content (dropping unsynced writes, or a
//!   chosen part of them), as a power failure would.
//!
//! It wraps [`UringFs`]; it must not be used by the server itself.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::{AlignedBuf, DataFile, FileSystem, OpenMode, UringFile, UringFs};

/// Which faults are armed. Shared by every clone of a [`FaultFs`].
#[derive(Default)]
struct Faults {
    fail_syncs: Cell<bool>,
    fail_writes: Cell<bool>,
    /// Writes that would grow a file fail with `ENOSPC`, as on a full disk; overwrites of
    /// existing bytes still succeed, as they do on ext4.
    no_space: Cell<bool>,
    syncs_ok: Cell<u64>,
}

/// What a file holds durably, and the writes made since.
#[derive(Default)]
struct Shadow {
    /// `None`: the file was created and never synced, so a crash removes it.
    durable: Option<Vec<u8>>,
    unsynced: Vec<(u64, Vec<u8>)>,
    size: u64,
}

#[derive(Default)]
struct State {
    faults: Faults,
    files: RefCell<HashMap<PathBuf, Shadow>>,
}

/// See the module documentation.
#[derive(Clone, Default)]
pub struct FaultFs {
    inner: UringFs,
    state: Rc<State>,
}

/// A file of a [`FaultFs`].
pub struct FaultFile {
    inner: UringFile,
    path: PathBuf,
    state: Rc<State>,
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
        self.state.faults.fail_syncs.set(on);
    }

    /// Every write fails with `EIO` while set.
    pub fn set_fail_writes(&self, on: bool) {
        self.state.faults.fail_writes.set(on);
    }

    /// Writes that grow a file fail with `ENOSPC` while set.
    pub fn set_no_space(&self, on: bool) {
        self.state.faults.no_space.set(on);
    }

    /// How many syncs have succeeded.
    pub fn syncs_ok(&self) -> u64 {
        self.state.faults.syncs_ok.get()
    }

    /// Simulates a power failure: every file goes back to its last synced content, and files never
    /// synced disappear. `keep(path, offset, len)` chooses unsynced writes that made it to disk
    /// anyway (in order, as a disk may persist some of them). Call only once the store using this
    /// file system has been dropped.
    pub fn crash(&self, mut keep: impl FnMut(&Path, u64, usize) -> bool) -> io::Result<()> {
        let mut files = self.state.files.borrow_mut();
        for (path, shadow) in files.iter_mut() {
            let mut image: Vec<u8> = shadow.durable.take().unwrap_or_default();
            for (offset, bytes) in shadow.unsynced.drain(..) {
                if keep(path, offset, bytes.len()) {
                    patch(&mut image, offset, &bytes);
                }
            }
            std::fs::write(path, &image)?;
            shadow.size = image.len() as u64;
            shadow.durable = Some(image);
        }
        Ok(())
    }

    fn track(&self, path: &Path, created: bool) -> io::Result<()> {
        let mut files = self.state.files.borrow_mut();
        if files.contains_key(path) {
            return Ok(());
        }
        let shadow = if created {
            Shadow::default()
        } else {
            let image = std::fs::read(path)?;
            Shadow {
                size: image.len() as u64,
                durable: Some(image),
                unsynced: Vec::new(),
            }
        };
        files.insert(path.to_path_buf(), shadow);
        Ok(())
    }
}

impl DataFile for FaultFile {
    async fn write_at(&self, buf: AlignedBuf, offset: u64) -> (io::Result<()>, AlignedBuf) {
        let faults = &self.state.faults;
        if faults.fail_writes.get() {
            return (Err(injected(libc::EIO)), buf);
        }
        let end = offset + buf.len() as u64;
        let size = self.state.files.borrow().get(&self.path).map_or(0, |s| s.size);
        if faults.no_space.get() && end > size {
            return (Err(injected(libc::ENOSPC)), buf);
        }
        let (result, buf) = self.inner.write_at(buf, offset).await;
        if result.is_ok() {
            if let Some(shadow) = self.state.files.borrow_mut().get_mut(&self.path) {
                shadow.unsynced.push((offset, buf.as_slice().to_vec()));
                shadow.size = shadow.size.max(end);
            }
        }
        (result, buf)
    }

    async fn read_at(&self, buf: AlignedBuf, offset: u64) -> (io::Result<usize>, AlignedBuf) {
        self.inner.read_at(buf, offset).await
    }

    async fn sync_data(&self) -> io::Result<()> {
        if self.state.faults.fail_syncs.get() {
            // Like Linux after a failed writeback: the unsynced data is gone for good.
            if let Some(shadow) = self.state.files.borrow_mut().get_mut(&self.path) {
                shadow.unsynced.clear();
            }
            return Err(injected(libc::EIO));
        }
        self.inner.sync_data().await?;
        self.state
            .faults
            .syncs_ok
            .set(self.state.faults.syncs_ok.get() + 1);
        if let Some(shadow) = self.state.files.borrow_mut().get_mut(&self.path) {
            let mut image = shadow.durable.take().unwrap_or_default();
            for (offset, bytes) in shadow.unsynced.drain(..) {
                patch(&mut image, offset, &bytes);
            }
            shadow.durable = Some(image);
        }
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        self.inner.size().await
    }
}

impl FileSystem for FaultFs {
    type File = FaultFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FaultFile> {
        let inner = self.inner.open(path, mode).await?;
        self.track(path, mode.create_new)?;
        Ok(FaultFile {
            inner,
            path: path.to_path_buf(),
            state: self.state.clone(),
        })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to).await?;
        let mut files = self.state.files.borrow_mut();
        if let Some(shadow) = files.remove(from) {
            files.insert(to.to_path_buf(), shadow);
        }
        Ok(())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path).await?;
        self.state.files.borrow_mut().remove(path);
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.state.faults.fail_syncs.get() {
            return Err(injected(libc::EIO));
        }
        self.inner.sync_dir(dir).await
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list_dir(dir)
    }
}
