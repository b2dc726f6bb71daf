//! The control plane end to end on an in-process MiniCluster (every message over loopback TCP):
//! Flink's scenarios 16 and 22–31 that apply before restart strategies exist.

use std::collections::HashSet;
use std::time::Duration;

use rflink_rpc::{RpcConfig, RpcError};
use rflink_runtime::dispatcher::DispatcherError;
use rflink_runtime::events::ClusterEvent;
use rflink_runtime::executiongraph::{ExecutionState, JobStatus};
use rflink_runtime::heartbeat::HeartbeatSettings;
use rflink_runtime::jobgraph::{DistributionPattern, JobGraph, JobVertex};
use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig, MiniClusterError};

const WAIT: Duration = Duration::from_secs(30);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

fn config(task_managers: u32, slots: u32) -> MiniClusterConfig {
    init_tracing();
    MiniClusterConfig {
        num_task_managers: task_managers,
        slots_per_task_manager: slots,
        heartbeat: HeartbeatSettings {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(1000),
            ..HeartbeatSettings::default()
        },
        ..MiniClusterConfig::default()
    }
}

async fn cluster(task_managers: u32, slots: u32) -> MiniCluster {
    let c = MiniCluster::start(config(task_managers, slots))
        .await
        .expect("mini cluster starts");
    c.wait_for_task_managers(task_managers, WAIT)
        .await
        .expect("task managers register");
    c
}

fn two_vertex_job(invokable: &str, parallelism: u32) -> JobGraph {
    let source = JobVertex::new("source", invokable, parallelism);
    let sink = JobVertex::new("sink", invokable, parallelism)
        .connect_from(&source, DistributionPattern::AllToAll);
    JobGraph::new("test job", vec![source, sink])
}

/// Scenario 16: TaskExecutors register with their slots, visible in the overview.
#[actix_rt::test]
async fn task_managers_register_and_report_slots() {
    let c = cluster(2, 3).await;
    let overview = c.overview().await.expect("overview");
    assert_eq!(
        (
            overview.taskmanagers,
            overview.slots_total,
            overview.slots_available
        ),
        (2, 6, 6)
    );
    c.close().await.expect("closes");
}

/// Scenarios 23 and 37 (control plane): a 2-vertex job at parallelism 4 on two TaskManagers is
/// scheduled into slots on both, every task runs, and the job finishes; its slots are free again.
#[actix_rt::test]
async fn a_job_runs_on_two_task_managers_and_finishes() {
    let c = cluster(2, 2).await;
    let mut events = c.events();
    let job = two_vertex_job("NoOpInvokable", 4);
    let job_id = c.submit_job(job).await.expect("submitted");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Finished);
    assert!(result.failure.is_none());
    // Every one of the 8 tasks was deployed and finished.
    let mut deployed = HashSet::new();
    let mut finished = HashSet::new();
    while let Ok(event) = events.try_recv() {
        if let ClusterEvent::TaskStateChanged { attempt, state } = event {
            match state {
                ExecutionState::Deploying => deployed.insert(attempt),
                ExecutionState::Finished => finished.insert(attempt),
                _ => false,
            };
        }
    }
    assert_eq!(deployed.len(), 8);
    assert_eq!(finished.len(), 8);
    let details = c.dispatcher_gateway();
    let details = details
        .ask(rflink_runtime::dispatcher::RequestJobDetails { job_id })
        .await
        .expect("rpc")
        .expect("details");
    assert_eq!(details.vertices.len(), 2);
    assert!(details
        .vertices
        .iter()
        .all(|v| v.status == ExecutionState::Finished && v.tasks.total == 4));
    let overview = wait_for_free_slots(&c, 4).await;
    assert_eq!(overview.jobs_finished, 1);
    c.close().await.expect("closes");
}

/// Waits until `n` distinct tasks have reported RUNNING.
async fn wait_for_running_tasks(
    events: &mut tokio::sync::broadcast::Receiver<ClusterEvent>,
    n: usize,
) {
    let mut running = HashSet::new();
    while running.len() < n {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(ClusterEvent::TaskStateChanged {
                attempt,
                state: ExecutionState::Running,
            })) => {
                running.insert(attempt);
            }
            Ok(Ok(_)) => {}
            other => panic!("only {} of {n} tasks ran: {other:?}", running.len()),
        }
    }
}

