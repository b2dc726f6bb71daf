//! The REST client. Flink: `RestClusterClient` (the part the CLI uses).
//!
//! [`RestClient`] speaks to a [`RestServer`](super::RestServer) (or, for the endpoints whose
//! bodies match, to a real Flink cluster) and returns the typed bodies of
//! [`messages`](super::messages). It is built on awc, so it is not `Send` and must run inside an
//! actix system: `#[actix_rt::test]`, or `actix_rt::System::new().block_on(..)` in a binary.
//!
//! Every request is bounded by the client's timeout (connect, send and reading the whole
//! answer); a request that exceeds it fails with [`RestClientError::Timeout`]. Answers with an
//! error status become [`RestClientError::Status`] carrying Flink's `errors` list.
//!
//! # HTTPS and the bearer token
//!
//! [`RestClient::new`] speaks plain HTTP. A cluster with `security.ssl.rest.enabled` and
//! `rest.auth.token` is reached through [`RestClient::builder`]:
//!
//! ```no_run
//! # use std::path::Path;
//! # use rflink_runtime::rest::client::{RestClient, RestClientError};
//! # fn build() -> Result<RestClient, Box<dyn std::error::Error>> {
//! let trust = rflink_rpc::security::rest_client_config(Path::new("ca.pem"))?;
//! let client = RestClient::builder("jm.example.com:8081")
//!     .tls(trust)
//!     .token(rflink_rpc::security::Sensitive::new("the token"))
//!     .build()?;
//! # Ok(client) }
//! ```
//!
//! With a trust store the address is `https://host:port` or a bare `host:port`; the server's
//! certificate must chain to it and name `host` ([`RestClientError::Tls`] otherwise). The token
//! goes as `Authorization: Bearer <token>` on every request; a server that refuses it answers
//! 401 ([`RestClientError::is_unauthorized`]). The token never appears in `Debug` or errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderValue;
use actix_web::http::{header, Method, StatusCode};
use rflink_rpc::security::Sensitive;
use serde::de::DeserializeOwned;

use super::messages::{
    ClusterOverviewWithVersion, ErrorResponseBody, JobDetailsInfo, JobExceptionsInfoWithHistory,
    JobExecutionResultInfo, JobExecutionResultResponseBody, JobIdWithStatus,
    JobIdsWithStatusOverview, JobStatusInfo, JobSubmitResponseBody, JobSummary,
    MultipleJobsDetails, QueueStatusId, TaskManagerSummary, TaskManagersInfo,
};
use crate::executiongraph::JobStatus;
use crate::jobgraph::JobGraph;
use crate::types::JobId;

/// Default bound on one request: 10 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response body the client reads: 64 MiB.
const MAX_RESPONSE_SIZE: usize = 64 * 1024 * 1024;

/// How often [`RestClient::wait_for_status`] polls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Why a REST call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestClientError {
    /// The server could not be reached, or the connection broke.
    #[error("could not reach the rest endpoint at {address}: {reason}")]
    Connection {
        /// `host:port`.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The TLS handshake with the server failed: its certificate does not chain to the trusted
    /// CA, does not name the host, has expired, or the server does not speak TLS.
    #[error("TLS with the rest endpoint at {address} failed: {reason}")]
    Tls {
        /// `host:port`.
        address: String,
        /// rustls's reason.
        reason: String,
    },
    /// The client's settings are unusable (an `https://` address without a trust store, a
    /// token that cannot be sent as a header, ...); nothing was sent.
    #[error("invalid rest client settings: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("rest request failed with status {code}: {}", errors.join("; "))]
    Status {
        /// The HTTP status.
        code: u16,
        /// Flink's `errors` list (or the raw body if it was not one).
        errors: Vec<String>,
    },
    /// The answer was not the expected body.
    #[error("could not decode the answer to {request}: {reason}")]
    Decode {
        /// `METHOD path`.
        request: String,
        /// What did not match.
        reason: String,
    },
    /// The request did not complete in time.
    #[error("{request} timed out after {timeout:?}")]
    Timeout {
        /// `METHOD path`.
        request: String,
        /// The bound.
        timeout: Duration,
    },
    /// The request could not be built from the arguments; nothing was sent.
    #[error("cannot send {request}: {reason}")]
    InvalidRequest {
        /// `METHOD path`.
        request: String,
        /// What is wrong with the arguments.
        reason: String,
    },
    /// [`RestClient::wait_for_status`] reached its deadline.
    #[error("job {job_id} did not reach the awaited status in time (last seen: {})",
        last.map_or("none", JobStatus::as_str))]
    WaitTimedOut {
        /// The job.
        job_id: JobId,
        /// The last status seen.
        last: Option<JobStatus>,
    },
}

