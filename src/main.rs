//! Command line -> configuration -> [`ringkv::daemon::run`]. No logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ringkv::config::{Durability, FsyncStrategy, HttpConfig, StoreConfig, SyncCall, WalIo};
use ringkv::logging::LogFormat;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ringkv: a persistent key-value server (LSM tree, `io_uring`, `O_DIRECT` WAL) with an HTTP API:
/// GET /get?key=K, POST /set {"key":K,"value":V}, DELETE /del?key=K.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Sizes take units: 65536, 64KiB, 64MiB, 1GiB (KB, MB, GB are powers of 1000). Every option can also come from the environment, as shown ([env: ...]); a flag on the command line wins."
)]
struct Cli {
    /// Address to serve on. The default keeps the server on this machine; 0.0.0.0:8081 exposes it.
    #[arg(long, env = "RINGKV_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,

    /// Directory holding the WAL, the SST files and the manifest. Created if missing; one server per
    /// directory (a second one exits with an error).
    #[arg(long, env = "RINGKV_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// When a write is acknowledged, unless its request asks otherwise (?durability=CLASS).
    /// always: after its own durable WAL write (no sharing). group: after the durable WAL write
    /// that covers it; concurrent writes share one. periodic:MS: once written to the WAL
    /// (`O_DIRECT`, so a killed process loses nothing), synced every MS ms; a power loss can take
    /// back up to MS ms of acknowledged writes. never: once written; synced only by a later
    /// durable write or at shutdown.
    #[arg(long, env = "RINGKV_FSYNC", default_value = "group", value_parser = parse_fsync)]
    fsync: FsyncStrategy,

    /// The weakest class a write gets: a request asking for less (?durability=never) gets this
    /// one (its answer's Durability header says so). Default: never (every request chooses).
    #[arg(long, env = "RINGKV_MIN_DURABILITY", default_value = "never", value_parser = parse_keyword::<Durability>)]
    min_durability: Durability,

    /// How often the WAL is synced while writes acknowledged as periodic are not durable
    /// (e.g. 200ms). Default: the MS of --fsync periodic:MS, else 1s.
    #[arg(long, env = "RINGKV_PERIODIC_SYNC_INTERVAL", value_parser = parse_interval)]
    periodic_sync_interval: Option<Duration>,

    /// How WAL writes reach the file. direct: `O_DIRECT` from aligned buffers, past the page cache;
    /// a completed write survives a killed process. buffered: through the page cache; also
    /// survives a killed process (the kernel holds the bytes), and the sync does the writeback.
    /// Neither survives a power loss without the sync that --fsync and --sync-call provide.
    #[arg(long, env = "RINGKV_WAL_IO", default_value = "direct", value_parser = parse_keyword::<WalIo>)]
    wal_io: WalIo,

    /// How the WAL is made durable. fdatasync: after each durable write, a separate call that
    /// flushes the data and the metadata needed to read it. fsync: also every other inode change
    /// (mtime). dsync: a durable write goes through an `O_DSYNC` descriptor and returns only once
    /// durable, with no separate call (the same flush, one round trip fewer: faster for always in
    /// BENCHMARKS.md); writes that need not be durable go through a plain one, and the periodic
    /// timer, or a durable write after them, uses fdatasync.
    #[arg(long, env = "RINGKV_SYNC_CALL", default_value_t = SyncCall::DEFAULT, value_parser = parse_keyword::<SyncCall>)]
    sync_call: SyncCall,

    /// Size of each pre-written WAL segment file; a multiple of 4096.
    #[arg(long, env = "RINGKV_WAL_SEGMENT_BYTES", default_value = "64MiB", value_parser = parse_segment_bytes)]
    wal_segment_bytes: u64,

    /// Upper bound on the bytes of one group-commit batch (one WAL write).
    #[arg(long, env = "RINGKV_WAL_BATCH_BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    wal_batch_bytes: usize,

    /// Retired WAL segments kept to be renamed and reused (their blocks are allocated already), so
    /// that new segments are pre-written with zeros only while the WAL grows; 0 deletes them.
    #[arg(long, env = "RINGKV_WAL_RECYCLE_SEGMENTS", default_value_t = 4)]
    wal_recycle_segments: usize,

    /// Memtable size at which it is frozen and flushed to an SST file (flushThreshold). While one frozen memtable
    /// waits for its flush, writes go on into the next; when that one is full too, they pause.
    #[arg(long, env = "RINGKV_MEMTABLE_BYTES", default_value = "64MiB", value_parser = parse_memtable_bytes)]
    memtable_bytes: u64,

