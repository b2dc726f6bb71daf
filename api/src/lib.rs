//! # rflink
//!
//! rflink's user-facing API, modelled on Flink's DataStream API: a job is a deterministic
//! *build function* that creates sources, transformations and sinks on a
//! [`StreamExecutionEnvironment`]. Running it yields a [`StreamGraph`]; its [`JobPlan`] fuses
//! operators into chains (vertices) that the runtime deploys. Every TaskExecutor runs the same
//! build function again with the same [`JobArgs`], checks the plan's fingerprint, and calls
//! [`StreamGraph::instantiate`] for the vertex subtask it runs (see [`task`]).
//!
//! ```
//! use rflink::{JobArgs, JobError, StreamExecutionEnvironment};
//!
//! fn word_count(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
//!     env.set_parallelism(args.parse_or("parallelism", 2)?);
//!     env.from_collection(vec!["to be or".to_string(), "not to be".to_string()])
//!         .flat_map(|line: String, out| {
//!             for word in line.split_whitespace() {
//!                 out.collect((word.to_string(), 1u64));
//!             }
//!         })
//!         .key_by(|(word, _): &(String, u64)| word.clone())
//!         .sum(|pair: &mut (String, u64)| &mut pair.1)
//!         .collect("doc-word-count");
//!     Ok(())
//! }
//!
//! let mut registry = rflink::JobRegistry::new();
//! registry.register("wordcount", "counts words", word_count);
//! let graph = registry.build("wordcount", &JobArgs::default()).unwrap();
//! let plan = graph.plan();
//! assert_eq!(plan.vertices.len(), 2); // source -> flat map | keyed aggregation -> sink
//! ```
//!
//! # Crate rules
//! No actix, tokio, networking or runtime dependency. Building a graph does no I/O. Decoding
//! never panics on malformed bytes. Records move by value inside a chain and as typed batches
//! to local consumers; they are serialized with [`Codec`] only for remote consumers.

#![warn(missing_docs)]

pub mod abi;
mod args;
pub mod codec;
mod datastream;
mod env;
mod error;
mod functions;
mod graph;
pub mod hash;
mod operators;
mod registry;
pub mod sinks;
mod snapshot;
mod sources;
mod state;
pub mod task;
pub mod testing;
pub mod time;
pub mod windowing;

pub use args::JobArgs;
pub use codec::{Codec, DecodeError, Key, Record};
pub use datastream::{DataStream, DataStreamSink, KeyedStream, OutputTag};
pub use env::{
    StreamExecutionEnvironment, CHECKPOINTING_INTERVAL_KEY, DEFAULT_MAX_PARALLELISM,
    DEFAULT_SPLIT_SIZE,
};
pub use error::JobError;
pub use functions::{
    Collector, Numeric, RuntimeContext, SinkContext, SinkFunction, SourceContext, SourceFunction,
    SourceStatus, SplitMix64,
};
pub use graph::{
    ChainingStrategy, JobPlan, NodeKind, Partitioner, PlanEdge, PlanVertex, RuntimeMode,
    StreamEdge, StreamGraph, StreamNode,
};
pub use hash::assign_key_to_subtask;
pub use operators::KeySelector;
pub use registry::{BuildFn, JobEntry, JobRegistry};

/// Exports a job library's registry to rflink: put it once in a `cdylib` crate, naming a
/// function that returns the library's [`JobRegistry`]. Defines the symbols
/// `RFLINK_ABI_NOTE` and `rflink_plugin_entry` (see [`abi`]).
///
/// ```ignore
/// fn jobs() -> rflink::JobRegistry {
///     let mut registry = rflink::JobRegistry::new();
///     registry.register("my-job", "what it does", my_job);
///     registry
/// }
/// rflink::export_jobs!(jobs);
/// ```
///
/// The registry function runs once, when a node loads the library; it must not panic (a
/// panic is caught and refuses the library). A library must not set its own `tracing`
/// subscriber or panic hook (the node's are installed for it), start an async runtime, or
/// rely on being unloaded.
#[macro_export]
macro_rules! export_jobs {
    ($registry:path) => {
        /// The ABI note rflink reads from this file before loading it.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub static RFLINK_ABI_NOTE: [u8; $crate::abi::NOTE_LEN] = $crate::abi::NOTE;

        /// rflink's entry point into this library.
        ///
        /// # Safety
        /// Called by rflink only, with its host API and writable out-pointers.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn rflink_plugin_entry(
            host: *const $crate::abi::HostApi,
            api: *mut *const $crate::abi::PluginApi,
            err: *mut $crate::abi::RfBuf,
        ) -> $crate::abi::Status {
            // SAFETY: forwarded from rflink, which passes valid pointers.
            unsafe { $crate::abi::plugin::entry(host, api, err, $registry) }
        }
    };
}
pub use sources::SOCKET_READ_TIMEOUT;
pub use state::{
    EndOfInputContext, KeyedContext, KeyedProcessFunction, MapState, ReducingState, StateRegistry,
    ValueState,
};
