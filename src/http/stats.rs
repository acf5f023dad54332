//! What the HTTP loop counts for `/metrics`: requests by operation and status, the latency of
//! each answer, connections accepted and refused. Plain counters on the serving ring.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::response::Response;
use crate::config::Durability;
use crate::metrics::Histogram;

/// What a request asked for, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Get,
    Set,
    Del,
    Batch,
    Scan,
    Metrics,
    /// Any other path (answered 404).
    Other,
}

impl Op {
    pub fn of(target: &str) -> Op {
        match target.split_once('?').map_or(target, |(path, _)| path) {
            "/get" => Op::Get,
            "/set" => Op::Set,
            "/del" => Op::Del,
            "/batch" => Op::Batch,
            "/scan" => Op::Scan,
            "/metrics" => Op::Metrics,
            _ => Op::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Del => "del",
            Op::Batch => "batch",
            Op::Scan => "scan",
            Op::Metrics => "metrics",
            Op::Other => "other",
        }
    }
}

#[derive(Debug)]
pub struct HttpStats {
    /// Answers by operation and status code.
    pub requests: RefCell<BTreeMap<(Op, u16), u64>>,
    /// Reads, from the request's last byte to the answer being ready.
    pub get_latency: Histogram,
    /// Scan pages, likewise.
    pub scan_latency: Histogram,
    /// Writes by operation (set, del, batch) and the class that applied (indexed as
    /// `Durability::ALL`).
    write_latency: [Vec<Histogram>; 3],
    pub connections_accepted: Cell<u64>,
    pub connections_refused: Cell<u64>,
    pub started: SystemTime,
}

impl Default for HttpStats {
    fn default() -> Self {
        let per_class = || Durability::ALL.iter().map(|_| Histogram::latency()).collect();
        HttpStats {
            requests: RefCell::new(BTreeMap::new()),
            get_latency: Histogram::latency(),
            scan_latency: Histogram::latency(),
            write_latency: [per_class(), per_class(), per_class()],
            connections_accepted: Cell::new(0),
            connections_refused: Cell::new(0),
            started: SystemTime::now(),
        }
    }
}

impl HttpStats {
    /// One answer to a request for `target`, `took` from its last byte to the answer.
    pub fn note(&self, target: &str, response: &Response, took: Duration) {
        let op = Op::of(target);
        *self
            .requests
            .borrow_mut()
            .entry((op, response.status.code()))
            .or_default() += 1;
        match (op, response.durability) {
            (Op::Get, _) => self.get_latency.record_duration(took),
            (Op::Scan, _) => self.scan_latency.record_duration(took),
            (Op::Set | Op::Del | Op::Batch, Some(class)) => {
                if let Some(histogram) = self.write_latency(op, class) {
                    histogram.record_duration(took);
                }
            }
            _ => {}
        }
    }

    /// The latency histogram of writes `op` (set, del or batch) acknowledged under `class`.
    pub fn write_latency(&self, op: Op, class: Durability) -> Option<&Histogram> {
        let op_index = match op {
            Op::Set => 0,
            Op::Del => 1,
            Op::Batch => 2,
            _ => return None,
        };
        let class_index = Durability::ALL.iter().position(|&c| c == class)?;
        self.write_latency[op_index].get(class_index)
    }

    pub fn add(cell: &Cell<u64>) {
        cell.set(cell.get() + 1);
    }
}
