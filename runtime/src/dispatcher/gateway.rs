//! The Dispatcher's messages and the views it returns. Flink: `DispatcherGateway`,
//! `RestfulGateway`, and the REST response bodies they feed.
//!
//! The view types are plain data named after Flink's REST fields; `rest` turns them into Flink's
//! JSON spelling. [`RestfulGateway`] is what the REST server and the MiniCluster's client talk to.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use rflink_rpc::{RpcError, RpcMessage};
use serde::{Deserialize, Serialize};

use crate::executiongraph::{ErrorInfo, ExecutionState, JobStatus};
use crate::jobgraph::{JobGraph, JobGraphError};
use crate::types::{Ack, JobId, JobVertexId, ResourceId};

/// How [`DispatcherError::NotLeader`] begins: the REST API logs such refusals (a standby's
/// every answer) at debug, not warn.
pub const NOT_LEADER: &str = "this job manager is not the leader";

/// Why the Dispatcher refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DispatcherError {
    /// A job with that id was already submitted (running or finished). Flink:
    /// `DuplicateJobSubmissionException`.
    #[error("job {job_id} was already submitted")]
    DuplicateJob {
        /// The job.
        job_id: JobId,
    },
    /// No job with that id is known. Flink: `FlinkJobNotFoundException`.
    #[error("job {job_id} not found")]
    JobNotFound {
        /// The job.
        job_id: JobId,
    },
    /// The job graph is not runnable.
    #[error("invalid job graph: {0}")]
    InvalidJobGraph(#[from] JobGraphError),
    /// The job's JobMaster could not be started.
    #[error("could not start the JobMaster of job {job_id}: {reason}")]
    JobMasterStartFailed {
        /// The job.
        job_id: JobId,
        /// Why.
        reason: String,
    },
    /// The job's JobMaster refused the request.
    #[error("the job master of job {job_id} refused: {reason}")]
    JobMaster {
        /// The job.
        job_id: JobId,
        /// Why.
        reason: String,
    },
    /// A call to another component failed.
    #[error("rpc failed: {0}")]
    Rpc(#[from] RpcError),
    /// The Dispatcher is shutting down.
    #[error("the dispatcher is shutting down")]
    ShuttingDown,
    /// This JobManager does not lead the cluster now (a standby, or an election is under way).
    #[error("this job manager is not the leader{}", leader.as_ref().map(|l| format!("; the leader's REST API is {l}")).unwrap_or_default())]
    NotLeader {
        /// The leader's REST URL, when one is known.
        leader: Option<String>,
    },
    /// The job could not be stored durably (high availability), so it was not started.
    #[error("could not store job {job_id} durably: {reason}")]
    Persistence {
        /// The job.
        job_id: JobId,
        /// Why.
        reason: String,
    },
}

/// Number of tasks per execution state (REST `tasks` objects).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Count per state; states with no task are absent.
    pub counts: BTreeMap<String, u32>,
    /// All tasks.
    pub total: u32,
}

impl TaskCounts {
    /// Counts the given states.
    pub fn of(states: impl IntoIterator<Item = ExecutionState>) -> Self {
        let mut t = TaskCounts::default();
        for s in states {
            *t.counts.entry(s.as_str().to_string()).or_insert(0) += 1;
            t.total += 1;
        }
        t
    }

    /// The count for one state.
    pub fn get(&self, state: ExecutionState) -> u32 {
        self.counts.get(state.as_str()).copied().unwrap_or(0)
    }
}

/// A job in a list. Flink: `JobDetails` (`/jobs/overview`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOverview {
    /// Job id.
    pub job_id: JobId,
    /// Name.
    pub name: String,
    /// Status.
    pub state: JobStatus,
    /// Submission time (millis).
    pub start_time: i64,
    /// Time it reached a terminal status, or -1.
    pub end_time: i64,
    /// Millis from start to end (or to now).
    pub duration: i64,
    /// Last status change (millis).
    pub last_modification: i64,
    /// Tasks per state.
    pub tasks: TaskCounts,
}

