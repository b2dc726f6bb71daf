//! [`DataStream`], [`KeyedStream`] and [`DataStreamSink`]: the transformations of the API.

use std::any::type_name;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::env::{Builder, NodeSpec, SideOutput};
use crate::graph::{ChainingStrategy, NodeImpl, NodeKind};
use crate::operators::{
    erase, fan_out, hash_fn, head, network_output_builder, summing_output_builder, unerase,
    BorrowedKey, FilterOp, FlatMapOp, HashFn, KeyFn, MapOp, NetworkOutputBuilder, NodeLogic,
    OperatorBuilder, OwnedKey, ProcessOp, ReduceOp, SinkOp, SumOp,
};
use crate::sinks::{CollectSink, PrintSink, TextFileSink};
use crate::state::StateStores;
use crate::time::{TimestampsAndWatermarksOp, WatermarkStrategy};
use crate::{Collector, Key, KeyedProcessFunction, Numeric, Partitioner, Record, SinkFunction};

#[derive(Debug, Clone)]
struct StreamInput {
    node: u32,
    partitioner: Option<Partitioner>,
    /// A side output of `node` instead of its main output.
    side: Option<SideOutput>,
}

/// Names a side output of type `X` (late records of a window, for example). Flink: `OutputTag`.
pub struct OutputTag<X> {
    id: String,
    _type: PhantomData<fn() -> X>,
}

impl<X> OutputTag<X> {
    /// A tag named `id` (unique among the side outputs of one operator).
    pub fn new(id: impl Into<String>) -> Self {
        OutputTag {
            id: id.into(),
            _type: PhantomData,
        }
    }

    /// The tag's name.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl<X> Clone for OutputTag<X> {
    fn clone(&self) -> Self {
        OutputTag::new(self.id.clone())
    }
}

impl<X> std::fmt::Debug for OutputTag<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputTag")
            .field("id", &self.id)
            .field("type", &type_name::<X>())
            .finish()
    }
}

/// A stream of `T` records: the output of an operator, a union of streams, or a stream with a
/// chosen partitioning.
///
/// Transformations take `&self`, so one stream may feed several operators (each gets every
/// record). Setters (`name`, `set_parallelism`, …) take and return the stream and apply to the
/// operator that produces it; on a union or partitioned stream they make
/// [`crate::StreamExecutionEnvironment::stream_graph`] fail.
pub struct DataStream<T> {
    pub(crate) env: Rc<RefCell<Builder>>,
    inputs: Vec<StreamInput>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        DataStream {
            env: self.env.clone(),
            inputs: self.inputs.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for DataStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStream")
            .field("type", &type_name::<T>())
            .field("inputs", &self.inputs)
            .finish()
    }
}

macro_rules! node_setters {
    () => {
        /// Sets the operator's display name.
        pub fn name(self, name: &str) -> Self {
            self.with_node("name", |n| n.name = name.to_owned())
        }

        /// Sets the operator's uid (part of the fingerprint).
        pub fn uid(self, uid: &str) -> Self {
            self.with_node("uid", |n| n.uid = Some(uid.to_owned()))
        }

        /// Sets the operator's parallelism.
        pub fn set_parallelism(self, parallelism: u32) -> Self {
            self.with_node("parallelism", |n| n.parallelism = Some(parallelism))
        }

        /// Sets the operator's max parallelism (number of key groups).
        pub fn set_max_parallelism(self, max_parallelism: u32) -> Self {
            self.with_node("max parallelism", |n| {
                n.max_parallelism = Some(max_parallelism)
            })
        }

        /// Never chains the operator, neither to its input nor to its outputs.
        pub fn disable_chaining(self) -> Self {
            self.with_node("chaining", |n| n.chaining = ChainingStrategy::Never)
        }

        /// Starts a new chain at the operator (its outputs may still chain to it).
        pub fn start_new_chain(self) -> Self {
            self.with_node("chaining", |n| n.chaining = ChainingStrategy::Head)
        }
    };
}

