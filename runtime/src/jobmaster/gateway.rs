//! The JobMaster's messages. Flink: `JobMasterGateway`.

use rflink_rpc::{AbstractId, RpcError, RpcMessage};
use serde::{Deserialize, Serialize};

use crate::dispatcher::{JobDetails, JobExceptions};
use crate::executiongraph::{ErrorInfo, ExecutionState, GraphError, JobStatus};
use crate::registration::RegistrationResponse;
use crate::types::{Ack, AllocationId, ExecutionAttemptId, JobId, ResourceId, ResourceManagerId};

/// Why the JobMaster refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum JobMasterError {
    /// The TaskManager is not registered at this JobMaster.
    #[error("unknown task manager {0}")]
    UnknownTaskManager(ResourceId),
    /// The report does not fit the execution graph.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A call to another component failed.
    #[error("rpc failed: {0}")]
    Rpc(#[from] RpcError),
    /// A checkpoint or savepoint cannot be taken.
    #[error("{0}")]
    Checkpoint(String),
}

/// A successful TaskManager registration at a JobMaster. Flink: `JMTMRegistrationSuccess`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JmTmRegistrationSuccess {
    /// The JobMaster's resource id.
    pub jm_resource_id: ResourceId,
}

/// A TaskExecutor registers for a job. Flink: `registerTaskManager`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterTaskManager {
    /// The job it registers for (must be this JobMaster's).
    pub job_id: JobId,
    /// The TaskExecutor's RPC address.
    pub address: String,
    /// Its resource id.
    pub resource_id: ResourceId,
    /// Its process session: a new one means it restarted.
    pub session_id: AbstractId,
    /// Its data (shuffle) server, `host:port`, which consumers of its results connect to.
    #[serde(default)]
    pub data_address: Option<String>,
}
impl RpcMessage for RegisterTaskManager {
    type Reply = RegistrationResponse<JmTmRegistrationSuccess>;
}

/// A slot offered to a JobMaster. Flink: `SlotOffer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlotOffer {
    /// The allocation the ResourceManager made for this job.
    pub allocation_id: AllocationId,
    /// The slot's index on its TaskExecutor.
    pub slot_index: u32,
}

/// Offers slots; the reply is the accepted subset. Flink: `offerSlots`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfferSlots {
    /// The offering TaskExecutor.
    pub resource_id: ResourceId,
    /// The slots.
    pub offers: Vec<SlotOffer>,
}
impl RpcMessage for OfferSlots {
    type Reply = Result<Vec<SlotOffer>, JobMasterError>;
}

/// A task's state changed. Flink: `updateTaskExecutionState(TaskExecutionState)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateTaskExecutionState {
    /// The attempt.
    pub attempt: ExecutionAttemptId,
    /// Its new state.
    pub state: ExecutionState,
    /// Why it failed, if it did.
    pub error: Option<ErrorInfo>,
    /// With a final state: the task's final metrics (Flink's `TaskExecutionState` carries its
    /// `IOMetrics` the same way).
    #[serde(default)]
    pub metrics: Vec<(String, f64)>,
}
impl RpcMessage for UpdateTaskExecutionState {
    type Reply = Result<Ack, JobMasterError>;
}

/// The ResourceManager's heartbeat request. Flink: `heartbeatFromResourceManager`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatFromResourceManager {
    /// The ResourceManager's resource id.
    pub rm_resource_id: ResourceId,
}
impl RpcMessage for HeartbeatFromResourceManager {
    type Reply = ();
}

/// A TaskManager leaves this job (sent by the ResourceManager or the TaskExecutor).
/// Flink: `disconnectTaskManager`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisconnectTaskManager {
    /// The TaskManager.
    pub resource_id: ResourceId,
    /// Why.
    pub cause: String,
}
impl RpcMessage for DisconnectTaskManager {
    type Reply = ();
}

/// The ResourceManager let go of this JobMaster. Flink: `disconnectResourceManager`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisconnectResourceManager {
    /// The ResourceManager's token.
    pub rm_id: ResourceManagerId,
    /// Why.
    pub cause: String,
}
impl RpcMessage for DisconnectResourceManager {
    type Reply = ();
}

/// Cancels the job. Flink: `cancel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelJob;
impl RpcMessage for CancelJob {
    type Reply = Result<Ack, JobMasterError>;
}

/// The job's status. Flink: `requestJobStatus`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestJobStatus;
impl RpcMessage for RequestJobStatus {
    type Reply = JobStatus;
}

/// The job's details. Flink: `requestJob`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestJobDetails;
impl RpcMessage for RequestJobDetails {
    type Reply = JobDetails;
}

/// The job's failures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestJobExceptions;
impl RpcMessage for RequestJobExceptions {
    type Reply = JobExceptions;
}

/// A task's part of a checkpoint is stored. Flink: `acknowledgeCheckpoint`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcknowledgeCheckpoint {
    /// The job.
    pub job_id: JobId,
    /// The task.
    pub attempt: ExecutionAttemptId,
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// Where its state is (`None`: stateless).
    pub state: Option<crate::checkpoint::TaskStateHandle>,
    /// The task had ended its input when it took its part.
    pub ended_input: bool,
    /// Millis on the task thread.
    pub sync_millis: u64,
    /// Millis writing the state.
    pub async_millis: u64,
}
impl RpcMessage for AcknowledgeCheckpoint {
    type Reply = ();
}

/// A task could not take its part of a checkpoint. Flink: `declineCheckpoint`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeclineCheckpoint {
    /// The job.
    pub job_id: JobId,
    /// The task.
    pub attempt: ExecutionAttemptId,
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// Why.
    pub reason: String,
    /// A newer checkpoint overtook it during alignment: not counted as a failed checkpoint.
    #[serde(default)]
    pub subsumed_by: Option<u64>,
}
impl RpcMessage for DeclineCheckpoint {
    type Reply = ();
}

/// The job's checkpoint statistics, in Flink's `/jobs/{id}/checkpoints` shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestCheckpointStats;
impl RpcMessage for RequestCheckpointStats {
    type Reply = Option<crate::checkpoint::stats::CheckpointStatsView>;
}

/// Triggers a savepoint (`terminate`: stop the job once it is complete). The reply is the
/// savepoint's id, for [`RequestSavepointStatus`]. Flink: `triggerSavepoint` /
/// `stopWithSavepoint`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerSavepoint {
    /// Where to write it; `None`: `execution.checkpointing.savepoint-dir`.
    pub target_directory: Option<String>,
    /// Stop the job after the savepoint.
    pub terminate: bool,
}
impl RpcMessage for TriggerSavepoint {
    type Reply = Result<u64, JobMasterError>;
}

/// How a savepoint went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SavepointStatus {
    /// Still running.
    InProgress,
    /// Done; its location (the directory to resume from).
    Completed(String),
    /// Failed, and why.
    Failed(String),
}

/// The status of savepoint `id` of this job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestSavepointStatus {
    /// The id [`TriggerSavepoint`] returned.
    pub id: u64,
}
impl RpcMessage for RequestSavepointStatus {
    type Reply = Option<SavepointStatus>;
}
