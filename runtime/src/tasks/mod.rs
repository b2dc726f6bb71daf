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

pub mod checkpointing;

use std::any::Any;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rflink::abi::host::LibraryVertex;
use rflink::abi::InstantiateRequest;
use rflink::task::{CheckpointBarrier, PartitionWriter, VertexContext, VertexInstance};
use rflink::{JobArgs, JobRegistry, SourceStatus};

use checkpointing::{Alignment, BarrierAligner, TaskCheckpointing, TaskMail};

use crate::jobgraph::JobProgram;
use crate::library::JobLibrary;
use crate::network::{
    GateItem, InputGate, NetworkError, NetworkEvent, RecordDeserializer, ResultPartitionId,
    ResultPartitionWriter, ShuffleEnvironment,
};
use crate::taskexecutor::invokable::{Invokable, TaskContext, TaskError};

/// Most records a source emits per poll.
const SOURCE_BATCH: usize = 1024;

/// A poll that takes longer than this halves the next poll's batch (down to one record), a
/// quicker one doubles it (up to [`SOURCE_BATCH`]): a slow source still sees cancellation and
/// checkpoint triggers within about this time, a fast one keeps its large batches.
const SOURCE_POLL_TARGET: Duration = Duration::from_millis(2);

/// Source polls or input items between two looks at the clock for the buffer timeout.
const FLUSH_CHECK_EVERY: u32 = 16;

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
    /// The job library the program comes from; `None` for a program of `jobs`.
    pub(crate) library: Option<Arc<JobLibrary>>,
    pub(crate) program: JobProgram,
    pub(crate) vertex: usize,
    pub(crate) max_parallelism: u32,
    /// `execution.buffer-timeout.interval`: flush at least this often while busy.
    pub(crate) buffer_timeout: std::time::Duration,
    pub(crate) partitions: Vec<ResultPartitionWriter>,
    /// All input channels in one gate, with the input (edge position) each channel belongs to.
    pub(crate) gate: Option<(InputGate, Vec<usize>)>,
    /// Where the partitions are registered, to release them with the task's real failure (their
    /// consumers then fail naming the root cause, not a dropped producer).
    pub(crate) shuffle: Option<ShuffleEnvironment>,
    /// Exactly-once checkpointing, when the job has it on.
    pub(crate) checkpointing: Option<TaskCheckpointing>,
    /// `numRecordsIn` of the task's metrics: records read from the input gate.
    pub(crate) records_in: crate::metrics::Counter,
    /// `currentInputWatermark` / `currentOutputWatermark` of the task's metrics.
    pub(crate) watermarks: crate::metrics::task::TaskWatermarks,
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
/// The last watermark the task broadcast is kept in the second field (its
/// `currentOutputWatermark`).
struct PartitionOutput(ResultPartitionWriter, Arc<AtomicI64>);

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

    fn broadcast_barrier(&mut self, barrier: CheckpointBarrier) -> Result<(), String> {
        self.0
            .broadcast_event(crate::network::NetworkEvent::CheckpointBarrier {
                id: barrier.id,
                timestamp: barrier.timestamp,
                savepoint: barrier.savepoint,
            })
            .map_err(net)
    }

    fn end_of_data(&mut self) -> Result<(), String> {
        self.0.end_of_data().map_err(net)
    }

    fn broadcast_watermark(&mut self, watermark: i64) -> Result<(), String> {
        self.1.store(watermark, Ordering::Relaxed);
        self.0
            .broadcast_event(NetworkEvent::Watermark(watermark))
            .map_err(net)
    }

    fn broadcast_watermark_status(&mut self, idle: bool) -> Result<(), String> {
        self.0
            .broadcast_event(NetworkEvent::WatermarkStatus { idle })
            .map_err(net)
    }
}

