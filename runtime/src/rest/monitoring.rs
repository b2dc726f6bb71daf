//! The monitoring endpoints: a job vertex and its subtasks, back pressure, metrics (Flink's
//! metric lists and rflink's Prometheus exposition), TaskManager details, job and checkpoint
//! configuration, and the neutral answers Flink's web dashboard expects from endpoints rflink has
//! nothing behind (logs, thread dumps, accumulators, watermarks).
//!
//! Everything is derived from the job's details (which carry each subtask's metrics as of its
//! TaskExecutor's last heartbeat) and the TaskManagers' views; nothing here asks a TaskExecutor.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::messages::{ExceptionInfo, IoMetricsInfo, JobSummary, TaskManagerSummary};
use super::server::{job_id, resource, respond, shown_value, ApiError, State};
use crate::dispatcher::{JobDetails, JobOverview, SubtaskDetails, TaskManagerInfo};
use crate::executiongraph::{aggregate_state, now_millis, ExecutionState, JobStatus};
use crate::metrics::select;
use crate::metrics::task::names;
use crate::types::{JobId, JobVertexId};
use actix_web::http::StatusCode;

/// Registers the endpoints (inside the REST API's routes, so also under `/v1`).
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/metrics", "GET").route(web::get().to(prometheus)))
        .service(resource("/jobmanager/metrics", "GET").route(web::get().to(jobmanager_metrics)))
        .service(
            resource("/jobmanager/environment", "GET").route(web::get().to(jobmanager_environment)),
        )
        .service(resource("/jobmanager/logs", "GET").route(web::get().to(no_logs)))
        .service(resource("/jobmanager/thread-dump", "GET").route(web::get().to(no_thread_dump)))
        .service(
            resource("/applications/overview", "GET").route(web::get().to(applications_overview)),
        )
        // After `/applications/overview`, which would take "overview" for an application id.
        .service(resource("/applications/{applicationid}", "GET").route(web::get().to(application)))
        .service(
            resource("/applications/{applicationid}/exceptions", "GET")
                .route(web::get().to(application_exceptions)),
        )
        .service(resource("/jobs/{jobid}/config", "GET").route(web::get().to(job_config)))
        .service(
            resource("/jobs/{jobid}/checkpoints/config", "GET")
                .route(web::get().to(checkpoint_config)),
        )
        .service(
            resource("/jobs/{jobid}/checkpoints/details/{checkpointid}", "GET")
                .route(web::get().to(checkpoint_details)),
        )
        .service(
            resource("/jobs/{jobid}/jobmanager/config", "GET")
                .route(web::get().to(job_jobmanager_config)),
        )
        .service(
            resource("/jobs/{jobid}/jobmanager/environment", "GET")
                .route(web::get().to(jobmanager_environment)),
        )
        .service(resource("/jobs/{jobid}/vertices/{vertexid}", "GET").route(web::get().to(vertex)))
        .service(
            resource("/jobs/{jobid}/vertices/{vertexid}/subtasktimes", "GET")
                .route(web::get().to(subtask_times_handler)),
        )
        .service(
            resource("/jobs/{jobid}/vertices/{vertexid}/taskmanagers", "GET")
                .route(web::get().to(vertex_taskmanagers)),
        )
        .service(
            resource("/jobs/{jobid}/vertices/{vertexid}/backpressure", "GET")
                .route(web::get().to(backpressure)),
        )
        .service(
            resource("/jobs/{jobid}/vertices/{vertexid}/metrics", "GET")
                .route(web::get().to(vertex_metrics)),
        )
        .service(
            resource("/jobs/{jobid}/vertices/{vertexid}/subtasks/metrics", "GET")
                .route(web::get().to(aggregated_subtask_metrics)),
        )
        .service(
            resource("/jobs/{jobid}/vertices/{vertexid}/watermarks", "GET")
                .route(web::get().to(watermarks)),
        )
        .service(
            resource("/jobs/{jobid}/vertices/{vertexid}/accumulators", "GET")
                .route(web::get().to(accumulators)),
        )
        .service(
            resource(
                "/jobs/{jobid}/vertices/{vertexid}/subtasks/accumulators",
                "GET",
            )
            .route(web::get().to(subtask_accumulators)),
        )
        .service(resource("/taskmanagers/{taskmanagerid}", "GET").route(web::get().to(taskmanager)))
        .service(
            resource("/taskmanagers/{taskmanagerid}/metrics", "GET")
                .route(web::get().to(taskmanager_metrics)),
        )
        .service(
            resource("/taskmanagers/{taskmanagerid}/logs", "GET").route(web::get().to(no_logs)),
        );
}

// ---- response bodies (Flink's field names) ----

