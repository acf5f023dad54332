//! The server's side of a run, read from its `/metrics` before and after (and sampled every
//! second during it, for the largest exposure window): syncs per durable write, batch sizes, sync
//! latency. A small reader of the text format ringkv writes (`docs/metrics.md`), not a general
//! parser: the tests parse the page with a real one.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::recorder::whole;

/// One scrape: every sample, by its name with its labels as written (`name{a="b"}`).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    samples: HashMap<String, f64>,
}

impl Snapshot {
    /// Fetches and reads `/metrics` (HTTP/1.0, one connection per scrape).
    pub fn fetch(target: SocketAddr) -> Result<Snapshot, String> {
        let fail = |error: std::io::Error| format!("cannot scrape {target}/metrics: {error}");
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).map_err(fail)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(fail)?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: ringkv\r\n\r\n")
            .map_err(fail)?;
        let mut page = String::new();
        stream.read_to_string(&mut page).map_err(fail)?;
        let (head, body) = page
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{target}/metrics: no HTTP answer"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "{target}/metrics answered {:?} (a server without /metrics?)",
                head.lines().next().unwrap_or_default()
            ));
        }
        Ok(Snapshot::parse(body))
    }

    pub fn parse(body: &str) -> Snapshot {
        let samples = body
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .filter_map(|line| line.rsplit_once(' '))
            .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
            .collect();
        Snapshot { samples }
    }

    fn get(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }

    /// Sum over the samples of family `name` whose labels contain every `labels` pair.
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(key, _)| {
                let (family, rest) = key.split_once('{').unwrap_or((key.as_str(), ""));
                family == name && labels.iter().all(|label| rest.contains(label))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// A histogram's cumulative buckets (upper bound, count), in order, `+Inf` last.
    fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter_map(|(key, count)| {
                let bound = key.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, *count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

/// The server's side of a run, from the difference of two scrapes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerSide {
    /// Writes acknowledged as `always` or `group` during the run.
    pub durable_writes: u64,
    pub writes: u64,
    pub syncs: u64,
    /// Syncs per durable write (below 1: group commit shared them).
    pub syncs_per_durable_write: Option<f64>,
    pub wal_writes: u64,
    /// Records per WAL write: bucket upper bounds holding the median and the 99th percentile.
    pub batch_records_p50: Option<f64>,
    pub batch_records_p99: Option<f64>,
    /// Sync latency in microseconds: the upper bounds of the buckets holding p50, p99 and the
    /// slowest sync.
    pub sync_p50_us: Option<f64>,
    pub sync_p99_us: Option<f64>,
    pub sync_max_us: Option<f64>,
    /// The largest exposure window seen by the once-a-second samples, in seconds.
    pub max_exposure_s: f64,
    pub scrapes: u64,
}

/// The upper bound of the bucket holding quantile `q` of the difference of two histograms.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, count)| {
            let earlier = before.iter().find(|(b, _)| b == bound).map_or(0.0, |(_, c)| *c);
            (*bound, count - earlier)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    counts
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(bound, _)| *bound)
}

impl ServerSide {
    pub fn between(before: &Snapshot, after: &Snapshot, max_exposure_s: f64, scrapes: u64) -> ServerSide {
        let delta = |f: &dyn Fn(&Snapshot) -> f64| (f(after) - f(before)).max(0.0);
        let count = "ringkv_request_duration_seconds_count";
        let durable_writes =
            delta(&|s| s.sum(count, &["durability=\"always\""]) + s.sum(count, &["durability=\"group\""]));
        let writes = delta(&|s| s.sum(count, &["durability="]));
        let syncs = delta(&|s| s.get("ringkv_wal_syncs_total"));
        let records = |s: &Snapshot| s.buckets("ringkv_wal_batch_records");
        let sync = |s: &Snapshot| s.buckets("ringkv_wal_sync_duration_seconds");
        let micros = |seconds: Option<f64>| seconds.map(|s| (s * 1e6).round());
        ServerSide {
            durable_writes: whole(durable_writes),
            writes: whole(writes),
            syncs: whole(syncs),
            syncs_per_durable_write: (durable_writes > 0.0).then(|| syncs / durable_writes),
            wal_writes: whole(delta(&|s| s.get("ringkv_wal_writes_total"))),
            batch_records_p50: quantile(&records(before), &records(after), 0.5),
            batch_records_p99: quantile(&records(before), &records(after), 0.99),
            sync_p50_us: micros(quantile(&sync(before), &sync(after), 0.5)),
            sync_p99_us: micros(quantile(&sync(before), &sync(after), 0.99)),
            sync_max_us: micros(quantile(&sync(before), &sync(after), 1.0)),
            max_exposure_s,
            scrapes,
        }
    }

