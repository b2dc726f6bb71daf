//! The operator runtime inside a chain: typed outputs, operators, fan-out and the network output.
//!
//! A chain is a tree of [`Output`]s built tail first: every operator owns its output (the next
//! operator, a [`FanOut`] of several, or a [`NetworkOutput`]), records pass by value, and
//! lifecycle calls (`open`, `finish`, `flush`, `close`, and the checkpoint calls: state
//! snapshot, barrier, restore, notifications, end of data, finishing the outputs) cascade down
//! the tree. Types are erased only while the tree is assembled ([`AnyBox`] holding a
//! `Box<dyn Output<T>>`), never per record.
//!
//! Stateful parts (sources, sinks, keyed `reduce` / `sum` / `process`) know their node id and
//! write one snapshot section under it ([`crate::snapshot`]).

use std::any::{type_name, Any};
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use crate::functions::SplitMix64;
use crate::snapshot::{decode_map, encode_map, expect_end, SnapshotSections, SnapshotWriter};
use crate::state::{EndOfInputContext, KeyedContext, StateRegistry, StateStores, TimerAccess};
use crate::task::{CheckpointBarrier, PartitionWriter};
use crate::time::{ChainTime, TimeDomain, Timers, NO_TIMESTAMP};
use crate::{
    Codec, Collector, Key, KeyedProcessFunction, Numeric, Partitioner, Record, RuntimeContext,
    SinkFunction, SourceFunction, SourceStatus,
};

/// A type-erased `Box<dyn Output<T>>`, only while a chain is assembled.
pub(crate) type AnyBox = Box<dyn Any>;

/// Builds an operator around its (erased) output; returns the operator as an erased input.
pub(crate) type OperatorBuilder =
    Arc<dyn Fn(&BuildContext, AnyBox) -> Result<AnyBox, String> + Send + Sync>;
/// Builds a source driver around its (erased) output.
pub(crate) type SourceBuilder =
    Arc<dyn Fn(&BuildContext, AnyBox) -> Result<Box<dyn SourceDriver>, String> + Send + Sync>;
/// Combines a node's outputs (erased `Box<dyn Output<O>>`s) into one.
pub(crate) type FanOutFn = fn(Vec<AnyBox>) -> Result<AnyBox, String>;
/// Wraps a chain head's erased input into an [`InputDriver`]; `timestamps` tells whether the
/// records arriving carry timestamps.
pub(crate) type HeadFn = fn(AnyBox, bool, ChainTime) -> Result<Box<dyn InputDriver>, String>;
/// Builds a network output for one edge of the producing node's type.
pub(crate) type NetworkOutputBuilder =
    Arc<dyn Fn(NetworkSpec, Box<dyn PartitionWriter>) -> Result<AnyBox, String> + Send + Sync>;
/// `(record, max_parallelism, parallelism) -> subtask` of a Hash edge.
pub(crate) type HashFn<T> = Arc<dyn Fn(&T, u32, u32) -> u32 + Send + Sync>;
/// A shared key selector.
pub(crate) type KeyFn<T, K> = Arc<dyn KeySelector<T, K>>;

/// Extracts the key of a record. Flink: `KeySelector`.
///
/// The key comes back as a [`Cow`](std::borrow::Cow): selectors made by
/// [`DataStream::key_by_ref`](crate::DataStream::key_by_ref) borrow it from the record, so
/// partitioning and keyed state look keys up without copying them; a copy is made only when a
/// key is stored for the first time.
pub trait KeySelector<T, K: Clone>: Send + Sync + 'static {
    /// The key of `record`.
    fn key<'a>(&self, record: &'a T) -> std::borrow::Cow<'a, K>;
}

/// A selector computing an owned key (`key_by`).
pub(crate) struct OwnedKey<F>(pub(crate) F);

impl<T, K: Clone, F: Fn(&T) -> K + Send + Sync + 'static> KeySelector<T, K> for OwnedKey<F> {
    fn key<'a>(&self, record: &'a T) -> std::borrow::Cow<'a, K> {
        std::borrow::Cow::Owned((self.0)(record))
    }
}

/// A selector borrowing the key from the record (`key_by_ref`).
pub(crate) struct BorrowedKey<F>(pub(crate) F);

impl<T, K: Clone, F> KeySelector<T, K> for BorrowedKey<F>
where
    F: for<'a> Fn(&'a T) -> &'a K + Send + Sync + 'static,
{
    fn key<'a>(&self, record: &'a T) -> std::borrow::Cow<'a, K> {
        std::borrow::Cow::Borrowed((self.0)(record))
    }
}

/// How a node is instantiated.
#[derive(Clone)]
pub(crate) enum NodeLogic {
    Source(SourceBuilder),
    Operator {
        build: OperatorBuilder,
        head: HeadFn,
    },
}

/// The first error of a vertex instance, shared by every part of its chain.
#[derive(Clone, Default)]
pub(crate) struct ErrorSlot(Arc<ErrorInner>);

#[derive(Default)]
struct ErrorInner {
    failed: AtomicBool,
    message: Mutex<Option<String>>,
}

impl ErrorSlot {
    /// Records `message` unless an earlier error is already recorded.
    pub(crate) fn set(&self, message: String) {
        let mut slot = self
            .0
            .message
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(message);
            self.0.failed.store(true, Ordering::Release);
        }
    }

    /// The recorded error, if any.
    #[inline]
    pub(crate) fn check(&self) -> Result<(), String> {
        if !self.0.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let slot = self
            .0
            .message
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Err(slot.clone().unwrap_or_else(|| "task failed".to_owned()))
    }
}

/// What an operator needs while it is built for one subtask.
pub(crate) struct BuildContext {
    pub(crate) runtime: RuntimeContext,
    pub(crate) batch_emission: bool,
    pub(crate) errors: ErrorSlot,
    /// The id of the node being built (its snapshot section).
    pub(crate) node: u32,
    /// The chain's record timestamp and processing time.
    pub(crate) time: ChainTime,
    /// The job uses time: records carry timestamps between tasks, and watermarks flow.
    pub(crate) timestamps: bool,
    /// `pipeline.auto-watermark-interval` in milliseconds (0: no periodic watermarks).
    pub(crate) auto_watermark_interval: i64,
    /// Side outputs of the node being built, by tag (erased `Box<dyn Output<X>>`).
    pub(crate) side_outputs: std::cell::RefCell<FxHashMap<String, AnyBox>>,
}

impl BuildContext {
    /// Takes the side output `tag` of the node being built; a tag nobody reads gets an output
    /// that drops everything.
    pub(crate) fn side_output<X: Record>(&self, tag: &str) -> Result<BoxOutput<X>, String> {
        match self.side_outputs.borrow_mut().remove(tag) {
            Some(output) => unerase::<X>(output),
            None => Ok(Box::new(Discard)),
        }
    }
}

