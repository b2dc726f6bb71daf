//! The task side: how the runtime runs one subtask of a [`JobPlan`] vertex.
//!
//! The runtime rebuilds the job's [`StreamGraph`] from the same build function and arguments,
//! checks [`JobPlan::fingerprint`], and calls [`StreamGraph::instantiate`] with one
//! [`PartitionWriter`] per output edge of the vertex. It then drives the returned
//! [`VertexInstance`]:
//!
//! ```text
//! [restore] ─► open ─► ( poll_source | process_record | process_batch | flush | snapshot
//!     | notify_checkpoint_* )* ─► end_input ─► [ snapshot, notify_checkpoint_* ]* ─►
//!     finish_outputs ─► close
//! ```
//!
//! `close` is also called after a failure or cancellation, in any state.
//!
//! # Checkpoints
//! Flink-style aligned checkpoints: when a checkpoint barrier has arrived on every input (or,
//! for a source, when the checkpoint is triggered), the runtime calls
//! [`VertexInstance::snapshot`], between two records. It copies the state of every operator of
//! the chain into bytes (source positions, keyed state, sink transactions, which sinks
//! pre-commit) and then emits the barrier on every output, after every record emitted before
//! it. When the checkpoint is complete everywhere, [`VertexInstance::notify_checkpoint_complete`]
//! lets sinks commit. After a failure, a new attempt gets the bytes of the last completed
//! checkpoint back with [`VertexInstance::restore`], before `open`.
//!
//! The snapshot is versioned: `"RFCK"`, a `u16` version, then one section per stateful
//! operator, named by its node id in the [`StreamGraph`] (see `snapshot.rs`).
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
    AnyBox, BuildContext, ChainDriver, ErrorSlot, FanOutFn, InputDriver, NetworkSpec, NodeLogic,
    SourceDriver,
};

/// A node's side outputs by tag, while its chain is built.
type SideOutputs = rustc_hash::FxHashMap<String, AnyBox>;
use crate::snapshot::{SnapshotSections, SnapshotWriter};
use crate::{JobError, RuntimeContext, SourceStatus};

/// A checkpoint barrier as the runtime passes it to a chain. Flink: `CheckpointBarrier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointBarrier {
    /// The checkpoint id, increasing within a job.
    pub id: u64,
    /// When the checkpoint was triggered (milliseconds since the epoch).
    pub timestamp: i64,
    /// True for a savepoint.
    pub savepoint: bool,
}

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
    /// Sends `barrier` to every subpartition, behind everything written before. The chain
    /// calls it only after it has pushed every record emitted before the barrier into this
    /// writer (its typed batches with [`write_batch`](PartitionWriter::write_batch), then
    /// [`flush`](PartitionWriter::flush)). The default refuses: this output cannot carry
    /// barriers.
    ///
    /// # Errors
    /// A message that fails the checkpoint and the task.
    fn broadcast_barrier(&mut self, barrier: CheckpointBarrier) -> Result<(), String> {
        let _ = barrier;
        Err("this output cannot carry checkpoint barriers".into())
    }
    /// Sends watermark `watermark` to every subpartition, behind everything written before
    /// (the chain has pushed its typed batches first). Only jobs that use time send them. The
    /// default refuses: this output cannot carry watermarks.
    ///
    /// # Errors
    /// A message that fails the task.
    fn broadcast_watermark(&mut self, watermark: i64) -> Result<(), String> {
        let _ = watermark;
        Err("this output cannot carry watermarks".into())
    }
    /// Tells every subpartition that this output turned idle (`true`) or active again, behind
    /// everything written before. The default refuses, as for watermarks.
    ///
    /// # Errors
    /// A message that fails the task.
    fn broadcast_watermark_status(&mut self, idle: bool) -> Result<(), String> {
        let _ = idle;
        Err("this output cannot carry watermark status".into())
    }
    /// Called once from [`VertexInstance::end_input`] after the last record and batch of this
    /// output: no more records follow, but barriers may (the final checkpoint). Defaults to
    /// [`PartitionWriter::flush`].
    ///
    /// # Errors
    /// A message that fails the task.
    fn end_of_data(&mut self) -> Result<(), String> {
        self.flush()
    }
    /// Called once from [`VertexInstance::finish_outputs`], after
    /// [`end_of_data`](PartitionWriter::end_of_data) and any final barrier: the place to mark
    /// the end of the partition. Defaults to [`PartitionWriter::flush`].
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
    /// True when the job runs with checkpoints (exactly-once mode); passed on to
    /// `RuntimeContext::checkpointing`.
    pub checkpointing: bool,
}

