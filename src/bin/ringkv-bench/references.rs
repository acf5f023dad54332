//! What the matrix compares ringkv against, measured on the same machine in the same run: the
//! machine itself, fio (what the disk can do at queue depth 1), and Redis with an append-only
//! file. fio and Redis come from Debian (`benches/install-references.sh`); when they are missing
//! the matrix says so and goes on without them.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Where the figures were measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub file_system: String,
    pub disk: String,
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    Some(std::fs::read_to_string(path).ok()?.trim().to_string())
}

impl Machine {
    pub fn describe(data_dir: &Path) -> Machine {
        let cpu = read_trimmed("/proc/cpuinfo")
            .and_then(|info| {
                info.lines().find_map(|line| {
                    line.strip_prefix("model name")?
                        .split_once(':')
                        .map(|(_, m)| m.trim().to_string())
                })
            })
            .unwrap_or_else(|| "unknown CPU".to_string());
        let memory_gib = read_trimmed("/proc/meminfo")
            .and_then(|info| {
                let kib: f64 = info.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib / f64::from(1 << 20))
            })
            .unwrap_or(0.0);
        let (device, fs_type, options) = mount_of(data_dir).unwrap_or_default();
        let block = device.trim_start_matches("/dev/").to_string();
        let queue = |name: &str| {
            read_trimmed(format!("/sys/block/{block}/queue/{name}")).unwrap_or_else(|| "?".into())
        };
        let disk = format!(
            "{device}: rotational {}, write cache {}, FUA {}, scheduler {}",
            queue("rotational"),
            queue("write_cache"),
            queue("fua"),
            queue("scheduler")
        );
        Machine {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu,
            memory_gib,
            kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            file_system: format!("{fs_type} ({options}) holding {}", data_dir.display()),
            disk,
        }
    }
}

/// The device, type and options of the mount holding `path` (the longest matching mount point).
fn mount_of(path: &Path) -> Option<(String, String, String)> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 4 && path.starts_with(fields[1])).then(|| (fields[1].len(), fields))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, f)| (f[0].to_string(), f[2].to_string(), f[3].to_string()))
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cores ({}), {:.0} GiB, Linux {}, {}; {}",
            self.cores, self.cpu, self.memory_gib, self.kernel, self.file_system, self.disk
        )
    }
}

/// One fio job: sequential `O_DIRECT` writes at queue depth 1, each followed by `fdatasync` or
/// opened `O_DSYNC` (then there is no separate sync and its figures are 0).
#[derive(Debug, Clone, Serialize)]
pub struct FioResult {
    pub job: String,
    /// The matrix round it belongs to (set by the matrix).
    pub round: u32,
    pub ops_per_sec: f64,
    pub write_p50_us: u64,
    pub sync_p50_us: u64,
    pub sync_p99_us: u64,
    /// Write p50 plus sync p50: the cost of one durable write (fio reports the two separately).
    pub op_p50_us: u64,
    /// 1 / `ops_per_sec`.
    pub mean_op_us: f64,
}