/// The earlier of two optional deadlines.
#[inline]
pub(crate) fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A typed stage of a chain.
pub(crate) trait Output<T>: Collector<T> + Send {
    /// Opens this stage and everything downstream (downstream first).
    fn open(&mut self) -> Result<(), String>;
    /// Input has ended: emit what is held back, then finish downstream.
    fn finish(&mut self) -> Result<(), String>;
    /// Pushes out buffered records.
    fn flush(&mut self) -> Result<(), String>;
    /// Releases everything; must be safe after a failure and when called twice.
    fn close(&mut self);
    /// Copies the state of this stage and everything downstream into `snapshot` (sinks
    /// pre-commit here). Emits no record.
    fn snapshot_state(
        &mut self,
        checkpoint_id: u64,
        snapshot: &mut SnapshotWriter,
    ) -> Result<(), String>;
    /// Emits `barrier` on every network output downstream, after every record emitted before.
    fn emit_barrier(&mut self, barrier: CheckpointBarrier) -> Result<(), String>;
    /// Takes this stage's section (and downstream's) back, before `open`.
    fn restore_state(&mut self, snapshot: &mut SnapshotSections<'_>) -> Result<(), String>;
    /// A checkpoint is complete: sinks commit.
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String>;
    /// A checkpoint was aborted.
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64);
    /// After `finish`: no record follows; network outputs push out their batches and tell their
    /// writers ([`PartitionWriter::end_of_data`]).
    fn end_of_data(&mut self) -> Result<(), String>;
    /// After `end_of_data`: network outputs end their partitions ([`PartitionWriter::finish`]),
    /// once.
    fn finish_outputs(&mut self) -> Result<(), String>;
    /// The input watermark advanced to `watermark`: fire the event-time timers it passes, then
    /// pass it on (network outputs broadcast it behind the records emitted before).
    fn process_watermark(&mut self, watermark: i64) -> Result<(), String>;
    /// The input turned idle (`true`) or active: passed on to the network outputs.
    fn process_watermark_status(&mut self, idle: bool) -> Result<(), String>;
    /// Processing time is now `now`: fire the processing-time timers and periodic work due.
    fn on_processing_time(&mut self, now: i64) -> Result<(), String>;
    /// The earliest processing time at which this stage or one downstream has work.
    fn next_processing_time(&self) -> Option<i64>;
}

/// The time calls of a stage without timers: forwarded to `self.$out`.
macro_rules! forward_time {
    ($out:ident) => {
        fn process_watermark(&mut self, watermark: i64) -> Result<(), String> {
            self.$out.process_watermark(watermark)
        }
        fn process_watermark_status(&mut self, idle: bool) -> Result<(), String> {
            self.$out.process_watermark_status(idle)
        }
        fn on_processing_time(&mut self, now: i64) -> Result<(), String> {
            self.$out.on_processing_time(now)
        }
        fn next_processing_time(&self) -> Option<i64> {
            self.$out.next_processing_time()
        }
    };
}
#[allow(unused_imports)]
pub(crate) use forward_time;

/// The time calls of a stage at the end of a chain without timers or outputs.
macro_rules! no_time {
    () => {
        fn process_watermark(&mut self, _: i64) -> Result<(), String> {
            Ok(())
        }
        fn process_watermark_status(&mut self, _: bool) -> Result<(), String> {
            Ok(())
        }
        fn on_processing_time(&mut self, _: i64) -> Result<(), String> {
            Ok(())
        }
        fn next_processing_time(&self) -> Option<i64> {
            None
        }
    };
}

/// The checkpoint calls of a stage without state or network output: forwarded to `self.$out`.
macro_rules! forward_checkpointing {
    ($out:ident) => {
        fn snapshot_state(
            &mut self,
            checkpoint_id: u64,
            snapshot: &mut SnapshotWriter,
        ) -> Result<(), String> {
            self.$out.snapshot_state(checkpoint_id, snapshot)
        }
        fn restore_state(&mut self, snapshot: &mut SnapshotSections<'_>) -> Result<(), String> {
            self.$out.restore_state(snapshot)
        }
        forward_checkpoint_signals!($out);
    };
}

/// The checkpoint calls a stateful stage passes on unchanged to its output `$out` (it handles
/// `snapshot_state` and `restore_state` itself).
macro_rules! forward_checkpoint_signals {
    ($out:ident) => {
        fn emit_barrier(&mut self, barrier: CheckpointBarrier) -> Result<(), String> {
            self.$out.emit_barrier(barrier)
        }
        fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String> {
            self.$out.notify_checkpoint_complete(checkpoint_id)
        }
        fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
            self.$out.notify_checkpoint_aborted(checkpoint_id)
        }
        fn end_of_data(&mut self) -> Result<(), String> {
            self.$out.end_of_data()
        }
        fn finish_outputs(&mut self) -> Result<(), String> {
            self.$out.finish_outputs()
        }
    };
}

pub(crate) use forward_checkpoint_signals;
pub(crate) use forward_checkpointing;

/// The checkpoint calls of a stage at the end of a chain with neither state nor output.
macro_rules! no_checkpointing {
    () => {
        fn snapshot_state(&mut self, _: u64, _: &mut SnapshotWriter) -> Result<(), String> {
            Ok(())
        }
        fn emit_barrier(&mut self, _: CheckpointBarrier) -> Result<(), String> {
            Ok(())
        }
        fn restore_state(&mut self, _: &mut SnapshotSections<'_>) -> Result<(), String> {
            Ok(())
        }
        fn notify_checkpoint_complete(&mut self, _: u64) -> Result<(), String> {
            Ok(())
        }
        fn notify_checkpoint_aborted(&mut self, _: u64) {}
        fn end_of_data(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn finish_outputs(&mut self) -> Result<(), String> {
            Ok(())
        }
    };
}

/// The error of a keyed aggregation asked for a checkpoint while it emits at end of input.
fn batch_emission_error(what: &str, node: u32) -> String {
    format!(
        "{what} (node {node}) emits at end of input (batch emission: runtime mode BATCH, or \
         AUTOMATIC with only bounded sources), which does not support checkpoints; set the \
         runtime mode to STREAMING"
    )
}

pub(crate) type BoxOutput<T> = Box<dyn Output<T>>;

pub(crate) fn erase<T: Record>(output: BoxOutput<T>) -> AnyBox {
    Box::new(output)
}

pub(crate) fn unerase<T: Record>(erased: AnyBox) -> Result<BoxOutput<T>, String> {
    erased.downcast::<BoxOutput<T>>().map(|b| *b).map_err(|_| {
        format!(
            "internal error: chain output is not of type {}",
            type_name::<T>()
        )
    })
}

/// [`FanOutFn`] for element type `T`.
pub(crate) fn fan_out<T: Record>(outputs: Vec<AnyBox>) -> Result<AnyBox, String> {
    let mut typed = outputs
        .into_iter()
        .map(unerase::<T>)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match typed.len() {
        0 => erase::<T>(Box::new(Discard)),
        1 => match typed.pop() {
            Some(only) => erase(only),
            None => erase::<T>(Box::new(Discard)),
        },
        _ => erase::<T>(Box::new(FanOut { outputs: typed })),
    })
}

