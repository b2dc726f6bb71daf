//! Checkpoint statistics in Flink's REST shape. Flink: `CheckpointStatsTracker`,
//! `CheckpointStatsHistory`, `CompletedCheckpointStatsSummary` and the REST messages
//! `CheckpointingStatistics` (`GET /jobs/{id}/checkpoints`) and `CheckpointConfigInfo`
//! (`GET /jobs/{id}/checkpoints/config`).
//!
//! Every field Flink 2.3 sends is present, spelled and nested as Flink's; where rflink has no
//! value (alignment, unaligned data, changelog) it has Flink's neutral one (`0`, `false`, `{}`).
//! The summary's percentiles follow Flink's (Apache Commons Math's default estimator); with no
//! completed checkpoint they are `0.0`.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// How many checkpoints the history keeps. Flink: `web.checkpoints.history` (10).
pub const HISTORY_SIZE: usize = 10;

/// How many completed checkpoints the summary's percentiles are computed over (min, max and
/// average cover all). Flink: `CompletedCheckpointStatsSummary`'s histogram window.
pub const SUMMARY_WINDOW: usize = 10_000;

/// `GET /jobs/{id}/checkpoints`. Flink: `CheckpointingStatistics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointStatsView {
    /// How many checkpoints in each state.
    pub counts: CheckpointCounts,
    /// Statistics over the completed checkpoints.
    pub summary: CheckpointSummary,
    /// The latest of each kind.
    pub latest: LatestCheckpoints,
    /// The most recent checkpoints, newest first, at most [`HISTORY_SIZE`].
    pub history: Vec<CheckpointStatistics>,
}

impl CheckpointStatsView {
    /// The view `GET /jobs/{id}/checkpoints` sends: every entry without its per-vertex
    /// `tasks`, which Flink sends only with a single checkpoint's details.
    pub fn overview(mut self) -> Self {
        let latest = &mut self.latest;
        let entries = self
            .history
            .iter_mut()
            .chain(latest.completed.as_mut())
            .chain(latest.savepoint.as_mut())
            .chain(latest.failed.as_mut());
        for entry in entries {
            entry.base_mut().tasks.clear();
        }
        self
    }

    /// The directory of completed savepoint `id`, if the history still lists it.
    pub fn savepoint_location(&self, id: u64) -> Option<String> {
        self.history
            .iter()
            .chain(self.latest.savepoint.iter())
            .find_map(|c| match c {
                CheckpointStatistics::Completed {
                    base,
                    external_path,
                    ..
                } if base.id == id && base.is_savepoint => Some(
                    external_path
                        .strip_prefix("file:")
                        .unwrap_or(external_path)
                        .to_string(),
                ),
                _ => None,
            })
    }
}

/// Flink: `CheckpointingStatistics.Counts`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointCounts {
    /// Restores from a checkpoint or savepoint (at start and on every failover).
    pub restored: u64,
    /// Checkpoints triggered.
    pub total: u64,
    /// Checkpoints pending now.
    pub in_progress: u64,
    /// Checkpoints completed.
    pub completed: u64,
    /// Checkpoints failed (declined, expired, aborted, subsumed, not finalized).
    pub failed: u64,
}

/// Flink: `CheckpointingStatistics.Summary`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointSummary {
    /// Bytes persisted by each checkpoint.
    pub checkpointed_size: StatsSummary,
    /// Full state size of each checkpoint.
    pub state_size: StatsSummary,
    /// Trigger to last acknowledgement, millis.
    pub end_to_end_duration: StatsSummary,
    /// Always 0 in rflink.
    pub alignment_buffered: StatsSummary,
    /// Always 0 in rflink.
    pub processed_data: StatsSummary,
    /// Always 0 in rflink (no unaligned checkpoints).
    pub persisted_data: StatsSummary,
}

/// Flink: `StatsSummaryDto`. `avg` is the integer average as Flink's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // min, max, average and the percentiles of their name.
pub struct StatsSummary {
    pub min: i64,
    pub max: i64,
    pub avg: i64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
}

/// Flink: `CheckpointingStatistics.LatestCheckpoints`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatestCheckpoints {
    /// The latest completed checkpoint (not savepoint).
    pub completed: Option<CheckpointStatistics>,
    /// The latest completed savepoint.
    pub savepoint: Option<CheckpointStatistics>,
    /// The latest failed checkpoint or savepoint.
    pub failed: Option<CheckpointStatistics>,
    /// The latest restore.
    pub restored: Option<RestoredCheckpointStatistics>,
}

