//! The REST server: routing, handlers, the error mapping. See the [module docs](super).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use actix_files::{Files, PathBufWrap};
use actix_web::body::BoxBody;
use actix_web::dev::ServerHandle;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{guard, middleware, web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use tracing::{debug, error, info, warn};

use super::auth::TokenCheck;
use super::messages::{
    ClusterOverviewWithVersion, ConfigurationInfoEntry, DashboardConfiguration, DashboardFeatures,
    EmptyResponseBody, ErrorResponseBody, JobDetailsInfo, JobExceptionsInfoWithHistory,
    JobExecutionResultResponseBody, JobIdWithStatus, JobIdsWithStatusOverview, JobPlan,
    JobPlanInfo, JobStatusInfo, JobSubmitRequestBody, JobSubmitResponseBody, JobSummary,
    MultipleJobsDetails, TaskManagerSummary, TaskManagersInfo, DEFAULT_MAX_EXCEPTIONS,
};
use super::{RestError, RestServerConfig};
use crate::blob::{BlobError, BlobKey, BlobServer};
use crate::dispatcher::{DispatcherError, RestfulGateway};
use crate::executiongraph::now_millis;
use crate::jobgraph::{JobGraph, JobLibraryRef};
use crate::metrics::{MetricGroup, MetricRegistry};
use crate::types::JobId;

/// The HTTP status of a Dispatcher error. The one place this mapping lives.
pub fn status_of(err: &DispatcherError) -> StatusCode {
    match err {
        DispatcherError::JobNotFound { .. } => StatusCode::NOT_FOUND,
        DispatcherError::DuplicateJob { .. } => StatusCode::CONFLICT,
        DispatcherError::InvalidJobGraph(_) => StatusCode::BAD_REQUEST,
        DispatcherError::JobMasterStartFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        // The job's JobMaster refused the request in its current state.
        DispatcherError::JobMaster { .. } => StatusCode::CONFLICT,
        DispatcherError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        DispatcherError::NotLeader { .. } => StatusCode::SERVICE_UNAVAILABLE,
        DispatcherError::Persistence { .. } => StatusCode::SERVICE_UNAVAILABLE,
        DispatcherError::Rpc(e) if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        DispatcherError::Rpc(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A running REST server; dropping it stops the server (without waiting).
#[derive(Debug)]
pub struct RestServer {
    handle: ServerHandle,
    local_addr: SocketAddr,
}

impl RestServer {
    /// Binds `config.bind_host:config.port` and starts serving `gateway`. `config_entries` are
    /// shown by `/jobmanager/config`. `blob_server` stores the job libraries uploaded with
    /// `POST /jobs` (without one, such an upload is answered 500). Must be called inside a tokio
    /// or actix runtime (see the module docs on threads).
    pub fn start(
        config: RestServerConfig,
        gateway: Arc<dyn RestfulGateway>,
        config_entries: Vec<(String, String)>,
        blob_server: Option<Arc<BlobServer>>,
    ) -> Result<RestServer, RestError> {
        Self::start_with_metrics(config, gateway, config_entries, blob_server, None)
    }

    /// [`start`](Self::start), also serving the process's metrics: `metrics` is the registry
    /// (`/metrics`, Prometheus) and the `jobmanager` group (`/jobmanager/metrics`).
    pub fn start_with_metrics(
        config: RestServerConfig,
        gateway: Arc<dyn RestfulGateway>,
        config_entries: Vec<(String, String)>,
        blob_server: Option<Arc<BlobServer>>,
        metrics: Option<(MetricRegistry, MetricGroup)>,
    ) -> Result<RestServer, RestError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(RestError::InvalidConfig { problems });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RestError::NoRuntime)?;
        let address = format!("{}:{}", config.bind_host, config.port);
        let bind_error = |reason: String| RestError::Bind {
            address: address.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> = (config.bind_host.as_str(), config.port)
            .to_socket_addrs()
            .map_err(|e| bind_error(e.to_string()))?
            .collect();
        let listener = TcpListener::bind(&addrs[..]).map_err(|e| bind_error(e.to_string()))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| bind_error(e.to_string()))?;

        let workers = config.workers;
        let shutdown_timeout = config.shutdown_timeout_secs;
        let ui_dir = config.ui_dir.clone();
        let tls = config.tls.clone();
        let token_check = config.auth.as_ref().map(TokenCheck::new);
        match &config.auth {
            Some(auth) => info!(
                component = "RestServer",
                protect_reads = auth.protect_reads,
                "the REST API requires the bearer token (rest.auth.token) on every mutating \
                 request{}",
                if auth.protect_reads {
                    " and on every read"
                } else {
                    ""
                }
            ),
            None => info!(
                component = "RestServer",
                "the REST API requires no token (rest.auth.token unset)"
            ),
        }
        match &ui_dir {
            Some(dir) => info!(
                component = "RestServer",
                ui_dir = %dir.display(),
                "serving the web UI in ui_dir at / (web.ui.dir) instead of the built-in dashboard"
            ),
            None => info!(
                component = "RestServer",
                bytes = super::dashboard::size(),
                "serving the built-in web dashboard at /"
            ),
        }
        let state = web::Data::new(AppState {
            gateway,
            blob_server,
            metrics,
            config,
            token_check,
            // Entrypoints pass `Configuration::to_entries` (secrets already hidden); anything
            // else that looks like a secret is hidden here too.
            config_entries: config_entries
                .into_iter()
                .map(|(key, value)| {
                    let value = shown_value(&key, value);
                    ConfigurationInfoEntry { key, value }
                })
                .collect(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .service(web::scope("/v1").configure(routes))
                .configure(routes)
                // Last: the REST API's paths (bare and under /v1) take precedence over files.
                .configure(|cfg| match &ui_dir {
                    Some(dir) => ui_files(cfg, dir),
                    None => super::dashboard::routes(cfg),
                })
                .default_service(web::to(not_found))
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(shutdown_timeout);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = match tls {
            // A client that does not finish its TLS handshake in time is dropped; a plaintext
            // request to this port fails the handshake and is closed without an answer.
            Some(tls) => server
                .tls_handshake_timeout(std::time::Duration::from_secs(10))
                .listen_rustls_0_23(listener, rustls::ServerConfig::clone(&tls)),
            None => server.listen(listener),
        }
        .map_err(|e| bind_error(e.to_string()))?
        .run();
        let handle = server.handle();
        runtime.spawn(async move {
            if let Err(e) = server.await {
                error!(component = "RestServer", error = %e, "rest server failed");
            }
        });
        info!(component = "RestServer", address = %local_addr, scheme, "rest server listening");
        Ok(RestServer { handle, local_addr })
    }

    /// The address the server is bound to (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and waits (up to the configured shutdown timeout) for
    /// in-flight requests.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        info!(component = "RestServer", address = %self.local_addr, "rest server stopped");
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        // Sends the stop command at once; there is nothing to wait on in a destructor.
        drop(self.handle.stop(false));
    }
}

pub(super) struct AppState {
    pub(super) gateway: Arc<dyn RestfulGateway>,
    blob_server: Option<Arc<BlobServer>>,
    /// The process's registry and its `jobmanager` group, when it has them.
    pub(super) metrics: Option<(MetricRegistry, MetricGroup)>,
    config: RestServerConfig,
    /// The bearer token's check, when `rest.auth.token` is set.
    pub(super) token_check: Option<TokenCheck>,
    pub(super) config_entries: Vec<ConfigurationInfoEntry>,
}

impl AppState {
    /// `rest.server.max-content-length`.
    pub(super) fn max_content_length(&self) -> usize {
        self.config.max_content_length
    }

    /// The bound on every gateway call.
    pub(super) fn request_timeout(&self) -> std::time::Duration {
        self.config.request_timeout
    }
}

/// Words that make a configuration key's value a secret wherever it is listed, as Flink's
/// `GlobalConfiguration.isSensitive` (case-insensitive, anywhere in the key).
const SENSITIVE_KEY_WORDS: &[&str] = &[
    "password",
    "secret",
    "fs.azure.account.key",
    "apikey",
    "api-key",
    "auth-params",
    "service-key",
    "token",
    "basic-auth",
    "jaas.config",
    "http-headers",
];

/// Whether `key`'s value must not be shown: a sensitive key of rflink's configuration
/// (`security.cluster-secret`, `rest.auth.token`) or a key Flink would hide.
pub(super) fn is_sensitive_key(key: &str) -> bool {
    if crate::config::find_key(key).is_some_and(|spec| spec.sensitive) {
        return true;
    }
    let key = key.to_ascii_lowercase();
    SENSITIVE_KEY_WORDS.iter().any(|word| key.contains(word))
}

/// `value` as a configuration listing shows it: [`HIDDEN`](rflink_rpc::security::HIDDEN) for a
/// sensitive key.
pub(super) fn shown_value(key: &str, value: String) -> String {
    if is_sensitive_key(key) {
        rflink_rpc::security::HIDDEN.to_string()
    } else {
        value
    }
}

pub(super) type State = web::Data<AppState>;

/// A request that could not be answered: the status and Flink's error message.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub(super) fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl From<DispatcherError> for ApiError {
    fn from(e: DispatcherError) -> Self {
        ApiError {
            status: status_of(&e),
            message: e.to_string(),
        }
    }
}

/// Turns a handler's outcome into the response, logging every refusal.
pub(super) fn respond<T: Serialize>(
    req: &HttpRequest,
    status: StatusCode,
    result: Result<T, ApiError>,
) -> HttpResponse {
    let result = result.and_then(|body| {
        serde_json::to_vec(&body)
            .map_err(|e| ApiError::internal(format!("could not serialize the response: {e}")))
    });
    match result {
        Ok(body) => {
            debug!(method = %req.method(), path = req.path(), status = status.as_u16(), "rest request");
            json_response(status, body)
        }
        Err(e) => error_response(req, e),
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        ))
        .body(body)
}

fn error_response(req: &HttpRequest, e: ApiError) -> HttpResponse {
    if e.status == StatusCode::SERVICE_UNAVAILABLE
        && e.message.starts_with(crate::dispatcher::NOT_LEADER)
    {
        // A standby answers every Dispatcher request so: not worth a warning each time.
        tracing::debug!(method = %req.method(), path = req.path(), "rest request refused: not the leader");
    } else if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE {
        error!(method = %req.method(), path = req.path(), status = e.status.as_u16(), error = %e.message, "rest request failed");
    } else {
        warn!(method = %req.method(), path = req.path(), status = e.status.as_u16(), error = %e.message, "rest request refused");
    }
    error_body(e.status, e.message)
}

/// Flink's error body `{"errors":[message]}` with `status`, without logging.
pub(super) fn error_body(status: StatusCode, message: String) -> HttpResponse {
    let body = ErrorResponseBody {
        errors: vec![message],
    };
    // An ErrorResponseBody of strings always serializes.
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"errors\":[]}".to_vec());
    json_response(status, bytes)
}

impl AppState {
    /// Calls the gateway, bounded by the request timeout; a panic in the gateway is an error
    /// answer, not a dead worker.
    pub(super) async fn call<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&dyn RestfulGateway) -> BoxFuture<'static, Result<T, DispatcherError>>,
    ) -> Result<T, ApiError> {
        self.call_raw(what, f).await?.map_err(ApiError::from)
    }

    /// [`call`](Self::call), keeping the gateway's own error apart from the timeout and the
    /// panic (the outer error).
    async fn call_raw<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&dyn RestfulGateway) -> BoxFuture<'static, Result<T, DispatcherError>>,
    ) -> Result<Result<T, DispatcherError>, ApiError> {
        let future = std::panic::catch_unwind(AssertUnwindSafe(|| f(self.gateway.as_ref())))
            .map_err(|_| ApiError::internal(format!("the dispatcher panicked in {what}")))?;
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, AssertUnwindSafe(future).catch_unwind()).await {
            Err(_) => Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "{what} timed out after {timeout:?}: the dispatcher did not answer"
                ),
            }),
            Ok(Err(_)) => Err(ApiError::internal(format!(
                "the dispatcher panicked in {what}"
            ))),
            Ok(Ok(result)) => Ok(result),
        }
    }
}