/// Percentiles and totals of one value over subtasks. Flink: `AggregatedMetric` in
/// `AggregatedTaskDetailsInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Aggregate {
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub sum: f64,
    pub median: f64,
    pub p25: f64,
    pub p75: f64,
    pub p95: f64,
}

impl Aggregate {
    /// Over `values` (all zeros when empty).
    pub fn of(mut values: Vec<f64>) -> Aggregate {
        if values.is_empty() {
            return Aggregate::default();
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let at = |q: f64| {
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            values[i]
        };
        let sum: f64 = values.iter().sum();
        Aggregate {
            min: values[0],
            max: values[n - 1],
            avg: sum / n as f64,
            sum,
            median: at(0.5),
            p25: at(0.25),
            p75: at(0.75),
            p95: at(0.95),
        }
    }
}

/// Aggregates over a vertex's subtasks (or those on one TaskManager).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AggregatedDetails {
    /// Per I/O metric (`read-records`, ...).
    pub metrics: BTreeMap<String, Aggregate>,
    /// Per execution state, the time spent in it.
    #[serde(rename = "status-duration")]
    pub status_duration: BTreeMap<String, Aggregate>,
}

/// One subtask of `/jobs/{id}/vertices/{vid}`. Flink: `SubtaskExecutionAttemptDetailsInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskAttemptInfo {
    /// Its index.
    pub subtask: u32,
    /// Its current attempt's state.
    pub status: ExecutionState,
    /// The attempt number.
    pub attempt: u32,
    /// Where it runs (`host:port` of its TaskExecutor), `(unassigned)` without a slot.
    pub endpoint: String,
    /// When it was deployed, or -1.
    #[serde(rename = "start-time")]
    pub start_time: i64,
    /// When it ended, or -1.
    #[serde(rename = "end-time")]
    pub end_time: i64,
    /// Millis from start to end (or now), or -1.
    pub duration: i64,
    /// Its I/O metrics.
    pub metrics: IoMetricsInfo,
    /// Its TaskExecutor's resource id, or `(unassigned)`.
    #[serde(rename = "taskmanager-id")]
    pub taskmanager_id: String,
    /// Millis spent in each state reached.
    #[serde(rename = "status-duration")]
    pub status_duration: BTreeMap<String, i64>,
    /// Flink sends the start time twice (`start-time` and `start_time`).
    #[serde(rename = "start_time")]
    pub start_time_legacy: i64,
}

/// `/jobs/{id}/vertices/{vid}`. Flink: `JobVertexDetailsInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertexDetailsInfo {
    /// The vertex id, 32 hex characters.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its parallelism.
    pub parallelism: u32,
    /// Its max parallelism.
    #[serde(rename = "maxParallelism")]
    pub max_parallelism: u32,
    /// When the view was taken.
    pub now: i64,
    /// Its subtasks.
    pub subtasks: Vec<SubtaskAttemptInfo>,
    /// Aggregates over them.
    pub aggregated: AggregatedDetails,
}

/// `/jobs/{id}/vertices/{vid}/backpressure`. Flink: `JobVertexBackPressureInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackPressureInfo {
    /// `ok` (Flink's `VertexBackPressureStatus.OK`).
    pub status: String,
    /// The highest level of its subtasks: `ok`, `low` or `high`.
    #[serde(rename = "backpressure-level")]
    pub backpressure_level: String,
    /// When the ratios were taken (millis).
    #[serde(rename = "end-timestamp")]
    pub end_timestamp: i64,
    /// Per subtask.
    pub subtasks: Vec<SubtaskBackPressureInfo>,
}

/// One subtask's back pressure. Flink: `SubtaskBackPressureInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskBackPressureInfo {
    /// Its index.
    pub subtask: u32,
    /// Its attempt.
    #[serde(rename = "attempt-number")]
    pub attempt_number: u32,
    /// `ok` (ratio ≤ 0.1), `low` (≤ 0.5) or `high`.
    #[serde(rename = "backpressure-level")]
    pub backpressure_level: String,
    /// Fraction of the last second blocked on output buffers.
    pub ratio: f64,
    /// Fraction of it waiting for input.
    #[serde(rename = "idleRatio")]
    pub idle_ratio: f64,
    /// Fraction of it working.
    #[serde(rename = "busyRatio")]
    pub busy_ratio: f64,
}

/// Flink's level for a back-pressure ratio (`JobVertexBackPressureHandler`).
pub fn backpressure_level(ratio: f64) -> &'static str {
    if ratio <= 0.10 {
        "ok"
    } else if ratio <= 0.5 {
        "low"
    } else {
        "high"
    }
}

