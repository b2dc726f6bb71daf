//! The JobMaster's side of checkpoints: it owns the job's
//! [`CheckpointCoordinator`](crate::checkpoint::coordinator::CheckpointCoordinator) and carries out
//! what it decides. Flink: the scheduler's checkpointing part (`CheckpointCoordinator` wiring,
//! `CheckpointCoordinatorDeActivator`, `DefaultCheckpointPlanCalculator`).
//!
//! - Checkpoints run only while every task of the job is RUNNING (a periodic timer checks on the
//!   main thread); a restart aborts the pending ones.
//! - The trigger goes to the source tasks; every task acknowledges with its state handle. When
//!   all have, the `_metadata` file is written off the main thread and the checkpoint completes:
//!   every task is told (`ConfirmCheckpoint`), and the store's subsumed checkpoints are deleted.
//! - A checkpoint where every task had ended its input is the job's final one: the confirmation
//!   says so and the tasks then finish (so a bounded job's last records are committed by a
//!   checkpoint, and a sink's two-phase commit stays exactly-once up to the end).
//! - Restarted attempts, and a job resumed from a savepoint, get their subtask's state from the
//!   latest completed checkpoint in their deployment descriptors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rflink_rpc::RpcContext;

use super::{JobMaster, SavepointStatus};
use crate::checkpoint::coordinator::{AbortedCheckpoint, AckOutcome, CheckpointCoordinator};
use crate::checkpoint::{
    storage, CheckpointKind, CheckpointMetadata, CheckpointSettings, SubtaskKey,
};
use crate::executiongraph::{now_millis, ErrorInfo, ExecutionState, JobStatus};
use crate::taskexecutor;
use crate::tasks::checkpointing::TaskRestore;
use crate::types::ExecutionAttemptId;

/// A job's checkpointing state on its JobMaster.
pub(crate) struct Checkpointing {
    pub(crate) coordinator: CheckpointCoordinator,
    pub(crate) base_dir: PathBuf,
    /// Whether the periodic trigger is running (all tasks RUNNING).
    active: bool,
    /// Per pending checkpoint: every ack so far came from a task that had ended its input.
    all_ended: HashMap<u64, bool>,
    /// Savepoints triggered through REST, by id.
    pub(crate) savepoints: HashMap<u64, SavepointStatus>,
    /// Savepoints that stop the job once complete.
    terminate_after: Option<u64>,
    /// Checkpoints completing (metadata being written), so a second completion is not started.
    finalizing: std::collections::HashSet<u64>,
}

/// The default checkpoint directory when `execution.checkpointing.dir` is unset: fine for one
/// machine (a MiniCluster, a local cluster); a real cluster needs a shared directory.
pub fn default_checkpoint_dir() -> PathBuf {
    std::env::temp_dir().join("rflink-checkpoints")
}

impl Checkpointing {
    /// The job's checkpointing, if its configuration turns it on and it can checkpoint (a
    /// streaming program; batch-style jobs do not checkpoint, as in Flink's BATCH mode).
    pub(crate) fn for_job(
        config: &crate::config::Configuration,
        job: &crate::jobgraph::JobGraph,
    ) -> Option<Checkpointing> {
        let program = job.program.as_ref()?;
        let interval = config.checkpointing.interval?;
        if program.batch {
            tracing::info!(job_id = %job.job_id, "checkpointing is off for a batch-style job");
            return None;
        }
        let base_dir = config.checkpointing.dir.clone().unwrap_or_else(|| {
            let dir = default_checkpoint_dir();
            tracing::warn!(job_id = %job.job_id, dir = %dir.display(),
                "execution.checkpointing.dir is not set: checkpoints go to a local temporary \
                 directory, which only works when every TaskManager runs on this machine");
            dir
        });
        let settings = CheckpointSettings {
            interval: Some(interval),
            timeout: config.checkpointing.timeout,
            max_concurrent: config.checkpointing.max_concurrent,
            min_pause: config.checkpointing.min_pause,
            num_retained: config.checkpointing.num_retained,
            tolerable_failures: config.checkpointing.tolerable_failures,
            dir: Some(base_dir.clone()),
            savepoint_dir: config.checkpointing.savepoint_dir.clone(),
        };
        let coordinator = CheckpointCoordinator::new(job.job_id, settings)
            .with_fingerprint(Some(program.fingerprint.clone()));
        Some(Checkpointing {
            coordinator,
            base_dir,
            active: false,
            all_ended: HashMap::new(),
            savepoints: HashMap::new(),
            terminate_after: None,
            finalizing: Default::default(),
        })
    }

