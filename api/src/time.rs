//! Event time and processing time: record timestamps, watermarks, timers. Flink: the
//! `eventtime` package (`WatermarkStrategy`, `WatermarkGenerator`), `StatusWatermarkValve`,
//! `InternalTimerService`.
//!
//! # The model
//! * Every record in a chain has a timestamp (milliseconds), or none. A timestamp assigner
//!   ([`crate::DataStream::assign_timestamps_and_watermarks`]) sets it; `map`, `filter` and
//!   `flat_map` keep it (their output records carry the input's timestamp); window operators
//!   give their results the window's [`max_timestamp`](crate::windowing::TimeWindow::max_timestamp),
//!   event-time timers the timer's time. Between tasks the timestamp travels with the record.
//! * A **watermark** `w` says: no record with a timestamp `<= w` should come any more. It
//!   travels in-band, behind the records emitted before it, through chains and network channels.
//!   An operator's watermark is the minimum over its input channels ([`WatermarkValve`]), idle
//!   channels excluded; it never goes back. A finished input counts as [`MAX_WATERMARK`], and
//!   every source vertex ends with it, so at the end of a bounded job every event-time timer and
//!   window fires.
//! * **Processing time** is the wall clock (milliseconds since the epoch) as the task last
//!   told the chain ([`crate::task::VertexInstance::advance_processing_time`]); processing-time
//!   timers and periodic watermark emission (`pipeline.auto-watermark-interval`) run from it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::codec::{read_varint, write_varint};
use crate::operators::{
    earliest, forward_checkpoint_signals, forward_checkpointing, forward_open_close, BoxOutput,
    ErrorSlot, Output,
};
use crate::snapshot::{SnapshotSections, SnapshotWriter};
use crate::task::CheckpointBarrier;
use crate::{Codec, Collector, Key, Record};

/// The lowest watermark: nothing is known yet.
pub const MIN_WATERMARK: i64 = i64::MIN;
/// The highest watermark: the input has ended; every event-time timer fires.
pub const MAX_WATERMARK: i64 = i64::MAX;
/// The timestamp of a record that has none (Flink's `Long.MIN_VALUE` marker).
pub const NO_TIMESTAMP: i64 = i64::MIN;
/// The job configuration key of the periodic watermark interval (Flink's
/// `pipeline.auto-watermark-interval`, default 200 ms; 0 disables periodic watermarks).
pub const AUTO_WATERMARK_INTERVAL_KEY: &str = "pipeline.auto-watermark-interval";
/// The default of [`AUTO_WATERMARK_INTERVAL_KEY`], in milliseconds.
pub const DEFAULT_AUTO_WATERMARK_INTERVAL_MS: i64 = 200;

/// Which clock a timer belongs to. Flink: `TimeDomain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Fired by watermarks.
    EventTime,
    /// Fired by the wall clock.
    ProcessingTime,
}

/// The time a chain shares between its operators: the timestamp of the record being pushed
/// through it and the processing time the task last gave it. One per vertex instance, used by
/// one thread at a time (atomics only to be `Send`; relaxed loads and stores cost what plain
/// ones do).
#[derive(Clone, Debug)]
pub(crate) struct ChainTime {
    record: Arc<AtomicI64>,
    processing: Arc<AtomicI64>,
}

impl Default for ChainTime {
    fn default() -> Self {
        ChainTime {
            record: Arc::new(AtomicI64::new(NO_TIMESTAMP)),
            processing: Arc::new(AtomicI64::new(0)),
        }
    }
}

impl ChainTime {
    /// The timestamp of the record being processed ([`NO_TIMESTAMP`] when it has none).
    #[inline]
    pub(crate) fn timestamp(&self) -> i64 {
        self.record.load(Ordering::Relaxed)
    }

    /// Sets the timestamp of the records emitted next.
    #[inline]
    pub(crate) fn set_timestamp(&self, timestamp: i64) {
        self.record.store(timestamp, Ordering::Relaxed);
    }

