//! What Flink's own CLI (`flink savepoint`, `flink stop`, `flink cancel -m host:port`) sends to the
//! REST server and needs back, against a fake gateway that records what reaches it: savepoint
//! targets given as `file:` URIs, the failure cause of a savepoint in the form Flink's client can
//! deserialize (a Java-serialized `SerializedThrowable`), and the 409 for cancelling a job that
//! ended otherwise. `tests/flink_cli.rs` runs the real `flink` binary against a real cluster.

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
use rflink_runtime::rest::messages::{java_serialized_throwable, SerializedFailure};
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

/// Flink's `SavepointInfo` in its three states. The failure cause carries
/// `serialized-throwable`, the only field Flink's client reads (without it, `flink savepoint`
/// polls a failed savepoint until its client timeout).
#[actix_rt::test]
async fn savepoint_status_has_flinks_shapes_and_a_deserializable_cause() {
    bounded(async {
        let h = start();
        let job = h.job(JobStatus::Running);
        {
            let mut savepoints = h.fake.savepoints.lock().unwrap();
            savepoints.insert(1, SavepointStatus::InProgress);
            savepoints.insert(2, SavepointStatus::Completed("/tmp/sp/savepoint-1".into()));
            savepoints.insert(3, SavepointStatus::Failed("disk full".into()));
        }
        let h = &h;
        let status = |id: u64| {
            let path = format!("/v1/jobs/{job}/savepoints/{id:032x}");
            async move { h.request("GET", &path, json!({})).await }
        };
        assert_eq!(
            status(1).await,
            (
                200,
                json!({"status": {"id": "IN_PROGRESS"}, "operation": null})
            )
        );
        assert_eq!(
            status(2).await,
            (
                200,
                json!({"status": {"id": "COMPLETED"},
                       "operation": {"location": "/tmp/sp/savepoint-1"}})
            )
        );
        let (code, failed) = status(3).await;
        assert_eq!(code, 200);
        assert_eq!(failed["status"]["id"], "COMPLETED");
        let class = "org.apache.flink.runtime.checkpoint.CheckpointException";
        let expected = SerializedFailure::new(class, "disk full");
        assert_eq!(
            failed["operation"],
            json!({"failure-cause": {
                "class": class,
                "stack-trace": format!("{class}: disk full"),
                "serialized-throwable": expected.serialized_throwable,
            }})
        );
        let bytes = base64_decode(
            failed["operation"]["failure-cause"]["serialized-throwable"]
                .as_str()
                .expect("a string"),
        );
        assert_eq!(
            bytes,
            java_serialized_throwable(
                class,
                &format!("{class}: disk full"),
                &format!("{class}: disk full")
            )
        );
    })
    .await;
}

/// The stream for class `C`, message and stack trace `C: m`, byte for byte: Java 17's
/// `ObjectInputStream` reads it as Flink 2.3's `SerializedThrowable` whose `toString()` is
/// `C: C: m` (as Flink's own: its message already names the class) and whose
/// `getOriginalErrorClassName()` is `C`.
#[test]
fn the_serialized_throwable_is_javas_stream_format() {
    let expected = concat!(
        "aced0005737200296f72672e6170616368652e666c696e6b2e7574696c2e5365",
        "7269616c697a65645468726f7761626c6565169df51fa713f30200034c001966",
        "756c6c537472696e676966696564537461636b54726163657400124c6a617661",
        "2f6c616e672f537472696e673b4c00166f726967696e616c4572726f72436c61",
        "73734e616d657400124c6a6176612f6c616e672f537472696e673b5b00137365",
        "7269616c697a6564457863657074696f6e7400025b42787200136a6176612e6c",
        "616e672e457863657074696f6ed0fd1f3e1a3b1cc4020000787200136a617661",
        "2e6c616e672e5468726f7761626c65d5c635273977b8cb0300044c0005636175",
        "73657400154c6a6176612f6c616e672f5468726f7761626c653b4c000d646574",
        "61696c4d6573736167657400124c6a6176612f6c616e672f537472696e673b5b",
        "000a737461636b547261636574001e5b4c6a6176612f6c616e672f537461636b",
        "5472616365456c656d656e743b4c001473757070726573736564457863657074",
        "696f6e737400104c6a6176612f7574696c2f4c6973743b78707074000443",
        "3a206d70707874000443",
        "3a206d740001437572",
        "00025b42acf317f8060854e0020000787000000000",
    );
    assert_eq!(
        hex(&java_serialized_throwable("C", "C: m", "C: m")),
        expected
    );
}