/// One subtask's current attempt in a job's details. Flink:
/// `SubtaskExecutionAttemptDetailsInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskDetails {
    /// The subtask index.
    pub subtask: u32,
    /// The attempt number.
    pub attempt: u32,
    /// Its state.
    pub state: ExecutionState,
    /// The TaskExecutor it runs on, if it has a slot.
    pub resource_id: Option<ResourceId>,
    /// That TaskExecutor's RPC address, if it has a slot.
    pub address: Option<String>,
    /// When it entered each state (millis), by Flink's state name; states not reached are
    /// absent.
    pub timestamps: BTreeMap<String, i64>,
    /// Its metrics as of the last heartbeat of its TaskExecutor (`numRecordsIn`, ...); empty
    /// before the first one, and for tasks that are not streaming tasks.
    pub metrics: Vec<(String, f64)>,
}

impl SubtaskDetails {
    /// One metric, if reported.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// A vertex of a job's details. Flink: `JobDetailsInfo.JobVertexDetailsInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertexDetails {
    /// Vertex id.
    pub id: JobVertexId,
    /// Name.
    pub name: String,
    /// Parallelism.
    pub parallelism: u32,
    /// Max parallelism.
    pub max_parallelism: u32,
    /// Aggregate state of its subtasks.
    pub status: ExecutionState,
    /// Earliest subtask start (millis), or -1.
    pub start_time: i64,
    /// Latest subtask end if all ended, or -1.
    pub end_time: i64,
    /// Millis.
    pub duration: i64,
    /// Subtasks per state.
    pub tasks: TaskCounts,
    /// Inputs: producing vertex and ship strategy (`HASH`, `FORWARD`, ...).
    #[serde(default)]
    pub inputs: Vec<(JobVertexId, String)>,
    /// Its subtasks' current attempts, by index.
    #[serde(default)]
    pub subtasks: Vec<SubtaskDetails>,
}

/// A job's details. Flink: `JobDetailsInfo` (`/jobs/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetails {
    /// The summary fields.
    pub overview: JobOverview,
    /// When the job entered each status (millis), by Flink's status name.
    pub timestamps: BTreeMap<String, i64>,
    /// The vertices.
    pub vertices: Vec<VertexDetails>,
    /// The time the view was taken (millis).
    pub now: i64,
    /// The job's own configuration entries (`JobGraph::job_config`), for `/jobs/{id}/config`.
    #[serde(default)]
    pub job_config: BTreeMap<String, String>,
    /// Its checkpointing settings, when it checkpoints (`/jobs/{id}/checkpoints/config`).
    #[serde(default)]
    pub checkpoint_config: Option<crate::checkpoint::CheckpointConfigView>,
}

/// A job's failures. Flink: `JobExceptionsInfoWithHistory` (`/jobs/{id}/exceptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExceptions {
    /// The failure that failed the job, if it failed.
    pub root: Option<ErrorInfo>,
    /// Every handled failure, newest first.
    pub history: Vec<ErrorInfo>,
    /// Per history entry (same order), the failures that came with it.
    #[serde(default)]
    pub concurrent: Vec<Vec<ErrorInfo>>,
}

/// What stays of a finished job: its views as the Dispatcher answers them. With high
/// availability it is stored durably, so finished jobs stay listed across JobManager restarts
/// and leader changes (Flink: `JobResultStore` plus the `ExecutionGraphInfoStore`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedJob {
    /// `/jobs/{id}`.
    pub details: JobDetails,
    /// `/jobs/{id}/exceptions`.
    pub exceptions: JobExceptions,
    /// `/jobs/{id}/execution-result`.
    pub result: JobResult,
    /// `/jobs/{id}/checkpoints`, when it had checkpointing on.
    pub checkpoints: Option<crate::checkpoint::stats::CheckpointStatsView>,
}

/// A finished job's result. Flink: `JobResult` (`/jobs/{id}/execution-result`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job.
    pub job_id: JobId,
    /// Its terminal status.
    pub status: JobStatus,
    /// Millis it ran.
    pub net_runtime: i64,
    /// Why it failed, if it did.
    pub failure: Option<ErrorInfo>,
}

