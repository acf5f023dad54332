//! The WAL writer: assigns sequence numbers, gathers records into group-commit batches, and runs
//! the one committer task that writes each batch with a single `O_DIRECT` write (and makes it
//! durable, when a record in it asks for that). Knows bytes and segments, not memtables: a caller
//! learns through its [`Ticket`] when its record is acknowledged and applies it itself.
//!
//! Each record carries its own [`Durability`] class, and one log serves them all: a batch holding
//! an `always` or `group` record is made durable before any of its records is acknowledged (an
//! `always` record closes its batch: nothing after it shares its write); the others are
//! acknowledged once written, and the
//! periodic timer syncs what `periodic` records left unsynced. A durable write makes the whole log
//! before it durable (earlier segments included), so what is durable is always a prefix.
//!
//! Batches are written strictly in order and a failed batch fails every batch queued after it, so
//! what is durable is always a prefix of what was appended.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;

use super::record::{self, RecordKind, SEGMENT_END_BYTES};
use super::recycle::RecyclePool;
use super::segment::{self, Prepared};
use super::stats::WalStats;
use crate::config::{Durability, FsyncStrategy, SyncCall, WalIo};
use crate::error::{Error, Result};
use crate::io::{AlignedBuf, DataFile, FileSystem, OpenMode, Task, BLOCK_BYTES};

/// How the writer is set up.
#[derive(Debug, Clone)]
pub struct WalOptions {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub batch_bytes: usize,
    /// The server's strategy: under `periodic`, a segment is synced before the writer leaves it.
    pub fsync: FsyncStrategy,
    /// How often the WAL is synced while `periodic` records are unsynced.
    pub periodic_interval: Duration,
    pub io: WalIo,
    pub sync_call: SyncCall,
    /// Retired segments kept for reuse, shared with the flushes that retire them.
    pub recycle: std::sync::Arc<RecyclePool>,
}

impl WalOptions {
    /// A writer of segments in `dir` as the store's configuration says (the store's WAL, and
    /// in cluster mode the Raft log's).
    pub fn for_store(
        config: &crate::config::StoreConfig,
        dir: PathBuf,
        recycle: std::sync::Arc<RecyclePool>,
    ) -> Self {
        WalOptions {
            dir,
            segment_bytes: config.wal_segment_bytes,
            batch_bytes: config.wal_batch_bytes,
            fsync: config.fsync,
            periodic_interval: config.periodic_interval(),
            io: config.wal_io,
            sync_call: config.sync_call,
            recycle,
        }
    }

    /// How segment files are opened: `O_DIRECT` or buffered, with `O_DSYNC` or without.
    pub fn open_mode(&self, dsync: bool) -> OpenMode {
        OpenMode::READ_WRITE.with_mechanism(self.io == WalIo::Buffered, dsync)
    }
}

/// Where the log ends: the next record goes to `offset` of segment `segment_number`; `tail` holds
/// the bytes before `offset` since the last write-unit boundary, or more of them (the next direct
/// write rewrites them; recovery keeps those since the last 4 KiB boundary, a multiple of every
/// write unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPosition {
    pub segment_number: u64,
    pub offset: u64,
    pub tail: Vec<u8>,
}

/// The outcome of one batch, shared by every record in it.
#[derive(Default)]
struct BatchSlot {
    outcome: RefCell<Option<Result<()>>>,
    done: Notify,
}

/// A claim on the durability of one appended record.
#[derive(Clone)]
pub struct Ticket(Rc<BatchSlot>);

impl Ticket {
    /// Waits until the record's batch is written (and synced, when the strategy syncs before
    /// acknowledging); returns the batch's failure otherwise.
    pub async fn wait(&self) -> Result<()> {
        loop {
            // Created before the check so that a completion in between is not missed.
            let notified = self.0.done.notified();
            if let Some(outcome) = &*self.0.outcome.borrow() {
                return outcome.clone();
            }
            notified.await;
        }
    }

    /// The batch's outcome if it completed.
    pub fn outcome(&self) -> Option<Result<()>> {
        self.0.outcome.borrow().clone()
    }

    fn complete(&self, outcome: Result<()>) {
        *self.0.outcome.borrow_mut() = Some(outcome);
        self.0.done.notify_waiters();
    }
}

