//! The monitoring side of the REST API on an in-process MiniCluster with two TaskManagers:
//! real record and byte counts in `/jobs/{id}`, the vertex, subtask, back-pressure and metrics
//! endpoints in Flink's shapes, TaskManager details, the JobManager's metrics, and the typed
//! refusals of bad ids.

use std::collections::BTreeSet;
use std::time::Duration;

use rflink::{JobArgs, JobError, JobRegistry, StreamExecutionEnvironment};
use rflink_runtime::client::build_job_graph;
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::heartbeat::HeartbeatSettings;
use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig};
use rflink_runtime::rest::client::RestClient;
use rflink_runtime::tasks::Jobs;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// `--records` numbers from a parallel source, rebalanced over the network to a map and a
/// collecting sink.
fn counted(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    env.set_parallelism(2);
    let records: u64 = args.parse_or("records", 10_000)?;
    env.from_generator(Some(records), 1, |_, n| n)
        .rebalance()
        .map(|x: u64| x.wrapping_mul(3))
        .collect("monitoring-counted");
    Ok(())
}

/// An endless fast source feeding a map that sleeps on every record: the source is
/// back-pressured.
fn backpressured(env: &mut StreamExecutionEnvironment, _: &JobArgs) -> Result<(), JobError> {
    env.set_parallelism(1);
    env.from_generator(None, 1, |_, n| n)
        .rebalance()
        .map(|x: u64| {
            std::thread::sleep(Duration::from_millis(2));
            x
        })
        .filter(|_: &u64| false)
        .collect("monitoring-backpressured");
    Ok(())
}

/// `counted` with event time: ascending timestamps, so the watermark follows the records.
fn timed(env: &mut StreamExecutionEnvironment, _: &JobArgs) -> Result<(), JobError> {
    env.set_parallelism(2);
    env.from_generator(Some(5_000), 1, |_, n| n)
        .assign_timestamps_and_watermarks(
            rflink::time::WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|x: &u64, _| *x as i64),
        )
        .rebalance()
        .map(|x: u64| x + 1)
        .collect("monitoring-timed");
    Ok(())
}

fn registry() -> JobRegistry {
    let mut r = JobRegistry::new();
    r.register("timed", "numbers with event time over a rebalance", timed);
    r.register("counted", "numbers over a rebalance", counted);
    r.register(
        "backpressured",
        "a slow map behind a fast source",
        backpressured,
    );
    r
}

async fn cluster() -> (MiniCluster, RestClient) {
    init_tracing();
    let config = MiniClusterConfig {
        num_task_managers: 2,
        slots_per_task_manager: 1,
        heartbeat: HeartbeatSettings {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(2000),
            ..HeartbeatSettings::default()
        },
        jobs: Jobs::new(registry()),
        rest: true,
        ..MiniClusterConfig::default()
    };
    let c = MiniCluster::start(config)
        .await
        .expect("mini cluster starts");
    c.wait_for_task_managers(2, WAIT)
        .await
        .expect("task managers register");
    let rest = RestClient::new(c.rest_address().expect("rest").to_string());
    (c, rest)
}

