//! The task side: how the runtime runs one subtask of a [`JobPlan`] vertex.
//!
//! The runtime rebuilds the job's [`StreamGraph`] from the same build function and arguments,
//! checks [`JobPlan::fingerprint`], and calls [`StreamGraph::instantiate`] with one
//! [`PartitionWriter`] per output edge of the vertex. It then drives the returned
//! [`VertexInstance`]:
//!
//! ```text
//! open ─► ( poll_source | process_record | process_batch | flush )* ─► end_input ─► close
//! ```
//!
//! `close` is also called after a failure or cancellation, in any state.
//!
//! # Records between tasks
//! For a subpartition whose consumer runs in the same process ([`PartitionWriter::is_local`]),
//! records are handed over as typed batches (`Box<Vec<T>>` of up to
//! [`PartitionWriter::local_batch_records`] records) and reach the consumer through
//! [`VertexInstance::process_batch`] without serialization. Other subpartitions receive each
//! record encoded with [`crate::Codec`], delivered through [`VertexInstance::process_record`].
//!
//! # Errors
//! An error inside the chain (a writer failing, a sink failing) cannot be returned from the
//! `Collector::collect` call where it happens; it is stored, later records are dropped, and the
//! current or next call of every `VertexInstance` method returns it, so the task fails instead of
//! silently going on.

use std::any::Any;

use crate::graph::{JobPlan, PlanVertex, StreamGraph};
use crate::operators::{
    AnyBox, BuildContext, ErrorSlot, InputDriver, NetworkSpec, NodeLogic, SourceDriver,
};
use crate::{JobError, RuntimeContext, SourceStatus};

/// The runtime's end of one output edge of a vertex subtask (one result partition).
pub trait PartitionWriter: Send {
    /// The number of subpartitions: 1 for a Forward edge, the consumer's parallelism otherwise.
    fn num_subpartitions(&self) -> usize;
    /// True when this subpartition's consumer runs in the same process: typed batches are sent
    /// there, no serialization. Queried once per subpartition when the instance opens.
    fn is_local(&self, subpartition: usize) -> bool;
    /// Max records in one typed batch. Queried once when the instance opens.
    fn local_batch_records(&self) -> usize;
    /// Appends one serialized record. May block for a free buffer (backpressure).
    ///
    /// # Errors
    /// A message that fails the task.
    fn write_record(&mut self, subpartition: usize, record: &[u8]) -> Result<(), String>;
    /// Hands over a typed batch (`Box<Vec<T>>` as `Box<dyn Any + Send>`) of `records` records.
    ///
    /// # Errors
    /// A message that fails the task.
    fn write_batch(
        &mut self,
        subpartition: usize,
        batch: Box<dyn Any + Send>,
        records: usize,
    ) -> Result<(), String>;
    /// Pushes out partially filled buffers.
    ///
    /// # Errors
    /// A message that fails the task.
    fn flush(&mut self) -> Result<(), String>;
    /// Called once from [`VertexInstance::end_input`] after the last record and batch of this
    /// output (the place to flush and mark the end of the partition). Defaults to
    /// [`PartitionWriter::flush`].
    ///
    /// # Errors
    /// A message that fails the task.
    fn finish(&mut self) -> Result<(), String> {
        self.flush()
    }
}

/// Which subtask of a vertex to instantiate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexContext {
    /// The subtask index, `0..parallelism`.
    pub subtask_index: u32,
    /// The vertex's parallelism; must equal the plan's.
    pub parallelism: u32,
    /// The vertex's max parallelism; must equal the plan's.
    pub max_parallelism: u32,
    /// The execution attempt, 0 for the first.
    pub attempt_number: u32,
    /// The task's name, for messages and `RuntimeContext::task_name`.
    pub task_name: String,
}

