//! Checkpoints, restarts and savepoints end to end on in-process MiniClusters (Flink's scenarios
//! 29, 30 and 32 with real operators): a streaming WordCount whose counts live in keyed state,
//! written by the exactly-once file sink, compared line for line with the sequential reference
//! after task failures, a lost TaskManager, and a stop-with-savepoint and resume.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rflink::{
    Collector, JobArgs, JobError, JobRegistry, KeyedContext, KeyedProcessFunction, StateRegistry,
    StreamExecutionEnvironment, ValueState,
};
use rflink_runtime::client::build_job_graph;
use rflink_runtime::dispatcher::{
    RequestCheckpointStats, RequestSavepointStatus, TriggerSavepoint,
};
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::heartbeat::HeartbeatSettings;
use rflink_runtime::jobmaster::SavepointStatus;
use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig};
use rflink_runtime::rest::client::RestClient;
use rflink_runtime::tasks::Jobs;
use rflink_runtime::types::JobId;

const WAIT: Duration = Duration::from_secs(120);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

fn registry() -> JobRegistry {
    let mut jobs = rflink_examples::registry();
    jobs.register(
        "cp-wordcount",
        "generated text -> tokenizer -> keyed count in ValueState -> exactly-once files",
        cp_wordcount,
    );
    jobs
}

/// Counts words in a `ValueState`; subtask 0's first attempt (every attempt with
/// `fail_always`) fails on its `fail_at`-th record.
#[derive(Clone, Default)]
struct CountWords {
    fail_at: Option<u64>,
    fail_always: bool,
    seen: u64,
    count: ValueState<u64>,
}

impl KeyedProcessFunction<String, (String, u64), String> for CountWords {
    fn open(&mut self, state: &mut StateRegistry<String>) -> Result<(), String> {
        self.count = state.value_state("count");
        Ok(())
    }

    fn process_element(
        &mut self,
        value: (String, u64),
        ctx: &mut KeyedContext<'_, String>,
        out: &mut dyn Collector<String>,
    ) {
        self.seen += 1;
        let runtime = ctx.runtime();
        if (runtime.attempt_number == 0 || self.fail_always)
            && runtime.subtask_index == 0
            && Some(self.seen) == self.fail_at
        {
            panic!("injected failure at record {}", self.seen);
        }
        let n = ctx.value(&self.count).copied().unwrap_or(0) + value.1;
        ctx.update(&self.count, n);
        out.collect(format!("{} {n}", value.0));
    }
}

fn cp_wordcount(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    env.set_parallelism(args.parse::<u32>("parallelism")?.unwrap_or(2));
    env.set_runtime_mode(rflink::RuntimeMode::Streaming);
    env.enable_checkpointing(Duration::from_millis(
        args.parse::<u64>("interval")?.unwrap_or(50),
    ));
    for (key, value) in [
        ("restart-strategy.type", "fixed-delay"),
        ("restart-strategy.fixed-delay.attempts", "3"),
        ("restart-strategy.fixed-delay.delay", "20 ms"),
    ] {
        env.configure(key, value);
    }
    let lines = args.parse::<u64>("lines")?.unwrap_or(2000);
    let pause = args.parse::<u64>("pause-micros")?.unwrap_or(0);
    let function = CountWords {
        fail_at: args.parse::<u64>("fail-at")?,
        fail_always: args.has("fail-always"),
        ..CountWords::default()
    };
    let output = args.get("output").unwrap_or("/nonexistent").to_string();
    env.from_generator(Some(lines), 7, move |rng, _| {
        if pause > 0 {
            std::thread::sleep(Duration::from_micros(pause));
        }
        rflink_examples::generated_line(rng)
    })
    .flat_map(|line: String, out: &mut dyn Collector<(String, u64)>| {
        rflink_examples::tokenize(&line, |w| out.collect((w, 1)))
    })
    .key_by(|pair: &(String, u64)| pair.0.clone())
    .process(function)
    .write_as_text(output);
    Ok(())
}

fn config(task_managers: u32, slots: u32) -> MiniClusterConfig {
    init_tracing();
    MiniClusterConfig {
        num_task_managers: task_managers,
        slots_per_task_manager: slots,
        heartbeat: HeartbeatSettings {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(2000),
            ..HeartbeatSettings::default()
        },
        jobs: Jobs::new(registry()),
        rest: true,
        ..MiniClusterConfig::default()
    }
}

