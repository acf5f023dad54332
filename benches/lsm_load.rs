//! The LSM benchmark behind BENCHMARKS.md ("LSM: 10 million keys"): loads N keys (16-byte keys,
//! 100-byte values, random order) through the engine in this process on the real `io_uring` ring
//! and the real background ring, waits for compaction to finish, then measures random reads idle,
//! then overwrites a part of the keys and measures random reads while the resulting compaction
//! runs. Reports ops/s and latency percentiles (HDR histograms, closed loop: each task sends its
//! next operation when the previous one returns), write amplification from /proc/self/io, space
//! amplification from the data directory, and peak RSS (`VmHWM`).
//!
//! `cargo bench --bench lsm_load -- [--keys N] [--dir PATH] [--reads N] [--overwrites N]
//!  [--writers N] [--readers N] [--memtable-bytes B] [--block-cache-bytes B]
//!  [--background-write-bytes-per-sec B] [--background-io-bytes B] [--fsync STRATEGY]
//!  [--values padded|json|random] [--compression lz4|none] [--wal-io direct|buffered]`
//! (`--fsync` takes the server's strategies: `never`, `group` (the default), `always`, ...;
//! `--values`: the 100-byte values: a zero-padded number (the default, compresses ~10x), JSON
//! documents with names, cities and words (as real documents compress), or random
//! alphanumerics (they do not))
//! Defaults: 10,000,000 keys in /var/tmp (must be a file system with `O_DIRECT`: not tmpfs).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv::config::{FsyncStrategy, StoreConfig};
use ringkv::engine::Engine;
use ringkv::io::UringFs;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;

struct Options {
    keys: u64,
    dir: PathBuf,
    reads: u64,
    overwrites: u64,
    writers: usize,
    readers: usize,
    memtable_bytes: u64,
    block_cache_bytes: usize,
    background_write_bytes_per_sec: u64,
    background_io_bytes: usize,
    fsync: FsyncStrategy,
    values: Values,
    compression: ringkv::sst::Compression,
    wal_io: ringkv::config::WalIo,
}

/// What the values look like (each is `VALUE_BYTES` of JSON text).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Values {
    Padded,
    Json,
    Random,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            keys: 10_000_000,
            dir: PathBuf::from("/var/tmp"),
            reads: 1_000_000,
            overwrites: 0,
            writers: 256,
            readers: 16,
            memtable_bytes: 64 << 20,
            block_cache_bytes: 64 << 20,
            background_write_bytes_per_sec: 256 << 20,
            background_io_bytes: 64 << 10,
            fsync: FsyncStrategy::Group,
            values: Values::Padded,
            compression: ringkv::sst::Compression::Lz4,
            wal_io: ringkv::config::WalIo::Direct,
        };
        let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
        while let Some(flag) = args.next() {
            let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
            let number = || {
                value
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("{flag}: not a number: {value}"))
            };
            match flag.as_str() {
                "--keys" => options.keys = number(),
                "--dir" => options.dir = PathBuf::from(&value),
                "--reads" => options.reads = number(),
                "--overwrites" => options.overwrites = number(),
                "--writers" => options.writers = ringkv::coding::to_usize(number()),
                "--readers" => options.readers = ringkv::coding::to_usize(number()),
                "--memtable-bytes" => options.memtable_bytes = number(),
                "--block-cache-bytes" => options.block_cache_bytes = ringkv::coding::to_usize(number()),
                "--background-write-bytes-per-sec" => options.background_write_bytes_per_sec = number(),
                "--background-io-bytes" => options.background_io_bytes = ringkv::coding::to_usize(number()),
                "--fsync" => {
                    options.fsync = value
                        .parse()
                        .unwrap_or_else(|error| panic!("--fsync {value}: {error}"));
                }
                "--values" => {
                    options.values = match value.as_str() {
                        "padded" => Values::Padded,
                        "json" => Values::Json,
                        "random" => Values::Random,
                        other => panic!("--values {other}: use padded, json or random"),
                    };
                }
                "--wal-io" => {
                    options.wal_io = value
                        .parse()
                        .unwrap_or_else(|error| panic!("--wal-io {value}: {error}"));
                }
                "--compression" => {
                    options.compression = value
                        .parse()
                        .unwrap_or_else(|error| panic!("--compression {value}: {error}"));
                }
                _ => panic!("unknown option {flag}"),
            }
        }
        options
    }
}