enum Head {
    Source(Box<dyn SourceDriver>),
    Input(Box<dyn InputDriver>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    Ended,
    Closed,
}

/// One subtask's operator chain, ready to be driven by a task thread.
pub struct VertexInstance {
    head: Head,
    errors: ErrorSlot,
    phase: Phase,
    num_inputs: usize,
    task_name: String,
}

impl std::fmt::Debug for VertexInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VertexInstance")
            .field("task_name", &self.task_name)
            .field("is_source", &self.is_source())
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl VertexInstance {
    /// True when the chain's head is a source: drive it with [`VertexInstance::poll_source`].
    pub fn is_source(&self) -> bool {
        matches!(self.head, Head::Source(_))
    }

    /// The task name given at instantiation.
    pub fn task_name(&self) -> &str {
        &self.task_name
    }

    fn require(&self, phase: Phase, what: &str) -> Result<(), String> {
        if self.phase == phase {
            self.errors.check()
        } else {
            Err(format!(
                "{}: {what} called in state {:?}",
                self.task_name, self.phase
            ))
        }
    }

    /// Opens the chain: outputs and downstream operators first, then the head (sources open
    /// their files or sockets here).
    ///
    /// # Errors
    /// The first error of any part of the chain.
    pub fn open(&mut self) -> Result<(), String> {
        self.require(Phase::Created, "open")?;
        match &mut self.head {
            Head::Source(source) => source.open()?,
            Head::Input(input) => input.open()?,
        }
        self.phase = Phase::Running;
        self.errors.check()
    }

    /// Polls the source for up to `max_records` records and pushes them through the chain.
    /// After [`SourceStatus::Finished`], call [`VertexInstance::end_input`].
    ///
    /// # Errors
    /// The source's error, a stored chain error, or misuse (not a source vertex, not open).
    pub fn poll_source(&mut self, max_records: usize) -> Result<SourceStatus, String> {
        self.require(Phase::Running, "poll_source")?;
        let Head::Source(source) = &mut self.head else {
            return Err(format!(
                "{}: poll_source on a non-source vertex",
                self.task_name
            ));
        };
        let status = source.poll(max_records)?;
        self.errors.check()?;
        Ok(status)
    }

    fn input(&mut self, input: usize, what: &str) -> Result<&mut Box<dyn InputDriver>, String> {
        self.require(Phase::Running, what)?;
        if input >= self.num_inputs {
            return Err(format!(
                "{}: input {input} out of range ({} inputs)",
                self.task_name, self.num_inputs
            ));
        }
        match &mut self.head {
            Head::Input(driver) => Ok(driver),
            Head::Source(_) => Err(format!("{}: {what} on a source vertex", self.task_name)),
        }
    }

    /// Decodes one serialized record of input `input` (index into the vertex's inputs) and
    /// pushes it through the chain.
    ///
    /// # Errors
    /// A malformed record, a stored chain error, or misuse.
    pub fn process_record(&mut self, input: usize, record: &[u8]) -> Result<(), String> {
        self.input(input, "process_record")?
            .process_record(record)?;
        self.errors.check()
    }

    /// Pushes a typed batch (`Box<Vec<T>>` from a local producer's `write_batch`) of input
    /// `input` through the chain.
    ///
    /// # Errors
    /// A batch of the wrong type, a stored chain error, or misuse.
    pub fn process_batch(
        &mut self,
        input: usize,
        batch: Box<dyn Any + Send>,
    ) -> Result<(), String> {
        self.input(input, "process_batch")?.process_batch(batch)?;
        self.errors.check()
    }

    /// All inputs have ended (or the source finished): finishes the operators in chain order
    /// (batch-mode aggregations emit here, sinks flush), then pushes out the outputs' partial
    /// batches and calls [`PartitionWriter::finish`] on each. Calling it again is a no-op.
    ///
    /// # Errors
    /// The first error of any part of the chain.
    pub fn end_input(&mut self) -> Result<(), String> {
        if self.phase == Phase::Ended {
            return self.errors.check();
        }
        self.require(Phase::Running, "end_input")?;
        match &mut self.head {
            Head::Source(source) => source.finish()?,
            Head::Input(input) => input.finish()?,
        }
        self.phase = Phase::Ended;
        self.errors.check()
    }

    /// The task is idle: pushes out partial typed batches and buffers.
    ///
    /// # Errors
    /// The first error of any part of the chain.
    pub fn flush(&mut self) -> Result<(), String> {
        if !matches!(self.phase, Phase::Running | Phase::Ended) {
            return self.require(Phase::Running, "flush");
        }
        self.errors.check()?;
        match &mut self.head {
            Head::Source(source) => source.flush()?,
            Head::Input(input) => input.flush()?,
        }
        self.errors.check()
    }

    /// Releases everything (files, sockets, buffered records). Safe in any state, also after a
    /// failure; later calls do nothing.
    pub fn close(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        match &mut self.head {
            Head::Source(source) => source.close(),
            Head::Input(input) => input.close(),
        }
    }
}

impl Drop for VertexInstance {
    fn drop(&mut self) {
        self.close();
    }
}

struct ChainBuilder<'a> {
    graph: &'a StreamGraph,
    plan_vertex: &'a PlanVertex,
    build: BuildContext,
    writers: Vec<Option<Box<dyn crate::task::PartitionWriter>>>,
}

