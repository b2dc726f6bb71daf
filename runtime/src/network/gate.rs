//! The consumer side: [`InputGate`] with its local and remote input channels, the buffers and
//! batches it hands out, and the receiver half of credit-based flow control. Flink:
//! `SingleInputGate`, `LocalInputChannel`, `RemoteInputChannel`, `BufferManager`.
//!
//! ## Channels
//!
//! * A **local** channel reads its producer's subpartition queue through a view: no copy, no
//!   credit. The producer's pool is the flow control.
//! * A **remote** channel receives BufferResponses on the I/O thread, copied into one of its
//!   buffers. It owns `buffers_per_channel` exclusive buffers (its initial credit) and borrows
//!   from the gate's `floating_buffers_per_gate` floating buffers when the sender's backlog
//!   exceeds what it holds, announcing every new buffer with `AddCredit`. A buffer goes back
//!   (and its credit is announced again, or a surplus floating buffer goes back to the gate) when
//!   the task drops the [`NetBuffer`].
//!
//! Channels with data wait in a FIFO queue (each at most once); `poll_next` takes one entry from
//! the first and puts it back at the end if it has more, so channels are served round-robin.
//! Errors are delivered in order, after the data that came before them, wrapped in
//! [`NetworkError::Channel`] naming the channel and the peer; a gate that failed keeps failing.
//!
//! Events come in band: checkpoint barriers and `EndOfData` as [`GateItem::Event`],
//! `EndOfPartition` as [`GateItem::EndOfPartition`].
//!
//! ## Blocking and waking
//!
//! A blocked channel (barrier alignment) never enters the queue of channels with data, so
//! [`InputGate::next`] sleeps if only blocked channels have data; its items stay where they
//! are (a local subpartition queue, or the remote channel's received buffers, whose credit is
//! not returned) until it is resumed, and it borrows no floating buffers. Only a failure gets
//! through: it fails the gate at once (the held data is dropped with the gate). A
//! [`GateWaker`] sets a flag that the next `poll_next` or `next` returns as
//! [`GateItem::Woken`] before anything else.
//!
//! ## Buffers and shutdown
//!
//! All receiver buffers are claimed from the global pool at creation. Dropping the gate cancels
//! every subpartition request (CancelPartitionRequest, or releasing the local view), so a gone
//! consumer never blocks its producer, and gives back every buffer not held by the task;
//! buffers still held return when dropped.

use std::any::Any;
use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use super::buffer::{
    lock, BufferPermit, Interrupter, Interruptible, NetworkBufferPool, PooledBuffer,
};
use super::client::{ClientConn, ConnectionManager};
use super::error::NetworkError;
use super::partition::{
    AvailabilityListener, ResultPartitionManager, SubItem, SubpartitionView, ViewPoll,
};
use super::protocol::{decode_event, ClientMessage, DataType};
use super::{NetworkEvent, ResultPartitionId};

/// What [`InputGate::next`] returns.
#[derive(Debug)]
pub enum GateItem {
    /// A buffer of serialized records from `channel`; feed it to that channel's
    /// [`RecordDeserializer`](super::RecordDeserializer).
    Buffer {
        /// The channel's index in the gate.
        channel: usize,
        /// The bytes; dropping it recycles the buffer.
        buffer: NetBuffer,
    },
    /// A typed batch from a local producer on `channel`.
    Batch {
        /// The channel's index in the gate.
        channel: usize,
        /// The batch; dropping it returns its buffer permit to the producer.
        batch: TypedBatch,
    },
    /// An in-band event from `channel`: a checkpoint barrier or `EndOfData` (never
    /// `EndOfPartition`, which is [`GateItem::EndOfPartition`]). It follows every buffer and
    /// batch its producer wrote before it.
    Event {
        /// The channel's index in the gate.
        channel: usize,
        /// The event.
        event: NetworkEvent,
    },
    /// `channel` has delivered everything. Flink: `EndOfPartitionEvent`.
    EndOfPartition {
        /// The channel's index in the gate.
        channel: usize,
    },
    /// Every channel has delivered `EndOfPartition`.
    End,
    /// [`GateWaker::wake`] was called: the task has a message to look at. Returned once per
    /// wake-up (wake-ups before it is returned collapse into one), before any data.
    Woken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BufferKind {
    Exclusive,
    Floating,
}

struct RemoteBuffer {
    data: Vec<u8>,
    gate: Arc<GateShared>,
    channel: usize,
    kind: BufferKind,
}

impl Drop for RemoteBuffer {
    fn drop(&mut self) {
        self.gate
            .recycle(self.channel, std::mem::take(&mut self.data), self.kind);
    }
}

enum BufferInner {
    Local(PooledBuffer),
    Remote(RemoteBuffer),
}

/// One network buffer of serialized records handed to the consumer task; derefs to its bytes.
/// Dropping it recycles it: a local one to its producer's pool, a remote one to its channel,
/// which announces the credit to the sender. Flink: `NetworkBuffer`.
pub struct NetBuffer {
    inner: BufferInner,
}

impl Deref for NetBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            BufferInner::Local(b) => &b.data,
            BufferInner::Remote(b) => &b.data,
        }
    }
}

impl std::fmt::Debug for NetBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetBuffer")
            .field("len", &self.len())
            .finish()
    }
}

