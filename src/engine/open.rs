//! Opening a data directory, in the order that makes recovery exact: the manifest (which tables
//! are live, up to which seq the WAL is flushed, which segments are retired), then the tables
//! (each one's footer, filter and index checked), then the WAL replayed from the first live
//! segment (which must be there), skipping records already in tables, and only then files nobody
//! names (an interrupted flush, compaction or manifest rewrite) removed.

use crate::coding;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::Notify;

use super::memtables::Memtables;
use super::{run_events, Engine, RecoveryReport};
use crate::background::{Background, BackgroundOptions};
use crate::compaction::Policy;
use crate::config::StoreConfig;
use crate::dir_lock::DirLock;
use crate::error::{Error, IoContext, Result};
use crate::filename::FileKind;
use crate::io::FileSystem;
use crate::manifest::{self, ManifestState};
use crate::memtable::Memtable;
use crate::seq_lease::SeqLease;
use crate::sst::{TableMeta, TableReaders};
use crate::version::{Version, VersionEdit};
use crate::wal::{self, RecordKind, RecyclePool, WalOptions, WalWriter};

impl<F: FileSystem> Engine<F> {
    /// Opens (or creates) the store in `config.data_dir`: takes the directory lock, recovers
    /// (see the module documentation), and starts the WAL writer and the background ring. Must
    /// run inside a tokio-uring runtime.
    pub async fn open(fs: F, config: &StoreConfig) -> Result<(Rc<Self>, RecoveryReport)> {
        config.validate()?;
        let dir = &config.data_dir;
        create_data_dir(&fs, dir).await?;
        let lock = DirLock::acquire(&fs, dir)?;
        let manifest = manifest::recover(&fs, dir).await?;
        let mut version = load_tables(&fs, config, &manifest).await?;

        let memtable = Memtable::new();
        let flushed_seq = version.flushed_seq;
        let mut replayed = 0;
        let log = wal::recover(
            &fs,
            dir,
            version.first_live_wal_segment,
            coding::to_usize(config.wal_segment_bytes),
            |record| {
                // A batch's ops are all in one memtable (appended in one step, frozen
                // together), so its first seq decides for all of them.
                if record.seq <= flushed_seq {
                    return;
                }
                let key = Bytes::copy_from_slice(record.key);
                match record.kind {
                    RecordKind::Put => {
                        memtable.insert(key, record.seq, Some(Bytes::copy_from_slice(record.value)));
                    }
                    RecordKind::Delete => memtable.insert(key, record.seq, None),
                    RecordKind::Batch => {
                        let ops = wal::batch::decode(record.value).expect("record::decode checked the batch");
                        for (op, seq) in ops.iter().zip(record.seq..) {
                            let value = op.value.map(Bytes::copy_from_slice);
                            memtable.insert(Bytes::copy_from_slice(op.key), seq, value);
                        }
                    }
                    // The Raft log's records live in their own directory (`cluster::log_store`).
                    RecordKind::SegmentEnd
                    | RecordKind::DurableMark
                    | RecordKind::RaftEntry
                    | RecordKind::RaftTruncate => return,
                }
                replayed += 1;
            },
        )
        .await?;
        // Only once the log is known to continue the manifest: a table the manifest does not
        // name is then a leftover of an unfinished flush or compaction, not the only copy of data
        // whose manifest edit was lost.
        remove_unnamed_files(&fs, config, &manifest, &mut version).await?;
        // Versions never go back, even when every WAL segment was retired, and are never
        // handed out twice, even when a power loss took acknowledged writes (the lease).
        let found_seq = log.next_seq.max(flushed_seq + 1).max(version.max_entry_seq() + 1);
        let (seq_lease, leased) = SeqLease::open(&fs, dir, found_seq).await?;
        let next_seq = found_seq.max(leased);
        // In place (see `seq_lease`): no new space needed, so a full disk does not stop a start.
        let seq_lease_end = next_seq + crate::seq_lease::LEASE_SPAN;
        seq_lease.extend(seq_lease_end).await?;
        let mut report = RecoveryReport {
            records: replayed,
            segments: log.segments,
            tables: version.tables().count(),
            next_seq,
            torn_tail: log.torn_tail,
            wal_ready: std::time::Duration::ZERO,
        };
        let recycle = Arc::new(RecyclePool::new(
            config.wal_recycle_segments,
            log.first_new_segment,
        ));
        let options = WalOptions::for_store(config, dir.clone(), recycle.clone());
        let wal = WalWriter::start(fs.clone(), options, log.position, next_seq);
        let preparing = fs.now();
        match wal.prepare().await {
            Ok(()) => {}
            // A full disk or no descriptor left: start anyway (reads work), and let the first
            // write try again (and answer 507 or 503 if it still cannot).
            Err(error) if error.is_transient() => {
                tracing::warn!("the WAL segment for the first write is not ready: {error}");
            }
            Err(error) => return Err(error),
        }
        report.wal_ready = fs.now().saturating_duration_since(preparing);

        let readers = TableReaders::new(fs.clone(), config.block_cache_bytes, config.max_open_tables);
        for table in version.tables() {
            readers.open(table).await?;
        }
        let version = Arc::new(version);
        let (events, receiver) = mpsc::unbounded_channel();
        let background = Background::spawn(
            fs.clone(),
            BackgroundOptions {
                dir: dir.clone(),
                policy: Policy::for_config(config),
                target_file_bytes: config.target_file_bytes(),
                write_bytes_per_sec: config.background_write_bytes_per_sec,
                io_bytes: config.background_io_bytes,
                recycle,
                compression: config.compression,
            },
            version.clone(),
            events,
        )?;
        let engine = Rc::new(Engine {
            fs: fs.clone(),
            config: config.clone(),
            wal,
            pending: RefCell::new(HashMap::new()),
            unsettled_seqs: RefCell::new(std::collections::BTreeSet::new()),
            snapshots: RefCell::new(super::scan::Snapshots::new()),
            memtables: RefCell::new(Memtables::new(memtable)),
            version: RefCell::new(version),
            version_changes: Cell::new(0),
            readers,
            background_status: background.status().clone(),
            background: RefCell::new(Some(background)),
            progress: Notify::new(),
            background_failure: RefCell::new(None),
            background_no_space: RefCell::new(None),
            stalls: RefCell::default(),
            work: crate::metrics::WorkStats::default(),
            seq_lease,
            seq_lease_end: Cell::new(seq_lease_end),
            seq_lease_extending: Cell::new(false),
            seq_lease_retry_at: Cell::new(0),
            closing: Cell::new(false),
            replicated_next: Cell::new(None),
            _lock: lock,
        });
        drop(fs.spawn(run_events(Rc::downgrade(&engine), receiver)));
        // A replay larger than a memtable goes straight to a table.
        if engine.memtables.borrow().active_bytes() >= config.memtable_bytes {
            engine.freeze();
        }
        Ok((engine, report))
    }
}

