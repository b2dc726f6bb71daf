//! High availability in process: a MiniCluster whose JobManager campaigns through test
//! services (the in-memory ones, declared durable, with writes that can be made to fail).
//! Submitted jobs are stored before they start and archived when they end; a job that cannot be
//! stored is refused and the JobManager keeps serving; a lost leadership stops the leader's
//! components at once and a new leadership, with fresh tokens, recovers the stored jobs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rflink_runtime::dispatcher::{ArchivedJob, DispatcherError};
use rflink_runtime::events::ClusterEvent;
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::highavailability::{
    keys, ClusterLeader, HaError, HaServices, KeyValues, Leadership, StandaloneHaServices,
};
use rflink_runtime::jobgraph::{JobGraph, JobVertex};
use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig};
use rflink_runtime::types::JobId;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);

/// The in-memory services, declared durable (so the Dispatcher stores jobs), whose writes fail
/// while `fail_writes` is set (a coordination service that is down).
#[derive(Default)]
struct TestHa {
    inner: StandaloneHaServices,
    fail_writes: AtomicBool,
}

impl TestHa {
    fn refused<T: Send + 'static>() -> BoxFuture<'static, Result<T, HaError>> {
        Box::pin(async {
            Err(HaError::Unavailable {
                endpoints: "test".into(),
                reason: "writes fail".into(),
            })
        })
    }
}

impl HaServices for TestHa {
    fn describe(&self) -> String {
        "test".into()
    }
    fn is_durable(&self) -> bool {
        true
    }
    fn campaign(&self, contender: String) -> BoxFuture<'static, Result<Leadership, HaError>> {
        self.inner.campaign(contender)
    }
    fn resign(&self, leadership: &Leadership) -> BoxFuture<'static, Result<(), HaError>> {
        self.inner.resign(leadership)
    }
    fn publish_leader(
        &self,
        leadership: &Leadership,
        leader: &ClusterLeader,
    ) -> BoxFuture<'static, Result<(), HaError>> {
        self.inner.publish_leader(leadership, leader)
    }
    fn watch_leader(&self) -> watch::Receiver<Option<ClusterLeader>> {
        self.inner.watch_leader()
    }
    fn put(
        &self,
        leadership: &Leadership,
        key: String,
        value: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), HaError>> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Self::refused();
        }
        self.inner.put(leadership, key, value)
    }
    fn delete(
        &self,
        leadership: &Leadership,
        key: String,
    ) -> BoxFuture<'static, Result<(), HaError>> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Self::refused();
        }
        self.inner.delete(leadership, key)
    }
    fn get(&self, key: String) -> BoxFuture<'static, Result<Option<Vec<u8>>, HaError>> {
        self.inner.get(key)
    }
    fn list(&self, prefix: String) -> BoxFuture<'static, Result<KeyValues, HaError>> {
        self.inner.list(prefix)
    }
}

async fn cluster(ha: Arc<TestHa>) -> MiniCluster {
    let c = MiniCluster::start(MiniClusterConfig {
        num_task_managers: 1,
        slots_per_task_manager: 2,
        ha: Some(ha),
        ..MiniClusterConfig::default()
    })
    .await
    .expect("starts");
    c.wait_for_task_managers(1, WAIT).await.expect("registered");
    c
}

fn blocking_job() -> JobGraph {
    JobGraph::new(
        "blocking",
        vec![JobVertex::new("v", "BlockingNoOpInvokable", 1)],
    )
}

fn noop_job() -> JobGraph {
    JobGraph::new("noop", vec![JobVertex::new("v", "NoOpInvokable", 1)])
}

