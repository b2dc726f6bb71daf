//! The producer side: [`ResultPartitionWriter`] writing into pipelined subpartitions, their
//! views, and the [`ResultPartitionManager`] consumers find them in. Flink: `ResultPartition`,
//! `PipelinedSubpartition`, `PipelinedSubpartitionView`, `ResultPartitionManager`,
//! `RecordWriter` with its `SpanningRecordSerializer`.
//!
//! ## Subpartition queues
//!
//! Each subpartition is a queue of finished buffers, typed batches and events, under one mutex
//! taken once per buffer (never per record: the writer fills its current buffer without any
//! lock and enqueues it when full or on `flush`). A consumer reads through a view
//! ([`SubpartitionView`]); the view's listener is told when data arrives after the consumer found
//! the queue empty, and is called with no lock held.
//!
//! ## Lifecycle
//!
//! A writer is open, then (optionally) past its end of data (`end_of_data`: `EndOfData` went to
//! every subpartition; records are refused, checkpoint barriers still go out), then finished
//! (`EndOfPartition`) or released. Every event is broadcast after a flush, so it follows the
//! records written before it in every subpartition queue.
//!
//! A partition is registered at creation and removed from the manager when every subpartition
//! is done: its `EndOfPartition` was read, or its consumer released the view (then later writes
//! to it are dropped at once, so a gone consumer never blocks the producer), or the producer
//! released the partition. The pool's reservation is given back when the writer is dropped; the
//! buffers still queued or held by consumers return one by one.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::buffer::{
    lock, BlockCounters, BufferPermit, Interrupter, LocalBufferPool, PooledBuffer,
};
use super::error::NetworkError;
use super::{NetworkEvent, ResultPartitionId};

/// One entry of a subpartition queue.
pub(crate) enum SubItem {
    /// Serialized records.
    Buffer(PooledBuffer),
    /// A typed batch for a local consumer, holding one buffer permit.
    Batch {
        batch: Box<dyn Any + Send>,
        records: usize,
        permit: BufferPermit,
    },
    /// An in-band event.
    Event(NetworkEvent),
}

impl SubItem {
    fn is_data(&self) -> bool {
        !matches!(self, SubItem::Event(_))
    }
}

/// Told when a subpartition has data for a consumer that found it empty. Called from the
/// producer's thread with no lock held; must not block.
pub(crate) trait AvailabilityListener: Send + Sync {
    fn notify_data_available(&self);
}

#[derive(Default)]
struct SubState {
    queue: VecDeque<SubItem>,
    /// Data entries (buffers and batches) in the queue: the backlog.
    backlog: usize,
    listener: Option<Arc<dyn AvailabilityListener>>,
    has_view: bool,
    needs_notify: bool,
    released: Option<String>,
    view_released: bool,
    consumed: bool,
    done: bool,
}

/// A registered partition. Flink: `ResultPartition` of `PipelinedSubpartition`s.
pub(crate) struct ResultPartition {
    id: ResultPartitionId,
    subs: Vec<Mutex<SubState>>,
    done_subs: AtomicUsize,
    manager: Weak<ResultPartitionManager>,
}

impl ResultPartition {
    fn sub(&self, sub: usize) -> Option<&Mutex<SubState>> {
        self.subs.get(sub)
    }

    /// Appends `item` to `sub`; drops it at once if nobody will read it.
    fn add(&self, sub: usize, item: SubItem) {
        let Some(state) = self.sub(sub) else { return };
        let mut st = lock(state);
        if st.released.is_some() || st.view_released || st.consumed {
            drop(st);
            drop(item);
            return;
        }
        if item.is_data() {
            st.backlog += 1;
        }
        st.queue.push_back(item);
        let listener = if st.needs_notify {
            st.needs_notify = false;
            st.listener.clone()
        } else {
            None
        };
        drop(st);
        if let Some(listener) = listener {
            listener.notify_data_available();
        }
    }

    fn mark_done(&self, st: &mut SubState) -> bool {
        if st.done {
            return false;
        }
        st.done = true;
        self.done_subs.fetch_add(1, Ordering::AcqRel) + 1 == self.subs.len()
    }

    fn all_done(&self) {
        if let Some(manager) = self.manager.upgrade() {
            manager.remove(&self.id);
        }
    }

