//! Checkpoints: the coordinator's bookkeeping, the completed-checkpoint store, the statistics
//! REST shows, and the file-system checkpoint storage. Flink: `org.apache.flink.runtime.checkpoint`
//! (`CheckpointCoordinator`, `PendingCheckpoint`, `CompletedCheckpointStore`,
//! `CheckpointFailureManager`, `CheckpointStatsTracker`) and
//! `org.apache.flink.runtime.state.filesystem` (`FileSystemCheckpointStorage`).
//!
//! Everything here is **pure logic**: no actix, no RPC, no tokio, no clock. The JobMaster owns a
//! [`CheckpointCoordinator`] on its main thread and passes the time in (`Instant` for deadlines
//! and pauses, epoch millis for timestamps); the [`storage`] functions block on the file system
//! and run on a blocking pool.
//!
//! # The path of a checkpoint
//!
//! 1. The JobMaster asks [`CheckpointCoordinator::should_trigger_periodic`] (or a user asks for a
//!    savepoint) and calls [`CheckpointCoordinator::trigger`] with the attempts that must
//!    acknowledge. It gets a [`PendingTrigger`]: the id, the timestamp and the directory where the
//!    tasks write their state, and sends the trigger to the source tasks.
//! 2. Each task writes its state with [`storage::write_task_state`] and acknowledges with the
//!    [`TaskStateHandle`] (or `None` when it has no state): [`CheckpointCoordinator::acknowledge`].
//!    A task that cannot checkpoint declines: [`CheckpointCoordinator::decline`].
//! 3. The last ack returns [`AckOutcome::AllAcknowledged`] with the finished
//!    [`CheckpointMetadata`]; the JobMaster writes it with [`storage::write_metadata`] off its main
//!    thread, then calls [`CheckpointCoordinator::complete`] (or
//!    [`CheckpointCoordinator::complete_failed`]). Completion subsumes older checkpoints, whose
//!    directories the JobMaster discards, and names the attempts to notify.
//! 4. Timeouts ([`CheckpointCoordinator::expire`]) and failovers
//!    ([`CheckpointCoordinator::abort_all`]) abort pending checkpoints; each
//!    [`AbortedCheckpoint`] names the attempts to tell and the directory to discard.
//!
//! # Invariants
//!
//! - Checkpoint ids strictly increase, from 1, and continue above any restored id
//!   ([`CheckpointCoordinator::restore_counter`]).
//! - A checkpoint completes only with an ack from every attempt it was triggered with, each for
//!   the subtask that attempt runs.
//! - An ack from an attempt that was not expected, or for an id that is not pending (never
//!   triggered, aborted, expired, completed), never completes or changes anything.
//! - The completed-checkpoint store holds checkpoints (not savepoints) in increasing id order, at
//!   most `num_retained` (at least 1) of them; a completion aborts older pending checkpoints (Flink:
//!   `CHECKPOINT_SUBSUMED`), so an older id can never complete after a newer one.
//! - On disk, a directory is a checkpoint only once its `_metadata` file exists; it is written
//!   last and atomically, and every file's content is verified when read.

pub mod coordinator;
pub mod stats;
pub mod storage;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::{ExecutionAttemptId, ExecutionVertexId, JobId, JobVertexId};

pub use coordinator::{
    AbortedCheckpoint, AckOutcome, AcknowledgedCheckpoint, CheckpointCoordinator,
    CompletedCheckpoint, CompletedOutcome, PendingTrigger,
};
pub use stats::{
    CheckpointConfigView, CheckpointStatistics, CheckpointStatsView, TaskCheckpointStatistics,
};

/// How a job checkpoints. Flink: `CheckpointCoordinatorConfiguration` and the
/// `execution.checkpointing.*` options; `Default` gives Flink's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSettings {
    /// Time between periodic checkpoints; `None` turns periodic checkpointing off
    /// (`execution.checkpointing.interval`, unset by default).
    pub interval: Option<Duration>,
    /// A pending checkpoint not completed within this is expired (10 min).
    pub timeout: Duration,
    /// At most this many checkpoints pending at once (1). Savepoints are not limited.
    pub max_concurrent: u32,
    /// At least this long between a completion and the next periodic checkpoint (0).
    pub min_pause: Duration,
    /// Completed checkpoints kept (1, at least 1 is always kept).
    pub num_retained: usize,
    /// Consecutive failed checkpoints tolerated before the job fails (0).
    pub tolerable_failures: u32,
    /// Base directory of checkpoints (`execution.checkpointing.dir`): `<dir>/<job>/chk-<n>/`.
    pub dir: Option<PathBuf>,
    /// Default base directory of savepoints (`execution.checkpointing.savepoint-dir`).
    pub savepoint_dir: Option<PathBuf>,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            interval: None,
            timeout: Duration::from_secs(10 * 60),
            max_concurrent: 1,
            min_pause: Duration::ZERO,
            num_retained: 1,
            tolerable_failures: 0,
            dir: None,
            savepoint_dir: None,
        }
    }
}

