//! The checkpoint coordinator's bookkeeping. Flink: `CheckpointCoordinator`, `PendingCheckpoint`,
//! `CheckpointRequestDecider` (limits), `CompletedCheckpointStore` with `CheckpointSubsumeHelper`
//! (retention) and `CheckpointFailureManager` (tolerable failures).
//!
//! Pure logic owned by the JobMaster: it sends no message and touches no file. Each call returns
//! what the JobMaster has to do (trigger, write the metadata, notify or abort tasks, discard
//! directories). Time is passed in: `now: Instant` for deadlines and pauses, `now_ms` (epoch
//! millis) for timestamps. See the [module docs](super) for the invariants.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::stats::{
    CheckpointConfigView, CheckpointStatistics, CheckpointStatisticsBase, CheckpointStatsView,
    CheckpointStatus, ExternalizedCheckpointInfo, RestoredCheckpointStatistics, StatsTracker,
    TaskCheckpointStatistics,
};
use super::storage::{self, METADATA_FILE};
use super::{
    CheckpointError, CheckpointKind, CheckpointMetadata, CheckpointSettings, SubtaskKey,
    TaskStateHandle,
};
use crate::types::{ExecutionAttemptId, JobId, JobVertexId};

/// A checkpoint just triggered: what the JobMaster sends to the tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTrigger {
    /// The checkpoint id.
    pub id: u64,
    /// The trigger timestamp, epoch millis.
    pub timestamp: i64,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// The directory the tasks write their state into and the metadata goes to: `chk-<id>` under
    /// the checkpoint directory, or a fresh `savepoint-…` directory. Flink: the
    /// `CheckpointStorageLocation`.
    pub location: PathBuf,
}

/// Every expected task acknowledged: the metadata to write to `location` before
/// [`CheckpointCoordinator::complete`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcknowledgedCheckpoint {
    /// Where to write it ([`storage::write_metadata`]).
    pub location: PathBuf,
    /// The finished metadata, tasks sorted by subtask.
    pub metadata: CheckpointMetadata,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// Recorded; more acknowledgements are expected.
    Pending,
    /// Recorded, and it was the last: write the metadata, then `complete`.
    AllAcknowledged(AcknowledgedCheckpoint),
    /// Ignored: the id is not pending (late, aborted, completed, never triggered), or the attempt
    /// is not one the checkpoint waits for, or the subtask is not the attempt's.
    Unknown,
    /// Ignored: this attempt already acknowledged this checkpoint.
    Duplicate,
}

/// A completed checkpoint or savepoint. Flink: `CompletedCheckpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedCheckpoint {
    /// The checkpoint id.
    pub id: u64,
    /// The trigger timestamp, epoch millis.
    pub timestamp: i64,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// The checkpoint directory (where `_metadata` is).
    pub path: PathBuf,
    /// Its metadata: what to restore.
    pub metadata: CheckpointMetadata,
    /// The sum of its state files.
    pub state_size: u64,
    /// Trigger to last acknowledgement, millis (Flink's end-to-end duration).
    pub duration_ms: i64,
    /// When it completed (the metadata was written), epoch millis.
    pub completed_at: i64,
    /// Subtasks that acknowledged.
    pub num_acks: u32,
    /// Whether its directory is deleted once subsumed: true for the job's own checkpoints;
    /// false for savepoints and for a checkpoint restored from another job (Flink's `NO_CLAIM`).
    pub discard_on_subsume: bool,
}

/// What a completion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedOutcome {
    /// The completed checkpoint.
    pub completed: CompletedCheckpoint,
    /// Older checkpoints that left the store: discard their directories.
    pub subsumed: Vec<CompletedCheckpoint>,
    /// Older pending checkpoints aborted because this one completed (Flink: subsumed pending
    /// checkpoints): tell their tasks and discard their directories.
    pub aborted: Vec<AbortedCheckpoint>,
    /// The attempts to notify of the completion (Flink: `confirmCheckpoint`).
    pub to_notify: Vec<ExecutionAttemptId>,
}

/// A pending checkpoint that was aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedCheckpoint {
    /// The checkpoint id.
    pub id: u64,
    /// The trigger timestamp, epoch millis.
    pub timestamp: i64,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// Its directory, to discard.
    pub location: PathBuf,
    /// Why.
    pub error: CheckpointError,
    /// The attempts it was triggered with (Flink: `abortCheckpoint` to each).
    pub to_notify: Vec<ExecutionAttemptId>,
}

#[derive(Debug, Clone)]
struct PendingCheckpoint {
    id: u64,
    timestamp: i64,
    kind: CheckpointKind,
    location: PathBuf,
    /// `None` when the timeout does not fit an `Instant`: never expires.
    deadline: Option<Instant>,
    expected: BTreeMap<ExecutionAttemptId, SubtaskKey>,
    acked: BTreeMap<ExecutionAttemptId, Option<TaskStateHandle>>,
    /// When each acknowledgement arrived, epoch millis (the per-vertex statistics).
    acked_at: BTreeMap<ExecutionAttemptId, i64>,
    latest_ack_ms: i64,
    acked_size: u64,
}

impl PendingCheckpoint {
    fn fully_acknowledged(&self) -> bool {
        self.acked.len() == self.expected.len()
    }

    fn to_notify(&self) -> Vec<ExecutionAttemptId> {
        self.expected.keys().copied().collect()
    }

    fn metadata(&self, job_id: JobId, fingerprint: Option<String>) -> CheckpointMetadata {
        let mut tasks: Vec<(SubtaskKey, Option<TaskStateHandle>)> = self
            .acked
            .iter()
            .filter_map(|(attempt, handle)| {
                self.expected.get(attempt).map(|key| (*key, handle.clone()))
            })
            .collect();
        tasks.sort_by_key(|(key, _)| *key);
        CheckpointMetadata {
            version: CheckpointMetadata::VERSION,
            job_id,
            checkpoint_id: self.id,
            timestamp: self.timestamp,
            kind: self.kind,
            tasks,
            fingerprint,
        }
    }

    fn end_to_end(&self) -> i64 {
        if self.latest_ack_ms < 0 {
            -1
        } else {
            (self.latest_ack_ms - self.timestamp).max(0)
        }
    }

    fn stats_base(&self, status: CheckpointStatus) -> CheckpointStatisticsBase {
        CheckpointStatisticsBase {
            id: self.id,
            status,
            is_savepoint: self.kind.is_savepoint(),
            savepoint_format: self.kind.is_savepoint().then(|| "CANONICAL".to_owned()),
            trigger_timestamp: self.timestamp,
            latest_ack_timestamp: self.latest_ack_ms,
            checkpointed_size: self.acked_size,
            state_size: self.acked_size,
            end_to_end_duration: self.end_to_end(),
            alignment_buffered: 0,
            processed_data: 0,
            persisted_data: 0,
            num_subtasks: u32::try_from(self.expected.len()).unwrap_or(u32::MAX),
            num_acknowledged_subtasks: u32::try_from(self.acked.len()).unwrap_or(u32::MAX),
            checkpoint_type: self.kind.rest_name().to_owned(),
            tasks: self.task_stats(status),
        }
    }

    /// Each vertex's part, by vertex id. Flink: `TaskStateStats` per `JobVertexID`.
    fn task_stats(&self, status: CheckpointStatus) -> BTreeMap<String, TaskCheckpointStatistics> {
        let mut tasks: BTreeMap<JobVertexId, TaskCheckpointStatistics> = BTreeMap::new();
        for (attempt, key) in &self.expected {
            let task = tasks
                .entry(key.vertex)
                .or_insert_with(|| TaskCheckpointStatistics {
                    id: self.id,
                    status,
                    latest_ack_timestamp: -1,
                    checkpointed_size: 0,
                    state_size: 0,
                    end_to_end_duration: -1,
                    alignment_buffered: 0,
                    processed_data: 0,
                    persisted_data: 0,
                    num_subtasks: 0,
                    num_acknowledged_subtasks: 0,
                });
            task.num_subtasks += 1;
            if let Some(handle) = self.acked.get(attempt) {
                let size = handle.as_ref().map_or(0, |h| h.size);
                task.num_acknowledged_subtasks += 1;
                task.checkpointed_size += size;
                task.state_size += size;
                if let Some(&at) = self.acked_at.get(attempt) {
                    task.latest_ack_timestamp = task.latest_ack_timestamp.max(at);
                    task.end_to_end_duration = (task.latest_ack_timestamp - self.timestamp).max(0);
                }
            }
        }
        tasks
            .into_iter()
            .map(|(vertex, task)| (vertex.to_string(), task))
            .collect()
    }
}