    /// How often the JobMaster looks at the periodic trigger and at timeouts.
    pub(crate) fn tick(&self) -> Duration {
        let interval = self
            .coordinator
            .settings()
            .interval
            .unwrap_or(Duration::from_secs(1));
        (interval / 4).clamp(Duration::from_millis(10), Duration::from_millis(100))
    }
}

impl JobMaster {
    fn all_tasks_running(&self) -> bool {
        self.graph.status() == JobStatus::Running
            && self
                .graph
                .executions()
                .all(|e| e.state == ExecutionState::Running)
    }

    /// The periodic check: starts or stops the periodic trigger with the tasks, expires timed
    /// out checkpoints, triggers a due one.
    pub(super) fn checkpoint_tick(&mut self, ctx: &mut RpcContext<'_, Self>) {
        let running = self.all_tasks_running();
        let now = Instant::now();
        let Some(cp) = self.checkpointing.as_mut() else {
            return;
        };
        let expired = cp.coordinator.expire(now, now_millis());
        for aborted in expired {
            self.checkpoint_aborted(aborted, ctx);
        }
        let Some(cp) = self.checkpointing.as_mut() else {
            return;
        };
        if !running {
            if cp.active {
                cp.coordinator.stop_periodic();
                cp.active = false;
            }
            return;
        }
        if !cp.active {
            cp.coordinator.start_periodic(now);
            cp.active = true;
        }
        if cp.coordinator.should_trigger_periodic(now) {
            if let Err(err) = self.trigger_checkpoint(CheckpointKind::Checkpoint, None, ctx) {
                tracing::debug!(job_id = %self.graph.job_id, error = %err, "periodic checkpoint not triggered");
            }
        }
    }