/// A typed batch of records from a local producer, moved without serialization. It holds one
/// buffer permit of the producer's pool, so queued batches backpressure the producer like
/// buffers do.
///
/// The permit is released when the `TypedBatch` is dropped. [`take`](Self::take) consumes it
/// (releasing the permit) and returns the batch: call it when the batch is about to be
/// processed; [`get_mut`](Self::get_mut) works on the batch in place while keeping the permit.
pub struct TypedBatch {
    batch: Box<dyn Any + Send>,
    records: usize,
    _permit: BufferPermit,
}

impl TypedBatch {
    /// How many records the producer said the batch holds.
    pub fn records(&self) -> usize {
        self.records
    }

    /// The batch, in place.
    pub fn get_mut(&mut self) -> &mut (dyn Any + Send) {
        self.batch.as_mut()
    }

    /// The batch; its buffer permit is returned to the producer now.
    pub fn take(self) -> Box<dyn Any + Send> {
        self.batch
    }
}

impl std::fmt::Debug for TypedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedBatch")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

/// One input channel's flow-control state, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelMetrics {
    /// The channel's index in its gate.
    pub channel: usize,
    /// Whether it reads over the network (else from a local subpartition).
    pub remote: bool,
    /// Credit announced to the sender and not yet used (0 for a local channel).
    pub credit: usize,
    /// The sender's last announced backlog (a local channel: its subpartition's queue).
    pub backlog: usize,
    /// Buffers received and not yet handed to the task (a local channel: 0, its data stays
    /// in the producer's queue, counted as `backlog`).
    pub queued: usize,
    /// Receiver buffers it holds, free or filled (exclusive and floating).
    pub buffers: usize,
}

/// Reads a gate's counters and channels from another thread (the gate belongs to its task
/// thread). Reading takes the gate's lock briefly.
#[derive(Clone)]
pub struct GateStatsHandle {
    shared: std::sync::Weak<GateShared>,
    /// Held strongly: the counters outlive the gate, so a finished task's totals stay readable.
    counters: Arc<GateCounters>,
}

impl std::fmt::Debug for GateStatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("GateStatsHandle").finish()
    }
}

impl GateStatsHandle {
    /// The counters now (their final values once the gate is gone).
    pub fn get(&self) -> GateStats {
        counters_stats(&self.counters)
    }

    /// Every channel's state now (empty once the gate is gone).
    pub fn channels(&self) -> Vec<ChannelMetrics> {
        let Some(shared) = self.shared.upgrade() else {
            return Vec::new();
        };
        let (mut out, views) = {
            let st = shared.lock();
            let mut out = Vec::with_capacity(st.channels.len());
            let mut views = Vec::new();
            for (i, c) in st.channels.iter().enumerate() {
                let mut m = ChannelMetrics {
                    channel: i,
                    ..ChannelMetrics::default()
                };
                if let Some(r) = &c.remote {
                    let filled = r
                        .received
                        .iter()
                        .filter(|x| matches!(x, Received::Buffer(..)))
                        .count();
                    m.remote = true;
                    m.credit = r.credit;
                    m.backlog = r.backlog;
                    m.queued = filled;
                    m.buffers = r.excl_free + r.float_free + filled;
                } else if let Some(view) = &c.view {
                    views.push((i, Arc::clone(view)));
                }
                out.push(m);
            }
            (out, views)
        };
        // Read local queues outside the gate's lock: producers take their queue's lock first.
        for (i, view) in views {
            if let Some(m) = out.get_mut(i) {
                m.backlog = view.backlog();
            }
        }
        out
    }

    /// Buffers queued in the gate, not yet handed to the task (Flink:
    /// `buffers.inputQueueLength`): received remote buffers plus local channels' backlogs.
    pub fn queue_length(&self) -> usize {
        self.channels()
            .iter()
            .map(|c| if c.remote { c.queued } else { c.backlog })
            .sum()
    }

    /// The fraction of the receiver buffers (exclusive + floating) that hold data (Flink:
    /// `buffers.inPoolUsage`); 0 for a gate of local channels only.
    pub fn pool_usage(&self) -> f64 {
        let Some(shared) = self.shared.upgrade() else {
            return 0.0;
        };
        let st = shared.lock();
        let mut held = 0usize;
        let mut filled = 0usize;
        for c in &st.channels {
            if let Some(r) = &c.remote {
                let f = r
                    .received
                    .iter()
                    .filter(|x| matches!(x, Received::Buffer(..)))
                    .count();
                filled += f;
                held += r.excl_free + r.float_free + f;
            }
        }
        held += st.floating_free;
        if held == 0 {
            0.0
        } else {
            (filled as f64 / held as f64).min(1.0)
        }
    }
}

/// Counters of one gate. Flink: `numBuffersIn`, `numBytesIn`, idle time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GateStats {
    /// Buffers handed to the task.
    pub buffers_received: u64,
    /// Bytes in those buffers.
    pub bytes_received: u64,
    /// Typed batches handed to the task.
    pub batches_received: u64,
    /// Events handed to the task (`EndOfPartition` included).
    pub events_received: u64,
    /// Partition requests repeated after PartitionNotFound.
    pub request_retries: u64,
    /// Time the task spent blocked in [`InputGate::next`] (idle).
    pub wait_time: Duration,
}

#[derive(Debug, Default)]
struct GateCounters {
    buffers: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    events: AtomicU64,
    retries: AtomicU64,
    wait_nanos: AtomicU64,
}