/// [`HeadFn`] for element type `T`.
pub(crate) fn head<T: Record>(
    chain: AnyBox,
    timestamps: bool,
    time: ChainTime,
) -> Result<Box<dyn InputDriver>, String> {
    Ok(Box::new(TypedInput {
        chain: unerase::<T>(chain)?,
        timestamps,
        time,
    }))
}

/// Drops everything (a node without outputs).
struct Discard;

impl<T> Collector<T> for Discard {
    fn collect(&mut self, _record: T) {}
}

impl<T: Send> Output<T> for Discard {
    fn open(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn close(&mut self) {}
    no_checkpointing!();
    no_time!();
}

/// Sends every record to several outputs (cloning for all but the last).
struct FanOut<T> {
    outputs: Vec<BoxOutput<T>>,
}

impl<T: Clone> Collector<T> for FanOut<T> {
    fn collect(&mut self, record: T) {
        if let Some((last, rest)) = self.outputs.split_last_mut() {
            for output in rest {
                output.collect(record.clone());
            }
            last.collect(record);
        }
    }
}

impl<T: Clone + Send> Output<T> for FanOut<T> {
    fn open(&mut self) -> Result<(), String> {
        self.outputs.iter_mut().try_for_each(|o| o.open())
    }
    fn finish(&mut self) -> Result<(), String> {
        self.outputs.iter_mut().try_for_each(|o| o.finish())
    }
    fn flush(&mut self) -> Result<(), String> {
        self.outputs.iter_mut().try_for_each(|o| o.flush())
    }
    fn close(&mut self) {
        self.outputs.iter_mut().for_each(|o| o.close());
    }
    fn snapshot_state(
        &mut self,
        checkpoint_id: u64,
        snapshot: &mut SnapshotWriter,
    ) -> Result<(), String> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.snapshot_state(checkpoint_id, snapshot))
    }
    fn emit_barrier(&mut self, barrier: CheckpointBarrier) -> Result<(), String> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.emit_barrier(barrier))
    }
    fn restore_state(&mut self, snapshot: &mut SnapshotSections<'_>) -> Result<(), String> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.restore_state(snapshot))
    }
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.notify_checkpoint_complete(checkpoint_id))
    }
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        self.outputs
            .iter_mut()
            .for_each(|o| o.notify_checkpoint_aborted(checkpoint_id));
    }
    fn end_of_data(&mut self) -> Result<(), String> {
        self.outputs.iter_mut().try_for_each(|o| o.end_of_data())
    }
    fn finish_outputs(&mut self) -> Result<(), String> {
        self.outputs.iter_mut().try_for_each(|o| o.finish_outputs())
    }
    fn process_watermark(&mut self, watermark: i64) -> Result<(), String> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.process_watermark(watermark))
    }
    fn process_watermark_status(&mut self, idle: bool) -> Result<(), String> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.process_watermark_status(idle))
    }
    fn on_processing_time(&mut self, now: i64) -> Result<(), String> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.on_processing_time(now))
    }
    fn next_processing_time(&self) -> Option<i64> {
        self.outputs
            .iter()
            .fold(None, |acc, o| earliest(acc, o.next_processing_time()))
    }
}

/// `open`, `finish`, `flush` and `close` of a stage holding nothing: forwarded to `self.out`.
macro_rules! forward_open_close {
    () => {
        fn open(&mut self) -> Result<(), String> {
            self.out.open()
        }
        fn finish(&mut self) -> Result<(), String> {
            self.out.finish()
        }
        fn flush(&mut self) -> Result<(), String> {
            self.out.flush()
        }
        fn close(&mut self) {
            self.out.close()
        }
    };
}
pub(crate) use forward_open_close;

/// Every call of a stateless stage (`map`, `filter`, `flat_map`): forwarded to `self.out`.
macro_rules! forward_lifecycle {
    () => {
        forward_open_close!();
        forward_checkpointing!(out);
        forward_time!(out);
    };
}

/// `map`.
pub(crate) struct MapOp<F, I, O> {
    pub(crate) f: Arc<F>,
    pub(crate) out: BoxOutput<O>,
    pub(crate) _in: PhantomData<fn(I)>,
}

impl<F: Fn(I) -> O, I, O> Collector<I> for MapOp<F, I, O> {
    #[inline]
    fn collect(&mut self, record: I) {
        self.out.collect((self.f)(record));
    }
}

impl<F: Fn(I) -> O + Send + Sync, I, O: Send> Output<I> for MapOp<F, I, O> {
    forward_lifecycle!();
}

/// `filter`.
pub(crate) struct FilterOp<F, T> {
    pub(crate) f: Arc<F>,
    pub(crate) out: BoxOutput<T>,
}

impl<F: Fn(&T) -> bool, T> Collector<T> for FilterOp<F, T> {
    #[inline]
    fn collect(&mut self, record: T) {
        if (self.f)(&record) {
            self.out.collect(record);
        }
    }
}

impl<F: Fn(&T) -> bool + Send + Sync, T: Send> Output<T> for FilterOp<F, T> {
    forward_lifecycle!();
}

/// `flat_map`.
pub(crate) struct FlatMapOp<F, I, O> {
    pub(crate) f: Arc<F>,
    pub(crate) out: BoxOutput<O>,
    pub(crate) _in: PhantomData<fn(I)>,
}

impl<F: Fn(I, &mut dyn Collector<O>), I, O> Collector<I> for FlatMapOp<F, I, O> {
    #[inline]
    fn collect(&mut self, record: I) {
        (self.f)(record, &mut *self.out);
    }
}

impl<F: Fn(I, &mut dyn Collector<O>) + Send + Sync, I, O: Send> Output<I> for FlatMapOp<F, I, O> {
    forward_lifecycle!();
}

/// Keyed `reduce`. Streaming: emits the new aggregate on every record. Batch: emits each key's
/// final aggregate at end of input.
pub(crate) struct ReduceOp<T, K> {
    pub(crate) node: u32,
    pub(crate) key: KeyFn<T, K>,
    pub(crate) f: Arc<dyn Fn(T, T) -> T + Send + Sync>,
    pub(crate) batch: bool,
    pub(crate) state: FxHashMap<K, Option<T>>,
    pub(crate) out: BoxOutput<T>,
}

impl<T: Record, K: Key> Collector<T> for ReduceOp<T, K> {
    fn collect(&mut self, record: T) {
        let key = self.key.key(&record);
        match self.state.get_mut(&*key) {
            Some(slot) => {
                drop(key);
                let next = match slot.take() {
                    Some(acc) => (self.f)(acc, record),
                    None => record,
                };
                if !self.batch {
                    self.out.collect(next.clone());
                }
                *slot = Some(next);
            }
            None => {
                // The key is copied only when it is stored for the first time.
                let key = key.into_owned();
                if !self.batch {
                    self.out.collect(record.clone());
                }
                self.state.insert(key, Some(record));
            }
        }
    }
}

