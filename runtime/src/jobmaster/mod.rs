//! The JobMaster: runs one job. Flink: `JobMaster` with the `DefaultScheduler` in eager mode.
//!
//! Fenced by a fresh [`JobMasterId`] per job run. It owns the job's
//! [`ExecutionGraph`](crate::executiongraph::ExecutionGraph) and [`SlotPool`](slot_pool::SlotPool),
//! and is the heartbeat *sender* towards the TaskExecutors of its job and a receiver of the
//! ResourceManager's heartbeats.
//!
//! # Flow (Flink's `scheduleEager`)
//!
//! 1. `on_start`: the graph goes RUNNING (every attempt SCHEDULED); register at the
//!    ResourceManager (retrying) and declare the slots needed: the largest parallelism, since one
//!    slot runs subtask *k* of every vertex (Flink's default slot sharing group).
//! 2. TaskExecutors that got a slot for this job register (`RegisterTaskManager`) and offer it
//!    (`OfferSlots`); offers are accepted up to the need, the rest rejected.
//! 3. Once every SCHEDULED attempt has a slot, they are deployed together with
//!    `SubmitTask(tdd, JobMasterId)`.
//! 4. Tasks report through `UpdateTaskExecutionState`; the graph decides (all finished → FINISHED;
//!    a failure → the restart strategy: RESTARTING, cancel the failed region, and after the
//!    backoff new attempts are SCHEDULED and deployed (step 3) as soon as slots are there (lost
//!    ones are asked for again, within `slot.request.timeout`); or, when it allows no more
//!    restarts, FAILING, cancel the rest → FAILED).
//! 5. At a terminal status: free the slots, disconnect from TaskExecutors and the
//!    ResourceManager, and report the archived views to the Dispatcher, which closes this endpoint.
//!
//! A TaskExecutor lost (heartbeat timeout, unreachable, or disconnected by the ResourceManager)
//! fails the attempts it ran: one failure for the restart strategy. Slots that do not all arrive
//! within `slot.request.timeout` fail the waiting attempts with `NoResourceAvailable`.

mod checkpointing;
pub mod deployment;
pub mod gateway;
pub mod slot_pool;
pub mod views;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::{AbortHandle, Abortable};
use rflink_rpc::{
    rpc_protocol, AbstractId, Handler, Response, RpcAddress, RpcContext, RpcEndpoint, RpcError,
    RpcGateway, RpcService,
};

pub use gateway::*;
use slot_pool::SlotPool;

use crate::blob::{BlobClient, BlobKey};
use crate::dispatcher::{Dispatcher, JobDetails, JobExceptions, JobReachedTerminalState};
use crate::events::{ClusterEvent, EventSink};
use crate::executiongraph::{
    now_millis, ErrorInfo, ExecutionGraph, GraphAction, JobStatus, SlotAssignment,
};
use crate::heartbeat::{watch_peers, HeartbeatMonitor, HeartbeatSettings, Verdict};
use crate::jobgraph::JobGraph;
use crate::leaderretrieval::LeaderInfo;
use crate::registration::{register_with_retries, RegistrationResponse, RetryPolicy};
use crate::resourcemanager::{self, ResourceManager};
use crate::taskexecutor::{
    self, JobInformation, MaybeOffloaded, TaskDeploymentDescriptor, TaskExecutor, TaskInformation,
};
use crate::types::{Ack, JobId, JobMasterId, JobVertexId, ResourceId, ResourceManagerId};

/// Settings of a JobMaster.
#[derive(Debug, Clone)]
pub struct JobMasterSettings {
    /// Heartbeats towards TaskExecutors; silence allowed from the ResourceManager.
    pub heartbeat: HeartbeatSettings,
    /// `cluster.registration.*` for registering at the ResourceManager.
    pub registration: RetryPolicy,
    /// `slot.request.timeout`: all slots must arrive within this.
    pub slot_request_timeout: Duration,
    /// Where the ResourceManager is.
    pub resource_manager: LeaderInfo,
    /// Where to offload large deployment data, if a BlobServer runs.
    pub blob_offload: Option<BlobOffload>,
    /// The cluster's configuration: the defaults a job's own configuration
    /// (`JobGraph::job_config`) overrides (restart strategy, checkpointing).
    pub job_defaults: crate::config::Configuration,
    /// The JobManager's metric group (scope `jobmanager`); each JobMaster registers its job's
    /// group (`jobmanager_job`) under it.
    pub metrics: Option<crate::metrics::MetricGroup>,
    /// The leadership this JobMaster runs under and where it stores its latest completed
    /// checkpoint pointer; `None`: nowhere (no high availability).
    pub ha: Option<crate::highavailability::HaHandle>,
}

/// The cluster configuration with a job's own entries applied over it. Entries were checked at
/// submission (`JobGraph::validate`); one that still fails is logged and skipped.
pub fn effective_config(
    defaults: &crate::config::Configuration,
    job: &JobGraph,
) -> crate::config::Configuration {
    let mut config = defaults.clone();
    for (key, value) in &job.job_config {
        if let Err(problem) = config.set(key, value) {
            let problem = crate::config::ConfigProblem::new(
                crate::config::ConfigSource::Code,
                Some(key),
                problem,
            );
            tracing::warn!(job_id = %job.job_id, %problem, "ignoring a bad job configuration entry");
        }
    }
    config
}

/// Offloading of deployment data larger than `blob.offload.minsize` to the BlobServer, as Flink
/// does for `TaskInformation` and `JobInformation`.
#[derive(Debug, Clone)]
pub struct BlobOffload {
    /// The BlobServer's `host:port`.
    pub server: String,
    /// `blob.offload.minsize`: values whose encoding is larger go through the BlobServer.
    pub min_size: u64,
    /// How the upload's connection is secured: the BlobServer's own settings.
    pub security: rflink_rpc::security::TransportSecurity,
}

struct RmConnection {
    rm_id: ResourceManagerId,
    gateway: RpcGateway<ResourceManager>,
}