/// Records gathered for one direct write.
struct Batch {
    segment_number: u64,
    /// File offset of the write: `start_offset` rounded down to the write unit.
    block_offset: u64,
    /// Where the batch's first record starts.
    start_offset: u64,
    /// Bytes from `block_offset`: the previous partial unit, then the records.
    buf: AlignedBuf,
    records: u32,
    /// Where its last record ends.
    end_offset: u64,
    /// No more records go in: its segment was sealed.
    sealed: bool,
    /// Ends with an `always` record: nothing else goes in but the segment end.
    single: bool,
    /// Made durable before its records are acknowledged (holds an `always` or `group` record).
    durable: bool,
    /// Holds a `periodic` record: the periodic timer syncs it if nothing else does.
    periodic: bool,
    /// Everything before this (segment, offset) will be durable when the batch reaches the disk
    /// (the end of the last durable batch queued before it), if known.
    floor: Option<(u64, u64)>,
    ticket: Ticket,
    /// Holds the key of a panic planted in the committer (`crate::panic_trigger`).
    planted_panic: bool,
    /// The sequence number of its last record.
    last_seq: u64,
}

/// The files of the segment being written. Under `--sync-call dsync` a segment has two: a durable
/// write goes through the `O_DSYNC` one when everything before it is durable already (its own
/// flush then covers all), any other write through the plain one (a `never` write must not wait
/// for the disk) with an `fdatasync` after it when it must be durable. An `O_DSYNC` write may be a
/// FUA write, which makes durable only its own bytes, not earlier writes still in the device's
/// cache: hence the condition.
impl Batch {
    /// What a batch written after this one may count on being durable when it is written: this
    /// batch's end if it is durable (the committer makes it durable before writing the next,
    /// and a durable write covers the whole log before it), else what this one counted on.
    fn floor_after(&self) -> Option<(u64, u64)> {
        match (self.durable, self.sealed) {
            (true, true) => Some((self.segment_number + 1, 0)),
            (true, false) => Some((self.segment_number, self.end_offset)),
            (false, _) => self.floor,
        }
    }
}

struct OpenSegment<F: FileSystem> {
    number: u64,
    path: PathBuf,
    file: Rc<F::File>,
    dsync_file: Option<Rc<F::File>>,
}

impl<F: FileSystem> Clone for OpenSegment<F> {
    fn clone(&self) -> Self {
        OpenSegment {
            number: self.number,
            path: self.path.clone(),
            file: self.file.clone(),
            dsync_file: self.dsync_file.clone(),
        }
    }
}

struct State<F: FileSystem> {
    queue: VecDeque<Batch>,
    /// Where the next record goes.
    position: LogPosition,
    next_seq: u64,
    poisoned: Option<String>,
    /// A sync failed: none is tried again (after a failed fsync a retry can report success for
    /// data the kernel dropped). A failed *write* poisons the writer but leaves syncs allowed, so
    /// that what was acknowledged before it still becomes durable as promised.
    sync_failed: bool,
    closing: bool,
    current: Option<OpenSegment<F>>,
    spare: Option<(u64, SpareTask<F>)>,
    /// A `periodic` record was written and no sync has covered it yet (drives the timer).
    periodic_unsynced: bool,
    /// The floor of a batch created when the queue is empty: what the batches taken so far
    /// guarantee (see `Batch::floor`).
    floor_after_taken: Option<(u64, u64)>,
    free_buffers: Vec<AlignedBuf>,
}

/// The next segment being made ready, in the background.
type SpareTask<F> = Task<Result<(<F as FileSystem>::File, Prepared)>>;

/// Spare batch buffers kept for reuse; more would only hold memory.
const FREE_BUFFERS_MAX: usize = 4;

/// See the module documentation.
pub struct WalWriter<F: FileSystem> {
    fs: F,
    options: WalOptions,
    state: RefCell<State<F>>,
    work: Notify,
    committer: RefCell<Option<Task<()>>>,
    /// Held across every sync: one at a time, so that a sync never starts while another that may
    /// fail is in flight (found by the simulator: the periodic sync failed and dropped the
    /// segment's unsynced pages while the committer's sync before leaving the segment succeeded,
    /// and the next segment's records claimed the lost bytes durable).
    sync_lock: tokio::sync::Mutex<()>,
    stats: WalStats,
    /// Everything before this (segment, offset) has been written.
    written_end: Cell<(u64, u64)>,
    /// Everything before this (segment, offset) is known durable (drives the claims of
    /// `periodic` and `never`; see [`WalWriter::durable_claim`]).
    durable_end: Cell<(u64, u64)>,
    /// The offset and length unit of every batch write: a divisor of [`BLOCK_BYTES`], set once
    /// from the segment file by [`WalWriter::prepare`] (4 KiB until then, valid everywhere).
    /// With 512-byte sectors a batch rewrites at most 511 bytes of the one before it instead of
    /// up to 4 KiB-1: BENCHMARKS.md, issue 14, "WAL writes in sectors".
    write_unit: Cell<usize>,
}