enum Received {
    Buffer(Vec<u8>, BufferKind),
    Event(NetworkEvent),
}

struct RemoteState {
    id: u64,
    conn: Option<Arc<ClientConn>>,
    received: VecDeque<Received>,
    excl_free: usize,
    float_free: usize,
    /// Credit announced to the sender and not yet used by a buffer.
    credit: usize,
    backlog: usize,
    expected_seq: u32,
    waiting_floating: bool,
    /// `EndOfData` was received: a data buffer after it is a protocol violation.
    data_ended: bool,
}

struct Channel {
    partition: ResultPartitionId,
    subpartition: u32,
    peer: String,
    in_queue: bool,
    ended: bool,
    /// Blocked for barrier alignment: not served (and not queued) until resumed, unless it
    /// failed.
    blocked: bool,
    error: Option<NetworkError>,
    backoff: Duration,
    attempts: u32,
    view: Option<Arc<SubpartitionView>>,
    remote: Option<RemoteState>,
}

impl Channel {
    fn wrap(&self, index: usize, err: NetworkError) -> NetworkError {
        NetworkError::Channel {
            channel: index,
            partition: self.partition.to_string(),
            subpartition: self.subpartition,
            peer: self.peer.clone(),
            source: Box::new(err),
        }
    }
}

struct GateState {
    channels: Vec<Channel>,
    available: VecDeque<usize>,
    ended: usize,
    closed: bool,
    interrupted: bool,
    /// A [`GateWaker`] wake-up not yet returned as [`GateItem::Woken`].
    woken: bool,
    failed: Option<NetworkError>,
    floating_free: usize,
    waiting_floating: VecDeque<usize>,
    spare: Vec<Vec<u8>>,
    /// Receiver buffers claimed from the global pool and not yet given back.
    accounted: usize,
}

impl GateState {
    /// Puts channel `ch` in the queue of channels with data, unless it is there already or
    /// blocked (a blocked channel's failure still gets in, so that it surfaces).
    fn enqueue(&mut self, ch: usize) -> bool {
        match self.channels.get_mut(ch) {
            Some(c) if !c.in_queue && (!c.blocked || c.error.is_some()) => {
                c.in_queue = true;
                self.available.push_back(ch);
                true
            }
            _ => false,
        }
    }

    /// Gives channel `ch` floating buffers up to backlog + exclusive, announcing them.
    fn request_floating(&mut self, ch: usize, bpc: usize) {
        let GateState {
            channels,
            floating_free,
            waiting_floating,
            ..
        } = self;
        let Some(c) = channels.get_mut(ch) else {
            return;
        };
        // A blocked channel borrows nothing: its sender waits on its exclusive credit, and the
        // floating buffers stay with the channels that flow. Resuming asks again.
        if c.ended || c.error.is_some() || c.blocked {
            return;
        }
        let Some(r) = c.remote.as_mut() else { return };
        let required = r.backlog + bpc;
        let free = r.excl_free + r.float_free;
        let mut granted = 0;
        while free + granted < required && *floating_free > 0 {
            *floating_free -= 1;
            granted += 1;
        }
        r.float_free += granted;
        r.credit += granted;
        if free + granted < required && !r.waiting_floating {
            r.waiting_floating = true;
            waiting_floating.push_back(ch);
        }
        if granted > 0 {
            if let Some(conn) = &r.conn {
                conn.send(ClientMessage::AddCredit {
                    channel: r.id,
                    credit: u32::try_from(granted).unwrap_or(u32::MAX),
                });
            }
        }
    }

    /// Hands free floating buffers to channels waiting for them.
    fn redistribute(&mut self, bpc: usize) {
        while self.floating_free > 0 {
            let Some(ch) = self.waiting_floating.pop_front() else {
                return;
            };
            if let Some(r) = self.channels.get_mut(ch).and_then(|c| c.remote.as_mut()) {
                r.waiting_floating = false;
            }
            self.request_floating(ch, bpc);
        }
    }

    /// A channel's end or failure: its floating buffers go back to the gate.
    fn return_floating(&mut self, ch: usize, bpc: usize) {
        let mut returned = 0;
        if let Some(r) = self.channels.get_mut(ch).and_then(|c| c.remote.as_mut()) {
            returned = r.float_free;
            r.float_free = 0;
            r.credit = 0;
        }
        self.floating_free += returned;
        self.redistribute(bpc);
    }
}

/// What a gate's channels and the I/O thread share.
pub(crate) struct GateShared {
    state: Mutex<GateState>,
    cond: Condvar,
    global: Arc<NetworkBufferPool>,
    segment_size: usize,
    bpc: usize,
    backoff_initial: Duration,
    backoff_max: Duration,
    handle: Handle,
    manager: Arc<ResultPartitionManager>,
    counters: Arc<GateCounters>,
}

