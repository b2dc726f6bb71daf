//! The execution graph: a job's subtasks and their attempts, and the job status they add up to.
//! Flink: `ExecutionGraph`, `ExecutionJobVertex`, `ExecutionVertex`, `Execution`.
//!
//! Pure logic, no actors: the JobMaster owns one, feeds it events (a slot was assigned, a task
//! reported a state, a TaskManager was lost, cancel was requested) and carries out the
//! [`GraphAction`]s it returns (cancel these tasks; the job reached a terminal status).
//!
//! # Invariants
//!
//! - The job status only moves along [`JobStatus::can_transition_to`]; an attempt's state only
//!   along [`ExecutionState::can_transition_to`]. A refused transition is an error, never ignored.
//! - Reports about an attempt other than a subtask's current one are stale and refused.
//! - A task failure (or a lost TaskManager) asks the restart strategy
//!   ([`failover::RestartBackoff`]) whether the job may restart. If it may, the job goes
//!   RESTARTING, the failed subtasks' pipelined regions (or every subtask, with the `full`
//!   failover strategy) are cancelled, and once all of their attempts are terminal *and* the
//!   backoff delay has passed, each gets a new attempt (attempt number + 1) and the job is
//!   RUNNING again ([`GraphAction::Redeploy`]). If it may not, the job goes FAILING, every
//!   other attempt is cancelled, and FAILED once all are terminal.
//! - Failures of attempts already waiting for their restart are not new failures: they do not
//!   count against the restart strategy.

pub mod failover;
pub mod state;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use state::{ExecutionState, IllegalTransition, JobStatus};

use crate::jobgraph::JobGraph;
use crate::types::{
    AllocationId, ExecutionAttemptId, ExecutionGraphId, ExecutionVertexId, JobId, JobVertexId,
    ResourceId,
};

/// Milliseconds since the Unix epoch, as Flink's REST timestamps.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A failure as shown to users: what failed, where, when. Flink: `ErrorInfo` / `SerializedThrowable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The error's kind, e.g. `TaskFailure` or `TaskManagerLost`.
    pub kind: String,
    /// The full message.
    pub message: String,
    /// The subtask it happened in, if any (`"name (2/4)"`).
    pub task_name: Option<String>,
    /// The TaskManager it happened on, if any.
    pub location: Option<String>,
    /// When it was recorded.
    pub timestamp: i64,
}

/// Where an attempt runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotAssignment {
    /// The TaskExecutor.
    pub resource_id: ResourceId,
    /// The slot's allocation.
    pub allocation_id: AllocationId,
    /// The TaskExecutor's RPC address, for REST and logs.
    pub address: String,
}

/// One attempt of one subtask.
#[derive(Debug, Clone)]
pub struct Execution {
    /// The attempt's id.
    pub attempt: ExecutionAttemptId,
    /// Its state.
    pub state: ExecutionState,
    /// Its slot, once assigned.
    pub slot: Option<SlotAssignment>,
    /// When it entered each state (millis).
    pub timestamps: HashMap<ExecutionState, i64>,
    /// Why it failed.
    pub failure: Option<ErrorInfo>,
}

/// One job vertex's subtasks.
#[derive(Debug, Clone)]
pub struct ExecutionJobVertex {
    /// The job vertex.
    pub id: JobVertexId,
    /// Its name.
    pub name: String,
    /// Its parallelism.
    pub parallelism: u32,
    /// Its max parallelism.
    pub max_parallelism: u32,
    /// Its inputs: producing vertex and ship strategy (Flink's name, e.g. `HASH`).
    pub inputs: Vec<(JobVertexId, String)>,
    /// The current attempt of each subtask, by index.
    pub executions: Vec<Execution>,
}

impl ExecutionJobVertex {
    /// The vertex's aggregate state, as Flink computes it for REST.
    pub fn aggregate_state(&self) -> ExecutionState {
        aggregate_state(self.executions.iter().map(|e| e.state))
    }
}

/// The aggregate state of some subtasks (a vertex's, or those of a vertex on one
/// TaskManager), as Flink computes it for REST.
pub fn aggregate_state(states: impl Iterator<Item = ExecutionState>) -> ExecutionState {
    use ExecutionState::*;
    let states: Vec<ExecutionState> = states.collect();
    let count = |s| states.iter().filter(|x| **x == s).count();
    if count(Failed) > 0 {
        Failed
    } else if count(Canceling) > 0 {
        Canceling
    } else if count(Canceled) > 0 {
        Canceled
    } else if count(Running) > 0 {
        Running
    } else if count(Finished) == states.len() {
        Finished
    } else if count(Initializing) > 0 {
        Initializing
    } else if count(Deploying) > 0 {
        Deploying
    } else if count(Scheduled) > 0 {
        Scheduled
    } else {
        Created
    }
}