impl<F: FileSystem> WalWriter<F> {
    /// Starts writing at `position` with `next_seq`, and spawns the committer and the periodic
    /// sync timer on the current ring. Every record before `next_seq` must be durable (recovery
    /// syncs what it replayed).
    pub fn start(fs: F, options: WalOptions, position: LogPosition, next_seq: u64) -> Rc<Self> {
        assert_eq!(options.segment_bytes % BLOCK_BYTES as u64, 0);
        let interval = options.periodic_interval;
        let start = (position.segment_number, position.offset);
        let writer = Rc::new(WalWriter {
            fs,
            options,
            state: RefCell::new(State {
                queue: VecDeque::new(),
                position,
                next_seq,
                poisoned: None,
                sync_failed: false,
                closing: false,
                current: None,
                spare: None,
                periodic_unsynced: false,
                floor_after_taken: Some(start),
                free_buffers: Vec::new(),
            }),
            work: Notify::new(),
            committer: RefCell::new(None),
            sync_lock: tokio::sync::Mutex::new(()),
            stats: WalStats::new(next_seq.saturating_sub(1)),
            written_end: Cell::new(start),
            durable_end: Cell::new(start),
            write_unit: Cell::new(BLOCK_BYTES),
        });
        *writer.committer.borrow_mut() = Some(writer.fs.spawn(run_committer(writer.clone())));
        // Any request may ask for `periodic`, so the timer always runs; it syncs only while
        // `periodic` records are unsynced. Ends by itself at its first tick after the writer
        // closes or is dropped.
        drop(writer.fs.spawn(run_periodic_sync(
            writer.fs.clone(),
            Rc::downgrade(&writer),
            interval,
        )));
        writer
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.state.borrow().next_seq
    }

    /// A segment number at or below the segment of every record not yet written and of every
    /// record appended from now on (rewinds after a failed batch included): segments below it
    /// hold only records appended before this call.
    pub fn live_segment_floor(&self) -> u64 {
        let state = self.state.borrow();
        let current = state.current.as_ref().map_or(u64::MAX, |current| current.number);
        state.position.segment_number.min(current)
    }

    /// How many WAL syncs have completed: rounds of sync calls (each covering everything written
    /// before it started), and `O_DSYNC` writes (each made when everything before it was durable).
    pub fn syncs(&self) -> u64 {
        self.stats.syncs.get()
    }

    /// Opens (pre-writing it if new) the segment the first record goes to, and starts preparing
    /// the one after, so that the first write does not wait for a segment's pre-write (75 ms
    /// for 64 MiB here). Call before the first append.
    pub async fn prepare(&self) -> Result<()> {
        let number = self.state.borrow().position.segment_number;
        let segment = self.segment_file(number).await?;
        let unit = segment.file.direct_write_unit();
        assert!(
            unit.is_power_of_two() && BLOCK_BYTES.is_multiple_of(unit),
            "write unit {unit} does not divide a block"
        );
        // Only before the first batch is cut: a smaller unit than the one a queued batch was cut
        // with would leave its tail shorter than the next batch's prefix.
        if self.state.borrow().queue.is_empty() {
            self.write_unit.set(unit);
        }
        Ok(())
    }

    /// The offset and length unit of batch writes (see the field).
    pub fn write_unit(&self) -> usize {
        self.write_unit.get()
    }

    /// `offset` rounded down to the write unit.
    fn unit_start(&self, offset: u64) -> u64 {
        offset - offset % self.write_unit.get() as u64
    }

    /// What the writer counts, for `/metrics`.
    pub fn stats(&self) -> &WalStats {
        &self.stats
    }

    /// The written and the durable end of the log as byte positions (segment number times the
    /// segment size, plus the offset: comparable across segments).
    pub fn positions(&self) -> (u64, u64) {
        let bytes = |(segment, offset): (u64, u64)| segment * self.options.segment_bytes + offset;
        (bytes(self.written_end.get()), bytes(self.durable_end.get()))
    }

    /// The largest record payload a segment can hold.
    pub fn max_record_bytes(&self) -> usize {
        crate::coding::to_usize(self.options.segment_bytes) - SEGMENT_END_BYTES
    }

    /// Appends a record and returns its sequence number and the ticket that tells when it may be
    /// acknowledged under `durability`. Synchronous: the record's place in the log is fixed
    /// before this returns.
    pub fn append(
        &self,
        kind: RecordKind,
        key: &[u8],
        value: &[u8],
        durability: Durability,
    ) -> Result<(u64, Ticket)> {
        debug_assert!(kind != RecordKind::Batch, "batches go through append_batch");
        self.append_record(kind, key, value, 1, durability)
    }

