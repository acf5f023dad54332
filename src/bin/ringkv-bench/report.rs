//! A load's results as a table and as JSON.

use serde::{Deserialize, Serialize};

use crate::load::{LoadResult, LoadSpec};
use crate::recorder::Summary;
use crate::scrape::ServerSide;

/// A load's parameters and figures, as written to JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub target: String,
    pub connections: usize,
    /// `closed` or `open`.
    pub mode: String,
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub mix: String,
    /// The classes writes asked for (`always:10,never:90`); absent: the server's.
    #[serde(default)]
    pub durability: Option<String>,
    pub keys: u64,
    pub key_dist: String,
    pub value_bytes: usize,
    pub connection_errors: u64,
    /// Open loop: requests due in the window never sent, the server being too far behind.
    #[serde(default)]
    pub unsent: u64,
    pub total: Summary,
    /// Per operation: `set`, `get`, `del`; per class asked for under a durability mix
    /// (`set/always`).
    pub ops: Vec<(String, Summary)>,
    /// The server's side, from its `/metrics` (`--metrics`).
    #[serde(default)]
    pub server: Option<ServerSide>,
}

impl Report {
    pub fn new(spec: &LoadSpec, result: &LoadResult) -> Report {
        Report {
            target: spec.target.to_string(),
            connections: spec.connections,
            mode: if spec.rate.is_some() { "open" } else { "closed" }.to_string(),
            rate: spec.rate,
            duration_s: result.elapsed.as_secs_f64(),
            warmup_s: spec.warmup.as_secs_f64(),
            mix: spec.mix.to_string(),
            durability: spec.durability.map(|mix| mix.to_string()),
            keys: spec.keys,
            key_dist: spec.key_dist.to_string(),
            value_bytes: spec.value_bytes,
            connection_errors: result.connection_errors,
            unsent: result.unsent,
            total: result.recorder.total().summary(result.elapsed),
            ops: result
                .recorder
                .ops
                .iter()
                .map(|(kind, record)| (kind.name(), record.summary(result.elapsed)))
                .collect(),
            server: None,
        }
    }

    /// The table: one row per operation and one for all together.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} loop, {} connections{}, {:.1} s measured, mix {}, {} keys {}, {}-byte values\n",
            self.mode,
            self.connections,
            self.rate.map(|r| format!(" at {r:.0} req/s")).unwrap_or_default(),
            self.duration_s,
            self.durability.as_ref().map_or_else(
                || self.mix.clone(),
                |classes| format!("{} (writes {classes})", self.mix)
            ),
            self.keys,
            self.key_dist,
            self.value_bytes
        );
        out += &table_header();
        for (name, summary) in &self.ops {
            out += &table_row(name, summary);
        }
        if self.ops.len() > 1 {
            out += &table_row("all", &self.total);
        }
        if let Some(server) = &self.server {
            out += &server.table();
        }
        if self.unsent > 0 {
            out += &format!(
                "{} requests due in the window were never sent: the server was still behind the \
                 schedule when the catch-up time after the window (its length, at least 1 s) ran \
                 out\n",
                self.unsent
            );
        }
        out
    }
}

pub fn table_header() -> String {
    format!(
        "{:<13} {:>10} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}\n",
        "op", "requests", "ops/s", "p50", "p90", "p99", "p99.9", "max", "errors"
    )
}

pub fn table_row(name: &str, s: &Summary) -> String {
    let latencies: Vec<String> = s.latency_columns().iter().map(|l| format!("{l:>10}")).collect();
    format!(
        "{:<13} {:>10} {:>11.0} {} {:>8}\n",
        name,
        s.requests,
        s.ops_per_sec,
        latencies.join(" "),
        s.errors
    )
}
