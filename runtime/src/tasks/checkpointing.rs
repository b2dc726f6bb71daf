//! A streaming task's side of checkpointing: the mailbox its TaskExecutor posts checkpoint
//! messages to, the responder its acknowledgements go out through, and barrier alignment.
//! Flink: the task's `MailboxProcessor` (for `triggerCheckpoint` / `notifyCheckpointComplete`),
//! `SubtaskCheckpointCoordinator`, `CheckpointBarrierHandler` (aligned, exactly-once) and the
//! `CheckpointResponder`.
//!
//! # Invariants
//! - A task snapshots each checkpoint at most once, in increasing id order; barriers and
//!   triggers of a checkpoint not newer than the last one snapshotted are stale and ignored.
//! - Alignment: once a barrier arrived on a channel, that channel is blocked until every other
//!   channel delivered the same barrier or ended; a newer barrier aborts (declines) an
//!   unfinished older alignment. So the snapshot holds exactly the records before the barrier
//!   of every input: exactly-once.
//! - The state is copied on the task thread (the part that must not race with processing);
//!   writing it to storage and acknowledging happen on a writer thread.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{storage, SubtaskKey, TaskStateHandle};
use crate::network::GateWaker;
use crate::types::JobId;

/// A message from the TaskExecutor to a running task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskMail {
    /// Take checkpoint `id` now (sent to source tasks, which then emit its barrier).
    /// Flink: `triggerCheckpoint`.
    Trigger {
        /// The checkpoint.
        id: u64,
        /// When the JobMaster triggered it (millis).
        timestamp: i64,
        /// A savepoint rather than a checkpoint.
        savepoint: bool,
        /// A stop-with-savepoint: emit nothing more until it completes or is aborted.
        terminate: bool,
    },
    /// Checkpoint `id` completed. `last` is true when every task had ended its input when it
    /// took its part: the job's final checkpoint, after which tasks finish. Flink:
    /// `notifyCheckpointComplete`.
    Complete {
        /// The checkpoint.
        id: u64,
        /// The job's final checkpoint.
        last: bool,
        /// A stop-with-savepoint completed: finish now.
        stop: bool,
    },
    /// Checkpoint `id` was aborted. Flink: `notifyCheckpointAborted`.
    Abort {
        /// The checkpoint.
        id: u64,
    },
}

#[derive(Default)]
struct MailboxInner {
    queue: Mutex<VecDeque<TaskMail>>,
    has_mail: AtomicBool,
    cond: Condvar,
    waker: Mutex<Option<GateWaker>>,
}

/// Where the TaskExecutor posts [`TaskMail`] for one task. Cheap to check from the task's hot
/// loop (one atomic load); posting wakes a task blocked on its input gate or waiting for mail.
#[derive(Clone, Default)]
pub struct TaskMailbox(Arc<MailboxInner>);

impl std::fmt::Debug for TaskMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskMailbox")
            .field("has_mail", &self.has_mail())
            .finish_non_exhaustive()
    }
}

impl TaskMailbox {
    /// Queues `mail` and wakes the task.
    pub fn post(&self, mail: TaskMail) {
        let mut queue = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.push_back(mail);
        self.0.has_mail.store(true, Ordering::Release);
        self.0.cond.notify_all();
        drop(queue);
        let waker = self.0.waker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(waker) = waker.as_ref() {
            waker.wake();
        }
    }

    /// True when mail is waiting (one atomic load).
    #[inline]
    pub fn has_mail(&self) -> bool {
        self.0.has_mail.load(Ordering::Acquire)
    }

    /// Takes every waiting mail, oldest first.
    pub fn drain(&self) -> Vec<TaskMail> {
        let mut queue = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
        self.0.has_mail.store(false, Ordering::Release);
        queue.drain(..).collect()
    }

    /// Blocks until mail arrives or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut queue = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
        while queue.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            queue = self
                .0
                .cond
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Wakes this gate's reader whenever mail is posted.
    pub(crate) fn set_waker(&self, waker: GateWaker) {
        *self.0.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker);
    }

    /// Wakes whoever waits (cancellation).
    pub fn wake(&self) {
        let _queue = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
        self.0.cond.notify_all();
    }
}

/// What a task reports about a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointResponse {
    /// The task's part is stored. Flink: `acknowledgeCheckpoint`.
    Acknowledge {
        /// The checkpoint.
        id: u64,
        /// Where its state is.
        state: Option<TaskStateHandle>,
        /// The task had ended its input when it took its part.
        ended_input: bool,
        /// Time on the task thread (state copy and barrier), millis.
        sync_millis: u64,
        /// Time writing the state, millis.
        async_millis: u64,
    },
    /// The task could not take its part. Flink: `declineCheckpoint`.
    Decline {
        /// The checkpoint.
        id: u64,
        /// Why.
        reason: String,
        /// Set when a newer checkpoint's barrier overtook this one during alignment: not a
        /// failure (Flink: `CHECKPOINT_DECLINED_SUBSUMED`).
        subsumed_by: Option<u64>,
    },
}