    /// Appends a batch record of `body` (`wal::batch::encode`) holding `ops` ops, which take
    /// the seqs from the returned one on; one record, so recovery finds all of them or none.
    pub fn append_batch(&self, body: &[u8], ops: u64, durability: Durability) -> Result<(u64, Ticket)> {
        debug_assert_eq!(super::batch::count(body), ops);
        self.append_record(RecordKind::Batch, b"", body, ops, durability)
    }

    fn append_record(
        &self,
        kind: RecordKind,
        key: &[u8],
        value: &[u8],
        seqs: u64,
        durability: Durability,
    ) -> Result<(u64, Ticket)> {
        let mut state = self.state.borrow_mut();
        if let Some(cause) = &state.poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        if state.closing {
            return Err(Error::ShuttingDown);
        }
        let len = record::encoded_len(key, value);
        if len > self.max_record_bytes() {
            return Err(Error::RecordTooLarge {
                record_bytes: len,
                segment_bytes: self.options.segment_bytes,
            });
        }
        if state.position.offset + (len + SEGMENT_END_BYTES) as u64 > self.options.segment_bytes {
            self.seal_segment(&mut state);
        }
        let seq = state.next_seq;
        state.next_seq += seqs;
        let ticket = self.push_record(&mut state, kind, seq, key, value, durability);
        drop(state);
        self.work.notify_one();
        Ok((seq, ticket))
    }

    /// Ends the current segment with a segment-end record and moves the position to the next one.
    fn seal_segment(&self, state: &mut State<F>) {
        let last_seq = state.next_seq.saturating_sub(1);
        // The weakest class: the segment end adds no durability of its own.
        self.push_record(
            state,
            RecordKind::SegmentEnd,
            last_seq,
            b"",
            b"",
            Durability::Never,
        );
        if let Some(batch) = state.queue.back_mut() {
            batch.sealed = true;
        }
        state.position = LogPosition {
            segment_number: state.position.segment_number + 1,
            offset: 0,
            tail: Vec::new(),
        };
    }

    fn push_record(
        &self,
        state: &mut State<F>,
        kind: RecordKind,
        seq: u64,
        key: &[u8],
        value: &[u8],
        durability: Durability,
    ) -> Ticket {
        let len = record::encoded_len(key, value);
        // An `always` record closes the batch it goes into: nothing after it shares its write, so
        // it never waits for a later record. It may join weaker records gathered before it:
        // those must be durable before it anyway (the prefix), and one write covers them all
        // (an own batch after them cost a plain write, then a write and an `fdatasync`: at 10%
        // `always`, 1.25x fewer ops/s at 16 connections and 1.41x at 64, BENCHMARKS.md).
        let alone = durability == Durability::Always;
        let reuse = state.queue.back().is_some_and(|batch| {
            !batch.sealed
                && batch.segment_number == state.position.segment_number
                && (kind == RecordKind::SegmentEnd || !batch.single)
                && batch.buf.len() + len <= batch.buf.capacity() - BLOCK_BYTES
        });
        if !reuse {
            let batch = self.new_batch(state, len, alone);
            state.queue.push_back(batch);
        }
        let position_offset = state.position.offset;
        let Some(batch) = state.queue.back_mut() else {
            unreachable!("a batch was pushed above")
        };
        let at = crate::coding::to_usize(position_offset - batch.block_offset);
        debug_assert_eq!(at, batch.buf.len());
        let grown = batch.buf.extend_zeros(len);
        debug_assert!(grown, "batch buffer sized for the record");
        let claim = self.durable_claim(state.position.segment_number, batch.floor);
        record::encode(
            &mut batch.buf.as_mut_slice()[at..at + len],
            kind,
            seq,
            claim,
            state.position.segment_number,
            key,
            value,
        );
        batch.records += 1;
        let last_seq = match kind {
            RecordKind::Batch => seq + super::batch::count(value) - 1,
            _ => seq,
        };
        batch.last_seq = batch.last_seq.max(last_seq);
        batch.single |= alone;
        batch.durable |= durability.syncs_before_ack();
        batch.periodic |= durability == Durability::Periodic;
        batch.planted_panic |= crate::panic_trigger::key_at(crate::panic_trigger::Place::Wal) == Some(key);
        state.position.offset += len as u64;
        batch.end_offset = state.position.offset;
        batch.ticket.clone()
    }