async fn wait_for_free_slots(
    c: &MiniCluster,
    n: u32,
) -> rflink_runtime::dispatcher::ClusterOverview {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let overview = c.overview().await.expect("overview");
        if overview.slots_available == n {
            return overview;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots never freed: {overview:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A failing task fails the job, and its error is in the job's exceptions.
#[actix_rt::test]
async fn a_failing_task_fails_the_job_with_its_error() {
    let c = cluster(1, 2).await;
    let source = JobVertex::new("source", "BlockingNoOpInvokable", 2);
    let failing = JobVertex::new("failing sink", "FailingInvokable", 2)
        .with_config("message", "the sink exploded")
        .connect_from(&source, DistributionPattern::AllToAll);
    let job_id = c
        .submit_job(JobGraph::new("failing job", vec![source, failing]))
        .await
        .expect("submitted");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Failed);
    let failure = result.failure.expect("a failure cause");
    assert_eq!(failure.message, "the sink exploded");
    assert!(
        failure
            .task_name
            .as_deref()
            .is_some_and(|t| t.starts_with("failing sink (")),
        "{failure:?}"
    );
    let exceptions = c.job_exceptions(job_id).await.expect("exceptions");
    assert_eq!(
        exceptions.root.map(|r| r.message),
        Some("the sink exploded".to_string())
    );
    assert!(!exceptions.history.is_empty());
    wait_for_free_slots(&c, 2).await;
    c.close().await.expect("closes");
}

/// Scenarios 29/30: with fixed-delay(3), a task that always fails restarts the job three times
/// (RUNNING → RESTARTING → RUNNING with new attempts) and the fourth failure fails it; every
/// attempt's exception is in the history.
#[actix_rt::test]
async fn fixed_delay_restarts_three_times_then_fails_with_the_history() {
    let c = cluster(1, 2).await;
    let mut events = c.events();
    let source = JobVertex::new("source", "BlockingNoOpInvokable", 2);
    let failing = JobVertex::new("failing sink", "FailingInvokable", 2)
        .with_config("message", "the sink exploded")
        .connect_from(&source, DistributionPattern::AllToAll);
    let mut job = JobGraph::new("restarting job", vec![source, failing]);
    for (key, value) in [
        ("restart-strategy.type", "fixed-delay"),
        ("restart-strategy.fixed-delay.attempts", "3"),
        ("restart-strategy.fixed-delay.delay", "20 ms"),
    ] {
        job.job_config.insert(key.into(), value.into());
    }
    let job_id = c.submit_job(job).await.expect("submitted");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Failed);
    let mut statuses = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let ClusterEvent::JobStatusChanged { job_id: j, status } = event {
            if j == job_id && statuses.last() != Some(&status) {
                statuses.push(status);
            }
        }
    }
    let restarts = statuses
        .windows(2)
        .filter(|w| w == &[JobStatus::Restarting, JobStatus::Running])
        .count();
    assert_eq!(restarts, 3, "three restarts: {statuses:?}");
    assert_eq!(statuses.last(), Some(&JobStatus::Failed), "{statuses:?}");
    let exceptions = c.job_exceptions(job_id).await.expect("exceptions");
    assert_eq!(
        exceptions.root.map(|r| r.message),
        Some("the sink exploded".to_string())
    );
    assert_eq!(
        exceptions.history.len(),
        4,
        "one entry per failed attempt: {:?}",
        exceptions.history
    );
    wait_for_free_slots(&c, 2).await;
    c.close().await.expect("closes");
}

/// A bad restart strategy in the job's configuration is refused at submission.
#[actix_rt::test]
async fn a_bad_job_configuration_is_refused_at_submission() {
    let c = cluster(1, 1).await;
    let mut job = two_vertex_job("NoOpInvokable", 1);
    job.job_config
        .insert("restart-strategy.type".into(), "sometimes".into());
    let err = c.submit_job(job).await.expect_err("refused");
    assert!(err.to_string().contains("restart-strategy.type"), "{err}");
    let mut job = two_vertex_job("NoOpInvokable", 1);
    job.job_config.insert("no.such.key".into(), "1".into());
    let err = c.submit_job(job).await.expect_err("refused");
    assert!(err.to_string().contains("no.such.key"), "{err}");
    c.close().await.expect("closes");
}