/// An operator chain as a task drives it: one compiled into this node ([`VertexInstance`]) or
/// one living in a job library ([`LibraryVertex`], same methods and contract across the C ABI).
/// The task is generic over it, so the compiled-in path pays no indirection.
pub(crate) trait Chain {
    fn is_source(&self) -> bool;
    fn open(&mut self) -> Result<(), String>;
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
    fn snapshot(&mut self, barrier: CheckpointBarrier) -> Result<Vec<u8>, String>;
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String>;
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64);
    fn poll_source(&mut self, max_records: usize) -> Result<SourceStatus, String>;
    fn process_record(&mut self, input: usize, record: &[u8]) -> Result<(), String>;
    fn process_batch(&mut self, input: usize, batch: Box<dyn Any + Send>) -> Result<(), String>;
    fn end_input(&mut self) -> Result<(), String>;
    fn finish_outputs(&mut self) -> Result<(), String>;
    fn flush(&mut self) -> Result<(), String>;
    fn close(&mut self);
    fn process_watermark(&mut self, watermark: i64) -> Result<(), String>;
    fn process_watermark_status(&mut self, idle: bool) -> Result<(), String>;
    fn advance_processing_time(&mut self, now: i64) -> Result<(), String>;
    fn next_processing_time(&mut self) -> Option<i64>;
}

macro_rules! forward_chain {
    ($t:ty) => {
        impl Chain for $t {
            fn process_watermark(&mut self, watermark: i64) -> Result<(), String> {
                <$t>::process_watermark(self, watermark)
            }
            fn process_watermark_status(&mut self, idle: bool) -> Result<(), String> {
                <$t>::process_watermark_status(self, idle)
            }
            fn advance_processing_time(&mut self, now: i64) -> Result<(), String> {
                <$t>::advance_processing_time(self, now)
            }
            fn next_processing_time(&mut self) -> Option<i64> {
                <$t>::next_processing_time(self)
            }
            fn is_source(&self) -> bool {
                <$t>::is_source(self)
            }
            fn open(&mut self) -> Result<(), String> {
                <$t>::open(self)
            }
            fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
                <$t>::restore(self, snapshot)
            }
            fn snapshot(&mut self, barrier: CheckpointBarrier) -> Result<Vec<u8>, String> {
                <$t>::snapshot(self, barrier)
            }
            fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String> {
                <$t>::notify_checkpoint_complete(self, checkpoint_id)
            }
            fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
                <$t>::notify_checkpoint_aborted(self, checkpoint_id)
            }
            fn poll_source(&mut self, max_records: usize) -> Result<SourceStatus, String> {
                <$t>::poll_source(self, max_records)
            }
            fn process_record(&mut self, input: usize, record: &[u8]) -> Result<(), String> {
                <$t>::process_record(self, input, record)
            }
            fn process_batch(
                &mut self,
                input: usize,
                batch: Box<dyn Any + Send>,
            ) -> Result<(), String> {
                <$t>::process_batch(self, input, batch)
            }
            fn end_input(&mut self) -> Result<(), String> {
                <$t>::end_input(self)
            }
            fn finish_outputs(&mut self) -> Result<(), String> {
                <$t>::finish_outputs(self)
            }
            fn flush(&mut self) -> Result<(), String> {
                <$t>::flush(self)
            }
            fn close(&mut self) {
                <$t>::close(self)
            }
        }
    };
}

