//! ringkv: a persistent key-value server. An LSM tree (WAL, memtables, SST files, leveled
//! compaction on a background ring) behind an HTTP/1.1 API, served from one tokio-uring ring,
//! with every WAL and SST write going through `O_DIRECT` from aligned buffers.
//!
//! Map of the crate (each module's first comment says what it owns and what it must not touch):
//! - [`config`]: options and the fsync strategy.
//! - [`io`]: the file-system interface, its `io_uring` and fault-injecting implementations.
//! - [`wal`]: the write-ahead log; [`memtable`]: the skiplist; [`engine`]: the store facade.
//! - [`sst`]: table files; [`manifest`] and [`version`]: the live tables per level;
//!   [`compaction`]: what to merge and the merge; [`background`]: the flush and compaction ring;
//!   [`rate_limit`]: the shape of background I/O; [`checksum`]: the masked CRC32C.
//! - [`http`]: request parsing, routing and the connection loop.
//!
//! On-disk formats: `docs/format.md`.

// Lints (unsafe code denied, the cast lints and a pedantic subset) are set for every target in
// Cargo.toml's `[lints]`.

pub mod background;
pub mod checksum;
pub mod cluster;
pub mod coding;
pub mod compaction;
pub mod config;
pub mod daemon;
pub mod dir_lock;
pub mod engine;
pub mod error;
pub mod fd_budget;
pub mod filename;
pub mod http;
pub mod io;
pub mod key_prefix;
pub mod logging;
pub mod manifest;
pub mod memtable;
pub mod metrics;
pub mod panic_trigger;
pub mod rate_limit;
pub mod scan;
pub mod seq_lease;
pub mod sst;
#[expect(
    unsafe_code,
    reason = "the raw socket, rlimit and signal calls, each wrapped in a safe function"
)]
pub mod sys;
pub mod version;
pub mod wal;

pub use error::{Error, Result};