/// Java's modified UTF-8: NUL and characters beyond the BMP take their long forms; a text
/// longer than 65535 bytes is a `TC_LONGSTRING`. (Both read back by Java 17's ObjectInputStream.)
#[test]
fn the_serialized_throwable_encodes_any_text() {
    let bytes = java_serialized_throwable("C", "a\u{0}é😀", "s");
    // TC_STRING, length 11: 'a', C0 80, C3 A9, and the two surrogates of U+1F600.
    let text = [
        0x74, 0x00, 0x0B, b'a', 0xC0, 0x80, 0xC3, 0xA9, 0xED, 0xA0, 0xBD, 0xED, 0xB8, 0x80,
    ];
    assert!(
        bytes.windows(text.len()).any(|w| w == text),
        "{}",
        hex(&bytes)
    );
    let long = "x".repeat(70_000);
    let bytes = java_serialized_throwable("C", &long, "s");
    let mut header = vec![0x7C];
    header.extend_from_slice(&70_000u64.to_be_bytes());
    let at = bytes
        .windows(header.len())
        .position(|w| w == header)
        .expect("a TC_LONGSTRING");
    assert!(bytes[at + header.len()..].starts_with(long.as_bytes()));
}

/// `flink cancel` of a job that already ended: acknowledged if it was cancelled, else 409 with
/// Flink's message (Flink's `JobCancellationHandler`), without asking the dispatcher to cancel.
#[actix_rt::test]
async fn cancelling_a_job_that_ended_otherwise_is_409() {
    bounded(async {
        let h = start();
        for (status, name) in [
            (JobStatus::Finished, "FINISHED"),
            (JobStatus::Failed, "FAILED"),
        ] {
            let job = h.job(status);
            for (method, path) in [
                ("PATCH", format!("/v1/jobs/{job}?mode=cancel")),
                ("GET", format!("/jobs/{job}/yarn-cancel")),
            ] {
                let (code, reply) = h.request(method, &path, json!({})).await;
                assert_eq!(code, 409, "{path}: {reply}");
                assert_eq!(
                    reply,
                    json!({"errors": [format!(
                        "Job cancellation failed because the job has already reached another \
                         terminal state ({name})."
                    )]})
                );
            }
        }
        assert!(h.fake.cancelled.lock().unwrap().is_empty());
        for status in [
            JobStatus::Canceled,
            JobStatus::Running,
            JobStatus::Restarting,
        ] {
            let job = h.job(status);
            let (code, reply) = h
                .request("PATCH", &format!("/v1/jobs/{job}?mode=cancel"), json!({}))
                .await;
            assert_eq!((code, reply), (202, json!({})), "{status}");
            assert_eq!(h.fake.cancelled.lock().unwrap().last(), Some(&job));
        }
        let unknown = JobId::generate();
        let (code, _) = h
            .request(
                "PATCH",
                &format!("/v1/jobs/{unknown}?mode=cancel"),
                json!({}),
            )
            .await;
        assert_eq!(code, 404);
    })
    .await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// `flink cancel -s <dir>` posts a savepoint with `cancel-job: true`: a plain savepoint (not a
/// stop, which would end the job FINISHED), then a cancel once it completed; a failed one
/// cancels nothing.
#[actix_rt::test]
async fn cancel_with_savepoint_cancels_once_the_savepoint_completed() {
    bounded(async {
        let h = start();
        let job = h.job(JobStatus::Running);
        let path = format!("/v1/jobs/{job}/savepoints");
        let body = json!({"target-directory": "file:///tmp/sp", "cancel-job": true,
                          "formatType": "CANONICAL", "triggerId": null});
        // The fake numbers its savepoints 1, 2, ...; a real JobMaster knows a savepoint as in
        // progress from its trigger on.
        for id in [1, 2] {
            h.fake
                .savepoints
                .lock()
                .unwrap()
                .insert(id, SavepointStatus::InProgress);
        }
        let (status, reply) = h.request("POST", &path, body.clone()).await;
        assert_eq!(status, 202, "{reply}");
        assert_eq!(
            h.fake.triggered.lock().unwrap().last().cloned(),
            Some((Some("/tmp/sp".to_string()), false)),
            "a plain savepoint, not a stop"
        );
        let id = u64::from_str_radix(reply["request-id"].as_str().expect("id"), 16).expect("hex");
        assert_eq!(id, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            h.fake.cancelled.lock().unwrap().is_empty(),
            "no cancel while the savepoint runs"
        );
        h.fake
            .savepoints
            .lock()
            .unwrap()
            .insert(id, SavepointStatus::Completed("/tmp/sp/savepoint-1".into()));
        while h.fake.cancelled.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*h.fake.cancelled.lock().unwrap(), vec![job]);

        // A failed savepoint leaves the job alone.
        let other = h.job(JobStatus::Running);
        let (status, reply) = h
            .request("POST", &format!("/v1/jobs/{other}/savepoints"), body)
            .await;
        assert_eq!(status, 202, "{reply}");
        let id = u64::from_str_radix(reply["request-id"].as_str().expect("id"), 16).expect("hex");
        h.fake
            .savepoints
            .lock()
            .unwrap()
            .insert(id, SavepointStatus::Failed("declined".into()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*h.fake.cancelled.lock().unwrap(), vec![job]);
    })
    .await;
}
