//! Streaming tasks: the invokable every DataStream vertex runs. Flink: `StreamTask`
//! (`SourceStreamTask`, `OneInputStreamTask`) with its `OperatorChain`, `RecordWriter`s and
//! `StreamInputProcessor`.
//!
//! On its own thread a [`StreamTask`]:
//! 1. runs the job's build function again (the registry compiled into this node) with the
//!    program's arguments, and checks the graph's fingerprint against the client's: the closures
//!    of the vertex come from this graph, so both sides must have built the same one;
//! 2. instantiates its vertex's operator chain (records pass by value inside it), with one
//!    output per produced result partition;
//! 3. runs: a source vertex polls its source until it finishes; any other vertex reads its
//!    input gate (all its inputs' channels in one gate), decoding serialized buffers from remote
//!    producers and taking typed batches from producers in this process, and pushes the records
//!    into the chain's head; before blocking for input it flushes its outputs, so a quiet input
//!    never holds records back;
//! 4. at the end of its input: finishes the operators (batch-style aggregations emit here),
//!    flushes and finishes its partitions (end-of-partition events to every consumer).
//!
//! Cancellation interrupts a blocked buffer request or input read at once (hooks on the
//! task's [`CancelSignal`]); a failure or cancellation releases the partitions, so consumers see
//! the cause and every buffer returns to the pool.

use std::any::Any;
use std::sync::Arc;

use rflink::task::{PartitionWriter, VertexContext};
use rflink::{JobArgs, JobRegistry, SourceStatus};

use crate::jobgraph::JobProgram;
use crate::network::{
    GateItem, InputGate, NetworkError, RecordDeserializer, ResultPartitionWriter,
};
use crate::taskexecutor::invokable::{Invokable, TaskContext, TaskError};

/// Records a source emits per poll: small enough to see cancellation promptly.
const SOURCE_BATCH: usize = 1024;

/// The job registry of a node: every job it can run. Shared by the client side (building job
/// graphs) and every TaskExecutor (running their vertices).
#[derive(Clone, Default)]
pub struct Jobs(pub Arc<JobRegistry>);

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Jobs").field(&self.0.names()).finish()
    }
}

impl Jobs {
    /// Wraps a registry.
    pub fn new(registry: JobRegistry) -> Self {
        Jobs(Arc::new(registry))
    }
}

/// The invokable of a streaming vertex.
pub struct StreamTask {
    pub(crate) jobs: Jobs,
    pub(crate) program: JobProgram,
    pub(crate) vertex: usize,
    pub(crate) max_parallelism: u32,
    pub(crate) partitions: Vec<ResultPartitionWriter>,
    /// All input channels in one gate, with the input (edge position) each channel belongs to.
    pub(crate) gate: Option<(InputGate, Vec<usize>)>,
}

impl std::fmt::Debug for StreamTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTask")
            .field("entry", &self.program.entry)
            .field("vertex", &self.vertex)
            .finish_non_exhaustive()
    }
}

/// A result partition as the operator chain's output. Flink: `RecordWriter`.
struct PartitionOutput(ResultPartitionWriter);

fn net(err: NetworkError) -> String {
    err.to_string()
}

impl PartitionWriter for PartitionOutput {
    fn num_subpartitions(&self) -> usize {
        self.0.num_subpartitions()
    }

    fn is_local(&self, subpartition: usize) -> bool {
        self.0.is_local(subpartition)
    }

    fn local_batch_records(&self) -> usize {
        self.0.local_batch_records()
    }

    fn write_record(&mut self, subpartition: usize, record: &[u8]) -> Result<(), String> {
        self.0.write_record(subpartition, record).map_err(net)
    }

    fn write_batch(
        &mut self,
        subpartition: usize,
        batch: Box<dyn Any + Send>,
        records: usize,
    ) -> Result<(), String> {
        self.0
            .write_batch(subpartition, batch, records)
            .map_err(net)
    }

    fn flush(&mut self) -> Result<(), String> {
        self.0.flush().map_err(net)
    }

    fn finish(&mut self) -> Result<(), String> {
        self.0.finish().map_err(net)
    }
}

