//! What Flink's own CLI (`flink savepoint`, `flink stop`, `flink cancel -m host:port`) sends to the
//! REST server and needs back, against a fake gateway that records what reaches it: savepoint
//! targets given as `file:` URIs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{self, BoxFuture, FutureExt};
use rflink_runtime::dispatcher::{
    ClusterOverview, DispatcherError, JobDetails, JobExceptions, JobOverview, JobResult,
    RestfulGateway, TaskManagerInfo,
};
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::jobgraph::JobGraph;
use rflink_runtime::jobmaster::SavepointStatus;
use rflink_runtime::rest::{RestServer, RestServerConfig};
use rflink_runtime::types::{Ack, JobId};
use serde_json::{json, Value};

/// Jobs with a fixed status; records every savepoint trigger and cancel that reaches it.
#[derive(Default)]
struct Fake {
    jobs: Mutex<BTreeMap<JobId, JobStatus>>,
    savepoints: Mutex<BTreeMap<u64, SavepointStatus>>,
    triggered: Mutex<Vec<(Option<String>, bool)>>,
    cancelled: Mutex<Vec<JobId>>,
}

impl Fake {
    fn status(&self, job_id: JobId) -> Result<JobStatus, DispatcherError> {
        self.jobs
            .lock()
            .unwrap()
            .get(&job_id)
            .copied()
            .ok_or(DispatcherError::JobNotFound { job_id })
    }
}

fn ready<T: Send + 'static>(
    r: Result<T, DispatcherError>,
) -> BoxFuture<'static, Result<T, DispatcherError>> {
    future::ready(r).boxed()
}

impl RestfulGateway for Fake {
    fn submit_job(&self, job_graph: JobGraph) -> BoxFuture<'static, Result<Ack, DispatcherError>> {
        ready(Err(DispatcherError::DuplicateJob {
            job_id: job_graph.job_id,
        }))
    }
    fn cancel_job(&self, job_id: JobId) -> BoxFuture<'static, Result<Ack, DispatcherError>> {
        let r = self.status(job_id).map(|_| {
            self.cancelled.lock().unwrap().push(job_id);
            Ack
        });
        ready(r)
    }
    fn job_overviews(&self) -> BoxFuture<'static, Result<Vec<JobOverview>, DispatcherError>> {
        ready(Ok(Vec::new()))
    }
    fn job_status(&self, job_id: JobId) -> BoxFuture<'static, Result<JobStatus, DispatcherError>> {
        ready(self.status(job_id))
    }
    fn job_details(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<JobDetails, DispatcherError>> {
        ready(Err(DispatcherError::JobNotFound { job_id }))
    }
    fn job_exceptions(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<JobExceptions, DispatcherError>> {
        ready(Err(DispatcherError::JobNotFound { job_id }))
    }
    fn job_result(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<Option<JobResult>, DispatcherError>> {
        ready(Err(DispatcherError::JobNotFound { job_id }))
    }
    fn cluster_overview(&self) -> BoxFuture<'static, Result<ClusterOverview, DispatcherError>> {
        ready(Err(DispatcherError::ShuttingDown))
    }
    fn task_managers(&self) -> BoxFuture<'static, Result<Vec<TaskManagerInfo>, DispatcherError>> {
        ready(Ok(Vec::new()))
    }
    fn trigger_savepoint(
        &self,
        job_id: JobId,
        target_directory: Option<String>,
        terminate: bool,
    ) -> BoxFuture<'static, Result<u64, DispatcherError>> {
        let r = self.status(job_id).map(|_| {
            let mut triggered = self.triggered.lock().unwrap();
            triggered.push((target_directory, terminate));
            triggered.len() as u64
        });
        ready(r)
    }
    fn savepoint_status(
        &self,
        job_id: JobId,
        id: u64,
    ) -> BoxFuture<'static, Result<Option<SavepointStatus>, DispatcherError>> {
        let r = self
            .status(job_id)
            .map(|_| self.savepoints.lock().unwrap().get(&id).cloned());
        ready(r)
    }
}

struct Harness {
    _server: RestServer,
    fake: Arc<Fake>,
    http: awc::Client,
    base: String,
}

