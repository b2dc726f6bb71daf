//! A TaskExecutor's slots. Flink: `TaskSlotTable`.
//!
//! Pure logic. A slot is Free, Allocated (reserved for a job, offered to its JobMaster, not yet
//! accepted) or Active (accepted: tasks may run). An allocated slot that is not activated within
//! the slot timeout is freed by the TaskExecutor (Flink scenario 25).

use crate::resourcemanager::gateway::{SlotReport, SlotStatus};
use crate::taskexecutor::gateway::TaskExecutorError;
use crate::types::{AllocationId, JobId, ResourceId, SlotId};

/// A slot's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSlotState {
    /// Unused.
    Free,
    /// Reserved for a job, waiting for its JobMaster to accept it.
    Allocated {
        /// The job.
        job_id: JobId,
        /// The allocation.
        allocation_id: AllocationId,
    },
    /// Accepted by the job's JobMaster: tasks may run in it.
    Active {
        /// The job.
        job_id: JobId,
        /// The allocation.
        allocation_id: AllocationId,
    },
}

impl TaskSlotState {
    fn allocation(self) -> Option<(AllocationId, JobId)> {
        match self {
            TaskSlotState::Free => None,
            TaskSlotState::Allocated {
                job_id,
                allocation_id,
            }
            | TaskSlotState::Active {
                job_id,
                allocation_id,
            } => Some((allocation_id, job_id)),
        }
    }
}

/// The slots of one TaskExecutor.
#[derive(Debug)]
pub struct TaskSlotTable {
    resource_id: ResourceId,
    slots: Vec<TaskSlotState>,
}

impl TaskSlotTable {
    /// `n` free slots.
    pub fn new(resource_id: ResourceId, n: u32) -> Self {
        TaskSlotTable {
            resource_id,
            slots: vec![TaskSlotState::Free; n as usize],
        }
    }

    /// Number of slots.
    pub fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    /// True without slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Reserves slot `index` for `allocation_id` of `job_id`. Idempotent for the same allocation.
    pub fn allocate(
        &mut self,
        index: u32,
        job_id: JobId,
        allocation_id: AllocationId,
    ) -> Result<(), TaskExecutorError> {
        let slots = self.len();
        let slot = self
            .slots
            .get_mut(index as usize)
            .ok_or(TaskExecutorError::NoSuchSlot {
                slot_index: index,
                slots,
            })?;
        match *slot {
            TaskSlotState::Free => {
                *slot = TaskSlotState::Allocated {
                    job_id,
                    allocation_id,
                };
                Ok(())
            }
            other => match other.allocation() {
                Some((current, _)) if current == allocation_id => Ok(()),
                Some((current, _)) => Err(TaskExecutorError::SlotOccupied {
                    slot_index: index,
                    current,
                }),
                None => Ok(()),
            },
        }
    }

    /// Marks the job's slot with this allocation active (accepted, or a task arrived for it).
    pub fn mark_active(&mut self, job_id: JobId, allocation_id: AllocationId) -> bool {
        for slot in &mut self.slots {
            if slot.allocation() == Some((allocation_id, job_id)) {
                *slot = TaskSlotState::Active {
                    job_id,
                    allocation_id,
                };
                return true;
            }
        }
        false
    }

    /// Marks an active slot allocated-but-inactive again (its JobMaster was lost).
    pub fn mark_inactive(&mut self, allocation_id: AllocationId) -> bool {
        for slot in &mut self.slots {
            if let TaskSlotState::Active {
                job_id,
                allocation_id: a,
            } = *slot
            {
                if a == allocation_id {
                    *slot = TaskSlotState::Allocated {
                        job_id,
                        allocation_id,
                    };
                    return true;
                }
            }
        }
        false
    }

    /// Frees the slot with this allocation; returns its slot id and job.
    pub fn free(&mut self, allocation_id: AllocationId) -> Option<(SlotId, JobId)> {
        let resource_id = self.resource_id;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some((a, job_id)) = slot.allocation() {
                if a == allocation_id {
                    *slot = TaskSlotState::Free;
                    return Some((
                        SlotId {
                            resource_id,
                            slot_index: i as u32,
                        },
                        job_id,
                    ));
                }
            }
        }
        None
    }

    /// The state of the slot with this allocation.
    pub fn state_of(&self, allocation_id: AllocationId) -> Option<TaskSlotState> {
        self.slots
            .iter()
            .find(|s| s.allocation().is_some_and(|(a, _)| a == allocation_id))
            .copied()
    }

    /// True if the allocation is an active slot of the job.
    pub fn is_active(&self, job_id: JobId, allocation_id: AllocationId) -> bool {
        self.slots.contains(&TaskSlotState::Active {
            job_id,
            allocation_id,
        })
    }

    /// The allocations of a job with their slot indices.
    pub fn allocations_of(&self, job_id: JobId) -> Vec<(AllocationId, u32)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.allocation() {
                Some((a, j)) if j == job_id => Some((a, i as u32)),
                _ => None,
            })
            .collect()
    }

    /// Every slot, as the ResourceManager sees it.
    pub fn report(&self) -> SlotReport {
        SlotReport(
            self.slots
                .iter()
                .enumerate()
                .map(|(i, s)| SlotStatus {
                    slot_id: SlotId {
                        resource_id: self.resource_id,
                        slot_index: i as u32,
                    },
                    allocation: s.allocation(),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_activate_free() {
        let mut t = TaskSlotTable::new(ResourceId::from_u128(1), 2);
        let (job, a) = (JobId::generate(), AllocationId::generate());
        t.allocate(0, job, a).expect("free slot");
        t.allocate(0, job, a)
            .expect("same allocation is idempotent");
        let other = AllocationId::generate();
        assert_eq!(
            t.allocate(0, job, other),
            Err(TaskExecutorError::SlotOccupied {
                slot_index: 0,
                current: a
            })
        );
        assert_eq!(
            t.allocate(5, job, other),
            Err(TaskExecutorError::NoSuchSlot {
                slot_index: 5,
                slots: 2
            })
        );
        assert!(!t.is_active(job, a));
        assert!(t.mark_active(job, a));
        assert!(t.is_active(job, a));
        assert!(
            !t.mark_active(JobId::generate(), a),
            "another job's activation fails"
        );
        assert_eq!(t.allocations_of(job), vec![(a, 0)]);
        assert_eq!(t.report().0[0].allocation, Some((a, job)));
        assert!(t.mark_inactive(a));
        assert_eq!(
            t.state_of(a),
            Some(TaskSlotState::Allocated {
                job_id: job,
                allocation_id: a
            })
        );
        let (slot, j) = t.free(a).expect("freed");
        assert_eq!((slot.slot_index, j), (0, job));
        assert_eq!(t.free(a), None);
        assert!(t.report().0.iter().all(|s| s.allocation.is_none()));
    }
}
