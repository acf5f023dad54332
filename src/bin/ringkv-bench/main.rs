//! ringkv-bench: the load generator for ringkv, and the fsync strategy matrix.
//!
//! `ringkv-bench run` drives one server with keep-alive HTTP/1.1 connections on `io_uring`, in a
//! closed loop (each connection sends its next request when the last is answered) or an open
//! loop (`--rate`: requests due on a fixed schedule, latency measured from when each was due), and
//! prints a table of ops/s and latency percentiles (HDR histograms), optionally JSON too.
//!
//! `ringkv-bench matrix` starts a server per fsync strategy and WAL mechanism, runs the same load
//! at 1, 16 and 64 connections against each, measures fio and Redis on the same disk for
//! reference, and writes a report, JSON and one latency-percentile SVG per strategy.

mod client;
mod load;
mod matrix;
mod plot;
mod recorder;
mod references;
mod report;
mod schedule;
mod scrape;
mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::load::LoadSpec;
use crate::report::Report;
use crate::workload::{DurabilityMix, KeyDist, Mix};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(version, about = "Load generator for ringkv, and the fsync strategy matrix", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive one running server and print the latency table.
    Run(RunArgs),
    /// Start a server per fsync strategy and WAL mechanism and compare them (see BENCHMARKS.md).
    Matrix(matrix::MatrixArgs),
}

/// The workload: shared by `run` and `matrix`.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Operation weights, e.g. set:100, or set:10,get:90, or set:45,get:45,del:10.
    #[arg(long, default_value = "set:50,get:50")]
    mix: Mix,

    /// Keys are k0000000000 .. k{keys-1}.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,

    /// uniform, zipfian (theta 0.99, as YCSB) or zipfian:THETA.
    #[arg(long, default_value = "uniform")]
    key_dist: KeyDist,

    /// Bytes of each value (a JSON string of that many letters).
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,

    /// Seed of the per-connection random generators.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Durability classes the writes (set, del) ask for, with weights: always:10,never:90. Each
    /// write draws its class, and latency is reported per operation and class (set/always).
    /// Without it, writes name no class and get the server's.
    #[arg(long)]
    durability: Option<DurabilityMix>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    target: SocketAddr,

    /// Keep-alive connections, each with one request in flight.
    #[arg(short, long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,

    /// Open loop: total requests per second, spread evenly over the connections, latency measured
    /// from when each request was due. Every request due in the window is sent, late if the
    /// server fell behind, for up to the window's length again (at least 1 s) after it; the rest
    /// are reported as unsent. Without it: closed loop, as fast as answers come.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,

    /// How long to measure: 10, 10s, 1500ms, 2m.
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,

    /// Load run before measuring, not recorded.
    #[arg(long, default_value = "0s", value_parser = parse_duration_or_zero)]
    warmup: Duration,

    /// Stop after this many measured requests (the duration still bounds the run).
    #[arg(long)]
    requests: Option<u64>,

    #[command(flatten)]
    workload: WorkloadArgs,

    /// Scrape the server's /metrics before and after (and every --metrics-interval during the
    /// run) and print its side: syncs per durable write, batch sizes, sync latency, the largest
    /// exposure window.
    #[arg(long)]
    metrics: bool,

    /// How often /metrics is scraped during the run with --metrics.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    metrics_interval: Duration,

    /// Also write the results as JSON to this file (- for standard output, in place of the table).
    #[arg(long)]
    json: Option<PathBuf>,

    /// No progress line.
    #[arg(short, long)]
    quiet: bool,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|_| format!("not a rate: {text:?}"))?;
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(format!(
            "the rate must be above 0 requests per second, got {rate}"
        ));
    }
    Ok(rate)
}

fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (e.g. 10, 10s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: expected ms, s or m")),
    };
    if !(0.0..86_400.0).contains(&seconds) {
        return Err(format!("duration {text:?} is out of range (0 to 24 h)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_or_zero(text)?;
    if duration.is_zero() {
        return Err("the duration must be above 0".to_string());
    }
    Ok(duration)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => run(args),
        Command::Matrix(args) => matrix::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ringkv-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> Result<(), String> {
    let spec = LoadSpec {
        target: args.target,
        connections: args.connections as usize,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        max_requests: args.requests,
        mix: args.workload.mix,
        durability: args.workload.durability,
        keys: args.workload.keys,
        key_dist: args.workload.key_dist,
        value_bytes: args.workload.value_bytes,
        seed: args.workload.seed,
        progress: !args.quiet,
    };
    let (result, server) = if args.metrics {
        let (result, server) = load::run_with_metrics(&spec, args.metrics_interval)?;
        (result, Some(server))
    } else {
        (
            ringkv::io::ring::start(load::CLIENT_RING_ENTRIES, load::run(spec.clone()))?,
            None,
        )
    };
    let mut report = Report::new(&spec, &result);
    report.server = server;
    let json = serde_json::to_string_pretty(&report).expect("reports serialise");
    match &args.json {
        Some(path) if path.as_os_str() == "-" => println!("{json}"),
        Some(path) => {
            std::fs::write(path, json + "\n")
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
            print!("{}", report.table());
        }
        None => print!("{}", report.table()),
    }
    if report.total.errors > 0 {
        return Err(format!("{} requests failed", report.total.errors));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ringkv-bench").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_make_a_closed_loop() {
        let Command::Run(args) = parse(&["run"]).unwrap().command else {
            panic!()
        };
        assert_eq!(args.connections, 16);
        assert_eq!(args.rate, None);
        assert_eq!(args.duration, Duration::from_secs(10));
        assert_eq!(args.workload.mix.to_string(), "set:50,get:50");
        let Command::Run(args) = parse(&[
            "run",
            "--rate",
            "2500",
            "-d",
            "1500ms",
            "--key-dist",
            "zipfian:0.8",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert_eq!(args.rate, Some(2500.0));
        assert_eq!(args.duration, Duration::from_millis(1500));
        assert_eq!(args.workload.key_dist, KeyDist::Zipfian { theta: 0.8 });
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        for (args, reason) in [
            (&["run", "--connections", "0"][..], "0 is not in 1..=100000"),
            (&["run", "--rate", "0"], "the rate must be above 0"),
            (&["run", "--rate", "fast"], "not a rate"),
            (&["run", "--duration", "0s"], "the duration must be above 0"),
            (&["run", "--duration", "10h"], "unknown unit \"h\""),
            (&["run", "--mix", "put:1"], "unknown operation \"put\""),
            (&["run", "--mix", "set:0"], "no operation with a weight above 0"),
            (&["run", "--key-dist", "normal"], "unknown key distribution"),
            (&["run", "--keys", "0"], "0 is not in 1.."),
            (&["run", "--target", "localhost"], "invalid socket address"),
            (&["matrix", "--connections", "1,x"], "not a connection count"),
            (&["matrix", "--strategies", "sometimes"], "unknown fsync strategy"),
        ] {
            let error = parse(args).expect_err(&format!("{args:?} accepted"));
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{args:?}: {error}");
            assert!(error.to_string().contains(reason), "{args:?}: {error}");
        }
        assert_eq!(
            parse(&[]).unwrap_err().kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
    }
}