struct TmConnection {
    gateway: RpcGateway<TaskExecutor>,
    session_id: AbstractId,
    data_address: Option<String>,
}

/// The JobMaster endpoint.
pub struct JobMaster {
    job_master_id: JobMasterId,
    resource_id: ResourceId,
    job_graph: JobGraph,
    graph: ExecutionGraph,
    settings: JobMasterSettings,
    events: EventSink,
    dispatcher: Option<RpcGateway<Dispatcher>>,
    rm: Option<RmConnection>,
    rm_registration: Option<AbortHandle>,
    rm_generation: u64,
    rm_heartbeat: HeartbeatMonitor<()>,
    task_managers: HashMap<ResourceId, TmConnection>,
    tm_heartbeats: HeartbeatMonitor<ResourceId>,
    slot_pool: SlotPool,
    /// Counts periods of waiting for slots: a slot-request timer only acts on its own period.
    slot_wait_generation: u64,
    /// True while SCHEDULED attempts wait for slots (a slot-request timer is armed).
    waiting_for_slots: bool,
    finished: bool,
    /// The job's effective configuration (cluster defaults + its own entries).
    config: crate::config::Configuration,
    /// Checkpoints, when the job has them on.
    checkpointing: Option<checkpointing::Checkpointing>,
    /// Per vertex, what goes into its deployment descriptors: ready once offloading is done.
    deployment_data: Option<HashMap<JobVertexId, MaybeOffloaded<TaskInformation>>>,
    /// Attempts whose `SubmitTask` the TaskExecutor acknowledged: it must know them until it
    /// reports their end.
    acknowledged: HashMap<crate::types::ExecutionAttemptId, Instant>,
    /// The latest metrics of each current attempt (heartbeats, final states).
    task_metrics: HashMap<crate::types::ExecutionAttemptId, Vec<(String, f64)>>,
    /// The job's metric group (scope `jobmanager_job`), removed with the JobMaster.
    job_metrics: Option<JobMetrics>,
}

/// The gauges of a job's `jobmanager_job` group (Flink's `JobManagerJobMetricGroup`), set by
/// the JobMaster on its main thread at every heartbeat tick.
struct JobMetrics {
    _group: crate::metrics::MetricGroup,
    num_restarts: crate::metrics::Gauge,
    uptime: crate::metrics::Gauge,
    completed: crate::metrics::Gauge,
    failed: crate::metrics::Gauge,
    in_progress: crate::metrics::Gauge,
    total: crate::metrics::Gauge,
    last_duration: crate::metrics::Gauge,
    last_size: crate::metrics::Gauge,
    last_restore: crate::metrics::Gauge,
}

impl JobMetrics {
    fn new(parent: &crate::metrics::MetricGroup, job: &JobGraph) -> JobMetrics {
        let group = parent.child(
            "job",
            &[
                ("job_id", job.job_id.to_string()),
                ("job_name", job.name.clone()),
            ],
        );
        let gauge = |name: &str| group.gauge(name);
        let metrics = JobMetrics {
            num_restarts: gauge("numRestarts"),
            uptime: gauge("uptime"),
            completed: gauge("numberOfCompletedCheckpoints"),
            failed: gauge("numberOfFailedCheckpoints"),
            in_progress: gauge("numberOfInProgressCheckpoints"),
            total: gauge("totalNumberOfCheckpoints"),
            last_duration: gauge("lastCheckpointDuration"),
            last_size: gauge("lastCheckpointSize"),
            last_restore: gauge("lastCheckpointRestoreTimestamp"),
            _group: group,
        };
        metrics.last_restore.set(-1.0);
        metrics
    }
}

impl JobMaster {
    /// A JobMaster for `job_graph` with a fresh id. `dispatcher` receives the final views.
    pub fn new(
        job_graph: JobGraph,
        settings: JobMasterSettings,
        events: EventSink,
        dispatcher: Option<RpcGateway<Dispatcher>>,
    ) -> Self {
        let config = effective_config(&settings.job_defaults, &job_graph);
        let checkpointing_on = config.checkpointing.interval.is_some();
        let strategy = crate::executiongraph::failover::from_lookup(
            &|key| config.get(key),
            checkpointing_on,
        )
        .unwrap_or_else(|reason| {
            tracing::warn!(job_id = %job_graph.job_id, reason, "bad restart strategy; the job will not restart");
            crate::executiongraph::failover::RestartStrategy::None
        });
        let region_failover = config.restart.failover_strategy == "region";
        let seed = job_graph.job_id.as_abstract_id().as_u128() as u64;
        let graph = ExecutionGraph::new(&job_graph).with_failover(strategy, region_failover, seed);
        let checkpointing = checkpointing::Checkpointing::for_job(&config, &job_graph);
        let job_metrics = settings
            .metrics
            .as_ref()
            .map(|g| JobMetrics::new(g, &job_graph));
        JobMaster {
            job_master_id: JobMasterId::generate(),
            resource_id: ResourceId::generate(),
            rm_heartbeat: HeartbeatMonitor::new(settings.heartbeat),
            tm_heartbeats: HeartbeatMonitor::new(settings.heartbeat),
            job_graph,
            graph,
            settings,
            events,
            dispatcher,
            rm: None,
            rm_registration: None,
            rm_generation: 0,
            task_managers: HashMap::new(),
            slot_pool: SlotPool::new(),
            slot_wait_generation: 0,
            waiting_for_slots: false,
            finished: false,
            checkpointing,
            config,
            deployment_data: None,
            acknowledged: HashMap::new(),
            task_metrics: HashMap::new(),
            job_metrics,
        }
    }

    /// The job.
    pub fn job_id(&self) -> JobId {
        self.graph.job_id
    }

    /// This run's fencing token.
    pub fn job_master_id(&self) -> JobMasterId {
        self.job_master_id
    }

    fn service(ctx: &RpcContext<'_, Self>) -> Result<RpcService, RpcError> {
        ctx.service().ok_or(RpcError::ServiceShutdown)
    }