/// Key `i`: 16 hex digits of a bijective mix of `i`, so that keys arrive in random order.
fn key(i: u64) -> [u8; KEY_BYTES] {
    let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let mut out = [0u8; KEY_BYTES];
    out.copy_from_slice(format!("{x:016x}").as_bytes());
    out
}

/// Value `i` of pass `pass` (`VALUE_BYTES` of JSON text) in the run's kind.
fn value(kind: Values, pass: char, i: u64) -> Vec<u8> {
    let text = match kind {
        Values::Padded => format!("\"{pass}{i:0>width$}\"", width = VALUE_BYTES - 3),
        Values::Json => json_document(pass, i),
        Values::Random => {
            let mut rng = StdRng::seed_from_u64(mix(i) ^ u64::from(pass));
            let body: String = (0..VALUE_BYTES - 2)
                .map(|_| {
                    char::from(
                        b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
                            [rng.gen_range(0..64)],
                    )
                })
                .collect();
            format!("\"{body}\"")
        }
    };
    assert_eq!(text.len(), VALUE_BYTES, "{text}");
    text.into_bytes()
}

/// A user record as a JSON document: name, city and score from the key's hash, and a short bio
/// of common words, cut to `VALUE_BYTES`.
fn json_document(pass: char, i: u64) -> String {
    const FIRST: [&str; 16] = [
        "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Ken", "Dennis", "Leslie", "Frances", "John",
        "Margaret", "Niklaus", "Radia", "Tony", "Karen",
    ];
    const LAST: [&str; 16] = [
        "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Thompson", "Ritchie", "Lamport",
        "Allen", "Backus", "Hamilton", "Wirth", "Perlman", "Hoare", "Jones",
    ];
    const CITIES: [&str; 8] = [
        "London", "Paris", "Berlin", "Oslo", "Lisbon", "Zurich", "Vienna", "Prague",
    ];
    const WORDS: [&str; 16] = [
        "writes",
        "storage",
        "systems",
        "and",
        "likes",
        "fast",
        "durable",
        "logs",
        "trees",
        "the",
        "of",
        "with",
        "compilers",
        "networks",
        "papers",
        "coffee",
    ];
    let h = mix(i ^ (u64::from(pass) << 56));
    let mut text = format!(
        "{{\"id\":{i},\"name\":\"{} {}\",\"city\":\"{}\",\"score\":{},\"bio\":\"",
        FIRST[(h & 15) as usize],
        LAST[((h >> 4) & 15) as usize],
        CITIES[((h >> 8) & 7) as usize],
        (h >> 16) % 1000
    );
    let mut words = h >> 26;
    while text.len() < VALUE_BYTES - 2 {
        text.push_str(WORDS[(words & 15) as usize]);
        text.push(' ');
        words = words.rotate_right(4) ^ 0x9e37;
    }
    text.truncate(VALUE_BYTES - 2);
    text.push_str("\"}");
    text
}