    /// The processing time the task last gave the chain.
    #[inline]
    pub(crate) fn processing_time(&self) -> i64 {
        self.processing.load(Ordering::Relaxed)
    }

    pub(crate) fn set_processing_time(&self, now: i64) {
        self.processing.store(now, Ordering::Relaxed);
    }
}

/// Parses a duration of the job configuration (`"200 ms"`, `"200ms"`, `"2 s"`, `"1 min"`, a
/// bare number of milliseconds) into milliseconds.
pub(crate) fn parse_millis(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like \"200 ms\")"))?;
    let factor = match unit.trim() {
        "" | "ms" | "milli" | "millis" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "min" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        other => return Err(format!("unknown time unit {other:?} in {text:?}")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Milliseconds of a `Duration`, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Timers of one clock: at most one per key and timestamp, fired in timestamp order (then in
/// registration order). Flink: `HeapPriorityQueueSet` of an `InternalTimerService`.
pub(crate) struct TimerQueue<K> {
    queue: BTreeMap<(i64, u64), K>,
    /// Per key: its timers as `(timestamp, sequence number)`; usually one or two.
    index: FxHashMap<K, Vec<(i64, u64)>>,
    next_seq: u64,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            queue: BTreeMap::new(),
            index: FxHashMap::default(),
            next_seq: 0,
        }
    }
}

impl<K: Key> TimerQueue<K> {
    /// Registers a timer; false if `key` already has one at `timestamp`.
    pub(crate) fn register(&mut self, timestamp: i64, key: &K) -> bool {
        let seq = self.next_seq;
        match self.index.get_mut(key) {
            Some(timers) => {
                if timers.iter().any(|(t, _)| *t == timestamp) {
                    return false;
                }
                timers.push((timestamp, seq));
            }
            None => {
                self.index.insert(key.clone(), vec![(timestamp, seq)]);
            }
        }
        self.next_seq += 1;
        self.queue.insert((timestamp, seq), key.clone());
        true
    }

    /// Deletes the timer of `key` at `timestamp`, if there is one.
    pub(crate) fn delete(&mut self, timestamp: i64, key: &K) -> bool {
        let Some(timers) = self.index.get_mut(key) else {
            return false;
        };
        let Some(at) = timers.iter().position(|(t, _)| *t == timestamp) else {
            return false;
        };
        let (_, seq) = timers.swap_remove(at);
        if timers.is_empty() {
            self.index.remove(key);
        }
        self.queue.remove(&(timestamp, seq));
        true
    }

    /// The earliest timer's timestamp.
    pub(crate) fn peek(&self) -> Option<i64> {
        self.queue.first_key_value().map(|((t, _), _)| *t)
    }

    /// Removes and returns the earliest timer if it is due at `time` (`timestamp <= time`).
    pub(crate) fn pop_due(&mut self, time: i64) -> Option<(i64, K)> {
        let (&(timestamp, seq), _) = self.queue.first_key_value()?;
        if timestamp > time {
            return None;
        }
        let key = self.queue.remove(&(timestamp, seq))?;
        if let Some(timers) = self.index.get_mut(&key) {
            timers.retain(|(_, s)| *s != seq);
            if timers.is_empty() {
                self.index.remove(&key);
            }
        }
        Some((timestamp, key))
    }

    /// Number of timers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Drops every timer.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.index.clear();
    }

    /// Writes the timers in firing order: `count:varint (timestamp:i64 key)*`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        write_varint(self.queue.len() as u64, out);
        for ((timestamp, _), key) in &self.queue {
            timestamp.encode(out);
            key.encode(out);
        }
    }

    /// Reads timers written by [`encode`](Self::encode) (registering them again in order).
    pub(crate) fn decode(input: &mut &[u8]) -> Result<Self, String> {
        let count = read_varint(input).map_err(|e| format!("timer count: {e}"))?;
        let mut queue = TimerQueue::default();
        for _ in 0..count {
            let timestamp = i64::decode(input).map_err(|e| format!("timer timestamp: {e}"))?;
            let key = K::decode(input).map_err(|e| format!("timer key: {e}"))?;
            if !queue.register(timestamp, &key) {
                return Err(format!("timer at {timestamp} occurs twice for one key"));
            }
        }
        Ok(queue)
    }
}