impl<T: Record, K: Key> Output<T> for ReduceOp<T, K> {
    fn open(&mut self) -> Result<(), String> {
        self.out.open()
    }
    fn finish(&mut self) -> Result<(), String> {
        if self.batch {
            for (_, value) in self.state.drain() {
                if let Some(value) = value {
                    self.out.collect(value);
                }
            }
        }
        self.out.finish()
    }
    fn flush(&mut self) -> Result<(), String> {
        self.out.flush()
    }
    fn close(&mut self) {
        self.state.clear();
        self.out.close();
    }
    fn snapshot_state(
        &mut self,
        checkpoint_id: u64,
        snapshot: &mut SnapshotWriter,
    ) -> Result<(), String> {
        if self.batch {
            return Err(batch_emission_error("keyed reduce", self.node));
        }
        let state = &self.state;
        snapshot.section(self.node, |out| {
            encode_map(state, out);
            Ok(())
        })?;
        self.out.snapshot_state(checkpoint_id, snapshot)
    }
    fn restore_state(&mut self, snapshot: &mut SnapshotSections<'_>) -> Result<(), String> {
        if let Some(mut bytes) = snapshot.take(self.node) {
            if self.batch {
                return Err(batch_emission_error("keyed reduce", self.node));
            }
            let what = format!(
                "malformed snapshot of the keyed reduce (node {})",
                self.node
            );
            self.state = decode_map(&mut bytes).map_err(|e| format!("{what}: {e}"))?;
            expect_end(bytes, &what)?;
        }
        self.out.restore_state(snapshot)
    }
    forward_checkpoint_signals!(out);
    forward_time!(out);
}

/// Keyed `sum`: the first record of a key, with the field replaced by the running sum.
pub(crate) struct SumOp<T, K, N> {
    pub(crate) node: u32,
    pub(crate) key: KeyFn<T, K>,
    pub(crate) field: fn(&mut T) -> &mut N,
    pub(crate) batch: bool,
    pub(crate) state: FxHashMap<K, T>,
    pub(crate) out: BoxOutput<T>,
}

impl<T: Record, K: Key, N: Numeric> Collector<T> for SumOp<T, K, N> {
    fn collect(&mut self, mut record: T) {
        let add = *(self.field)(&mut record);
        let key = self.key.key(&record);
        match self.state.get_mut(&*key) {
            Some(acc) => {
                drop(key);
                (self.field)(acc).add_assign(add);
                if !self.batch {
                    self.out.collect(acc.clone());
                }
            }
            None => {
                // The key is copied only when it is stored for the first time.
                let key = key.into_owned();
                if !self.batch {
                    self.out.collect(record.clone());
                }
                self.state.insert(key, record);
            }
        }
    }
}

impl<T: Record, K: Key, N: Numeric> Output<T> for SumOp<T, K, N> {
    fn open(&mut self) -> Result<(), String> {
        self.out.open()
    }
    fn finish(&mut self) -> Result<(), String> {
        if self.batch {
            for (_, value) in self.state.drain() {
                self.out.collect(value);
            }
        }
        self.out.finish()
    }
    fn flush(&mut self) -> Result<(), String> {
        self.out.flush()
    }
    fn close(&mut self) {
        self.state.clear();
        self.out.close();
    }
    fn snapshot_state(
        &mut self,
        checkpoint_id: u64,
        snapshot: &mut SnapshotWriter,
    ) -> Result<(), String> {
        if self.batch {
            return Err(batch_emission_error("keyed sum", self.node));
        }
        let state = &self.state;
        snapshot.section(self.node, |out| {
            encode_map(state, out);
            Ok(())
        })?;
        self.out.snapshot_state(checkpoint_id, snapshot)
    }
    fn restore_state(&mut self, snapshot: &mut SnapshotSections<'_>) -> Result<(), String> {
        if let Some(mut bytes) = snapshot.take(self.node) {
            if self.batch {
                return Err(batch_emission_error("keyed sum", self.node));
            }
            let what = format!("malformed snapshot of the keyed sum (node {})", self.node);
            self.state = decode_map(&mut bytes).map_err(|e| format!("{what}: {e}"))?;
            expect_end(bytes, &what)?;
        }
        self.out.restore_state(snapshot)
    }
    forward_checkpoint_signals!(out);
    forward_time!(out);
}

/// Keyed `process`, with its keyed state and timers.
pub(crate) struct ProcessOp<K, I, O, F> {
    pub(crate) node: u32,
    pub(crate) key: KeyFn<I, K>,
    pub(crate) f: F,
    /// True once `f.open` declared the state (in `restore_state` or `open`).
    pub(crate) declared: bool,
    pub(crate) stores: StateStores,
    pub(crate) timers: Timers<K>,
    pub(crate) time: ChainTime,
    pub(crate) runtime: RuntimeContext,
    pub(crate) errors: ErrorSlot,
    pub(crate) failed: bool,
    pub(crate) out: BoxOutput<O>,
}

impl<K: Key, I: Record, O: Record, F: KeyedProcessFunction<K, I, O>> ProcessOp<K, I, O, F> {
    fn check_state(&mut self) {
        if let Some(error) = self.stores.error.take() {
            self.errors.set(error);
            self.failed = true;
        }
    }

    /// Lets the function declare its state, once.
    fn declare(&mut self) -> Result<(), String> {
        if self.declared {
            return Ok(());
        }
        let mut registry = StateRegistry::<K>::default();
        self.f.open(&mut registry)?;
        if let Some(error) = registry.take_error() {
            return Err(error);
        }
        self.stores = StateStores::from_registry(&registry);
        self.declared = true;
        Ok(())
    }

    /// Fires the timers of `domain` due at `time`, in timestamp order. Event-time timers' output
    /// carries the timer's timestamp, processing-time timers' output none (as in Flink).
    fn fire(&mut self, domain: TimeDomain, time: i64) {
        loop {
            if self.failed {
                return;
            }
            let queue = match domain {
                TimeDomain::EventTime => &mut self.timers.event,
                TimeDomain::ProcessingTime => &mut self.timers.processing,
            };
            let Some((timestamp, key)) = queue.pop_due(time) else {
                return;
            };
            self.time.set_timestamp(match domain {
                TimeDomain::EventTime => timestamp,
                TimeDomain::ProcessingTime => NO_TIMESTAMP,
            });
            let timing = TimerAccess {
                timers: &mut self.timers,
                timestamp,
                processing_time: self.time.processing_time(),
                domain: Some(domain),
            };
            let mut ctx = KeyedContext::with_timers(&key, &mut self.stores, &self.runtime, timing);
            self.f.on_timer(timestamp, &mut ctx, &mut *self.out);
            self.check_state();
        }
    }
}

