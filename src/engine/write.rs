//! The write path, as leveldb's `DBImpl::Write`: admit (wait while memtables are full, refuse
//! after a background failure), append to the WAL (which fixes the sequence number), note the
//! append against the active memtable (freezing it when full), and settle: wait for the WAL
//! batch, then apply to the memtable. A write becomes visible no earlier than it is acknowledged.
//! Writes that read first (deletes, conditional writes, batches) are in `conditional.rs`.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::memtables::{FrozenAt, Slot};
use super::{Engine, Pending, FROZEN_MEMTABLES_MAX};
use crate::background::{FlushJob, Job};
use crate::config::{Durability, L0_SLOWDOWN_WRITES_PER_SEC};
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::memtable::Memtable;
use crate::seq_lease;
use crate::wal::{RecordKind, Ticket};

impl<F: FileSystem> Engine<F> {
    /// Stores `value` (JSON text) under `key`; returns its seq (the version the API reports) once
    /// durable as the strategy's class says.
    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        self.set_with(key, value, self.config.durability_for(None)).await
    }

    /// As [`Engine::set`], acknowledged as `durability` says (see
    /// [`crate::config::StoreConfig::durability_for`] for the floor).
    pub async fn set_with(&self, key: &[u8], value: &[u8], durability: Durability) -> Result<u64> {
        self.begin_set(key, value, durability).await?.finish().await
    }

    /// The first half of [`Engine::set_with`]: admits the write and appends it to the WAL, which
    /// fixes its version and its place in the log. Its answer comes from
    /// [`AppendedWrite::finish`]. A connection that starts several pipelined writes before
    /// finishing any lets them share a WAL batch, and its sync.
    pub async fn begin_set(
        &self,
        key: &[u8],
        value: &[u8],
        durability: Durability,
    ) -> Result<AppendedWrite<'_, F>> {
        self.admit(1).await?;
        self.append_one(key, Some(value), durability)
    }

    /// Appends a put (`value: Some`) or a delete of one key, admitted already, and records it
    /// as pending: the step every single-key write ends with.
    pub(super) fn append_one(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        durability: Durability,
    ) -> Result<AppendedWrite<'_, F>> {
        let kind = if value.is_some() {
            RecordKind::Put
        } else {
            RecordKind::Delete
        };
        let bytes = value.unwrap_or_default();
        let (seq, ticket) = self.wal.append(kind, key, bytes, durability)?;
        let slot = self.note_append(key, bytes);
        Ok(self.appended(
            slot,
            Bytes::copy_from_slice(key),
            seq,
            value.map(Bytes::copy_from_slice),
            ticket,
        ))
    }

    /// Waits while the active memtable is full and cannot be frozen (too many memtables wait
    /// for their flush, or level 0 is at its stop count); delays the write while level 0 is at
    /// its slowdown count; refuses writes after a background failure.
    /// `seqs` is how many versions the write takes (a batch takes one per op).
    pub(super) async fn admit(&self, seqs: u64) -> Result<()> {
        self.wait_for_memtable_room().await?;
        self.lease_seq(seqs).await?;
        if self.l0_tables_with_flushes() >= self.config.l0_slowdown_tables {
            self.slow_down().await;
        } else if let Some(since) = self.stalls.borrow_mut().stopped_since.take() {
            tracing::info!(
                "writes go on: level 0 is below its slowdown count again after a stop of {:?}",
                self.fs.now().saturating_duration_since(since)
            );
        }
        Ok(())
    }

    /// Waits while the active memtable is full and cannot be frozen, counting the wait as a
    /// stop when level 0 is at its stop count; refuses after a background failure. Every write
    /// path waits here: single-node writes through [`Engine::admit`], replicated entries
    /// directly (their versions are log indexes, not leased).
    pub(super) async fn wait_for_memtable_room(&self) -> Result<()> {
        let mut stopped_at = None;
        let outcome = loop {
            // Created before the checks so that a wake-up in between is not missed.
            let progress = self.progress.notified();
            if let Some(cause) = &*self.background_failure.borrow() {
                break Err(Error::Poisoned { cause: cause.clone() });
            }
            if !self.memtables_full() {
                break Ok(());
            }
            if let Some((op, path)) = &*self.background_no_space.borrow() {
                break Err(Error::NoSpace {
                    op,
                    path: path.clone(),
                });
            }
            if stopped_at.is_none() && self.l0_tables_with_flushes() >= self.config.l0_stop_tables {
                stopped_at = Some(self.fs.now());
                self.note_stop_started();
            }
            progress.await;
        };
        if let Some(since) = stopped_at {
            let mut stalls = self.stalls.borrow_mut();
            let waited = self.fs.now().saturating_duration_since(since);
            stalls.stats.stopped_writes += 1;
            stalls.stats.stop_micros += micros(waited);
            stalls.stop_latency.record_duration(waited);
        }
        outcome
    }

    /// Makes sure the next `seqs` versions are below the durable lease end (`crate::seq_lease`).
    /// The writer that finds less than half a lease left extends it, and waits for the write;
    /// others go on while versions are left, and wait once none is.
    async fn lease_seq(&self, seqs: u64) -> Result<()> {
        debug_assert!(
            seqs <= seq_lease::LEASE_SPAN / 2,
            "a batch is bounded far below a lease"
        );
        loop {
            let progress = self.progress.notified();
            let next = self.wal.next_seq();
            let end = self.seq_lease_end.get();
            let wants_extension =
                end.saturating_sub(next) < seq_lease::LEASE_SPAN / 2 && next >= self.seq_lease_retry_at.get();
            if wants_extension && !self.seq_lease_extending.get() {
                self.seq_lease_extending.set(true);
                let new_end = next.max(end) + seq_lease::LEASE_SPAN;
                let extended = self.seq_lease.extend(new_end).await;
                self.seq_lease_extending.set(false);
                self.progress.notify_waiters();
                match extended {
                    Ok(()) => self.seq_lease_end.set(new_end),
                    Err(error) => {
                        tracing::warn!("could not extend the sequence lease: {error}");
                        if self.wal.next_seq() + seqs > self.seq_lease_end.get() {
                            return Err(error);
                        }
                        // Versions are left: try again after some more writes, not on each.
                        self.seq_lease_retry_at
                            .set(self.wal.next_seq() + seq_lease::LEASE_SPAN / 64);
                    }
                }
                continue;
            }
            if self.wal.next_seq() + seqs <= self.seq_lease_end.get() {
                return Ok(());
            }
            if !self.seq_lease_extending.get() {
                // None left and nobody extending (the last try failed): this writer tries.
                self.seq_lease_retry_at.set(0);
                continue;
            }
            progress.await;
        }
    }

    /// Level-0 tables, counting the frozen memtables on their way there: what the slowdown and
    /// stop counts compare, so that level 0 cannot pass the stop count even with flushes in
    /// flight.
    pub(super) fn l0_tables_with_flushes(&self) -> usize {
        self.version.borrow().levels[0].len() + self.memtables.borrow().frozen_count()
    }

    fn note_stop_started(&self) {
        let mut stalls = self.stalls.borrow_mut();
        if stalls.stopped_since.is_none() {
            stalls.stopped_since = Some(self.fs.now());
            tracing::warn!(
                "writes stopped: level 0 holds {} tables (the stop count, --l0-stop-tables); they go on once compaction brings it down",
                self.l0_tables_with_flushes()
            );
        }
    }

    /// Keeps writes to a shared pace of `L0_SLOWDOWN_WRITES_PER_SEC` (leveldb delays each write
    /// by 1 ms at its slowdown count; one pace shared by every connection does the same for
    /// many writers), leaving the disk and the CPU to compaction.
    async fn slow_down(&self) {
        let now = self.fs.now();
        let step = Duration::from_micros(1_000_000 / L0_SLOWDOWN_WRITES_PER_SEC);
        let go_at = {
            let mut stalls = self.stalls.borrow_mut();
            let go_at = stalls.slowdown_next.map_or(now, |next| next.max(now));
            stalls.slowdown_next = Some(go_at + step);
            stalls.stats.slowed_writes += 1;
            stalls.stats.slowdown_micros += micros(go_at - now);
            stalls.slowdown_latency.record_duration(go_at - now);
            go_at
        };
        if go_at > now {
            self.fs.sleep(go_at - now).await;
        }
    }

    /// Accounts a write just appended and freezes the active memtable once it is full. Runs in
    /// the same synchronous step as the append, so every write below a freeze's `end_seq`
    /// belongs to the frozen memtable.
    pub(super) fn note_append(&self, key: &[u8], value: &[u8]) -> Rc<Slot> {
        self.note_append_bytes(Memtable::entry_bytes(key.len(), value.len()))
    }

    /// As [`Engine::note_append`], for a write (a batch) that adds `bytes` to its memtable.
    pub(super) fn note_append_bytes(&self, bytes: u64) -> Rc<Slot> {
        let slot = self.memtables.borrow_mut().note_append(bytes);
        if self.can_freeze() && self.memtables.borrow().active_bytes() >= self.config.memtable_bytes {
            self.freeze();
        }
        slot
    }

    /// Whether the active memtable may be frozen now: fewer frozen ones than allowed wait for
    /// their flush, and its flush would not take level 0 past the stop count.
    fn can_freeze(&self) -> bool {
        self.memtables.borrow().frozen_count() < FROZEN_MEMTABLES_MAX
            && self.l0_tables_with_flushes() < self.config.l0_stop_tables
    }

    /// Whether a write started now would wait for memtable room (a flush), rather than be
    /// appended in the same step.
    pub fn writes_must_wait(&self) -> bool {
        self.memtables_full()
    }

    /// Whether writes must pause: the active memtable is full and cannot be frozen. (Pausing
    /// while any memtable was frozen stalled every write for the whole of each flush: 200 ms at
    /// 64 connections.)
    pub(super) fn memtables_full(&self) -> bool {
        self.memtables.borrow().active_bytes() >= self.config.memtable_bytes && !self.can_freeze()
    }

    pub(super) fn freeze(&self) {
        let at = FrozenAt {
            end_seq: self.log_next_seq(),
            first_live_wal_segment: self.wal.live_segment_floor(),
        };
        self.memtables.borrow_mut().freeze(at);
        self.request_ready_flushes();
    }

    pub(super) fn request_ready_flushes(&self) {
        let ready = self.memtables.borrow_mut().take_ready_flushes();
        for slot in ready {
            let at = slot.frozen_at().expect("only frozen memtables are flushed");
            self.send_background(Job::Flush(FlushJob {
                memtable_id: slot.id,
                memtable: slot.table.clone(),
                flushed_seq: at.end_seq - 1,
                first_live_wal_segment: at.first_live_wal_segment,
            }));
        }
    }

    /// Records a write just appended as pending (a read-modify-write reads it as the key's
    /// newest state, in the same synchronous step as the append).
    fn appended(
        &self,
        slot: Rc<Slot>,
        key: Bytes,
        seq: u64,
        value: Option<Bytes>,
        ticket: Ticket,
    ) -> AppendedWrite<'_, F> {
        self.note_pending(&key, seq, value.as_ref(), &ticket);
        AppendedWrite {
            engine: self,
            write: Some(Unsettled {
                slot,
                applies: Applies::One(key, seq, value),
                ticket,
            }),
        }
    }

    /// As [`Engine::appended`] for a batch record: `ops` are `(key, seq, value)` in seq order.
    pub(super) fn appended_batch(
        &self,
        slot: Rc<Slot>,
        ops: Vec<(Bytes, u64, Option<Bytes>)>,
        ticket: Ticket,
    ) -> AppendedWrite<'_, F> {
        for (key, seq, value) in &ops {
            self.note_pending(key, *seq, value.as_ref(), &ticket);
        }
        AppendedWrite {
            engine: self,
            write: Some(Unsettled {
                slot,
                applies: Applies::Many(ops),
                ticket,
            }),
        }
    }

    fn note_pending(&self, key: &Bytes, seq: u64, value: Option<&Bytes>, ticket: &Ticket) {
        self.pending.borrow_mut().insert(
            key.clone(),
            Pending {
                seq,
                value: value.cloned(),
                ticket: ticket.clone(),
            },
        );
        self.unsettled_seqs.borrow_mut().insert(seq);
    }

    /// Applies a write whose batch completed with `outcome` (or forgets it on failure), and
    /// settles it against its memtable. A batch's ops go into the memtable in this one
    /// synchronous step: no reader on this ring sees some of them without the others.
    fn settle(&self, write: Unsettled, outcome: &Result<()>) {
        let Unsettled { slot, applies, .. } = write;
        let settle_one = |key: Bytes, seq: u64, value: Option<Bytes>| {
            if outcome.is_ok() {
                slot.table.insert(key.clone(), seq, value);
            }
            let mut pending = self.pending.borrow_mut();
            if pending.get(&key).is_some_and(|p| p.seq == seq) {
                pending.remove(&key);
            }
            self.unsettled_seqs.borrow_mut().remove(&seq);
        };
        match applies {
            Applies::One(key, seq, value) => settle_one(key, seq, value),
            Applies::Many(ops) => {
                for (key, seq, value) in ops {
                    settle_one(key, seq, value);
                }
            }
        }
        slot.settled();
        if slot.frozen_at().is_some() {
            self.request_ready_flushes();
        }
    }
}