/// The event-time and processing-time timers of one keyed operator subtask, with the
/// operator's current watermark.
pub(crate) struct Timers<K> {
    pub(crate) event: TimerQueue<K>,
    pub(crate) processing: TimerQueue<K>,
    /// The operator's current input watermark.
    pub(crate) watermark: i64,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            event: TimerQueue::default(),
            processing: TimerQueue::default(),
            watermark: MIN_WATERMARK,
        }
    }
}

impl<K: Key> Timers<K> {
    /// `watermark:i64 event processing`. The watermark is kept (unlike Flink, which starts a
    /// restored operator at the lowest watermark): the records replayed after a restore then
    /// meet the watermark they met before the failure, or a later one, so a record dropped as
    /// late before is not taken in after a restore.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        self.watermark.encode(out);
        self.event.encode(out);
        self.processing.encode(out);
    }

    pub(crate) fn decode(input: &mut &[u8]) -> Result<Self, String> {
        let watermark = i64::decode(input).map_err(|e| format!("watermark: {e}"))?;
        let event = TimerQueue::decode(input).map_err(|e| format!("event-time timers: {e}"))?;
        let processing =
            TimerQueue::decode(input).map_err(|e| format!("processing-time timers: {e}"))?;
        Ok(Timers {
            event,
            processing,
            watermark,
        })
    }
}

/// Combines the watermarks and idleness of a task's input channels into the task's input
/// watermark and status. Flink: `StatusWatermarkValve`.
///
/// * The output watermark is the minimum over the *aligned* channels: active channels whose
///   watermark has reached the last output. It only moves forward.
/// * An idle channel does not hold the output back. When every channel is idle the output
///   becomes idle, after the highest watermark of all channels is emitted.
/// * A channel becoming active again counts only once its watermark catches up with the output.
/// * A channel that ended counts as active with [`MAX_WATERMARK`].
#[derive(Debug, Clone)]
pub struct WatermarkValve {
    channels: Vec<ValveChannel>,
    last_output: i64,
    idle: bool,
}

#[derive(Debug, Clone, Copy)]
struct ValveChannel {
    watermark: i64,
    idle: bool,
    aligned: bool,
}

/// What the valve emits after an input: a new watermark and/or a status change, in this order
/// (a watermark first, then `Some(true)` for idle; `Some(false)` for active, then the
/// watermark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValveOutput {
    /// The status turned to idle (`Some(true)`) or active (`Some(false)`).
    pub status: Option<bool>,
    /// A new, higher input watermark.
    pub watermark: Option<i64>,
}

impl WatermarkValve {
    /// A valve over `channels` channels, all active at [`MIN_WATERMARK`].
    pub fn new(channels: usize) -> Self {
        WatermarkValve {
            channels: vec![
                ValveChannel {
                    watermark: MIN_WATERMARK,
                    idle: false,
                    aligned: true,
                };
                channels
            ],
            last_output: MIN_WATERMARK,
            idle: false,
        }
    }

    /// The last watermark emitted.
    pub fn watermark(&self) -> i64 {
        self.last_output
    }

    /// True while every channel is idle.
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// Channel `channel` delivered watermark `watermark`.
    pub fn input_watermark(&mut self, channel: usize, watermark: i64) -> ValveOutput {
        let last_output = self.last_output;
        let Some(ch) = self.channels.get_mut(channel) else {
            return ValveOutput::default();
        };
        let mut out = ValveOutput::default();
        if ch.idle {
            // Flink drops watermarks of an idle channel: the producer marks it active first.
            return out;
        }
        if watermark > ch.watermark {
            ch.watermark = watermark;
            if watermark >= last_output {
                ch.aligned = true;
            }
            out.watermark = self.min_of_aligned();
        }
        out
    }