fn installed(program: &str, arg: &str) -> Option<String> {
    let output = Command::new(program)
        .arg(arg)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

const INSTALL_HINT: &str = "run benches/install-references.sh to install it";

pub fn fio(scratch: &Path, duration: Duration) -> Result<Vec<FioResult>, String> {
    let Some(version) = installed("fio", "--version") else {
        eprintln!("matrix: fio is not installed, no disk reference ({INSTALL_HINT})");
        return Ok(Vec::new());
    };
    let file = scratch.join("fio.dat");
    let mut results = Vec::new();
    for (job, block, sync) in [
        ("4k write+fdatasync", "4k", "--fdatasync=1"),
        ("64k write+fdatasync", "64k", "--fdatasync=1"),
        // O_DSYNC: the flush happens inside the write (what --sync-call dsync does).
        ("4k O_DSYNC write", "4k", "--sync=dsync"),
    ] {
        let output = Command::new("fio")
            .args(["--name=durable-writes", "--rw=write", "--direct=1", sync])
            .args(["--ioengine=psync", "--iodepth=1", "--size=256M", "--time_based"])
            .arg(format!("--bs={block}"))
            .arg(format!("--runtime={}", duration.as_secs().max(1)))
            .arg(format!("--filename={}", file.display()))
            .arg("--output-format=json")
            .output()
            .map_err(|error| format!("cannot run fio: {error}"))?;
        if !output.status.success() {
            return Err(format!("fio failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|error| format!("cannot read fio's JSON: {error}"))?;
        let job_json = &json["jobs"][0];
        let percentile = |section: &serde_json::Value, p: &str| -> u64 {
            section["percentile"][p].as_u64().unwrap_or(0) / 1000
        };
        let write = &job_json["write"]["clat_ns"];
        let sync = &job_json["sync"]["lat_ns"];
        let ops_per_sec = job_json["write"]["iops"].as_f64().unwrap_or(0.0);
        let write_p50 = percentile(write, "50.000000");
        let sync_p50 = percentile(sync, "50.000000");
        let result = FioResult {
            job: format!("{job} ({version})"),
            round: 0,
            ops_per_sec,
            write_p50_us: write_p50,
            sync_p50_us: sync_p50,
            sync_p99_us: percentile(sync, "99.000000"),
            op_p50_us: write_p50 + sync_p50,
            mean_op_us: 1e6 / ops_per_sec.max(1e-9),
        };
        eprintln!(
            "  fio {:<24} {:>8.0} ops/s  write p50 {} µs, fdatasync p50 {} µs",
            job, result.ops_per_sec, result.write_p50_us, result.sync_p50_us
        );
        results.push(result);
    }
    let _ = std::fs::remove_file(&file);
    Ok(results)
}

/// One redis-benchmark run of SET against Redis with an append-only file.
#[derive(Debug, Clone, Serialize)]
pub struct RedisResult {
    pub version: String,
    /// The matrix round it belongs to (set by the matrix).
    pub round: u32,
    pub appendfsync: String,
    pub connections: usize,
    pub requests: u64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

pub fn redis(
    scratch: &Path,
    connection_counts: &[usize],
    value_bytes: usize,
    keys: u64,
    duration: Duration,
) -> Result<Vec<RedisResult>, String> {
    let (Some(version), Some(_)) = (
        installed("redis-server", "--version"),
        installed("redis-benchmark", "--version"),
    ) else {
        eprintln!(
            "matrix: redis-server or redis-benchmark is not installed, no Redis reference ({INSTALL_HINT})"
        );
        return Ok(Vec::new());
    };
    let version = version
        .split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .map_or("Redis".to_string(), |v| format!("Redis {v}"));
    let mut results = Vec::new();
    for appendfsync in ["always", "everysec", "no"] {
        let dir = scratch.join(format!("redis-{appendfsync}"));
        std::fs::create_dir_all(&dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let port = free_port()?;
        let mut server = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--appendonly", "yes", "--appendfsync", appendfsync, "--save", ""])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start redis-server: {error}"))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let outcome = wait_for_redis(addr).and_then(|()| {
            let mut runs = Vec::new();
            for &connections in connection_counts {
                // A short probe sizes the real run to the duration (redis-benchmark counts requests).
                let probe = redis_benchmark(port, connections, value_bytes, keys, (connections as u64 * 100).max(2000))?;
                let requests = crate::recorder::whole(probe.0 * duration.as_secs_f64()).clamp(1000, 5_000_000);
                let (ops_per_sec, p50_us, p95_us, p99_us, max_us) =
                    redis_benchmark(port, connections, value_bytes, keys, requests)?;
                eprintln!(
                    "  redis appendfsync {appendfsync:<8} {connections:>3} conns  {ops_per_sec:>8.0} ops/s  p50 {p50_us} µs  p99 {p99_us} µs"
                );
                runs.push(RedisResult {
                    version: version.clone(),
                    round: 0,
                    appendfsync: appendfsync.to_string(),
                    connections,
                    requests,
                    ops_per_sec,
                    p50_us,
                    p95_us,
                    p99_us,
                    max_us,
                });
            }
            Ok(runs)
        });
        let _ = server.kill();
        let _ = server.wait();
        let _ = std::fs::remove_dir_all(&dir);
        results.extend(outcome?);
    }
    Ok(results)
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|error| format!("cannot find a free port: {error}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|error| error.to_string())
}

fn wait_for_redis(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let mut answer = [0u8; 7];
            if stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut answer).is_ok()
                && &answer == b"+PONG\r\n"
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("redis-server did not answer on {addr} within 10 s"))
}

/// Runs redis-benchmark's SET test; returns ops/s and p50, p95, p99 and max in microseconds.
fn redis_benchmark(
    port: u16,
    connections: usize,
    value_bytes: usize,
    keys: u64,
    requests: u64,
) -> Result<(f64, u64, u64, u64, u64), String> {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "set", "--csv"])
        .args(["-c", &connections.to_string(), "-n", &requests.to_string()])
        .args(["-d", &value_bytes.to_string(), "-r", &keys.to_string()])
        .output()
        .map_err(|error| format!("cannot run redis-benchmark: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_redis_csv(&text).ok_or_else(|| format!("cannot read redis-benchmark's output: {text:?}"))
}

/// Reads `"SET","rps","avg","min","p50","p95","p99","max"` (milliseconds) from the CSV.
fn parse_redis_csv(text: &str) -> Option<(f64, u64, u64, u64, u64)> {
    let line = text.lines().find(|line| line.starts_with("\"SET"))?;
    let fields: Vec<f64> = line
        .split(',')
        .skip(1)
        .map(|field| field.trim_matches('"').parse().ok())
        .collect::<Option<_>>()?;
    let micros = |ms: f64| crate::recorder::whole(ms * 1000.0);
    match fields[..] {
        [rps, _avg, _min, p50, p95, p99, max] => {
            Some((rps, micros(p50), micros(p95), micros(p99), micros(max)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmark_csv_is_read_in_microseconds() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"SET\",\"12345.68\",\"0.200\",\"0.050\",\"0.183\",\"0.311\",\"0.455\",\"2.031\"\n";
        assert_eq!(parse_redis_csv(csv), Some((12345.68, 183, 311, 455, 2031)));
        assert_eq!(parse_redis_csv("\"SET\",\"1\"\n"), None);
    }
}