/// Flink: `CheckpointingStatistics.RestoredCheckpointStatistics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredCheckpointStatistics {
    /// The restored checkpoint's id.
    pub id: u64,
    /// When it was restored, epoch millis.
    pub restore_timestamp: i64,
    /// Whether it was a savepoint.
    pub is_savepoint: bool,
    /// Its directory as a `file:` pointer.
    pub external_path: String,
}

/// A checkpoint's state in statistics. Flink: `CheckpointStatsStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum CheckpointStatus {
    InProgress,
    Completed,
    Failed,
}

/// One checkpoint in statistics, tagged by `className` as Flink's. Flink: `CheckpointStatistics`
/// and its subtypes `PendingCheckpointStatistics`, `CompletedCheckpointStatistics`,
/// `FailedCheckpointStatistics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "className")]
pub enum CheckpointStatistics {
    /// A pending checkpoint.
    #[serde(rename = "in_progress")]
    InProgress {
        /// The fields every checkpoint has.
        #[serde(flatten)]
        base: CheckpointStatisticsBase,
    },
    /// A completed checkpoint or savepoint.
    #[serde(rename = "completed")]
    Completed {
        /// The fields every checkpoint has.
        #[serde(flatten)]
        base: CheckpointStatisticsBase,
        /// Its directory as a `file:` pointer.
        external_path: String,
        /// Whether its files were deleted (subsumed).
        discarded: bool,
    },
    /// A failed checkpoint or savepoint.
    #[serde(rename = "failed")]
    Failed {
        /// The fields every checkpoint has.
        #[serde(flatten)]
        base: CheckpointStatisticsBase,
        /// When it failed, epoch millis.
        failure_timestamp: i64,
        /// Why.
        failure_message: Option<String>,
    },
}

impl CheckpointStatistics {
    /// The fields every checkpoint has.
    pub fn base(&self) -> &CheckpointStatisticsBase {
        match self {
            CheckpointStatistics::InProgress { base }
            | CheckpointStatistics::Completed { base, .. }
            | CheckpointStatistics::Failed { base, .. } => base,
        }
    }

    /// The fields every checkpoint has, to change.
    pub fn base_mut(&mut self) -> &mut CheckpointStatisticsBase {
        match self {
            CheckpointStatistics::InProgress { base }
            | CheckpointStatistics::Completed { base, .. }
            | CheckpointStatistics::Failed { base, .. } => base,
        }
    }

    /// The checkpoint id.
    pub fn id(&self) -> u64 {
        self.base().id
    }
}

/// The fields of every entry of [`CheckpointStatistics`], in Flink's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStatisticsBase {
    /// The checkpoint id.
    pub id: u64,
    /// Its state.
    pub status: CheckpointStatus,
    /// Whether it is a savepoint.
    pub is_savepoint: bool,
    /// `"CANONICAL"` for savepoints, `null` for checkpoints.
    #[serde(rename = "savepointFormat")]
    pub savepoint_format: Option<String>,
    /// When it was triggered, epoch millis.
    pub trigger_timestamp: i64,
    /// When the last acknowledgement arrived, epoch millis; -1 before the first.
    pub latest_ack_timestamp: i64,
    /// Bytes persisted (the sum of the acknowledged state files).
    pub checkpointed_size: u64,
    /// Full state size (the same: rflink's snapshots are full).
    pub state_size: u64,
    /// Trigger to last acknowledgement (to the failure for failed ones), millis; -1 before the
    /// first acknowledgement.
    pub end_to_end_duration: i64,
    /// Always 0 in rflink.
    pub alignment_buffered: u64,
    /// Always 0 in rflink.
    pub processed_data: u64,
    /// Always 0 in rflink.
    pub persisted_data: u64,
    /// Subtasks that must acknowledge.
    pub num_subtasks: u32,
    /// Subtasks that did.
    pub num_acknowledged_subtasks: u32,
    /// `CHECKPOINT`, `SAVEPOINT` or `SYNC_SAVEPOINT`.
    pub checkpoint_type: String,
    /// Per-vertex details, by vertex id (32 hex characters). Filled for
    /// `GET /jobs/{id}/checkpoints/details/{cid}` (Flink's web UI reads
    /// `tasks[<vertex>].num_acknowledged_subtasks` there); empty in the overview
    /// `GET /jobs/{id}/checkpoints`, as Flink's ([`CheckpointStatsView::overview`]).
    pub tasks: BTreeMap<String, TaskCheckpointStatistics>,
}