impl<K: Key, I: Record, O: Record, F: KeyedProcessFunction<K, I, O>> Collector<I>
    for ProcessOp<K, I, O, F>
{
    fn collect(&mut self, record: I) {
        if self.failed {
            return;
        }
        let key = self.key.key(&record).into_owned();
        let timing = TimerAccess {
            timers: &mut self.timers,
            timestamp: self.time.timestamp(),
            processing_time: self.time.processing_time(),
            domain: None,
        };
        let mut ctx = KeyedContext::with_timers(&key, &mut self.stores, &self.runtime, timing);
        self.f.process_element(record, &mut ctx, &mut *self.out);
        if self.stores.error.is_some() {
            self.check_state();
        }
    }
}

impl<K: Key, I: Record, O: Record, F: KeyedProcessFunction<K, I, O>> Output<I>
    for ProcessOp<K, I, O, F>
{
    fn open(&mut self) -> Result<(), String> {
        self.out.open()?;
        self.declare()
    }
    fn finish(&mut self) -> Result<(), String> {
        if !self.failed {
            let mut ctx = EndOfInputContext::new(&mut self.stores, &self.runtime);
            self.f.end_of_input(&mut ctx, &mut *self.out);
            self.check_state();
        }
        self.out.finish()
    }
    fn flush(&mut self) -> Result<(), String> {
        self.out.flush()
    }
    fn close(&mut self) {
        self.f.close();
        self.stores = StateStores::empty();
        self.timers = Timers::default();
        self.out.close();
    }
    fn snapshot_state(
        &mut self,
        checkpoint_id: u64,
        snapshot: &mut SnapshotWriter,
    ) -> Result<(), String> {
        let stores = &self.stores;
        let timers = &self.timers;
        snapshot.section(self.node, |out| {
            let mut state = Vec::new();
            stores.snapshot(&mut state)?;
            crate::codec::write_varint(state.len() as u64, out);
            out.extend_from_slice(&state);
            timers.encode(out);
            Ok(())
        })?;
        self.out.snapshot_state(checkpoint_id, snapshot)
    }
    fn restore_state(&mut self, snapshot: &mut SnapshotSections<'_>) -> Result<(), String> {
        if let Some(mut bytes) = snapshot.take(self.node) {
            self.declare()?;
            let what = format!("keyed process (node {})", self.node);
            let len = crate::codec::read_varint(&mut bytes)
                .map_err(|e| format!("{what}: malformed keyed state snapshot: {e}"))?;
            let len = usize::try_from(len)
                .ok()
                .filter(|len| *len <= bytes.len())
                .ok_or_else(|| format!("{what}: malformed keyed state snapshot: truncated"))?;
            let (state, mut rest) = bytes.split_at(len);
            self.stores
                .restore(state)
                .map_err(|e| format!("{what}: {e}"))?;
            self.timers =
                Timers::decode(&mut rest).map_err(|e| format!("{what}: malformed timers: {e}"))?;
            expect_end(rest, &format!("{what}: malformed timers"))?;
        }
        self.out.restore_state(snapshot)
    }
    forward_checkpoint_signals!(out);
    fn process_watermark(&mut self, watermark: i64) -> Result<(), String> {
        if watermark <= self.timers.watermark {
            return Ok(());
        }
        self.timers.watermark = watermark;
        self.fire(TimeDomain::EventTime, watermark);
        self.errors.check()?;
        self.out.process_watermark(watermark)
    }
    fn process_watermark_status(&mut self, idle: bool) -> Result<(), String> {
        self.out.process_watermark_status(idle)
    }
    fn on_processing_time(&mut self, now: i64) -> Result<(), String> {
        self.fire(TimeDomain::ProcessingTime, now);
        self.errors.check()?;
        self.out.on_processing_time(now)
    }
    fn next_processing_time(&self) -> Option<i64> {
        earliest(
            self.timers.processing.peek(),
            self.out.next_processing_time(),
        )
    }
}

/// A sink at the end of a chain.
pub(crate) struct SinkOp<T> {
    pub(crate) node: u32,
    pub(crate) sink: Box<dyn SinkFunction<T>>,
    pub(crate) runtime: RuntimeContext,
    pub(crate) errors: ErrorSlot,
    pub(crate) failed: bool,
    pub(crate) closed: bool,
}

impl<T: 'static> Collector<T> for SinkOp<T> {
    #[inline]
    fn collect(&mut self, record: T) {
        if self.failed {
            return;
        }
        if let Err(error) = self.sink.invoke(record) {
            self.failed = true;
            self.errors.set(error);
        }
    }
}

impl<T: Send + 'static> Output<T> for SinkOp<T> {
    fn open(&mut self) -> Result<(), String> {
        self.sink.open(&self.runtime)
    }
    fn finish(&mut self) -> Result<(), String> {
        self.sink.finish()
    }
    fn flush(&mut self) -> Result<(), String> {
        self.sink.flush()
    }
    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.sink.close();
        }
    }
    fn snapshot_state(
        &mut self,
        checkpoint_id: u64,
        snapshot: &mut SnapshotWriter,
    ) -> Result<(), String> {
        let sink = &mut self.sink;
        let node = self.node;
        snapshot.section(node, |out| {
            let state = sink
                .snapshot_state(checkpoint_id)
                .map_err(|e| format!("sink (node {node}): {e}"))?;
            out.extend_from_slice(&state);
            Ok(())
        })
    }
    fn emit_barrier(&mut self, _: CheckpointBarrier) -> Result<(), String> {
        Ok(())
    }
    fn restore_state(&mut self, snapshot: &mut SnapshotSections<'_>) -> Result<(), String> {
        match snapshot.take(self.node) {
            Some(bytes) => self
                .sink
                .restore_state(bytes)
                .map_err(|e| format!("cannot restore the sink (node {}): {e}", self.node)),
            None => Ok(()),
        }
    }
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String> {
        if self.failed {
            return Ok(());
        }
        self.sink.notify_checkpoint_complete(checkpoint_id)
    }
    fn notify_checkpoint_aborted(&mut self, _: u64) {}
    fn end_of_data(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn finish_outputs(&mut self) -> Result<(), String> {
        Ok(())
    }
    // Sinks take no part in time (Flink's `SinkFunction.writeWatermark` is a no-op too).
    no_time!();
}

/// The calls every chain head takes, whatever feeds it (see [`Output`] for their meaning).
pub(crate) trait ChainDriver: Send {
    fn open(&mut self) -> Result<(), String>;
    fn finish(&mut self) -> Result<(), String>;
    fn flush(&mut self) -> Result<(), String>;
    fn close(&mut self);
    fn snapshot_state(
        &mut self,
        checkpoint_id: u64,
        snapshot: &mut SnapshotWriter,
    ) -> Result<(), String>;
    fn emit_barrier(&mut self, barrier: CheckpointBarrier) -> Result<(), String>;
    fn restore_state(&mut self, snapshot: &mut SnapshotSections<'_>) -> Result<(), String>;
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String>;
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64);
    fn end_of_data(&mut self) -> Result<(), String>;
    fn finish_outputs(&mut self) -> Result<(), String>;
    fn process_watermark(&mut self, watermark: i64) -> Result<(), String>;
    fn process_watermark_status(&mut self, idle: bool) -> Result<(), String>;
    fn on_processing_time(&mut self, now: i64) -> Result<(), String>;
    fn next_processing_time(&self) -> Option<i64>;
}