/// The checkpoint coordinator of one job. Flink: `CheckpointCoordinator`.
#[derive(Debug)]
pub struct CheckpointCoordinator {
    job_id: JobId,
    settings: CheckpointSettings,
    fingerprint: Option<String>,
    next_id: u64,
    pending: BTreeMap<u64, PendingCheckpoint>,
    /// Completed checkpoints, oldest first, ids increasing.
    store: VecDeque<CompletedCheckpoint>,
    /// Whether the periodic scheduler runs (the job is RUNNING).
    periodic_running: bool,
    /// When the periodic interval counts from: the scheduler's start or the last checkpoint
    /// trigger.
    periodic_base: Option<Instant>,
    last_completion: Option<Instant>,
    consecutive_failures: u32,
    stats: StatsTracker,
}

impl CheckpointCoordinator {
    /// A coordinator with no checkpoint yet; the first id is 1.
    pub fn new(job_id: JobId, settings: CheckpointSettings) -> Self {
        CheckpointCoordinator {
            job_id,
            settings,
            fingerprint: None,
            next_id: 1,
            pending: BTreeMap::new(),
            store: VecDeque::new(),
            periodic_running: false,
            periodic_base: None,
            last_completion: None,
            consecutive_failures: 0,
            stats: StatsTracker::default(),
        }
    }

    /// Records the program fingerprint written into every checkpoint's metadata.
    pub fn with_fingerprint(mut self, fingerprint: Option<String>) -> Self {
        self.fingerprint = fingerprint;
        self
    }

    /// The job.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// The settings.
    pub fn settings(&self) -> &CheckpointSettings {
        &self.settings
    }

    /// Starts the periodic scheduler (the job went RUNNING): the first periodic checkpoint is due
    /// one interval from `now`. Flink: `startCheckpointScheduler`.
    pub fn start_periodic(&mut self, now: Instant) {
        self.periodic_running = true;
        self.periodic_base = Some(now);
    }

    /// Stops the periodic scheduler (the job left RUNNING). Flink: `stopCheckpointScheduler`.
    pub fn stop_periodic(&mut self) {
        self.periodic_running = false;
    }

    /// Whether a periodic checkpoint should be triggered now: periodic checkpointing is on and
    /// started, an interval passed since the last trigger (or the start), the minimum pause since
    /// the last completion passed, and fewer than `max_concurrent` checkpoints are pending.
    pub fn should_trigger_periodic(&self, now: Instant) -> bool {
        self.next_periodic_due(now) == Some(Duration::ZERO)
    }

    /// How long until a periodic checkpoint is due (zero when overdue), for scheduling a timer.
    /// `None` when periodic checkpointing is off or stopped, or while `max_concurrent`
    /// checkpoints are pending: ask again after the next completion or abort.
    pub fn next_periodic_due(&self, now: Instant) -> Option<Duration> {
        let interval = self.settings.interval?;
        if !self.periodic_running || self.pending.len() >= self.max_concurrent() {
            return None;
        }
        let base = self.periodic_base?;
        let mut due = base.checked_add(interval)?;
        if let Some(done) = self.last_completion {
            if let Some(after_pause) = done.checked_add(self.settings.min_pause) {
                due = due.max(after_pause);
            }
        }
        Some(due.saturating_duration_since(now))
    }

    /// How long until the earliest pending checkpoint expires, for scheduling [`Self::expire`].
    pub fn next_expiry(&self, now: Instant) -> Option<Duration> {
        self.pending
            .values()
            .filter_map(|p| p.deadline)
            .min()
            .map(|d| d.saturating_duration_since(now))
    }

    fn max_concurrent(&self) -> usize {
        usize::try_from(self.settings.max_concurrent.max(1)).unwrap_or(usize::MAX)
    }

    /// Starts a checkpoint or savepoint that waits for an acknowledgement from each attempt of
    /// `to_ack`; the JobMaster sends the trigger (to the sources when all tasks run).
    ///
    /// Checkpoints are refused while `max_concurrent` are pending or within `min_pause` of the
    /// last completion, and without a checkpoint directory; savepoints are not limited, and go to
    /// a fresh directory under the configured savepoint directory. Ids increase from 1; a refused
    /// trigger uses none.
    pub fn trigger(
        &mut self,
        now: Instant,
        now_ms: i64,
        kind: CheckpointKind,
        to_ack: Vec<ExecutionAttemptId>,
    ) -> Result<PendingTrigger, CheckpointError> {
        self.trigger_with_target(now, now_ms, kind, to_ack, None)
    }

    /// [`Self::trigger`] with a savepoint target directory (REST's `target-directory`) instead of
    /// the configured one; ignored for checkpoints.
    pub fn trigger_with_target(
        &mut self,
        now: Instant,
        now_ms: i64,
        kind: CheckpointKind,
        to_ack: Vec<ExecutionAttemptId>,
        savepoint_target: Option<PathBuf>,
    ) -> Result<PendingTrigger, CheckpointError> {
        if to_ack.is_empty() {
            return Err(CheckpointError::NotRunning);
        }
        let id = self.next_id;
        let location = match kind {
            CheckpointKind::Checkpoint => {
                if self.pending.len() >= self.max_concurrent() {
                    return Err(CheckpointError::TooManyConcurrent {
                        pending: self.pending.len(),
                        max: self.settings.max_concurrent,
                    });
                }
                if let Some(done) = self.last_completion {
                    let since = now.saturating_duration_since(done);
                    if since < self.settings.min_pause {
                        return Err(CheckpointError::MinPause {
                            remaining: self.settings.min_pause - since,
                        });
                    }
                }
                let base = self
                    .settings
                    .dir
                    .as_deref()
                    .ok_or(CheckpointError::NoCheckpointDirectory)?;
                storage::checkpoint_dir(base, self.job_id, id)
            }
            CheckpointKind::Savepoint { .. } => {
                let base = savepoint_target
                    .or_else(|| self.settings.savepoint_dir.clone())
                    .ok_or(CheckpointError::NoSavepointDirectory)?;
                storage::new_savepoint_dir(&base, self.job_id)
            }
        };
        self.next_id += 1;
        let expected: BTreeMap<ExecutionAttemptId, SubtaskKey> = to_ack
            .into_iter()
            .map(|a| (a, SubtaskKey::from(a)))
            .collect();
        let pending = PendingCheckpoint {
            id,
            timestamp: now_ms,
            kind,
            location: location.clone(),
            deadline: now.checked_add(self.settings.timeout),
            expected,
            acked: BTreeMap::new(),
            acked_at: BTreeMap::new(),
            latest_ack_ms: -1,
            acked_size: 0,
        };
        self.stats.report_pending(CheckpointStatistics::InProgress {
            base: pending.stats_base(CheckpointStatus::InProgress),
        });
        tracing::info!(
            job_id = %self.job_id,
            checkpoint_id = id,
            kind = kind.rest_name(),
            tasks = pending.expected.len(),
            location = %location.display(),
            "triggering checkpoint"
        );
        self.pending.insert(id, pending);
        if kind == CheckpointKind::Checkpoint {
            self.periodic_base = Some(now);
        }
        Ok(PendingTrigger {
            id,
            timestamp: now_ms,
            kind,
            location,
        })
    }

    /// Records a task's acknowledgement: its state handle (`None` when stateless) for the subtask
    /// `key`, which must be the one `attempt` runs. Only an expected attempt's first ack of a
    /// pending checkpoint counts; see [`AckOutcome`].
    pub fn acknowledge(
        &mut self,
        id: u64,
        attempt: ExecutionAttemptId,
        handle: Option<TaskStateHandle>,
        key: SubtaskKey,
        now_ms: i64,
    ) -> AckOutcome {
        let job_id = self.job_id;
        let Some(pending) = self.pending.get_mut(&id) else {
            tracing::debug!(%job_id, checkpoint_id = id, %attempt, "ignoring ack of a checkpoint that is not pending");
            return AckOutcome::Unknown;
        };
        match pending.expected.get(&attempt) {
            None => {
                tracing::debug!(%job_id, checkpoint_id = id, %attempt, "ignoring ack from an attempt the checkpoint does not wait for");
                return AckOutcome::Unknown;
            }
            Some(expected) if *expected != key => {
                tracing::warn!(%job_id, checkpoint_id = id, %attempt, ?key, "ignoring ack for a subtask the attempt does not run");
                return AckOutcome::Unknown;
            }
            Some(_) => {}
        }
        if pending.acked.contains_key(&attempt) {
            return AckOutcome::Duplicate;
        }
        pending.acked_size += handle.as_ref().map_or(0, |h| h.size);
        pending.acked.insert(attempt, handle);
        pending.acked_at.insert(attempt, now_ms);
        pending.latest_ack_ms = pending.latest_ack_ms.max(now_ms);
        let entry = CheckpointStatistics::InProgress {
            base: pending.stats_base(CheckpointStatus::InProgress),
        };
        let outcome = if pending.fully_acknowledged() {
            AckOutcome::AllAcknowledged(AcknowledgedCheckpoint {
                location: pending.location.clone(),
                metadata: pending.metadata(job_id, self.fingerprint.clone()),
            })
        } else {
            AckOutcome::Pending
        };
        self.stats.update_pending(entry);
        outcome
    }