fn level_rank(level: &str) -> u8 {
    match level {
        "high" => 2,
        "low" => 1,
        _ => 0,
    }
}

// ---- helpers ----

fn vertex_id(req: &HttpRequest) -> Result<JobVertexId, ApiError> {
    let raw = req.match_info().get("vertexid").unwrap_or_default();
    raw.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "Invalid vertex id '{raw}': {e} (a vertex id is 32 hex characters)"
        ))
    })
}

async fn details(state: &State, req: &HttpRequest) -> Result<JobDetails, ApiError> {
    let id = job_id(req)?;
    state.call("job details", |g| g.job_details(id)).await
}

async fn vertex_of(state: &State, req: &HttpRequest) -> Result<(JobDetails, usize), ApiError> {
    let vid = vertex_id(req)?;
    let details = details(state, req).await?;
    let index = details
        .vertices
        .iter()
        .position(|v| v.id == vid)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "JobVertex {vid} not found in job {}.",
                details.overview.job_id
            ))
        })?;
    Ok((details, index))
}

/// `host:port` of an RPC address (`scheme://host:port/endpoint`).
fn endpoint_of(s: &SubtaskDetails) -> String {
    match &s.address {
        None => "(unassigned)".into(),
        Some(address) => {
            let rest = address
                .split_once("://")
                .map_or(address.as_str(), |(_, r)| r);
            rest.split('/').next().unwrap_or(rest).to_string()
        }
    }
}

fn subtask_times(s: &SubtaskDetails, now: i64) -> (i64, i64, i64) {
    let start = s
        .timestamps
        .get(ExecutionState::Deploying.as_str())
        .copied()
        .unwrap_or(-1);
    let end = if s.state.is_terminal() {
        s.timestamps.get(s.state.as_str()).copied().unwrap_or(-1)
    } else {
        -1
    };
    let duration = match (start, end) {
        (-1, _) => -1,
        (s, -1) => now - s,
        (s, e) => e - s,
    };
    (start, end, duration)
}

/// Millis spent in each state reached: until the next state, the current one until now.
fn status_durations(s: &SubtaskDetails, now: i64) -> BTreeMap<String, i64> {
    let mut reached: Vec<(&String, i64)> = s.timestamps.iter().map(|(k, v)| (k, *v)).collect();
    reached.sort_by_key(|(_, t)| *t);
    let mut out = BTreeMap::new();
    for (i, (state, at)) in reached.iter().enumerate() {
        let until = match reached.get(i + 1) {
            Some((_, next)) => *next,
            None if s.state.is_terminal() => *at,
            None => now,
        };
        out.insert((*state).clone(), (until - at).max(0));
    }
    out
}

fn io_aggregates(subtasks: &[&SubtaskDetails]) -> BTreeMap<String, Aggregate> {
    let infos: Vec<IoMetricsInfo> = subtasks
        .iter()
        .map(|s| IoMetricsInfo::of_subtask(s))
        .collect();
    let mut out = BTreeMap::new();
    let mut put = |name: &str, f: fn(&IoMetricsInfo) -> f64| {
        out.insert(
            name.to_string(),
            Aggregate::of(infos.iter().map(f).collect()),
        );
    };
    put("read-bytes", |m| m.read_bytes as f64);
    put("write-bytes", |m| m.write_bytes as f64);
    put("read-records", |m| m.read_records as f64);
    put("write-records", |m| m.write_records as f64);
    put("accumulated-backpressured-time", |m| {
        m.accumulated_backpressured_time as f64
    });
    put("accumulated-idle-time", |m| m.accumulated_idle_time as f64);
    put("accumulated-busy-time", |m| m.accumulated_busy_time);
    out
}

fn aggregated(subtasks: &[&SubtaskDetails], now: i64) -> AggregatedDetails {
    let mut durations: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in subtasks {
        for (state, ms) in status_durations(s, now) {
            durations.entry(state).or_default().push(ms as f64);
        }
    }
    AggregatedDetails {
        metrics: io_aggregates(subtasks),
        status_duration: durations
            .into_iter()
            .map(|(k, v)| (k, Aggregate::of(v)))
            .collect(),
    }
}

fn subtask_info(s: &SubtaskDetails, now: i64) -> SubtaskAttemptInfo {
    let (start, end, duration) = subtask_times(s, now);
    SubtaskAttemptInfo {
        subtask: s.subtask,
        status: s.state,
        attempt: s.attempt,
        endpoint: endpoint_of(s),
        start_time: start,
        end_time: end,
        duration,
        metrics: IoMetricsInfo::of_subtask(s),
        taskmanager_id: s
            .resource_id
            .map_or_else(|| "(unassigned)".into(), |r| r.to_string()),
        status_duration: status_durations(s, now),
        start_time_legacy: start,
    }
}

