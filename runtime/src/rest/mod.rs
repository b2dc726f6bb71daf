//! The REST API: Flink's `WebMonitorEndpoint` / `RestServerEndpoint` and `RestClusterClient`.
//!
//! [`RestServer`] serves Flink's v1 REST API over HTTP/1.1 (actix-web) in front of a
//! [`RestfulGateway`](crate::dispatcher::RestfulGateway); [`client::RestClient`] is the typed
//! client the `rflink` CLI and tests use. The response bodies are the serde types of
//! [`messages`], spelled field by field like Flink 2.3's (see `flink-rest/*.json` in the shared
//! reference), so Flink's web dashboard and scripts written against Flink read them unchanged.
//!
//! # Endpoints
//!
//! Every path is served both bare and under the optional `/v1` prefix (`/v1/jobs` = `/jobs`).
//!
//! | method & path | answer | Flink handler |
//! | --- | --- | --- |
//! | GET `/config` | 200 [`DashboardConfiguration`](messages::DashboardConfiguration) | `DashboardConfigHandler` |
//! | GET `/overview` | 200 [`ClusterOverviewWithVersion`](messages::ClusterOverviewWithVersion) | `ClusterOverviewHandler` |
//! | GET `/jobs` | 200 [`JobIdsWithStatusOverview`](messages::JobIdsWithStatusOverview) | `JobIdsHandler` |
//! | POST `/jobs` (JSON or multipart, see below) | 202 [`JobSubmitResponseBody`](messages::JobSubmitResponseBody) `{"jobUrl":"/jobs/<id>"}` | `JobSubmitHandler` |
//! | GET `/jobs/overview` | 200 [`MultipleJobsDetails`](messages::MultipleJobsDetails) | `JobsOverviewHandler` |
//! | GET `/jobs/{jobid}` | 200 [`JobDetailsInfo`](messages::JobDetailsInfo) | `JobDetailsHandler` |
//! | PATCH `/jobs/{jobid}?mode=cancel` | 202 `{}` (`mode` may be omitted) | `JobCancellationHandler` |
//! | GET `/jobs/{jobid}/yarn-cancel` | 202 `{}` (the dashboard's cancel button) | `JobCancellationHandler` |
//! | GET `/jobs/{jobid}/status` | 200 [`JobStatusInfo`](messages::JobStatusInfo) | `JobStatusHandler` |
//! | GET `/jobs/{jobid}/plan` | 200 [`JobPlanInfo`](messages::JobPlanInfo) | `JobPlanHandler` |
//! | GET `/jobs/{jobid}/exceptions[?maxExceptions=N]` | 200 [`JobExceptionsInfoWithHistory`](messages::JobExceptionsInfoWithHistory) (N defaults to 20) | `JobExceptionsHandler` |
//! | GET `/jobs/{jobid}/execution-result` | 200 [`JobExecutionResultResponseBody`](messages::JobExecutionResultResponseBody) | `JobExecutionResultHandler` |
//! | GET `/taskmanagers` | 200 [`TaskManagersInfo`](messages::TaskManagersInfo) | `TaskManagersHandler` |
//! | GET `/jobmanager/config` | 200 `[{"key","value"}]` | `ClusterConfigHandler` |
//! | POST `/jobs/{jobid}/savepoints`, GET `/jobs/{jobid}/savepoints/{triggerid}`, POST `/jobs/{jobid}/stop` | 202 `{"request-id"}`, then the operation's status | `SavepointHandlers`, `StopWithSavepointHandlers` |
//! | GET `/jobs/{jobid}/vertices/{vid}` (+ `/subtasktimes`, `/taskmanagers`, `/backpressure`, `/metrics`, `/subtasks/metrics`, `/watermarks`, `/accumulators`) | 200, see [`monitoring`] | `JobVertexDetailsHandler`, ... |
//! | GET `/jobs/{jobid}/config`, `/jobs/{jobid}/checkpoints/config`, `/jobs/{jobid}/checkpoints/details/{cid}` | 200 (404 without checkpointing) | `JobConfigHandler`, `CheckpointConfigHandler`, `CheckpointStatisticDetailsHandler` |
//! | GET `/taskmanagers/{id}` (+ `/metrics`, `/logs`), `/jobmanager/metrics`, `/jobmanager/environment`, `/applications/overview`, `/applications/{id}` (+ `/exceptions`) | 200 | `TaskManagerDetailsHandler`, `JobManagerMetricsHandler`, ... |
//! | GET `/metrics` | 200 Prometheus text (rflink's; [`crate::metrics`]) | – |
//! | GET `/` | the web dashboard ([`dashboard`]), or the files of [`RestServerConfig::ui_dir`] | Flink's web UI |
//!
//! `docs/rest-api.md` is the whole coverage table (every path Flink's dashboard and CLI use:
//! supported, partial or absent).
//!
//! # Submitting a job: JSON, or Flink's multipart with the job's library
//!
//! Flink's `POST /jobs` is a `multipart/form-data` upload whose `request` part names a
//! Java-serialized `JobGraph` file among the uploaded files, next to the user's jars. rflink has
//! no Java serialization, so the graph travels as JSON, in one of two encodings:
//!
//! * `Content-Type: application/json` (or none), for jobs compiled into the nodes, with the body
//!
//!   ```json
//!   {"jobGraph": <crate::jobgraph::JobGraph as serde JSON>}
//!   ```
//!
//! * `Content-Type: multipart/form-data`, as Flink's `RestClusterClient` sends it
//!   ([`RestClient::submit_job_with_library`](client::RestClient::submit_job_with_library)), for
//!   a job that comes in a job library (see [`crate::library`]): a part named `request` holding
//!   the same JSON, with `"jobJarFileNames": ["<file name>"]`, and one file part (Flink names
//!   them `file_0`, `file_1`, ...) whose `filename` is the graph's `program.library.file_name`.
//!   Without a library, the form may hold the `request` part alone.
//!
//! The job graph is `JobGraph`'s own serde form; note that its ids (`job_id`, vertex `id`, edge
//! `source`) are therefore 128-bit **decimal numbers**, not the 32-hex-character strings the
//! responses use. Parse and serialize it with `serde_json` directly (not through
//! `serde_json::Value`, which cannot hold a `u128`). The reply is Flink's: 202
//! `{"jobUrl":"/jobs/<id>"}`. Any other Content-Type is refused with 400.
//!
//! The whole body is read first (bounded by `rest.server.max-content-length`, 413 beyond), then
//! checked in this order; the first failing check answers 400, logged at `warn`, and nothing is
//! stored or submitted:
//!
//! 1. the form is well-formed multipart/form-data with at most 8 parts: exactly one `request`
//!    part holding a `JobSubmitRequestBody`, every other part a file (with a `filename`);
//! 2. the graph is valid (`JobGraph::validate`);
//! 3. a graph declaring a library came as multipart (a JSON body cannot carry it), with a file
//!    part of that `filename` listed in `jobJarFileNames` ("upload the library with the job");
//! 4. a graph declaring no library came with no file and an empty `jobJarFileNames`;
//! 5. at most one file is uploaded (a job has one library);
//! 6. the file has the declared `size` and SHA-256 (`blob_key`), else it is "corrupt" (the
//!    message names both checksums);
//! 7. [`crate::library::inspect`] accepts the file (on the blocking pool; the message is the
//!    [`LibraryError`](crate::library::LibraryError)'s), and its note's build fingerprint is
//!    the declared `build_fingerprint`.
//!
//! Then the library is stored in the JobManager's BlobServer under the job (500 when the server
//! was started without one or the store fails; 413 beyond the BlobServer's `max_blob_size`),
//! logged at `info`, and the job is submitted to the dispatcher. If the dispatcher refuses the
//! job with anything but `DuplicateJob` (or the gateway panics), the job's blobs are deleted
//! again; when it does not answer in time (503) they are kept, as the job may still start.
//!
//! # Errors
//!
//! Every error is Flink's body `{"errors":["<message>"]}` with a status code:
//!
//! | condition | status |
//! | --- | --- |
//! | no such path | 404 `Unable to load requested file <path>.` (Flink's words) |
//! | path exists, method does not | 405 |
//! | job id not 32 hex characters, bad query parameter (`mode`, `maxExceptions`) | 400 |
//! | submit: neither JSON nor multipart, malformed JSON or form, not a `JobSubmitRequestBody` | 400 |
//! | submit: invalid graph; library missing, unexpected, several, corrupt or refused by `inspect` | 400 |
//! | submit: a library uploaded but no BlobServer configured, or storing it failed | 500 |
//! | submit: body over `max_content_length` (`rest.server.max-content-length`) | 413 |
//! | [`DispatcherError`](crate::dispatcher::DispatcherError), mapped by [`status_of`] | see below |
//! | the gateway did not answer within `request_timeout` | 503 |
//! | the gateway panicked | 500 (the server keeps serving) |
//! | no or a wrong bearer token where one is required (see Security) | 401 with `WWW-Authenticate: Bearer realm="rflink"` |
//!
//! [`status_of`]: `JobNotFound` 404, `DuplicateJob` 409, `InvalidJobGraph` 400,
//! `JobMasterStartFailed` 500, `JobMaster` (the job's JobMaster refused) 409, `ShuttingDown` 503,
//! `Rpc` 503 when [`RpcError::is_retryable`](rflink_rpc::RpcError::is_retryable) (timeouts,
//! unreachable endpoints), 500 otherwise. Rejected requests are logged at `warn` (method, path, status,
//! message), server-side failures (500) at `error`. No request can hang: every gateway call is
//! bounded by `request_timeout`; no input can panic a handler.
//!
//! # Security
//!
//! Both optional, both off by default (and the default bind address is `localhost`):
//!
//! * **HTTPS** ([`RestServerConfig::tls`], `security.ssl.rest.*`): the listener speaks TLS with
//!   the given rustls settings (`ring` provider); a plaintext request to it gets no HTTP answer.
//!   [`client::RestClientBuilder::tls`] is the client's side.
//! * **A bearer token** ([`RestServerConfig::auth`], `rest.auth.token`): every request of the
//!   API that can change something (any method but GET, HEAD and OPTIONS, and the web UIs'
//!   `GET /jobs/{id}/yarn-cancel`) needs `Authorization: Bearer <token>`; with
//!   [`RestAuth::protect_reads`] every request of the API does. The check runs in the one place
//!   every endpoint is registered through, before any handler: a refused request (401, Flink's
//!   error body, `WWW-Authenticate: Bearer realm="rflink"`, logged at `warn` with method, path,
//!   peer and reason, never the token) changes nothing and stores nothing of its body. The
//!   dashboard's static files and unknown paths are not API endpoints and stay public; the
//!   built-in dashboard asks for the token on its first 401 and sends it from then on.
//!   Tokens are compared in constant time.
//!
//! The configuration listings (`/jobmanager/config`, `/jobs/{id}/jobmanager/config`, and a
//! job's own entries in `/jobs/{id}/config`) show `******` for every sensitive key: rflink's
//! (`security.cluster-secret`, `rest.auth.token`) and any Flink would hide (`password`,
//! `secret`, `token`, ... in the key). `docs/rest-api.md` ("Security") has the user's view.
//!
//! # Threads
//!
//! [`RestServer::start`] binds the listener synchronously (so [`RestServer::local_addr`] is the
//! real port at once, also for port 0), then spawns actix-web's server future on the *current*
//! tokio/actix runtime; the HTTP connections are served by `workers` threads of actix-web's own
//! (each with its own single-threaded runtime), so a test or a node that blocks its own thread does
//! not stall the REST API. The gateway's futures run on those worker threads, which is why
//! [`RestfulGateway`](crate::dispatcher::RestfulGateway) returns `Send` futures. OS signals are
//! not handled by the server (the process owns them). [`RestServer::stop`] stops accepting and
//! waits for in-flight requests up to a bound; dropping the handle stops the server without waiting.