impl RestClientError {
    /// Whether retrying may help (unreachable, timed out, 503).
    pub fn is_retryable(&self) -> bool {
        match self {
            RestClientError::Connection { .. } | RestClientError::Timeout { .. } => true,
            RestClientError::Status { code, .. } => *code == 503,
            RestClientError::Tls { .. }
            | RestClientError::Config { .. }
            | RestClientError::Decode { .. }
            | RestClientError::InvalidRequest { .. }
            | RestClientError::WaitTimedOut { .. } => false,
        }
    }

    /// Whether the server said 404 (unknown job or path).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RestClientError::Status { code: 404, .. })
    }

    /// Whether the server said 401: the request needs the cluster's REST token
    /// (`rest.auth.token`), and it was missing or wrong.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, RestClientError::Status { code: 401, .. })
    }
}

/// A client of one REST endpoint.
pub struct RestClient {
    address: String,
    base: String,
    timeout: Duration,
    client: awc::Client,
    /// `Bearer <token>`, marked sensitive.
    authorization: Option<HeaderValue>,
    /// Why the settings [`new`](Self::new) was given are unusable; every request fails with it.
    unusable: Option<RestClientError>,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .field(
                "token",
                &self
                    .authorization
                    .as_ref()
                    .map(|_| rflink_rpc::security::HIDDEN),
            )
            .finish_non_exhaustive()
    }
}

/// Settings of a [`RestClient`]: [`RestClient::builder`].
#[derive(Debug, Clone)]
pub struct RestClientBuilder {
    address: String,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<Sensitive>,
}

impl RestClientBuilder {
    /// Bounds every request by `timeout` (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Speaks HTTPS, trusting the server certificates `config` trusts (e.g.
    /// [`rest_client_config`](rflink_rpc::security::rest_client_config) of the cluster's CA).
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Sends `token` as `Authorization: Bearer <token>` on every request.
    pub fn token(mut self, token: Sensitive) -> Self {
        self.token = Some(token);
        self
    }

