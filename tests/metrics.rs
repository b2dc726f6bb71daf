//! Prometheus metrics of real `rflink-node` processes, scraped while a streaming WordCount runs
//! and parsed by an independent parser (the `prometheus-parse` crate): the JobManager's
//! `/metrics` on its REST port, each TaskManager's on the port its ready line and
//! `/taskmanagers` advertise. Names and labels follow Flink's Prometheus reporter.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::rest::client::RestClient;
use support::Cluster;

const WAIT: Duration = Duration::from_secs(60);

/// Scrapes `http://address/metrics` and parses it; panics on a bad status or unparsable text.
async fn scrape(address: &str) -> Scrape {
    let (status, text) = RestClient::new(address.to_string())
        .get_text("/metrics")
        .await
        .unwrap_or_else(|e| panic!("scraping {address}: {e}"));
    assert_eq!(status, 200, "{address}/metrics: {text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        // Every sample line is `name{labels} value` with a finite or special float.
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("{address}/metrics does not parse: {e}\n{text}"))
}

fn value(s: &Sample) -> f64 {
    match s.value {
        Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => v,
        _ => panic!("{} is not a plain value", s.metric),
    }
}

fn samples<'a>(scrape: &'a Scrape, metric: &str) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .collect()
}

fn sum_for_job(scrape: &Scrape, metric: &str, job: &str) -> f64 {
    samples(scrape, metric)
        .into_iter()
        .filter(|s| s.labels.get("job_id") == Some(job))
        .map(value)
        .sum()
}