/// What is being taken. Flink: `CheckpointType` / `SavepointType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckpointKind {
    /// A periodic (or manually triggered) checkpoint: retained, subsumed, restored on failover.
    Checkpoint,
    /// A savepoint: owned by the user, never subsumed or discarded by the job.
    Savepoint {
        /// Stop-with-savepoint: the job ends once the savepoint completes (Flink's synchronous
        /// savepoint).
        terminate: bool,
    },
}

impl CheckpointKind {
    /// Whether this is a savepoint.
    pub fn is_savepoint(self) -> bool {
        matches!(self, CheckpointKind::Savepoint { .. })
    }

    /// The name REST shows in `checkpoint_type`. Flink: `RestAPICheckpointType`.
    pub fn rest_name(self) -> &'static str {
        match self {
            CheckpointKind::Checkpoint => "CHECKPOINT",
            CheckpointKind::Savepoint { terminate: false } => "SAVEPOINT",
            CheckpointKind::Savepoint { terminate: true } => "SYNC_SAVEPOINT",
        }
    }
}

/// One subtask of a job vertex, the unit state is stored and restored for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubtaskKey {
    /// The job vertex.
    pub vertex: JobVertexId,
    /// The subtask index.
    pub subtask: u32,
}

impl From<ExecutionVertexId> for SubtaskKey {
    fn from(v: ExecutionVertexId) -> Self {
        SubtaskKey {
            vertex: v.job_vertex_id,
            subtask: v.subtask_index,
        }
    }
}

impl From<ExecutionAttemptId> for SubtaskKey {
    fn from(a: ExecutionAttemptId) -> Self {
        a.vertex.into()
    }
}

/// Where one subtask's state of one checkpoint is, and how to check it. Flink:
/// `OperatorSubtaskState` with a `FileStateHandle`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskStateHandle {
    /// The state file, relative to the checkpoint directory (one plain file name when written by
    /// [`storage::write_task_state`]).
    pub path: PathBuf,
    /// Its length in bytes.
    pub size: u64,
    /// The SHA-256 of its content, 64 lowercase hex characters.
    pub sha256: String,
}

/// The `_metadata` of a checkpoint or savepoint: what makes a directory restorable. Flink:
/// `CheckpointMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The schema version, [`CheckpointMetadata::VERSION`] when written by this build.
    pub version: u32,
    /// The job that took it.
    pub job_id: JobId,
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// When it was triggered, epoch millis.
    pub timestamp: i64,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// Every subtask's state; `None` for a subtask without state. Sorted by key.
    pub tasks: Vec<(SubtaskKey, Option<TaskStateHandle>)>,
    /// The fingerprint of the program that took it, to refuse restoring another program's state.
    pub fingerprint: Option<String>,
}

impl CheckpointMetadata {
    /// The schema version this build writes and reads.
    pub const VERSION: u32 = 1;

