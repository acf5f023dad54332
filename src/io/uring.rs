//! The production file system: every data-file operation goes through the thread's io_uring,
//! opened with `O_DIRECT` so that what a sync makes durable is exactly what the store wrote, with
//! no page-cache copy in between.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tokio_uring::buf::BoundedBuf;

use super::{AlignedBuf, DataFile, FileSystem, OpenMode, BLOCK_BYTES};

/// The io_uring + `O_DIRECT` (unless [`OpenMode::buffered`]) file system. Must be used from inside a tokio-uring runtime.
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
        let (result, buf) = self.file.write_all_at(buf, offset).await;
        (result, buf)
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
            let (result, slice) = self
                .file
                .read_at(buf.slice(filled..capacity), offset + filled as u64)
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
        self.file.sync_data().await
    }

    async fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all().await
    }

    async fn size(&self) -> io::Result<u64> {
        let stat = self.file.statx().await?;
        Ok(stat.stx_size)
    }
}

impl FileSystem for UringFs {
    type File = UringFile;

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
        std::fs::read_dir(dir)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect()
    }
}
