//! The fsync strategy matrix: a fresh server per strategy and WAL mechanism, the same load at
//! each connection count, and the disk's and Redis's figures measured in the same run.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use ringkv::config::{FsyncStrategy, SyncCall, WalIo};
use serde::Serialize;

use crate::load::{self, LoadSpec};
use crate::plot;
use crate::recorder::{format_micros, Summary};
use crate::references::{self, FioResult, RedisResult};
use crate::report::Report;
use crate::workload::{DurabilityMix, KeyDist, Mix};

#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// The ringkv server binary (default: `ringkv` beside this program).
    #[arg(long)]
    server: Option<PathBuf>,

    /// Where the report (report.md), the figures (results.json) and the plots go.
    #[arg(long, default_value = "target/fsync-strategies")]
    out: PathBuf,

    /// Where the servers' data directories and the fio file go (default: the system's temporary
    /// directory). Must be the disk you want to measure.
    #[arg(long)]
    data_root: Option<PathBuf>,

    /// Measured time of each run.
    #[arg(long, default_value = "2s", value_parser = crate::parse_duration)]
    duration: Duration,

    /// Unrecorded load before each run.
    #[arg(long, default_value = "500ms", value_parser = crate::parse_duration_or_zero)]
    warmup: Duration,

    /// Times the whole matrix is run, one configuration after another each round, so that a slow
    /// minute of a shared machine hits every configuration once rather than one configuration
    /// every time. Each cell reports the run with the median ops/s.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,

    /// Connection counts, each run against the same server.
    #[arg(long, default_value = "1,16,64", value_parser = parse_counts)]
    connections: Counts,

    /// Fsync strategies to compare.
    #[arg(long, default_value = "always,group,periodic:1000,never", value_parser = parse_strategies)]
    strategies: Strategies,

    /// WAL mechanisms (IO+SYNC, e.g. direct+fdatasync,buffered+dsync), or `auto`: all six for
    /// the strategies that sync before acknowledging, direct and buffered with fdatasync for the
    /// others (their sync call matters only to the background sync).
    #[arg(long, default_value = "auto")]
    mechanisms: String,

    /// Operation weights.
    #[arg(long, default_value = "set:100")]
    mix: Mix,

    #[arg(long, default_value_t = 100_000)]
    keys: u64,

    #[arg(long, default_value = "uniform")]
    key_dist: KeyDist,

    #[arg(long, default_value_t = 100)]
    value_bytes: usize,

    /// Skip fio and Redis even if they are installed.
    #[arg(long)]
    no_references: bool,

    /// One-server mode: durability mixes, separated by ';' (never:100;always:10,never:90), run in
    /// turn against one server per round (the first strategy and mechanism given), each write
    /// asking for a class drawn from the mix; latency is reported per class, and the server's
    /// side (syncs per durable write, batch sizes) from its /metrics. Replaces the strategy
    /// comparison.
    #[arg(long, value_parser = parse_durability_mixes)]
    durability_mixes: Option<DurabilityMixes>,
}

#[derive(Debug, Clone)]
pub struct DurabilityMixes(Vec<DurabilityMix>);

impl MatrixArgs {
    /// The closed-loop load of one run.
    fn load(
        &self,
        target: SocketAddr,
        connections: usize,
        durability: Option<DurabilityMix>,
        round: u32,
    ) -> LoadSpec {
        LoadSpec {
            target,
            connections,
            rate: None,
            duration: self.duration,
            warmup: self.warmup,
            max_requests: None,
            mix: self.mix,
            durability,
            keys: self.keys,
            key_dist: self.key_dist,
            value_bytes: self.value_bytes,
            seed: u64::from(round),
            progress: false,
        }
    }
}

fn parse_durability_mixes(text: &str) -> Result<DurabilityMixes, String> {
    text.split(';')
        .map(|part| part.trim().parse())
        .collect::<Result<_, _>>()
        .map(DurabilityMixes)
}

#[derive(Debug, Clone)]
pub struct Counts(Vec<usize>);