    /// What a record appended now to a batch of segment `number` with floor `batch_floor` can
    /// claim was durable when it reaches the disk (the record field's encoding: 0 for nothing,
    /// else one more than the durable bytes of its segment, earlier segments being durable). The
    /// most of:
    /// - the batch's floor: the end of the last durable batch before it, which is durable before
    ///   this batch is written (with only durable classes, that is everything before the batch);
    /// - what the last completed sync covered;
    /// - under the `periodic` strategy, every earlier segment: it syncs a segment before leaving it.
    fn durable_claim(&self, number: u64, batch_floor: Option<(u64, u64)>) -> u32 {
        let in_segment = |(segment, offset): (u64, u64)| (segment == number).then_some(offset);
        let synced = self.durable_end.get();
        let left_synced = (synced.0 < number && self.syncs_segments_before_leaving()).then_some(0);
        let prefix = [batch_floor.and_then(in_segment), in_segment(synced), left_synced]
            .into_iter()
            .flatten()
            .max();
        prefix
            .and_then(|prefix| u32::try_from(prefix + 1).ok())
            .unwrap_or(0)
    }

    /// The `periodic` strategy syncs a segment before writing to the next, so that its tail does
    /// not wait for the timer (durable batches need no such sync: each makes the whole log
    /// before it durable).
    fn syncs_segments_before_leaving(&self) -> bool {
        matches!(self.options.fsync, FsyncStrategy::Periodic { .. })
    }

    /// A batch starting at the current position, its buffer holding the partial unit before it.
    fn new_batch(&self, state: &mut State<F>, first_record_bytes: usize, alone: bool) -> Batch {
        let start_offset = state.position.offset;
        let block_offset = self.unit_start(start_offset);
        let prefix_len = crate::coding::to_usize(start_offset - block_offset);
        // Room for the prefix, the records, a segment-end record and the padding block. A batch
        // that holds one record only (`always`) gets room for that record, not a whole
        // `--wal-batch-bytes`: with a thousand writers queued, a buffer each of 1 MiB held a
        // gigabyte (zeroed, so resident).
        let records_bytes = if alone {
            first_record_bytes
        } else {
            self.options.batch_bytes.max(first_record_bytes)
        };
        let capacity = (records_bytes + SEGMENT_END_BYTES + 2 * BLOCK_BYTES).next_multiple_of(BLOCK_BYTES);
        let mut buf = match state.free_buffers.pop() {
            Some(buf) if buf.capacity() >= capacity => buf,
            _ => AlignedBuf::zeroed(capacity),
        };
        buf.set_len(0);
        let prefix_copied = match state.queue.back() {
            // The previous batch is still gathering: its last partial unit is the prefix.
            Some(previous) if previous.segment_number == state.position.segment_number && prefix_len > 0 => {
                let from = crate::coding::to_usize(block_offset - previous.block_offset);
                buf.extend_from_slice(&previous.buf.as_slice()[from..from + prefix_len])
            }
            _ => {
                let tail = &state.position.tail;
                assert!(
                    tail.len() >= prefix_len,
                    "the log's tail ({} bytes) is shorter than the partial unit before it ({prefix_len})",
                    tail.len()
                );
                buf.extend_from_slice(&tail[tail.len() - prefix_len..])
            }
        };
        debug_assert!(prefix_copied);
        let floor = state
            .queue
            .back()
            .map_or(state.floor_after_taken, Batch::floor_after);
        Batch {
            segment_number: state.position.segment_number,
            block_offset,
            start_offset,
            buf,
            records: 0,
            end_offset: start_offset,
            sealed: false,
            single: false,
            durable: false,
            periodic: false,
            floor,
            ticket: Ticket(Rc::new(BatchSlot::default())),
            planted_panic: false,
            last_seq: 0,
        }
    }

    /// Takes the oldest batch for writing; if it was the last one, keeps its partial final unit
    /// as the prefix of the next batch.
    fn take_batch(&self) -> Option<Batch> {
        let mut state = self.state.borrow_mut();
        let batch = state.queue.pop_front()?;
        state.floor_after_taken = batch.floor_after();
        if state.queue.is_empty() {
            let position = &mut state.position;
            position.tail = if batch.segment_number == position.segment_number {
                let from = crate::coding::to_usize(self.unit_start(position.offset) - batch.block_offset);
                let to = crate::coding::to_usize(position.offset - batch.block_offset);
                batch.buf.as_slice()[from..to].to_vec()
            } else {
                Vec::new()
            };
        }
        Some(batch)
    }