/// One vertex's part of a checkpoint. Flink: `TaskCheckpointStatistics` (from `TaskStateStats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCheckpointStatistics {
    /// The checkpoint id.
    pub id: u64,
    /// The checkpoint's state.
    pub status: CheckpointStatus,
    /// When the vertex's last subtask acknowledged, epoch millis; -1 before the first.
    pub latest_ack_timestamp: i64,
    /// Bytes its subtasks persisted.
    pub checkpointed_size: u64,
    /// Its full state size (the same: rflink's snapshots are full).
    pub state_size: u64,
    /// Trigger to its last acknowledgement, millis; -1 before the first.
    pub end_to_end_duration: i64,
    /// Always 0 in rflink.
    pub alignment_buffered: u64,
    /// Always 0 in rflink.
    pub processed_data: u64,
    /// Always 0 in rflink.
    pub persisted_data: u64,
    /// Its subtasks (the parallelism).
    pub num_subtasks: u32,
    /// Those that acknowledged.
    pub num_acknowledged_subtasks: u32,
}

/// `GET /jobs/{id}/checkpoints/config`. Flink: `CheckpointConfigInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointConfigView {
    /// `exactly_once`.
    pub mode: String,
    /// Millis; `i64::MAX` when periodic checkpointing is off (Flink's "disabled" interval).
    pub interval: i64,
    /// Millis.
    pub timeout: i64,
    /// Millis.
    pub min_pause: i64,
    /// Maximum concurrent checkpoints.
    pub max_concurrent: i64,
    /// Externalized checkpoint retention.
    pub externalization: ExternalizedCheckpointInfo,
    /// `HashMapStateBackend`: rflink's keyed state lives on the heap.
    pub state_backend: String,
    /// `FileSystemCheckpointStorage` when a checkpoint directory is set, else
    /// `JobManagerCheckpointStorage`.
    pub checkpoint_storage: String,
    /// Always false in rflink.
    pub unaligned_checkpoints: bool,
    /// Consecutive failures tolerated.
    pub tolerable_failed_checkpoints: i64,
    /// Always 0 in rflink.
    pub aligned_checkpoint_timeout: i64,
    /// Whether checkpoints continue once some tasks finished: false in rflink.
    pub checkpoints_after_tasks_finish: bool,
    /// Always false in rflink.
    pub state_changelog_enabled: bool,
    /// Flink's default (10 min), unused.
    pub changelog_periodic_materialization_interval: i64,
    /// Flink's default (`memory`), unused.
    pub changelog_storage: String,
}

/// Flink: `CheckpointConfigInfo.ExternalizedCheckpointInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalizedCheckpointInfo {
    /// Whether completed checkpoints are kept after the job ends.
    pub enabled: bool,
    /// Whether they are deleted when the job is cancelled.
    pub delete_on_cancellation: bool,
}

/// Min, max, sum and count of all values, and a window of the latest for percentiles. Flink:
/// `StatsSummary`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SummaryStats {
    count: u64,
    sum: i128,
    min: i64,
    max: i64,
    window: VecDeque<i64>,
}

impl SummaryStats {
    pub(crate) fn add(&mut self, value: i64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += i128::from(value);
        if self.window.len() == SUMMARY_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(value);
    }

    pub(crate) fn view(&self) -> StatsSummary {
        if self.count == 0 {
            return StatsSummary::default();
        }
        let mut sorted: Vec<i64> = self.window.iter().copied().collect();
        sorted.sort_unstable();
        let avg = self.sum / i128::from(self.count);
        StatsSummary {
            min: self.min,
            max: self.max,
            avg: i64::try_from(avg).unwrap_or(i64::MAX),
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p95: percentile(&sorted, 95.0),
            p99: percentile(&sorted, 99.0),
            p999: percentile(&sorted, 99.9),
        }
    }
}

/// The `p`-th percentile of sorted values, estimated as Apache Commons Math's `Percentile` does
/// by default (what Flink's histograms use): position `p (n + 1) / 100`, interpolated linearly.
pub(crate) fn percentile(sorted: &[i64], p: f64) -> f64 {
    let n = sorted.len();
    let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else {
        return 0.0;
    };
    let pos = p * (n as f64 + 1.0) / 100.0;
    if pos < 1.0 {
        return first as f64;
    }
    if pos >= n as f64 {
        return last as f64;
    }
    let lower_index = pos.floor() as usize;
    let dif = pos - pos.floor();
    let lower = sorted[lower_index - 1] as f64;
    let upper = sorted[lower_index] as f64;
    lower + dif * (upper - lower)
}

