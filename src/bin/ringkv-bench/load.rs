//! Runs a load against one server: N keep-alive connections, closed or open loop, bounded by a
//! duration (and optionally a request count), with a progress line every second.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::client::Connection;
use crate::recorder::{format_micros, Recorder};
use crate::schedule::Schedule;
use crate::scrape::{Sampler, ServerSide, Snapshot};
use crate::workload::{DurabilityMix, KeyDist, KeyPicker, Kind, Mix, Op, RequestWriter};

/// One load's parameters.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: SocketAddr,
    pub connections: usize,
    /// Open loop at this total rate; `None`: closed loop, each connection as fast as it can.
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Load run before measuring, not recorded.
    pub warmup: Duration,
    /// Stop after this many measured requests.
    pub max_requests: Option<u64>,
    pub mix: Mix,
    /// The classes writes ask for; `None`: the server's.
    pub durability: Option<DurabilityMix>,
    pub keys: u64,
    pub key_dist: KeyDist,
    pub value_bytes: usize,
    pub seed: u64,
    pub progress: bool,
}

/// What a load measured.
pub struct LoadResult {
    pub recorder: Recorder,
    pub elapsed: Duration,
    pub connection_errors: u64,
    /// Open loop: requests due in the measured window that were never sent, because the loop was
    /// still behind the schedule when [`catch_up_limit`] after the window had passed.
    pub unsent: u64,
}

struct Shared {
    spec: LoadSpec,
    keys: KeyPicker,
    writer: RequestWriter,
    /// Until this instant requests are not recorded.
    measure_from: Cell<Instant>,
    stop_at: Cell<Instant>,
    measured: RefCell<Recorder>,
    /// Since the last progress line.
    interval: RefCell<Recorder>,
    connection_errors: Cell<u64>,
    unsent: Cell<u64>,
}

impl Shared {
    /// Whether a request that began (closed loop) or was due (open loop) at `began` is past the
    /// end. An open loop behind its schedule still sends, late, every request due before the end:
    /// stopping at the clock would drop exactly the requests a stall at the end delayed.
    fn stopping(&self, began: Instant) -> bool {
        began >= self.stop_at.get()
            || self
                .spec
                .max_requests
                .is_some_and(|max| self.measured.borrow().answered() >= max)
    }
}

/// The client's ring: tokio-uring's default size.
pub const CLIENT_RING_ENTRIES: u32 = 256;

/// Runs `spec` on a tokio-uring runtime of its own while scraping the server's `/metrics`: once
/// when the measured window starts (after the warm-up), every `interval` during the run (for the
/// largest exposure window), and once at the end; returns the load's result and the server's
/// side of the measured window.
pub fn run_with_metrics(spec: &LoadSpec, interval: Duration) -> Result<(LoadResult, ServerSide), String> {
    let target = spec.target;
    Snapshot::fetch(target)?;
    let warmup = spec.warmup;
    let before = std::thread::spawn(move || {
        std::thread::sleep(warmup);
        Snapshot::fetch(target)
    });
    let sampler = Sampler::start(target, interval);
    let result = ringkv::io::ring::start(CLIENT_RING_ENTRIES, run(spec.clone()));
    let sampled = sampler.finish();
    let after = Snapshot::fetch(target)?;
    let before = before
        .join()
        .map_err(|_| "the scraping thread panicked".to_string())??;
    let result = result?;
    let (max_exposure, scrapes) = sampled?;
    Ok((
        result,
        ServerSide::between(&before, &after, max_exposure, scrapes + 2),
    ))
}

