//! The whole boundary in one process: the library side's exports driven through the node side's
//! wrappers, exactly as a loaded library would be (only `dlopen` is missing).

use std::any::Any;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use std::time::Duration;

use super::host::{CallError, LibraryVertex, Plugin};
use super::*;
use crate::task::{CheckpointBarrier, PartitionWriter, VertexInstance};
use crate::time::{WatermarkStrategy, MAX_WATERMARK};
use crate::{
    Collector, JobArgs, JobError, JobRegistry, KeyedContext, KeyedProcessFunction, SourceStatus,
    StreamExecutionEnvironment,
};

fn word_count(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    let words: u64 = args.parse_or("words", 50)?;
    env.set_parallelism(1);
    env.configure("pipeline.name", "abi");
    env.set_runtime_mode(crate::RuntimeMode::Streaming);
    let lines: Vec<String> = (0..words)
        .map(|i| format!("w{} w{}", i % 7, i % 3))
        .collect();
    env.from_collection(lines)
        .flat_map(|line: String, out| {
            for w in line.split_whitespace() {
                out.collect((w.to_string(), 1u64));
            }
        })
        .key_by(|(w, _): &(String, u64)| w.clone())
        .sum(|p: &mut (String, u64)| &mut p.1)
        .collect("abi-word-count");
    Ok(())
}

fn panicky(env: &mut StreamExecutionEnvironment, _: &JobArgs) -> Result<(), JobError> {
    env.set_parallelism(1);
    env.from_collection(vec!["fine".to_string(), "boom".to_string()])
        .map(|s: String| {
            if s == "boom" {
                panic!("user function exploded on {s}");
            }
            s
        })
        .collect("abi-panicky");
    Ok(())
}

/// A reading: key and event time (ms).
type Reading = (u64, i64);
/// What [`Deadline`] emits: key, time, and whether it is a timer firing.
type Fired = (u64, i64, bool);

/// Echoes every reading and sets an event-time timer 10 ms after it; the timer reports itself.
/// `panic_at`: the timer timestamp whose firing panics.
#[derive(Clone)]
struct Deadline {
    panic_at: i64,
}

impl KeyedProcessFunction<u64, Reading, Fired> for Deadline {
    fn process_element(
        &mut self,
        (key, time): Reading,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut dyn Collector<Fired>,
    ) {
        ctx.register_event_time_timer(time + 10);
        out.collect((key, time, false));
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut dyn Collector<Fired>,
    ) {
        if timestamp == self.panic_at {
            panic!("on_timer exploded at {timestamp}");
        }
        out.collect((*ctx.key(), timestamp, true));
    }
}

/// The readings of [`event_time`]: keys 0, 1, 2 in turn, times 0, 5, ..., 55.
fn readings() -> Vec<Reading> {
    (0..12u64).map(|i| (i % 3, i as i64 * 5)).collect()
}

/// The sink of [`event_time`] with `--panic-at panic_at` (one per test, tests run in parallel).
fn event_time_sink(panic_at: i64) -> String {
    format!("abi-event-time-{panic_at}")
}

/// Monotonous timestamps with idleness, then a keyed process function with event-time timers.
fn event_time(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    let panic_at: i64 = args.parse_or("panic-at", 0)?;
    env.set_parallelism(1);
    env.set_runtime_mode(crate::RuntimeMode::Streaming);
    let strategy = WatermarkStrategy::for_monotonous_timestamps()
        .with_timestamp_assigner(|r: &Reading, _| r.1)
        .with_idleness(Duration::from_millis(500));
    env.from_collection(readings())
        .assign_timestamps_and_watermarks(strategy)
        .key_by(|r: &Reading| r.0)
        .process(Deadline { panic_at })
        .collect(&event_time_sink(panic_at));
    Ok(())
}

fn test_jobs() -> JobRegistry {
    let mut registry = JobRegistry::new();
    registry.register("word-count", "counts words", word_count);
    registry.register("panicky", "panics on boom", panicky);
    registry.register("event-time", "timers on watermarks", event_time);
    registry
}