    /// Checks that this state may be restored into the program with fingerprint `expected`:
    /// refused only when both fingerprints are known and differ.
    pub fn check_fingerprint(&self, expected: Option<&str>) -> Result<(), CheckpointError> {
        match (self.fingerprint.as_deref(), expected) {
            (Some(found), Some(expected)) if found != expected => {
                Err(CheckpointError::FingerprintMismatch {
                    checkpoint_id: self.checkpoint_id,
                    expected: expected.to_owned(),
                    found: found.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The state handle of one subtask: `None` if the subtask had no state or is not part of it.
    pub fn task_state(&self, key: &SubtaskKey) -> Option<&TaskStateHandle> {
        self.tasks
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, h)| h.as_ref())
    }

    /// The total size of all state files.
    pub fn state_size(&self) -> u64 {
        self.tasks
            .iter()
            .filter_map(|(_, h)| h.as_ref())
            .map(|h| h.size)
            .sum()
    }
}

/// Everything that goes wrong with checkpoints, in the coordinator and in the storage. It crosses
/// RPC (a declined or failed checkpoint is reported to the user), so it carries plain data.
// The fields are named for what they hold; each variant's doc says when it happens.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CheckpointError {
    /// A file system operation failed.
    #[error("checkpoint i/o failed: could not {action} {path}: {reason}")]
    Io {
        action: String,
        path: PathBuf,
        reason: String,
    },

    /// A file's content is not what was written: truncated, bit-flipped, or not a checkpoint
    /// file at all.
    #[error("corrupt checkpoint data in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    /// No checkpoint or savepoint at this path (a directory without `_metadata` is none).
    #[error("no checkpoint or savepoint found at {path}")]
    NotFound { path: PathBuf },

    /// The file was written by a format version this build does not read.
    #[error("checkpoint file {path} has format version {found}, this build reads {supported}")]
    VersionMismatch {
        path: PathBuf,
        supported: u32,
        found: u32,
    },

    /// A state handle names a file outside its checkpoint directory.
    #[error("state handle path {path} escapes the checkpoint directory {dir}")]
    PathEscape { path: PathBuf, dir: PathBuf },

    /// The state was taken by another program.
    #[error(
        "checkpoint {checkpoint_id} was taken by a program with fingerprint {found}, \
         this job's program has fingerprint {expected}"
    )]
    FingerprintMismatch {
        checkpoint_id: u64,
        expected: String,
        found: String,
    },

    /// A checkpoint was refused: as many as allowed are pending. Flink:
    /// `TOO_MANY_CONCURRENT_CHECKPOINTS`.
    #[error("too many concurrent checkpoints: {pending} pending, at most {max} allowed")]
    TooManyConcurrent { pending: usize, max: u32 },

    /// A checkpoint was refused: the minimum pause since the last completion has not passed.
    /// Flink: `MINIMUM_TIME_BETWEEN_CHECKPOINTS`.
    #[error("minimum pause between checkpoints not over: {remaining:?} left")]
    MinPause { remaining: Duration },

    /// A checkpoint was refused: no task to trigger. Flink: `NOT_ALL_REQUIRED_TASKS_RUNNING`.
    #[error("not all required tasks are currently running")]
    NotRunning,

    /// A checkpoint was refused: `execution.checkpointing.dir` is not set.
    #[error("no checkpoint directory configured (execution.checkpointing.dir)")]
    NoCheckpointDirectory,

    /// A savepoint was refused: no target directory given and none configured.
    #[error(
        "no savepoint directory configured: give a target directory or set \
         execution.checkpointing.savepoint-dir"
    )]
    NoSavepointDirectory,

    /// A task declined the checkpoint. Flink: `CHECKPOINT_DECLINED`.
    #[error("checkpoint {checkpoint_id} declined by task {attempt}: {reason}")]
    Declined {
        checkpoint_id: u64,
        attempt: ExecutionAttemptId,
        reason: String,
    },

    /// The checkpoint was not complete within the timeout. Flink: `CHECKPOINT_EXPIRED`.
    #[error("checkpoint {checkpoint_id} expired before completing ({timeout:?} timeout)")]
    Expired {
        checkpoint_id: u64,
        timeout: Duration,
    },

    /// A newer checkpoint completed first. Flink: `CHECKPOINT_SUBSUMED`.
    #[error("checkpoint {checkpoint_id} subsumed by the completed checkpoint {by}")]
    Subsumed { checkpoint_id: u64, by: u64 },

    /// Every pending checkpoint was aborted (failover, cancellation, suspension). Flink:
    /// `JOB_FAILOVER_REGION`, `CHECKPOINT_COORDINATOR_SUSPEND`, ….
    #[error("checkpoint {checkpoint_id} aborted: {reason}")]
    Aborted { checkpoint_id: u64, reason: String },

    /// Writing the metadata failed. Flink: `FINALIZE_CHECKPOINT_FAILURE`.
    #[error("checkpoint {checkpoint_id} could not be finalized: {reason}")]
    FinalizeFailed { checkpoint_id: u64, reason: String },

    /// `complete` for an id that is not pending (never triggered, aborted, or completed).
    #[error("checkpoint {checkpoint_id} is not pending")]
    NotPending { checkpoint_id: u64 },

    /// `complete` before every expected task acknowledged.
    #[error("checkpoint {checkpoint_id} is missing {missing} acknowledgements")]
    NotAcknowledged { checkpoint_id: u64, missing: usize },
}