impl ChainBuilder<'_> {
    /// Builds everything downstream of `node` inside the chain: its combined output.
    fn outputs_of(&mut self, node: u32) -> Result<AnyBox, String> {
        let graph = self.graph;
        let mut outputs: Vec<AnyBox> = Vec::new();
        for e in graph.out_edges(node) {
            match graph.edge_to_plan[e] {
                None => outputs.push(self.operator(graph.edges[e].target)?),
                Some(plan_edge) => {
                    let position =
                        self.plan_vertex
                            .outputs
                            .binary_search(&plan_edge)
                            .map_err(|_| {
                                format!("internal error: plan edge {plan_edge} not an output")
                            })?;
                    let writer = self.writers[position]
                        .take()
                        .ok_or_else(|| format!("internal error: writer {position} used twice"))?;
                    let target = &graph.plan.vertices[graph.plan.edges[plan_edge].target_vertex];
                    let spec = NetworkSpec {
                        batch_emission: graph.batch_emission,
                        partitioner: graph.edges[e].partitioner,
                        subtask_index: self.build.runtime.subtask_index,
                        consumer_parallelism: target.parallelism,
                        consumer_max_parallelism: target.max_parallelism,
                        errors: self.build.errors.clone(),
                    };
                    let output = (graph.edge_outputs[e])(spec, writer)
                        .map_err(|err| format!("output edge {plan_edge}: {err}"))?;
                    outputs.push(output);
                }
            }
        }
        (graph.impls[node as usize].fan_out)(outputs)
    }

    /// Builds the operator `node` with everything downstream of it; returns its erased input.
    fn operator(&mut self, node: u32) -> Result<AnyBox, String> {
        let output = self.outputs_of(node)?;
        match &self.graph.impls[node as usize].logic {
            NodeLogic::Operator { build, .. } => build(&self.build, output),
            NodeLogic::Source(_) => Err(format!("internal error: source {node} inside a chain")),
        }
    }
}