async fn cluster(task_managers: u32, slots: u32, checkpoints: &Path) -> MiniCluster {
    let mut config = config(task_managers, slots);
    config.job_defaults.checkpointing.dir = Some(checkpoints.to_path_buf());
    let c = MiniCluster::start(config)
        .await
        .expect("mini cluster starts");
    c.wait_for_task_managers(task_managers, WAIT)
        .await
        .expect("task managers register");
    c
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn reference(lines: u64) -> Vec<String> {
    rflink_examples::streaming_reference(&rflink_examples::generated_text(7, lines))
}

fn committed(output: &Path) -> Vec<String> {
    let text = rflink::sinks::read_committed_parts(output).expect("reads the committed output");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Compares without printing thousands of lines: the first difference and the counts.
fn assert_exact(got: &[String], expected: &[String]) {
    if got == expected {
        return;
    }
    let first = got
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    panic!(
        "output differs from the reference: {} lines vs {} expected; first difference at {first}: \
         got {:?}, expected {:?}",
        got.len(),
        expected.len(),
        got.get(first),
        expected.get(first)
    );
}

async fn stats(c: &MiniCluster, job_id: JobId) -> serde_json::Value {
    let view = c
        .dispatcher_gateway()
        .ask(RequestCheckpointStats { job_id })
        .await
        .expect("asks")
        .expect("answers")
        .expect("checkpointing is on");
    serde_json::to_value(view).expect("serializes")
}

async fn wait_for_completed_checkpoint(c: &MiniCluster, job_id: JobId) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if stats(c, job_id).await["counts"]["completed"].as_u64() >= Some(1) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Without failures the committed output is the reference, and REST shows the checkpoints in
/// Flink's shape (the last one is the job's final checkpoint).
#[actix_rt::test]
async fn a_checkpointed_job_commits_exactly_its_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("out");
    let c = cluster(2, 2, &dir.path().join("checkpoints")).await;
    let lines = 1500;
    let job = build_job_graph(
        &c_jobs(),
        "cp-wordcount",
        &args(&[
            "--lines",
            &lines.to_string(),
            "--pause-micros",
            "200",
            "--output",
            &output.display().to_string(),
        ]),
    )
    .expect("builds");
    let job_id = c.submit_job(job).await.expect("submits");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Finished, "{result:?}");
    assert_exact(&committed(&output), &reference(lines));
    let rest = RestClient::new(c.rest_address().expect("rest").to_string());
    let json = rest
        .checkpoints(job_id)
        .await
        .expect("checkpoint statistics");
    let completed = json["counts"]["completed"].as_u64().unwrap_or(0);
    assert!(completed >= 1, "{json}");
    assert_eq!(json["latest"]["completed"]["status"], "COMPLETED", "{json}");
    assert!(
        json["summary"]["state_size"]["max"].as_i64() > Some(0),
        "{json}"
    );

    // The overview has no per-vertex details (`tasks` is `{}`, as Flink's); one checkpoint's
    // details have every vertex's, which Flink's web UI reads
    // (`tasks[<vertex id>].num_acknowledged_subtasks`, ...).
    let entries = json["history"]
        .as_array()
        .expect("history")
        .iter()
        .chain([&json["latest"]["completed"]]);
    for entry in entries {
        assert_eq!(entry["tasks"], serde_json::json!({}), "{entry}");
    }
    let latest = &json["latest"]["completed"];
    let checkpoint = latest["id"].as_u64().expect("an id");
    let details = rest
        .get_json(&format!("/jobs/{job_id}/checkpoints/details/{checkpoint}"))
        .await
        .expect("checkpoint details");
    assert_eq!(details["id"], checkpoint, "{details}");
    assert_eq!(details["status"], "COMPLETED", "{details}");
    let job = serde_json::to_value(rest.job_details(job_id).await.expect("job details"))
        .expect("serializes");
    let vertices = job["vertices"].as_array().expect("vertices");
    let tasks = details["tasks"].as_object().expect("tasks");
    assert_eq!(
        tasks.len(),
        vertices.len(),
        "one entry per vertex: {details}"
    );
    let mut flink_keys = vec![
        "id",
        "status",
        "latest_ack_timestamp",
        "checkpointed_size",
        "state_size",
        "end_to_end_duration",
        "alignment_buffered",
        "processed_data",
        "persisted_data",
        "num_subtasks",
        "num_acknowledged_subtasks",
    ];
    flink_keys.sort_unstable();
    let mut sizes = 0;
    let mut subtasks = 0;
    for vertex in vertices {
        let id = vertex["id"].as_str().expect("vertex id");
        let task = &details["tasks"][id];
        let mut keys: Vec<&str> = task
            .as_object()
            .unwrap_or_else(|| panic!("no tasks entry for vertex {id}: {details}"))
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, flink_keys, "Flink's TaskCheckpointStatistics: {task}");
        assert_eq!(task["id"], checkpoint, "{task}");
        assert_eq!(task["status"], "COMPLETED", "{task}");
        assert_eq!(task["num_subtasks"], vertex["parallelism"], "{task}");
        assert_eq!(
            task["num_acknowledged_subtasks"], task["num_subtasks"],
            "{task}"
        );
        let acked = task["latest_ack_timestamp"].as_i64().expect("a time");
        let triggered = details["trigger_timestamp"].as_i64().expect("a time");
        assert!(
            acked >= triggered
                && acked <= details["latest_ack_timestamp"].as_i64().expect("a time"),
            "{task}\n{details}"
        );
        assert_eq!(
            task["end_to_end_duration"].as_i64(),
            Some(acked - triggered),
            "{task}"
        );
        sizes += task["checkpointed_size"].as_u64().expect("a size");
        subtasks += task["num_subtasks"].as_u64().expect("a count");
    }
    assert_eq!(details["checkpointed_size"], sizes, "{details}");
    assert_eq!(details["num_subtasks"], subtasks, "{details}");
    c.close().await.expect("closes");
}