/// A write appended to the WAL and not yet acknowledged: its version is fixed, its answer waits
/// for its batch ([`AppendedWrite::finish`]).
#[must_use = "a write is applied and acknowledged by `finish`"]
pub struct AppendedWrite<'e, F: FileSystem> {
    engine: &'e Engine<F>,
    /// `None` once settled.
    write: Option<Unsettled>,
}

struct Unsettled {
    slot: Rc<Slot>,
    applies: Applies,
    ticket: Ticket,
}

/// What a settled write puts into its memtable: `(key, seq, value)`, `None` a tombstone.
enum Applies {
    One(Bytes, u64, Option<Bytes>),
    /// A batch's ops, in seq order.
    Many(Vec<(Bytes, u64, Option<Bytes>)>),
}

impl Applies {
    fn first_seq(&self) -> u64 {
        match self {
            Applies::One(_, seq, _) => *seq,
            Applies::Many(ops) => ops.first().map_or(0, |op| op.1),
        }
    }
}

impl<F: FileSystem> AppendedWrite<'_, F> {
    /// The version the write got (a batch's first).
    pub fn seq(&self) -> u64 {
        self.write.as_ref().map_or(0, |write| write.applies.first_seq())
    }

    /// Waits for the write's batch, then applies it to the memtable (a write becomes visible no
    /// earlier than it is acknowledged); returns its version, or the batch's failure.
    pub async fn finish(mut self) -> Result<u64> {
        let Some(write) = self.write.take() else {
            unreachable!("settled only by finish or drop")
        };
        let seq = write.applies.first_seq();
        let outcome = write.ticket.wait().await;
        self.engine.settle(write, &outcome);
        outcome.map(|()| seq)
    }
}

impl<F: FileSystem> Drop for AppendedWrite<'_, F> {
    /// Dropped unfinished (its task was dropped: the runtime is going away, or a simulated
    /// crash). A write whose batch already completed is settled as `finish` would have. One still
    /// in flight is left unsettled, so its memtable is never flushed: a flush claims every seq
    /// below its end, and this record may still reach the disk, where only replay would bring
    /// it back (the simulator found the hole when such writes were settled unapplied: seed
    /// 502115).
    fn drop(&mut self) {
        if let Some(write) = self.write.take() {
            if let Some(outcome) = write.ticket.outcome() {
                self.engine.settle(write, &outcome);
            }
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