    /// Channel `channel` turned idle (`true`) or active (`false`).
    pub fn input_status(&mut self, channel: usize, idle: bool) -> ValveOutput {
        let last_output = self.last_output;
        let mut out = ValveOutput::default();
        let Some(ch) = self.channels.get_mut(channel) else {
            return out;
        };
        if idle && !ch.idle {
            ch.idle = true;
            ch.aligned = false;
            if self.channels.iter().all(|c| c.idle) {
                let max = self
                    .channels
                    .iter()
                    .map(|c| c.watermark)
                    .max()
                    .unwrap_or(MIN_WATERMARK);
                if max > self.last_output {
                    self.last_output = max;
                    out.watermark = Some(max);
                }
                self.idle = true;
                out.status = Some(true);
            } else {
                out.watermark = self.min_of_aligned();
            }
        } else if !idle && ch.idle {
            ch.idle = false;
            if ch.watermark >= last_output {
                ch.aligned = true;
            }
            if self.idle {
                self.idle = false;
                out.status = Some(false);
            }
            if let Some(w) = self.min_of_aligned() {
                out.watermark = Some(w);
            }
        }
        out
    }

    /// Channel `channel` ended: it counts as active at [`MAX_WATERMARK`].
    pub fn channel_ended(&mut self, channel: usize) -> ValveOutput {
        let mut out = ValveOutput::default();
        if self.channels.get(channel).is_some_and(|c| c.idle) {
            out = self.input_status(channel, false);
        }
        let more = self.input_watermark(channel, MAX_WATERMARK);
        out.watermark = more.watermark.or(out.watermark);
        out
    }

    fn min_of_aligned(&mut self) -> Option<i64> {
        let min = self
            .channels
            .iter()
            .filter(|c| c.aligned && !c.idle)
            .map(|c| c.watermark)
            .min()?;
        if min > self.last_output {
            self.last_output = min;
            Some(min)
        } else {
            None
        }
    }
}

/// Where a [`WatermarkGenerator`] emits. Flink: `WatermarkOutput`.
#[derive(Debug, Default)]
pub struct WatermarkOutput {
    pub(crate) watermark: Option<i64>,
    pub(crate) idle: Option<bool>,
}

impl WatermarkOutput {
    /// Emits watermark `watermark` (ignored unless above the last one); marks the output
    /// active.
    pub fn emit_watermark(&mut self, watermark: i64) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
        self.idle = Some(false);
    }

    /// Marks the output idle: downstream operators do not wait for its watermark until it
    /// emits again.
    pub fn mark_idle(&mut self) {
        self.idle = Some(true);
    }

    /// Marks the output active again.
    pub fn mark_active(&mut self) {
        self.idle = Some(false);
    }
}

/// Generates watermarks from the timestamps it sees, on every event and periodically (every
/// `pipeline.auto-watermark-interval` of processing time). Flink: `WatermarkGenerator`.
pub trait WatermarkGenerator<T>: Send + 'static {
    /// Called for every record with its (assigned) timestamp.
    fn on_event(&mut self, event: &T, timestamp: i64, output: &mut WatermarkOutput);
    /// Called periodically.
    fn on_periodic_emit(&mut self, output: &mut WatermarkOutput);
}

/// Flink's `BoundedOutOfOrdernessWatermarks`: the watermark trails the highest timestamp seen
/// by the bound (`max - bound - 1`).
#[derive(Debug, Clone)]
pub struct BoundedOutOfOrderness {
    bound: i64,
    max_timestamp: i64,
}

