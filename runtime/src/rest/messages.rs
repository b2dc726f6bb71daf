//! The REST request and response bodies, spelled like Flink 2.3's JSON. Flink: the
//! `org.apache.flink.runtime.rest.messages` classes named on each type.
//!
//! The server serializes them from the gateway's views (the `from_view` constructors); the
//! [`RestClient`](super::client::RestClient) deserializes them. Ids are 32-hex-character strings
//! as in Flink. Fields Flink 2.3 sends but rflink has no data for are present with Flink's neutral
//! value (zeros, `false`, `-1`, empty objects), so clients that read them keep working; fields the
//! client may meet missing (from an older server) have `#[serde(default)]`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::dispatcher::{
    ClusterOverview, JobDetails, JobExceptions, JobOverview, JobResult, SubtaskDetails, TaskCounts,
    TaskManagerInfo, VertexDetails,
};
use crate::executiongraph::{ErrorInfo, ExecutionState, JobStatus};
use crate::jobgraph::JobGraph;
use crate::types::{JobId, JobVertexId};

/// Serializes an id with `Display` (32 hex characters) and parses it with `FromStr`.
mod hex_id {
    use super::*;
    use serde::de::Error as _;
    use serde::{Deserializer, Serializer};

    pub fn serialize<T: fmt::Display, S: Serializer>(id: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// Every error response. Flink: `ErrorResponseBody`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponseBody {
    /// The messages, most important first.
    pub errors: Vec<String>,
}

/// The body of the 202 answering a cancel: `{}`. Flink: `EmptyResponseBody`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyResponseBody {}

/// `GET /config`. Flink: `DashboardConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DashboardConfiguration {
    /// How often the dashboard polls, millis.
    pub refresh_interval: u64,
    /// The server's time zone (rflink always reports UTC).
    pub timezone_name: String,
    /// Its offset from UTC, millis.
    pub timezone_offset: i64,
    /// The Flink version.
    pub flink_version: String,
    /// The build revision.
    pub flink_revision: String,
    /// What the dashboard may offer.
    pub features: DashboardFeatures,
}

/// The dashboard's feature switches. Flink: `DashboardConfiguration.Features`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DashboardFeatures {
    /// Jar upload and run (rflink: no, jobs are compiled in).
    pub web_submit: bool,
    /// The cancel button.
    pub web_cancel: bool,
    /// Rescaling.
    pub web_rescale: bool,
    /// The history server.
    pub web_history: bool,
}

/// `GET /overview`. Flink: `ClusterOverviewWithVersion`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClusterOverviewWithVersion {
    /// Registered TaskManagers.
    pub taskmanagers: u32,
    /// Their slots.
    pub slots_total: u32,
    /// Free slots.
    pub slots_available: u32,
    /// Jobs not globally terminal.
    pub jobs_running: u32,
    /// Finished jobs.
    pub jobs_finished: u32,
    /// Canceled jobs.
    pub jobs_cancelled: u32,
    /// Failed jobs.
    pub jobs_failed: u32,
    /// The Flink version.
    pub flink_version: String,
    /// The build revision.
    pub flink_commit: String,
}

impl ClusterOverviewWithVersion {
    /// The body for a gateway overview.
    pub fn from_view(o: &ClusterOverview, version: &str, commit: &str) -> Self {
        ClusterOverviewWithVersion {
            taskmanagers: o.taskmanagers,
            slots_total: o.slots_total,
            slots_available: o.slots_available,
            jobs_running: o.jobs_running,
            jobs_finished: o.jobs_finished,
            jobs_cancelled: o.jobs_cancelled,
            jobs_failed: o.jobs_failed,
            flink_version: version.into(),
            flink_commit: commit.into(),
        }
    }
}

/// `GET /jobs`. Flink: `JobIdsWithStatusOverview`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobIdsWithStatusOverview {
    /// Every job.
    pub jobs: Vec<JobIdWithStatus>,
}

/// One job of `GET /jobs`. Flink: `JobIdWithStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobIdWithStatus {
    /// The job.
    #[serde(with = "hex_id")]
    pub id: JobId,
    /// Its status.
    pub status: JobStatus,
}

/// Tasks per state with Flink's lower-case names, as in `/jobs/overview`. Flink: the `tasks`
/// object of `JobDetails`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // One field per execution state, plus the total.
pub struct TaskStateCounts {
    pub running: u32,
    pub canceling: u32,
    pub canceled: u32,
    pub total: u32,
    pub created: u32,
    pub scheduled: u32,
    pub deploying: u32,
    pub reconciling: u32,
    pub finished: u32,
    pub initializing: u32,
    pub failed: u32,
}