/// A bijective mix of `x` (splitmix64's finaliser).
fn mix(x: u64) -> u64 {
    let mut x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// `field` of /proc/self/io (bytes this process caused to be read from or written to storage).
fn proc_io(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(": ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// `field` of /proc/self/status in KiB (`VmRSS`, `VmHWM`).
fn proc_status_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix(" kB")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("data dir")
        .map(|entry| entry.expect("entry").metadata().expect("metadata").len())
        .sum()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

type Store = Rc<Engine<UringFs>>;

/// Sets the keys `indexes` yields, from `writers` concurrent tasks.
async fn write_keys(
    engine: &Store,
    indexes: impl Iterator<Item = u64> + 'static,
    values: Values,
    pass: char,
    writers: usize,
    label: &str,
) -> (Histogram<u64>, Duration) {
    // An iterator, not a list: 10 million indexes would add 76 MiB to the RSS being measured.
    let queue = Rc::new(RefCell::new(indexes));
    let latencies = Rc::new(RefCell::new(histogram()));
    let done = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (engine, queue, latencies, done) =
                (engine.clone(), queue.clone(), latencies.clone(), done.clone());
            tokio_uring::spawn(async move {
                loop {
                    let next = queue.borrow_mut().next();
                    let Some(i) = next else { return };
                    let began = Instant::now();
                    engine.set(&key(i), &value(values, pass, i)).await.expect("set");
                    latencies
                        .borrow_mut()
                        .saturating_record(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX));
                    done.set(done.get() + 1);
                }
            })
        })
        .collect();
    let progress = {
        let (engine, done, label) = (engine.clone(), done.clone(), label.to_string());
        tokio_uring::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let stats = engine.stats();
                eprintln!(
                    "  {label}: {} done, {:.0}/s over the last 10 s, RSS {:.0} MiB, tables per level {:?}, frozen memtables {}",
                    done.get(),
                    (done.get() - last) as f64 / 10.0,
                    proc_status_kib("VmRSS") as f64 / 1024.0,
                    stats.tables_per_level,
                    stats.frozen_memtables
                );
                last = done.get();
            }
        })
    };
    for task in tasks {
        task.await.expect("writer task");
    }
    progress.abort();
    let elapsed = start.elapsed();
    let latencies = latencies.borrow().clone();
    (latencies, elapsed)
}

