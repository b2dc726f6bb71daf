//! The REST server and client against a fake, in-memory `RestfulGateway`: every endpoint, Flink's
//! field names (checked against real Flink 2.3 responses), every error status, and that the
//! server keeps serving after each kind of bad input. Ports are ephemeral; every test is bounded.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{self, BoxFuture, FutureExt};
use rflink_rpc::RpcError;
use rflink_runtime::blob::{BlobKey, BlobServer, BlobServerConfig};
use rflink_runtime::dispatcher::{
    ClusterOverview, DispatcherError, HardwareDescription, JobDetails, JobExceptions, JobOverview,
    JobResult, RestfulGateway, TaskCounts, TaskManagerInfo, VertexDetails,
};
use rflink_runtime::executiongraph::{ErrorInfo, ExecutionState, JobStatus};
use rflink_runtime::jobgraph::{
    DistributionPattern, JobGraph, JobLibraryRef, JobProgram, JobVertex,
};
use rflink_runtime::rest::client::{RestClient, RestClientError};
use rflink_runtime::rest::messages::{
    ApplicationStatus, ClusterOverviewWithVersion, ConfigurationInfoEntry, DashboardConfiguration,
    JobDetailsInfo, JobExceptionsInfoWithHistory, JobIdsWithStatusOverview, JobStatusInfo,
    JobSubmitRequestBody, JobSubmitResponseBody, MultipleJobsDetails, TaskManagersInfo,
};
use rflink_runtime::rest::{status_of, RestError, RestServer, RestServerConfig};
use rflink_runtime::types::{Ack, JobId, ResourceId};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// The fake gateway
// ---------------------------------------------------------------------------------------------

fn now_ms() -> i64 {
    rflink_runtime::executiongraph::now_millis()
}

/// A submitted job whose status follows from its invokable and the time since submission:
/// `BlockingNoOpInvokable` runs until cancelled, `NoOpInvokable` finishes after 150 ms,
/// `FailingInvokable` fails after 150 ms, `SleepingInvokable` finishes after `millis`.
struct FakeJob {
    graph: JobGraph,
    start_ms: i64,
    started: Instant,
    cancelled: Option<(Instant, i64)>,
}

impl FakeJob {
    fn invokable(&self) -> &str {
        &self.graph.vertices[0].invokable
    }

    /// The status, and when it was entered (millis).
    fn status_and_since(&self) -> (JobStatus, i64) {
        let elapsed = self.started.elapsed();
        let ran_for = |d: Duration| self.start_ms + d.as_millis() as i64;
        let done_after = match self.invokable() {
            "NoOpInvokable" | "FailingInvokable" => Some(Duration::from_millis(150)),
            "SleepingInvokable" => {
                let millis = self.graph.vertices[0]
                    .config
                    .get("millis")
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(0);
                Some(Duration::from_millis(millis))
            }
            _ => None,
        };
        match (done_after, self.cancelled) {
            (Some(d), cancelled)
                if elapsed >= d && cancelled.is_none_or(|(at, _)| at - self.started >= d) =>
            {
                if self.invokable() == "FailingInvokable" {
                    (JobStatus::Failed, ran_for(d))
                } else {
                    (JobStatus::Finished, ran_for(d))
                }
            }
            (_, Some((_, at_ms))) => (JobStatus::Canceled, at_ms),
            _ => (JobStatus::Running, self.start_ms + 5),
        }
    }

    fn task_state(&self) -> ExecutionState {
        match self.status_and_since().0 {
            JobStatus::Finished => ExecutionState::Finished,
            JobStatus::Failed => ExecutionState::Failed,
            JobStatus::Canceled => ExecutionState::Canceled,
            _ => ExecutionState::Running,
        }
    }

    fn overview(&self) -> JobOverview {
        let (state, since) = self.status_and_since();
        let end_time = if state.is_globally_terminal() {
            since
        } else {
            -1
        };
        let until = if end_time >= 0 { end_time } else { now_ms() };
        JobOverview {
            job_id: self.graph.job_id,
            name: self.graph.name.clone(),
            state,
            start_time: self.start_ms,
            end_time,
            duration: until - self.start_ms,
            last_modification: since,
            tasks: TaskCounts::of(std::iter::repeat_n(
                self.task_state(),
                self.graph.total_subtasks() as usize,
            )),
        }
    }

    fn details(&self) -> JobDetails {
        let overview = self.overview();
        let mut timestamps = BTreeMap::new();
        timestamps.insert("INITIALIZING".to_string(), self.start_ms);
        timestamps.insert("CREATED".to_string(), self.start_ms + 1);
        timestamps.insert("RUNNING".to_string(), self.start_ms + 5);
        if overview.state != JobStatus::Running {
            timestamps.insert(
                overview.state.as_str().to_string(),
                overview.last_modification,
            );
        }
        let state = self.task_state();
        let vertices = self
            .graph
            .vertices
            .iter()
            .map(|v| VertexDetails {
                id: v.id,
                name: v.name.clone(),
                parallelism: v.parallelism,
                max_parallelism: v.max_parallelism,
                status: state,
                start_time: self.start_ms + 5,
                end_time: overview.end_time,
                duration: overview.duration,
                tasks: TaskCounts::of(std::iter::repeat_n(state, v.parallelism as usize)),
                inputs: Vec::new(),
                subtasks: Vec::new(),
            })
            .collect();
        JobDetails {
            overview,
            timestamps,
            vertices,
            now: now_ms(),
            job_config: Default::default(),
            checkpoint_config: None,
        }
    }

    fn failure(&self) -> Option<ErrorInfo> {
        let (status, since) = self.status_and_since();
        (status == JobStatus::Failed).then(|| ErrorInfo {
            kind: "TaskFailure".into(),
            message: self.graph.vertices[0]
                .config
                .get("message")
                .cloned()
                .unwrap_or_else(|| "FailingInvokable failed".into()),
            task_name: Some(format!(
                "{} (1/{})",
                self.graph.vertices[0].name, self.graph.vertices[0].parallelism
            )),
            location: Some("tm-1:6122".into()),
            timestamp: since,
        })
    }

    fn result(&self) -> Option<JobResult> {
        let (status, since) = self.status_and_since();
        status.is_globally_terminal().then(|| JobResult {
            job_id: self.graph.job_id,
            status,
            net_runtime: since - self.start_ms,
            failure: self.failure(),
        })
    }
}

/// An in-memory `RestfulGateway` with switches to make it hang, fail or panic.
#[derive(Default)]
struct FakeGateway {
    jobs: Mutex<Vec<FakeJob>>,
    hang: AtomicBool,
    panic_now: AtomicBool,
    panic_later: AtomicBool,
    fail_with: Mutex<Option<DispatcherError>>,
}

impl FakeGateway {
    fn answer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<FakeJob>) -> Result<T, DispatcherError>,
    ) -> BoxFuture<'static, Result<T, DispatcherError>> {
        assert!(
            !self.panic_now.load(Ordering::SeqCst),
            "fake gateway told to panic"
        );
        if self.panic_later.load(Ordering::SeqCst) {
            return async { panic!("fake gateway future told to panic") }.boxed();
        }
        if self.hang.load(Ordering::SeqCst) {
            return future::pending().boxed();
        }
        if let Some(e) = self.fail_with.lock().unwrap().clone() {
            return future::ready(Err(e)).boxed();
        }
        let result = f(&mut self.jobs.lock().unwrap());
        future::ready(result).boxed()
    }

    fn with_job<T: Send + 'static>(
        &self,
        job_id: JobId,
        f: impl FnOnce(&mut FakeJob) -> T,
    ) -> BoxFuture<'static, Result<T, DispatcherError>> {
        self.answer(move |jobs| {
            jobs.iter_mut()
                .find(|j| j.graph.job_id == job_id)
                .map(f)
                .ok_or(DispatcherError::JobNotFound { job_id })
        })
    }
}

