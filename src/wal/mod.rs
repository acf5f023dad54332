//! The write-ahead log: record framing (`record`), segment files (`segment`), the group-commit
//! writer (`writer`) and replay (`recovery`). Knows bytes, not memtables; format in
//! `docs/format.md`.

pub mod batch;
pub mod record;
pub mod recovery;
pub mod recycle;
pub mod segment;
pub mod stats;
pub mod writer;

pub use batch::BatchOp;
pub use record::{Record, RecordKind};
pub use recovery::{recover, RecoveredLog};
pub use recycle::RecyclePool;
pub use segment::{retire_segments, segment_path};
pub use stats::WalStats;
pub use writer::{LogPosition, Ticket, WalOptions, WalWriter};
