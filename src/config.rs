//! Server options and the fsync strategy: data only, no behaviour beyond parsing.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// When a write is acknowledged relative to the WAL sync that makes it durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncStrategy {
    /// Every write gets its own WAL write and sync before it is acknowledged; no sharing.
    Always,
    /// Acknowledged after the sync that covers it; concurrent writes share one sync.
    Group,
    /// Acknowledged once the WAL write completes; the WAL is synced every `interval_ms`.
    Periodic { interval_ms: u64 },
    /// Acknowledged once the WAL write completes; never synced explicitly.
    Never,
}

impl FsyncStrategy {
    /// Whether an acknowledged write survives a machine crash (not only a process crash).
    pub fn syncs_before_ack(self) -> bool {
        self.durability().syncs_before_ack()
    }

    /// The class a write gets when its request names none.
    pub fn durability(self) -> Durability {
        match self {
            FsyncStrategy::Always => Durability::Always,
            FsyncStrategy::Group => Durability::Group,
            FsyncStrategy::Periodic { .. } => Durability::Periodic,
            FsyncStrategy::Never => Durability::Never,
        }
    }

    /// How often the WAL is synced while `periodic` writes are unsynced: the interval of
    /// `periodic:MS`, one second under any other strategy (for requests that ask for `periodic`).
    pub fn periodic_interval(self) -> Duration {
        match self {
            FsyncStrategy::Periodic { interval_ms } => Duration::from_millis(interval_ms),
            _ => DEFAULT_PERIODIC_INTERVAL,
        }
    }
}

/// The periodic sync interval when `--fsync` does not give one.
pub const DEFAULT_PERIODIC_INTERVAL: Duration = Duration::from_secs(1);

/// How durable one write is when it is acknowledged: a request's `?durability=`, else the class of
/// the server's `--fsync` strategy; `--min-durability` is a floor. Ordered from weakest to
/// strongest, so that the floor is a `max`.
///
/// All classes share one WAL: a durable write makes every record before it durable too, so a
/// weaker write acknowledged before a stronger one is as durable as that one once it is
/// acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledged once its WAL write completes; made durable only by a later durable write or a
    /// clean shutdown.
    Never,
    /// Acknowledged once its WAL write completes; the WAL is synced within the periodic interval.
    Periodic,
    /// Acknowledged after the durable WAL write that covers it, shared with concurrent writes.
    Group,
    /// Acknowledged after a durable WAL write that ends with it: no later write shares it.
    Always,
}

impl Durability {
    /// Every class, weakest first.
    pub const ALL: [Durability; 4] = [
        Durability::Never,
        Durability::Periodic,
        Durability::Group,
        Durability::Always,
    ];

    /// Whether an acknowledged write of this class survives a power loss.
    pub fn syncs_before_ack(self) -> bool {
        self >= Durability::Group
    }

    /// The name used in requests, headers and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Always => "always",
            Durability::Group => "group",
            Durability::Periodic => "periodic",
            Durability::Never => "never",
        }
    }
}

impl FromStr for FsyncStrategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "always" => Ok(FsyncStrategy::Always),
            "group" => Ok(FsyncStrategy::Group),
            "never" => Ok(FsyncStrategy::Never),
            _ => {
                let interval = text.strip_prefix("periodic:").ok_or_else(|| {
                    format!("unknown fsync strategy {text:?}: expected always, group, periodic:MS or never")
                })?;
                let interval_ms: u64 = interval.parse().map_err(|_| {
                    format!("periodic:MS needs a whole number of milliseconds, got {interval:?}")
                })?;
                if interval_ms == 0 {
                    return Err("periodic:MS needs at least 1 ms".to_string());
                }
                Ok(FsyncStrategy::Periodic { interval_ms })
            }
        }
    }
}

impl fmt::Display for FsyncStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncStrategy::Always => write!(f, "always"),
            FsyncStrategy::Group => write!(f, "group"),
            FsyncStrategy::Periodic { interval_ms } => write!(f, "periodic:{interval_ms}"),
            FsyncStrategy::Never => write!(f, "never"),
        }
    }
}

/// How WAL bytes reach the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalIo {
    /// `O_DIRECT`: a completed write is in the device, past the page cache, so a killed process
    /// loses nothing it wrote; a power loss can still take what no sync covered.
    Direct,
    /// Through the page cache: a completed write survives a killed process (the kernel holds it)
    /// but not a power loss until a sync writes it back; syncs do that writeback.
    Buffered,
}

