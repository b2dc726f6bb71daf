//! Which slot belongs to which job. Flink: `SlotManager` (declarative, `FineGrainedSlotManager`).
//!
//! Pure logic without actix types: the ResourceManager feeds it TaskExecutor registrations, slot
//! reports and job requirements, and [`SlotManager::check`] answers with the slot requests to send.
//!
//! # Invariants
//!
//! - A slot is Free, Pending (requested from its TaskExecutor, not yet acknowledged) or Allocated,
//!   and only ever for one allocation id.
//! - A job never holds more slots (pending + allocated) than it declared, except when it lowered
//!   its requirement: slots are never taken away here, the JobMaster frees what it no longer needs.
//! - Requests spread over TaskExecutors: the next slot comes from the TaskExecutor with the most
//!   free slots (Flink's `cluster.evenly-spread-out-slots`), so a job uses every TaskExecutor.

use std::collections::{BTreeMap, HashMap};

use crate::resourcemanager::gateway::SlotReport;
use crate::types::{AllocationId, JobId, JobMasterId, ResourceId, SlotId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Pending {
        job_id: JobId,
        allocation_id: AllocationId,
    },
    Allocated {
        job_id: JobId,
        allocation_id: AllocationId,
    },
}

/// A job's declared need.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    slots: u32,
    job_master_id: JobMasterId,
    address: String,
}

/// A slot request to send to a TaskExecutor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// The slot.
    pub slot_id: SlotId,
    /// The job.
    pub job_id: JobId,
    /// The new allocation.
    pub allocation_id: AllocationId,
    /// The job's JobMaster.
    pub job_master_id: JobMasterId,
    /// Its address.
    pub address: String,
}

/// The slot bookkeeping of a ResourceManager.
#[derive(Debug, Default)]
pub struct SlotManager {
    // BTreeMap: a stable slot order makes decisions deterministic.
    slots: BTreeMap<SlotId, SlotState>,
    requirements: HashMap<JobId, Requirement>,
}

impl SlotManager {
    /// An empty slot manager.
    pub fn new() -> Self {
        SlotManager::default()
    }

    /// Adds a TaskExecutor's slots as reported (replacing anything known about it).
    pub fn register_task_manager(&mut self, resource_id: ResourceId, report: &SlotReport) {
        self.unregister_task_manager(resource_id);
        // A TaskExecutor speaks only for its own slots.
        for status in report
            .0
            .iter()
            .filter(|s| s.slot_id.resource_id == resource_id)
        {
            let state = match status.allocation {
                Some((allocation_id, job_id)) => SlotState::Allocated {
                    job_id,
                    allocation_id,
                },
                None => SlotState::Free,
            };
            self.slots.insert(status.slot_id, state);
        }
    }

    /// Removes a TaskExecutor; returns the allocations it held.
    pub fn unregister_task_manager(
        &mut self,
        resource_id: ResourceId,
    ) -> Vec<(JobId, AllocationId)> {
        let gone: Vec<SlotId> = self
            .slots
            .keys()
            .filter(|s| s.resource_id == resource_id)
            .copied()
            .collect();
        gone.into_iter()
            .filter_map(|slot| match self.slots.remove(&slot) {
                Some(
                    SlotState::Pending {
                        job_id,
                        allocation_id,
                    }
                    | SlotState::Allocated {
                        job_id,
                        allocation_id,
                    },
                ) => Some((job_id, allocation_id)),
                _ => None,
            })
            .collect()
    }

    /// Reconciles with a TaskExecutor's report (from a heartbeat): what it says is allocated is;
    /// what it says is free and is not pending here becomes free.
    pub fn report(&mut self, resource_id: ResourceId, report: &SlotReport) {
        for status in report
            .0
            .iter()
            .filter(|s| s.slot_id.resource_id == resource_id)
        {
            let Some(state) = self.slots.get_mut(&status.slot_id) else {
                continue;
            };
            match (status.allocation, *state) {
                (Some((allocation_id, job_id)), _) => {
                    *state = SlotState::Allocated {
                        job_id,
                        allocation_id,
                    }
                }
                (None, SlotState::Allocated { .. }) => *state = SlotState::Free,
                (None, _) => {}
            }
        }
    }