/// Drives a source subtask: polls it into its chain.
pub(crate) trait SourceDriver: ChainDriver {
    fn poll(&mut self, max_records: usize) -> Result<SourceStatus, String>;
}

pub(crate) struct TypedSource<T> {
    pub(crate) node: u32,
    pub(crate) source: Box<dyn SourceFunction<T>>,
    pub(crate) runtime: RuntimeContext,
    pub(crate) out: BoxOutput<T>,
    pub(crate) finished: bool,
    pub(crate) closed: bool,
    /// The job uses time: the source's records carry no timestamp (the chain's timestamp is
    /// cleared before each).
    pub(crate) timestamps: bool,
    pub(crate) time: ChainTime,
}

/// A source's records have no timestamp: clears the chain's before each.
struct Untimed<'a, T> {
    out: &'a mut dyn Output<T>,
    time: &'a ChainTime,
}

impl<T> Collector<T> for Untimed<'_, T> {
    #[inline]
    fn collect(&mut self, record: T) {
        self.time.set_timestamp(NO_TIMESTAMP);
        self.out.collect(record);
    }
}

impl<T: Record> SourceDriver for TypedSource<T> {
    fn poll(&mut self, max_records: usize) -> Result<SourceStatus, String> {
        if self.finished {
            return Ok(SourceStatus::Finished);
        }
        let status = if self.timestamps {
            let mut out = Untimed {
                out: &mut *self.out,
                time: &self.time,
            };
            self.source.poll_next(&mut out, max_records)?
        } else {
            self.source.poll_next(&mut *self.out, max_records)?
        };
        if status == SourceStatus::Finished {
            self.finished = true;
        }
        Ok(status)
    }
}

impl<T: Record> ChainDriver for TypedSource<T> {
    fn open(&mut self) -> Result<(), String> {
        self.out.open()?;
        self.source.open(&self.runtime)
    }
    fn snapshot_state(
        &mut self,
        checkpoint_id: u64,
        snapshot: &mut SnapshotWriter,
    ) -> Result<(), String> {
        let source = &mut self.source;
        let node = self.node;
        snapshot.section(node, |out| {
            let state = source
                .snapshot_state()
                .map_err(|e| format!("source (node {node}): {e}"))?;
            out.extend_from_slice(&state);
            Ok(())
        })?;
        self.out.snapshot_state(checkpoint_id, snapshot)
    }
    fn restore_state(&mut self, snapshot: &mut SnapshotSections<'_>) -> Result<(), String> {
        if let Some(bytes) = snapshot.take(self.node) {
            self.source
                .restore_state(bytes)
                .map_err(|e| format!("cannot restore the source (node {}): {e}", self.node))?;
        }
        self.out.restore_state(snapshot)
    }
    forward_checkpoint_signals!(out);
    forward_time!(out);
    fn finish(&mut self) -> Result<(), String> {
        self.out.finish()
    }
    fn flush(&mut self) -> Result<(), String> {
        self.out.flush()
    }
    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.source.close();
        }
        self.out.close();
    }
}

/// Feeds records arriving from the network into a chain head.
pub(crate) trait InputDriver: ChainDriver {
    fn process_record(&mut self, record: &[u8]) -> Result<(), String>;
    fn process_batch(&mut self, batch: Box<dyn Any + Send>) -> Result<(), String>;
}

struct TypedInput<T> {
    chain: BoxOutput<T>,
    /// Records arrive with their timestamps.
    timestamps: bool,
    time: ChainTime,
}

impl<T: Record> InputDriver for TypedInput<T> {
    fn process_record(&mut self, record: &[u8]) -> Result<(), String> {
        let mut bytes = record;
        if self.timestamps {
            let timestamp = i64::decode(&mut bytes)
                .map_err(|e| format!("cannot decode a record's timestamp: {e}"))?;
            self.time.set_timestamp(timestamp);
        }
        let value = crate::codec::decode_exact::<T>(bytes)
            .map_err(|e| format!("cannot decode a record of type {}: {e}", type_name::<T>()))?;
        self.chain.collect(value);
        Ok(())
    }
    fn process_batch(&mut self, batch: Box<dyn Any + Send>) -> Result<(), String> {
        if self.timestamps {
            let batch = batch.downcast::<TimedBatch<T>>().map_err(|_| {
                format!(
                    "received a batch that is not a timestamped batch of {}",
                    type_name::<T>()
                )
            })?;
            let TimedBatch {
                records,
                timestamps,
            } = *batch;
            for (value, timestamp) in records.into_iter().zip(timestamps) {
                self.time.set_timestamp(timestamp);
                self.chain.collect(value);
            }
            return Ok(());
        }
        let batch = batch
            .downcast::<Vec<T>>()
            .map_err(|_| format!("received a batch that is not a Vec<{}>", type_name::<T>()))?;
        for value in *batch {
            self.chain.collect(value);
        }
        Ok(())
    }
}

/// A typed batch of records with their timestamps, for a local consumer of a job that uses
/// time (`records[i]` has `timestamps[i]`).
pub(crate) struct TimedBatch<T> {
    records: Vec<T>,
    timestamps: Vec<i64>,
}

impl<T: Record> ChainDriver for TypedInput<T> {
    forward_checkpointing!(chain);
    forward_time!(chain);
    fn open(&mut self) -> Result<(), String> {
        self.chain.open()
    }
    fn finish(&mut self) -> Result<(), String> {
        self.chain.finish()
    }
    fn flush(&mut self) -> Result<(), String> {
        self.chain.flush()
    }
    fn close(&mut self) {
        self.chain.close();
    }
}

/// What a network output needs to know about its edge, for one producer subtask.
pub(crate) struct NetworkSpec {
    /// Keyed aggregations emit once, at end of input (batch emission).
    pub(crate) batch_emission: bool,
    pub(crate) partitioner: Partitioner,
    pub(crate) subtask_index: u32,
    pub(crate) consumer_parallelism: u32,
    pub(crate) consumer_max_parallelism: u32,
    pub(crate) errors: ErrorSlot,
    /// Records go out with their timestamps (the job uses time).
    pub(crate) timestamps: bool,
    pub(crate) time: ChainTime,
}

/// [`NetworkOutputBuilder`] for records of type `T` (with the key hash for Hash edges).
pub(crate) fn network_output_builder<T: Record>(hash: Option<HashFn<T>>) -> NetworkOutputBuilder {
    Arc::new(move |spec: NetworkSpec, writer: Box<dyn PartitionWriter>| {
        Ok(erase::<T>(Box::new(NetworkOutput::new(
            spec,
            writer,
            hash.clone(),
        )?)))
    })
}