/// Registers every endpoint (once bare, once under `/v1`).
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/config", "GET").route(web::get().to(dashboard_config)))
        .service(resource("/overview", "GET").route(web::get().to(cluster_overview)))
        .service(
            resource("/jobs", "GET, POST")
                .route(web::get().to(job_ids))
                .route(web::post().to(submit_job)),
        )
        // Before `/jobs/{jobid}`, which would take "overview" for a job id.
        .service(resource("/jobs/overview", "GET").route(web::get().to(jobs_overview)))
        .service(
            resource("/jobs/{jobid}", "GET, PATCH")
                .route(web::get().to(job_details))
                .route(web::patch().to(cancel_job)),
        )
        .service(resource("/jobs/{jobid}/status", "GET").route(web::get().to(job_status)))
        .service(resource("/jobs/{jobid}/plan", "GET").route(web::get().to(job_plan)))
        .service(resource("/jobs/{jobid}/exceptions", "GET").route(web::get().to(job_exceptions)))
        .service(
            resource("/jobs/{jobid}/execution-result", "GET")
                .route(web::get().to(job_execution_result)),
        )
        .service(resource("/jobs/{jobid}/yarn-cancel", "GET").route(web::get().to(yarn_cancel)))
        .service(resource("/jobs/{jobid}/checkpoints", "GET").route(web::get().to(job_checkpoints)))
        .service(
            resource("/jobs/{jobid}/savepoints", "POST").route(web::post().to(trigger_savepoint)),
        )
        .service(
            resource("/jobs/{jobid}/savepoints/{triggerid}", "GET")
                .route(web::get().to(savepoint_status)),
        )
        .service(resource("/jobs/{jobid}/stop", "POST").route(web::post().to(stop_with_savepoint)))
        .service(resource("/taskmanagers", "GET").route(web::get().to(task_managers)))
        .service(resource("/jobmanager/config", "GET").route(web::get().to(jobmanager_config)))
        .configure(super::monitoring::routes);
}