    /// The client. Fails with [`RestClientError::Config`] for an address that is not
    /// `[http://|https://]host:port`, an `https://` address without [`tls`](Self::tls), an
    /// `http://` one with it, or a token that is empty or not visible ASCII (it could not be
    /// sent as a header).
    pub fn build(self) -> Result<RestClient, RestClientError> {
        let config = |reason: String| RestClientError::Config { reason };
        let raw = self.address.trim();
        let (scheme, rest) = match raw.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, raw),
        };
        let host_port = rest.trim_end_matches('/').to_string();
        if host_port.is_empty() || host_port.contains('/') {
            return Err(config(format!(
                "the rest address {raw:?} is not [http://|https://]host:port"
            )));
        }
        let https = match (scheme.as_deref(), &self.tls) {
            (None, tls) => tls.is_some(),
            (Some("https"), Some(_)) => true,
            (Some("https"), None) => {
                return Err(config(format!(
                    "the rest address {raw:?} is https, but no trust store was given (the \
                     cluster's CA: security.ssl.rest.truststore, the CLI's --rest-ca)"
                )))
            }
            (Some("http"), None) => false,
            (Some("http"), Some(_)) => {
                return Err(config(format!(
                    "the rest address {raw:?} is plain http, but a trust store was given for \
                     https: use https://{host_port} or drop the trust store"
                )))
            }
            (Some(other), _) => {
                return Err(config(format!(
                    "the rest address {raw:?} has scheme {other:?}; use http or https"
                )))
            }
        };
        let authorization = match &self.token {
            None => None,
            Some(token) => {
                let text = token.expose();
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(config(
                        "the REST token must be non-empty visible ASCII (no spaces or control \
                         characters)"
                            .into(),
                    ));
                }
                let mut value = HeaderValue::from_str(&format!("Bearer {text}")).map_err(|_| {
                    config("the REST token cannot be sent as an HTTP header".into())
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let tls = self.tls.filter(|_| https);
        Ok(RestClient::assemble(
            host_port,
            self.timeout,
            tls,
            authorization,
        ))
    }
}

impl RestClient {
    /// A client of the endpoint at `address` (`host:port`, optionally with `http://`), with the
    /// default timeout, over plain HTTP without a token (see [`builder`](Self::builder) for
    /// HTTPS and the token). Nothing is contacted until the first request.
    pub fn new(address: impl Into<String>) -> Self {
        Self::with_timeout(address, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A client whose requests are bounded by `timeout`. Settings [`builder`](Self::builder)
    /// would refuse (e.g. an `https://` address, which needs a trust store) make every request
    /// fail with that [`RestClientError::Config`].
    pub fn with_timeout(address: impl Into<String>, timeout: Duration) -> Self {
        let address = address.into();
        Self::builder(address.clone())
            .timeout(timeout)
            .build()
            .unwrap_or_else(|e| {
                let mut client = Self::assemble(address, timeout, None, None);
                client.unusable = Some(e);
                client
            })
    }

    /// A client of `host_port`, over HTTPS with `tls`.
    fn assemble(
        host_port: String,
        timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
        authorization: Option<HeaderValue>,
    ) -> RestClient {
        // An idle pooled connection is reused only well inside the server's keep-alive
        // (actix's default is 5 s): a connection the server has just closed would fail the
        // next request mid-body ("broken pipe"), which cannot be retried for a submission.
        let mut connector = awc::Connector::new()
            .timeout(timeout)
            .handshake_timeout(timeout)
            .conn_keep_alive(Duration::from_secs(2));
        let scheme = if tls.is_some() { "https" } else { "http" };
        if let Some(tls) = tls {
            connector = connector.rustls_0_23(tls);
        }
        let client = awc::Client::builder()
            // The whole request, body included, is bounded in `request` instead.
            .disable_timeout()
            .connector(connector)
            .finish();
        RestClient {
            base: format!("{scheme}://{host_port}"),
            address: host_port,
            timeout,
            client,
            authorization,
            unusable: None,
        }
    }

    /// Settings for a client of `address` (`host:port`, `http://host:port` or
    /// `https://host:port`); see the [module docs](self).
    pub fn builder(address: impl Into<String>) -> RestClientBuilder {
        RestClientBuilder {
            address: address.into(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            tls: None,
            token: None,
        }
    }

    /// The endpoint's `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the client speaks HTTPS.
    pub fn is_https(&self) -> bool {
        self.base.starts_with("https://")
    }

    /// Whether the client sends a bearer token.
    pub fn has_token(&self) -> bool {
        self.authorization.is_some()
    }

    /// Sends one request and returns the status and body, bounded by the timeout.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<(StatusCode, bytes::Bytes), RestClientError> {
        if let Some(e) = &self.unusable {
            return Err(e.clone());
        }
        let request_name = format!("{method} {path}");
        let url = format!("{}{}", self.base, path);
        let connection = |reason: String| RestClientError::Connection {
            address: self.address.clone(),
            reason,
        };
        let work = async {
            let mut request = self.client.request(method, url.as_str());
            if let Some(authorization) = &self.authorization {
                request = request.insert_header((header::AUTHORIZATION, authorization.clone()));
            }
            let sent = match body {
                Some(body) => {
                    request
                        .insert_header((header::CONTENT_TYPE, body.content_type))
                        .send_body(body.bytes)
                        .await
                }
                None => request.send().await,
            };
            let mut response = sent.map_err(|e| self.send_error(e))?;
            let status = response.status();
            let body = response
                .body()
                .limit(MAX_RESPONSE_SIZE)
                .await
                .map_err(|e| connection(format!("could not read the answer: {e}")))?;
            Ok((status, body))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(RestClientError::Timeout {
                request: request_name,
                timeout: self.timeout,
            }),
        }
    }

    /// The error of a request that got no answer: a failed TLS handshake is
    /// [`RestClientError::Tls`], anything else [`RestClientError::Connection`].
    fn send_error(&self, e: awc::error::SendRequestError) -> RestClientError {
        if let Some(reason) = tls_failure(&e) {
            return RestClientError::Tls {
                address: self.address.clone(),
                reason,
            };
        }
        RestClientError::Connection {
            address: self.address.clone(),
            reason: e.to_string(),
        }
    }

    /// Sends a request, expects `expected` and decodes the body as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        expected: StatusCode,
    ) -> Result<T, RestClientError> {
        let request_name = format!("{method} {path}");
        let (status, body) = self.exchange(method, path, body).await?;
        if !status.is_success() {
            return Err(status_error(status, &body));
        }
        if status != expected {
            return Err(RestClientError::Decode {
                request: request_name,
                reason: format!("expected status {expected}, got {status}"),
            });
        }
        serde_json::from_slice(&body).map_err(|e| RestClientError::Decode {
            request: request_name,
            reason: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, RestClientError> {
        self.call(Method::GET, path, None, StatusCode::OK).await
    }

    /// Submits a job (`POST /v1/jobs`) and returns its id.
    pub async fn submit_job(&self, job_graph: &JobGraph) -> Result<JobId, RestClientError> {
        let body = encode_submit_body(job_graph, &[])?;
        self.post_submission(Body::json(body)).await
    }

    /// Submits a job together with its library (`POST /v1/jobs` as `multipart/form-data`, like
    /// Flink's `RestClusterClient`): a `request` part with the [`JobSubmitRequestBody`] JSON
    /// (listing the library in `jobJarFileNames`) and a `file_0` part holding `library` with the
    /// filename the graph declares (`program.library.file_name`). The server checks the file
    /// against the graph's declared size, SHA-256 and build fingerprint, and inspects it, before
    /// storing it and submitting the job. A graph that declares no library is
    /// [`RestClientError::InvalidRequest`] (use [`submit_job`](Self::submit_job)).
    ///
    /// [`JobSubmitRequestBody`]: super::messages::JobSubmitRequestBody
    pub async fn submit_job_with_library(
        &self,
        job_graph: &JobGraph,
        library: &[u8],
    ) -> Result<JobId, RestClientError> {
        let Some(reference) = job_graph.program.as_ref().and_then(|p| p.library.as_ref()) else {
            return Err(RestClientError::InvalidRequest {
                request: SUBMIT_REQUEST.into(),
                reason: format!(
                    "job {} declares no job library (program.library): submit it with submit_job",
                    job_graph.job_id
                ),
            });
        };
        let file_name = reference.file_name.clone();
        if file_name.chars().any(char::is_control) {
            return Err(RestClientError::InvalidRequest {
                request: SUBMIT_REQUEST.into(),
                reason: format!(
                    "the job library's file name {file_name:?} contains control characters, \
                     which a multipart/form-data header cannot carry"
                ),
            });
        }
        let json = encode_submit_body(job_graph, std::slice::from_ref(&file_name))?;
        let boundary = format!("----rflink-boundary-{:032x}", rand::random::<u128>());
        let body = multipart_body(&boundary, &json, &file_name, library);
        self.post_submission(Body {
            content_type: format!("multipart/form-data; boundary={boundary}"),
            bytes: body,
        })
        .await
    }

    /// Posts a submission body and reads the job id from the 202.
    async fn post_submission(&self, body: Body) -> Result<JobId, RestClientError> {
        let response: JobSubmitResponseBody = self
            .call(Method::POST, "/v1/jobs", Some(body), StatusCode::ACCEPTED)
            .await?;
        let request = SUBMIT_REQUEST;
        response
            .job_url
            .strip_prefix("/jobs/")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| RestClientError::Decode {
                request: request.into(),
                reason: format!("jobUrl {:?} does not name a job", response.job_url),
            })
    }

    /// Cancels a job (`PATCH /v1/jobs/{id}?mode=cancel`).
    pub async fn cancel_job(&self, job_id: JobId) -> Result<(), RestClientError> {
        let path = format!("/v1/jobs/{job_id}?mode=cancel");
        let _: serde_json::Value = self
            .call(Method::PATCH, &path, None, StatusCode::ACCEPTED)
            .await?;
        Ok(())
    }

    /// `GET path` (e.g. `/jobs/<id>/vertices/<vid>`), expecting 200, as JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, RestClientError> {
        self.get(path).await
    }

    /// `GET path`: the status code and the body as text, whatever the status (for endpoints
    /// that do not answer JSON, such as `/metrics`, and for checking refusals).
    pub async fn get_text(&self, path: &str) -> Result<(u16, String), RestClientError> {
        let (status, body) = self.exchange(Method::GET, path, None).await?;
        Ok((status.as_u16(), String::from_utf8_lossy(&body).into_owned()))
    }

    /// A job's checkpoint statistics (`GET /v1/jobs/{id}/checkpoints`), as Flink's JSON.
    pub async fn checkpoints(&self, job_id: JobId) -> Result<serde_json::Value, RestClientError> {
        self.get(&format!("/v1/jobs/{job_id}/checkpoints")).await
    }

    /// Triggers a savepoint (`POST /v1/jobs/{id}/savepoints`, or `/stop` to stop the job
    /// after it) and returns its trigger id.
    pub async fn trigger_savepoint(
        &self,
        job_id: JobId,
        target_directory: Option<&str>,
        stop: bool,
    ) -> Result<String, RestClientError> {
        let (path, body) = if stop {
            (
                format!("/v1/jobs/{job_id}/stop"),
                serde_json::json!({"targetDirectory": target_directory, "drain": false}),
            )
        } else {
            (
                format!("/v1/jobs/{job_id}/savepoints"),
                serde_json::json!({"target-directory": target_directory, "cancel-job": false}),
            )
        };
        let body = serde_json::to_vec(&body).map_err(|e| RestClientError::Decode {
            request: format!("POST {path}"),
            reason: e.to_string(),
        })?;
        let response: serde_json::Value = self
            .call(
                Method::POST,
                &path,
                Some(Body::json(body)),
                StatusCode::ACCEPTED,
            )
            .await?;
        response
            .get("request-id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| RestClientError::Decode {
                request: format!("POST {path}"),
                reason: format!("no request-id in {response}"),
            })
    }

    /// Waits for savepoint `trigger` of `job_id` (`GET /v1/jobs/{id}/savepoints/{trigger}`):
    /// its location, or the failure cause as an error.
    pub async fn wait_for_savepoint(
        &self,
        job_id: JobId,
        trigger: &str,
        timeout: std::time::Duration,
    ) -> Result<String, RestClientError> {
        let path = format!("/v1/jobs/{job_id}/savepoints/{trigger}");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status: serde_json::Value = self.get(&path).await?;
            if status["status"]["id"] == "COMPLETED" {
                let operation = &status["operation"];
                if let Some(location) = operation["location"].as_str() {
                    return Ok(location.to_string());
                }
                return Err(RestClientError::Decode {
                    request: format!("GET {path}"),
                    reason: format!(
                        "the savepoint failed: {}",
                        operation["failure-cause"]["stack-trace"]
                            .as_str()
                            .unwrap_or("unknown cause")
                    ),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RestClientError::Decode {
                    request: format!("GET {path}"),
                    reason: format!("the savepoint did not complete within {timeout:?}"),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Every job's id and status (`GET /v1/jobs`).
    pub async fn job_ids(&self) -> Result<Vec<JobIdWithStatus>, RestClientError> {
        let body: JobIdsWithStatusOverview = self.get("/v1/jobs").await?;
        Ok(body.jobs)
    }

    /// Every job's summary (`GET /v1/jobs/overview`).
    pub async fn job_overviews(&self) -> Result<Vec<JobSummary>, RestClientError> {
        let body: MultipleJobsDetails = self.get("/v1/jobs/overview").await?;
        Ok(body.jobs)
    }

    /// A job's status (`GET /v1/jobs/{id}/status`).
    pub async fn job_status(&self, job_id: JobId) -> Result<JobStatus, RestClientError> {
        let body: JobStatusInfo = self.get(&format!("/v1/jobs/{job_id}/status")).await?;
        Ok(body.status)
    }

    /// A job's details (`GET /v1/jobs/{id}`).
    pub async fn job_details(&self, job_id: JobId) -> Result<JobDetailsInfo, RestClientError> {
        self.get(&format!("/v1/jobs/{job_id}")).await
    }

    /// A job's dataflow plan (`GET /v1/jobs/{id}/plan`): its vertices with their inputs and ship
    /// strategies.
    pub async fn job_plan(
        &self,
        job_id: JobId,
    ) -> Result<crate::rest::messages::JobPlanInfo, RestClientError> {
        self.get(&format!("/v1/jobs/{job_id}/plan")).await
    }

    /// A job's failures (`GET /v1/jobs/{id}/exceptions`).
    pub async fn job_exceptions(
        &self,
        job_id: JobId,
    ) -> Result<JobExceptionsInfoWithHistory, RestClientError> {
        self.get(&format!("/v1/jobs/{job_id}/exceptions")).await
    }

    /// A job's result (`GET /v1/jobs/{id}/execution-result`): `None` while it runs.
    pub async fn job_result(
        &self,
        job_id: JobId,
    ) -> Result<Option<JobExecutionResultInfo>, RestClientError> {
        let path = format!("/v1/jobs/{job_id}/execution-result");
        let body: JobExecutionResultResponseBody = self.get(&path).await?;
        match (body.status.id, body.job_execution_result) {
            (QueueStatusId::InProgress, _) => Ok(None),
            (QueueStatusId::Completed, Some(result)) => Ok(Some(result)),
            (QueueStatusId::Completed, None) => Err(RestClientError::Decode {
                request: format!("GET {path}"),
                reason: "status COMPLETED without a job-execution-result".into(),
            }),
        }
    }

    /// The cluster overview (`GET /v1/overview`).
    pub async fn overview(&self) -> Result<ClusterOverviewWithVersion, RestClientError> {
        self.get("/v1/overview").await
    }

    /// The registered TaskManagers (`GET /v1/taskmanagers`).
    pub async fn taskmanagers(&self) -> Result<Vec<TaskManagerSummary>, RestClientError> {
        let body: TaskManagersInfo = self.get("/v1/taskmanagers").await?;
        Ok(body.taskmanagers)
    }

    /// Polls the job's status until `pred` holds (returning that status) or `deadline` passes
    /// ([`RestClientError::WaitTimedOut`], also if a request is still in flight then). Any
    /// failed request ends the wait with its error.
    pub async fn wait_for_status(
        &self,
        job_id: JobId,
        pred: impl Fn(JobStatus) -> bool,
        deadline: Instant,
    ) -> Result<JobStatus, RestClientError> {
        let mut last = None;
        let waiting = async {
            loop {
                let status = self.job_status(job_id).await?;
                last = Some(status);
                if pred(status) {
                    return Ok(status);
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        };
        let outcome = tokio::time::timeout_at(deadline.into(), waiting).await;
        match outcome {
            Ok(result) => result,
            Err(_) => Err(RestClientError::WaitTimedOut { job_id, last }),
        }
    }
}

/// rustls's reason, if `e` is a failed TLS handshake.
fn tls_failure(e: &awc::error::SendRequestError) -> Option<String> {
    use awc::error::{ConnectError, SendRequestError};
    let SendRequestError::Connect(connect) = e else {
        return None;
    };
    let io = match connect {
        ConnectError::Io(io) => io,
        _ => return None,
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = io.get_ref().map(|e| e as _);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        source = err.source();
    }
    None
}

/// The name of a submission request, for errors.
const SUBMIT_REQUEST: &str = "POST /v1/jobs";

/// A request body and its Content-Type.
struct Body {
    content_type: String,
    bytes: Vec<u8>,
}

impl Body {
    fn json(bytes: Vec<u8>) -> Self {
        Body {
            content_type: "application/json".into(),
            bytes,
        }
    }
}

/// [`JobSubmitRequestBody`](super::messages::JobSubmitRequestBody) by reference, to serialize without cloning the graph.
#[derive(serde::Serialize)]
struct SubmitBodyRef<'a> {
    #[serde(rename = "jobGraph")]
    job_graph: &'a JobGraph,
    #[serde(
        rename = "jobJarFileNames",
        skip_serializing_if = "<[String]>::is_empty"
    )]
    job_jar_file_names: &'a [String],
}

fn encode_submit_body(
    job_graph: &JobGraph,
    job_jar_file_names: &[String],
) -> Result<Vec<u8>, RestClientError> {
    serde_json::to_vec(&SubmitBodyRef {
        job_graph,
        job_jar_file_names,
    })
    .map_err(|e| RestClientError::InvalidRequest {
        request: SUBMIT_REQUEST.into(),
        reason: format!("could not encode the job graph: {e}"),
    })
}

/// A `multipart/form-data` body as Flink's `RestClient` sends it: the `request` part, then the
/// file as `file_0`. The boundary is 128 random bits, so it does not occur in the parts.
fn multipart_body(boundary: &str, request_json: &[u8], file_name: &str, file: &[u8]) -> Vec<u8> {
    // Quotes are backslash-escaped (the graph's file name has no backslash, so this is
    // unambiguous); control characters were refused before.
    let quoted = file_name.replace('"', "\\\"");
    let mut body = Vec::with_capacity(request_json.len() + file.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"request\"\r\n\
             Content-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(request_json);
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file_0\"; \
             filename=\"{quoted}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// The error for an answer with a failure status.
fn status_error(status: StatusCode, body: &[u8]) -> RestClientError {
    let errors = match serde_json::from_slice::<ErrorResponseBody>(body) {
        Ok(b) => b.errors,
        Err(_) if body.is_empty() => vec![status.canonical_reason().unwrap_or("").to_string()],
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let mut text: String = text.chars().take(500).collect();
            if body.len() > 500 {
                text.push('…');
            }
            vec![text]
        }
    };
    RestClientError::Status {
        code: status.as_u16(),
        errors,
    }
}