    /// Triggers a checkpoint or savepoint: every current attempt must acknowledge; the source
    /// tasks get the trigger. Returns its id.
    pub(super) fn trigger_checkpoint(
        &mut self,
        kind: CheckpointKind,
        target: Option<PathBuf>,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Result<u64, String> {
        if !self.all_tasks_running() {
            return Err("not every task of the job is running".into());
        }
        let to_ack: Vec<ExecutionAttemptId> = self.graph.executions().map(|e| e.attempt).collect();
        let sources: Vec<(ExecutionAttemptId, Option<crate::types::ResourceId>)> = self
            .graph
            .vertices
            .iter()
            .filter(|v| v.inputs.is_empty())
            .flat_map(|v| v.executions.iter())
            .map(|e| (e.attempt, e.slot.as_ref().map(|s| s.resource_id)))
            .collect();
        let Some(cp) = self.checkpointing.as_mut() else {
            return Err(
                "checkpointing is off for this job (set execution.checkpointing.interval)".into(),
            );
        };
        let trigger = cp
            .coordinator
            .trigger_with_target(Instant::now(), now_millis(), kind, to_ack, target)
            .map_err(|e| e.to_string())?;
        cp.all_ended.insert(trigger.id, true);
        let id = trigger.id;
        for (attempt, resource_id) in sources {
            let Some(tm) = resource_id.and_then(|r| self.task_managers.get(&r)) else {
                self.decline(
                    id,
                    attempt,
                    "the source task's TaskManager is gone".into(),
                    None,
                    ctx,
                );
                continue;
            };
            let gateway = tm.gateway.clone();
            let msg = taskexecutor::TriggerCheckpoint {
                attempt,
                checkpoint_id: id,
                timestamp: trigger.timestamp,
                savepoint: kind.is_savepoint(),
                terminate: matches!(kind, CheckpointKind::Savepoint { terminate: true }),
            };
            ctx.spawn_then(
                async move { gateway.ask(msg).await },
                move |result, jm, ctx| {
                    let reason = match result {
                        Ok(Ok(_)) => return,
                        Ok(Err(err)) => err.to_string(),
                        Err(err) => err.to_string(),
                    };
                    jm.decline(
                        id,
                        attempt,
                        format!("could not trigger the source: {reason}"),
                        None,
                        ctx,
                    );
                },
            );
        }
        Ok(id)
    }

    /// A task acknowledged its part.
    pub(super) fn acknowledge(
        &mut self,
        msg: super::AcknowledgeCheckpoint,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        let Some(cp) = self.checkpointing.as_mut() else {
            return;
        };
        if !msg.ended_input {
            if let Some(flag) = cp.all_ended.get_mut(&msg.checkpoint_id) {
                *flag = false;
            }
        }
        let outcome = cp.coordinator.acknowledge(
            msg.checkpoint_id,
            msg.attempt,
            msg.state,
            SubtaskKey::from(msg.attempt),
            now_millis(),
        );
        let AckOutcome::AllAcknowledged(acked) = outcome else {
            return;
        };
        let id = msg.checkpoint_id;
        if !cp.finalizing.insert(id) {
            return;
        }
        // Tasks wrote their state under the checkpoint directory; a savepoint gathers it into
        // its own directory. Then the metadata is written, last and atomically.
        let staging = storage::checkpoint_dir(&cp.base_dir, self.graph.job_id, id);
        let location = acked.location.clone();
        let metadata = acked.metadata;
        let write = tokio::task::spawn_blocking(move || {
            if staging != location {
                copy_state_files(&staging, &location, &metadata)?;
            }
            let path = storage::write_metadata(&location, &metadata).map_err(|e| e.to_string())?;
            if staging != location {
                let _ = storage::discard(&staging);
            }
            Ok::<_, String>(path)
        });
        ctx.spawn_then(write, move |written, jm, ctx| {
            let written = written.map_err(|e| e.to_string()).and_then(|r| r);
            jm.finish_checkpoint(id, written, ctx);
        });
    }

    fn finish_checkpoint(
        &mut self,
        id: u64,
        written: Result<PathBuf, String>,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        let Some(cp) = self.checkpointing.as_mut() else {
            return;
        };
        cp.finalizing.remove(&id);
        let last = cp.all_ended.remove(&id).unwrap_or(false);
        let path = match written {
            Ok(path) => path,
            Err(reason) => {
                tracing::warn!(job_id = %self.graph.job_id, checkpoint_id = id, reason, "writing the checkpoint metadata failed");
                if let Some(aborted) = cp.coordinator.complete_failed(id, reason, now_millis()) {
                    self.checkpoint_aborted(aborted, ctx);
                }
                return;
            }
        };
        let outcome = match cp
            .coordinator
            .complete(id, &path, Instant::now(), now_millis())
        {
            Ok(outcome) => outcome,
            Err(err) => {
                // Aborted meanwhile (a restart, a timeout): its files are not a checkpoint.
                tracing::info!(job_id = %self.graph.job_id, checkpoint_id = id, error = %err, "a checkpoint completed too late; discarding it");
                let dir = path.parent().map(PathBuf::from).unwrap_or(path);
                discard_in_background(dir);
                return;
            }
        };
        let completed = &outcome.completed;
        tracing::info!(job_id = %self.graph.job_id, checkpoint_id = id, kind = completed.kind.rest_name(),
            size = completed.state_size, duration_ms = completed.duration_ms, last, "checkpoint completed");
        if completed.kind.is_savepoint() {
            cp.savepoints.insert(
                id,
                SavepointStatus::Completed(completed.path.display().to_string()),
            );
        }
        let terminate = cp.terminate_after == Some(id);
        if let Some(ha) = &self.settings.ha {
            // The pointer is stored before any task hears of the checkpoint (Flink adds it to
            // the CompletedCheckpointStore before notifyCheckpointComplete): a sink commits only
            // what a new leader would restore from, so a failover neither loses nor repeats
            // output. A write refused (the leadership is lost) confirms nothing.
            let pointer = crate::highavailability::CheckpointPointer {
                checkpoint_id: id,
                path: completed.path.display().to_string(),
            };
            let stored = ha.put_checkpoint(self.graph.job_id, &pointer);
            ctx.spawn_then(stored, move |stored, jm, ctx| match stored {
                Ok(()) => jm.confirm_checkpoint(id, last, terminate, outcome, ctx),
                Err(err) => {
                    tracing::error!(job_id = %jm.graph.job_id, checkpoint_id = id, error = %err,
                        "could not store the checkpoint pointer; the checkpoint is not confirmed");
                }
            });
            return;
        }
        self.confirm_checkpoint(id, last, terminate, outcome, ctx);
    }

    /// Tells the tasks a checkpoint completed (sinks commit), and discards what it subsumed.
    fn confirm_checkpoint(
        &mut self,
        id: u64,
        last: bool,
        terminate: bool,
        outcome: crate::checkpoint::coordinator::CompletedOutcome,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        for old in &outcome.subsumed {
            discard_in_background(old.path.clone());
        }
        let aborted = outcome.aborted;
        if terminate {
            // Stop-with-savepoint: the sources emitted nothing since their part of it; every
            // task now finishes, and the job ends FINISHED, as Flink's `stop`.
            tracing::info!(job_id = %self.graph.job_id, checkpoint_id = id, "stopping the job after its savepoint");
        }
        for attempt in outcome.to_notify {
            self.tell_task(attempt, ctx, move |attempt| {
                taskexecutor::ConfirmCheckpoint {
                    attempt,
                    checkpoint_id: id,
                    last,
                    stop: terminate,
                }
            });
        }
        for aborted in aborted {
            self.checkpoint_aborted(aborted, ctx);
        }
    }

    /// A task declined its part (or could not be triggered). A decline because a newer
    /// checkpoint overtook this one (`subsumed_by`) aborts it without counting as a failure.
    pub(super) fn decline(
        &mut self,
        id: u64,
        attempt: ExecutionAttemptId,
        reason: String,
        subsumed_by: Option<u64>,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        let Some(cp) = self.checkpointing.as_mut() else {
            return;
        };
        tracing::info!(job_id = %self.graph.job_id, checkpoint_id = id, %attempt, reason, ?subsumed_by, "checkpoint declined");
        let aborted = match subsumed_by {
            Some(by) => cp
                .coordinator
                .decline_subsumed(id, attempt, by, now_millis()),
            None => cp.coordinator.decline(id, attempt, reason, now_millis()),
        };
        if let Some(aborted) = aborted {
            self.checkpoint_aborted(aborted, ctx);
        }
    }

    /// A checkpoint was aborted: tell its tasks, delete its files, fail a savepoint request,
    /// and fail over the job when failed checkpoints exceed the tolerated number.
    fn checkpoint_aborted(&mut self, aborted: AbortedCheckpoint, ctx: &mut RpcContext<'_, Self>) {
        let Some(cp) = self.checkpointing.as_mut() else {
            return;
        };
        let id = aborted.id;
        cp.all_ended.remove(&id);
        tracing::info!(job_id = %self.graph.job_id, checkpoint_id = id, error = %aborted.error, "checkpoint aborted");
        if aborted.kind.is_savepoint() {
            cp.savepoints
                .insert(id, SavepointStatus::Failed(aborted.error.to_string()));
            if cp.terminate_after == Some(id) {
                cp.terminate_after = None;
            }
        }
        discard_in_background(storage::checkpoint_dir(&cp.base_dir, self.graph.job_id, id));
        if aborted.location != storage::checkpoint_dir(&cp.base_dir, self.graph.job_id, id) {
            discard_in_background(aborted.location.clone());
        }
        let exceeded = cp.coordinator.failure_budget_exceeded();
        if exceeded {
            cp.coordinator.reset_failure_count();
        }
        for attempt in aborted.to_notify {
            self.tell_task(attempt, ctx, move |attempt| taskexecutor::AbortCheckpoint {
                attempt,
                checkpoint_id: id,
            });
        }
        if exceeded && self.graph.status() == JobStatus::Running {
            let error = ErrorInfo {
                kind: "CheckpointFailure".into(),
                message: format!(
                    "exceeded execution.checkpointing.tolerable-failed-checkpoints: checkpoint {id} failed: {}",
                    aborted.error
                ),
                task_name: None,
                location: None,
                timestamp: now_millis(),
            };
            match self.graph.global_failure(error) {
                Ok(actions) => self.apply(actions, ctx),
                Err(err) => tracing::warn!(error = %err, "could not fail over the job"),
            }
        }
    }

    /// The job restarts or ends: pending checkpoints are void.
    pub(super) fn abort_pending_checkpoints(
        &mut self,
        reason: &str,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        let Some(cp) = self.checkpointing.as_mut() else {
            return;
        };
        let aborted = cp.coordinator.abort_all(reason.to_string(), now_millis());
        if cp.active {
            cp.coordinator.stop_periodic();
            cp.active = false;
        }
        for mut aborted in aborted {
            // The tasks are being cancelled: no need to tell them.
            aborted.to_notify.clear();
            self.checkpoint_aborted(aborted, ctx);
        }
    }

    /// A restart redeploys tasks from the latest completed checkpoint (if any): REST counts it
    /// as a restore.
    pub(super) fn note_restore(&mut self) {
        let Some(cp) = self.checkpointing.as_mut() else {
            return;
        };
        if let Some(latest) = cp.coordinator.latest_completed().cloned() {
            tracing::info!(job_id = %self.graph.job_id, checkpoint_id = latest.id, "restoring the latest completed checkpoint");
            cp.coordinator
                .set_restored(&latest.path, &latest.metadata, now_millis());
        }
    }

    /// Where a (re)deployed attempt's state is: the latest completed checkpoint (or the
    /// savepoint the job was resumed from).
    pub(super) fn restore_for(&self, attempt: ExecutionAttemptId) -> Option<TaskRestore> {
        let cp = self.checkpointing.as_ref()?;
        let latest = cp.coordinator.latest_completed()?;
        let key = SubtaskKey::from(attempt);
        Some(TaskRestore {
            checkpoint_id: latest.id,
            checkpoint_dir: latest.path.clone(),
            handle: latest.metadata.task_state(&key).cloned(),
        })
    }

    /// Restores the job from a savepoint before its first deployment (blocking reads run off
    /// the main thread; deployment waits for this).
    pub(super) fn restored_savepoint(
        &mut self,
        loaded: Result<(PathBuf, CheckpointMetadata), String>,
    ) -> Result<(), String> {
        let (dir, metadata) = loaded?;
        let Some(cp) = self.checkpointing.as_mut() else {
            return Err(
                "the job resumes from a savepoint but has checkpointing off (set \
                 execution.checkpointing.interval)"
                    .into(),
            );
        };
        let expected = self
            .job_graph
            .program
            .as_ref()
            .map(|p| p.fingerprint.as_str());
        metadata
            .check_fingerprint(expected)
            .map_err(|e| e.to_string())?;
        let mut missing = Vec::new();
        for (key, _) in &metadata.tasks {
            let known = self
                .graph
                .vertices
                .iter()
                .any(|v| v.id == key.vertex && key.subtask < v.parallelism);
            if !known {
                missing.push(format!("{}#{}", key.vertex, key.subtask));
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "the savepoint holds state of subtasks this job does not have ({}); the job \
                 must have the same operators and parallelism",
                missing.join(", ")
            ));
        }
        tracing::info!(job_id = %self.graph.job_id, checkpoint_id = metadata.checkpoint_id,
            path = %dir.display(), "resuming from a savepoint");
        cp.coordinator.set_restored(&dir, &metadata, now_millis());
        Ok(())
    }

