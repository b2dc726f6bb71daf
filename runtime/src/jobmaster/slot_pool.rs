//! The slots a JobMaster holds. Flink: `DeclarativeSlotPool` with eager scheduling
//! (`scheduleEager`: a slot for every subtask group, then deploy all).
//!
//! Pure logic. The JobMaster declares how many slots it needs; offers are accepted up to that
//! number, the rest rejected (Flink scenario 24). Slot sharing follows Flink's default group: one
//! slot runs subtask *k* of every vertex, so a job needs as many slots as its largest parallelism.

use std::collections::BTreeMap;

use crate::jobmaster::gateway::SlotOffer;
use crate::types::{AllocationId, ResourceId};

/// A slot the pool holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PooledSlot {
    /// The allocation.
    pub allocation_id: AllocationId,
    /// Its TaskExecutor.
    pub resource_id: ResourceId,
    /// Its index there.
    pub slot_index: u32,
    /// The subtask group it serves (subtask index), once assigned.
    pub group: Option<u32>,
}

/// The slot pool of one JobMaster.
#[derive(Debug, Default)]
pub struct SlotPool {
    required: u32,
    slots: BTreeMap<AllocationId, PooledSlot>,
}

impl SlotPool {
    /// An empty pool.
    pub fn new() -> Self {
        SlotPool::default()
    }

    /// Sets how many slots are needed.
    pub fn set_required(&mut self, n: u32) {
        self.required = n;
    }

    /// How many slots are needed.
    pub fn required(&self) -> u32 {
        self.required
    }

    /// How many slots are held.
    pub fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    /// True when no slot is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// True when every needed slot is held.
    pub fn is_complete(&self) -> bool {
        self.len() >= self.required
    }

    /// Accepts the offers that are already held (idempotent) or still needed; returns them.
    pub fn offer(&mut self, resource_id: ResourceId, offers: &[SlotOffer]) -> Vec<SlotOffer> {
        let mut accepted = Vec::new();
        for offer in offers {
            if let Some(held) = self.slots.get(&offer.allocation_id) {
                if held.resource_id == resource_id {
                    accepted.push(*offer);
                }
                continue;
            }
            if self.len() < self.required {
                self.slots.insert(
                    offer.allocation_id,
                    PooledSlot {
                        allocation_id: offer.allocation_id,
                        resource_id,
                        slot_index: offer.slot_index,
                        group: None,
                    },
                );
                accepted.push(*offer);
            }
        }
        accepted
    }

    /// Gives each held slot a subtask group `0..required` and returns group → slot. Slots keep
    /// the group they have (a restart after a lost TaskExecutor moves only the groups that
    /// lost their slot); groups without a slot take the unassigned slots in a deterministic
    /// order (by TaskExecutor, then slot index).
    pub fn assign_groups(&mut self) -> BTreeMap<u32, PooledSlot> {
        let mut groups = BTreeMap::new();
        for slot in self.slots.values() {
            if let Some(group) = slot.group {
                groups.insert(group, slot.clone());
            }
        }
        let mut free: Vec<&mut PooledSlot> = self
            .slots
            .values_mut()
            .filter(|s| s.group.is_none())
            .collect();
        free.sort_by_key(|s| (s.resource_id, s.slot_index));
        let mut free = free.into_iter();
        for group in 0..self.required {
            if groups.contains_key(&group) {
                continue;
            }
            let Some(slot) = free.next() else {
                break;
            };
            slot.group = Some(group);
            groups.insert(group, slot.clone());
        }
        groups
    }

    /// Removes the slots of a TaskExecutor; returns them.
    pub fn release_task_manager(&mut self, resource_id: ResourceId) -> Vec<PooledSlot> {
        let gone: Vec<AllocationId> = self
            .slots
            .values()
            .filter(|s| s.resource_id == resource_id)
            .map(|s| s.allocation_id)
            .collect();
        gone.iter().filter_map(|a| self.slots.remove(a)).collect()
    }

    /// Removes every slot; returns them (to free them on their TaskExecutors).
    pub fn release_all(&mut self) -> Vec<PooledSlot> {
        std::mem::take(&mut self.slots).into_values().collect()
    }

    /// Every held slot.
    pub fn slots(&self) -> impl Iterator<Item = &PooledSlot> {
        self.slots.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(i: u32) -> SlotOffer {
        SlotOffer {
            allocation_id: AllocationId::generate(),
            slot_index: i,
        }
    }

    #[test]
    fn accepts_up_to_the_requirement_and_rejects_the_rest() {
        let mut pool = SlotPool::new();
        pool.set_required(3);
        let tm1 = ResourceId::from_u128(1);
        let tm2 = ResourceId::from_u128(2);
        let first = [offer(0), offer(1)];
        assert_eq!(pool.offer(tm1, &first), first.to_vec());
        assert!(!pool.is_complete());
        let second = [offer(0), offer(1)];
        assert_eq!(
            pool.offer(tm2, &second),
            vec![second[0]],
            "one more was needed"
        );
        assert!(pool.is_complete());
        assert_eq!(
            pool.offer(tm1, &first),
            first.to_vec(),
            "a repeated offer is accepted again"
        );
        assert_eq!(
            pool.offer(tm2, &first),
            vec![],
            "another TaskExecutor cannot claim them"
        );
        let groups = pool.assign_groups();
        assert_eq!(groups.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(groups[&2].resource_id, tm2);
        assert_eq!(pool.release_task_manager(tm1).len(), 2);
        assert_eq!(pool.len(), 1);
        // After a loss, the surviving slot keeps its group; a new slot takes a lost group.
        let tm3 = ResourceId::from_u128(3);
        assert_eq!(pool.offer(tm3, &[offer(0)]).len(), 1);
        let groups = pool.assign_groups();
        assert_eq!(groups[&2].resource_id, tm2, "the survivor keeps group 2");
        assert_eq!(groups[&0].resource_id, tm3, "the newcomer takes group 0");
        assert!(!groups.contains_key(&1), "group 1 still waits for a slot");
        pool.release_task_manager(tm3);
        assert_eq!(pool.release_all().len(), 1);
        assert!(pool.is_empty());
    }
}