fn query(req: &HttpRequest, key: &str) -> Option<String> {
    web::Query::<BTreeMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|m| m.get(key).cloned())
}

// ---- handlers ----

async fn prometheus(state: State) -> HttpResponse {
    match &state.metrics {
        Some((registry, _)) => crate::metrics::server::prometheus_response(registry),
        None => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("this server has no metrics\n"),
    }
}

async fn jobmanager_metrics(req: HttpRequest, state: State) -> HttpResponse {
    let dump = state
        .metrics
        .as_ref()
        .map(|(_, group)| group.dump())
        .unwrap_or_default();
    let get = query(&req, "get");
    respond(&req, StatusCode::OK, Ok(select(&dump, get.as_deref())))
}

/// `/jobmanager/environment`. Flink: `EnvironmentInfo` (JVM facts; rflink's process instead).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EnvironmentInfo {
    jvm: JvmInfo,
    classpath: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JvmInfo {
    version: String,
    arch: String,
    options: Vec<String>,
}

async fn jobmanager_environment(req: HttpRequest) -> HttpResponse {
    let body = EnvironmentInfo {
        jvm: JvmInfo {
            version: format!("rflink {} (no JVM)", env!("CARGO_PKG_VERSION")),
            arch: std::env::consts::ARCH.to_string(),
            options: Vec::new(),
        },
        classpath: Vec::new(),
    };
    respond(&req, StatusCode::OK, Ok(body))
}

async fn no_logs(req: HttpRequest) -> HttpResponse {
    // rflink logs to stderr (or the container's log); there are no log files to list.
    respond(&req, StatusCode::OK, Ok(serde_json::json!({ "logs": [] })))
}

async fn no_thread_dump(req: HttpRequest) -> HttpResponse {
    respond(
        &req,
        StatusCode::OK,
        Ok(serde_json::json!({ "threadInfos": [] })),
    )
}

async fn applications_overview(req: HttpRequest, state: State) -> HttpResponse {
    // Flink 2.x groups jobs into applications; an rflink job is its own application.
    let result = state
        .call("job overviews", |g| g.job_overviews())
        .await
        .map(|jobs| {
            let applications: Vec<serde_json::Value> = jobs
                .iter()
                .map(|j| {
                    serde_json::json!({
                        "id": j.job_id.to_string(),
                        "name": j.name,
                        "start-time": j.start_time,
                        "end-time": j.end_time,
                        "duration": j.duration,
                        "status": application_status(j.state),
                        "jobs": { j.state.as_str(): 1 },
                    })
                })
                .collect();
            serde_json::json!({ "applications": applications })
        });
    respond(&req, StatusCode::OK, result)
}

/// The application `{applicationid}` names: its job (an rflink job is its own application, with
/// the job's id), as `/jobs/overview` shows it; 400 for an id that is not 32 hex characters, 404
/// for an unknown one.
async fn application_job(req: &HttpRequest, state: &State) -> Result<JobOverview, ApiError> {
    let raw = req.match_info().get("applicationid").unwrap_or_default();
    let id: JobId = raw.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "Bad request, could not parse parameters: cannot parse path parameter \
             applicationid: {e}"
        ))
    })?;
    let jobs = state.call("job overviews", |g| g.job_overviews()).await?;
    jobs.into_iter()
        .find(|j| j.job_id == id)
        .ok_or_else(|| ApiError::not_found(format!("Application {id} not found.")))
}

/// `GET /applications/{id}`. Flink: `ApplicationDetailsInfo` (what the web UI's application
/// page and its "Return to Application" link read): the application's status and times, the
/// time each application status was reached (0 for those it did not reach), and its jobs as
/// `/jobs/overview` lists them.
async fn application(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let job = application_job(&req, &state).await?;
        let status = application_status(job.state);
        let terminal = job.state.is_terminal();
        let timestamps: BTreeMap<&str, i64> = [
            "CREATED",
            "RUNNING",
            "FAILING",
            "FAILED",
            "CANCELING",
            "CANCELED",
            "FINISHED",
        ]
        .into_iter()
        .map(|s| {
            let at = match s {
                // Submitted is created; it runs from then on (no separate program phase).
                "CREATED" => job.start_time,
                "RUNNING" if status != "CREATED" => job.start_time,
                _ if terminal && s == status => job.end_time,
                _ => 0,
            };
            (s, at)
        })
        .collect();
        Ok(serde_json::json!({
            "id": job.job_id.to_string(),
            "name": job.name,
            "status": status,
            "start-time": job.start_time,
            "end-time": job.end_time,
            "duration": job.duration,
            "timestamps": timestamps,
            "jobs": [JobSummary::from_view(&job)],
        }))
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

/// `GET /applications/{id}/exceptions`. Flink: `ApplicationExceptionsInfoWithHistory`: the
/// failures of the application itself (its program, run by the client in rflink) and of its
/// jobs; here the job's failure, if it failed.
async fn application_exceptions(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let job = application_job(&req, &state).await?;
        let mut entries = Vec::new();
        if job.state == JobStatus::Failed {
            let id = job.job_id;
            let exceptions = state
                .call("job exceptions", move |g| g.job_exceptions(id))
                .await?;
            if let Some(root) = exceptions.root {
                let info = ExceptionInfo::from_view(&root);
                entries.push(serde_json::json!({
                    "exceptionName": info.exception_name,
                    "stacktrace": info.stacktrace,
                    "timestamp": info.timestamp,
                    "jobId": id.to_string(),
                }));
            }
        }
        Ok(serde_json::json!({ "exceptionHistory": { "entries": entries } }))
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

fn application_status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Finished => "FINISHED",
        JobStatus::Canceled => "CANCELED",
        JobStatus::Failed => "FAILED",
        JobStatus::Created | JobStatus::Initializing => "CREATED",
        _ => "RUNNING",
    }
}