/// Polls until `check` holds on the stored keys under `prefix`, bounded.
async fn wait_for_stored(
    ha: &TestHa,
    prefix: &str,
    check: impl Fn(&KeyValues) -> bool,
) -> KeyValues {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored = ha.list(prefix.into()).await.expect("list");
        if check(&stored) {
            return stored;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store under {prefix} never matched; it holds {:?}",
            stored.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_for_status(c: &MiniCluster, job_id: JobId, status: JobStatus) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = c
            .dispatcher_gateway()
            .ask(rflink_runtime::dispatcher::RequestJobStatus { job_id })
            .await;
        if matches!(now, Ok(Ok(s)) if s == status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {job_id} never reached {status}; last {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn jobs_are_stored_while_they_run_and_archived_when_they_end() {
    let ha = Arc::new(TestHa::default());
    let c = cluster(Arc::clone(&ha)).await;
    let job_id = c.submit_job(blocking_job()).await.expect("submitted");
    // Stored before it started: the graph is there as soon as the submission is answered.
    let stored = ha.list(keys::JOB_GRAPHS.into()).await.expect("list");
    assert_eq!(stored.len(), 1, "the graph is stored at submission");
    assert_eq!(stored[0].0, keys::job_graph(job_id));
    c.dispatcher_gateway()
        .ask(rflink_runtime::dispatcher::CancelJob { job_id })
        .await
        .expect("rpc")
        .expect("cancelled");
    let archived = wait_for_stored(&ha, keys::JOB_RESULTS, |s| s.len() == 1).await;
    let archived: ArchivedJob = rmp_serde::from_slice(&archived[0].1).expect("an archive");
    assert_eq!(archived.result.job_id, job_id);
    assert_eq!(archived.result.status, JobStatus::Canceled);
    wait_for_stored(&ha, keys::JOB_GRAPHS, |s| s.is_empty()).await;
    c.close().await.expect("closes");
}

#[actix_rt::test]
async fn a_job_that_cannot_be_stored_is_refused_and_the_job_manager_keeps_serving() {
    let ha = Arc::new(TestHa::default());
    let c = cluster(Arc::clone(&ha)).await;
    ha.fail_writes.store(true, Ordering::SeqCst);
    let refused = c.submit_job(noop_job()).await;
    assert!(
        matches!(refused, Err(ref e) if e.to_string().contains("could not store job")),
        "{refused:?}"
    );
    let overviews = c
        .dispatcher_gateway()
        .ask(rflink_runtime::dispatcher::RequestJobOverviews)
        .await
        .expect("the dispatcher answers");
    assert!(overviews.is_empty(), "the refused job is not listed");
    // Once the store works again, jobs run.
    ha.fail_writes.store(false, Ordering::SeqCst);
    let job_id = c.submit_job(noop_job()).await.expect("submitted");
    wait_for_status(&c, job_id, JobStatus::Finished).await;
    c.close().await.expect("closes");
}

#[actix_rt::test]
async fn a_lost_leadership_stops_the_leader_and_the_next_one_recovers_the_stored_jobs() {
    let ha = Arc::new(TestHa::default());
    let c = cluster(Arc::clone(&ha)).await;
    let mut events = c.events();
    let finished = c.submit_job(noop_job()).await.expect("submitted");
    wait_for_status(&c, finished, JobStatus::Finished).await;
    wait_for_stored(&ha, keys::JOB_RESULTS, |s| s.len() == 1).await;
    let running = c.submit_job(blocking_job()).await.expect("submitted");
    wait_for_status(&c, running, JobStatus::Running).await;

    let first = c.job_manager().leader().expect("leading");
    let old_dispatcher = first.dispatcher.self_gateway();
    ha.resign(&first.leadership).await.expect("resigns");
    // The old leadership's Dispatcher stops answering at once...
    first
        .dispatcher
        .termination()
        .await
        .expect("the old dispatcher stops cleanly");
    assert!(
        old_dispatcher
            .ask(rflink_runtime::dispatcher::RequestJobOverviews)
            .await
            .is_err(),
        "a deposed dispatcher answers nothing"
    );
    // ...and a new leadership, with new tokens, takes over the stored jobs.
    let second = c
        .job_manager()
        .wait_leading(WAIT)
        .await
        .expect("leads again");
    assert_ne!(second.leadership.session_id, first.leadership.session_id);
    assert_ne!(
        second.dispatcher.fencing_token(),
        first.dispatcher.fencing_token()
    );
    assert_ne!(
        second.resource_manager.fencing_token(),
        first.resource_manager.fencing_token()
    );
    let gateway = second.dispatcher.self_gateway();
    let status = |job_id| {
        let gateway = gateway.clone();
        async move {
            gateway
                .ask(rflink_runtime::dispatcher::RequestJobStatus { job_id })
                .await
        }
    };
    assert_eq!(
        status(finished).await.expect("rpc").expect("listed"),
        JobStatus::Finished,
        "the finished job is still listed with its result"
    );
    // The running job runs again under the new leader's JobMaster, on the same TaskExecutor
    // (its slot went back to the new ResourceManager when the old JobMaster went away).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(ClusterEvent::JobStatusChanged {
                job_id,
                status: JobStatus::Running,
            })) if job_id == running
                && status(running).await.ok() == Some(Ok(JobStatus::Running)) =>
            {
                break
            }
            Ok(Ok(_)) => {}
            other => panic!("the recovered job never ran again: {other:?}"),
        }
    }
    // A resubmission of a recovered job id is a duplicate.
    let mut again = blocking_job();
    again.job_id = running;
    assert!(matches!(
        gateway
            .ask(rflink_runtime::dispatcher::SubmitJob { job_graph: again })
            .await,
        Ok(Err(DispatcherError::DuplicateJob { .. }))
    ));
    c.close().await.expect("closes");
}
