//! Test support: the in-process registry behind `DataStream::collect`, and [`LocalExecutor`],
//! which runs a whole [`StreamGraph`] on the calling thread with fake [`PartitionWriter`]s.
//!
//! Both work only inside one process: records collected by a job running on a cluster of
//! separate processes are not visible here.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use crate::task::{PartitionWriter, VertexContext, VertexInstance};
use crate::time::{ValveOutput, WatermarkValve};
use crate::{Partitioner, SourceStatus, StreamGraph};

type Registry = Mutex<HashMap<String, Box<dyn Any + Send>>>;

fn registry() -> &'static Registry {
    static COLLECTED: OnceLock<Registry> = OnceLock::new();
    COLLECTED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Appends `records` to the collection `name`.
pub(crate) fn append_collected<T: Send + 'static>(
    name: &str,
    records: Vec<T>,
) -> Result<(), String> {
    let mut map = registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = map
        .entry(name.to_owned())
        .or_insert_with(|| Box::new(Vec::<T>::new()));
    match entry.downcast_mut::<Vec<T>>() {
        Some(collected) => {
            collected.extend(records);
            Ok(())
        }
        None => Err(format!(
            "collect sink {name:?}: the collection already holds records of another type than {}",
            std::any::type_name::<T>()
        )),
    }
}

/// Takes (and removes) everything collected under `name` by `DataStream::collect`. Empty when
/// nothing was collected or the records are not of type `T` (they are then left in place).
///
/// In-process only: the job must have run in this process.
pub fn take_collected<T: Clone + 'static>(name: &str) -> Vec<T> {
    let mut map = registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(entry) = map.remove(name) else {
        return Vec::new();
    };
    match entry.downcast::<Vec<T>>() {
        Ok(records) => *records,
        Err(entry) => {
            map.insert(name.to_owned(), entry);
            Vec::new()
        }
    }
}

/// How the [`LocalExecutor`]'s fake writers hand records over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeMode {
    /// Every subpartition is local: typed batches.
    Typed,
    /// Every subpartition is remote: serialized records.
    Serialized,
    /// Even subpartitions local, odd ones serialized.
    Mixed,
}

enum Payload {
    Record(Vec<u8>),
    Batch(Box<dyn Any + Send>),
    Watermark(i64),
    Status(bool),
    End,
}

struct Delivery {
    input: usize,
    /// The consumer's input channel: one per (input edge, producer subtask); a Forward edge
    /// has one.
    channel: usize,
    payload: Payload,
}

/// Where a subpartition goes: the consumer's inbox, input index and channel.
#[derive(Clone)]
struct Target {
    inbox: Inbox,
    input: usize,
    channel: usize,
}

impl Target {
    fn deliver(&self, payload: Payload) {
        push(
            &self.inbox,
            Delivery {
                input: self.input,
                channel: self.channel,
                payload,
            },
        );
    }
}

type Inbox = Arc<Mutex<VecDeque<Delivery>>>;

fn push(inbox: &Inbox, delivery: Delivery) {
    inbox
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push_back(delivery);
}

/// A fake writer: serialized records are held back until `buffer_records` pile up or `flush`,
/// so a missing flush shows up as lost records.
struct FakeWriter {
    targets: Vec<Target>,
    local: Vec<bool>,
    batch_records: usize,
    buffer_records: usize,
    pending: Vec<Vec<Vec<u8>>>,
    finished: bool,
}

impl FakeWriter {
    fn check_open(&self) -> Result<(), String> {
        if self.finished {
            Err("write after finish".to_owned())
        } else {
            Ok(())
        }
    }

    fn release(&mut self, subpartition: usize) {
        let target = &self.targets[subpartition];
        for record in self.pending[subpartition].drain(..) {
            target.deliver(Payload::Record(record));
        }
    }

    /// Delivers `payload` to every subpartition, behind the records written before.
    fn broadcast(&mut self, payload: impl Fn() -> Payload) -> Result<(), String> {
        self.check_open()?;
        for s in 0..self.targets.len() {
            self.release(s);
            self.targets[s].deliver(payload());
        }
        Ok(())
    }
}

