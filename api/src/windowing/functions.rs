//! Window functions: the user-facing [`AggregateFunction`] and [`ProcessWindowFunction`], and
//! how the window operator keeps and evaluates a window's contents for each of them.

use std::marker::PhantomData;
use std::sync::Arc;

use super::TimeWindow;
use crate::{Collector, Record};

/// Aggregates a window incrementally: one accumulator per window and key, updated by every
/// element. Flink: `AggregateFunction`.
///
/// ```
/// use rflink::windowing::AggregateFunction;
///
/// /// The average of the second field.
/// struct Average;
///
/// impl AggregateFunction<(String, u64)> for Average {
///     type Acc = (u64, u64);
///     type Output = f64;
///     fn create_accumulator(&self) -> (u64, u64) {
///         (0, 0)
///     }
///     fn add(&self, value: (String, u64), acc: &mut (u64, u64)) {
///         acc.0 += value.1;
///         acc.1 += 1;
///     }
///     fn get_result(&self, acc: &(u64, u64)) -> f64 {
///         acc.0 as f64 / acc.1 as f64
///     }
///     fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
///         (a.0 + b.0, a.1 + b.1)
///     }
/// }
/// ```
pub trait AggregateFunction<IN>: Send + Sync + 'static {
    /// The accumulator (kept in the window's state and in snapshots).
    type Acc: Record;
    /// The result emitted when the window fires.
    type Output: Record;
    /// A fresh, empty accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Adds `value` to `acc`.
    fn add(&self, value: IN, acc: &mut Self::Acc);
    /// The window's result from its accumulator.
    fn get_result(&self, acc: &Self::Acc) -> Self::Output;
    /// Combines two accumulators (when session windows merge).
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

/// What a [`ProcessWindowFunction`] knows about the window it evaluates. Flink:
/// `ProcessWindowFunction.Context`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowContext {
    pub(crate) window: TimeWindow,
    pub(crate) watermark: i64,
    pub(crate) processing_time: i64,
}

impl WindowContext {
    /// The window being evaluated.
    pub fn window(&self) -> TimeWindow {
        self.window
    }

    /// The operator's current watermark.
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// The current processing time.
    pub fn current_processing_time(&self) -> i64 {
        self.processing_time
    }
}

/// Evaluates a window with all its elements (or, after
/// [`reduce_with`](super::WindowedStream::reduce_with) /
/// [`aggregate_with`](super::WindowedStream::aggregate_with), with the single pre-aggregated
/// value). Flink: `ProcessWindowFunction`.
///
/// Closures `FnMut(&K, &WindowContext, &[IN], &mut dyn Collector<OUT>)` implement it.
pub trait ProcessWindowFunction<IN, OUT, K>: Send + 'static {
    /// Evaluates the window `ctx.window()` of `key`, emitting into `out`.
    fn process(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        elements: &[IN],
        out: &mut dyn Collector<OUT>,
    );
}

impl<IN, OUT, K, F> ProcessWindowFunction<IN, OUT, K> for F
where
    F: FnMut(&K, &WindowContext, &[IN], &mut dyn Collector<OUT>) + Send + 'static,
{
    fn process(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        elements: &[IN],
        out: &mut dyn Collector<OUT>,
    ) {
        self(key, ctx, elements, out)
    }
}

/// A window's contents handed to [`WindowFunction::emit`]: owned when the window is cleared
/// right after, else borrowed from the state.
pub(crate) enum Contents<'a, A> {
    Owned(A),
    Shared(&'a mut A),
}

/// How the window operator keeps a window's contents and evaluates them.
pub(crate) trait WindowFunction<K, T, O>: Send + 'static {
    /// The per-window state.
    type Acc: Record;
    /// The state of a window after its first element.
    fn create(&self, value: T) -> Self::Acc;
    /// Adds an element.
    fn add(&self, acc: &mut Self::Acc, value: T);
    /// Adds the contents of a merged-away window to `target`.
    fn merge(&self, target: &mut Self::Acc, source: Self::Acc);
    /// Evaluates the window, emitting into `out` (whose timestamp the operator has set).
    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        contents: Contents<'_, Self::Acc>,
        out: &mut dyn Collector<O>,
    );
}

/// What follows an incremental aggregation: passing the result on, or a process function.
pub(crate) trait ResultStage<K, R, O>: Send + 'static {
    fn apply(&mut self, key: &K, ctx: &WindowContext, value: R, out: &mut dyn Collector<O>);
}

/// Emits the aggregate itself.
pub(crate) struct PassThrough;

impl<K, R> ResultStage<K, R, R> for PassThrough {
    #[inline]
    fn apply(&mut self, _: &K, _: &WindowContext, value: R, out: &mut dyn Collector<R>) {
        out.collect(value);
    }
}

/// Hands the aggregate to a process function (`reduce_with`, `aggregate_with`).
pub(crate) struct WithProcess<P>(pub(crate) P);

impl<K, R, O, P: ProcessWindowFunction<R, O, K>> ResultStage<K, R, O> for WithProcess<P> {
    fn apply(&mut self, key: &K, ctx: &WindowContext, value: R, out: &mut dyn Collector<O>) {
        self.0.process(key, ctx, std::slice::from_ref(&value), out);
    }
}