/// A lost TaskManager fails over the job: it waits (RESTARTING, then RUNNING with attempts
/// waiting for slots) until a TaskManager that joins later offers a slot, then runs again with
/// new attempts and finishes.
#[actix_rt::test]
async fn a_lost_task_manager_fails_over_to_a_task_manager_that_joins_later() {
    let mut c = cluster(2, 1).await;
    let mut events = c.events();
    let source = JobVertex::new("source", "SleepingInvokable", 2).with_config("millis", "1500");
    let sink = JobVertex::new("sink", "NoOpInvokable", 2)
        .connect_from(&source, DistributionPattern::AllToAll);
    let mut job = JobGraph::new("failover job", vec![source, sink]);
    job.job_config
        .insert("restart-strategy.type".into(), "fixed-delay".into());
    job.job_config
        .insert("restart-strategy.fixed-delay.delay".into(), "10 ms".into());
    let job_id = c.submit_job(job).await.expect("submitted");
    wait_for_running_tasks(&mut events, 4).await;
    c.terminate_task_manager(0).await.expect("terminated");
    c.start_task_manager().await.expect("a replacement joins");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Finished, "{result:?}");
    let exceptions = c.job_exceptions(job_id).await.expect("exceptions");
    assert_eq!(exceptions.history.len(), 1, "{:?}", exceptions.history);
    assert!(
        exceptions.history[0].message.contains("was lost"),
        "{:?}",
        exceptions.history
    );
    c.close().await.expect("closes");
}

/// Scenario 31: cancel → CANCELLING → every task CANCELED → CANCELED; cancelling again is a no-op.
#[actix_rt::test]
async fn cancel_stops_every_task_and_frees_the_slots() {
    let c = cluster(2, 2).await;
    let mut events = c.events();
    let job_id = c
        .submit_job(two_vertex_job("BlockingNoOpInvokable", 3))
        .await
        .expect("submitted");
    wait_for_running_tasks(&mut events, 6).await;
    let gw = c.dispatcher_gateway();
    gw.ask(rflink_runtime::dispatcher::CancelJob { job_id })
        .await
        .expect("rpc")
        .expect("cancel accepted");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Canceled);
    // Cancelling a terminal job is a no-op.
    assert!(gw
        .ask(rflink_runtime::dispatcher::CancelJob { job_id })
        .await
        .expect("rpc")
        .is_ok());
    wait_for_free_slots(&c, 4).await;
    c.close().await.expect("closes");
}

/// Scenario 28: the same job id twice (running or finished) is refused; an unknown job is
/// reported as not found; an invalid graph is refused.
#[actix_rt::test]
async fn duplicate_unknown_and_invalid_jobs_are_refused() {
    let c = cluster(1, 1).await;
    let job = JobGraph::new(
        "blocking",
        vec![JobVertex::new("v", "BlockingNoOpInvokable", 1)],
    );
    let job_id = c.submit_job(job.clone()).await.expect("first submission");
    match c.submit_job(job.clone()).await {
        Err(MiniClusterError::Dispatcher(DispatcherError::DuplicateJob { job_id: dup })) => {
            assert_eq!(dup, job_id)
        }
        other => panic!("expected DuplicateJob, got {other:?}"),
    }
    let unknown = rflink_runtime::types::JobId::generate();
    assert!(matches!(
        c.job_status(unknown).await,
        Err(MiniClusterError::Dispatcher(
            DispatcherError::JobNotFound { .. }
        ))
    ));
    assert!(matches!(
        c.submit_job(JobGraph::new("empty", vec![])).await,
        Err(MiniClusterError::Dispatcher(
            DispatcherError::InvalidJobGraph(_)
        ))
    ));
    c.close().await.expect("closes");
}

/// Scenario 27: slots that never come fail the job after `slot.request.timeout`.
#[actix_rt::test]
async fn missing_slots_fail_the_job_after_the_slot_request_timeout() {
    let mut cfg = config(1, 1);
    cfg.slot_request_timeout = Duration::from_millis(300);
    let c = MiniCluster::start(cfg).await.expect("starts");
    c.wait_for_task_managers(1, WAIT).await.expect("registered");
    let job_id = c
        .submit_job(two_vertex_job("NoOpInvokable", 3))
        .await
        .expect("submitted");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Failed);
    let failure = result.failure.expect("failure");
    assert_eq!(failure.kind, "NoResourceAvailable");
    // The one slot it did get is given back.
    wait_for_free_slots(&c, 1).await;
    c.close().await.expect("closes");
}