impl PartitionWriter for FakeWriter {
    fn num_subpartitions(&self) -> usize {
        self.targets.len()
    }
    fn is_local(&self, subpartition: usize) -> bool {
        self.local.get(subpartition).copied().unwrap_or(false)
    }
    fn local_batch_records(&self) -> usize {
        self.batch_records
    }
    fn write_record(&mut self, subpartition: usize, record: &[u8]) -> Result<(), String> {
        self.check_open()?;
        let pending = self
            .pending
            .get_mut(subpartition)
            .ok_or_else(|| format!("subpartition {subpartition} out of range"))?;
        pending.push(record.to_vec());
        if pending.len() >= self.buffer_records {
            self.release(subpartition);
        }
        Ok(())
    }
    fn write_batch(
        &mut self,
        subpartition: usize,
        batch: Box<dyn Any + Send>,
        records: usize,
    ) -> Result<(), String> {
        self.check_open()?;
        if subpartition >= self.targets.len() {
            return Err(format!("subpartition {subpartition} out of range"));
        }
        if records == 0 || records > self.batch_records {
            return Err(format!(
                "batch of {records} records, limit {}",
                self.batch_records
            ));
        }
        self.release(subpartition);
        self.targets[subpartition].deliver(Payload::Batch(batch));
        Ok(())
    }
    fn broadcast_watermark(&mut self, watermark: i64) -> Result<(), String> {
        self.broadcast(|| Payload::Watermark(watermark))
    }
    fn broadcast_watermark_status(&mut self, idle: bool) -> Result<(), String> {
        self.broadcast(|| Payload::Status(idle))
    }
    fn flush(&mut self) -> Result<(), String> {
        for s in 0..self.targets.len() {
            self.release(s);
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<(), String> {
        self.check_open()?;
        self.finished = true;
        self.flush()
    }
}

struct Subtask {
    instance: VertexInstance,
    inbox: Inbox,
    ends_expected: usize,
    ends_seen: usize,
    end_targets: Vec<Target>,
    /// Combines the watermarks and idleness of the input channels.
    valve: WatermarkValve,
    done: bool,
}

impl Subtask {
    fn finish(&mut self) -> Result<(), String> {
        // No checkpoints here: the partitions end right after the input.
        self.instance.end_input()?;
        self.instance.finish_outputs()?;
        for target in &self.end_targets {
            target.deliver(Payload::End);
        }
        self.done = true;
        Ok(())
    }

    /// Hands what the valve emitted to the instance: a status turning active first, a turn to
    /// idle last.
    fn apply(&mut self, out: ValveOutput) -> Result<(), String> {
        if out.status == Some(false) {
            self.instance.process_watermark_status(false)?;
        }
        if let Some(watermark) = out.watermark {
            self.instance.process_watermark(watermark)?;
        }
        if out.status == Some(true) {
            self.instance.process_watermark_status(true)?;
        }
        Ok(())
    }
}

/// Runs every subtask of a bounded job on the calling thread, wiring outputs to inputs as the
/// plan says: Forward edges connect subtask `i` to subtask `i`, other edges connect
/// subpartition `j` to consumer subtask `j`.
///
/// Time is deterministic: watermarks and idleness travel in order with the records, each
/// consumer subtask combines its input channels (one per input edge and producer subtask) with
/// a [`WatermarkValve`], and processing time is a clock that starts at
/// `processing_time_start` and advances by `processing_time_step_ms` every executor round
/// (every running subtask is told with [`VertexInstance::advance_processing_time`]).
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    /// How records are exchanged.
    pub mode: ExchangeMode,
    /// `local_batch_records` reported by the fake writers.
    pub batch_records: usize,
    /// Serialized records a fake writer holds back before delivering them.
    pub buffer_records: usize,
    /// `max_records` for each source poll.
    pub poll_records: usize,
    /// The processing time of the first round (ms).
    pub processing_time_start: i64,
    /// How far processing time advances per round (ms).
    pub processing_time_step_ms: i64,
}

impl LocalExecutor {
    /// An executor with small batches (7 records) and buffers (5 records), so that batching
    /// and flushing are exercised; processing time starts at 0 and advances 50 ms per round
    /// (the default 200 ms periodic watermarks go out every 4 rounds).
    pub fn new(mode: ExchangeMode) -> Self {
        LocalExecutor {
            mode,
            batch_records: 7,
            buffer_records: 5,
            poll_records: 16,
            processing_time_start: 0,
            processing_time_step_ms: 50,
        }
    }