impl RestfulGateway for FakeGateway {
    fn submit_job(&self, job_graph: JobGraph) -> BoxFuture<'static, Result<Ack, DispatcherError>> {
        self.answer(move |jobs| {
            if jobs.iter().any(|j| j.graph.job_id == job_graph.job_id) {
                return Err(DispatcherError::DuplicateJob {
                    job_id: job_graph.job_id,
                });
            }
            job_graph.validate()?;
            jobs.push(FakeJob {
                graph: job_graph,
                start_ms: now_ms(),
                started: Instant::now(),
                cancelled: None,
            });
            Ok(Ack)
        })
    }

    fn cancel_job(&self, job_id: JobId) -> BoxFuture<'static, Result<Ack, DispatcherError>> {
        self.with_job(job_id, |j| {
            if !j.status_and_since().0.is_globally_terminal() && j.cancelled.is_none() {
                j.cancelled = Some((Instant::now(), now_ms()));
            }
            Ack
        })
    }

    fn job_overviews(&self) -> BoxFuture<'static, Result<Vec<JobOverview>, DispatcherError>> {
        self.answer(|jobs| Ok(jobs.iter().rev().map(FakeJob::overview).collect()))
    }

    fn job_status(&self, job_id: JobId) -> BoxFuture<'static, Result<JobStatus, DispatcherError>> {
        self.with_job(job_id, |j| j.status_and_since().0)
    }

    fn job_details(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<JobDetails, DispatcherError>> {
        self.with_job(job_id, |j| j.details())
    }

    fn job_exceptions(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<JobExceptions, DispatcherError>> {
        self.with_job(job_id, |j| {
            let root = j.failure();
            JobExceptions {
                history: root.iter().cloned().collect(),
                root,
                concurrent: Vec::new(),
            }
        })
    }

    fn job_result(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<Option<JobResult>, DispatcherError>> {
        self.with_job(job_id, |j| j.result())
    }

    fn cluster_overview(&self) -> BoxFuture<'static, Result<ClusterOverview, DispatcherError>> {
        self.answer(|jobs| {
            let count =
                |s: JobStatus| jobs.iter().filter(|j| j.status_and_since().0 == s).count() as u32;
            Ok(ClusterOverview {
                taskmanagers: 1,
                slots_total: 4,
                slots_available: 4,
                jobs_running: jobs
                    .iter()
                    .filter(|j| !j.status_and_since().0.is_globally_terminal())
                    .count() as u32,
                jobs_finished: count(JobStatus::Finished),
                jobs_cancelled: count(JobStatus::Canceled),
                jobs_failed: count(JobStatus::Failed),
            })
        })
    }

    fn task_managers(&self) -> BoxFuture<'static, Result<Vec<TaskManagerInfo>, DispatcherError>> {
        self.answer(|_| {
            Ok(vec![TaskManagerInfo {
                resource_id: ResourceId::from_u128(7),
                address: "rflink://tm-1:6122/taskmanager_0".into(),
                data_port: -1,
                time_since_last_heartbeat: 250,
                slots_number: 4,
                free_slots: 3,
                hardware: HardwareDescription {
                    cpu_cores: 8,
                    physical_memory: 16 << 30,
                    free_memory: 1 << 30,
                    managed_memory: 512 << 20,
                },
                metrics_address: None,
                metrics: Vec::new(),
            }])
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const TEST_BOUND: Duration = Duration::from_secs(60);

/// Runs a test body with a hard bound, so a hung request fails the test instead of hanging it.
async fn bounded<F: Future<Output = ()>>(f: F) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    tokio::time::timeout(TEST_BOUND, f)
        .await
        .expect("test exceeded its time bound");
}

struct Harness {
    server: RestServer,
    fake: Arc<FakeGateway>,
    client: RestClient,
    http: awc::Client,
    base: String,
}

fn test_config() -> RestServerConfig {
    RestServerConfig {
        bind_host: "127.0.0.1".into(),
        port: 0,
        request_timeout: Duration::from_millis(500),
        shutdown_timeout_secs: 1,
        ..Default::default()
    }
}

fn start_with(config: RestServerConfig) -> Harness {
    start_full(config, None)
}

fn start_full(config: RestServerConfig, blob_server: Option<Arc<BlobServer>>) -> Harness {
    let fake = Arc::new(FakeGateway::default());
    let gateway: Arc<dyn RestfulGateway> = fake.clone();
    let server = RestServer::start(
        config,
        gateway,
        vec![
            ("rest.port".into(), "0".into()),
            ("taskmanager.numberOfTaskSlots".into(), "4".into()),
        ],
        blob_server,
    )
    .expect("rest server starts on an ephemeral port");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "the real port is reported");
    Harness {
        client: RestClient::with_timeout(addr.to_string(), Duration::from_secs(5)),
        http: awc::Client::builder()
            .timeout(Duration::from_secs(5))
            .finish(),
        base: format!("http://{addr}"),
        server,
        fake,
    }
}

fn start() -> Harness {
    start_with(test_config())
}

fn blocking_graph(name: &str) -> JobGraph {
    let source = JobVertex::new("Source: numbers", "BlockingNoOpInvokable", 2);
    let sink = JobVertex::new("Sink: discard", "BlockingNoOpInvokable", 2)
        .connect_from(&source, DistributionPattern::Pointwise);
    JobGraph::new(name, vec![source, sink])
}

fn graph_of(invokable: &str, config: &[(&str, &str)]) -> JobGraph {
    let mut v = JobVertex::new("only", invokable, 1);
    for (k, val) in config {
        v = v.with_config(*k, *val);
    }
    JobGraph::new(format!("{invokable} job"), vec![v])
}

/// A raw request: status, headers' `Allow` and the body as JSON (Null if not JSON).
struct Raw {
    status: u16,
    allow: Option<String>,
    content_type: Option<String>,
    json: Value,
}

impl Harness {
    async fn raw(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> Raw {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let request = self.http.request(method, format!("{}{path}", self.base));
        let mut response = match body {
            Some((content_type, bytes)) => request
                .insert_header(("content-type", content_type))
                .send_body(bytes)
                .await
                .expect("request sent"),
            None => request.send().await.expect("request sent"),
        };
        let body = response.body().limit(1 << 24).await.expect("body read");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        Raw {
            status: response.status().as_u16(),
            allow: header("allow"),
            content_type: header("content-type"),
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        }
    }

    async fn get(&self, path: &str) -> Raw {
        self.raw("GET", path, None).await
    }

    /// Submits a graph over raw HTTP with rflink's JSON body.
    async fn post_graph(&self, graph: &JobGraph) -> Raw {
        let body = serde_json::to_vec(&JobSubmitRequestBody::new(graph.clone())).unwrap();
        self.raw("POST", "/jobs", Some(("application/json", body)))
            .await
    }

    /// A request that must succeed: proves the server is still serving.
    async fn assert_alive(&self) {
        let r = self.get("/jobs").await;
        assert_eq!(r.status, 200, "server still serves: {}", r.json);
        self.client.overview().await.expect("server still serves");
    }
}

/// Asserts a Flink error body `{"errors":[...]}` with the status, and that the message contains
/// `needle`.
fn assert_error(r: &Raw, status: u16, needle: &str) {
    assert_eq!(r.status, status, "status of {}", r.json);
    let errors = r.json["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("not an error body: {}", r.json));
    assert!(!errors.is_empty());
    let text = errors[0].as_str().unwrap();
    assert!(
        text.contains(needle),
        "error {text:?} should mention {needle:?}"
    );
    let keys: Vec<_> = r.json.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["errors"], "only Flink's errors field");
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// Asserts `ours` has the same keys as `flink` at every level (arrays: each of ours against
/// Flink's first element), except the dotted paths in `optional` (e.g. `plan.nodes[].inputs`),
/// which either side may lack.
fn assert_same_shape(ours: &Value, flink: &Value, optional: &[&str]) {
    fn walk(ours: &Value, flink: &Value, path: &str, optional: &[&str]) {
        match (ours, flink) {
            (Value::Object(o), Value::Object(f)) => {
                for (k, fv) in f {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match o.get(k) {
                        Some(ov) => walk(ov, fv, &p, optional),
                        None => assert!(optional.contains(&p.as_str()), "rflink lacks Flink's {p}"),
                    }
                }
                for k in o.keys() {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    assert!(
                        f.contains_key(k) || optional.contains(&p.as_str()),
                        "rflink has {p}, Flink does not"
                    );
                }
            }
            (Value::Array(o), Value::Array(f)) => {
                if let Some(first) = f.first() {
                    for ov in o {
                        walk(ov, first, &format!("{path}[]"), optional);
                    }
                }
            }
            (Value::Number(_), Value::Number(_))
            | (Value::String(_), Value::String(_))
            | (Value::Bool(_), Value::Bool(_)) => {}
            (o, f) => panic!("{path}: rflink has {o}, Flink has {f}"),
        }
    }
    walk(ours, flink, "", optional);
}

// ---------------------------------------------------------------------------------------------
// Real Flink 2.3 responses (from /work/shared/reference/flink-rest; stack traces shortened)
// ---------------------------------------------------------------------------------------------

const FLINK_CONFIG: &str = r#"{"refresh-interval":3000,"timezone-name":"Coordinated Universal Time","timezone-offset":0,"flink-version":"2.3.0","flink-revision":"c0f8d1a @ 2026-06-14T16:29:03+02:00","features":{"web-submit":true,"web-cancel":true,"web-rescale":false,"web-history":false}}"#;

const FLINK_OVERVIEW: &str = r#"{"taskmanagers":1,"slots-total":1,"slots-available":0,"jobs-running":1,"jobs-finished":0,"jobs-cancelled":0,"jobs-failed":0,"flink-version":"2.3.0","flink-commit":"c0f8d1a"}"#;

const FLINK_JOBS: &str =
    r#"{"jobs":[{"id":"af5f890e0fe95a33eacd05209ff65c97","status":"RUNNING"}]}"#;

const FLINK_JOBS_OVERVIEW: &str = r#"{"jobs":[{"jid":"af5f890e0fe95a33eacd05209ff65c97","name":"anchor-job","jobType":"STREAMING","schedulerType":"Default","start-time":1795222043417,"end-time":-1,"duration":15793,"state":"RUNNING","last-modification":1795222044711,"tasks":{"running":2,"canceling":0,"canceled":0,"total":2,"created":0,"scheduled":0,"deploying":0,"reconciling":0,"finished":0,"initializing":0,"failed":0},"pending-operators":0}]}"#;

const FLINK_JOB: &str = r#"{"jid":"af5f890e0fe95a33eacd05209ff65c97","application-id":"af5f890e0fe95a33eacd05209ff65c97","name":"anchor-job","isStoppable":false,"state":"RUNNING","job-type":"STREAMING","schedulerType":"Default","start-time":1795222043417,"end-time":-1,"duration":15810,"maxParallelism":-1,"now":1795222059227,"timestamps":{"RUNNING":1795222043940,"SUSPENDED":0,"FAILING":0,"FINISHED":0,"FAILED":0,"CANCELLING":0,"RESTARTING":0,"CREATED":1795222043833,"INITIALIZING":1795222043417,"RECONCILING":0,"CANCELED":0},"vertices":[{"id":"cbc357ccb763df2852fee8c4fc7d55f2","slotSharingGroupId":"50858cbbcba7ef523cdff41f89d80481","name":"Source: seq -> throttle","maxParallelism":128,"parallelism":1,"status":"RUNNING","start-time":1795222044206,"end-time":-1,"duration":15021,"tasks":{"CREATED":0,"FAILED":0,"FINISHED":0,"CANCELING":0,"INITIALIZING":0,"RUNNING":1,"CANCELED":0,"DEPLOYING":0,"SCHEDULED":0,"RECONCILING":0},"metrics":{"read-bytes":0,"read-bytes-complete":false,"write-bytes":0,"write-bytes-complete":false,"read-records":0,"read-records-complete":false,"write-records":0,"write-records-complete":false,"accumulated-backpressured-time":0,"accumulated-idle-time":0,"accumulated-busy-time":0.0}},{"id":"90bea66de1c231edf33913ecd54406c1","slotSharingGroupId":"50858cbbcba7ef523cdff41f89d80481","name":"sum -> discard: Writer","maxParallelism":128,"parallelism":1,"status":"RUNNING","start-time":1795222044209,"end-time":-1,"duration":15018,"tasks":{"CREATED":0,"FAILED":0,"FINISHED":0,"CANCELING":0,"INITIALIZING":0,"RUNNING":1,"CANCELED":0,"DEPLOYING":0,"SCHEDULED":0,"RECONCILING":0},"metrics":{"read-bytes":0,"read-bytes-complete":false,"write-bytes":0,"write-bytes-complete":false,"read-records":0,"read-records-complete":false,"write-records":0,"write-records-complete":false,"accumulated-backpressured-time":0,"accumulated-idle-time":0,"accumulated-busy-time":0.0}}],"status-counts":{"CREATED":0,"FAILED":0,"FINISHED":0,"CANCELING":0,"INITIALIZING":0,"RUNNING":2,"CANCELED":0,"DEPLOYING":0,"SCHEDULED":0,"RECONCILING":0},"plan":{"jid":"af5f890e0fe95a33eacd05209ff65c97","name":"anchor-job","type":"STREAMING","nodes":[{"id":"90bea66de1c231edf33913ecd54406c1","operator":"","parallelism":1,"operator_strategy":"","description":"sum<br/>+- discard: Writer<br/>","optimizer_properties":{},"inputs":[{"id":"cbc357ccb763df2852fee8c4fc7d55f2","num":0,"exchange":"pipelined_bounded","ship_strategy":"HASH"}]},{"id":"cbc357ccb763df2852fee8c4fc7d55f2","operator":"","parallelism":1,"operator_strategy":"","description":"Source: seq<br/>+- throttle<br/>","optimizer_properties":{}}]},"pending-operators":0}"#;

const FLINK_STATUS: &str = r#"{"status":"RUNNING"}"#;

const FLINK_EXCEPTIONS_EMPTY: &str = r#"{"exceptionHistory":{"entries":[],"truncated":false}}"#;

const FLINK_EXCEPTIONS: &str = r#"{"exceptionHistory":{"entries":[{"exceptionName":"java.util.concurrent.TimeoutException","stacktrace":"java.util.concurrent.TimeoutException: Heartbeat of TaskManager with id localhost:46443-364831 timed out.\n\tat org.apache.flink.runtime.jobmaster.JobMaster$TaskManagerHeartbeatListener.notifyHeartbeatTimeout(JobMaster.java:1664)\n","timestamp":1795220387826,"failureLabels":{},"taskName":"Source: seq -> throttle (1/1) - execution #1","endpoint":"localhost:34605","taskManagerId":"localhost:46443-364831","concurrentExceptions":[]},{"exceptionName":"java.util.concurrent.TimeoutException","stacktrace":"java.util.concurrent.TimeoutException: The heartbeat of TaskManager with id localhost:32965-5f5f4f timed out.\n\tat org.apache.flink.runtime.jobmaster.JobMaster$TaskManagerHeartbeatListener.notifyHeartbeatTimeout(JobMaster.java:1664)\n","timestamp":1795220355638,"failureLabels":{},"taskName":"Source: seq -> throttle (1/1) - execution #0","endpoint":"localhost:46871","taskManagerId":"localhost:32965-5f5f4f","concurrentExceptions":[]}],"truncated":false}}"#;

const FLINK_TASKMANAGERS: &str = r#"{"taskmanagers":[{"id":"localhost:36667-8ab6cf","path":"pekko.tcp://flink@localhost:36667/user/rpc/taskmanager_0","dataPort":42587,"jmxPort":-1,"timeSinceLastHeartbeat":1795222052839,"slotsNumber":1,"freeSlots":0,"assignedTasks":2,"totalResource":{"cpuCores":1.0,"taskHeapMemory":383,"taskOffHeapMemory":0,"managedMemory":512,"networkMemory":128,"extendedResources":{}},"freeResource":{"cpuCores":0.0,"taskHeapMemory":0,"taskOffHeapMemory":0,"managedMemory":0,"networkMemory":0,"extendedResources":{}},"hardware":{"cpuCores":2,"physicalMemory":25274793984,"freeMemory":536870912,"managedMemory":536870920},"memoryConfiguration":{"frameworkHeap":134217728,"taskHeap":402653174,"frameworkOffHeap":134217728,"taskOffHeap":0,"networkMemory":134217730,"managedMemory":536870920,"jvmMetaspace":268435456,"jvmOverhead":201326592,"totalFlinkMemory":1342177280,"totalProcessMemory":1811939328}}]}"#;

const FLINK_JM_CONFIG: &str = r#"[{"key":"blob.server.port","value":"39669"},{"key":"taskmanager.memory.process.size","value":"1728m"}]"#;

const FLINK_SUBMIT: &str = r#"{"jobUrl":"/jobs/af5f890e0fe95a33eacd05209ff65c97"}"#;

const FLINK_ERROR_404_PATH: &str = r#"{"errors":["Unable to load requested file /no/such/path."]}"#;

fn flink(sample: &str) -> Value {
    serde_json::from_str(sample).expect("sample is JSON")
}

/// Decodes a Flink sample into our type and encodes it back: the same JSON, value for value.
fn assert_round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(sample: &str) {
    let decoded: T = serde_json::from_str(sample)
        .unwrap_or_else(|e| panic!("Flink's body does not decode: {e}\n{sample}"));
    let again = serde_json::to_value(&decoded).unwrap();
    assert_eq!(
        again,
        flink(sample),
        "round trip of {}",
        std::any::type_name::<T>()
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn flink_bodies_round_trip_through_our_types() {
    assert_round_trips::<DashboardConfiguration>(FLINK_CONFIG);
    assert_round_trips::<ClusterOverviewWithVersion>(FLINK_OVERVIEW);
    assert_round_trips::<JobIdsWithStatusOverview>(FLINK_JOBS);
    assert_round_trips::<MultipleJobsDetails>(FLINK_JOBS_OVERVIEW);
    assert_round_trips::<JobDetailsInfo>(FLINK_JOB);
    assert_round_trips::<JobStatusInfo>(FLINK_STATUS);
    assert_round_trips::<JobExceptionsInfoWithHistory>(FLINK_EXCEPTIONS_EMPTY);
    assert_round_trips::<JobExceptionsInfoWithHistory>(FLINK_EXCEPTIONS);
    assert_round_trips::<TaskManagersInfo>(FLINK_TASKMANAGERS);
    assert_round_trips::<Vec<ConfigurationInfoEntry>>(FLINK_JM_CONFIG);
    assert_round_trips::<JobSubmitResponseBody>(FLINK_SUBMIT);
}

#[test]
fn dispatcher_errors_map_to_flink_status_codes() {
    let job_id = JobId::generate();
    let cases = [
        (DispatcherError::JobNotFound { job_id }, 404),
        (DispatcherError::DuplicateJob { job_id }, 409),
        (
            DispatcherError::InvalidJobGraph(rflink_runtime::jobgraph::JobGraphError::Empty),
            400,
        ),
        (
            DispatcherError::JobMasterStartFailed {
                job_id,
                reason: "boom".into(),
            },
            500,
        ),
        (
            DispatcherError::JobMaster {
                job_id,
                reason: "not running".into(),
            },
            409,
        ),
        (DispatcherError::ShuttingDown, 503),
        (
            DispatcherError::Rpc(RpcError::Timeout {
                recipient: "dispatcher".into(),
                message: "RequestJobStatus".into(),
                timeout: Duration::from_secs(10),
            }),
            503,
        ),
        (DispatcherError::Rpc(RpcError::ServiceShutdown), 500),
    ];
    for (err, code) in cases {
        assert_eq!(status_of(&err).as_u16(), code, "{err}");
    }
}

#[actix_rt::test]
async fn config_overview_and_jobmanager_config_have_flinks_fields() {
    bounded(async {
        let h = start();
        for prefix in ["", "/v1"] {
            let r = h.get(&format!("{prefix}/config")).await;
            assert_eq!(r.status, 200);
            assert_eq!(
                r.content_type.as_deref(),
                Some("application/json; charset=UTF-8")
            );
            assert_same_shape(&r.json, &flink(FLINK_CONFIG), &[]);
            assert_eq!(r.json["refresh-interval"], 3000);
            assert_eq!(r.json["flink-version"], "2.3.0");
            assert_eq!(r.json["features"]["web-cancel"], true);

            let r = h.get(&format!("{prefix}/overview")).await;
            assert_eq!(r.status, 200);
            assert_same_shape(&r.json, &flink(FLINK_OVERVIEW), &[]);
            assert_eq!(r.json["slots-total"], 4);
            assert_eq!(r.json["jobs-running"], 0);

            let r = h.get(&format!("{prefix}/jobmanager/config")).await;
            assert_eq!(r.status, 200);
            assert_same_shape(&r.json, &flink(FLINK_JM_CONFIG), &[]);
            assert_eq!(r.json[1]["key"], "taskmanager.numberOfTaskSlots");
            assert_eq!(r.json[1]["value"], "4");

            let r = h.get(&format!("{prefix}/taskmanagers")).await;
            assert_eq!(r.status, 200);
            assert_same_shape(&r.json, &flink(FLINK_TASKMANAGERS), &[]);
            let tm = &r.json["taskmanagers"][0];
            assert_eq!(tm["id"], ResourceId::from_u128(7).to_string());
            assert_eq!(tm["jmxPort"], -1);
            assert_eq!(tm["slotsNumber"], 4);
            assert_eq!(tm["freeSlots"], 3);
            assert_eq!(tm["assignedTasks"], 1);
            assert_eq!(tm["hardware"]["cpuCores"], 8);
            // Flink sends the time of the last heartbeat under this name.
            let last = tm["timeSinceLastHeartbeat"].as_i64().unwrap();
            assert!((now_ms() - last - 250).abs() < 5_000, "{last}");
        }
        let overview = h.client.overview().await.unwrap();
        assert_eq!(overview.taskmanagers, 1);
        let tms = h.client.taskmanagers().await.unwrap();
        assert_eq!(tms.len(), 1);
        assert_eq!(tms[0].path, "rflink://tm-1:6122/taskmanager_0");
        h.server.stop().await;
    })
    .await;
}

#[actix_rt::test]
async fn a_job_goes_through_every_endpoint() {
    bounded(async {
        let h = start();
        assert_eq!(h.get("/jobs").await.json, serde_json::json!({"jobs": []}));
        assert_eq!(
            h.get("/jobs/overview").await.json,
            serde_json::json!({"jobs": []})
        );

        let graph = blocking_graph("anchor-job");
        let job_id = h.client.submit_job(&graph).await.expect("submitted");
        assert_eq!(job_id, graph.job_id);

        // GET /jobs
        let r = h.get("/v1/jobs").await;
        assert_same_shape(&r.json, &flink(FLINK_JOBS), &[]);
        assert_eq!(r.json["jobs"][0]["id"], job_id.to_string());
        assert_eq!(r.json["jobs"][0]["status"], "RUNNING");
        let ids = h.client.job_ids().await.unwrap();
        assert_eq!(ids[0].id, job_id);

        // GET /jobs/overview: lower-case task states.
        let r = h.get("/jobs/overview").await;
        assert_same_shape(&r.json, &flink(FLINK_JOBS_OVERVIEW), &[]);
        let job = &r.json["jobs"][0];
        assert_eq!(job["jid"], job_id.to_string());
        assert_eq!(job["name"], "anchor-job");
        assert_eq!(job["state"], "RUNNING");
        assert_eq!(job["end-time"], -1);
        assert_eq!(job["tasks"]["running"], 4);
        assert_eq!(job["tasks"]["total"], 4);
        assert_eq!(job["tasks"]["canceled"], 0);
        let overviews = h.client.job_overviews().await.unwrap();
        assert_eq!(overviews[0].jid, job_id);
        assert_eq!(overviews[0].tasks.running, 4);

        // GET /jobs/{id}: upper-case task states, every status timestamp.
        let r = h.get(&format!("/jobs/{job_id}")).await;
        assert_eq!(r.status, 200);
        assert_same_shape(&r.json, &flink(FLINK_JOB), &["plan.nodes[].inputs"]);
        assert_eq!(r.json["jid"], job_id.to_string());
        assert_eq!(r.json["isStoppable"], false);
        assert_eq!(r.json["job-type"], "STREAMING");
        assert_eq!(keys(&r.json["timestamps"]).len(), 11);
        assert_eq!(r.json["timestamps"]["FAILED"], 0);
        assert!(r.json["timestamps"]["RUNNING"].as_i64().unwrap() > 0);
        assert_eq!(r.json["vertices"].as_array().unwrap().len(), 2);
        let v = &r.json["vertices"][0];
        assert_eq!(v["name"], "Source: numbers");
        assert_eq!(v["parallelism"], 2);
        assert_eq!(v["maxParallelism"], 128);
        assert_eq!(v["status"], "RUNNING");
        assert_eq!(v["tasks"]["RUNNING"], 2);
        assert_eq!(keys(&v["tasks"]).len(), 10);
        assert_eq!(r.json["status-counts"]["RUNNING"], 4);
        assert_eq!(r.json["plan"]["nodes"].as_array().unwrap().len(), 2);
        let details = h.client.job_details(job_id).await.unwrap();
        assert_eq!(details.state, JobStatus::Running);
        assert_eq!(details.vertices[1].name, "Sink: discard");
        let plan = h.get(&format!("/jobs/{job_id}/plan")).await;
        assert_eq!(plan.json["plan"], r.json["plan"]);

        // GET /jobs/{id}/status, /exceptions, /execution-result while running.
        let r = h.get(&format!("/jobs/{job_id}/status")).await;
        assert_eq!(r.json, serde_json::json!({"status": "RUNNING"}));
        assert_eq!(
            h.client.job_status(job_id).await.unwrap(),
            JobStatus::Running
        );
        let r = h.get(&format!("/jobs/{job_id}/exceptions")).await;
        assert_eq!(r.json, flink(FLINK_EXCEPTIONS_EMPTY));
        let r = h.get(&format!("/jobs/{job_id}/execution-result")).await;
        assert_eq!(r.json, serde_json::json!({"status": {"id": "IN_PROGRESS"}}));
        assert_eq!(h.client.job_result(job_id).await.unwrap(), None);

        // PATCH /jobs/{id}?mode=cancel: 202 {}.
        let r = h
            .raw("PATCH", &format!("/v1/jobs/{job_id}?mode=cancel"), None)
            .await;
        assert_eq!(r.status, 202);
        assert_eq!(r.json, serde_json::json!({}));
        let status = h
            .client
            .wait_for_status(
                job_id,
                JobStatus::is_globally_terminal,
                Instant::now() + Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(status, JobStatus::Canceled);
        let r = h.get(&format!("/jobs/{job_id}/execution-result")).await;
        assert_eq!(r.json["status"]["id"], "COMPLETED");
        let result = &r.json["job-execution-result"];
        assert_eq!(result["id"], job_id.to_string());
        assert_eq!(result["application-status"], "CANCELED");
        assert_eq!(result["accumulator-results"], serde_json::json!({}));
        assert!(result["net-runtime"].is_i64());
        assert!(result.get("failure-cause").is_none());
        let r = h.get(&format!("/jobs/{job_id}")).await;
        assert_eq!(r.json["state"], "CANCELED");
        assert!(r.json["end-time"].as_i64().unwrap() > 0);
        assert_eq!(r.json["status-counts"]["CANCELED"], 4);
        assert_eq!(h.get("/overview").await.json["jobs-cancelled"], 1);
        // Cancelling again is a no-op, also from the dashboard's button.
        assert_eq!(
            h.get(&format!("/jobs/{job_id}/yarn-cancel")).await.status,
            202
        );
        h.client.cancel_job(job_id).await.unwrap();
        h.server.stop().await;
    })
    .await;
}

#[actix_rt::test]
async fn a_failed_job_reports_its_failure() {
    bounded(async {
        let h = start();
        let graph = graph_of("FailingInvokable", &[("message", "intentional boom")]);
        let job_id = h.client.submit_job(&graph).await.unwrap();
        let status = h
            .client
            .wait_for_status(
                job_id,
                JobStatus::is_globally_terminal,
                Instant::now() + Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(status, JobStatus::Failed);

        let r = h.get(&format!("/jobs/{job_id}/exceptions")).await;
        assert_same_shape(&r.json, &flink(FLINK_EXCEPTIONS), &[]);
        let entry = &r.json["exceptionHistory"]["entries"][0];
        assert_eq!(entry["exceptionName"], "TaskFailure");
        assert_eq!(entry["stacktrace"], "TaskFailure: intentional boom");
        assert_eq!(entry["taskName"], "only (1/1)");
        assert_eq!(entry["endpoint"], "tm-1:6122");
        assert_eq!(r.json["exceptionHistory"]["truncated"], false);
        let r = h
            .get(&format!("/jobs/{job_id}/exceptions?maxExceptions=0"))
            .await;
        assert_eq!(r.json["exceptionHistory"]["entries"], serde_json::json!([]));
        assert_eq!(r.json["exceptionHistory"]["truncated"], true);
        let typed = h.client.job_exceptions(job_id).await.unwrap();
        assert_eq!(typed.exception_history.entries.len(), 1);

        let result = h
            .client
            .job_result(job_id)
            .await
            .unwrap()
            .expect("completed");
        assert_eq!(result.application_status, ApplicationStatus::Failed);
        let cause = result.failure_cause.expect("failure cause");
        assert_eq!(cause.class, "TaskFailure");
        assert!(cause.stack_trace.contains("intentional boom"));
        let r = h.get(&format!("/jobs/{job_id}/execution-result")).await;
        // Flink's SerializedThrowableSerializer's fields; its client reads serialized-throwable.
        assert_eq!(
            keys(&r.json["job-execution-result"]["failure-cause"]),
            ["class", "serialized-throwable", "stack-trace"]
        );
        assert_eq!(h.get("/overview").await.json["jobs-failed"], 1);

        // A job that finishes.
        let job_id = h
            .client
            .submit_job(&graph_of("NoOpInvokable", &[]))
            .await
            .unwrap();
        let status = h
            .client
            .wait_for_status(
                job_id,
                |s| s == JobStatus::Finished,
                Instant::now() + Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(status, JobStatus::Finished);
        let result = h.client.job_result(job_id).await.unwrap().unwrap();
        assert_eq!(result.application_status, ApplicationStatus::Succeeded);
        h.server.stop().await;
    })
    .await;
}

#[actix_rt::test]
async fn unknown_jobs_and_paths_are_404() {
    bounded(async {
        let h = start();
        let unknown = JobId::from_u128(0);
        for path in [
            format!("/jobs/{unknown}"),
            format!("/v1/jobs/{unknown}"),
            format!("/jobs/{unknown}/status"),
            format!("/jobs/{unknown}/exceptions"),
            format!("/jobs/{unknown}/execution-result"),
            format!("/jobs/{unknown}/plan"),
            format!("/jobs/{unknown}/yarn-cancel"),
        ] {
            let r = h.get(&path).await;
            assert_error(&r, 404, &format!("job {unknown} not found"));
        }
        let r = h
            .raw("PATCH", &format!("/jobs/{unknown}?mode=cancel"), None)
            .await;
        assert_error(&r, 404, "not found");

        let r = h.get("/no/such/path").await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json, flink(FLINK_ERROR_404_PATH));
        assert_error(
            &h.get("/v1/no/such/path").await,
            404,
            "Unable to load requested file",
        );
        assert_error(&h.get("/jobs/a/b/c/d").await, 404, "/jobs/a/b/c/d");

        match h.client.job_status(unknown).await {
            Err(e @ RestClientError::Status { code: 404, .. }) => {
                assert!(e.is_not_found());
                assert!(e.to_string().contains("not found"), "{e}");
            }
            other => panic!("expected 404, got {other:?}"),
        }
        h.assert_alive().await;
        h.server.stop().await;
    })
    .await;
}

#[actix_rt::test]
async fn bad_requests_are_400_with_a_message() {
    bounded(async {
        let h = start();
        // Bad job ids.
        for path in [
            "/jobs/xyz",
            "/jobs/xyz/status",
            "/v1/jobs/0123/exceptions",
            &format!("/jobs/{}/status", "g".repeat(32)),
        ] {
            assert_error(&h.get(path).await, 400, "jobid");
        }
        assert_error(
            &h.raw("PATCH", "/jobs/not-an-id?mode=cancel", None).await,
            400,
            "jobid",
        );

        // Bad query parameters.
        let job_id = h.client.submit_job(&blocking_graph("q")).await.unwrap();
        let r = h
            .raw("PATCH", &format!("/jobs/{job_id}?mode=stop"), None)
            .await;
        assert_error(&r, 400, "mode");
        let r = h
            .raw("PATCH", &format!("/jobs/{job_id}?mode=savepoint"), None)
            .await;
        assert_error(&r, 400, "savepoint");
        let r = h
            .get(&format!("/jobs/{job_id}/exceptions?maxExceptions=-1"))
            .await;
        assert_error(&r, 400, "maxExceptions");
        assert_eq!(
            h.client.job_status(job_id).await.unwrap(),
            JobStatus::Running,
            "not cancelled"
        );

        // Bad submissions.
        let json = |s: &str| Some(("application/json", s.as_bytes().to_vec()));
        assert_error(
            &h.raw("POST", "/jobs", json("{not json")).await,
            400,
            "JobSubmitRequestBody",
        );
        assert_error(
            &h.raw("POST", "/jobs", json("")).await,
            400,
            "JobSubmitRequestBody",
        );
        assert_error(
            &h.raw("POST", "/jobs", json("[]")).await,
            400,
            "JobSubmitRequestBody",
        );
        assert_error(
            &h.raw(
                "POST",
                "/jobs",
                json(r#"{"jobGraphFileName":"g.bin","jobJarFileNames":[]}"#),
            )
            .await,
            400,
            "jobGraphFileName",
        );
        assert_error(
            &h.raw("POST", "/jobs", json(r#"{"jobGraph":{"name":"x"}}"#))
                .await,
            400,
            "JobSubmitRequestBody",
        );
        let r = h
            .raw(
                "POST",
                "/jobs",
                Some(("multipart/form-data; boundary=xyz", b"--xyz--".to_vec())),
            )
            .await;
        assert_error(&r, 400, "multipart/form-data");
        let r = h
            .raw("POST", "/jobs", Some(("text/plain", b"{}".to_vec())))
            .await;
        assert_error(&r, 400, "application/json");
        // Valid JSON, invalid graphs.
        assert_error(
            &h.post_graph(&JobGraph::new("empty", vec![])).await,
            400,
            "invalid job graph: job graph has no vertices",
        );
        let mut zero = JobVertex::new("v", "NoOpInvokable", 1);
        zero.parallelism = 0;
        assert_error(
            &h.post_graph(&JobGraph::new("zero", vec![zero])).await,
            400,
            "parallelism 0",
        );
        let a = JobVertex::new("a", "NoOpInvokable", 1);
        let b = JobVertex::new("b", "NoOpInvokable", 1)
            .connect_from(&a, DistributionPattern::Pointwise);
        assert_error(
            &h.post_graph(&JobGraph::new("backwards", vec![b, a])).await,
            400,
            "not an earlier vertex",
        );
        match h
            .client
            .submit_job(&JobGraph::new(
                "",
                vec![JobVertex::new("v", "NoOpInvokable", 1)],
            ))
            .await
        {
            Err(RestClientError::Status { code: 400, errors }) => {
                assert!(errors[0].contains("name"), "{errors:?}")
            }
            other => panic!("expected 400, got {other:?}"),
        }
        // Nothing bad was stored.
        assert_eq!(h.client.job_ids().await.unwrap().len(), 1);
        h.assert_alive().await;
        h.server.stop().await;
    })
    .await;
}

#[actix_rt::test]
async fn duplicate_submission_is_409() {
    bounded(async {
        let h = start();
        let graph = blocking_graph("twice");
        assert_eq!(h.post_graph(&graph).await.status, 202);
        let r = h.post_graph(&graph).await;
        assert_error(
            &r,
            409,
            &format!("job {} was already submitted", graph.job_id),
        );
        match h.client.submit_job(&graph).await {
            Err(RestClientError::Status { code: 409, .. }) => {}
            other => panic!("expected 409, got {other:?}"),
        }
        h.assert_alive().await;
        h.server.stop().await;
    })
    .await;
}

#[actix_rt::test]
async fn bodies_over_the_limit_are_413() {
    bounded(async {
        let h = start_with(RestServerConfig {
            max_content_length: 4096,
            ..test_config()
        });
        // A valid submission padded past the limit.
        let mut body =
            serde_json::to_vec(&JobSubmitRequestBody::new(blocking_graph("big"))).unwrap();
        body.extend(std::iter::repeat_n(b' ', 8192));
        let r = h
            .raw("POST", "/jobs", Some(("application/json", body)))
            .await;
        assert_error(&r, 413, "rest.server.max-content-length of 4096 bytes");

        // A much larger body is refused by its Content-Length, before it is read.
        let huge = vec![b' '; 4 << 20];
        let response = h
            .http
            .post(format!("{}/jobs", h.base))
            .insert_header(("content-type", "application/json"))
            .send_body(huge)
            .await
            .expect("answered");
        assert_eq!(response.status().as_u16(), 413);

        // A chunked body (no Content-Length) is cut off once it passes the limit.
        let chunks = (0..16).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024])));
        let mut response = h
            .http
            .post(format!("{}/jobs", h.base))
            .insert_header(("content-type", "application/json"))
            .send_stream(futures::stream::iter(chunks))
            .await
            .expect("answered");
        assert_eq!(response.status().as_u16(), 413);
        let body: Value = serde_json::from_slice(&response.body().await.unwrap()).unwrap();
        assert!(
            body["errors"][0]
                .as_str()
                .unwrap()
                .contains("more than 4096"),
            "{body}"
        );

        // At the limit is fine.
        let graph = blocking_graph("small");
        let mut body = serde_json::to_vec(&JobSubmitRequestBody::new(graph.clone())).unwrap();
        body.extend(std::iter::repeat_n(b' ', 4096 - body.len()));
        let r = h
            .raw("POST", "/jobs", Some(("application/json", body)))
            .await;
        assert_eq!(r.status, 202, "{}", r.json);
        assert_eq!(r.json["jobUrl"], format!("/jobs/{}", graph.job_id));
        h.assert_alive().await;
        h.server.stop().await;
    })
    .await;
}

#[actix_rt::test]
async fn wrong_methods_are_405() {
    bounded(async {
        let h = start();
        let r = h.raw("DELETE", "/jobs", None).await;
        assert_error(&r, 405, "DELETE");
        assert_eq!(r.allow.as_deref(), Some("GET, POST"));
        let r = h.raw("PUT", "/v1/overview", None).await;
        assert_error(&r, 405, "PUT");
        let r = h
            .raw("POST", &format!("/jobs/{}", JobId::generate()), None)
            .await;
        assert_error(&r, 405, "POST");
        assert_eq!(r.allow.as_deref(), Some("GET, PATCH"));
        assert_error(&h.raw("PATCH", "/jobs/overview", None).await, 405, "PATCH");
        h.assert_alive().await;
        h.server.stop().await;
    })
    .await;
}

#[actix_rt::test]
async fn gateway_failures_are_5xx_and_never_hang() {
    bounded(async {
        let h = start();
        let job_id = h.client.submit_job(&blocking_graph("x")).await.unwrap();

        // A gateway that never answers: 503 after the request timeout (500 ms here).
        h.fake.hang.store(true, Ordering::SeqCst);
        let started = Instant::now();
        assert_error(&h.get("/jobs/overview").await, 503, "timed out");
        assert_error(
            &h.get(&format!("/jobs/{job_id}")).await,
            503,
            "did not answer",
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // Endpoints that do not ask the gateway still answer.
        assert_eq!(h.get("/config").await.status, 200);
        h.fake.hang.store(false, Ordering::SeqCst);

        // Typed dispatcher failures.
        *h.fake.fail_with.lock().unwrap() = Some(DispatcherError::Rpc(RpcError::Timeout {
            recipient: "dispatcher_0".into(),
            message: "RequestJobStatus".into(),
            timeout: Duration::from_secs(10),
        }));
        assert_error(
            &h.get(&format!("/jobs/{job_id}/status")).await,
            503,
            "timed out",
        );
        *h.fake.fail_with.lock().unwrap() = Some(DispatcherError::ShuttingDown);
        assert_error(&h.get("/overview").await, 503, "shutting down");
        *h.fake.fail_with.lock().unwrap() = Some(DispatcherError::JobMasterStartFailed {
            job_id,
            reason: "no slots".into(),
        });
        assert_error(&h.post_graph(&blocking_graph("y")).await, 500, "no slots");
        *h.fake.fail_with.lock().unwrap() = None;

        // A gateway that panics, while called or in its future: 500, the worker survives.
        h.fake.panic_now.store(true, Ordering::SeqCst);
        assert_error(&h.get("/taskmanagers").await, 500, "panicked");
        h.fake.panic_now.store(false, Ordering::SeqCst);
        h.fake.panic_later.store(true, Ordering::SeqCst);
        assert_error(&h.get("/jobs").await, 500, "panicked");
        h.fake.panic_later.store(false, Ordering::SeqCst);

        match h.client.overview().await {
            Ok(o) => assert_eq!(o.jobs_running, 1),
            Err(e) => panic!("server should serve again: {e}"),
        }
        h.assert_alive().await;
        h.server.stop().await;
    })
    .await;
}

#[actix_rt::test]
async fn concurrent_requests_are_served() {
    bounded(async {
        let h = start();
        let graphs: Vec<_> = (0..8)
            .map(|i| blocking_graph(&format!("job-{i}")))
            .collect();
        let submitted = future::join_all(graphs.iter().map(|g| h.client.submit_job(g))).await;
        assert!(submitted.iter().all(Result::is_ok), "{submitted:?}");

        let mut paths = Vec::new();
        for _ in 0..5 {
            for g in &graphs {
                paths.push(format!("/jobs/{}", g.job_id));
                paths.push(format!("/v1/jobs/{}/status", g.job_id));
            }
            paths.push("/jobs/overview".to_string());
            paths.push("/overview".to_string());
            paths.push("/no/such/path".to_string());
        }
        let requests = paths.iter().map(|p| h.get(p));
        let answers = future::join_all(requests).await;
        assert_eq!(answers.len(), 5 * (8 * 2 + 3));
        for r in &answers {
            assert!(
                r.status == 200 || r.status == 404,
                "{} {}",
                r.status,
                r.json
            );
        }
        assert_eq!(answers.iter().filter(|r| r.status == 404).count(), 5);
        let listed = h.client.job_overviews().await.unwrap();
        assert_eq!(listed.len(), 8);
        h.server.stop().await;
    })
    .await;
}

#[actix_rt::test]
async fn client_errors_are_typed() {
    bounded(async {
        // Nothing listens: Connection.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let client = RestClient::with_timeout(closed.to_string(), Duration::from_secs(2));
        match client.overview().await {
            Err(e @ RestClientError::Connection { .. }) => {
                assert!(e.is_retryable());
                assert!(e.to_string().contains(&closed.to_string()), "{e}");
            }
            other => panic!("expected a connection error, got {other:?}"),
        }

        // A peer that accepts and never answers: Timeout.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = RestClient::with_timeout(
            format!("http://{}", silent.local_addr().unwrap()),
            Duration::from_millis(300),
        );
        let started = Instant::now();
        match client.job_status(JobId::generate()).await {
            Err(RestClientError::Timeout { request, timeout }) => {
                assert!(request.starts_with("GET /v1/jobs/"), "{request}");
                assert_eq!(timeout, Duration::from_millis(300));
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(silent);

        // A peer that answers 200 with something else: Decode.
        let odd = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let odd_addr = odd.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            if let Ok((mut s, _)) = odd.accept() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = r#"{"taskmanagers":"not a list"}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let client = RestClient::with_timeout(odd_addr.to_string(), Duration::from_secs(2));
        match client.taskmanagers().await {
            Err(RestClientError::Decode { request, reason }) => {
                assert_eq!(request, "GET /v1/taskmanagers");
                assert!(reason.contains("invalid type"), "{reason}");
            }
            other => panic!("expected a decode error, got {other:?}"),
        }

        // wait_for_status gives up at its deadline with the last status seen.
        let h = start();
        let job_id = h.client.submit_job(&blocking_graph("forever")).await.unwrap();
        match h
            .client
            .wait_for_status(job_id, |s| s == JobStatus::Finished, Instant::now() + Duration::from_millis(300))
            .await
        {
            Err(RestClientError::WaitTimedOut { job_id: id, last }) => {
                assert_eq!(id, job_id);
                assert_eq!(last, Some(JobStatus::Running));
            }
            other => panic!("expected WaitTimedOut, got {other:?}"),
        }
        h.server.stop().await;
    })
    .await;
}

#[actix_rt::test]
async fn start_refuses_bad_config_and_stop_frees_the_port() {
    bounded(async {
        let gateway: Arc<dyn RestfulGateway> = Arc::new(FakeGateway::default());
        let bad = RestServerConfig {
            workers: 0,
            max_content_length: 0,
            ..test_config()
        };
        match RestServer::start(bad, gateway.clone(), vec![], None) {
            Err(RestError::InvalidConfig { problems }) => {
                assert_eq!(problems.len(), 2, "{problems:?}")
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }

        let h = start();
        let addr = h.server.local_addr();
        let taken = RestServerConfig {
            port: addr.port(),
            ..test_config()
        };
        match RestServer::start(taken, gateway.clone(), vec![], None) {
            Err(e @ RestError::Bind { .. }) => {
                assert!(e.to_string().contains(&addr.port().to_string()))
            }
            other => panic!("expected Bind, got {other:?}"),
        }

        h.assert_alive().await;
        h.server.stop().await;
        let client = RestClient::with_timeout(addr.to_string(), Duration::from_secs(2));
        assert!(matches!(
            client.overview().await,
            Err(RestClientError::Connection { .. })
        ));
    })
    .await;
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let gateway: Arc<dyn RestfulGateway> = Arc::new(FakeGateway::default());
    assert!(matches!(
        RestServer::start(test_config(), gateway, vec![], None),
        Err(RestError::NoRuntime)
    ));
}

#[tokio::test]
async fn serves_from_a_plain_tokio_runtime() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(async {
        let gateway: Arc<dyn RestfulGateway> = Arc::new(FakeGateway::default());
        let server =
            RestServer::start(test_config(), gateway, vec![], None).expect("starts on tokio");
        let mut stream = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        stream
            .write_all(b"GET /v1/jobs/overview HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with(r#"{"jobs":[]}"#), "{answer}");
        server.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Multipart submissions with a job library
// ---------------------------------------------------------------------------------------------

/// Bytes that are certainly not a shared library (inspect refuses them before anything else).
const GARBAGE: &[u8] = b"this is not an ELF file, just some bytes pretending to be a job library";

const BOUNDARY: &str = "rflink-test-boundary-5f1e0c";

/// One part of a hand-built `multipart/form-data` body.
struct Part {
    name: String,
    file_name: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

/// The `request` part: the graph and `jobJarFileNames`.
fn request_part(graph: &JobGraph, jars: &[&str]) -> Part {
    let body = JobSubmitRequestBody {
        job_graph: graph.clone(),
        job_jar_file_names: jars.iter().map(|s| s.to_string()).collect(),
    };
    Part {
        name: "request".into(),
        file_name: None,
        content_type: Some("application/json"),
        body: serde_json::to_vec(&body).unwrap(),
    }
}

fn file_part(name: &str, file_name: &str, bytes: &[u8]) -> Part {
    Part {
        name: name.into(),
        file_name: Some(file_name.into()),
        content_type: Some("application/octet-stream"),
        body: bytes.to_vec(),
    }
}

/// A `multipart/form-data` body as Flink's RestClient builds it.
fn form(boundary: &str, parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", part.name);
        if let Some(file_name) = &part.file_name {
            disposition.push_str(&format!("; filename=\"{file_name}\""));
        }
        out.extend_from_slice(disposition.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(content_type) = part.content_type {
            out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&part.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// A graph whose program comes from a library `file_name` with the size and SHA-256 of
/// `declared`.
fn library_graph(name: &str, file_name: &str, declared: &[u8]) -> JobGraph {
    let mut graph = blocking_graph(name);
    graph.program = Some(JobProgram {
        entry: "wordcount".into(),
        args: vec![],
        fingerprint: "test".into(),
        batch: false,
        library: Some(JobLibraryRef {
            file_name: file_name.into(),
            blob_key: BlobKey::of(declared).to_string(),
            size: declared.len() as u64,
            build_fingerprint: rflink::abi::BUILD_FINGERPRINT.to_string(),
        }),
    });
    graph
}

/// A REST server in front of the fake gateway and a real BlobServer on a temp dir.
async fn start_with_blobs() -> (Harness, Arc<BlobServer>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobServer::start(BlobServerConfig {
        storage_dir: dir.path().join("blobs"),
        ..Default::default()
    })
    .await
    .expect("blob server starts");
    let blobs = Arc::new(blobs);
    (
        start_full(test_config(), Some(Arc::clone(&blobs))),
        blobs,
        dir,
    )
}

/// Nothing of `job_id` is in the BlobServer (its job directory does not exist), and nothing
/// was stored at all.
fn assert_nothing_stored(blobs: &BlobServer, job_id: JobId) {
    let job_dir = blobs
        .blob_path(job_id, BlobKey::of(GARBAGE))
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(!job_dir.exists(), "{} exists", job_dir.display());
    assert_eq!(blobs.stats().blobs_stored, 0, "nothing was stored");
    let entries: Vec<_> = std::fs::read_dir(blobs.storage_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["incoming"], "only the incoming dir");
}

impl Harness {
    async fn post_form_to(&self, path: &str, parts: &[Part]) -> Raw {
        let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        self.raw("POST", path, Some((&content_type, form(BOUNDARY, parts))))
            .await
    }

    async fn post_form(&self, parts: &[Part]) -> Raw {
        self.post_form_to("/jobs", parts).await
    }

    fn submitted(&self, job_id: JobId) -> bool {
        self.fake
            .jobs
            .lock()
            .unwrap()
            .iter()
            .any(|j| j.graph.job_id == job_id)
    }
}

#[actix_rt::test]
async fn a_multipart_submission_without_library_reaches_the_gateway() {
    bounded(async {
        // With and without a BlobServer: a form with the request part alone needs none.
        let (with_blobs, blobs, _dir) = start_with_blobs().await;
        for h in [&with_blobs, &start()] {
            for path in ["/jobs", "/v1/jobs"] {
                let graph = blocking_graph("form");
                let r = h.post_form_to(path, &[request_part(&graph, &[])]).await;
                assert_eq!(r.status, 202, "{}", r.json);
                assert_eq!(r.json["jobUrl"], format!("/jobs/{}", graph.job_id));
                assert!(h.submitted(graph.job_id), "the gateway got the job");
                assert_eq!(
                    h.client.job_status(graph.job_id).await.unwrap(),
                    JobStatus::Running
                );
                // The same form again is the gateway's 409, as JSON is.
                let r = h.post_form_to(path, &[request_part(&graph, &[])]).await;
                assert_error(&r, 409, "already submitted");
            }
            // A charset parameter and upper case are fine, as for JSON.
            let graph = blocking_graph("form upper");
            let r = h
                .raw(
                    "POST",
                    "/jobs",
                    Some((
                        &format!("Multipart/Form-Data; charset=utf-8; boundary=\"{BOUNDARY}\""),
                        form(BOUNDARY, &[request_part(&graph, &[])]),
                    )),
                )
                .await;
            assert_eq!(r.status, 202, "{}", r.json);
            h.assert_alive().await;
        }
        assert_eq!(blobs.stats().blobs_stored, 0);
        with_blobs.server.stop().await;
        blobs.close().await;
    })
    .await;
}

#[actix_rt::test]
async fn library_uploads_are_checked_before_anything_is_stored() {
    bounded(async {
        let (h, blobs, _dir) = start_with_blobs().await;
        let name = "libmy_job.so";

        // Every refusal: (what, the answer's expected message, the job that must not exist).
        let mut refusals: Vec<(&str, Raw, &str, JobId)> = Vec::new();

        // The library is garbage, but exactly the declared one: inspect refuses it.
        let graph = library_graph("garbage", name, GARBAGE);
        let r = h
            .post_form(&[
                request_part(&graph, &[name]),
                file_part("file_0", name, GARBAGE),
            ])
            .await;
        refusals.push((
            "garbage",
            r,
            "libmy_job.so is not a shared library",
            graph.job_id,
        ));

        // Same size, other content: corrupt, naming both checksums.
        let mut flipped = GARBAGE.to_vec();
        flipped[3] ^= 0x20;
        let graph = library_graph("checksum", name, GARBAGE);
        let r = h
            .post_form(&[
                request_part(&graph, &[name]),
                file_part("file_0", name, &flipped),
            ])
            .await;
        let declared = BlobKey::of(GARBAGE).to_string();
        let actual = BlobKey::of(&flipped).to_string();
        for needle in [&declared, &actual] {
            let text = r.json["errors"][0].as_str().unwrap_or_default();
            assert!(text.contains(needle.as_str()), "{text:?} names {needle}");
        }
        refusals.push(("checksum", r, "corrupt", graph.job_id));

        // Cut short: corrupt, naming the sizes.
        let graph = library_graph("size", name, GARBAGE);
        let cut = &GARBAGE[..GARBAGE.len() - 1];
        let r = h
            .post_form(&[
                request_part(&graph, &[name]),
                file_part("file_0", name, cut),
            ])
            .await;
        let text = r.json["errors"][0].as_str().unwrap_or_default().to_string();
        assert!(
            text.contains(&format!("{} bytes", cut.len())) && text.contains(&declared),
            "{text}"
        );
        refusals.push(("size", r, "corrupt", graph.job_id));

        // The graph declares a library the form does not carry.
        let graph = library_graph("missing", name, GARBAGE);
        let r = h.post_form(&[request_part(&graph, &[name])]).await;
        refusals.push((
            "missing",
            r,
            "upload the library with the job",
            graph.job_id,
        ));
        let graph = library_graph("misnamed", name, GARBAGE);
        let r = h
            .post_form(&[
                request_part(&graph, &[name]),
                file_part("file_0", "other.so", GARBAGE),
            ])
            .await;
        refusals.push((
            "misnamed",
            r,
            "upload the library with the job",
            graph.job_id,
        ));
        let graph = library_graph("unlisted", name, GARBAGE);
        let r = h
            .post_form(&[
                request_part(&graph, &[]),
                file_part("file_0", name, GARBAGE),
            ])
            .await;
        refusals.push(("unlisted", r, "jobJarFileNames", graph.job_id));

        // Files, but the graph declares no library.
        let graph = blocking_graph("unexpected");
        let r = h
            .post_form(&[
                request_part(&graph, &[name]),
                file_part("file_0", name, GARBAGE),
            ])
            .await;
        refusals.push(("unexpected", r, "declares no job library", graph.job_id));
        let graph = blocking_graph("unexpected listed");
        let r = h.post_form(&[request_part(&graph, &[name])]).await;
        refusals.push((
            "unexpected listed",
            r,
            "declares no job library",
            graph.job_id,
        ));

        // Two files for one library.
        let graph = library_graph("two", name, GARBAGE);
        let r = h
            .post_form(&[
                request_part(&graph, &[name, "extra.so"]),
                file_part("file_0", name, GARBAGE),
                file_part("file_1", "extra.so", GARBAGE),
            ])
            .await;
        refusals.push(("two files", r, "a job has one library", graph.job_id));

        // An invalid graph is refused before its library is looked at.
        let mut graph = library_graph("", name, GARBAGE);
        graph.name.clear();
        let r = h
            .post_form(&[
                request_part(&graph, &[name]),
                file_part("file_0", name, GARBAGE),
            ])
            .await;
        refusals.push(("invalid graph", r, "invalid job graph", graph.job_id));
        let mut graph = library_graph("bad key", name, GARBAGE);
        if let Some(library) = graph.program.as_mut().and_then(|p| p.library.as_mut()) {
            library.blob_key = "not hex".into();
        }
        let r = h
            .post_form(&[
                request_part(&graph, &[name]),
                file_part("file_0", name, GARBAGE),
            ])
            .await;
        refusals.push(("bad key", r, "64 hex characters", graph.job_id));

        // JSON cannot carry the library.
        let graph = library_graph("json", name, GARBAGE);
        let r = h.post_graph(&graph).await;
        refusals.push((
            "json",
            r,
            "upload the library with the job as multipart/form-data",
            graph.job_id,
        ));
        let graph = blocking_graph("json jars");
        let body = serde_json::to_vec(&JobSubmitRequestBody {
            job_graph: graph.clone(),
            job_jar_file_names: vec![name.into()],
        })
        .unwrap();
        let r = h
            .raw("POST", "/jobs", Some(("application/json", body)))
            .await;
        refusals.push(("json jars", r, "multipart/form-data", graph.job_id));

        // Malformed forms.
        let graph = library_graph("malformed", name, GARBAGE);
        let valid = form(
            BOUNDARY,
            &[
                request_part(&graph, &[name]),
                file_part("file_0", name, GARBAGE),
            ],
        );
        let multipart = format!("multipart/form-data; boundary={BOUNDARY}");
        let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
            (
                "no boundary",
                "multipart/form-data".into(),
                valid.clone(),
                "boundary",
            ),
            (
                "garbage",
                multipart.clone(),
                b"\x00\x01 not a form".to_vec(),
                "malformed",
            ),
            (
                "empty",
                multipart.clone(),
                Vec::new(),
                "multipart/form-data",
            ),
            (
                "truncated",
                multipart.clone(),
                valid[..valid.len() / 2].to_vec(),
                "malformed",
            ),
            (
                "other boundary",
                "multipart/form-data; boundary=somethingelse".into(),
                valid.clone(),
                "multipart/form-data",
            ),
            (
                "no request",
                multipart.clone(),
                form(BOUNDARY, &[file_part("file_0", name, GARBAGE)]),
                "no part named \"request\"",
            ),
            (
                "request not JSON",
                multipart.clone(),
                form(
                    BOUNDARY,
                    &[Part {
                        name: "request".into(),
                        file_name: None,
                        content_type: None,
                        body: b"{not json".to_vec(),
                    }],
                ),
                "JobSubmitRequestBody",
            ),
            (
                "two requests",
                multipart.clone(),
                form(
                    BOUNDARY,
                    &[request_part(&graph, &[]), request_part(&graph, &[])],
                ),
                "more than one part named \"request\"",
            ),
            (
                "stray field",
                multipart.clone(),
                form(
                    BOUNDARY,
                    &[
                        request_part(&graph, &[name]),
                        Part {
                            name: "jobGraphFileName".into(),
                            file_name: None,
                            content_type: None,
                            body: b"graph.bin".to_vec(),
                        },
                    ],
                ),
                "unexpected form field \"jobGraphFileName\"",
            ),
            (
                "too many parts",
                multipart.clone(),
                form(
                    BOUNDARY,
                    &(0..20)
                        .map(|i| file_part(&format!("file_{i}"), &format!("f{i}.so"), b"x"))
                        .collect::<Vec<_>>(),
                ),
                "more than 8 parts",
            ),
        ];
        for (what, content_type, body, needle) in cases {
            let r = h.raw("POST", "/jobs", Some((&content_type, body))).await;
            assert!(r.json["errors"][0].is_string(), "{what}: {}", r.json);
            assert_error(&r, 400, needle);
            assert!(!h.submitted(graph.job_id), "{what}");
        }

        for (what, r, needle, job_id) in &refusals {
            assert_eq!(r.status, 400, "{what}: {}", r.json);
            assert_error(r, 400, needle);
            assert!(
                !h.submitted(*job_id),
                "{what}: the gateway never saw the job"
            );
            assert_nothing_stored(&blobs, *job_id);
        }
        assert!(h.client.job_ids().await.unwrap().is_empty());
        h.assert_alive().await;
        h.server.stop().await;
        blobs.close().await;
    })
    .await;
}

#[actix_rt::test]
async fn the_clients_multipart_upload_is_parsed_by_the_server() {
    bounded(async {
        let (h, blobs, _dir) = start_with_blobs().await;
        // The whole path: the client's form is parsed, the file checked against the declared
        // size and SHA-256, and then inspected, whose refusal comes back to the client.
        for name in ["libmy_job.so", "we\"ird name;.so", "naïve.so"] {
            let graph = library_graph("client", name, GARBAGE);
            match h.client.submit_job_with_library(&graph, GARBAGE).await {
                Err(RestClientError::Status { code: 400, errors }) => assert_eq!(
                    errors,
                    [format!(
                        "{name} is not a shared library: it does not start with the ELF magic bytes"
                    )]
                ),
                other => panic!("expected the inspect refusal for {name:?}, got {other:?}"),
            }
            assert_nothing_stored(&blobs, graph.job_id);
        }
        // A corrupt upload through the client.
        let graph = library_graph("client corrupt", "lib.so", b"other bytes");
        match h.client.submit_job_with_library(&graph, GARBAGE).await {
            Err(RestClientError::Status { code: 400, errors }) => {
                assert!(errors[0].contains("corrupt"), "{errors:?}")
            }
            other => panic!("expected 400 corrupt, got {other:?}"),
        }
        // A graph without a library is the caller's mistake; nothing is sent.
        match h
            .client
            .submit_job_with_library(&blocking_graph("no library"), GARBAGE)
            .await
        {
            Err(e @ RestClientError::InvalidRequest { .. }) => {
                assert!(e.to_string().contains("declares no job library"), "{e}");
                assert!(!e.is_retryable());
            }
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
        // A JSON submission of a library graph through the client: 400, upload it instead.
        match h
            .client
            .submit_job(&library_graph("json", "lib.so", GARBAGE))
            .await
        {
            Err(RestClientError::Status { code: 400, errors }) => {
                assert!(errors[0].contains("multipart/form-data"), "{errors:?}")
            }
            other => panic!("expected 400, got {other:?}"),
        }
        assert!(h.client.job_ids().await.unwrap().is_empty());
        assert_eq!(blobs.stats().blobs_stored, 0);
        h.assert_alive().await;
        h.server.stop().await;
        blobs.close().await;
    })
    .await;
}

#[actix_rt::test]
async fn random_and_truncated_forms_never_yield_a_5xx() {
    use rand::{Rng, SeedableRng};
    bounded(async {
        let (h, blobs, _dir) = start_with_blobs().await;
        let name = "libmy_job.so";
        let with_library = library_graph("fuzz", name, GARBAGE);
        let without = blocking_graph("fuzz plain");
        let seeds = [
            form(
                BOUNDARY,
                &[
                    request_part(&with_library, &[name]),
                    file_part("file_0", name, GARBAGE),
                ],
            ),
            form(BOUNDARY, &[request_part(&without, &[])]),
        ];
        let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_f00d);
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for seed in &seeds {
            // Every truncation point, in steps.
            for len in (0..seed.len()).step_by(7) {
                bodies.push(seed[..len].to_vec());
            }
            // Random byte flips, insertions of boundary-like bytes, and deletions.
            for _ in 0..150 {
                let mut body = seed.clone();
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..body.len());
                    match rng.random_range(0..4) {
                        0 => body[at] = rng.random(),
                        1 => {
                            body.splice(at..at, b"\r\n--".iter().copied());
                        }
                        2 => {
                            let end = (at + rng.random_range(1..40)).min(body.len());
                            body.drain(at..end);
                        }
                        _ => {
                            let extra = format!("\r\n--{BOUNDARY}\r\n");
                            body.splice(at..at, extra.into_bytes());
                        }
                    }
                }
                bodies.push(body);
            }
        }
        // Pure noise.
        for _ in 0..50 {
            let len = rng.random_range(0..512);
            bodies.push((0..len).map(|_| rng.random()).collect());
        }
        let mut accepted = 0;
        for body in bodies {
            let r = h
                .raw("POST", "/jobs", Some((&content_type, body.clone())))
                .await;
            assert!(
                r.status < 500,
                "{} for {:?}: {}",
                r.status,
                String::from_utf8_lossy(&body),
                r.json
            );
            match r.status {
                202 => accepted += 1,
                400 | 409 => assert!(r.json["errors"][0].is_string(), "{}", r.json),
                other => panic!("unexpected status {other}: {}", r.json),
            }
        }
        // Only the library-less job can have been accepted (some cuts keep the whole form).
        assert!(accepted <= 1, "{accepted}");
        assert!(!h.submitted(with_library.job_id));
        assert_nothing_stored(&blobs, with_library.job_id);
        h.assert_alive().await;
        h.server.stop().await;
        blobs.close().await;
    })
    .await;
}
