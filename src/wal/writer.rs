//! The WAL writer: assigns sequence numbers, gathers records into group-commit batches, and runs
//! the one committer task that writes each batch with a single `O_DIRECT` write (and a sync, when
//! the fsync strategy asks for one). Knows bytes and segments, not memtables: a caller learns
//! through its [`Ticket`] when its record is durable and applies it itself.
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
use super::segment;
use crate::config::{FsyncStrategy, SyncCall, WalIo};
use crate::error::{Error, Result};
use crate::io::{round_down_to_block, AlignedBuf, DataFile, FileSystem, OpenMode, Task, BLOCK_BYTES};

/// How the writer is set up.
#[derive(Debug, Clone)]
pub struct WalOptions {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub batch_bytes: usize,
    pub fsync: FsyncStrategy,
    pub io: WalIo,
    pub sync_call: SyncCall,
}

impl WalOptions {
    /// How segment files are opened for this mechanism.
    pub fn open_mode(&self) -> OpenMode {
        OpenMode::READ_WRITE.with_mechanism(self.io == WalIo::Buffered, self.sync_call == SyncCall::Dsync)
    }
}

/// Where the log ends: the next record goes to `offset` of segment `segment_number`; `tail` holds
/// the bytes of the partial block before `offset` (rewritten by the next direct write).
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

    fn complete(&self, outcome: Result<()>) {
        *self.0.outcome.borrow_mut() = Some(outcome);
        self.0.done.notify_waiters();
    }
}

/// Records gathered for one direct write.
struct Batch {
    segment_number: u64,
    /// File offset of the write: `start_offset` rounded down to a block.
    block_offset: u64,
    /// Where the batch's first record starts.
    start_offset: u64,
    /// Bytes from `block_offset`: the previous partial block, then the records.
    buf: AlignedBuf,
    records: u32,
    /// Where its last record ends.
    end_offset: u64,
    /// No more records go in (its segment was sealed, or the strategy gives each record its own).
    closed: bool,
    ticket: Ticket,
    /// Holds the key of a panic planted in the committer (`crate::panic_trigger`).
    planted_panic: bool,
}

struct OpenSegment<F: FileSystem> {
    number: u64,
    path: PathBuf,
    file: Rc<F::File>,
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
    spare: Option<(u64, Task<Result<F::File>>)>,
    /// Written but not yet synced (drives `periodic`).
    unsynced: bool,
    free_buffers: Vec<AlignedBuf>,
}

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
    syncs: Cell<u64>,
    /// Everything before this (segment, offset) has been written.
    written_end: Cell<(u64, u64)>,
    /// Everything before this (segment, offset) is known durable (drives the claims of
    /// `periodic` and `never`; see [`WalWriter::durable_claim`]).
    durable_end: Cell<(u64, u64)>,
}

