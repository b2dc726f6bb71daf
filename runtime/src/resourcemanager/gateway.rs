//! The ResourceManager's messages. Flink: `ResourceManagerGateway`.

use rflink_rpc::{RpcError, RpcMessage};
use serde::{Deserialize, Serialize};

use crate::dispatcher::{HardwareDescription, TaskManagerInfo};
use crate::executiongraph::JobStatus;
use crate::registration::RegistrationResponse;
use crate::types::{
    Ack, AllocationId, InstanceId, JobId, JobMasterId, ResourceId, ResourceManagerId, SlotId,
};

/// Why the ResourceManager refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ResourceManagerError {
    /// The TaskExecutor's registration is unknown or outdated.
    #[error("unknown task executor registration {instance_id} of {resource_id}")]
    UnknownTaskExecutor {
        /// The TaskExecutor.
        resource_id: ResourceId,
        /// The registration it claimed.
        instance_id: InstanceId,
    },
    /// The JobMaster is not registered under that id. Flink: `ResourceManagerException`.
    #[error("job master {job_master_id} of job {job_id} is not registered")]
    UnknownJobMaster {
        /// The job.
        job_id: JobId,
        /// The claimed JobMaster id.
        job_master_id: JobMasterId,
    },
    /// A call to another component failed.
    #[error("rpc failed: {0}")]
    Rpc(#[from] RpcError),
}

/// What a TaskExecutor tells the ResourceManager about itself. Flink: `TaskExecutorRegistration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskExecutorRegistration {
    /// The TaskExecutor endpoint's RPC address.
    pub address: String,
    /// Its resource id.
    pub resource_id: ResourceId,
    /// Its data port, or -1 while there is no data plane.
    pub data_port: i32,
    /// How many slots it has.
    pub number_of_slots: u32,
    /// Its hardware.
    pub hardware: HardwareDescription,
    /// Where its Prometheus endpoint is reached (`host:port`), if it has one.
    #[serde(default)]
    pub metrics_address: Option<String>,
}

/// Where the BlobServer is, as `host:port`. Flink: `ClusterInformation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInformation {
    /// The BlobServer's `host:port`, if one runs.
    pub blob_server: Option<String>,
}

/// A successful TaskExecutor registration. Flink: `TaskExecutorRegistrationSuccess`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskExecutorRegistrationSuccess {
    /// This registration's id; later messages must carry it.
    pub instance_id: InstanceId,
    /// The ResourceManager's resource id (heartbeats).
    pub rm_resource_id: ResourceId,
    /// Cluster services.
    pub cluster_information: ClusterInformation,
}

/// Registers a TaskExecutor. Flink: `registerTaskExecutor`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterTaskExecutor(pub TaskExecutorRegistration);
impl RpcMessage for RegisterTaskExecutor {
    type Reply = RegistrationResponse<TaskExecutorRegistrationSuccess>;
}

/// One slot's state in a report. Flink: `SlotStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// The slot.
    pub slot_id: SlotId,
    /// Its allocation and job, if allocated.
    pub allocation: Option<(AllocationId, JobId)>,
}

/// A TaskExecutor's slots. Flink: `SlotReport`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotReport(pub Vec<SlotStatus>);

/// A TaskExecutor's slot report after registering. Flink: `sendSlotReport`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendSlotReport {
    /// The TaskExecutor.
    pub resource_id: ResourceId,
    /// Its registration.
    pub instance_id: InstanceId,
    /// Its slots.
    pub report: SlotReport,
}
impl RpcMessage for SendSlotReport {
    type Reply = Result<Ack, ResourceManagerError>;
}

/// A slot became free. Flink: `notifySlotAvailable`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifySlotAvailable {
    /// The TaskExecutor's registration.
    pub instance_id: InstanceId,
    /// The slot.
    pub slot_id: SlotId,
    /// The allocation it had.
    pub allocation_id: AllocationId,
}
impl RpcMessage for NotifySlotAvailable {
    type Reply = ();
}

/// A TaskExecutor leaves. Flink: `disconnectTaskManager`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisconnectTaskManager {
    /// The TaskExecutor.
    pub resource_id: ResourceId,
    /// Why.
    pub cause: String,
}
impl RpcMessage for DisconnectTaskManager {
    type Reply = ();
}

/// A successful JobMaster registration. Flink: `JobMasterRegistrationSuccess`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMasterRegistrationSuccess {
    /// The ResourceManager's token.
    pub rm_id: ResourceManagerId,
    /// Its resource id (heartbeats).
    pub rm_resource_id: ResourceId,
}

/// Registers a JobMaster. Flink: `registerJobMaster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterJobMaster {
    /// The JobMaster's token.
    pub job_master_id: JobMasterId,
    /// Its resource id.
    pub resource_id: ResourceId,
    /// Its RPC address.
    pub address: String,
    /// Its job.
    pub job_id: JobId,
}
impl RpcMessage for RegisterJobMaster {
    type Reply = RegistrationResponse<JobMasterRegistrationSuccess>;
}

/// How many slots a job needs in total (declarative, idempotent). Flink:
/// `declareRequiredResources`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeclareRequiredResources {
    /// The JobMaster's token (checked against its registration).
    pub job_master_id: JobMasterId,
    /// The job.
    pub job_id: JobId,
    /// Slots wanted in total.
    pub slots: u32,
}
impl RpcMessage for DeclareRequiredResources {
    type Reply = Result<Ack, ResourceManagerError>;
}

/// A JobMaster leaves. Flink: `disconnectJobManager`. A globally terminal status drops the job's
/// requirements; otherwise they are kept for a successor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisconnectJobManager {
    /// The job.
    pub job_id: JobId,
    /// Its status.
    pub status: JobStatus,
    /// Why.
    pub cause: String,
}
impl RpcMessage for DisconnectJobManager {
    type Reply = ();
}

/// The registered TaskManagers. Flink: `requestTaskManagerInfo`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestTaskManagerInfo;
impl RpcMessage for RequestTaskManagerInfo {
    type Reply = Vec<TaskManagerInfo>;
}

/// Slot totals. Flink: `requestResourceOverview`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceOverview {
    /// Registered TaskManagers.
    pub task_managers: u32,
    /// Their slots.
    pub slots_total: u32,
    /// Free slots.
    pub slots_free: u32,
}

/// Asks for the [`ResourceOverview`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestResourceOverview;
impl RpcMessage for RequestResourceOverview {
    type Reply = ResourceOverview;
}
