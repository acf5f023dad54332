//! A change to a directory's entries, as the two file-system models (`fault.rs` on real files,
//! `sim.rs` in memory) queue them until a directory sync makes them durable. A crash keeps the
//! durable names plus a prefix of the queue: a journal keeps metadata changes in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// See the module documentation. `id` names the file's content (an inode).
#[derive(Clone, Debug)]
pub(super) enum DirOp {
    Create { path: PathBuf, id: u64 },
    Rename { from: PathBuf, to: PathBuf },
    Remove { path: PathBuf },
}

impl DirOp {
    /// The directory whose sync makes this change durable.
    pub(super) fn dir(&self) -> Option<&Path> {
        match self {
            DirOp::Create { path, .. } | DirOp::Remove { path } => path.parent(),
            DirOp::Rename { to, .. } => to.parent(),
        }
    }

    /// Applies the change to a map from names to file ids.
    pub(super) fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            DirOp::Create { path, id } => {
                names.insert(path.clone(), *id);
            }
            DirOp::Rename { from, to } => {
                if let Some(id) = names.remove(from) {
                    names.insert(to.clone(), id);
                }
            }
            DirOp::Remove { path } => {
                names.remove(path);
            }
        }
    }
}
