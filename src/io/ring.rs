//! How every `io_uring` runtime of this crate is set up: the serving loop, the background
//! threads, and the load generators in `benches/` and `ringkv-bench`.

use std::future::Future;

/// Starts a tokio-uring runtime with `entries` submission entries on this thread and runs
/// `future` on it to completion.
///
/// The ring is set up with `IORING_SETUP_COOP_TASKRUN` (a completion is run when the thread
/// enters the kernel anyway, instead of interrupting it with task work: without it, every
/// completion posted to a running thread costs an inter-processor interrupt, which in a VM is an
/// exit on both sides) and `IORING_SETUP_SINGLE_ISSUER` (only this thread submits, so the kernel
/// skips its locking), when the kernel takes them (5.19 and 6.0): a probe ring first, because the
/// runtime's own creation would panic on a kernel that refuses them. Measured in BENCHMARKS.md
/// ("Serving ring flags", and for the client "The load generator made the server pay for
/// its ring").
/// `IORING_SETUP_DEFER_TASKRUN` is left out: tokio-uring 0.5 waits on the ring's descriptor
/// through epoll, and deferred completions only arrive through `io_uring_enter(GETEVENTS)`, so
/// requests hang (tried on 6.18; BENCHMARKS.md).
pub fn start<F: Future>(entries: u32, future: F) -> F::Output {
    let mut flags = tokio_uring::uring_builder();
    flags.setup_coop_taskrun().setup_single_issuer();
    if flags.build(8).is_err() {
        flags = tokio_uring::uring_builder();
    }
    tokio_uring::builder()
        .entries(entries)
        .uring_builder(&flags)
        .start(future)
}