impl StreamTask {
    fn run(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        let cancel = Arc::clone(&ctx.cancel);
        let failed = |message: String| {
            if cancel.is_cancelled() {
                TaskError::Canceled
            } else {
                TaskError::Failed(message)
            }
        };
        for partition in &self.partitions {
            let interrupter = partition.interrupter();
            ctx.cancel
                .on_cancel(Box::new(move || interrupter.interrupt()));
        }
        if let Some((gate, _)) = &self.gate {
            let interrupter = gate.interrupter();
            ctx.cancel
                .on_cancel(Box::new(move || interrupter.interrupt()));
        }

        let args = JobArgs::from_args(self.program.args.clone());
        let graph = self.jobs.0.build(&self.program.entry, &args).map_err(|e| {
            TaskError::Failed(format!(
                "cannot build job {:?} on this TaskExecutor: {e}",
                self.program.entry
            ))
        })?;
        let plan = graph.plan();
        if plan.fingerprint != self.program.fingerprint {
            return Err(TaskError::Failed(format!(
                "job {:?} built a different graph here (fingerprint {}) than on the client \
                 ({}): the node runs a different build of the job, or the build function is \
                 not deterministic",
                self.program.entry, plan.fingerprint, self.program.fingerprint
            )));
        }
        let outputs: Vec<Box<dyn PartitionWriter>> = std::mem::take(&mut self.partitions)
            .into_iter()
            .map(|p| Box::new(PartitionOutput(p)) as Box<dyn PartitionWriter>)
            .collect();
        let vertex_ctx = VertexContext {
            subtask_index: ctx.subtask_index,
            parallelism: ctx.parallelism,
            max_parallelism: self.max_parallelism,
            attempt_number: ctx.attempt.attempt_number,
            task_name: ctx.task_name.clone(),
        };
        let mut instance = graph
            .instantiate(self.vertex, vertex_ctx, outputs)
            .map_err(|e| {
                TaskError::Failed(format!("cannot instantiate the operator chain: {e}"))
            })?;
        let result = (|| {
            instance.open().map_err(&failed)?;
            if instance.is_source() {
                loop {
                    if cancel.is_cancelled() {
                        return Err(TaskError::Canceled);
                    }
                    match instance.poll_source(SOURCE_BATCH).map_err(&failed)? {
                        SourceStatus::More => {}
                        SourceStatus::Idle => instance.flush().map_err(&failed)?,
                        SourceStatus::Finished => break,
                    }
                }
            } else if let Some((gate, inputs)) = &mut self.gate {
                let mut deserializers: Vec<RecordDeserializer> = (0..gate.num_channels())
                    .map(|_| RecordDeserializer::new())
                    .collect();
                loop {
                    if cancel.is_cancelled() {
                        return Err(TaskError::Canceled);
                    }
                    let item = match gate.poll_next().map_err(|e| failed(e.to_string()))? {
                        Some(item) => item,
                        None => {
                            // Nothing to read: push out what is buffered before waiting.
                            instance.flush().map_err(&failed)?;
                            gate.next().map_err(|e| failed(e.to_string()))?
                        }
                    };
                    match item {
                        GateItem::Buffer { channel, buffer } => {
                            let input = inputs.get(channel).copied().unwrap_or(0);
                            let Some(deserializer) = deserializers.get_mut(channel) else {
                                return Err(failed(format!("no channel {channel}")));
                            };
                            deserializer
                                .feed(&buffer, |record| instance.process_record(input, record))
                                .map_err(|e| failed(e.to_string()))?;
                        }
                        GateItem::Batch { channel, batch } => {
                            let input = inputs.get(channel).copied().unwrap_or(0);
                            instance
                                .process_batch(input, batch.take())
                                .map_err(&failed)?;
                        }
                        GateItem::EndOfPartition { channel } => {
                            if let Some(d) = deserializers.get(channel) {
                                d.check_complete().map_err(|e| failed(e.to_string()))?;
                            }
                        }
                        GateItem::End => break,
                    }
                }
            }
            instance.end_input().map_err(&failed)
        })();
        instance.close();
        result
    }
}

impl Invokable for StreamTask {
    fn invoke(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        let result = self.run(ctx);
        if result.is_err() {
            let cause = match &result {
                Err(TaskError::Failed(message)) => message.clone(),
                _ => "the producing task was canceled".to_string(),
            };
            for partition in &mut self.partitions {
                partition.release(&cause);
            }
        }
        self.gate = None;
        result
    }
}