    /// Number of level-0 SST files that triggers a compaction (`CompactionThreshold`); at least 2.
    #[arg(long, env = "RINGKV_COMPACTION_TRIGGER", default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=64))]
    compaction_trigger: usize,

    /// Level-0 tables at which writes are slowed to 1,000 per second until compaction catches
    /// up (default: 20, or the compaction trigger if higher).
    #[arg(long, env = "RINGKV_L0_SLOWDOWN_TABLES")]
    l0_slowdown_tables: Option<usize>,

    /// Level-0 tables at which writes stop until compaction catches up, so that level 0 (and
    /// the tables a read checks) stays bounded (default: 36, or the trigger plus 16).
    #[arg(long, env = "RINGKV_L0_STOP_TABLES")]
    l0_stop_tables: Option<usize>,

    /// Bytes of SST data blocks kept in memory for reads.
    #[arg(long, env = "RINGKV_BLOCK_CACHE_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    block_cache_bytes: usize,

    /// Pace of flush I/O and, separately, of compaction I/O (reads and writes), in bytes per
    /// second (0: unlimited), so that background work leaves the disk to WAL syncs and reads.
    #[arg(long, env = "RINGKV_BACKGROUND_WRITE_BYTES_PER_SEC", default_value = "256MiB", value_parser = parse_bytes_u64)]
    background_write_bytes_per_sec: u64,

    /// Size of each flush and compaction read and write (one in flight; a multiple of 4096). A
    /// point read that arrives behind one waits for all of it: 64 KiB kept GET p99 during a
    /// compaction within 2x of idle where 1 MiB made it 3-5x (BENCHMARKS.md).
    #[arg(long, env = "RINGKV_BACKGROUND_IO_BYTES", default_value = "64KiB", value_parser = parse_io_bytes)]
    background_io_bytes: usize,

    /// Largest key accepted, in bytes (larger: 413).
    #[arg(long, env = "RINGKV_MAX_KEY_BYTES", default_value = "4KiB", value_parser = parse_bytes)]
    max_key_bytes: usize,

    /// Largest value accepted, in bytes of JSON text (larger: 413).
    #[arg(long, env = "RINGKV_MAX_VALUE_BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    max_value_bytes: usize,

    /// Largest request line plus headers, in bytes (larger: 431).
    #[arg(long, env = "RINGKV_MAX_HEAD_BYTES", default_value = "16KiB", value_parser = parse_bytes)]
    max_head_bytes: usize,

    /// How long a request may take to arrive, first byte to last, and an answer to be taken by
    /// the client (e.g. 10s, 500ms). Past it: 408 if a request was under way, and the connection
    /// is closed.
    #[arg(long, env = "RINGKV_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    request_timeout: Duration,

    /// Connections served at once; past it a new one is answered 503 and closed. Default: what
    /// the open-file limit leaves after the storage side's reserve (stated in the start-up
    /// line); more than that is refused at start-up.
    #[arg(long, env = "RINGKV_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,

    /// Bytes of request and answer buffers all connections may hold together. Past it, a
    /// connection in the middle of a request waits before reading more (within its
    /// --request-timeout), so that many large or slow requests cannot exhaust memory.
    #[arg(long, env = "RINGKV_MAX_BUFFERED_BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    max_buffered_bytes: usize,

    /// Most ops one POST /batch may hold (more: 413). Its body is bounded like any request's,
    /// by --max-value-bytes and --max-key-bytes.
    #[arg(long, env = "RINGKV_MAX_BATCH_OPS", default_value = "1000", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_batch_ops: u64,

    /// Largest `limit` a GET /scan may ask for (larger ones are lowered to it); a page also ends
    /// at about 1 MiB of keys and values.
    #[arg(long, env = "RINGKV_MAX_SCAN_LIMIT", default_value = "1000", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_scan_limit: u64,

    /// How flushes and compactions store SST data blocks: lz4 (a block is kept compressed
    /// where that saves at least 12.5%), or none. Tables already written keep theirs until
    /// compaction rewrites them.
    #[arg(long, env = "RINGKV_COMPRESSION", default_value = "lz4", value_parser = parse_keyword::<ringkv::sst::Compression>)]
    compression: ringkv::sst::Compression,

    /// Cluster mode: this node's id among --peers. Without it the server is a single node.
    #[arg(long, env = "RINGKV_NODE_ID", requires = "peers")]
    node_id: Option<u64>,