impl BoundedOutOfOrderness {
    /// A generator allowing records up to `bound` late.
    pub fn new(bound: Duration) -> Self {
        let bound = millis(bound);
        BoundedOutOfOrderness {
            bound,
            max_timestamp: MIN_WATERMARK.saturating_add(bound).saturating_add(1),
        }
    }
}

impl<T> WatermarkGenerator<T> for BoundedOutOfOrderness {
    fn on_event(&mut self, _event: &T, timestamp: i64, _output: &mut WatermarkOutput) {
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }
    fn on_periodic_emit(&mut self, output: &mut WatermarkOutput) {
        output.emit_watermark(
            self.max_timestamp
                .saturating_sub(self.bound)
                .saturating_sub(1),
        );
    }
}

/// Generates no watermarks (Flink's `NoWatermarksGenerator`).
#[derive(Debug, Clone, Copy)]
pub struct NoWatermarks;

impl<T> WatermarkGenerator<T> for NoWatermarks {
    fn on_event(&mut self, _: &T, _: i64, _: &mut WatermarkOutput) {}
    fn on_periodic_emit(&mut self, _: &mut WatermarkOutput) {}
}

type GeneratorFactory<T> = Arc<dyn Fn() -> Box<dyn WatermarkGenerator<T>> + Send + Sync>;
pub(crate) type TimestampAssigner<T> = Arc<dyn Fn(&T, i64) -> i64 + Send + Sync>;

/// How a stream gets timestamps and watermarks: a generator, an optional timestamp assigner
/// and an optional idleness timeout. Flink: `WatermarkStrategy`.
///
/// ```
/// use std::time::Duration;
/// use rflink::time::WatermarkStrategy;
///
/// let strategy = WatermarkStrategy::<(String, i64)>::for_bounded_out_of_orderness(Duration::from_secs(5))
///     .with_timestamp_assigner(|event: &(String, i64), _| event.1)
///     .with_idleness(Duration::from_secs(30));
/// # let _ = strategy;
/// ```
pub struct WatermarkStrategy<T> {
    pub(crate) generator: GeneratorFactory<T>,
    pub(crate) assigner: Option<TimestampAssigner<T>>,
    pub(crate) idleness: Option<i64>,
    pub(crate) description: String,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        WatermarkStrategy {
            generator: self.generator.clone(),
            assigner: self.assigner.clone(),
            idleness: self.idleness,
            description: self.description.clone(),
        }
    }
}

impl<T> std::fmt::Debug for WatermarkStrategy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkStrategy")
            .field("generator", &self.description)
            .field("assigner", &self.assigner.is_some())
            .field("idleness_ms", &self.idleness)
            .finish()
    }
}

impl<T: 'static> WatermarkStrategy<T> {
    /// Watermarks trailing the highest timestamp seen by `bound`. Flink:
    /// `forBoundedOutOfOrderness`.
    pub fn for_bounded_out_of_orderness(bound: Duration) -> Self {
        WatermarkStrategy {
            generator: Arc::new(move || Box::new(BoundedOutOfOrderness::new(bound))),
            assigner: None,
            idleness: None,
            description: format!("bounded out-of-orderness {} ms", millis(bound)),
        }
    }

    /// For timestamps that never decrease: the watermark is the highest timestamp seen minus
    /// one. Flink: `forMonotonousTimestamps`.
    pub fn for_monotonous_timestamps() -> Self {
        let mut strategy = Self::for_bounded_out_of_orderness(Duration::ZERO);
        strategy.description = "monotonous timestamps".into();
        strategy
    }

    /// No watermarks (timestamps only). Flink: `noWatermarks`.
    pub fn no_watermarks() -> Self {
        WatermarkStrategy {
            generator: Arc::new(|| Box::new(NoWatermarks)),
            assigner: None,
            idleness: None,
            description: "no watermarks".into(),
        }
    }

    /// A custom generator; `factory` makes one per subtask. Flink: `forGenerator`.
    pub fn for_generator<G, F>(factory: F) -> Self
    where
        G: WatermarkGenerator<T>,
        F: Fn() -> G + Send + Sync + 'static,
    {
        WatermarkStrategy {
            generator: Arc::new(move || Box::new(factory())),
            assigner: None,
            idleness: None,
            description: std::any::type_name::<G>().to_owned(),
        }
    }

    /// Sets the timestamp assigner: `f(record, previous timestamp)` returns the record's event
    /// time in milliseconds. Without one, records keep the timestamp they have.
    pub fn with_timestamp_assigner<F>(mut self, f: F) -> Self
    where
        F: Fn(&T, i64) -> i64 + Send + Sync + 'static,
    {
        self.assigner = Some(Arc::new(f));
        self
    }

    /// Marks the stream idle when no record arrived for `timeout` of processing time, so that
    /// downstream operators do not wait for its watermark; a record makes it active again.
    /// Flink: `withIdleness`.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idleness = Some(millis(timeout).max(1));
        self
    }
}