impl GateShared {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        lock(&self.state)
    }

    /// A remote buffer came back from the task.
    fn recycle(&self, ch: usize, mut data: Vec<u8>, kind: BufferKind) {
        let mut st = self.lock();
        if st.closed {
            st.accounted = st.accounted.saturating_sub(1);
            drop(st);
            self.global.release(1);
            return;
        }
        data.clear();
        st.spare.push(data);
        let bpc = self.bpc;
        let Some(c) = st.channels.get_mut(ch) else {
            return;
        };
        let done = c.ended || c.error.is_some();
        let blocked = c.blocked;
        let Some(r) = c.remote.as_mut() else { return };
        let required = r.backlog + bpc;
        let free = r.excl_free + r.float_free;
        let mut to_gate = false;
        let mut announce = false;
        match kind {
            BufferKind::Exclusive => {
                r.excl_free += 1;
                if !done && free + 1 > required && r.float_free > 0 {
                    r.float_free -= 1;
                    to_gate = true;
                } else if !done {
                    announce = true;
                }
            }
            BufferKind::Floating => {
                // A blocked channel gives its floating buffers back as they come free.
                if done || blocked || free >= required {
                    to_gate = true;
                } else {
                    r.float_free += 1;
                    announce = true;
                }
            }
        }
        if announce {
            r.credit += 1;
            if let Some(conn) = &r.conn {
                conn.send(ClientMessage::AddCredit {
                    channel: r.id,
                    credit: 1,
                });
            }
        }
        if to_gate {
            st.floating_free += 1;
            st.redistribute(bpc);
        }
    }

    /// A BufferResponse for channel `ch`. `Ok(true)` if it ended the channel; `Err` is a
    /// protocol violation by the sender.
    pub(crate) fn on_buffer(
        &self,
        ch: usize,
        seq: u32,
        backlog: u32,
        data_type: DataType,
        payload: &[u8],
    ) -> Result<bool, String> {
        let mut st = self.lock();
        if st.closed {
            return Ok(false);
        }
        let seg = self.segment_size;
        let GateState {
            channels, spare, ..
        } = &mut *st;
        let Some(c) = channels.get_mut(ch) else {
            return Err(format!("no input channel {ch}"));
        };
        if c.ended {
            return Err("data after the end of the partition".into());
        }
        if c.error.is_some() {
            return Ok(false);
        }
        let Some(r) = c.remote.as_mut() else {
            return Err(format!("input channel {ch} is not remote"));
        };
        if seq != r.expected_seq {
            return Err(format!(
                "sequence gap: expected buffer {}, got {seq}",
                r.expected_seq
            ));
        }
        r.expected_seq = r.expected_seq.wrapping_add(1);
        let mut ended = false;
        match data_type {
            DataType::Buffer => {
                if payload.len() > seg {
                    return Err(format!(
                        "buffer of {} bytes exceeds the segment size {seg}",
                        payload.len()
                    ));
                }
                if r.data_ended {
                    return Err("data buffer after EndOfData".into());
                }
                if r.credit == 0 {
                    return Err("buffer sent without credit".into());
                }
                let kind = if r.float_free > 0 {
                    r.float_free -= 1;
                    BufferKind::Floating
                } else if r.excl_free > 0 {
                    r.excl_free -= 1;
                    BufferKind::Exclusive
                } else {
                    return Err("buffer sent without credit".into());
                };
                r.credit -= 1;
                r.backlog = backlog as usize;
                let mut data = spare.pop().unwrap_or_else(|| Vec::with_capacity(seg));
                data.clear();
                data.extend_from_slice(payload);
                r.received.push_back(Received::Buffer(data, kind));
            }
            DataType::Event => {
                let event = decode_event(payload).map_err(|e| e.to_string())?;
                ended = matches!(event, NetworkEvent::EndOfPartition);
                if matches!(event, NetworkEvent::EndOfData) {
                    r.data_ended = true;
                }
                r.received.push_back(Received::Event(event));
            }
        }
        if !ended {
            st.request_floating(ch, self.bpc);
        }
        let queued = st.enqueue(ch);
        drop(st);
        if queued {
            self.cond.notify_all();
        }
        Ok(ended)
    }

    /// Fails channel `ch` with `err` (delivered after the data received before it).
    pub(crate) fn fail_channel(&self, ch: usize, err: NetworkError) {
        let mut st = self.lock();
        let Some(c) = st.channels.get_mut(ch) else {
            return;
        };
        if c.ended || c.error.is_some() {
            return;
        }
        c.error = Some(err);
        st.return_floating(ch, self.bpc);
        st.enqueue(ch);
        drop(st);
        self.cond.notify_all();
    }

    /// After PartitionNotFound: the delay before the next request, or `None` (and the channel
    /// fails) once the backoff reached its maximum. Flink: `InputChannel.increaseBackoff`.
    pub(crate) fn next_backoff(&self, ch: usize) -> Option<Duration> {
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        let (initial, max) = (self.backoff_initial, self.backoff_max);
        let c = st.channels.get_mut(ch)?;
        c.attempts += 1;
        if c.backoff.is_zero() {
            c.backoff = initial.min(max);
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            return Some(c.backoff);
        }
        if c.backoff < max {
            c.backoff = (c.backoff * 2).min(max);
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            return Some(c.backoff);
        }
        let err = NetworkError::PartitionNotFound {
            partition: c.partition.to_string(),
            subpartition: c.subpartition,
            location: c.peer.clone(),
            attempts: c.attempts,
        };
        drop(st);
        self.fail_channel(ch, err);
        None
    }

    /// The PartitionRequest to send again for remote channel `ch`, if it still waits for one.
    pub(crate) fn rerequest(&self, ch: usize) -> Option<ClientMessage> {
        let st = self.lock();
        if st.closed {
            return None;
        }
        let c = st.channels.get(ch)?;
        if c.ended || c.error.is_some() {
            return None;
        }
        let r = c.remote.as_ref()?;
        Some(ClientMessage::PartitionRequest {
            partition: c.partition,
            subpartition: c.subpartition,
            channel: r.id,
            credit: u32::try_from(r.credit).unwrap_or(u32::MAX),
        })
    }

    /// For a blocked local channel whose producer may have released its partition: fails the
    /// channel if it did, so that the failure surfaces although the view is not read.
    fn check_blocked_view(&self, ch: usize, view: Option<&SubpartitionView>) {
        if let Some(cause) = view.and_then(SubpartitionView::failure) {
            self.fail_channel(ch, NetworkError::ProducerFailed { cause });
        }
    }

    /// Fails the whole gate with `source` of channel `ch`; returns the error it keeps failing
    /// with.
    fn fail_gate(&self, ch: usize, source: NetworkError) -> NetworkError {
        let mut st = self.lock();
        let err = match st.channels.get(ch) {
            Some(c) => c.wrap(ch, source),
            None => source,
        };
        st.failed = Some(err.clone());
        err
    }

    /// The channel's partition, subpartition and peer.
    pub(crate) fn describe(&self, ch: usize) -> Option<(ResultPartitionId, u32)> {
        let st = self.lock();
        st.channels.get(ch).map(|c| (c.partition, c.subpartition))
    }
}

