//! The whole boundary in one process: the library side's exports driven through the node side's
//! wrappers, exactly as a loaded library would be (only `dlopen` is missing).

use std::any::Any;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::host::{CallError, Plugin};
use super::*;
use crate::task::{CheckpointBarrier, PartitionWriter};
use crate::{JobArgs, JobError, JobRegistry, SourceStatus, StreamExecutionEnvironment};

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

fn test_jobs() -> JobRegistry {
    let mut registry = JobRegistry::new();
    registry.register("word-count", "counts words", word_count);
    registry.register("panicky", "panics on boom", panicky);
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
        vec!["panicky", "word-count"]
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
