//! Event time on an in-process MiniCluster with two TaskManagers: timestamps and watermarks
//! cross chains and network channels (local and remote), an operator's watermark is the
//! minimum of its inputs with idle inputs left out, and the end of input fires every timer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rflink::time::WatermarkStrategy;
use rflink::{
    Collector, JobArgs, JobError, JobRegistry, KeyedContext, KeyedProcessFunction, MapState,
    SourceContext, SourceFunction, SourceStatus, StateRegistry, StreamExecutionEnvironment,
};
use rflink_runtime::client::build_job_graph;
use rflink_runtime::dispatcher::RequestCheckpointStats;
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::heartbeat::HeartbeatSettings;
use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig};
use rflink_runtime::rest::client::RestClient;
use rflink_runtime::tasks::Jobs;

const WAIT: Duration = Duration::from_secs(120);
/// The bucket (a hand-made tumbling window) of the process functions here.
const BUCKET_MS: i64 = 1_000;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The timestamp of generated event `n`: 10 ms apart, up to 40 ms out of order.
fn event_time(rng: &mut rflink::SplitMix64, n: u64) -> i64 {
    (n as i64) * 10 + rng.gen_range(41) as i64
}

/// Counts the events of each key per bucket with event-time timers: a timer at the bucket's
/// end emits `(key, bucket end, count, watermark seen then)`.
#[derive(Clone, Default)]
struct BucketCount {
    counts: MapState<i64, u64>,
}

impl KeyedProcessFunction<u64, (u64, i64), (u64, i64, u64)> for BucketCount {
    fn open(&mut self, state: &mut StateRegistry<u64>) -> Result<(), String> {
        self.counts = state.map_state("counts");
        Ok(())
    }

    fn process_element(
        &mut self,
        (_, ts): (u64, i64),
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut dyn Collector<(u64, i64, u64)>,
    ) {
        // The record's timestamp came from the assigner, across the exchange.
        assert_eq!(
            ctx.timestamp(),
            Some(ts),
            "the timestamp travels with the record"
        );
        let end = ts.div_euclid(BUCKET_MS) * BUCKET_MS + BUCKET_MS;
        let n = ctx.map_get(&self.counts, &end).copied().unwrap_or(0) + 1;
        ctx.map_put(&self.counts, end, n);
        ctx.register_event_time_timer(end - 1);
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut dyn Collector<(u64, i64, u64)>,
    ) {
        assert!(ctx.current_watermark() >= timestamp);
        let end = timestamp + 1;
        if let Some(n) = ctx.map_remove(&self.counts, &end) {
            out.collect((*ctx.key(), end, n));
        }
    }
}

fn bucket_job(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    env.set_parallelism(args.parse_or("parallelism", 3)?);
    let events: u64 = args.parse_or("events", 20_000)?;
    let sink = args.get("sink").unwrap_or("event-time-buckets").to_owned();
    env.from_generator(Some(events), 3, |rng, n| (n % 7, event_time(rng, n)))
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(100))
                .with_timestamp_assigner(|e: &(u64, i64), _| e.1),
        )
        .key_by(|e: &(u64, i64)| e.0)
        .process(BucketCount::default())
        .collect(&sink);
    Ok(())
}

/// Released by the idleness test once it has seen output while one input is idle.
static RELEASE: AtomicBool = AtomicBool::new(false);

/// Emits `events` events of key 0 (timestamps 0, 10, ...), then waits for [`RELEASE`] before
/// finishing; with `silent`, emits nothing and only waits.
struct HeldSource {
    events: u64,
    next: u64,
    silent: bool,
}

impl SourceFunction<(u64, i64)> for HeldSource {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), String> {
        if ctx.subtask_index != 0 {
            self.next = self.events;
        }
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut dyn Collector<(u64, i64)>,
        max_records: usize,
    ) -> Result<SourceStatus, String> {
        if !self.silent {
            for _ in 0..max_records {
                if self.next >= self.events {
                    break;
                }
                out.collect((0, self.next as i64 * 10));
                self.next += 1;
            }
            if self.next < self.events {
                return Ok(SourceStatus::More);
            }
        }
        if RELEASE.load(Ordering::Acquire) {
            return Ok(SourceStatus::Finished);
        }
        std::thread::sleep(Duration::from_millis(5));
        Ok(SourceStatus::Idle)
    }
}