/// Loads every table the manifest names and checks it against what the manifest recorded.
async fn load_tables<F: FileSystem>(
    fs: &F,
    config: &StoreConfig,
    manifest: &ManifestState,
) -> Result<Version> {
    let mut edit = VersionEdit {
        flushed_seq: Some(manifest.flushed_seq),
        first_live_wal_segment: Some(manifest.first_live_wal_segment),
        next_file_number: Some(manifest.next_file_number),
        ..VersionEdit::default()
    };
    for record in &manifest.tables {
        let path = FileKind::Table(record.number).path(&config.data_dir);
        let table = TableMeta::load(fs, &path, record.number).await?;
        let matches = table.file_bytes == record.file_bytes
            && table.entry_count() == record.entry_count
            && table.smallest == record.smallest
            && table.largest == record.largest;
        if !matches {
            return Err(Error::sst_corruption(
                &path,
                0,
                format!(
                    "the table ({} bytes, {} entries) is not the one the manifest names ({} bytes, {} entries, keys {:?}..{:?})",
                    table.file_bytes,
                    table.entry_count(),
                    record.file_bytes,
                    record.entry_count,
                    record.smallest,
                    record.largest
                ),
            ));
        }
        edit.added.push((record.level, table));
    }
    Version::default()
        .try_apply(&edit)
        .map_err(|reason| Error::manifest_corruption(manifest::manifest_path(&config.data_dir), 0, reason))
}

/// Removes tables the manifest does not name and unfinished temporary files: leftovers of a flush,
/// compaction or manifest rewrite that a crash interrupted, or of a retired table whose deletion had not run.
/// Also moves the next file number past every table file found.
async fn remove_unnamed_files<F: FileSystem>(
    fs: &F,
    config: &StoreConfig,
    manifest: &ManifestState,
    version: &mut Version,
) -> Result<()> {
    let dir = &config.data_dir;
    let live: HashSet<u64> = version.tables().map(|table| table.number).collect();
    let paths = fs.list_dir(dir).context("list", dir)?;
    let tables = paths
        .iter()
        .filter(|path| matches!(FileKind::of_path(path), Some(FileKind::Table(_))))
        .count();
    if manifest.edits == 0 && tables > 0 {
        // Tables are only ever written after the manifest exists: a missing manifest with tables
        // beside it was lost, and deleting the tables as unnamed would lose their data too.
        return Err(Error::manifest_corruption(
            manifest::manifest_path(dir),
            0,
            format!("the manifest is missing but {tables} SST files are in the directory; refusing to start (restore the manifest, or move the tables away to start empty)"),
        ));
    }
    for path in paths {
        let leftover = match FileKind::of_path(&path) {
            Some(FileKind::Table(number) | FileKind::TableTmp(number)) => {
                version.next_file_number = version.next_file_number.max(number + 1);
                !live.contains(&number)
            }
            Some(FileKind::ManifestTmp | FileKind::SeqLeaseTmp) => true,
            // The manifest, the lock, and WAL segments (recovery already removed the retired
            // ones and unfinished pre-writes); files the store never writes are left alone.
            Some(
                FileKind::Manifest
                | FileKind::SeqLease
                | FileKind::Lock
                | FileKind::WalSegment(_)
                | FileKind::WalSegmentTmp(_),
            )
            | None => false,
        };
        if leftover {
            fs.remove(&path).await.context("remove", &path)?;
        }
    }
    Ok(())
}

/// Creates the data directory and its missing parents, and syncs the parent of each one it
/// created: a directory's entry lives in its parent, and until that is synced a power loss can
/// take the new directory, with everything acknowledged into it since.
async fn create_data_dir<F: FileSystem>(fs: &F, dir: &Path) -> Result<()> {
    let created = fs.create_dir_all(dir).await.context("create directory", dir)?;
    for new_dir in &created {
        let parent = match new_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        fs.sync_dir(parent).await.sync_context(parent)?;
    }
    Ok(())
}