/// A resource of the REST API, answering 405 (with `Allow`) for methods it has no route for.
/// Every endpoint is registered through here, so every API request passes the bearer-token
/// check ([`super::auth::require_token`]) before its handler or the 405.
pub(super) fn resource(
    path: &str,
    allowed: &'static str,
) -> actix_web::Resource<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::resource(path)
        .wrap(middleware::from_fn(super::auth::require_token))
        .default_service(web::to(move |req: HttpRequest| async move {
            let mut response = error_response(
                &req,
                ApiError {
                    status: StatusCode::METHOD_NOT_ALLOWED,
                    message: format!(
                        "method {} is not allowed for {} (allowed: {allowed})",
                        req.method(),
                        req.path()
                    ),
                },
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed));
            response
        }))
}

/// Serves the files under `dir` at `/` (`index.html` for a directory), for GET and HEAD.
///
/// Every request the files cannot answer gets the same 404 as any unknown path ([`not_found`]):
/// a path naming no file (the files' default handler), another method, or a path
/// `actix_files` refuses (a segment starting with `.` or `*`, an encoded `/`, invalid UTF-8;
/// it would answer those 400). The routing guard checks those last two before the files are
/// chosen, so such a request falls through to the app's default service. `..` segments cannot
/// leave `dir`: `actix_files` resolves them within the mount (`/../../etc/passwd` is
/// `dir/etc/passwd`).
fn ui_files(cfg: &mut web::ServiceConfig, dir: &Path) {
    let servable = guard::fn_guard(|ctx| {
        matches!(ctx.head().method, Method::GET | Method::HEAD)
            && PathBufWrap::parse_path(ctx.head().uri.path(), false).is_ok()
    });
    cfg.service(
        Files::new("/", dir)
            .index_file("index.html")
            // A web UI's scripts and styles, shown inline: no `Content-Disposition`.
            .disable_content_disposition()
            .guard(servable)
            .default_handler(web::to(not_found)),
    );
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    // Flink's static file handler answers every unknown path with these words.
    let message = format!("Unable to load requested file {}.", req.path());
    error_response(
        &req,
        ApiError {
            status: StatusCode::NOT_FOUND,
            message,
        },
    )
}

