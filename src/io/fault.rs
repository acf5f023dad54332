//! A fault-injecting file system for tests: real files on the real ring, plus a shadow of what
//! each file and each directory holds durably, so that a test can
//! - make syncs, writes or reads fail (`EIO`) or run out of space (`ENOSPC`), and
//! - "crash", as a power failure would: every file goes back to its last synced content plus a
//!   chosen part of the writes made since (whole, lost, or torn at block boundaries), and every
//!   directory to its last synced entries plus a prefix of the creations, renames and removals
//!   made since (a journal keeps metadata changes in order). The crash either happens in place or
//!   is written to another directory as a crash image while the store keeps running.
//!
//! It wraps [`UringFs`]; it must not be used by the server itself.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;

use super::dir_op::DirOp;
use super::{
    AlignedBuf, DataFile, FileSystem, OpenMode, Task, ThreadBody, ThreadHandle, UringFile, UringFs,
    SECTOR_BYTES,
};

/// Which faults are armed. Shared by every clone of a [`FaultFs`].
#[derive(Default)]
struct Faults {
    /// The errno every failing sync (and `O_DSYNC` write) returns; 0: syncs succeed.
    sync_errno: AtomicI32,
    /// Only the manifest's syncs fail (`MANIFEST`, `MANIFEST.tmp`).
    sync_fault_manifest_only: AtomicBool,
    fail_writes: AtomicBool,
    /// The errno every `open` returns (`EMFILE`: out of descriptors); 0: opens succeed.
    open_errno: AtomicI32,
    /// Only writes to table files (`.sst`, `.sst.tmp`): a failing flush or compaction.
    fail_table_writes: AtomicBool,
    fail_reads: AtomicBool,
    /// Writes that would grow a file fail with `ENOSPC`, as on a full disk; overwrites of
    /// existing bytes still succeed, as they do on ext4.
    no_space: AtomicBool,
    /// Every write to the manifest fails with `ENOSPC` (as when an edit needs a new block on a
    /// full disk), whatever it overwrites.
    no_space_for_manifest: AtomicBool,
    syncs_ok: AtomicU64,
    /// How long `crash_image` waits before each copy of a file it does not shadow, in
    /// microseconds: a loaded machine, where the running store gets ahead of the copies.
    image_copy_delay_us: AtomicU64,
}

/// What a file (an inode) holds durably, and the writes made since.
#[derive(Default, Clone)]
struct Shadow {
    /// `None`: never synced since it was created.
    durable: Option<Vec<u8>>,
    /// (completion number, offset, bytes), oldest first.
    unsynced: Vec<(u64, u64, Vec<u8>)>,
    size: u64,
}

/// Every file this layer has seen, by identity, and the names pointing at them.
#[derive(Default)]
struct Files {
    shadows: HashMap<u64, Shadow>,
    /// The entries as the running store sees them.
    names: BTreeMap<PathBuf, u64>,
    /// The entries as of the last directory sync.
    durable_names: BTreeMap<PathBuf, u64>,
    /// Changes since, oldest first.
    /// With their completion numbers (see `completions`).
    pending: Vec<(u64, DirOp)>,
    /// Names being created or renamed to right now: maybe on disk already, not yet recorded.
    /// A crash image counts them as known, so it never copies one from the disk: the copies
    /// happen after the image is taken, and by then the file may hold writes made after it (a
    /// manifest renamed into place and then appended to named a table the image did not hold).
    in_flight: Vec<PathBuf>,
    /// Every directory synced, in order.
    synced_dirs: Vec<PathBuf>,
    next_id: u64,
    /// Every completed write gets the next number; a sync covers those below the value it saw
    /// when it was called.
    completions: u64,
}

impl Files {
    /// Applies a directory change to the live names and queues it until a directory sync.
    fn record(&mut self, op: DirOp) {
        op.apply(&mut self.names);
        let number = self.completions;
        self.completions += 1;
        self.pending.push((number, op));
    }

