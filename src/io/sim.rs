//! The deterministic simulator's world (`TigerBeetle`'s VOPR is the model): an in-memory file
//! system with a model of what is durable, a virtual clock, and a single-threaded executor that
//! picks the next task to run at random. One seed fixes every latency, every interleaving of
//! independent completions, every injected fault and the moment of every crash, so a failing
//! seed replays exactly.
//!
//! - Every operation completes after a random virtual latency (with a rare long tail), so
//!   independent I/O completes out of order as on a real device; nothing takes real time.
//! - Durability follows the strict rule of a real `fdatasync`: a sync covers the writes that had
//!   *completed when it was called*, not those completing while it runs; an `O_DSYNC` write is
//!   durable when it completes; directory entries (creations, renames, removals) become durable
//!   only with a sync of their directory, and a crash keeps a prefix of the pending ones (a journal
//!   keeps metadata changes in order).
//! - [`SimFs::crash`] is a power failure: each file goes back to its durable content plus each
//!   unsynced write whole, lost, or torn at 512-byte sectors.
//! - Faults, each with the probability [`SimFaults`] gives: `EIO` on a write, a sync or a read
//!   (a failed sync drops the file's unsynced writes, as Linux does), and spells of `ENOSPC` on
//!   writes that would grow a file. Direct I/O that is not aligned to the world's direct-I/O unit
//!   fails with `EINVAL`, as ext4 answers it. That unit is 512 bytes (a device with 512-byte
//!   logical sectors, like this machine's) for even seeds and 4096 for odd ones, so that both of
//!   the WAL's write units run.
//!
//! For tests only; the server never uses it. Owns no storage logic: it is the outside world.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;

use super::dir_op::DirOp;
use super::fault::{patch, random_persisted, Persisted};
use super::{
    AlignedBuf, DataFile, FileSystem, OpenMode, Task, ThreadBody, ThreadHandle, BLOCK_BYTES, SECTOR_BYTES,
};

/// Probabilities of the faults a run injects (per operation), and whether latencies vary.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimFaults {
    pub write_eio: f64,
    pub sync_eio: f64,
    pub read_eio: f64,
    /// Chance per growing write that a spell of `ENOSPC` starts (it lasts 1 to 3 virtual s).
    pub no_space: f64,
}

/// What the world did, for the run's report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimStats {
    pub writes: u64,
    pub syncs: u64,
    pub reads: u64,
    pub write_eio: u64,
    pub sync_eio: u64,
    pub read_eio: u64,
    pub no_space: u64,
    pub crashes: u64,
    pub unsynced_writes_lost: u64,
    pub writes_torn: u64,
}

/// One file's content: what is durable, and the completed writes no sync has covered yet.
#[derive(Default, Clone)]
struct Inode {
    durable: Vec<u8>,
    /// (completion number, offset, bytes), oldest first.
    unsynced: Vec<(u64, u64, Vec<u8>)>,
    /// What a read sees: `durable` with every completed write applied.
    current: Vec<u8>,
}

struct World {
    rng: SmallRng,
    faults: SimFaults,
    base: Instant,
    clock: Duration,
    /// Sleepers by deadline; the sequence number breaks ties in the order they slept.
    timers: BinaryHeap<Reverse<(Duration, u64)>>,
    wakers: BTreeMap<u64, Waker>,
    next_timer: u64,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// Every completed write gets the next number: a sync covers those below its call's value.
    completions: u64,
    dirs: BTreeSet<PathBuf>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    /// Directory changes no directory sync has covered, oldest first, with their numbers.
    pending: Vec<(u64, DirOp)>,
    locks: BTreeSet<PathBuf>,
    no_space_until: Option<Duration>,
    stats: SimStats,
    /// A digest of every operation and its virtual time: two runs of one seed must agree.
    trace: std::collections::hash_map::DefaultHasher,
    /// When each sync failure was injected (the test's oracle: what a failed sync leaves unsynced
    /// is lost, so it bounds what `periodic` can promise).
    sync_eio_at: Vec<Duration>,
    /// The alignment direct I/O must have (the logical sector of the simulated device).
    direct_unit: usize,
}