async fn job_config(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let d = details(&state, &req).await?;
        let parallelism = d.vertices.iter().map(|v| v.parallelism).max().unwrap_or(1);
        let restart = d
            .job_config
            .get("restart-strategy.type")
            .cloned()
            .unwrap_or_else(|| "Cluster level default restart strategy".into());
        Ok(serde_json::json!({
            "jid": d.overview.job_id.to_string(),
            "name": d.overview.name,
            "execution-config": {
                "restart-strategy": restart,
                "job-parallelism": parallelism,
                "object-reuse-mode": false,
                // A job's own configuration may carry a secret (`-D rest.auth.token=..`).
                "user-config": d
                    .job_config
                    .iter()
                    .map(|(key, value)| (key.clone(), shown_value(key, value.clone())))
                    .collect::<BTreeMap<String, String>>(),
            }
        }))
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn checkpoint_config(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let d = details(&state, &req).await?;
        d.checkpoint_config.ok_or_else(|| {
            ApiError::not_found(format!(
                "Checkpointing is not enabled for job {}.",
                d.overview.job_id
            ))
        })
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn checkpoint_details(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let id = job_id(&req)?;
        let raw = req.match_info().get("checkpointid").unwrap_or_default();
        let checkpoint: u64 = raw.parse().map_err(|_| {
            ApiError::bad_request(format!("Invalid checkpoint id '{raw}': not a number"))
        })?;
        let stats = state
            .call("checkpoint statistics", |g| g.checkpoint_stats(id))
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!("Checkpointing is not enabled for job {id}."))
            })?;
        let latest = &stats.latest;
        stats
            .history
            .iter()
            .chain(latest.completed.iter())
            .chain(latest.savepoint.iter())
            .chain(latest.failed.iter())
            .find(|c| checkpoint_id(c) == checkpoint)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "Could not find checkpointing statistics for checkpoint {checkpoint}."
                ))
            })
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

fn checkpoint_id(c: &crate::checkpoint::CheckpointStatistics) -> u64 {
    use crate::checkpoint::CheckpointStatistics::*;
    match c {
        InProgress { base } | Completed { base, .. } | Failed { base, .. } => base.id,
    }
}

async fn job_jobmanager_config(req: HttpRequest, state: State) -> HttpResponse {
    let result = details(&state, &req)
        .await
        .map(|_| state.config_entries.clone());
    respond(&req, StatusCode::OK, result)
}