fn c_jobs() -> Jobs {
    Jobs::new(registry())
}

/// A task that fails mid-stream restarts from the latest completed checkpoint: sources rewind,
/// keyed counts are restored, the sink's uncommitted output is discarded, and the committed
/// output is exactly the reference.
#[actix_rt::test]
async fn a_task_failure_restores_the_last_checkpoint_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("out");
    let c = cluster(2, 2, &dir.path().join("checkpoints")).await;
    let lines = 2000;
    let job = build_job_graph(
        &c_jobs(),
        "cp-wordcount",
        &args(&[
            "--lines",
            &lines.to_string(),
            "--pause-micros",
            "300",
            "--fail-at",
            "4000",
            "--output",
            &output.display().to_string(),
        ]),
    )
    .expect("builds");
    let job_id = c.submit_job(job).await.expect("submits");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Finished, "{result:?}");
    assert_exact(&committed(&output), &reference(lines));
    let exceptions = c.job_exceptions(job_id).await.expect("exceptions");
    assert_eq!(exceptions.history.len(), 1, "{:?}", exceptions.history);
    assert!(
        exceptions.history[0].message.contains("injected failure"),
        "{:?}",
        exceptions.history
    );
    // One restart: a restore, if a checkpoint had completed before the failure.
    let json = stats(&c, job_id).await;
    assert!(json["counts"]["restored"].as_u64() <= Some(1), "{json}");
    c.close().await.expect("closes");
}

/// A TaskManager lost mid-job (after a checkpoint completed): the job restarts on the spare
/// TaskManager from that checkpoint and the committed output is exactly the reference.
#[actix_rt::test]
async fn a_lost_task_manager_restores_exactly_once_on_a_spare() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("out");
    let mut c = cluster(3, 1, &dir.path().join("checkpoints")).await;
    let lines = 3000;
    let job = build_job_graph(
        &c_jobs(),
        "cp-wordcount",
        &args(&[
            "--lines",
            &lines.to_string(),
            "--pause-micros",
            "500",
            "--output",
            &output.display().to_string(),
        ]),
    )
    .expect("builds");
    let job_id = c.submit_job(job).await.expect("submits");
    wait_for_completed_checkpoint(&c, job_id).await;
    // Two of the three single-slot TaskManagers run the job: kill one of those (the one with
    // no free slot, as the REST API lists them), not the spare.
    let rest = RestClient::new(c.rest_address().expect("rest").to_string());
    let busy: Vec<String> = rest
        .taskmanagers()
        .await
        .expect("task managers")
        .into_iter()
        .filter(|tm| tm.free_slots == 0)
        .map(|tm| tm.id)
        .collect();
    let victim = (0..3)
        .find(|&i| {
            c.task_manager(i)
                .is_some_and(|tm| busy.contains(&tm.resource_id().to_string()))
        })
        .expect("a TaskManager runs the job");
    c.terminate_task_manager(victim).await.expect("terminated");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Finished, "{result:?}");
    assert_exact(&committed(&output), &reference(lines));
    // The restart restored the checkpoint that had completed before the loss.
    let json = stats(&c, job_id).await;
    assert_eq!(json["counts"]["restored"], 1, "{json}");
    assert!(
        json["latest"]["restored"]["id"].as_u64() >= Some(1),
        "{json}"
    );
    c.close().await.expect("closes");
}