impl TaskStateCounts {
    /// The counts of a gateway view: the same counts as [`ExecutionStateCounts`], spelled in
    /// lower case, with the total.
    pub fn from_view(t: &TaskCounts) -> Self {
        let c = ExecutionStateCounts::from_view(t);
        TaskStateCounts {
            running: c.running,
            canceling: c.canceling,
            canceled: c.canceled,
            total: t.total,
            created: c.created,
            scheduled: c.scheduled,
            deploying: c.deploying,
            reconciling: c.reconciling,
            finished: c.finished,
            initializing: c.initializing,
            failed: c.failed,
        }
    }
}

/// Tasks per state with Flink's upper-case names, as in `/jobs/{id}` (`tasks`, `status-counts`).
/// Flink: the `Map<ExecutionState, Integer>` of `JobDetailsInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)] // One field per execution state.
pub struct ExecutionStateCounts {
    pub created: u32,
    pub failed: u32,
    pub finished: u32,
    pub canceling: u32,
    pub initializing: u32,
    pub running: u32,
    pub canceled: u32,
    pub deploying: u32,
    pub scheduled: u32,
    pub reconciling: u32,
}

impl ExecutionStateCounts {
    /// The count for one state.
    pub fn get(&self, state: ExecutionState) -> u32 {
        use ExecutionState::*;
        match state {
            Created => self.created,
            Scheduled => self.scheduled,
            Deploying => self.deploying,
            Initializing => self.initializing,
            Running => self.running,
            Finished => self.finished,
            Canceling => self.canceling,
            Canceled => self.canceled,
            Failed => self.failed,
            Reconciling => self.reconciling,
        }
    }

    pub(crate) fn slot(&mut self, state: ExecutionState) -> &mut u32 {
        use ExecutionState::*;
        match state {
            Created => &mut self.created,
            Scheduled => &mut self.scheduled,
            Deploying => &mut self.deploying,
            Initializing => &mut self.initializing,
            Running => &mut self.running,
            Finished => &mut self.finished,
            Canceling => &mut self.canceling,
            Canceled => &mut self.canceled,
            Failed => &mut self.failed,
            Reconciling => &mut self.reconciling,
        }
    }

    /// The counts of a gateway view.
    pub fn from_view(t: &TaskCounts) -> Self {
        let mut c = ExecutionStateCounts::default();
        for s in ExecutionState::ALL {
            *c.slot(s) = t.get(s);
        }
        c
    }

    /// Adds another set of counts.
    pub fn add(&mut self, other: &ExecutionStateCounts) {
        for s in ExecutionState::ALL {
            *self.slot(s) += other.get(s);
        }
    }

    /// All tasks.
    pub fn total(&self) -> u32 {
        ExecutionState::ALL.iter().map(|s| self.get(*s)).sum()
    }
}

/// `GET /jobs/overview`. Flink: `MultipleJobsDetails`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipleJobsDetails {
    /// Every job.
    pub jobs: Vec<JobSummary>,
}

/// One job of `/jobs/overview`. Flink: `messages.webmonitor.JobDetails`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job.
    #[serde(with = "hex_id")]
    pub jid: JobId,
    /// Its name.
    pub name: String,
    /// `STREAMING` (rflink runs every job as a streaming job).
    #[serde(rename = "jobType", default = "streaming")]
    pub job_type: String,
    /// `Default` (rflink's eager scheduler takes the place of Flink's default scheduler).
    #[serde(rename = "schedulerType", default = "default_scheduler")]
    pub scheduler_type: String,
    /// Submission time, millis.
    #[serde(rename = "start-time")]
    pub start_time: i64,
    /// Time it became terminal, or -1.
    #[serde(rename = "end-time")]
    pub end_time: i64,
    /// Millis from start to end or to now.
    pub duration: i64,
    /// Its status.
    pub state: JobStatus,
    /// Last status change, millis.
    #[serde(rename = "last-modification")]
    pub last_modification: i64,
    /// Its tasks per state.
    pub tasks: TaskStateCounts,
    /// Operators not yet running (Flink's adaptive batch scheduler); always 0.
    #[serde(rename = "pending-operators", default)]
    pub pending_operators: u32,
}

fn streaming() -> String {
    "STREAMING".into()
}

fn default_scheduler() -> String {
    "Default".into()
}

impl JobSummary {
    /// The summary of a gateway view.
    pub fn from_view(o: &JobOverview) -> Self {
        JobSummary {
            jid: o.job_id,
            name: o.name.clone(),
            job_type: streaming(),
            scheduler_type: default_scheduler(),
            start_time: o.start_time,
            end_time: o.end_time,
            duration: o.duration,
            state: o.state,
            last_modification: o.last_modification,
            tasks: TaskStateCounts::from_view(&o.tasks),
            pending_operators: 0,
        }
    }
}

/// When a job entered each status (millis, 0 if never). Flink: the `timestamps` object of
/// `JobDetailsInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)] // One field per job status.
pub struct JobStatusTimestamps {
    pub running: i64,
    pub suspended: i64,
    pub failing: i64,
    pub finished: i64,
    pub failed: i64,
    pub cancelling: i64,
    pub restarting: i64,
    pub created: i64,
    pub initializing: i64,
    pub reconciling: i64,
    pub canceled: i64,
}

