//! Flink's two state machines, as explicit transition tables (reference §7.5–7.6).
//!
//! Every legal edge is listed in one `match`; everything else is refused with an error naming both
//! states. The tests walk every pair of states against an independent list of the legal edges.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Status of a job. Flink: `JobStatus` (names shown in Flink's upper case on REST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// The Dispatcher has the job; the JobMaster is being created.
    Initializing,
    /// The execution graph exists; nothing is scheduled yet.
    Created,
    /// Scheduling has started (tasks may still be deploying).
    Running,
    /// A failure is being handled; tasks are being cancelled.
    Failing,
    /// Globally terminal: the job failed.
    Failed,
    /// A cancel is in progress.
    Cancelling,
    /// Globally terminal: the job was cancelled.
    Canceled,
    /// Globally terminal: every task finished.
    Finished,
    /// Tasks are being restarted after a failure.
    Restarting,
    /// Locally terminal: this JobMaster stopped; the job may resume elsewhere.
    Suspended,
    /// Recovering a batch job's state after a JobMaster failover.
    Reconciling,
}

impl JobStatus {
    /// Every status, for exhaustive tests and REST status counts.
    pub const ALL: [JobStatus; 11] = [
        JobStatus::Initializing,
        JobStatus::Created,
        JobStatus::Running,
        JobStatus::Failing,
        JobStatus::Failed,
        JobStatus::Cancelling,
        JobStatus::Canceled,
        JobStatus::Finished,
        JobStatus::Restarting,
        JobStatus::Suspended,
        JobStatus::Reconciling,
    ];