/// Scenario 19 (fast): a TaskManager that goes away during a job is noticed, its slots leave the
/// overview, and the job leaves RUNNING (FAILED: without checkpointing Flink's default restart
/// strategy is `none`).
#[actix_rt::test]
async fn a_lost_task_manager_fails_its_job_and_leaves_the_overview() {
    let mut c = cluster(2, 1).await;
    let mut events = c.events();
    let job_id = c
        .submit_job(two_vertex_job("BlockingNoOpInvokable", 2))
        .await
        .expect("submitted");
    wait_for_running_tasks(&mut events, 4).await;
    let lost = c.terminate_task_manager(0).await.expect("terminated");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Failed);
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(ClusterEvent::TaskExecutorLost { resource_id, .. })) if resource_id == lost => {
                break
            }
            Ok(Ok(_)) => {}
            other => panic!("the resource manager never lost the task executor: {other:?}"),
        }
    }
    let overview = wait_for_free_slots(&c, 1).await;
    assert_eq!((overview.taskmanagers, overview.slots_total), (1, 1));
    c.close().await.expect("closes");
}

/// Scenarios 22 and 26: a submission with a stale JobMasterId, or for an unknown allocation, is
/// refused by the TaskExecutor with a typed error, and the cluster keeps working.
#[actix_rt::test]
async fn stale_job_master_ids_are_refused_by_the_task_executor() {
    use rflink_runtime::taskexecutor::{SubmitTask, TaskExecutor, TaskSubmissionError};
    use rflink_runtime::types::*;

    let c = cluster(1, 1).await;
    let job = JobGraph::new(
        "blocking",
        vec![JobVertex::new("v", "BlockingNoOpInvokable", 1)],
    );
    let mut events = c.events();
    let job_id = c.submit_job(job).await.expect("submitted");
    wait_for_running_tasks(&mut events, 1).await;
    let tm_address = c.task_manager(0).expect("tm").address();
    let te = c
        .jm_service()
        .connect::<TaskExecutor>(&tm_address.parse().expect("address"))
        .await
        .expect("connects");
    let tdd = |allocation_id| noop_deployment(job_id, allocation_id);
    let stale = JobMasterId::generate();
    match te
        .ask(SubmitTask {
            tdd: tdd(AllocationId::generate()),
            job_master_id: stale,
        })
        .await
    {
        Ok(Err(TaskSubmissionError::WrongJobMaster { received, .. })) => {
            assert_eq!(received, stale)
        }
        other => panic!("expected WrongJobMaster, got {other:?}"),
    }
    // An unknown job entirely.
    let mut other_job = tdd(AllocationId::generate());
    other_job.job_id = JobId::generate();
    assert!(matches!(
        te.ask(SubmitTask {
            tdd: other_job,
            job_master_id: stale
        })
        .await,
        Ok(Err(TaskSubmissionError::NoJobMaster(_)))
    ));
    // Still serving: the job can be cancelled and finishes cancelling.
    c.dispatcher_gateway()
        .ask(rflink_runtime::dispatcher::CancelJob { job_id })
        .await
        .expect("rpc")
        .expect("cancel");
    assert_eq!(
        c.request_job_result(job_id, WAIT)
            .await
            .expect("result")
            .status,
        JobStatus::Canceled
    );
    c.close().await.expect("closes");
}

/// The same job on different cluster shapes (timely's model): 1 TM × 4 slots, 2 × 2, 4 × 1.
#[actix_rt::test]
async fn the_same_job_finishes_on_every_shape() {
    for (tms, slots) in [(1, 4), (2, 2), (4, 1)] {
        let c = cluster(tms, slots).await;
        let job_id = c
            .submit_job(two_vertex_job("SleepingInvokable", 4))
            .await
            .expect("submitted");
        let result = c.request_job_result(job_id, WAIT).await.expect("result");
        assert_eq!(result.status, JobStatus::Finished, "{tms} x {slots}");
        c.close().await.expect("closes");
    }
}