/// How the WAL makes a write durable when the fsync strategy asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncCall {
    /// `fdatasync`: the data and the metadata needed to read it back (segments are pre-written, so
    /// their size never changes), then a device cache flush.
    Fdatasync,
    /// `fsync`: as `fdatasync`, plus every other inode change (mtime), which costs a journal commit.
    Fsync,
    /// `O_DSYNC` for durable writes: a durable batch is written through a second file descriptor
    /// of the segment opened `O_DSYNC`, and returns only once it is durable (a FUA write or a write
    /// followed by a flush, decided by the kernel), with no separate sync call, when everything
    /// before it is durable already. A FUA write covers only its own bytes, so otherwise (and for
    /// the periodic timer) the sync is an `fdatasync`.
    Dsync,
}

macro_rules! keyword_enum {
    ($type:ty, $what:literal, $($variant:path => $name:literal),+) => {
        impl FromStr for $type {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($name => Ok($variant),)+
                    _ => Err(format!(
                        "unknown {} {text:?}: expected one of {}",
                        $what,
                        [$($name),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($variant => $name,)+
                })
            }
        }
    };
}

impl SyncCall {
    /// What the server uses unless told otherwise: `O_DSYNC` writes for durable writes (the same
    /// flush as `fdatasync`, without the extra round trip through the ring). Writes that need not
    /// be durable go through a file opened without it, so `periodic` and `never` never wait for
    /// the disk.
    pub const DEFAULT: SyncCall = SyncCall::Dsync;
}

keyword_enum!(
    Durability,
    "durability class",
    Durability::Always => "always",
    Durability::Group => "group",
    Durability::Periodic => "periodic",
    Durability::Never => "never"
);
keyword_enum!(WalIo, "WAL I/O mode", WalIo::Direct => "direct", WalIo::Buffered => "buffered");
keyword_enum!(
    SyncCall,
    "sync call",
    SyncCall::Fdatasync => "fdatasync",
    SyncCall::Fsync => "fsync",
    SyncCall::Dsync => "dsync"
);

/// Everything the store needs to open a data directory.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// The strategy, whose class a write gets when its request names none.
    pub fsync: FsyncStrategy,
    /// The weakest class a write gets, whatever its request asks for.
    pub min_durability: Durability,
    /// How often `periodic` writes are synced; `None`: the interval of `periodic:MS`, else 1 s.
    pub periodic_sync_interval: Option<Duration>,
    pub wal_io: WalIo,
    pub sync_call: SyncCall,
    pub wal_segment_bytes: u64,
    /// Upper bound on one group-commit batch (a single record larger than this still goes alone).
    pub wal_batch_bytes: usize,
    /// Retired WAL segments kept to be renamed and reused instead of pre-writing new ones with
    /// zeros (0: every retired segment is deleted).
    pub wal_recycle_segments: usize,
    pub memtable_bytes: u64,
    pub compaction_trigger: usize,
    /// Level-0 tables (flushed or being flushed) at which each write is delayed, so that
    /// compaction catches up (`RocksDB`'s `level0_slowdown_writes_trigger`).
    pub l0_slowdown_tables: usize,
    /// Level-0 tables at which writes stop until compaction brings the count down (as
    /// `RocksDB`'s `level0_stop_writes_trigger`): level 0, and with it the tables a read may check, never
    /// grows past it.
    pub l0_stop_tables: usize,
    pub block_cache_bytes: usize,
    /// Table files kept open for reads; others are opened per read. The server derives it from
    /// the open-file limit (`crate::fd_budget`).
    pub max_open_tables: std::num::NonZeroUsize,
    /// Pace of flush and compaction writes; 0 is unlimited.
    pub background_write_bytes_per_sec: u64,
    /// Size of each flush or compaction read and write (one in flight).
    pub background_io_bytes: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// How long a scan's snapshot is kept after its last page for the next one
    /// (`engine::scan`).
    pub scan_snapshot_ttl: Duration,
    /// How flushes and compactions store SST data blocks (`--compression`).
    pub compression: crate::sst::Compression,
}

/// Writes per second while level 0 is at its slowdown count, shared by all writers: each write
/// is delayed to keep to this pace (leveldb delays each write by 1 ms; one shared pace does the
/// same for many connections).
pub const L0_SLOWDOWN_WRITES_PER_SEC: u64 = 1000;