/// What the JobMaster must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphAction {
    /// Cancel this deployed attempt on its TaskExecutor.
    CancelTask {
        /// The attempt.
        attempt: ExecutionAttemptId,
        /// Where it runs.
        slot: SlotAssignment,
    },
    /// The job reached a globally terminal status.
    JobTerminated(JobStatus),
    /// A restart was decided: call [`ExecutionGraph::restart_delay_elapsed`] with `generation`
    /// after `delay`. Pending checkpoints are void.
    ScheduleRestart {
        /// The restart strategy's backoff.
        delay: Duration,
        /// Identifies this decision (a later failure supersedes it).
        generation: u64,
    },
    /// New attempts are SCHEDULED: get their slots and deploy them.
    Redeploy {
        /// The new attempts.
        attempts: Vec<ExecutionAttemptId>,
    },
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum GraphError {
    /// The attempt is not (or no longer) a current attempt of this graph.
    #[error("unknown or stale execution attempt {0}")]
    UnknownAttempt(ExecutionAttemptId),
    /// The attempt cannot move to that state.
    #[error("attempt {attempt}: {source}")]
    IllegalExecutionTransition {
        /// The attempt.
        attempt: ExecutionAttemptId,
        /// The refused transition.
        source: IllegalTransition<ExecutionState>,
    },
    /// The job cannot move to that status.
    #[error(transparent)]
    IllegalJobTransition(#[from] IllegalTransition<JobStatus>),
}

/// A job's execution graph.
#[derive(Debug, Clone)]
pub struct ExecutionGraph {
    /// The job.
    pub job_id: JobId,
    /// Its name.
    pub job_name: String,
    /// This build of the graph.
    pub id: ExecutionGraphId,
    status: JobStatus,
    /// When the job entered each status (millis).
    pub status_timestamps: HashMap<JobStatus, i64>,
    /// The vertices in topological order.
    pub vertices: Vec<ExecutionJobVertex>,
    /// The failure that failed the job, if any.
    pub failure: Option<ErrorInfo>,
    /// Every failure that was handled (restarted or failed the job), oldest first (REST
    /// `/exceptions` history).
    pub exception_history: Vec<ErrorInfo>,
    /// Per history entry (same order), the failures that came with it: other tasks failing
    /// while the job was restarting, failing or cancelling because of it. Flink's
    /// `concurrentExceptions`.
    pub concurrent_exceptions: Vec<Vec<ErrorInfo>>,
    /// Restarts done so far.
    pub restarts: u32,
    failover: Failover,
}

/// What a failure restarts and whether it may.
#[derive(Debug, Clone)]
struct Failover {
    backoff: failover::RestartBackoff,
    /// Per vertex and subtask, its pipelined region; `None` restarts everything (`full`).
    region_of: Option<HashMap<(usize, u32), usize>>,
    regions: Vec<Vec<(usize, u32)>>,
    /// Subtasks waiting for their restart.
    pending: BTreeSet<(usize, u32)>,
    /// The backoff of the current restart decision has passed.
    delay_elapsed: bool,
    generation: u64,
}

impl ExecutionGraph {
    /// Builds the graph for `job` in status CREATED, one CREATED attempt per subtask.
    pub fn new(job: &JobGraph) -> Self {
        let id = ExecutionGraphId::generate();
        let now = now_millis();
        let vertices = job
            .vertices
            .iter()
            .map(|v| ExecutionJobVertex {
                id: v.id,
                name: v.name.clone(),
                parallelism: v.parallelism,
                max_parallelism: v.max_parallelism,
                inputs: v
                    .inputs
                    .iter()
                    .map(|e| {
                        let strategy = match (e.ship_strategy, e.pattern) {
                            (Some(s), _) => s.flink_name(),
                            (None, crate::jobgraph::DistributionPattern::Pointwise) => "FORWARD",
                            (None, crate::jobgraph::DistributionPattern::AllToAll) => "REBALANCE",
                        };
                        (e.source, strategy.to_string())
                    })
                    .collect(),
                executions: (0..v.parallelism)
                    .map(|i| Execution {
                        attempt: ExecutionAttemptId {
                            execution_graph_id: id,
                            vertex: ExecutionVertexId {
                                job_vertex_id: v.id,
                                subtask_index: i,
                            },
                            attempt_number: 0,
                        },
                        state: ExecutionState::Created,
                        slot: None,
                        timestamps: HashMap::from([(ExecutionState::Created, now)]),
                        failure: None,
                    })
                    .collect(),
            })
            .collect();
        ExecutionGraph {
            job_id: job.job_id,
            job_name: job.name.clone(),
            id,
            status: JobStatus::Created,
            status_timestamps: HashMap::from([
                (JobStatus::Initializing, now),
                (JobStatus::Created, now),
            ]),
            vertices,
            failure: None,
            exception_history: Vec::new(),
            concurrent_exceptions: Vec::new(),
            restarts: 0,
            failover: Failover {
                backoff: failover::RestartBackoff::new(failover::RestartStrategy::None, 0),
                region_of: None,
                regions: Vec::new(),
                pending: BTreeSet::new(),
                delay_elapsed: false,
                generation: 0,
            },
        }
        .with_regions_of(job)
    }

    fn with_regions_of(mut self, job: &JobGraph) -> Self {
        let index: HashMap<JobVertexId, usize> = job
            .vertices
            .iter()
            .enumerate()
            .map(|(i, v)| (v.id, i))
            .collect();
        let region_vertices: Vec<failover::RegionVertex> = job
            .vertices
            .iter()
            .map(|v| failover::RegionVertex {
                parallelism: v.parallelism,
                inputs: v
                    .inputs
                    .iter()
                    .filter_map(|e| {
                        let pointwise = match e.ship_strategy {
                            Some(s) => s == crate::jobgraph::ShipStrategy::Forward,
                            None => e.pattern == crate::jobgraph::DistributionPattern::Pointwise,
                        };
                        Some((*index.get(&e.source)?, pointwise))
                    })
                    .collect(),
            })
            .collect();
        self.failover.regions = failover::pipelined_regions(&region_vertices);
        self
    }

    /// Sets the restart strategy and the failover strategy (`region` restarts the failed
    /// subtask's pipelined region, anything else the whole graph). `seed` drives the jitter.
    pub fn with_failover(
        mut self,
        strategy: failover::RestartStrategy,
        region_failover: bool,
        seed: u64,
    ) -> Self {
        self.failover.backoff = failover::RestartBackoff::new(strategy, seed);
        self.failover.region_of = region_failover.then(|| {
            self.failover
                .regions
                .iter()
                .enumerate()
                .flat_map(|(r, members)| members.iter().map(move |m| (*m, r)))
                .collect()
        });
        self
    }

    /// The restart strategy in force.
    pub fn restart_strategy(&self) -> &failover::RestartStrategy {
        self.failover.backoff.strategy()
    }

    /// The pipelined regions: `(vertex index, subtask)` members of each.
    pub fn regions(&self) -> &[Vec<(usize, u32)>] {
        &self.failover.regions
    }

    /// `(vertex index, subtask)` of an attempt id of this graph (current or not).
    fn position(&self, attempt: ExecutionAttemptId) -> Option<(usize, u32)> {
        let v = self
            .vertices
            .iter()
            .position(|v| v.id == attempt.vertex.job_vertex_id)?;
        Some((v, attempt.vertex.subtask_index))
    }

    /// The job status.
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// Moves the job to `to`.
    pub fn transition(&mut self, to: JobStatus) -> Result<(), IllegalTransition<JobStatus>> {
        self.status.transition(to)?;
        self.status_timestamps.insert(to, now_millis());
        tracing::info!(job_id = %self.job_id, status = %to, "job status changed");
        Ok(())
    }

    /// Every current attempt.
    pub fn executions(&self) -> impl Iterator<Item = &Execution> {
        self.vertices.iter().flat_map(|v| v.executions.iter())
    }

    fn execution_mut(&mut self, attempt: ExecutionAttemptId) -> Option<&mut Execution> {
        self.vertices
            .iter_mut()
            .find(|v| v.id == attempt.vertex.job_vertex_id)?
            .executions
            .get_mut(attempt.vertex.subtask_index as usize)
            .filter(|e| e.attempt == attempt)
    }

    /// The current attempt with this id.
    pub fn execution(&self, attempt: ExecutionAttemptId) -> Option<&Execution> {
        self.vertices
            .iter()
            .find(|v| v.id == attempt.vertex.job_vertex_id)?
            .executions
            .get(attempt.vertex.subtask_index as usize)
            .filter(|e| e.attempt == attempt)
    }

    /// `"name (i+1/n)"`, Flink's task name with subtask.
    pub fn task_name(&self, attempt: ExecutionAttemptId) -> String {
        match self
            .vertices
            .iter()
            .find(|v| v.id == attempt.vertex.job_vertex_id)
        {
            Some(v) => format!(
                "{} ({}/{})",
                v.name,
                attempt.vertex.subtask_index + 1,
                v.parallelism
            ),
            None => attempt.to_string(),
        }
    }

    fn set_state(
        &mut self,
        attempt: ExecutionAttemptId,
        to: ExecutionState,
    ) -> Result<(), GraphError> {
        let exec = self
            .execution_mut(attempt)
            .ok_or(GraphError::UnknownAttempt(attempt))?;
        exec.state
            .transition(to)
            .map_err(|source| GraphError::IllegalExecutionTransition { attempt, source })?;
        exec.timestamps.insert(to, now_millis());
        Ok(())
    }

    /// Starts scheduling: the job goes RUNNING and every attempt SCHEDULED (a slot is requested).
    pub fn start_scheduling(&mut self) -> Result<(), GraphError> {
        self.transition(JobStatus::Running)?;
        let attempts: Vec<_> = self.executions().map(|e| e.attempt).collect();
        for attempt in attempts {
            self.set_state(attempt, ExecutionState::Scheduled)?;
        }
        Ok(())
    }

    /// Records the slot an attempt is deployed to; it goes DEPLOYING.
    pub fn deploy(
        &mut self,
        attempt: ExecutionAttemptId,
        slot: SlotAssignment,
    ) -> Result<(), GraphError> {
        self.set_state(attempt, ExecutionState::Deploying)?;
        if let Some(exec) = self.execution_mut(attempt) {
            exec.slot = Some(slot);
        }
        Ok(())
    }

    /// Applies a state reported for `attempt` (by its TaskExecutor, or a deployment failure).
    pub fn update_execution(
        &mut self,
        attempt: ExecutionAttemptId,
        to: ExecutionState,
        error: Option<ErrorInfo>,
    ) -> Result<Vec<GraphAction>, GraphError> {
        let current = self
            .execution(attempt)
            .ok_or(GraphError::UnknownAttempt(attempt))?
            .state;
        if current == to {
            return Ok(Vec::new());
        }
        // A task that was asked to cancel may still report RUNNING on its way; ignore that.
        if current == ExecutionState::Canceling
            && matches!(to, ExecutionState::Initializing | ExecutionState::Running)
        {
            return Ok(Vec::new());
        }
        // A cancelling task that finishes or fails first counts as cancelled.
        let to = if current == ExecutionState::Canceling && matches!(to, ExecutionState::Finished) {
            ExecutionState::Canceled
        } else {
            to
        };
        self.set_state(attempt, to)?;
        let mut actions = Vec::new();
        if to == ExecutionState::Failed {
            let info = error.unwrap_or_else(|| ErrorInfo {
                kind: "TaskFailure".into(),
                message: "the task failed without a reason".into(),
                task_name: None,
                location: None,
                timestamp: now_millis(),
            });
            let info = ErrorInfo {
                task_name: info.task_name.or_else(|| Some(self.task_name(attempt))),
                location: info.location.or_else(|| {
                    self.execution(attempt)
                        .and_then(|e| e.slot.as_ref().map(|s| s.address.clone()))
                }),
                ..info
            };
            if let Some(exec) = self.execution_mut(attempt) {
                exec.failure = Some(info.clone());
            }
            let position = self.position(attempt);
            let is_new_failure = position.is_some_and(|p| !self.failover.pending.contains(&p));
            // Failures while the job is already failing or cancelling, or of attempts already
            // restarting, come with the failure that caused that: concurrent exceptions.
            if is_new_failure && matches!(self.status, JobStatus::Running | JobStatus::Restarting) {
                self.record_failure(info.clone());
                actions.extend(self.handle_failure(position.into_iter().collect(), info)?);
            } else {
                self.record_concurrent(info);
            }
        }
        actions.extend(self.check_termination()?);
        actions.extend(self.check_restart()?);
        Ok(actions)
    }

    /// Flink's `ExecutionFailureHandler`: asks the restart strategy; restarts the regions of
    /// `failed` (or everything) after its backoff, or fails the job.
    fn handle_failure(
        &mut self,
        failed: Vec<(usize, u32)>,
        cause: ErrorInfo,
    ) -> Result<Vec<GraphAction>, GraphError> {
        self.failover.backoff.notify_failure(Instant::now());
        if !self.failover.backoff.can_restart() {
            tracing::info!(job_id = %self.job_id, strategy = self.failover.backoff.strategy().flink_name(),
                "the restart strategy allows no more restarts; failing the job");
            self.failover.pending.clear();
            self.failure = Some(cause.clone());
            return self.fail_job(cause);
        }
        let to_restart: BTreeSet<(usize, u32)> = match &self.failover.region_of {
            Some(region_of) => failed
                .iter()
                .filter_map(|p| region_of.get(p))
                .flat_map(|r| self.failover.regions[*r].iter().copied())
                .collect(),
            None => self
                .vertices
                .iter()
                .enumerate()
                .flat_map(|(v, x)| (0..x.parallelism).map(move |k| (v, k)))
                .collect(),
        };
        if self.status == JobStatus::Running {
            self.transition(JobStatus::Restarting)?;
        }
        let delay = self.failover.backoff.backoff();
        self.failover.generation += 1;
        self.failover.delay_elapsed = false;
        tracing::info!(job_id = %self.job_id, subtasks = to_restart.len(), ?delay,
            cause = %cause.message, "restarting after a failure");
        let now = now_millis();
        let mut actions = Vec::new();
        for &(v, k) in &to_restart {
            self.failover.pending.insert((v, k));
            let Some(exec) = self
                .vertices
                .get_mut(v)
                .and_then(|x| x.executions.get_mut(k as usize))
            else {
                continue;
            };
            actions.extend(cancel_execution(exec, now));
        }
        actions.push(GraphAction::ScheduleRestart {
            delay,
            generation: self.failover.generation,
        });
        Ok(actions)
    }

    fn record_failure(&mut self, info: ErrorInfo) {
        self.exception_history.push(info);
        self.concurrent_exceptions.push(Vec::new());
    }

    fn record_concurrent(&mut self, info: ErrorInfo) {
        if let Some(last) = self.concurrent_exceptions.last_mut() {
            last.push(info);
        }
    }

    /// A failure of the whole job rather than of one task (a checkpoint failure beyond the
    /// tolerated number, a failed restore): every subtask restarts, if the strategy allows.
    pub fn global_failure(&mut self, cause: ErrorInfo) -> Result<Vec<GraphAction>, GraphError> {
        if !matches!(self.status, JobStatus::Running | JobStatus::Restarting) {
            return Ok(Vec::new());
        }
        self.record_failure(cause.clone());
        let saved = self.failover.region_of.take();
        let all: Vec<(usize, u32)> = self
            .vertices
            .iter()
            .enumerate()
            .flat_map(|(v, x)| (0..x.parallelism).map(move |k| (v, k)))
            .collect();
        let result = self.handle_failure(all, cause);
        self.failover.region_of = saved;
        let mut actions = result?;
        actions.extend(self.check_termination()?);
        actions.extend(self.check_restart()?);
        Ok(actions)
    }

    /// The backoff of restart decision `generation` has passed: restarts once every attempt
    /// waiting for it is terminal. A superseded decision is ignored.
    pub fn restart_delay_elapsed(
        &mut self,
        generation: u64,
    ) -> Result<Vec<GraphAction>, GraphError> {
        if generation != self.failover.generation {
            return Ok(Vec::new());
        }
        self.failover.delay_elapsed = true;
        self.check_restart()
    }

    /// The subtasks waiting for a restart, as `(vertex index, subtask)`.
    pub fn pending_restart(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.failover.pending.iter().copied()
    }

    fn check_restart(&mut self) -> Result<Vec<GraphAction>, GraphError> {
        if self.status != JobStatus::Restarting
            || !self.failover.delay_elapsed
            || self.failover.pending.is_empty()
        {
            return Ok(Vec::new());
        }
        let all_terminal = self.failover.pending.iter().all(|&(v, k)| {
            self.vertices
                .get(v)
                .and_then(|x| x.executions.get(k as usize))
                .is_none_or(|e| e.state.is_terminal())
        });
        if !all_terminal {
            return Ok(Vec::new());
        }
        let now = now_millis();
        let mut attempts = Vec::new();
        for (v, k) in std::mem::take(&mut self.failover.pending) {
            let Some(exec) = self
                .vertices
                .get_mut(v)
                .and_then(|x| x.executions.get_mut(k as usize))
            else {
                continue;
            };
            let mut attempt = exec.attempt;
            attempt.attempt_number += 1;
            *exec = Execution {
                attempt,
                state: ExecutionState::Scheduled,
                slot: None,
                timestamps: HashMap::from([
                    (ExecutionState::Created, now),
                    (ExecutionState::Scheduled, now),
                ]),
                failure: None,
            };
            attempts.push(attempt);
        }
        self.restarts += 1;
        self.transition(JobStatus::Running)?;
        Ok(vec![GraphAction::Redeploy { attempts }])
    }

    /// Fails the job: FAILING, cancel every other attempt, FAILED once all are terminal.
    pub fn fail_job(&mut self, cause: ErrorInfo) -> Result<Vec<GraphAction>, GraphError> {
        if self.status.is_terminal() || self.status == JobStatus::Failing {
            return Ok(Vec::new());
        }
        if self.failure.is_none() {
            self.failure = Some(cause);
        }
        self.failover.pending.clear();
        self.transition(JobStatus::Failing)?;
        let mut actions = self.cancel_all();
        actions.extend(self.check_termination()?);
        Ok(actions)
    }

    /// Cancels the job: CANCELLING, cancel every attempt, CANCELED once all are terminal.
    /// Cancelling a terminal job does nothing.
    pub fn cancel(&mut self) -> Result<Vec<GraphAction>, GraphError> {
        if self.status.is_terminal() || self.status == JobStatus::Cancelling {
            return Ok(Vec::new());
        }
        self.failover.pending.clear();
        self.transition(JobStatus::Cancelling)?;
        let mut actions = self.cancel_all();
        actions.extend(self.check_termination()?);
        Ok(actions)
    }

    fn cancel_all(&mut self) -> Vec<GraphAction> {
        let mut actions = Vec::new();
        let now = now_millis();
        for exec in self
            .vertices
            .iter_mut()
            .flat_map(|v| v.executions.iter_mut())
        {
            actions.extend(cancel_execution(exec, now));
        }
        actions
    }

    /// Every attempt running on a TaskExecutor that was lost fails.
    pub fn task_manager_lost(
        &mut self,
        resource_id: ResourceId,
        reason: &str,
    ) -> Result<Vec<GraphAction>, GraphError> {
        let lost: Vec<_> = self
            .executions()
            .filter(|e| {
                !e.state.is_terminal()
                    && e.slot
                        .as_ref()
                        .is_some_and(|s| s.resource_id == resource_id)
            })
            .map(|e| (e.attempt, e.slot.as_ref().map(|s| s.address.clone())))
            .collect();
        let mut actions = Vec::new();
        // One loss is one failure for the restart strategy, however many tasks ran there.
        let mut failed = Vec::new();
        let mut first: Option<ErrorInfo> = None;
        let mut lost_too = Vec::new();
        for (attempt, location) in lost {
            let info = ErrorInfo {
                kind: "TaskManagerLost".into(),
                message: format!("TaskManager {resource_id} was lost: {reason}"),
                task_name: Some(self.task_name(attempt)),
                location,
                timestamp: now_millis(),
            };
            self.set_state(attempt, ExecutionState::Failed)?;
            let position = self.position(attempt);
            if let Some(exec) = self.execution_mut(attempt) {
                exec.failure = Some(info.clone());
            }
            match position.filter(|p| !self.failover.pending.contains(p)) {
                Some(p) if first.is_none() => {
                    failed.push(p);
                    first = Some(info);
                }
                Some(p) => {
                    failed.push(p);
                    lost_too.push(info);
                }
                None => lost_too.push(info),
            }
        }
        match first {
            Some(info) if matches!(self.status, JobStatus::Running | JobStatus::Restarting) => {
                self.record_failure(info.clone());
                actions.extend(self.handle_failure(failed, info)?);
            }
            Some(info) => self.record_concurrent(info),
            None => {}
        }
        for info in lost_too {
            self.record_concurrent(info);
        }
        // The lost TaskExecutor cannot confirm cancellations: drop those actions for it.
        actions.retain(|a| !matches!(a, GraphAction::CancelTask { slot, .. } if slot.resource_id == resource_id));
        // Attempts that were cancelling there will never report; they count as cancelled.
        let stuck: Vec<_> = self
            .executions()
            .filter(|e| {
                e.state == ExecutionState::Canceling
                    && e.slot
                        .as_ref()
                        .is_some_and(|s| s.resource_id == resource_id)
            })
            .map(|e| e.attempt)
            .collect();
        for attempt in stuck {
            self.set_state(attempt, ExecutionState::Canceled)?;
        }
        actions.extend(self.check_termination()?);
        actions.extend(self.check_restart()?);
        Ok(actions)
    }

    fn check_termination(&mut self) -> Result<Vec<GraphAction>, GraphError> {
        let all_terminal = self.executions().all(|e| e.state.is_terminal());
        let all_finished = self
            .executions()
            .all(|e| e.state == ExecutionState::Finished);
        let target = match self.status {
            JobStatus::Running if all_finished => Some(JobStatus::Finished),
            JobStatus::Failing if all_terminal => Some(JobStatus::Failed),
            JobStatus::Cancelling if all_terminal => Some(JobStatus::Canceled),
            _ => None,
        };
        match target {
            Some(status) => {
                self.transition(status)?;
                Ok(vec![GraphAction::JobTerminated(status)])
            }
            None => Ok(Vec::new()),
        }
    }

    /// How many attempts are in each state.
    pub fn state_counts(&self) -> HashMap<ExecutionState, usize> {
        let mut counts = HashMap::new();
        for e in self.executions() {
            *counts.entry(e.state).or_insert(0) += 1;
        }
        counts
    }
}

/// Cancels one attempt: one not deployed yet is CANCELED at once; a deployed one goes
/// CANCELING and its TaskExecutor is asked to cancel it (the returned action).
fn cancel_execution(exec: &mut Execution, now: i64) -> Option<GraphAction> {
    match exec.state {
        ExecutionState::Created | ExecutionState::Scheduled => {
            exec.state = ExecutionState::Canceled;
            exec.timestamps.insert(ExecutionState::Canceled, now);
            None
        }
        ExecutionState::Deploying | ExecutionState::Initializing | ExecutionState::Running => {
            exec.state = ExecutionState::Canceling;
            exec.timestamps.insert(ExecutionState::Canceling, now);
            exec.slot.as_ref().map(|slot| GraphAction::CancelTask {
                attempt: exec.attempt,
                slot: slot.clone(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobgraph::{DistributionPattern, JobVertex};

    fn graph() -> ExecutionGraph {
        let a = JobVertex::new("source", "NoOpInvokable", 2);
        let b = JobVertex::new("sink", "NoOpInvokable", 2)
            .connect_from(&a, DistributionPattern::AllToAll);
        ExecutionGraph::new(&JobGraph::new("job", vec![a, b]))
    }

    fn slot(n: u128) -> SlotAssignment {
        SlotAssignment {
            resource_id: ResourceId::from_u128(n),
            allocation_id: AllocationId::generate(),
            address: format!("tm{n}"),
        }
    }

    fn run_all(g: &mut ExecutionGraph) -> Vec<ExecutionAttemptId> {
        g.start_scheduling().expect("schedules");
        let attempts: Vec<_> = g.executions().map(|e| e.attempt).collect();
        for (i, a) in attempts.iter().enumerate() {
            g.deploy(*a, slot(i as u128 % 2)).expect("deploys");
            g.update_execution(*a, ExecutionState::Initializing, None)
                .expect("initializing");
            g.update_execution(*a, ExecutionState::Running, None)
                .expect("running");
        }
        attempts
    }

    #[test]
    fn all_finished_finishes_the_job() {
        let mut g = graph();
        let attempts = run_all(&mut g);
        let mut last = Vec::new();
        for a in &attempts {
            assert_eq!(g.status(), JobStatus::Running);
            last = g
                .update_execution(*a, ExecutionState::Finished, None)
                .expect("finished");
        }
        assert_eq!(last, vec![GraphAction::JobTerminated(JobStatus::Finished)]);
        assert_eq!(g.status(), JobStatus::Finished);
        assert_eq!(g.vertices[0].aggregate_state(), ExecutionState::Finished);
    }

    #[test]
    fn one_failure_cancels_the_rest_and_fails_the_job() {
        let mut g = graph();
        let attempts = run_all(&mut g);
        let error = ErrorInfo {
            kind: "TaskFailure".into(),
            message: "boom".into(),
            task_name: None,
            location: None,
            timestamp: 1,
        };
        let actions = g
            .update_execution(attempts[0], ExecutionState::Failed, Some(error))
            .expect("failed");
        assert_eq!(g.status(), JobStatus::Failing);
        let cancels = actions
            .iter()
            .filter(|a| matches!(a, GraphAction::CancelTask { .. }))
            .count();
        assert_eq!(cancels, 3);
        for a in &attempts[1..3] {
            assert!(g
                .update_execution(*a, ExecutionState::Canceled, None)
                .expect("canceled")
                .is_empty());
        }
        let done = g
            .update_execution(attempts[3], ExecutionState::Canceled, None)
            .expect("canceled");
        assert_eq!(done, vec![GraphAction::JobTerminated(JobStatus::Failed)]);
        let failure = g.failure.as_ref().expect("failure recorded");
        assert_eq!(failure.message, "boom");
        assert_eq!(failure.task_name.as_deref(), Some("source (1/2)"));
        assert_eq!(failure.location.as_deref(), Some("tm0"));
        assert_eq!(g.exception_history.len(), 1);
    }

    #[test]
    fn cancel_before_and_after_deployment() {
        let mut g = graph();
        g.start_scheduling().expect("schedules");
        let actions = g.cancel().expect("cancels");
        assert_eq!(
            actions,
            vec![GraphAction::JobTerminated(JobStatus::Canceled)]
        );
        assert!(
            g.cancel().expect("no-op").is_empty(),
            "a terminal job cannot be cancelled again"
        );

        let mut g = graph();
        let attempts = run_all(&mut g);
        let actions = g.cancel().expect("cancels");
        assert_eq!(actions.len(), 4);
        // A late RUNNING report from a cancelling task is ignored.
        assert!(g
            .update_execution(attempts[0], ExecutionState::Running, None)
            .expect("ignored")
            .is_empty());
        for a in &attempts {
            g.update_execution(*a, ExecutionState::Canceled, None)
                .expect("canceled");
        }
        assert_eq!(g.status(), JobStatus::Canceled);
    }

    #[test]
    fn stale_and_illegal_reports_are_refused() {
        let mut g = graph();
        let attempts = run_all(&mut g);
        let mut stale = attempts[0];
        stale.attempt_number = 7;
        assert_eq!(
            g.update_execution(stale, ExecutionState::Finished, None),
            Err(GraphError::UnknownAttempt(stale))
        );
        g.update_execution(attempts[0], ExecutionState::Finished, None)
            .expect("finished");
        assert!(matches!(
            g.update_execution(attempts[0], ExecutionState::Running, None),
            Err(GraphError::IllegalExecutionTransition { .. })
        ));
    }

    fn boom(message: &str) -> ErrorInfo {
        ErrorInfo {
            kind: "TaskFailure".into(),
            message: message.into(),
            task_name: None,
            location: None,
            timestamp: 1,
        }
    }

    fn fixed_delay(attempts: u32) -> failover::RestartStrategy {
        failover::RestartStrategy::FixedDelay {
            attempts,
            delay: Duration::from_millis(5),
        }
    }

    /// Reports every cancelled attempt as CANCELED and returns what the graph asked for.
    fn settle_cancels(g: &mut ExecutionGraph, actions: &[GraphAction]) -> Vec<GraphAction> {
        let mut out = Vec::new();
        for a in actions {
            if let GraphAction::CancelTask { attempt, .. } = a {
                out.extend(
                    g.update_execution(*attempt, ExecutionState::Canceled, None)
                        .expect("canceled"),
                );
            }
        }
        out
    }

    fn generation_of(actions: &[GraphAction]) -> Option<u64> {
        actions.iter().find_map(|a| match a {
            GraphAction::ScheduleRestart { generation, .. } => Some(*generation),
            _ => None,
        })
    }

    /// Scenario 29/30: a failure restarts the job with new attempts (RUNNING → RESTARTING →
    /// RUNNING) while the strategy allows, and fails it after that.
    #[test]
    fn fixed_delay_restarts_then_fails() {
        let mut g = graph().with_failover(fixed_delay(2), false, 1);
        let mut attempts = run_all(&mut g);
        for round in 0..2u32 {
            let actions = g
                .update_execution(attempts[1], ExecutionState::Failed, Some(boom("boom")))
                .expect("failed");
            assert_eq!(g.status(), JobStatus::Restarting, "round {round}");
            let generation = generation_of(&actions).expect("a restart is scheduled");
            // Cancellations and the delay may end in either order: here cancels first.
            assert!(settle_cancels(&mut g, &actions).is_empty());
            assert_eq!(g.status(), JobStatus::Restarting);
            assert!(g
                .restart_delay_elapsed(generation + 7)
                .expect("stale")
                .is_empty());
            let redeploy = g.restart_delay_elapsed(generation).expect("restarts");
            let [GraphAction::Redeploy { attempts: fresh }] = redeploy.as_slice() else {
                panic!("expected a redeploy, got {redeploy:?}");
            };
            assert_eq!(fresh.len(), 4, "full failover restarts every subtask");
            assert!(fresh.iter().all(|a| a.attempt_number == round + 1));
            assert_eq!(g.status(), JobStatus::Running);
            assert_eq!(g.restarts, round + 1);
            for (i, a) in fresh.iter().enumerate() {
                g.deploy(*a, slot(i as u128 % 2)).expect("deploys");
                g.update_execution(*a, ExecutionState::Running, None)
                    .expect_err("INITIALIZING comes first");
                g.update_execution(*a, ExecutionState::Initializing, None)
                    .expect("initializing");
                g.update_execution(*a, ExecutionState::Running, None)
                    .expect("running");
            }
            // Reports about the old attempts are stale now.
            assert_eq!(
                g.update_execution(attempts[0], ExecutionState::Finished, None),
                Err(GraphError::UnknownAttempt(attempts[0]))
            );
            attempts = fresh.clone();
        }
        let actions = g
            .update_execution(attempts[2], ExecutionState::Failed, Some(boom("third")))
            .expect("failed");
        assert_eq!(g.status(), JobStatus::Failing, "attempts are exhausted");
        assert!(generation_of(&actions).is_none());
        let done = settle_cancels(&mut g, &actions);
        assert_eq!(done, vec![GraphAction::JobTerminated(JobStatus::Failed)]);
        assert_eq!(
            g.failure.as_ref().map(|f| f.message.as_str()),
            Some("third")
        );
        assert_eq!(
            g.exception_history.len(),
            3,
            "every failure is in the history"
        );
    }

    /// The delay may pass before the cancelled attempts end; the restart waits for both, and
    /// failures of attempts already restarting are not new failures.
    #[test]
    fn restart_waits_for_cancellations_and_ignores_their_failures() {
        let mut g = graph().with_failover(fixed_delay(1), false, 1);
        let attempts = run_all(&mut g);
        let actions = g
            .update_execution(attempts[0], ExecutionState::Failed, Some(boom("boom")))
            .expect("failed");
        let generation = generation_of(&actions).expect("scheduled");
        assert!(g
            .restart_delay_elapsed(generation)
            .expect("waits")
            .is_empty());
        // A cancelled task that fails on its way out does not use up the one restart.
        assert!(g
            .update_execution(attempts[1], ExecutionState::Failed, Some(boom("late")))
            .expect("ignored as a new failure")
            .is_empty());
        g.update_execution(attempts[2], ExecutionState::Canceled, None)
            .expect("canceled");
        let last = g
            .update_execution(attempts[3], ExecutionState::Canceled, None)
            .expect("canceled");
        assert!(matches!(last.as_slice(), [GraphAction::Redeploy { .. }]));
        assert_eq!(g.status(), JobStatus::Running);
        assert_eq!(g.exception_history.len(), 1);
    }

    /// Region failover (scenario 29): in an all-forward job every subtask pipeline is its own
    /// pipelined region; a failure restarts only its region, the other keeps its attempts.
    #[test]
    fn region_failover_restarts_only_the_failed_pipeline() {
        let a = JobVertex::new("source", "NoOpInvokable", 2);
        let b = JobVertex::new("sink", "NoOpInvokable", 2)
            .connect_from(&a, DistributionPattern::Pointwise);
        let mut g = ExecutionGraph::new(&JobGraph::new("forward", vec![a, b])).with_failover(
            fixed_delay(1),
            true,
            1,
        );
        assert_eq!(g.regions().len(), 2, "{:?}", g.regions());
        let attempts = run_all(&mut g);
        // attempts: source 0, source 1, sink 0, sink 1.
        let actions = g
            .update_execution(attempts[1], ExecutionState::Failed, Some(boom("boom")))
            .expect("failed");
        assert_eq!(g.status(), JobStatus::Restarting);
        let cancelled: Vec<ExecutionAttemptId> = actions
            .iter()
            .filter_map(|a| match a {
                GraphAction::CancelTask { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .collect();
        assert_eq!(
            cancelled,
            vec![attempts[3]],
            "only sink 1 shares the region"
        );
        let generation = generation_of(&actions).expect("scheduled");
        settle_cancels(&mut g, &actions);
        let redeploy = g.restart_delay_elapsed(generation).expect("restarts");
        let [GraphAction::Redeploy { attempts: fresh }] = redeploy.as_slice() else {
            panic!("expected a redeploy, got {redeploy:?}");
        };
        assert_eq!(fresh.len(), 2);
        assert!(fresh
            .iter()
            .all(|a| a.vertex.subtask_index == 1 && a.attempt_number == 1));
        // Region 0 kept its attempts and still runs.
        assert_eq!(
            g.execution(attempts[0]).map(|e| e.state),
            Some(ExecutionState::Running)
        );
        assert_eq!(
            g.execution(attempts[2]).map(|e| e.state),
            Some(ExecutionState::Running)
        );
        assert_eq!(g.status(), JobStatus::Running);
    }

    /// Cancelling while restarting cancels the job; a pending restart never happens.
    #[test]
    fn cancel_while_restarting() {
        let mut g = graph().with_failover(fixed_delay(3), false, 1);
        let attempts = run_all(&mut g);
        let actions = g
            .update_execution(attempts[0], ExecutionState::Failed, Some(boom("boom")))
            .expect("failed");
        let generation = generation_of(&actions).expect("scheduled");
        g.cancel().expect("cancels");
        assert_eq!(g.status(), JobStatus::Cancelling);
        let done = settle_cancels(&mut g, &actions);
        assert_eq!(done, vec![GraphAction::JobTerminated(JobStatus::Canceled)]);
        assert!(g
            .restart_delay_elapsed(generation)
            .expect("no-op")
            .is_empty());
        assert_eq!(g.status(), JobStatus::Canceled);
    }

    /// A lost TaskManager is one failure, however many of the job's tasks ran there.
    #[test]
    fn a_lost_task_manager_is_one_failure_for_the_strategy() {
        let mut g = graph().with_failover(fixed_delay(1), false, 1);
        let _ = run_all(&mut g);
        let actions = g
            .task_manager_lost(ResourceId::from_u128(0), "killed")
            .expect("handled");
        assert_eq!(
            g.status(),
            JobStatus::Restarting,
            "one restart allowed, one used"
        );
        assert_eq!(g.exception_history.len(), 1);
        let generation = generation_of(&actions).expect("scheduled");
        let mut redeploy = settle_cancels(&mut g, &actions);
        redeploy.extend(g.restart_delay_elapsed(generation).expect("restarts"));
        assert!(
            matches!(redeploy.as_slice(), [GraphAction::Redeploy { attempts }] if attempts.len() == 4)
        );
    }

    #[test]
    fn losing_a_task_manager_fails_its_tasks_and_the_job() {
        let mut g = graph();
        let _ = run_all(&mut g);
        let actions = g
            .task_manager_lost(ResourceId::from_u128(0), "heartbeat timeout")
            .expect("handled");
        // The two attempts on tm1 must be cancelled; nothing is sent to the lost tm0.
        assert!(actions.iter().all(|a| match a {
            GraphAction::CancelTask { slot, .. } => slot.resource_id == ResourceId::from_u128(1),
            _ => true,
        }));
        assert_eq!(g.status(), JobStatus::Failing);
        let failure = g.failure.clone().expect("failure");
        assert_eq!(failure.kind, "TaskManagerLost");
        assert!(failure.message.contains("heartbeat timeout"));
    }
}