/// `assign_timestamps_and_watermarks`: sets each record's timestamp, runs the watermark
/// generator on every record and every `pipeline.auto-watermark-interval`, and marks its output
/// idle after the strategy's idleness timeout. Upstream watermarks are dropped except the final
/// [`MAX_WATERMARK`]. Flink: `TimestampsAndWatermarksOperator` with `WatermarksWithIdleness`.
pub(crate) struct TimestampsAndWatermarksOp<T> {
    pub(crate) assigner: Option<TimestampAssigner<T>>,
    pub(crate) generator: Box<dyn WatermarkGenerator<T>>,
    /// Periodic emission interval in ms; 0 for none.
    pub(crate) interval: i64,
    pub(crate) idleness: Option<i64>,
    /// Processing time of the next periodic emission (set by the first tick).
    pub(crate) next_emit: Option<i64>,
    /// Start of the current stretch without records (idleness), and whether a record came
    /// since the last periodic check.
    pub(crate) quiet_since: Option<i64>,
    pub(crate) active: bool,
    pub(crate) idle: bool,
    /// The last watermark emitted.
    pub(crate) watermark: i64,
    pub(crate) time: ChainTime,
    pub(crate) errors: ErrorSlot,
    pub(crate) out: BoxOutput<T>,
}

impl<T: 'static> TimestampsAndWatermarksOp<T> {
    pub(crate) fn new(
        strategy: &WatermarkStrategy<T>,
        interval: i64,
        time: ChainTime,
        errors: ErrorSlot,
        out: BoxOutput<T>,
    ) -> Self {
        TimestampsAndWatermarksOp {
            assigner: strategy.assigner.clone(),
            generator: (strategy.generator)(),
            interval,
            idleness: strategy.idleness,
            next_emit: None,
            quiet_since: None,
            active: false,
            idle: false,
            watermark: MIN_WATERMARK,
            time,
            errors,
            out,
        }
    }

    fn apply(&mut self, emitted: WatermarkOutput) {
        let result = (|| {
            if emitted.idle == Some(false) && self.idle {
                self.idle = false;
                self.out.process_watermark_status(false)?;
            }
            if let Some(w) = emitted.watermark {
                if w > self.watermark {
                    self.watermark = w;
                    self.out.process_watermark(w)?;
                }
            }
            if emitted.idle == Some(true) && !self.idle {
                self.idle = true;
                self.out.process_watermark_status(true)?;
            }
            Ok::<(), String>(())
        })();
        if let Err(e) = result {
            self.errors.set(e);
        }
    }

    fn periodic_emit(&mut self, now: i64) {
        if let Some(timeout) = self.idleness {
            if self.active || self.quiet_since.is_none() {
                self.quiet_since = Some(now);
                self.active = false;
            }
            if self
                .quiet_since
                .is_some_and(|since| now.saturating_sub(since) >= timeout)
            {
                let mut out = WatermarkOutput::default();
                out.mark_idle();
                self.apply(out);
                return;
            }
        }
        let mut out = WatermarkOutput::default();
        self.generator.on_periodic_emit(&mut out);
        self.apply(out);
    }
}