    /// Runs `graph` to completion.
    ///
    /// # Errors
    /// The first error of any subtask (prefixed with its task name), or a stall.
    pub fn run(&self, graph: &StreamGraph) -> Result<(), String> {
        let plan = graph.plan_ref();
        if !plan.bounded {
            return Err("the local executor runs bounded jobs only".to_owned());
        }
        let inboxes: Vec<Vec<Inbox>> = plan
            .vertices
            .iter()
            .map(|v| (0..v.parallelism).map(|_| Inbox::default()).collect())
            .collect();
        // Per vertex and input: the first channel of that input; one channel per producer
        // subtask (one for a Forward edge).
        let channels_of = |e: usize| match plan.edges[e].partitioner {
            Partitioner::Forward => 1,
            _ => plan.vertices[plan.edges[e].source_vertex].parallelism as usize,
        };
        let first_channel: Vec<Vec<usize>> = plan
            .vertices
            .iter()
            .map(|v| {
                let mut next = 0;
                v.inputs
                    .iter()
                    .map(|&e| {
                        let first = next;
                        next += channels_of(e);
                        first
                    })
                    .collect()
            })
            .collect();
        let mut subtasks: Vec<Vec<Subtask>> = Vec::new();
        for (v, vertex) in plan.vertices.iter().enumerate() {
            let mut row = Vec::new();
            let ends_expected: usize = vertex.inputs.iter().map(|&e| channels_of(e)).sum();
            for i in 0..vertex.parallelism {
                let mut writers: Vec<Box<dyn PartitionWriter>> = Vec::new();
                let mut end_targets = Vec::new();
                for &e in &vertex.outputs {
                    let edge = plan.edges[e];
                    let target = &plan.vertices[edge.target_vertex];
                    let input = target.inputs.iter().position(|&x| x == e).unwrap_or(0);
                    let consumers: Vec<usize> = match edge.partitioner {
                        Partitioner::Forward => vec![i as usize],
                        _ => (0..target.parallelism as usize).collect(),
                    };
                    let channel = first_channel[edge.target_vertex]
                        .get(input)
                        .copied()
                        .unwrap_or(0)
                        + match edge.partitioner {
                            Partitioner::Forward => 0,
                            _ => i as usize,
                        };
                    let targets: Vec<Target> = consumers
                        .iter()
                        .map(|&c| Target {
                            inbox: inboxes[edge.target_vertex][c].clone(),
                            input,
                            channel,
                        })
                        .collect();
                    end_targets.extend(targets.iter().cloned());
                    let local = (0..targets.len())
                        .map(|s| match self.mode {
                            ExchangeMode::Typed => true,
                            ExchangeMode::Serialized => false,
                            ExchangeMode::Mixed => s % 2 == 0,
                        })
                        .collect();
                    writers.push(Box::new(FakeWriter {
                        pending: targets.iter().map(|_| Vec::new()).collect(),
                        targets,
                        local,
                        batch_records: self.batch_records,
                        buffer_records: self.buffer_records.max(1),
                        finished: false,
                    }));
                }
                let ctx = VertexContext {
                    subtask_index: i,
                    parallelism: vertex.parallelism,
                    max_parallelism: vertex.max_parallelism,
                    attempt_number: 0,
                    task_name: format!("{} ({}/{})", vertex.name, i + 1, vertex.parallelism),
                    checkpointing: false,
                };
                let instance = graph
                    .instantiate(v, ctx, writers)
                    .map_err(|e| e.to_string())?;
                row.push(Subtask {
                    instance,
                    inbox: inboxes[v][i as usize].clone(),
                    ends_expected,
                    ends_seen: 0,
                    end_targets,
                    valve: WatermarkValve::new(ends_expected),
                    done: false,
                });
            }
            subtasks.push(row);
        }
        let result = self.drive(&mut subtasks);
        for subtask in subtasks.iter_mut().flatten() {
            subtask.instance.close();
        }
        result
    }