/// Hardware of a TaskManager. Flink: `HardwareDescription`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareDescription {
    /// CPU cores the process may use.
    pub cpu_cores: u32,
    /// Physical memory of the machine, bytes.
    pub physical_memory: u64,
    /// Memory the process may use, bytes.
    pub free_memory: u64,
    /// Managed memory, bytes.
    pub managed_memory: u64,
}

/// A registered TaskManager. Flink: `TaskManagerInfo` (`/taskmanagers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskManagerInfo {
    /// Its resource id.
    pub resource_id: ResourceId,
    /// Its TaskExecutor's RPC address.
    pub address: String,
    /// Its data port, or -1 without a data plane.
    pub data_port: i32,
    /// Millis since its last heartbeat.
    pub time_since_last_heartbeat: i64,
    /// Slots it has.
    pub slots_number: u32,
    /// Slots free.
    pub free_slots: u32,
    /// Its hardware.
    pub hardware: HardwareDescription,
    /// Where its Prometheus endpoint is reached (`host:port`), if it has one.
    #[serde(default)]
    pub metrics_address: Option<String>,
    /// Its TaskManager-scope metrics as of its last heartbeat, by name.
    #[serde(default)]
    pub metrics: Vec<(String, f64)>,
}

/// Cluster-wide counts. Flink: `ClusterOverview` (`/overview`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterOverview {
    /// Registered TaskManagers.
    pub taskmanagers: u32,
    /// Their slots.
    pub slots_total: u32,
    /// Free slots.
    pub slots_available: u32,
    /// Jobs not yet terminal.
    pub jobs_running: u32,
    /// Finished jobs.
    pub jobs_finished: u32,
    /// Canceled jobs.
    pub jobs_cancelled: u32,
    /// Failed jobs.
    pub jobs_failed: u32,
}

// ---- messages ----

/// Submits a job. Flink: `submitJob(JobGraph)`. Answered once the JobMaster is started, not
/// when the job runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitJob {
    /// The job.
    pub job_graph: JobGraph,
}
impl RpcMessage for SubmitJob {
    type Reply = Result<Ack, DispatcherError>;
}

/// Cancels a job. Flink: `cancelJob`. Cancelling a terminal job is a no-op.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelJob {
    /// The job.
    pub job_id: JobId,
}
impl RpcMessage for CancelJob {
    type Reply = Result<Ack, DispatcherError>;
}

/// Every job, newest first. Flink: `requestMultipleJobDetails`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestJobOverviews;
impl RpcMessage for RequestJobOverviews {
    type Reply = Vec<JobOverview>;
}

/// One job's status. Flink: `requestJobStatus`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestJobStatus {
    /// The job.
    pub job_id: JobId,
}
impl RpcMessage for RequestJobStatus {
    type Reply = Result<JobStatus, DispatcherError>;
}

/// One job's details. Flink: `requestExecutionGraphInfo`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestJobDetails {
    /// The job.
    pub job_id: JobId,
}
impl RpcMessage for RequestJobDetails {
    type Reply = Result<JobDetails, DispatcherError>;
}

/// One job's failures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestJobExceptions {
    /// The job.
    pub job_id: JobId,
}
impl RpcMessage for RequestJobExceptions {
    type Reply = Result<JobExceptions, DispatcherError>;
}

/// A job's result: `None` while it runs. Flink: `requestJobResult`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestJobResult {
    /// The job.
    pub job_id: JobId,
}
impl RpcMessage for RequestJobResult {
    type Reply = Result<Option<JobResult>, DispatcherError>;
}

/// Cluster-wide counts. Flink: `requestClusterOverview`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestClusterOverview;
impl RpcMessage for RequestClusterOverview {
    type Reply = Result<ClusterOverview, DispatcherError>;
}

/// The registered TaskManagers (asked of the ResourceManager).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestTaskManagers;
impl RpcMessage for RequestTaskManagers {
    type Reply = Result<Vec<TaskManagerInfo>, DispatcherError>;
}

