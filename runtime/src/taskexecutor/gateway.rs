//! The TaskExecutor's messages. Flink: `TaskExecutorGateway`. The TaskExecutor is not fenced:
//! messages that need a guard carry the caller's leader id as an argument, checked here.

use std::collections::BTreeMap;

use rflink_rpc::RpcMessage;
use serde::{Deserialize, Serialize};

use crate::jobgraph::{JobProgram, ShipStrategy};
use crate::resourcemanager::SlotReport;
use crate::types::{
    Ack, AllocationId, ExecutionAttemptId, JobId, JobMasterId, JobVertexId, ResourceId,
    ResourceManagerId, SlotId,
};

/// Why a TaskExecutor refused a slot request or a slot operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum TaskExecutorError {
    /// The request came from a ResourceManager this TaskExecutor is not registered at.
    #[error("not connected to resource manager {rm_id}")]
    UnknownResourceManager {
        /// The caller's token.
        rm_id: ResourceManagerId,
    },
    /// The slot index does not exist.
    #[error("slot {slot_index} does not exist (this task executor has {slots})")]
    NoSuchSlot {
        /// Requested index.
        slot_index: u32,
        /// Slots there are.
        slots: u32,
    },
    /// The slot is allocated to another allocation. Flink: `SlotOccupiedException`.
    #[error("slot {slot_index} is occupied by allocation {current}")]
    SlotOccupied {
        /// The slot.
        slot_index: u32,
        /// Its current allocation.
        current: AllocationId,
    },
    /// No slot has that allocation.
    #[error("no slot holds allocation {0}")]
    UnknownAllocation(AllocationId),
    /// No task with that attempt id runs here.
    #[error("no task {0} runs here")]
    UnknownTask(ExecutionAttemptId),
    /// The task does not take part in checkpoints (its job has checkpointing off).
    #[error("task {0} does not take part in checkpoints")]
    NotCheckpointing(ExecutionAttemptId),
}

/// Why a task could not be submitted. Flink: `TaskSubmissionException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum TaskSubmissionError {
    /// No JobMaster connection for the job.
    #[error("no job master connection for job {0}")]
    NoJobMaster(JobId),
    /// The JobMasterId does not match the connected JobMaster's.
    #[error("wrong job master id {received} for job {job_id}: connected to {expected}")]
    WrongJobMaster {
        /// The job.
        job_id: JobId,
        /// The connected JobMaster's id.
        expected: JobMasterId,
        /// The id the submission carried.
        received: JobMasterId,
    },
    /// The allocation is not a slot of this job here.
    #[error("allocation {allocation_id} is not an active slot of job {job_id}")]
    NoSlot {
        /// The job.
        job_id: JobId,
        /// The allocation.
        allocation_id: AllocationId,
    },
    /// The attempt is already running here.
    #[error("task {0} was already submitted")]
    Duplicate(ExecutionAttemptId),
    /// The invokable could not be created.
    #[error("cannot instantiate invokable {invokable:?}: {reason}")]
    Invokable {
        /// Its registry name.
        invokable: String,
        /// Why.
        reason: String,
    },
    /// Offloaded deployment data could not be loaded.
    #[error("cannot load deployment data: {0}")]
    Blob(String),
    /// The job's library could not be fetched, verified or loaded.
    #[error("cannot load the job library: {0}")]
    Library(String),
}

/// What a task runs and where its data is. Flink: `TaskDeploymentDescriptor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDeploymentDescriptor {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    pub attempt: ExecutionAttemptId,
    /// The slot to run in.
    pub allocation_id: AllocationId,
    /// Job-wide information, inline or offloaded to the BlobServer.
    pub job_information: MaybeOffloaded<JobInformation>,
    /// Vertex-wide information, inline or offloaded.
    pub task_information: MaybeOffloaded<TaskInformation>,
    /// The results this subtask produces, one per outgoing edge of its vertex.
    #[serde(default)]
    pub produced_partitions: Vec<ResultPartitionDeploymentDescriptor>,
    /// The results it consumes, one gate per incoming edge, in the vertex's input order.
    #[serde(default)]
    pub input_gates: Vec<InputGateDeploymentDescriptor>,
    /// Exactly-once checkpointing, when the job has it on: where state goes.
    #[serde(default)]
    pub checkpointing: Option<TaskCheckpointConfig>,
    /// The state to start from (a restart, or a job resumed from a savepoint). Flink:
    /// `JobManagerTaskRestore`.
    #[serde(default)]
    pub restore: Option<crate::tasks::checkpointing::TaskRestore>,
}

