//! The data plane end to end on in-process MiniClusters: DataStream jobs deployed through the
//! control plane, run by StreamTasks, records over local channels (same TaskExecutor) and over
//! TCP with credit-based flow control (two TaskExecutors in one process have separate data
//! servers). Flink's scenarios 35–37, plus WordCount against a sequential reference.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use rflink::{Collector, JobArgs, JobError, JobRegistry, SinkFunction, StreamExecutionEnvironment};
use rflink_runtime::executiongraph::{ExecutionState, JobStatus};
use rflink_runtime::heartbeat::HeartbeatSettings;
use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig};
use rflink_runtime::network::NetworkConfig;
use rflink_runtime::tasks::Jobs;

const WAIT: Duration = Duration::from_secs(60);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The example jobs plus this file's test jobs.
fn registry() -> JobRegistry {
    let mut jobs = rflink_examples::registry();
    jobs.register(
        "test-wordcount",
        "WordCount into a collecting sink",
        test_wordcount,
    );
    jobs.register(
        "slow-sink",
        "a counted source into a gated sink",
        slow_sink_job,
    );
    jobs.register(
        "pipeline",
        "source -> map -> keyBy -> sink, chained or not",
        pipeline_job,
    );
    jobs.register(
        "failing-sink",
        "a bounded source into a sink that fails",
        failing_sink_job,
    );
    jobs.register(
        "busy-source",
        "a source that emits one record and then stays busy",
        busy_source_job,
    );
    jobs
}

fn config(task_managers: u32, slots: u32, network: NetworkConfig) -> MiniClusterConfig {
    init_tracing();
    MiniClusterConfig {
        num_task_managers: task_managers,
        slots_per_task_manager: slots,
        heartbeat: HeartbeatSettings {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(5000),
            ..HeartbeatSettings::default()
        },
        jobs: Jobs::new(registry()),
        network: Some(network),
        ..MiniClusterConfig::default()
    }
}

async fn cluster(task_managers: u32, slots: u32, network: NetworkConfig) -> MiniCluster {
    let c = MiniCluster::start(config(task_managers, slots, network))
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

// ---- jobs ----

/// WordCount (the example's tokenizer and aggregation) into `collect(--name)`.
fn test_wordcount(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    let p = args.parse::<u32>("parallelism")?.unwrap_or(1);
    env.set_parallelism(p);
    if args.has("no-chaining") {
        env.disable_operator_chaining();
    }
    let name = args.get("name").unwrap_or("wordcount").to_string();
    let input = args.get("input").unwrap_or("/nonexistent").to_string();
    env.read_text_file(&input)
        .flat_map(|line: String, out: &mut dyn Collector<(String, u64)>| {
            rflink_examples::tokenize(&line, |w| out.collect((w, 1)))
        })
        .key_by(|pair: &(String, u64)| pair.0.clone())
        .sum(|pair: &mut (String, u64)| &mut pair.1)
        .collect(&name);
    Ok(())
}

/// A sequence source → map → keyBy → map → collect; `--no-chaining` cuts every chain.
fn pipeline_job(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    let p = args.parse::<u32>("parallelism")?.unwrap_or(1);
    env.set_parallelism(p);
    if args.has("no-chaining") {
        env.disable_operator_chaining();
    }
    let name = args.get("name").unwrap_or("pipeline").to_string();
    let count = args.parse::<u64>("count")?.unwrap_or(10_000);
    env.generate_sequence(0, count - 1)
        .map(|n: u64| (n % 97, n))
        .filter(|pair: &(u64, u64)| !pair.1.is_multiple_of(5))
        .key_by(|pair: &(u64, u64)| pair.0)
        .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
        .map(|pair: (u64, u64)| (pair.0, pair.1 * 2))
        .collect(&name);
    Ok(())
}

/// How many records the slow-sink job's source emitted, and the sink's gate.
static EMITTED: AtomicU64 = AtomicU64::new(0);
static SINK_GATE: OnceLock<(Mutex<bool>, Condvar)> = OnceLock::new();
static SUNK: AtomicU64 = AtomicU64::new(0);
static SINK_ENTERED: AtomicBool = AtomicBool::new(false);

fn sink_gate() -> &'static (Mutex<bool>, Condvar) {
    SINK_GATE.get_or_init(|| (Mutex::new(false), Condvar::new()))
}