    /// Sets how many slots a job needs in total.
    pub fn set_requirements(
        &mut self,
        job_id: JobId,
        slots: u32,
        job_master_id: JobMasterId,
        address: String,
    ) {
        self.requirements.insert(
            job_id,
            Requirement {
                slots,
                job_master_id,
                address,
            },
        );
    }

    /// Drops a job's requirements (it reached a globally terminal status).
    pub fn clear_requirements(&mut self, job_id: JobId) {
        self.requirements.remove(&job_id);
    }

    /// The slots a job holds, pending or allocated.
    pub fn held_by(&self, job_id: JobId) -> u32 {
        self.slots
            .values()
            .filter(|s| match s {
                SlotState::Pending { job_id: j, .. } | SlotState::Allocated { job_id: j, .. } => {
                    *j == job_id
                }
                SlotState::Free => false,
            })
            .count() as u32
    }

    /// Matches requirements to free slots; the returned requests are marked pending.
    pub fn check(&mut self) -> Vec<SlotRequest> {
        let mut requests = Vec::new();
        let mut jobs: Vec<(JobId, Requirement)> = self
            .requirements
            .iter()
            .map(|(j, r)| (*j, r.clone()))
            .collect();
        jobs.sort_by_key(|(j, _)| *j);
        for (job_id, req) in jobs {
            let mut missing = req.slots.saturating_sub(self.held_by(job_id));
            while missing > 0 {
                let Some(slot_id) = self.pick_free_slot() else {
                    return requests;
                };
                let allocation_id = AllocationId::generate();
                self.slots.insert(
                    slot_id,
                    SlotState::Pending {
                        job_id,
                        allocation_id,
                    },
                );
                requests.push(SlotRequest {
                    slot_id,
                    job_id,
                    allocation_id,
                    job_master_id: req.job_master_id,
                    address: req.address.clone(),
                });
                missing -= 1;
            }
        }
        requests
    }

    /// A free slot on the TaskExecutor with the most free slots.
    fn pick_free_slot(&self) -> Option<SlotId> {
        let mut free: HashMap<ResourceId, Vec<SlotId>> = HashMap::new();
        for (slot, state) in &self.slots {
            if *state == SlotState::Free {
                free.entry(slot.resource_id).or_default().push(*slot);
            }
        }
        free.into_iter()
            .max_by(|(ra, a), (rb, b)| a.len().cmp(&b.len()).then(rb.cmp(ra)))
            .and_then(|(_, slots)| slots.first().copied())
    }

    /// The TaskExecutor acknowledged a request.
    pub fn allocation_confirmed(&mut self, slot_id: SlotId, allocation_id: AllocationId) {
        if let Some(state) = self.slots.get_mut(&slot_id) {
            if let SlotState::Pending {
                job_id,
                allocation_id: a,
            } = *state
            {
                if a == allocation_id {
                    *state = SlotState::Allocated {
                        job_id,
                        allocation_id,
                    };
                }
            }
        }
    }

    /// A request failed, or a slot was freed: the slot is free again if it still has that
    /// allocation.
    pub fn slot_freed(&mut self, slot_id: SlotId, allocation_id: AllocationId) {
        if let Some(state) = self.slots.get_mut(&slot_id) {
            match *state {
                SlotState::Pending {
                    allocation_id: a, ..
                }
                | SlotState::Allocated {
                    allocation_id: a, ..
                } if a == allocation_id => *state = SlotState::Free,
                _ => {}
            }
        }
    }

    /// (total, free) slots.
    pub fn totals(&self) -> (u32, u32) {
        let total = self.slots.len() as u32;
        let free = self
            .slots
            .values()
            .filter(|s| **s == SlotState::Free)
            .count() as u32;
        (total, free)
    }