    /// Cluster mode: every member's client address, this node's included, as
    /// ID=HOST:PORT,ID=HOST:PORT,... Raft's messages go to the same ports, under /raft/. Form the
    /// cluster once with POST /cluster/init on one node (docs/replication.md).
    #[arg(long, env = "RINGKV_PEERS", requires = "node_id")]
    peers: Option<String>,

    /// Cluster mode: a follower that hears from no leader for this long (a random time between it
    /// and twice it) stands for election.
    #[arg(long, env = "RINGKV_RAFT_ELECTION_TIMEOUT", default_value = "750ms", value_parser = parse_timeout)]
    raft_election_timeout: Duration,

    /// Cluster mode: how often the leader sends heartbeats (well below the election timeout);
    /// also how long an append may take before the leader sends it again.
    #[arg(long, env = "RINGKV_RAFT_HEARTBEAT", default_value = "150ms", value_parser = parse_timeout)]
    raft_heartbeat: Duration,

    /// Cluster mode: a snapshot (every live key, in memory) is built after this many applied
    /// entries, and the log before it dropped from memory.
    #[arg(long, env = "RINGKV_RAFT_SNAPSHOT_EVERY", default_value_t = 100_000)]
    raft_snapshot_every: u64,

    /// Cluster mode: log entries kept behind a snapshot, so that a follower a little behind
    /// catches up from the log instead of by a whole snapshot.
    #[arg(long, env = "RINGKV_RAFT_CATCHUP_ENTRIES", default_value_t = 10_000)]
    raft_catchup_entries: u64,

    /// How long a scan's snapshot is kept after its last page, for the cursor of the next one
    /// (e.g. 60s). It holds the tables and memtables the scan reads, so that later pages see
    /// the first page's snapshot; a cursor used later gets 410.
    #[arg(long, env = "RINGKV_SCAN_SNAPSHOT_TTL", default_value = "60s", value_parser = parse_timeout)]
    scan_snapshot_ttl: Duration,

    /// Which log events are written: error, warn, info, debug or trace, or a `tracing` filter
    /// (ringkv=debug,warn). `RUST_LOG`, when set, takes precedence. Events, never one line per
    /// request.
    #[arg(long, env = "RINGKV_LOG_LEVEL", default_value = "info")]
    log_level: String,

    /// text: one line per event (the start-up line stays as it is, "ringkv listening on ...").
    /// json: one JSON object per line.
    #[arg(long, env = "RINGKV_LOG_FORMAT", default_value = "text", value_parser = parse_keyword::<LogFormat>)]
    log_format: LogFormat,

    /// How long a connection may wait for its next request before it is closed.
    #[arg(long, env = "RINGKV_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_timeout)]
    idle_timeout: Duration,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| format!("{text:?}: {error}"))?;
    if duration < Duration::from_millis(1) {
        return Err(format!("{text:?} is below 1ms"));
    }
    Ok(duration)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| format!("{text:?}: {error}"))?;
    if duration < Duration::from_millis(10) {
        return Err(format!("{text:?} is below the 10ms the reaper can measure"));
    }
    Ok(duration)
}

fn parse_fsync(text: &str) -> Result<FsyncStrategy, String> {
    text.parse()
}

fn parse_keyword<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T, String> {
    text.parse()
}

/// A size with an optional unit, binary or decimal (`65536`, `64KiB`, `64MiB`, `1GiB`, `1GB`),
/// parsed by the `parse-size` crate.
fn parse_bytes_u64(text: &str) -> Result<u64, String> {
    parse_size::parse_size(text)
        .map_err(|error| format!("not a size: {text:?} ({error}); e.g. 65536, 64KiB, 64MiB, 1GiB"))
}

fn parse_bytes(text: &str) -> Result<usize, String> {
    let bytes = parse_bytes_u64(text)?;
    usize::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
}

fn parse_segment_bytes(text: &str) -> Result<u64, String> {
    let bytes = parse_bytes_u64(text)?;
    if bytes == 0 || !bytes.is_multiple_of(4096) {
        return Err(format!("{bytes} is not a positive multiple of 4096"));
    }
    Ok(bytes)
}

fn parse_memtable_bytes(text: &str) -> Result<u64, String> {
    let bytes = parse_bytes_u64(text)?;
    if bytes < 4096 {
        return Err(format!("{bytes} is below 4096"));
    }
    Ok(bytes)
}