/// A sink that blocks on its first record until the test opens the gate.
struct GatedSink;
impl SinkFunction<u64> for GatedSink {
    fn invoke(&mut self, _value: u64) -> Result<(), String> {
        SINK_ENTERED.store(true, Ordering::SeqCst);
        let (lock, cv) = sink_gate();
        let mut open = lock.lock().map_err(|_| "poisoned".to_string())?;
        while !*open {
            open = cv.wait(open).map_err(|_| "poisoned".to_string())?;
        }
        SUNK.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn slow_sink_job(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    let count = args.parse::<u64>("count")?.unwrap_or(1_000_000);
    // Two source subtasks (one per TaskExecutor when each has one slot), one sink subtask: one
    // source feeds the sink through a local channel, the other over TCP.
    env.set_parallelism(2);
    env.generate_sequence(0, count - 1)
        .map(|n: u64| {
            EMITTED.fetch_add(1, Ordering::SeqCst);
            n
        })
        .rebalance()
        .add_sink("gated", || GatedSink)
        .set_parallelism(1);
    Ok(())
}

/// A sink whose subtask 0 fails on its first record: its producers may have finished with
/// data still queued for it.
struct FailingSink {
    subtask: u32,
}
impl SinkFunction<u64> for FailingSink {
    fn open(&mut self, ctx: &rflink::SinkContext) -> Result<(), String> {
        self.subtask = ctx.subtask_index;
        Ok(())
    }
    fn invoke(&mut self, _value: u64) -> Result<(), String> {
        if self.subtask == 0 {
            return Err("the sink failed on purpose".into());
        }
        Ok(())
    }
}

fn failing_sink_job(env: &mut StreamExecutionEnvironment, _: &JobArgs) -> Result<(), JobError> {
    env.set_parallelism(2);
    env.generate_sequence(0, 99_999)
        .rebalance()
        .add_sink("failing", || FailingSink { subtask: 0 });
    Ok(())
}

/// Emits one record, then keeps reporting `More` without emitting anything: a task that is
/// never idle, so only the buffer timeout pushes its one record out of the partial batch.
struct BusySource {
    emitted: bool,
}
impl rflink::SourceFunction<u64> for BusySource {
    fn poll_next(
        &mut self,
        out: &mut dyn Collector<u64>,
        _max_records: usize,
    ) -> Result<rflink::SourceStatus, String> {
        if !self.emitted {
            self.emitted = true;
            out.collect(42);
        } else {
            std::thread::yield_now();
        }
        Ok(rflink::SourceStatus::More)
    }
}

fn busy_source_job(env: &mut StreamExecutionEnvironment, _: &JobArgs) -> Result<(), JobError> {
    env.set_parallelism(1);
    env.add_source("busy", false, || BusySource { emitted: false })
        .rebalance()
        .collect("busy-source");
    Ok(())
}

// ---- reference ----

fn collected_counts(name: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (word, count) in rflink::testing::take_collected::<(String, u64)>(name) {
        assert!(
            out.insert(word.clone(), count).is_none(),
            "word {word:?} emitted twice: batch-mode aggregation emits each key once"
        );
    }
    out
}

/// Waits (with a deadline) until every slot is free and none of the `tms` TaskManagers holds a
/// network buffer.
async fn wait_for_free_slots_and_buffers(c: &MiniCluster, tms: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let overview = c.overview().await.expect("overview");
        let in_use: Vec<usize> = (0..tms)
            .filter_map(|i| c.task_manager(i))
            .filter_map(|tm| tm.shuffle())
            .map(|s| s.buffer_stats().in_use)
            .collect();
        if overview.slots_available == overview.slots_total && in_use.iter().all(|n| *n == 0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots {}/{} free, buffers in use per TaskManager: {in_use:?}",
            overview.slots_available,
            overview.slots_total
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- tests ----

/// WordCount on random inputs equals the sequential reference at parallelism 1–4, on one
/// TaskExecutor (local channels) and on two (remote channels over TCP), chained and unchained.
#[actix_rt::test]
async fn wordcount_matches_the_sequential_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (tms, p, seed, chaining) in [
        (1u32, 1u32, 1u64, true),
        (1, 2, 2, true),
        (1, 3, 3, false),
        (2, 2, 4, true),
        (2, 4, 5, true),
        (2, 3, 6, false),
    ] {
        let text = rflink_examples::text::random_text(seed, 3000 + seed as usize * 100);
        let path = dir.path().join(format!("input-{seed}.txt"));
        std::fs::write(&path, &text).expect("write input");
        let slots = p.div_ceil(tms);
        let c = cluster(tms, slots, NetworkConfig::default()).await;
        let name = format!("wc-{seed}");
        let mut job_args = args(&[
            "--input",
            path.to_str().expect("utf-8 path"),
            "--parallelism",
            &p.to_string(),
            "--name",
            &name,
        ]);
        if !chaining {
            job_args.push("--no-chaining".into());
        }
        let result = c
            .execute("test-wordcount", &job_args, WAIT)
            .await
            .expect("job runs");
        assert_eq!(
            result.status,
            JobStatus::Finished,
            "tms={tms} p={p}: {:?}",
            result.failure
        );
        assert_eq!(
            collected_counts(&name),
            rflink_examples::count_words(&text),
            "tms={tms} p={p} chaining={chaining}"
        );
        let remote: u64 = (0..tms as usize)
            .filter_map(|i| c.task_manager(i))
            .filter_map(|tm| tm.shuffle())
            .map(|s| s.remote_bytes_sent())
            .sum();
        if tms == 1 {
            assert_eq!(remote, 0, "one TaskExecutor: every channel is local");
        } else {
            assert!(remote > 0, "two TaskExecutors: the shuffle crossed TCP");
        }
        c.close().await.expect("closes");
    }
}

/// Chained and unchained runs of the same pipeline give identical results (scenario 37: the
/// chained source→map is one task, keyBy a network shuffle).
#[actix_rt::test]
async fn chained_and_unchained_give_identical_results() {
    let c = cluster(2, 2, NetworkConfig::default()).await;
    let mut results = Vec::new();
    for chaining in [true, false] {
        let name = format!("pipeline-{chaining}");
        let mut job_args = args(&["--parallelism", "2", "--count", "20000", "--name", &name]);
        if !chaining {
            job_args.push("--no-chaining".into());
        }
        let result = c
            .execute("pipeline", &job_args, WAIT)
            .await
            .expect("job runs");
        assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
        let mut out = rflink::testing::take_collected::<(u64, u64)>(&name);
        out.sort_unstable();
        results.push(out);
    }
    let mut expected: HashMap<u64, u64> = HashMap::new();
    for n in (0..20_000u64).filter(|n| !n.is_multiple_of(5)) {
        *expected.entry(n % 97).or_insert(0) += n;
    }
    let mut expected: Vec<(u64, u64)> = expected.into_iter().map(|(k, v)| (k, v * 2)).collect();
    expected.sort_unstable();
    assert_eq!(results[0], expected);
    assert_eq!(results[1], expected);
    c.close().await.expect("closes");
}

/// Scenario 35: a slow consumer holds its producer back. While the sink is blocked the source
/// emits no more than the network buffers can hold, and never more buffers are in use than
/// configured; once the sink resumes, every record arrives.
#[actix_rt::test]
async fn a_slow_sink_backpressures_the_source_with_bounded_buffers() {
    let network = NetworkConfig {
        segment_size: 4096,
        total_buffers: 64,
        local_batch_records: 16,
        ..NetworkConfig::default()
    };
    let records_per_buffer = (network.segment_size / 12).max(network.local_batch_records) as u64;
    let total_buffers = network.total_buffers;
    let c = cluster(2, 1, network).await;
    let count = 200_000u64;
    let job_graph = rflink_runtime::client::build_job_graph(
        &Jobs::new(registry()),
        "slow-sink",
        &args(&["--count", &count.to_string()]),
    )
    .expect("builds");
    let job_id = c.submit_job(job_graph).await.expect("submits");

    // Wait until the sink is stuck on its first record and both sources' writers are blocked
    // on a buffer (backpressure reached them, through the local and the remote channel).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let blocked = (0..2)
            .filter_map(|i| c.task_manager(i))
            .filter_map(|tm| tm.shuffle())
            .all(|s| s.buffer_stats().blocked_writers > 0);
        if SINK_ENTERED.load(Ordering::SeqCst) && blocked {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no backpressure seen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let emitted = EMITTED.load(Ordering::SeqCst);
    eprintln!("emitted {emitted} of {count} records while the sink was blocked");
    let bound = total_buffers as u64 * records_per_buffer * 2;
    assert!(
        emitted <= bound,
        "the source emitted {emitted} records while the sink was blocked (bound {bound})"
    );
    assert!(emitted < count, "the source was not held back");
    for tm in (0..2).filter_map(|i| c.task_manager(i)) {
        if let Some(s) = tm.shuffle() {
            let stats = s.buffer_stats();
            assert!(stats.max_in_use <= stats.total, "{stats:?}");
        }
    }

    // Open the gate: everything arrives, nothing is lost.
    {
        let (lock, cv) = sink_gate();
        *lock.lock().expect("lock") = true;
        cv.notify_all();
    }
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
    assert_eq!(EMITTED.load(Ordering::SeqCst), count);
    assert_eq!(SUNK.load(Ordering::SeqCst), count);
    c.close().await.expect("closes");
}

/// Cancelling a running unbounded streaming job frees every slot and every network buffer.
#[actix_rt::test]
async fn cancelling_a_streaming_job_frees_slots_and_buffers() {
    let c = cluster(2, 2, NetworkConfig::default()).await;
    let job_graph = rflink_runtime::client::build_job_graph(
        &Jobs::new(registry()),
        "sequence-sum",
        &args(&["--parallelism", "4", "--keys", "1000"]),
    )
    .expect("builds");
    let tasks: u32 = job_graph.vertices.iter().map(|v| v.parallelism).sum();
    let mut events = c.events();
    let job_id = c.submit_job(job_graph).await.expect("submits");
    let mut running = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while running < tasks {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("tasks start in time")
            .expect("event stream");
        if let rflink_runtime::events::ClusterEvent::TaskStateChanged {
            state: ExecutionState::Running,
            ..
        } = event
        {
            running += 1;
        }
    }
    c.dispatcher_gateway()
        .ask(rflink_runtime::dispatcher::CancelJob { job_id })
        .await
        .expect("rpc")
        .expect("cancel accepted");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Canceled);
    // Slots and buffers come back (released asynchronously: wait with a deadline).
    wait_for_free_slots_and_buffers(&c, 2).await;
    c.close().await.expect("closes");
}

/// A job whose input is missing fails with a clear error naming the path, and the cluster
/// keeps serving: the next job finishes.
#[actix_rt::test]
async fn a_failing_source_fails_the_job_and_the_cluster_keeps_serving() {
    let c = cluster(1, 2, NetworkConfig::default()).await;
    let result = c
        .execute(
            "test-wordcount",
            &args(&["--input", "/nonexistent/rflink-input", "--name", "missing"]),
            WAIT,
        )
        .await
        .expect("job runs");
    assert_eq!(result.status, JobStatus::Failed);
    let failure = result.failure.expect("a failure");
    assert!(
        failure.message.contains("/nonexistent/rflink-input"),
        "{}",
        failure.message
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("in.txt");
    std::fs::write(&path, "b a b\n").expect("write");
    let result = c
        .execute(
            "test-wordcount",
            &args(&["--input", path.to_str().expect("utf-8"), "--name", "after"]),
            WAIT,
        )
        .await
        .expect("job runs");
    assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
    assert_eq!(
        collected_counts("after"),
        BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 2)])
    );
    c.close().await.expect("closes");
}

/// WordCount's file output through the example job, on two TaskExecutors.
#[actix_rt::test]
async fn wordcount_example_writes_its_output_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    let text = rflink_examples::text::random_text(99, 2000);
    std::fs::write(&input, &text).expect("write");
    let c = cluster(2, 2, NetworkConfig::default()).await;
    let result = c
        .execute(
            "wordcount",
            &args(&[
                "--input",
                input.to_str().expect("utf-8"),
                "--output",
                output.to_str().expect("utf-8"),
                "--parallelism",
                "4",
            ]),
            WAIT,
        )
        .await
        .expect("job runs");
    assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
    let written = std::fs::read_to_string(&output).expect("output exists");
    let got = rflink_examples::parse_counts(&written).expect("`word count` lines");
    assert_eq!(got, rflink_examples::count_words(&text));
    c.close().await.expect("closes");
}