impl JobStatusTimestamps {
    /// The time the job entered `status`, or 0.
    pub fn get(&self, status: JobStatus) -> i64 {
        use JobStatus::*;
        match status {
            Initializing => self.initializing,
            Created => self.created,
            Running => self.running,
            Failing => self.failing,
            Failed => self.failed,
            Cancelling => self.cancelling,
            Canceled => self.canceled,
            Finished => self.finished,
            Restarting => self.restarting,
            Suspended => self.suspended,
            Reconciling => self.reconciling,
        }
    }

    fn slot(&mut self, status: JobStatus) -> &mut i64 {
        use JobStatus::*;
        match status {
            Initializing => &mut self.initializing,
            Created => &mut self.created,
            Running => &mut self.running,
            Failing => &mut self.failing,
            Failed => &mut self.failed,
            Cancelling => &mut self.cancelling,
            Canceled => &mut self.canceled,
            Finished => &mut self.finished,
            Restarting => &mut self.restarting,
            Suspended => &mut self.suspended,
            Reconciling => &mut self.reconciling,
        }
    }

    /// The timestamps of a gateway view (keyed by Flink's status names).
    pub fn from_view(timestamps: &BTreeMap<String, i64>) -> Self {
        let mut t = JobStatusTimestamps::default();
        for s in JobStatus::ALL {
            *t.slot(s) = timestamps.get(s.as_str()).copied().unwrap_or(0);
        }
        t
    }
}

/// A vertex's or subtask's I/O metrics. Flink: `IOMetricsInfo`. Filled from the tasks'
/// metrics as of their TaskExecutors' last heartbeats (or their final states); `*-complete` is
/// true once every subtask reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)] // Flink's metric names.
pub struct IoMetricsInfo {
    pub read_bytes: i64,
    pub read_bytes_complete: bool,
    pub write_bytes: i64,
    pub write_bytes_complete: bool,
    pub read_records: i64,
    pub read_records_complete: bool,
    pub write_records: i64,
    pub write_records_complete: bool,
    pub accumulated_backpressured_time: i64,
    pub accumulated_idle_time: i64,
    pub accumulated_busy_time: f64,
}

impl IoMetricsInfo {
    /// The metrics of one subtask.
    pub fn of_subtask(s: &SubtaskDetails) -> Self {
        Self::of_subtasks(std::slice::from_ref(s))
    }

    /// The sums over subtasks (Flink sums a vertex's subtasks the same way).
    pub fn of_subtasks(subtasks: &[SubtaskDetails]) -> Self {
        use crate::metrics::task::names::*;
        let sum = |name: &str| -> f64 { subtasks.iter().filter_map(|s| s.metric(name)).sum() };
        let complete = subtasks.iter().all(|s| !s.metrics.is_empty());
        IoMetricsInfo {
            read_bytes: sum(NUM_BYTES_IN) as i64,
            read_bytes_complete: complete,
            write_bytes: sum(NUM_BYTES_OUT) as i64,
            write_bytes_complete: complete,
            read_records: sum(NUM_RECORDS_IN) as i64,
            read_records_complete: complete,
            write_records: sum(NUM_RECORDS_OUT) as i64,
            write_records_complete: complete,
            accumulated_backpressured_time: sum(ACCUMULATED_BACKPRESSURED) as i64,
            accumulated_idle_time: sum(ACCUMULATED_IDLE) as i64,
            accumulated_busy_time: sum(ACCUMULATED_BUSY).round(),
        }
    }
}

/// A vertex of `/jobs/{id}`. Flink: `JobDetailsInfo.JobVertexDetailsInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobVertexDetailsInfo {
    /// The vertex.
    #[serde(with = "hex_id")]
    pub id: JobVertexId,
    /// Its slot sharing group. rflink gives every subtask its own slot, so each vertex is its own
    /// group: the vertex id.
    #[serde(rename = "slotSharingGroupId", default)]
    pub slot_sharing_group_id: String,
    /// Its name.
    pub name: String,
    /// Its max parallelism.
    #[serde(rename = "maxParallelism")]
    pub max_parallelism: u32,
    /// Its parallelism.
    pub parallelism: u32,
    /// The aggregate state of its subtasks.
    pub status: ExecutionState,
    /// Earliest subtask start, or -1.
    #[serde(rename = "start-time")]
    pub start_time: i64,
    /// Latest subtask end, or -1.
    #[serde(rename = "end-time")]
    pub end_time: i64,
    /// Millis.
    pub duration: i64,
    /// Subtasks per state.
    pub tasks: ExecutionStateCounts,
    /// I/O metrics.
    pub metrics: IoMetricsInfo,
}