/// Runs `spec` on the current tokio-uring runtime.
pub async fn run(spec: LoadSpec) -> Result<LoadResult, String> {
    let keys = KeyPicker::new(spec.key_dist, spec.keys)?;
    let writer = RequestWriter::new(spec.target.to_string(), spec.value_bytes);
    // Connect everything first, so that connection set-up is not in the measurements.
    let mut connections = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let connection = Connection::connect(spec.target)
            .await
            .map_err(|error| format!("cannot connect to {}: {error}", spec.target))?;
        connections.push(connection);
    }
    let start = Instant::now();
    let shared = Rc::new(Shared {
        measure_from: Cell::new(start + spec.warmup),
        stop_at: Cell::new(start + spec.warmup + spec.duration),
        spec,
        keys,
        writer,
        measured: RefCell::new(Recorder::default()),
        interval: RefCell::new(Recorder::default()),
        connection_errors: Cell::new(0),
        unsent: Cell::new(0),
    });
    let progress = shared
        .spec
        .progress
        .then(|| tokio_uring::spawn(report_progress(shared.clone(), start)));
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(index, connection)| tokio_uring::spawn(drive(shared.clone(), index, connection, start)))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let finished = Instant::now();
    if let Some(progress) = progress {
        progress.abort();
    }
    let measure_from = shared.measure_from.get();
    let recorder = shared.measured.borrow().clone();
    // A closed loop's figures end with the window; an open loop's end when the last request due
    // in it was answered, so a server that fell behind does not get the schedule's throughput.
    let measured_until = match shared.spec.rate {
        None => finished.min(shared.stop_at.get()),
        Some(_) => finished,
    };
    Ok(LoadResult {
        recorder,
        elapsed: measured_until.saturating_duration_since(measure_from),
        connection_errors: shared.connection_errors.get(),
        unsent: shared.unsent.get(),
    })
}

async fn drive(shared: Rc<Shared>, index: usize, mut connection: Connection, start: Instant) {
    let spec = &shared.spec;
    let mut rng = SmallRng::seed_from_u64(spec.seed.wrapping_add(index as u64));
    let schedule = spec
        .rate
        .map(|rate| Schedule::new(start, rate, spec.connections, index));
    let mut request = Vec::with_capacity(spec.value_bytes + 256);
    let mut k = 0u64;
    loop {
        let began = match schedule {
            Some(schedule) => {
                let due = schedule.due(k);
                k += 1;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
                let stop_at = shared.stop_at.get();
                if due < stop_at && Instant::now() >= stop_at + catch_up_limit(spec.duration) {
                    // Bounded: count what is still due in the window instead of sending it.
                    let unsent = (k - 1..)
                        .take_while(|&later| schedule.due(later) < stop_at)
                        .filter(|&later| schedule.due(later) >= shared.measure_from.get())
                        .count();
                    shared.unsent.set(shared.unsent.get() + unsent as u64);
                    return;
                }
                due
            }
            None => Instant::now(),
        };
        if shared.stopping(began) {
            return;
        }
        let op = spec.mix.pick(&mut rng);
        let durability = match (op, spec.durability) {
            (Op::Set | Op::Del, Some(mix)) => Some(mix.pick(&mut rng)),
            _ => None,
        };
        let op = Kind { op, durability };
        let key = shared.keys.pick(&mut rng);
        request.clear();
        shared.writer.write(&mut request, op, key);
        let (outcome, returned) = connection.exchange(request).await;
        request = returned;
        let done = Instant::now();
        // Counted by when it began (was due): a request cut off by the end is not dropped, so a
        // stall at the end still shows.
        let measured = began >= shared.measure_from.get();
        match outcome {
            Ok(status) => {
                if measured {
                    shared.measured.borrow_mut().record(op, done - began, status);
                }
                shared.interval.borrow_mut().record(op, done - began, status);
            }
            Err(error) => {
                if measured {
                    shared.measured.borrow_mut().record_failure(op);
                }
                shared.connection_errors.set(shared.connection_errors.get() + 1);
                if spec.progress {
                    eprintln!("ringkv-bench: connection {index}: {error}; reconnecting");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                match Connection::connect(spec.target).await {
                    Ok(fresh) => connection = fresh,
                    Err(_) => return,
                }
            }
        }
    }
}

/// How long after the end of the window an open loop that fell behind its schedule goes on
/// sending the requests due in the window: the window's own length, at least 1 s.
fn catch_up_limit(duration: Duration) -> Duration {
    duration.max(Duration::from_secs(1))
}

async fn report_progress(shared: Rc<Shared>, start: Instant) {
    let mut ticks = tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
    let mut last = Instant::now();
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let interval = std::mem::take(&mut *shared.interval.borrow_mut());
        let total = interval.total();
        let summary = total.summary(now - last);
        last = now;
        let phase = if now < shared.measure_from.get() {
            " (warm-up)"
        } else {
            ""
        };
        eprintln!(
            "  {:>5.1} s{phase}  {:>9.0} ops/s  p50 {:>9}  p99 {:>9}  max {:>9}  errors {}",
            (now - start).as_secs_f64(),
            summary.ops_per_sec,
            format_micros(summary.p50_us),
            format_micros(summary.p99_us),
            format_micros(summary.max_us),
            total.errors,
        );
    }
}