impl<F: FileSystem> WalWriter<F> {
    /// Starts writing at `position` with `next_seq`, and spawns the committer (and, for
    /// `periodic`, the sync timer) on the current ring. Every record before `next_seq` must be
    /// durable (recovery syncs what it replayed).
    pub fn start(fs: F, options: WalOptions, position: LogPosition, next_seq: u64) -> Rc<Self> {
        assert_eq!(options.segment_bytes % BLOCK_BYTES as u64, 0);
        let interval = match options.fsync {
            FsyncStrategy::Periodic { interval_ms } => Some(Duration::from_millis(interval_ms)),
            _ => None,
        };
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
                unsynced: false,
                free_buffers: Vec::new(),
            }),
            work: Notify::new(),
            committer: RefCell::new(None),
            sync_lock: tokio::sync::Mutex::new(()),
            syncs: Cell::new(0),
            written_end: Cell::new(start),
            durable_end: Cell::new(start),
        });
        *writer.committer.borrow_mut() = Some(writer.fs.spawn(run_committer(writer.clone())));
        if let Some(interval) = interval {
            // Ends by itself at its first tick after the writer closes or is dropped.
            drop(writer.fs.spawn(run_periodic_sync(
                writer.fs.clone(),
                Rc::downgrade(&writer),
                interval,
            )));
        }
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

    /// How many WAL syncs have completed.
    pub fn syncs(&self) -> u64 {
        self.syncs.get()
    }

    /// The largest record payload a segment can hold.
    pub fn max_record_bytes(&self) -> usize {
        crate::coding::to_usize(self.options.segment_bytes) - SEGMENT_END_BYTES
    }

    /// Appends a record and returns its sequence number and the ticket that tells when it is
    /// durable. Synchronous: the record's place in the log is fixed before this returns.
    pub fn append(&self, kind: RecordKind, key: &[u8], value: &[u8]) -> Result<(u64, Ticket)> {
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
        state.next_seq += 1;
        let ticket = self.push_record(&mut state, kind, seq, key, value);
        drop(state);
        self.work.notify_one();
        Ok((seq, ticket))
    }

    /// Ends the current segment with a segment-end record and moves the position to the next one.
    fn seal_segment(&self, state: &mut State<F>) {
        let last_seq = state.next_seq.saturating_sub(1);
        self.push_record(state, RecordKind::SegmentEnd, last_seq, b"", b"");
        if let Some(batch) = state.queue.back_mut() {
            batch.closed = true;
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
    ) -> Ticket {
        let len = record::encoded_len(key, value);
        let one_record_per_batch =
            self.options.fsync == FsyncStrategy::Always && kind != RecordKind::SegmentEnd;
        let reuse = state.queue.back().is_some_and(|batch| {
            !batch.closed
                && batch.segment_number == state.position.segment_number
                && !(one_record_per_batch && batch.records > 0)
                && batch.buf.len() + len <= batch.buf.capacity() - BLOCK_BYTES
        });
        if !reuse {
            let batch = self.new_batch(state, len);
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
        record::encode(
            &mut batch.buf.as_mut_slice()[at..at + len],
            kind,
            seq,
            self.durable_claim(state.position.segment_number, batch.start_offset),
            key,
            value,
        );
        batch.records += 1;
        batch.planted_panic |= crate::panic_trigger::key_at(crate::panic_trigger::Place::Wal) == Some(key);
        state.position.offset += len as u64;
        batch.end_offset = state.position.offset;
        batch.ticket.clone()
    }

    /// What a record appended now to the batch starting at `batch_start` of segment `number` can
    /// claim was durable when it reaches the disk (the record field's encoding: 0 for nothing,
    /// else one more than the durable bytes of its segment, earlier segments being durable).
    /// - Each batch written only once every earlier one is durable (`always`, `group`, and any
    ///   strategy with `O_DSYNC` writes): everything before its batch.
    /// - `periodic`: a segment is synced before the writer leaves it, so every earlier segment,
    ///   and of this one what the last completed sync covered.
    /// - `never`: only what a sync covered, which is what recovery synced at start.
    fn durable_claim(&self, number: u64, batch_start: u64) -> u32 {
        let ordered = self.options.fsync.syncs_before_ack() || self.options.sync_call == SyncCall::Dsync;
        let prefix = match self.durable_end.get() {
            _ if ordered => Some(batch_start),
            (segment, offset) if segment == number => Some(offset),
            (segment, _) if segment < number && self.syncs_segments_before_leaving() => Some(0),
            _ => None,
        };
        prefix
            .and_then(|prefix| u32::try_from(prefix + 1).ok())
            .unwrap_or(0)
    }

    /// `periodic` syncs a segment before writing to the next (the ordered strategies need no
    /// such sync: every batch already is durable before the next is written).
    fn syncs_segments_before_leaving(&self) -> bool {
        matches!(self.options.fsync, FsyncStrategy::Periodic { .. })
    }

    /// A batch starting at the current position, its buffer holding the partial block before it.
    fn new_batch(&self, state: &mut State<F>, first_record_bytes: usize) -> Batch {
        let start_offset = state.position.offset;
        let block_offset = round_down_to_block(start_offset);
        let prefix_len = crate::coding::to_usize(start_offset - block_offset);
        // Room for the prefix, the records, a segment-end record and the padding block. A batch
        // that holds one record only (`always`) gets room for that record, not a whole
        // `--wal-batch-bytes`: with a thousand writers queued, a buffer each of 1 MiB held a
        // gigabyte (zeroed, so resident).
        let one_record = self.options.fsync == FsyncStrategy::Always;
        let records_bytes = if one_record {
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
            // The previous batch is still gathering: its last partial block is the prefix.
            Some(previous) if previous.segment_number == state.position.segment_number && prefix_len > 0 => {
                let from = crate::coding::to_usize(block_offset - previous.block_offset);
                buf.extend_from_slice(&previous.buf.as_slice()[from..from + prefix_len])
            }
            _ => {
                debug_assert_eq!(state.position.tail.len(), prefix_len);
                buf.extend_from_slice(&state.position.tail[..prefix_len])
            }
        };
        debug_assert!(prefix_copied);
        Batch {
            segment_number: state.position.segment_number,
            block_offset,
            start_offset,
            buf,
            records: 0,
            end_offset: start_offset,
            closed: false,
            ticket: Ticket(Rc::new(BatchSlot::default())),
            planted_panic: false,
        }
    }

    /// Takes the oldest batch for writing; if it was the last one, keeps its partial final block
    /// as the prefix of the next batch.
    fn take_batch(&self) -> Option<Batch> {
        let mut state = self.state.borrow_mut();
        let batch = state.queue.pop_front()?;
        if state.queue.is_empty() {
            let position = &mut state.position;
            position.tail = if batch.segment_number == position.segment_number {
                let from = crate::coding::to_usize(round_down_to_block(position.offset) - batch.block_offset);
                let to = crate::coding::to_usize(position.offset - batch.block_offset);
                batch.buf.as_slice()[from..to].to_vec()
            } else {
                Vec::new()
            };
        }
        Some(batch)
    }

    /// The open file of segment `number`, switching to it (and preparing the one after) if needed.
    async fn segment_file(&self, number: u64) -> Result<(Rc<F::File>, PathBuf)> {
        let previous = {
            let state = self.state.borrow();
            match &state.current {
                Some(current) if current.number == number => {
                    return Ok((current.file.clone(), current.path.clone()))
                }
                Some(current) => Some((current.file.clone(), current.path.clone())),
                None => None,
            }
        };
        // Leaving a segment under `periodic`: sync it now, or its tail would wait for no timer.
        if let Some((file, path)) = previous.filter(|_| self.syncs_segments_before_leaving()) {
            self.sync_file(&file, &path).await?;
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
        let file = match spare {
            Some(handle) => handle.await?,
            None => {
                segment::open_or_create(
                    &self.fs,
                    &self.options.dir,
                    number,
                    self.options.segment_bytes,
                    self.options.open_mode(),
                )
                .await?
            }
        };
        let path = segment::segment_path(&self.options.dir, number);
        let file = Rc::new(file);
        let mut state = self.state.borrow_mut();
        state.current = Some(OpenSegment {
            number,
            path: path.clone(),
            file: file.clone(),
        });
        // No spare once closing: nothing would wait for its pre-write (the mark a clean close
        // writes may be the first record of a new segment).
        if state.spare.is_none() && !state.closing {
            let (fs, dir, bytes, mode) = (
                self.fs.clone(),
                self.options.dir.clone(),
                self.options.segment_bytes,
                self.options.open_mode(),
            );
            let next = number + 1;
            let handle = self
                .fs
                .spawn(async move { segment::open_or_create(&fs, &dir, next, bytes, mode).await });
            state.spare = Some((next, handle));
        }
        Ok((file, path))
    }

    /// Makes what was written to `file` durable with the configured call; a no-op under `dsync`,
    /// where every completed write already is.
    ///
    /// While the writer runs, only the current segment is synced: it leaves a segment only once
    /// it is durable (under `periodic`), or never claims it durable (under `never`, until a clean
    /// close syncs the segments it left: [`WalWriter::sync_earlier_segments`]).
    async fn sync_file(&self, file: &F::File, path: &std::path::Path) -> Result<()> {
        if self.options.sync_call == SyncCall::Dsync {
            return Ok(());
        }
        let _one_at_a_time = self.sync_lock.lock().await;
        // What was written before the sync started is what it covers: this segment, and the
        // earlier ones, which were durable before the writer left them (or are never claimed).
        let covered = self.written_end.get();
        if self.state.borrow().sync_failed {
            return Err(Error::Poisoned {
                cause: "an earlier WAL sync failed".to_string(),
            });
        }
        let result = match self.options.sync_call {
            SyncCall::Fsync => file.sync_all().await,
            SyncCall::Fdatasync | SyncCall::Dsync => file.sync_data().await,
        };
        if let Err(error) = result {
            self.state.borrow_mut().sync_failed = true;
            return Err(Error::failed_sync("sync", path, error));
        }
        self.syncs.set(self.syncs.get() + 1);
        self.durable_end.set(self.durable_end.get().max(covered));
        Ok(())
    }

    /// Writes one batch (and syncs it when the strategy syncs before acknowledging).
    async fn write_batch(&self, batch: &mut Batch) -> Result<()> {
        let (file, path) = self.segment_file(batch.segment_number).await?;
        let mut buf = std::mem::replace(&mut batch.buf, AlignedBuf::zeroed(0));
        buf.pad_to_block();
        let (result, buf) = file.write_at(buf, batch.block_offset).await;
        batch.buf = buf;
        if let Err(error) = result {
            if self.options.sync_call == SyncCall::Dsync {
                // The write carried its sync: whatever the errno (`ENOSPC` included), it is a
                // failed sync, never retried.
                self.state.borrow_mut().sync_failed = true;
                return Err(Error::failed_sync("write (O_DSYNC)", &path, error));
            }
            return Err(Error::io("write", &path, error));
        }
        self.written_end.set((batch.segment_number, batch.end_offset));
        if self.options.sync_call == SyncCall::Dsync {
            self.durable_end.set(self.written_end.get());
        }
        if self.options.fsync.syncs_before_ack() {
            self.sync_file(&file, &path).await?;
        } else {
            self.state.borrow_mut().unsynced = true;
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
            eprintln!("ringkv: WAL failure, refusing writes until restart: {error}");
            state.poisoned = Some(error.to_string());
        }
        let prefix_len = crate::coding::to_usize(batch.start_offset - batch.block_offset);
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
        let (current, spare, poisoned) = {
            let mut state = self.state.borrow_mut();
            (
                state.current.as_ref().map(|c| (c.file.clone(), c.path.clone())),
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
        if let Some((file, path)) = current {
            self.sync_earlier_segments().await?;
            self.sync_file(&file, &path).await?;
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
                self.push_record(&mut state, RecordKind::DurableMark, last_seq, b"", b"");
            } else {
                self.seal_segment(&mut state);
            }
            drop(state);
            self.take_batch().expect("a batch was just queued")
        };
        self.write_batch(&mut batch).await?;
        let (file, path) = self.segment_file(batch.segment_number).await?;
        self.sync_file(&file, &path).await
    }

    /// Syncs the segments before the current one that no sync has covered: under `never` the
    /// writer leaves segments unsynced, and a clean close promises that everything written is
    /// durable (found by the simulator: a power failure after a clean close lost the writes of
    /// every segment but the last).
    async fn sync_earlier_segments(&self) -> Result<()> {
        let Some(current) = self.state.borrow().current.as_ref().map(|c| c.number) else {
            return Ok(());
        };
        let (durable_segment, _) = self.durable_end.get();
        for number in durable_segment..current {
            let path = segment::segment_path(&self.options.dir, number);
            let file = match self.fs.open(&path, self.options.open_mode()).await {
                Ok(file) => file,
                // Retired: everything in it is in a table already.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(Error::io("open", path, error)),
            };
            // Not `sync_file`: the durable end moves only with the current segment's sync, which
            // the caller makes next and which covers everything written. Nothing else syncs
            // now: the committer has stopped and `closing` stops the periodic timer.
            if let Err(error) = file.sync_data().await {
                self.state.borrow_mut().sync_failed = true;
                return Err(Error::failed_sync("sync", &path, error));
            }
            self.syncs.set(self.syncs.get() + 1);
        }
        Ok(())
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
        let current = {
            let mut state = writer.state.borrow_mut();
            if state.closing {
                return;
            }
            if state.sync_failed || !state.unsynced {
                continue;
            }
            state.unsynced = false;
            state.current.as_ref().map(|c| (c.file.clone(), c.path.clone()))
        };
        if let Some((file, path)) = current {
            if let Err(error) = writer.sync_file(&file, &path).await {
                eprintln!("ringkv: periodic WAL sync failed, refusing writes until restart: {error}");
                writer.state.borrow_mut().poisoned = Some(error.to_string());
            }
        }
    }
}