/// A task's checkpoint storage. Part of the deployment descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCheckpointConfig {
    /// The checkpoint storage's base directory; checkpoint `n` of job `j` is
    /// `<base_dir>/<j>/chk-<n>/`.
    pub base_dir: std::path::PathBuf,
}

/// Starts checkpoint `checkpoint_id` at a source task (it snapshots and emits the barrier).
/// Flink: `triggerCheckpoint`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerCheckpoint {
    /// The task.
    pub attempt: ExecutionAttemptId,
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// When it was triggered (millis).
    pub timestamp: i64,
    /// A savepoint.
    pub savepoint: bool,
    /// A stop-with-savepoint: the source emits nothing after it until the savepoint completes
    /// (then the job finishes) or is aborted (then it goes on). Flink: `SYNC_SAVEPOINT`.
    #[serde(default)]
    pub terminate: bool,
}
impl RpcMessage for TriggerCheckpoint {
    type Reply = Result<Ack, TaskExecutorError>;
}

/// Checkpoint `checkpoint_id` completed; `last` marks the job's final checkpoint (every task
/// had ended its input), after which tasks finish. Flink: `confirmCheckpoint`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmCheckpoint {
    /// The task.
    pub attempt: ExecutionAttemptId,
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// The job's final checkpoint.
    pub last: bool,
    /// A stop-with-savepoint completed: the task finishes now.
    #[serde(default)]
    pub stop: bool,
}
impl RpcMessage for ConfirmCheckpoint {
    type Reply = ();
}

/// Checkpoint `checkpoint_id` was aborted. Flink: `abortCheckpoint`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbortCheckpoint {
    /// The task.
    pub attempt: ExecutionAttemptId,
    /// The checkpoint.
    pub checkpoint_id: u64,
}
impl RpcMessage for AbortCheckpoint {
    type Reply = ();
}

/// One result a subtask produces. Flink: `ResultPartitionDeploymentDescriptor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultPartitionDeploymentDescriptor {
    /// Index among the producing vertex's outgoing edges (the partition id is this plus the
    /// producing attempt).
    pub result_index: u32,
    /// The consuming vertex.
    pub consumer: JobVertexId,
    /// How records are routed.
    pub ship_strategy: ShipStrategy,
    /// For each subpartition (one per consumer subtask; one for forward), whether its consumer
    /// runs on this same TaskExecutor, so that records go to it as typed batches.
    pub local: Vec<bool>,
}

/// One result a subtask consumes. Flink: `InputGateDeploymentDescriptor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputGateDeploymentDescriptor {
    /// The producing vertex.
    pub producer: JobVertexId,
    /// One channel per producer subtask read from (one for forward).
    pub channels: Vec<ShuffleDescriptor>,
}

/// Where one input channel reads from. Flink: `NettyShuffleDescriptor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShuffleDescriptor {
    /// The producing attempt.
    pub producer: ExecutionAttemptId,
    /// The producer's result index.
    pub result_index: u32,
    /// The subpartition this consumer reads.
    pub subpartition: u32,
    /// The producer's TaskExecutor.
    pub producer_resource_id: ResourceId,
    /// Its data server, `host:port`.
    pub data_address: String,
    /// Whether the producer runs on the consuming TaskExecutor.
    pub local: bool,
}

/// Job-wide deployment information. Flink: `JobInformation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInformation {
    /// The job's name.
    pub job_name: String,
    /// Its streaming program, if it has one.
    #[serde(default)]
    pub program: Option<JobProgram>,
}

/// Vertex-wide deployment information. Flink: `TaskInformation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInformation {
    /// The vertex's name.
    pub vertex_name: String,
    /// Its parallelism.
    pub number_of_subtasks: u32,
    /// Its max parallelism.
    pub max_parallelism: u32,
    /// The invokable's registry name.
    pub invokable: String,
    /// Its parameters.
    pub config: BTreeMap<String, String>,
}

/// A deployment field that is sent inline when small and through the BlobServer when larger than
/// `blob.offload.minsize`. Flink: `MaybeOffloaded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaybeOffloaded<T> {
    /// The value itself.
    Inline(T),
    /// The value, rmp-serde encoded, is a blob of the job under this key (hex SHA-256).
    Offloaded {
        /// The blob key.
        blob_key: String,
    },
}