#[derive(Debug, Clone)]
pub struct Strategies(Vec<FsyncStrategy>);

fn parse_counts(text: &str) -> Result<Counts, String> {
    text.split(',')
        .map(|part| match part.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{part:?} is not a connection count")),
        })
        .collect::<Result<_, _>>()
        .map(Counts)
}

fn parse_strategies(text: &str) -> Result<Strategies, String> {
    text.split(',')
        .map(|part| part.trim().parse())
        .collect::<Result<_, _>>()
        .map(Strategies)
}

/// How the WAL reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mechanism {
    pub io: WalIo,
    pub sync: SyncCall,
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.io, self.sync)
    }
}

/// The server's default mechanism for `strategy`.
fn default_mechanism(strategy: &str) -> Mechanism {
    // Under periodic and never no write is durable by itself: the sync is an `fdatasync`
    // whichever call is configured, and the label says so.
    let sync = strategy
        .parse()
        .map_or(SyncCall::Fdatasync, |strategy: FsyncStrategy| {
            if strategy.syncs_before_ack() {
                SyncCall::DEFAULT
            } else {
                SyncCall::Fdatasync
            }
        });
    Mechanism {
        io: WalIo::Direct,
        sync,
    }
}

fn mechanisms_for(spec: &str, strategy: FsyncStrategy) -> Result<Vec<Mechanism>, String> {
    let all_io = [WalIo::Direct, WalIo::Buffered];
    if spec == "auto" {
        let syncs: &[SyncCall] = if strategy.syncs_before_ack() {
            &[SyncCall::Fdatasync, SyncCall::Fsync, SyncCall::Dsync]
        } else {
            &[SyncCall::Fdatasync]
        };
        return Ok(all_io
            .iter()
            .flat_map(|&io| syncs.iter().map(move |&sync| Mechanism { io, sync }))
            .collect());
    }
    spec.split(',')
        .map(|part| {
            let (io, sync) = part
                .split_once('+')
                .ok_or_else(|| format!("mechanism {part:?} is not IO+SYNC, e.g. direct+fdatasync"))?;
            Ok(Mechanism {
                io: io.parse()?,
                sync: sync.parse()?,
            })
        })
        .collect()
}

/// One load against one server configuration.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixRun {
    pub strategy: String,
    pub mechanism: String,
    /// One-server mode: the durability mix of the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<String>,
    pub connections: usize,
    pub round: u32,
    pub report: Report,
}

#[derive(Debug, Serialize)]
struct Results {
    machine: references::Machine,
    command: String,
    /// Per cell, the run with the median ops/s of the rounds.
    runs: Vec<MatrixRun>,
    /// Every run of every round.
    all_runs: Vec<MatrixRun>,
    /// Per fio job, the round with the median ops/s.
    fio: Vec<FioResult>,
    all_fio: Vec<FioResult>,
    /// Per (appendfsync, connections), the round with the median ops/s.
    redis: Vec<RedisResult>,
    all_redis: Vec<RedisResult>,
    elapsed_s: f64,
}

