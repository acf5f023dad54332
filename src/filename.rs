//! Every kind of file in the data directory: one enum, one format and one parse (leveldb's
//! `db/filename.h`). A file's name is all the store knows its kind by; keys are data, never file
//! names. Numbers are sixteen decimal digits, so names sort in number order.
//!
//! | kind | name | written by |
//! |---|---|---|
//! | [`FileKind::WalSegment`] | `wal-NNNNNNNNNNNNNNNN.log` | `wal::segment` |
//! | [`FileKind::WalSegmentTmp`] | `wal-NNNNNNNNNNNNNNNN.log.tmp` (being pre-written) | `wal::segment` |
//! | [`FileKind::Table`] | `NNNNNNNNNNNNNNNN.sst` | `sst::builder` |
//! | [`FileKind::TableTmp`] | `NNNNNNNNNNNNNNNN.sst.tmp` (being written) | `sst::builder` |
//! | [`FileKind::Manifest`] | `MANIFEST` | `manifest` |
//! | [`FileKind::ManifestTmp`] | `MANIFEST.tmp` (a rewrite in progress) | `manifest` |
//! | [`FileKind::Lock`] | `LOCK` | `io::FileSystem::lock_dir` |

use std::path::{Path, PathBuf};

/// See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    WalSegment(u64),
    WalSegmentTmp(u64),
    Table(u64),
    TableTmp(u64),
    Manifest,
    ManifestTmp,
    SeqLease,
    SeqLeaseTmp,
    Lock,
}

const DIGITS: usize = 16;

/// A numbered kind's name: prefix, number, suffix.
type NumberedName = (&'static str, &'static str, fn(u64) -> FileKind);

const NUMBERED: [NumberedName; 4] = [
    ("wal-", ".log", FileKind::WalSegment),
    ("wal-", ".log.tmp", FileKind::WalSegmentTmp),
    ("", ".sst", FileKind::Table),
    ("", ".sst.tmp", FileKind::TableTmp),
];

/// The number of a name made of `prefix`, sixteen digits and `suffix`.
fn numbered(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl FileKind {
    /// The file's name.
    pub fn name(self) -> String {
        match self {
            FileKind::WalSegment(number) => format!("wal-{number:016}.log"),
            FileKind::WalSegmentTmp(number) => format!("wal-{number:016}.log.tmp"),
            FileKind::Table(number) => format!("{number:016}.sst"),
            FileKind::TableTmp(number) => format!("{number:016}.sst.tmp"),
            FileKind::Manifest => "MANIFEST".to_string(),
            FileKind::ManifestTmp => "MANIFEST.tmp".to_string(),
            FileKind::SeqLease => "SEQ_LEASE".to_string(),
            FileKind::SeqLeaseTmp => "SEQ_LEASE.tmp".to_string(),
            FileKind::Lock => "LOCK".to_string(),
        }
    }

    /// The file's path in the data directory `dir`.
    pub fn path(self, dir: &Path) -> PathBuf {
        dir.join(self.name())
    }

    /// The kind a name says, or `None` for a name the store never writes.
    pub fn parse(name: &str) -> Option<FileKind> {
        match name {
            "MANIFEST" => return Some(FileKind::Manifest),
            "MANIFEST.tmp" => return Some(FileKind::ManifestTmp),
            "SEQ_LEASE" => return Some(FileKind::SeqLease),
            "SEQ_LEASE.tmp" => return Some(FileKind::SeqLeaseTmp),
            "LOCK" => return Some(FileKind::Lock),
            _ => {}
        }
        NUMBERED
            .iter()
            .find_map(|(prefix, suffix, kind)| numbered(name, prefix, suffix).map(kind))
    }

    /// The kind of the file at `path`, by its name.
    pub fn of_path(path: &Path) -> Option<FileKind> {
        FileKind::parse(path.file_name()?.to_str()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_nothing_else_parses() {
        let kinds = [
            FileKind::WalSegment(42),
            FileKind::WalSegmentTmp(3),
            FileKind::Table(u64::from(u32::MAX) + 7),
            FileKind::TableTmp(1),
            FileKind::Manifest,
            FileKind::ManifestTmp,
            FileKind::SeqLease,
            FileKind::SeqLeaseTmp,
            FileKind::Lock,
        ];
        for kind in kinds {
            assert_eq!(FileKind::parse(&kind.name()), Some(kind), "{}", kind.name());
            assert_eq!(FileKind::of_path(&kind.path(Path::new("/d"))), Some(kind));
        }
        assert_eq!(FileKind::Table(42).name(), "0000000000000042.sst");
        assert_eq!(FileKind::WalSegment(42).name(), "wal-0000000000000042.log");
        for stranger in [
            "wal-42.log",
            "42.sst",
            "wal-000000000000004x.log",
            "0000000000000042.sst.bak",
            "manifest",
            "x0000000000000042.sst",
            "",
        ] {
            assert_eq!(FileKind::parse(stranger), None, "{stranger:?}");
        }
    }
}