fn idle_union_job(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    env.set_parallelism(2);
    let idleness: u64 = args.parse_or("idleness-ms", 300)?;
    let strategy = || {
        WatermarkStrategy::for_monotonous_timestamps()
            .with_timestamp_assigner(|e: &(u64, i64), _| e.1)
            .with_idleness(Duration::from_millis(idleness))
    };
    let busy = env
        .add_source("busy", false, || HeldSource {
            events: 500,
            next: 0,
            silent: false,
        })
        .assign_timestamps_and_watermarks(strategy());
    let quiet = env
        .add_source("quiet", false, || HeldSource {
            events: 0,
            next: 0,
            silent: true,
        })
        .assign_timestamps_and_watermarks(strategy());
    busy.union([quiet])
        .key_by(|e: &(u64, i64)| e.0)
        .process(BucketCount::default())
        .collect("event-time-idle");
    Ok(())
}

fn registry() -> JobRegistry {
    let mut jobs = rflink_examples::registry();
    jobs.register("buckets", "event-time buckets with timers", bucket_job);
    jobs.register("idle-union", "a union with an idle input", idle_union_job);
    jobs
}

async fn cluster() -> MiniCluster {
    cluster_with(2, 2, None).await
}

async fn cluster_with(task_managers: u32, slots: u32, checkpoints: Option<&Path>) -> MiniCluster {
    init_tracing();
    let mut config = MiniClusterConfig {
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
    };
    config.job_defaults.checkpointing.dir = checkpoints.map(Path::to_path_buf);
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

/// Every bucket of every key fires exactly once with its exact count, in increasing order per
/// key: the watermark reached each subtask in order with the records, over local and remote
/// channels, and the end of input fired the last buckets.
#[actix_rt::test]
async fn event_time_timers_fire_exactly_once_in_order_across_task_managers() {
    let c = cluster().await;
    let events = 20_000u64;
    let sink = "event-time-buckets-p3";
    let job = build_job_graph(
        &Jobs::new(registry()),
        "buckets",
        &args(&["--events", &events.to_string(), "--sink", sink]),
    )
    .expect("builds");
    let job_id = c.submit_job(job).await.expect("submits");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Finished, "{result:?}");

    let mut expected: BTreeMap<(u64, i64), u64> = BTreeMap::new();
    for n in 0..events {
        let mut rng = rflink::SplitMix64::for_index(3, n);
        let ts = event_time(&mut rng, n);
        let end = ts.div_euclid(BUCKET_MS) * BUCKET_MS + BUCKET_MS;
        *expected.entry((n % 7, end)).or_default() += 1;
    }
    let got = rflink::testing::take_collected::<(u64, i64, u64)>(sink);
    // Per key, buckets come out in order (timers fire in timestamp order).
    let mut last: BTreeMap<u64, i64> = BTreeMap::new();
    for (key, end, _) in &got {
        let previous = last.insert(*key, *end);
        assert!(
            previous < Some(*end),
            "key {key}: bucket {end} after {previous:?}"
        );
    }
    let got: BTreeMap<(u64, i64), u64> = got
        .into_iter()
        .map(|(key, end, n)| ((key, end), n))
        .collect();
    assert_eq!(got, expected);
    c.close().await.expect("closes");
}