pub fn run(args: MatrixArgs) -> Result<(), String> {
    let started = Instant::now();
    let server = match &args.server {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|error| format!("cannot find this program: {error}"))?
            .with_file_name("ringkv"),
    };
    if !server.is_file() {
        return Err(format!(
            "no server binary at {} (build it, or pass --server)",
            server.display()
        ));
    }
    let data_root = args.data_root.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = data_root.join(format!("ringkv-matrix-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .map_err(|error| format!("cannot create {}: {error}", scratch.display()))?;
    std::fs::create_dir_all(&args.out)
        .map_err(|error| format!("cannot create {}: {error}", args.out.display()))?;
    let machine = references::Machine::describe(&scratch);
    eprintln!("matrix: {machine}");

    let mut plan = Vec::new();
    for &strategy in &args.strategies.0 {
        for mechanism in mechanisms_for(&args.mechanisms, strategy)? {
            plan.push((strategy, mechanism));
        }
    }
    if args.durability_mixes.is_some() {
        // One server; the mixes take the place of the configurations.
        plan.truncate(1);
    }
    let configurations = args
        .durability_mixes
        .as_ref()
        .map_or(plan.len(), |mixes| mixes.0.len());
    let total_runs = configurations * args.connections.0.len() * args.rounds as usize;
    eprintln!(
        "matrix: {} rounds of {} {} x {:?} connections, {:.1} s + {:.1} s warm-up each: about {:.0} s of load",
        args.rounds,
        configurations,
        if args.durability_mixes.is_some() { "durability mixes against one server" } else { "server configurations" },
        args.connections.0,
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        total_runs as f64 * (args.duration + args.warmup).as_secs_f64()
    );

    let (mut all_runs, mut all_fio, mut all_redis) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        eprintln!("matrix: round {round} of {}", args.rounds);
        all_runs.extend(match &args.durability_mixes {
            Some(mixes) => run_round_one_server(&args, &server, &scratch, plan[0], &mixes.0, round)?,
            None => run_round(&args, &server, &scratch, &plan, round)?,
        });
        // The references run in every round too, so that they meet the same minutes of the
        // machine as ringkv does.
        if !args.no_references {
            for mut result in references::fio(&scratch, args.duration)? {
                result.round = round;
                all_fio.push(result);
            }
            let redis = references::redis(
                &scratch,
                &args.connections.0,
                args.value_bytes,
                args.keys,
                args.duration,
            )?;
            for mut result in redis {
                result.round = round;
                all_redis.push(result);
            }
        }
    }
    let runs = median_by(
        &all_runs,
        |r| {
            (
                r.strategy.clone(),
                r.mechanism.clone(),
                r.durability.clone(),
                r.connections,
            )
        },
        |r| r.report.total.ops_per_sec,
    );
    let fio = median_by(&all_fio, |r| r.job.clone(), |r| r.ops_per_sec);
    let redis = median_by(
        &all_redis,
        |r| (r.appendfsync.clone(), r.connections),
        |r| r.ops_per_sec,
    );
    let _ = std::fs::remove_dir_all(&scratch);

    let results = Results {
        machine,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        runs,
        all_runs,
        fio,
        all_fio,
        redis,
        all_redis,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    finish(&results, &args)
}

/// Every configuration once, each with a fresh server and data directory.
fn run_round(
    args: &MatrixArgs,
    server: &Path,
    scratch: &Path,
    plan: &[(FsyncStrategy, Mechanism)],
    round: u32,
) -> Result<Vec<MatrixRun>, String> {
    let mut runs = Vec::new();
    for (index, (strategy, mechanism)) in plan.iter().enumerate() {
        let data_dir = scratch.join(format!("server-{round}-{index}"));
        let mut server = Server::start(server, &data_dir, *strategy, *mechanism)?;
        for &connections in &args.connections.0 {
            let spec = args.load(server.addr, connections, None, round);
            let result = ringkv::io::ring::start(load::CLIENT_RING_ENTRIES, load::run(spec.clone()))?;
            let report = Report::new(&spec, &result);
            eprintln!(
                "  {:<14} {:<19} {:>3} conns  {:>8.0} ops/s  p50 {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9}  errors {}",
                strategy.to_string(),
                mechanism.to_string(),
                connections,
                report.total.ops_per_sec,
                format_micros(report.total.p50_us),
                format_micros(report.total.p99_us),
                format_micros(report.total.p999_us),
                format_micros(report.total.max_us),
                report.total.errors
            );
            runs.push(MatrixRun {
                strategy: strategy.to_string(),
                mechanism: mechanism.to_string(),
                durability: None,
                connections,
                round,
                report,
            });
        }
        server.stop()?;
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(runs)
}

/// One-server mode: one server for the round, every durability mix at every connection count
/// against it, in turn, each with the server's side read from its `/metrics`.
fn run_round_one_server(
    args: &MatrixArgs,
    server: &Path,
    scratch: &Path,
    (strategy, mechanism): (FsyncStrategy, Mechanism),
    mixes: &[DurabilityMix],
    round: u32,
) -> Result<Vec<MatrixRun>, String> {
    let data_dir = scratch.join(format!("server-{round}"));
    let mut server = Server::start(server, &data_dir, strategy, mechanism)?;
    let mut runs = Vec::new();
    for mix in mixes {
        for &connections in &args.connections.0 {
            let spec = args.load(server.addr, connections, Some(*mix), round);
            let (result, side) = load::run_with_metrics(&spec, Duration::from_secs(1))?;
            let mut report = Report::new(&spec, &result);
            let classes: Vec<String> = report
                .ops
                .iter()
                .map(|(name, s)| {
                    format!(
                        "{name} p50 {} p99 {}",
                        format_micros(s.p50_us),
                        format_micros(s.p99_us)
                    )
                })
                .collect();
            eprintln!(
                "  {:<28} {:>3} conns  {:>8.0} ops/s  {}  syncs/durable write {}  errors {}",
                mix.to_string(),
                connections,
                report.total.ops_per_sec,
                classes.join("  "),
                side.syncs_per_durable_write
                    .map_or_else(|| "-".to_string(), |v| format!("{v:.3}")),
                report.total.errors
            );
            report.server = Some(side);
            runs.push(MatrixRun {
                strategy: strategy.to_string(),
                mechanism: mechanism.to_string(),
                durability: Some(mix.to_string()),
                connections,
                round,
                report,
            });
        }
    }
    server.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(runs)
}

/// One-server mode's report: per mix and connection count, each class's latency in the run with
/// the median ops/s, and the p99 of each round.
fn markdown_one_server(results: &Results, args: &MatrixArgs) -> String {
    let mut out = format!(
        "Machine: {}\n\nCommand: `{}`; finished in {:.0} s.\n\n",
        results.machine, results.command, results.elapsed_s
    );
    if let Some(first) = results.runs.first() {
        out += &format!(
            "One server ({}, {}) per round; the mixes run in turn against it, {:.1} s measured after {:.1} s of warm-up each; mix {}, {} keys {}, {}-byte values. Each row: the run with the median ops/s of {} rounds; p99 of every round in the last column.\n\n",
            first.strategy, first.mechanism, args.duration.as_secs_f64(), args.warmup.as_secs_f64(),
            first.report.mix, first.report.keys, first.report.key_dist, first.report.value_bytes, args.rounds
        );
    }
    out += "| durability mix | conns | class | ops/s | p50 | p99 | p99.9 | syncs per durable write | batch p50 (records) | p99, all rounds |\n";
    out += "|---|---:|---|---:|---:|---:|---:|---:|---:|---|\n";
    for run in &results.runs {
        let side = run.report.server.as_ref();
        for (class, s) in &run.report.ops {
            let rounds: Vec<String> = results
                .all_runs
                .iter()
                .filter(|r| r.durability == run.durability && r.connections == run.connections)
                .filter_map(|r| r.report.ops.iter().find(|(c, _)| c == class))
                .map(|(_, s)| format_micros(s.p99_us))
                .collect();
            out += &format!(
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
                run.durability.as_deref().unwrap_or("-"),
                run.connections,
                class,
                s.ops_per_sec,
                format_micros(s.p50_us),
                format_micros(s.p99_us),
                format_micros(s.p999_us),
                side.and_then(|s| s.syncs_per_durable_write)
                    .map_or_else(|| "-".to_string(), |v| format!("{v:.3}")),
                side.and_then(|s| s.batch_records_p50)
                    .map_or_else(|| "-".to_string(), |v| format!("≤ {v}")),
                rounds.join(", ")
            );
        }
    }
    out
}

/// Per cell (items with the same `cell`), in first-seen order, the item with the median `ops`.
fn median_by<T: Clone, C: PartialEq>(all: &[T], cell: impl Fn(&T) -> C, ops: impl Fn(&T) -> f64) -> Vec<T> {
    let mut cells: Vec<(C, Vec<&T>)> = Vec::new();
    for item in all {
        let key = cell(item);
        match cells.iter_mut().find(|(other, _)| *other == key) {
            Some((_, items)) => items.push(item),
            None => cells.push((key, vec![item])),
        }
    }
    cells
        .into_iter()
        .map(|(_, mut items)| {
            items.sort_by(|a, b| ops(a).total_cmp(&ops(b)));
            items[(items.len() - 1) / 2].clone()
        })
        .collect()
}

fn finish(results: &Results, args: &MatrixArgs) -> Result<(), String> {
    let json = serde_json::to_string_pretty(results).expect("results serialise");
    write(&args.out.join("results.json"), &json)?;
    if args.durability_mixes.is_some() {
        let markdown = markdown_one_server(results, args);
        write(&args.out.join("report.md"), &markdown)?;
        println!("{markdown}");
        eprintln!(
            "matrix: done in {:.0} s; report and results.json in {}",
            results.elapsed_s,
            args.out.display()
        );
        return Ok(());
    }
    for strategy in &args.strategies.0 {
        let name = strategy.to_string();
        let svg = args.out.join(format!("latency-{}.svg", name.replace(':', "-")));
        let runs: Vec<&MatrixRun> = results.runs.iter().filter(|r| r.strategy == name).collect();
        plot::percentiles(&svg, &name, &runs, &args.connections.0)?;
    }
    let markdown = markdown(results, args);
    write(&args.out.join("report.md"), &markdown)?;
    println!("{markdown}");
    eprintln!(
        "matrix: done in {:.0} s; report, results.json and plots in {}",
        results.elapsed_s,
        args.out.display()
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// A ringkv server started for one configuration.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(
        binary: &Path,
        data_dir: &Path,
        strategy: FsyncStrategy,
        mechanism: Mechanism,
    ) -> Result<Server, String> {
        let mut child = Command::new(binary)
            .arg("--listen=127.0.0.1:0")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--fsync={strategy}"))
            .arg(format!("--wal-io={}", mechanism.io))
            .arg(format!("--sync-call={}", mechanism.sync))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the server ({strategy}, {mechanism}) exited before listening"
                ));
            };
            if let Some(rest) = line.strip_prefix("ringkv listening on ") {
                let addr = rest.split(',').next().unwrap_or_default();
                break addr
                    .parse()
                    .map_err(|_| format!("cannot read the server's address from {line:?}"))?;
            }
        };
        // Keep draining the server's log so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server { child, addr })
    }

    /// SIGTERM, then wait for the clean exit (the WAL synced).
    fn stop(&mut self) -> Result<(), String> {
        ringkv::sys::send_signal(self.child.id(), libc::SIGTERM)
            .map_err(|error| format!("SIGTERM: {error}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("the server exited with {status}")),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    return Err("the server did not stop within 60 s of SIGTERM".to_string());
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn find<'a>(
    results: &'a Results,
    strategy: &str,
    mechanism: Mechanism,
    connections: usize,
) -> Option<&'a Summary> {
    let mechanism = mechanism.to_string();
    results
        .runs
        .iter()
        .find(|r| r.strategy == strategy && r.mechanism == mechanism && r.connections == connections)
        .map(|r| &r.report.total)
}

/// The report: the tables, then the targets with the figures they compare.
fn markdown(results: &Results, args: &MatrixArgs) -> String {
    let mut out = String::new();
    let first = results.runs.first().map(|r| &r.report);
    out += &format!("Machine: {}\n\n", results.machine);
    out += &format!(
        "Command: `{}`; finished in {:.0} s.\n\n",
        results.command, results.elapsed_s
    );
    if let Some(first) = first {
        out += &format!(
            "Workload: closed loop, mix {}, {} keys {}, {}-byte values, {:.1} s measured after {:.1} s of warm-up per run, a fresh server and data directory per configuration and round. Each row is the run with the median ops/s of {} rounds (every run is in results.json).\n\n",
            first.mix, first.keys, first.key_dist, first.value_bytes, args.duration.as_secs_f64(), args.warmup.as_secs_f64(), args.rounds
        );
    }
    out += "| strategy | WAL mechanism | conns | ops/s | ops/s, all rounds | p50 | p90 | p99 | p99.9 | max | errors |\n";
    out += "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n";
    for run in &results.runs {
        let s = &run.report.total;
        let rounds = rounds_column(
            &results.all_runs,
            |r| {
                r.strategy == run.strategy && r.mechanism == run.mechanism && r.connections == run.connections
            },
            |r| r.report.total.ops_per_sec,
        );
        out += &format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} |\n",
            run.strategy,
            run.mechanism,
            run.connections,
            s.ops_per_sec,
            rounds,
            s.latency_columns().join(" | "),
            s.errors
        );
    }
    if !results.fio.is_empty() {
        out += "\nfio on the same file system (psync, queue depth 1, O_DIRECT, one fdatasync after every write):\n\n";
        out += "| job | ops/s | ops/s, all rounds | write p50 | fdatasync p50 | write+fdatasync p50 | fdatasync p99 | mean per op |\n";
        out += "|---|---:|---|---:|---:|---:|---:|---:|\n";
        for f in &results.fio {
            let rounds = rounds_column(&results.all_fio, |r| r.job == f.job, |r| r.ops_per_sec);
            out += &format!(
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
                f.job,
                f.ops_per_sec,
                rounds,
                format_micros(f.write_p50_us),
                format_micros(f.sync_p50_us),
                format_micros(f.op_p50_us),
                format_micros(f.sync_p99_us),
                format_micros(crate::recorder::whole(f.mean_op_us))
            );
        }
    }
    if !results.redis.is_empty() {
        out += &format!("\n{} with appendonly, redis-benchmark -t set (same connection counts, value size and key count):\n\n", results.redis[0].version);
        out +=
            "| appendfsync | conns | ops/s | ops/s, all rounds | p50 | p95 | p99 | max |\n|---|---:|---:|---|---:|---:|---:|---:|\n";
        for r in &results.redis {
            let rounds = rounds_column(
                &results.all_redis,
                |o| o.appendfsync == r.appendfsync && o.connections == r.connections,
                |o| o.ops_per_sec,
            );
            out += &format!(
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} |\n",
                r.appendfsync,
                r.connections,
                r.ops_per_sec,
                rounds,
                format_micros(r.p50_us),
                format_micros(r.p95_us),
                format_micros(r.p99_us),
                format_micros(r.max_us)
            );
        }
    }
    out += "\nTargets (each strategy with the server's default mechanism: direct+dsync for always and group, direct+fdatasync for periodic and never):\n\n";
    for line in targets(results) {
        out += &format!("- {line}\n");
    }
    out
}