    fn publish_status(&self) {
        self.events.publish(ClusterEvent::JobStatusChanged {
            job_id: self.graph.job_id,
            status: self.graph.status(),
        });
    }

    // ---- the ResourceManager ----

    fn connect_to_resource_manager(&mut self, reason: &str, ctx: &mut RpcContext<'_, Self>) {
        if self.finished {
            return;
        }
        if let Some(abort) = self.rm_registration.take() {
            abort.abort();
        }
        self.rm = None;
        self.rm_heartbeat.unmonitor(());
        let Ok(service) = Self::service(ctx) else {
            return;
        };
        tracing::debug!(job_id = %self.graph.job_id, reason, "connecting to the resource manager");
        self.rm_generation += 1;
        let generation = self.rm_generation;
        let leader = self.settings.resource_manager.clone();
        let msg = resourcemanager::RegisterJobMaster {
            job_master_id: self.job_master_id,
            resource_id: self.resource_id,
            address: ctx.address().to_string(),
            job_id: self.graph.job_id,
        };
        let policy = self.settings.registration;
        let (abort, reg) = AbortHandle::new_pair();
        self.rm_registration = Some(abort);
        let fut = async move {
            register_with_retries(
                policy,
                "resource manager",
                |timeout| {
                    let (service, leader, msg) = (service.clone(), leader.clone(), msg.clone());
                    async move {
                        let rm_id = ResourceManagerId::from_u128(leader.token.as_u128());
                        let address: RpcAddress = leader.address.parse()?;
                        let gateway = service
                            .connect_fenced::<ResourceManager>(&address, rm_id)
                            .await?;
                        let response = gateway.ask_with_timeout(msg, timeout).await?;
                        Ok(response.map(|s| (gateway, s)))
                    }
                },
                |_| {},
            )
            .await
        };
        ctx.spawn_then(Abortable::new(fut, reg), move |result, jm, ctx| {
            let Ok((gateway, success)) = result else {
                return;
            };
            if jm.rm_generation != generation || jm.finished {
                return;
            }
            jm.rm_registration = None;
            jm.rm_heartbeat
                .monitor((), gateway.address().node(), Instant::now());
            jm.rm = Some(RmConnection {
                rm_id: success.rm_id,
                gateway,
            });
            tracing::info!(job_id = %jm.graph.job_id, "registered at the resource manager");
            jm.declare_required_resources(ctx);
        });
    }