impl Interruptible for GateShared {
    fn interrupt(&self) {
        self.lock().interrupted = true;
        self.cond.notify_all();
    }
}

/// Tells the gate a local channel has data.
struct LocalListener {
    gate: Weak<GateShared>,
    channel: usize,
}

impl AvailabilityListener for LocalListener {
    fn notify_data_available(&self) {
        let Some(gate) = self.gate.upgrade() else {
            return;
        };
        let mut st = gate.lock();
        if st.closed {
            return;
        }
        if let Some(c) = st.channels.get(self.channel) {
            if c.blocked && c.error.is_none() {
                // Not read while blocked; but a released producer must fail the gate now.
                let view = c.view.clone();
                drop(st);
                gate.check_blocked_view(self.channel, view.as_deref());
                return;
            }
        }
        let queued = st.enqueue(self.channel);
        drop(st);
        if queued {
            gate.cond.notify_all();
        }
    }
}

/// Requests local channel `ch`'s subpartition view, retrying with backoff while the partition
/// is not registered.
fn request_local(gate: &Arc<GateShared>, ch: usize) {
    let Some((partition, sub)) = gate.describe(ch) else {
        return;
    };
    let listener = Arc::new(LocalListener {
        gate: Arc::downgrade(gate),
        channel: ch,
    });
    match gate.manager.create_view(&partition, sub, listener) {
        Ok(Some(view)) => {
            let mut st = gate.lock();
            if st.closed {
                drop(st);
                drop(view);
                return;
            }
            let view = Arc::new(view);
            let blocked = match st.channels.get_mut(ch) {
                Some(c) => {
                    c.view = Some(Arc::clone(&view));
                    c.blocked
                }
                None => false,
            };
            st.enqueue(ch);
            drop(st);
            if blocked {
                gate.check_blocked_view(ch, Some(&view));
            }
            gate.cond.notify_all();
        }
        Ok(None) => {
            if let Some(delay) = gate.next_backoff(ch) {
                let gate = Arc::clone(gate);
                gate.handle.clone().spawn(async move {
                    tokio::time::sleep(delay).await;
                    if !gate.lock().closed {
                        request_local(&gate, ch);
                    }
                });
            }
        }
        Err(err) => gate.fail_channel(ch, err),
    }
}

/// What the gate needs from its ShuffleEnvironment.
pub(crate) struct GateContext {
    pub(crate) global: Arc<NetworkBufferPool>,
    pub(crate) manager: Arc<ResultPartitionManager>,
    pub(crate) handle: Handle,
    pub(crate) segment_size: usize,
    pub(crate) buffers_per_channel: usize,
    pub(crate) floating_buffers_per_gate: usize,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
}

/// Wakes the task thread reading an [`InputGate`]: a thread blocked in
/// [`InputGate::next`] returns [`GateItem::Woken`], or the next call to `next` or `poll_next`
/// does if none is blocked. Wake-ups not yet returned collapse into one. Does nothing once the
/// gate is dropped. Unlike an [`Interrupter`], it does not fail the read.
#[derive(Clone)]
pub struct GateWaker {
    gate: Weak<GateShared>,
}

impl GateWaker {
    /// Wakes the gate's reader (see [`GateWaker`]).
    pub fn wake(&self) {
        if let Some(gate) = self.gate.upgrade() {
            let mut st = gate.lock();
            if st.closed {
                return;
            }
            st.woken = true;
            drop(st);
            gate.cond.notify_all();
        }
    }
}

impl std::fmt::Debug for GateWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateWaker").finish_non_exhaustive()
    }
}

/// How a channel reaches its producer, resolved by the environment.
pub(crate) enum ChannelSetup {
    Local,
    Remote { id: u64, address: String },
}