/// Sends a task's checkpoint responses (through its TaskExecutor to the JobMaster).
pub type CheckpointResponder = Arc<dyn Fn(CheckpointResponse) + Send + Sync>;

/// Where a restored task's state is. Part of the deployment descriptor. Flink:
/// `JobManagerTaskRestore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRestore {
    /// The checkpoint (or savepoint) restored.
    pub checkpoint_id: u64,
    /// Its directory.
    pub checkpoint_dir: PathBuf,
    /// This subtask's state in it; `None` for a stateless subtask.
    pub handle: Option<TaskStateHandle>,
}

/// A task's checkpointing setup.
pub struct TaskCheckpointing {
    /// The job.
    pub job_id: JobId,
    /// The checkpoint storage's base directory (`execution.checkpointing.dir`).
    pub base_dir: PathBuf,
    /// Which subtask this is, as the metadata names it.
    pub key: SubtaskKey,
    /// Where messages arrive.
    pub mailbox: TaskMailbox,
    /// Where responses go.
    pub responder: CheckpointResponder,
    /// The state to start from.
    pub restore: Option<TaskRestore>,
}

impl std::fmt::Debug for TaskCheckpointing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCheckpointing")
            .field("base_dir", &self.base_dir)
            .field("key", &self.key)
            .field("restore", &self.restore)
            .finish_non_exhaustive()
    }
}

/// What the aligner decided for a barrier or a channel's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Alignment {
    /// Nothing to do yet (or a stale barrier).
    Wait,
    /// Block this channel until the alignment completes.
    Block(usize),
    /// Every input delivered barrier `id`: snapshot, then resume every channel.
    Snapshot {
        /// The checkpoint.
        id: u64,
        /// Its trigger timestamp.
        timestamp: i64,
        /// A savepoint.
        savepoint: bool,
    },
    /// A newer barrier superseded an unfinished alignment: decline `aborted`, resume every
    /// channel, then block `channel` for the new one.
    Supersede {
        /// The checkpoint given up.
        aborted: u64,
        /// The channel that brought the newer barrier.
        channel: usize,
    },
}

/// Aligned barrier handling of one task's input gate: pure bookkeeping, the task blocks and
/// resumes channels as told. Flink: `SingleCheckpointBarrierHandler` in aligned mode.
#[derive(Debug)]
pub(crate) struct BarrierAligner {
    channels: usize,
    ended: BTreeSet<usize>,
    current: Option<Pending>,
    /// The newest checkpoint snapshotted (or given up): older barriers are stale.
    pub(crate) last_id: u64,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    timestamp: i64,
    savepoint: bool,
    seen: BTreeSet<usize>,
}

impl BarrierAligner {
    pub(crate) fn new(channels: usize) -> Self {
        BarrierAligner {
            channels,
            ended: BTreeSet::new(),
            current: None,
            last_id: 0,
        }
    }

    /// The checkpoint being aligned, if any.
    #[cfg(test)]
    pub(crate) fn aligning(&self) -> Option<u64> {
        self.current.as_ref().map(|p| p.id)
    }

    fn complete(&mut self) -> Option<Alignment> {
        let pending = self.current.as_ref()?;
        let covered =
            (0..self.channels).all(|c| pending.seen.contains(&c) || self.ended.contains(&c));
        if !covered {
            return None;
        }
        let pending = self.current.take()?;
        self.last_id = pending.id;
        Some(Alignment::Snapshot {
            id: pending.id,
            timestamp: pending.timestamp,
            savepoint: pending.savepoint,
        })
    }

    /// A barrier arrived on `channel`. Returns the steps in order.
    pub(crate) fn on_barrier(
        &mut self,
        channel: usize,
        id: u64,
        timestamp: i64,
        savepoint: bool,
    ) -> Vec<Alignment> {
        if id <= self.last_id {
            return vec![Alignment::Wait];
        }
        let mut steps = Vec::new();
        match &mut self.current {
            Some(p) if p.id == id => {
                p.seen.insert(channel);
            }
            Some(p) if p.id > id => return vec![Alignment::Wait],
            Some(p) => {
                let aborted = p.id;
                steps.push(Alignment::Supersede { aborted, channel });
                self.current = Some(Pending {
                    id,
                    timestamp,
                    savepoint,
                    seen: BTreeSet::from([channel]),
                });
            }
            None => {
                self.current = Some(Pending {
                    id,
                    timestamp,
                    savepoint,
                    seen: BTreeSet::from([channel]),
                });
            }
        }
        match self.complete() {
            Some(snapshot) => steps.push(snapshot),
            None => steps.push(Alignment::Block(channel)),
        }
        steps
    }