/// A job that fails while its producers still hold data for a consumer that is gone returns
/// every network buffer: the TaskExecutors release the job's unconsumed partitions with it.
#[actix_rt::test]
async fn a_failed_job_returns_every_network_buffer() {
    let c = cluster(2, 1, NetworkConfig::default()).await;
    let result = c
        .execute("failing-sink", &[], WAIT)
        .await
        .expect("job runs");
    assert_eq!(result.status, JobStatus::Failed);
    let failure = result.failure.expect("a failure");
    assert!(
        failure.message.contains("the sink failed on purpose"),
        "{}",
        failure.message
    );
    wait_for_free_slots_and_buffers(&c, 2).await;
    c.close().await.expect("closes");
}

/// Flink's output flusher: a record in a partly filled batch of a task that is never idle still
/// reaches its consumer, within the buffer timeout, while the job runs.
#[actix_rt::test]
async fn the_buffer_timeout_flushes_a_busy_task() {
    let network = NetworkConfig {
        buffer_timeout: Duration::from_millis(20),
        ..NetworkConfig::default()
    };
    let c = cluster(1, 1, network).await;
    let job_graph =
        rflink_runtime::client::build_job_graph(&Jobs::new(registry()), "busy-source", &[])
            .expect("builds");
    let job_id = c.submit_job(job_graph).await.expect("submits");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.is_empty() {
        got = rflink::testing::take_collected::<u64>("busy-source");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record never left the busy task's partial batch"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(got, vec![42]);
    assert_eq!(
        c.job_status(job_id).await.expect("status"),
        JobStatus::Running,
        "the record arrived while the source still ran"
    );
    c.dispatcher_gateway()
        .ask(rflink_runtime::dispatcher::CancelJob { job_id })
        .await
        .expect("rpc")
        .expect("cancel accepted");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Canceled);
    c.close().await.expect("closes");
}

