//! The accept loop and the per-connection loop on the serving ring: read, answer every complete
//! (possibly pipelined) request in order, write the answers back in one go. Also tracks open
//! connections, so that a shutdown can stop accepting, close idle connections and let busy ones
//! finish, and so that a reaper can end connections past their deadline (idle too long, a
//! request arriving too slowly, an answer not taken).
//!
//! tokio-uring cannot cancel an operation by dropping its future, so nothing here wraps a socket
//! operation in a timeout or a select: a read or write is ended by shutting the socket down.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};

use super::request::{parse_resuming, ChunkedProgress, Limits, Parsed};
use super::response::{Response, Status};
use super::routes::{self, SetInFlight, Started};
use super::stats::HttpStats;
use crate::config::HttpConfig;
use crate::engine::Engine;
use crate::io::FileSystem;

/// Bytes requested from the socket per read.
const READ_CHUNK_BYTES: usize = 16 << 10;
/// An idle connection keeps at most this much buffer; a larger one (after a big request) is freed.
const IDLE_BUFFER_BYTES_MAX: usize = 64 << 10;
/// Answers to pipelined requests are written out once this many bytes are waiting, before the
/// next request is answered: a client that pipelines thousands of GETs of a large value and
/// never reads holds one threshold plus one answer, not every answer.
const OUTPUT_FLUSH_BYTES: usize = 256 << 10;
/// Pipelined sets started on one connection before the first of them is answered: they share
/// WAL batches (and syncs); past this many, the connection answers them before starting more.
const SETS_IN_FLIGHT_MAX: usize = 256;
/// A new connection's first read: enough for a typical request, small enough that ten thousand
/// connections that never send anything hold little memory.
const FIRST_READ_BYTES: usize = 2 << 10;
/// After an error answered before the request was read to its end (413, 400, ...), the
/// connection reads and discards for this long, or this many bytes, before it closes (see
/// `linger`).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 << 20;

/// What a connection's task is doing, as the reaper and `stop` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request.
    Idle,
    /// Part of a request has arrived.
    Reading,
    /// Answering: the store is working on it, no deadline.
    Handling,
    Writing,
    /// Reading and discarding before a close (no answer is due, so no 408).
    Lingering,
}

/// A connection's shared state: its task sets it, the reaper and `stop` read it.
struct Connection {
    fd: RawFd,
    phase: Cell<Phase>,
    deadline: Cell<Option<Instant>>,
    /// Set by the reaper when the deadline passed. Bytes that arrive afterwards (a read that
    /// completed in the same tick) are never executed: the client may have been told 408.
    timed_out: Cell<bool>,
}

impl Connection {
    fn enter(&self, phase: Phase, deadline: Option<Instant>) {
        self.phase.set(phase);
        self.deadline.set(deadline);
    }
}

/// A pipelined set started and not yet answered, with what its answer needs.
struct InFlight<'e, F: FileSystem> {
    set: SetInFlight<'e, F>,
    received: Instant,
    keep_alive: bool,
    http10: bool,
}

/// See the module documentation.
pub struct Server<F: FileSystem> {
    engine: Rc<Engine<F>>,
    config: HttpConfig,
    connections: RefCell<HashMap<u64, Rc<Connection>>>,
    next_connection_id: Cell<u64>,
    listener_fd: Cell<Option<RawFd>>,
    stopping: Cell<bool>,
    drained: Notify,
    /// The budget for large requests being buffered (`--max-buffered-bytes`), in bytes: a
    /// connection takes a request's worst case from it before its buffer grows past a small
    /// request's, and gives it back once the request is read.
    large_requests: tokio::sync::Semaphore,
    stats: HttpStats,
    /// Cluster mode: every request goes here instead of straight to the store.
    cluster: RefCell<Option<Rc<dyn super::cluster::ClusterRoutes>>>,
}