/// The wall clock in milliseconds since the epoch: the processing time tasks give their
/// chains.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// When the task must wake up for processing time `due` (ms since the epoch) at the latest.
fn deadline_of(due: Option<i64>) -> Option<Instant> {
    let due = due?;
    let wait = due.saturating_sub(now_millis()).max(0);
    Some(Instant::now() + Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
}

/// Hands what the watermark valve emitted to the chain: an active status before the
/// watermark, an idle status after it.
fn apply_valve<C: Chain>(
    instance: &mut C,
    out: rflink::time::ValveOutput,
    input_watermark: &AtomicI64,
) -> Result<(), String> {
    if out.status == Some(false) {
        instance.process_watermark_status(false)?;
    }
    if let Some(watermark) = out.watermark {
        input_watermark.store(watermark, Ordering::Relaxed);
        instance.process_watermark(watermark)?;
    }
    if out.status == Some(true) {
        instance.process_watermark_status(true)?;
    }
    Ok(())
}

forward_chain!(VertexInstance);
forward_chain!(LibraryVertex);

/// Where a task stands with its checkpoints.
#[derive(Debug, Default)]
struct CheckpointProgress {
    /// The input has ended (operators finished, end of data sent).
    ended_input: bool,
    /// The job's final checkpoint completed: the task may finish its partitions and end.
    final_done: bool,
    /// The newest checkpoint this task snapshotted.
    last_snapshot: u64,
    /// A source that took part in stop-with-savepoint `n` emits nothing until it completes
    /// (and the task finishes) or is aborted.
    stopping: Option<u64>,
}

/// How long a task that waits only for checkpoint messages sleeps between looks at its
/// cancellation.
const MAIL_WAIT: Duration = Duration::from_millis(50);

impl StreamTask {
    /// Runs the opened chain to its end: polls the source or reads the gate, answers checkpoint
    /// messages and barriers, and with checkpointing waits after the end of its input for the
    /// job's final checkpoint before finishing its partitions.
    fn drive<C: Chain>(
        &mut self,
        instance: &mut C,
        ctx: &TaskContext,
        failed: &dyn Fn(String) -> TaskError,
    ) -> Result<(), TaskError> {
        let cancel = Arc::clone(&ctx.cancel);
        instance.open().map_err(failed)?;
        let mut progress = CheckpointProgress::default();
        // Flink's output flusher, on the task's own thread: a busy task pushes out partly
        // filled buffers at least every buffer timeout.
        let mut last_flush = Instant::now();
        let mut since_check = 0u32;
        let buffer_timeout = self.buffer_timeout;
        let mut flush_if_due = |instance: &mut C| -> Result<(), TaskError> {
            since_check += 1;
            if since_check < FLUSH_CHECK_EVERY {
                return Ok(());
            }
            since_check = 0;
            if last_flush.elapsed() >= buffer_timeout {
                instance.flush().map_err(failed)?;
                last_flush = Instant::now();
            }
            Ok(())
        };
        let checkpointing = self.checkpointing.as_ref();
        let mut aligner = self
            .gate
            .as_ref()
            .map(|(gate, _)| BarrierAligner::new(gate.num_channels()));
        if instance.is_source() {
            // Start small: a slow source's first records go out (and its cancellation is seen)
            // after its first quick poll; a fast one reaches full batches within a few polls.
            let mut batch = 1;
            loop {
                if cancel.is_cancelled() {
                    return Err(TaskError::Canceled);
                }
                if let Some(cp) = checkpointing.filter(|cp| cp.mailbox.has_mail()) {
                    Self::handle_mail(cp, instance, &mut progress, None, failed)?;
                }
                if progress.ended_input || progress.stopping.is_some() {
                    match checkpointing {
                        Some(_) if progress.final_done => break,
                        Some(cp) => cp.mailbox.wait(MAIL_WAIT),
                        None => break,
                    }
                    continue;
                }
                instance
                    .advance_processing_time(now_millis())
                    .map_err(failed)?;
                let started = Instant::now();
                let status = instance.poll_source(batch).map_err(failed)?;
                batch = if started.elapsed() > SOURCE_POLL_TARGET {
                    (batch / 2).max(1)
                } else {
                    (batch * 2).min(SOURCE_BATCH)
                };
                match status {
                    SourceStatus::More => flush_if_due(instance)?,
                    SourceStatus::Idle => instance.flush().map_err(failed)?,
                    SourceStatus::Finished => {
                        instance.end_input().map_err(failed)?;
                        progress.ended_input = true;
                    }
                }
            }
        } else if self.gate.is_some() {
            let num_channels = self.gate.as_ref().map_or(0, |(g, _)| g.num_channels());
            let mut deserializers: Vec<RecordDeserializer> = (0..num_channels)
                .map(|_| RecordDeserializer::new())
                .collect();
            let mut end_of_data = vec![false; num_channels];
            let mut all_ended = false;
            let mut valve = rflink::time::WatermarkValve::new(num_channels);
            loop {
                if cancel.is_cancelled() {
                    return Err(TaskError::Canceled);
                }
                if let Some(cp) = checkpointing.filter(|cp| cp.mailbox.has_mail()) {
                    if Self::handle_mail(cp, instance, &mut progress, aligner.as_mut(), failed)? {
                        if let Some((gate, _)) = self.gate.as_mut() {
                            gate.resume_all();
                        }
                    }
                }
                if progress.final_done || (all_ended && checkpointing.is_none()) {
                    break;
                }
                let Some((gate, inputs)) = &mut self.gate else {
                    break;
                };
                if all_ended {
                    // Every channel ended; only checkpoint messages can come now.
                    if let Some(cp) = checkpointing {
                        cp.mailbox.wait(MAIL_WAIT);
                    }
                    continue;
                }
                if !progress.ended_input {
                    instance
                        .advance_processing_time(now_millis())
                        .map_err(failed)?;
                }
                let item = match gate.poll_next().map_err(|e| failed(e.to_string()))? {
                    Some(item) => {
                        flush_if_due(instance)?;
                        item
                    }
                    None => {
                        // Nothing to read: push out what is buffered before waiting, and wait
                        // no longer than the chain's next processing-time timer.
                        instance.flush().map_err(failed)?;
                        let due = if progress.ended_input {
                            None
                        } else {
                            instance.next_processing_time()
                        };
                        gate.next_until(deadline_of(due))
                            .map_err(|e| failed(e.to_string()))?
                    }
                };
                match item {
                    GateItem::Buffer { channel, buffer } => {
                        let input = inputs.get(channel).copied().unwrap_or(0);
                        let Some(deserializer) = deserializers.get_mut(channel) else {
                            return Err(failed(format!("no channel {channel}")));
                        };
                        let mut records = 0u64;
                        let fed = deserializer.feed(&buffer, |record| {
                            records += 1;
                            instance.process_record(input, record)
                        });
                        self.records_in.add(records);
                        fed.map_err(|e| failed(e.to_string()))?;
                    }
                    GateItem::Batch { channel, batch } => {
                        let input = inputs.get(channel).copied().unwrap_or(0);
                        self.records_in.add(batch.records() as u64);
                        instance
                            .process_batch(input, batch.take())
                            .map_err(failed)?;
                    }
                    GateItem::Event {
                        channel,
                        event:
                            NetworkEvent::CheckpointBarrier {
                                id,
                                timestamp,
                                savepoint,
                            },
                    } => {
                        let Some(cp) = checkpointing else {
                            tracing::warn!(task = %ctx.task_name, id, "a checkpoint barrier reached a task without checkpointing; ignored");
                            continue;
                        };
                        let Some(aligner) = aligner.as_mut() else {
                            continue;
                        };
                        for step in aligner.on_barrier(channel, id, timestamp, savepoint) {
                            let (gate, _) = self
                                .gate
                                .as_mut()
                                .ok_or_else(|| failed("no input gate".into()))?;
                            match step {
                                Alignment::Wait => {}
                                Alignment::Block(channel) => gate.block_channel(channel),
                                Alignment::Supersede { aborted, .. } => {
                                    gate.resume_all();
                                    (cp.responder)(checkpointing::CheckpointResponse::Decline {
                                        id: aborted,
                                        reason: format!("checkpoint {aborted} was superseded by {id} during alignment"),
                                        subsumed_by: Some(id),
                                    });
                                }
                                Alignment::Snapshot {
                                    id,
                                    timestamp,
                                    savepoint,
                                } => {
                                    gate.resume_all();
                                    let barrier = CheckpointBarrier {
                                        id,
                                        timestamp,
                                        savepoint,
                                    };
                                    snapshot(cp, instance, barrier, &mut progress);
                                }
                            }
                        }
                    }
                    GateItem::Event {
                        channel,
                        event: NetworkEvent::Watermark(watermark),
                    } => {
                        if !progress.ended_input {
                            let out = valve.input_watermark(channel, watermark);
                            apply_valve(instance, out, &self.watermarks.input).map_err(failed)?;
                        }
                    }
                    GateItem::Event {
                        channel,
                        event: NetworkEvent::WatermarkStatus { idle },
                    } => {
                        if !progress.ended_input {
                            let out = valve.input_status(channel, idle);
                            apply_valve(instance, out, &self.watermarks.input).map_err(failed)?;
                        }
                    }
                    GateItem::Event {
                        channel,
                        event: NetworkEvent::EndOfData,
                    } => {
                        if let Some(flag) = end_of_data.get_mut(channel) {
                            *flag = true;
                        }
                        if !progress.ended_input {
                            // A channel without more records no longer holds the watermark.
                            let out = valve.channel_ended(channel);
                            apply_valve(instance, out, &self.watermarks.input).map_err(failed)?;
                        }
                        if !progress.ended_input && end_of_data.iter().all(|e| *e) {
                            instance.end_input().map_err(failed)?;
                            progress.ended_input = true;
                        }
                    }
                    GateItem::Event { .. } | GateItem::Woken => {}
                    GateItem::EndOfPartition { channel } => {
                        if let Some(d) = deserializers.get(channel) {
                            d.check_complete().map_err(|e| failed(e.to_string()))?;
                        }
                        if let Some(flag) = end_of_data.get_mut(channel) {
                            *flag = true;
                        }
                        if !progress.ended_input {
                            let out = valve.channel_ended(channel);
                            apply_valve(instance, out, &self.watermarks.input).map_err(failed)?;
                        }
                        if let (Some(cp), Some(aligner)) = (checkpointing, aligner.as_mut()) {
                            if let Some(Alignment::Snapshot {
                                id,
                                timestamp,
                                savepoint,
                            }) = aligner.on_channel_ended(channel)
                            {
                                if let Some((gate, _)) = self.gate.as_mut() {
                                    gate.resume_all();
                                }
                                let barrier = CheckpointBarrier {
                                    id,
                                    timestamp,
                                    savepoint,
                                };
                                snapshot(cp, instance, barrier, &mut progress);
                            }
                        }
                    }
                    GateItem::End => {
                        all_ended = true;
                        if !progress.ended_input {
                            instance.end_input().map_err(failed)?;
                            progress.ended_input = true;
                        }
                    }
                }
            }
        }
        if !progress.ended_input {
            instance.end_input().map_err(failed)?;
        }
        instance.finish_outputs().map_err(failed)
    }

    /// Handles the checkpoint messages waiting in the mailbox. Returns true when an aborted
    /// alignment means every blocked channel must be resumed.
    fn handle_mail<C: Chain>(
        cp: &TaskCheckpointing,
        instance: &mut C,
        progress: &mut CheckpointProgress,
        mut aligner: Option<&mut BarrierAligner>,
        failed: &dyn Fn(String) -> TaskError,
    ) -> Result<bool, TaskError> {
        let mut resume = false;
        for mail in cp.mailbox.drain() {
            match mail {
                TaskMail::Trigger {
                    id,
                    timestamp,
                    savepoint,
                    terminate,
                } => {
                    if id <= progress.last_snapshot {
                        continue;
                    }
                    if !instance.is_source() {
                        // Triggered directly (all producers finished): behave like a source.
                        if let Some(aligner) = aligner.as_deref_mut() {
                            aligner.last_id = aligner.last_id.max(id);
                        }
                    }
                    let barrier = CheckpointBarrier {
                        id,
                        timestamp,
                        savepoint,
                    };
                    snapshot(cp, instance, barrier, progress);
                    if terminate && progress.last_snapshot == id {
                        progress.stopping = Some(id);
                    }
                }
                TaskMail::Complete { id, last, stop } => {
                    instance.notify_checkpoint_complete(id).map_err(failed)?;
                    if ((last && progress.ended_input) || stop) && id <= progress.last_snapshot {
                        progress.final_done = true;
                    }
                }
                TaskMail::Abort { id } => {
                    if progress.stopping == Some(id) {
                        progress.stopping = None;
                    }
                    instance.notify_checkpoint_aborted(id);
                    if let Some(aligner) = aligner.as_deref_mut() {
                        resume |= aligner.abort(id);
                    }
                }
            }
        }
        Ok(resume)
    }

    fn run(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        let cancel = Arc::clone(&ctx.cancel);
        let failed = |message: String| {
            if cancel.is_cancelled() {
                TaskError::Canceled
            } else {
                TaskError::Failed(message)
            }
        };
        let partition_ids: Vec<ResultPartitionId> = self
            .partitions
            .iter()
            .map(ResultPartitionWriter::id)
            .collect();
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

        let outputs: Vec<Box<dyn PartitionWriter>> = std::mem::take(&mut self.partitions)
            .into_iter()
            .map(|p| {
                Box::new(PartitionOutput(p, Arc::clone(&self.watermarks.output)))
                    as Box<dyn PartitionWriter>
            })
            .collect();
        let vertex_ctx = VertexContext {
            subtask_index: ctx.subtask_index,
            parallelism: ctx.parallelism,
            max_parallelism: self.max_parallelism,
            attempt_number: ctx.attempt.attempt_number,
            task_name: ctx.task_name.clone(),
            checkpointing: self.checkpointing.is_some(),
        };
        if let Some(library) = self.library.clone() {
            // The job's code lives in its library: the chain is built and runs there.
            let request = InstantiateRequest {
                entry: self.program.entry.clone(),
                args: self.program.args.clone(),
                fingerprint: self.program.fingerprint.clone(),
                vertex: self.vertex,
                context: vertex_ctx,
            };
            let instance = library
                .plugin()
                .instantiate(&request, outputs)
                .map_err(|e| {
                    TaskError::Failed(format!(
                        "cannot instantiate the operator chain from job library {}: {e}",
                        library.name()
                    ))
                })?;
            return self.run_chain(instance, ctx, &failed, &partition_ids);
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
        let instance = graph
            .instantiate(self.vertex, vertex_ctx, outputs)
            .map_err(|e| {
                TaskError::Failed(format!("cannot instantiate the operator chain: {e}"))
            })?;
        self.run_chain(instance, ctx, &failed, &partition_ids)
    }

    /// Restores the chain's state if the attempt has some, drives it to its end, and releases
    /// the partitions with the real cause when it fails.
    fn run_chain<C: Chain>(
        &mut self,
        mut instance: C,
        ctx: &TaskContext,
        failed: &dyn Fn(String) -> TaskError,
        partition_ids: &[ResultPartitionId],
    ) -> Result<(), TaskError> {
        if let Some(restore) = self.checkpointing.as_ref().and_then(|c| c.restore.as_ref()) {
            if let Some(handle) = &restore.handle {
                let bytes =
                    crate::checkpoint::storage::read_task_state(&restore.checkpoint_dir, handle)
                        .map_err(|e| {
                            TaskError::Failed(format!(
                                "cannot read the state of checkpoint {}: {e}",
                                restore.checkpoint_id
                            ))
                        })?;
                instance.restore(&bytes).map_err(|e| {
                    TaskError::Failed(format!(
                        "cannot restore checkpoint {}: {e}",
                        restore.checkpoint_id
                    ))
                })?;
                tracing::info!(task = %ctx.task_name, checkpoint = restore.checkpoint_id, "state restored");
            }
        }
        if let (Some(cp), Some((gate, _))) = (&self.checkpointing, &self.gate) {
            cp.mailbox.set_waker(gate.waker());
        }
        let result = self.drive(&mut instance, ctx, failed);
        if let (Err(err), Some(shuffle)) = (&result, &self.shuffle) {
            let cause = match err {
                TaskError::Failed(message) => {
                    format!("producer {} failed: {message}", ctx.task_name)
                }
                TaskError::Canceled => format!("producer {} was canceled", ctx.task_name),
            };
            for id in partition_ids {
                shuffle.release_partition(id, &cause);
            }
        }
        instance.close();
        result
    }
}

/// Takes this task's part of a checkpoint: copies the chain's state and emits the barrier
/// downstream (on the task thread), then writes the state and acknowledges on a writer thread.
/// A chain that cannot snapshot declines; the task goes on.
fn snapshot<C: Chain>(
    cp: &TaskCheckpointing,
    instance: &mut C,
    barrier: CheckpointBarrier,
    progress: &mut CheckpointProgress,
) {
    if barrier.id <= progress.last_snapshot {
        return;
    }
    progress.last_snapshot = barrier.id;
    let started = Instant::now();
    match instance.snapshot(barrier) {
        Ok(bytes) => {
            let sync_millis = started.elapsed().as_millis() as u64;
            checkpointing::write_and_acknowledge(
                cp,
                barrier.id,
                bytes,
                progress.ended_input,
                sync_millis,
            );
        }
        Err(reason) => {
            tracing::warn!(checkpoint = barrier.id, reason, "declining a checkpoint");
            (cp.responder)(checkpointing::CheckpointResponse::Decline {
                id: barrier.id,
                reason,
                subsumed_by: None,
            });
        }
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use rflink::{JobArgs, JobError, JobRegistry, StreamExecutionEnvironment};

    use super::*;
    use crate::network::{ChannelLocation, InputChannelSpec, NetworkConfig};
    use crate::taskexecutor::invokable::CancelSignal;
    use crate::types::{ExecutionAttemptId, ExecutionGraphId, ExecutionVertexId, JobVertexId};

    fn two_stage(env: &mut StreamExecutionEnvironment, _: &JobArgs) -> Result<(), JobError> {
        env.from_collection(vec![1u64, 2, 3])
            .rebalance()
            .collect("tasks-unit-test");
        Ok(())
    }

    fn attempt(subtask: u32) -> ExecutionAttemptId {
        ExecutionAttemptId {
            execution_graph_id: ExecutionGraphId::generate(),
            vertex: ExecutionVertexId {
                job_vertex_id: JobVertexId::generate(),
                subtask_index: subtask,
            },
            attempt_number: 0,
        }
    }

    fn setup() -> (Jobs, JobProgram, usize, u32) {
        let mut registry = JobRegistry::new();
        registry.register("two-stage", "a source and a rebalanced sink", two_stage);
        let jobs = Jobs::new(registry);
        let graph = jobs
            .0
            .build("two-stage", &JobArgs::from_args(Vec::new()))
            .expect("builds");
        let plan = graph.plan();
        let consumer = plan
            .vertices
            .iter()
            .position(|v| !v.is_source)
            .expect("a consumer vertex");
        let program = JobProgram {
            entry: "two-stage".into(),
            args: Vec::new(),
            fingerprint: plan.fingerprint.clone(),
            batch: false,
            library: None,
        };
        (
            jobs,
            program,
            consumer,
            plan.vertices[consumer].max_parallelism,
        )
    }

    /// The consumer vertex's task with no outputs.
    fn consumer_task(
        jobs: Jobs,
        program: JobProgram,
        vertex: usize,
        max_parallelism: u32,
        gate: Option<(InputGate, Vec<usize>)>,
    ) -> StreamTask {
        StreamTask {
            jobs,
            library: None,
            program,
            vertex,
            max_parallelism,
            buffer_timeout: std::time::Duration::from_millis(100),
            partitions: Vec::new(),
            gate,
            shuffle: None,
            checkpointing: None,
            records_in: Default::default(),
            watermarks: Default::default(),
        }
    }

    fn context(cancel: Arc<CancelSignal>) -> TaskContext {
        TaskContext {
            attempt: attempt(0),
            task_name: "Sink (1/1)".into(),
            subtask_index: 0,
            parallelism: 1,
            config: Default::default(),
            cancel,
        }
    }

    /// A producer that answers a partition request with garbage fails the consuming task with
    /// an error naming the peer; the TaskExecutor's data plane keeps serving.
    #[test]
    fn a_malformed_data_frame_fails_the_consuming_task_with_a_clear_error() {
        let (jobs, program, consumer, max_parallelism) = setup();
        let env = ShuffleEnvironment::start(NetworkConfig::default(), "127.0.0.1", "127.0.0.1", 0)
            .expect("data plane starts");
        let fake = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let fake_address = fake.local_addr().expect("address").to_string();
        let server = std::thread::spawn(move || {
            if let Ok((mut socket, _)) = fake.accept() {
                let mut preamble = [0u8; 6];
                let _ = socket.read_exact(&mut preamble);
                let _ = socket.write_all(b"RFDP\x00\x01");
                let _ = socket.write_all(&[0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4]);
                let mut rest = Vec::new();
                let _ = socket.read_to_end(&mut rest);
            }
        });
        let gate = env
            .create_input_gate(vec![InputChannelSpec {
                partition: ResultPartitionId {
                    producer: attempt(0),
                    result_index: 0,
                },
                subpartition: 0,
                location: ChannelLocation::Remote {
                    address: fake_address.clone(),
                },
            }])
            .expect("gate");
        let mut task = consumer_task(
            jobs,
            program,
            consumer,
            max_parallelism,
            Some((gate, vec![0])),
        );
        let outcome = task.invoke(&context(Arc::new(CancelSignal::default())));
        let Err(TaskError::Failed(message)) = outcome else {
            panic!("the task must fail, got {outcome:?}");
        };
        assert!(message.contains(&fake_address), "names the peer: {message}");
        assert!(
            message.to_lowercase().contains("protocol") || message.contains("magic"),
            "says what was wrong: {message}"
        );
        drop(task);
        let _ = server.join();

        // The data plane still serves: a local partition and gate move a record.
        let id = ResultPartitionId {
            producer: attempt(0),
            result_index: 0,
        };
        let mut writer = env
            .create_result_partition(id, vec![true])
            .expect("partition");
        let mut gate = env
            .create_input_gate(vec![InputChannelSpec {
                partition: id,
                subpartition: 0,
                location: ChannelLocation::Local,
            }])
            .expect("gate");
        writer
            .write_batch(0, Box::new(vec![7u64]), 1)
            .expect("write");
        writer.finish().expect("finish");
        let mut got = Vec::new();
        loop {
            match gate.next().expect("reads") {
                crate::network::GateItem::Batch { batch, .. } => {
                    let records = batch.take().downcast::<Vec<u64>>().expect("a Vec<u64>");
                    got.extend(*records);
                }
                crate::network::GateItem::End => break,
                _ => {}
            }
        }
        assert_eq!(got, vec![7]);
        env.shutdown();
    }

    /// A TaskExecutor whose build of the job differs from the client's refuses to run it.
    #[test]
    fn a_fingerprint_mismatch_fails_the_task() {
        let (jobs, mut program, consumer, max_parallelism) = setup();
        program.fingerprint = "0123456789abcdef0123456789abcdef".into();
        let mut task = consumer_task(jobs, program, consumer, max_parallelism, None);
        let outcome = task.invoke(&context(Arc::new(CancelSignal::default())));
        let Err(TaskError::Failed(message)) = outcome else {
            panic!("the task must fail, got {outcome:?}");
        };
        assert!(message.contains("fingerprint"), "{message}");
    }

    /// A cancelled task blocked on its input returns at once as canceled.
    #[test]
    fn cancellation_interrupts_a_task_blocked_on_input() {
        let (jobs, program, consumer, max_parallelism) = setup();
        let env = ShuffleEnvironment::start(NetworkConfig::default(), "127.0.0.1", "127.0.0.1", 0)
            .expect("data plane starts");
        let id = ResultPartitionId {
            producer: attempt(0),
            result_index: 0,
        };
        // The producer registers but never writes: the consumer blocks in `next()`.
        let _writer = env
            .create_result_partition(id, vec![true])
            .expect("partition");
        let gate = env
            .create_input_gate(vec![InputChannelSpec {
                partition: id,
                subpartition: 0,
                location: ChannelLocation::Local,
            }])
            .expect("gate");
        let mut task = consumer_task(
            jobs,
            program,
            consumer,
            max_parallelism,
            Some((gate, vec![0])),
        );
        let cancel = Arc::new(CancelSignal::default());
        let ctx = context(Arc::clone(&cancel));
        let thread = std::thread::spawn(move || task.invoke(&ctx));
        // Cancel whenever: before the task blocks (the hook runs at once when registered) or
        // while it is blocked (the hook interrupts the gate).
        cancel.cancel();
        assert_eq!(thread.join().expect("joins"), Err(TaskError::Canceled));
        env.shutdown();
    }
}
