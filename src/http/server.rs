//! The accept loop and the per-connection loop on the serving ring: read, answer every complete
//! (possibly pipelined) request in order, write the answers back in one go. Also tracks open
//! connections so that a shutdown can stop accepting, close idle connections and let busy ones
//! finish.
//!
//! tokio-uring cannot cancel an operation by dropping its future, so nothing here wraps a socket
//! operation in a timeout or a select: a read is ended by shutting the socket down.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};

use super::request::{parse, Limits, Parsed};
use super::response::{Response, Status};
use super::routes;
use crate::config::HttpConfig;
use crate::engine::Engine;
use crate::io::FileSystem;

/// Bytes requested from the socket per read.
const READ_CHUNK_BYTES: usize = 16 << 10;
/// An idle connection keeps at most this much buffer; a larger one (after a big request) is freed.
const IDLE_BUFFER_BYTES_MAX: usize = 64 << 10;

struct Connection {
    fd: RawFd,
    /// Waiting for the first byte of a request.
    idle: Rc<Cell<bool>>,
}

/// See the module documentation.
pub struct Server<F: FileSystem> {
    engine: Rc<Engine<F>>,
    config: HttpConfig,
    connections: RefCell<HashMap<u64, Connection>>,
    next_connection_id: Cell<u64>,
    listener_fd: Cell<Option<RawFd>>,
    stopping: Cell<bool>,
    drained: Notify,
}

impl<F: FileSystem> Server<F> {
    pub fn new(engine: Rc<Engine<F>>, config: HttpConfig) -> Rc<Self> {
        Rc::new(Server {
            engine,
            config,
            connections: RefCell::new(HashMap::new()),
            next_connection_id: Cell::new(0),
            listener_fd: Cell::new(None),
            stopping: Cell::new(false),
            drained: Notify::new(),
        })
    }

    /// Accepts connections until [`Server::stop`], each served by its own task.
    pub async fn accept_loop(self: Rc<Self>, listener: TcpListener) {
        self.listener_fd.set(Some(listener.as_raw_fd()));
        loop {
            let accepted = listener.accept().await;
            if self.stopping.get() {
                return;
            }
            match accepted {
                Ok((stream, _peer)) => {
                    let id = self.next_connection_id.get();
                    self.next_connection_id.set(id + 1);
                    let idle = Rc::new(Cell::new(true));
                    let connection = Connection {
                        fd: stream.as_raw_fd(),
                        idle: idle.clone(),
                    };
                    self.connections.borrow_mut().insert(id, connection);
                    tokio_uring::spawn(self.clone().serve_connection(stream, id, idle));
                }
                Err(error) => {
                    // Out of descriptors or memory: back off instead of spinning; the clients
                    // already connected keep being served.
                    eprintln!("ringkv: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Stops accepting and closes idle connections; busy ones close after their current answer.
    pub fn stop(&self) {
        self.stopping.set(true);
        if let Some(fd) = self.listener_fd.get() {
            // Wakes the pending accept with an error (Linux), ending the accept loop.
            // SAFETY: `fd` is the listener's descriptor, open while the accept loop runs.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        for connection in self.connections.borrow().values() {
            if connection.idle.get() {
                // SAFETY: the descriptor stays open until its task removes it from this map.
                unsafe { libc::shutdown(connection.fd, libc::SHUT_RDWR) };
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

    async fn serve_connection(self: Rc<Self>, stream: TcpStream, id: u64, idle: Rc<Cell<bool>>) {
        // Small answers must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        self.connection_loop(&stream, &idle).await;
        self.forget(id);
    }

    async fn connection_loop(&self, stream: &TcpStream, idle: &Cell<bool>) {
        let limits = Limits {
            max_head_bytes: self.config.max_head_bytes,
            max_body_bytes: self.config.max_body_bytes(),
        };
        // Chunk framing may add bytes beyond the body; past this, the request is refused.
        let input_bytes_max = limits.max_head_bytes + 2 * limits.max_body_bytes + READ_CHUNK_BYTES;
        let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
        let mut output: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
        let mut continue_sent = false;
        loop {
            let mut start = 0;
            let mut close = false;
            loop {
                match parse(&input[start..], limits) {
                    Ok(Parsed::Complete { request, consumed }) => {
                        let response = routes::handle(
                            &self.engine,
                            &self.config,
                            request.method,
                            request.target,
                            &request.body,
                        )
                        .await;
                        let keep_alive = request.keep_alive && !self.stopping.get();
                        response.write_to(&mut output, keep_alive, request.http10);
                        start += consumed;
                        continue_sent = false;
                        if !keep_alive {
                            close = true;
                            break;
                        }
                    }
                    Ok(Parsed::Partial { expects_continue }) => {
                        if input.len() - start > input_bytes_max {
                            let message = format!("request exceeds {input_bytes_max} bytes");
                            Response::error(Status::ContentTooLarge, &message).write_to(
                                &mut output,
                                false,
                                false,
                            );
                            close = true;
                        } else if expects_continue && !continue_sent {
                            output.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                            continue_sent = true;
                        }
                        break;
                    }
                    Err(error) => {
                        Response::error(error.status, &error.message).write_to(&mut output, false, false);
                        start = input.len();
                        close = true;
                        break;
                    }
                }
            }
            input.drain(..start);
            if !output.is_empty() {
                let (written, buf) = stream.write_all(output).await;
                output = buf;
                output.clear();
                if written.is_err() {
                    return;
                }
            }
            if close || (self.stopping.get() && input.is_empty()) {
                return;
            }
            if input.is_empty() && input.capacity() > IDLE_BUFFER_BYTES_MAX {
                input = Vec::with_capacity(READ_CHUNK_BYTES);
            }
            input.reserve(READ_CHUNK_BYTES);
            let (len, capacity) = (input.len(), input.capacity());
            idle.set(len == 0);
            let (read, slice) = stream.read(input.slice(len..capacity)).await;
            input = slice.into_inner();
            idle.set(false);
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}