async fn vertex(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let (d, i) = vertex_of(&state, &req).await?;
        let v = &d.vertices[i];
        let now = d.now;
        let subtasks: Vec<&SubtaskDetails> = v.subtasks.iter().collect();
        Ok(VertexDetailsInfo {
            id: v.id.to_string(),
            name: v.name.clone(),
            parallelism: v.parallelism,
            max_parallelism: v.max_parallelism,
            now,
            subtasks: v.subtasks.iter().map(|s| subtask_info(s, now)).collect(),
            aggregated: aggregated(&subtasks, now),
        })
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn subtask_times_handler(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let (d, i) = vertex_of(&state, &req).await?;
        let v = &d.vertices[i];
        let subtasks: Vec<serde_json::Value> = v
            .subtasks
            .iter()
            .map(|s| {
                let timestamps: BTreeMap<&str, i64> = ExecutionState::ALL
                    .iter()
                    .map(|st| {
                        (
                            st.as_str(),
                            s.timestamps.get(st.as_str()).copied().unwrap_or(0),
                        )
                    })
                    .collect();
                serde_json::json!({
                    "subtask": s.subtask,
                    "endpoint": endpoint_of(s),
                    "duration": subtask_times(s, d.now).2,
                    "timestamps": timestamps,
                })
            })
            .collect();
        Ok(serde_json::json!({
            "id": v.id.to_string(),
            "name": v.name,
            "now": d.now,
            "subtasks": subtasks,
        }))
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn vertex_taskmanagers(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let (d, i) = vertex_of(&state, &req).await?;
        let v = &d.vertices[i];
        let mut by_tm: BTreeMap<String, Vec<&SubtaskDetails>> = BTreeMap::new();
        for s in &v.subtasks {
            by_tm.entry(endpoint_of(s)).or_default().push(s);
        }
        let taskmanagers: Vec<serde_json::Value> = by_tm
            .into_iter()
            .map(|(endpoint, subtasks)| {
                let owned: Vec<SubtaskDetails> = subtasks.iter().map(|s| (*s).clone()).collect();
                let times: Vec<(i64, i64, i64)> =
                    subtasks.iter().map(|s| subtask_times(s, d.now)).collect();
                let start = times
                    .iter()
                    .map(|t| t.0)
                    .filter(|t| *t >= 0)
                    .min()
                    .unwrap_or(-1);
                let all_done = subtasks.iter().all(|s| s.state.is_terminal());
                let end = if all_done {
                    times.iter().map(|t| t.1).max().unwrap_or(-1)
                } else {
                    -1
                };
                let duration = match (start, end) {
                    (-1, _) => -1,
                    (s, -1) => d.now - s,
                    (s, e) => e - s,
                };
                let mut counts = super::messages::ExecutionStateCounts::default();
                for s in &subtasks {
                    *counts.slot(s.state) += 1;
                }
                serde_json::json!({
                    "endpoint": endpoint,
                    "status": aggregate_state(subtasks.iter().map(|s| s.state)),
                    "start-time": start,
                    "end-time": end,
                    "duration": duration,
                    "metrics": IoMetricsInfo::of_subtasks(&owned),
                    "status-counts": counts,
                    "taskmanager-id": subtasks
                        .first()
                        .and_then(|s| s.resource_id)
                        .map_or_else(|| "(unassigned)".to_string(), |r| r.to_string()),
                    "aggregated": aggregated(&subtasks, d.now),
                })
            })
            .collect();
        Ok(serde_json::json!({
            "id": v.id.to_string(),
            "name": v.name,
            "now": d.now,
            "taskmanagers": taskmanagers,
        }))
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn backpressure(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let (d, i) = vertex_of(&state, &req).await?;
        let v = &d.vertices[i];
        let ratio_of = |s: &SubtaskDetails, name: &str| {
            (s.metric(name).unwrap_or(0.0) / 1000.0).clamp(0.0, 1.0)
        };
        let subtasks: Vec<SubtaskBackPressureInfo> = v
            .subtasks
            .iter()
            .map(|s| {
                let ratio = ratio_of(s, names::BACKPRESSURED_PER_SECOND);
                SubtaskBackPressureInfo {
                    subtask: s.subtask,
                    attempt_number: s.attempt,
                    backpressure_level: backpressure_level(ratio).into(),
                    ratio,
                    idle_ratio: ratio_of(s, names::IDLE_PER_SECOND),
                    busy_ratio: ratio_of(s, names::BUSY_PER_SECOND),
                }
            })
            .collect();
        let level = subtasks
            .iter()
            .map(|s| s.backpressure_level.as_str())
            .max_by_key(|l| level_rank(l))
            .unwrap_or("ok")
            .to_string();
        Ok(BackPressureInfo {
            status: "ok".into(),
            backpressure_level: level,
            end_timestamp: d.now,
            subtasks,
        })
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn vertex_metrics(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let (d, i) = vertex_of(&state, &req).await?;
        // Flink names a subtask's metric `<subtask>.<name>`.
        let dump: Vec<(String, f64)> = d.vertices[i]
            .subtasks
            .iter()
            .flat_map(|s| {
                s.metrics
                    .iter()
                    .map(move |(name, v)| (format!("{}.{name}", s.subtask), *v))
            })
            .collect();
        let get = query(&req, "get");
        Ok(select(&dump, get.as_deref()))
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

/// One entry of `/jobs/{id}/vertices/{vid}/subtasks/metrics?get=..`. Flink:
/// `AggregatedMetric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregatedMetric {
    /// The metric.
    pub id: String,
    /// Its minimum over the subtasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Average.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg: Option<f64>,
    /// Sum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
    /// Skew: (max − avg) / max × 100, 0 when max is 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skew: Option<f64>,
}

async fn aggregated_subtask_metrics(req: HttpRequest, state: State) -> HttpResponse {
    let result = async {
        let (d, i) = vertex_of(&state, &req).await?;
        let subtasks = &d.vertices[i].subtasks;
        let wanted_subtasks: Option<Vec<u32>> = query(&req, "subtasks")
            .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect());
        let chosen: Vec<&SubtaskDetails> = subtasks
            .iter()
            .filter(|s| {
                wanted_subtasks
                    .as_ref()
                    .is_none_or(|w| w.contains(&s.subtask))
            })
            .collect();
        let Some(get) = query(&req, "get") else {
            let all: Vec<(String, f64)> = chosen
                .iter()
                .flat_map(|s| s.metrics.iter().cloned())
                .collect();
            return Ok(serde_json::to_value(select(&all, None)).unwrap_or_default());
        };
        let aggs: Vec<String> = query(&req, "agg")
            .map(|a| a.split(',').map(|x| x.trim().to_lowercase()).collect())
            .unwrap_or_else(|| {
                ["min", "max", "avg", "sum", "skew"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            });
        let want = |a: &str| aggs.iter().any(|x| x == a);
        let mut out = Vec::new();
        for name in get.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let values: Vec<f64> = chosen.iter().filter_map(|s| s.metric(name)).collect();
            if values.is_empty() {
                continue;
            }
            let a = Aggregate::of(values);
            let skew = if a.max > 0.0 {
                (a.max - a.avg) / a.max * 100.0
            } else {
                0.0
            };
            out.push(AggregatedMetric {
                id: name.to_string(),
                min: want("min").then_some(a.min),
                max: want("max").then_some(a.max),
                avg: want("avg").then_some(a.avg),
                sum: want("sum").then_some(a.sum),
                skew: want("skew").then_some(skew),
            });
        }
        Ok(serde_json::to_value(out).unwrap_or_default())
    }
    .await;
    respond(&req, StatusCode::OK, result)
}

async fn watermarks(req: HttpRequest, state: State) -> HttpResponse {
    // Flink's `JobVertexWatermarksHandler`: each subtask's input watermark as
    // `<subtask>.currentInputWatermark` (Long.MIN_VALUE: none yet); subtasks that reported
    // none are left out.
    let result = vertex_of(&state, &req).await.map(|(d, i)| {
        let dump: Vec<(String, f64)> = d.vertices[i]
            .subtasks
            .iter()
            .filter_map(|s| {
                s.metric(names::CURRENT_INPUT_WATERMARK).map(|v| {
                    (
                        format!("{}.{}", s.subtask, names::CURRENT_INPUT_WATERMARK),
                        v,
                    )
                })
            })
            .collect();
        let ids: Vec<String> = dump.iter().map(|(n, _)| n.clone()).collect();
        select(&dump, Some(&ids.join(",")))
    });
    respond(&req, StatusCode::OK, result)
}

async fn accumulators(req: HttpRequest, state: State) -> HttpResponse {
    let result = vertex_of(&state, &req).await.map(|(d, i)| {
        serde_json::json!({
            "id": d.vertices[i].id.to_string(),
            "user-accumulators": [],
        })
    });
    respond(&req, StatusCode::OK, result)
}

/// `GET /jobs/{id}/vertices/{vid}/subtasks/accumulators`. Flink: `SubtasksAllAccumulatorsInfo`;
/// each subtask's current attempt and where it runs, with no accumulators (rflink has none).
/// Flink's web UI reads it together with the vertex's `accumulators` for its Accumulators tab.
async fn subtask_accumulators(req: HttpRequest, state: State) -> HttpResponse {
    let result = vertex_of(&state, &req).await.map(|(d, i)| {
        let v = &d.vertices[i];
        let subtasks: Vec<serde_json::Value> = v
            .subtasks
            .iter()
            .map(|s| {
                serde_json::json!({
                    "subtask": s.subtask,
                    "attempt": s.attempt,
                    "host": endpoint_of(s),
                    "user-accumulators": [],
                })
            })
            .collect();
        serde_json::json!({
            "id": v.id.to_string(),
            "parallelism": v.parallelism,
            "subtasks": subtasks,
        })
    });
    respond(&req, StatusCode::OK, result)
}

async fn find_taskmanager(state: &State, req: &HttpRequest) -> Result<TaskManagerInfo, ApiError> {
    let raw = req
        .match_info()
        .get("taskmanagerid")
        .unwrap_or_default()
        .to_string();
    let tms = state.call("task managers", |g| g.task_managers()).await?;
    tms.into_iter()
        .find(|t| t.resource_id.to_string() == raw)
        .ok_or_else(|| ApiError::not_found(format!("Could not find TaskExecutor {raw}.")))
}

/// The `metrics` object of `/taskmanagers/{id}`. Flink: `TaskManagerMetricsInfo`. rflink has
/// no JVM heap or garbage collector: those fields are 0 and empty; the shuffle memory is real.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct TaskManagerMetricsInfo {
    pub heap_used: i64,
    pub heap_committed: i64,
    pub heap_max: i64,
    pub non_heap_used: i64,
    pub non_heap_committed: i64,
    pub non_heap_max: i64,
    pub direct_count: i64,
    pub direct_used: i64,
    pub direct_max: i64,
    pub mapped_count: i64,
    pub mapped_used: i64,
    pub mapped_max: i64,
    pub netty_shuffle_memory_segments_available: i64,
    pub netty_shuffle_memory_segments_used: i64,
    pub netty_shuffle_memory_segments_total: i64,
    pub netty_shuffle_memory_available: i64,
    pub netty_shuffle_memory_used: i64,
    pub netty_shuffle_memory_total: i64,
    pub garbage_collectors: Vec<serde_json::Value>,
}

/// `/taskmanagers/{id}`. Flink: `TaskManagerDetailsInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskManagerDetailsInfo {
    /// The fields of `/taskmanagers`.
    #[serde(flatten)]
    pub summary: TaskManagerSummary,
    /// Slots by job (rflink's view does not break them down: empty).
    pub allocated_slots: Vec<serde_json::Value>,
    /// Memory metrics.
    pub metrics: TaskManagerMetricsInfo,
}

async fn taskmanager(req: HttpRequest, state: State) -> HttpResponse {
    let result = find_taskmanager(&state, &req).await.map(|t| {
        let m = |name: &str| {
            t.metrics
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v as i64)
        };
        TaskManagerDetailsInfo {
            summary: TaskManagerSummary::from_view(&t, now_millis()),
            allocated_slots: Vec::new(),
            metrics: TaskManagerMetricsInfo {
                netty_shuffle_memory_segments_available: m(
                    "Status.Shuffle.Netty.AvailableMemorySegments",
                ),
                netty_shuffle_memory_segments_used: m("Status.Shuffle.Netty.UsedMemorySegments"),
                netty_shuffle_memory_segments_total: m("Status.Shuffle.Netty.TotalMemorySegments"),
                netty_shuffle_memory_available: m("Status.Shuffle.Netty.TotalMemory")
                    - m("Status.Shuffle.Netty.UsedMemory"),
                netty_shuffle_memory_used: m("Status.Shuffle.Netty.UsedMemory"),
                netty_shuffle_memory_total: m("Status.Shuffle.Netty.TotalMemory"),
                ..TaskManagerMetricsInfo::default()
            },
        }
    });
    respond(&req, StatusCode::OK, result)
}