unsafe extern "C" fn test_entry(
    host: *const HostApi,
    api: *mut *const PluginApi,
    err: *mut RfBuf,
) -> Status {
    // SAFETY: forwarded.
    unsafe { plugin::entry(host, api, err, test_jobs) }
}

fn plugin() -> Plugin {
    // SAFETY: `test_entry` follows the ABI and lives as long as the process.
    unsafe { Plugin::from_entry(test_entry) }.expect("the entry accepts this node")
}

/// What a writer received.
#[derive(Default)]
struct Received {
    batches: Vec<Box<dyn Any + Send>>,
    records: Vec<Vec<u8>>,
    barriers: Vec<u64>,
    finished: bool,
}

struct TestWriter {
    local: bool,
    received: Arc<Mutex<Received>>,
}

impl PartitionWriter for TestWriter {
    fn num_subpartitions(&self) -> usize {
        1
    }
    fn is_local(&self, _: usize) -> bool {
        self.local
    }
    fn local_batch_records(&self) -> usize {
        4
    }
    fn write_record(&mut self, _: usize, record: &[u8]) -> Result<(), String> {
        self.received.lock().unwrap().records.push(record.to_vec());
        Ok(())
    }
    fn write_batch(
        &mut self,
        _: usize,
        batch: Box<dyn Any + Send>,
        _: usize,
    ) -> Result<(), String> {
        self.received.lock().unwrap().batches.push(batch);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn broadcast_barrier(&mut self, barrier: CheckpointBarrier) -> Result<(), String> {
        self.received.lock().unwrap().barriers.push(barrier.id);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), String> {
        self.received.lock().unwrap().finished = true;
        Ok(())
    }
}

fn context(task_name: &str, checkpointing: bool) -> crate::task::VertexContext {
    crate::task::VertexContext {
        subtask_index: 0,
        parallelism: 1,
        max_parallelism: 128,
        attempt_number: 0,
        task_name: task_name.to_string(),
        checkpointing,
    }
}

fn request(plan: &PlanInfo, entry: &str, args: &[String], vertex: usize) -> InstantiateRequest {
    InstantiateRequest {
        entry: entry.to_string(),
        args: args.to_vec(),
        fingerprint: plan.plan.fingerprint.clone(),
        vertex,
        context: context(&format!("v{vertex}"), true),
    }
}

#[test]
fn the_note_round_trips_and_names_this_build() {
    let parsed = parse_note(&NOTE).expect("parses");
    assert_eq!(parsed.abi_version, ABI_VERSION);
    assert_eq!(parsed.fingerprint, BUILD_FINGERPRINT);
    assert!(BUILD_FINGERPRINT.starts_with("rflink "));
    assert!(BUILD_FINGERPRINT.contains("rustc "), "{BUILD_FINGERPRINT}");
    let other = note(7, "rflink 9.9.9 / rustc 1.0.0 / x");
    assert_eq!(
        parse_note(&other),
        Ok(AbiNote {
            abi_version: 7,
            fingerprint: "rflink 9.9.9 / rustc 1.0.0 / x".into()
        })
    );
    let long = "x".repeat(1000);
    assert_eq!(
        parse_note(&note(1, &long)).unwrap().fingerprint.len(),
        NOTE_LEN - 16
    );
    assert_eq!(parse_note(&NOTE[..10]), Err(NoteError::WrongSize(10)));
    assert_eq!(parse_note(&[0u8; NOTE_LEN]), Err(NoteError::BadMagic));
    let mut bad = NOTE;
    bad[NOTE_HEADER] = 0xff;
    assert_eq!(parse_note(&bad), Err(NoteError::NotUtf8));
}

#[test]
fn a_job_runs_across_the_boundary_with_typed_batches_and_serialized_records() {
    let plugin = plugin();
    assert_eq!(plugin.fingerprint(), BUILD_FINGERPRINT);
    let jobs = plugin.jobs().expect("jobs");
    assert_eq!(
        jobs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        vec!["event-time", "panicky", "word-count"]
    );
    let args = vec!["--words".to_string(), "40".to_string()];
    let info = plugin.build_plan("word-count", &args).expect("plan");
    assert_eq!(info.plan.vertices.len(), 2);
    assert_eq!(
        info.job_config.get("pipeline.name").map(String::as_str),
        Some("abi")
    );
    let native = test_jobs()
        .build("word-count", &JobArgs::from_args(args.clone()))
        .expect("builds natively");
    assert_eq!(info.plan, native.plan(), "the plan survives encoding");

    for local in [true, false] {
        // The source chain, writing typed batches (local) or serialized records (remote).
        let received = Arc::new(Mutex::new(Received::default()));
        let writer = TestWriter {
            local,
            received: Arc::clone(&received),
        };
        let mut source = plugin
            .instantiate(
                &request(&info, "word-count", &args, 0),
                vec![Box::new(writer)],
            )
            .expect("source instantiates");
        assert!(source.is_source());
        source.open().expect("open");
        while source.poll_source(8).expect("poll") != SourceStatus::Finished {}
        let state = source
            .snapshot(CheckpointBarrier {
                id: 1,
                timestamp: 0,
                savepoint: false,
            })
            .expect("snapshot");
        assert!(!state.is_empty());
        source.end_input().expect("end");
        source.finish_outputs().expect("finish");
        drop(source);
        let mut received = std::mem::take(&mut *received.lock().unwrap());
        assert!(received.finished);
        assert_eq!(received.barriers, vec![1]);
        if local {
            assert!(received.records.is_empty());
            assert!(!received.batches.is_empty());
            assert!(received.batches[0].is::<host::ForeignBatch>());
        } else {
            assert!(received.batches.is_empty());
            assert_eq!(received.records.len(), 80);
        }

        // The keyed sum with its collect sink, fed what the source wrote.
        let mut sink = plugin
            .instantiate(&request(&info, "word-count", &args, 1), Vec::new())
            .expect("sink instantiates");
        assert!(!sink.is_source());
        sink.open().expect("open");
        for batch in received.batches.drain(..) {
            sink.process_batch(0, batch).expect("batch");
        }
        for record in &received.records {
            sink.process_record(0, record).expect("record");
        }
        sink.end_input().expect("end");
        sink.finish_outputs().expect("finish");
        sink.close();
        let counts: Vec<(String, u64)> = crate::testing::take_collected("abi-word-count");
        let final_count = |w: &str| counts.iter().filter(|(x, _)| x == w).map(|p| p.1).max();
        assert_eq!(final_count("w0"), Some(6 + 14), "local {local}: {counts:?}");
        assert_eq!(counts.len(), 80, "streaming sum emits on every record");
    }
}

#[test]
fn an_unconsumed_batch_is_freed_by_the_library_and_a_foreign_batch_is_refused() {
    let plugin = plugin();
    let args = vec!["--words".to_string(), "8".to_string()];
    let info = plugin.build_plan("word-count", &args).expect("plan");
    let received = Arc::new(Mutex::new(Received::default()));
    let writer = TestWriter {
        local: true,
        received: Arc::clone(&received),
    };
    let mut source = plugin
        .instantiate(
            &request(&info, "word-count", &args, 0),
            vec![Box::new(writer)],
        )
        .expect("instantiates");
    source.open().expect("open");
    while source.poll_source(8).expect("poll") != SourceStatus::Finished {}
    source.end_input().expect("end");
    // Dropping the batches runs the library's drop function (no leak, no foreign free).
    drop(std::mem::take(&mut received.lock().unwrap().batches));

    let mut sink = plugin
        .instantiate(&request(&info, "word-count", &args, 1), Vec::new())
        .expect("instantiates");
    sink.open().expect("open");
    let native: Box<dyn Any + Send> = Box::new(vec![("w".to_string(), 1u64)]);
    let err = sink.process_batch(0, native).expect_err("refused");
    assert!(err.contains("compiled into the node"), "{err}");
}

#[test]
fn a_panicking_user_function_fails_the_call_and_poisons_only_its_vertex() {
    let plugin = plugin();
    let info = plugin.build_plan("panicky", &[]).expect("plan");
    assert_eq!(info.plan.vertices.len(), 1);
    let mut vertex = plugin
        .instantiate(&request(&info, "panicky", &[], 0), Vec::new())
        .expect("instantiates");
    vertex.open().expect("open");
    let err = loop {
        match vertex.poll_source(1) {
            Ok(SourceStatus::Finished) => panic!("the job should have panicked"),
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    assert!(err.contains("user code panicked"), "{err}");
    assert!(err.contains("exploded on boom"), "{err}");
    assert!(err.starts_with("v0: "), "{err}");
    let again = vertex.poll_source(1).expect_err("poisoned");
    assert!(again.contains("unusable after a panic"), "{again}");
    vertex.close();
    drop(vertex);
    // The plugin itself is fine.
    assert!(plugin.jobs().is_ok());
}

#[test]
fn library_errors_are_typed_and_a_wrong_fingerprint_is_refused() {
    let plugin = plugin();
    match plugin.build_plan("nope", &[]) {
        Err(CallError::Failed(message)) => assert!(message.contains("nope"), "{message}"),
        other => panic!("{other:?}"),
    }
    let args = vec!["--words".to_string(), "8".to_string()];
    let info = plugin.build_plan("word-count", &args).expect("plan");
    let mut stale = request(&info, "word-count", &args, 0);
    stale.fingerprint = "0".repeat(32);
    let received = Arc::new(Mutex::new(Received::default()));
    let writer = TestWriter {
        local: true,
        received,
    };
    let err = plugin
        .instantiate(&stale, vec![Box::new(writer)])
        .expect_err("refused");
    assert!(err.to_string().contains("different graph"), "{err}");
    let err = plugin
        .instantiate(&request(&info, "word-count", &args, 9), Vec::new())
        .expect_err("no vertex 9");
    assert!(err.to_string().contains("vertex 9"), "{err}");
}

#[test]
fn the_entry_refuses_a_node_of_another_abi_version() {
    unsafe extern "C" fn no_log(_: u8, _: RfSlice, _: RfSlice) {}
    let host = HostApi {
        abi_version: ABI_VERSION + 1,
        max_log_level: 0,
        log: no_log,
    };
    let mut api: *const PluginApi = std::ptr::null();
    let mut err = RfBuf::EMPTY;
    // SAFETY: valid pointers.
    let status = unsafe { test_entry(&host, &mut api, &mut err) };
    assert_eq!(status, STATUS_ERROR);
    assert!(api.is_null());
    // SAFETY: the library's buffer.
    let message = unsafe { err.take_string() };
    assert!(
        message.contains(&format!(
            "ABI version {}, this library version {ABI_VERSION}",
            ABI_VERSION + 1
        )),
        "{message}"
    );
}

// ---- event time across the boundary ----

/// What an output received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Record(Vec<u8>),
    Batch(usize),
    Watermark(i64),
    Status(bool),
    EndOfData,
    Finish,
}

type Events = Arc<Mutex<Vec<Event>>>;

/// Records everything in order; typed batches by their size only.
struct EventWriter {
    local: bool,
    events: Events,
}

impl EventWriter {
    fn push(&self, event: Event) -> Result<(), String> {
        self.events.lock().unwrap().push(event);
        Ok(())
    }
}

impl PartitionWriter for EventWriter {
    fn num_subpartitions(&self) -> usize {
        1
    }
    fn is_local(&self, _: usize) -> bool {
        self.local
    }
    fn local_batch_records(&self) -> usize {
        4
    }
    fn write_record(&mut self, _: usize, record: &[u8]) -> Result<(), String> {
        self.push(Event::Record(record.to_vec()))
    }
    fn write_batch(&mut self, _: usize, _: Box<dyn Any + Send>, n: usize) -> Result<(), String> {
        self.push(Event::Batch(n))
    }
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn broadcast_watermark(&mut self, watermark: i64) -> Result<(), String> {
        self.push(Event::Watermark(watermark))
    }
    fn broadcast_watermark_status(&mut self, idle: bool) -> Result<(), String> {
        self.push(Event::Status(idle))
    }
    fn end_of_data(&mut self) -> Result<(), String> {
        self.push(Event::EndOfData)
    }
    fn finish(&mut self) -> Result<(), String> {
        self.push(Event::Finish)
    }
}

/// What a task drives, on a chain of either kind (as the runtime's `Chain`), so that one
/// schedule runs a library's vertex and the same vertex compiled in.
trait Drive {
    fn open(&mut self) -> Result<(), String>;
    fn poll_source(&mut self, max_records: usize) -> Result<SourceStatus, String>;
    fn process_record(&mut self, input: usize, record: &[u8]) -> Result<(), String>;
    fn process_watermark(&mut self, watermark: i64) -> Result<(), String>;
    fn process_watermark_status(&mut self, idle: bool) -> Result<(), String>;
    fn advance_processing_time(&mut self, now: i64) -> Result<(), String>;
    fn next_processing_time(&mut self) -> Option<i64>;
    fn end_input(&mut self) -> Result<(), String>;
    fn finish_outputs(&mut self) -> Result<(), String>;
    fn flush(&mut self) -> Result<(), String>;
}

macro_rules! drive {
    ($t:ty) => {
        impl Drive for $t {
            fn open(&mut self) -> Result<(), String> {
                <$t>::open(self)
            }
            fn poll_source(&mut self, max_records: usize) -> Result<SourceStatus, String> {
                <$t>::poll_source(self, max_records)
            }
            fn process_record(&mut self, input: usize, record: &[u8]) -> Result<(), String> {
                <$t>::process_record(self, input, record)
            }
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
            fn end_input(&mut self) -> Result<(), String> {
                <$t>::end_input(self)
            }
            fn finish_outputs(&mut self) -> Result<(), String> {
                <$t>::finish_outputs(self)
            }
            fn flush(&mut self) -> Result<(), String> {
                <$t>::flush(self)
            }
        }
    };
}

drive!(VertexInstance);
drive!(LibraryVertex);

fn event_time_args(panic_at: i64) -> Vec<String> {
    vec!["--panic-at".to_string(), panic_at.to_string()]
}

/// Vertex `vertex` of `event-time` instantiated through the ABI, and the same vertex of the
/// same graph compiled in; the producer (vertex 0) writes into a recording writer.
fn event_time_pair(
    plugin: &Plugin,
    panic_at: i64,
    vertex: usize,
    local: bool,
) -> ((LibraryVertex, Events), (VertexInstance, Events)) {
    let args = event_time_args(panic_at);
    let info = plugin.build_plan("event-time", &args).expect("plan");
    assert_eq!(info.plan.vertices.len(), 2, "{:?}", info.plan.vertices);
    let writers = |events: &Events| -> Vec<Box<dyn PartitionWriter>> {
        if vertex == 0 {
            vec![Box::new(EventWriter {
                local,
                events: Arc::clone(events),
            })]
        } else {
            Vec::new()
        }
    };
    let library_events = Events::default();
    let library = plugin
        .instantiate(
            &request(&info, "event-time", &args, vertex),
            writers(&library_events),
        )
        .expect("instantiates through the ABI");
    let graph = test_jobs()
        .build("event-time", &JobArgs::from_args(args.clone()))
        .expect("builds natively");
    assert_eq!(graph.plan(), info.plan);
    let native_events = Events::default();
    let native = graph
        .instantiate(
            vertex,
            request(&info, "event-time", &args, vertex).context,
            writers(&native_events),
        )
        .expect("instantiates natively");
    ((library, library_events), (native, native_events))
}

/// One schedule for the producer vertex (source, timestamps and watermarks with 500 ms
/// idleness, 200 ms periodic watermarks): what `next_processing_time` said along the way.
fn drive_producer(v: &mut dyn Drive) -> Vec<Option<i64>> {
    let mut due = vec![v.next_processing_time()];
    v.open().expect("open");
    // The first periodic tick is due at once.
    due.push(v.next_processing_time());
    v.advance_processing_time(1_000).expect("tick");
    due.push(v.next_processing_time());
    assert_eq!(v.poll_source(4).expect("poll"), SourceStatus::More);
    // A periodic watermark at 1200, then quiet until the idleness timeout (500 ms).
    for now in [1_200, 1_400, 1_600, 1_800] {
        v.advance_processing_time(now).expect("tick");
        due.push(v.next_processing_time());
    }
    // Records make the output active again; the next tick emits their watermark.
    assert_eq!(v.poll_source(4).expect("poll"), SourceStatus::More);
    v.advance_processing_time(2_000).expect("tick");
    due.push(v.next_processing_time());
    while v.poll_source(4).expect("poll") != SourceStatus::Finished {}
    v.end_input().expect("end");
    due.push(v.next_processing_time());
    v.finish_outputs().expect("finish");
    due
}

/// Feeds a consumer vertex what a producer wrote; after each watermark it flushes and takes
/// what the sink collected since the last one: `(watermark, collected)`.
fn feed_consumer(v: &mut dyn Drive, events: &[Event], sink: &str) -> Vec<(i64, Vec<Fired>)> {
    v.open().expect("open");
    let mut steps = Vec::new();
    for event in events {
        match event {
            Event::Record(bytes) => v.process_record(0, bytes).expect("record"),
            Event::Watermark(w) => {
                v.process_watermark(*w).expect("watermark");
                v.flush().expect("flush");
                steps.push((*w, crate::testing::take_collected::<Fired>(sink)));
            }
            Event::Status(idle) => v.process_watermark_status(*idle).expect("status"),
            Event::Batch(_) => panic!("a remote producer writes no typed batches"),
            Event::EndOfData | Event::Finish => {}
        }
    }
    v.end_input().expect("end");
    v.finish_outputs().expect("finish");
    assert!(crate::testing::take_collected::<Fired>(sink).is_empty());
    steps
}

#[test]
fn a_library_producer_broadcasts_watermarks_and_status_in_order_behind_its_records() {
    let plugin = plugin();
    for local in [false, true] {
        let ((mut library, library_events), (mut native, native_events)) =
            event_time_pair(&plugin, 0, 0, local);
        assert!(library.is_source());
        assert!(library.uses_time() && native.uses_time());
        let library_due = drive_producer(&mut library);
        let native_due = drive_producer(&mut native);
        // `next_processing_time` round-trips, extremes included.
        assert_eq!(
            library_due,
            vec![
                None,
                Some(i64::MIN),
                Some(1_200),
                Some(1_400),
                Some(1_600),
                Some(1_800),
                Some(2_000),
                Some(2_200),
                None
            ]
        );
        assert_eq!(library_due, native_due);
        drop(library);
        let events = std::mem::take(&mut *library_events.lock().unwrap());
        assert_eq!(
            events,
            *native_events.lock().unwrap(),
            "local {local}: the library's vertex writes what the compiled-in one does"
        );
        // Records 0..15 ms, their watermark, idle after 500 quiet ms, active again with the
        // next records (before them), their watermark, the rest, and the end of input.
        let shape: Vec<Event> = events
            .iter()
            .map(|e| match e {
                Event::Record(_) => Event::Batch(1),
                other => other.clone(),
            })
            .collect();
        let items = |n: usize| {
            if local {
                vec![Event::Batch(n)]
            } else {
                vec![Event::Batch(1); n]
            }
        };
        let mut expected = items(4);
        expected.extend([
            Event::Watermark(14),
            Event::Status(true),
            Event::Status(false),
        ]);
        expected.extend(items(4));
        expected.push(Event::Watermark(34));
        expected.extend(items(4));
        expected.extend([
            Event::Watermark(MAX_WATERMARK),
            Event::EndOfData,
            Event::Finish,
        ]);
        assert_eq!(shape, expected, "local {local}");
    }
}

#[test]
fn a_library_consumer_fires_its_timers_on_watermarks_given_through_the_abi() {
    let plugin = plugin();
    // What the producer writes (compiled in: its equality with the library's is shown above).
    let ((_, _), (mut producer, events)) = event_time_pair(&plugin, 0, 0, false);
    drive_producer(&mut producer);
    let events = events.lock().unwrap().clone();

    let ((mut library, _), (mut native, _)) = event_time_pair(&plugin, 0, 1, false);
    assert!(!library.is_source());
    assert!(library.uses_time());
    assert_eq!(library.next_processing_time(), None, "not open yet");
    let sink = event_time_sink(0);
    let through_abi = feed_consumer(&mut library, &events, &sink);
    assert_eq!(library.next_processing_time(), None, "ended");
    let compiled_in = feed_consumer(&mut native, &events, &sink);
    assert_eq!(through_abi, compiled_in);

    // Each watermark fires exactly the timers it reaches, in time order, behind the records
    // that came before it.
    let mut fed = 0;
    let mut previous = i64::MIN;
    for (watermark, collected) in &through_abi {
        // The readings written before this watermark and after the previous one.
        let at = events
            .iter()
            .position(|e| *e == Event::Watermark(*watermark))
            .unwrap();
        let written = events[..at]
            .iter()
            .filter(|e| matches!(e, Event::Record(_)))
            .count();
        let sent = readings()[fed..written].to_vec();
        fed += sent.len();
        let mut expected: Vec<Fired> = sent.iter().map(|&(k, t)| (k, t, false)).collect();
        let mut due: Vec<Fired> = readings()
            .into_iter()
            .map(|(k, t)| (k, t + 10, true))
            .filter(|&(_, t, _)| t > previous && t <= *watermark)
            .collect();
        due.sort_by_key(|&(_, t, _)| t);
        expected.extend(due);
        assert_eq!(collected, &expected, "at watermark {watermark}");
        previous = *watermark;
    }
    assert_eq!(
        through_abi.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
        vec![14, 34, MAX_WATERMARK]
    );
    assert_eq!(
        through_abi[0].1.iter().filter(|f| f.2).collect::<Vec<_>>(),
        vec![&(0, 10, true)]
    );
}

#[test]
fn a_panic_in_on_timer_poisons_the_library_vertex_and_is_reported() {
    let plugin = plugin();
    let ((_, _), (mut producer, events)) = event_time_pair(&plugin, 10, 0, false);
    drive_producer(&mut producer);
    let events = events.lock().unwrap().clone();
    let ((mut vertex, _), _) = event_time_pair(&plugin, 10, 1, false);
    vertex.open().expect("open");
    let first_watermark = events
        .iter()
        .position(|e| matches!(e, Event::Watermark(_)))
        .unwrap();
    for event in &events[..first_watermark] {
        if let Event::Record(bytes) = event {
            vertex.process_record(0, bytes).expect("record");
        }
    }
    let err = vertex
        .process_watermark(14)
        .expect_err("the timer at 10 panics");
    assert!(err.starts_with("v1: "), "{err}");
    assert!(err.contains("user code panicked"), "{err}");
    assert!(err.contains("on_timer exploded at 10"), "{err}");
    // Poisoned: every later call is refused, the clock answers nothing, closing is safe.
    for again in [
        vertex.process_watermark(34),
        vertex.process_watermark_status(true),
        vertex.advance_processing_time(5_000),
        vertex.process_record(0, &[]),
        vertex.end_input(),
    ] {
        let again = again.expect_err("poisoned");
        assert!(again.contains("unusable after a panic"), "{again}");
        assert!(again.contains("on_timer exploded at 10"), "{again}");
    }
    assert_eq!(vertex.next_processing_time(), None);
    assert!(vertex.uses_time(), "fixed at instantiation");
    vertex.close();
    drop(vertex);
    let _ = crate::testing::take_collected::<Fired>(&event_time_sink(10));
    assert!(plugin.jobs().is_ok(), "the library itself is fine");
}

#[test]
fn a_job_without_time_says_so_through_the_abi() {
    let plugin = plugin();
    let args = vec!["--words".to_string(), "4".to_string()];
    let info = plugin.build_plan("word-count", &args).expect("plan");
    let mut sink = plugin
        .instantiate(&request(&info, "word-count", &args, 1), Vec::new())
        .expect("instantiates");
    assert!(!sink.uses_time());
    sink.open().expect("open");
    assert_eq!(sink.next_processing_time(), None);
    sink.advance_processing_time(1_000).expect("nothing due");
}

/// One step of [`arbitrary_time_never_panics_and_matches_the_compiled_in_chain`].
#[derive(Debug, Clone)]
enum TimeOp {
    Watermark(i64),
    Status(bool),
    Advance(i64),
    Next,
    Poll,
}

fn time_op() -> impl Strategy<Value = TimeOp> {
    prop_oneof![
        any::<i64>().prop_map(TimeOp::Watermark),
        any::<bool>().prop_map(TimeOp::Status),
        any::<i64>().prop_map(TimeOp::Advance),
        Just(TimeOp::Next),
        Just(TimeOp::Poll),
    ]
}

/// The serialized records of the `event-time` producer, once.
fn event_time_records() -> &'static [Vec<u8>] {
    static RECORDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    RECORDS.get_or_init(|| {
        let ((_, _), (mut producer, events)) = event_time_pair(&plugin(), 1, 0, false);
        drive_producer(&mut producer);
        let events = events.lock().unwrap();
        events
            .iter()
            .filter_map(|e| match e {
                Event::Record(bytes) => Some(bytes.clone()),
                _ => None,
            })
            .collect()
    })
}

/// Applies `op` to a vertex; `next` is the record a consumer gets on `Poll`.
fn apply_op(v: &mut dyn Drive, op: &TimeOp, next: Option<&[u8]>) -> Result<Option<i64>, String> {
    match op {
        TimeOp::Watermark(w) => v.process_watermark(*w).map(|()| None),
        TimeOp::Status(idle) => v.process_watermark_status(*idle).map(|()| None),
        TimeOp::Advance(now) => v.advance_processing_time(*now).map(|()| None),
        TimeOp::Next => Ok(v.next_processing_time()),
        TimeOp::Poll => match next {
            Some(record) => v.process_record(0, record).map(|()| None),
            None => v.poll_source(2).map(|_| None),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_time_never_panics_and_matches_the_compiled_in_chain(
        ops in proptest::collection::vec(time_op(), 0..24)
    ) {
        let plugin = plugin();
        let records = event_time_records();
        let sink = event_time_sink(1);
        let ((mut lp, lp_events), (mut np, np_events)) = event_time_pair(&plugin, 1, 0, false);
        let ((mut lc, _), (mut nc, _)) = event_time_pair(&plugin, 1, 1, false);
        for v in [&mut lp as &mut dyn Drive, &mut np, &mut lc, &mut nc] {
            v.open().expect("open");
        }
        let mut fed = 0;
        for op in &ops {
            let record = records.get(fed).map(Vec::as_slice);
            if matches!(op, TimeOp::Poll) && record.is_some() {
                fed += 1;
            }
            let producer = apply_op(&mut lp, op, None);
            prop_assert!(producer.is_ok(), "{op:?}: {producer:?}");
            prop_assert_eq!(&producer, &apply_op(&mut np, op, None), "{:?}", op);
            let consumer = apply_op(&mut lc, op, record);
            prop_assert!(consumer.is_ok(), "{op:?}: {consumer:?}");
            prop_assert_eq!(&consumer, &apply_op(&mut nc, op, record), "{:?}", op);
        }
        for v in [&mut lp as &mut dyn Drive, &mut np] {
            v.end_input().expect("end");
        }
        prop_assert_eq!(&*lp_events.lock().unwrap(), &*np_events.lock().unwrap());
        lc.end_input().expect("end");
        lc.flush().expect("flush");
        let through_abi = crate::testing::take_collected::<Fired>(&sink);
        nc.end_input().expect("end");
        nc.flush().expect("flush");
        prop_assert_eq!(through_abi, crate::testing::take_collected::<Fired>(&sink));
    }
}

proptest! {
    #[test]
    fn decoding_arbitrary_answers_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_plan_info(&bytes);
        let _ = decode_instantiate_request(&bytes);
        let _ = decode_build_request(&bytes);
        let _ = parse_note(&bytes);
    }

    #[test]
    fn instantiate_requests_round_trip(entry in ".{0,20}", args in proptest::collection::vec(".{0,8}", 0..4), vertex in 0usize..100, attempt in any::<u32>()) {
        let request = InstantiateRequest {
            entry,
            args,
            fingerprint: "f".repeat(32),
            vertex,
            context: crate::task::VertexContext {
                attempt_number: attempt,
                ..context("t", false)
            },
        };
        prop_assert_eq!(decode_instantiate_request(&encode_instantiate_request(&request)), Ok(request));
    }
}