impl StoreConfig {
    /// The level-0 limits the server uses unless told otherwise: the defaults of `RocksDB`, 20
    /// and 36, raised with a compaction trigger that high.
    pub fn default_l0_limits(compaction_trigger: usize) -> (usize, usize) {
        let slowdown = compaction_trigger.max(20);
        (slowdown, (compaction_trigger + 16).max(36))
    }

    /// Defaults suitable for tests. The WAL syncs with explicit `fdatasync` calls (not the
    /// server's `O_DSYNC` default for `group`), so that the fault layer can fail and count them.
    pub fn for_dir(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            fsync: FsyncStrategy::Group,
            min_durability: Durability::Never,
            periodic_sync_interval: None,
            wal_io: WalIo::Direct,
            // The server's default, so that the library's users and `lsm_load` run what it runs.
            sync_call: SyncCall::DEFAULT,
            wal_segment_bytes: 64 << 20,
            wal_batch_bytes: 1 << 20,
            wal_recycle_segments: 4,
            memtable_bytes: 64 << 20,
            compaction_trigger: 4,
            l0_slowdown_tables: 20,
            l0_stop_tables: 36,
            block_cache_bytes: 64 << 20,
            max_open_tables: std::num::NonZeroUsize::new(1000).expect("not zero"),
            background_write_bytes_per_sec: 256 << 20,
            background_io_bytes: 64 << 10,
            max_key_bytes: 4 << 10,
            max_value_bytes: 1 << 20,
            scan_snapshot_ttl: Duration::from_secs(60),
            compression: crate::sst::Compression::Lz4,
        }
    }
}

impl StoreConfig {
    /// Checks that the options can work together; [`crate::engine::Engine::open`] calls it, so
    /// every user of the library gets the same checks as the command line.
    pub fn validate(&self) -> Result<(), crate::Error> {
        const BLOCK: u64 = crate::io::BLOCK_BYTES as u64;
        let invalid = |reason: String| Err(crate::Error::InvalidConfig { reason });
        if self.wal_segment_bytes == 0 || !self.wal_segment_bytes.is_multiple_of(BLOCK) {
            return invalid(format!(
                "WAL segment size {} is not a positive multiple of 4096",
                self.wal_segment_bytes
            ));
        }
        // Every record must fit in a segment with room to spare.
        let largest_record = (self.max_key_bytes + self.max_value_bytes + 64) as u64;
        if self.wal_segment_bytes < 2 * largest_record {
            return invalid(format!(
                "WAL segment size {} is too small for keys of {} and values of {} bytes: it must be at least {}",
                self.wal_segment_bytes,
                self.max_key_bytes,
                self.max_value_bytes,
                (2 * largest_record).next_multiple_of(BLOCK)
            ));
        }
        // Lengths are stored as u32 in every format (see `coding::len_u32`).
        if self.max_key_bytes > MAX_KEY_OR_VALUE_BYTES || self.max_value_bytes > MAX_KEY_OR_VALUE_BYTES {
            return invalid(format!(
                "keys of {} and values of {} bytes: neither may exceed {MAX_KEY_OR_VALUE_BYTES}",
                self.max_key_bytes, self.max_value_bytes
            ));
        }
        if self.wal_batch_bytes == 0 {
            return invalid("the WAL batch size is 0".to_string());
        }
        if self.memtable_bytes < BLOCK {
            return invalid(format!("memtable size {} is below 4096", self.memtable_bytes));
        }
        if !(2..=64).contains(&self.compaction_trigger) {
            return invalid(format!(
                "compaction trigger {} is outside 2 to 64",
                self.compaction_trigger
            ));
        }
        if !(self.compaction_trigger <= self.l0_slowdown_tables
            && self.l0_slowdown_tables <= self.l0_stop_tables
            && self.compaction_trigger < self.l0_stop_tables)
        {
            return invalid(format!(
                "level-0 limits: the compaction trigger {}, the slowdown {} and the stop {} must grow in that order, the stop above the trigger (at the stop, only a compaction lets writes go on)",
                self.compaction_trigger, self.l0_slowdown_tables, self.l0_stop_tables
            ));
        }
        if let (FsyncStrategy::Periodic { interval_ms }, Some(interval)) =
            (self.fsync, self.periodic_sync_interval)
        {
            if Duration::from_millis(interval_ms) != interval {
                return invalid(format!(
                    "two periodic sync intervals: {interval_ms} ms from the fsync strategy and {interval:?}"
                ));
            }
        }
        if self
            .periodic_sync_interval
            .is_some_and(|interval| interval < Duration::from_millis(1))
        {
            return invalid("the periodic sync interval is below 1 ms".to_string());
        }
        let io_bytes = self.background_io_bytes as u64;
        if !(BLOCK..=(8 << 20)).contains(&io_bytes) || !io_bytes.is_multiple_of(BLOCK) {
            return invalid(format!(
                "background I/O size {io_bytes} is not a multiple of 4096 between 4 KiB and 8 MiB"
            ));
        }
        Ok(())
    }

