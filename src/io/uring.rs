//! The production file system: every data-file operation goes through the thread's `io_uring`,
//! opened with `O_DIRECT` so that what a sync makes durable is exactly what the store wrote, with
//! no page-cache copy in between.

use std::fs::{File, TryLockError};
use std::future::Future;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_uring::buf::BoundedBuf;

use super::{AlignedBuf, DataFile, FileSystem, OpenMode, Task, ThreadBody, ThreadHandle, BLOCK_BYTES};

/// Submission-queue entries of a thread's own ring (the background ring's).
const THREAD_RING_ENTRIES: u32 = 256;

/// Runs a ring operation's future, submitting its queued entry right after the first poll queues
/// it. tokio-uring otherwise submits only when the thread parks, so on a busy serving ring a
/// file operation waited for every ready task to run before it reached the device:
/// `lsm_load`'s idle random reads ran 1.49x faster with table reads submitted at once, and
/// 64-connection `group` SETs about 1.08x with WAL writes and syncs submitted at once
/// (BENCHMARKS.md, issue 14). File operations only: submitting socket operations this way too
/// made 64-connection GETs slower (a system call per operation, where the park batches them).
async fn submitted_now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(output) = first {
        return output;
    }
    // Failing here leaves the entry queued for the park's submission, as before.
    let _ = tokio_uring::submit_pending();
    future.await
}

/// The `io_uring` + `O_DIRECT` (unless [`OpenMode::buffered`]) file system. Must be used from inside a tokio-uring runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct UringFs;

/// A data file on the ring.
pub struct UringFile {
    file: tokio_uring::fs::File,
}

impl DataFile for UringFile {
    async fn write_at(&self, buf: AlignedBuf, offset: u64) -> (io::Result<()>, AlignedBuf) {
        debug_assert_eq!(buf.len() % BLOCK_BYTES, 0, "direct write of a partial block");
        debug_assert_eq!(
            offset % BLOCK_BYTES as u64,
            0,
            "direct write at an unaligned offset"
        );
        submitted_now(self.file.write_all_at(buf, offset)).await
    }

    async fn read_at(&self, mut buf: AlignedBuf, offset: u64) -> (io::Result<usize>, AlignedBuf) {
        debug_assert_eq!(
            offset % BLOCK_BYTES as u64,
            0,
            "direct read at an unaligned offset"
        );
        buf.set_len(0);
        // Read into the whole capacity; a short read happens only at the end of the file.
        let capacity = buf.capacity();
        let mut filled = 0;
        loop {
            let (result, slice) = submitted_now(
                self.file
                    .read_at(buf.slice(filled..capacity), offset + filled as u64),
            )
            .await;
            buf = slice.into_inner();
            match result {
                Ok(0) => return (Ok(filled), buf),
                Ok(n) => {
                    filled += n;
                    buf.set_len(filled);
                    // A direct read ends short only at end of file, where the count need not be
                    // a whole block; stop there rather than issue an unaligned follow-up read.
                    if filled == capacity || filled % BLOCK_BYTES != 0 {
                        return (Ok(filled), buf);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return (Err(error), buf),
            }
        }
    }

    async fn sync_data(&self) -> io::Result<()> {
        submitted_now(self.file.sync_data()).await
    }

    async fn sync_all(&self) -> io::Result<()> {
        submitted_now(self.file.sync_all()).await
    }

    async fn size(&self) -> io::Result<u64> {
        let stat = self.file.statx().await?;
        Ok(stat.stx_size)
    }

    fn direct_write_unit(&self) -> usize {
        use std::os::fd::AsRawFd;
        // A failed `statx` (an old kernel) means the safe default, like an unreported alignment.
        super::write_unit_from(
            crate::sys::direct_io_offset_align(self.file.as_raw_fd())
                .ok()
                .flatten(),
        )
    }
}

impl FileSystem for UringFs {
    type File = UringFile;
    type DirLock = File;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<UringFile> {
        let mut flags = libc::O_CLOEXEC;
        if !mode.buffered {
            flags |= libc::O_DIRECT;
        }
        if mode.dsync {
            flags |= libc::O_DSYNC;
        }
        let file = tokio_uring::fs::OpenOptions::new()
            .read(true)
            .write(mode.write)
            .create_new(mode.create_new)
            .custom_flags(flags)
            .open(path)
            .await?;
        Ok(UringFile { file })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        tokio_uring::fs::rename(from, to).await
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        tokio_uring::fs::remove_file(path).await
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let directory = tokio_uring::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .await?;
        let synced = directory.sync_all().await;
        let closed = directory.close().await;
        synced.and(closed)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut paths = std::fs::read_dir(dir)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<io::Result<Vec<_>>>()?;
        paths.sort();
        Ok(paths)
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        // Once per start, before serving: not worth a round through the ring (which has no
        // recursive mkdir).
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|ancestor| !ancestor.as_os_str().is_empty() && !ancestor.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(dir)?;
        missing.reverse();
        Ok(missing)
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<File> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join("LOCK"))?;
        // std's try_lock is flock(LOCK_EX | LOCK_NB) on Linux: released by the kernel when the
        // process dies, however it dies.
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(TryLockError::Error(error)) => return Err(error),
        }
        // The pid is for an operator wondering who holds the directory; the lock is the flock.
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(file)
    }

    fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> Task<T> {
        let (wrapper, task) = Task::wrap(future);
        tokio_uring::spawn(wrapper);
        task
    }

    fn start_thread(&self, name: &str, body: ThreadBody) -> io::Result<ThreadHandle> {
        let (finished, finished_receiver) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                super::ring::start(THREAD_RING_ENTRIES, async move {
                    body().await;
                    let _ = finished.send(());
                });
            })?;
        Ok(ThreadHandle::new(finished_receiver, Some(thread)))
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use super::*;

    /// A file read reaches the device while other tasks keep the ring busy. tokio-uring submits
    /// queued operations when the thread parks, and a task that only yields keeps it from
    /// parking: before `submitted_now`, the read below completed only once the busy task ended.
    #[test]
    fn a_file_read_completes_while_the_ring_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("block");
        std::fs::write(&path, vec![7u8; BLOCK_BYTES]).unwrap();
        crate::io::ring::start(THREAD_RING_ENTRIES, async {
            let file = UringFs.open(&path, OpenMode::READ).await.unwrap();
            let busy = Rc::new(Cell::new(true));
            let read_done = Rc::new(Cell::new(false));
            let busy_task = tokio_uring::spawn({
                let (busy, read_done) = (busy.clone(), read_done.clone());
                async move {
                    let until = Instant::now() + Duration::from_secs(3);
                    while !read_done.get() && Instant::now() < until {
                        tokio::task::yield_now().await;
                    }
                    busy.set(false);
                }
            });
            // Let the busy task start before the read is queued.
            tokio::task::yield_now().await;
            let (read, buf) = file.read_at(AlignedBuf::zeroed(BLOCK_BYTES), 0).await;
            assert_eq!(read.unwrap(), BLOCK_BYTES);
            assert_eq!(buf.as_slice()[0], 7);
            assert!(
                busy.get(),
                "the read completed only after the ring stopped being busy"
            );
            read_done.set(true);
            busy_task.await.unwrap();
        });
    }
}