pub(super) fn job_id(req: &HttpRequest) -> Result<JobId, ApiError> {
    let raw = req.match_info().get("jobid").unwrap_or_default();
    raw.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "Bad request, could not parse parameters: cannot parse path parameter jobid: {e}"
        ))
    })
}

fn query(req: &HttpRequest) -> Result<BTreeMap<String, String>, ApiError> {
    web::Query::<BTreeMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "Bad request, could not parse query parameters: {e}"
            ))
        })
}

async fn dashboard_config(req: HttpRequest, state: State) -> HttpResponse {
    let c = &state.config;
    let body = DashboardConfiguration {
        refresh_interval: c.refresh_interval_ms,
        timezone_name: "Coordinated Universal Time".into(),
        timezone_offset: 0,
        flink_version: c.flink_version.clone(),
        flink_revision: c.flink_revision.clone(),
        features: DashboardFeatures {
            web_submit: false,
            web_cancel: true,
            web_rescale: false,
            web_history: false,
        },
    };
    respond(&req, StatusCode::OK, Ok(body))
}

async fn cluster_overview(req: HttpRequest, state: State) -> HttpResponse {
    let result = state
        .call("cluster overview", |g| g.cluster_overview())
        .await
        .map(|o| {
            ClusterOverviewWithVersion::from_view(
                &o,
                &state.config.flink_version,
                &state.config.flink_revision,
            )
        });
    respond(&req, StatusCode::OK, result)
}

async fn job_ids(req: HttpRequest, state: State) -> HttpResponse {
    let result = state
        .call("job overviews", |g| g.job_overviews())
        .await
        .map(|jobs| JobIdsWithStatusOverview {
            jobs: jobs
                .iter()
                .map(|j| JobIdWithStatus {
                    id: j.job_id,
                    status: j.state,
                })
                .collect(),
        });
    respond(&req, StatusCode::OK, result)
}

async fn jobs_overview(req: HttpRequest, state: State) -> HttpResponse {
    let result = state
        .call("job overviews", |g| g.job_overviews())
        .await
        .map(|jobs| MultipleJobsDetails {
            jobs: jobs.iter().map(JobSummary::from_view).collect(),
        });
    respond(&req, StatusCode::OK, result)
}

async fn job_details(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        let details = state.call("job details", |g| g.job_details(id)).await?;
        Ok(JobDetailsInfo::from_view(&details))
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn job_plan(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        let details = state.call("job details", |g| g.job_details(id)).await?;
        Ok(JobPlanInfo {
            plan: JobPlan::from_view(&details),
        })
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn job_status(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        let status = state.call("job status", |g| g.job_status(id)).await?;
        Ok(JobStatusInfo { status })
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn job_exceptions(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        let max = match query(&req)?.get("maxExceptions") {
            None => DEFAULT_MAX_EXCEPTIONS,
            Some(raw) => raw.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!(
                    "Bad request, could not parse parameters: maxExceptions must be a \
                     non-negative integer, got {raw:?}"
                ))
            })?,
        };
        let exceptions = state
            .call("job exceptions", |g| g.job_exceptions(id))
            .await?;
        Ok(JobExceptionsInfoWithHistory::from_view(&exceptions, max))
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn job_execution_result(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        let result = state.call("job result", |g| g.job_result(id)).await?;
        Ok(JobExecutionResultResponseBody::from_view(result.as_ref()))
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn job_checkpoints(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        let stats = state
            .call("checkpoint statistics", |g| g.checkpoint_stats(id))
            .await?;
        // Per-vertex details only with one checkpoint's details, as Flink.
        stats.map(|s| s.overview()).ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("Checkpointing is not enabled for job {id}."),
        })
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

/// `POST /jobs/{id}/savepoints` (Flink's `SavepointTriggerRequestBody`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct SavepointTriggerRequest {
    #[serde(rename = "target-directory")]
    target_directory: Option<String>,
    #[serde(rename = "cancel-job")]
    cancel_job: bool,
}

/// `POST /jobs/{id}/stop` (Flink's `StopWithSavepointRequestBody`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct StopWithSavepointRequest {
    #[serde(rename = "targetDirectory")]
    target_directory: Option<String>,
    drain: bool,
}

/// Flink's `TriggerResponse`.
#[derive(Debug, Serialize)]
struct TriggerResponse {
    #[serde(rename = "request-id")]
    request_id: String,
}

async fn json_body<T: serde::de::DeserializeOwned + Default>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &State,
    what: &str,
) -> Result<T, ApiError> {
    check_json_content_type(req)?;
    let body = read_body(req, payload, state.config.max_content_length).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("Request did not match expected format {what}: {e}"))
    })
}

