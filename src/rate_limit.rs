//! A byte-rate limit for background writes (flush and compaction), so that their large direct
//! writes leave the disk to the WAL's syncs (DESIGN.md: WAL syncs fall from ~9,400/s to ~20/s
//! when 1 MiB writes run unthrottled). Owns time arithmetic only.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Paces writes at `bytes_per_sec` with no burst: each write may start only once the previous
/// ones have "paid" for their bytes.
pub struct RateLimiter {
    bytes_per_sec: u64,
    next_start: Cell<Option<Instant>>,
}

impl RateLimiter {
    /// `bytes_per_sec == 0` means unlimited.
    pub fn new(bytes_per_sec: u64) -> Self {
        RateLimiter {
            bytes_per_sec,
            next_start: Cell::new(None),
        }
    }

    /// How long a write of `bytes` issued at `now` must wait, charging it to the budget.
    pub fn reserve(&self, bytes: usize, now: Instant) -> Duration {
        if self.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        let start = self.next_start.get().map_or(now, |next| next.max(now));
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        self.next_start.set(Some(start + cost));
        start - now
    }

    /// Waits until a write of `bytes` may start.
    pub async fn acquire(&self, bytes: usize) {
        let wait = self.reserve(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_back_to_back_writes_and_forgives_idle_time() {
        let limiter = RateLimiter::new(1 << 20);
        let t0 = Instant::now();
        assert_eq!(limiter.reserve(1 << 20, t0), Duration::ZERO);
        assert_eq!(limiter.reserve(1 << 20, t0), Duration::from_secs(1));
        assert_eq!(limiter.reserve(512 << 10, t0), Duration::from_secs(2));
        // After a long pause the budget does not accumulate into a burst.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(limiter.reserve(1 << 20, later), Duration::ZERO);
        assert_eq!(limiter.reserve(1, later), Duration::from_secs(1));
        assert_eq!(RateLimiter::new(0).reserve(1 << 30, t0), Duration::ZERO);
    }
}