    /// The open files of segment `number`, switching to it (and preparing the one after) if
    /// needed.
    async fn segment_file(&self, number: u64) -> Result<OpenSegment<F>> {
        let leaving = {
            let state = self.state.borrow();
            match &state.current {
                Some(current) if current.number == number => return Ok(current.clone()),
                Some(_) => true,
                None => false,
            }
        };
        // Leaving a segment under `periodic`: sync it now, or its tail would wait for no timer.
        if leaving && self.syncs_segments_before_leaving() {
            self.sync_written().await?;
        }
        let spare = {
            let mut state = self.state.borrow_mut();
            match state.spare.take() {
                Some((spare_number, handle)) if spare_number == number => Some(handle),
                other => {
                    state.spare = other;
                    None
                }
            }
        };
        // A spare that failed (out of descriptors, a full disk) is tried again now: its error
        // may have passed.
        let prepared = match spare {
            Some(handle) => handle.await.ok(),
            None => None,
        };
        let (file, how) = match prepared {
            Some(file) => file,
            None => {
                segment::open_or_create(
                    &self.fs,
                    &self.options.dir,
                    number,
                    self.options.segment_bytes,
                    self.options.open_mode(false),
                    &self.options.recycle,
                )
                .await?
            }
        };
        match how {
            Prepared::Existing => {}
            Prepared::Recycled { .. } => WalStats::add(&self.stats.segments_recycled, 1),
            Prepared::Created { zero_bytes } => {
                WalStats::add(&self.stats.segments_created, 1);
                WalStats::add(&self.stats.zero_bytes, zero_bytes);
            }
        }
        let path = segment::segment_path(&self.options.dir, number);
        let dsync_file = if self.options.sync_call == SyncCall::Dsync {
            let file = self
                .fs
                .open(&path, self.options.open_mode(true))
                .await
                .map_err(|error| Error::io("open", &path, error))?;
            Some(Rc::new(file))
        } else {
            None
        };
        let segment = OpenSegment {
            number,
            path,
            file: Rc::new(file),
            dsync_file,
        };
        let mut state = self.state.borrow_mut();
        state.current = Some(segment.clone());
        // No spare once closing: nothing would wait for its pre-write (the mark a clean close
        // writes may be the first record of a new segment).
        if state.spare.is_none() && !state.closing {
            let (fs, dir, bytes, mode, pool) = (
                self.fs.clone(),
                self.options.dir.clone(),
                self.options.segment_bytes,
                self.options.open_mode(false),
                self.options.recycle.clone(),
            );
            let next = number + 1;
            let handle = self
                .fs
                .spawn(async move { segment::open_or_create(&fs, &dir, next, bytes, mode, &pool).await });
            state.spare = Some((next, handle));
        }
        Ok(segment)
    }

    /// Makes everything written so far durable: each segment no sync has covered since the
    /// durable end, then the current one, with the configured call (`fdatasync` under `dsync`).
    /// One sync at a time; a no-op when everything written is durable already.
    ///
    /// Segments before the current one are left unsynced only by `never` and `periodic` records
    /// (under the `periodic` strategy a segment is synced before the writer leaves it).
    async fn sync_written(&self) -> Result<()> {
        let _one_at_a_time = self.sync_lock.lock().await;
        // What was written before the sync started is what it covers.
        let covered = self.written_end.get();
        let covered_seq = self.stats.written_seq.get();
        let durable = self.durable_end.get();
        if durable >= covered {
            return Ok(());
        }
        if self.state.borrow().sync_failed {
            return Err(Error::Poisoned {
                cause: "an earlier WAL sync failed".to_string(),
            });
        }
        let current = self.state.borrow().current.clone();
        // (N, 0) is the start of segment N: nothing of it to sync.
        let last = if covered.1 == 0 {
            covered.0.saturating_sub(1)
        } else {
            covered.0
        };
        for number in durable.0..=last {
            if let Some(current) = current.as_ref().filter(|current| current.number == number) {
                self.sync_call(&current.file, &current.path).await?;
                continue;
            }
            let path = segment::segment_path(&self.options.dir, number);
            match self.fs.open(&path, self.options.open_mode(false)).await {
                Ok(file) => self.sync_call(&file, &path).await?,
                // Retired: everything in it is in a table already.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(Error::io("open", path, error)),
            }
        }
        // One per round, however many segments it synced: each counted sync covers
        // everything written before it started (what `tests/crash_images.rs` relies on).
        WalStats::add(&self.stats.syncs, 1);
        self.note_durable(covered, covered_seq);
        Ok(())
    }

    /// Everything before `end` (up to `seq`) is durable.
    fn note_durable(&self, end: (u64, u64), seq: u64) {
        self.durable_end.set(self.durable_end.get().max(end));
        self.stats.durable_seq.set(self.stats.durable_seq.get().max(seq));
        self.stats.note_durable(self.durable_end.get());
    }