#![warn(missing_docs, clippy::unwrap_used)]

mod auth;
pub mod client;
pub mod dashboard;
pub mod messages;
pub mod monitoring;
mod server;

use std::path::PathBuf;
use std::time::Duration;

pub use server::{status_of, RestServer};

/// Flink's default `rest.server.max-content-length`: 100 MiB.
pub const DEFAULT_MAX_CONTENT_LENGTH: usize = 100 * 1024 * 1024;

/// The Flink version reported by `/config` and `/overview`: the REST API rflink speaks.
pub const DEFAULT_FLINK_VERSION: &str = "2.3.0";

/// Configuration of the [`RestServer`]. Flink: the `rest.*` and `web.*` keys.
#[derive(Debug, Clone)]
pub struct RestServerConfig {
    /// `rest.bind-address`, default `localhost`: the host to bind.
    pub bind_host: String,
    /// `rest.port` (default 8081 in the cluster config; 0 here picks a free port, reported by
    /// [`RestServer::local_addr`]).
    pub port: u16,
    /// `rest.server.max-content-length`, default 100 MiB: largest accepted request body.
    pub max_content_length: usize,
    /// Version shown as `flink-version` (default [`DEFAULT_FLINK_VERSION`]).
    pub flink_version: String,
    /// Revision shown as `flink-revision` (`/config`) and `flink-commit` (`/overview`); default
    /// `rflink <crate version>`.
    pub flink_revision: String,
    /// `web.refresh-interval`, default 3000 ms: the dashboard's polling interval.
    pub refresh_interval_ms: u64,
    /// `web.timeout`-like bound on every gateway call, default 15 s (a little above
    /// `rpc.ask-timeout`, so an RPC timeout reaches the client as its own typed error first).
    pub request_timeout: Duration,
    /// `rest.server.numThreads`-like: actix-web worker threads, default 2.
    pub workers: usize,
    /// Seconds [`RestServer::stop`] waits for in-flight requests, default 5.
    pub shutdown_timeout_secs: u64,
    /// `web.ui.dir`, default unset: a directory whose files are served at `/` (`index.html` for
    /// `/`) instead of the built-in [`dashboard`], e.g. the `web/` folder of Flink's
    /// `flink-dist` jar (Flink's own web UI, which calls the REST API with paths relative to the
    /// page). The REST API's paths take precedence over files; a path naming no file is
    /// answered like any unknown path (404, Flink's body).
    pub ui_dir: Option<PathBuf>,
    /// `security.ssl.rest.*`, default none: serve HTTPS with these TLS settings
    /// ([`rflink_rpc::security::rest_server_config`]).
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// `rest.auth.*`, default none: the bearer token required on mutating requests (and on
    /// reads if asked).
    pub auth: Option<RestAuth>,
}

