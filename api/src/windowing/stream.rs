//! [`WindowedStream`] and the windowing methods of [`KeyedStream`].

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::functions::{
    AggregateFn, Evicting, PassThrough, ProcessFn, ReduceFn, WindowFunction, WithProcess,
};
use super::operator::{Core, WindowOperator};
use super::{
    AggregateFunction, CountEvictor, CountTrigger, GlobalWindows, ProcessWindowFunction,
    PurgingTrigger, Trigger, WindowAssigner,
};
use crate::graph::NodeKind;
use crate::operators::{erase, hash_fn, unerase, AnyBox, BuildContext, KeyFn, OperatorBuilder};
use crate::time::{millis, Timers};
use crate::{DataStream, Key, KeyedStream, Numeric, OutputTag, Record};

impl<T: Record, K: Key> KeyedStream<T, K> {
    /// Cuts each key's records into the windows `assigner` gives them. Flink: `window`.
    ///
    /// Invalid assigner parameters (a size of zero, an offset not below the size) make
    /// building the graph fail.
    pub fn window<A: WindowAssigner>(&self, assigner: A) -> WindowedStream<T, K, A> {
        if let Err(e) = assigner.validate() {
            self.stream.env.borrow_mut().errors.push(e);
        }
        WindowedStream {
            stream: self.stream.clone(),
            key: self.key.clone(),
            assigner: Arc::new(assigner),
            trigger: None,
            evictor: None,
            allowed_lateness: 0,
            late_tag: None,
        }
    }

    /// Windows of `size` records per key: a window fires (and is purged) every `size` records
    /// of its key; a last, incomplete window does not fire. Flink: `countWindow(size)`
    /// (global windows with `PurgingTrigger.of(CountTrigger.of(size))`).
    pub fn count_window(&self, size: u64) -> WindowedStream<T, K, GlobalWindows> {
        self.window(GlobalWindows::create())
            .trigger(PurgingTrigger::of(CountTrigger::of(size)))
    }

    /// Sliding count windows: every `slide` records of a key, the window function sees the
    /// last `size` records of that key. Flink: `countWindow(size, slide)` (global windows with
    /// `CountEvictor.of(size)` and `CountTrigger.of(slide)`).
    pub fn count_window_sliding(
        &self,
        size: u64,
        slide: u64,
    ) -> WindowedStream<T, K, GlobalWindows> {
        self.window(GlobalWindows::create())
            .evictor(CountEvictor::of(size))
            .trigger(CountTrigger::of(slide))
    }
}

/// A keyed stream cut into windows, waiting for its window function (`reduce`, `sum`,
/// `aggregate`, `process`). Flink: `WindowedStream`.
pub struct WindowedStream<T, K, A> {
    stream: DataStream<T>,
    key: KeyFn<T, K>,
    assigner: Arc<A>,
    trigger: Option<Trigger>,
    evictor: Option<CountEvictor>,
    allowed_lateness: i64,
    late_tag: Option<String>,
}

impl<T, K, A: WindowAssigner> std::fmt::Debug for WindowedStream<T, K, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedStream")
            .field("assigner", &self.assigner.describe())
            .field("trigger", &self.trigger)
            .field("evictor", &self.evictor)
            .field("allowed_lateness_ms", &self.allowed_lateness)
            .field("late_tag", &self.late_tag)
            .finish()
    }
}

/// What every subtask's operator is built from.
struct Params<T, K, A> {
    name: String,
    key: KeyFn<T, K>,
    assigner: Arc<A>,
    trigger: Trigger,
    allowed_lateness: i64,
    late_tag: Option<String>,
}

fn instantiate<K, T, O, A, F>(
    ctx: &BuildContext,
    output: AnyBox,
    params: &Params<T, K, A>,
    func: F,
) -> Result<AnyBox, String>
where
    K: Key,
    T: Record,
    O: Record,
    A: WindowAssigner,
    F: WindowFunction<K, T, O>,
{
    let out = unerase::<O>(output)?;
    let late = match &params.late_tag {
        Some(tag) => Some(ctx.side_output::<T>(tag)?),
        None => None,
    };
    let event_time = params.assigner.is_event_time();
    let core = Core {
        node: ctx.node,
        name: params.name.clone(),
        assigner: params.assigner.clone(),
        trigger: params.trigger.clone(),
        event_time,
        merging: params.assigner.is_merging(),
        allowed_lateness: if event_time {
            params.allowed_lateness
        } else {
            0
        },
        func,
        timers: Timers::default(),
        time: ctx.time.clone(),
        errors: ctx.errors.clone(),
        failed: false,
        late,
        late_dropped: 0,
        out,
    };
    Ok(erase::<T>(Box::new(WindowOperator::new(
        core,
        params.key.clone(),
    ))))
}