    fn declare_required_resources(&mut self, ctx: &mut RpcContext<'_, Self>) {
        let Some(rm) = &self.rm else {
            return;
        };
        let gateway = rm.gateway.clone();
        let msg = resourcemanager::DeclareRequiredResources {
            job_master_id: self.job_master_id,
            job_id: self.graph.job_id,
            slots: if self.finished {
                0
            } else {
                self.slot_pool.required()
            },
        };
        let generation = self.rm_generation;
        ctx.spawn_then(async move { gateway.ask(msg).await }, move |result, jm, ctx| {
            if jm.rm_generation != generation {
                return;
            }
            if let Err(err) = result.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
                tracing::warn!(job_id = %jm.graph.job_id, error = %err, "declaring resources failed; retrying");
                ctx.schedule_run_async(Duration::from_millis(100), |jm, ctx| jm.declare_required_resources(ctx));
            }
        });
    }

    // ---- deployment ----

    /// Encodes each vertex's task information once; offloads those larger than
    /// `blob.offload.minsize` to the BlobServer. Deployment waits for this.
    fn prepare_deployment_data(&mut self, ctx: &mut RpcContext<'_, Self>) {
        let job_id = self.graph.job_id;
        let infos: Vec<(JobVertexId, TaskInformation)> = self
            .job_graph
            .vertices
            .iter()
            .map(|spec| {
                (
                    spec.id,
                    TaskInformation {
                        vertex_name: spec.name.clone(),
                        number_of_subtasks: spec.parallelism,
                        max_parallelism: spec.max_parallelism,
                        invokable: spec.invokable.clone(),
                        config: spec.config.clone(),
                    },
                )
            })
            .collect();
        let offload = self.settings.blob_offload.clone();
        let savepoint = self.job_graph.savepoint_path.clone();
        let fut = async move {
            let restore = match savepoint {
                Some(path) => Some(
                    tokio::task::spawn_blocking(move || {
                        crate::checkpoint::storage::load_metadata(std::path::Path::new(&path))
                            .map_err(|e| format!("cannot restore from savepoint {path}: {e}"))
                    })
                    .await
                    .map_err(|e| e.to_string())?,
                ),
                None => None,
            };
            let mut data = HashMap::new();
            for (vertex, info) in infos {
                let value = match &offload {
                    Some(offload) => offload_if_large(offload, job_id, info).await?,
                    None => MaybeOffloaded::Inline(info),
                };
                data.insert(vertex, value);
            }
            Ok::<_, String>((data, restore))
        };
        ctx.spawn_then(fut, |result, jm, ctx| {
            match result.and_then(|(data, restore)| {
                if let Some(loaded) = restore {
                    jm.restored_savepoint(loaded)?;
                }
                Ok(data)
            }) {
                Ok(data) => {
                    jm.deployment_data = Some(data);
                    jm.maybe_deploy(ctx);
                }
                Err(reason) => {
                    let error = ErrorInfo {
                        kind: "DeploymentFailure".into(),
                        message: format!(
                            "could not offload deployment data to the blob server: {reason}"
                        ),
                        task_name: None,
                        location: None,
                        timestamp: now_millis(),
                    };
                    if let Ok(actions) = jm.graph.fail_job(error) {
                        jm.apply(actions, ctx);
                    }
                }
            }
        });
    }

    /// Deploys every SCHEDULED attempt once each has a slot (eagerly, all together, so every
    /// channel knows where its producer runs); until then waits for slots.
    fn maybe_deploy(&mut self, ctx: &mut RpcContext<'_, Self>) {
        if self.finished || self.deployment_data.is_none() {
            return;
        }
        let scheduled: Vec<crate::types::ExecutionAttemptId> = self
            .graph
            .executions()
            .filter(|e| e.state == crate::executiongraph::ExecutionState::Scheduled)
            .map(|e| e.attempt)
            .collect();
        if scheduled.is_empty() {
            return;
        }
        let groups = self.slot_pool.assign_groups();
        if !scheduled
            .iter()
            .all(|a| groups.contains_key(&a.vertex.subtask_index))
        {
            self.wait_for_slots(ctx);
            return;
        }
        self.waiting_for_slots = false;
        self.deploy(&scheduled, groups, ctx);
    }

    /// Asks the ResourceManager for the missing slots and arms `slot.request.timeout`: slots
    /// that do not come in time fail the waiting attempts with `NoResourceAvailable` (the
    /// restart strategy then decides, as Flink's).
    fn wait_for_slots(&mut self, ctx: &mut RpcContext<'_, Self>) {
        if self.waiting_for_slots || self.finished {
            return;
        }
        self.waiting_for_slots = true;
        self.slot_wait_generation += 1;
        let generation = self.slot_wait_generation;
        self.declare_required_resources(ctx);
        let timeout = self.settings.slot_request_timeout;
        ctx.schedule_run_async(timeout, move |jm, ctx| {
            if jm.finished || !jm.waiting_for_slots || jm.slot_wait_generation != generation {
                return;
            }
            jm.waiting_for_slots = false;
            let waiting: Vec<crate::types::ExecutionAttemptId> = jm
                .graph
                .executions()
                .filter(|e| e.state == crate::executiongraph::ExecutionState::Scheduled)
                .map(|e| e.attempt)
                .collect();
            let message = format!(
                "could not acquire the {} slots the job needs within slot.request.timeout ({timeout:?}): {} arrived",
                jm.slot_pool.required(),
                jm.slot_pool.len()
            );
            for attempt in waiting {
                let error = ErrorInfo {
                    kind: "NoResourceAvailable".into(),
                    message: message.clone(),
                    task_name: Some(jm.graph.task_name(attempt)),
                    location: None,
                    timestamp: now_millis(),
                };
                match jm.graph.update_execution(
                    attempt,
                    crate::executiongraph::ExecutionState::Failed,
                    Some(error),
                ) {
                    Ok(actions) => jm.apply(actions, ctx),
                    Err(err) => tracing::debug!(%attempt, error = %err, "slot timeout of a settled attempt"),
                }
            }
        });
    }

    fn deploy(
        &mut self,
        scheduled: &[crate::types::ExecutionAttemptId],
        groups: std::collections::BTreeMap<u32, slot_pool::PooledSlot>,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        let job_information = JobInformation {
            job_name: self.graph.job_name.clone(),
            program: self.job_graph.program.clone(),
        };
        let data = self.deployment_data.clone().unwrap_or_default();
        // Where every subtask runs, for the data-plane descriptors of streaming jobs.
        let placements: Vec<Vec<Option<deployment::Placement>>> = self
            .graph
            .vertices
            .iter()
            .map(|vertex| {
                vertex
                    .executions
                    .iter()
                    .enumerate()
                    .map(|(k, exec)| {
                        let slot = groups.get(&(k as u32))?;
                        let tm = self.task_managers.get(&slot.resource_id)?;
                        Some(deployment::Placement {
                            attempt: exec.attempt,
                            resource_id: slot.resource_id,
                            data_address: tm.data_address.clone().unwrap_or_default(),
                        })
                    })
                    .collect()
            })
            .collect();
        let place = |v: usize, k: u32| {
            placements
                .get(v)
                .and_then(|p| p.get(k as usize))
                .and_then(Option::as_ref)
        };
        let streaming = self.job_graph.program.is_some();
        let mut submissions = Vec::new();
        for (v, vertex) in self.graph.vertices.iter().enumerate() {
            let Some(task_information) = data.get(&vertex.id) else {
                continue;
            };
            for (k, exec) in vertex.executions.iter().enumerate() {
                if !scheduled.contains(&exec.attempt) {
                    continue;
                }
                let shuffle = if streaming {
                    deployment::shuffle_descriptors(&self.job_graph, v, k as u32, &place)
                } else {
                    Ok((Vec::new(), Vec::new()))
                };
                submissions.push((v, k, exec.attempt, task_information.clone(), shuffle));
            }
        }
        for (_, k, attempt, task_information, shuffle) in submissions {
            let (produced_partitions, input_gates) = match shuffle {
                Ok(descriptors) => descriptors,
                Err(reason) => {
                    self.deployment_failed(attempt, reason, ctx);
                    continue;
                }
            };
            let Some(slot) = groups.get(&(k as u32)) else {
                self.deployment_failed(attempt, format!("no slot for subtask group {k}"), ctx);
                continue;
            };
            let Some(tm) = self.task_managers.get(&slot.resource_id) else {
                self.deployment_failed(
                    attempt,
                    format!("task manager {} is gone", slot.resource_id),
                    ctx,
                );
                continue;
            };
            let assignment = SlotAssignment {
                resource_id: slot.resource_id,
                allocation_id: slot.allocation_id,
                address: tm.gateway.address().to_string(),
            };
            if let Err(err) = self.graph.deploy(attempt, assignment) {
                tracing::warn!(%attempt, error = %err, "cannot deploy");
                continue;
            }
            self.events.publish(ClusterEvent::TaskStateChanged {
                attempt,
                state: crate::executiongraph::ExecutionState::Deploying,
            });
            let tdd = TaskDeploymentDescriptor {
                job_id: self.graph.job_id,
                attempt,
                allocation_id: slot.allocation_id,
                job_information: MaybeOffloaded::Inline(job_information.clone()),
                task_information,
                produced_partitions,
                input_gates,
                checkpointing: self.checkpointing.as_ref().map(|c| {
                    taskexecutor::TaskCheckpointConfig {
                        base_dir: c.base_dir.clone(),
                    }
                }),
                restore: self.restore_for(attempt),
            };
            let gateway = tm.gateway.clone();
            let msg = taskexecutor::SubmitTask {
                tdd,
                job_master_id: self.job_master_id,
            };
            ctx.spawn_then(
                async move { gateway.ask(msg).await },
                move |result, jm, ctx| {
                    let reason = match result {
                        Ok(Ok(Ack)) => {
                            // From now on its TaskExecutor must know it until it reports its end.
                            jm.acknowledged.insert(attempt, Instant::now());
                            return;
                        }
                        Ok(Err(err)) => err.to_string(),
                        Err(err) => err.to_string(),
                    };
                    jm.deployment_failed(
                        attempt,
                        format!("could not deploy the task: {reason}"),
                        ctx,
                    );
                },
            );
        }
    }

    fn deployment_failed(
        &mut self,
        attempt: crate::types::ExecutionAttemptId,
        message: String,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        let error = ErrorInfo {
            kind: "DeploymentFailure".into(),
            message,
            task_name: Some(self.graph.task_name(attempt)),
            location: None,
            timestamp: now_millis(),
        };
        match self.graph.update_execution(
            attempt,
            crate::executiongraph::ExecutionState::Failed,
            Some(error),
        ) {
            Ok(actions) => self.apply(actions, ctx),
            Err(err) => {
                tracing::debug!(%attempt, error = %err, "deployment failure of a settled attempt")
            }
        }
    }

    fn apply(&mut self, actions: Vec<GraphAction>, ctx: &mut RpcContext<'_, Self>) {
        for action in actions {
            match action {
                GraphAction::CancelTask { attempt, slot } => {
                    let Some(tm) = self.task_managers.get(&slot.resource_id) else {
                        continue;
                    };
                    let gateway = tm.gateway.clone();
                    ctx.spawn_then(
                        async move { gateway.ask(taskexecutor::CancelTask { attempt }).await },
                        move |result, _, _| match result {
                            Ok(Ok(_)) => {}
                            Ok(Err(err)) => {
                                tracing::warn!(%attempt, error = %err, "cancel task refused")
                            }
                            Err(err) => {
                                tracing::warn!(%attempt, error = %err, "cancel task failed")
                            }
                        },
                    );
                }
                GraphAction::JobTerminated(status) => self.job_finished(status, ctx),
                GraphAction::ScheduleRestart { delay, generation } => {
                    self.abort_pending_checkpoints("the job is restarting", ctx);
                    self.events.publish(ClusterEvent::JobStatusChanged {
                        job_id: self.graph.job_id,
                        status: self.graph.status(),
                    });
                    ctx.schedule_run_async(delay, move |jm, ctx| {
                        match jm.graph.restart_delay_elapsed(generation) {
                            Ok(actions) => jm.apply(actions, ctx),
                            Err(err) => tracing::warn!(error = %err, "restart refused"),
                        }
                    });
                }
                GraphAction::Redeploy { attempts } => {
                    tracing::info!(job_id = %self.graph.job_id, attempts = attempts.len(), restarts = self.graph.restarts, "redeploying after a restart");
                    for attempt in &attempts {
                        self.acknowledged.remove(attempt);
                    }
                    self.note_restore();
                    self.maybe_deploy(ctx);
                }
            }
        }
        self.publish_status();
    }

    fn job_finished(&mut self, status: JobStatus, ctx: &mut RpcContext<'_, Self>) {
        if self.finished {
            return;
        }
        self.abort_pending_checkpoints(&format!("the job is {status}"), ctx);
        self.finished = true;
        tracing::info!(job_id = %self.graph.job_id, %status, "job reached a terminal status");
        self.publish_status();
        for slot in self.slot_pool.release_all() {
            if let Some(tm) = self.task_managers.get(&slot.resource_id) {
                let gateway = tm.gateway.clone();
                let msg = taskexecutor::FreeSlot {
                    allocation_id: slot.allocation_id,
                    cause: format!("job {} is {status}", self.graph.job_id),
                };
                tokio::spawn(async move {
                    match gateway.ask(msg).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => tracing::debug!(error = %err, "free slot refused"),
                        Err(err) => tracing::warn!(error = %err, "free slot failed"),
                    }
                });
            }
        }
        if let Some(abort) = self.rm_registration.take() {
            abort.abort();
        }
        if let Some(rm) = self.rm.take() {
            let _ = rm.gateway.tell(resourcemanager::DisconnectJobManager {
                job_id: self.graph.job_id,
                status,
                cause: format!("the job is {status}"),
            });
        }
        self.rm_heartbeat.unmonitor(());
        if let Some(dispatcher) = &self.dispatcher {
            let _ = dispatcher.tell(JobReachedTerminalState {
                job_id: self.graph.job_id,
                details: self.details(),
                exceptions: views::exceptions(&self.graph),
                result: views::result(&self.graph),
                checkpoints: self.checkpointing.as_ref().map(|c| c.coordinator.stats()),
            });
        }
    }

    fn task_manager_lost(
        &mut self,
        resource_id: ResourceId,
        cause: &str,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        self.tm_heartbeats.unmonitor(resource_id);
        if self.task_managers.remove(&resource_id).is_none() {
            return;
        }
        tracing::info!(job_id = %self.graph.job_id, %resource_id, cause, "task manager lost");
        self.events
            .publish(ClusterEvent::TaskManagerLostByJobMaster {
                job_id: self.graph.job_id,
                resource_id,
            });
        let released = self.slot_pool.release_task_manager(resource_id);
        match self.graph.task_manager_lost(resource_id, cause) {
            Ok(actions) => self.apply(actions, ctx),
            Err(err) => tracing::warn!(error = %err, "could not apply the task manager loss"),
        }
        // Ask for replacement slots at once: a restart will need them.
        if !released.is_empty() && !self.finished {
            self.declare_required_resources(ctx);
        }
    }

    /// Sets the job's gauges from the graph and the checkpoint statistics.
    fn publish_metrics(&mut self) {
        let status = self.graph.status();
        let restarts = self.graph.restarts;
        let stats = self.checkpointing.as_ref().map(|c| c.coordinator.stats());
        let Some(m) = self.job_metrics.as_mut() else {
            return;
        };
        m.num_restarts.set(f64::from(restarts));
        let now = crate::executiongraph::now_millis();
        // Flink's `uptime`: millis since the job last went RUNNING; 0 when it is not running.
        let running_since = (status == JobStatus::Running)
            .then(|| {
                self.graph
                    .status_timestamps
                    .get(&JobStatus::Running)
                    .copied()
            })
            .flatten();
        m.uptime
            .set(running_since.map_or(0.0, |since| (now - since).max(0) as f64));
        if let Some(stats) = stats {
            m.completed.set(stats.counts.completed as f64);
            m.failed.set(stats.counts.failed as f64);
            m.in_progress.set(stats.counts.in_progress as f64);
            m.total.set(stats.counts.total as f64);
            if let Some(crate::checkpoint::CheckpointStatistics::Completed { base, .. }) =
                &stats.latest.completed
            {
                m.last_duration.set(base.end_to_end_duration as f64);
                m.last_size.set(base.checkpointed_size as f64);
            }
            if let Some(restored) = &stats.latest.restored {
                m.last_restore.set(restored.restore_timestamp as f64);
            }
        }
    }

    fn heartbeat_tick(&mut self, ctx: &mut RpcContext<'_, Self>) {
        self.publish_metrics();
        let now = Instant::now();
        for (resource_id, loss) in self.tm_heartbeats.expired(now) {
            self.task_manager_lost(resource_id, &loss.to_string(), ctx);
        }
        for ((), loss) in self.rm_heartbeat.expired(now) {
            self.connect_to_resource_manager(&loss.to_string(), ctx);
        }
        let tms: Vec<ResourceId> = self.task_managers.keys().copied().collect();
        for resource_id in tms {
            self.request_tm_heartbeat(resource_id, ctx);
        }
    }

    /// The job's details for REST: the graph, the latest task metrics, the job's configuration.
    fn details(&self) -> crate::dispatcher::JobDetails {
        let mut details = views::details_with_metrics(&self.graph, &self.task_metrics);
        details.job_config = self.job_graph.job_config.clone();
        details.checkpoint_config = self
            .checkpointing
            .as_ref()
            .map(|c| c.coordinator.config_view());
        details
    }

    /// Keeps the metrics a heartbeat brought for the job's current attempts (and forgets
    /// those of attempts a restart replaced).
    fn record_task_metrics(&mut self, reports: Vec<taskexecutor::TaskMetricsReport>) {
        for report in reports {
            if self.graph.execution(report.attempt).is_some() {
                self.task_metrics.insert(report.attempt, report.metrics);
            }
        }
        let graph = &self.graph;
        self.task_metrics
            .retain(|a, _| graph.execution(*a).is_some());
    }

    fn request_tm_heartbeat(&mut self, resource_id: ResourceId, ctx: &mut RpcContext<'_, Self>) {
        let Some(tm) = self.task_managers.get(&resource_id) else {
            return;
        };
        let (gateway, session) = (tm.gateway.clone(), tm.session_id);
        let msg = taskexecutor::HeartbeatFromJobManager {
            jm_resource_id: self.resource_id,
            job_id: self.graph.job_id,
        };
        let timeout = self.settings.heartbeat.interval;
        let sent = Instant::now();
        ctx.spawn_then(
            async move { gateway.ask_with_timeout(msg, timeout).await },
            move |result, jm, ctx| {
                if jm.task_managers.get(&resource_id).map(|t| t.session_id) != Some(session) {
                    return;
                }
                let reason = result
                    .as_ref()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                match jm
                    .tm_heartbeats
                    .rpc_result(resource_id, &result, Instant::now())
                {
                    Verdict::Alive => {
                        if let Ok(payload) = result {
                            jm.record_task_metrics(payload.metrics);
                            jm.reconcile(resource_id, &payload.attempts, sent, ctx);
                        }
                    }
                    Verdict::Lost(loss) => {
                        jm.task_manager_lost(resource_id, &format!("{loss} ({reason})"), ctx)
                    }
                    Verdict::ProbeAgain => {
                        let delay = jm.settings.heartbeat.probe_interval;
                        ctx.schedule_run_async(delay, move |jm, ctx| {
                            jm.request_tm_heartbeat(resource_id, ctx)
                        });
                    }
                    Verdict::Wait => {
                        tracing::debug!(%resource_id, reason, "task manager heartbeat failed")
                    }
                }
            },
        );
    }

    /// Flink's deployment reconciliation: an attempt this JobMaster deployed to `resource_id`
    /// (acknowledged there) that the TaskExecutor no longer knows has ended without its final
    /// state arriving; it is failed (or, if it was being cancelled, counted as cancelled).
    ///
    /// Only attempts acknowledged before the heartbeat request was sent count: the TaskExecutor
    /// handles messages in order, so it had those when it answered.
    fn reconcile(
        &mut self,
        resource_id: ResourceId,
        known: &[crate::types::ExecutionAttemptId],
        sent: Instant,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        use crate::executiongraph::ExecutionState;
        let lost: Vec<(crate::types::ExecutionAttemptId, ExecutionState)> = self
            .graph
            .executions()
            .filter(|e| !e.state.is_terminal())
            .filter(|e| {
                e.slot
                    .as_ref()
                    .is_some_and(|s| s.resource_id == resource_id)
            })
            .filter(|e| {
                self.acknowledged
                    .get(&e.attempt)
                    .is_some_and(|at| *at < sent)
            })
            .filter(|e| !known.contains(&e.attempt))
            .map(|e| (e.attempt, e.state))
            .collect();
        for (attempt, state) in lost {
            tracing::warn!(%attempt, %resource_id, "the task manager no longer knows a deployed task");
            let (to, error) = if state == ExecutionState::Canceling {
                (ExecutionState::Canceled, None)
            } else {
                (
                    ExecutionState::Failed,
                    Some(ErrorInfo {
                        kind: "TaskLost".into(),
                        message: format!("task manager {resource_id} no longer runs the task"),
                        task_name: Some(self.graph.task_name(attempt)),
                        location: None,
                        timestamp: now_millis(),
                    }),
                )
            };
            match self.graph.update_execution(attempt, to, error) {
                Ok(actions) => self.apply(actions, ctx),
                Err(err) => tracing::warn!(%attempt, error = %err, "reconciliation refused"),
            }
        }
    }

    /// A peer's connection died: probe every TaskExecutor of this job reached through it now.
    fn on_connection_lost(&mut self, node: &str, _reason: &str, ctx: &mut RpcContext<'_, Self>) {
        for resource_id in self.tm_heartbeats.start_probing(node) {
            self.request_tm_heartbeat(resource_id, ctx);
        }
    }
}