    /// Finished, failed or canceled: the job is over for good.
    pub fn is_globally_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Finished | JobStatus::Failed | JobStatus::Canceled
        )
    }

    /// Globally terminal, or suspended.
    pub fn is_terminal(self) -> bool {
        self.is_globally_terminal() || self == JobStatus::Suspended
    }

    /// Whether the job may go from `self` to `to`.
    pub fn can_transition_to(self, to: JobStatus) -> bool {
        use JobStatus::*;
        match (self, to) {
            (Initializing, Created | Failed | Canceled) => true,
            (Created, Running | Reconciling | Cancelling | Failing) => true,
            (Reconciling, Running | Failing | Cancelling) => true,
            (Running, Finished | Restarting | Cancelling | Failing) => true,
            (Restarting, Running | Cancelling | Failing) => true,
            (Cancelling, Canceled | Failed) => true,
            (Failing, Failed | Cancelling) => true,
            (from, Suspended) => !from.is_terminal(),
            _ => false,
        }
    }

    /// Moves to `to`, or says why not.
    pub fn transition(&mut self, to: JobStatus) -> Result<(), IllegalTransition<JobStatus>> {
        if self.can_transition_to(to) {
            *self = to;
            Ok(())
        } else {
            Err(IllegalTransition { from: *self, to })
        }
    }

    /// Flink's name, e.g. `RUNNING`.
    pub fn as_str(self) -> &'static str {
        use JobStatus::*;
        match self {
            Initializing => "INITIALIZING",
            Created => "CREATED",
            Running => "RUNNING",
            Failing => "FAILING",
            Failed => "FAILED",
            Cancelling => "CANCELLING",
            Canceled => "CANCELED",
            Finished => "FINISHED",
            Restarting => "RESTARTING",
            Suspended => "SUSPENDED",
            Reconciling => "RECONCILING",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of one execution attempt. Flink: `ExecutionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionState {
    /// Created, no slot yet.
    Created,
    /// A slot has been requested.
    Scheduled,
    /// Being deployed to a TaskExecutor.
    Deploying,
    /// The task restores its state.
    Initializing,
    /// The task runs.
    Running,
    /// Terminal: the task completed.
    Finished,
    /// Cancellation requested, not yet confirmed.
    Canceling,
    /// Terminal: cancelled.
    Canceled,
    /// Terminal: failed.
    Failed,
    /// Being reconciled after a JobMaster failover.
    Reconciling,
}

impl ExecutionState {
    /// Every state.
    pub const ALL: [ExecutionState; 10] = [
        ExecutionState::Created,
        ExecutionState::Scheduled,
        ExecutionState::Deploying,
        ExecutionState::Initializing,
        ExecutionState::Running,
        ExecutionState::Finished,
        ExecutionState::Canceling,
        ExecutionState::Canceled,
        ExecutionState::Failed,
        ExecutionState::Reconciling,
    ];

    /// Finished, canceled or failed.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionState::Finished | ExecutionState::Canceled | ExecutionState::Failed
        )
    }

    /// Whether an attempt may go from `self` to `to`.
    pub fn can_transition_to(self, to: ExecutionState) -> bool {
        use ExecutionState::*;
        match (self, to) {
            (Created, Scheduled | Canceled | Reconciling) => true,
            (Scheduled, Deploying | Canceled) => true,
            (Deploying, Initializing | Canceling) => true,
            (Initializing, Running | Canceling) => true,
            (Running, Finished | Canceling) => true,
            (Canceling, Canceled) => true,
            (Reconciling, Initializing | Running | Finished | Canceled | Failed) => true,
            (from, Failed) => !from.is_terminal(),
            _ => false,
        }
    }

    /// Moves to `to`, or says why not.
    pub fn transition(
        &mut self,
        to: ExecutionState,
    ) -> Result<(), IllegalTransition<ExecutionState>> {
        if self.can_transition_to(to) {
            *self = to;
            Ok(())
        } else {
            Err(IllegalTransition { from: *self, to })
        }
    }

    /// Flink's name, e.g. `RUNNING`.
    pub fn as_str(self) -> &'static str {
        use ExecutionState::*;
        match self {
            Created => "CREATED",
            Scheduled => "SCHEDULED",
            Deploying => "DEPLOYING",
            Initializing => "INITIALIZING",
            Running => "RUNNING",
            Finished => "FINISHED",
            Canceling => "CANCELING",
            Canceled => "CANCELED",
            Failed => "FAILED",
            Reconciling => "RECONCILING",
        }
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("illegal transition from {from} to {to}")]
pub struct IllegalTransition<S: fmt::Display + fmt::Debug> {
    /// The current state.
    pub from: S,
    /// The refused target.
    pub to: S,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The legal job edges, written out independently of `can_transition_to`, from reference §7.5.
    fn legal_job_edges() -> Vec<(JobStatus, JobStatus)> {
        use JobStatus::*;
        let mut edges = vec![
            (Initializing, Created),
            (Initializing, Failed),
            (Initializing, Canceled),
            (Created, Running),
            (Created, Reconciling),
            (Reconciling, Running),
            (Running, Finished),
            (Running, Restarting),
            (Restarting, Running),
            (Running, Cancelling),
            (Created, Cancelling),
            (Restarting, Cancelling),
            (Cancelling, Canceled),
            (Cancelling, Failed),
            (Running, Failing),
            (Restarting, Failing),
            (Failing, Failed),
            (Failing, Cancelling),
            // Failures while still creating or reconciling fail the job too.
            (Created, Failing),
            (Reconciling, Failing),
            (Reconciling, Cancelling),
        ];
        for s in JobStatus::ALL {
            if !s.is_terminal() {
                edges.push((s, Suspended));
            }
        }
        edges
    }

    #[test]
    fn every_job_status_pair_is_checked() {
        let legal = legal_job_edges();
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} -> {to}");
                let mut state = from;
                let result = state.transition(to);
                assert_eq!(result.is_ok(), expected, "{from} -> {to}");
                assert_eq!(state, if expected { to } else { from });
                if let Err(err) = result {
                    assert_eq!(
                        err.to_string(),
                        format!("illegal transition from {from} to {to}")
                    );
                }
            }
        }
    }

    #[test]
    fn every_execution_state_pair_is_checked() {
        use ExecutionState::*;
        let mut legal = vec![
            (Created, Scheduled),
            (Scheduled, Deploying),
            (Deploying, Initializing),
            (Initializing, Running),
            (Running, Finished),
            (Created, Canceled),
            (Scheduled, Canceled),
            (Deploying, Canceling),
            (Initializing, Canceling),
            (Running, Canceling),
            (Canceling, Canceled),
            (Created, Reconciling),
            (Reconciling, Initializing),
            (Reconciling, Running),
            (Reconciling, Finished),
            (Reconciling, Canceled),
        ];
        for s in ExecutionState::ALL {
            if !s.is_terminal() {
                legal.push((s, Failed));
            }
        }
        for from in ExecutionState::ALL {
            for to in ExecutionState::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} -> {to}");
                let mut state = from;
                assert_eq!(state.transition(to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn serde_uses_flinks_names() {
        assert_eq!(JobStatus::Cancelling.as_str(), "CANCELLING");
        assert_eq!(ExecutionState::Canceling.to_string(), "CANCELING");
        for s in JobStatus::ALL {
            assert!(s
                .as_str()
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_'));
        }
    }
}