async fn get(rest: &RestClient, path: &str) -> Value {
    rest.get_json(path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn num(v: &Value, field: &str) -> f64 {
    v.get(field)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number {field} in {v}"))
}

/// A bounded job's counts are exact once it finished (the tasks' final metrics come with their
/// final states), and every monitoring endpoint answers in Flink's shape.
#[actix_rt::test]
async fn a_finished_jobs_records_and_bytes_are_exact_in_flinks_shapes() {
    let (c, rest) = cluster().await;
    let records = 20_000u64;
    let job = build_job_graph(
        &Jobs::new(registry()),
        "counted",
        &["--records".to_string(), records.to_string()],
    )
    .expect("builds");
    let job_id = c.submit_job(job).await.expect("submits");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Finished, "{result:?}");
    assert_eq!(
        rflink::testing::take_collected::<u64>("monitoring-counted").len() as u64,
        records
    );

    let details = get(&rest, &format!("/jobs/{job_id}")).await;
    let vertices = details["vertices"].as_array().expect("vertices");
    assert_eq!(vertices.len(), 2, "{details}");
    let (source, sink) = (&vertices[0], &vertices[1]);
    let metrics = |v: &Value| v["metrics"].clone();
    assert_eq!(num(&metrics(source), "write-records"), records as f64);
    assert_eq!(num(&metrics(source), "read-records"), 0.0);
    assert_eq!(num(&metrics(sink), "read-records"), records as f64);
    assert_eq!(num(&metrics(sink), "write-records"), 0.0);
    // Two TaskManagers with one slot each: half of the rebalance crosses the network.
    assert!(num(&metrics(source), "write-bytes") > 0.0, "{source}");
    assert!(num(&metrics(sink), "read-bytes") > 0.0, "{sink}");
    assert_eq!(metrics(sink)["read-records-complete"], Value::Bool(true));
    assert_eq!(
        source["slotSharingGroupId"], sink["slotSharingGroupId"],
        "one slot sharing group per job"
    );

    let tms = get(&rest, "/taskmanagers").await;
    let tm_ids: BTreeSet<String> = tms["taskmanagers"]
        .as_array()
        .expect("taskmanagers")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(tm_ids.len(), 2);

    let vid = sink["id"].as_str().expect("vertex id");
    let vertex = get(&rest, &format!("/jobs/{job_id}/vertices/{vid}")).await;
    assert_eq!(vertex["id"], sink["id"]);
    assert_eq!(vertex["parallelism"], 2);
    let subtasks = vertex["subtasks"].as_array().expect("subtasks");
    assert_eq!(subtasks.len(), 2);
    let mut read = 0.0;
    for (i, s) in subtasks.iter().enumerate() {
        assert_eq!(s["subtask"], i);
        assert_eq!(s["status"], "FINISHED");
        assert_eq!(s["attempt"], 0);
        assert!(
            s["endpoint"].as_str().is_some_and(|e| e.contains(':')),
            "{s}"
        );
        assert!(tm_ids.contains(s["taskmanager-id"].as_str().expect("tm id")));
        assert!(num(s, "start-time") > 0.0 && num(s, "end-time") >= num(s, "start-time"));
        assert!(s["status-duration"]["RUNNING"].is_number(), "{s}");
        assert_eq!(s["start_time"], s["start-time"]);
        read += num(&s["metrics"], "read-records");
    }
    assert_eq!(read, records as f64);
    assert_eq!(
        num(&vertex["aggregated"]["metrics"]["read-records"], "sum"),
        records as f64
    );

    let times = get(
        &rest,
        &format!("/jobs/{job_id}/vertices/{vid}/subtasktimes"),
    )
    .await;
    let first = &times["subtasks"][0];
    assert_eq!(first["timestamps"].as_object().map(|o| o.len()), Some(10));
    assert!(num(&first["timestamps"], "RUNNING") > 0.0);

    let by_tm = get(
        &rest,
        &format!("/jobs/{job_id}/vertices/{vid}/taskmanagers"),
    )
    .await;
    let by_tm = by_tm["taskmanagers"].as_array().expect("taskmanagers");
    assert_eq!(by_tm.len(), 2, "one subtask on each TaskManager");
    assert_eq!(by_tm[0]["status-counts"]["FINISHED"], 1);

    let list = get(&rest, &format!("/jobs/{job_id}/vertices/{vid}/metrics")).await;
    let ids: BTreeSet<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert!(ids.contains("0.numRecordsIn") && ids.contains("1.buffers.inPoolUsage"));
    let values = get(
        &rest,
        &format!("/jobs/{job_id}/vertices/{vid}/metrics?get=0.numRecordsIn,1.numRecordsIn,nope"),
    )
    .await;
    let values = values.as_array().expect("values");
    assert_eq!(values.len(), 2, "unknown names are left out");
    let total: f64 = values
        .iter()
        .map(|v| {
            v["value"]
                .as_str()
                .expect("string")
                .parse::<f64>()
                .expect("number")
        })
        .sum();
    assert_eq!(total, records as f64);
    let agg = get(
        &rest,
        &format!("/jobs/{job_id}/vertices/{vid}/subtasks/metrics?get=numRecordsIn&agg=sum,max"),
    )
    .await;
    assert_eq!(num(&agg[0], "sum"), records as f64);
    assert!(agg[0].get("min").is_none(), "only the asked aggregates");

    let bp = get(
        &rest,
        &format!("/jobs/{job_id}/vertices/{vid}/backpressure"),
    )
    .await;
    assert_eq!(bp["status"], "ok");
    assert!(["ok", "low", "high"].contains(&bp["backpressure-level"].as_str().expect("level")));
    assert_eq!(bp["subtasks"].as_array().map(Vec::len), Some(2));

    // Its inputs ended, and an ended channel counts as the maximum watermark (as in Flink).
    assert_eq!(
        get(&rest, &format!("/jobs/{job_id}/vertices/{vid}/watermarks")).await,
        serde_json::json!([
            {"id": "0.currentInputWatermark", "value": i64::MAX.to_string()},
            {"id": "1.currentInputWatermark", "value": i64::MAX.to_string()},
        ])
    );
    assert_eq!(
        get(
            &rest,
            &format!("/jobs/{job_id}/vertices/{vid}/accumulators")
        )
        .await["user-accumulators"],
        serde_json::json!([])
    );
    // Flink's web UI reads both for a vertex's Accumulators tab (a 404 here empties it).
    let subtask_accumulators = get(
        &rest,
        &format!("/jobs/{job_id}/vertices/{vid}/subtasks/accumulators"),
    )
    .await;
    assert_eq!(subtask_accumulators["id"], vid);
    assert_eq!(subtask_accumulators["parallelism"], 2);
    let subtasks = subtask_accumulators["subtasks"]
        .as_array()
        .expect("subtasks");
    assert_eq!(subtasks.len(), 2, "{subtask_accumulators}");
    for (i, s) in subtasks.iter().enumerate() {
        let mut keys: Vec<&str> = s
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["attempt", "host", "subtask", "user-accumulators"],
            "{s}"
        );
        assert_eq!(s["subtask"], i, "{s}");
        assert_eq!(s["user-accumulators"], serde_json::json!([]));
        assert!(
            s["host"].as_str().is_some_and(|h| h.contains(':')),
            "where it ran: {s}"
        );
    }
    let config = get(&rest, &format!("/jobs/{job_id}/config")).await;
    assert_eq!(config["jid"], job_id.to_string());
    assert_eq!(config["execution-config"]["job-parallelism"], 2);
    let apps = get(&rest, "/applications/overview").await;
    assert_eq!(apps["applications"][0]["id"], job_id.to_string());
    assert_eq!(apps["applications"][0]["status"], "FINISHED");
    // The application's page (Flink 2.3's `ApplicationDetailsInfo`): its one job as
    // `/jobs/overview` lists it, and the time of each application status reached.
    let app = get(&rest, &format!("/applications/{job_id}")).await;
    let mut keys: Vec<&str> = app
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "duration",
            "end-time",
            "id",
            "jobs",
            "name",
            "start-time",
            "status",
            "timestamps"
        ],
        "{app}"
    );
    assert_eq!(app["id"], job_id.to_string());
    assert_eq!(app["status"], "FINISHED");
    let overview = get(&rest, "/jobs/overview").await;
    assert_eq!(
        app["jobs"], overview["jobs"],
        "its job, as /jobs/overview lists it"
    );
    assert_eq!(app["name"], overview["jobs"][0]["name"]);
    let start = app["start-time"].as_i64().expect("a time");
    let end = app["end-time"].as_i64().expect("a time");
    assert!(end >= start && start > 0, "{app}");
    assert_eq!(app["duration"].as_i64(), Some(end - start), "{app}");
    assert_eq!(
        app["timestamps"],
        serde_json::json!({
            "CREATED": start, "RUNNING": start, "FAILING": 0, "FAILED": 0,
            "CANCELING": 0, "CANCELED": 0, "FINISHED": end,
        })
    );
    assert_eq!(
        get(&rest, &format!("/applications/{job_id}/exceptions")).await,
        serde_json::json!({"exceptionHistory": {"entries": []}}),
        "a finished job: no failure"
    );
    let (status, body) = rest
        .get_text(&format!("/applications/{}", "0".repeat(32)))
        .await
        .expect("answers");
    assert_eq!(status, 404, "an unknown application: {body}");
    let (status, body) = rest
        .get_text("/applications/not-an-id/exceptions")
        .await
        .expect("answers");
    assert_eq!(status, 400, "{body}");

    // Refusals: typed, Flink's error body, the server goes on.
    let (status, body) = rest
        .get_text(&format!("/jobs/{job_id}/checkpoints/config"))
        .await
        .expect("answers");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("Checkpointing is not enabled"), "{body}");
    let (status, body) = rest
        .get_text(&format!("/jobs/{job_id}/vertices/not-a-vertex"))
        .await
        .expect("answers");
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("{\"errors\":["), "{body}");
    let (status, _) = rest
        .get_text(&format!("/jobs/{job_id}/vertices/{}", "0".repeat(32)))
        .await
        .expect("answers");
    assert_eq!(status, 404);
    let (status, _) = rest
        .get_text(&format!("/jobs/{job_id}/checkpoints/details/abc"))
        .await
        .expect("answers");
    assert_eq!(status, 400);
    let (status, _) = rest
        .get_text(&format!("/taskmanagers/{}", "f".repeat(32)))
        .await
        .expect("answers");
    assert_eq!(status, 404);
    let (status, _) = rest
        .get_text(&format!("/v1/jobs/{}/vertices/{vid}", "0".repeat(32)))
        .await
        .expect("answers");
    assert_eq!(status, 404, "an unknown job");
    c.close().await.expect("closes");
}