/// Every message of a whole job survives the codec: the cluster runs with forced serialization.
#[actix_rt::test]
async fn a_job_runs_with_forced_serialization() {
    let mut cfg = config(1, 2);
    cfg.rpc = RpcConfig {
        force_serialization: true,
        ..RpcConfig::default()
    };
    let c = MiniCluster::start(cfg).await.expect("starts");
    c.wait_for_task_managers(1, WAIT).await.expect("registered");
    let job_id = c
        .submit_job(two_vertex_job("NoOpInvokable", 2))
        .await
        .expect("submitted");
    assert_eq!(
        c.request_job_result(job_id, WAIT)
            .await
            .expect("result")
            .status,
        JobStatus::Finished
    );
    let _: Option<RpcError> = None;
    c.close().await.expect("closes");
}

/// Deployment data above `blob.offload.minsize` travels through the BlobServer (Flink's TDD
/// offloading); the tasks of one vertex on one TaskManager fetch it once (scenario 34), and the
/// job's blobs are deleted once it finished.
#[actix_rt::test]
async fn large_deployment_data_is_offloaded_and_fetched_once() {
    let mut cfg = config(1, 4);
    cfg.blob_offload_min_size = 1024;
    let c = MiniCluster::start(cfg).await.expect("starts");
    c.wait_for_task_managers(1, WAIT).await.expect("registered");
    let big = "x".repeat(64 * 1024);
    let source = JobVertex::new("source", "NoOpInvokable", 4).with_config("payload", big.clone());
    let sink = JobVertex::new("sink", "NoOpInvokable", 4)
        .with_config("payload", big)
        .connect_from(&source, DistributionPattern::AllToAll);
    let job_id = c
        .submit_job(JobGraph::new("offloaded", vec![source, sink]))
        .await
        .expect("submitted");
    let result = c.request_job_result(job_id, WAIT).await.expect("result");
    assert_eq!(result.status, JobStatus::Finished, "{result:?}");
    let stats = c.blob_server().stats();
    assert_eq!(stats.blobs_stored, 2, "one blob per vertex: {stats:?}");
    assert_eq!(stats.blobs_served, 2, "8 tasks, 2 downloads: {stats:?}");
    // Global cleanup removes the job's blobs.
    let deadline = tokio::time::Instant::now() + WAIT;
    let job_dir = c.blob_server().storage_dir().join(format!("job_{job_id}"));
    while job_dir.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never removed",
            job_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.close().await.expect("closes");
}

/// Scenario 17: a TaskExecutor that cannot register within `taskmanager.registration.timeout`
/// raises a fatal error.
#[actix_rt::test]
async fn a_task_executor_that_cannot_register_is_fatal() {
    use rflink_runtime::entrypoint::{TaskManagerRunner, TaskManagerSettings};
    use rflink_runtime::events::EventSink;
    use rflink_runtime::taskexecutor::invokable::InvokableRegistry;
    use rflink_runtime::taskexecutor::TaskExecutorSettings;
    use std::sync::{Arc, Mutex};

    init_tracing();
    // A port nobody listens on: bound but never listening, and held for the whole test, so no
    // other test's server can take it in between.
    let nowhere = tokio::net::TcpSocket::new_v4().expect("socket");
    nowhere
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let port = nowhere.local_addr().expect("addr").port();
    let fatal: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&fatal);
    let settings = TaskManagerSettings {
        rpc: RpcConfig::default(),
        data: None,
        task_executor: TaskExecutorSettings {
            jobmanager_address: format!("127.0.0.1:{port}"),
            number_of_slots: 1,
            heartbeat: HeartbeatSettings::default(),
            registration: Default::default(),
            registration_timeout: Duration::from_millis(300),
            slot_timeout: Duration::from_secs(10),
            shuffle: None,
            jobs: Default::default(),
            invokables: InvokableRegistry::with_testing_invokables(),
            fatal_error: Arc::new(move |m| sink.lock().expect("lock").push(m)),
            blob_cache_dir: std::env::temp_dir().join(format!(
                "rflink-test-{}",
                rflink_rpc::AbstractId::generate()
            )),
            blob_cleanup_interval: Duration::from_secs(1),
            blob_security: Default::default(),
            metrics: Default::default(),
            metrics_address: None,
            leader_watch: None,
        },
        prometheus: None,
    };
    let tm = TaskManagerRunner::start(settings, EventSink::default())
        .await
        .expect("starts");
    let deadline = tokio::time::Instant::now() + WAIT;
    while fatal.lock().expect("lock").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no fatal error");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fatal.lock().expect("lock")[0].contains("could not register"));
    tm.close().await.expect("closes");
}