    /// Completes a fully acknowledged checkpoint whose metadata was written to `metadata_path`
    /// (the `_metadata` file or its directory). A checkpoint enters the store, subsuming the
    /// oldest beyond `num_retained` and aborting older pending checkpoints; a savepoint is not
    /// retained. Resets the failure count.
    ///
    /// Fails with `NotPending` if the checkpoint was aborted meanwhile (the JobMaster then
    /// discards the directory it wrote) and `NotAcknowledged` if acks are missing (it stays
    /// pending).
    pub fn complete(
        &mut self,
        id: u64,
        metadata_path: &Path,
        now: Instant,
        now_ms: i64,
    ) -> Result<CompletedOutcome, CheckpointError> {
        let pending = self
            .pending
            .get(&id)
            .ok_or(CheckpointError::NotPending { checkpoint_id: id })?;
        if !pending.fully_acknowledged() {
            return Err(CheckpointError::NotAcknowledged {
                checkpoint_id: id,
                missing: pending.expected.len() - pending.acked.len(),
            });
        }
        let Some(pending) = self.pending.remove(&id) else {
            return Err(CheckpointError::NotPending { checkpoint_id: id });
        };
        let path = if metadata_path.file_name() == Some(METADATA_FILE.as_ref()) {
            metadata_path
                .parent()
                .unwrap_or(metadata_path)
                .to_path_buf()
        } else {
            metadata_path.to_path_buf()
        };
        let metadata = pending.metadata(self.job_id, self.fingerprint.clone());
        let completed = CompletedCheckpoint {
            id,
            timestamp: pending.timestamp,
            kind: pending.kind,
            path: path.clone(),
            state_size: pending.acked_size,
            duration_ms: pending.end_to_end().max(0),
            completed_at: now_ms,
            num_acks: u32::try_from(pending.acked.len()).unwrap_or(u32::MAX),
            discard_on_subsume: !pending.kind.is_savepoint(),
            metadata,
        };
        self.last_completion = Some(now);
        self.consecutive_failures = 0;
        self.stats
            .report_completed(CheckpointStatistics::Completed {
                base: pending.stats_base(CheckpointStatus::Completed),
                external_path: storage::external_pointer(&path),
                discarded: false,
            });
        tracing::info!(
            job_id = %self.job_id,
            checkpoint_id = id,
            kind = pending.kind.rest_name(),
            size = completed.state_size,
            duration_ms = completed.duration_ms,
            path = %path.display(),
            "completed checkpoint"
        );

        let mut aborted = Vec::new();
        let mut subsumed = Vec::new();
        if pending.kind == CheckpointKind::Checkpoint {
            let older: Vec<u64> = self
                .pending
                .range(..id)
                .filter(|(_, p)| p.kind == CheckpointKind::Checkpoint)
                .map(|(id, _)| *id)
                .collect();
            for older_id in older {
                let error = CheckpointError::Subsumed {
                    checkpoint_id: older_id,
                    by: id,
                };
                aborted.extend(self.abort(older_id, error, now_ms));
            }
            self.store.push_back(completed.clone());
            let retained = self.settings.num_retained.max(1);
            while self.store.len() > retained {
                let Some(old) = self.store.pop_front() else {
                    break;
                };
                if old.discard_on_subsume {
                    self.stats.mark_discarded(old.id);
                    subsumed.push(old);
                }
            }
        }
        Ok(CompletedOutcome {
            completed,
            subsumed,
            aborted,
            to_notify: pending.to_notify(),
        })
    }

    /// Aborts a fully acknowledged checkpoint whose metadata could not be written. Counts as a
    /// failure. `None` if it is not pending.
    pub fn complete_failed(
        &mut self,
        id: u64,
        reason: String,
        now_ms: i64,
    ) -> Option<AbortedCheckpoint> {
        let error = CheckpointError::FinalizeFailed {
            checkpoint_id: id,
            reason,
        };
        self.abort(id, error, now_ms)
    }

    /// A task declined the checkpoint: it is aborted, and counts as a failure. Ignored (`None`)
    /// when the id is not pending, the attempt is not expected, or every task already
    /// acknowledged.
    pub fn decline(
        &mut self,
        id: u64,
        attempt: ExecutionAttemptId,
        reason: String,
        now_ms: i64,
    ) -> Option<AbortedCheckpoint> {
        let error = CheckpointError::Declined {
            checkpoint_id: id,
            attempt,
            reason,
        };
        self.abort_declined(id, attempt, error, now_ms)
    }

    /// A task gave up checkpoint `id` because the barrier of the newer checkpoint `by` overtook
    /// it during alignment: the checkpoint is aborted as subsumed, which does not count against
    /// `tolerable_failures` (Flink: `CHECKPOINT_DECLINED_SUBSUMED`).
    pub fn decline_subsumed(
        &mut self,
        id: u64,
        attempt: ExecutionAttemptId,
        by: u64,
        now_ms: i64,
    ) -> Option<AbortedCheckpoint> {
        let error = CheckpointError::Subsumed {
            checkpoint_id: id,
            by,
        };
        self.abort_declined(id, attempt, error, now_ms)
    }

    /// Aborts `id` with `error` for a decline by `attempt`, unless the decline does not count:
    /// the id is not pending, the attempt is not expected, or every task already acknowledged.
    fn abort_declined(
        &mut self,
        id: u64,
        attempt: ExecutionAttemptId,
        error: CheckpointError,
        now_ms: i64,
    ) -> Option<AbortedCheckpoint> {
        let pending = self.pending.get(&id)?;
        if !pending.expected.contains_key(&attempt) || pending.fully_acknowledged() {
            tracing::debug!(job_id = %self.job_id, checkpoint_id = id, %attempt, "ignoring decline");
            return None;
        }
        self.abort(id, error, now_ms)
    }

    /// Aborts every pending checkpoint whose timeout passed at `now`; each counts as a failure.
    /// This includes a fully acknowledged one whose metadata is still being written: its
    /// `complete` then fails with `NotPending` and the JobMaster discards the directory.
    pub fn expire(&mut self, now: Instant, now_ms: i64) -> Vec<AbortedCheckpoint> {
        let timeout = self.settings.timeout;
        let due: Vec<u64> = self
            .pending
            .values()
            .filter(|p| p.deadline.is_some_and(|d| d <= now))
            .map(|p| p.id)
            .collect();
        due.into_iter()
            .filter_map(|id| {
                let error = CheckpointError::Expired {
                    checkpoint_id: id,
                    timeout,
                };
                self.abort(id, error, now_ms)
            })
            .collect()
    }

    /// Aborts every pending checkpoint (failover, cancellation, suspension). Not counted as
    /// failures.
    pub fn abort_all(&mut self, reason: String, now_ms: i64) -> Vec<AbortedCheckpoint> {
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        ids.into_iter()
            .filter_map(|id| {
                let error = CheckpointError::Aborted {
                    checkpoint_id: id,
                    reason: reason.clone(),
                };
                self.abort(id, error, now_ms)
            })
            .collect()
    }

    fn abort(&mut self, id: u64, error: CheckpointError, now_ms: i64) -> Option<AbortedCheckpoint> {
        let pending = self.pending.remove(&id)?;
        if error.counts_as_failure() && !pending.kind.is_savepoint() {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        }
        let mut base = pending.stats_base(CheckpointStatus::Failed);
        base.end_to_end_duration = (now_ms - pending.timestamp).max(0);
        self.stats.report_failed(CheckpointStatistics::Failed {
            base,
            failure_timestamp: now_ms,
            failure_message: Some(error.to_string()),
        });
        tracing::info!(job_id = %self.job_id, checkpoint_id = id, %error, "checkpoint aborted");
        Some(AbortedCheckpoint {
            id,
            timestamp: pending.timestamp,
            kind: pending.kind,
            to_notify: pending.to_notify(),
            location: pending.location,
            error,
        })
    }

    /// Whether more consecutive checkpoints failed than `tolerable_failures`: the JobMaster fails
    /// the job. Savepoint failures and aborts (failover, subsumption) do not count; a completion
    /// resets the count. Flink: `CheckpointFailureManager`.
    pub fn failure_budget_exceeded(&self) -> bool {
        self.consecutive_failures > self.settings.tolerable_failures
    }

    /// Consecutive counted failures so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Resets the failure count, once the JobMaster acted on an exceeded budget.
    pub fn reset_failure_count(&mut self) {
        self.consecutive_failures = 0;
    }