/// REST access control (`rest.auth.token`, `rest.auth.protect-reads`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestAuth {
    /// The token clients send as `Authorization: Bearer <token>`.
    pub token: rflink_rpc::security::Sensitive,
    /// Require it on reads too, not only on mutating requests.
    pub protect_reads: bool,
}

impl Default for RestServerConfig {
    fn default() -> Self {
        RestServerConfig {
            bind_host: "localhost".into(),
            port: 8081,
            max_content_length: DEFAULT_MAX_CONTENT_LENGTH,
            flink_version: DEFAULT_FLINK_VERSION.into(),
            flink_revision: concat!("rflink ", env!("CARGO_PKG_VERSION")).into(),
            refresh_interval_ms: 3000,
            request_timeout: Duration::from_secs(15),
            workers: 2,
            shutdown_timeout_secs: 5,
            ui_dir: None,
            tls: None,
            auth: None,
        }
    }
}

impl RestServerConfig {
    /// Every problem with the configuration (empty if none).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.bind_host.is_empty() {
            problems.push("bind_host must not be empty".to_string());
        }
        if self.max_content_length == 0 {
            problems.push("max_content_length must be positive".to_string());
        }
        if self.request_timeout.is_zero() {
            problems.push("request_timeout must be positive".to_string());
        }
        if self.workers == 0 {
            problems.push("workers must be at least 1".to_string());
        }
        if let Some(dir) = &self.ui_dir {
            if !dir.join("index.html").is_file() {
                problems.push(format!(
                    "ui_dir {} is not a directory holding an index.html",
                    dir.display()
                ));
            }
        }
        problems
    }
}

/// Why the REST server could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    /// The configuration is unusable.
    #[error("invalid rest server configuration: {}", problems.join("; "))]
    InvalidConfig {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// The listener could not be bound.
    #[error("could not bind the rest server to {address}: {reason}")]
    Bind {
        /// `host:port` as configured.
        address: String,
        /// The OS error.
        reason: String,
    },
    /// `start` was called outside a tokio (or actix) runtime.
    #[error("the rest server must be started inside a tokio or actix runtime")]
    NoRuntime,
}