impl JobVertexDetailsInfo {
    /// The body of a gateway vertex view.
    pub fn from_view(v: &VertexDetails) -> Self {
        JobVertexDetailsInfo {
            id: v.id,
            slot_sharing_group_id: v.id.to_string(),
            name: v.name.clone(),
            max_parallelism: v.max_parallelism,
            parallelism: v.parallelism,
            status: v.status,
            start_time: v.start_time,
            end_time: v.end_time,
            duration: v.duration,
            tasks: ExecutionStateCounts::from_view(&v.tasks),
            metrics: IoMetricsInfo::of_subtasks(&v.subtasks),
        }
    }
}

/// A job's plan. Flink: `JobPlanInfo.RawJson` (the JSON plan generator's output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPlan {
    /// The job.
    #[serde(with = "hex_id")]
    pub jid: JobId,
    /// Its name.
    pub name: String,
    /// `STREAMING`.
    #[serde(rename = "type")]
    pub job_type: String,
    /// One node per vertex.
    pub nodes: Vec<PlanNode>,
}

/// A node of a job plan. Flink: a node of `JsonPlanGenerator`'s output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanNode {
    /// The vertex.
    #[serde(with = "hex_id")]
    pub id: JobVertexId,
    /// The operator (empty in Flink's streaming plans too).
    #[serde(default)]
    pub operator: String,
    /// Parallelism.
    pub parallelism: u32,
    /// Operator strategy (empty).
    #[serde(default)]
    pub operator_strategy: String,
    /// The vertex's name.
    pub description: String,
    /// Empty.
    #[serde(default)]
    pub optimizer_properties: BTreeMap<String, String>,
    /// The node's inputs; absent for sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<PlanInput>,
}

/// An input of a plan node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInput {
    /// The producing vertex.
    #[serde(with = "hex_id")]
    pub id: JobVertexId,
    /// The input's index.
    pub num: u32,
    /// E.g. `pipelined_bounded`.
    pub exchange: String,
    /// E.g. `HASH`, `FORWARD`.
    pub ship_strategy: String,
}

