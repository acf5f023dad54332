//! Handles to work the storage code starts through its [`super::FileSystem`]: a task on the
//! current ring ([`Task`]) and a thread with a ring of its own ([`ThreadHandle`]). They are the
//! runtime's half of the I/O boundary: storage code never names tokio-uring's spawn or a thread,
//! so that the simulator can run the same code on one deterministic executor.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// The future a thread runs on its own ring, built on that thread (it need not be `Send`).
pub type ThreadBody = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A spawned task's result. Awaiting it waits for the task; dropping it lets the task run on.
pub struct Task<T> {
    result: oneshot::Receiver<T>,
}

impl<T: 'static> Task<T> {
    /// Wraps `future` so that its output reaches the returned handle; the caller spawns the
    /// wrapper on its executor.
    pub fn wrap(future: impl Future<Output = T> + 'static) -> (impl Future<Output = ()> + 'static, Task<T>) {
        let (sender, result) = oneshot::channel();
        let wrapper = async move {
            // The handle may be gone: the result is then nobody's business.
            let _ = sender.send(future.await);
        };
        (wrapper, Task { result })
    }
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.result)
            .poll(context)
            .map(|result| match result {
                Ok(value) => value,
                // The sender is dropped unsent only if the task panicked (the panic is already on
                // its way up) or its runtime was torn down under it; neither leaves anything to do.
                Err(_) => panic!(
                    "a spawned storage task ended without a result (it panicked, or its runtime stopped)"
                ),
            })
    }
}

/// A thread started by [`super::FileSystem::start_thread`].
pub struct ThreadHandle {
    finished: oneshot::Receiver<()>,
    os_thread: Option<std::thread::JoinHandle<()>>,
}

impl ThreadHandle {
    /// The handle of a thread whose body signals `finished` when it ends; `os_thread` is the
    /// operating-system thread, if the body has one of its own.
    pub fn new(finished: oneshot::Receiver<()>, os_thread: Option<std::thread::JoinHandle<()>>) -> Self {
        ThreadHandle { finished, os_thread }
    }

    /// Waits for the thread's body to end without blocking the caller's ring; `false` if it
    /// panicked.
    pub async fn join(mut self) -> bool {
        let finished = (&mut self.finished).await.is_ok();
        // The body has returned: what is left of the OS thread is its runtime's teardown.
        finished && self.join_blocking()
    }

    /// Blocks until the thread has ended (for `Drop`, which cannot await); `false` if it panicked.
    /// A body without an OS thread of its own (the simulator's) is left to its executor.
    pub fn join_blocking(&mut self) -> bool {
        match self.os_thread.take() {
            Some(thread) => thread.join().is_ok(),
            None => true,
        }
    }
}
