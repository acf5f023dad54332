//! Publishing a file written under a temporary name: sync its data, rename it to its final name,
//! sync the directory. After a crash the file is then complete under its final name or not there
//! at all. The one copy of this sequence, used by the WAL segment pre-write, the table builder
//! and the manifest rewrite.

use std::path::Path;

use super::{DataFile, FileSystem};
use crate::error::{IoContext, Result};

/// See the module documentation. `tmp` and `path` must be in the same directory.
pub async fn publish<F: FileSystem>(fs: &F, file: &F::File, tmp: &Path, path: &Path) -> Result<()> {
    let dir = path.parent().expect("a data file's path has a directory");
    assert_eq!(
        tmp.parent(),
        Some(dir),
        "a rename across directories is not atomic"
    );
    // `context`, not `sync_context`: an `ENOSPC` here stays `NoSpace`, which the caller answers
    // by dropping this file and writing a new one from its source (the memtable, the input
    // tables, the version) once space is back. That is not a retried sync: nothing that this
    // failed sync covered is ever claimed durable.
    file.sync_data().await.context("sync", tmp)?;
    fs.rename(tmp, path).await.context("rename", tmp)?;
    fs.sync_dir(dir).await.context("sync directory", dir)
}