/// Random point reads from `readers` tasks until `count` are done or `keep_going` turns false.
/// Returns the latencies of reads that ran entirely while a compaction was running, those of
/// the others, and the elapsed time.
async fn read_keys(
    engine: &Store,
    values: Values,
    keys: u64,
    count: u64,
    readers: usize,
    keep_going: Rc<dyn Fn() -> bool>,
) -> (Histogram<u64>, Histogram<u64>, Duration) {
    let latencies = Rc::new(RefCell::new(histogram()));
    let compacting_latencies = Rc::new(RefCell::new(histogram()));
    let issued = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let tasks: Vec<_> = (0..readers)
        .map(|reader| {
            let (engine, latencies, issued, keep_going) = (
                engine.clone(),
                latencies.clone(),
                issued.clone(),
                keep_going.clone(),
            );
            let compacting_latencies = compacting_latencies.clone();
            tokio_uring::spawn(async move {
                let mut rng = StdRng::seed_from_u64(reader as u64);
                while issued.get() < count && keep_going() {
                    issued.set(issued.get() + 1);
                    let i = rng.gen_range(0..keys);
                    let compacting_before = engine.stats().compacting;
                    let began = Instant::now();
                    let found = engine.get(&key(i)).await.expect("get");
                    let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                    if compacting_before && engine.stats().compacting {
                        compacting_latencies.borrow_mut().saturating_record(micros);
                    } else {
                        latencies.borrow_mut().saturating_record(micros);
                    }
                    let found = found.unwrap_or_else(|| panic!("key {i} missing"));
                    assert!(
                        found.value == value(values, 'v', i) || found.value == value(values, 'o', i),
                        "key {i}: wrong value"
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("reader task");
    }
    let elapsed = start.elapsed();
    let latencies = latencies.borrow().clone();
    let compacting_latencies = compacting_latencies.borrow().clone();
    (latencies, compacting_latencies, elapsed)
}

fn line(name: &str, latencies: &Histogram<u64>, elapsed: Duration) -> String {
    format!(
        "| {name} | {} | {:.0} | {} | {} | {} | {} | {} |",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.99),
        latencies.value_at_quantile(0.999),
        latencies.max(),
        format_args!("{:.1} s", elapsed.as_secs_f64()),
    )
}

async fn run(options: Options) {
    let data_dir = options
        .dir
        .join(format!("ringkv-lsm-bench-{}", std::process::id()));
    let config = StoreConfig {
        fsync: options.fsync,
        memtable_bytes: options.memtable_bytes,
        block_cache_bytes: options.block_cache_bytes,
        background_write_bytes_per_sec: options.background_write_bytes_per_sec,
        background_io_bytes: options.background_io_bytes,
        compression: options.compression,
        wal_io: options.wal_io,
        ..StoreConfig::for_dir(&data_dir)
    };
    let user_bytes = options.keys * (KEY_BYTES + VALUE_BYTES) as u64;
    eprintln!(
        "lsm_load: values {:?}, compression {:?}, WAL I/O {:?}, fsync {}, sync call {}",
        options.values, options.compression, options.wal_io, config.fsync, config.sync_call
    );
    eprintln!(
        "lsm_load: {} keys ({:.0} MiB of keys and values) into {}, memtable {:.0} MiB, block cache {:.0} MiB, background I/O {:.0} MiB/s in {} KiB requests, {} writers, {} readers",
        options.keys,
        mib(user_bytes),
        data_dir.display(),
        mib(options.memtable_bytes),
        mib(options.block_cache_bytes as u64),
        mib(options.background_write_bytes_per_sec),
        options.background_io_bytes >> 10,
        options.writers,
        options.readers
    );
    let (engine, _) = Engine::open(UringFs, &config).await.expect("open");
    let written_before = proc_io("write_bytes");

    let (load, load_time) = write_keys(
        &engine,
        0..options.keys,
        options.values,
        'v',
        options.writers,
        "load",
    )
    .await;
    let settle_start = Instant::now();
    engine.settle_background().await.expect("settle");
    let settle_time = settle_start.elapsed();
    let written = proc_io("write_bytes") - written_before;
    let stats = engine.stats();
    let wal = engine.wal().stats();
    let (wal_written, wal_zeros) = (wal.written_bytes.get(), wal.zero_bytes.get());
    let (recycled, created) = (wal.segments_recycled.get(), wal.segments_created.get());
    let disk_bytes = dir_bytes(&data_dir);
    let rss_after_load = proc_status_kib("VmRSS");
    let hwm_after_load = proc_status_kib("VmHWM");

    // Let deletions of compacted-away files and the kernel's writeback finish first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let always = Rc::new(|| true);
    let (idle, _, idle_time) = read_keys(
        &engine,
        options.values,
        options.keys,
        options.reads,
        options.readers,
        always,
    )
    .await;
    let cache = engine.stats();

    // With compactions paused, overwrite a random part of the keys, enough for the trigger's worth
    // of L0 tables plus one; then resume compactions and read until the background ring is idle
    // again. Reads that ran entirely while a
    // compaction was running are "during compaction".
    let overwrites = if options.overwrites > 0 {
        options.overwrites
    } else {
        (config.compaction_trigger as u64 + 1) * options.memtable_bytes
            / (KEY_BYTES + VALUE_BYTES + 112) as u64
    };
    let mut rng = StdRng::seed_from_u64(7);
    let keys = options.keys;
    let overwrite = (0..overwrites).map(move |_| rng.gen_range(0..keys));
    engine.pause_compactions(true);
    let (overwrite_load, overwrite_time) = write_keys(
        &engine,
        overwrite,
        options.values,
        'o',
        options.writers,
        "overwrite",
    )
    .await;
    engine.flush().await.expect("flush");
    // The same tables as the reads during compaction will see at first, with no compaction
    // running: separates the cost of a deeper L0 from the interference of the compaction.
    let always = Rc::new(|| true);
    let (deep_l0, _, deep_l0_time) = read_keys(
        &engine,
        options.values,
        options.keys,
        options.reads / 2,
        options.readers,
        always,
    )
    .await;
    let deep_l0_tables = engine.stats().tables_per_level[0];
    engine.pause_compactions(false);
    let watched = engine.clone();
    let busy_since = Rc::new(Cell::new(Instant::now()));
    let busy = Rc::new(move || {
        // Keep reading while compaction runs or is due, and for 2 s after it last ran.
        let stats = watched.stats();
        if stats.compacting || stats.tables_per_level[0] >= config.compaction_trigger {
            busy_since.set(Instant::now());
        }
        busy_since.get().elapsed() < Duration::from_secs(2)
    });
    let (_, during, during_time) = read_keys(
        &engine,
        options.values,
        options.keys,
        u64::MAX,
        options.readers,
        busy,
    )
    .await;
    engine.settle_background().await.expect("settle");
    let peak_rss = proc_status_kib("VmHWM");
    let end = engine.stats();
    engine.close().await.expect("close");

    println!(
        "\n## lsm_load: {} keys, {KEY_BYTES}-byte keys, {VALUE_BYTES}-byte values\n",
        options.keys
    );
    println!("| phase | ops | ops/s | p50 µs | p99 µs | p99.9 µs | max µs | time |");
    println!("|---|---|---|---|---|---|---|---|");
    println!("{}", line("load (set, random order)", &load, load_time));
    println!("{}", line("get, idle", &idle, idle_time));
    println!("{}", line("overwrite (set)", &overwrite_load, overwrite_time));
    println!(
        "{}",
        line(
            &format!("get, {deep_l0_tables} L0 tables, compaction paused"),
            &deep_l0,
            deep_l0_time
        )
    );
    println!(
        "{}",
        line("get, during compaction (see note)", &during, during_time)
    );
    println!();
    println!(
        "- background work after the load: {:.1} s until no compaction was due",
        settle_time.as_secs_f64()
    );
    println!(
        "- write amplification: {:.2} ({:.0} MiB written to storage by the process (/proc/self/io write_bytes) for {:.0} MiB of keys and values; of it {:.0} MiB SST files from {} flushes and {} compactions)",
        written as f64 / user_bytes as f64,
        mib(written),
        mib(user_bytes),
        mib(stats.table_bytes_written),
        stats.flushes,
        stats.compactions
    );
    println!(
        "- WAL bytes per user byte: {:.2} ({:.0} MiB of batch writes and {:.0} MiB of zeros pre-written into {created} new segments; {recycled} segments recycled)",
        (wal_written + wal_zeros) as f64 / user_bytes as f64,
        mib(wal_written),
        mib(wal_zeros),
    );
    println!(
        "- space amplification: {:.2} ({:.0} MiB in the data directory, WAL segments included, after the load)",
        disk_bytes as f64 / user_bytes as f64,
        mib(disk_bytes)
    );
    println!(
        "- tables per level after the load: {:?}, bytes per level (MiB): {:?}",
        stats.tables_per_level,
        stats
            .bytes_per_level
            .iter()
            .map(|b| (mib(*b) * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    println!(
        "- RSS: {:.0} MiB after the load (peak so far {:.0} MiB); peak over the run {:.0} MiB; budget memtable + block cache + 10% of data = {:.0} MiB",
        rss_after_load as f64 / 1024.0,
        hwm_after_load as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        mib(options.memtable_bytes + options.block_cache_bytes as u64 + user_bytes / 10)
    );
    println!(
        "- block cache during idle reads: {} hits, {} misses; compactions over the run: {}",
        cache.block_cache_hits, cache.block_cache_misses, end.compactions
    );
    println!(
        "- GET p99 during compaction / idle: {:.2}; / with the same L0 tables and compaction paused: {:.2}",
        during.value_at_quantile(0.99) as f64 / idle.value_at_quantile(0.99).max(1) as f64,
        during.value_at_quantile(0.99) as f64 / deep_l0.value_at_quantile(0.99).max(1) as f64
    );
    println!(
        "- note: \"during compaction\" counts only the reads that started and ended while a compaction ran; its ops/s column is over the whole phase"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

fn main() {
    let options = Options::parse();
    // As the server does (`src/main.rs`): the engine's memory behaves here as it does there.
    ringkv::sys::keep_freed_memory_for_reuse();
    ringkv::io::ring::start(4096, run(options));
}