/// Reserves a slot for a job and tells where its JobMaster is. Flink: `requestSlot`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestSlot {
    /// The slot.
    pub slot_id: SlotId,
    /// The job.
    pub job_id: JobId,
    /// The new allocation.
    pub allocation_id: AllocationId,
    /// The JobMaster's RPC address.
    pub target_address: String,
    /// The JobMaster's token, to register there.
    pub job_master_id: JobMasterId,
    /// The calling ResourceManager's token (must be the one this TaskExecutor is registered at).
    pub rm_id: ResourceManagerId,
}
impl RpcMessage for RequestSlot {
    type Reply = Result<Ack, TaskExecutorError>;
}

/// Frees a slot (failing the tasks in it). Flink: `freeSlot`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FreeSlot {
    /// The allocation.
    pub allocation_id: AllocationId,
    /// Why.
    pub cause: String,
}
impl RpcMessage for FreeSlot {
    type Reply = Result<Ack, TaskExecutorError>;
}

/// Deploys a task. Flink: `submitTask(tdd, jobMasterId, timeout)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitTask {
    /// What to run.
    pub tdd: TaskDeploymentDescriptor,
    /// The deploying JobMaster's id (must match this TaskExecutor's connection for the job).
    pub job_master_id: JobMasterId,
}
impl RpcMessage for SubmitTask {
    type Reply = Result<Ack, TaskSubmissionError>;
}

/// Cancels a task. Flink: `cancelTask`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelTask {
    /// The attempt.
    pub attempt: ExecutionAttemptId,
}
impl RpcMessage for CancelTask {
    type Reply = Result<Ack, TaskExecutorError>;
}

/// The JobMaster's heartbeat request; the reply is the TaskExecutor's side of it.
/// Flink: `heartbeatFromJobManager` + `heartbeatFromTaskManager`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatFromJobManager {
    /// The JobMaster's resource id.
    pub jm_resource_id: ResourceId,
    /// The job.
    pub job_id: JobId,
}
impl RpcMessage for HeartbeatFromJobManager {
    type Reply = TaskExecutorToJobManagerHeartbeatPayload;
}

/// One task's metrics, by name (`numRecordsIn`, ...), as of a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMetricsReport {
    /// The task.
    pub attempt: ExecutionAttemptId,
    /// Its metrics now.
    pub metrics: Vec<(String, f64)>,
}

/// The TaskExecutor's answer to a JobMaster's heartbeat. Flink:
/// `TaskExecutorToJobManagerHeartbeatPayload` (which carries accumulators; the metrics Flink
/// fetches separately, through its `MetricQueryService`, ride along here).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskExecutorToJobManagerHeartbeatPayload {
    /// Every attempt of the job it knows: running, starting, or ended with its final state
    /// not yet acknowledged.
    pub attempts: Vec<ExecutionAttemptId>,
    /// The metrics of the job's running streaming tasks.
    #[serde(default)]
    pub metrics: Vec<TaskMetricsReport>,
}

/// The ResourceManager's heartbeat request; the reply is this TaskExecutor's slot report.
/// Flink: `heartbeatFromResourceManager` + `heartbeatFromTaskManager`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatFromResourceManager {
    /// The ResourceManager's resource id.
    pub rm_resource_id: ResourceId,
}
impl RpcMessage for HeartbeatFromResourceManager {
    type Reply = TaskExecutorHeartbeatPayload;
}

/// The TaskExecutor's answer to the ResourceManager's heartbeat. Flink:
/// `TaskExecutorHeartbeatPayload`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskExecutorHeartbeatPayload {
    /// Its slots.
    pub slot_report: SlotReport,
    /// Its TaskManager-scope metrics (`Status.Shuffle.Netty.*`, ...), by name.
    #[serde(default)]
    pub metrics: Vec<(String, f64)>,
}

/// The JobMaster of a job let go of this TaskExecutor. Flink: `disconnectJobManager`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisconnectJobManager {
    /// The job.
    pub job_id: JobId,
    /// Why.
    pub cause: String,
}
impl RpcMessage for DisconnectJobManager {
    type Reply = ();
}

/// The ResourceManager let go of this TaskExecutor. Flink: `disconnectResourceManager`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisconnectResourceManager {
    /// Why.
    pub cause: String,
}
impl RpcMessage for DisconnectResourceManager {
    type Reply = ();
}