/// [`NetworkOutputBuilder`] for the Hash edge into a keyed `sum`: with batch emission the
/// records are pre-aggregated per key before the exchange ([`CombiningOutput`]); otherwise a
/// plain [`NetworkOutput`].
pub(crate) fn summing_output_builder<T: Record, K: Key, N: Numeric>(
    key: KeyFn<T, K>,
    field: fn(&mut T) -> &mut N,
) -> NetworkOutputBuilder {
    let hash = hash_fn(key.clone());
    Arc::new(move |spec: NetworkSpec, writer: Box<dyn PartitionWriter>| {
        let combine = spec.batch_emission && spec.partitioner == Partitioner::Hash;
        let inner = NetworkOutput::new(spec, writer, Some(hash.clone()))?;
        if combine {
            Ok(erase::<T>(Box::new(CombiningOutput {
                key: key.clone(),
                field,
                state: FxHashMap::default(),
                inner,
            })))
        } else {
            Ok(erase::<T>(Box::new(inner)))
        }
    })
}

/// Pre-aggregates a keyed `sum` on the producer's side of the exchange when it is emitted at end
/// of input: each key's running sum is kept here and sent once, when the input ends, so the
/// exchange carries one record per key and producer subtask instead of one per input record.
/// Flink: the combiner of batch aggregations (`ReduceCombineDriver`, the local phase of the Table
/// API's local-global aggregation). Only for `sum`, whose addition is associative and
/// commutative, so the consumer's final sums are the same; `reduce` with an arbitrary function
/// is not pre-aggregated. The memory is one entry per distinct key, as the consumer's state.
pub(crate) struct CombiningOutput<T, K, N> {
    key: KeyFn<T, K>,
    field: fn(&mut T) -> &mut N,
    state: FxHashMap<K, T>,
    inner: NetworkOutput<T>,
}

impl<T: Record, K: Key, N: Numeric> Collector<T> for CombiningOutput<T, K, N> {
    fn collect(&mut self, mut record: T) {
        let add = *(self.field)(&mut record);
        let key = self.key.key(&record);
        match self.state.get_mut(&*key) {
            Some(acc) => {
                drop(key);
                (self.field)(acc).add_assign(add);
            }
            None => {
                let key = key.into_owned();
                self.state.insert(key, record);
            }
        }
    }
}

impl<T: Record, K: Key, N: Numeric> Output<T> for CombiningOutput<T, K, N> {
    fn open(&mut self) -> Result<(), String> {
        self.inner.open()
    }
    fn finish(&mut self) -> Result<(), String> {
        for (_, partial) in self.state.drain() {
            self.inner.collect(partial);
        }
        self.inner.finish()
    }
    fn flush(&mut self) -> Result<(), String> {
        // Partial sums wait for the end of input; what was already handed on is flushed.
        self.inner.flush()
    }
    fn close(&mut self) {
        self.state.clear();
        self.inner.close();
    }
    fn snapshot_state(&mut self, _: u64, _: &mut SnapshotWriter) -> Result<(), String> {
        Err(
            "the pre-aggregation of a keyed sum for batch emission (runtime mode BATCH, or \
             AUTOMATIC with only bounded sources) does not support checkpoints; set the runtime \
             mode to STREAMING"
                .to_owned(),
        )
    }
    fn emit_barrier(&mut self, barrier: CheckpointBarrier) -> Result<(), String> {
        self.inner.emit_barrier(barrier)
    }
    fn restore_state(&mut self, snapshot: &mut SnapshotSections<'_>) -> Result<(), String> {
        self.inner.restore_state(snapshot)
    }
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String> {
        self.inner.notify_checkpoint_complete(checkpoint_id)
    }
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        self.inner.notify_checkpoint_aborted(checkpoint_id)
    }
    fn end_of_data(&mut self) -> Result<(), String> {
        self.inner.end_of_data()
    }
    fn finish_outputs(&mut self) -> Result<(), String> {
        self.inner.finish_outputs()
    }
    forward_time!(inner);
}

/// Builds a key hash function for a Hash edge from a key selector.
pub(crate) fn hash_fn<T: 'static, K: Hash + Clone + 'static>(key: KeyFn<T, K>) -> HashFn<T> {
    Arc::new(move |record: &T, max_parallelism, parallelism| {
        crate::hash::assign_key_to_subtask(&*key.key(record), max_parallelism, parallelism)
    })
}

enum Selector<T> {
    Forward,
    Rebalance {
        next: usize,
    },
    Shuffle {
        rng: SplitMix64,
    },
    Broadcast,
    Hash {
        hash: HashFn<T>,
        max_parallelism: u32,
        parallelism: u32,
    },
}

/// The chain tail's output for one edge: picks subpartitions by the partitioner and hands
/// records to the runtime's [`PartitionWriter`], as typed batches (local) or bytes (remote).
pub(crate) struct NetworkOutput<T> {
    writer: Box<dyn PartitionWriter>,
    selector: Selector<T>,
    subpartitions: usize,
    local: Vec<bool>,
    any_remote: bool,
    batch_records: usize,
    batches: Vec<Vec<T>>,
    /// With timestamps: the timestamps of `batches`, record by record.
    stamps: Vec<Vec<i64>>,
    scratch: Vec<u8>,
    errors: ErrorSlot,
    failed: bool,
    /// [`PartitionWriter::finish`] was called: nothing more goes into the writer.
    partition_finished: bool,
    /// Records go out with their timestamps.
    timestamps: bool,
    time: ChainTime,
    /// The last watermark broadcast.
    watermark: i64,
}

impl<T: Record> NetworkOutput<T> {
    fn new(
        spec: NetworkSpec,
        writer: Box<dyn PartitionWriter>,
        hash: Option<HashFn<T>>,
    ) -> Result<Self, String> {
        let subpartitions = writer.num_subpartitions();
        let expected = match spec.partitioner {
            Partitioner::Forward => 1,
            _ => spec.consumer_parallelism as usize,
        };
        if subpartitions != expected {
            return Err(format!(
                "a {} output needs {expected} subpartitions, the writer has {subpartitions}",
                spec.partitioner
            ));
        }
        let selector = match spec.partitioner {
            Partitioner::Forward => Selector::Forward,
            Partitioner::Rebalance => Selector::Rebalance {
                next: spec.subtask_index as usize % subpartitions,
            },
            Partitioner::Shuffle => Selector::Shuffle {
                rng: SplitMix64::for_index(0x5eed, u64::from(spec.subtask_index)),
            },
            Partitioner::Broadcast => Selector::Broadcast,
            // One consumer subtask owns every key group: no need to hash.
            Partitioner::Hash if subpartitions == 1 => Selector::Forward,
            Partitioner::Hash => match hash {
                Some(hash) => Selector::Hash {
                    hash,
                    max_parallelism: spec.consumer_max_parallelism,
                    parallelism: spec.consumer_parallelism,
                },
                None => return Err("internal error: hash edge without a key selector".into()),
            },
        };
        Ok(NetworkOutput {
            writer,
            selector,
            subpartitions,
            local: vec![false; subpartitions],
            any_remote: true,
            batch_records: 1,
            batches: (0..subpartitions).map(|_| Vec::new()).collect(),
            stamps: (0..subpartitions).map(|_| Vec::new()).collect(),
            scratch: Vec::new(),
            errors: spec.errors,
            failed: false,
            partition_finished: false,
            timestamps: spec.timestamps,
            time: spec.time,
            watermark: crate::time::MIN_WATERMARK,
        })
    }