fn parse_io_bytes(text: &str) -> Result<usize, String> {
    let bytes = parse_bytes(text)?;
    if !(4096..=(8 << 20)).contains(&bytes) || !bytes.is_multiple_of(4096) {
        return Err(format!(
            "{bytes} is not a multiple of 4096 between 4 KiB and 8 MiB"
        ));
    }
    Ok(bytes)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = ringkv::logging::init(&cli.log_level, cli.log_format) {
        eprintln!("ringkv: {error}");
        return ExitCode::FAILURE;
    }
    let purge_delay_ms = ringkv::sys::keep_freed_memory_for_reuse();
    tracing::debug!("allocator purge delay {purge_delay_ms} ms (-1: freed memory is kept for reuse)");
    let store = StoreConfig {
        data_dir: cli.data_dir,
        fsync: cli.fsync,
        min_durability: cli.min_durability,
        periodic_sync_interval: cli.periodic_sync_interval,
        wal_io: cli.wal_io,
        sync_call: cli.sync_call,
        wal_segment_bytes: cli.wal_segment_bytes,
        wal_batch_bytes: cli.wal_batch_bytes,
        wal_recycle_segments: cli.wal_recycle_segments,
        memtable_bytes: cli.memtable_bytes,
        compaction_trigger: cli.compaction_trigger,
        l0_slowdown_tables: cli
            .l0_slowdown_tables
            .unwrap_or(StoreConfig::default_l0_limits(cli.compaction_trigger).0),
        l0_stop_tables: cli
            .l0_stop_tables
            .unwrap_or(StoreConfig::default_l0_limits(cli.compaction_trigger).1),
        block_cache_bytes: cli.block_cache_bytes,
        // Set by `daemon::run` from the open-file limit.
        max_open_tables: StoreConfig::for_dir(".").max_open_tables,
        background_write_bytes_per_sec: cli.background_write_bytes_per_sec,
        background_io_bytes: cli.background_io_bytes,
        scan_snapshot_ttl: cli.scan_snapshot_ttl,
        compression: cli.compression,
        max_key_bytes: cli.max_key_bytes,
        max_value_bytes: cli.max_value_bytes,
    };
    // Checked again by `Engine::open`; here it fails before the port is taken.
    if let Err(error) = store.validate() {
        tracing::error!("{error}");
        return ExitCode::FAILURE;
    }
    let http = HttpConfig {
        listen: cli.listen,
        max_head_bytes: cli.max_head_bytes,
        max_key_bytes: cli.max_key_bytes,
        max_value_bytes: cli.max_value_bytes,
        request_timeout: cli.request_timeout,
        idle_timeout: cli.idle_timeout,
        max_buffered_bytes: cli.max_buffered_bytes,
        max_batch_ops: usize::try_from(cli.max_batch_ops).unwrap_or(usize::MAX),
        max_scan_limit: usize::try_from(cli.max_scan_limit).unwrap_or(usize::MAX),
        max_connections: cli
            .max_connections
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        raft_body_bytes: if cli.node_id.is_some() {
            ringkv::cluster::network::RAFT_BODY_BYTES
        } else {
            0
        },
    };
    let cluster = match (cli.node_id, &cli.peers) {
        (Some(node_id), Some(peers)) => match ringkv::cluster::ClusterConfig::parse_peers(peers) {
            Ok(peers) => Some(ringkv::cluster::ClusterConfig {
                node_id,
                peers,
                election_timeout: (cli.raft_election_timeout, cli.raft_election_timeout * 2),
                heartbeat_interval: cli.raft_heartbeat,
                snapshot_every: cli.raft_snapshot_every,
                catchup_entries: cli.raft_catchup_entries,
            }),
            Err(error) => {
                tracing::error!("--peers: {error}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    match ringkv::daemon::run(store, http, cluster) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn sizes_take_units_and_checks_still_apply() {
        assert_eq!(parse_bytes_u64("65536"), Ok(65536));
        assert_eq!(parse_bytes_u64("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes_u64("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes_u64("1GB"), Ok(1_000_000_000));
        assert!(parse_bytes_u64("lots").unwrap_err().contains("64MiB"));
        assert_eq!(parse_segment_bytes("4MiB"), Ok(4 << 20));
        assert!(parse_segment_bytes("1000").is_err());
        assert!(parse_memtable_bytes("1KiB").is_err());
        assert_eq!(parse_io_bytes("64KiB"), Ok(64 << 10));
        assert!(parse_io_bytes("16MiB").is_err());
    }

    #[test]
    fn every_default_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["ringkv"]).unwrap();
        assert_eq!(cli.memtable_bytes, 64 << 20);
        assert_eq!(cli.max_buffered_bytes, 256 << 20);
    }
}