/// One input of a union is idle (`with_idleness`): the keyed operator's watermark follows the
/// other input alone, so buckets fire while the job still runs; without idleness they could
/// not fire before the idle input ends.
#[actix_rt::test]
async fn an_idle_input_does_not_hold_back_the_watermark() {
    let c = cluster().await;
    let job = build_job_graph(&Jobs::new(registry()), "idle-union", &[]).expect("builds");
    let job_id = c.submit_job(job).await.expect("submits");
    // 500 events 10 ms apart cover buckets ending at 1000..=5000; the busy input's watermark
    // passes 4999 while both sources still run.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen: Vec<(u64, i64, u64)> = Vec::new();
    while !seen.iter().any(|(_, end, _)| *end == 4_000) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no bucket fired while an input was idle: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen.extend(rflink::testing::take_collected::<(u64, i64, u64)>(
            "event-time-idle",
        ));
    }
    RELEASE.store(true, Ordering::Release);
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Finished, "{result:?}");
    seen.extend(rflink::testing::take_collected::<(u64, i64, u64)>(
        "event-time-idle",
    ));
    seen.sort_unstable();
    let expected: Vec<(u64, i64, u64)> = (1..=5).map(|b| (0, b * 1_000, 100)).collect();
    assert_eq!(seen, expected);
    c.close().await.expect("closes");
}

async fn checkpoint_stats(
    c: &MiniCluster,
    job_id: rflink_runtime::types::JobId,
) -> serde_json::Value {
    let view = c
        .dispatcher_gateway()
        .ask(RequestCheckpointStats { job_id })
        .await
        .expect("asks")
        .expect("answers")
        .expect("checkpointing is on");
    serde_json::to_value(view).expect("serializes")
}

/// Event-time windows with checkpoints: a TaskManager running part of the job is lost after a
/// checkpoint completed, mid-window; the job restarts from that checkpoint (window contents
/// and timers restored, sources rewound, uncommitted output discarded), and the committed
/// window results are exactly those of an uninterrupted run: no window lost or counted twice.
#[actix_rt::test]
async fn window_results_are_exact_after_a_lost_task_manager() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("out");
    let mut c = cluster_with(3, 1, Some(&dir.path().join("checkpoints"))).await;
    let (lines, window_ms) = (6_000u64, 500i64);
    let job = build_job_graph(
        &Jobs::new(registry()),
        "windowed-wordcount",
        &args(&[
            "--lines",
            &lines.to_string(),
            "--lines-per-second",
            "2000",
            "--window-ms",
            &window_ms.to_string(),
            "--checkpoint-interval",
            "100",
            "--parallelism",
            "2",
            "--output",
            &output.display().to_string(),
        ]),
    )
    .expect("builds");
    let job_id = c.submit_job(job).await.expect("submits");
    let deadline = tokio::time::Instant::now() + WAIT;
    while checkpoint_stats(&c, job_id).await["counts"]["completed"].as_u64() < Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let text = rflink::sinks::read_committed_parts(&output).expect("reads the committed output");
    let mut got: Vec<String> = text.lines().map(str::to_string).collect();
    got.sort();
    let expected = rflink_examples::windowing::windowed_wordcount_reference(7, lines, window_ms);
    assert_eq!(
        got.len(),
        expected.len(),
        "window results: got {} lines, expected {}",
        got.len(),
        expected.len()
    );
    assert!(
        got == expected,
        "window results differ from an uninterrupted run"
    );
    let json = checkpoint_stats(&c, job_id).await;
    assert_eq!(
        json["counts"]["restored"], 1,
        "the job restored a checkpoint: {json}"
    );
    c.close().await.expect("closes");
}

/// Out-of-order events for the session example: 10 users, an event every 50 ms of event time,
/// each up to 100 ms late (under the 200 ms out-of-orderness bound), and now and then an event
/// stamped before the stream began, far from any other event of its user (so it cannot join an
/// open session): late.
fn session_events(seed: u64, count: u64, gap: i64) -> Vec<(String, i64)> {
    let mut events: Vec<(String, i64)> = Vec::new();
    let mut late_candidates: Vec<usize> = Vec::new();
    for n in 0..count {
        let mut rng = rflink::SplitMix64::for_index(seed, n);
        let user = format!("user{}", rng.gen_range(10));
        let cursor = 10_000 + (n as i64) * 50;
        if n > 200 && rng.gen_range(100) == 0 {
            late_candidates.push(events.len());
            events.push((user, n as i64));
        } else {
            events.push((user, cursor + rng.gen_range(101) as i64));
        }
    }
    let isolated = |i: usize| {
        let (user, ts) = &events[i];
        events
            .iter()
            .enumerate()
            .all(|(j, (u, t))| j == i || u != user || (t - ts).abs() > 2 * gap)
    };
    let keep: Vec<bool> = (0..events.len())
        .map(|i| !late_candidates.contains(&i) || isolated(i))
        .collect();
    events
        .into_iter()
        .zip(keep)
        .filter_map(|(e, keep)| keep.then_some(e))
        .collect()
}