    /// The newest retained checkpoint (or restored snapshot): what a failover restores.
    pub fn latest_completed(&self) -> Option<&CompletedCheckpoint> {
        self.store.back()
    }

    /// The retained checkpoints, oldest first.
    pub fn completed_checkpoints(&self) -> impl Iterator<Item = &CompletedCheckpoint> {
        self.store.iter()
    }

    /// The pending checkpoint ids, increasing.
    pub fn pending_ids(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    /// The directory of a pending checkpoint.
    pub fn pending_location(&self, id: u64) -> Option<&Path> {
        self.pending.get(&id).map(|p| p.location.as_path())
    }

    /// Makes the next id at least `last_id + 1` (after restoring checkpoint `last_id`). Flink:
    /// `CheckpointIDCounter.setCount`.
    pub fn restore_counter(&mut self, last_id: u64) {
        self.next_id = self.next_id.max(last_id.saturating_add(1));
    }

    /// Records that the job restored the checkpoint or savepoint in `dir` (at start or on a
    /// failover): REST's `restored` count and latest, ids continue above it, and it becomes the
    /// latest completed checkpoint if the store has nothing as new, so a failover before the next
    /// checkpoint restores it again. It is discarded when subsumed only if it is one of this
    /// job's own checkpoints.
    pub fn set_restored(&mut self, dir: &Path, metadata: &CheckpointMetadata, now_ms: i64) {
        let id = metadata.checkpoint_id;
        self.restore_counter(id);
        self.stats.report_restored(RestoredCheckpointStatistics {
            id,
            restore_timestamp: now_ms,
            is_savepoint: metadata.kind.is_savepoint(),
            external_path: storage::external_pointer(dir),
        });
        if self.store.back().is_some_and(|latest| latest.id >= id) {
            return;
        }
        let own = metadata.job_id == self.job_id && metadata.kind == CheckpointKind::Checkpoint;
        self.store.push_back(CompletedCheckpoint {
            id,
            timestamp: metadata.timestamp,
            kind: metadata.kind,
            path: dir.to_path_buf(),
            metadata: metadata.clone(),
            state_size: metadata.state_size(),
            duration_ms: 0,
            completed_at: now_ms,
            num_acks: u32::try_from(metadata.tasks.len()).unwrap_or(u32::MAX),
            discard_on_subsume: own,
        });
    }

    /// The statistics for `GET /jobs/{id}/checkpoints`.
    pub fn stats(&self) -> CheckpointStatsView {
        self.stats.view()
    }

    /// The configuration for `GET /jobs/{id}/checkpoints/config`.
    pub fn config_view(&self) -> CheckpointConfigView {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        CheckpointConfigView {
            mode: "exactly_once".into(),
            interval: self.settings.interval.map_or(i64::MAX, millis),
            timeout: millis(self.settings.timeout),
            min_pause: millis(self.settings.min_pause),
            max_concurrent: i64::from(self.settings.max_concurrent),
            externalization: ExternalizedCheckpointInfo {
                enabled: false,
                delete_on_cancellation: true,
            },
            state_backend: "HashMapStateBackend".into(),
            checkpoint_storage: if self.settings.dir.is_some() {
                "FileSystemCheckpointStorage".into()
            } else {
                "JobManagerCheckpointStorage".into()
            },
            unaligned_checkpoints: false,
            tolerable_failed_checkpoints: i64::from(self.settings.tolerable_failures),
            aligned_checkpoint_timeout: 0,
            checkpoints_after_tasks_finish: false,
            state_changelog_enabled: false,
            changelog_periodic_materialization_interval: 600_000,
            changelog_storage: "memory".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::stats::HISTORY_SIZE;
    use crate::types::{ExecutionGraphId, ExecutionVertexId, JobVertexId};
    use serde_json::Value;

    const SEC: Duration = Duration::from_secs(1);

    fn job() -> JobId {
        JobId::from_u128(0xaf5f890e0fe95a33eacd05209ff65c97)
    }

    fn settings() -> CheckpointSettings {
        CheckpointSettings {
            dir: Some(PathBuf::from("/ckpt")),
            savepoint_dir: Some(PathBuf::from("/savepoints")),
            ..CheckpointSettings::default()
        }
    }

    fn coordinator(settings: CheckpointSettings) -> CheckpointCoordinator {
        CheckpointCoordinator::new(job(), settings).with_fingerprint(Some("fp".into()))
    }

    fn attempt(vertex: u128, subtask: u32) -> ExecutionAttemptId {
        ExecutionAttemptId {
            execution_graph_id: ExecutionGraphId::from_u128(1),
            vertex: ExecutionVertexId {
                job_vertex_id: JobVertexId::from_u128(vertex),
                subtask_index: subtask,
            },
            attempt_number: 0,
        }
    }

    /// A source with two subtasks and a sink with one.
    fn tasks() -> Vec<ExecutionAttemptId> {
        vec![attempt(1, 0), attempt(1, 1), attempt(2, 0)]
    }

    fn handle(a: ExecutionAttemptId, size: u64) -> Option<TaskStateHandle> {
        Some(TaskStateHandle {
            path: PathBuf::from(storage::state_file_name(&a.into())),
            size,
            sha256: "00".repeat(32),
        })
    }

    /// Acks every task (the sink statelessly); returns what the last ack gave.
    fn ack_all(c: &mut CheckpointCoordinator, id: u64, now_ms: i64) -> AcknowledgedCheckpoint {
        let attempts = tasks();
        let last = attempts.len() - 1;
        for (i, a) in attempts.into_iter().enumerate() {
            let h = if a.vertex.job_vertex_id == JobVertexId::from_u128(2) {
                None
            } else {
                handle(a, 100)
            };
            match c.acknowledge(id, a, h, a.into(), now_ms) {
                AckOutcome::Pending if i < last => {}
                AckOutcome::AllAcknowledged(done) if i == last => return done,
                other => panic!("ack {i} of checkpoint {id}: {other:?}"),
            }
        }
        unreachable!()
    }

    /// Triggers, acks and completes one checkpoint of `kind` at `t`.
    fn checkpoint(
        c: &mut CheckpointCoordinator,
        t: Instant,
        ms: i64,
        kind: CheckpointKind,
    ) -> CompletedOutcome {
        let trigger = c.trigger(t, ms, kind, tasks()).unwrap();
        let done = ack_all(c, trigger.id, ms + 20);
        c.complete(
            trigger.id,
            &done.location.join(METADATA_FILE),
            t + Duration::from_millis(30),
            ms + 30,
        )
        .unwrap()
    }

    #[test]
    fn trigger_all_ack_complete_and_stats() {
        let mut c = coordinator(settings());
        let t0 = Instant::now();
        let trigger = c
            .trigger(t0, 1_000, CheckpointKind::Checkpoint, tasks())
            .unwrap();
        assert_eq!(
            trigger,
            PendingTrigger {
                id: 1,
                timestamp: 1_000,
                kind: CheckpointKind::Checkpoint,
                location: PathBuf::from(format!("/ckpt/{}/chk-1", job())),
            }
        );
        assert_eq!(c.pending_ids(), vec![1]);
        assert_eq!(c.pending_location(1), Some(trigger.location.as_path()));

        // In progress, before any ack: Flink's -1s.
        let stats = c.stats();
        assert_eq!((stats.counts.total, stats.counts.in_progress), (1, 1));
        let CheckpointStatistics::InProgress { base } = &stats.history[0] else {
            panic!("{:?}", stats.history[0]);
        };
        assert_eq!(
            (base.latest_ack_timestamp, base.end_to_end_duration),
            (-1, -1)
        );
        assert_eq!((base.num_subtasks, base.num_acknowledged_subtasks), (3, 0));

        let [a0, a1, sink] = tasks()[..] else {
            unreachable!()
        };
        assert_eq!(
            c.acknowledge(1, a1, handle(a1, 7), a1.into(), 1_010),
            AckOutcome::Pending
        );
        let base = c.stats().history[0].base().clone();
        assert_eq!(
            (base.latest_ack_timestamp, base.end_to_end_duration),
            (1_010, 10)
        );
        assert_eq!((base.num_acknowledged_subtasks, base.state_size), (1, 7));
        // Per vertex (Flink's `TaskStateStats`): the source has one of two acks, the sink none.
        let source = &base.tasks[&JobVertexId::from_u128(1).to_string()];
        assert_eq!(
            (
                source.num_subtasks,
                source.num_acknowledged_subtasks,
                source.checkpointed_size,
                source.latest_ack_timestamp,
                source.end_to_end_duration
            ),
            (2, 1, 7, 1_010, 10)
        );
        assert_eq!(source.status, CheckpointStatus::InProgress);
        let sink_stats = &base.tasks[&JobVertexId::from_u128(2).to_string()];
        assert_eq!(
            (
                sink_stats.num_subtasks,
                sink_stats.num_acknowledged_subtasks,
                sink_stats.checkpointed_size,
                sink_stats.latest_ack_timestamp,
                sink_stats.end_to_end_duration
            ),
            (1, 0, 0, -1, -1)
        );
        assert_eq!(base.tasks.len(), 2);
        assert_eq!(
            c.acknowledge(1, a0, handle(a0, 5), a0.into(), 1_020),
            AckOutcome::Pending
        );
        let AckOutcome::AllAcknowledged(done) = c.acknowledge(1, sink, None, sink.into(), 1_035)
        else {
            panic!("the last ack completes the acknowledgements");
        };
        assert_eq!(done.location, trigger.location);
        let meta = &done.metadata;
        assert_eq!(
            (
                meta.version,
                meta.job_id,
                meta.checkpoint_id,
                meta.timestamp
            ),
            (CheckpointMetadata::VERSION, job(), 1, 1_000)
        );
        assert_eq!(meta.fingerprint.as_deref(), Some("fp"));
        assert_eq!(
            meta.tasks,
            vec![
                (a0.into(), handle(a0, 5)),
                (a1.into(), handle(a1, 7)),
                (sink.into(), None)
            ],
            "every subtask, sorted, the stateless one with None"
        );

        let outcome = c
            .complete(1, &done.location.join(METADATA_FILE), t0 + SEC, 1_050)
            .unwrap();
        assert!(outcome.subsumed.is_empty() && outcome.aborted.is_empty());
        assert_eq!(outcome.to_notify, tasks());
        let completed = &outcome.completed;
        assert_eq!(
            completed.path, trigger.location,
            "the directory, not the file"
        );
        assert_eq!(
            (
                completed.state_size,
                completed.duration_ms,
                completed.completed_at
            ),
            (12, 35, 1_050)
        );
        assert_eq!(completed.num_acks, 3);
        assert_eq!(&completed.metadata, meta);
        assert_eq!(c.latest_completed(), Some(completed));
        assert!(c.pending_ids().is_empty());

        let stats = c.stats();
        assert_eq!(
            (
                stats.counts.total,
                stats.counts.in_progress,
                stats.counts.completed,
                stats.counts.failed,
                stats.counts.restored
            ),
            (1, 0, 1, 0, 0)
        );
        let latest = stats.latest.completed.clone().unwrap();
        assert_eq!(stats.history, vec![latest.clone()]);
        let CheckpointStatistics::Completed {
            base,
            external_path,
            discarded,
        } = latest
        else {
            panic!()
        };
        assert_eq!(base.status, CheckpointStatus::Completed);
        assert_eq!(
            (base.trigger_timestamp, base.latest_ack_timestamp),
            (1_000, 1_035)
        );
        assert_eq!((base.end_to_end_duration, base.checkpointed_size), (35, 12));
        assert_eq!(base.checkpoint_type, "CHECKPOINT");
        assert_eq!(base.savepoint_format, None);
        assert_eq!(external_path, format!("file:/ckpt/{}/chk-1", job()));
        assert!(!discarded);
        assert_eq!(stats.summary.end_to_end_duration.max, 35);
        assert_eq!(stats.summary.state_size.p50, 12.0);
        assert!(stats.latest.savepoint.is_none() && stats.latest.failed.is_none());
    }

    #[test]
    fn ids_increase_and_continue_after_a_restore() {
        let mut c = coordinator(settings());
        let t = Instant::now();
        assert_eq!(
            checkpoint(&mut c, t, 0, CheckpointKind::Checkpoint)
                .completed
                .id,
            1
        );
        assert_eq!(
            checkpoint(&mut c, t, 0, CheckpointKind::Checkpoint)
                .completed
                .id,
            2
        );
        c.restore_counter(41);
        assert_eq!(
            checkpoint(&mut c, t, 0, CheckpointKind::Checkpoint)
                .completed
                .id,
            42
        );
        c.restore_counter(10);
        let sp = CheckpointKind::Savepoint { terminate: false };
        assert_eq!(checkpoint(&mut c, t, 0, sp).completed.id, 43);
    }

    #[test]
    fn refused_triggers() {
        let mut c = coordinator(CheckpointSettings::default());
        let t = Instant::now();
        assert_eq!(
            c.trigger(t, 0, CheckpointKind::Checkpoint, vec![]),
            Err(CheckpointError::NotRunning)
        );
        assert_eq!(
            c.trigger(t, 0, CheckpointKind::Checkpoint, tasks()),
            Err(CheckpointError::NoCheckpointDirectory)
        );
        let sp = CheckpointKind::Savepoint { terminate: true };
        assert_eq!(
            c.trigger(t, 0, sp, tasks()),
            Err(CheckpointError::NoSavepointDirectory)
        );
        // A savepoint with a target directory works without configuration.
        let trigger = c
            .trigger_with_target(t, 0, sp, tasks(), Some(PathBuf::from("/target")))
            .unwrap();
        assert_eq!(trigger.id, 1, "refusals use no id");
        assert_eq!(trigger.location.parent(), Some(Path::new("/target")));
        let name = trigger.location.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("savepoint-af5f89-"), "{name}");
        assert_eq!(c.stats().counts.total, 1, "refusals are not counted");
    }

    #[test]
    fn decline_aborts() {
        let mut c = coordinator(settings());
        let t = Instant::now();
        let trigger = c
            .trigger(t, 100, CheckpointKind::Checkpoint, tasks())
            .unwrap();
        let [a0, a1, sink] = tasks()[..] else {
            unreachable!()
        };
        c.acknowledge(1, a0, handle(a0, 5), a0.into(), 110);

        // Not from an expected attempt, or for an unknown id: ignored.
        assert_eq!(c.decline(1, attempt(9, 0), "x".into(), 120), None);
        assert_eq!(c.decline(7, a1, "x".into(), 120), None);
        assert_eq!(c.pending_ids(), vec![1]);

        let aborted = c.decline(1, a1, "no space left".into(), 150).unwrap();
        assert_eq!(aborted.id, 1);
        assert_eq!(aborted.location, trigger.location);
        assert_eq!(aborted.to_notify, tasks());
        assert_eq!(
            aborted.error,
            CheckpointError::Declined {
                checkpoint_id: 1,
                attempt: a1,
                reason: "no space left".into()
            }
        );
        assert!(c.pending_ids().is_empty());
        // Late messages for it change nothing.
        assert_eq!(
            c.acknowledge(1, sink, None, sink.into(), 160),
            AckOutcome::Unknown
        );
        assert_eq!(c.decline(1, sink, "again".into(), 160), None);
        assert_eq!(
            c.complete(1, Path::new("/ckpt/x/chk-1"), t, 170),
            Err(CheckpointError::NotPending { checkpoint_id: 1 })
        );
        assert!(c.latest_completed().is_none());

        let stats = c.stats();
        assert_eq!((stats.counts.failed, stats.counts.in_progress), (1, 0));
        let Some(CheckpointStatistics::Failed {
            base,
            failure_timestamp,
            failure_message,
        }) = stats.latest.failed
        else {
            panic!("{:?}", stats.latest.failed);
        };
        assert_eq!(base.status, CheckpointStatus::Failed);
        assert_eq!((failure_timestamp, base.end_to_end_duration), (150, 50));
        assert_eq!(base.num_acknowledged_subtasks, 1);
        assert!(failure_message.unwrap().contains("no space left"));
        assert_eq!(stats.history[0].base().status, CheckpointStatus::Failed);
    }

    #[test]
    fn timeout_expires() {
        let mut c = coordinator(CheckpointSettings {
            timeout: Duration::from_secs(60),
            max_concurrent: 2,
            ..settings()
        });
        let t0 = Instant::now();
        c.trigger(t0, 0, CheckpointKind::Checkpoint, tasks())
            .unwrap();
        c.trigger(t0 + 10 * SEC, 10_000, CheckpointKind::Checkpoint, tasks())
            .unwrap();
        assert_eq!(c.next_expiry(t0), Some(60 * SEC));
        assert!(c
            .expire(t0 + 60 * SEC - Duration::from_millis(1), 59_999)
            .is_empty());

        let expired = c.expire(t0 + 60 * SEC, 60_000);
        assert_eq!(expired.len(), 1);
        assert_eq!(
            expired[0].error,
            CheckpointError::Expired {
                checkpoint_id: 1,
                timeout: 60 * SEC
            }
        );
        assert_eq!(c.pending_ids(), vec![2]);
        assert_eq!(c.next_expiry(t0 + 60 * SEC), Some(10 * SEC));
        assert_eq!(c.expire(t0 + 200 * SEC, 200_000)[0].id, 2);
        assert_eq!(c.next_expiry(t0), None);
        let a = tasks()[0];
        assert_eq!(
            c.acknowledge(2, a, None, a.into(), 0),
            AckOutcome::Unknown,
            "a late ack after expiry is ignored"
        );
        assert_eq!(c.stats().counts.failed, 2);
    }

    #[test]
    fn max_concurrent_and_min_pause() {
        let mut c = coordinator(CheckpointSettings {
            min_pause: 5 * SEC,
            ..settings()
        });
        let t0 = Instant::now();
        c.trigger(t0, 0, CheckpointKind::Checkpoint, tasks())
            .unwrap();
        assert_eq!(
            c.trigger(t0, 0, CheckpointKind::Checkpoint, tasks()),
            Err(CheckpointError::TooManyConcurrent { pending: 1, max: 1 })
        );
        // Savepoints are not limited.
        let sp = CheckpointKind::Savepoint { terminate: false };
        assert_eq!(c.trigger(t0, 0, sp, tasks()).unwrap().id, 2);

        let done = ack_all(&mut c, 1, 10);
        c.complete(1, &done.location, t0 + SEC, 1_000).unwrap();
        // The savepoint is still pending but does not hold back checkpoints... except through
        // the pending count, which includes it (as Flink's).
        assert_eq!(
            c.trigger(t0 + 2 * SEC, 0, CheckpointKind::Checkpoint, tasks()),
            Err(CheckpointError::TooManyConcurrent { pending: 1, max: 1 })
        );
        ack_all(&mut c, 2, 10);
        c.complete(2, Path::new("/savepoints/sp"), t0 + 2 * SEC, 2_000)
            .unwrap();
        assert_eq!(
            c.trigger(t0 + 3 * SEC, 0, CheckpointKind::Checkpoint, tasks()),
            Err(CheckpointError::MinPause { remaining: 4 * SEC }),
            "the pause counts from the last completion (the savepoint's)"
        );
        assert_eq!(
            c.trigger(t0 + 7 * SEC, 0, CheckpointKind::Checkpoint, tasks())
                .unwrap()
                .id,
            3
        );
    }

    #[test]
    fn periodic_scheduling() {
        let mut c = coordinator(CheckpointSettings {
            interval: Some(10 * SEC),
            min_pause: 15 * SEC,
            ..settings()
        });
        let t0 = Instant::now();
        assert_eq!(c.next_periodic_due(t0), None, "not started");
        assert!(!c.should_trigger_periodic(t0 + 100 * SEC));
        c.start_periodic(t0);
        assert_eq!(c.next_periodic_due(t0), Some(10 * SEC));
        assert!(!c.should_trigger_periodic(t0 + 9 * SEC));
        assert!(c.should_trigger_periodic(t0 + 10 * SEC));
        assert_eq!(c.next_periodic_due(t0 + 11 * SEC), Some(Duration::ZERO));

        c.trigger(t0 + 10 * SEC, 0, CheckpointKind::Checkpoint, tasks())
            .unwrap();
        assert_eq!(c.next_periodic_due(t0 + 10 * SEC), None, "one is pending");
        assert!(!c.should_trigger_periodic(t0 + 100 * SEC));
        let done = ack_all(&mut c, 1, 0);
        c.complete(1, &done.location, t0 + 12 * SEC, 0).unwrap();
        // Due at max(last trigger + interval, completion + min pause) = t0 + 27 s.
        assert_eq!(c.next_periodic_due(t0 + 12 * SEC), Some(15 * SEC));
        assert!(!c.should_trigger_periodic(t0 + 20 * SEC));
        assert!(c.should_trigger_periodic(t0 + 27 * SEC));

        c.stop_periodic();
        assert_eq!(c.next_periodic_due(t0 + 27 * SEC), None);
        c.start_periodic(t0 + 30 * SEC);
        assert_eq!(c.next_periodic_due(t0 + 30 * SEC), Some(10 * SEC));

        let off = coordinator(settings());
        assert_eq!(off.next_periodic_due(t0), None, "no interval: off");
    }

    #[test]
    fn retention_subsumes_the_oldest_and_returns_it() {
        let mut c = coordinator(CheckpointSettings {
            num_retained: 2,
            ..settings()
        });
        let t = Instant::now();
        let first = checkpoint(&mut c, t, 0, CheckpointKind::Checkpoint);
        assert!(first.subsumed.is_empty());
        assert!(checkpoint(&mut c, t, 0, CheckpointKind::Checkpoint)
            .subsumed
            .is_empty());
        let third = checkpoint(&mut c, t, 0, CheckpointKind::Checkpoint);
        assert_eq!(third.subsumed, vec![first.completed.clone()]);
        assert_eq!(
            c.completed_checkpoints().map(|c| c.id).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(c.latest_completed().map(|c| c.id), Some(3));

        let history = c.stats().history;
        let discarded: Vec<(u64, bool)> = history
            .iter()
            .map(|e| match e {
                CheckpointStatistics::Completed {
                    base, discarded, ..
                } => (base.id, *discarded),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(discarded, vec![(3, false), (2, false), (1, true)]);
    }

    #[test]
    fn savepoints_are_not_retained_or_subsumed() {
        let mut c = coordinator(settings());
        let t = Instant::now();
        let chk1 = checkpoint(&mut c, t, 0, CheckpointKind::Checkpoint);
        let sp = checkpoint(&mut c, t, 0, CheckpointKind::Savepoint { terminate: false });
        assert!(sp.subsumed.is_empty());
        assert!(!sp.completed.discard_on_subsume);
        assert_eq!(c.latest_completed().map(|c| c.id), Some(1));
        let chk3 = checkpoint(&mut c, t, 0, CheckpointKind::Checkpoint);
        assert_eq!(chk3.subsumed, vec![chk1.completed]);
        let sync = checkpoint(&mut c, t, 0, CheckpointKind::Savepoint { terminate: true });
        assert_eq!(sync.completed.id, 4);
        assert_eq!(c.latest_completed().map(|c| c.id), Some(3));

        let stats = c.stats();
        assert_eq!(stats.latest.completed.as_ref().map(|e| e.id()), Some(3));
        let savepoint = stats.latest.savepoint.unwrap();
        let CheckpointStatistics::Completed {
            base, discarded, ..
        } = &savepoint
        else {
            panic!()
        };
        assert_eq!(base.id, 4);
        assert!(base.is_savepoint && !discarded);
        assert_eq!(base.checkpoint_type, "SYNC_SAVEPOINT");
        assert_eq!(base.savepoint_format.as_deref(), Some("CANONICAL"));
        let sp_entry = stats.history.iter().find(|e| e.id() == 2).unwrap();
        assert_eq!(sp_entry.base().checkpoint_type, "SAVEPOINT");
        assert!(matches!(
            sp_entry,
            CheckpointStatistics::Completed {
                discarded: false,
                ..
            }
        ));
    }

    #[test]
    fn a_completion_aborts_older_pending_checkpoints_but_not_savepoints() {
        let mut c = coordinator(CheckpointSettings {
            max_concurrent: 3,
            ..settings()
        });
        let t = Instant::now();
        let k = CheckpointKind::Checkpoint;
        c.trigger(t, 0, k, tasks()).unwrap();
        c.trigger(
            t,
            0,
            CheckpointKind::Savepoint { terminate: false },
            tasks(),
        )
        .unwrap();
        c.trigger(t, 0, k, tasks()).unwrap();
        let done = ack_all(&mut c, 3, 10);
        let outcome = c.complete(3, &done.location, t, 20).unwrap();
        assert_eq!(outcome.aborted.len(), 1);
        assert_eq!(
            outcome.aborted[0].error,
            CheckpointError::Subsumed {
                checkpoint_id: 1,
                by: 3
            }
        );
        assert_eq!(c.pending_ids(), vec![2]);
        let a = tasks()[0];
        assert_eq!(c.acknowledge(1, a, None, a.into(), 30), AckOutcome::Unknown);
        assert!(!c.failure_budget_exceeded(), "subsumption is no failure");
    }

    #[test]
    fn acks_that_must_not_count() {
        let mut c = coordinator(settings());
        let t = Instant::now();
        let a = tasks()[0];
        assert_eq!(
            c.acknowledge(1, a, None, a.into(), 0),
            AckOutcome::Unknown,
            "never triggered"
        );
        c.trigger(t, 0, CheckpointKind::Checkpoint, tasks())
            .unwrap();
        let stranger = attempt(9, 0);
        assert_eq!(
            c.acknowledge(1, stranger, None, stranger.into(), 0),
            AckOutcome::Unknown
        );
        let other_attempt = ExecutionAttemptId {
            attempt_number: 1,
            ..a
        };
        assert_eq!(
            c.acknowledge(1, other_attempt, None, a.into(), 0),
            AckOutcome::Unknown,
            "a previous or later attempt of an expected subtask"
        );
        assert_eq!(
            c.acknowledge(1, a, None, tasks()[2].into(), 0),
            AckOutcome::Unknown,
            "for a subtask the attempt does not run"
        );
        assert_eq!(c.acknowledge(1, a, None, a.into(), 0), AckOutcome::Pending);
        assert_eq!(
            c.acknowledge(1, a, handle(a, 9), a.into(), 0),
            AckOutcome::Duplicate
        );
        assert_eq!(
            c.complete(1, Path::new("/x"), t, 0),
            Err(CheckpointError::NotAcknowledged {
                checkpoint_id: 1,
                missing: 2
            })
        );
        assert_eq!(c.pending_ids(), vec![1], "still pending");
        assert_eq!(c.stats().history[0].base().num_acknowledged_subtasks, 1);

        // After an abort, late acks are ignored too.
        let aborted = c.abort_all("job failover".into(), 10);
        assert_eq!(aborted.len(), 1);
        assert_eq!(
            aborted[0].error,
            CheckpointError::Aborted {
                checkpoint_id: 1,
                reason: "job failover".into()
            }
        );
        for b in tasks() {
            assert_eq!(c.acknowledge(1, b, None, b.into(), 20), AckOutcome::Unknown);
        }
        assert!(c.latest_completed().is_none());
        assert!(!c.failure_budget_exceeded(), "aborts are no failures");
    }

    /// A decline because a newer barrier overtook the checkpoint aborts it as subsumed: not a
    /// failure, even with no failure tolerated.
    #[test]
    fn a_subsumed_decline_is_no_failure() {
        let mut c = coordinator(settings());
        let t = Instant::now();
        let a = tasks()[0];
        let id = c
            .trigger(t, 0, CheckpointKind::Checkpoint, tasks())
            .unwrap()
            .id;
        let aborted = c.decline_subsumed(id, a, id + 1, 0).unwrap();
        assert!(matches!(aborted.error, CheckpointError::Subsumed { .. }));
        assert!(!c.failure_budget_exceeded());
        assert_eq!(c.consecutive_failures(), 0);
        assert_eq!(
            c.decline_subsumed(id, a, id + 1, 0),
            None,
            "already aborted"
        );
    }

    #[test]
    fn failure_budget() {
        let mut c = coordinator(CheckpointSettings {
            tolerable_failures: 2,
            ..settings()
        });
        let t = Instant::now();
        let a = tasks()[0];
        let fail = |c: &mut CheckpointCoordinator, kind| {
            let id = c.trigger(t, 0, kind, tasks()).unwrap().id;
            c.decline(id, a, "boom".into(), 0).unwrap();
        };
        fail(&mut c, CheckpointKind::Checkpoint);
        fail(&mut c, CheckpointKind::Checkpoint);
        assert!(!c.failure_budget_exceeded());
        fail(&mut c, CheckpointKind::Savepoint { terminate: false });
        assert!(
            !c.failure_budget_exceeded(),
            "savepoint failures do not count"
        );
        fail(&mut c, CheckpointKind::Checkpoint);
        assert!(c.failure_budget_exceeded());
        assert_eq!(c.consecutive_failures(), 3);

        // A completion resets the count; expiry and finalization failures count.
        checkpoint(&mut c, t, 0, CheckpointKind::Checkpoint);
        assert_eq!(c.consecutive_failures(), 0);
        c.trigger(t, 0, CheckpointKind::Checkpoint, tasks())
            .unwrap();
        assert_eq!(c.expire(t + c.settings().timeout, 0).len(), 1);
        let id = c
            .trigger(t, 0, CheckpointKind::Checkpoint, tasks())
            .unwrap()
            .id;
        ack_all(&mut c, id, 0);
        let aborted = c.complete_failed(id, "disk full".into(), 0).unwrap();
        assert!(matches!(
            aborted.error,
            CheckpointError::FinalizeFailed { .. }
        ));
        assert_eq!(c.complete_failed(id, "again".into(), 0), None);
        assert!(!c.failure_budget_exceeded());
        fail(&mut c, CheckpointKind::Checkpoint);
        assert!(c.failure_budget_exceeded());
        c.reset_failure_count();
        assert!(!c.failure_budget_exceeded());

        // With Flink's default of 0 tolerated, one failure is too many.
        let mut strict = coordinator(settings());
        fail(&mut strict, CheckpointKind::Checkpoint);
        assert!(strict.failure_budget_exceeded());
    }

    #[test]
    fn restored_checkpoints_and_savepoints() {
        let mut c = coordinator(settings());
        let other_job = JobId::from_u128(7);
        let savepoint = CheckpointMetadata {
            version: CheckpointMetadata::VERSION,
            job_id: other_job,
            checkpoint_id: 41,
            timestamp: 5,
            kind: CheckpointKind::Savepoint { terminate: false },
            tasks: vec![(tasks()[0].into(), handle(tasks()[0], 3))],
            fingerprint: Some("fp".into()),
        };
        let dir = Path::new("/savepoints/savepoint-000000-abc");
        c.set_restored(dir, &savepoint, 1_000);
        let restored = c.latest_completed().unwrap().clone();
        assert_eq!((restored.id, restored.state_size), (41, 3));
        assert!(!restored.discard_on_subsume);
        assert_eq!(restored.metadata, savepoint);
        // A failover restores it again: counted, not stored twice.
        c.set_restored(dir, &savepoint, 2_000);
        assert_eq!(c.completed_checkpoints().count(), 1);
        let stats = c.stats();
        assert_eq!(stats.counts.restored, 2);
        assert_eq!(
            stats.latest.restored,
            Some(RestoredCheckpointStatistics {
                id: 41,
                restore_timestamp: 2_000,
                is_savepoint: true,
                external_path: "file:/savepoints/savepoint-000000-abc".into(),
            })
        );

        // The next checkpoint continues the ids and subsumes it without discarding it.
        let next = checkpoint(&mut c, Instant::now(), 0, CheckpointKind::Checkpoint);
        assert_eq!(next.completed.id, 42);
        assert!(next.subsumed.is_empty(), "not ours to delete");
        assert_eq!(c.latest_completed().map(|c| c.id), Some(42));

        // One of the job's own checkpoints (recovery after a JobManager restart) is discarded
        // when subsumed.
        let mut c = coordinator(settings());
        let own = CheckpointMetadata {
            job_id: job(),
            checkpoint_id: 5,
            kind: CheckpointKind::Checkpoint,
            ..savepoint
        };
        c.set_restored(Path::new("/ckpt/x/chk-5"), &own, 0);
        let next = checkpoint(&mut c, Instant::now(), 0, CheckpointKind::Checkpoint);
        assert_eq!(next.completed.id, 6);
        assert_eq!(next.subsumed.len(), 1);
        assert_eq!(next.subsumed[0].path, Path::new("/ckpt/x/chk-5"));
    }

    #[test]
    fn history_is_bounded() {
        let mut c = coordinator(settings());
        let t = Instant::now();
        for _ in 0..HISTORY_SIZE + 5 {
            checkpoint(&mut c, t, 0, CheckpointKind::Checkpoint);
        }
        let stats = c.stats();
        assert_eq!(stats.history.len(), HISTORY_SIZE);
        assert_eq!(stats.history[0].id(), 15, "newest first");
        assert_eq!(stats.history[HISTORY_SIZE - 1].id(), 6);
        assert_eq!(stats.counts.completed, 15);
        assert_eq!(stats.counts.total, 15);
    }

    // --- REST shape ------------------------------------------------------------------------

    /// Flink 2.3's `GET /jobs/{id}/checkpoints` (from /work/shared/reference/flink-rest; history
    /// shortened to two entries).
    const FLINK_CHECKPOINTS: &str = r#"{"counts":{"restored":0,"total":16,"in_progress":0,"completed":16,"failed":0},"summary":{"checkpointed_size":{"min":19324,"max":19324,"avg":19324,"p50":19324.0,"p90":19324.0,"p95":19324.0,"p99":19324.0,"p999":19324.0},"state_size":{"min":19324,"max":19324,"avg":19324,"p50":19324.0,"p90":19324.0,"p95":19324.0,"p99":19324.0,"p999":19324.0},"end_to_end_duration":{"min":18,"max":206,"avg":49,"p50":39.0,"p90":108.7000000000001,"p95":206.0,"p99":206.0,"p999":206.0},"alignment_buffered":{"min":0,"max":0,"avg":0,"p50":0.0,"p90":0.0,"p95":0.0,"p99":0.0,"p999":0.0},"processed_data":{"min":0,"max":0,"avg":0,"p50":0.0,"p90":0.0,"p95":0.0,"p99":0.0,"p999":0.0},"persisted_data":{"min":0,"max":0,"avg":0,"p50":0.0,"p90":0.0,"p95":0.0,"p99":0.0,"p999":0.0}},"latest":{"completed":{"className":"completed","id":16,"status":"COMPLETED","is_savepoint":false,"savepointFormat":null,"trigger_timestamp":1795222058782,"latest_ack_timestamp":1795222058817,"checkpointed_size":19324,"state_size":19324,"end_to_end_duration":35,"alignment_buffered":0,"processed_data":0,"persisted_data":0,"num_subtasks":2,"num_acknowledged_subtasks":2,"checkpoint_type":"CHECKPOINT","tasks":{},"external_path":"<checkpoint-not-externally-addressable>","discarded":false},"savepoint":null,"failed":null,"restored":null},"history":[{"className":"completed","id":16,"status":"COMPLETED","is_savepoint":false,"savepointFormat":null,"trigger_timestamp":1795222058782,"latest_ack_timestamp":1795222058817,"checkpointed_size":19324,"state_size":19324,"end_to_end_duration":35,"alignment_buffered":0,"processed_data":0,"persisted_data":0,"num_subtasks":2,"num_acknowledged_subtasks":2,"checkpoint_type":"CHECKPOINT","tasks":{},"external_path":"<checkpoint-not-externally-addressable>","discarded":false},{"className":"completed","id":15,"status":"COMPLETED","is_savepoint":false,"savepointFormat":null,"trigger_timestamp":1795222057777,"latest_ack_timestamp":1795222057815,"checkpointed_size":19324,"state_size":19324,"end_to_end_duration":38,"alignment_buffered":0,"processed_data":0,"persisted_data":0,"num_subtasks":2,"num_acknowledged_subtasks":2,"checkpoint_type":"CHECKPOINT","tasks":{},"external_path":"<checkpoint-not-externally-addressable>","discarded":true}]}"#;

    /// Flink 2.3's `GET /jobs/{id}/checkpoints/config`.
    const FLINK_CHECKPOINT_CONFIG: &str = r#"{"mode":"exactly_once","interval":1000,"timeout":600000,"min_pause":0,"max_concurrent":1,"externalization":{"enabled":false,"delete_on_cancellation":true},"state_backend":"HashMapStateBackend","checkpoint_storage":"JobManagerCheckpointStorage","unaligned_checkpoints":false,"tolerable_failed_checkpoints":0,"aligned_checkpoint_timeout":0,"checkpoints_after_tasks_finish":true,"state_changelog_enabled":false,"changelog_periodic_materialization_interval":600000,"changelog_storage":"memory"}"#;

    /// Asserts both objects have the same keys, recursively (arrays: their first elements;
    /// `null` on either side: not compared further).
    fn assert_same_keys(ours: &Value, flink: &Value, path: &str) {
        match (ours, flink) {
            (Value::Object(o), Value::Object(f)) => {
                let ok: Vec<&String> = o.keys().collect();
                let fk: Vec<&String> = f.keys().collect();
                let mut oks = ok.clone();
                let mut fks = fk.clone();
                oks.sort();
                fks.sort();
                assert_eq!(oks, fks, "keys of {path}");
                for (k, fv) in f {
                    assert_same_keys(&o[k], fv, &format!("{path}.{k}"));
                }
            }
            (Value::Array(o), Value::Array(f)) => {
                if let (Some(o), Some(f)) = (o.first(), f.first()) {
                    assert_same_keys(o, f, &format!("{path}[0]"));
                }
            }
            (Value::Null, _) | (_, Value::Null) => {}
            (o, f) => assert_eq!(
                std::mem::discriminant(o),
                std::mem::discriminant(f),
                "{path}: rflink has {o}, Flink has {f}"
            ),
        }
    }

    #[test]
    fn stats_have_every_field_of_flinks() {
        let mut c = coordinator(settings());
        let t = Instant::now();
        checkpoint(&mut c, t, 1_000, CheckpointKind::Checkpoint);
        checkpoint(&mut c, t, 2_000, CheckpointKind::Checkpoint);
        // What `GET /jobs/{id}/checkpoints` sends.
        let ours = serde_json::to_value(c.stats().overview()).unwrap();
        let flink: Value = serde_json::from_str(FLINK_CHECKPOINTS).unwrap();
        for section in ["counts", "summary", "latest"] {
            assert_same_keys(&ours[section], &flink[section], section);
        }
        assert_same_keys(&ours["history"][0], &flink["history"][0], "history[0]");
        assert_same_keys(&ours["history"][1], &flink["history"][1], "history[1]");
        assert_same_keys(&ours, &flink, "");
        // The numbers are numbers of the same kind: integers, and floats for percentiles.
        assert!(ours["summary"]["state_size"]["avg"].is_i64());
        assert!(ours["summary"]["state_size"]["p50"].is_f64());
        assert_eq!(ours["history"][0]["className"], "completed");
        assert_eq!(ours["history"][1]["discarded"], true);

        // In-progress and failed entries: Flink's base fields, plus the failure's two.
        let base_keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let completed_keys = base_keys(&flink["history"][0]);
        let in_progress_keys: Vec<String> = completed_keys
            .iter()
            .filter(|k| *k != "external_path" && *k != "discarded")
            .cloned()
            .collect();
        c.trigger(t, 3_000, CheckpointKind::Checkpoint, tasks())
            .unwrap();
        let ours = serde_json::to_value(c.stats().overview()).unwrap();
        assert_eq!(ours["history"][0]["className"], "in_progress");
        assert_eq!(ours["history"][0]["status"], "IN_PROGRESS");
        assert_eq!(base_keys(&ours["history"][0]), in_progress_keys);
        c.abort_all("cancelled".into(), 3_500);
        let ours = serde_json::to_value(c.stats().overview()).unwrap();
        let failed = &ours["latest"]["failed"];
        assert_eq!(failed["className"], "failed");
        assert_eq!(failed["status"], "FAILED");
        let mut failed_keys = in_progress_keys.clone();
        failed_keys.extend([
            "failure_message".to_string(),
            "failure_timestamp".to_string(),
        ]);
        failed_keys.sort();
        assert_eq!(base_keys(failed), failed_keys);
        assert_eq!(failed["failure_timestamp"], 3_500);
    }

    #[test]
    fn flinks_bodies_round_trip_through_our_types() {
        let decoded: CheckpointStatsView = serde_json::from_str(FLINK_CHECKPOINTS).unwrap();
        assert_eq!(
            serde_json::to_value(&decoded).unwrap(),
            serde_json::from_str::<Value>(FLINK_CHECKPOINTS).unwrap()
        );
        let decoded: CheckpointConfigView = serde_json::from_str(FLINK_CHECKPOINT_CONFIG).unwrap();
        assert_eq!(
            serde_json::to_value(&decoded).unwrap(),
            serde_json::from_str::<Value>(FLINK_CHECKPOINT_CONFIG).unwrap()
        );
        // Our own entries of every kind decode back.
        let mut c = coordinator(settings());
        let t = Instant::now();
        checkpoint(&mut c, t, 0, CheckpointKind::Checkpoint);
        checkpoint(&mut c, t, 0, CheckpointKind::Savepoint { terminate: true });
        c.trigger(t, 0, CheckpointKind::Checkpoint, tasks())
            .unwrap();
        c.trigger(
            t,
            0,
            CheckpointKind::Savepoint { terminate: false },
            tasks(),
        )
        .unwrap();
        c.decline(4, tasks()[0], "no".into(), 0).unwrap();
        let stats = c.stats();
        let json = serde_json::to_string(&stats).unwrap();
        assert_eq!(
            serde_json::from_str::<CheckpointStatsView>(&json).unwrap(),
            stats
        );
    }

    #[test]
    fn config_view_matches_flinks_shape_and_settings() {
        let c = coordinator(CheckpointSettings {
            interval: Some(SEC),
            ..CheckpointSettings::default()
        });
        let ours = serde_json::to_value(c.config_view()).unwrap();
        let flink: Value = serde_json::from_str(FLINK_CHECKPOINT_CONFIG).unwrap();
        assert_same_keys(&ours, &flink, "config");
        for key in [
            "mode",
            "interval",
            "timeout",
            "min_pause",
            "max_concurrent",
            "externalization",
            "state_backend",
            "checkpoint_storage",
            "tolerable_failed_checkpoints",
        ] {
            assert_eq!(ours[key], flink[key], "{key}");
        }
        let off = coordinator(settings()).config_view();
        assert_eq!(off.interval, i64::MAX);
        assert_eq!(off.checkpoint_storage, "FileSystemCheckpointStorage");
    }
}