    /// Drops every queued entry and tells consumers the producer failed with `cause`.
    fn release(&self, cause: &str) {
        let mut last = false;
        for state in &self.subs {
            let mut st = lock(state);
            if st.consumed {
                continue;
            }
            if st.released.is_none() {
                st.released = Some(cause.to_string());
            }
            let drained: VecDeque<SubItem> = std::mem::take(&mut st.queue);
            st.backlog = 0;
            let listener = st.listener.clone();
            last |= self.mark_done(&mut st);
            drop(st);
            drop(drained);
            if let Some(listener) = listener {
                listener.notify_data_available();
            }
        }
        if last || self.done_subs.load(Ordering::Acquire) >= self.subs.len() {
            self.all_done();
        }
    }
}

/// What a view's poll found.
pub(crate) enum ViewPoll {
    /// The next entry; `backlog` data entries remain; `more` says whether anything remains,
    /// `next_is_event` whether the next entry needs no credit.
    Item {
        item: SubItem,
        backlog: usize,
        more: bool,
        next_is_event: bool,
    },
    /// Nothing to take now; the listener is called when that changes (or, for data without
    /// credit, the caller retries when it has credit).
    Nothing,
    /// The producer released the partition.
    Failed(String),
}

/// A consumer's read handle on one subpartition. Flink: `PipelinedSubpartitionView`.
/// Dropping it releases the subpartition if it was not read to its end.
pub(crate) struct SubpartitionView {
    partition: Arc<ResultPartition>,
    sub: usize,
}

impl SubpartitionView {
    /// Takes the next entry; a data entry only if `credit` (events always).
    pub(crate) fn poll(&self, credit: bool) -> ViewPoll {
        let Some(state) = self.partition.sub(self.sub) else {
            return ViewPoll::Nothing;
        };
        let mut st = lock(state);
        if let Some(cause) = &st.released {
            return ViewPoll::Failed(cause.clone());
        }
        let data = match st.queue.front() {
            None => {
                st.needs_notify = true;
                return ViewPoll::Nothing;
            }
            Some(item) => item.is_data(),
        };
        if data && !credit {
            return ViewPoll::Nothing;
        }
        let Some(item) = st.queue.pop_front() else {
            return ViewPoll::Nothing;
        };
        if data {
            st.backlog = st.backlog.saturating_sub(1);
        }
        let mut last = false;
        if matches!(item, SubItem::Event(NetworkEvent::EndOfPartition)) {
            st.consumed = true;
            last = self.partition.mark_done(&mut st);
        }
        let more = !st.queue.is_empty();
        if !more {
            st.needs_notify = true;
        }
        let next_is_event = matches!(st.queue.front(), Some(SubItem::Event(_)));
        let backlog = st.backlog;
        drop(st);
        if last {
            self.partition.all_done();
        }
        ViewPoll::Item {
            item,
            backlog,
            more,
            next_is_event,
        }
    }

    /// Data entries queued for this view now. Does not take anything.
    pub(crate) fn backlog(&self) -> usize {
        self.partition
            .sub(self.sub)
            .map_or(0, |state| lock(state).backlog)
    }

    /// Why the producer released the partition, if it did. Does not take anything.
    pub(crate) fn failure(&self) -> Option<String> {
        let state = self.partition.sub(self.sub)?;
        lock(state).released.clone()
    }

    /// The consumer is gone: drops the queue; later writes are dropped at once.
    pub(crate) fn release(&self) {
        let Some(state) = self.partition.sub(self.sub) else {
            return;
        };
        let mut st = lock(state);
        if st.consumed || st.view_released {
            return;
        }
        st.view_released = true;
        st.listener = None;
        let drained: VecDeque<SubItem> = std::mem::take(&mut st.queue);
        st.backlog = 0;
        let last = self.partition.mark_done(&mut st);
        drop(st);
        drop(drained);
        if last {
            self.partition.all_done();
        }
    }
}

impl Drop for SubpartitionView {
    fn drop(&mut self) {
        self.release();
    }
}