impl World {
    fn event(&mut self, what: &str, path: &Path, a: u64, b: u64) {
        (what, path, a, b, self.clock).hash(&mut self.trace);
    }

    /// A latency for an operation of `kind`: short and varied, with a rare long tail.
    fn latency(&mut self, kind: OpKind) -> Duration {
        let (low_us, high_us) = match kind {
            OpKind::Read => (5, 120),
            OpKind::Write => (10, 300),
            OpKind::Sync => (40, 2_000),
            OpKind::Metadata => (5, 500),
        };
        let us = if self.rng.gen_bool(0.01) {
            self.rng.gen_range(2_000..50_000)
        } else {
            self.rng.gen_range(low_us..high_us)
        };
        Duration::from_micros(us)
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.rng.gen_bool(probability)
    }

    fn inode(&mut self, inode: u64) -> &mut Inode {
        self.inodes.entry(inode).or_default()
    }

    fn parent_exists(&self, path: &Path) -> bool {
        path.parent().is_some_and(|dir| self.dirs.contains(dir))
    }

    fn dir_op(&mut self, op: DirOp) {
        op.apply(&mut self.names);
        let number = self.completions;
        self.completions += 1;
        self.pending.push((number, op));
    }

    /// Drops inodes no name (live or durable) points at any more.
    fn collect_garbage(&mut self) {
        let live: BTreeSet<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        let pending_links: BTreeSet<u64> = self
            .pending
            .iter()
            .filter_map(|(_, op)| match op {
                DirOp::Create { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        self.inodes
            .retain(|inode, _| live.contains(inode) || pending_links.contains(inode));
    }
}

#[derive(Clone, Copy)]
enum OpKind {
    Read,
    Write,
    Sync,
    Metadata,
}

/// See the module documentation. Clones share one world.
#[derive(Clone)]
pub struct SimFs {
    world: Arc<Mutex<World>>,
}

/// A file of a [`SimFs`]: an inode, which stays readable and writable after its name is gone.
pub struct SimFile {
    world: Arc<Mutex<World>>,
    inode: u64,
    path: PathBuf,
    direct: bool,
    dsync: bool,
}

/// The data-directory lock of a [`SimFs`]; released when dropped.
pub struct SimDirLock {
    world: Arc<Mutex<World>>,
    dir: PathBuf,
}

impl Drop for SimDirLock {
    fn drop(&mut self) {
        lock(&self.world).locks.remove(&self.dir);
    }
}

fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    // A panic while holding the lock is a failing test already; the world stays readable.
    world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl SimFs {
    /// An empty world whose every random choice comes from `seed`.
    pub fn new(seed: u64, faults: SimFaults) -> Self {
        let mut dirs = BTreeSet::new();
        dirs.insert(PathBuf::from("/"));
        SimFs {
            world: Arc::new(Mutex::new(World {
                rng: SmallRng::seed_from_u64(seed),
                faults,
                base: Instant::now(),
                clock: Duration::ZERO,
                timers: BinaryHeap::new(),
                wakers: BTreeMap::new(),
                next_timer: 0,
                inodes: BTreeMap::new(),
                next_inode: 1,
                completions: 0,
                dirs,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                pending: Vec::new(),
                locks: BTreeSet::new(),
                no_space_until: None,
                stats: SimStats::default(),
                trace: Default::default(),
                sync_eio_at: Vec::new(),
                direct_unit: if seed.is_multiple_of(2) {
                    SECTOR_BYTES
                } else {
                    BLOCK_BYTES
                },
            })),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Changes which faults are injected from now on.
    pub fn set_faults(&self, faults: SimFaults) {
        self.world().faults = faults;
    }

    pub fn stats(&self) -> SimStats {
        self.world().stats
    }

    /// The digest of every operation so far (see [`World::trace`]).
    pub fn trace_digest(&self) -> u64 {
        self.world().trace.finish()
    }

    /// Virtual time since the world began.
    pub fn elapsed(&self) -> Duration {
        self.world().clock
    }

    /// The first injected sync failure at or after `since`, on any file.
    pub fn first_sync_eio_since(&self, since: Duration) -> Option<Duration> {
        self.world().sync_eio_at.iter().copied().find(|&at| at >= since)
    }

    /// A random number from the world's generator, for the test driving it (one generator for
    /// everything keeps a run a function of its seed).
    pub fn random<T>(&self, range: std::ops::Range<T>) -> T
    where
        T: rand::distributions::uniform::SampleUniform + PartialOrd,
    {
        self.world().rng.gen_range(range)
    }

    /// A power failure. Call once every task that used the world has been dropped (the
    /// [`Simulation`] ended): files and directory entries go back to what was durable, plus a
    /// random part of what was not (see the module documentation). Timers and locks are cleared.
    pub fn crash(&self) {
        let mut world = self.world();
        let world = &mut *world;
        world.stats.crashes += 1;
        let kept = world.rng.gen_range(0..=world.pending.len());
        let mut names = world.durable_names.clone();
        for (_, op) in &world.pending[..kept] {
            op.apply(&mut names);
        }
        let mut inodes = BTreeMap::new();
        for &inode in names.values() {
            if inodes.contains_key(&inode) {
                continue;
            }
            let Some(file) = world.inodes.get(&inode) else {
                continue;
            };
            let mut image = file.durable.clone();
            for (_, offset, bytes) in &file.unsynced {
                match random_persisted(&mut world.rng, bytes.len()) {
                    Persisted::All => patch(&mut image, *offset, bytes),
                    Persisted::Nothing => world.stats.unsynced_writes_lost += 1,
                    Persisted::Sectors(sectors) => {
                        world.stats.writes_torn += 1;
                        for (index, chunk) in bytes.chunks(SECTOR_BYTES).enumerate() {
                            if sectors.get(index).copied().unwrap_or(false) {
                                patch(&mut image, offset + (index * SECTOR_BYTES) as u64, chunk);
                            }
                        }
                    }
                }
            }
            inodes.insert(
                inode,
                Inode {
                    durable: image.clone(),
                    unsynced: Vec::new(),
                    current: image,
                },
            );
        }
        world.inodes = inodes;
        world.names = names.clone();
        world.durable_names = names;
        world.pending.clear();
        world.timers.clear();
        world.wakers.clear();
        world.locks.clear();
        world.no_space_until = None;
        world.event("crash", Path::new(""), kept as u64, 0);
    }

    /// Waits out the latency of one operation on the virtual clock.
    async fn latency(&self, kind: OpKind) {
        let latency = self.world().latency(kind);
        self.sleep(latency).await;
    }

    /// Whether the next write to a file of `size` bytes ending at `end` hits a full disk.
    fn out_of_space(world: &mut World, size: u64, end: u64) -> bool {
        if end <= size {
            return false; // overwrites never need space (ext4 on pre-written files)
        }
        if world.no_space_until.is_some_and(|until| world.clock < until) {
            return true;
        }
        let probability = world.faults.no_space;
        if world.chance(probability) {
            let spell = Duration::from_millis(world.rng.gen_range(1_000..3_000));
            world.no_space_until = Some(world.clock + spell);
            return true;
        }
        false
    }
}

impl SimFile {
    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    fn fs(&self) -> SimFs {
        SimFs {
            world: self.world.clone(),
        }
    }

    fn check_direct(&self, offset: u64, len: usize) -> io::Result<()> {
        let unit = self.world().direct_unit;
        let aligned = offset.is_multiple_of(unit as u64) && len.is_multiple_of(unit);
        if self.direct && !aligned {
            return Err(errno(libc::EINVAL));
        }
        Ok(())
    }

    async fn sync(&self) -> io::Result<()> {
        // What the sync covers is fixed when it is called.
        let covered = {
            let mut world = self.world();
            world.stats.syncs += 1;
            world.completions
        };
        self.fs().latency(OpKind::Sync).await;
        let mut world = self.world();
        let world = &mut *world;
        let probability = world.faults.sync_eio;
        if world.chance(probability) {
            world.stats.sync_eio += 1;
            let now = world.clock;
            world.sync_eio_at.push(now);
            world.event("sync-eio", &self.path, 0, 0);
            // Linux after a failed writeback: the pages are marked clean, the data may never
            // reach the disk.
            world.inode(self.inode).unsynced.clear();
            return Err(errno(libc::EIO));
        }
        world.event("sync", &self.path, covered, 0);
        let file = world.inode(self.inode);
        let mut still_unsynced = Vec::new();
        for (number, offset, bytes) in file.unsynced.drain(..) {
            if number < covered {
                patch(&mut file.durable, offset, &bytes);
            } else {
                still_unsynced.push((number, offset, bytes));
            }
        }
        file.unsynced = still_unsynced;
        Ok(())
    }
}

impl DataFile for SimFile {
    async fn write_at(&self, buf: AlignedBuf, offset: u64) -> (io::Result<()>, AlignedBuf) {
        if let Err(error) = self.check_direct(offset, buf.len()) {
            return (Err(error), buf);
        }
        self.fs().latency(OpKind::Write).await;
        let mut world = self.world();
        let world = &mut *world;
        world.stats.writes += 1;
        let end = offset + buf.len() as u64;
        let size = world.inode(self.inode).current.len() as u64;
        let probability = world.faults.write_eio;
        if world.chance(probability) {
            world.stats.write_eio += 1;
            world.event("write-eio", &self.path, offset, buf.len() as u64);
            return (Err(errno(libc::EIO)), buf);
        }
        if SimFs::out_of_space(world, size, end) {
            world.stats.no_space += 1;
            world.event("write-enospc", &self.path, offset, buf.len() as u64);
            return (Err(errno(libc::ENOSPC)), buf);
        }
        world.event("write", &self.path, offset, buf.len() as u64);
        let number = world.completions;
        world.completions += 1;
        let dsync = self.dsync;
        let file = world.inode(self.inode);
        patch(&mut file.current, offset, buf.as_slice());
        if dsync {
            patch(&mut file.durable, offset, buf.as_slice());
        } else {
            file.unsynced.push((number, offset, buf.as_slice().to_vec()));
        }
        (Ok(()), buf)
    }

    async fn read_at(&self, mut buf: AlignedBuf, offset: u64) -> (io::Result<usize>, AlignedBuf) {
        if let Err(error) = self.check_direct(offset, buf.capacity()) {
            return (Err(error), buf);
        }
        self.fs().latency(OpKind::Read).await;
        let mut world = self.world();
        let world = &mut *world;
        world.stats.reads += 1;
        let probability = world.faults.read_eio;
        if world.chance(probability) {
            world.stats.read_eio += 1;
            world.event("read-eio", &self.path, offset, 0);
            return (Err(errno(libc::EIO)), buf);
        }
        let current = &world.inode(self.inode).current;
        let start = crate::coding::to_usize(offset).min(current.len());
        let end = (start + buf.capacity()).min(current.len());
        let count = end - start;
        buf.set_len(0);
        let copied = buf.extend_from_slice(&current[start..end]);
        debug_assert!(copied, "the read fits the buffer's capacity");
        world.event("read", &self.path, offset, count as u64);
        (Ok(count), buf)
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.sync().await
    }

    async fn sync_all(&self) -> io::Result<()> {
        self.sync().await
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.world().inode(self.inode).current.len() as u64)
    }

    fn direct_write_unit(&self) -> usize {
        self.world().direct_unit
    }
}

impl FileSystem for SimFs {
    type File = SimFile;
    type DirLock = SimDirLock;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<SimFile> {
        self.latency(OpKind::Metadata).await;
        let mut world = self.world();
        if !world.parent_exists(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let inode = match (world.names.get(path).copied(), mode.create_new) {
            (Some(_), true) => return Err(io::ErrorKind::AlreadyExists.into()),
            (Some(inode), false) => inode,
            (None, false) => return Err(io::ErrorKind::NotFound.into()),
            (None, true) => {
                let inode = world.next_inode;
                world.next_inode += 1;
                world.inodes.insert(inode, Inode::default());
                world.dir_op(DirOp::Create {
                    path: path.to_path_buf(),
                    id: inode,
                });
                inode
            }
        };
        world.event("open", path, inode, u64::from(mode.create_new));
        Ok(SimFile {
            world: self.world.clone(),
            inode,
            path: path.to_path_buf(),
            direct: !mode.buffered,
            dsync: mode.dsync,
        })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.latency(OpKind::Metadata).await;
        let mut world = self.world();
        if !world.names.contains_key(from) || !world.parent_exists(to) {
            return Err(io::ErrorKind::NotFound.into());
        }
        world.event("rename", from, 0, 0);
        world.event("rename-to", to, 0, 0);
        world.dir_op(DirOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
        Ok(())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.latency(OpKind::Metadata).await;
        let mut world = self.world();
        if !world.names.contains_key(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        world.event("remove", path, 0, 0);
        world.dir_op(DirOp::Remove {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let covered = self.world().completions;
        self.latency(OpKind::Sync).await;
        let mut world = self.world();
        let world = &mut *world;
        let probability = world.faults.sync_eio;
        if world.chance(probability) {
            world.stats.sync_eio += 1;
            world.event("sync-dir-eio", dir, 0, 0);
            return Err(errno(libc::EIO));
        }
        world.event("sync-dir", dir, covered, 0);
        let pending = std::mem::take(&mut world.pending);
        for (number, op) in pending {
            if number < covered && op.dir() == Some(dir) {
                op.apply(&mut world.durable_names);
            } else {
                world.pending.push((number, op));
            }
        }
        world.collect_garbage();
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let world = self.world();
        if !world.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(world
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .cloned()
            .collect())
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        // Directories are durable at once: the simulated store never removes or renames one.
        let mut world = self.world();
        let mut created: Vec<PathBuf> = dir
            .ancestors()
            .filter(|ancestor| world.dirs.insert(ancestor.to_path_buf()))
            .map(Path::to_path_buf)
            .collect();
        created.reverse();
        Ok(created)
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<SimDirLock> {
        if !self.world().locks.insert(dir.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(SimDirLock {
            world: self.world.clone(),
            dir: dir.to_path_buf(),
        })
    }

    fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> Task<T> {
        let (wrapper, task) = Task::wrap(future);
        Executor::spawn_on_current(Box::pin(wrapper));
        task
    }

    fn start_thread(&self, _name: &str, body: ThreadBody) -> io::Result<ThreadHandle> {
        // The "thread" is one more task on the one executor, interleaved at random with the
        // rest: the simulator explores the orders two real threads could take.
        let (finished, finished_receiver) = oneshot::channel();
        let body = body();
        Executor::spawn_on_current(Box::pin(async move {
            body.await;
            let _ = finished.send(());
        }));
        Ok(ThreadHandle::new(finished_receiver, None))
    }

    async fn sleep(&self, duration: Duration) {
        let deadline = self.world().clock + duration;
        Sleep {
            world: self.world.clone(),
            deadline,
            timer: None,
        }
        .await;
    }

    fn now(&self) -> Instant {
        let world = self.world();
        world.base + world.clock
    }
}

/// A sleep on the virtual clock.
struct Sleep {
    world: Arc<Mutex<World>>,
    deadline: Duration,
    timer: Option<u64>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let mut world = lock(&self.world);
        if world.clock >= self.deadline {
            return Poll::Ready(());
        }
        let timer = if let Some(timer) = self.timer {
            timer
        } else {
            let timer = world.next_timer;
            world.next_timer += 1;
            world.timers.push(Reverse((self.deadline, timer)));
            timer
        };
        world.wakers.insert(timer, context.waker().clone());
        drop(world);
        self.timer = Some(timer);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(timer) = self.timer {
            lock(&self.world).wakers.remove(&timer);
        }
    }
}

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Task ids woken since they were last polled; shared with the wakers, which may be `Send`.
#[derive(Default)]
struct ReadySet(Mutex<BTreeSet<usize>>);

struct TaskWaker {
    id: usize,
    ready: Arc<ReadySet>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.id);
    }
}

thread_local! {
    /// Tasks spawned while an executor runs on this thread, waiting to be adopted by it.
    static SPAWNED: RefCell<Option<Vec<LocalFuture>>> = const { RefCell::new(None) };
}

/// How a [`Simulation::run`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RunEnd<T> {
    /// The main future finished with this.
    Finished(T),
    /// The step budget ran out first: the process "crashed" there, with every task dropped.
    Crashed,
    /// Nothing could run and no timer was set while the main future waited: a hang.
    Stalled,
}

/// A single-threaded executor over a [`SimFs`]'s clock: while tasks are ready, it polls one
/// chosen at random; when none is, it moves the clock to the next timer. One run is one life of
/// the simulated process: dropping the executor drops every task, as a crash would.
pub struct Simulation {
    fs: SimFs,
}

struct Executor;

impl Executor {
    fn spawn_on_current(future: LocalFuture) {
        SPAWNED.with(|spawned| {
            spawned
                .borrow_mut()
                .as_mut()
                .expect("SimFs spawns only inside Simulation::run")
                .push(future);
        });
    }
}

impl Simulation {
    pub fn new(fs: SimFs) -> Self {
        Simulation { fs }
    }

    /// Runs `main` with every task it spawns until it finishes, `max_steps` polls have been
    /// made (a crash at that point), or it stalls. Every task left is dropped on return.
    pub fn run<T: 'static>(
        &self,
        main: impl Future<Output = T> + 'static,
        max_steps: u64,
    ) -> (RunEnd<T>, u64) {
        let output: Rc<RefCell<Option<T>>> = Rc::default();
        let slot = output.clone();
        let ready = Arc::new(ReadySet::default());
        let mut tasks: Vec<Option<LocalFuture>> = vec![Some(Box::pin(async move {
            *slot.borrow_mut() = Some(main.await);
        }))];
        ready
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(0);
        let previous = SPAWNED.with(|spawned| spawned.borrow_mut().replace(Vec::new()));
        assert!(previous.is_none(), "one simulation at a time per thread");
        let mut steps = 0;
        let end = loop {
            let spawned =
                SPAWNED.with(|spawned| std::mem::take(spawned.borrow_mut().as_mut().expect("set above")));
            for future in spawned {
                ready
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(tasks.len());
                tasks.push(Some(future));
            }
            if output.borrow().is_some() {
                break RunEnd::Finished(());
            }
            if steps >= max_steps {
                break RunEnd::Crashed;
            }
            let next = {
                let mut ids = ready.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if ids.is_empty() {
                    None
                } else {
                    let index = self.fs.random(0..ids.len());
                    let id = *ids.iter().nth(index).expect("index below the set's length");
                    ids.remove(&id);
                    Some(id)
                }
            };
            let Some(id) = next else {
                if !self.advance_clock() {
                    break RunEnd::Stalled;
                }
                continue;
            };
            let Some(task) = tasks[id].as_mut() else { continue };
            steps += 1;
            let waker = Waker::from(Arc::new(TaskWaker {
                id,
                ready: ready.clone(),
            }));
            if task.as_mut().poll(&mut Context::from_waker(&waker)).is_ready() {
                tasks[id] = None;
            }
        };
        // Every task goes before the thread-local does: their drops may spawn nothing more.
        drop(tasks);
        SPAWNED.with(|spawned| spawned.borrow_mut().take());
        let end = match end {
            RunEnd::Finished(()) => {
                RunEnd::Finished(output.borrow_mut().take().expect("the main task finished"))
            }
            RunEnd::Crashed => RunEnd::Crashed,
            RunEnd::Stalled => RunEnd::Stalled,
        };
        (end, steps)
    }

    /// Moves the clock to the earliest timer and wakes every sleeper due then; `false` if no
    /// timer is set.
    fn advance_clock(&self) -> bool {
        let mut due = Vec::new();
        {
            let mut world = self.fs.world();
            let Some(&Reverse((deadline, _))) = world.timers.peek() else {
                return false;
            };
            world.clock = world.clock.max(deadline);
            while let Some(&Reverse((deadline, timer))) = world.timers.peek() {
                if deadline > world.clock {
                    break;
                }
                world.timers.pop();
                if let Some(waker) = world.wakers.remove(&timer) {
                    due.push(waker);
                }
            }
        }
        for waker in due {
            waker.wake();
        }
        true
    }
}