    /// One `fdatasync` (or `fsync`) of one segment file; a failure is never retried.
    async fn sync_call(&self, file: &F::File, path: &std::path::Path) -> Result<()> {
        let started = self.fs.now();
        let result = match self.options.sync_call {
            SyncCall::Fsync => file.sync_all().await,
            SyncCall::Fdatasync | SyncCall::Dsync => file.sync_data().await,
        };
        if let Err(error) = result {
            self.state.borrow_mut().sync_failed = true;
            WalStats::add(&self.stats.sync_errors, 1);
            return Err(Error::failed_sync("sync", path, error));
        }
        self.stats
            .sync_latency
            .record_duration(self.fs.now().saturating_duration_since(started));
        Ok(())
    }

    /// Writes one batch, and makes it durable when it is a durable batch: through the segment's
    /// `O_DSYNC` file when there is one and everything before the batch is durable, else with a
    /// sync after the write.
    async fn write_batch(&self, batch: &mut Batch) -> Result<()> {
        let segment = self.segment_file(batch.segment_number).await?;
        let everything_before_durable = self.durable_end.get() >= (batch.segment_number, batch.start_offset);
        let dsync_file = segment
            .dsync_file
            .as_ref()
            .filter(|_| batch.durable && everything_before_durable);
        let file = dsync_file.unwrap_or(&segment.file);
        let mut buf = std::mem::replace(&mut batch.buf, AlignedBuf::zeroed(0));
        let unit = self.write_unit.get();
        buf.pad_to(unit);
        // A batch that ends on a unit boundary also writes the next unit's zeros: in a recycled
        // segment that unit holds the file's previous life, and the log's end must read as a
        // zero header, not as a torn record (recovery would say it dropped one).
        if batch.end_offset.is_multiple_of(unit as u64) && batch.end_offset < self.options.segment_bytes {
            let grown = buf.extend_zeros(unit);
            debug_assert!(grown, "batch buffers have room for a padding unit");
        }
        let bytes = buf.len() as u64;
        let started = self.fs.now();
        let (result, buf) = file.write_at(buf, batch.block_offset).await;
        batch.buf = buf;
        let took = self.fs.now().saturating_duration_since(started);
        if let Err(error) = result {
            if dsync_file.is_some() {
                // The write carried its sync: whatever the errno (`ENOSPC` included), it is a
                // failed sync, never retried.
                self.state.borrow_mut().sync_failed = true;
                WalStats::add(&self.stats.sync_errors, 1);
                return Err(Error::failed_sync("write (O_DSYNC)", &segment.path, error));
            }
            return Err(Error::io("write", &segment.path, error));
        }
        // After a segment's end, the next write goes to the start of the next segment: a sync
        // of what was written need not open the sealed one again.
        self.written_end.set(if batch.sealed {
            (batch.segment_number + 1, 0)
        } else {
            (batch.segment_number, batch.end_offset)
        });
        let stats = &self.stats;
        WalStats::add(&stats.writes, 1);
        WalStats::add(&stats.written_bytes, bytes);
        stats.write_latency.record_duration(took);
        stats.batch_records.record(u64::from(batch.records));
        stats.batch_bytes.record(batch.end_offset - batch.start_offset);
        stats.written_seq.set(stats.written_seq.get().max(batch.last_seq));
        if dsync_file.is_some() {
            WalStats::add(&stats.syncs, 1);
            stats.sync_latency.record_duration(took);
            self.note_durable(self.written_end.get(), batch.last_seq);
        } else if batch.durable {
            self.sync_written().await?;
        } else if batch.periodic {
            self.state.borrow_mut().periodic_unsynced = true;
        }
        Ok(())
    }

    /// A batch failed: fail it and everything queued after it, and rewind the log position to where
    /// it started. Anything but a transient error (`ENOSPC`, `EMFILE` opening a segment) poisons
    /// the writer: after a failed write or sync the
    /// file's content is unknown, and retrying a sync can report success for lost data.
    fn fail_from(&self, batch: Batch, error: Error) {
        let mut state = self.state.borrow_mut();
        if !error.is_transient() && state.poisoned.is_none() {
            tracing::error!("WAL failure, refusing writes until restart: {error}");
            state.poisoned = Some(error.to_string());
        }
        let prefix_len = crate::coding::to_usize(batch.start_offset - batch.block_offset);
        // The failed batch and those after it are not in the log: later batches count on what
        // it counted on.
        state.floor_after_taken = batch.floor;
        state.position = LogPosition {
            segment_number: batch.segment_number,
            offset: batch.start_offset,
            tail: batch.buf.as_slice()[..prefix_len].to_vec(),
        };
        let later: Vec<Batch> = state.queue.drain(..).collect();
        drop(state);
        batch.ticket.complete(Err(error.clone()));
        for failed in later {
            failed.ticket.complete(Err(error.clone()));
        }
    }