fn start() -> Harness {
    let fake = Arc::new(Fake::default());
    let gateway: Arc<dyn RestfulGateway> = fake.clone();
    let config = RestServerConfig {
        bind_host: "127.0.0.1".into(),
        port: 0,
        request_timeout: Duration::from_millis(500),
        shutdown_timeout_secs: 1,
        ..Default::default()
    };
    let server = RestServer::start(config, gateway, Vec::new(), None).expect("starts");
    let base = format!("http://{}", server.local_addr());
    Harness {
        _server: server,
        fake,
        http: awc::Client::builder()
            .timeout(Duration::from_secs(5))
            .finish(),
        base,
    }
}

impl Harness {
    fn job(&self, status: JobStatus) -> JobId {
        let id = JobId::generate();
        self.fake.jobs.lock().unwrap().insert(id, status);
        id
    }

    /// A request as Flink's `RestClient` sends it: JSON content type, `{}` for no body.
    async fn request(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .insert_header(("content-type", "application/json; charset=UTF-8"))
            .send_body(body.to_string())
            .await
            .expect("request sent");
        let bytes = response.body().await.expect("body read");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (response.status().as_u16(), json)
    }
}

async fn bounded(f: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test exceeded its time bound");
}

/// `flink savepoint <job> <dir>` posts the user's text as given; `file:` URIs name local paths.
#[actix_rt::test]
async fn savepoint_targets_given_as_file_uris_reach_the_job_master_as_paths() {
    bounded(async {
        let h = start();
        let job = h.job(JobStatus::Running);
        let path = format!("/v1/jobs/{job}/savepoints");
        // The body of Flink 2.3's CLI, field for field.
        let body = |target: Value| {
            json!({"target-directory": target, "cancel-job": false,
                   "formatType": "CANONICAL", "triggerId": null})
        };
        let accepted = [
            (json!("file:///tmp/sp"), Some("/tmp/sp")),
            (json!("file:/tmp/sp"), Some("/tmp/sp")),
            (json!("file://localhost/tmp/sp"), Some("/tmp/sp")),
            (json!("FILE:///tmp/sp"), Some("/tmp/sp")),
            (json!("/tmp/plain"), Some("/tmp/plain")),
            (json!("relative/dir"), Some("relative/dir")),
            (json!("/tmp/with:colon"), Some("/tmp/with:colon")),
            (Value::Null, None),
        ];
        for (target, expected) in &accepted {
            let (status, reply) = h.request("POST", &path, body(target.clone())).await;
            assert_eq!(status, 202, "{target}: {reply}");
            let id = reply["request-id"].as_str().expect("request-id");
            assert_eq!(id.len(), 32, "{reply}");
            assert_eq!(
                h.fake.triggered.lock().unwrap().last().cloned(),
                Some((expected.map(str::to_string), false)),
                "{target}"
            );
        }
        // Stop-with-savepoint (`flink stop -p <dir>`) takes the same targets.
        let (status, reply) = h
            .request(
                "POST",
                &format!("/v1/jobs/{job}/stop"),
                json!({"targetDirectory": "file:///tmp/stop", "drain": false,
                       "formatType": "CANONICAL", "triggerId": null}),
            )
            .await;
        assert_eq!(status, 202, "{reply}");
        assert_eq!(
            h.fake.triggered.lock().unwrap().last().cloned(),
            Some((Some("/tmp/stop".to_string()), true))
        );

        // Other file systems and hosts are refused before the job master is asked.
        let before = h.fake.triggered.lock().unwrap().len();
        for (target, needle) in [
            ("s3://bucket/sp", "not s3:"),
            ("hdfs:///sp", "not hdfs:"),
            ("file://otherhost/sp", "\"otherhost\""),
            ("file://", "names no path"),
        ] {
            let (status, reply) = h.request("POST", &path, body(json!(target))).await;
            assert_eq!(status, 400, "{target}: {reply}");
            let message = reply["errors"][0].as_str().expect("Flink's error body");
            assert!(message.contains(needle), "{target}: {message}");
        }
        assert_eq!(h.fake.triggered.lock().unwrap().len(), before);
    })
    .await;
}
