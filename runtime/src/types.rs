//! Identifiers shared by every component. Flink: `JobID`, `JobVertexID`, `ExecutionAttemptID`,
//! `AllocationID`, `ResourceID`, `InstanceID`, `SlotID` and the three fencing tokens.
//!
//! All are 128-bit ids shown as 32 hex characters (Flink's `AbstractID`), distinct types so the
//! compiler refuses one where another is meant.

use std::fmt;

use rflink_rpc::{define_fencing_token, define_id};
use serde::{Deserialize, Serialize};

define_id! {
    /// Identifies a job. Flink: `JobID`.
    pub struct JobId;
}

define_id! {
    /// Identifies a vertex of a job graph. Flink: `JobVertexID`.
    pub struct JobVertexId;
}

define_id! {
    /// Identifies one build of a job's execution graph; part of every attempt id.
    pub struct ExecutionGraphId;
}

define_id! {
    /// Identifies a slot allocation. Flink: `AllocationID`.
    pub struct AllocationId;
}

define_id! {
    /// Identifies a process taking part in the cluster (a TaskManager or a JobManager).
    /// Flink: `ResourceID`.
    pub struct ResourceId;
}

define_id! {
    /// Identifies one registration of a TaskExecutor at a ResourceManager. Flink: `InstanceID`.
    pub struct InstanceId;
}

define_fencing_token! {
    /// Fences the Dispatcher. Flink: `DispatcherId`.
    pub struct DispatcherId;
}

define_fencing_token! {
    /// Fences the ResourceManager. Flink: `ResourceManagerId`.
    pub struct ResourceManagerId;
}

define_fencing_token! {
    /// Fences a JobMaster: one per job attempt's leader session. Flink: `JobMasterId`.
    pub struct JobMasterId;
}

/// One subtask of a job vertex. Flink: `ExecutionVertexID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExecutionVertexId {
    /// The job vertex.
    pub job_vertex_id: JobVertexId,
    /// The subtask index, `0..parallelism`.
    pub subtask_index: u32,
}

/// One attempt to run a subtask. Flink: `ExecutionAttemptID` (graph id, vertex, subtask, attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExecutionAttemptId {
    /// The execution graph the attempt belongs to.
    pub execution_graph_id: ExecutionGraphId,
    /// The subtask.
    pub vertex: ExecutionVertexId,
    /// 0 for the first attempt, then 1, 2, … after restarts.
    pub attempt_number: u32,
}

impl fmt::Display for ExecutionAttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}_{}_{}",
            self.execution_graph_id,
            self.vertex.job_vertex_id,
            self.vertex.subtask_index,
            self.attempt_number
        )
    }
}

/// A slot of a TaskExecutor: its resource id and the slot's index. Flink: `SlotID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlotId {
    /// The TaskExecutor.
    pub resource_id: ResourceId,
    /// The slot's index on it.
    pub slot_index: u32,
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.resource_id, self.slot_index)
    }
}

/// The positive acknowledgement of an RPC. Flink: `Acknowledge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ack;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_ids_read_like_flinks() {
        let id = ExecutionAttemptId {
            execution_graph_id: ExecutionGraphId::from_u128(1),
            vertex: ExecutionVertexId {
                job_vertex_id: JobVertexId::from_u128(2),
                subtask_index: 3,
            },
            attempt_number: 4,
        };
        assert_eq!(
            id.to_string(),
            "00000000000000000000000000000001_00000000000000000000000000000002_3_4"
        );
        assert_eq!(
            JobId::from_u128(255).to_string(),
            "000000000000000000000000000000ff"
        );
    }
}