/// Stop with a savepoint, then resume from it: the second run continues the sources and the
/// counts, and the committed output of both runs together is exactly the reference.
#[actix_rt::test]
async fn stop_with_savepoint_and_resume_continues_the_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("out");
    let savepoints = dir.path().join("savepoints");
    let c = cluster(2, 2, &dir.path().join("checkpoints")).await;
    // About 8 s of input, so a loaded machine still stops it well before its end.
    let lines = 40000;
    let program = args(&[
        "--lines",
        &lines.to_string(),
        "--pause-micros",
        "200",
        "--output",
        &output.display().to_string(),
    ]);
    let job = build_job_graph(&c_jobs(), "cp-wordcount", &program).expect("builds");
    let job_id = c.submit_job(job).await.expect("submits");
    wait_for_completed_checkpoint(&c, job_id).await;
    let savepoint = c
        .dispatcher_gateway()
        .ask(TriggerSavepoint {
            job_id,
            target_directory: Some(savepoints.display().to_string()),
            terminate: true,
        })
        .await
        .expect("asks")
        .expect("savepoint triggered");
    let deadline = tokio::time::Instant::now() + WAIT;
    let location = loop {
        let status = c
            .dispatcher_gateway()
            .ask(RequestSavepointStatus {
                job_id,
                id: savepoint,
            })
            .await
            .expect("asks")
            .expect("answers");
        match status {
            Some(SavepointStatus::Completed(location)) => break location,
            Some(SavepointStatus::Failed(reason)) => panic!("the savepoint failed: {reason}"),
            _ => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "savepoint not done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(first.status, JobStatus::Finished, "stopped: {first:?}");
    let partial = committed(&output);
    assert!(
        partial.len() < reference(lines).len(),
        "the job was stopped before its end ({} lines)",
        partial.len()
    );

    let mut resumed = build_job_graph(&c_jobs(), "cp-wordcount", &program).expect("builds");
    resumed.savepoint_path = Some(location.clone());
    let resumed_id = c.submit_job(resumed).await.expect("submits");
    let second = c
        .request_job_result(resumed_id, WAIT)
        .await
        .expect("result");
    assert_eq!(second.status, JobStatus::Finished, "{second:?}");
    assert_exact(&committed(&output), &reference(lines));
    let json = stats(&c, resumed_id).await;
    assert_eq!(json["counts"]["restored"], 1, "{json}");

    // A savepoint of another program is refused with a clear error.
    let mut other = build_job_graph(&c_jobs(), "wordcount", &[]).expect("builds");
    other.savepoint_path = Some(location);
    other
        .job_config
        .insert("execution.checkpointing.interval".into(), "1 s".into());
    let other_id = c.submit_job(other).await.expect("submits");
    let refused = c.request_job_result(other_id, WAIT).await.expect("result");
    assert_eq!(refused.status, JobStatus::Failed, "{refused:?}");
    let cause = refused.failure.map(|f| f.message).unwrap_or_default();
    assert!(cause.contains("savepoint"), "{cause}");
    let _ = Arc::new(());
    c.close().await.expect("closes");
}

/// Scenario 30 with a real operator: a task that throws on its Nth record in every attempt,
/// with fixed-delay(3), restarts three times and then FAILS; `/jobs/{id}/exceptions` shows the
/// four failures, newest first, and the root cause.
#[actix_rt::test]
async fn a_task_failing_every_attempt_exhausts_fixed_delay_and_shows_the_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(1, 2, &dir.path().join("checkpoints")).await;
    let job = build_job_graph(
        &c_jobs(),
        "cp-wordcount",
        &args(&[
            "--lines",
            "500",
            "--fail-at",
            "100",
            "--fail-always",
            "--output",
            &dir.path().join("out").display().to_string(),
        ]),
    )
    .expect("builds");
    let job_id = c.submit_job(job).await.expect("submits");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Failed, "{result:?}");
    let rest = RestClient::new(c.rest_address().expect("rest").to_string());
    let exceptions = rest.job_exceptions(job_id).await.expect("exceptions");
    let entries = &exceptions.exception_history.entries;
    assert_eq!(
        entries.len(),
        4,
        "three restarts and the final failure: {entries:?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e.stacktrace.contains("injected failure at record 100")),
        "{entries:?}"
    );
    assert!(
        entries.windows(2).all(|w| w[0].timestamp >= w[1].timestamp),
        "newest first: {entries:?}"
    );

    // The job's application (Flink 2.x; an rflink job is its own) FAILED, with the job's
    // failure among its exceptions, naming the job (Flink's web UI shows "Related Job").
    let application = rest
        .get_json(&format!("/applications/{job_id}"))
        .await
        .expect("application details");
    assert_eq!(application["status"], "FAILED", "{application}");
    assert_eq!(
        application["timestamps"]["FAILED"], application["end-time"],
        "{application}"
    );
    let failures = rest
        .get_json(&format!("/applications/{job_id}/exceptions"))
        .await
        .expect("application exceptions");
    let failures = failures["exceptionHistory"]["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(failures.len(), 1, "the job's failure: {failures:?}");
    assert_eq!(failures[0]["jobId"], job_id.to_string());
    assert!(
        failures[0]["stacktrace"]
            .as_str()
            .is_some_and(|s| s.contains("injected failure at record 100")),
        "{failures:?}"
    );
    assert!(failures[0]["timestamp"].as_i64() > Some(0), "{failures:?}");
    c.close().await.expect("closes");
}