/// TaskManager details carry the real shuffle memory; the JobManager's own metrics and its
/// Prometheus text are served.
#[actix_rt::test]
async fn task_manager_and_job_manager_metrics_are_served() {
    let (c, rest) = cluster().await;
    let tms = get(&rest, "/taskmanagers").await;
    let id = tms["taskmanagers"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    // The TaskManager metrics ride on heartbeats: wait for the first one.
    let deadline = tokio::time::Instant::now() + WAIT;
    let details = loop {
        let d = get(&rest, &format!("/taskmanagers/{id}")).await;
        if num(&d["metrics"], "nettyShuffleMemorySegmentsTotal") > 0.0 {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "no metrics: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(details["id"], id.as_str());
    assert_eq!(num(&details["metrics"], "heapUsed"), 0.0, "no JVM heap");
    assert!(details["allocatedSlots"].is_array());
    let m = get(
        &rest,
        &format!("/taskmanagers/{id}/metrics?get=Status.Shuffle.Netty.TotalMemorySegments"),
    )
    .await;
    assert_eq!(m[0]["id"], "Status.Shuffle.Netty.TotalMemorySegments");

    // The ResourceManager publishes its counts at its heartbeat tick.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let jm = get(
            &rest,
            "/jobmanager/metrics?get=numRegisteredTaskManagers,taskSlotsTotal",
        )
        .await;
        if jm[0]["value"] == "2" {
            assert_eq!(jm[1]["value"], "2");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{jm}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, text) = rest.get_text("/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE flink_jobmanager_numRegisteredTaskManagers gauge"));
    assert!(
        text.contains("flink_jobmanager_taskmanager_heartbeatRttMs{"),
        "{text}"
    );
    // The dashboard's files, compiled in; its page at `/`.
    for (path, needle) in [
        ("/", "app.js"),
        ("/app.js", "/jobs/overview"),
        ("/style.css", "{"),
    ] {
        let (status, body) = rest.get_text(path).await.expect("answers");
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(needle), "{path}: {needle} missing");
    }
    let env = get(&rest, "/jobmanager/environment").await;
    assert!(env["jvm"]["version"]
        .as_str()
        .is_some_and(|v| v.contains("rflink")));
    c.close().await.expect("closes");
}