/// The input of one consumer task: one channel per consumed subpartition. Flink:
/// `SingleInputGate`.
///
/// Owned by the consumer task thread. [`next`](Self::next) blocks until a channel has data;
/// [`interrupter`](Self::interrupter) wakes it. Dropping the gate cancels every request and
/// returns its buffers.
pub struct InputGate {
    shared: Arc<GateShared>,
    num_channels: usize,
    /// Which channels are blocked (mirrors the shared state, read without its lock).
    blocked: Vec<bool>,
}

impl std::fmt::Debug for InputGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputGate")
            .field("channels", &self.num_channels)
            .finish_non_exhaustive()
    }
}

impl InputGate {
    /// Builds a gate whose receiver buffers (`claimed`, already claimed and counted in use)
    /// belong to its remote channels, and starts every channel's request.
    pub(crate) fn start(
        ctx: GateContext,
        connections: &ConnectionManager,
        channels: Vec<(ResultPartitionId, u32, String, ChannelSetup)>,
        claimed: usize,
    ) -> InputGate {
        let bpc = ctx.buffers_per_channel;
        let remote_count = channels
            .iter()
            .filter(|c| matches!(c.3, ChannelSetup::Remote { .. }))
            .count();
        let floating = if remote_count > 0 {
            ctx.floating_buffers_per_gate
        } else {
            0
        };
        let mut requests = Vec::new();
        let mut locals = Vec::new();
        let state_channels: Vec<Channel> = channels
            .into_iter()
            .enumerate()
            .map(|(i, (partition, subpartition, peer, setup))| {
                let remote = match setup {
                    ChannelSetup::Local => {
                        locals.push(i);
                        None
                    }
                    ChannelSetup::Remote { id, address } => {
                        requests.push((
                            i,
                            address,
                            ClientMessage::PartitionRequest {
                                partition,
                                subpartition,
                                channel: id,
                                credit: u32::try_from(bpc).unwrap_or(u32::MAX),
                            },
                        ));
                        Some(RemoteState {
                            id,
                            conn: None,
                            received: VecDeque::new(),
                            excl_free: bpc,
                            float_free: 0,
                            credit: bpc,
                            backlog: 0,
                            expected_seq: 0,
                            waiting_floating: false,
                            data_ended: false,
                        })
                    }
                };
                Channel {
                    partition,
                    subpartition,
                    peer,
                    in_queue: false,
                    ended: false,
                    blocked: false,
                    error: None,
                    backoff: Duration::ZERO,
                    attempts: 0,
                    view: None,
                    remote,
                }
            })
            .collect();
        let num_channels = state_channels.len();
        let shared = Arc::new(GateShared {
            state: Mutex::new(GateState {
                channels: state_channels,
                available: VecDeque::new(),
                ended: 0,
                closed: false,
                interrupted: false,
                woken: false,
                failed: None,
                floating_free: floating,
                waiting_floating: VecDeque::new(),
                spare: Vec::new(),
                accounted: claimed,
            }),
            cond: Condvar::new(),
            global: ctx.global,
            segment_size: ctx.segment_size,
            bpc,
            backoff_initial: ctx.backoff_initial,
            backoff_max: ctx.backoff_max,
            handle: ctx.handle,
            manager: ctx.manager,
            counters: Arc::default(),
        });
        for (i, address, request) in requests {
            let ClientMessage::PartitionRequest { channel: id, .. } = request else {
                continue;
            };
            match connections.register(&address, id, &shared, i) {
                Ok(conn) => {
                    if let Some(r) = shared
                        .lock()
                        .channels
                        .get_mut(i)
                        .and_then(|c| c.remote.as_mut())
                    {
                        r.conn = Some(Arc::clone(&conn));
                    }
                    conn.send(request);
                }
                Err(err) => shared.fail_channel(i, err),
            }
        }
        for ch in locals {
            request_local(&shared, ch);
        }
        InputGate {
            shared,
            num_channels,
            blocked: vec![false; num_channels],
        }
    }

    /// How many input channels.
    pub fn num_channels(&self) -> usize {
        self.num_channels
    }

    /// Whether `channel` has delivered `EndOfPartition` ([`GateItem::EndOfPartition`] was
    /// returned for it). False for an index out of range.
    pub fn is_channel_ended(&self, channel: usize) -> bool {
        self.shared
            .lock()
            .channels
            .get(channel)
            .is_some_and(|c| c.ended)
    }

    /// Stops returning items of `channel` (barrier alignment; Flink:
    /// `InputChannel.blockConsumption`): they stay queued in order until
    /// [`resume_channel`](Self::resume_channel) or [`resume_all`](Self::resume_all), while the
    /// other channels keep flowing; [`next`](Self::next) blocks if only blocked channels have
    /// data. A local channel's subpartition is not read, so its producer fills its pool and
    /// blocks; a remote channel keeps the buffers it received without returning their credit
    /// and borrows no floating buffers, so its sender stops once the credit is used up. A
    /// failure of a blocked channel still fails the gate. An index out of range is ignored.
    pub fn block_channel(&mut self, channel: usize) {
        let Some(flag) = self.blocked.get_mut(channel) else {
            return;
        };
        *flag = true;
        if let Some(c) = self.shared.lock().channels.get_mut(channel) {
            c.blocked = true;
        }
    }