/// The savepoint endpoints over REST: a savepoint of a running checkpointed job completes and
/// names its directory (which holds a `_metadata`); a malformed body is 400, an unknown trigger
/// id 404, a savepoint of a job without checkpointing is refused with the reason, and the
/// checkpoint statistics of such a job are 404 with Flink's message.
#[actix_rt::test]
async fn rest_savepoint_endpoints_answer_like_flink() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(1, 2, &dir.path().join("checkpoints")).await;
    let rest = RestClient::new(c.rest_address().expect("rest").to_string());
    let job = build_job_graph(
        &c_jobs(),
        "cp-wordcount",
        &args(&[
            "--lines",
            "20000",
            "--pause-micros",
            "200",
            "--output",
            &dir.path().join("out").display().to_string(),
        ]),
    )
    .expect("builds");
    let job_id = c.submit_job(job).await.expect("submits");
    wait_for_completed_checkpoint(&c, job_id).await;
    let target = dir.path().join("savepoints");
    let trigger = rest
        .trigger_savepoint(job_id, Some(&target.display().to_string()), false)
        .await
        .expect("triggered");
    assert_eq!(trigger.len(), 32, "a trigger id like Flink's: {trigger}");
    let location = rest
        .wait_for_savepoint(job_id, &trigger, WAIT)
        .await
        .expect("the savepoint completes");
    assert!(
        Path::new(&location).join("_metadata").is_file(),
        "{location} holds the metadata"
    );
    assert!(
        location.starts_with(&target.display().to_string()),
        "{location}"
    );

    let http = reqwest_like(&c, &format!("/jobs/{job_id}/savepoints"), "{not json").await;
    assert!(http.starts_with("HTTP/1.1 400"), "{http}");
    let unknown =
        reqwest_like_get(&c, &format!("/jobs/{job_id}/savepoints/{}", "0".repeat(32))).await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    let malformed = reqwest_like_get(&c, &format!("/jobs/{job_id}/savepoints/xyz")).await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    c.dispatcher_gateway()
        .ask(rflink_runtime::dispatcher::CancelJob { job_id })
        .await
        .expect("asks")
        .expect("cancels");

    // A batch-style job has no checkpoints: its statistics are 404 and savepoints are refused.
    let batch = build_job_graph(&c_jobs(), "sequence-sum", &args(&["--count", "100000000"]))
        .expect("builds");
    let batch_id = c.submit_job(batch).await.expect("submits");
    let stats = reqwest_like_get(&c, &format!("/jobs/{batch_id}/checkpoints")).await;
    assert!(
        stats.starts_with("HTTP/1.1 404") && stats.contains("Checkpointing is not enabled"),
        "{stats}"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let refused = loop {
        match rest.trigger_savepoint(batch_id, None, false).await {
            Err(err) if !err.to_string().contains("not every task") => break err,
            Err(_) | Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    assert!(
        refused.to_string().contains("checkpointing is off"),
        "{refused}"
    );
    c.close().await.expect("closes");
}

/// A raw HTTP POST to the MiniCluster's REST port; returns the whole response.
async fn reqwest_like(c: &MiniCluster, path: &str, body: &str) -> String {
    raw_http(
        c,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

/// A raw HTTP GET to the MiniCluster's REST port; returns the whole response.
async fn reqwest_like_get(c: &MiniCluster, path: &str) -> String {
    raw_http(
        c,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Off the test's thread: the cluster's endpoints run on it and must keep answering.
async fn raw_http(c: &MiniCluster, request: &str) -> String {
    use std::io::{Read, Write};
    let address = c.rest_address().expect("rest");
    let request = request.to_string();
    tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(address).expect("connects");
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        socket.write_all(request.as_bytes()).expect("writes");
        let mut response = String::new();
        let _ = socket.read_to_string(&mut response);
        response
    })
    .await
    .expect("the request thread")
}
