//! `cargo bench --bench fsync_strategies [-- MATRIX OPTIONS]`: the fsync strategy matrix, run with
//! the release binaries cargo has just built (see `ringkv-bench matrix --help` and BENCHMARKS.md).
//! Writes target/fsync-strategies/{report.md, results.json, latency-*.svg}.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    // cargo passes `--bench` to every bench target; the rest goes to the matrix.
    let options: Vec<String> = std::env::args().skip(1).filter(|arg| arg != "--bench").collect();
    let status = Command::new(env!("CARGO_BIN_EXE_ringkv-bench"))
        .arg("matrix")
        .arg(concat!("--server=", env!("CARGO_BIN_EXE_ringkv")))
        .args(options)
        .status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("fsync_strategies: ringkv-bench matrix exited with {status}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("fsync_strategies: cannot run ringkv-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