/// Equal sorted lists, or a panic naming a few missing and extra lines (not thousands).
fn assert_same(got: &[String], expected: &[String], what: &str) {
    if got == expected {
        return;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|l| !got.contains(l))
        .take(8)
        .collect();
    let extra: Vec<&String> = got
        .iter()
        .filter(|l| !expected.contains(l))
        .take(8)
        .collect();
    panic!(
        "{what}: {} lines, expected {}; missing {missing:?}; extra {extra:?}",
        got.len(),
        expected.len()
    );
}

fn read_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("reads the output");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The session-window example over shuffled-in-time (out-of-order) events with late ones, at
/// parallelism 1 to 4: every session (user, start, end, count) equals the sequential
/// reference, and exactly the late events are in the side output.
#[actix_rt::test]
async fn session_windows_match_the_reference_at_every_parallelism() {
    let c = cluster().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let gap = 300;
    let events = session_events(5, 3_000, gap);
    let input = dir.path().join("events.txt");
    let text: String = events.iter().map(|(u, t)| format!("{u} {t}\n")).collect();
    std::fs::write(&input, text).expect("writes the input");
    let (sessions, mut late) =
        rflink_examples::windowing::session_windows_reference(&events, gap, 200);
    late.sort();
    assert!(late.len() >= 5, "the input has late events: {late:?}");
    for p in 1..=4u32 {
        let out = dir.path().join(format!("sessions-{p}"));
        let late_out = dir.path().join(format!("late-{p}"));
        let result = c
            .execute(
                "session-windows",
                &args(&[
                    "--input",
                    &input.display().to_string(),
                    "--output",
                    &out.display().to_string(),
                    "--late-output",
                    &late_out.display().to_string(),
                    "--gap",
                    &gap.to_string(),
                    "--out-of-orderness",
                    "200",
                    "--parallelism",
                    &p.to_string(),
                ]),
                WAIT,
            )
            .await
            .expect("runs");
        assert_eq!(result.status, JobStatus::Finished, "p={p}: {result:?}");
        assert_same(
            &read_lines(&out),
            &sessions,
            &format!("sessions at parallelism {p}"),
        );
        assert_same(
            &read_lines(&late_out),
            &late,
            &format!("late events at parallelism {p}"),
        );
    }
    c.close().await.expect("closes");
}

/// Flink's WindowWordCount (sliding count windows) at parallelism 1 to 4: per word, the
/// sequence of emitted counts equals the reference.
#[actix_rt::test]
async fn window_wordcount_matches_the_reference_at_every_parallelism() {
    let c = cluster().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let lines = rflink_examples::generated_text(9, 3_000);
    let input = dir.path().join("text.txt");
    std::fs::write(&input, lines.join("\n")).expect("writes the input");
    let expected =
        rflink_examples::windowing::window_wordcount_reference(&lines.join("\n"), 50, 20);
    for p in 1..=4u32 {
        let out = dir.path().join(format!("counts-{p}"));
        let result = c
            .execute(
                "window-wordcount",
                &args(&[
                    "--input",
                    &input.display().to_string(),
                    "--output",
                    &out.display().to_string(),
                    "--window",
                    "50",
                    "--slide",
                    "20",
                    "--parallelism",
                    &p.to_string(),
                ]),
                WAIT,
            )
            .await
            .expect("runs");
        assert_eq!(result.status, JobStatus::Finished, "p={p}: {result:?}");
        let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for line in std::fs::read_to_string(&out).expect("reads").lines() {
            let (word, count) = line.rsplit_once(' ').expect("word count");
            got.entry(word.to_owned())
                .or_default()
                .push(count.parse().expect("a count"));
        }
        assert_eq!(got, expected, "parallelism {p}");
    }
    c.close().await.expect("closes");
}