/// The partitions a ShuffleEnvironment produces, by id. Flink: `ResultPartitionManager`.
#[derive(Default)]
pub(crate) struct ResultPartitionManager {
    partitions: Mutex<HashMap<ResultPartitionId, Arc<ResultPartition>>>,
    /// Bytes the data server wrote to consumers on other TaskExecutors.
    pub(crate) remote_bytes_sent: std::sync::atomic::AtomicU64,
    /// Connections the data server refused in the security handshake.
    pub(crate) connections_refused: std::sync::atomic::AtomicU64,
}

impl ResultPartitionManager {
    fn remove(&self, id: &ResultPartitionId) {
        lock(&self.partitions).remove(id);
    }

    /// Whether `id` is registered.
    pub(crate) fn contains(&self, id: &ResultPartitionId) -> bool {
        lock(&self.partitions).contains_key(id)
    }

    /// Releases a registered partition (e.g. job cancellation): queued data is dropped and its
    /// consumers fail with `cause`.
    pub(crate) fn release(&self, id: &ResultPartitionId, cause: &str) {
        let partition = lock(&self.partitions).remove(id);
        if let Some(partition) = partition {
            partition.release(cause);
        }
    }

    /// Creates the view of one subpartition; `Ok(None)` if the partition is not registered
    /// (yet): the caller retries with backoff.
    pub(crate) fn create_view(
        &self,
        id: &ResultPartitionId,
        sub: u32,
        listener: Arc<dyn AvailabilityListener>,
    ) -> Result<Option<SubpartitionView>, NetworkError> {
        let Some(partition) = lock(&self.partitions).get(id).cloned() else {
            return Ok(None);
        };
        let index = sub as usize;
        let Some(state) = partition.sub(index) else {
            return Err(NetworkError::RequestRejected {
                detail: format!(
                    "partition {id} has {} subpartitions, subpartition {sub} was requested",
                    partition.subs.len()
                ),
            });
        };
        let mut st = lock(state);
        if st.has_view || st.done {
            return Err(NetworkError::RequestRejected {
                detail: format!("subpartition {sub} of partition {id} is already being consumed"),
            });
        }
        st.has_view = true;
        let notify_now = !st.queue.is_empty() || st.released.is_some();
        st.needs_notify = !notify_now;
        st.listener = Some(Arc::clone(&listener));
        drop(st);
        if notify_now {
            listener.notify_data_available();
        }
        Ok(Some(SubpartitionView {
            partition,
            sub: index,
        }))
    }
}

/// Counters of one writer. Flink: the `numRecordsOut`, `numBuffersOut` and
/// `backPressuredTimeMsPerSecond` metrics of a task's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionStats {
    /// Records written (through `write_record`, or counted in `write_batch`).
    pub records_written: u64,
    /// Bytes of serialized records written (length prefixes included).
    pub bytes_written: u64,
    /// Buffers enqueued.
    pub buffers_written: u64,
    /// Typed batches enqueued.
    pub batches_written: u64,
    /// Whether the writer is blocked on a buffer right now (backpressured).
    pub blocked: bool,
    /// How many times the writer blocked on a buffer.
    pub block_count: u64,
    /// Total time blocked on buffers: the backpressured time.
    pub blocked_time: Duration,
}

/// A handle reading a writer's [`PartitionStats`] from another thread (the writer itself is
/// owned by its task thread, which may be blocked).
#[derive(Debug, Clone)]
pub struct PartitionStatsHandle {
    counters: Arc<BlockCounters>,
    pool: Weak<LocalBufferPool>,
    partition: Weak<ResultPartition>,
}

impl PartitionStatsHandle {
    /// The fraction of the writer's buffer pool in use (Flink: `buffers.outPoolUsage`); 0 once
    /// the partition is gone.
    pub fn pool_usage(&self) -> f64 {
        self.pool.upgrade().map_or(0.0, |pool| pool.usage())
    }

    /// Buffers and batches queued in the partition's subpartitions, not yet taken by their
    /// consumers (Flink: `buffers.outputQueueLength`).
    pub fn queue_length(&self) -> usize {
        self.partition.upgrade().map_or(0, |p| {
            p.subs
                .iter()
                .map(|sub| {
                    let st = lock(sub);
                    if st.released.is_some() || st.view_released {
                        0
                    } else {
                        st.backlog
                    }
                })
                .sum()
        })
    }

