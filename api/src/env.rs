//! [`StreamExecutionEnvironment`]: where a job's build function creates sources and sets
//! job-wide options.
//!
//! Building a graph does no I/O and calls no user function: sources open files or sockets only
//! when a subtask opens. The same build function with the same arguments therefore yields the same
//! [`StreamGraph`] (and fingerprint) on the client and on every TaskExecutor.

use std::any::type_name;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::datastream::DataStream;
use crate::graph::{
    ChainingStrategy, GraphParts, NodeImpl, NodeKind, RuntimeMode, StreamEdge, StreamGraph,
    StreamNode,
};
use crate::operators::{
    fan_out, unerase, NetworkOutputBuilder, NodeLogic, SourceBuilder, SourceDriver, TypedSource,
};
use crate::sources::{
    CollectionSource, GeneratorSource, SequenceSource, SocketTextSource, TextFileSource,
};
use crate::{JobError, Partitioner, Record, SourceFunction, SplitMix64};

/// Flink's default max parallelism floor.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// The default size of a text file split (4 MiB).
pub const DEFAULT_SPLIT_SIZE: u64 = 4 << 20;

/// The job configuration key of the checkpoint interval (Flink's
/// `execution.checkpointing.interval`), set by
/// [`StreamExecutionEnvironment::enable_checkpointing`].
pub const CHECKPOINTING_INTERVAL_KEY: &str = "execution.checkpointing.interval";

pub(crate) struct NodeSpec {
    pub(crate) name: String,
    pub(crate) name_prefix: &'static str,
    pub(crate) uid: Option<String>,
    pub(crate) kind: NodeKind,
    pub(crate) parallelism: Option<u32>,
    pub(crate) max_parallelism: Option<u32>,
    pub(crate) chaining: ChainingStrategy,
    pub(crate) bounded: Option<bool>,
    pub(crate) non_parallel: bool,
    pub(crate) input_type: Option<&'static str>,
    pub(crate) output_type: &'static str,
    pub(crate) imp: NodeImpl,
    /// The tags of the side outputs the operator emits (a window's late data).
    pub(crate) side_outputs: Vec<String>,
}

pub(crate) struct EdgeSpec {
    pub(crate) source: u32,
    pub(crate) target: u32,
    pub(crate) partitioner: Option<Partitioner>,
    pub(crate) input_index: u32,
    pub(crate) output: NetworkOutputBuilder,
    /// The edge carries the source's side output of this tag, not its main output.
    pub(crate) side: Option<SideOutput>,
}

/// A side output an edge carries: the tag and how to combine its consumers' outputs.
#[derive(Clone)]
pub(crate) struct SideOutput {
    pub(crate) tag: String,
    pub(crate) fan_out: crate::operators::FanOutFn,
}

impl std::fmt::Debug for SideOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SideOutput").field(&self.tag).finish()
    }
}

/// The environment's mutable state, shared by every `DataStream` of the job.
pub(crate) struct Builder {
    pub(crate) job_name: String,
    pub(crate) parallelism: u32,
    pub(crate) max_parallelism: Option<u32>,
    pub(crate) chaining_enabled: bool,
    pub(crate) runtime_mode: RuntimeMode,
    pub(crate) job_config: BTreeMap<String, String>,
    pub(crate) nodes: Vec<NodeSpec>,
    pub(crate) edges: Vec<EdgeSpec>,
    pub(crate) errors: Vec<String>,
}

impl Builder {
    pub(crate) fn add_node(&mut self, spec: NodeSpec) -> u32 {
        self.nodes.push(spec);
        (self.nodes.len() - 1) as u32
    }

    pub(crate) fn add_edge(
        &mut self,
        source: u32,
        target: u32,
        partitioner: Option<Partitioner>,
        output: NetworkOutputBuilder,
        side: Option<SideOutput>,
    ) {
        let input_index = self.edges.iter().filter(|e| e.target == target).count() as u32;
        self.edges.push(EdgeSpec {
            source,
            target,
            partitioner,
            input_index,
            output,
            side,
        });
    }
}

/// Flink's `computeDefaultMaxParallelism`: `1.5 × parallelism` rounded up to a power of two,
/// within `128..=32768`.
fn default_max_parallelism(parallelism: u32) -> u32 {
    let wanted = u64::from(parallelism) + u64::from(parallelism) / 2;
    wanted.next_power_of_two().clamp(
        u64::from(DEFAULT_MAX_PARALLELISM),
        u64::from(crate::hash::UPPER_BOUND_MAX_PARALLELISM),
    ) as u32
}