/// The accept loop's pause after a failed accept: 10 ms, doubling to 1 s while accepts keep
/// failing, with one log line when failures start and one when they end (not one per failure).
#[derive(Default)]
struct AcceptBackoff {
    failures: u64,
    pause: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const LONGEST: Duration = Duration::from_secs(1);

    fn failed(&mut self, error: &std::io::Error) -> Duration {
        if self.failures == 0 {
            tracing::warn!(
                "accept failed: {error}; backing off up to {:?} until it works again",
                Self::LONGEST
            );
            self.pause = Self::FIRST;
        } else {
            self.pause = (self.pause * 2).min(Self::LONGEST);
        }
        self.failures += 1;
        self.pause
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!("accept works again after {} failures", self.failures);
            self.failures = 0;
        }
    }
}

impl<F: FileSystem> Server<F> {
    pub fn new(engine: Rc<Engine<F>>, config: HttpConfig) -> Rc<Self> {
        Rc::new(Server {
            engine,
            connections: RefCell::new(HashMap::new()),
            next_connection_id: Cell::new(0),
            listener_fd: Cell::new(None),
            stopping: Cell::new(false),
            drained: Notify::new(),
            large_requests: tokio::sync::Semaphore::new(
                config.max_buffered_bytes.min(tokio::sync::Semaphore::MAX_PERMITS),
            ),
            config,
            stats: HttpStats::default(),
            cluster: RefCell::new(None),
        })
    }

    /// Serves in cluster mode: requests go to `routes` (set before the accept loop starts).
    pub fn serve_cluster(&self, routes: Rc<dyn super::cluster::ClusterRoutes>) {
        *self.cluster.borrow_mut() = Some(routes);
    }

