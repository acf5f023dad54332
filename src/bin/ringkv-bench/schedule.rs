//! The open-loop schedule: when each request was meant to be sent.
//!
//! At a total rate of R requests per second over N connections, request k of connection c is due
//! at (k·N + c) / R seconds after the start, so that the sends of all connections together form
//! an even grid at rate R. Latency is measured from that due time, not from the moment the request
//! actually went out: when the server stalls, the requests that should have been sent during the
//! stall are charged for the wait (no coordinated omission), as wrk2 does.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    rate_per_sec: f64,
    connections: u64,
    connection: u64,
}

impl Schedule {
    pub fn new(start: Instant, rate_per_sec: f64, connections: usize, connection: usize) -> Self {
        assert!(rate_per_sec > 0.0 && connection < connections);
        Schedule {
            start,
            rate_per_sec,
            connections: connections as u64,
            connection: connection as u64,
        }
    }

    /// When request `k` (from 0) of this connection is due.
    pub fn due(&self, k: u64) -> Instant {
        let slot = k * self.connections + self.connection;
        self.start + Duration::from_secs_f64(slot as f64 / self.rate_per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_connections_together_send_on_an_even_grid() {
        let start = Instant::now();
        let (rate, connections) = (1000.0, 4);
        let mut due: Vec<Instant> = (0..connections)
            .flat_map(|c| {
                let schedule = Schedule::new(start, rate, connections, c);
                (0..250).map(move |k| schedule.due(k))
            })
            .collect();
        due.sort();
        assert_eq!(due[0], start);
        for pair in due.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap.abs_diff(Duration::from_millis(1)) < Duration::from_micros(1),
                "gap {gap:?}"
            );
        }
        // 1000 requests at 1000/s: the last is due just before one second.
        assert!((due[999] - start).abs_diff(Duration::from_millis(999)) < Duration::from_micros(1));
    }

    #[test]
    fn a_connection_behind_schedule_is_charged_from_the_due_time() {
        // One connection at 100/s: requests due every 10 ms. The server stalls 50 ms on request 0,
        // then answers at once: requests 1..=5 were due during the stall and are charged for it.
        let start = Instant::now();
        let schedule = Schedule::new(start, 100.0, 1, 0);
        let mut now = start + Duration::from_millis(50); // request 0 completes
        let mut latencies = vec![now - schedule.due(0)];
        for k in 1..8 {
            let send = now.max(schedule.due(k));
            now = send + Duration::from_micros(100);
            latencies.push(now - schedule.due(k));
        }
        let ms: Vec<u128> = latencies.iter().map(std::time::Duration::as_millis).collect();
        assert_eq!(ms, [50, 40, 30, 20, 10, 0, 0, 0]);
    }
}