/// The value inline, or, when its encoding exceeds the offload size, a blob of the job.
async fn offload_if_large(
    offload: &BlobOffload,
    job_id: JobId,
    info: TaskInformation,
) -> Result<MaybeOffloaded<TaskInformation>, String> {
    let bytes =
        rmp_serde::to_vec(&info).map_err(|e| format!("cannot encode task information: {e}"))?;
    if (bytes.len() as u64) <= offload.min_size {
        return Ok(MaybeOffloaded::Inline(info));
    }
    let client = BlobClient::new(crate::blob::BlobClientConfig {
        security: offload.security.clone(),
        ..crate::blob::BlobClientConfig::default()
    });
    let key: BlobKey = client
        .put(offload.server.as_str(), job_id, bytes)
        .await
        .map_err(|e| e.to_string())?;
    tracing::debug!(%job_id, %key, "task information offloaded to the blob server");
    Ok(MaybeOffloaded::Offloaded {
        blob_key: key.to_string(),
    })
}

impl RpcEndpoint for JobMaster {
    type Token = JobMasterId;
    const GATEWAY: &'static str = "JobMasterGateway";
    const NAME_PREFIX: &'static str = "jobmanager";

    fn fencing_token(&self) -> JobMasterId {
        self.job_master_id
    }

    fn on_start(
        &mut self,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Result<(), rflink_rpc::LifecycleError> {
        let service = Self::service(ctx)?;
        tracing::info!(job_id = %self.graph.job_id, job_master_id = %self.job_master_id, address = %ctx.address(),
            restart_strategy = self.graph.restart_strategy().flink_name(),
            checkpoint_interval = ?self.config.checkpointing.interval,
            "starting execution of job");
        self.publish_status();
        self.graph.start_scheduling()?;
        self.publish_status();
        let needed = self
            .job_graph
            .vertices
            .iter()
            .map(|v| v.parallelism)
            .max()
            .unwrap_or(0);
        self.slot_pool.set_required(needed);
        self.prepare_deployment_data(ctx);
        watch_peers(service.peer_events(), ctx, Self::on_connection_lost);
        self.connect_to_resource_manager("start", ctx);
        ctx.run_interval(self.settings.heartbeat.interval, |jm, ctx| {
            jm.heartbeat_tick(ctx)
        });
        if let Some(cp) = &self.checkpointing {
            ctx.run_interval(cp.tick(), |jm, ctx| jm.checkpoint_tick(ctx));
        }
        self.wait_for_slots(ctx);
        Ok(())
    }

    fn on_stop(&mut self, ctx: &mut RpcContext<'_, Self>) -> rflink_rpc::StopFuture {
        if !self.finished {
            // Suspended: this JobMaster stops without the job being over.
            let _ = self.graph.transition(JobStatus::Suspended);
            self.job_finished(JobStatus::Suspended, ctx);
        }
        for tm in self.task_managers.values() {
            let _ = tm.gateway.tell(taskexecutor::DisconnectJobManager {
                job_id: self.graph.job_id,
                cause: "the job master stopped".into(),
            });
        }
        Box::pin(async { Ok(()) })
    }
}

impl Handler<RegisterTaskManager> for JobMaster {
    fn handle(
        &mut self,
        msg: RegisterTaskManager,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, RegistrationResponse<JmTmRegistrationSuccess>> {
        if msg.job_id != self.graph.job_id {
            return Response::ready(RegistrationResponse::Rejection(format!(
                "this job master runs job {}, not {}",
                self.graph.job_id, msg.job_id
            )));
        }
        let success = JmTmRegistrationSuccess {
            jm_resource_id: self.resource_id,
        };
        match self.task_managers.get(&msg.resource_id) {
            Some(tm) if tm.session_id == msg.session_id => {
                return Response::ready(RegistrationResponse::Success(success))
            }
            Some(_) => self.task_manager_lost(msg.resource_id, "the task manager restarted", ctx),
            None => {}
        }
        let address = match msg.address.parse::<RpcAddress>() {
            Ok(address) => address,
            Err(err) => {
                return Response::ready(RegistrationResponse::Rejection(format!(
                    "invalid address: {err}"
                )))
            }
        };
        let service = match Self::service(ctx) {
            Ok(service) => service,
            Err(err) => return Response::ready(RegistrationResponse::Failure(err.to_string())),
        };
        Response::then(
            async move { service.connect::<TaskExecutor>(&address).await },
            move |connected, jm: &mut JobMaster, _ctx: &mut RpcContext<'_, JobMaster>| {
                match connected {
                    Ok(gateway) => {
                        jm.tm_heartbeats.monitor(
                            msg.resource_id,
                            gateway.address().node(),
                            Instant::now(),
                        );
                        jm.task_managers.insert(
                            msg.resource_id,
                            TmConnection {
                                gateway,
                                session_id: msg.session_id,
                                data_address: msg.data_address.clone(),
                            },
                        );
                        RegistrationResponse::Success(success)
                    }
                    Err(err) => RegistrationResponse::Failure(format!(
                        "cannot connect back to the task manager: {err}"
                    )),
                }
            },
        )
    }
}

impl Handler<OfferSlots> for JobMaster {
    fn handle(
        &mut self,
        msg: OfferSlots,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Vec<SlotOffer>, JobMasterError>> {
        if !self.task_managers.contains_key(&msg.resource_id) {
            return Response::ready(Err(JobMasterError::UnknownTaskManager(msg.resource_id)));
        }
        let accepted = if self.finished {
            // Idempotent for slots already held; nothing new once the job is over.
            self.slot_pool
                .slots()
                .filter(|s| s.resource_id == msg.resource_id)
                .filter_map(|s| {
                    msg.offers
                        .iter()
                        .find(|o| o.allocation_id == s.allocation_id)
                        .copied()
                })
                .collect()
        } else {
            self.slot_pool.offer(msg.resource_id, &msg.offers)
        };
        tracing::debug!(job_id = %self.graph.job_id, offered = msg.offers.len(), accepted = accepted.len(), "slots offered");
        self.maybe_deploy(ctx);
        Response::ready(Ok(accepted))
    }
}

impl Handler<UpdateTaskExecutionState> for JobMaster {
    fn handle(
        &mut self,
        msg: UpdateTaskExecutionState,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Ack, JobMasterError>> {
        if !msg.metrics.is_empty() && self.graph.execution(msg.attempt).is_some() {
            self.task_metrics.insert(msg.attempt, msg.metrics);
        }
        match self
            .graph
            .update_execution(msg.attempt, msg.state, msg.error)
        {
            Ok(actions) => {
                self.events.publish(ClusterEvent::TaskStateChanged {
                    attempt: msg.attempt,
                    state: msg.state,
                });
                self.apply(actions, ctx);
                Response::ready(Ok(Ack))
            }
            Err(err) => {
                tracing::warn!(attempt = %msg.attempt, state = %msg.state, error = %err, "task state update refused");
                Response::ready(Err(err.into()))
            }
        }
    }
}

impl Handler<HeartbeatFromResourceManager> for JobMaster {
    fn handle(
        &mut self,
        _: HeartbeatFromResourceManager,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ()> {
        self.rm_heartbeat.heard_from((), Instant::now());
        Response::ready(())
    }
}

impl Handler<DisconnectTaskManager> for JobMaster {
    fn handle(
        &mut self,
        msg: DisconnectTaskManager,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ()> {
        self.task_manager_lost(msg.resource_id, &msg.cause, ctx);
        Response::ready(())
    }
}

impl Handler<DisconnectResourceManager> for JobMaster {
    fn handle(
        &mut self,
        msg: DisconnectResourceManager,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ()> {
        if self.rm.as_ref().map(|rm| rm.rm_id) == Some(msg.rm_id) {
            self.connect_to_resource_manager(&msg.cause, ctx);
        }
        Response::ready(())
    }
}

impl Handler<CancelJob> for JobMaster {
    fn handle(
        &mut self,
        _: CancelJob,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Ack, JobMasterError>> {
        match self.graph.cancel() {
            Ok(actions) => {
                self.apply(actions, ctx);
                Response::ready(Ok(Ack))
            }
            Err(err) => Response::ready(Err(err.into())),
        }
    }
}

impl Handler<RequestJobStatus> for JobMaster {
    fn handle(
        &mut self,
        _: RequestJobStatus,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, JobStatus> {
        Response::ready(self.graph.status())
    }
}

impl Handler<RequestJobDetails> for JobMaster {
    fn handle(
        &mut self,
        _: RequestJobDetails,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, JobDetails> {
        Response::ready(self.details())
    }
}

impl Handler<RequestJobExceptions> for JobMaster {
    fn handle(
        &mut self,
        _: RequestJobExceptions,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, JobExceptions> {
        Response::ready(views::exceptions(&self.graph))
    }
}

impl Handler<AcknowledgeCheckpoint> for JobMaster {
    fn handle(
        &mut self,
        msg: AcknowledgeCheckpoint,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ()> {
        if msg.job_id == self.graph.job_id {
            self.acknowledge(msg, ctx);
        }
        Response::ready(())
    }
}

impl Handler<DeclineCheckpoint> for JobMaster {
    fn handle(
        &mut self,
        msg: DeclineCheckpoint,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ()> {
        if msg.job_id == self.graph.job_id {
            self.decline(
                msg.checkpoint_id,
                msg.attempt,
                msg.reason,
                msg.subsumed_by,
                ctx,
            );
        }
        Response::ready(())
    }
}

impl Handler<RequestCheckpointStats> for JobMaster {
    fn handle(
        &mut self,
        _: RequestCheckpointStats,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Option<crate::checkpoint::stats::CheckpointStatsView>> {
        Response::ready(self.checkpointing.as_ref().map(|c| c.coordinator.stats()))
    }
}

impl Handler<TriggerSavepoint> for JobMaster {
    fn handle(
        &mut self,
        msg: TriggerSavepoint,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<u64, JobMasterError>> {
        Response::ready(
            self.trigger_savepoint(msg.target_directory, msg.terminate, ctx)
                .map_err(JobMasterError::Checkpoint),
        )
    }
}

impl Handler<RequestSavepointStatus> for JobMaster {
    fn handle(
        &mut self,
        msg: RequestSavepointStatus,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Option<SavepointStatus>> {
        Response::ready(
            self.checkpointing
                .as_ref()
                .and_then(|c| c.savepoints.get(&msg.id).cloned()),
        )
    }
}

rpc_protocol!(JobMaster {
    RegisterTaskManager,
    OfferSlots,
    UpdateTaskExecutionState,
    HeartbeatFromResourceManager,
    DisconnectTaskManager,
    DisconnectResourceManager,
    CancelJob,
    RequestJobStatus,
    RequestJobDetails,
    RequestJobExceptions,
    AcknowledgeCheckpoint,
    DeclineCheckpoint,
    RequestCheckpointStats,
    TriggerSavepoint,
    RequestSavepointStatus,
});