    /// Accepts connections until [`Server::stop`], each served by its own task. Past
    /// `max_connections`, a new connection is told 503 and closed at once.
    pub async fn accept_loop(self: Rc<Self>, listener: TcpListener) {
        self.listener_fd.set(Some(listener.as_raw_fd()));
        tokio_uring::spawn(self.clone().reap_loop());
        let max_connections = self.config.max_connections.unwrap_or(usize::MAX);
        let mut refusal = Vec::new();
        let message = format!(
            "the server holds its limit of {max_connections} connections (--max-connections); retry later"
        );
        let mut response = Response::error(Status::ServiceUnavailable, &message);
        response.retry_after = Some(1);
        response.write_to(&mut refusal, false, false);
        let mut backoff = AcceptBackoff::default();
        loop {
            let accepted = listener.accept().await;
            if self.stopping.get() {
                return;
            }
            match accepted {
                Ok((stream, _peer)) if self.connections.borrow().len() >= max_connections => {
                    backoff.succeeded();
                    // Best effort and never blocking: a new socket's buffer takes the short
                    // answer. Dropping the stream closes it.
                    let _ = crate::sys::send_nonblocking(stream.as_raw_fd(), &refusal);
                    HttpStats::add(&self.stats.connections_refused);
                }
                Ok((stream, _peer)) => {
                    backoff.succeeded();
                    HttpStats::add(&self.stats.connections_accepted);
                    let id = self.next_connection_id.get();
                    self.next_connection_id.set(id + 1);
                    let connection = Rc::new(Connection {
                        fd: stream.as_raw_fd(),
                        phase: Cell::new(Phase::Idle),
                        deadline: Cell::new(None),
                        timed_out: Cell::new(false),
                    });
                    self.connections.borrow_mut().insert(id, connection.clone());
                    tokio_uring::spawn(self.clone().serve_connection(stream, id, connection));
                }
                Err(error) => {
                    // Out of descriptors or memory: back off instead of spinning; the clients
                    // already connected keep being served.
                    let pause = backoff.failed(&error);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Takes `bytes` of the large-request budget for the request a connection is reading, in
    /// arrival order. While waiting, the request's deadline still runs: `None` if it passed (the
    /// reaper then answers 408). Requests that cannot all be buffered are thus let through a few
    /// at a time, each reading to its end, rather than all stalling half read.
    async fn reserve_large_request(
        &self,
        connection: &Connection,
        request_started: Instant,
        bytes: usize,
    ) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let deadline = request_started + self.config.request_timeout;
        connection.enter(Phase::Reading, Some(deadline));
        let bytes = u32::try_from(bytes.min(self.config.max_buffered_bytes)).unwrap_or(u32::MAX);
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::select! {
            permit = self.large_requests.acquire_many(bytes) => permit.ok(),
            () = tokio::time::sleep(left) => None,
        }
    }

    /// Stops accepting and closes idle connections; busy ones close after their current answer.
    pub fn stop(&self) {
        self.stopping.set(true);
        if let Some(fd) = self.listener_fd.get() {
            // Wakes the pending accept with an error (Linux), ending the accept loop.
            // `fd` is the listener's descriptor, open while the accept loop runs.
            crate::sys::shutdown_socket(fd);
        }
        for connection in self.connections.borrow().values() {
            if connection.phase.get() == Phase::Idle {
                // The descriptor stays open until its task removes it from this map.
                crate::sys::shutdown_socket(connection.fd);
            }
        }
    }

    /// Waits until every connection has closed, or `limit` has passed.
    pub async fn wait_drained(&self, limit: Duration) -> bool {
        let drained = async {
            loop {
                let notified = self.drained.notified();
                if self.connections.borrow().is_empty() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, drained).await.is_ok()
    }

    fn forget(&self, id: u64) {
        let mut connections = self.connections.borrow_mut();
        connections.remove(&id);
        if connections.is_empty() {
            self.drained.notify_waiters();
        }
    }

    /// Ends connections past their deadline, checking a few times per shortest timeout. A
    /// connection in the middle of a request is told 408 first (best effort, never blocking).
    async fn reap_loop(self: Rc<Self>) {
        let shortest = self.config.request_timeout.min(self.config.idle_timeout);
        let tick = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut timeout_answer = Vec::new();
        let message = format!(
            "the request did not arrive within {:?}",
            self.config.request_timeout
        );
        Response::error(Status::RequestTimeout, &message).write_to(&mut timeout_answer, false, false);
        while !self.stopping.get() {
            tokio::time::sleep(tick).await;
            let now = Instant::now();
            for connection in self.connections.borrow().values() {
                if connection.deadline.get().is_none_or(|deadline| deadline > now) {
                    continue;
                }
                connection.deadline.set(None);
                connection.timed_out.set(true);
                // The descriptor stays open until its task removes it from this map, and while a
                // connection is reading, its task writes nothing. The 408 is a courtesy: a full
                // socket buffer drops it, and the shutdown closes the connection either way.
                if connection.phase.get() == Phase::Reading {
                    let _ = crate::sys::send_nonblocking(connection.fd, &timeout_answer);
                }
                crate::sys::shutdown_socket(connection.fd);
            }
        }
    }

    /// Before closing after an error answered early (413 from `Content-Length`, 400 in the
    /// head), reads and discards what the client still sends, for at most `LINGER_TIME` and
    /// `LINGER_BYTES`, after shutting the sending side so that the client sees the answer end.
    /// Closing with unread bytes makes the kernel send a reset, and a client still sending its
    /// body (Python's `http.client` and `requests` send it all without `Expect: 100-continue`)
    /// gets "connection reset" instead of reading the answer (Apache's and nginx's lingering
    /// close).
    async fn linger(stream: &TcpStream, connection: &Connection, mut buffer: Vec<u8>) {
        let _ = stream.shutdown(std::net::Shutdown::Write);
        connection.enter(Phase::Lingering, Some(Instant::now() + LINGER_TIME));
        buffer.clear();
        buffer.reserve(READ_CHUNK_BYTES);
        let mut discarded = 0;
        while discarded < LINGER_BYTES && !connection.timed_out.get() {
            let capacity = buffer.capacity();
            let (read, slice) = stream.read(buffer.slice(0..capacity)).await;
            buffer = slice.into_inner();
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    }

    /// Answers the pipelined sets started so far, in order, into `output`.
    async fn answer_in_flight(&self, in_flight: &mut VecDeque<InFlight<'_, F>>, output: &mut Vec<u8>) {
        while let Some(InFlight {
            set,
            received,
            keep_alive,
            http10,
        }) = in_flight.pop_front()
        {
            let response = set.answer().await;
            self.stats.note("/set", &response, received.elapsed());
            response.write_to(output, keep_alive, http10);
        }
    }

    async fn serve_connection(self: Rc<Self>, stream: TcpStream, id: u64, connection: Rc<Connection>) {
        // Small answers must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        self.connection_loop(&stream, &connection).await;
        self.forget(id);
    }

    async fn connection_loop(&self, stream: &TcpStream, connection: &Connection) {
        let limits = Limits {
            max_head_bytes: self.config.max_head_bytes,
            max_body_bytes: self.config.max_body_bytes(),
        };
        // Chunk framing may add bytes beyond the body; past this, the request is refused.
        let input_bytes_max = limits.max_head_bytes + 2 * limits.max_body_bytes + READ_CHUNK_BYTES;
        let mut input: Vec<u8> = Vec::with_capacity(FIRST_READ_BYTES);
        let mut output: Vec<u8> = Vec::new();
        let mut continue_sent = false;
        // The chunked body of the request at the start of `input`, decoded so far.
        let mut chunked = ChunkedProgress::default();
        // When the first byte of the request being read arrived.
        let mut request_started = Instant::now();
        // The budget a large request being read holds (`reserve_large_request`).
        let mut large_request = None;
        // Pipelined sets whose records are in the WAL, answered in order once a request that
        // must see them comes, or the parsed input runs out.
        let mut in_flight: VecDeque<InFlight<'_, F>> = VecDeque::new();
        // The last read filled the buffer: the client sends faster than small reads take.
        let mut read_filled_buffer = false;
        loop {
            let mut start = 0;
            let mut close = false;
            // An error was answered before the request was read to its end.
            let mut linger = false;
            // The output reached its threshold with requests left to answer in `input`.
            let mut answers_pending = false;
            loop {
                match parse_resuming(&input[start..], limits, &mut chunked) {
                    Ok(Parsed::Complete { request, consumed }) => {
                        // The request's last byte is in: the answer's latency starts.
                        let received = Instant::now();
                        // Answer earlier sets first if this request must see them, or if the
                        // set would wait for memtable room: that room comes from a flush, which
                        // waits for those sets to be applied.
                        if !routes::starts_before_earlier_writes_finish(request.method, request.target)
                            || self.engine.writes_must_wait()
                        {
                            self.answer_in_flight(&mut in_flight, &mut output).await;
                        }
                        let scrape = || {
                            crate::metrics::render(&self.engine, &self.stats, self.connections.borrow().len())
                        };
                        let cluster = self.cluster.borrow().clone();
                        let started = match cluster {
                            Some(cluster) => Started::Answered(
                                cluster
                                    .answer(request.method, request.target, &request.body, &scrape)
                                    .await,
                            ),
                            None => {
                                routes::start(
                                    &self.engine,
                                    &self.config,
                                    &scrape,
                                    request.method,
                                    request.target,
                                    &request.body,
                                )
                                .await
                            }
                        };
                        let keep_alive = request.keep_alive && !self.stopping.get();
                        match started {
                            Started::Writing(set) => in_flight.push_back(InFlight {
                                set,
                                received,
                                keep_alive,
                                http10: request.http10,
                            }),
                            Started::Answered(response) => {
                                // A refused set's answer comes after those before it.
                                self.answer_in_flight(&mut in_flight, &mut output).await;
                                self.stats.note(request.target, &response, received.elapsed());
                                response.write_to(&mut output, keep_alive, request.http10);
                            }
                        }
                        start += consumed;
                        continue_sent = false;
                        if !keep_alive {
                            close = true;
                            break;
                        }
                        if output.len() >= OUTPUT_FLUSH_BYTES || in_flight.len() >= SETS_IN_FLIGHT_MAX {
                            answers_pending = true;
                            break;
                        }
                    }
                    Ok(Parsed::Partial { expects_continue }) => {
                        self.answer_in_flight(&mut in_flight, &mut output).await;
                        if input.len() - start > input_bytes_max {
                            let message = format!("request exceeds {input_bytes_max} bytes");
                            Response::error(Status::ContentTooLarge, &message).write_to(
                                &mut output,
                                false,
                                false,
                            );
                            close = true;
                            linger = true;
                        } else if expects_continue && !continue_sent {
                            output.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                            continue_sent = true;
                        }
                        break;
                    }
                    Err(error) => {
                        self.answer_in_flight(&mut in_flight, &mut output).await;
                        Response::error(error.status, &error.message).write_to(&mut output, false, false);
                        start = input.len();
                        close = true;
                        linger = true;
                        break;
                    }
                }
            }
            self.answer_in_flight(&mut in_flight, &mut output).await;
            input.drain(..start);
            if start > 0 {
                // The large request (if any) was read to its end.
                large_request = None;
            }
            if start > 0 && !input.is_empty() {
                // What is left is the start of the next request. (With nothing left, the next
                // read stamps it: one clock read per request saved.)
                request_started = Instant::now();
            }
            if !output.is_empty() {
                connection.enter(Phase::Writing, Some(Instant::now() + self.config.request_timeout));
                let (written, buf) = stream.write_all(output).await;
                output = buf;
                output.clear();
                if written.is_err() {
                    return;
                }
                if output.capacity() > IDLE_BUFFER_BYTES_MAX {
                    output = Vec::new();
                }
            }
            if linger {
                Self::linger(stream, connection, input).await;
                return;
            }
            if close || (self.stopping.get() && input.is_empty()) {
                return;
            }
            if answers_pending {
                continue;
            }
            if input.is_empty() && input.capacity() > IDLE_BUFFER_BYTES_MAX {
                input = Vec::with_capacity(READ_CHUNK_BYTES);
            }
            if read_filled_buffer && input.capacity() < READ_CHUNK_BYTES {
                // A client that pipelines fills every small read: a whole chunk per read lets
                // more of its requests start together (pipelined sets then share a WAL batch).
                input.reserve(READ_CHUNK_BYTES - input.len());
            }
            if input.capacity() - input.len() < FIRST_READ_BYTES / 2 {
                // A request that outgrows a small one's buffer first takes its worst case
                // from the budget for large requests.
                if input.len() > FIRST_READ_BYTES && large_request.is_none() {
                    large_request = self
                        .reserve_large_request(connection, request_started, input_bytes_max)
                        .await;
                    if large_request.is_none() {
                        return;
                    }
                }
                input.reserve(READ_CHUNK_BYTES);
            }
            let (len, capacity) = (input.len(), input.capacity());
            if len == 0 {
                connection.enter(Phase::Idle, Some(Instant::now() + self.config.idle_timeout));
            } else {
                connection.enter(
                    Phase::Reading,
                    Some(request_started + self.config.request_timeout),
                );
            }
            let (read, slice) = stream.read(input.slice(len..capacity)).await;
            input = slice.into_inner();
            read_filled_buffer = matches!(read, Ok(n) if n == capacity - len);
            if connection.timed_out.get() {
                // Reaped while this read completed: whatever arrived is not executed.
                return;
            }
            connection.enter(Phase::Handling, None);
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if len == 0 {
                request_started = Instant::now();
            }
        }
    }
}