impl StreamGraph {
    /// Instantiates subtask `ctx.subtask_index` of plan vertex `vertex`: builds its operator
    /// chain with one network output per plan output edge. `outputs` are in the order of
    /// `plan().vertices[vertex].outputs`.
    ///
    /// # Errors
    /// [`JobError::Instantiate`] when the vertex does not exist, the context does not match the
    /// plan, the number of writers is wrong, or a writer has the wrong number of subpartitions.
    pub fn instantiate(
        &self,
        vertex: usize,
        ctx: VertexContext,
        outputs: Vec<Box<dyn PartitionWriter>>,
    ) -> Result<VertexInstance, JobError> {
        let plan: &JobPlan = &self.plan;
        let plan_vertex = plan.vertices.get(vertex).ok_or_else(|| {
            JobError::Instantiate(format!(
                "vertex {vertex} does not exist ({} vertices)",
                plan.vertices.len()
            ))
        })?;
        let fail = |msg: String| JobError::Instantiate(format!("{}: {msg}", plan_vertex.name));
        if ctx.parallelism != plan_vertex.parallelism
            || ctx.max_parallelism != plan_vertex.max_parallelism
        {
            return Err(fail(format!(
                "context has parallelism {}/{}, the plan {}/{}",
                ctx.parallelism,
                ctx.max_parallelism,
                plan_vertex.parallelism,
                plan_vertex.max_parallelism
            )));
        }
        if ctx.subtask_index >= ctx.parallelism {
            return Err(fail(format!(
                "subtask index {} out of range for parallelism {}",
                ctx.subtask_index, ctx.parallelism
            )));
        }
        if outputs.len() != plan_vertex.outputs.len() {
            return Err(fail(format!(
                "{} partition writers given for {} output edges",
                outputs.len(),
                plan_vertex.outputs.len()
            )));
        }
        let errors = ErrorSlot::default();
        let mut builder = ChainBuilder {
            graph: self,
            plan_vertex,
            build: BuildContext {
                runtime: RuntimeContext {
                    subtask_index: ctx.subtask_index,
                    parallelism: ctx.parallelism,
                    max_parallelism: ctx.max_parallelism,
                    attempt_number: ctx.attempt_number,
                    task_name: ctx.task_name.clone(),
                },
                batch_emission: self.batch_emission,
                errors: errors.clone(),
            },
            writers: outputs.into_iter().map(Some).collect(),
        };
        let head_node = plan_vertex.nodes[0];
        let head = match &self.impls[head_node as usize].logic {
            NodeLogic::Source(build_source) => {
                let output = builder.outputs_of(head_node).map_err(fail)?;
                Head::Source(build_source(&builder.build, output).map_err(fail)?)
            }
            NodeLogic::Operator { head, .. } => {
                let input = builder.operator(head_node).map_err(fail)?;
                Head::Input(head(input).map_err(fail)?)
            }
        };
        Ok(VertexInstance {
            head,
            errors,
            phase: Phase::Created,
            num_inputs: plan_vertex.inputs.len(),
            task_name: ctx.task_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn runtime_facing_types_cross_threads() {
        assert_send::<VertexInstance>();
        assert_send_sync::<StreamGraph>();
        assert_send_sync::<crate::JobRegistry>();
        assert_send_sync::<JobPlan>();
    }

    #[test]
    fn graph_instantiates_on_another_thread() {
        let mut env = crate::StreamExecutionEnvironment::new();
        env.generate_sequence(1, 10)
            .map(|x| x + 1)
            .collect("task-threads");
        let graph = std::sync::Arc::new(env.stream_graph().unwrap());
        let shared = std::sync::Arc::clone(&graph);
        let handle = std::thread::spawn(move || {
            let ctx = VertexContext {
                subtask_index: 0,
                parallelism: 1,
                max_parallelism: 128,
                attempt_number: 0,
                task_name: "t".into(),
            };
            let mut instance = shared.instantiate(0, ctx, Vec::new()).unwrap();
            instance.open().unwrap();
            while instance.poll_source(4).unwrap() != SourceStatus::Finished {}
            instance.end_input().unwrap();
            instance.end_input().unwrap();
            instance.close();
        });
        handle.join().unwrap();
        let mut got = crate::testing::take_collected::<u64>("task-threads");
        got.sort_unstable();
        assert_eq!(got, (2..=11).collect::<Vec<u64>>());
    }

    /// Counts what a vertex hands to the exchange: typed batches' records and serialized
    /// records.
    struct CountingWriter {
        subpartitions: usize,
        local: bool,
        records: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl PartitionWriter for CountingWriter {
        fn num_subpartitions(&self) -> usize {
            self.subpartitions
        }
        fn is_local(&self, _: usize) -> bool {
            self.local
        }
        fn local_batch_records(&self) -> usize {
            16
        }
        fn write_record(&mut self, _: usize, _: &[u8]) -> Result<(), String> {
            self.records
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        fn write_batch(
            &mut self,
            _: usize,
            _: Box<dyn std::any::Any + Send>,
            records: usize,
        ) -> Result<(), String> {
            self.records
                .fetch_add(records, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), String> {
            Ok(())
        }
    }

    /// Records the source vertex of `key_by(k).sum(..)` sends into the exchange, for 1000
    /// records over 7 keys.
    fn exchanged(mode: crate::RuntimeMode, local: bool) -> usize {
        let mut env = crate::StreamExecutionEnvironment::new();
        env.set_parallelism(2);
        env.set_runtime_mode(mode);
        env.generate_sequence(0, 999)
            .map(|n: u64| (n % 7, 1u64))
            .key_by(|p: &(u64, u64)| p.0)
            .sum(|p: &mut (u64, u64)| &mut p.1)
            .collect(&format!("combine-{mode:?}-{local}"));
        let graph = env.stream_graph().unwrap();
        let plan = graph.plan();
        let source = plan.vertices.iter().position(|v| v.is_source).unwrap();
        let records = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for subtask in 0..2 {
            let writer = CountingWriter {
                subpartitions: 2,
                local,
                records: std::sync::Arc::clone(&records),
            };
            let ctx = VertexContext {
                subtask_index: subtask,
                parallelism: 2,
                max_parallelism: plan.vertices[source].max_parallelism,
                attempt_number: 0,
                task_name: "source".into(),
            };
            let mut instance = graph
                .instantiate(source, ctx, vec![Box::new(writer)])
                .unwrap();
            instance.open().unwrap();
            while instance.poll_source(64).unwrap() != SourceStatus::Finished {}
            instance.end_input().unwrap();
        }
        records.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn batch_sums_are_pre_aggregated_before_the_exchange() {
        for local in [true, false] {
            // One partial sum per key and producer subtask, whatever the input size.
            assert!(exchanged(crate::RuntimeMode::Batch, local) <= 7 * 2);
            // Streaming emission must see every record downstream: no pre-aggregation.
            assert_eq!(exchanged(crate::RuntimeMode::Streaming, local), 1000);
        }
    }
}