    /// Unblocks `channel`: its queued items become available again in their original order
    /// (after those of channels already waiting). Flink: `InputChannel.resumeConsumption`.
    pub fn resume_channel(&mut self, channel: usize) {
        let Some(flag) = self.blocked.get_mut(channel) else {
            return;
        };
        if !std::mem::replace(flag, false) {
            return;
        }
        let bpc = self.shared.bpc;
        let mut st = self.shared.lock();
        let Some(c) = st.channels.get_mut(channel) else {
            return;
        };
        c.blocked = false;
        // A local view is polled once in case data arrived while blocked (its producer did not
        // signal again); a remote channel is queued if it holds data.
        let pending = !c.ended
            && (c.view.is_some()
                || c.error.is_some()
                || c.remote.as_ref().is_some_and(|r| !r.received.is_empty()));
        if pending {
            st.enqueue(channel);
        }
        st.request_floating(channel, bpc);
    }

    /// Unblocks every blocked channel, in index order.
    pub fn resume_all(&mut self) {
        for channel in 0..self.num_channels {
            if self.blocked.get(channel).copied().unwrap_or(false) {
                self.resume_channel(channel);
            }
        }
    }

    /// Whether `channel` is blocked. False for an index out of range.
    pub fn is_blocked(&self, channel: usize) -> bool {
        self.blocked.get(channel).copied().unwrap_or(false)
    }

    /// A handle that wakes this gate's task thread from [`next`](Self::next) with
    /// [`GateItem::Woken`], e.g. for a checkpoint trigger or notification from its
    /// TaskExecutor.
    pub fn waker(&self) -> GateWaker {
        GateWaker {
            gate: Arc::downgrade(&self.shared),
        }
    }

    /// The next item if one is ready, without blocking.
    pub fn poll_next(&mut self) -> Result<Option<GateItem>, NetworkError> {
        let shared = &self.shared;
        loop {
            let (ch, view) = {
                let mut st = shared.lock();
                if let Some(err) = &st.failed {
                    return Err(err.clone());
                }
                if st.woken {
                    st.woken = false;
                    return Ok(Some(GateItem::Woken));
                }
                if st.ended == self.num_channels {
                    return Ok(Some(GateItem::End));
                }
                let Some(ch) = st.available.pop_front() else {
                    return Ok(None);
                };
                let bpc = shared.bpc;
                let st_ref = &mut *st;
                let Some(c) = st_ref.channels.get_mut(ch) else {
                    continue;
                };
                c.in_queue = false;
                if c.ended {
                    continue;
                }
                if c.blocked {
                    // Queued before it was blocked, or failed: its items wait for the resume,
                    // a failure fails the gate now.
                    if let Some(err) = c.error.clone() {
                        let err = c.wrap(ch, err);
                        st.failed = Some(err.clone());
                        return Err(err);
                    }
                    let view = c.view.clone();
                    drop(st);
                    shared.check_blocked_view(ch, view.as_deref());
                    continue;
                }
                if let Some(r) = c.remote.as_mut() {
                    match r.received.pop_front() {
                        Some(Received::Buffer(data, kind)) => {
                            let more = !r.received.is_empty() || c.error.is_some();
                            if more {
                                st_ref.enqueue(ch);
                            }
                            drop(st);
                            shared.counters.buffers.fetch_add(1, Ordering::Relaxed);
                            shared
                                .counters
                                .bytes
                                .fetch_add(data.len() as u64, Ordering::Relaxed);
                            return Ok(Some(GateItem::Buffer {
                                channel: ch,
                                buffer: NetBuffer {
                                    inner: BufferInner::Remote(RemoteBuffer {
                                        data,
                                        gate: Arc::clone(shared),
                                        channel: ch,
                                        kind,
                                    }),
                                },
                            }));
                        }
                        Some(Received::Event(NetworkEvent::EndOfPartition)) => {
                            c.ended = true;
                            st_ref.ended += 1;
                            st_ref.return_floating(ch, bpc);
                            drop(st);
                            shared.counters.events.fetch_add(1, Ordering::Relaxed);
                            return Ok(Some(GateItem::EndOfPartition { channel: ch }));
                        }
                        Some(Received::Event(event)) => {
                            let more = !r.received.is_empty() || c.error.is_some();
                            if more {
                                st_ref.enqueue(ch);
                            }
                            drop(st);
                            shared.counters.events.fetch_add(1, Ordering::Relaxed);
                            return Ok(Some(GateItem::Event { channel: ch, event }));
                        }
                        None => {}
                    }
                }
                if c.view.is_none() {
                    if let Some(err) = c.error.clone() {
                        let err = c.wrap(ch, err);
                        st.failed = Some(err.clone());
                        return Err(err);
                    }
                    continue;
                }
                (ch, c.view.clone())
            };
            let Some(view) = view else { continue };
            match view.poll(true) {
                ViewPoll::Nothing => continue,
                ViewPoll::Failed(cause) => {
                    return Err(shared.fail_gate(ch, NetworkError::ProducerFailed { cause }));
                }
                ViewPoll::Item { item, more, .. } => {
                    let mut st = shared.lock();
                    let end = matches!(item, SubItem::Event(NetworkEvent::EndOfPartition));
                    if end {
                        if let Some(c) = st.channels.get_mut(ch) {
                            c.ended = true;
                            c.view = None;
                        }
                        st.ended += 1;
                    } else if more {
                        st.enqueue(ch);
                    }
                    drop(st);
                    let c = &shared.counters;
                    return Ok(Some(match item {
                        SubItem::Buffer(buffer) => {
                            c.buffers.fetch_add(1, Ordering::Relaxed);
                            c.bytes
                                .fetch_add(buffer.data.len() as u64, Ordering::Relaxed);
                            GateItem::Buffer {
                                channel: ch,
                                buffer: NetBuffer {
                                    inner: BufferInner::Local(buffer),
                                },
                            }
                        }
                        SubItem::Batch {
                            batch,
                            records,
                            permit,
                        } => {
                            c.batches.fetch_add(1, Ordering::Relaxed);
                            GateItem::Batch {
                                channel: ch,
                                batch: TypedBatch {
                                    batch,
                                    records,
                                    _permit: permit,
                                },
                            }
                        }
                        SubItem::Event(NetworkEvent::EndOfPartition) => {
                            c.events.fetch_add(1, Ordering::Relaxed);
                            GateItem::EndOfPartition { channel: ch }
                        }
                        SubItem::Event(event) => {
                            c.events.fetch_add(1, Ordering::Relaxed);
                            GateItem::Event { channel: ch, event }
                        }
                    }));
                }
            }
        }
    }