/// A source behind a slow consumer is reported back-pressured (Flink's level `high`), the
/// consumer busy; the job's restarts are 0 in the JobManager's metrics.
#[actix_rt::test]
async fn a_back_pressured_source_is_reported_high() {
    let (c, rest) = cluster().await;
    let job = build_job_graph(&Jobs::new(registry()), "backpressured", &[]).expect("builds");
    let job_id = c.submit_job(job).await.expect("submits");
    let deadline = tokio::time::Instant::now() + WAIT;
    let details = loop {
        let d = get(&rest, &format!("/jobs/{job_id}")).await;
        if d["state"] == "RUNNING" {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "never RUNNING: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let source = details["vertices"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let consumer = details["vertices"][1]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let bp = get(
            &rest,
            &format!("/jobs/{job_id}/vertices/{source}/backpressure"),
        )
        .await;
        if bp["backpressure-level"] == "high" {
            assert!(num(&bp["subtasks"][0], "ratio") > 0.5, "{bp}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never high: {bp}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bp = get(
        &rest,
        &format!("/jobs/{job_id}/vertices/{consumer}/backpressure"),
    )
    .await;
    assert_eq!(
        bp["backpressure-level"], "ok",
        "the consumer is not blocked: {bp}"
    );
    let (_, text) = rest.get_text("/metrics").await.expect("scrape");
    assert!(
        text.lines()
            .any(|l| l.starts_with("flink_jobmanager_job_numRestarts{")
                && l.contains(&job_id.to_string())
                && l.ends_with(" 0")),
        "{text}"
    );
    rest.cancel_job(job_id).await.expect("cancels");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Canceled);
    c.close().await.expect("closes");
}

/// A finished event-time job's watermarks: its end of input sent the maximum watermark, which
/// is every consumer subtask's input watermark and every source subtask's output watermark.
#[actix_rt::test]
async fn watermarks_are_reported_per_subtask() {
    let (c, rest) = cluster().await;
    let job = build_job_graph(&Jobs::new(registry()), "timed", &[]).expect("builds");
    let job_id = c.submit_job(job).await.expect("submits");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Finished, "{result:?}");
    assert_eq!(
        rflink::testing::take_collected::<u64>("monitoring-timed").len(),
        5_000
    );
    let details = get(&rest, &format!("/jobs/{job_id}")).await;
    let source = details["vertices"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let sink = details["vertices"][1]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let marks = get(&rest, &format!("/jobs/{job_id}/vertices/{sink}/watermarks")).await;
    assert_eq!(
        marks,
        serde_json::json!([
            {"id": "0.currentInputWatermark", "value": i64::MAX.to_string()},
            {"id": "1.currentInputWatermark", "value": i64::MAX.to_string()},
        ])
    );
    let out = get(
        &rest,
        &format!("/jobs/{job_id}/vertices/{source}/metrics?get=0.currentOutputWatermark"),
    )
    .await;
    assert_eq!(out[0]["value"], i64::MAX.to_string(), "{out}");
    c.close().await.expect("closes");
}
