//! Fixed-bucket histograms of plain counters, owned by one ring (no atomics, no locks): a record
//! is a bucket search and three additions.

use std::cell::Cell;
use std::time::Duration;

/// Latency bounds in microseconds: 1 µs to 10 s, five per decade (1, 2, 3, 5, 7).
pub const LATENCY_MICROS: &[u64] = &latency_bounds();

const fn latency_bounds() -> [u64; 36] {
    let steps = [1, 2, 3, 5, 7];
    let mut bounds = [0; 36];
    let mut decade = 1;
    let mut i = 0;
    while i < 35 {
        bounds[i] = steps[i % 5] * decade;
        if i % 5 == 4 {
            decade *= 10;
        }
        i += 1;
    }
    bounds[35] = 10_000_000;
    bounds
}

/// Bounds for counts (records per WAL batch): powers of two up to 65,536.
pub const COUNT: &[u64] = &powers_of_two::<17>(1);
/// Bounds for sizes (bytes per WAL batch): powers of two from 512 B to 64 MiB.
pub const BYTES: &[u64] = &powers_of_two::<18>(512);

const fn powers_of_two<const N: usize>(first: u64) -> [u64; N] {
    let mut bounds = [0; N];
    let mut i = 0;
    while i < N {
        bounds[i] = first << i;
        i += 1;
    }
    bounds
}

/// What the bounds count: rendered in seconds (from microseconds) or as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Micros,
    Plain,
}

/// Observations per bucket (`counts[i]`: values up to `bounds[i]`, the last one above every
/// bound), with their sum and count.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    unit: Unit,
    counts: Box<[Cell<u64>]>,
    sum: Cell<u64>,
    count: Cell<u64>,
}

impl Histogram {
    pub fn new(bounds: &'static [u64], unit: Unit) -> Self {
        assert!(
            bounds.windows(2).all(|pair| pair[0] < pair[1]),
            "bounds must increase"
        );
        Histogram {
            bounds,
            unit,
            counts: (0..=bounds.len()).map(|_| Cell::new(0)).collect(),
            sum: Cell::new(0),
            count: Cell::new(0),
        }
    }

    /// A latency histogram, 1 µs to 10 s.
    pub fn latency() -> Self {
        Histogram::new(LATENCY_MICROS, Unit::Micros)
    }

    pub fn record(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        let cell = &self.counts[bucket];
        cell.set(cell.get() + 1);
        self.sum.set(self.sum.get().saturating_add(value));
        self.count.set(self.count.get() + 1);
    }

    pub fn record_duration(&self, duration: Duration) {
        debug_assert_eq!(self.unit, Unit::Micros);
        self.record(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn count(&self) -> u64 {
        self.count.get()
    }

    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// (upper bound, cumulative count) per bucket, `None` for `+Inf`; then the sum.
    pub fn cumulative(&self) -> (Vec<(Option<u64>, u64)>, u64) {
        let mut total = 0;
        let buckets = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, count)| {
                total += count.get();
                (self.bounds.get(i).copied(), total)
            })
            .collect();
        (buckets, self.sum.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_bounds_span_1us_to_10s_five_per_decade() {
        assert_eq!(LATENCY_MICROS[0], 1);
        assert_eq!(&LATENCY_MICROS[..6], &[1, 2, 3, 5, 7, 10]);
        assert_eq!(LATENCY_MICROS[34], 7_000_000);
        assert_eq!(*LATENCY_MICROS.last().unwrap(), 10_000_000);
        assert_eq!(BYTES.last(), Some(&(64 << 20)));
        assert_eq!(COUNT.last(), Some(&65_536));
    }

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::new(&[1, 10, 100], Unit::Plain);
        for value in [0, 1, 2, 10, 11, 100, 101, 5000] {
            histogram.record(value);
        }
        let (buckets, sum) = histogram.cumulative();
        assert_eq!(
            buckets,
            vec![(Some(1), 2), (Some(10), 4), (Some(100), 6), (None, 8)]
        );
        assert_eq!(sum, 5225);
        assert_eq!(histogram.count(), 8);
    }
}