enum Head {
    Source(Box<dyn SourceDriver>),
    Input(Box<dyn InputDriver>),
}

impl Head {
    fn chain(&mut self) -> &mut dyn ChainDriver {
        match self {
            Head::Source(source) => &mut **source,
            Head::Input(input) => &mut **input,
        }
    }
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
    /// `restore` was called.
    restored: bool,
    /// `finish_outputs` was called.
    outputs_finished: bool,
    /// The job uses time: the input's end is the maximum watermark.
    uses_time: bool,
    time: crate::time::ChainTime,
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
        self.head.chain().open()?;
        self.phase = Phase::Running;
        self.errors.check()
    }

    /// Gives every stateful part of the chain its section of `snapshot` back: what
    /// [`VertexInstance::snapshot`] returned for the same subtask of the same graph in an earlier
    /// attempt. Only before [`VertexInstance::open`], at most once. A stateful operator without
    /// a section starts empty.
    ///
    /// # Errors
    /// A malformed snapshot, a section for an operator this chain does not have (or that has no
    /// state), or a part refusing its state.
    pub fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.require(Phase::Created, "restore")?;
        if self.restored {
            return Err(format!("{}: restore called twice", self.task_name));
        }
        self.restored = true;
        let mut sections = SnapshotSections::parse(snapshot)
            .map_err(|e| format!("{}: cannot restore: {e}", self.task_name))?;
        self.head
            .chain()
            .restore_state(&mut sections)
            .map_err(|e| format!("{}: cannot restore: {e}", self.task_name))?;
        let foreign = sections.remaining();
        if !foreign.is_empty() {
            return Err(format!(
                "{}: cannot restore: the snapshot holds state of operators {foreign:?}, which \
                 this chain does not have (or which keep no state): it belongs to another \
                 vertex or job",
                self.task_name
            ));
        }
        self.errors.check()
    }

    /// Takes a checkpoint of this subtask: copies the state of every operator of the chain into
    /// the returned bytes (sinks pre-commit), then emits `barrier` on every output, behind every
    /// record emitted before (partial typed batches and buffers are pushed out first). Nothing
    /// is emitted between the copy and the barrier. Call it between records, while running or
    /// after [`VertexInstance::end_input`] (the final checkpoint), never after
    /// [`VertexInstance::finish_outputs`].
    ///
    /// # Errors
    /// Misuse, a chain that cannot be checkpointed (keyed aggregations with batch emission), a
    /// part failing to copy its state, or an output failing to send the barrier.
    pub fn snapshot(&mut self, barrier: CheckpointBarrier) -> Result<Vec<u8>, String> {
        if !matches!(self.phase, Phase::Running | Phase::Ended) {
            return self
                .require(Phase::Running, "snapshot")
                .map(|()| Vec::new());
        }
        if self.outputs_finished {
            return Err(format!(
                "{}: snapshot called after finish_outputs",
                self.task_name
            ));
        }
        self.errors.check()?;
        let mut writer = SnapshotWriter::new();
        let chain = self.head.chain();
        chain
            .snapshot_state(barrier.id, &mut writer)
            .map_err(|e| format!("checkpoint {}: {e}", barrier.id))?;
        self.errors.check()?;
        chain.emit_barrier(barrier)?;
        self.errors.check()?;
        Ok(writer.finish())
    }

    /// Checkpoint `checkpoint_id` is complete: sinks commit the transactions of every
    /// checkpoint up to it. In any phase but closed.
    ///
    /// # Errors
    /// Misuse, or a sink failing to commit.
    pub fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String> {
        if self.phase == Phase::Closed {
            return self.require(Phase::Running, "notify_checkpoint_complete");
        }
        self.head
            .chain()
            .notify_checkpoint_complete(checkpoint_id)?;
        self.errors.check()
    }

    /// Checkpoint `checkpoint_id` was aborted. Its pre-committed transactions stay pending and
    /// are committed with the next completed checkpoint.
    pub fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        if self.phase != Phase::Closed {
            self.head.chain().notify_checkpoint_aborted(checkpoint_id);
        }
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

    /// The vertex's input watermark advanced to `watermark` (the minimum over its input
    /// channels, see [`crate::time::WatermarkValve`]): event-time timers and windows up to it
    /// fire, then it goes on to the outputs. A watermark not above the last is ignored.
    ///
    /// # Errors
    /// A stored chain error, a writer failing, or misuse.
    pub fn process_watermark(&mut self, watermark: i64) -> Result<(), String> {
        self.require(Phase::Running, "process_watermark")?;
        self.head.chain().process_watermark(watermark)?;
        self.errors.check()
    }

    /// The vertex's input turned idle (`true`: every input channel is idle) or active again;
    /// passed on to the outputs.
    ///
    /// # Errors
    /// A stored chain error, a writer failing, or misuse.
    pub fn process_watermark_status(&mut self, idle: bool) -> Result<(), String> {
        self.require(Phase::Running, "process_watermark_status")?;
        self.head.chain().process_watermark_status(idle)?;
        self.errors.check()
    }

    /// Tells the chain the processing time (wall clock, ms since the epoch): operators read it
    /// as their current processing time, and processing-time timers and periodic watermarks
    /// due at `now` fire. Call it often (every input item or source poll is fine: it costs a
    /// few calls when nothing is due) and when [`next_processing_time`](Self::next_processing_time)
    /// is reached. Ignored outside the running phase: after the end of input, pending
    /// processing-time timers do not fire (as in Flink).
    ///
    /// # Errors
    /// A stored chain error or a failing timer.
    pub fn advance_processing_time(&mut self, now: i64) -> Result<(), String> {
        if self.phase != Phase::Running {
            return Ok(());
        }
        self.errors.check()?;
        self.time.set_processing_time(now);
        let chain = self.head.chain();
        if chain.next_processing_time().is_some_and(|due| due <= now) {
            chain.on_processing_time(now)?;
        }
        self.errors.check()
    }

    /// The earliest processing time at which some operator of the chain has work (a timer, a
    /// periodic watermark); the task should call
    /// [`advance_processing_time`](Self::advance_processing_time) by then even without input.
    pub fn next_processing_time(&mut self) -> Option<i64> {
        if self.phase != Phase::Running {
            return None;
        }
        self.head.chain().next_processing_time()
    }

    /// True when the job uses time (timestamps and watermarks flow).
    pub fn uses_time(&self) -> bool {
        self.uses_time
    }

    /// All inputs have ended (or the source finished): finishes the operators in chain order
    /// (batch-mode aggregations emit here, sinks flush), then pushes out the outputs' partial
    /// batches and calls [`PartitionWriter::end_of_data`] on each. Barriers may still follow
    /// (a final [`VertexInstance::snapshot`]); then [`VertexInstance::finish_outputs`] ends the
    /// partitions. Calling it again is a no-op.
    ///
    /// # Errors
    /// The first error of any part of the chain.
    pub fn end_input(&mut self) -> Result<(), String> {
        if self.phase == Phase::Ended {
            return self.errors.check();
        }
        self.require(Phase::Running, "end_input")?;
        let chain = self.head.chain();
        if self.uses_time {
            // Every event-time timer and window fires before the operators finish.
            chain.process_watermark(crate::time::MAX_WATERMARK)?;
            self.errors.check()?;
        }
        chain.finish()?;
        self.errors.check()?;
        chain.end_of_data()?;
        self.phase = Phase::Ended;
        self.errors.check()
    }

    /// After [`VertexInstance::end_input`] (and, with checkpoints, the final checkpoint): calls
    /// [`PartitionWriter::finish`] on every output, ending its partition. Calling it again is
    /// a no-op.
    ///
    /// # Errors
    /// Misuse (before `end_input`), or the first error of any output.
    pub fn finish_outputs(&mut self) -> Result<(), String> {
        self.require(Phase::Ended, "finish_outputs")?;
        if self.outputs_finished {
            return Ok(());
        }
        self.outputs_finished = true;
        self.head.chain().finish_outputs()?;
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
        self.head.chain().flush()?;
        self.errors.check()
    }

    /// Releases everything (files, sockets, buffered records). Safe in any state, also after a
    /// failure; later calls do nothing.
    pub fn close(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.head.chain().close();
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
    /// Builds everything downstream of `node` inside the chain: its combined main output, and
    /// its side outputs by tag.
    fn outputs_of(&mut self, node: u32) -> Result<(AnyBox, SideOutputs), String> {
        let graph = self.graph;
        let mut outputs: Vec<AnyBox> = Vec::new();
        let mut sides: Vec<(String, FanOutFn, Vec<AnyBox>)> = Vec::new();
        for e in graph.out_edges(node) {
            let side = graph.edge_sides.get(e).and_then(Option::as_ref);
            let output = self.edge_output(e)?;
            match side {
                None => outputs.push(output),
                Some(side) => match sides.iter_mut().find(|(tag, _, _)| *tag == side.tag) {
                    Some((_, _, list)) => list.push(output),
                    None => sides.push((side.tag.clone(), side.fan_out, vec![output])),
                },
            }
        }
        let mut side_outputs = SideOutputs::default();
        for (tag, fan_out, list) in sides {
            side_outputs.insert(tag, fan_out(list)?);
        }
        Ok(((graph.impls[node as usize].fan_out)(outputs)?, side_outputs))
    }

    /// The output for stream edge `e`: the chained operator, or a network output.
    fn edge_output(&mut self, e: usize) -> Result<AnyBox, String> {
        let graph = self.graph;
        {
            match graph.edge_to_plan[e] {
                None => self.operator(graph.edges[e].target),
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
                        timestamps: graph.uses_time,
                        time: self.build.time.clone(),
                    };
                    (graph.edge_outputs[e])(spec, writer)
                        .map_err(|err| format!("output edge {plan_edge}: {err}"))
                }
            }
        }
    }

    /// Builds the operator `node` with everything downstream of it; returns its erased input.
    fn operator(&mut self, node: u32) -> Result<AnyBox, String> {
        let (output, sides) = self.outputs_of(node)?;
        self.build.node = node;
        *self.build.side_outputs.borrow_mut() = sides;
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
        let time = crate::time::ChainTime::default();
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
                    checkpointing: ctx.checkpointing,
                },
                batch_emission: self.batch_emission,
                errors: errors.clone(),
                node: 0,
                time: time.clone(),
                timestamps: self.uses_time,
                auto_watermark_interval: self.auto_watermark_interval,
                side_outputs: Default::default(),
            },
            writers: outputs.into_iter().map(Some).collect(),
        };
        let head_node = plan_vertex.nodes[0];
        let head = match &self.impls[head_node as usize].logic {
            NodeLogic::Source(build_source) => {
                let (output, sides) = builder.outputs_of(head_node).map_err(fail)?;
                builder.build.node = head_node;
                *builder.build.side_outputs.borrow_mut() = sides;
                Head::Source(build_source(&builder.build, output).map_err(fail)?)
            }
            NodeLogic::Operator { head, .. } => {
                let input = builder.operator(head_node).map_err(fail)?;
                Head::Input(head(input, self.uses_time, time.clone()).map_err(fail)?)
            }
        };
        Ok(VertexInstance {
            head,
            errors,
            phase: Phase::Created,
            num_inputs: plan_vertex.inputs.len(),
            task_name: ctx.task_name,
            restored: false,
            outputs_finished: false,
            uses_time: self.uses_time,
            time,
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
                checkpointing: false,
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
                checkpointing: false,
            };
            let mut instance = graph
                .instantiate(source, ctx, vec![Box::new(writer)])
                .unwrap();
            instance.open().unwrap();
            while instance.poll_source(64).unwrap() != SourceStatus::Finished {}
            instance.end_input().unwrap();
            instance.finish_outputs().unwrap();
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

    // ---- Checkpoints ----

    use std::sync::{Arc, Mutex};

    use crate::codec::{decode_exact, encode_to_vec};
    use crate::{
        Collector, KeyedContext, KeyedProcessFunction, MapState, ReducingState, RuntimeMode,
        StateRegistry, StreamExecutionEnvironment, ValueState,
    };

    type Word = (String, u64);

    /// What a vertex handed to one of its writers, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Event {
        Record(usize, Word),
        Flush,
        Barrier(usize, u64),
        EndOfData,
        Finish,
    }

    /// A writer recording every record (decoded, from bytes or typed batches), barrier and
    /// lifecycle call.
    struct RecordingWriter {
        subpartitions: usize,
        local: bool,
        events: Arc<Mutex<Vec<Event>>>,
    }

    impl RecordingWriter {
        fn push(&self, event: Event) {
            self.events.lock().unwrap().push(event);
        }
    }

    impl PartitionWriter for RecordingWriter {
        fn num_subpartitions(&self) -> usize {
            self.subpartitions
        }
        fn is_local(&self, _: usize) -> bool {
            self.local
        }
        fn local_batch_records(&self) -> usize {
            4
        }
        fn write_record(&mut self, subpartition: usize, record: &[u8]) -> Result<(), String> {
            let word = decode_exact::<Word>(record).map_err(|e| e.to_string())?;
            self.push(Event::Record(subpartition, word));
            Ok(())
        }
        fn write_batch(
            &mut self,
            subpartition: usize,
            batch: Box<dyn Any + Send>,
            records: usize,
        ) -> Result<(), String> {
            let batch = batch.downcast::<Vec<Word>>().map_err(|_| "not words")?;
            assert_eq!(batch.len(), records);
            for word in *batch {
                self.push(Event::Record(subpartition, word));
            }
            Ok(())
        }
        fn flush(&mut self) -> Result<(), String> {
            self.push(Event::Flush);
            Ok(())
        }
        fn broadcast_barrier(&mut self, barrier: CheckpointBarrier) -> Result<(), String> {
            for s in 0..self.subpartitions {
                self.push(Event::Barrier(s, barrier.id));
            }
            Ok(())
        }
        fn end_of_data(&mut self) -> Result<(), String> {
            self.push(Event::EndOfData);
            Ok(())
        }
        fn finish(&mut self) -> Result<(), String> {
            self.push(Event::Finish);
            Ok(())
        }
    }

    fn barrier(id: u64) -> CheckpointBarrier {
        CheckpointBarrier {
            id,
            timestamp: 1_700_000_000_000 + id as i64,
            savepoint: false,
        }
    }

    fn checkpoint_lines() -> Vec<String> {
        let words = ["to", "be", "or", "not", "that", "is", "the", "question"];
        let mut rng = crate::SplitMix64::new(11);
        (0..60)
            .map(|_| {
                (0..rng.gen_range(7))
                    .map(|_| words[rng.gen_range(words.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    /// source -> flat_map ==hash==> keyed sum -> collect, streaming emission, parallelism 2.
    fn word_count_graph(sink: &str, mode: RuntimeMode) -> StreamGraph {
        let mut env = StreamExecutionEnvironment::new();
        env.set_parallelism(2);
        env.set_runtime_mode(mode);
        env.enable_checkpointing(std::time::Duration::from_secs(1));
        env.from_collection(checkpoint_lines())
            .flat_map(|line: String, out: &mut dyn Collector<Word>| {
                for word in line.split_whitespace() {
                    out.collect((word.to_owned(), 1));
                }
            })
            .key_by(|w: &Word| w.0.clone())
            .sum(|w: &mut Word| &mut w.1)
            .collect(sink);
        env.stream_graph().unwrap()
    }

    fn vctx(graph: &StreamGraph, vertex: usize, subtask: u32, attempt: u32) -> VertexContext {
        let v = &graph.plan_ref().vertices[vertex];
        VertexContext {
            subtask_index: subtask,
            parallelism: v.parallelism,
            max_parallelism: v.max_parallelism,
            attempt_number: attempt,
            task_name: format!("{} ({subtask})", v.name),
            checkpointing: true,
        }
    }

    /// The producer vertex (source -> flat_map) of subtask `subtask` with a recording writer.
    fn producer(
        graph: &StreamGraph,
        subtask: u32,
        local: bool,
    ) -> (VertexInstance, Arc<Mutex<Vec<Event>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let writer = RecordingWriter {
            subpartitions: 2,
            local,
            events: Arc::clone(&events),
        };
        let instance = graph
            .instantiate(0, vctx(graph, 0, subtask, 0), vec![Box::new(writer)])
            .unwrap();
        (instance, events)
    }

    /// The words of the lines subtask `subtask` of 2 reads, in order.
    fn words_of(lines: &[String], subtask: usize) -> Vec<Word> {
        lines
            .iter()
            .skip(subtask)
            .step_by(2)
            .flat_map(|l| l.split_whitespace().map(|w| (w.to_owned(), 1)))
            .collect()
    }

    fn records(events: &[Event], subpartition: usize) -> Vec<Word> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Record(s, w) if *s == subpartition => Some(w.clone()),
                _ => None,
            })
            .collect()
    }

    fn key_subpartition(word: &str) -> usize {
        crate::assign_key_to_subtask(&word.to_owned(), 128, 2) as usize
    }

    #[test]
    fn the_barrier_follows_every_record_emitted_before_the_snapshot() {
        let lines = checkpoint_lines();
        for local in [true, false] {
            let graph = word_count_graph("cp-barrier", RuntimeMode::Streaming);
            let plan = graph.plan();
            assert_eq!(plan.vertices.len(), 2);
            assert_eq!(plan.vertices[1].max_parallelism, 128);
            for subtask in 0..2u32 {
                let (mut instance, events) = producer(&graph, subtask, local);
                instance.open().unwrap();
                instance.poll_source(3).unwrap();
                instance.poll_source(2).unwrap();
                let snapshot = instance.snapshot(barrier(1)).unwrap();
                assert!(!snapshot.is_empty());
                let before: Vec<Event> = events.lock().unwrap().clone();
                // Every word of the 5 lines read so far went out before the barrier, on the
                // subpartition of its key and in order; then one barrier per subpartition.
                let read: Vec<String> = lines
                    .iter()
                    .skip(subtask as usize)
                    .step_by(2)
                    .take(5)
                    .cloned()
                    .collect();
                let first_barrier = before
                    .iter()
                    .position(|e| matches!(e, Event::Barrier(..)))
                    .unwrap();
                assert_eq!(
                    &before[first_barrier..],
                    &[Event::Barrier(0, 1), Event::Barrier(1, 1)]
                );
                for s in 0..2 {
                    let expected: Vec<Word> = read
                        .iter()
                        .flat_map(|l| l.split_whitespace().map(|w| (w.to_owned(), 1)))
                        .filter(|w| key_subpartition(&w.0) == s)
                        .collect();
                    assert_eq!(records(&before, s), expected, "local={local} s={s}");
                }
                assert!(before[..first_barrier].contains(&Event::Flush));

                // Run to the end with a final checkpoint after end_input.
                while instance.poll_source(4).unwrap() != SourceStatus::Finished {}
                instance.end_input().unwrap();
                assert!(instance.finish_outputs().is_ok());
                let all: Vec<Event> = events.lock().unwrap().clone();
                let total = records(&all, 0).len() + records(&all, 1).len();
                assert_eq!(total, words_of(&lines, subtask as usize).len());
                instance.close();
            }
        }
    }

    #[test]
    fn end_of_data_comes_before_the_final_barrier_and_finish() {
        let graph = word_count_graph("cp-order", RuntimeMode::Streaming);
        let (mut instance, events) = producer(&graph, 0, true);
        assert!(instance.snapshot(barrier(1)).is_err(), "not open");
        instance.open().unwrap();
        assert!(instance
            .finish_outputs()
            .unwrap_err()
            .contains("finish_outputs called in state Running"));
        while instance.poll_source(16).unwrap() != SourceStatus::Finished {}
        instance.end_input().unwrap();
        instance.end_input().unwrap();
        instance.snapshot(barrier(7)).unwrap();
        instance.notify_checkpoint_complete(7).unwrap();
        instance.finish_outputs().unwrap();
        instance.finish_outputs().unwrap();
        instance.flush().unwrap();
        assert!(instance
            .snapshot(barrier(8))
            .unwrap_err()
            .contains("after finish_outputs"));
        let lifecycle: Vec<Event> = events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| !matches!(e, Event::Record(..) | Event::Flush))
            .cloned()
            .collect();
        assert_eq!(
            lifecycle,
            vec![
                Event::EndOfData,
                Event::Barrier(0, 7),
                Event::Barrier(1, 7),
                Event::Finish
            ]
        );
        // No record after the end of data.
        let all = events.lock().unwrap().clone();
        let end = all.iter().position(|e| *e == Event::EndOfData).unwrap();
        assert!(all[end..].iter().all(|e| !matches!(e, Event::Record(..))));
        instance.close();
        assert!(instance.notify_checkpoint_complete(8).is_err());
        instance.notify_checkpoint_aborted(8);

        // Without checkpoints the runtime calls finish_outputs right after end_input.
        let (mut plain, events) = producer(&graph, 1, false);
        plain.open().unwrap();
        while plain.poll_source(16).unwrap() != SourceStatus::Finished {}
        plain.end_input().unwrap();
        plain.finish_outputs().unwrap();
        let all = events.lock().unwrap().clone();
        let tail: Vec<&Event> = all
            .iter()
            .filter(|e| !matches!(e, Event::Record(..) | Event::Flush))
            .collect();
        assert_eq!(tail, vec![&Event::EndOfData, &Event::Finish]);
    }

    #[test]
    fn a_restored_source_vertex_continues_where_the_snapshot_was_taken() {
        let graph = word_count_graph("cp-source-restore", RuntimeMode::Streaming);
        for local in [true, false] {
            let (mut first, events) = producer(&graph, 1, local);
            first.open().unwrap();
            first.poll_source(6).unwrap();
            let snapshot = first.snapshot(barrier(1)).unwrap();
            while first.poll_source(16).unwrap() != SourceStatus::Finished {}
            first.end_input().unwrap();
            let all = events.lock().unwrap().clone();
            let cut = all.iter().position(|e| *e == Event::Barrier(1, 1)).unwrap();
            let after_barrier = &all[cut..];

            let (mut second, replayed) = producer(&graph, 1, local);
            second.restore(&snapshot).unwrap();
            second.open().unwrap();
            while second.poll_source(16).unwrap() != SourceStatus::Finished {}
            second.end_input().unwrap();
            let replayed = replayed.lock().unwrap().clone();
            for s in 0..2 {
                assert_eq!(records(&replayed, s), records(after_barrier, s), "s={s}");
            }
        }
    }

    /// The consumer vertex (keyed sum -> collect) of subtask `subtask`.
    fn consumer(graph: &StreamGraph, subtask: u32, attempt: u32) -> VertexInstance {
        graph
            .instantiate(1, vctx(graph, 1, subtask, attempt), Vec::new())
            .unwrap()
    }

    #[test]
    fn a_restored_keyed_sum_continues_the_counts() {
        let lines = checkpoint_lines();
        let sink = "cp-sum-restore";
        let graph = word_count_graph(sink, RuntimeMode::Streaming);
        // What producer subtask 0 sends, cut by its first barrier.
        let (mut source, events) = producer(&graph, 0, false);
        source.open().unwrap();
        source.poll_source(9).unwrap();
        source.snapshot(barrier(1)).unwrap();
        while source.poll_source(16).unwrap() != SourceStatus::Finished {}
        source.end_input().unwrap();
        let events = events.lock().unwrap().clone();
        let cut = events
            .iter()
            .position(|e| *e == Event::Barrier(0, 1))
            .unwrap();
        for s in 0..2u32 {
            let phase1 = records(&events[..cut], s as usize);
            let phase2 = records(&events[cut..], s as usize);
            // Attempt 0 consumes phase 1 (serialized and typed) and snapshots at the barrier.
            let mut first = consumer(&graph, s, 0);
            first.open().unwrap();
            let (serialized, typed) = phase1.split_at(phase1.len() / 2);
            for word in serialized {
                first.process_record(0, &encode_to_vec(word)).unwrap();
            }
            first.process_batch(0, Box::new(typed.to_vec())).unwrap();
            let snapshot = first.snapshot(barrier(1)).unwrap();
            first.close();
            let counted = crate::testing::take_collected::<Word>(sink);
            assert_eq!(counted.len(), phase1.len());

            // Attempt 1 restores and consumes phase 2: the counts go on.
            let mut second = consumer(&graph, s, 1);
            second.restore(&snapshot).unwrap();
            second.open().unwrap();
            second.process_batch(0, Box::new(phase2.clone())).unwrap();
            second.end_input().unwrap();
            second.finish_outputs().unwrap();
            second.close();
            let mut last = std::collections::HashMap::new();
            for (word, count) in crate::testing::take_collected::<Word>(sink) {
                last.insert(word, count);
            }
            let mut expected = std::collections::HashMap::new();
            for (word, _) in words_of(&lines, 0) {
                if key_subpartition(&word) == s as usize {
                    *expected.entry(word).or_insert(0) += 1;
                }
            }
            expected.retain(|w, _| phase2.iter().any(|(p, _)| p == w));
            assert_eq!(last, expected, "subtask {s}");
        }
    }

    #[test]
    fn malformed_and_foreign_snapshots_are_refused() {
        let graph = word_count_graph("cp-malformed", RuntimeMode::Streaming);
        let mut first = consumer(&graph, 0, 0);
        first.open().unwrap();
        for word in ["a", "b", "a"] {
            first
                .process_record(0, &encode_to_vec(&(word.to_owned(), 1u64)))
                .unwrap();
        }
        let valid = first.snapshot(barrier(1)).unwrap();
        first.close();
        let _ = crate::testing::take_collected::<Word>("cp-malformed");

        // Every truncation and a few byte flips fail cleanly.
        for cut in 0..valid.len() {
            let mut fresh = consumer(&graph, 0, 1);
            assert!(fresh.restore(&valid[..cut]).is_err(), "cut {cut}");
        }
        let mut rng = crate::SplitMix64::new(2024);
        for round in 0..2000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let mut bytes = valid.clone();
                let at = rng.gen_range(bytes.len() as u64) as usize;
                bytes[at] = rng.next_u64() as u8;
                bytes
            } else {
                let len = rng.gen_range(80) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                if round % 4 == 1 && bytes.len() >= 6 {
                    bytes[..6].copy_from_slice(b"RFCK\x01\x00");
                }
                bytes
            };
            let mut fresh = consumer(&graph, 0, 1);
            if fresh.restore(&bytes).is_ok() {
                let _ = fresh.open();
            }
        }
        // The source vertex's snapshot is foreign to the consumer, and the other way round.
        let (mut source, _) = producer(&graph, 0, true);
        source.open().unwrap();
        source.poll_source(2).unwrap();
        let source_snapshot = source.snapshot(barrier(1)).unwrap();
        let err = consumer(&graph, 0, 1)
            .restore(&source_snapshot)
            .unwrap_err();
        assert!(err.contains("does not have"), "{err}");
        let (mut producer2, _) = producer(&graph, 0, true);
        assert!(producer2
            .restore(&valid)
            .unwrap_err()
            .contains("does not have"));
        // Misuse: after open, twice.
        let mut opened = consumer(&graph, 0, 1);
        opened.open().unwrap();
        assert!(opened.restore(&valid).is_err());
        let mut twice = consumer(&graph, 0, 1);
        twice.restore(&valid).unwrap();
        assert!(twice.restore(&valid).unwrap_err().contains("twice"));
        // An empty snapshot: every stateful operator starts empty.
        let mut empty = consumer(&graph, 0, 1);
        empty
            .restore(&crate::snapshot::SnapshotWriter::new().finish())
            .unwrap();
        empty.open().unwrap();
        empty
            .process_record(0, &encode_to_vec(&("a".to_owned(), 1u64)))
            .unwrap();
        empty.close();
        assert_eq!(
            crate::testing::take_collected::<Word>("cp-malformed"),
            vec![("a".to_owned(), 1)]
        );
    }

    #[test]
    fn batch_emission_cannot_be_checkpointed() {
        let graph = word_count_graph("cp-batch", RuntimeMode::Automatic);
        assert!(graph.batch_emission());
        let (mut source, _) = producer(&graph, 0, true);
        source.open().unwrap();
        source.poll_source(3).unwrap();
        let err = source.snapshot(barrier(1)).unwrap_err();
        assert!(err.contains("STREAMING"), "{err}");
        let mut sum = consumer(&graph, 0, 0);
        sum.open().unwrap();
        let err = sum.snapshot(barrier(1)).unwrap_err();
        assert!(
            err.contains("keyed sum") && err.contains("STREAMING"),
            "{err}"
        );
        sum.close();
    }

    /// Counts per key with all three kinds of keyed state.
    #[derive(Clone, Default)]
    struct Tally {
        count: ValueState<u64>,
        seen: MapState<u64, u32>,
        total: ReducingState<u64>,
    }

    impl KeyedProcessFunction<u64, (u64, u64), (u64, u64, usize, u64)> for Tally {
        fn open(&mut self, state: &mut StateRegistry<u64>) -> Result<(), String> {
            self.count = state.value_state("count");
            self.seen = state.map_state("seen");
            self.total = state.reducing_state("total", |a, b| a + b);
            Ok(())
        }

        fn process_element(
            &mut self,
            (_, value): (u64, u64),
            ctx: &mut KeyedContext<'_, u64>,
            out: &mut dyn Collector<(u64, u64, usize, u64)>,
        ) {
            let count = ctx.value(&self.count).copied().unwrap_or(0) + 1;
            ctx.update(&self.count, count);
            let times = ctx.map_get(&self.seen, &value).copied().unwrap_or(0) + 1;
            ctx.map_put(&self.seen, value, times);
            ctx.reducing_add(&self.total, value);
            let distinct = ctx.map_iter(&self.seen).count();
            let total = ctx.reducing_get(&self.total).copied().unwrap_or(0);
            out.collect((*ctx.key(), count, distinct, total));
        }
    }

    #[test]
    fn keyed_process_state_survives_a_restore() {
        let sink = "cp-process";
        let mut env = StreamExecutionEnvironment::new();
        env.set_runtime_mode(RuntimeMode::Streaming);
        env.from_collection(vec![(0u64, 0u64)])
            .key_by(|t: &(u64, u64)| t.0)
            .process(Tally::default())
            .collect(sink);
        let graph = env.stream_graph().unwrap();
        let input: Vec<(u64, u64)> = (0..90).map(|i| (i % 4, (i * 7) % 5)).collect();
        let run = |instance: &mut VertexInstance, records: &[(u64, u64)]| {
            for r in records {
                instance.process_record(0, &encode_to_vec(r)).unwrap();
            }
        };
        let mut whole = consumer(&graph, 0, 0);
        whole.open().unwrap();
        run(&mut whole, &input);
        whole.close();
        let expected = crate::testing::take_collected::<(u64, u64, usize, u64)>(sink);

        let mut first = consumer(&graph, 0, 0);
        first.open().unwrap();
        run(&mut first, &input[..40]);
        let snapshot = first.snapshot(barrier(3)).unwrap();
        first.close();
        let mut got = crate::testing::take_collected::<(u64, u64, usize, u64)>(sink);
        let mut second = consumer(&graph, 0, 1);
        second.restore(&snapshot).unwrap();
        second.open().unwrap();
        run(&mut second, &input[40..]);
        second.close();
        got.extend(crate::testing::take_collected::<(u64, u64, usize, u64)>(
            sink,
        ));
        assert_eq!(got, expected);
    }
}