    /// (total, free) slots of one TaskExecutor.
    pub fn totals_of(&self, resource_id: ResourceId) -> (u32, u32) {
        let mine = self
            .slots
            .iter()
            .filter(|(s, _)| s.resource_id == resource_id);
        let (mut total, mut free) = (0, 0);
        for (_, state) in mine {
            total += 1;
            if *state == SlotState::Free {
                free += 1;
            }
        }
        (total, free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resourcemanager::gateway::SlotStatus;

    fn report(tm: u128, slots: u32) -> (ResourceId, SlotReport) {
        let resource_id = ResourceId::from_u128(tm);
        let statuses = (0..slots)
            .map(|i| SlotStatus {
                slot_id: SlotId {
                    resource_id,
                    slot_index: i,
                },
                allocation: None,
            })
            .collect();
        (resource_id, SlotReport(statuses))
    }

    #[test]
    fn requirements_are_met_spread_over_task_managers() {
        let mut sm = SlotManager::new();
        let (tm1, r1) = report(1, 2);
        let (tm2, r2) = report(2, 2);
        sm.register_task_manager(tm1, &r1);
        sm.register_task_manager(tm2, &r2);
        let job = JobId::generate();
        sm.set_requirements(job, 3, JobMasterId::generate(), "jm".into());
        let requests = sm.check();
        assert_eq!(requests.len(), 3);
        let on_tm1 = requests
            .iter()
            .filter(|r| r.slot_id.resource_id == tm1)
            .count();
        assert!(on_tm1 == 1 || on_tm1 == 2, "spread over both");
        assert!(sm.check().is_empty(), "pending requests count as held");
        assert_eq!(sm.totals(), (4, 1));
        for r in &requests {
            sm.allocation_confirmed(r.slot_id, r.allocation_id);
        }
        assert_eq!(sm.held_by(job), 3);
    }

    #[test]
    fn failed_requests_and_freed_slots_are_retried() {
        let mut sm = SlotManager::new();
        let (tm, r) = report(1, 1);
        sm.register_task_manager(tm, &r);
        let job = JobId::generate();
        sm.set_requirements(job, 1, JobMasterId::generate(), "jm".into());
        let first = sm.check().pop().expect("one request");
        sm.slot_freed(first.slot_id, first.allocation_id);
        let second = sm.check().pop().expect("requested again");
        assert_ne!(first.allocation_id, second.allocation_id);
        // A stale free for the old allocation does nothing.
        sm.slot_freed(first.slot_id, first.allocation_id);
        assert!(sm.check().is_empty());
    }

    #[test]
    fn not_enough_slots_waits_for_more() {
        let mut sm = SlotManager::new();
        let job = JobId::generate();
        sm.set_requirements(job, 2, JobMasterId::generate(), "jm".into());
        assert!(sm.check().is_empty());
        let (tm, r) = report(1, 1);
        sm.register_task_manager(tm, &r);
        assert_eq!(sm.check().len(), 1);
        let (tm2, r2) = report(2, 1);
        sm.register_task_manager(tm2, &r2);
        assert_eq!(sm.check().len(), 1);
        assert_eq!(sm.held_by(job), 2);
    }

    #[test]
    fn losing_a_task_manager_returns_its_allocations() {
        let mut sm = SlotManager::new();
        let (tm, r) = report(1, 2);
        sm.register_task_manager(tm, &r);
        let job = JobId::generate();
        sm.set_requirements(job, 2, JobMasterId::generate(), "jm".into());
        let requests = sm.check();
        let lost = sm.unregister_task_manager(tm);
        assert_eq!(lost.len(), 2);
        assert!(lost
            .iter()
            .all(|(j, a)| *j == job && requests.iter().any(|r| r.allocation_id == *a)));
        assert_eq!(sm.totals(), (0, 0));
        sm.clear_requirements(job);
        let (tm2, r2) = report(2, 2);
        sm.register_task_manager(tm2, &r2);
        assert!(
            sm.check().is_empty(),
            "cleared requirements request nothing"
        );
    }

    #[test]
    fn reports_reconcile_allocations() {
        let mut sm = SlotManager::new();
        let (tm, mut r) = report(1, 2);
        sm.register_task_manager(tm, &r);
        let job = JobId::generate();
        r.0[0].allocation = Some((AllocationId::generate(), job));
        sm.report(tm, &r);
        assert_eq!(sm.held_by(job), 1);
        // Another TaskExecutor cannot speak for these slots.
        let mut forged = r.clone();
        forged.0[1].allocation = Some((AllocationId::generate(), job));
        sm.report(ResourceId::from_u128(99), &forged);
        sm.register_task_manager(ResourceId::from_u128(99), &forged);
        assert_eq!(sm.held_by(job), 1);
        r.0[0].allocation = None;
        sm.report(tm, &r);
        assert_eq!(sm.held_by(job), 0);
        assert_eq!(sm.totals_of(tm), (2, 2));
    }
}