/// The local directory a savepoint's `target-directory` names. Flink's CLI passes the user's
/// text as given, a path or a URI: `file:///sp`, `file://localhost/sp` and `file:/sp` are the
/// path `/sp` (taken literally, they would be a directory `file:` under the JobManager's working
/// directory). Other schemes (`s3://`, `hdfs://`) and remote hosts are refused: rflink writes
/// savepoints to its own file system only.
fn savepoint_target(target: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(target) = target else {
        return Ok(None);
    };
    let scheme = target
        .split_once(':')
        .map(|(scheme, _)| scheme)
        .filter(|s| {
            s.len() > 1
                && s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
    let Some(scheme) = scheme else {
        return Ok(Some(target));
    };
    let rest = &target[scheme.len() + 1..];
    if !scheme.eq_ignore_ascii_case("file") {
        return Err(ApiError::bad_request(format!(
            "Bad request: savepoint target directory {target:?}: rflink writes savepoints to \
             the local file system only (a path or a file: URI), not {scheme}:"
        )));
    }
    let path = match rest.strip_prefix("//") {
        None => rest,
        Some(authority_and_path) => {
            let (host, path) = match authority_and_path.find('/') {
                Some(i) => authority_and_path.split_at(i),
                None => (authority_and_path, ""),
            };
            if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
                return Err(ApiError::bad_request(format!(
                    "Bad request: savepoint target directory {target:?} names host {host:?}: \
                     rflink writes savepoints to the JobManager's local file system only"
                )));
            }
            path
        }
    };
    if path.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Bad request: savepoint target directory {target:?} names no path"
        )));
    }
    Ok(Some(path.to_string()))
}

async fn savepoint(
    state: &State,
    id: JobId,
    target: Option<String>,
    terminate: bool,
) -> Result<TriggerResponse, ApiError> {
    let target = savepoint_target(target)?;
    let savepoint = state
        .call("trigger savepoint", |g| {
            g.trigger_savepoint(id, target, terminate)
        })
        .await?;
    info!(job_id = %id, savepoint, terminate, "savepoint triggered over rest");
    Ok(TriggerResponse {
        request_id: format!("{savepoint:032x}"),
    })
}

/// Waits for savepoint `savepoint_id` of `job_id` and cancels the job once it completed.
async fn cancel_after_savepoint(
    gateway: Arc<dyn RestfulGateway>,
    job_id: JobId,
    savepoint_id: u64,
) {
    use crate::jobmaster::SavepointStatus;
    loop {
        match gateway.savepoint_status(job_id, savepoint_id).await {
            Ok(Some(SavepointStatus::InProgress)) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Ok(Some(SavepointStatus::Completed(location))) => {
                info!(job_id = %job_id, location, "savepoint completed; cancelling the job");
                if let Err(e) = gateway.cancel_job(job_id).await {
                    warn!(job_id = %job_id, error = %e, "cancel after the savepoint failed");
                }
                return;
            }
            Ok(Some(SavepointStatus::Failed(reason))) => {
                warn!(job_id = %job_id, reason, "the savepoint failed; the job is not cancelled");
                return;
            }
            Ok(None) | Err(_) => {
                warn!(job_id = %job_id, savepoint_id, "the savepoint's job or status is gone; not cancelling");
                return;
            }
        }
    }
}

async fn trigger_savepoint(req: HttpRequest, state: State, payload: web::Payload) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        let body: SavepointTriggerRequest =
            json_body(&req, payload, &state, "SavepointTriggerRequestBody").await?;
        if !body.cancel_job {
            return savepoint(&state, id, body.target_directory, false).await;
        }
        // Cancel with savepoint (`flink cancel -s`): the savepoint, then a cancel once it
        // completed, so the job ends CANCELED as in Flink (a stop would end it FINISHED). A
        // failed savepoint leaves the job running, as Flink's does.
        let response = savepoint(&state, id, body.target_directory, false).await?;
        let savepoint_id = u64::from_str_radix(&response.request_id, 16).unwrap_or_default();
        let gateway = Arc::clone(&state.gateway);
        let runtime = tokio::runtime::Handle::current();
        runtime.spawn(cancel_after_savepoint(gateway, id, savepoint_id));
        Ok(response)
    }
    .await;
    respond(&req, StatusCode::ACCEPTED, result)
}

async fn stop_with_savepoint(
    req: HttpRequest,
    state: State,
    payload: web::Payload,
) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        let body: StopWithSavepointRequest =
            json_body(&req, payload, &state, "StopWithSavepointRequestBody").await?;
        if body.drain {
            return Err(ApiError::bad_request(
                "Bad request: rflink does not support drain=true (stop with savepoint suspends \
                 the job as Flink's default)"
                    .to_string(),
            ));
        }
        savepoint(&state, id, body.target_directory, true).await
    }
    .await;
    respond(&req, StatusCode::ACCEPTED, result)
}