impl<T: Record> Collector<T> for TimestampsAndWatermarksOp<T> {
    #[inline]
    fn collect(&mut self, record: T) {
        let timestamp = match &self.assigner {
            Some(assign) => assign(&record, self.time.timestamp()),
            None => self.time.timestamp(),
        };
        self.time.set_timestamp(timestamp);
        self.active = true;
        if self.idle {
            let mut active = WatermarkOutput::default();
            active.mark_active();
            self.apply(active);
        }
        // As Flink: the record goes out first, then what the generator makes of it (a
        // punctuated watermark never overtakes the record that caused it).
        let mut out = WatermarkOutput::default();
        self.generator.on_event(&record, timestamp, &mut out);
        self.out.collect(record);
        if out.watermark.is_some() || out.idle.is_some() {
            self.apply(out);
        }
    }
}

impl<T: Record> Output<T> for TimestampsAndWatermarksOp<T> {
    forward_open_close!();
    forward_checkpointing!(out);
    fn process_watermark(&mut self, watermark: i64) -> Result<(), String> {
        // Only the end of input passes: this operator makes the stream's watermarks.
        if watermark == MAX_WATERMARK && self.watermark < MAX_WATERMARK {
            let mut out = WatermarkOutput::default();
            out.emit_watermark(MAX_WATERMARK);
            self.apply(out);
        }
        self.errors.check()
    }
    fn process_watermark_status(&mut self, _: bool) -> Result<(), String> {
        Ok(())
    }
    fn on_processing_time(&mut self, now: i64) -> Result<(), String> {
        if self.interval > 0 && self.watermark < MAX_WATERMARK {
            match self.next_emit {
                None => self.next_emit = Some(now.saturating_add(self.interval)),
                Some(due) if now >= due => {
                    self.periodic_emit(now);
                    self.next_emit = Some(now.saturating_add(self.interval));
                }
                Some(_) => {}
            }
        }
        self.errors.check()?;
        self.out.on_processing_time(now)
    }
    fn next_processing_time(&self) -> Option<i64> {
        let own = (self.interval > 0 && self.watermark < MAX_WATERMARK)
            .then(|| self.next_emit.unwrap_or(i64::MIN));
        earliest(own, self.out.next_processing_time())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_are_deduplicated_ordered_and_deletable() {
        let mut q = TimerQueue::<String>::default();
        assert!(q.register(10, &"a".into()));
        assert!(!q.register(10, &"a".into()));
        assert!(q.register(5, &"b".into()));
        assert!(q.register(10, &"b".into()));
        assert!(q.register(7, &"a".into()));
        assert_eq!(q.len(), 4);
        assert!(q.delete(7, &"a".into()));
        assert!(!q.delete(7, &"a".into()));
        assert_eq!(q.peek(), Some(5));
        let mut bytes = Vec::new();
        q.encode(&mut bytes);
        let mut input = bytes.as_slice();
        let mut copy = TimerQueue::<String>::decode(&mut input).unwrap();
        assert!(input.is_empty());
        let mut fired = Vec::new();
        while let Some(t) = copy.pop_due(10) {
            fired.push(t);
        }
        assert_eq!(
            fired,
            vec![(5, "b".into()), (10, "a".into()), (10, "b".into())]
        );
        assert_eq!(copy.len(), 0);
        assert_eq!(q.pop_due(4), None);
        // Truncations never panic.
        for cut in 0..bytes.len() {
            let mut input = &bytes[..cut];
            assert!(TimerQueue::<String>::decode(&mut input).is_err());
        }
    }

    #[test]
    fn valve_takes_the_minimum_of_active_channels() {
        let mut v = WatermarkValve::new(3);
        assert_eq!(v.input_watermark(0, 10).watermark, None);
        assert_eq!(v.input_watermark(1, 5).watermark, None);
        assert_eq!(v.input_watermark(2, 7).watermark, Some(5));
        assert_eq!(v.input_watermark(1, 20).watermark, Some(7));
        // Going back is ignored.
        assert_eq!(v.input_watermark(2, 3).watermark, None);
        // Channel 2 idle: the minimum of 0 and 1 is 10.
        assert_eq!(
            v.input_status(2, true),
            ValveOutput {
                status: None,
                watermark: Some(10)
            }
        );
        // Channel 2 active again below the output: not aligned until it catches up.
        assert_eq!(v.input_status(2, false).watermark, None);
        assert_eq!(v.input_watermark(0, 30).watermark, Some(20));
        assert_eq!(v.input_watermark(2, 8).watermark, None);
        // Caught up: aligned again, and now it is the minimum.
        assert_eq!(v.input_watermark(2, 25).watermark, None);
        assert_eq!(v.input_watermark(1, 40).watermark, Some(25));
        assert_eq!(v.watermark(), 25);
    }

    #[test]
    fn all_idle_emits_the_highest_watermark_then_idle() {
        let mut v = WatermarkValve::new(2);
        v.input_watermark(0, 100);
        v.input_watermark(1, 50);
        assert_eq!(v.watermark(), 50);
        assert_eq!(v.input_status(1, true).watermark, Some(100));
        let out = v.input_status(0, true);
        assert_eq!(out.status, Some(true));
        assert!(v.is_idle());
        // A watermark of an idle channel is dropped.
        assert_eq!(v.input_watermark(0, 200).watermark, None);
        let out = v.input_status(0, false);
        assert_eq!(out.status, Some(false));
        assert_eq!(v.input_watermark(0, 200).watermark, Some(200));
    }

    #[test]
    fn an_ended_channel_no_longer_holds_back() {
        let mut v = WatermarkValve::new(2);
        v.input_watermark(0, 40);
        assert_eq!(v.channel_ended(1).watermark, Some(40));
        assert_eq!(v.channel_ended(0).watermark, Some(MAX_WATERMARK));
        // An idle channel that ends becomes active first.
        let mut v = WatermarkValve::new(1);
        assert_eq!(v.input_status(0, true).status, Some(true));
        let out = v.channel_ended(0);
        assert_eq!(out.status, Some(false));
        assert_eq!(out.watermark, Some(MAX_WATERMARK));
        // Unknown channels are ignored.
        assert_eq!(v.input_watermark(9, 1), ValveOutput::default());
        assert_eq!(v.input_status(9, true), ValveOutput::default());
    }

    #[test]
    fn bounded_out_of_orderness_trails_the_maximum() {
        let mut g = BoundedOutOfOrderness::new(Duration::from_millis(100));
        let mut out = WatermarkOutput::default();
        WatermarkGenerator::<()>::on_periodic_emit(&mut g, &mut out);
        assert_eq!(out.watermark, Some(MIN_WATERMARK));
        let mut out = WatermarkOutput::default();
        g.on_event(&(), 1_000, &mut out);
        g.on_event(&(), 900, &mut out);
        assert_eq!(out.watermark, None);
        WatermarkGenerator::<()>::on_periodic_emit(&mut g, &mut out);
        assert_eq!(out.watermark, Some(899));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_millis("200 ms"), Ok(200));
        assert_eq!(parse_millis("200ms"), Ok(200));
        assert_eq!(parse_millis("2 s"), Ok(2000));
        assert_eq!(parse_millis("1 min"), Ok(60_000));
        assert_eq!(parse_millis("0"), Ok(0));
        assert!(parse_millis("fast").is_err());
        assert!(parse_millis("3 weeks").is_err());
    }
}