/// The statistics a coordinator keeps. Flink: `DefaultCheckpointStatsTracker`.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatsTracker {
    counts: CheckpointCounts,
    checkpointed_size: SummaryStats,
    state_size: SummaryStats,
    end_to_end: SummaryStats,
    zeros: SummaryStats,
    history: VecDeque<CheckpointStatistics>,
    latest: LatestCheckpoints,
}

impl StatsTracker {
    /// A checkpoint was triggered.
    pub(crate) fn report_pending(&mut self, entry: CheckpointStatistics) {
        self.counts.total += 1;
        self.counts.in_progress += 1;
        self.history.push_front(entry);
        self.history.truncate(HISTORY_SIZE);
    }

    /// A pending checkpoint got an acknowledgement.
    pub(crate) fn update_pending(&mut self, entry: CheckpointStatistics) {
        self.replace(entry);
    }

    /// A pending checkpoint completed.
    pub(crate) fn report_completed(&mut self, entry: CheckpointStatistics) {
        self.counts.in_progress = self.counts.in_progress.saturating_sub(1);
        self.counts.completed += 1;
        let base = entry.base();
        self.checkpointed_size.add(clamp(base.checkpointed_size));
        self.state_size.add(clamp(base.state_size));
        self.end_to_end.add(base.end_to_end_duration.max(0));
        self.zeros.add(0);
        if base.is_savepoint {
            self.latest.savepoint = Some(entry.clone());
        } else {
            self.latest.completed = Some(entry.clone());
        }
        self.replace(entry);
    }

    /// A pending checkpoint failed.
    pub(crate) fn report_failed(&mut self, entry: CheckpointStatistics) {
        self.counts.in_progress = self.counts.in_progress.saturating_sub(1);
        self.counts.failed += 1;
        self.latest.failed = Some(entry.clone());
        self.replace(entry);
    }

    /// A completed checkpoint's files were deleted (subsumed).
    pub(crate) fn mark_discarded(&mut self, id: u64) {
        let entries = self
            .history
            .iter_mut()
            .chain(self.latest.completed.as_mut());
        for entry in entries {
            if let CheckpointStatistics::Completed {
                base, discarded, ..
            } = entry
            {
                if base.id == id {
                    *discarded = true;
                }
            }
        }
    }

    /// A checkpoint or savepoint was restored.
    pub(crate) fn report_restored(&mut self, restored: RestoredCheckpointStatistics) {
        self.counts.restored += 1;
        self.latest.restored = Some(restored);
    }

    /// Replaces the history entry of the same id, if it is still in the history.
    fn replace(&mut self, entry: CheckpointStatistics) {
        if let Some(slot) = self.history.iter_mut().find(|e| e.id() == entry.id()) {
            *slot = entry;
        }
    }

    pub(crate) fn view(&self) -> CheckpointStatsView {
        let zeros = self.zeros.view();
        CheckpointStatsView {
            counts: self.counts,
            summary: CheckpointSummary {
                checkpointed_size: self.checkpointed_size.view(),
                state_size: self.state_size.view(),
                end_to_end_duration: self.end_to_end.view(),
                alignment_buffered: zeros,
                processed_data: zeros,
                persisted_data: zeros,
            },
            latest: self.latest.clone(),
            history: self.history.iter().cloned().collect(),
        }
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_commons_math_legacy_estimates() {
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&v, 50.0), 5.5);
        assert!((percentile(&v, 90.0) - 9.9).abs() < 1e-9);
        assert_eq!(percentile(&v, 95.0), 10.0);
        assert_eq!(percentile(&[7], 50.0), 7.0);
        assert_eq!(percentile(&[7], 99.9), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[1, 2, 3], 1.0), 1.0);
        // Flink's sample: p90 of 16 durations whose two largest are 67 and 206.
        let mut d = vec![
            18, 23, 25, 35, 37, 38, 38, 40, 47, 49, 51, 55, 60, 62, 67, 206,
        ];
        d.sort_unstable();
        assert!((percentile(&d, 90.0) - 108.7).abs() < 1e-9);
        assert_eq!(percentile(&d, 95.0), 206.0);
    }

    #[test]
    fn summary_covers_all_values_and_has_integer_average() {
        let mut s = SummaryStats::default();
        assert_eq!(s.view(), StatsSummary::default());
        for v in [10, 20, 31] {
            s.add(v);
        }
        let view = s.view();
        assert_eq!((view.min, view.max, view.avg), (10, 31, 20));
        assert_eq!(view.p50, 20.0);
        for _ in 0..SUMMARY_WINDOW {
            s.add(5);
        }
        let view = s.view();
        assert_eq!((view.min, view.max), (5, 31));
        assert_eq!(view.p999, 5.0, "percentiles cover the window only");
    }
}