async fn savepoint_status(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        let raw = req.match_info().get("triggerid").unwrap_or_default();
        let trigger = u64::from_str_radix(raw, 16)
            .ok()
            .filter(|_| raw.len() == 32)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Bad request, could not parse parameters: triggerid {raw:?} is not 32 hex digits"
                ))
            })?;
        let status = state
            .call("savepoint status", |g| g.savepoint_status(id, trigger))
            .await?;
        use crate::jobmaster::SavepointStatus;
        match status {
            None => Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!("There is no savepoint operation with triggerId={raw} for job {id}."),
            }),
            Some(SavepointStatus::InProgress) => Ok(serde_json::json!({
                "status": {"id": "IN_PROGRESS"},
                "operation": null,
            })),
            Some(SavepointStatus::Completed(location)) => Ok(serde_json::json!({
                "status": {"id": "COMPLETED"},
                "operation": {"location": location},
            })),
            // Flink's client reads the cause from `serialized-throwable` alone.
            Some(SavepointStatus::Failed(cause)) => Ok(serde_json::json!({
                "status": {"id": "COMPLETED"},
                "operation": {"failure-cause": super::messages::SerializedFailure::new(
                    "org.apache.flink.runtime.checkpoint.CheckpointException",
                    &cause,
                )},
            })),
        }
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn cancel(state: &State, id: JobId) -> Result<EmptyResponseBody, ApiError> {
    // Flink's Dispatcher.cancelJob and JobCancellationHandler: cancelling a job that is already
    // CANCELED is acknowledged again, one that ended otherwise is 409 (else `flink cancel` of a
    // finished job prints "Cancelled job").
    let status = state.call("job status", |g| g.job_status(id)).await?;
    if status.is_globally_terminal() && status != crate::executiongraph::JobStatus::Canceled {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!(
                "Job cancellation failed because the job has already reached another terminal \
                 state ({status})."
            ),
        });
    }
    state.call("cancel job", |g| g.cancel_job(id)).await?;
    info!(job_id = %id, "job cancel requested over rest");
    Ok(EmptyResponseBody {})
}

async fn cancel_job(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        match query(&req)?.get("mode").map(String::as_str) {
            None | Some("cancel") => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Bad request, could not parse parameters: invalid termination mode \
                     {other:?}: rflink supports mode=cancel"
                )))
            }
        }
        cancel(&state, id).await
    }
    .await;
    respond(&req, StatusCode::ACCEPTED, result)
}

async fn yarn_cancel(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        cancel(&state, id).await
    }
    .await;
    respond(&req, StatusCode::ACCEPTED, result)
}

async fn task_managers(req: HttpRequest, state: State) -> HttpResponse {
    let result = state
        .call("task managers", |g| g.task_managers())
        .await
        .map(|tms| {
            let now = now_millis();
            TaskManagersInfo {
                taskmanagers: tms
                    .iter()
                    .map(|t| TaskManagerSummary::from_view(t, now))
                    .collect(),
            }
        });
    respond(&req, StatusCode::OK, result)
}

async fn jobmanager_config(req: HttpRequest, state: State) -> HttpResponse {
    respond(&req, StatusCode::OK, Ok(&state.config_entries))
}

/// Most parts a multipart job submission may have: the `request` part and a few files (a job
/// takes one library). A form with more is refused as malformed before more parts are read.
const MAX_FORM_PARTS: usize = 8;

/// The part of a multipart job submission holding the [`JobSubmitRequestBody`] (Flink's
/// `FileUploadHandler.HTTP_ATTRIBUTE_REQUEST`).
const REQUEST_PART: &str = "request";

async fn submit_job(req: HttpRequest, state: State, payload: web::Payload) -> HttpResponse {
    let result = async {
        let encoding = submit_encoding(&req)?;
        let body = read_body(&req, payload, state.config.max_content_length).await?;
        let submission = match encoding {
            SubmitEncoding::Json => Submission {
                body: parse_submit_body(&body)?,
                files: Vec::new(),
                multipart: false,
            },
            SubmitEncoding::Multipart { boundary } => read_form(body, boundary).await?,
        };
        let (graph, library) = check_submission(submission).await?;
        submit_checked(&state, graph, library).await
    }
    .await;
    respond(&req, StatusCode::ACCEPTED, result)
}

/// How a job submission's body is encoded.
enum SubmitEncoding {
    /// `application/json` (or no Content-Type): the body is the [`JobSubmitRequestBody`].
    Json,
    /// `multipart/form-data`, Flink's encoding: a `request` part and file parts.
    Multipart { boundary: String },
}

/// The Content-Type's type and subtype, without parameters.
fn content_type_essence(raw: &str) -> &str {
    raw.split(';').next().unwrap_or_default().trim()
}

fn submit_encoding(req: &HttpRequest) -> Result<SubmitEncoding, ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(SubmitEncoding::Json);
    };
    let raw = value.to_str().unwrap_or_default();
    let essence = content_type_essence(raw);
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(SubmitEncoding::Json)
    } else if essence.eq_ignore_ascii_case("multipart/form-data") {
        let boundary = multer::parse_boundary(raw).map_err(|e| {
            ApiError::bad_request(format!(
                "Bad request: malformed multipart/form-data job submission: Content-Type \
                 {raw:?}: {e}"
            ))
        })?;
        Ok(SubmitEncoding::Multipart { boundary })
    } else {
        Err(ApiError::bad_request(format!(
            "Bad request: rflink accepts job submissions as Content-Type application/json with \
             body {{\"jobGraph\": <JobGraph>}}, or as multipart/form-data with that JSON in a \
             part named \"request\" and the job's library as a file part; not {essence:?}"
        )))
    }
}