/// Scenario 22 (ResourceManager side): declaring resources with a JobMasterId that is not the
/// registered one is refused.
#[actix_rt::test]
async fn the_resource_manager_refuses_an_unregistered_job_master_id() {
    use rflink_runtime::resourcemanager::{DeclareRequiredResources, ResourceManagerError};
    use rflink_runtime::types::{JobId, JobMasterId};

    let c = cluster(1, 1).await;
    let rm = c.resource_manager().self_gateway();
    let (job_id, job_master_id) = (JobId::generate(), JobMasterId::generate());
    match rm
        .ask(DeclareRequiredResources {
            job_master_id,
            job_id,
            slots: 1,
        })
        .await
    {
        Ok(Err(ResourceManagerError::UnknownJobMaster { job_id: j, .. })) => assert_eq!(j, job_id),
        other => panic!("expected UnknownJobMaster, got {other:?}"),
    }
    // A gateway with a stale ResourceManager token is refused before any handler runs.
    let stale = c
        .jm_service()
        .connect_fenced::<rflink_runtime::resourcemanager::ResourceManager>(
            c.resource_manager().address(),
            rflink_runtime::types::ResourceManagerId::generate(),
        )
        .await
        .expect("connects");
    assert!(matches!(
        stale
            .ask(rflink_runtime::resourcemanager::RequestResourceOverview)
            .await,
        Err(RpcError::FencingTokenMismatch { .. })
    ));
    c.close().await.expect("closes");
}

/// Scenario 25: a slot allocated on a TaskExecutor but never accepted by a JobMaster is freed
/// after the slot timeout and given back to the ResourceManager.
#[actix_rt::test]
async fn an_unaccepted_slot_is_freed_after_the_slot_timeout() {
    use rflink_runtime::taskexecutor::{RequestSlot, TaskExecutor, TaskExecutorError};
    use rflink_runtime::types::*;

    let mut cfg = config(1, 1);
    cfg.slot_timeout = Duration::from_millis(200);
    let c = MiniCluster::start(cfg).await.expect("starts");
    c.wait_for_task_managers(1, WAIT).await.expect("registered");
    let tm = c.task_manager(0).expect("tm");
    let te = c
        .jm_service()
        .connect::<TaskExecutor>(&tm.address().parse().expect("address"))
        .await
        .expect("connects");
    let slot_id = SlotId {
        resource_id: tm.resource_id(),
        slot_index: 0,
    };
    // A JobMaster that does not exist: the slot can never be accepted.
    let request = |rm_id| RequestSlot {
        slot_id,
        job_id: JobId::generate(),
        allocation_id: AllocationId::generate(),
        target_address: format!("rflink://{}/jobmanager_99", c.jm_service().address()),
        job_master_id: JobMasterId::generate(),
        rm_id,
    };
    // From a ResourceManager it is not registered at: refused.
    assert!(matches!(
        te.ask(request(ResourceManagerId::generate())).await,
        Ok(Err(TaskExecutorError::UnknownResourceManager { .. }))
    ));
    let rm_id = c.resource_manager().fencing_token();
    te.ask(request(rm_id))
        .await
        .expect("rpc")
        .expect("slot allocated");
    // The TaskExecutor's own slot report shows the allocation...
    let report = || {
        te.ask(rflink_runtime::taskexecutor::HeartbeatFromResourceManager {
            rm_resource_id: ResourceId::generate(),
        })
    };
    assert!(report().await.expect("report").slot_report.0[0]
        .allocation
        .is_some());
    // ...until the slot timeout frees it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while report().await.expect("report").slot_report.0[0]
        .allocation
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let overview = wait_for_free_slots(&c, 1).await;
    assert_eq!(overview.slots_total, 1);
    c.close().await.expect("closes");
}

