//! Cluster events: typed facts that components publish as they happen, for tests to wait on
//! (with deadlines, never sleeps) and for metrics and the dashboard later.

use tokio::sync::broadcast;

use crate::executiongraph::{ExecutionState, JobStatus};
use crate::types::{ExecutionAttemptId, JobId, ResourceId};

/// Something that happened in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A TaskExecutor registered at the ResourceManager.
    TaskExecutorRegistered {
        /// It.
        resource_id: ResourceId,
        /// Its slots.
        slots: u32,
    },
    /// The ResourceManager lost a TaskExecutor.
    TaskExecutorLost {
        /// It.
        resource_id: ResourceId,
        /// Why.
        reason: String,
    },
    /// A TaskExecutor (re)connected to a ResourceManager.
    ResourceManagerConnected {
        /// The TaskExecutor.
        resource_id: ResourceId,
    },
    /// A JobMaster registered at the ResourceManager.
    JobMasterRegistered {
        /// Its job.
        job_id: JobId,
    },
    /// A job's status changed.
    JobStatusChanged {
        /// The job.
        job_id: JobId,
        /// Its new status.
        status: JobStatus,
    },
    /// A task's state changed (as the JobMaster saw it).
    TaskStateChanged {
        /// The attempt.
        attempt: ExecutionAttemptId,
        /// Its new state.
        state: ExecutionState,
    },
    /// A JobMaster lost a TaskManager.
    TaskManagerLostByJobMaster {
        /// The job.
        job_id: JobId,
        /// The TaskManager.
        resource_id: ResourceId,
    },
}

/// Where components publish events; cheap to clone. Publishing never blocks and never fails: with
/// no subscriber the event is dropped.
#[derive(Debug, Clone)]
pub struct EventSink(broadcast::Sender<ClusterEvent>);

impl Default for EventSink {
    fn default() -> Self {
        EventSink(broadcast::channel(4096).0)
    }
}

impl EventSink {
    /// Publishes an event.
    pub fn publish(&self, event: ClusterEvent) {
        let _ = self.0.send(event);
    }

    /// A receiver of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.0.subscribe()
    }
}