    /// How often `periodic` writes are synced.
    pub fn periodic_interval(&self) -> Duration {
        self.periodic_sync_interval
            .unwrap_or_else(|| self.fsync.periodic_interval())
    }

    /// The class a write gets: the one its request asked for, else the strategy's, and never
    /// below the floor.
    pub fn durability_for(&self, requested: Option<Durability>) -> Durability {
        requested
            .unwrap_or_else(|| self.fsync.durability())
            .max(self.min_durability)
    }

    /// Target size of level 1: what `compaction_trigger` full L0 files hold, so that an L0
    /// compaction rewrites about as much L1 data as it brings in.
    pub fn level1_bytes(&self) -> u64 {
        self.memtable_bytes
            .saturating_mul(self.compaction_trigger.max(1) as u64)
    }

    /// Compaction output files are cut at this size (half a memtable, at least 64 KiB), so that
    /// a level is several files and one compaction step moves only part of it.
    pub fn target_file_bytes(&self) -> u64 {
        (self.memtable_bytes / 2).max(64 << 10)
    }
}

/// The largest key or value a store can be configured for: lengths are u32 on disk.
pub const MAX_KEY_OR_VALUE_BYTES: usize = 1 << 30;

/// Growth factor between the target sizes of consecutive levels.
pub const LEVEL_RATIO: u64 = 10;

/// Limits the HTTP layer enforces before anything reaches the store.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub max_head_bytes: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// How long a request may take to arrive, from its first byte to its last, and an answer to
    /// be taken by the client. Past it the connection gets 408 (if a request was under way) and
    /// is closed.
    pub request_timeout: Duration,
    /// How long a connection may wait for the first byte of its next request.
    pub idle_timeout: Duration,
    /// Connections served at once; past it a new one is answered 503 and closed. `None`: no
    /// limit of its own (the server binary always sets one, from `crate::fd_budget`).
    pub max_connections: Option<usize>,
    /// Input and output buffer bytes all connections may hold together; past it, connections
    /// in the middle of a request wait before reading more.
    pub max_buffered_bytes: usize,
    /// Most ops in one `POST /batch` (more: 413).
    pub max_batch_ops: usize,
    /// Largest page a `GET /scan` gets (a larger `limit` is lowered to it).
    pub max_scan_limit: usize,
    /// Cluster mode: the largest Raft request body read (an append of many entries, a
    /// snapshot chunk); 0 on a single node.
    pub raft_body_bytes: usize,
}

impl HttpConfig {
    /// The largest request body worth reading: a value at the limit plus a key at the limit
    /// written entirely as `\uXXXX` escapes, plus the JSON punctuation around them.
    pub fn max_body_bytes(&self) -> usize {
        (self.max_value_bytes + 6 * self.max_key_bytes + 64).max(self.raft_body_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_strategy() {
        assert_eq!("always".parse(), Ok(FsyncStrategy::Always));
        assert_eq!("group".parse(), Ok(FsyncStrategy::Group));
        assert_eq!("never".parse(), Ok(FsyncStrategy::Never));
        assert_eq!(
            "periodic:250".parse(),
            Ok(FsyncStrategy::Periodic { interval_ms: 250 })
        );
        assert!("periodic:".parse::<FsyncStrategy>().is_err());
        assert!("periodic:0".parse::<FsyncStrategy>().is_err());
        assert!("sometimes".parse::<FsyncStrategy>().is_err());
        assert_eq!(
            FsyncStrategy::Periodic { interval_ms: 5 }.to_string(),
            "periodic:5"
        );
    }

    #[test]
    fn parses_wal_mechanisms() {
        assert_eq!("direct".parse(), Ok(WalIo::Direct));
        assert_eq!("buffered".parse(), Ok(WalIo::Buffered));
        assert_eq!("dsync".parse(), Ok(SyncCall::Dsync));
        assert_eq!(SyncCall::Fsync.to_string(), "fsync");
        let error = "osync".parse::<SyncCall>().unwrap_err();
        assert_eq!(
            error,
            "unknown sync call \"osync\": expected one of fdatasync, fsync, dsync"
        );
    }
}
