//! Views of an execution graph for REST: job overview, details, exceptions, result.

use std::collections::BTreeMap;

use crate::dispatcher::{
    JobDetails, JobExceptions, JobOverview, JobResult, TaskCounts, VertexDetails,
};
use crate::executiongraph::{now_millis, ExecutionGraph, ExecutionState, JobStatus};

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

/// The details of a job.
pub fn details(graph: &ExecutionGraph) -> JobDetails {
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