impl<T: Record> DataStream<T> {
    pub(crate) fn new(env: Rc<RefCell<Builder>>, node: u32) -> Self {
        DataStream {
            env,
            inputs: vec![StreamInput {
                node,
                partitioner: None,
                side: None,
            }],
            _type: PhantomData,
        }
    }

    fn with_node(self, what: &str, set: impl FnOnce(&mut NodeSpec)) -> Self {
        {
            let mut b = self.env.borrow_mut();
            match self.inputs.as_slice() {
                [StreamInput {
                    node,
                    partitioner: None,
                    side: None,
                }] => set(&mut b.nodes[*node as usize]),
                _ => b.errors.push(format!(
                    "{what} can only be set on an operator's output, not on a union or partitioned stream"
                )),
            }
        }
        self
    }

    node_setters!();

    /// The id of the node producing this stream; `None` for a union or partitioned stream.
    pub fn node_id(&self) -> Option<u32> {
        match self.inputs.as_slice() {
            [StreamInput {
                node,
                partitioner: None,
                side: None,
            }] => Some(*node),
            _ => None,
        }
    }

    fn add_operator<O: Record>(
        &self,
        name: &str,
        kind: NodeKind,
        build: OperatorBuilder,
        hash: Option<HashFn<T>>,
    ) -> DataStream<O> {
        let id = self.add_node::<O>(name, "", kind, build, hash, None);
        DataStream::new(self.env.clone(), id)
    }

    pub(crate) fn add_node<O: Record>(
        &self,
        name: &str,
        name_prefix: &'static str,
        kind: NodeKind,
        build: OperatorBuilder,
        hash: Option<HashFn<T>>,
        edge_output: Option<NetworkOutputBuilder>,
    ) -> u32 {
        let mut b = self.env.borrow_mut();
        let id = b.add_node(NodeSpec {
            name: name.to_owned(),
            name_prefix,
            uid: None,
            kind,
            parallelism: None,
            max_parallelism: None,
            chaining: ChainingStrategy::Always,
            bounded: None,
            non_parallel: false,
            input_type: Some(type_name::<T>()),
            output_type: type_name::<O>(),
            imp: NodeImpl {
                logic: NodeLogic::Operator {
                    build,
                    head: head::<T>,
                },
                fan_out: fan_out::<O>,
            },
            side_outputs: Vec::new(),
        });
        for input in &self.inputs {
            let partitioner = if hash.is_some() {
                Some(Partitioner::Hash)
            } else {
                input.partitioner
            };
            let output = match &edge_output {
                Some(output) => output.clone(),
                None => network_output_builder::<T>(hash.clone()),
            };
            b.add_edge(input.node, id, partitioner, output, input.side.clone());
        }
        id
    }

    /// Gives every record a timestamp and the stream watermarks, by `strategy` (Flink's
    /// `assignTimestampsAndWatermarks`). Runs chained to its input; watermarks are generated
    /// every `pipeline.auto-watermark-interval` (job configuration, default 200 ms) and on the
    /// records, and the operator's output ends with the maximum watermark when its input ends.
    pub fn assign_timestamps_and_watermarks(
        &self,
        strategy: WatermarkStrategy<T>,
    ) -> DataStream<T> {
        let build: OperatorBuilder = Arc::new(move |ctx, output| {
            Ok(erase::<T>(Box::new(TimestampsAndWatermarksOp::new(
                &strategy,
                ctx.auto_watermark_interval,
                ctx.time.clone(),
                ctx.errors.clone(),
                unerase::<T>(output)?,
            ))))
        });
        self.add_operator(
            "Timestamps/Watermarks",
            NodeKind::TimestampsAndWatermarks,
            build,
            None,
        )
    }