fn parse_submit_body(bytes: &[u8]) -> Result<JobSubmitRequestBody, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "Request did not match expected format JobSubmitRequestBody: {e}"
        ))
    })
}

/// A file part of a multipart submission.
struct FilePart {
    /// The part's name (Flink: `file_0`, `file_1`, ...).
    field: String,
    /// Its `filename`.
    file_name: String,
    bytes: Bytes,
}

/// A submission as received, before any check of its content.
struct Submission {
    body: JobSubmitRequestBody,
    files: Vec<FilePart>,
    /// Whether it came as multipart/form-data (only those can carry files).
    multipart: bool,
}

/// Parses a multipart/form-data submission from its body, already read (and bounded by
/// `rest.server.max-content-length`). No part can be larger than the body, and every part read
/// is a slice of it or a copy of such a slice, so the form takes at most about twice the body.
async fn read_form(body: Bytes, boundary: String) -> Result<Submission, ApiError> {
    let limit = body.len() as u64;
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit)
            .per_field(limit),
    );
    let stream = futures::stream::once(futures::future::ready(Ok::<_, std::convert::Infallible>(
        body,
    )));
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);
    let malformed = |e: multer::Error| {
        ApiError::bad_request(format!(
            "Bad request: malformed multipart/form-data job submission: {e}"
        ))
    };
    let mut request = None;
    let mut files = Vec::new();
    let mut parts = 0usize;
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        parts += 1;
        if parts > MAX_FORM_PARTS {
            return Err(ApiError::bad_request(format!(
                "Bad request: malformed multipart/form-data job submission: more than \
                 {MAX_FORM_PARTS} parts (a submission has a \"{REQUEST_PART}\" part and its job's \
                 library)"
            )));
        }
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        if name == REQUEST_PART {
            if request.is_some() {
                return Err(ApiError::bad_request(format!(
                    "Bad request: malformed multipart/form-data job submission: more than one \
                     part named \"{REQUEST_PART}\""
                )));
            }
            request = Some(field.bytes().await.map_err(malformed)?);
        } else if let Some(file_name) = file_name {
            let bytes = field.bytes().await.map_err(malformed)?;
            files.push(FilePart {
                field: name,
                file_name,
                bytes,
            });
        } else {
            return Err(ApiError::bad_request(format!(
                "Bad request: malformed multipart/form-data job submission: unexpected form \
                 field {name:?} (a submission has a part named \"{REQUEST_PART}\" holding the \
                 JobSubmitRequestBody JSON, and file parts with a filename)"
            )));
        }
    }
    let Some(request) = request else {
        return Err(ApiError::bad_request(format!(
            "Bad request: the multipart/form-data job submission has no part named \
             \"{REQUEST_PART}\" holding the JobSubmitRequestBody JSON"
        )));
    };
    Ok(Submission {
        body: parse_submit_body(&request)?,
        files,
        multipart: true,
    })
}

/// An uploaded library that passed every check.
struct CheckedLibrary {
    reference: JobLibraryRef,
    key: BlobKey,
    bytes: Bytes,
}

/// Runs `f` on the blocking pool; a panic in it is a 500.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("{what} failed: {e}")))
}

/// Every check of a submission, in the order of the module docs: the graph, then the library it
/// declares against the uploaded files. Changes nothing.
async fn check_submission(
    submission: Submission,
) -> Result<(JobGraph, Option<CheckedLibrary>), ApiError> {
    let Submission {
        body:
            JobSubmitRequestBody {
                job_graph: graph,
                job_jar_file_names: names,
            },
        mut files,
        multipart,
    } = submission;
    graph
        .validate()
        .map_err(|e| ApiError::from(DispatcherError::InvalidJobGraph(e)))?;
    let id = graph.job_id;
    let declared = graph.program.as_ref().and_then(|p| p.library.clone());
    let file_list = || {
        files
            .iter()
            .map(|f| format!("{}={:?}", f.field, f.file_name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !multipart {
        if let Some(library) = &declared {
            return Err(ApiError::bad_request(format!(
                "Bad request: job {id} declares the job library {:?}: upload the library with \
                 the job as multipart/form-data (this JSON in a part named \"{REQUEST_PART}\", \
                 the library in a file part file_0 with filename {:?}, listed in \
                 jobJarFileNames)",
                library.file_name, library.file_name
            )));
        }
        if !names.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Bad request: jobJarFileNames lists {names:?}, but an application/json \
                 submission carries no files: upload them as multipart/form-data"
            )));
        }
        return Ok((graph, None));
    }
    let Some(declared) = declared else {
        if files.is_empty() && names.is_empty() {
            return Ok((graph, None));
        }
        return Err(ApiError::bad_request(format!(
            "Bad request: the submission uploads files [{}] (jobJarFileNames {names:?}), but job \
             {id} declares no job library (program.library): upload a job's library only with \
             a job graph that declares it",
            file_list()
        )));
    };
    let name = declared.file_name.clone();
    let Some(index) = files.iter().position(|f| f.file_name == name) else {
        return Err(ApiError::bad_request(format!(
            "Bad request: job {id} declares the job library {name:?}, but the submission has no \
             file part with that filename (it has [{}]): upload the library with the job, as a \
             file part file_0 with filename {name:?}",
            file_list()
        )));
    };
    if !names.contains(&name) {
        return Err(ApiError::bad_request(format!(
            "Bad request: job {id} declares the job library {name:?}, but jobJarFileNames \
             ({names:?}) does not list it: upload the library with the job and list its file \
             name in jobJarFileNames"
        )));
    }
    if files.len() > 1 || names.len() > 1 {
        return Err(ApiError::bad_request(format!(
            "Bad request: a job has one library, but the submission uploads {} files [{}] and \
             jobJarFileNames lists {names:?}: upload only {name:?}",
            files.len(),
            file_list()
        )));
    }
    let file = files.swap_remove(index);
    let expected: BlobKey = declared.blob_key.parse().map_err(|e| {
        ApiError::from(DispatcherError::InvalidJobGraph(
            crate::jobgraph::JobGraphError::BadLibrary(format!("{e}")),
        ))
    })?;
    let bytes = file.bytes;
    let actual = {
        let bytes = bytes.clone();
        blocking("hashing the uploaded library", move || BlobKey::of(&bytes)).await?
    };
    let size = bytes.len() as u64;
    if size != declared.size {
        return Err(ApiError::bad_request(format!(
            "Bad request: the uploaded job library {name:?} is corrupt or not the declared one: \
             it has {size} bytes, job {id} declares {} (declared SHA-256 {expected}, uploaded \
             SHA-256 {actual})",
            declared.size
        )));
    }
    if actual != expected {
        return Err(ApiError::bad_request(format!(
            "Bad request: the uploaded job library {name:?} is corrupt or not the declared one: \
             its SHA-256 is {actual}, job {id} declares {expected}"
        )));
    }
    let info = {
        let bytes = bytes.clone();
        let name = name.clone();
        blocking("inspecting the uploaded library", move || {
            crate::library::inspect(&name, &bytes)
        })
        .await?
    }
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if info.note.fingerprint != declared.build_fingerprint {
        return Err(ApiError::bad_request(format!(
            "Bad request: job {id} declares the build fingerprint {:?} for its library {name:?}, \
             but the library was built as {:?}",
            declared.build_fingerprint, info.note.fingerprint
        )));
    }
    Ok((
        graph,
        Some(CheckedLibrary {
            reference: declared,
            key: actual,
            bytes,
        }),
    ))
}