/// What the REST server needs from the cluster. Implemented by the Dispatcher's gateway; tests
/// can implement it with fakes.
pub trait RestfulGateway: Send + Sync + 'static {
    /// Submits a job.
    fn submit_job(&self, job_graph: JobGraph) -> BoxFuture<'static, Result<Ack, DispatcherError>>;
    /// Cancels a job.
    fn cancel_job(&self, job_id: JobId) -> BoxFuture<'static, Result<Ack, DispatcherError>>;
    /// Every job.
    fn job_overviews(&self) -> BoxFuture<'static, Result<Vec<JobOverview>, DispatcherError>>;
    /// A job's status.
    fn job_status(&self, job_id: JobId) -> BoxFuture<'static, Result<JobStatus, DispatcherError>>;
    /// A job's details.
    fn job_details(&self, job_id: JobId)
        -> BoxFuture<'static, Result<JobDetails, DispatcherError>>;
    /// A job's failures.
    fn job_exceptions(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<JobExceptions, DispatcherError>>;
    /// A job's result, `None` while it runs.
    fn job_result(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<Option<JobResult>, DispatcherError>>;
    /// Cluster-wide counts.
    fn cluster_overview(&self) -> BoxFuture<'static, Result<ClusterOverview, DispatcherError>>;
    /// The TaskManagers.
    fn task_managers(&self) -> BoxFuture<'static, Result<Vec<TaskManagerInfo>, DispatcherError>>;
    /// A job's checkpoint statistics; `None` when it has checkpointing off.
    fn checkpoint_stats(
        &self,
        job_id: JobId,
    ) -> BoxFuture<
        'static,
        Result<Option<crate::checkpoint::stats::CheckpointStatsView>, DispatcherError>,
    > {
        Box::pin(async move { Err(DispatcherError::JobNotFound { job_id }) })
    }
    /// Triggers a savepoint of a running job (`terminate`: stop it afterwards); its id.
    fn trigger_savepoint(
        &self,
        job_id: JobId,
        target_directory: Option<String>,
        terminate: bool,
    ) -> BoxFuture<'static, Result<u64, DispatcherError>> {
        let _ = (target_directory, terminate);
        Box::pin(async move { Err(DispatcherError::JobNotFound { job_id }) })
    }
    /// How a savepoint went; `None` for an unknown id.
    fn savepoint_status(
        &self,
        job_id: JobId,
        id: u64,
    ) -> BoxFuture<'static, Result<Option<crate::jobmaster::SavepointStatus>, DispatcherError>>
    {
        let _ = id;
        Box::pin(async move { Err(DispatcherError::JobNotFound { job_id }) })
    }
}

/// A job's checkpoint statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestCheckpointStats {
    /// The job.
    pub job_id: JobId,
}
impl RpcMessage for RequestCheckpointStats {
    type Reply = Result<Option<crate::checkpoint::stats::CheckpointStatsView>, DispatcherError>;
}

/// Triggers a savepoint of a running job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerSavepoint {
    /// The job.
    pub job_id: JobId,
    /// Where to write it; `None`: the configured savepoint directory.
    pub target_directory: Option<String>,
    /// Stop the job after it.
    pub terminate: bool,
}
impl RpcMessage for TriggerSavepoint {
    type Reply = Result<u64, DispatcherError>;
}

/// How a savepoint went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestSavepointStatus {
    /// The job.
    pub job_id: JobId,
    /// The savepoint's id.
    pub id: u64,
}
impl RpcMessage for RequestSavepointStatus {
    type Reply = Result<Option<crate::jobmaster::SavepointStatus>, DispatcherError>;
}

/// A JobMaster reports its job's end with the views to keep (Flink: the JobManagerRunner's
/// result future and the ExecutionGraphInfoStore).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobReachedTerminalState {
    /// The job.
    pub job_id: JobId,
    /// Final details.
    pub details: JobDetails,
    /// Final failures.
    pub exceptions: JobExceptions,
    /// The result.
    pub result: JobResult,
    /// Checkpoint statistics, when the job had checkpointing on.
    #[serde(default)]
    pub checkpoints: Option<crate::checkpoint::stats::CheckpointStatsView>,
}
impl RpcMessage for JobReachedTerminalState {
    type Reply = ();
}
