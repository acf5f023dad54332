//! `/metrics`: the Prometheus text exposition format 0.0.4. Every figure is a plain counter or a
//! fixed-bucket histogram owned by the module that counts it, on the serving ring (no atomics, no
//! locks); the background ring sends its figures with the `Installed` messages it already sends.
//! Rendering walks them once per scrape. `docs/metrics.md` lists every metric.

pub mod exposition;
pub mod histogram;
pub mod process;
pub mod render;
pub mod work;

pub use histogram::Histogram;
pub use render::render;
pub use work::WorkStats;