#[actix_rt::test]
async fn jobmanager_and_taskmanagers_expose_flink_style_prometheus_metrics() {
    // JSON logs, to check below that a task's events carry its ids.
    let cluster = Cluster::start(2, 1, &["--log-format", "json"]);
    let job_id = cluster.submit_example(
        "streaming-wordcount",
        &[
            "--lines",
            "100000000",
            "--lines-per-second",
            "2000",
            "--parallelism",
            "2",
            "--checkpoint-interval",
            "300",
        ],
        WAIT,
    );
    cluster
        .wait_for_job_status(job_id, |s| s == JobStatus::Running, Instant::now() + WAIT)
        .await;
    cluster.wait_for_running_tasks(job_id, 4, WAIT).await;
    let job = job_id.to_string();

    // Each TaskManager advertises its endpoint in /taskmanagers, as its ready line says.
    let advertised: BTreeSet<String> = cluster
        .rest
        .taskmanagers()
        .await
        .expect("taskmanagers")
        .into_iter()
        .filter_map(|t| t.metrics_address)
        .collect();
    let ready: BTreeSet<String> = cluster.tms.iter().map(|tm| tm.ready("metrics")).collect();
    assert_eq!(
        advertised, ready,
        "/taskmanagers names every metrics endpoint"
    );

    // Records flow: wait until every TaskManager's tasks have counted some.
    let deadline = Instant::now() + WAIT;
    let tm_scrapes = loop {
        let mut scrapes = Vec::new();
        for address in &ready {
            scrapes.push(scrape(address).await);
        }
        let flowing = scrapes.iter().all(|s| {
            sum_for_job(s, "flink_taskmanager_job_task_numRecordsIn", &job) > 0.0
                && sum_for_job(s, "flink_taskmanager_job_task_numRecordsOut", &job) > 0.0
        });
        if flowing {
            break scrapes;
        }
        assert!(Instant::now() < deadline, "no records counted yet");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let mut tm_ids = BTreeSet::new();
    for scrape in &tm_scrapes {
        let records_in = samples(scrape, "flink_taskmanager_job_task_numRecordsIn");
        // One subtask of each of the two vertices per TaskManager (one slot each).
        assert_eq!(records_in.len(), 2, "{records_in:?}");
        for s in &records_in {
            for label in [
                "host",
                "tm_id",
                "job_id",
                "job_name",
                "task_id",
                "task_attempt_id",
                "task_name",
                "subtask_index",
                "task_attempt_num",
            ] {
                assert!(s.labels.get(label).is_some(), "{label} missing: {s:?}");
            }
            assert_eq!(s.labels.get("job_id"), Some(job.as_str()));
            tm_ids.insert(s.labels.get("tm_id").map(str::to_string));
        }
        for metric in [
            "flink_taskmanager_job_task_numBytesOut",
            "flink_taskmanager_job_task_numRecordsInPerSecond",
            "flink_taskmanager_job_task_backPressuredTimeMsPerSecond",
            "flink_taskmanager_job_task_idleTimeMsPerSecond",
            "flink_taskmanager_job_task_busyTimeMsPerSecond",
            "flink_taskmanager_job_task_buffers_inPoolUsage",
            "flink_taskmanager_job_task_buffers_outPoolUsage",
            "flink_taskmanager_Status_Shuffle_Netty_TotalMemorySegments",
        ] {
            assert!(!samples(scrape, metric).is_empty(), "{metric} missing");
        }
        for s in samples(
            scrape,
            "flink_taskmanager_job_task_backPressuredTimeMsPerSecond",
        ) {
            assert!((0.0..=1000.0 + 1e-6).contains(&value(s)), "{s:?}");
        }
        // The consumer's input channels, each with its credit.
        let credit = samples(
            scrape,
            "flink_taskmanager_job_task_Shuffle_Netty_Input_channel_credit",
        );
        assert_eq!(
            credit.len(),
            2,
            "two channels into the consumer subtask: {credit:?}"
        );
        assert!(credit
            .iter()
            .any(|s| s.labels.get("channel_kind") == Some("remote")));
        // The RPC layer: calls per method, the TaskExecutor's mailbox.
        let calls = samples(scrape, "flink_taskmanager_rpc_numCalls");
        assert!(
            calls.iter().any(
                |s| s.labels.get("method") == Some("UpdateTaskExecutionState") && value(s) > 0.0
            ),
            "{calls:?}"
        );
        assert!(
            samples(scrape, "flink_taskmanager_rpc_endpoint_mailboxDepth")
                .iter()
                .any(|s| s.labels.get("gateway") == Some("TaskExecutorGateway"))
        );
    }
    assert_eq!(tm_ids.len(), 2, "two TaskManagers");

    // The JobManager's gauges are set at its heartbeat ticks (every second): wait for a
    // completed checkpoint to show.
    let deadline = Instant::now() + WAIT;
    loop {
        let jm = scrape(cluster.rest.address()).await;
        if sum_for_job(
            &jm,
            "flink_jobmanager_job_numberOfCompletedCheckpoints",
            &job,
        ) > 0.0
        {
            let gauge =
                |name: &str| -> Vec<f64> { samples(&jm, name).into_iter().map(value).collect() };
            assert_eq!(gauge("flink_jobmanager_numRegisteredTaskManagers"), [2.0]);
            assert_eq!(gauge("flink_jobmanager_taskSlotsTotal"), [2.0]);
            assert_eq!(gauge("flink_jobmanager_job_numRestarts"), [0.0]);
            let rtt = samples(&jm, "flink_jobmanager_taskmanager_heartbeatRttMs");
            assert_eq!(rtt.len(), 2, "one per TaskManager: {rtt:?}");
            assert!(sum_for_job(&jm, "flink_jobmanager_job_lastCheckpointSize", &job) > 0.0);
            assert!(sum_for_job(&jm, "flink_jobmanager_job_uptime", &job) > 0.0);
            let offers = samples(&jm, "flink_jobmanager_rpc_numCalls");
            assert!(offers
                .iter()
                .any(|s| s.labels.get("method") == Some("SubmitTask") && value(s) >= 4.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no completed checkpoint in the metrics"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.rest.cancel_job(job_id).await.expect("cancels");
    cluster
        .wait_for_job_status(job_id, |s| s == JobStatus::Canceled, Instant::now() + WAIT)
        .await;
    // Every line a node logs is a JSON object; a task's end carries the task's span with its
    // job and attempt.
    let deadline = Instant::now() + WAIT;
    loop {
        let logs: String = cluster
            .tms
            .iter()
            .map(|tm| tm.logs())
            .collect::<Vec<_>>()
            .join("\n");
        let lines: Vec<serde_json::Value> = logs
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let ended = lines.iter().find(|v| {
            v["fields"]["message"] == "task ended" && v["span"]["job_id"] == job.as_str()
        });
        if let Some(line) = ended {
            assert!(line["span"]["attempt"].is_string(), "{line}");
            assert!(line["span"]["task"].is_string(), "{line}");
            assert_eq!(line["fields"]["state"], "CANCELED", "{line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no JSON 'task ended' line:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A cancelled job's tasks leave the TaskManagers' metrics.
    let deadline = Instant::now() + WAIT;
    for address in &ready {
        loop {
            let s = scrape(address).await;
            if sum_for_job(&s, "flink_taskmanager_job_task_numRecordsIn", &job) == 0.0
                && samples(&s, "flink_taskmanager_job_task_numRecordsIn").is_empty()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "task metrics stayed after the cancel"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A bad path on a TaskManager's metrics port is a 404, and the endpoint goes on serving.
#[actix_rt::test]
async fn a_taskmanager_metrics_port_serves_only_metrics() {
    let cluster = Cluster::start(1, 1, &[]);
    let address = cluster.tms[0].ready("metrics");
    let client = RestClient::new(address.clone());
    let (status, _) = client.get_text("/nope").await.expect("answers");
    assert_eq!(status, 404);
    let scrape = scrape(&address).await;
    assert!(!samples(
        &scrape,
        "flink_taskmanager_Status_Shuffle_Netty_TotalMemorySegments"
    )
    .is_empty());
}