    /// `channel` delivered its end of partition: it counts as aligned from now on.
    pub(crate) fn on_channel_ended(&mut self, channel: usize) -> Option<Alignment> {
        self.ended.insert(channel);
        self.complete()
    }

    /// Checkpoint `id` was aborted: stop aligning it (the caller resumes every channel).
    pub(crate) fn abort(&mut self, id: u64) -> bool {
        if self.current.as_ref().is_some_and(|p| p.id == id) {
            self.current = None;
            self.last_id = self.last_id.max(id);
            return true;
        }
        false
    }
}

/// Writes a task's state for checkpoint `id` on a writer thread and responds.
pub(crate) fn write_and_acknowledge(
    cp: &TaskCheckpointing,
    id: u64,
    bytes: Vec<u8>,
    ended_input: bool,
    sync_millis: u64,
) {
    let dir = storage::checkpoint_dir(&cp.base_dir, cp.job_id, id);
    let key = cp.key;
    let responder = Arc::clone(&cp.responder);
    let spawned = std::thread::Builder::new()
        .name(format!("checkpoint {id} writer"))
        .spawn(move || {
            let started = Instant::now();
            let response = std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))
                .and_then(|()| {
                    storage::write_task_state(&dir, &key, &bytes).map_err(|e| e.to_string())
                });
            responder(match response {
                Ok(handle) => CheckpointResponse::Acknowledge {
                    id,
                    state: Some(handle),
                    ended_input,
                    sync_millis,
                    async_millis: started.elapsed().as_millis() as u64,
                },
                Err(reason) => CheckpointResponse::Decline {
                    id,
                    reason,
                    subsumed_by: None,
                },
            });
        });
    if let Err(err) = spawned {
        (cp.responder)(CheckpointResponse::Decline {
            id,
            reason: format!("cannot start the state writer: {err}"),
            subsumed_by: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_id(steps: &[Alignment]) -> Option<u64> {
        steps.iter().find_map(|s| match s {
            Alignment::Snapshot { id, .. } => Some(*id),
            _ => None,
        })
    }

    #[test]
    fn one_channel_snapshots_at_once() {
        let mut a = BarrierAligner::new(1);
        assert_eq!(snapshot_id(&a.on_barrier(0, 1, 10, false)), Some(1));
        assert_eq!(
            a.on_barrier(0, 1, 10, false),
            vec![Alignment::Wait],
            "stale"
        );
    }

    #[test]
    fn channels_block_until_all_delivered_the_barrier() {
        let mut a = BarrierAligner::new(3);
        assert_eq!(a.on_barrier(1, 5, 0, false), vec![Alignment::Block(1)]);
        assert_eq!(a.aligning(), Some(5));
        assert_eq!(a.on_barrier(0, 5, 0, false), vec![Alignment::Block(0)]);
        assert_eq!(snapshot_id(&a.on_barrier(2, 5, 0, false)), Some(5));
        assert_eq!(a.aligning(), None);
    }

    #[test]
    fn an_ended_channel_counts_as_aligned() {
        let mut a = BarrierAligner::new(2);
        assert_eq!(a.on_barrier(0, 2, 0, false), vec![Alignment::Block(0)]);
        let done = a.on_channel_ended(1).expect("completes");
        assert!(matches!(done, Alignment::Snapshot { id: 2, .. }));
        // From now on one barrier is enough.
        assert_eq!(snapshot_id(&a.on_barrier(0, 3, 0, false)), Some(3));
    }

    #[test]
    fn a_newer_barrier_supersedes_and_older_ones_are_stale() {
        let mut a = BarrierAligner::new(2);
        a.on_barrier(0, 1, 0, false);
        let steps = a.on_barrier(1, 2, 0, false);
        assert_eq!(
            steps,
            vec![
                Alignment::Supersede {
                    aborted: 1,
                    channel: 1
                },
                Alignment::Block(1)
            ]
        );
        assert_eq!(a.on_barrier(1, 1, 0, false), vec![Alignment::Wait]);
        assert_eq!(snapshot_id(&a.on_barrier(0, 2, 0, false)), Some(2));
        assert!(!a.abort(9));
    }

    #[test]
    fn the_mailbox_wakes_a_waiter() {
        let mailbox = TaskMailbox::default();
        let poster = mailbox.clone();
        let t = std::thread::spawn(move || poster.post(TaskMail::Abort { id: 1 }));
        mailbox.wait(Duration::from_secs(10));
        t.join().expect("joins");
        assert!(mailbox.has_mail());
        assert_eq!(mailbox.drain(), vec![TaskMail::Abort { id: 1 }]);
        assert!(!mailbox.has_mail());
    }
}