impl JobPlan {
    /// The plan of a gateway view: one node per vertex, sinks first as Flink lists them.
    pub fn from_view(d: &JobDetails) -> Self {
        JobPlan {
            jid: d.overview.job_id,
            name: d.overview.name.clone(),
            job_type: streaming(),
            nodes: d
                .vertices
                .iter()
                .rev()
                .map(|v| PlanNode {
                    id: v.id,
                    operator: String::new(),
                    parallelism: v.parallelism,
                    operator_strategy: String::new(),
                    description: v.name.clone(),
                    optimizer_properties: BTreeMap::new(),
                    inputs: v
                        .inputs
                        .iter()
                        .enumerate()
                        .map(|(num, (source, strategy))| PlanInput {
                            id: *source,
                            num: num as u32,
                            exchange: "pipelined_bounded".into(),
                            ship_strategy: strategy.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// `GET /jobs/{id}/plan`. Flink: `JobPlanInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPlanInfo {
    /// The plan.
    pub plan: JobPlan,
}

/// `GET /jobs/{id}`. Flink: `JobDetailsInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetailsInfo {
    /// The job.
    #[serde(with = "hex_id")]
    pub jid: JobId,
    /// Flink 2.3's application id; rflink runs every job as its own application: the job id.
    #[serde(rename = "application-id", default)]
    pub application_id: String,
    /// Its name.
    pub name: String,
    /// Whether it can be stopped with a savepoint (no).
    #[serde(rename = "isStoppable")]
    pub is_stoppable: bool,
    /// Its status.
    pub state: JobStatus,
    /// `STREAMING`.
    #[serde(rename = "job-type", default = "streaming")]
    pub job_type: String,
    /// `Default`.
    #[serde(rename = "schedulerType", default = "default_scheduler")]
    pub scheduler_type: String,
    /// Submission time, millis.
    #[serde(rename = "start-time")]
    pub start_time: i64,
    /// Time it became terminal, or -1.
    #[serde(rename = "end-time")]
    pub end_time: i64,
    /// Millis.
    pub duration: i64,
    /// The job's max parallelism (-1: per vertex, as Flink shows it).
    #[serde(rename = "maxParallelism")]
    pub max_parallelism: i64,
    /// When the view was taken, millis.
    pub now: i64,
    /// When it entered each status.
    pub timestamps: JobStatusTimestamps,
    /// Its vertices.
    pub vertices: Vec<JobVertexDetailsInfo>,
    /// Tasks per state over all vertices.
    #[serde(rename = "status-counts")]
    pub status_counts: ExecutionStateCounts,
    /// Its plan.
    pub plan: JobPlan,
    /// Always 0.
    #[serde(rename = "pending-operators", default)]
    pub pending_operators: u32,
}

impl JobDetailsInfo {
    /// The body of a gateway view.
    pub fn from_view(d: &JobDetails) -> Self {
        let o = &d.overview;
        // rflink's scheduler shares slots as Flink's default slot sharing group does (slot k
        // runs subtask k of every vertex): one group for the whole job, named by its id.
        let vertices: Vec<_> = d
            .vertices
            .iter()
            .map(|v| JobVertexDetailsInfo {
                slot_sharing_group_id: o.job_id.to_string(),
                ..JobVertexDetailsInfo::from_view(v)
            })
            .collect();
        let mut status_counts = ExecutionStateCounts::default();
        for v in &vertices {
            status_counts.add(&v.tasks);
        }
        JobDetailsInfo {
            jid: o.job_id,
            application_id: o.job_id.to_string(),
            name: o.name.clone(),
            is_stoppable: false,
            state: o.state,
            job_type: streaming(),
            scheduler_type: default_scheduler(),
            start_time: o.start_time,
            end_time: o.end_time,
            duration: o.duration,
            max_parallelism: -1,
            now: d.now,
            timestamps: JobStatusTimestamps::from_view(&d.timestamps),
            vertices,
            status_counts,
            plan: JobPlan::from_view(d),
            pending_operators: 0,
        }
    }
}

/// `GET /jobs/{id}/status`. Flink: `JobStatusInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatusInfo {
    /// The status.
    pub status: JobStatus,
}

/// `GET /jobs/{id}/exceptions`. Flink 2.x: `JobExceptionsInfoWithHistory` (the 1.x fields
/// `root-exception`, `all-exceptions`, `timestamp`, `truncated` are gone in 2.x).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExceptionsInfoWithHistory {
    /// The failures.
    #[serde(rename = "exceptionHistory")]
    pub exception_history: JobExceptionHistory,
}

/// The failure history. Flink: `JobExceptionsInfoWithHistory.JobExceptionHistory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExceptionHistory {
    /// Failures, newest first; the first one failed the job if it failed.
    pub entries: Vec<ExceptionInfo>,
    /// Whether entries were left out (`maxExceptions`).
    pub truncated: bool,
}

/// One failure. Flink: `JobExceptionsInfoWithHistory.RootExceptionInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionInfo {
    /// The error's kind (Flink: the exception class), e.g. `TaskFailure`.
    #[serde(rename = "exceptionName")]
    pub exception_name: String,
    /// `kind: message` (rflink has no stack traces).
    pub stacktrace: String,
    /// When it happened, millis.
    pub timestamp: i64,
    /// Failure labels (none yet).
    #[serde(rename = "failureLabels", default)]
    pub failure_labels: BTreeMap<String, String>,
    /// The subtask, e.g. `map (2/4)`; absent for a global failure.
    #[serde(rename = "taskName", default, skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
    /// The TaskManager's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The TaskManager (rflink: its address too).
    #[serde(
        rename = "taskManagerId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub task_manager_id: Option<String>,
    /// Failures handled together with this one.
    #[serde(rename = "concurrentExceptions", default)]
    pub concurrent_exceptions: Vec<ExceptionInfo>,
}

impl ExceptionInfo {
    /// The entry for one failure.
    pub fn from_view(e: &ErrorInfo) -> Self {
        ExceptionInfo {
            exception_name: e.kind.clone(),
            stacktrace: format!("{}: {}", e.kind, e.message),
            timestamp: e.timestamp,
            failure_labels: BTreeMap::new(),
            task_name: e.task_name.clone(),
            endpoint: e.location.clone(),
            task_manager_id: e.location.clone(),
            concurrent_exceptions: Vec::new(),
        }
    }
}

/// Default `maxExceptions` of `/jobs/{id}/exceptions` (Flink's too).
pub const DEFAULT_MAX_EXCEPTIONS: usize = 20;

impl JobExceptionsInfoWithHistory {
    /// The body of a gateway view, with at most `max` entries: the history (newest first), with
    /// the root failure in front if the history does not hold it.
    pub fn from_view(e: &JobExceptions, max: usize) -> Self {
        let none: &[ErrorInfo] = &[];
        let mut all: Vec<(&ErrorInfo, &[ErrorInfo])> = Vec::with_capacity(e.history.len() + 1);
        if let Some(root) = &e.root {
            if !e.history.contains(root) {
                all.push((root, none));
            }
        }
        all.extend(
            e.history
                .iter()
                .enumerate()
                .map(|(i, h)| (h, e.concurrent.get(i).map_or(none, Vec::as_slice))),
        );
        let truncated = all.len() > max;
        JobExceptionsInfoWithHistory {
            exception_history: JobExceptionHistory {
                entries: all
                    .into_iter()
                    .take(max)
                    .map(|(entry, concurrent)| {
                        let mut info = ExceptionInfo::from_view(entry);
                        info.concurrent_exceptions =
                            concurrent.iter().map(ExceptionInfo::from_view).collect();
                        info
                    })
                    .collect(),
                truncated,
            },
        }
    }
}

/// Whether an asynchronous result is ready. Flink: `QueueStatus.Id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QueueStatusId {
    /// Not yet.
    InProgress,
    /// Ready.
    Completed,
}

