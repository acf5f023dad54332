//! The shape of background I/O (flush and compaction): one request of `request_bytes` at a time,
//! paced at `bytes_per_sec`, so that it leaves the disk to the WAL's syncs and the serving ring's
//! point reads (DESIGN.md: WAL syncs fall from ~9,400/s to ~20/s when 1 MiB writes run
//! unthrottled, 4 in flight; BENCHMARKS.md: a point read queued behind a background request
//! waits for all of it, so GET p99 during compaction grows with the request size). Owns time
//! arithmetic only.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::io::FileSystem;

/// Paces writes at `bytes_per_sec` with no burst: each write may start only once the previous
/// ones have "paid" for their bytes.
pub struct RateLimiter {
    bytes_per_sec: u64,
    request_bytes: usize,
    next_start: Cell<Option<Instant>>,
    /// Once set (a shutdown), nothing waits any more: the work in progress finishes at disk
    /// speed or stops at its next check, instead of holding the shutdown for as long as its
    /// pace says (a 512 KiB entry at 4 KiB/s took 128 s).
    lifted: Option<Arc<AtomicBool>>,
}

impl RateLimiter {
    /// `bytes_per_sec == 0` means unlimited. `request_bytes` is rounded up to whole 4 KiB blocks.
    pub fn new(bytes_per_sec: u64, request_bytes: usize) -> Self {
        RateLimiter {
            bytes_per_sec,
            request_bytes: crate::io::round_up_to_block(request_bytes.max(1)),
            next_start: Cell::new(None),
            lifted: None,
        }
    }

    /// The same limiter, lifted once `flag` is set (see the `lifted` field).
    #[must_use]
    pub fn lifted_by(mut self, flag: Arc<AtomicBool>) -> Self {
        self.lifted = Some(flag);
        self
    }

    /// The size of each background read or write.
    pub fn request_bytes(&self) -> usize {
        self.request_bytes
    }

    /// How long a write of `bytes` issued at `now` must wait, charging it to the budget.
    pub fn reserve(&self, bytes: usize, now: Instant) -> Duration {
        let lifted = self
            .lifted
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed));
        if self.bytes_per_sec == 0 || lifted {
            return Duration::ZERO;
        }
        let start = self.next_start.get().map_or(now, |next| next.max(now));
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        self.next_start.set(Some(start + cost));
        start - now
    }

    /// Waits, on `fs`'s clock, until a write of `bytes` may start.
    pub async fn acquire<F: FileSystem>(&self, fs: &F, bytes: usize) {
        let wait = self.reserve(bytes, fs.now());
        if !wait.is_zero() {
            fs.sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_back_to_back_writes_and_forgives_idle_time() {
        let limiter = RateLimiter::new(1 << 20, 1 << 20);
        let t0 = Instant::now();
        assert_eq!(limiter.reserve(1 << 20, t0), Duration::ZERO);
        assert_eq!(limiter.reserve(1 << 20, t0), Duration::from_secs(1));
        assert_eq!(limiter.reserve(512 << 10, t0), Duration::from_secs(2));
        // After a long pause the budget does not accumulate into a burst.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(limiter.reserve(1 << 20, later), Duration::ZERO);
        assert_eq!(limiter.reserve(1, later), Duration::from_secs(1));
        assert_eq!(RateLimiter::new(0, 4096).reserve(1 << 30, t0), Duration::ZERO);
        let stop = Arc::new(AtomicBool::new(false));
        let lifted = RateLimiter::new(4096, 4096).lifted_by(stop.clone());
        assert_eq!(lifted.reserve(4096, t0), Duration::ZERO);
        assert_eq!(lifted.reserve(4096, t0), Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(lifted.reserve(1 << 30, t0), Duration::ZERO);
    }
}