/// Split brain on a TaskExecutor (issue 11): a job's tasks run for one JobMaster; a slot request
/// names a new JobMaster of the same job (a new leader). The TaskExecutor drops the old one at
/// once (its tasks fail, and the old JobMaster hears of it), and from then on only the new
/// JobMasterId can submit: one TaskExecutor is never driven by two JobMasters of one job.
#[actix_rt::test]
async fn a_new_job_master_of_a_job_replaces_the_old_one_on_the_task_executor() {
    use rflink_runtime::taskexecutor::{
        RequestSlot, SubmitTask, TaskExecutor, TaskSubmissionError,
    };
    use rflink_runtime::types::*;

    let c = cluster(1, 2).await;
    let job = JobGraph::new(
        "blocking",
        vec![JobVertex::new("v", "BlockingNoOpInvokable", 1)],
    );
    let mut events = c.events();
    let job_id = c.submit_job(job).await.expect("submitted");
    wait_for_running_tasks(&mut events, 1).await;
    let tm = c.task_manager(0).expect("tm");
    let te = c
        .jm_service()
        .connect::<TaskExecutor>(&tm.address().parse().expect("address"))
        .await
        .expect("connects");
    let new_leader = JobMasterId::generate();
    let request_for_new_leader = || {
        te.ask(RequestSlot {
            slot_id: SlotId {
                resource_id: tm.resource_id(),
                slot_index: 1,
            },
            job_id,
            allocation_id: AllocationId::generate(),
            target_address: format!("rflink://{}/jobmanager_99", c.jm_service().address()),
            job_master_id: new_leader,
            rm_id: c.resource_manager().fencing_token(),
        })
    };
    request_for_new_leader()
        .await
        .expect("rpc")
        .expect("the slot request of the new job master is accepted");
    // The old JobMaster loses its task: the job (no restart strategy) fails.
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(ClusterEvent::JobStatusChanged {
                job_id: id,
                status: JobStatus::Failed,
            })) if id == job_id => break,
            Ok(Ok(_)) => {}
            other => panic!("the old job master kept its task: {other:?}"),
        }
    }
    // Any other JobMasterId, the old one included, is refused for this job.
    let tdd = noop_deployment(job_id, AllocationId::generate());
    // The old JobMaster, still alive here (in a real failover it is gone with its leader), may
    // ask for its lost slot once more before its failed job clears its requirements; that
    // request in turn replaces the new one. Each TaskExecutor holds one JobMaster per job at any
    // time; once the old job is over, the new JobMaster's request stands.
    let stale = JobMasterId::generate();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let submitted = te
            .ask(SubmitTask {
                tdd: tdd.clone(),
                job_master_id: stale,
            })
            .await;
        match submitted {
            Ok(Err(TaskSubmissionError::WrongJobMaster {
                expected, received, ..
            })) if expected == new_leader => {
                assert_eq!(received, stale);
                break;
            }
            Ok(Err(TaskSubmissionError::WrongJobMaster { .. }))
            | Ok(Err(TaskSubmissionError::NoJobMaster(_))) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the new job master never held the job: {submitted:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = request_for_new_leader().await;
            }
            other => panic!("expected WrongJobMaster, got {other:?}"),
        }
    }
    c.close().await.expect("closes");
}

/// A deployment of one NoOp subtask of `job_id` into `allocation_id`, as a JobMaster would send
/// it: what the TaskExecutor's submission checks are tried with.
fn noop_deployment(
    job_id: rflink_runtime::types::JobId,
    allocation_id: rflink_runtime::types::AllocationId,
) -> rflink_runtime::taskexecutor::TaskDeploymentDescriptor {
    use rflink_runtime::taskexecutor::{
        JobInformation, MaybeOffloaded, TaskDeploymentDescriptor, TaskInformation,
    };
    use rflink_runtime::types::*;
    TaskDeploymentDescriptor {
        job_id,
        attempt: ExecutionAttemptId {
            execution_graph_id: ExecutionGraphId::generate(),
            vertex: ExecutionVertexId {
                job_vertex_id: JobVertexId::generate(),
                subtask_index: 0,
            },
            attempt_number: 0,
        },
        allocation_id,
        job_information: MaybeOffloaded::Inline(JobInformation {
            job_name: "x".into(),
            program: None,
        }),
        task_information: MaybeOffloaded::Inline(TaskInformation {
            vertex_name: "x".into(),
            number_of_subtasks: 1,
            max_parallelism: 1,
            invokable: "NoOpInvokable".into(),
            config: Default::default(),
        }),
        produced_partitions: Vec::new(),
        input_gates: Vec::new(),
        checkpointing: None,
        restore: None,
    }
}
