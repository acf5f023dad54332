//! Latency histograms and outcome counts, per operation, and their summaries.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::Kind;

/// Latencies are recorded in microseconds, from 1 µs to an hour, at 3 significant digits.
const HIGHEST_MICROS: u64 = 3_600_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("static histogram bounds are valid")
}

/// What happened to the requests of one operation.
#[derive(Clone)]
pub struct OpRecord {
    pub latency: Histogram<u64>,
    /// 2xx answers.
    pub ok: u64,
    /// 404 answers (a get or del of an absent key: a normal outcome, not an error).
    pub not_found: u64,
    /// Any other status, or a connection that failed with the request in flight.
    pub errors: u64,
}

impl Default for OpRecord {
    fn default() -> Self {
        OpRecord {
            latency: new_histogram(),
            ok: 0,
            not_found: 0,
            errors: 0,
        }
    }
}

/// Records per operation (and class asked for).
#[derive(Clone, Default)]
pub struct Recorder {
    pub ops: BTreeMap<Kind, OpRecord>,
}

impl Recorder {
    /// Records one answered request. Latencies beyond the histogram's range are clamped to it.
    pub fn record(&mut self, op: Kind, latency: Duration, status: u16) {
        let record = self.ops.entry(op).or_default();
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, HIGHEST_MICROS);
        record.latency.record(micros).expect("clamped into range");
        match status {
            200..=299 => record.ok += 1,
            404 => record.not_found += 1,
            _ => record.errors += 1,
        }
    }

    /// Records a request lost with its connection (no latency).
    pub fn record_failure(&mut self, op: Kind) {
        self.ops.entry(op).or_default().errors += 1;
    }

    /// Every operation together.
    pub fn total(&self) -> OpRecord {
        let mut total = OpRecord::default();
        for record in self.ops.values() {
            total.latency.add(&record.latency).expect("same bounds");
            total.ok += record.ok;
            total.not_found += record.not_found;
            total.errors += record.errors;
        }
        total
    }

    pub fn answered(&self) -> u64 {
        self.ops.values().map(|r| r.latency.len()).sum()
    }
}

/// The figures of one histogram over a measured interval, latencies in microseconds.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub ops_per_sec: f64,
    pub ok: u64,
    pub not_found: u64,
    pub errors: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// (percentile, latency µs) pairs for a percentile plot, from p0 to p99.999 and the max.
    pub percentiles: Vec<(f64, u64)>,
}

/// Percentiles kept for plotting: evenly spaced in "nines".
pub const PLOT_PERCENTILES: [f64; 17] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.99, 99.995, 99.999,
    100.0,
];

impl OpRecord {
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let h = &self.latency;
        let answered = h.len();
        let requests = answered.max(self.ok + self.not_found + self.errors);
        Summary {
            requests,
            ops_per_sec: answered as f64 / elapsed.as_secs_f64().max(1e-9),
            ok: self.ok,
            not_found: self.not_found,
            errors: self.errors,
            mean_us: if answered == 0 { 0.0 } else { h.mean() },
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            percentiles: PLOT_PERCENTILES
                .iter()
                .map(|&p| (p, h.value_at_quantile(p / 100.0)))
                .collect(),
        }
    }
}

impl Summary {
    /// p50, p90, p99, p99.9 and max, formatted for a table.
    pub fn latency_columns(&self) -> [String; 5] {
        [self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us].map(format_micros)
    }
}

/// Formats microseconds for a table: µs below 10 ms, ms above.
pub fn format_micros(micros: u64) -> String {
    if micros < 10_000 {
        format!("{micros} µs")
    } else if micros < 10_000_000 {
        format!("{:.1} ms", micros as f64 / 1000.0)
    } else {
        format!("{:.2} s", micros as f64 / 1e6)
    }
}

/// A measured, non-negative figure (a rate, a mean in µs, a sampled rank) as a whole number:
/// rounded, saturating at 0 and `u64::MAX` (Rust's float-to-int `as` saturates; NaN gives 0).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "saturating by definition of `as` from floats; measured figures are far below 2^53"
)]
pub fn whole(figure: f64) -> u64 {
    figure.round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Op;

    #[test]
    fn records_latencies_statuses_and_percentiles() {
        let mut recorder = Recorder::default();
        // 990 fast sets (100 µs), 10 slow ones (50 ms): p99 is fast, p99.9 and max are slow.
        for i in 0..1000 {
            let latency = if i % 100 == 0 { 50_000 } else { 100 };
            recorder.record(Op::Set.into(), Duration::from_micros(latency), 200);
        }
        recorder.record(Op::Get.into(), Duration::from_micros(30), 404);
        recorder.record(Op::Get.into(), Duration::from_micros(30), 500);
        recorder.record_failure(Op::Del.into());
        let set = recorder.ops[&Op::Set.into()].summary(Duration::from_secs(2));
        assert_eq!(set.requests, 1000);
        assert_eq!(set.ops_per_sec, 500.0);
        assert_eq!((set.p50_us, set.p90_us, set.p99_us), (100, 100, 100));
        // hdrhistogram keeps 3 significant digits: 50 ms reads back within 0.1%.
        assert!(set.p999_us.abs_diff(50_000) <= 50, "{}", set.p999_us);
        assert!(set.max_us.abs_diff(50_000) <= 50, "{}", set.max_us);
        let total = recorder.total();
        assert_eq!((total.ok, total.not_found, total.errors), (1000, 1, 2));
        assert_eq!(recorder.answered(), 1002);
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() {
        let mut recorder = Recorder::default();
        recorder.record(Op::Get.into(), Duration::ZERO, 200);
        recorder.record(Op::Get.into(), Duration::from_secs(7200), 200);
        let summary = recorder.ops[&Op::Get.into()].summary(Duration::from_secs(1));
        assert_eq!(summary.requests, 2);
        assert_eq!(summary.p50_us, 1);
        assert!(summary.max_us >= HIGHEST_MICROS);
    }

    #[test]
    fn micros_format_by_magnitude() {
        assert_eq!(format_micros(950), "950 µs");
        assert_eq!(format_micros(12_345), "12.3 ms");
        assert_eq!(format_micros(12_345_678), "12.35 s");
    }
}