    /// Stops taking records, writes what is queued, syncs, and stops the background tasks.
    pub async fn close(&self) -> Result<()> {
        self.state.borrow_mut().closing = true;
        self.work.notify_one();
        // The committer is never aborted (that would drop an in-flight write and strand its
        // waiters); it returns by itself once the queue is drained.
        let committer = self.committer.borrow_mut().take();
        if let Some(committer) = committer {
            committer.await;
        }
        let (has_segment, spare, poisoned) = {
            let mut state = self.state.borrow_mut();
            (
                state.current.is_some(),
                state.spare.take(),
                state.poisoned.clone(),
            )
        };
        if let Some((_, handle)) = spare {
            // Let a segment being pre-written finish, so no half-written file is left behind.
            let _ = handle.await;
        }
        // After a failed write, what was written before it is still synced (unless a sync
        // failed): its writers were acknowledged under `periodic` and `never`.
        if has_segment {
            // Under `never`, this is where the segments the writer left unsynced become durable
            // (found by the simulator: a power failure after a clean close lost the writes of
            // every segment but the last).
            self.sync_written().await?;
            if poisoned.is_none() {
                self.mark_durable().await?;
            }
        }
        match poisoned {
            Some(cause) => Err(Error::Poisoned { cause }),
            None => Ok(()),
        }
    }

    /// After a clean close's final sync, appends a record claiming everything before it durable
    /// (a segment end instead, if the segment has no room for one more after it), and syncs it.
    /// Without it the last writes of a life were claimed by no record under `periodic` and
    /// `never` (nor the last batch under `group`): a flipped bit in them after a clean close
    /// read as a torn tail, and recovery silently dropped every later write (found by sweeping
    /// WAL damage under every strategy, `tests/corruption.rs`).
    async fn mark_durable(&self) -> Result<()> {
        let mut batch = {
            let mut state = self.state.borrow_mut();
            let room = self.options.segment_bytes - state.position.offset;
            if room >= 2 * SEGMENT_END_BYTES as u64 {
                let last_seq = state.next_seq.saturating_sub(1);
                self.push_record(
                    &mut state,
                    RecordKind::DurableMark,
                    last_seq,
                    b"",
                    b"",
                    Durability::Group,
                );
            } else {
                self.seal_segment(&mut state);
            }
            drop(state);
            self.take_batch().expect("a batch was just queued")
        };
        // A segment end in place of the mark is not a durable record by itself.
        batch.durable = true;
        self.write_batch(&mut batch).await
    }
}

async fn run_committer<F: FileSystem>(writer: Rc<WalWriter<F>>) {
    loop {
        let Some(mut batch) = writer.take_batch() else {
            if writer.state.borrow().closing {
                return;
            }
            writer.work.notified().await;
            continue;
        };
        if batch.planted_panic {
            crate::panic_trigger::fire(crate::panic_trigger::Place::Wal);
        }
        match writer.write_batch(&mut batch).await {
            Ok(()) => {
                if !batch.durable && writer.durable_end.get() < (batch.segment_number, batch.end_offset) {
                    writer
                        .stats
                        .note_exposed((batch.segment_number, batch.end_offset), writer.fs.now());
                }
                batch.ticket.complete(Ok(()));
                let mut state = writer.state.borrow_mut();
                if state.free_buffers.len() < FREE_BUFFERS_MAX {
                    state.free_buffers.push(batch.buf);
                }
            }
            Err(error) => writer.fail_from(batch, error),
        }
    }
}

/// Syncs the current segment every `interval` while anything written is unsynced.
async fn run_periodic_sync<F: FileSystem>(fs: F, writer: std::rc::Weak<WalWriter<F>>, interval: Duration) {
    let mut next_tick = fs.now() + interval;
    loop {
        fs.sleep(next_tick.saturating_duration_since(fs.now())).await;
        // As tokio's `MissedTickBehavior::Delay`: the next tick is an interval after this one
        // was taken, however late, and the sync's own time does not stretch the interval.
        next_tick = fs.now() + interval;
        let Some(writer) = writer.upgrade() else { return };
        {
            let mut state = writer.state.borrow_mut();
            if state.closing {
                return;
            }
            if state.sync_failed || !state.periodic_unsynced {
                continue;
            }
            state.periodic_unsynced = false;
        }
        if let Err(error) = writer.sync_written().await {
            tracing::error!("periodic WAL sync failed, refusing writes until restart: {error}");
            writer.state.borrow_mut().poisoned = Some(error.to_string());
        }
    }
}