/// The ops/s of every round of one cell, in round order, for a report column.
fn rounds_column<T>(all: &[T], same_cell: impl Fn(&T) -> bool, ops: impl Fn(&T) -> f64) -> String {
    let rounds: Vec<String> = all
        .iter()
        .filter(|item| same_cell(item))
        .map(|item| format!("{:.0}", ops(item)))
        .collect();
    rounds.join(", ")
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

fn targets(results: &Results) -> Vec<String> {
    let mut lines = Vec::new();
    let fio_4k = results
        .fio
        .iter()
        .find(|f| f.job.starts_with("4k write+fdatasync"));
    match (find(results, "always", default_mechanism("always"), 1), fio_4k) {
        (Some(always), Some(fio)) => {
            let ratio = always.p50_us as f64 / fio.op_p50_us.max(1) as f64;
            lines.push(format!(
                "`always` at 1 connection: p50 {} against fio's 4 KiB write+fdatasync p50 {}: {:.2}x (target at most 1.5x): {}",
                format_micros(always.p50_us),
                format_micros(fio.op_p50_us),
                ratio,
                verdict(ratio <= 1.5)
            ));
        }
        _ => lines.push("`always` at 1 connection vs fio: not measured in this run".to_string()),
    }
    let redis_always_64 = results
        .redis
        .iter()
        .find(|r| r.appendfsync == "always" && r.connections == 64);
    match (
        find(results, "group", default_mechanism("group"), 64),
        redis_always_64,
    ) {
        (Some(group), Some(redis)) => {
            let ratio = group.ops_per_sec / redis.ops_per_sec.max(1e-9);
            lines.push(format!(
                "`group` at 64 connections: {:.0} durable writes/s against Redis `appendfsync always` at 64: {:.0}/s: {:.2}x (target at least 1x): {}",
                group.ops_per_sec,
                redis.ops_per_sec,
                ratio,
                verdict(ratio >= 1.0)
            ));
        }
        _ => lines.push(
            "`group` vs Redis `appendfsync always` at 64 connections: not measured in this run".to_string(),
        ),
    }
    let counts: Vec<usize> = {
        let mut counts: Vec<usize> = results.runs.iter().map(|r| r.connections).collect();
        counts.sort_unstable();
        counts.dedup();
        counts
    };
    for connections in counts {
        if let (Some(never), Some(periodic)) = (
            find(results, "never", default_mechanism("never"), connections),
            find(
                results,
                "periodic:1000",
                default_mechanism("periodic:1000"),
                connections,
            ),
        ) {
            let ratio = never.ops_per_sec / periodic.ops_per_sec.max(1e-9);
            lines.push(format!(
                "`never` vs `periodic:1000` at {connections} connections: {:.0} vs {:.0} ops/s ({:+.1}%), p50 {} vs {} (target within 10%): {}",
                never.ops_per_sec,
                periodic.ops_per_sec,
                (ratio - 1.0) * 100.0,
                format_micros(never.p50_us),
                format_micros(periodic.p50_us),
                verdict((ratio - 1.0).abs() <= 0.10)
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_mechanisms_cover_every_sync_call_only_where_it_acknowledges() {
        assert_eq!(mechanisms_for("auto", FsyncStrategy::Group).unwrap().len(), 6);
        let never = mechanisms_for("auto", FsyncStrategy::Never).unwrap();
        assert_eq!(
            never.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["direct+fdatasync", "buffered+fdatasync"]
        );
        let chosen = mechanisms_for("buffered+dsync", FsyncStrategy::Always).unwrap();
        assert_eq!(
            chosen,
            [Mechanism {
                io: WalIo::Buffered,
                sync: SyncCall::Dsync
            }]
        );
        assert!(mechanisms_for("direct", FsyncStrategy::Always).is_err());
        assert!(mechanisms_for("direct+osync", FsyncStrategy::Always).is_err());
    }

    #[test]
    fn each_cell_reports_its_median_run() {
        let run = |connections: usize, round: u32, ops_per_sec: f64| {
            let mut run = MatrixRun {
                strategy: "group".into(),
                mechanism: "direct+fdatasync".into(),
                durability: None,
                connections,
                round,
                report: serde_json::from_value(serde_json::json!({
                    "target": "t", "connections": connections, "mode": "closed", "rate": null,
                    "duration_s": 1.0, "warmup_s": 0.0, "mix": "set:1", "keys": 1,
                    "key_dist": "uniform", "value_bytes": 1, "connection_errors": 0,
                    "total": {"requests": 1, "ops_per_sec": 0.0, "ok": 1, "not_found": 0, "errors": 0,
                        "mean_us": 1.0, "p50_us": 1, "p90_us": 1, "p99_us": 1, "p999_us": 1, "max_us": 1,
                        "percentiles": []},
                    "ops": []
                }))
                .unwrap(),
            };
            run.report.total.ops_per_sec = ops_per_sec;
            run
        };
        let all = [
            run(1, 1, 10.0),
            run(16, 1, 5.0),
            run(1, 2, 30.0),
            run(16, 2, 7.0),
            run(1, 3, 20.0),
            run(16, 3, 6.0),
        ];
        let medians = median_by(
            &all,
            |r| (r.strategy.clone(), r.mechanism.clone(), r.connections),
            |r| r.report.total.ops_per_sec,
        );
        let picked: Vec<(usize, u32)> = medians.iter().map(|r| (r.connections, r.round)).collect();
        assert_eq!(picked, [(1, 3), (16, 3)]);
    }
}