    /// Drops shadows no name points at any more (a handle still open on one writes to nothing).
    fn collect_garbage(&mut self) {
        let (names, durable) = (&self.names, &self.durable_names);
        self.shadows
            .retain(|id, _| names.values().any(|n| n == id) || durable.values().any(|n| n == id));
    }
}

#[derive(Default)]
struct State {
    faults: Faults,
    files: Mutex<Files>,
    /// How far `now()` reads ahead of the real clock, in microseconds (see
    /// [`FaultFs::advance_clock`]).
    clock_ahead_us: AtomicU64,
}

impl State {
    // A panic while holding this lock is a test failure already; the maps stay usable.
    fn files(&self) -> MutexGuard<'_, Files> {
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What of one unsynced write a crash keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persisted {
    All,
    Nothing,
    /// Per 512-byte sector of the write (the unit a disk writes atomically): kept or not.
    Sectors(Vec<bool>),
}

/// What a crash image kept and lost, for the test's report.
#[derive(Debug, Default, Clone)]
pub struct CrashStats {
    pub files: usize,
    pub unsynced_writes: usize,
    pub writes_kept: usize,
    pub writes_torn: usize,
    pub dir_ops_pending: usize,
    pub dir_ops_kept: usize,
    /// Names the image holds whose file this layer no longer shadows, left out of the image: a
    /// file created and removed before any directory sync, whose creation the image keeps. Said
    /// in a failure's message, because a name lost this way looks like a store that lost a file
    /// (docs/reliability.md, "Failures seen once and not yet explained").
    pub names_left_out: Vec<PathBuf>,
}

/// Which files' syncs [`FaultFs::set_sync_errno`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncTargets {
    All,
    Manifest,
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
    /// A table file, by its name when opened.
    table: bool,
    /// The manifest or its temporary file, by its name when opened.
    manifest: bool,
    state: Arc<State>,
}

/// Writes `bytes` into a file image at `offset`, growing it as a write past the end would.
pub(super) fn patch(image: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = crate::coding::to_usize(offset) + bytes.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[crate::coding::to_usize(offset)..end].copy_from_slice(bytes);
}

