//! Leveled compaction: [`choose`] decides what to merge as a pure function of the live-table
//! summaries (tested on its own); [`run`] does the I/O (merging tables into new ones). Neither
//! touches the manifest or the live version; the background worker applies the result.

mod choose;
mod run;

pub use choose::{choose, Policy, TableSummary, Task};
pub use run::run;