/// Deletes the job's blobs after a failed submission; a failure to do so is only logged.
async fn delete_blobs(blobs: &BlobServer, id: JobId) {
    if let Err(e) = blobs.delete_job(id).await {
        error!(job_id = %id, error = %e, "could not delete the blobs of a refused job");
    }
}

/// Stores the checked library in the BlobServer, then submits the job to the dispatcher; a
/// refused submission takes its blobs with it.
async fn submit_checked(
    state: &State,
    graph: JobGraph,
    library: Option<CheckedLibrary>,
) -> Result<JobSubmitResponseBody, ApiError> {
    let id = graph.job_id;
    let name = graph.name.clone();
    let stored = match library {
        None => None,
        Some(library) => {
            let file_name = library.reference.file_name;
            let Some(blobs) = state.blob_server.clone() else {
                return Err(ApiError::internal(format!(
                    "cannot accept the job library {file_name:?} of job {id}: this REST server \
                     has no BlobServer to store it in"
                )));
            };
            let size = library.bytes.len();
            let key = blobs.put(id, library.bytes).await.map_err(|e| match e {
                BlobError::TooLarge { .. } => ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!("cannot store the job library {file_name:?}: {e}"),
                },
                e => ApiError::internal(format!(
                    "could not store the job library {file_name:?} of job {id} in the \
                     BlobServer: {e}"
                )),
            })?;
            if key != library.key {
                return Err(ApiError::internal(format!(
                    "the BlobServer stored the job library {file_name:?} of job {id} under the \
                     key {key}, not its declared key {}",
                    library.key
                )));
            }
            info!(job_id = %id, file_name = %file_name, size, key = %key, "job library uploaded over rest");
            Some(blobs)
        }
    };
    let outcome = state.call_raw("submit job", |g| g.submit_job(graph)).await;
    if let Some(blobs) = &stored {
        match &outcome {
            Ok(Ok(_)) | Ok(Err(DispatcherError::DuplicateJob { .. })) => {}
            // Timed out: the dispatcher may still take the job, which then needs its library.
            Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
                warn!(job_id = %id, "the dispatcher did not answer the submission in time; the job's library stays in the BlobServer")
            }
            _ => delete_blobs(blobs, id).await,
        }
    }
    outcome?.map_err(ApiError::from)?;
    info!(job_id = %id, job_name = %name, "job submitted over rest");
    Ok(JobSubmitResponseBody {
        job_url: format!("/jobs/{id}"),
    })
}

fn check_json_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = content_type_essence(value.to_str().unwrap_or_default());
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Bad request: this endpoint accepts Content-Type application/json, not {essence:?}"
        )))
    }
}

fn too_large(size: impl std::fmt::Display, max: usize) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "request body of {size} bytes exceeds rest.server.max-content-length of {max} bytes"
        ),
    }
}

/// Reads the request body, refusing more than `max` bytes (by `Content-Length` before reading,
/// and while reading for chunked bodies).
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    max: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared {
        if len > max as u64 {
            return Err(too_large(len, max));
        }
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        if body.len() + chunk.len() > max {
            return Err(too_large(format!("more than {max}"), max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