    /// The side output `tag` of the operator producing this stream (for example the late
    /// records of a window with
    /// [`side_output_late_data`](crate::windowing::WindowedStream::side_output_late_data)).
    /// Flink: `getSideOutput`.
    pub fn get_side_output<X: Record>(&self, tag: &OutputTag<X>) -> DataStream<X> {
        let node = match self.node_id() {
            Some(node) => node,
            None => {
                self.env.borrow_mut().errors.push(
                    "a side output can only be taken from an operator's output, not from a union \
                     or partitioned stream"
                        .to_owned(),
                );
                self.inputs.first().map_or(0, |i| i.node)
            }
        };
        DataStream {
            env: self.env.clone(),
            inputs: vec![StreamInput {
                node,
                partitioner: None,
                side: Some(SideOutput {
                    tag: tag.id.clone(),
                    fan_out: fan_out::<X>,
                }),
            }],
            _type: PhantomData,
        }
    }

    /// Applies `f` to every record.
    pub fn map<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Record,
        F: Fn(T) -> O + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let build: OperatorBuilder = Arc::new(move |_ctx, output| {
            Ok(erase::<T>(Box::new(MapOp {
                f: f.clone(),
                out: unerase::<O>(output)?,
                _in: PhantomData,
            })))
        });
        self.add_operator("Map", NodeKind::Map, build, None)
    }

    /// Emits any number of records per input record through the given collector.
    pub fn flat_map<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Record,
        F: Fn(T, &mut dyn Collector<O>) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let build: OperatorBuilder = Arc::new(move |_ctx, output| {
            Ok(erase::<T>(Box::new(FlatMapOp {
                f: f.clone(),
                out: unerase::<O>(output)?,
                _in: PhantomData,
            })))
        });
        self.add_operator("Flat Map", NodeKind::FlatMap, build, None)
    }

    /// Keeps the records for which `f` is true.
    pub fn filter<F>(&self, f: F) -> DataStream<T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let build: OperatorBuilder = Arc::new(move |_ctx, output| {
            Ok(erase::<T>(Box::new(FilterOp {
                f: f.clone(),
                out: unerase::<T>(output)?,
            })))
        });
        self.add_operator("Filter", NodeKind::Filter, build, None)
    }

    /// Partitions the stream by the key `f` extracts: records with equal keys go to the same
    /// subtask of the next (keyed) operator.
    pub fn key_by<K, F>(&self, f: F) -> KeyedStream<T, K>
    where
        K: Key,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        KeyedStream {
            stream: self.clone(),
            key: Arc::new(OwnedKey(f)),
        }
    }

    /// Like [`key_by`](Self::key_by), with a key borrowed from the record (`|pair| &pair.0`):
    /// partitioning and keyed operators then look the key up without copying it, which for
    /// `String` keys saves two allocations per record. The key is copied only when a keyed
    /// operator stores it for the first time.
    pub fn key_by_ref<K, F>(&self, f: F) -> KeyedStream<T, K>
    where
        K: Key,
        F: for<'a> Fn(&'a T) -> &'a K + Send + Sync + 'static,
    {
        KeyedStream {
            stream: self.clone(),
            key: Arc::new(BorrowedKey(f)),
        }
    }

    /// Merges this stream with `others` (all of the same type; a `Vec`, an array or a slice of
    /// streams): the next operator has one input edge per merged stream.
    pub fn union<I>(&self, others: I) -> DataStream<T>
    where
        I: IntoIterator,
        I::Item: std::borrow::Borrow<DataStream<T>>,
    {
        let mut union = self.clone();
        for other in others {
            let other: &DataStream<T> = std::borrow::Borrow::borrow(&other);
            if !Rc::ptr_eq(&self.env, &other.env) {
                self.env
                    .borrow_mut()
                    .errors
                    .push("union of streams from different environments".to_owned());
                continue;
            }
            union.inputs.extend(other.inputs.iter().cloned());
        }
        union
    }

    fn partition(&self, partitioner: Partitioner) -> DataStream<T> {
        let mut stream = self.clone();
        for input in &mut stream.inputs {
            input.partitioner = Some(partitioner);
        }
        stream
    }

    /// Distributes records round robin over the next operator's subtasks.
    pub fn rebalance(&self) -> DataStream<T> {
        self.partition(Partitioner::Rebalance)
    }

    /// Sends records of subtask `i` to subtask `i` of the next operator (parallelism must be
    /// equal, else building the graph fails).
    pub fn forward(&self) -> DataStream<T> {
        self.partition(Partitioner::Forward)
    }

    /// Sends every record to every subtask of the next operator.
    pub fn broadcast(&self) -> DataStream<T> {
        self.partition(Partitioner::Broadcast)
    }

    /// Sends each record to a pseudo-random subtask of the next operator.
    pub fn shuffle(&self) -> DataStream<T> {
        self.partition(Partitioner::Shuffle)
    }

    fn add_sink_node<S, F>(&self, name: &str, factory: F) -> DataStreamSink
    where
        S: SinkFunction<T>,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let build: OperatorBuilder = Arc::new(move |ctx, _output| {
            Ok(erase::<T>(Box::new(SinkOp {
                node: ctx.node,
                sink: Box::new(factory()),
                runtime: ctx.runtime.clone(),
                errors: ctx.errors.clone(),
                failed: false,
                closed: false,
            })))
        });
        let id = self.add_node::<()>(name, "Sink: ", NodeKind::Sink, build, None, None);
        DataStreamSink {
            env: self.env.clone(),
            node: id,
        }
    }

    /// Adds a custom sink named `name` (shown as `"Sink: {name}"`); `factory` creates one
    /// [`SinkFunction`] per subtask.
    pub fn add_sink<S, F>(&self, name: &str, factory: F) -> DataStreamSink
    where
        S: SinkFunction<T>,
        F: Fn() -> S + Send + Sync + 'static,
    {
        self.add_sink_node(name, factory)
    }

    /// Prints every record to stdout with `Display`, prefixed with `"{subtask + 1}> "` when the
    /// sink's parallelism is above 1 (as Flink's `print()`).
    pub fn print(&self) -> DataStreamSink
    where
        T: std::fmt::Display,
    {
        self.add_sink_node("Print to Std. Out", PrintSink::new)
    }

    /// Writes every record with `Display`, one per line. With sink parallelism 1, `path` is the
    /// file; above 1, `path` is a directory holding files `1`..`p` (one per subtask, as Flink's
    /// `writeAsText`). Existing files are overwritten. Output is buffered and flushed at end of
    /// input; I/O errors fail the task.
    ///
    /// When the job runs with checkpoints ([`crate::RuntimeContext::checkpointing`]) the sink is
    /// exactly-once, a two-phase commit like Flink's `FileSink`: `path` is always a directory
    /// (created if missing); subtask `i` writes hidden in-progress files
    /// `.part-{i}-{seq}.{attempt}.inprogress`, each closed and fsynced at a checkpoint and
    /// renamed to `part-{i}-{seq}` once that checkpoint is complete; the last records are
    /// committed by the final checkpoint after the end of input. Files of a failed attempt that
    /// no checkpoint holds are deleted when the subtask opens again. Read the committed output
    /// with [`crate::sinks::read_committed_parts`].
    pub fn write_as_text(&self, path: impl Into<PathBuf>) -> DataStreamSink
    where
        T: std::fmt::Display,
    {
        let path = path.into();
        self.add_sink_node("Text File", move || TextFileSink::new(path.clone()))
    }

    /// Appends every record to the in-process registry under `name`, to be read with
    /// [`crate::testing::take_collected`]. For tests: it works only when the job runs in this
    /// process.
    pub fn collect(&self, name: &str) -> DataStreamSink {
        let key = name.to_owned();
        self.add_sink_node(&format!("Collect {name}"), move || {
            CollectSink::<T>::new(key.clone())
        })
    }
}

