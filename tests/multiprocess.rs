//! The control plane across OS processes: a JobManager process and TaskManager processes on
//! loopback ephemeral ports, driven through the REST API as a user would.

mod support;

use std::time::{Duration, Instant};

use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::jobgraph::{DistributionPattern, JobGraph, JobVertex};
use support::Cluster;

const WAIT: Duration = Duration::from_secs(60);

fn two_vertex_job(invokable: &str, parallelism: u32, config: &[(&str, &str)]) -> JobGraph {
    let mut source = JobVertex::new("source", invokable, parallelism);
    let mut sink = JobVertex::new("sink", invokable, parallelism);
    for (k, v) in config {
        source = source.with_config(*k, *v);
        sink = sink.with_config(*k, *v);
    }
    let sink = sink.connect_from(&source, DistributionPattern::AllToAll);
    JobGraph::new("multi-process job", vec![source, sink])
}

/// A job with 2 vertices × parallelism 4 on 2 TaskManager processes reaches RUNNING, then
/// FINISHED, seen through REST; its tasks ran on both TaskManagers.
#[actix_rt::test]
async fn a_job_runs_on_two_task_manager_processes() {
    let cluster = Cluster::start(2, 2, &[]);
    cluster
        .wait_for_overview("2 task managers with 4 slots", WAIT, |o| {
            o.taskmanagers == 2 && o.slots_total == 4
        })
        .await;
    let job = two_vertex_job("SleepingInvokable", 4, &[("millis", "300")]);
    let job_id = cluster.rest.submit_job(&job).await.expect("submitted");
    let deadline = Instant::now() + WAIT;
    let running = cluster
        .rest
        .wait_for_status(
            job_id,
            |s| s == JobStatus::Running || s.is_terminal(),
            deadline,
        )
        .await
        .expect("running");
    assert_eq!(running, JobStatus::Running, "{}", cluster.logs());
    // While it runs, all 4 slots are taken: both TaskManagers host tasks.
    cluster
        .wait_for_overview("every slot in use", WAIT, |o| o.slots_available == 0)
        .await;
    let tms = cluster.rest.taskmanagers().await.expect("taskmanagers");
    assert_eq!(tms.len(), 2);
    let finished = cluster
        .rest
        .wait_for_status(job_id, JobStatus::is_terminal, deadline)
        .await
        .expect("terminal");
    assert_eq!(finished, JobStatus::Finished, "{}", cluster.logs());
    let details = cluster.rest.job_details(job_id).await.expect("details");
    assert_eq!(details.vertices.len(), 2);
    let result = cluster
        .rest
        .job_result(job_id)
        .await
        .expect("result")
        .expect("completed");
    assert_eq!(
        result.application_status,
        rflink_runtime::rest::messages::ApplicationStatus::Succeeded
    );
    cluster
        .wait_for_overview("slots free again", WAIT, |o| o.slots_available == 4)
        .await;
}

/// A failing invokable makes the job FAILED with its error at `/jobs/{id}/exceptions`.
#[actix_rt::test]
async fn a_failing_job_shows_its_error_over_rest() {
    let cluster = Cluster::start(1, 2, &[]);
    cluster
        .wait_for_overview("1 task manager", WAIT, |o| {
            o.taskmanagers == 1 && o.slots_total == 2
        })
        .await;
    let job = two_vertex_job(
        "FailingInvokable",
        2,
        &[("message", "boom from a task manager process")],
    );
    let job_id = cluster.rest.submit_job(&job).await.expect("submitted");
    let status = cluster
        .rest
        .wait_for_status(job_id, JobStatus::is_terminal, Instant::now() + WAIT)
        .await
        .expect("terminal");
    assert_eq!(status, JobStatus::Failed, "{}", cluster.logs());
    let exceptions = cluster
        .rest
        .job_exceptions(job_id)
        .await
        .expect("exceptions");
    let entries = &exceptions.exception_history.entries;
    assert!(!entries.is_empty(), "{exceptions:?}");
    assert!(
        entries
            .iter()
            .any(|e| format!("{e:?}").contains("boom from a task manager process")),
        "{exceptions:?}"
    );
}

/// Cancel over REST stops a running job: CANCELED, slots free.
#[actix_rt::test]
async fn cancel_over_rest_stops_a_running_job() {
    let cluster = Cluster::start(2, 1, &[]);
    cluster
        .wait_for_overview("2 task managers", WAIT, |o| {
            o.taskmanagers == 2 && o.slots_total == 2
        })
        .await;
    let job_id = cluster
        .rest
        .submit_job(&two_vertex_job("BlockingNoOpInvokable", 2, &[]))
        .await
        .expect("submitted");
    cluster.wait_for_running_tasks(job_id, 4, WAIT).await;
    cluster
        .rest
        .cancel_job(job_id)
        .await
        .expect("cancel accepted");
    let status = cluster
        .rest
        .wait_for_status(job_id, JobStatus::is_terminal, Instant::now() + WAIT)
        .await
        .expect("terminal");
    assert_eq!(status, JobStatus::Canceled, "{}", cluster.logs());
    cluster
        .wait_for_overview("slots free", WAIT, |o| o.slots_available == 2)
        .await;
}

/// A TaskManager killed with SIGKILL is detected within the heartbeat timeout: its slots leave
/// `/overview` and the job running on it leaves RUNNING (FAILED, until restart strategies).
#[actix_rt::test]
async fn a_sigkilled_task_manager_is_detected_within_the_heartbeat_timeout() {
    let heartbeat_timeout = Duration::from_secs(5); // the default
    let mut cluster = Cluster::start(2, 2, &[]);
    cluster
        .wait_for_overview("2 task managers", WAIT, |o| {
            o.taskmanagers == 2 && o.slots_total == 4
        })
        .await;
    let job_id = cluster
        .rest
        .submit_job(&two_vertex_job("BlockingNoOpInvokable", 4, &[]))
        .await
        .expect("submitted");
    cluster.wait_for_running_tasks(job_id, 8, WAIT).await;
    cluster.tms[0].kill();
    // The bound is the heartbeat timeout; in practice it is the probe after the connection dies.
    let overview = cluster
        .wait_for_overview("the killed task manager to leave", heartbeat_timeout, |o| {
            o.taskmanagers == 1 && o.slots_total == 2
        })
        .await;
    assert_eq!(overview.taskmanagers, 1);
    let status = cluster
        .rest
        .wait_for_status(
            job_id,
            |s| s != JobStatus::Running,
            Instant::now() + heartbeat_timeout,
        )
        .await
        .unwrap_or_else(|e| panic!("the job never left RUNNING: {e:?}\n{}", cluster.logs()));
    assert!(
        matches!(status, JobStatus::Failing | JobStatus::Failed),
        "{status}"
    );
    let exceptions = cluster
        .rest
        .job_exceptions(job_id)
        .await
        .expect("exceptions");
    assert!(
        format!("{exceptions:?}").contains("TaskManagerLost")
            || format!("{exceptions:?}").contains("was lost"),
        "{exceptions:?}"
    );
}
