//! The REST server: routing, handlers, the error mapping. See the [module docs](super).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use tracing::{debug, error, info, warn};

use super::messages::{
    ClusterOverviewWithVersion, ConfigurationInfoEntry, DashboardConfiguration, DashboardFeatures,
    EmptyResponseBody, ErrorResponseBody, JobDetailsInfo, JobExceptionsInfoWithHistory,
    JobExecutionResultResponseBody, JobIdWithStatus, JobIdsWithStatusOverview, JobPlan,
    JobPlanInfo, JobStatusInfo, JobSubmitRequestBody, JobSubmitResponseBody, JobSummary,
    MultipleJobsDetails, TaskManagerSummary, TaskManagersInfo, DEFAULT_MAX_EXCEPTIONS,
};
use super::{RestError, RestServerConfig};
use crate::dispatcher::{DispatcherError, RestfulGateway};
use crate::executiongraph::now_millis;
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
    /// shown by `/jobmanager/config`. Must be called inside a tokio or actix runtime (see the
    /// module docs on threads).
    pub fn start(
        config: RestServerConfig,
        gateway: Arc<dyn RestfulGateway>,
        config_entries: Vec<(String, String)>,
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
        let state = web::Data::new(AppState {
            gateway,
            config,
            config_entries: config_entries
                .into_iter()
                .map(|(key, value)| ConfigurationInfoEntry { key, value })
                .collect(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .service(web::scope("/v1").configure(routes))
                .configure(routes)
                .default_service(web::to(not_found))
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(shutdown_timeout)
        .listen(listener)
        .map_err(|e| bind_error(e.to_string()))?
        .run();
        let handle = server.handle();
        runtime.spawn(async move {
            if let Err(e) = server.await {
                error!(component = "RestServer", error = %e, "rest server failed");
            }
        });
        info!(component = "RestServer", address = %local_addr, "rest server listening");
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

struct AppState {
    gateway: Arc<dyn RestfulGateway>,
    config: RestServerConfig,
    config_entries: Vec<ConfigurationInfoEntry>,
}

type State = web::Data<AppState>;

/// A request that could not be answered: the status and Flink's error message.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
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
fn respond<T: Serialize>(
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
    if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE {
        error!(method = %req.method(), path = req.path(), status = e.status.as_u16(), error = %e.message, "rest request failed");
    } else {
        warn!(method = %req.method(), path = req.path(), status = e.status.as_u16(), error = %e.message, "rest request refused");
    }
    let body = ErrorResponseBody {
        errors: vec![e.message],
    };
    // An ErrorResponseBody of strings always serializes.
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"errors\":[]}".to_vec());
    json_response(e.status, bytes)
}

impl AppState {
    /// Calls the gateway, bounded by the request timeout; a panic in the gateway is an error
    /// answer, not a dead worker.
    async fn call<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&dyn RestfulGateway) -> BoxFuture<'static, Result<T, DispatcherError>>,
    ) -> Result<T, ApiError> {
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
            Ok(Ok(result)) => result.map_err(ApiError::from),
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
        .service(resource("/jobmanager/config", "GET").route(web::get().to(jobmanager_config)));
}

/// A resource answering 405 (with `Allow`) for methods it has no route for.
fn resource(path: &str, allowed: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
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

fn job_id(req: &HttpRequest) -> Result<JobId, ApiError> {
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
        stats.ok_or_else(|| ApiError {
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

async fn savepoint(
    state: &State,
    id: JobId,
    target: Option<String>,
    terminate: bool,
) -> Result<TriggerResponse, ApiError> {
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

async fn trigger_savepoint(req: HttpRequest, state: State, payload: web::Payload) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        let body: SavepointTriggerRequest =
            json_body(&req, payload, &state, "SavepointTriggerRequestBody").await?;
        savepoint(&state, id, body.target_directory, body.cancel_job).await
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
            Some(SavepointStatus::Failed(cause)) => Ok(serde_json::json!({
                "status": {"id": "COMPLETED"},
                "operation": {"failure-cause": {
                    "class": "org.apache.flink.runtime.checkpoint.CheckpointException",
                    "stack-trace": cause,
                    "serialized-throwable": null,
                }},
            })),
        }
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn cancel(state: &State, id: JobId) -> Result<EmptyResponseBody, ApiError> {
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

async fn submit_job(req: HttpRequest, state: State, payload: web::Payload) -> HttpResponse {
    let result = async {
        check_json_content_type(&req)?;
        let body = read_body(&req, payload, state.config.max_content_length).await?;
        let request: JobSubmitRequestBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "Request did not match expected format JobSubmitRequestBody: {e}"
            ))
        })?;
        let graph = request.job_graph;
        graph
            .validate()
            .map_err(|e| ApiError::from(DispatcherError::InvalidJobGraph(e)))?;
        let id = graph.job_id;
        let name = graph.name.clone();
        state.call("submit job", |g| g.submit_job(graph)).await?;
        info!(job_id = %id, job_name = %name, "job submitted over rest");
        Ok(JobSubmitResponseBody {
            job_url: format!("/jobs/{id}"),
        })
    }
    .await;
    respond(&req, StatusCode::ACCEPTED, result)
}

fn check_json_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Bad request: rflink accepts job submissions as Content-Type application/json with \
             body {{\"jobGraph\": <JobGraph>}}, not {essence:?} (Flink's multipart upload of a \
             Java-serialized JobGraph is not supported)"
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