    /// Sends a tell to the TaskExecutor running `attempt`.
    fn tell_task<M, F>(&self, attempt: ExecutionAttemptId, _ctx: &mut RpcContext<'_, Self>, make: F)
    where
        M: rflink_rpc::RpcMessage<Reply = ()> + serde::Serialize + Send + 'static,
        F: FnOnce(ExecutionAttemptId) -> M,
        taskexecutor::TaskExecutor: rflink_rpc::Accepts<M>,
    {
        let Some(resource_id) = self
            .graph
            .execution(attempt)
            .and_then(|e| e.slot.as_ref())
            .map(|s| s.resource_id)
        else {
            return;
        };
        let Some(tm) = self.task_managers.get(&resource_id) else {
            return;
        };
        if let Err(err) = tm.gateway.tell(make(attempt)) {
            tracing::debug!(%attempt, error = %err, "could not reach a task about a checkpoint");
        }
    }

    /// `POST /jobs/{id}/savepoints` and stop-with-savepoint.
    pub(super) fn trigger_savepoint(
        &mut self,
        target: Option<String>,
        terminate: bool,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Result<u64, String> {
        let id = self.trigger_checkpoint(
            CheckpointKind::Savepoint { terminate },
            target.map(PathBuf::from),
            ctx,
        )?;
        if let Some(cp) = self.checkpointing.as_mut() {
            cp.savepoints.insert(id, SavepointStatus::InProgress);
            if terminate {
                cp.terminate_after = Some(id);
            }
        }
        Ok(id)
    }
}

/// Copies the state files `metadata` names from `from` to `to` (a savepoint's own directory).
fn copy_state_files(
    from: &std::path::Path,
    to: &std::path::Path,
    metadata: &CheckpointMetadata,
) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    for handle in metadata.tasks.iter().filter_map(|(_, h)| h.as_ref()) {
        let bytes = storage::read_task_state(from, handle).map_err(|e| e.to_string())?;
        let target = to.join(&handle.path);
        std::fs::write(&target, bytes)
            .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    }
    Ok(())
}

/// Deletes a checkpoint directory off the main thread.
fn discard_in_background(dir: PathBuf) {
    tokio::task::spawn_blocking(move || {
        if let Err(err) = storage::discard(&dir) {
            tracing::warn!(dir = %dir.display(), error = %err, "could not delete a checkpoint");
        }
    });
}
