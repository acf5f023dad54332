//! Leveled compaction: [`choose`] decides what to merge as a pure function of the live-table
//! summaries, and [`edit_for`] the version edit a finished one makes, also a pure function (each
//! tested on its own); [`run`] does the I/O (merging tables into new ones). None touches the
//! manifest or the live version; the background worker applies the result.

mod choose;
mod edit;
mod run;

pub use choose::{choose, Policy, TableSummary, Task};
pub use edit::edit_for;
pub use run::{run, Output};