    pub fn table(&self) -> String {
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v}"));
        let show_us =
            |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| crate::recorder::format_micros(whole(v)));
        format!(
            "server side (/metrics, {} scrapes): {} writes, {} durable; {} syncs ({} per durable write); {} WAL writes, batch p50 <= {} records, p99 <= {}; sync p50 <= {}, p99 <= {}, max <= {}; largest exposure window {:.3} s\n",
            self.scrapes,
            self.writes,
            self.durable_writes,
            self.syncs,
            self.syncs_per_durable_write.map_or_else(|| "-".to_string(), |v| format!("{v:.3}")),
            self.wal_writes,
            show(self.batch_records_p50),
            show(self.batch_records_p99),
            show_us(self.sync_p50_us),
            show_us(self.sync_p99_us),
            show_us(self.sync_max_us),
            self.max_exposure_s
        )
    }
}

/// Scrapes every `interval` on a thread of its own until stopped; keeps the largest exposure
/// window seen.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<(f64, u64, Option<String>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(target: SocketAddr, interval: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let state: Arc<Mutex<(f64, u64, Option<String>)>> = Arc::new(Mutex::new((0.0, 0, None)));
        let thread = {
            let (stop, state) = (stop.clone(), state.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let scraped = Snapshot::fetch(target);
                    let mut state = state.lock().expect("not poisoned");
                    match scraped {
                        Ok(snapshot) => {
                            state.0 = state.0.max(snapshot.get("ringkv_wal_exposure_seconds"));
                            state.1 += 1;
                        }
                        Err(error) => state.2 = Some(error),
                    }
                    drop(state);
                    std::thread::sleep(interval);
                }
            })
        };
        Sampler {
            stop,
            state,
            thread: Some(thread),
        }
    }

    /// Stops; the largest exposure seen and the number of scrapes, or the first error.
    pub fn finish(mut self) -> Result<(f64, u64), String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let state = self.state.lock().expect("not poisoned");
        match &state.2 {
            Some(error) => Err(error.clone()),
            None => Ok((state.0, state.1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_and_bucket_quantiles() {
        let before = Snapshot::parse(
            "ringkv_wal_syncs_total 10\nringkv_request_duration_seconds_count{op=\"set\",durability=\"group\"} 5\nringkv_wal_batch_records_bucket{le=\"1\"} 5\nringkv_wal_batch_records_bucket{le=\"2\"} 5\nringkv_wal_batch_records_bucket{le=\"+Inf\"} 5\n",
        );
        let after = Snapshot::parse(
            "# TYPE x counter\nringkv_wal_syncs_total 30\nringkv_request_duration_seconds_count{op=\"set\",durability=\"group\"} 85\nringkv_request_duration_seconds_count{op=\"set\",durability=\"never\"} 20\nringkv_wal_batch_records_bucket{le=\"1\"} 6\nringkv_wal_batch_records_bucket{le=\"2\"} 20\nringkv_wal_batch_records_bucket{le=\"+Inf\"} 25\n",
        );
        let side = ServerSide::between(&before, &after, 0.5, 3);
        assert_eq!(side.durable_writes, 80);
        assert_eq!(side.writes, 100);
        assert_eq!(side.syncs, 20);
        assert_eq!(side.syncs_per_durable_write, Some(0.25));
        // 20 batches in the run: 1 of one record, 14 of two, 5 of more.
        assert_eq!(side.batch_records_p50, Some(2.0));
        assert_eq!(side.batch_records_p99, Some(f64::INFINITY));
    }
}