    /// The next item, blocking until one is ready. Returns [`GateItem::End`] once every channel
    /// delivered `EndOfPartition`; a channel's failure is an `Err` naming the channel and peer.
    // Named like Flink's `InputGate.getNext`; not an iterator (it blocks and can fail).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<GateItem, NetworkError> {
        self.next_until(None)
    }

    /// Like [`next`](Self::next), but waits only until `deadline`: returns
    /// [`GateItem::Woken`] when it passes with nothing to read (for a task's processing-time
    /// timers). `None` waits as long as it takes.
    pub fn next_until(&mut self, deadline: Option<Instant>) -> Result<GateItem, NetworkError> {
        loop {
            if let Some(item) = self.poll_next()? {
                return Ok(item);
            }
            let mut st = self.shared.lock();
            let mut since: Option<Instant> = None;
            while st.failed.is_none()
                && !st.woken
                && st.available.is_empty()
                && st.ended < self.num_channels
            {
                if st.interrupted {
                    drop(st);
                    self.add_wait(since);
                    return Err(NetworkError::Interrupted);
                }
                let now = Instant::now();
                since.get_or_insert(now);
                st = match deadline {
                    None => self.shared.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                    Some(deadline) if now >= deadline => {
                        drop(st);
                        self.add_wait(since);
                        return Ok(GateItem::Woken);
                    }
                    Some(deadline) => match self.shared.cond.wait_timeout(st, deadline - now) {
                        Ok((st, _)) => st,
                        Err(e) => e.into_inner().0,
                    },
                };
            }
            drop(st);
            self.add_wait(since);
        }
    }

    fn add_wait(&self, since: Option<Instant>) {
        if let Some(since) = since {
            let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.shared
                .counters
                .wait_nanos
                .fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// Wakes this gate's task thread if it is blocked in [`next`](Self::next).
    pub fn interrupter(&self) -> Interrupter {
        Interrupter::new(Arc::clone(&self.shared) as _)
    }

    /// A handle reading the gate's counters and channels from another thread.
    pub fn stats_handle(&self) -> GateStatsHandle {
        GateStatsHandle {
            shared: Arc::downgrade(&self.shared),
            counters: Arc::clone(&self.shared.counters),
        }
    }

    /// The gate's counters now.
    pub fn stats(&self) -> GateStats {
        self.shared.stats()
    }
}

impl GateShared {
    fn stats(&self) -> GateStats {
        counters_stats(&self.counters)
    }
}

fn counters_stats(c: &GateCounters) -> GateStats {
    GateStats {
        buffers_received: c.buffers.load(Ordering::Relaxed),
        bytes_received: c.bytes.load(Ordering::Relaxed),
        batches_received: c.batches.load(Ordering::Relaxed),
        events_received: c.events.load(Ordering::Relaxed),
        request_retries: c.retries.load(Ordering::Relaxed),
        wait_time: Duration::from_nanos(c.wait_nanos.load(Ordering::Relaxed)),
    }
}

impl Drop for InputGate {
    fn drop(&mut self) {
        let shared = &self.shared;
        let mut st = shared.lock();
        st.closed = true;
        let mut views = Vec::new();
        let mut cancels = Vec::new();
        let mut released = st.floating_free;
        st.floating_free = 0;
        let mut dropped_data = Vec::new();
        for c in &mut st.channels {
            if let Some(view) = c.view.take() {
                views.push(view);
            }
            if let Some(r) = c.remote.as_mut() {
                released += r.excl_free + r.float_free;
                r.excl_free = 0;
                r.float_free = 0;
                for item in r.received.drain(..) {
                    if let Received::Buffer(data, _) = item {
                        released += 1;
                        dropped_data.push(data);
                    }
                }
                if let Some(conn) = &r.conn {
                    cancels.push((Arc::clone(conn), r.id, c.ended || c.error.is_some()));
                }
            }
        }
        st.accounted = st.accounted.saturating_sub(released);
        st.spare = Vec::new();
        st.available.clear();
        drop(st);
        shared.global.release(released);
        for (conn, id, done) in cancels {
            conn.unregister(id);
            if !done {
                conn.send(ClientMessage::Cancel { channel: id });
            }
        }
        drop(views);
        drop(dropped_data);
        shared.cond.notify_all();
    }
}