/// `/jobs/{id}/plan` of a streaming job shows its chains and, for each input, Flink's ship
/// strategy: the keyBy exchange is `HASH`, the parallelism change into the single text sink
/// `REBALANCE`.
#[actix_rt::test]
async fn the_rest_plan_shows_chains_and_ship_strategies() {
    let mut cfg = config(1, 2, NetworkConfig::default());
    cfg.rest = true;
    let c = MiniCluster::start(cfg).await.expect("starts");
    c.wait_for_task_managers(1, WAIT).await.expect("registered");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    std::fs::write(&input, "a b a\n").expect("write");
    let job_graph = rflink_runtime::client::build_job_graph(
        &Jobs::new(registry()),
        "wordcount",
        &args(&[
            "--input",
            input.to_str().expect("utf-8"),
            "--output",
            output.to_str().expect("utf-8"),
            "--parallelism",
            "2",
        ]),
    )
    .expect("builds");
    let job_id = c.submit_job(job_graph).await.expect("submits");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Finished, "{:?}", result.failure);
    let rest = rflink_runtime::rest::client::RestClient::new(
        c.rest_address().expect("rest runs").to_string(),
    );
    let plan = rest.job_plan(job_id).await.expect("plan").plan;
    let strategies: Vec<(String, String)> = plan
        .nodes
        .iter()
        .flat_map(|n| {
            n.inputs
                .iter()
                .map(move |i| (n.description.clone(), i.ship_strategy.clone()))
        })
        .collect();
    assert_eq!(
        plan.nodes.len(),
        3,
        "source chain, counter chain, sink: {plan:?}"
    );
    assert!(
        strategies
            .iter()
            .any(|(d, s)| d.contains("Counter") && s == "HASH"),
        "{strategies:?}"
    );
    assert!(
        strategies
            .iter()
            .any(|(d, s)| d.contains("Text sink") && s == "REBALANCE"),
        "{strategies:?}"
    );
    assert!(
        plan.nodes
            .iter()
            .any(|n| n.description.contains("Tokenizer") && n.inputs.is_empty()),
        "the source chain (source -> Tokenizer) has no inputs: {plan:?}"
    );
    c.close().await.expect("closes");
}