/// Flink: `QueueStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// The state.
    pub id: QueueStatusId,
}

/// How a finished job ended. Flink: `ApplicationStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplicationStatus {
    /// FINISHED.
    Succeeded,
    /// FAILED.
    Failed,
    /// CANCELED.
    Canceled,
    /// Anything else (SUSPENDED).
    Unknown,
}

impl ApplicationStatus {
    /// Flink's `ApplicationStatus.fromJobStatus`.
    pub fn of(status: JobStatus) -> Self {
        match status {
            JobStatus::Finished => ApplicationStatus::Succeeded,
            JobStatus::Failed => ApplicationStatus::Failed,
            JobStatus::Canceled => ApplicationStatus::Canceled,
            _ => ApplicationStatus::Unknown,
        }
    }
}

/// A failure cause. Flink: `SerializedThrowable` as written by `SerializedThrowableSerializer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerializedFailure {
    /// The error's kind (Flink: the exception class).
    pub class: String,
    /// `kind: message`.
    #[serde(rename = "stack-trace")]
    pub stack_trace: String,
    /// Base64 of a Java-serialized `org.apache.flink.util.SerializedThrowable` holding the same
    /// class name and text ([`java_serialized_throwable`]). Flink's client reads the cause from
    /// this field alone (`SerializedThrowableDeserializer`): without it, `flink savepoint` cannot
    /// parse a failed savepoint's status and polls until its own timeout.
    #[serde(rename = "serialized-throwable", default)]
    pub serialized_throwable: Option<String>,
}

impl SerializedFailure {
    /// The cause `class: message`, with its Java-serialized form.
    pub fn new(class: &str, message: &str) -> Self {
        let stack_trace = format!("{class}: {message}");
        let bytes = java_serialized_throwable(class, &stack_trace, &stack_trace);
        SerializedFailure {
            class: class.to_string(),
            stack_trace,
            serialized_throwable: Some(base64(&bytes)),
        }
    }
}