impl<T: Record, K: Key, A: WindowAssigner> WindowedStream<T, K, A> {
    /// Keeps event-time windows (and their state) for `lateness` after the watermark passed
    /// their end: a late element within it updates its window, which fires again at once.
    /// Default 0. Ignored by processing-time windows. Flink: `allowedLateness`.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = millis(lateness);
        self
    }

    /// Emits the records that arrive too late for every window they belong to on the side
    /// output `tag`, read with [`DataStream::get_side_output`] on the window's result stream
    /// (instead of dropping them). Flink: `sideOutputLateData`.
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late_tag = Some(tag.id().to_owned());
        self
    }

    /// Replaces the assigner's default trigger. Flink: `trigger`.
    pub fn trigger(mut self, trigger: Trigger) -> Self {
        self.trigger = Some(trigger);
        self
    }

    /// Keeps only the last elements of a window when it fires (windows then keep their
    /// elements, not an accumulator). Flink: `evictor`.
    pub fn evictor(mut self, evictor: CountEvictor) -> Self {
        self.evictor = Some(evictor);
        self
    }

    /// Adds the window operator with the window function `make` creates (once per subtask).
    fn build<O, F, M>(&self, function: &str, make: M) -> DataStream<O>
    where
        O: Record,
        F: WindowFunction<K, T, O>,
        M: Fn() -> F + Send + Sync + 'static,
    {
        let trigger = self
            .trigger
            .clone()
            .unwrap_or_else(|| self.assigner.default_trigger());
        let evictor = self
            .evictor
            .map(|e| format!(", CountEvictor({})", e.max_count))
            .unwrap_or_default();
        let name = format!(
            "Window({}, {}{evictor}, {function})",
            self.assigner.describe(),
            trigger.describe()
        );
        let params = Arc::new(Params {
            name: name.clone(),
            key: self.key.clone(),
            assigner: self.assigner.clone(),
            trigger,
            allowed_lateness: self.allowed_lateness,
            late_tag: self.late_tag.clone(),
        });
        let build: OperatorBuilder = match self.evictor {
            Some(evictor) => {
                let keep = usize::try_from(evictor.max_count).unwrap_or(usize::MAX);
                Arc::new(move |ctx, output| {
                    let func = Evicting {
                        inner: make(),
                        keep,
                        _type: PhantomData,
                    };
                    instantiate::<K, T, O, A, _>(ctx, output, &params, func)
                })
            }
            None => Arc::new(move |ctx, output| {
                instantiate::<K, T, O, A, F>(ctx, output, &params, make())
            }),
        };
        let id = self.stream.add_node::<O>(
            &name,
            "",
            NodeKind::Window,
            build,
            Some(hash_fn(self.key.clone())),
            None,
        );
        if let Some(tag) = &self.late_tag {
            self.stream.env.borrow_mut().nodes[id as usize]
                .side_outputs
                .push(tag.clone());
        }
        DataStream::new(self.stream.env.clone(), id)
    }

    /// Combines each window's records with `f` (incrementally: one value per window); emits
    /// the result when the window fires. Flink: `reduce`.
    pub fn reduce<F>(&self, f: F) -> DataStream<T>
    where
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.build("Reduce", move || ReduceFn {
            f: f.clone(),
            stage: PassThrough,
            _type: PhantomData,
        })
    }

    /// Sums the field `field` points at per window; the other fields come from the window's
    /// first record (as Flink's windowed `sum`).
    pub fn sum<N: Numeric>(&self, field: fn(&mut T) -> &mut N) -> DataStream<T> {
        let f = Arc::new(move |mut acc: T, mut value: T| {
            let add = *field(&mut value);
            field(&mut acc).add_assign(add);
            acc
        });
        self.build("SumAggregator", move || ReduceFn {
            f: f.clone(),
            stage: PassThrough,
            _type: PhantomData,
        })
    }

    /// Aggregates each window incrementally with `agg`; emits `agg.get_result` when the window
    /// fires. Flink: `aggregate`.
    pub fn aggregate<AF: AggregateFunction<T>>(&self, agg: AF) -> DataStream<AF::Output> {
        let agg = Arc::new(agg);
        self.build("Aggregate", move || AggregateFn {
            agg: agg.clone(),
            stage: PassThrough,
        })
    }

    /// Evaluates each window with all its records when it fires. `f` is cloned once per
    /// subtask. Flink: `process`.
    pub fn process<O, P>(&self, f: P) -> DataStream<O>
    where
        O: Record,
        P: ProcessWindowFunction<T, O, K> + Clone + Sync,
    {
        self.build("ProcessWindowFunction", move || ProcessFn {
            f: f.clone(),
            _type: PhantomData,
        })
    }

    /// Reduces incrementally with `reduce`, then hands the window's single result to `process`
    /// (with the window's context). Flink: `reduce(ReduceFunction, ProcessWindowFunction)`.
    pub fn reduce_with<F, O, P>(&self, reduce: F, process: P) -> DataStream<O>
    where
        F: Fn(T, T) -> T + Send + Sync + 'static,
        O: Record,
        P: ProcessWindowFunction<T, O, K> + Clone + Sync,
    {
        let f = Arc::new(reduce);
        self.build("Reduce, ProcessWindowFunction", move || ReduceFn {
            f: f.clone(),
            stage: WithProcess(process.clone()),
            _type: PhantomData,
        })
    }

    /// Aggregates incrementally with `agg`, then hands the window's single result to
    /// `process`. Flink: `aggregate(AggregateFunction, ProcessWindowFunction)`.
    pub fn aggregate_with<AF, O, P>(&self, agg: AF, process: P) -> DataStream<O>
    where
        AF: AggregateFunction<T>,
        O: Record,
        P: ProcessWindowFunction<AF::Output, O, K> + Clone + Sync,
    {
        let agg = Arc::new(agg);
        self.build("Aggregate, ProcessWindowFunction", move || AggregateFn {
            agg: agg.clone(),
            stage: WithProcess(process.clone()),
        })
    }
}