    /// The counters now. Record counts are published once per buffer and before blocking.
    pub fn get(&self) -> PartitionStats {
        let c = &self.counters;
        PartitionStats {
            records_written: c.records.load(Ordering::Acquire),
            bytes_written: c.bytes.load(Ordering::Acquire),
            buffers_written: c.buffers.load(Ordering::Acquire),
            batches_written: c.batches.load(Ordering::Acquire),
            blocked: c.blocked.load(Ordering::Acquire),
            block_count: c.block_count.load(Ordering::Acquire),
            blocked_time: Duration::from_nanos(c.blocked_nanos.load(Ordering::Acquire)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterState {
    Open,
    /// `EndOfData` was sent: only events and `finish` may follow.
    DataEnded,
    Finished,
    Released,
}

/// Writes one task's output into one result partition: records serialized into buffers of
/// `segment_size` bytes, typed batches for local consumers, and events. Flink: `RecordWriter`
/// over a `ResultPartition` (`BufferWritingResultPartition`).
///
/// Owned by the producer task thread. A record is a `u32` little-endian length then its bytes;
/// records longer than what is left of a buffer continue in the next ones (Flink's spanning
/// serializer). Writes block while the partition's LocalBufferPool is exhausted: that is
/// backpressure. [`interrupter`](Self::interrupter) wakes a blocked write. Dropping a writer
/// without [`finish`](Self::finish) releases the partition ("producer dropped").
pub struct ResultPartitionWriter {
    id: ResultPartitionId,
    partition: Arc<ResultPartition>,
    pool: Arc<LocalBufferPool>,
    local: Vec<bool>,
    current: Vec<Option<PooledBuffer>>,
    segment_size: usize,
    local_batch_records: usize,
    state: WriterState,
    counters: Arc<BlockCounters>,
    records: u64,
    bytes: u64,
    buffers: u64,
    batches: u64,
}

impl std::fmt::Debug for ResultPartitionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultPartitionWriter")
            .field("id", &self.id)
            .field("subpartitions", &self.local.len())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ResultPartitionWriter {
    /// Registers a new partition at `manager`.
    pub(crate) fn register(
        manager: &Arc<ResultPartitionManager>,
        id: ResultPartitionId,
        local: Vec<bool>,
        pool: Arc<LocalBufferPool>,
        local_batch_records: usize,
    ) -> Result<ResultPartitionWriter, NetworkError> {
        let n = local.len();
        let partition = Arc::new(ResultPartition {
            id,
            subs: (0..n).map(|_| Mutex::new(SubState::default())).collect(),
            done_subs: AtomicUsize::new(0),
            manager: Arc::downgrade(manager),
        });
        {
            let mut partitions = lock(&manager.partitions);
            if partitions.contains_key(&id) {
                drop(partitions);
                pool.destroy();
                return Err(NetworkError::DuplicatePartition {
                    partition: id.to_string(),
                });
            }
            partitions.insert(id, Arc::clone(&partition));
        }
        let segment_size = pool.segment_size();
        Ok(ResultPartitionWriter {
            id,
            partition,
            pool,
            local,
            current: (0..n).map(|_| None).collect(),
            segment_size,
            local_batch_records,
            state: WriterState::Open,
            counters: Arc::new(BlockCounters::default()),
            records: 0,
            bytes: 0,
            buffers: 0,
            batches: 0,
        })
    }

    /// The partition's id.
    pub fn id(&self) -> ResultPartitionId {
        self.id
    }

    /// One subpartition per consumer subtask.
    pub fn num_subpartitions(&self) -> usize {
        self.local.len()
    }

    /// Whether subpartition `sub`'s consumer runs in this process (typed batches allowed).
    pub fn is_local(&self, sub: usize) -> bool {
        self.local.get(sub).copied().unwrap_or(false)
    }

    /// How many records a typed local batch should hold (`local_batch_records`).
    pub fn local_batch_records(&self) -> usize {
        self.local_batch_records
    }

    /// The error of a writer that was finished or released, `None` while events may be sent.
    fn closed_error(&self) -> Option<NetworkError> {
        let state = match self.state {
            WriterState::Open | WriterState::DataEnded => return None,
            WriterState::Finished => "finished",
            WriterState::Released => "released",
        };
        Some(NetworkError::WriterClosed {
            partition: self.id.to_string(),
            state: state.into(),
        })
    }

    /// Checks that records may be written into `sub`.
    fn check_open(&self, sub: usize) -> Result<(), NetworkError> {
        if self.state != WriterState::Open {
            return Err(self
                .closed_error()
                .unwrap_or_else(|| NetworkError::DataEnded {
                    partition: self.id.to_string(),
                }));
        }
        if sub >= self.local.len() {
            return Err(NetworkError::InvalidSubpartition {
                subpartition: sub,
                count: self.local.len(),
            });
        }
        Ok(())
    }

    /// Writes one record into subpartition `sub`, blocking while no buffer is available.
    pub fn write_record(&mut self, sub: usize, record: &[u8]) -> Result<(), NetworkError> {
        self.check_open(sub)?;
        let len = u32::try_from(record.len())
            .map_err(|_| NetworkError::RecordTooLarge { len: record.len() })?;
        let header = len.to_le_bytes();
        // Fast path: the whole record fits in the current buffer.
        if let Some(Some(buf)) = self.current.get_mut(sub) {
            if self.segment_size - buf.data.len() >= 4 + record.len() {
                buf.data.extend_from_slice(&header);
                buf.data.extend_from_slice(record);
                self.records += 1;
                self.bytes += 4 + u64::from(len);
                if buf.data.len() == self.segment_size {
                    self.enqueue_current(sub);
                }
                return Ok(());
            }
        }
        self.write_bytes(sub, &header)?;
        self.write_bytes(sub, record)?;
        self.records += 1;
        self.bytes += 4 + u64::from(len);
        Ok(())
    }

    fn write_bytes(&mut self, sub: usize, mut data: &[u8]) -> Result<(), NetworkError> {
        while !data.is_empty() {
            let needs_buffer = matches!(self.current.get(sub), Some(None));
            if needs_buffer {
                self.publish();
                let buf = self.pool.request_buffer(sub, &self.counters)?;
                if let Some(slot) = self.current.get_mut(sub) {
                    *slot = Some(buf);
                }
            }
            let Some(Some(buf)) = self.current.get_mut(sub) else {
                return Err(NetworkError::InvalidSubpartition {
                    subpartition: sub,
                    count: self.local.len(),
                });
            };
            let room = self.segment_size - buf.data.len();
            let n = room.min(data.len());
            buf.data.extend_from_slice(&data[..n]);
            data = &data[n..];
            if buf.data.len() == self.segment_size {
                self.enqueue_current(sub);
            }
        }
        Ok(())
    }

    fn enqueue_current(&mut self, sub: usize) {
        if let Some(buf) = self.current.get_mut(sub).and_then(Option::take) {
            self.buffers += 1;
            self.partition.add(sub, SubItem::Buffer(buf));
            self.publish();
        }
    }

    /// Makes the counters visible to [`PartitionStatsHandle`].
    fn publish(&self) {
        let c = &self.counters;
        c.records.store(self.records, Ordering::Release);
        c.bytes.store(self.bytes, Ordering::Release);
        c.buffers.store(self.buffers, Ordering::Release);
        c.batches.store(self.batches, Ordering::Release);
    }

    /// Hands a typed batch of `records` records to the local consumer of `sub`: no
    /// serialization. Takes one buffer permit from the pool (blocking likewise), returned when
    /// the consumer drops the [`TypedBatch`](super::TypedBatch).
    pub fn write_batch(
        &mut self,
        sub: usize,
        batch: Box<dyn Any + Send>,
        records: usize,
    ) -> Result<(), NetworkError> {
        self.check_open(sub)?;
        if !self.is_local(sub) {
            return Err(NetworkError::NotLocal { subpartition: sub });
        }
        // Keep the order with records written before the batch.
        self.enqueue_current(sub);
        self.publish();
        let permit = self.pool.request_permit(sub, &self.counters)?;
        self.records += records as u64;
        self.batches += 1;
        self.partition.add(
            sub,
            SubItem::Batch {
                batch,
                records,
                permit,
            },
        );
        self.publish();
        Ok(())
    }

    /// Enqueues every partially filled buffer, so consumers see what was written so far.
    /// Flink: `flushAll` (the output flusher's periodic call).
    pub fn flush(&mut self) -> Result<(), NetworkError> {
        if self.closed_error().is_some() {
            return Ok(());
        }
        for sub in 0..self.current.len() {
            self.enqueue_current(sub);
        }
        self.publish();
        Ok(())
    }

    /// Appends `event` to every subpartition, local and remote, after flushing: the event
    /// follows every record and batch written before it, and precedes every one written after.
    /// Events need no buffer and no credit, so this never blocks. Flink:
    /// `ResultPartition.broadcastEvent`.
    ///
    /// `EndOfData` is [`end_of_data`](Self::end_of_data); `EndOfPartition` is
    /// [`finish`](Self::finish). Fails after `finish` or `release` with
    /// [`NetworkError::WriterClosed`], and for a second `EndOfData` with
    /// [`NetworkError::DataEnded`].
    pub fn broadcast_event(&mut self, event: NetworkEvent) -> Result<(), NetworkError> {
        match event {
            NetworkEvent::EndOfPartition => return self.finish(),
            NetworkEvent::EndOfData
            | NetworkEvent::CheckpointBarrier { .. }
            | NetworkEvent::Watermark(_)
            | NetworkEvent::WatermarkStatus { .. } => {}
        }
        if let Some(err) = self.closed_error() {
            return Err(err);
        }
        let end_of_data = matches!(event, NetworkEvent::EndOfData);
        if end_of_data && self.state == WriterState::DataEnded {
            return Err(NetworkError::DataEnded {
                partition: self.id.to_string(),
            });
        }
        self.flush()?;
        for sub in 0..self.local.len() {
            self.partition.add(sub, SubItem::Event(event));
        }
        if end_of_data {
            self.state = WriterState::DataEnded;
        }
        Ok(())
    }

    /// Broadcasts `EndOfData`: no records follow on any subpartition. Afterwards
    /// `write_record` and `write_batch` fail with [`NetworkError::DataEnded`], while checkpoint
    /// barriers ([`broadcast_event`](Self::broadcast_event)) and [`finish`](Self::finish) still
    /// work. Flink: `ResultPartition.notifyEndOfData`.
    pub fn end_of_data(&mut self) -> Result<(), NetworkError> {
        self.broadcast_event(NetworkEvent::EndOfData)
    }

    /// Whether [`end_of_data`](Self::end_of_data) was called (and the writer not finished or
    /// released since).
    pub fn is_data_ended(&self) -> bool {
        self.state == WriterState::DataEnded
    }

    /// Flushes and appends `EndOfPartition` to every subpartition. Later writes fail. The
    /// partition leaves the manager once every subpartition has been read to its end. Works
    /// with or without a preceding [`end_of_data`](Self::end_of_data).
    pub fn finish(&mut self) -> Result<(), NetworkError> {
        if let Some(err) = self.closed_error() {
            return Err(err);
        }
        self.flush()?;
        self.state = WriterState::Finished;
        for sub in 0..self.local.len() {
            self.partition
                .add(sub, SubItem::Event(NetworkEvent::EndOfPartition));
        }
        Ok(())
    }

    /// Releases the partition after a failure or cancellation: queued data is dropped (its
    /// buffers return to the pool) and consumers fail with an error naming `cause`.
    pub fn release(&mut self, cause: &str) {
        if self.state == WriterState::Released {
            return;
        }
        self.state = WriterState::Released;
        for slot in &mut self.current {
            slot.take();
        }
        if let Some(manager) = self.partition.manager.upgrade() {
            manager.remove(&self.id);
        }
        self.partition.release(cause);
    }

    /// Wakes this writer's task thread if it is blocked on a buffer.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter::new(Arc::clone(&self.pool) as _)
    }

    /// The writer's counters now.
    pub fn stats(&self) -> PartitionStats {
        self.publish();
        self.stats_handle().get()
    }

    /// A handle to read the counters (and the pool's and queues' fill) from another thread.
    pub fn stats_handle(&self) -> PartitionStatsHandle {
        PartitionStatsHandle {
            counters: Arc::clone(&self.counters),
            pool: Arc::downgrade(&self.pool),
            partition: Arc::downgrade(&self.partition),
        }
    }
}

impl Drop for ResultPartitionWriter {
    fn drop(&mut self) {
        if matches!(self.state, WriterState::Open | WriterState::DataEnded) {
            self.release("producer dropped");
        }
        for slot in &mut self.current {
            slot.take();
        }
        self.pool.destroy();
    }
}