    fn fail(&mut self, error: String) {
        self.failed = true;
        self.errors.set(error);
    }

    #[inline]
    fn emit(&mut self, subpartition: usize, record: T) {
        if self.local[subpartition] {
            if self.timestamps {
                self.stamps[subpartition].push(self.time.timestamp());
            }
            let batch = &mut self.batches[subpartition];
            batch.push(record);
            if batch.len() >= self.batch_records {
                self.send_batch(subpartition);
            }
        } else {
            self.scratch.clear();
            if self.timestamps {
                self.time.timestamp().encode(&mut self.scratch);
            }
            record.encode(&mut self.scratch);
            if let Err(e) = self.writer.write_record(subpartition, &self.scratch) {
                self.fail(e);
            }
        }
    }

    fn send_batch(&mut self, subpartition: usize) {
        let full = std::mem::replace(
            &mut self.batches[subpartition],
            Vec::with_capacity(self.batch_records),
        );
        let records = full.len();
        if records == 0 {
            return;
        }
        let batch: Box<dyn Any + Send> = if self.timestamps {
            let timestamps = std::mem::replace(
                &mut self.stamps[subpartition],
                Vec::with_capacity(self.batch_records),
            );
            Box::new(TimedBatch {
                records: full,
                timestamps,
            })
        } else {
            Box::new(full)
        };
        if let Err(e) = self.writer.write_batch(subpartition, batch, records) {
            self.fail(e);
        }
    }

    fn send_all_batches(&mut self) {
        for s in 0..self.subpartitions {
            if self.failed {
                return;
            }
            if !self.batches[s].is_empty() {
                self.send_batch(s);
            }
        }
    }
}

impl<T: Record> Collector<T> for NetworkOutput<T> {
    fn collect(&mut self, record: T) {
        if self.failed {
            return;
        }
        match &mut self.selector {
            Selector::Forward => self.emit(0, record),
            Selector::Rebalance { next } => {
                let s = *next;
                *next = if s + 1 == self.subpartitions {
                    0
                } else {
                    s + 1
                };
                self.emit(s, record);
            }
            Selector::Shuffle { rng } => {
                let s = rng.gen_range(self.subpartitions as u64) as usize;
                self.emit(s, record);
            }
            Selector::Hash {
                hash,
                max_parallelism,
                parallelism,
            } => {
                let s = hash(&record, *max_parallelism, *parallelism) as usize;
                self.emit(s, record);
            }
            Selector::Broadcast => {
                let timestamp = self.time.timestamp();
                if self.any_remote {
                    self.scratch.clear();
                    if self.timestamps {
                        timestamp.encode(&mut self.scratch);
                    }
                    record.encode(&mut self.scratch);
                }
                for s in 0..self.subpartitions {
                    if self.failed {
                        return;
                    }
                    if self.local[s] {
                        if self.timestamps {
                            self.stamps[s].push(timestamp);
                        }
                        self.batches[s].push(record.clone());
                        if self.batches[s].len() >= self.batch_records {
                            self.send_batch(s);
                        }
                    } else if let Err(e) = self.writer.write_record(s, &self.scratch) {
                        self.fail(e);
                    }
                }
            }
        }
    }
}

impl<T: Record> Output<T> for NetworkOutput<T> {
    fn open(&mut self) -> Result<(), String> {
        // Locality and batch size are fixed from here on: a subpartition must not switch between
        // typed batches and bytes while records are in flight.
        self.local = (0..self.subpartitions)
            .map(|s| self.writer.is_local(s))
            .collect();
        self.any_remote = self.local.iter().any(|l| !l);
        self.batch_records = self.writer.local_batch_records().max(1);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), String> {
        // Operators upstream have emitted their last records; `end_of_data` tells the writer.
        self.send_all_batches();
        self.errors.check()
    }
    fn flush(&mut self) -> Result<(), String> {
        if self.partition_finished {
            return self.errors.check();
        }
        self.send_all_batches();
        if !self.failed {
            if let Err(e) = self.writer.flush() {
                self.fail(e);
            }
        }
        self.errors.check()
    }
    fn close(&mut self) {
        self.batches.iter_mut().for_each(Vec::clear);
        self.stamps.iter_mut().for_each(Vec::clear);
    }
    fn snapshot_state(&mut self, _: u64, _: &mut SnapshotWriter) -> Result<(), String> {
        self.errors.check()
    }
    fn emit_barrier(&mut self, barrier: CheckpointBarrier) -> Result<(), String> {
        if self.partition_finished {
            return Err(format!(
                "checkpoint barrier {} after the end of the partition",
                barrier.id
            ));
        }
        // Every record emitted before the barrier goes into the writer first.
        self.send_all_batches();
        if !self.failed {
            if let Err(e) = self.writer.flush() {
                self.fail(e);
            }
        }
        if !self.failed {
            if let Err(e) = self.writer.broadcast_barrier(barrier) {
                self.fail(e);
            }
        }
        self.errors.check()
    }
    fn restore_state(&mut self, _: &mut SnapshotSections<'_>) -> Result<(), String> {
        Ok(())
    }
    fn notify_checkpoint_complete(&mut self, _: u64) -> Result<(), String> {
        Ok(())
    }
    fn notify_checkpoint_aborted(&mut self, _: u64) {}
    fn end_of_data(&mut self) -> Result<(), String> {
        if self.partition_finished {
            return self.errors.check();
        }
        self.send_all_batches();
        if !self.failed {
            if let Err(e) = self.writer.end_of_data() {
                self.fail(e);
            }
        }
        self.errors.check()
    }
    fn finish_outputs(&mut self) -> Result<(), String> {
        if !self.partition_finished && !self.failed {
            self.partition_finished = true;
            if let Err(e) = self.writer.finish() {
                self.fail(e);
            }
        }
        self.errors.check()
    }
    fn process_watermark(&mut self, watermark: i64) -> Result<(), String> {
        if watermark <= self.watermark || self.partition_finished || self.failed {
            return self.errors.check();
        }
        self.watermark = watermark;
        // Behind every record emitted before it.
        self.send_all_batches();
        if !self.failed {
            if let Err(e) = self.writer.broadcast_watermark(watermark) {
                self.fail(e);
            }
        }
        self.errors.check()
    }
    fn process_watermark_status(&mut self, idle: bool) -> Result<(), String> {
        if self.partition_finished || self.failed {
            return self.errors.check();
        }
        self.send_all_batches();
        if !self.failed {
            if let Err(e) = self.writer.broadcast_watermark_status(idle) {
                self.fail(e);
            }
        }
        self.errors.check()
    }
    fn on_processing_time(&mut self, _: i64) -> Result<(), String> {
        Ok(())
    }
    fn next_processing_time(&self) -> Option<i64> {
        None
    }
}