fn injected(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// A random but plausible choice for one unsynced write: kept, lost, or (one time in ten) torn.
pub fn random_persisted(rng: &mut impl Rng, len: usize) -> Persisted {
    match rng.gen_range(0..10) {
        0..=4 => Persisted::All,
        5..=8 => Persisted::Nothing,
        _ => Persisted::Sectors(
            (0..len.div_ceil(SECTOR_BYTES))
                .map(|_| rng.gen_bool(0.5))
                .collect(),
        ),
    }
}

impl FaultFs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every sync fails with `EIO` while set.
    pub fn set_fail_syncs(&self, on: bool) {
        self.set_sync_errno(if on { libc::EIO } else { 0 }, SyncTargets::All);
    }

    /// The syncs of `targets` (and their `O_DSYNC` writes) fail with `errno` (`EIO`, `ENOSPC`,
    /// `EDQUOT`: a sync can report any of them) until it is set back to 0.
    pub fn set_sync_errno(&self, errno: i32, targets: SyncTargets) {
        let faults = &self.state.faults;
        faults
            .sync_fault_manifest_only
            .store(targets == SyncTargets::Manifest, Ordering::SeqCst);
        faults.sync_errno.store(errno, Ordering::SeqCst);
    }

    /// Every `open` (creations included) fails with `errno` until it is set back to 0.
    pub fn set_open_errno(&self, errno: i32) {
        self.state.faults.open_errno.store(errno, Ordering::SeqCst);
    }

    /// Every write fails with `EIO` while set.
    pub fn set_fail_writes(&self, on: bool) {
        self.state.faults.fail_writes.store(on, Ordering::SeqCst);
    }

    /// Every write to a table file fails with `EIO` while set; the WAL and the manifest are
    /// written as usual.
    pub fn set_fail_table_writes(&self, on: bool) {
        self.state.faults.fail_table_writes.store(on, Ordering::SeqCst);
    }

    /// Every read fails with `EIO` while set.
    pub fn set_fail_reads(&self, on: bool) {
        self.state.faults.fail_reads.store(on, Ordering::SeqCst);
    }

    /// Writes that grow a file fail with `ENOSPC` while set.
    pub fn set_no_space(&self, on: bool) {
        self.state.faults.no_space.store(on, Ordering::SeqCst);
    }

    /// `crash_image` waits `delay` after taking the image, before listing the directory, and
    /// before each copy of a file this layer does not shadow, as a loaded machine would hold it up. The copies are made under the layer's lock, so the
    /// running store's file operations wait too and every copy is of the image's instant; before
    /// that, the store moved on meanwhile and a copy could take a later instant (this delay made
    /// that show up in `tests/crash_images.rs`).
    pub fn set_image_copy_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.state
            .faults
            .image_copy_delay_us
            .store(micros, Ordering::SeqCst);
    }

    /// Moves this file system's clock (`now()`, on every thread) `by` ahead of the real one, so
    /// that a test can pass a deadline (a scan snapshot's expiry) at a chosen point, rather
    /// than waiting out a short one that a loaded machine may pass before the test is ready.
    /// Sleeps still take real time.
    pub fn advance_clock(&self, by: Duration) {
        let micros = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.state.clock_ahead_us.fetch_add(micros, Ordering::SeqCst);
    }

    /// Every write to the manifest fails with `ENOSPC` while set; other files are written.
    pub fn set_no_space_for_manifest(&self, on: bool) {
        self.state
            .faults
            .no_space_for_manifest
            .store(on, Ordering::SeqCst);
    }

    /// Every directory synced so far, in order.
    pub fn synced_dirs(&self) -> Vec<PathBuf> {
        self.state.files().synced_dirs.clone()
    }

    /// How many syncs have succeeded.
    pub fn syncs_ok(&self) -> u64 {
        self.state.faults.syncs_ok.load(Ordering::SeqCst)
    }

    /// Simulates a power failure in place: every file goes back to its last synced content plus
    /// the unsynced writes `keep(path, offset, len)` chooses, and every directory to its last
    /// synced entries. Call only once the store using this file system has been dropped.
    pub fn crash(&self, mut keep: impl FnMut(&Path, u64, usize) -> bool) -> io::Result<()> {
        let mut files = self.state.files();
        let (image, _) = crash_image(&files, 0, &mut |path, offset, len| {
            if keep(path, offset, len) {
                Persisted::All
            } else {
                Persisted::Nothing
            }
        });
        for path in files.names.keys() {
            if !image.contains_key(path) {
                remove_if_present(path)?;
            }
        }
        for (path, (_, bytes)) in &image {
            std::fs::write(path, bytes)?;
        }
        files.shadows = image
            .values()
            .map(|(id, bytes)| {
                let shadow = Shadow {
                    durable: Some(bytes.clone()),
                    unsynced: Vec::new(),
                    size: bytes.len() as u64,
                };
                (*id, shadow)
            })
            .collect();
        files.names = image.iter().map(|(path, (id, _))| (path.clone(), *id)).collect();
        files.durable_names = files.names.clone();
        files.pending.clear();
        Ok(())
    }

    /// Writes to `to_dir` what the directory `dir` would hold after a power failure now, with a
    /// random part of the unsynced writes and a random prefix of the unsynced directory changes.
    /// The running store is not disturbed. Files this layer never saw are copied as they are.
    pub fn crash_image(&self, dir: &Path, to_dir: &Path, rng: &mut impl Rng) -> io::Result<CrashStats> {
        // One lock over the image, the listing and the copies of the files this layer does not
        // shadow, so that all of them are of one instant: a file renamed into place after the
        // image was taken but before the directory was listed (or copied after the store wrote
        // to it) would otherwise pair a later file with an earlier directory. That happened in
        // CI: a `MANIFEST` naming table 1 beside a directory without it (docs/reliability.md).
        // The running store's file operations wait meanwhile; the copies are of files it never
        // opened through this layer, so they are few.
        let files = self.state.files();
        let kept = rng.gen_range(0..=files.pending.len());
        let (image, stats) = crash_image(&files, kept, &mut |_, _, len| random_persisted(rng, len));
        let is_known = |path: &PathBuf| {
            files.names.contains_key(path)
                || files.durable_names.contains_key(path)
                || files.in_flight.contains(path)
        };
        let delay = Duration::from_micros(self.state.faults.image_copy_delay_us.load(Ordering::SeqCst));
        // Held up after the image, before the listing (as a loaded machine may hold this thread).
        std::thread::sleep(delay);
        let mut unknown = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_file() && !is_known(&path) {
                unknown.push(path);
            }
        }
        for path in unknown {
            if let Some(name) = path.file_name() {
                std::thread::sleep(delay);
                match std::fs::copy(&path, to_dir.join(name)) {
                    // Removed meanwhile by something that does not go through this layer (the
                    // lock file's owner): absent at this instant, then.
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    other => {
                        other?;
                    }
                }
            }
        }
        drop(files);
        for (path, (_, bytes)) in &image {
            if path.parent() == Some(dir) {
                if let Some(name) = path.file_name() {
                    std::fs::write(to_dir.join(name), bytes)?;
                }
            }
        }
        Ok(stats)
    }

    /// The identity of the file at `path`, starting to shadow it (as durable, both its content and
    /// its name) if this layer has not seen it yet.
    fn track_existing(&self, path: &Path) -> io::Result<u64> {
        let mut files = self.state.files();
        if let Some(&id) = files.names.get(path) {
            return Ok(id);
        }
        let image = std::fs::read(path)?;
        let id = files.next_id;
        files.next_id += 1;
        let shadow = Shadow {
            size: image.len() as u64,
            durable: Some(image),
            unsynced: Vec::new(),
        };
        files.shadows.insert(id, shadow);
        files.names.insert(path.to_path_buf(), id);
        files.durable_names.insert(path.to_path_buf(), id);
        Ok(id)
    }

    /// Starts shadowing the file just created at `path` (in flight until now, see `in_flight`).
    fn track_created(&self, path: &Path) -> u64 {
        let mut files = self.state.files();
        files.in_flight.retain(|p| p != path);
        let id = files.next_id;
        files.next_id += 1;
        files.shadows.insert(id, Shadow::default());
        let op = DirOp::Create {
            path: path.to_path_buf(),
            id,
        };
        files.record(op);
        id
    }

    fn record_dir_op(&self, op: DirOp) {
        let mut files = self.state.files();
        files.record(op);
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// The durable names plus the first `dir_ops_kept` pending changes, each with its content: the
/// durable image plus the unsynced writes `persisted` keeps.
fn crash_image(
    files: &Files,
    dir_ops_kept: usize,
    persisted: &mut dyn FnMut(&Path, u64, usize) -> Persisted,
) -> (HashMap<PathBuf, (u64, Vec<u8>)>, CrashStats) {
    let mut names = files.durable_names.clone();
    for (_, op) in &files.pending[..dir_ops_kept] {
        op.apply(&mut names);
    }
    let mut stats = CrashStats {
        files: names.len(),
        dir_ops_pending: files.pending.len(),
        dir_ops_kept,
        ..CrashStats::default()
    };
    let mut image = HashMap::new();
    for (path, &id) in &names {
        let Some(shadow) = files.shadows.get(&id) else {
            stats.names_left_out.push(path.clone());
            continue;
        };
        let mut bytes = shadow.durable.clone().unwrap_or_default();
        for (_, offset, write) in &shadow.unsynced {
            stats.unsynced_writes += 1;
            match persisted(path, *offset, write.len()) {
                Persisted::All => {
                    stats.writes_kept += 1;
                    patch(&mut bytes, *offset, write);
                }
                Persisted::Nothing => {}
                Persisted::Sectors(sectors) => {
                    stats.writes_torn += 1;
                    for (index, chunk) in write.chunks(SECTOR_BYTES).enumerate() {
                        if sectors.get(index).copied().unwrap_or(false) {
                            patch(&mut bytes, offset + (index * SECTOR_BYTES) as u64, chunk);
                        }
                    }
                }
            }
        }
        image.insert(path.clone(), (id, bytes));
    }
    (image, stats)
}

impl Shadow {
    /// Folds the unsynced writes completed before `covered` into the durable image: a real
    /// `fdatasync` covers the writes that had completed when it was called, not those that
    /// complete while it runs.
    fn make_durable(&mut self, covered: u64) {
        let mut image = self.durable.take().unwrap_or_default();
        let mut later = Vec::new();
        for (number, offset, bytes) in self.unsynced.drain(..) {
            if number < covered {
                patch(&mut image, offset, &bytes);
            } else {
                later.push((number, offset, bytes));
            }
        }
        self.unsynced = later;
        self.durable = Some(image);
    }
}

impl FaultFile {
    fn with_shadow(&self, f: impl FnOnce(&mut Shadow)) {
        if let Some(shadow) = self.state.files().shadows.get_mut(&self.id) {
            f(shadow);
        }
    }

    /// The errno this file's syncs fail with now, if they fail.
    fn sync_fault(&self) -> Option<i32> {
        let faults = &self.state.faults;
        let errno = faults.sync_errno.load(Ordering::SeqCst);
        let applies = self.manifest || !faults.sync_fault_manifest_only.load(Ordering::SeqCst);
        (errno != 0 && applies).then_some(errno)
    }

    async fn sync(&self, all: bool) -> io::Result<()> {
        if let Some(errno) = self.sync_fault() {
            // Like Linux after a failed writeback: the unsynced data is gone for good.
            self.with_shadow(|shadow| shadow.unsynced.clear());
            return Err(injected(errno));
        }
        let covered = self.state.files().completions;
        if all {
            self.inner.sync_all().await?;
        } else {
            self.inner.sync_data().await?;
        }
        self.state.faults.syncs_ok.fetch_add(1, Ordering::SeqCst);
        self.with_shadow(|shadow| shadow.make_durable(covered));
        Ok(())
    }
}

impl DataFile for FaultFile {
    async fn write_at(&self, buf: AlignedBuf, offset: u64) -> (io::Result<()>, AlignedBuf) {
        let faults = &self.state.faults;
        if faults.fail_writes.load(Ordering::SeqCst)
            || (self.table && faults.fail_table_writes.load(Ordering::SeqCst))
        {
            return (Err(injected(libc::EIO)), buf);
        }
        let end = offset + buf.len() as u64;
        let size = self.state.files().shadows.get(&self.id).map_or(0, |s| s.size);
        let no_space = (faults.no_space.load(Ordering::SeqCst) && end > size)
            || (self.manifest && faults.no_space_for_manifest.load(Ordering::SeqCst));
        if no_space {
            return (Err(injected(libc::ENOSPC)), buf);
        }
        if let Some(errno) = self.sync_fault().filter(|_| self.dsync) {
            // An `O_DSYNC` write carries its own sync, so it fails as a sync would.
            self.with_shadow(|shadow| shadow.unsynced.clear());
            return (Err(injected(errno)), buf);
        }
        let (result, buf) = self.inner.write_at(buf, offset).await;
        if result.is_ok() {
            let mut files = self.state.files();
            let number = files.completions;
            files.completions += 1;
            if let Some(shadow) = files.shadows.get_mut(&self.id) {
                shadow.unsynced.push((number, offset, buf.as_slice().to_vec()));
                shadow.size = shadow.size.max(end);
                if self.dsync {
                    shadow.make_durable(number + 1);
                }
            }
        }
        (result, buf)
    }

    async fn read_at(&self, buf: AlignedBuf, offset: u64) -> (io::Result<usize>, AlignedBuf) {
        if self.state.faults.fail_reads.load(Ordering::SeqCst) {
            return (Err(injected(libc::EIO)), buf);
        }
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

    fn direct_write_unit(&self) -> usize {
        self.inner.direct_write_unit()
    }
}

impl FileSystem for FaultFs {
    type File = FaultFile;
    type DirLock = <UringFs as FileSystem>::DirLock;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FaultFile> {
        let errno = self.state.faults.open_errno.load(Ordering::SeqCst);
        if errno != 0 {
            return Err(injected(errno));
        }
        if mode.create_new {
            // Between the creation and its tracking, a crash image must not take the new file
            // for an old, durable one (`in_flight`).
            self.state.files().in_flight.push(path.to_path_buf());
        }
        let opened = self.inner.open(path, mode).await;
        if mode.create_new && opened.is_err() {
            self.state.files().in_flight.retain(|p| p != path);
        }
        let inner = opened?;
        let id = if mode.create_new {
            self.track_created(path)
        } else {
            self.track_existing(path)?
        };
        Ok(FaultFile {
            inner,
            id,
            dsync: mode.dsync,
            table: matches!(
                crate::filename::FileKind::of_path(path),
                Some(crate::filename::FileKind::Table(_) | crate::filename::FileKind::TableTmp(_))
            ),
            manifest: matches!(
                crate::filename::FileKind::of_path(path),
                Some(crate::filename::FileKind::Manifest | crate::filename::FileKind::ManifestTmp)
            ),
            state: self.state.clone(),
        })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.track_existing(from)?;
        if to.exists() {
            // The replaced file comes back if the rename does not survive a crash.
            self.track_existing(to)?;
        }
        // From before the rename until it is recorded, `to` is in flight: a crash image taken in
        // between holds the directory as it was before the rename.
        self.state.files().in_flight.push(to.to_path_buf());
        let renamed = self.inner.rename(from, to).await;
        let mut files = self.state.files();
        files.in_flight.retain(|p| p != to);
        renamed?;
        files.record(DirOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
        Ok(())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        // Unknown files are durable as far as this layer can tell: a lost removal brings them back.
        if path.exists() {
            self.track_existing(path)?;
        }
        self.inner.remove(path).await?;
        self.record_dir_op(DirOp::Remove {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let faults = &self.state.faults;
        let errno = faults.sync_errno.load(Ordering::SeqCst);
        if errno != 0 && !faults.sync_fault_manifest_only.load(Ordering::SeqCst) {
            return Err(injected(errno));
        }
        // As with data: the sync covers the changes made before it was called.
        let covered = self.state.files().completions;
        self.inner.sync_dir(dir).await?;
        self.state.files().synced_dirs.push(dir.to_path_buf());
        let mut files = self.state.files();
        let pending = std::mem::take(&mut files.pending);
        let (synced, later): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(number, op)| *number < covered && op.dir() == Some(dir));
        for (_, op) in &synced {
            op.apply(&mut files.durable_names);
        }
        files.pending = later;
        files.collect_garbage();
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list_dir(dir)
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.create_dir_all(dir).await
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Self::DirLock> {
        self.inner.lock_dir(dir)
    }

    fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> Task<T> {
        self.inner.spawn(future)
    }

    fn start_thread(&self, name: &str, body: ThreadBody) -> io::Result<ThreadHandle> {
        self.inner.start_thread(name, body)
    }

    async fn sleep(&self, duration: Duration) {
        self.inner.sleep(duration).await;
    }

    fn now(&self) -> Instant {
        let ahead = Duration::from_micros(self.state.clock_ahead_us.load(Ordering::SeqCst));
        self.inner.now() + ahead
    }
}