async fn taskmanager_metrics(req: HttpRequest, state: State) -> HttpResponse {
    let result = find_taskmanager(&state, &req).await.map(|t| {
        let get = query(&req, "get");
        select(&t.metrics, get.as_deref())
    });
    respond(&req, StatusCode::OK, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_match_flinks_nearest_rank_percentiles() {
        let a = Aggregate::of(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!((a.min, a.max, a.sum, a.avg), (1.0, 4.0, 10.0, 2.5));
        assert_eq!((a.p25, a.median, a.p75, a.p95), (1.0, 2.0, 3.0, 4.0));
        assert_eq!(Aggregate::of(Vec::new()), Aggregate::default());
    }

    #[test]
    fn back_pressure_levels_follow_flinks_thresholds() {
        assert_eq!(backpressure_level(0.0), "ok");
        assert_eq!(backpressure_level(0.1), "ok");
        assert_eq!(backpressure_level(0.3), "low");
        assert_eq!(backpressure_level(0.5), "low");
        assert_eq!(backpressure_level(0.9), "high");
    }

    #[test]
    fn status_durations_run_until_the_next_state() {
        let s = SubtaskDetails {
            subtask: 0,
            attempt: 0,
            state: ExecutionState::Finished,
            resource_id: None,
            address: Some("rflink://h:1/taskexecutor_0".into()),
            timestamps: [
                ("CREATED", 10),
                ("DEPLOYING", 15),
                ("RUNNING", 20),
                ("FINISHED", 50),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            metrics: vec![],
        };
        let d = status_durations(&s, 1000);
        assert_eq!(d.get("CREATED"), Some(&5));
        assert_eq!(d.get("RUNNING"), Some(&30));
        assert_eq!(d.get("FINISHED"), Some(&0));
        assert_eq!(endpoint_of(&s), "h:1");
        assert_eq!(subtask_times(&s, 1000), (15, 50, 35));
    }
}