/// A stream partitioned by a key: the input of keyed operators (`reduce`, `sum`, `process`).
///
/// The key selector is stored once and shared by the Hash edge (which picks the subtask) and
/// the keyed operator (which finds the state).
pub struct KeyedStream<T, K> {
    pub(crate) stream: DataStream<T>,
    pub(crate) key: KeyFn<T, K>,
}

impl<T, K> std::fmt::Debug for KeyedStream<T, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStream")
            .field("stream", &self.stream)
            .field("key", &type_name::<K>())
            .finish()
    }
}

impl<T: Record, K: Key> KeyedStream<T, K> {
    /// Combines the records of each key with `f`.
    ///
    /// In streaming emission the updated value is emitted on every record (Flink's streaming
    /// behaviour); in batch emission (runtime mode `Batch`, or `Automatic` with only bounded
    /// sources) each key's final value is emitted once, at end of input.
    pub fn reduce<F>(&self, f: F) -> DataStream<T>
    where
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        let key = self.key.clone();
        let f: Arc<dyn Fn(T, T) -> T + Send + Sync> = Arc::new(f);
        let build: OperatorBuilder = Arc::new(move |ctx, output| {
            Ok(erase::<T>(Box::new(ReduceOp {
                node: ctx.node,
                key: key.clone(),
                f: f.clone(),
                batch: ctx.batch_emission,
                state: FxHashMap::default(),
                out: unerase::<T>(output)?,
            })))
        });
        self.stream.add_operator(
            "Keyed Reduce",
            NodeKind::Reduce,
            build,
            Some(hash_fn(self.key.clone())),
        )
    }

    /// Sums the field `field` points at per key; the other fields come from the key's first
    /// record (as Flink's `sum`). Emission as for [`KeyedStream::reduce`].
    pub fn sum<N: Numeric>(&self, field: fn(&mut T) -> &mut N) -> DataStream<T> {
        let key = self.key.clone();
        let build: OperatorBuilder = Arc::new(move |ctx, output| {
            Ok(erase::<T>(Box::new(SumOp {
                node: ctx.node,
                key: key.clone(),
                field,
                batch: ctx.batch_emission,
                state: FxHashMap::default(),
                out: unerase::<T>(output)?,
            })))
        });
        // With batch emission the exchange into this operator pre-aggregates per key.
        let id = self.stream.add_node::<T>(
            "Keyed Aggregation",
            "",
            NodeKind::Sum,
            build,
            Some(hash_fn(self.key.clone())),
            Some(summing_output_builder::<T, K, N>(self.key.clone(), field)),
        );
        DataStream::new(self.stream.env.clone(), id)
    }

    /// Runs a [`KeyedProcessFunction`] with keyed state. `f` is cloned once per subtask.
    pub fn process<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Record,
        F: KeyedProcessFunction<K, T, O> + Clone + Sync,
    {
        let key = self.key.clone();
        let prototype = Arc::new(f);
        let build: OperatorBuilder = Arc::new(move |ctx, output| {
            Ok(erase::<T>(Box::new(ProcessOp {
                node: ctx.node,
                key: key.clone(),
                f: (*prototype).clone(),
                declared: false,
                stores: StateStores::empty(),
                timers: crate::time::Timers::default(),
                time: ctx.time.clone(),
                runtime: ctx.runtime.clone(),
                errors: ctx.errors.clone(),
                failed: false,
                out: unerase::<O>(output)?,
            })))
        });
        self.stream.add_operator(
            "KeyedProcess",
            NodeKind::Process,
            build,
            Some(hash_fn(self.key.clone())),
        )
    }
}

/// The end of a stream: a sink, with the same per-operator setters as a [`DataStream`].
pub struct DataStreamSink {
    env: Rc<RefCell<Builder>>,
    node: u32,
}

impl std::fmt::Debug for DataStreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStreamSink")
            .field("node", &self.node)
            .finish()
    }
}

impl DataStreamSink {
    fn with_node(self, _what: &str, set: impl FnOnce(&mut NodeSpec)) -> Self {
        set(&mut self.env.borrow_mut().nodes[self.node as usize]);
        self
    }

    node_setters!();

    /// The sink's node id.
    pub fn node_id(&self) -> u32 {
        self.node
    }
}