/// One `org.apache.flink.util.SerializedThrowable` in Java's object serialization stream format
/// (`java.io.ObjectOutputStream`, protocol version 2), as Flink's `InstantiationUtil`
/// deserializes it: `originalErrorClassName` = `class`, `getMessage()` = `message` (Flink's is
/// `class: message` too), `printStackTrace()` prints `stack_trace`. The fields Flink would fill
/// from a live exception are empty: no cause, no stack frames (`Throwable.readObject` takes a
/// null `stackTrace` for an empty one), no suppressed exceptions, and no nested serialized
/// exception (an empty `serializedException`, for which `deserializeError` answers the
/// `SerializedThrowable` itself). Checked against Flink 2.3's class with Java 17.
pub fn java_serialized_throwable(class: &str, message: &str, stack_trace: &str) -> Vec<u8> {
    const TC_NULL: u8 = 0x70;
    const TC_CLASSDESC: u8 = 0x72;
    const TC_OBJECT: u8 = 0x73;
    const TC_ARRAY: u8 = 0x75;
    const TC_ENDBLOCKDATA: u8 = 0x78;
    const SC_WRITE_METHOD: u8 = 0x01;
    const SC_SERIALIZABLE: u8 = 0x02;
    const STRING: &str = "Ljava/lang/String;";

    // A class descriptor without its superclass (which follows it): name, serialVersionUID,
    // flags, the fields as (type code, name, JVM type), no class annotation.
    fn class_desc(out: &mut Vec<u8>, name: &str, uid: i64, flags: u8, fields: &[(u8, &str, &str)]) {
        out.push(TC_CLASSDESC);
        java_utf(out, name);
        out.extend_from_slice(&uid.to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        for (code, field, ty) in fields {
            out.push(*code);
            java_utf(out, field);
            java_string(out, ty);
        }
        out.push(TC_ENDBLOCKDATA);
    }

    let mut out = vec![0xAC, 0xED, 0x00, 0x05, TC_OBJECT];
    class_desc(
        &mut out,
        "org.apache.flink.util.SerializedThrowable",
        7284183123441947635,
        SC_SERIALIZABLE,
        &[
            (b'L', "fullStringifiedStackTrace", STRING),
            (b'L', "originalErrorClassName", STRING),
            (b'[', "serializedException", "[B"),
        ],
    );
    class_desc(
        &mut out,
        "java.lang.Exception",
        -3387516993124229948,
        SC_SERIALIZABLE,
        &[],
    );
    class_desc(
        &mut out,
        "java.lang.Throwable",
        -3042686055658047285,
        SC_SERIALIZABLE | SC_WRITE_METHOD,
        &[
            (b'L', "cause", "Ljava/lang/Throwable;"),
            (b'L', "detailMessage", STRING),
            (b'[', "stackTrace", "[Ljava/lang/StackTraceElement;"),
            (b'L', "suppressedExceptions", "Ljava/util/List;"),
        ],
    );
    out.push(TC_NULL); // Throwable's superclass, Object, is not serializable.

    // The values, superclass first. Throwable: its fields, then the end of its writeObject data.
    out.push(TC_NULL);
    java_string(&mut out, message);
    out.push(TC_NULL);
    out.push(TC_NULL);
    out.push(TC_ENDBLOCKDATA);
    // SerializedThrowable.
    java_string(&mut out, stack_trace);
    java_string(&mut out, class);
    out.push(TC_ARRAY);
    // byte[]'s serialVersionUID, as `ObjectStreamClass` computes it.
    class_desc(
        &mut out,
        "[B",
        0xACF3_17F8_0608_54E0_u64 as i64,
        SC_SERIALIZABLE,
        &[],
    );
    out.push(TC_NULL);
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

/// Java's modified UTF-8 (`DataOutput.writeUTF` without the length): NUL and the characters
/// beyond the Basic Multilingual Plane (as two surrogates) take the long forms.
fn modified_utf8(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for unit in s.encode_utf16() {
        match unit {
            0x0001..=0x007F => out.push(unit as u8),
            0x0000 | 0x0080..=0x07FF => {
                out.push(0xC0 | (unit >> 6) as u8);
                out.push(0x80 | (unit & 0x3F) as u8);
            }
            _ => {
                out.push(0xE0 | (unit >> 12) as u8);
                out.push(0x80 | ((unit >> 6) & 0x3F) as u8);
                out.push(0x80 | (unit & 0x3F) as u8);
            }
        }
    }
    out
}

/// A class or field name: a 2-byte length and modified UTF-8 (names are short).
fn java_utf(out: &mut Vec<u8>, s: &str) {
    let bytes = modified_utf8(s);
    out.extend_from_slice(&(bytes.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..bytes.len().min(u16::MAX as usize)]);
}

/// A `java.lang.String` object: `TC_STRING` with a 2-byte length, or `TC_LONGSTRING` with an
/// 8-byte one past 65535 bytes.
fn java_string(out: &mut Vec<u8>, s: &str) {
    const TC_STRING: u8 = 0x74;
    const TC_LONGSTRING: u8 = 0x7C;
    let bytes = modified_utf8(s);
    match u16::try_from(bytes.len()) {
        Ok(len) => {
            out.push(TC_STRING);
            out.extend_from_slice(&len.to_be_bytes());
        }
        Err(_) => {
            out.push(TC_LONGSTRING);
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&bytes);
}

/// Standard Base64 with padding, the variant Jackson's `binaryValue()` decodes by default.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3F) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A finished job's result. Flink: `JobResult` as written by `JobResultSerializer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExecutionResultInfo {
    /// The job.
    #[serde(with = "hex_id")]
    pub id: JobId,
    /// How it ended.
    #[serde(rename = "application-status")]
    pub application_status: ApplicationStatus,
    /// Accumulators (none yet).
    #[serde(rename = "accumulator-results", default)]
    pub accumulator_results: BTreeMap<String, String>,
    /// Millis it ran.
    #[serde(rename = "net-runtime")]
    pub net_runtime: i64,
    /// Why it failed.
    #[serde(
        rename = "failure-cause",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub failure_cause: Option<SerializedFailure>,
}

/// `GET /jobs/{id}/execution-result`. Flink: `JobExecutionResultResponseBody`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExecutionResultResponseBody {
    /// `IN_PROGRESS` or `COMPLETED`.
    pub status: QueueStatus,
    /// The result once `COMPLETED`.
    #[serde(
        rename = "job-execution-result",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub job_execution_result: Option<JobExecutionResultInfo>,
}

impl JobExecutionResultResponseBody {
    /// The body for a gateway result (`None` while the job runs).
    pub fn from_view(r: Option<&JobResult>) -> Self {
        match r {
            None => JobExecutionResultResponseBody {
                status: QueueStatus {
                    id: QueueStatusId::InProgress,
                },
                job_execution_result: None,
            },
            Some(r) => JobExecutionResultResponseBody {
                status: QueueStatus {
                    id: QueueStatusId::Completed,
                },
                job_execution_result: Some(JobExecutionResultInfo {
                    id: r.job_id,
                    application_status: ApplicationStatus::of(r.status),
                    accumulator_results: BTreeMap::new(),
                    net_runtime: r.net_runtime,
                    failure_cause: r
                        .failure
                        .as_ref()
                        .map(|f| SerializedFailure::new(&f.kind, &f.message)),
                }),
            },
        }
    }
}

/// `GET /taskmanagers`. Flink: `TaskManagersInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskManagersInfo {
    /// Every registered TaskManager.
    pub taskmanagers: Vec<TaskManagerSummary>,
}