    fn drive(&self, subtasks: &mut [Vec<Subtask>]) -> Result<(), String> {
        let with_name = |s: &Subtask, e: String| format!("{}: {e}", s.instance.task_name());
        for s in subtasks.iter_mut().flatten() {
            s.instance.open().map_err(|e| with_name(s, e))?;
        }
        let mut round = 0u64;
        loop {
            let now = self.processing_time_start.saturating_add(
                self.processing_time_step_ms
                    .saturating_mul(i64::try_from(round).unwrap_or(i64::MAX)),
            );
            round += 1;
            let mut progress = false;
            for s in subtasks.iter_mut().flatten().filter(|s| !s.done) {
                s.instance
                    .advance_processing_time(now)
                    .map_err(|e| with_name(s, e))?;
            }
            for s in subtasks.iter_mut().flatten() {
                if s.done {
                    continue;
                }
                if s.instance.is_source() {
                    progress = true;
                    let status = s
                        .instance
                        .poll_source(self.poll_records)
                        .map_err(|e| with_name(s, e))?;
                    if status == SourceStatus::Finished {
                        s.finish().map_err(|e| with_name(s, e))?;
                    }
                    continue;
                }
                loop {
                    let next = s
                        .inbox
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .pop_front();
                    let Some(delivery) = next else { break };
                    progress = true;
                    let result = match delivery.payload {
                        Payload::Record(bytes) => s.instance.process_record(delivery.input, &bytes),
                        Payload::Batch(batch) => s.instance.process_batch(delivery.input, batch),
                        Payload::Watermark(watermark) => {
                            let out = s.valve.input_watermark(delivery.channel, watermark);
                            s.apply(out)
                        }
                        Payload::Status(idle) => {
                            let out = s.valve.input_status(delivery.channel, idle);
                            s.apply(out)
                        }
                        Payload::End => {
                            s.ends_seen += 1;
                            if s.ends_seen == s.ends_expected {
                                s.finish()
                            } else if s.instance.uses_time() {
                                let out = s.valve.channel_ended(delivery.channel);
                                s.apply(out)
                            } else {
                                Ok(())
                            }
                        }
                    };
                    result.map_err(|e| with_name(s, e))?;
                }
            }
            if subtasks.iter().flatten().all(|s| s.done) {
                return Ok(());
            }
            if !progress || round.is_multiple_of(7) {
                for s in subtasks.iter_mut().flatten().filter(|s| !s.done) {
                    s.instance.flush().map_err(|e| with_name(s, e))?;
                }
                let queued = subtasks.iter().flatten().any(|s| {
                    !s.inbox
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .is_empty()
                });
                if !progress && !queued {
                    return Err("the job stalled: no subtask can make progress".to_owned());
                }
            }
        }
    }
}

/// Runs `graph` with a [`LocalExecutor`] in `mode`.
///
/// # Errors
/// As [`LocalExecutor::run`].
pub fn execute_locally(graph: &StreamGraph, mode: ExchangeMode) -> Result<(), String> {
    LocalExecutor::new(mode).run(graph)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{
        Collector, EndOfInputContext, KeyedContext, KeyedProcessFunction, MapState, RuntimeMode,
        SinkFunction, StateRegistry, StreamExecutionEnvironment, ValueState,
    };

    const MODES: [ExchangeMode; 3] = [
        ExchangeMode::Typed,
        ExchangeMode::Serialized,
        ExchangeMode::Mixed,
    ];

    fn lines() -> Vec<String> {
        let words = [
            "to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis",
        ];
        let mut rng = crate::SplitMix64::new(3);
        (0..200)
            .map(|_| {
                let n = rng.gen_range(12) as usize;
                (0..n)
                    .map(|_| words[rng.gen_range(words.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    fn reference(lines: &[String]) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        for line in lines {
            for word in line.split_whitespace() {
                *counts.entry(word.to_owned()).or_insert(0) += 1;
            }
        }
        counts
    }

    fn word_count(parallelism: u32, mode: RuntimeMode, sink: &str) -> StreamGraph {
        word_count_keyed(parallelism, mode, sink, false)
    }

    /// `borrowed`: the key selector borrows the word (`key_by_ref`) instead of copying it.
    fn word_count_keyed(
        parallelism: u32,
        mode: RuntimeMode,
        sink: &str,
        borrowed: bool,
    ) -> StreamGraph {
        let mut env = StreamExecutionEnvironment::new();
        env.set_parallelism(parallelism);
        env.set_runtime_mode(mode);
        let words = env.from_collection(lines()).flat_map(
            |line: String, out: &mut dyn Collector<(String, u64)>| {
                for word in line.split_whitespace() {
                    out.collect((word.to_owned(), 1));
                }
            },
        );
        let keyed = if borrowed {
            words.key_by_ref(|t: &(String, u64)| &t.0)
        } else {
            words.key_by(|t: &(String, u64)| t.0.clone())
        };
        keyed.sum(|t: &mut (String, u64)| &mut t.1).collect(sink);
        env.stream_graph().unwrap()
    }

    #[test]
    fn borrowed_keys_count_like_owned_keys() {
        let expected = reference(&lines());
        for parallelism in 1..=4 {
            for mode in MODES {
                for runtime_mode in [RuntimeMode::Batch, RuntimeMode::Streaming] {
                    let sink = format!("wc-ref-{parallelism}-{mode:?}-{runtime_mode:?}");
                    let graph = word_count_keyed(parallelism, runtime_mode, &sink, true);
                    execute_locally(&graph, mode).unwrap();
                    let mut last: HashMap<String, u64> = HashMap::new();
                    for (word, count) in take_collected::<(String, u64)>(&sink) {
                        last.insert(word, count);
                    }
                    assert_eq!(last, expected, "p={parallelism} {mode:?} {runtime_mode:?}");
                }
            }
        }
    }

    #[test]
    fn word_count_matches_reference_in_batch_mode() {
        let expected = reference(&lines());
        for parallelism in 1..=4 {
            for mode in MODES {
                let sink = format!("wc-batch-{parallelism}-{mode:?}");
                let graph = word_count(parallelism, RuntimeMode::Automatic, &sink);
                assert!(graph.batch_emission());
                execute_locally(&graph, mode).unwrap();
                let got = take_collected::<(String, u64)>(&sink);
                assert_eq!(got.len(), expected.len(), "one record per key");
                let got: HashMap<String, u64> = got.into_iter().collect();
                assert_eq!(got, expected, "p={parallelism} {mode:?}");
            }
        }
    }

    #[test]
    fn word_count_emits_every_update_in_streaming_mode() {
        let expected = reference(&lines());
        let total: u64 = expected.values().sum();
        for parallelism in 1..=4 {
            for mode in MODES {
                let sink = format!("wc-stream-{parallelism}-{mode:?}");
                let graph = word_count(parallelism, RuntimeMode::Streaming, &sink);
                assert!(!graph.batch_emission());
                execute_locally(&graph, mode).unwrap();
                let got = take_collected::<(String, u64)>(&sink);
                assert_eq!(got.len() as u64, total, "one update per word");
                let mut last: HashMap<String, u64> = HashMap::new();
                for (word, count) in got {
                    // Updates of one key arrive in order: 1, 2, 3, ...
                    let prev = last.insert(word, count).unwrap_or(0);
                    assert_eq!(count, prev + 1);
                }
                assert_eq!(last, expected, "p={parallelism} {mode:?}");
            }
        }
    }

    #[test]
    fn reduce_union_and_partitioners_deliver_every_record() {
        for mode in MODES {
            let sink = format!("reduce-union-{mode:?}");
            let mut env = StreamExecutionEnvironment::new();
            env.set_parallelism(3);
            let a = env.generate_sequence(1, 100);
            let b = env.generate_sequence(101, 200).set_parallelism(2).shuffle();
            let c = env.generate_sequence(201, 300).rebalance();
            a.union(&[b, c])
                .map(|x| (x % 5, x))
                .set_parallelism(2)
                .key_by(|t: &(u64, u64)| t.0)
                .reduce(|a, b| (a.0, a.1 + b.1))
                .set_parallelism(4)
                .collect(&sink);
            let graph = env.stream_graph().unwrap();
            execute_locally(&graph, mode).unwrap();
            let mut got = take_collected::<(u64, u64)>(&sink);
            got.sort_unstable();
            let expected: Vec<(u64, u64)> = (0..5)
                .map(|k| (k, (1..=300).filter(|x| x % 5 == k).sum()))
                .collect();
            assert_eq!(got, expected, "{mode:?}");
        }
    }

    #[test]
    fn broadcast_reaches_every_subtask() {
        let sink = "broadcast";
        let mut env = StreamExecutionEnvironment::new();
        env.from_collection(vec![1u32, 2, 3])
            .broadcast()
            .map(|x| x * 10)
            .set_parallelism(3)
            .collect(sink)
            .set_parallelism(3);
        execute_locally(&env.stream_graph().unwrap(), ExchangeMode::Mixed).unwrap();
        let mut got = take_collected::<u32>(sink);
        got.sort_unstable();
        assert_eq!(got, vec![10, 10, 10, 20, 20, 20, 30, 30, 30]);
    }

    #[test]
    fn generator_output_does_not_depend_on_parallelism() {
        let run = |parallelism: u32| {
            let sink = format!("generator-{parallelism}");
            let mut env = StreamExecutionEnvironment::new();
            env.set_parallelism(parallelism);
            env.from_generator(Some(500), 42, |rng, n| (n, rng.next_u64()))
                .collect(&sink);
            execute_locally(&env.stream_graph().unwrap(), ExchangeMode::Typed).unwrap();
            let mut got = take_collected::<(u64, u64)>(&sink);
            got.sort_unstable();
            got
        };
        let one = run(1);
        assert_eq!(one.len(), 500);
        assert!(one.iter().enumerate().all(|(i, (n, _))| *n == i as u64));
        for p in 2..=5 {
            assert_eq!(run(p), one, "p={p}");
        }
    }

    #[derive(Clone, Default)]
    struct Dedup {
        count: ValueState<u64>,
        seen: MapState<u64, ()>,
    }

    impl KeyedProcessFunction<u64, (u64, u64), (u64, u64, u64)> for Dedup {
        fn open(&mut self, state: &mut StateRegistry<u64>) -> Result<(), String> {
            self.count = state.value_state("count");
            self.seen = state.map_state("seen");
            Ok(())
        }

        fn process_element(
            &mut self,
            (key, value): (u64, u64),
            ctx: &mut KeyedContext<'_, u64>,
            out: &mut dyn Collector<(u64, u64, u64)>,
        ) {
            assert_eq!(*ctx.key(), key);
            if ctx.map_contains(&self.seen, &value) {
                return;
            }
            ctx.map_put(&self.seen, value, ());
            let count = ctx.value(&self.count).copied().unwrap_or(0) + 1;
            ctx.update(&self.count, count);
            out.collect((key, value, count));
        }

        fn end_of_input(
            &mut self,
            ctx: &mut EndOfInputContext<'_, u64>,
            out: &mut dyn Collector<(u64, u64, u64)>,
        ) {
            for (key, count) in ctx.value_entries(&self.count) {
                out.collect((*key, u64::MAX, *count));
            }
        }
    }

    #[test]
    fn keyed_process_function_keeps_state_per_key() {
        for parallelism in [1, 3] {
            let sink = format!("process-{parallelism}");
            let mut env = StreamExecutionEnvironment::new();
            env.set_parallelism(parallelism);
            // Keys 0..4, values repeat: every (key, value) pair occurs three times.
            let input: Vec<(u64, u64)> = (0..60).map(|i| (i % 4, (i / 4) % 5)).collect();
            env.from_collection(input)
                .key_by(|t: &(u64, u64)| t.0)
                .process(Dedup::default())
                .collect(&sink);
            execute_locally(&env.stream_graph().unwrap(), ExchangeMode::Serialized).unwrap();
            let got = take_collected::<(u64, u64, u64)>(&sink);
            let (totals, updates): (Vec<_>, Vec<_>) =
                got.into_iter().partition(|t| t.1 == u64::MAX);
            let mut totals: Vec<(u64, u64)> = totals.into_iter().map(|t| (t.0, t.2)).collect();
            totals.sort_unstable();
            assert_eq!(totals, vec![(0, 5), (1, 5), (2, 5), (3, 5)]);
            assert_eq!(updates.len(), 20);
            for key in 0..4 {
                let mut counts: Vec<u64> =
                    updates.iter().filter(|t| t.0 == key).map(|t| t.2).collect();
                counts.sort_unstable();
                assert_eq!(counts, vec![1, 2, 3, 4, 5]);
            }
        }
    }

    static SINK_CLOSES: AtomicUsize = AtomicUsize::new(0);

    struct FailingSink;

    impl SinkFunction<u64> for FailingSink {
        fn invoke(&mut self, value: u64) -> Result<(), String> {
            if value == 50 {
                Err("value 50 rejected".into())
            } else {
                Ok(())
            }
        }
        fn close(&mut self) {
            SINK_CLOSES.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn sink_errors_fail_the_task_and_close_runs() {
        let mut env = StreamExecutionEnvironment::new();
        env.generate_sequence(1, 100)
            .add_sink("failing", || FailingSink);
        let err = execute_locally(&env.stream_graph().unwrap(), ExchangeMode::Typed).unwrap_err();
        assert!(err.contains("value 50 rejected"), "{err}");
        assert!(err.contains("Sink: failing"), "{err}");
        assert_eq!(SINK_CLOSES.load(Ordering::SeqCst), 1);
    }

    struct BrokenWriter {
        calls: usize,
    }

    impl PartitionWriter for BrokenWriter {
        fn num_subpartitions(&self) -> usize {
            1
        }
        fn is_local(&self, _subpartition: usize) -> bool {
            false
        }
        fn local_batch_records(&self) -> usize {
            1
        }
        fn write_record(&mut self, _subpartition: usize, _record: &[u8]) -> Result<(), String> {
            self.calls += 1;
            if self.calls > 3 {
                Err("connection lost".into())
            } else {
                Ok(())
            }
        }
        fn write_batch(
            &mut self,
            _: usize,
            _: Box<dyn Any + Send>,
            _: usize,
        ) -> Result<(), String> {
            Err("unexpected batch".into())
        }
        fn flush(&mut self) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn writer_errors_surface_from_the_instance() {
        let mut env = StreamExecutionEnvironment::new();
        env.generate_sequence(1, 100)
            .map(|x| x * 2)
            .disable_chaining()
            .collect("writer-errors");
        let graph = env.stream_graph().unwrap();
        let plan = graph.plan();
        assert_eq!(plan.vertices.len(), 3);
        let ctx = |name: &str| VertexContext {
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt_number: 0,
            task_name: name.to_owned(),
            checkpointing: false,
        };
        let mut source = graph
            .instantiate(0, ctx("src"), vec![Box::new(BrokenWriter { calls: 0 })])
            .unwrap();
        assert!(source.is_source());
        assert!(source.poll_source(2).is_err(), "not open yet");
        source.open().unwrap();
        assert_eq!(source.poll_source(2), Ok(SourceStatus::More));
        let err = source.poll_source(10).unwrap_err();
        assert_eq!(err, "connection lost");
        assert_eq!(source.flush().unwrap_err(), "connection lost");
        assert_eq!(source.end_input().unwrap_err(), "connection lost");
        source.close();
        source.close();

        // The middle vertex decodes records and rejects garbage and wrong batches.
        let mut map = graph
            .instantiate(1, ctx("map"), vec![Box::new(BrokenWriter { calls: 0 })])
            .unwrap();
        assert!(!map.is_source());
        map.open().unwrap();
        map.process_record(0, &7u64.to_le_bytes()).unwrap();
        assert!(map
            .process_record(0, &[1, 2])
            .unwrap_err()
            .contains("cannot decode"));
        assert!(map
            .process_record(1, &7u64.to_le_bytes())
            .unwrap_err()
            .contains("out of range"));
        assert!(map
            .process_batch(0, Box::new(vec![1u8]))
            .unwrap_err()
            .contains("not a Vec<u64>"));
        map.process_batch(0, Box::new(vec![1u64, 2])).unwrap();
        assert!(map.poll_source(1).is_err());
        assert_eq!(
            map.process_batch(0, Box::new(vec![3u64])).unwrap_err(),
            "connection lost"
        );
        map.close();

        // Mismatched contexts and writers are rejected.
        assert!(graph.instantiate(5, ctx("x"), vec![]).is_err());
        assert!(graph.instantiate(0, ctx("x"), vec![]).is_err());
        let mut wrong = ctx("x");
        wrong.parallelism = 2;
        assert!(graph
            .instantiate(0, wrong, vec![Box::new(BrokenWriter { calls: 0 })])
            .is_err());
    }

    #[test]
    fn instances_can_be_created_many_times_from_one_graph() {
        let graph = word_count(2, RuntimeMode::Automatic, "wc-reuse");
        for _ in 0..3 {
            execute_locally(&graph, ExchangeMode::Mixed).unwrap();
        }
        let got = take_collected::<(String, u64)>("wc-reuse");
        let counts: u64 = got.iter().map(|t| t.1).sum();
        assert_eq!(counts, 3 * reference(&lines()).values().sum::<u64>());
    }

    #[test]
    fn take_collected_with_wrong_type_leaves_records() {
        append_collected("typed", vec![1u8, 2]).unwrap();
        assert!(take_collected::<String>("typed").is_empty());
        assert!(append_collected("typed", vec![String::new()]).is_err());
        assert_eq!(take_collected::<u8>("typed"), vec![1, 2]);
        assert!(take_collected::<u8>("typed").is_empty());
    }
}
