//! Views of an execution graph for REST: job overview, details, exceptions, result.

use std::collections::{BTreeMap, HashMap};

use crate::dispatcher::{
    JobDetails, JobExceptions, JobOverview, JobResult, SubtaskDetails, TaskCounts, VertexDetails,
};
use crate::executiongraph::{now_millis, ExecutionGraph, ExecutionState, JobStatus};
use crate::types::ExecutionAttemptId;

/// The summary of a job.
pub fn overview(graph: &ExecutionGraph) -> JobOverview {
    let ts = &graph.status_timestamps;
    let start = ts
        .get(&JobStatus::Initializing)
        .or_else(|| ts.get(&JobStatus::Created))
        .copied()
        .unwrap_or(0);
    let end = if graph.status().is_globally_terminal() {
        ts.get(&graph.status()).copied().unwrap_or(-1)
    } else {
        -1
    };
    let last = ts.values().copied().max().unwrap_or(start);
    let duration = if end >= 0 {
        end - start
    } else {
        now_millis() - start
    };
    JobOverview {
        job_id: graph.job_id,
        name: graph.job_name.clone(),
        state: graph.status(),
        start_time: start,
        end_time: end,
        duration: duration.max(0),
        last_modification: last,
        tasks: TaskCounts::of(graph.executions().map(|e| e.state)),
    }
}

/// The details of a job, without task metrics.
pub fn details(graph: &ExecutionGraph) -> JobDetails {
    details_with_metrics(graph, &HashMap::new())
}

/// The details of a job, with the latest metrics reported for each current attempt.
pub fn details_with_metrics(
    graph: &ExecutionGraph,
    metrics: &HashMap<ExecutionAttemptId, Vec<(String, f64)>>,
) -> JobDetails {
    let now = now_millis();
    let vertices = graph
        .vertices
        .iter()
        .map(|v| {
            let starts: Vec<i64> = v
                .executions
                .iter()
                .filter_map(|e| e.timestamps.get(&ExecutionState::Deploying).copied())
                .collect();
            let start_time = starts.iter().copied().min().unwrap_or(-1);
            let all_done = v.executions.iter().all(|e| e.state.is_terminal());
            let end_time = if all_done {
                v.executions
                    .iter()
                    .filter_map(|e| e.timestamps.get(&e.state).copied())
                    .max()
                    .unwrap_or(-1)
            } else {
                -1
            };
            let duration = match (start_time, end_time) {
                (-1, _) => -1,
                (s, -1) => now - s,
                (s, e) => e - s,
            };
            VertexDetails {
                id: v.id,
                name: v.name.clone(),
                parallelism: v.parallelism,
                max_parallelism: v.max_parallelism,
                status: v.aggregate_state(),
                start_time,
                end_time,
                duration,
                tasks: TaskCounts::of(v.executions.iter().map(|e| e.state)),
                inputs: v.inputs.clone(),
                subtasks: v
                    .executions
                    .iter()
                    .map(|e| SubtaskDetails {
                        subtask: e.attempt.vertex.subtask_index,
                        attempt: e.attempt.attempt_number,
                        state: e.state,
                        resource_id: e.slot.as_ref().map(|s| s.resource_id),
                        address: e.slot.as_ref().map(|s| s.address.clone()),
                        timestamps: e
                            .timestamps
                            .iter()
                            .map(|(s, t)| (s.as_str().to_string(), *t))
                            .collect(),
                        metrics: metrics.get(&e.attempt).cloned().unwrap_or_default(),
                    })
                    .collect(),
            }
        })
        .collect();
    let timestamps: BTreeMap<String, i64> = JobStatus::ALL
        .iter()
        .map(|s| {
            (
                s.as_str().to_string(),
                graph.status_timestamps.get(s).copied().unwrap_or(0),
            )
        })
        .collect();
    JobDetails {
        overview: overview(graph),
        timestamps,
        vertices,
        now,
        job_config: BTreeMap::new(),
        checkpoint_config: None,
    }
}

/// The failures of a job.
pub fn exceptions(graph: &ExecutionGraph) -> JobExceptions {
    JobExceptions {
        root: graph.failure.clone(),
        history: graph.exception_history.iter().rev().cloned().collect(),
        concurrent: graph.concurrent_exceptions.iter().rev().cloned().collect(),
    }
}

/// The result of a terminated job.
pub fn result(graph: &ExecutionGraph) -> JobResult {
    let o = overview(graph);
    JobResult {
        job_id: graph.job_id,
        status: graph.status(),
        net_runtime: o.duration,
        failure: graph.failure.clone(),
    }
}