/// A slot or TaskManager resource profile. Flink: `ResourceProfileInfo` (memory in MiB).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)] // Flink's resource names.
pub struct ResourceProfileInfo {
    pub cpu_cores: f64,
    pub task_heap_memory: u64,
    pub task_off_heap_memory: u64,
    pub managed_memory: u64,
    pub network_memory: u64,
    #[serde(default)]
    pub extended_resources: BTreeMap<String, f64>,
}

/// A TaskManager's hardware. Flink: `HardwareDescription`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HardwareInfo {
    /// CPU cores.
    pub cpu_cores: u32,
    /// Physical memory, bytes.
    pub physical_memory: u64,
    /// Memory the process may use, bytes.
    pub free_memory: u64,
    /// Managed memory, bytes.
    pub managed_memory: u64,
}

/// A TaskManager's memory budget, bytes. Flink: `TaskExecutorMemoryConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)] // Flink's memory component names.
pub struct TaskExecutorMemoryConfiguration {
    pub framework_heap: u64,
    pub task_heap: u64,
    pub framework_off_heap: u64,
    pub task_off_heap: u64,
    pub network_memory: u64,
    pub managed_memory: u64,
    pub jvm_metaspace: u64,
    pub jvm_overhead: u64,
    pub total_flink_memory: u64,
    pub total_process_memory: u64,
}

/// One TaskManager of `/taskmanagers`. Flink: `TaskManagerInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskManagerSummary {
    /// Its resource id.
    pub id: String,
    /// Its TaskExecutor's RPC address.
    pub path: String,
    /// Its data port, or -1.
    pub data_port: i32,
    /// -1: no JMX.
    pub jmx_port: i32,
    /// Despite the name, Flink sends the *time of* the last heartbeat (millis since the epoch);
    /// so does rflink.
    pub time_since_last_heartbeat: i64,
    /// Its slots.
    pub slots_number: u32,
    /// Its free slots.
    pub free_slots: u32,
    /// Tasks running on it (rflink: one per occupied slot).
    #[serde(default)]
    pub assigned_tasks: u32,
    /// Its total resources (unknown to rflink yet: zeros).
    pub total_resource: ResourceProfileInfo,
    /// Its free resources (zeros).
    pub free_resource: ResourceProfileInfo,
    /// Its hardware.
    pub hardware: HardwareInfo,
    /// Its memory budget (only managed memory is known).
    pub memory_configuration: TaskExecutorMemoryConfiguration,
    /// rflink's addition: where its Prometheus endpoint (`/metrics`) is reached, `host:port`;
    /// absent when it has none. Flink's clients ignore the field.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metrics_address: Option<String>,
}

impl TaskManagerSummary {
    /// The entry for a gateway view, taken at `now` (millis).
    pub fn from_view(t: &TaskManagerInfo, now: i64) -> Self {
        TaskManagerSummary {
            id: t.resource_id.to_string(),
            path: t.address.clone(),
            data_port: t.data_port,
            jmx_port: -1,
            time_since_last_heartbeat: now.saturating_sub(t.time_since_last_heartbeat),
            slots_number: t.slots_number,
            free_slots: t.free_slots,
            assigned_tasks: t.slots_number.saturating_sub(t.free_slots),
            total_resource: ResourceProfileInfo::default(),
            free_resource: ResourceProfileInfo::default(),
            hardware: HardwareInfo {
                cpu_cores: t.hardware.cpu_cores,
                physical_memory: t.hardware.physical_memory,
                free_memory: t.hardware.free_memory,
                managed_memory: t.hardware.managed_memory,
            },
            memory_configuration: TaskExecutorMemoryConfiguration {
                managed_memory: t.hardware.managed_memory,
                ..Default::default()
            },
            metrics_address: t.metrics_address.clone(),
        }
    }
}

/// One entry of `/jobmanager/config`. Flink: `ConfigurationInfoEntry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigurationInfoEntry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// The body of `POST /jobs` in rflink: the whole `application/json` body, or the `request` part
/// of a `multipart/form-data` upload that also carries the job's library (Flink: the same
/// `request` part, naming a Java-serialized graph file; see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSubmitRequestBody {
    /// The job, as `JobGraph`'s serde JSON.
    #[serde(rename = "jobGraph")]
    pub job_graph: JobGraph,
    /// The file names of the uploaded libraries (Flink: the uploaded jars): empty, or the one
    /// library the graph declares (`program.library.file_name`).
    #[serde(
        rename = "jobJarFileNames",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub job_jar_file_names: Vec<String>,
}

impl JobSubmitRequestBody {
    /// The body submitting `job_graph` with no uploaded files.
    pub fn new(job_graph: JobGraph) -> Self {
        JobSubmitRequestBody {
            job_graph,
            job_jar_file_names: Vec::new(),
        }
    }
}

/// The 202 answering a submission. Flink: `JobSubmitResponseBody`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSubmitResponseBody {
    /// `/jobs/<id>`.
    #[serde(rename = "jobUrl")]
    pub job_url: String,
}