/// The entry point of a job's build function (Flink's `StreamExecutionEnvironment`).
///
/// Defaults: parallelism 1, max parallelism 128 (Flink's default rule: `1.5 × parallelism`
/// rounded up to a power of two, at least 128), chaining enabled, runtime mode
/// [`RuntimeMode::Automatic`], job name `"rflink job"`.
pub struct StreamExecutionEnvironment {
    builder: Rc<RefCell<Builder>>,
}

impl std::fmt::Debug for StreamExecutionEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.builder.borrow();
        f.debug_struct("StreamExecutionEnvironment")
            .field("job_name", &b.job_name)
            .field("parallelism", &b.parallelism)
            .field("nodes", &b.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Default for StreamExecutionEnvironment {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamExecutionEnvironment {
    /// A fresh environment with the defaults.
    pub fn new() -> Self {
        StreamExecutionEnvironment {
            builder: Rc::new(RefCell::new(Builder {
                job_name: "rflink job".to_owned(),
                parallelism: 1,
                max_parallelism: None,
                chaining_enabled: true,
                runtime_mode: RuntimeMode::Automatic,
                job_config: BTreeMap::new(),
                nodes: Vec::new(),
                edges: Vec::new(),
                errors: Vec::new(),
            })),
        }
    }

    /// Sets the default parallelism of operators that do not set their own.
    pub fn set_parallelism(&mut self, parallelism: u32) -> &mut Self {
        self.builder.borrow_mut().parallelism = parallelism;
        self
    }

    /// The default parallelism.
    pub fn parallelism(&self) -> u32 {
        self.builder.borrow().parallelism
    }

    /// Sets the default max parallelism (number of key groups) of operators.
    pub fn set_max_parallelism(&mut self, max_parallelism: u32) -> &mut Self {
        self.builder.borrow_mut().max_parallelism = Some(max_parallelism);
        self
    }

    /// The default max parallelism for operators of the default parallelism.
    pub fn max_parallelism(&self) -> u32 {
        let b = self.builder.borrow();
        b.max_parallelism
            .unwrap_or_else(|| default_max_parallelism(b.parallelism))
    }

    /// Turns operator chaining off for the whole job.
    pub fn disable_operator_chaining(&mut self) -> &mut Self {
        self.builder.borrow_mut().chaining_enabled = false;
        self
    }

    /// Sets the job's name.
    pub fn set_job_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.builder.borrow_mut().job_name = name.into();
        self
    }

    /// The job's name.
    pub fn job_name(&self) -> String {
        self.builder.borrow().job_name.clone()
    }

    /// Sets the runtime mode (see [`RuntimeMode`]).
    pub fn set_runtime_mode(&mut self, mode: RuntimeMode) -> &mut Self {
        self.builder.borrow_mut().runtime_mode = mode;
        self
    }

    /// Runs the job with exactly-once checkpoints every `interval` (Flink's
    /// `enableCheckpointing`): sets the job configuration entry
    /// [`CHECKPOINTING_INTERVAL_KEY`] to `"{milliseconds} ms"`. Keyed aggregations then need
    /// streaming emission (a bounded job in runtime mode AUTOMATIC emits batch-style: set
    /// [`RuntimeMode::Streaming`]).
    pub fn enable_checkpointing(&mut self, interval: std::time::Duration) -> &mut Self {
        let value = format!("{} ms", interval.as_millis());
        self.configure(CHECKPOINTING_INTERVAL_KEY, &value)
    }

    /// Sets a job-level configuration entry (for example `restart-strategy.type`), handed to
    /// the runtime with the job. The job configuration is not part of the plan's fingerprint.
    pub fn configure(&mut self, key: &str, value: &str) -> &mut Self {
        self.builder
            .borrow_mut()
            .job_config
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Validates the graph built so far and returns it, with its plan and fingerprint.
    ///
    /// # Errors
    /// [`JobError::InvalidGraph`] when a rule is broken: no operators, a parallelism of 0 or
    /// above the max parallelism, a forward edge between different parallelisms, a
    /// non-parallel source with parallelism other than 1, an unbounded source in BATCH mode, or a
    /// property set on a union or partitioned stream.
    pub fn stream_graph(&self) -> Result<StreamGraph, JobError> {
        let b = self.builder.borrow();
        if let Some(error) = b.errors.first() {
            return Err(JobError::InvalidGraph(error.clone()));
        }
        let mut nodes = Vec::with_capacity(b.nodes.len());
        for (id, spec) in b.nodes.iter().enumerate() {
            let name = format!("{}{}", spec.name_prefix, spec.name);
            let parallelism =
                spec.parallelism
                    .unwrap_or(if spec.non_parallel { 1 } else { b.parallelism });
            if spec.non_parallel && parallelism != 1 {
                return Err(JobError::InvalidGraph(format!(
                    "{name:?} is a non-parallel source; its parallelism must be 1, not {parallelism}"
                )));
            }
            let max_parallelism = spec
                .max_parallelism
                .or(b.max_parallelism)
                .unwrap_or_else(|| default_max_parallelism(parallelism));
            nodes.push(StreamNode {
                id: id as u32,
                name,
                uid: spec.uid.clone(),
                kind: spec.kind,
                parallelism,
                max_parallelism,
                chaining_strategy: spec.chaining,
                bounded: spec.bounded,
                input_type: spec.input_type,
                output_type: spec.output_type,
            });
        }
        for spec in &b.edges {
            if let Some(side) = &spec.side {
                let source = &b.nodes[spec.source as usize];
                if !source.side_outputs.contains(&side.tag) {
                    return Err(JobError::InvalidGraph(format!(
                        "{:?} has no side output {:?}: only a window with \
                         side_output_late_data(..) of that tag emits one",
                        nodes[spec.source as usize].name, side.tag
                    )));
                }
            }
        }
        let mut edges = Vec::with_capacity(b.edges.len());
        let mut explicit_forward = Vec::with_capacity(b.edges.len());
        for spec in &b.edges {
            let equal =
                nodes[spec.source as usize].parallelism == nodes[spec.target as usize].parallelism;
            let partitioner = spec.partitioner.unwrap_or(if equal {
                Partitioner::Forward
            } else {
                Partitioner::Rebalance
            });
            explicit_forward.push(spec.partitioner == Some(Partitioner::Forward));
            edges.push(StreamEdge {
                source: spec.source,
                target: spec.target,
                partitioner,
                input_index: spec.input_index,
            });
        }
        StreamGraph::new(GraphParts {
            job_name: b.job_name.clone(),
            runtime_mode: b.runtime_mode,
            job_config: b.job_config.clone(),
            chaining_enabled: b.chaining_enabled,
            nodes,
            edges,
            impls: b.nodes.iter().map(|n| n.imp.clone()).collect(),
            edge_outputs: b.edges.iter().map(|e| e.output.clone()).collect(),
            edge_sides: b.edges.iter().map(|e| e.side.clone()).collect(),
            explicit_forward,
        })
    }

    fn add_source_node<T: Record>(
        &mut self,
        name: String,
        bounded: bool,
        non_parallel: bool,
        build: SourceBuilder,
    ) -> DataStream<T> {
        let id = self.builder.borrow_mut().add_node(NodeSpec {
            name,
            name_prefix: "Source: ",
            uid: None,
            kind: NodeKind::Source,
            parallelism: None,
            max_parallelism: None,
            chaining: ChainingStrategy::Head,
            bounded: Some(bounded),
            non_parallel,
            input_type: None,
            output_type: type_name::<T>(),
            imp: NodeImpl {
                logic: NodeLogic::Source(build),
                fan_out: fan_out::<T>,
            },
            side_outputs: Vec::new(),
        });
        DataStream::new(self.builder.clone(), id)
    }

    /// Adds a custom source named `name` (shown as `"Source: {name}"`). `factory` creates one
    /// [`SourceFunction`] per subtask; `bounded` tells whether it finishes on its own.
    pub fn add_source<T, S, F>(&mut self, name: &str, bounded: bool, factory: F) -> DataStream<T>
    where
        T: Record,
        S: SourceFunction<T>,
        F: Fn() -> S + Send + Sync + 'static,
    {
        self.add_source_node(
            name.to_owned(),
            bounded,
            false,
            source_builder::<T, S, F>(factory),
        )
    }

    /// A bounded source of `data`. With parallelism `p`, subtask `i` emits the elements at
    /// indices `i, i + p, i + 2p, …` (so with parallelism 1 the order is kept).
    pub fn from_collection<T: Record>(&mut self, data: Vec<T>) -> DataStream<T> {
        let data = Arc::new(Mutex::new(data));
        self.add_source_node(
            "Collection Source".to_owned(),
            true,
            false,
            source_builder::<T, _, _>(move || CollectionSource::new(data.clone())),
        )
    }

    /// A bounded source of the numbers `from..=to` (empty when `to < from`), spread over subtasks
    /// like [`StreamExecutionEnvironment::from_collection`].
    pub fn generate_sequence(&mut self, from: u64, to: u64) -> DataStream<u64> {
        self.add_source_node(
            "Sequence Source".to_owned(),
            true,
            false,
            source_builder::<u64, _, _>(move || SequenceSource::new(from, to)),
        )
    }

    /// A seeded generator: element `n` is `f(&mut rng, n)` with `rng` seeded from `(seed, n)`
    /// ([`SplitMix64::for_index`]), so the elements do not depend on the parallelism. Subtask `i`
    /// produces indices `i, i + p, …`. `count` of `None` makes the source unbounded.
    pub fn from_generator<T, F>(&mut self, count: Option<u64>, seed: u64, f: F) -> DataStream<T>
    where
        T: Record,
        F: Fn(&mut SplitMix64, u64) -> T + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add_source_node(
            "Generator Source".to_owned(),
            count.is_some(),
            false,
            source_builder::<T, _, _>(move || GeneratorSource::new(count, seed, f.clone())),
        )
    }

    /// A bounded source of the lines of a text file, or of every regular file in a directory
    /// (sorted by name, not recursive, names starting with `.` or `_` skipped, as Flink's
    /// `FileInputFormat`).
    ///
    /// Lines are emitted without their trailing `\n` or `\r\n`; invalid UTF-8 is replaced with
    /// U+FFFD (lossy conversion). Files are cut into byte-range splits of
    /// [`DEFAULT_SPLIT_SIZE`]; a line belongs to the split where it starts, and subtask `i` reads
    /// splits `i, i + p, …`, so every line is read exactly once for any parallelism. Lines of
    /// one split keep their order; nothing orders lines across splits. The path is read only
    /// when a subtask opens; a missing path fails that subtask.
    pub fn read_text_file(&mut self, path: impl Into<PathBuf>) -> DataStream<String> {
        self.read_text_file_with_split_size(path, DEFAULT_SPLIT_SIZE)
    }

    /// [`StreamExecutionEnvironment::read_text_file`] with splits of `split_size` bytes (at
    /// least 1).
    pub fn read_text_file_with_split_size(
        &mut self,
        path: impl Into<PathBuf>,
        split_size: u64,
    ) -> DataStream<String> {
        let path = path.into();
        self.add_source_node(
            format!("Text File {}", path.display()),
            true,
            false,
            source_builder::<String, _, _>(move || TextFileSource::new(path.clone(), split_size)),
        )
    }

    /// An unbounded source of the lines read from a TCP socket, ending when the peer closes the
    /// connection. Non-parallel: its parallelism is always 1. Reads time out every 100 ms so
    /// that the task sees cancellation and flushes (the poll returns `Idle`).
    pub fn socket_text_stream(&mut self, host: &str, port: u16) -> DataStream<String> {
        let host = host.to_owned();
        self.add_source_node(
            format!("Socket Stream {host}:{port}"),
            false,
            true,
            source_builder::<String, _, _>(move || SocketTextSource::new(host.clone(), port)),
        )
    }
}

/// A [`SourceBuilder`] that creates one `S` per subtask.
fn source_builder<T, S, F>(factory: F) -> SourceBuilder
where
    T: Record,
    S: SourceFunction<T>,
    F: Fn() -> S + Send + Sync + 'static,
{
    Arc::new(move |ctx, output| {
        let driver: Box<dyn SourceDriver> = Box::new(TypedSource {
            node: ctx.node,
            source: Box::new(factory()),
            runtime: ctx.runtime.clone(),
            out: unerase::<T>(output)?,
            finished: false,
            closed: false,
            timestamps: ctx.timestamps,
            time: ctx.time.clone(),
        });
        Ok(driver)
    })
}