impl CheckpointError {
    /// An [`CheckpointError::Io`] from a `std::io::Error`.
    pub(crate) fn io(action: &str, path: &Path, e: &std::io::Error) -> Self {
        CheckpointError::Io {
            action: action.to_owned(),
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }

    /// A [`CheckpointError::Corrupt`].
    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// Whether this failure counts towards `tolerable_failures`. Flink's
    /// `CheckpointFailureManager` counts declines, expiry and finalization failures, not aborts
    /// for failover or subsumption, and never refusals to trigger.
    pub fn counts_as_failure(&self) -> bool {
        matches!(
            self,
            CheckpointError::Declined { .. }
                | CheckpointError::Expired { .. }
                | CheckpointError::FinalizeFailed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ExecutionGraphId;

    #[test]
    fn defaults_are_flinks() {
        let s = CheckpointSettings::default();
        assert_eq!(s.interval, None);
        assert_eq!(s.timeout, Duration::from_secs(600));
        assert_eq!(
            (s.max_concurrent, s.num_retained, s.tolerable_failures),
            (1, 1, 0)
        );
        assert_eq!(s.min_pause, Duration::ZERO);
        assert_eq!((s.dir, s.savepoint_dir), (None, None));
    }

    #[test]
    fn kinds_read_like_flinks() {
        assert_eq!(CheckpointKind::Checkpoint.rest_name(), "CHECKPOINT");
        let sp = CheckpointKind::Savepoint { terminate: false };
        assert_eq!(sp.rest_name(), "SAVEPOINT");
        assert!(sp.is_savepoint() && !CheckpointKind::Checkpoint.is_savepoint());
        let stop = CheckpointKind::Savepoint { terminate: true };
        assert_eq!(stop.rest_name(), "SYNC_SAVEPOINT");
    }

    fn metadata(fingerprint: Option<&str>) -> CheckpointMetadata {
        CheckpointMetadata {
            version: CheckpointMetadata::VERSION,
            job_id: JobId::from_u128(1),
            checkpoint_id: 3,
            timestamp: 0,
            kind: CheckpointKind::Checkpoint,
            tasks: vec![],
            fingerprint: fingerprint.map(str::to_owned),
        }
    }

    #[test]
    fn another_programs_state_is_refused() {
        let m = metadata(Some("aaa"));
        assert_eq!(m.check_fingerprint(Some("aaa")), Ok(()));
        assert_eq!(m.check_fingerprint(None), Ok(()));
        assert_eq!(metadata(None).check_fingerprint(Some("bbb")), Ok(()));
        let err = m.check_fingerprint(Some("bbb")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "checkpoint 3 was taken by a program with fingerprint aaa, \
             this job's program has fingerprint bbb"
        );
    }

    #[test]
    fn subtask_keys_come_from_attempts() {
        let attempt = ExecutionAttemptId {
            execution_graph_id: ExecutionGraphId::from_u128(1),
            vertex: ExecutionVertexId {
                job_vertex_id: JobVertexId::from_u128(2),
                subtask_index: 3,
            },
            attempt_number: 4,
        };
        assert_eq!(
            SubtaskKey::from(attempt),
            SubtaskKey {
                vertex: JobVertexId::from_u128(2),
                subtask: 3
            }
        );
    }

    #[test]
    fn types_cross_the_rpc_wire() {
        let err = CheckpointError::Io {
            action: "write".into(),
            path: PathBuf::from("/ckpt/x/chk-1/.a.tmp"),
            reason: "no space left on device".into(),
        };
        assert_eq!(
            err.to_string(),
            "checkpoint i/o failed: could not write /ckpt/x/chk-1/.a.tmp: no space left on device"
        );
        let bytes = rmp_serde::to_vec(&err).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<CheckpointError>(&bytes).unwrap(),
            err
        );
        let settings = CheckpointSettings {
            interval: Some(Duration::from_millis(1500)),
            dir: Some("/ckpt".into()),
            ..CheckpointSettings::default()
        };
        let bytes = rmp_serde::to_vec(&settings).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<CheckpointSettings>(&bytes).unwrap(),
            settings
        );
        let m = metadata(Some("f"));
        let bytes = rmp_serde::to_vec(&m).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<CheckpointMetadata>(&bytes).unwrap(),
            m
        );
    }
}