/// `reduce` (and `sum`): one value per window.
pub(crate) struct ReduceFn<T, F, S> {
    pub(crate) f: Arc<F>,
    pub(crate) stage: S,
    pub(crate) _type: PhantomData<fn(T)>,
}

impl<K, T, O, F, S> WindowFunction<K, T, O> for ReduceFn<T, F, S>
where
    T: Record,
    F: Fn(T, T) -> T + Send + Sync + 'static,
    S: ResultStage<K, T, O>,
{
    type Acc = Option<T>;

    #[inline]
    fn create(&self, value: T) -> Option<T> {
        Some(value)
    }

    #[inline]
    fn add(&self, acc: &mut Option<T>, value: T) {
        *acc = Some(match acc.take() {
            Some(current) => (self.f)(current, value),
            None => value,
        });
    }

    fn merge(&self, target: &mut Option<T>, source: Option<T>) {
        if let Some(source) = source {
            self.add(target, source);
        }
    }

    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        contents: Contents<'_, Option<T>>,
        out: &mut dyn Collector<O>,
    ) {
        let value = match contents {
            Contents::Owned(value) => value,
            Contents::Shared(value) => value.clone(),
        };
        if let Some(value) = value {
            self.stage.apply(key, ctx, value, out);
        }
    }
}

/// `aggregate`: one accumulator per window.
pub(crate) struct AggregateFn<A, S> {
    pub(crate) agg: Arc<A>,
    pub(crate) stage: S,
}

impl<K, T, O, A, S> WindowFunction<K, T, O> for AggregateFn<A, S>
where
    A: AggregateFunction<T>,
    S: ResultStage<K, A::Output, O>,
{
    type Acc = A::Acc;

    #[inline]
    fn create(&self, value: T) -> A::Acc {
        let mut acc = self.agg.create_accumulator();
        self.agg.add(value, &mut acc);
        acc
    }

    #[inline]
    fn add(&self, acc: &mut A::Acc, value: T) {
        self.agg.add(value, acc);
    }

    fn merge(&self, target: &mut A::Acc, source: A::Acc) {
        let current = std::mem::replace(target, self.agg.create_accumulator());
        *target = self.agg.merge(current, source);
    }

    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        contents: Contents<'_, A::Acc>,
        out: &mut dyn Collector<O>,
    ) {
        let result = match contents {
            Contents::Owned(acc) => self.agg.get_result(&acc),
            Contents::Shared(acc) => self.agg.get_result(acc),
        };
        self.stage.apply(key, ctx, result, out);
    }
}

/// `process`: the window's elements, in arrival order.
pub(crate) struct ProcessFn<P, T> {
    pub(crate) f: P,
    pub(crate) _type: PhantomData<fn(T)>,
}

impl<K, T, O, P> WindowFunction<K, T, O> for ProcessFn<P, T>
where
    T: Record,
    P: ProcessWindowFunction<T, O, K>,
{
    type Acc = Vec<T>;

    fn create(&self, value: T) -> Vec<T> {
        vec![value]
    }

    fn add(&self, acc: &mut Vec<T>, value: T) {
        acc.push(value);
    }

    fn merge(&self, target: &mut Vec<T>, source: Vec<T>) {
        target.extend(source);
    }

    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        contents: Contents<'_, Vec<T>>,
        out: &mut dyn Collector<O>,
    ) {
        match contents {
            Contents::Owned(elements) => self.f.process(key, ctx, &elements, out),
            Contents::Shared(elements) => self.f.process(key, ctx, elements, out),
        }
    }
}

/// A window with a [`CountEvictor`](super::CountEvictor): keeps the elements; when the window
/// fires, drops all but the last `keep` for good and evaluates `inner` over the rest. Flink:
/// `EvictingWindowOperator`.
pub(crate) struct Evicting<F, T> {
    pub(crate) inner: F,
    pub(crate) keep: usize,
    pub(crate) _type: PhantomData<fn(T)>,
}

impl<K, T, O, F> WindowFunction<K, T, O> for Evicting<F, T>
where
    T: Record,
    F: WindowFunction<K, T, O>,
{
    type Acc = Vec<T>;

    fn create(&self, value: T) -> Vec<T> {
        vec![value]
    }

    fn add(&self, acc: &mut Vec<T>, value: T) {
        acc.push(value);
    }

    fn merge(&self, target: &mut Vec<T>, source: Vec<T>) {
        target.extend(source);
    }

    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        contents: Contents<'_, Vec<T>>,
        out: &mut dyn Collector<O>,
    ) {
        let keep = self.keep;
        let evict = |elements: &mut Vec<T>| {
            if elements.len() > keep {
                elements.drain(..elements.len() - keep);
            }
        };
        let mut acc: Option<F::Acc> = None;
        let mut add = |value: T| match &mut acc {
            Some(acc) => self.inner.add(acc, value),
            None => acc = Some(self.inner.create(value)),
        };
        match contents {
            Contents::Owned(mut elements) => {
                evict(&mut elements);
                elements.into_iter().for_each(&mut add);
            }
            Contents::Shared(elements) => {
                evict(elements);
                elements.iter().cloned().for_each(&mut add);
            }
        }
        if let Some(acc) = acc {
            self.inner.emit(key, ctx, Contents::Owned(acc), out);
        }
    }
}
