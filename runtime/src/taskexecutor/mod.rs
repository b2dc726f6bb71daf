//! The TaskExecutor: offers its slots and runs tasks. Flink: `TaskExecutor`.
//!
//! Unfenced: messages that need a guard carry the caller's id (`RequestSlot` its
//! `ResourceManagerId`, `SubmitTask` its `JobMasterId`), checked here. State lives on its mailbox;
//! tasks run on their own threads ([`task`]) and report back through a
//! [`MainThreadHandle`](rflink_rpc::MainThreadHandle).
//!
//! # Start-up
//!
//! `on_start` asks the JobManager's `leaders` endpoint for the ResourceManager and registers there
//! with retries ([`crate::registration`]), sends its slot report, and arms the registration
//! timeout: not registered within `taskmanager.registration.timeout` → fatal error.
//!
//! # Flows
//!
//! - `RequestSlot` (from the connected ResourceManager only) → the slot is allocated, with a slot
//!   timeout → the TaskExecutor registers at the job's JobMaster (if not yet) → `OfferSlots` →
//!   accepted slots become active, rejected ones are freed and reported to the ResourceManager.
//! - `SubmitTask` → the JobMasterId must be the connected one and the allocation a slot of the job
//!   (allowed before the offer's answer arrives) → the invokable starts on its own thread and
//!   reports INITIALIZING, RUNNING, then FINISHED / FAILED / CANCELED, forwarded to the JobMaster.
//! - Heartbeats: it answers the ResourceManager's and JobMasters' requests and watches for
//!   silence: a silent ResourceManager → register again; a silent JobMaster → its tasks fail, its
//!   slots go inactive (the slot timeout frees them).

pub mod gateway;
pub mod invokable;
pub mod slot_table;
mod task;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{AbortHandle, Abortable};
use rflink_rpc::{
    rpc_protocol, AbstractId, Handler, Response, RpcAddress, RpcContext, RpcEndpoint, RpcError,
    RpcGateway, RpcService, Unfenced,
};

pub use gateway::*;
use invokable::{CancelSignal, Invokable, InvokableRegistry};

use crate::jobgraph::JobLibraryRef;
use crate::jobgraph::{STREAM_TASK_INVOKABLE, STREAM_VERTEX_KEY};
use crate::library::JobLibrary;
use crate::metrics::{MetricGroup, MetricRegistry};
use crate::network::{ChannelLocation, InputChannelSpec, ResultPartitionId, ShuffleEnvironment};
use crate::tasks::{Jobs, StreamTask};
use futures::FutureExt as _;
use slot_table::{TaskSlotState, TaskSlotTable};

use crate::blob::{BlobCache, BlobCacheConfig, BlobKey};
use crate::dispatcher::HardwareDescription;
use crate::events::{ClusterEvent, EventSink};
use crate::executiongraph::{now_millis, ErrorInfo, ExecutionState};
use crate::heartbeat::{HeartbeatMonitor, HeartbeatSettings};
use crate::highavailability::ClusterLeader;
use crate::jobmaster::{self, JobMaster, SlotOffer};
use crate::leaderretrieval::{GetLeaders, LeaderRetrieval, LEADERS_ENDPOINT};
use crate::registration::{register_with_retries, RegistrationResponse, RetryPolicy};
use crate::resourcemanager::{
    self, ResourceManager, TaskExecutorRegistration, TaskExecutorRegistrationSuccess,
};
use crate::types::{
    Ack, AllocationId, ExecutionAttemptId, InstanceId, JobId, JobMasterId, ResourceId,
    ResourceManagerId,
};

/// Called when the TaskExecutor cannot go on (Flink's `FatalErrorHandler`): the process
/// entrypoint exits, a MiniCluster records it.
pub type FatalErrorHandler = Arc<dyn Fn(String) + Send + Sync>;

/// Settings of a TaskExecutor.
#[derive(Clone)]
pub struct TaskExecutorSettings {
    /// The JobManager's RPC `host:port`, where the `leaders` endpoint is.
    pub jobmanager_address: String,
    /// `taskmanager.numberOfTaskSlots`.
    pub number_of_slots: u32,
    /// Heartbeat settings (it watches its ResourceManager and JobMasters).
    pub heartbeat: HeartbeatSettings,
    /// `cluster.registration.*`.
    pub registration: RetryPolicy,
    /// `taskmanager.registration.timeout`.
    pub registration_timeout: Duration,
    /// `taskmanager.slot.timeout`: an allocated slot not accepted in time is freed.
    pub slot_timeout: Duration,
    /// Its data plane (shuffle server, buffers, partitions); `None` runs only tasks that
    /// exchange no records (the testing invokables), and reports data port -1.
    pub shuffle: Option<ShuffleEnvironment>,
    /// The streaming jobs it can run (their build functions).
    pub jobs: Jobs,
    /// The invokables it can run.
    pub invokables: InvokableRegistry,
    /// What to do on a fatal error.
    pub fatal_error: FatalErrorHandler,
    /// Where its BlobCache keeps files (one directory per TaskExecutor).
    pub blob_cache_dir: std::path::PathBuf,
    /// `blob.service.cleanup.interval`: how long a released job's blobs are kept.
    pub blob_cleanup_interval: Duration,
    /// How its BlobCache's connections to the BlobServer are secured (the same settings as
    /// the RPC and data connections).
    pub blob_security: rflink_rpc::security::TransportSecurity,
    /// The process's metrics; the TaskExecutor registers its own and its tasks' there.
    pub metrics: MetricRegistry,
    /// Where its Prometheus endpoint is reached (`host:port`), if it has one; told to the
    /// ResourceManager, shown by `/taskmanagers`.
    pub metrics_address: Option<String>,
    /// With high availability: the published cluster leader, followed instead of asking the
    /// `leaders` endpoint at `jobmanager_address` (a standby JobManager may take over anywhere).
    pub leader_watch: Option<tokio::sync::watch::Receiver<Option<ClusterLeader>>>,
}

impl std::fmt::Debug for TaskExecutorSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskExecutorSettings")
            .field("jobmanager_address", &self.jobmanager_address)
            .field("number_of_slots", &self.number_of_slots)
            .finish_non_exhaustive()
    }
}

struct RmConnection {
    rm_id: ResourceManagerId,
    gateway: RpcGateway<ResourceManager>,
    instance_id: InstanceId,
}

struct JobConnection {
    job_master_id: JobMasterId,
    target_address: String,
    gateway: Option<RpcGateway<JobMaster>>,
    registration: Option<AbortHandle>,
    offer_generation: u64,
}

struct RunningTask {
    job_id: JobId,
    allocation_id: AllocationId,
    cancel: Arc<CancelSignal>,
    /// A streaming task's metrics (its group and its channels'); dropped with the task.
    metrics: Option<(MetricGroup, Vec<MetricGroup>)>,
    /// Where checkpoint messages for a checkpointing streaming task go.
    mailbox: Option<crate::tasks::checkpointing::TaskMailbox>,
}

/// The TaskExecutor endpoint.
pub struct TaskExecutor {
    resource_id: ResourceId,
    session_id: AbstractId,
    settings: TaskExecutorSettings,
    events: EventSink,
    rm: Option<RmConnection>,
    rm_registration: Option<AbortHandle>,
    rm_generation: u64,
    rm_heartbeat: HeartbeatMonitor<()>,
    registered_once: bool,
    slot_table: TaskSlotTable,
    jobs: HashMap<JobId, JobConnection>,
    tasks: HashMap<ExecutionAttemptId, RunningTask>,
    jm_heartbeats: HeartbeatMonitor<JobId>,
    blob_cache: Option<BlobCache>,
    /// Jobs holding a lease on the BlobCache: exactly those with a slot here.
    blob_leases: std::collections::HashSet<JobId>,
    /// The loaded library of each job that runs one here (the process keeps every library
    /// loaded; this is the job's handle on it, dropped with the job).
    job_libraries: HashMap<JobId, Arc<JobLibrary>>,
    /// Library fetches in flight, by job: the tasks of a job that arrive together share one
    /// download and one load.
    library_fetches: HashMap<JobId, LibraryFetch>,
    /// Ended tasks whose final state the JobMaster has not acknowledged yet, by attempt: still
    /// reported in heartbeats so the JobMaster does not take them for lost.
    unreported: HashMap<ExecutionAttemptId, JobId>,
    /// The final metrics of those ended streaming tasks, sent with their final state.
    final_metrics: HashMap<ExecutionAttemptId, Vec<(String, f64)>>,
    /// Submissions waiting for offloaded data; `true` once cancelled meanwhile.
    pending_submissions: HashMap<ExecutionAttemptId, bool>,
    /// Read once at construction, off the mailbox.
    hardware: HardwareDescription,
    /// The TaskManager's metric group (scope `taskmanager`), parent of its tasks' groups.
    metric_group: MetricGroup,
    /// Result partitions registered for each job's tasks: released with the job, so that a
    /// partition whose consumer never came (a failed or cancelled job) does not keep its buffers.
    /// Flink: `TaskExecutorPartitionTracker`.
    partitions: HashMap<JobId, Vec<ResultPartitionId>>,
    /// Per attempt with a state report in flight, the reports queued behind it: the JobMaster
    /// must see INITIALIZING, RUNNING and the final state in this order, so a report is sent
    /// only once the previous one of its attempt was answered (concurrent asks may be reordered
    /// on their way; a NoOp task reports all three within microseconds).
    report_queues: HashMap<
        ExecutionAttemptId,
        std::collections::VecDeque<(ExecutionState, Option<ErrorInfo>)>,
    >,
}

impl TaskExecutor {
    /// A TaskExecutor with a fresh resource id.
    pub fn new(settings: TaskExecutorSettings, events: EventSink) -> Self {
        let resource_id = ResourceId::generate();
        let metric_group = taskmanager_metrics(&settings, resource_id);
        TaskExecutor {
            metric_group,
            resource_id,
            session_id: AbstractId::generate(),
            slot_table: TaskSlotTable::new(resource_id, settings.number_of_slots),
            rm_heartbeat: HeartbeatMonitor::new(settings.heartbeat),
            jm_heartbeats: HeartbeatMonitor::new(settings.heartbeat),
            settings,
            events,
            rm: None,
            rm_registration: None,
            rm_generation: 0,
            registered_once: false,
            jobs: HashMap::new(),
            tasks: HashMap::new(),
            blob_cache: None,
            blob_leases: std::collections::HashSet::new(),
            job_libraries: HashMap::new(),
            library_fetches: HashMap::new(),
            unreported: HashMap::new(),
            final_metrics: HashMap::new(),
            pending_submissions: HashMap::new(),
            hardware: hardware_description(),
            partitions: HashMap::new(),
            report_queues: HashMap::new(),
        }
    }

    /// Its resource id.
    pub fn resource_id(&self) -> ResourceId {
        self.resource_id
    }

    /// Registers a streaming task's metrics (scope `taskmanager_job_task`, Flink's variables)
    /// and returns its group, its channels' groups and the counter its thread adds input
    /// records to.
    fn task_metrics(
        &self,
        tdd: &TaskDeploymentDescriptor,
        info: &TaskInformation,
        io: &StreamIo,
    ) -> (MetricGroup, Vec<MetricGroup>, crate::metrics::task::TaskIo) {
        let job_name = match &tdd.job_information {
            MaybeOffloaded::Inline(j) => j.job_name.clone(),
            MaybeOffloaded::Offloaded { .. } => String::new(),
        };
        let subtask = tdd.attempt.vertex.subtask_index;
        let group = self.metric_group.child(
            "job_task",
            &[
                ("job_id", tdd.job_id.to_string()),
                ("job_name", job_name),
                ("task_id", tdd.attempt.vertex.job_vertex_id.to_string()),
                ("task_attempt_id", tdd.attempt.to_string()),
                (
                    "task_name",
                    format!(
                        "{} ({}/{})",
                        info.vertex_name,
                        subtask.saturating_add(1),
                        info.number_of_subtasks
                    ),
                ),
                ("subtask_index", subtask.to_string()),
                ("task_attempt_num", tdd.attempt.attempt_number.to_string()),
            ],
        );
        let outputs = io.partitions.iter().map(|p| p.stats_handle()).collect();
        let input = io.gate.as_ref().map(|(g, _)| g.stats_handle());
        let task_io = crate::metrics::task::register_task_io(&group, outputs, input.clone());
        let channels = input
            .map(|i| crate::metrics::task::register_channels(&group, &i))
            .unwrap_or_default();
        (group, channels, task_io)
    }

    fn service(ctx: &RpcContext<'_, Self>) -> Result<RpcService, RpcError> {
        ctx.service().ok_or(RpcError::ServiceShutdown)
    }

    // ---- the ResourceManager connection ----

    fn connect_to_resource_manager(&mut self, reason: &str, ctx: &mut RpcContext<'_, Self>) {
        if let Some(abort) = self.rm_registration.take() {
            abort.abort();
        }
        if let Some(old) = self.rm.take() {
            tracing::info!(resource_id = %self.resource_id, reason, rm_id = %old.rm_id, "reconnecting to the resource manager");
        }
        self.rm_heartbeat.unmonitor(());
        let service = match Self::service(ctx) {
            Ok(service) => service,
            Err(_) => return,
        };
        self.rm_generation += 1;
        let generation = self.rm_generation;
        let registration = TaskExecutorRegistration {
            address: ctx.address().to_string(),
            resource_id: self.resource_id,
            data_port: self
                .settings
                .shuffle
                .as_ref()
                .map_or(-1, |s| i32::from(s.data_port())),
            number_of_slots: self.settings.number_of_slots,
            hardware: self.hardware.clone(),
            metrics_address: self.settings.metrics_address.clone(),
        };
        let jm = self.settings.jobmanager_address.clone();
        let leader_watch = self.settings.leader_watch.clone();
        let policy = self.settings.registration;
        let (abort, reg) = AbortHandle::new_pair();
        self.rm_registration = Some(abort);
        let fut = async move {
            register_with_retries(
                policy,
                "resource manager",
                |timeout| {
                    attempt_rm_registration(
                        service.clone(),
                        jm.clone(),
                        leader_watch.clone(),
                        registration.clone(),
                        timeout,
                    )
                },
                |_| {},
            )
            .await
        };
        ctx.spawn_then(Abortable::new(fut, reg), move |result, te, ctx| {
            if let Ok((gateway, rm_id, success)) = result {
                if te.rm_generation == generation {
                    te.establish_rm_connection(gateway, rm_id, success, ctx);
                }
            }
        });
    }

    /// Follows the published cluster leader (high availability): a ResourceManager leader other
    /// than the connected one means a new leadership, so the TaskExecutor registers there at
    /// once instead of waiting for heartbeats to time out on the old one.
    fn follow_leader(
        &mut self,
        mut watch: tokio::sync::watch::Receiver<Option<ClusterLeader>>,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        let changed = async move {
            let alive = watch.changed().await.is_ok();
            (alive, watch)
        };
        ctx.spawn_then(changed, |(alive, mut watch), te, ctx| {
            if !alive {
                return; // The HA services are gone: the process is stopping.
            }
            let leader = watch.borrow_and_update().clone();
            let new_rm = leader
                .as_ref()
                .and_then(|l| l.leaders.resource_manager.as_ref())
                .map(|rm| ResourceManagerId::from_u128(rm.token.as_u128()));
            match new_rm {
                Some(rm_id) if te.rm.as_ref().map(|c| c.rm_id) != Some(rm_id) => {
                    tracing::info!(resource_id = %te.resource_id, %rm_id, "a new resource manager leader was published");
                    if let Some(leader) = &leader {
                        te.drop_deposed_job_masters(&leader.rpc_address, ctx);
                    }
                    te.connect_to_resource_manager("a new resource manager leader", ctx);
                }
                Some(_) => {}
                None => {
                    tracing::info!(resource_id = %te.resource_id, "no cluster leader published now");
                }
            }
            te.follow_leader(watch, ctx);
        });
    }

    /// A new cluster leadership deposes every JobMaster of the old one: they all ran in the old
    /// leader's process, so a JobMaster on another node than `leader_node` is gone or fenced off
    /// by now. Its tasks fail and its slots are freed before registering at the new leader,
    /// whose JobMasters take the job over; waiting for the heartbeat timeout instead would hold
    /// the slots (and the job's recovery) for seconds.
    fn drop_deposed_job_masters(&mut self, leader_node: &str, ctx: &mut RpcContext<'_, Self>) {
        let deposed: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, conn)| {
                conn.target_address
                    .parse::<RpcAddress>()
                    .is_ok_and(|a| a.node() != leader_node)
            })
            .map(|(job_id, _)| *job_id)
            .collect();
        for job_id in deposed {
            self.job_master_lost(job_id, "its leader was deposed: a new cluster leader", ctx);
        }
    }

    fn establish_rm_connection(
        &mut self,
        gateway: RpcGateway<ResourceManager>,
        rm_id: ResourceManagerId,
        success: TaskExecutorRegistrationSuccess,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        self.rm_registration = None;
        self.registered_once = true;
        tracing::info!(resource_id = %self.resource_id, %rm_id, "registered at the resource manager");
        let report = resourcemanager::SendSlotReport {
            resource_id: self.resource_id,
            instance_id: success.instance_id,
            report: self.slot_table.report(),
        };
        let rm_gateway = gateway.clone();
        self.rm_heartbeat
            .monitor((), gateway.address().node(), Instant::now());
        self.rm = Some(RmConnection {
            rm_id,
            gateway,
            instance_id: success.instance_id,
        });
        self.events.publish(ClusterEvent::ResourceManagerConnected {
            resource_id: self.resource_id,
        });
        if let Some(blob_server) = success.cluster_information.blob_server {
            self.use_blob_server(blob_server, ctx);
        }
        let generation = self.rm_generation;
        ctx.spawn_then(
            async move { rm_gateway.ask(report).await },
            move |result, te, ctx| {
                if te.rm_generation != generation {
                    return;
                }
                if let Err(err) = result
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                {
                    tracing::warn!(error = %err, "slot report refused; registering again");
                    te.connect_to_resource_manager("slot report refused", ctx);
                }
            },
        );
    }

    /// Points the BlobCache at `server`, creating the cache the first time.
    fn use_blob_server(&mut self, server: String, ctx: &mut RpcContext<'_, Self>) {
        if let Some(cache) = &self.blob_cache {
            cache.set_server_address(server);
            return;
        }
        let config = BlobCacheConfig {
            storage_dir: self.settings.blob_cache_dir.clone(),
            cleanup_interval: self.settings.blob_cleanup_interval,
            client: crate::blob::BlobClientConfig {
                security: self.settings.blob_security.clone(),
                ..crate::blob::BlobClientConfig::default()
            },
            ..BlobCacheConfig::default()
        };
        ctx.spawn_then(
            BlobCache::new(config, server),
            |created, te, _| match created {
                Ok(cache) => {
                    if te.blob_cache.is_none() {
                        te.blob_cache = Some(cache);
                        let jobs: Vec<JobId> = te.jobs.keys().copied().collect();
                        for job_id in jobs {
                            te.lease_blobs(job_id);
                        }
                    }
                }
                Err(err) => tracing::error!(error = %err, "cannot create the blob cache"),
            },
        );
    }

    /// Takes the job's lease on the BlobCache, once: its tasks share it while it has slots here.
    fn lease_blobs(&mut self, job_id: JobId) {
        if let Some(cache) = &self.blob_cache {
            if !self.blob_leases.contains(&job_id) {
                match cache.register_job(job_id) {
                    Ok(()) => {
                        self.blob_leases.insert(job_id);
                    }
                    Err(err) => {
                        tracing::warn!(%job_id, error = %err, "cannot register the job with the blob cache")
                    }
                }
            }
        }
    }

    fn notify_slot_available(&self, slot_id: crate::types::SlotId, allocation_id: AllocationId) {
        if let Some(rm) = &self.rm {
            let _ = rm.gateway.tell(resourcemanager::NotifySlotAvailable {
                instance_id: rm.instance_id,
                slot_id,
                allocation_id,
            });
        }
    }

    // ---- job connections ----

    fn connect_to_job_master(&mut self, job_id: JobId, ctx: &mut RpcContext<'_, Self>) {
        let Some(conn) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if conn.gateway.is_some() || conn.registration.is_some() {
            return;
        }
        let service = match Self::service(ctx) {
            Ok(service) => service,
            Err(_) => return,
        };
        let address = match conn.target_address.parse::<RpcAddress>() {
            Ok(address) => address,
            Err(err) => {
                tracing::warn!(%job_id, error = %err, "invalid job master address");
                return;
            }
        };
        let (job_master_id, own_address) = (conn.job_master_id, ctx.address().to_string());
        let (resource_id, session_id) = (self.resource_id, self.session_id);
        let data_address = self.settings.shuffle.as_ref().map(|s| s.data_address());
        let policy = self.settings.registration;
        let (abort, reg) = AbortHandle::new_pair();
        conn.registration = Some(abort);
        let fut = async move {
            register_with_retries(
                policy,
                "job master",
                |timeout| {
                    let (service, address, own_address) =
                        (service.clone(), address.clone(), own_address.clone());
                    let data_address = data_address.clone();
                    async move {
                        let gateway = service
                            .connect_fenced::<JobMaster>(&address, job_master_id)
                            .await?;
                        let msg = jobmaster::RegisterTaskManager {
                            job_id,
                            address: own_address,
                            resource_id,
                            session_id,
                            data_address,
                        };
                        let response = gateway.ask_with_timeout(msg, timeout).await?;
                        Ok(response.map(|s| (gateway, s)))
                    }
                },
                |_| {},
            )
            .await
        };
        ctx.spawn_then(Abortable::new(fut, reg), move |result, te, ctx| {
            let Ok((gateway, _success)) = result else {
                return;
            };
            let Some(conn) = te.jobs.get_mut(&job_id) else {
                return;
            };
            if conn.job_master_id != job_master_id {
                return;
            }
            conn.registration = None;
            te.jm_heartbeats
                .monitor(job_id, gateway.address().node(), Instant::now());
            conn.gateway = Some(gateway);
            tracing::info!(%job_id, %job_master_id, "connected to the job master");
            te.offer_slots(job_id, ctx);
        });
    }

    fn offer_slots(&mut self, job_id: JobId, ctx: &mut RpcContext<'_, Self>) {
        let Some(conn) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let Some(gateway) = conn.gateway.clone() else {
            return;
        };
        let offers: Vec<SlotOffer> = self
            .slot_table
            .allocations_of(job_id)
            .into_iter()
            .map(|(allocation_id, slot_index)| SlotOffer {
                allocation_id,
                slot_index,
            })
            .collect();
        if offers.is_empty() {
            return;
        }
        conn.offer_generation += 1;
        let generation = conn.offer_generation;
        let msg = jobmaster::OfferSlots {
            resource_id: self.resource_id,
            offers: offers.clone(),
        };
        ctx.spawn_then(async move { gateway.ask(msg).await }, move |result, te, ctx| {
            if te.jobs.get(&job_id).map(|c| c.offer_generation) != Some(generation) {
                return; // An answer to an older offer.
            }
            match result {
                Ok(Ok(accepted)) => {
                    for offer in &offers {
                        if accepted.contains(offer) {
                            te.slot_table.mark_active(job_id, offer.allocation_id);
                        } else {
                            te.free_slot(offer.allocation_id, "the job master rejected the slot", ctx);
                        }
                    }
                }
                Err(RpcError::Timeout { .. }) => te.offer_slots(job_id, ctx),
                Ok(Err(err)) => {
                    tracing::warn!(%job_id, error = %err, "slot offer failed; freeing the slots");
                    for offer in &offers {
                        te.free_slot(offer.allocation_id, "the slot offer failed", ctx);
                    }
                }
                Err(err) => {
                    tracing::warn!(%job_id, error = %err, "slot offer failed; freeing the slots");
                    for offer in &offers {
                        te.free_slot(offer.allocation_id, "the slot offer failed", ctx);
                    }
                }
            }
        });
    }

    /// Frees a slot: cancels its tasks, tells the ResourceManager, and drops the job connection
    /// when the job has no slot left here.
    fn free_slot(
        &mut self,
        allocation_id: AllocationId,
        cause: &str,
        _ctx: &mut RpcContext<'_, Self>,
    ) {
        for task in self
            .tasks
            .values()
            .filter(|t| t.allocation_id == allocation_id)
        {
            task.cancel.cancel();
        }
        let Some((slot_id, job_id)) = self.slot_table.free(allocation_id) else {
            return;
        };
        tracing::debug!(%slot_id, %allocation_id, cause, "slot freed");
        self.notify_slot_available(slot_id, allocation_id);
        if self.slot_table.allocations_of(job_id).is_empty() {
            self.release_job(job_id, cause);
        }
    }

    fn release_job(&mut self, job_id: JobId, cause: &str) {
        self.jm_heartbeats.unmonitor(job_id);
        if let (Some(ids), Some(shuffle)) =
            (self.partitions.remove(&job_id), &self.settings.shuffle)
        {
            // Consumed partitions are gone already; what is left lost its consumers.
            for id in ids.iter().filter(|id| shuffle.has_partition(id)) {
                tracing::debug!(%job_id, partition = %id, "releasing an unconsumed partition");
                shuffle.release_partition(id, cause);
            }
        }
        self.job_libraries.remove(&job_id);
        self.library_fetches.remove(&job_id);
        if self.blob_leases.remove(&job_id) {
            if let Some(cache) = &self.blob_cache {
                let _ = cache.release_job(job_id);
            }
        }
        if let Some(conn) = self.jobs.remove(&job_id) {
            if let Some(abort) = conn.registration {
                abort.abort();
            }
            if let Some(gateway) = conn.gateway {
                let _ = gateway.tell(jobmaster::DisconnectTaskManager {
                    resource_id: self.resource_id,
                    cause: cause.to_string(),
                });
            }
        }
    }

    /// The job's JobMaster is gone: fail its tasks, deactivate its slots (the slot timeout frees
    /// them unless a new JobMaster takes them).
    fn job_master_lost(&mut self, job_id: JobId, cause: &str, ctx: &mut RpcContext<'_, Self>) {
        self.jm_heartbeats.unmonitor(job_id);
        if let Some(conn) = self.jobs.remove(&job_id) {
            if let Some(abort) = conn.registration {
                abort.abort();
            }
            // If the JobMaster is alive after all (say it stalled), it must not wait for tasks
            // that are gone: tell it, as Flink's TaskExecutor does.
            if let Some(gateway) = conn.gateway {
                let _ = gateway.tell(jobmaster::DisconnectTaskManager {
                    resource_id: self.resource_id,
                    cause: cause.to_string(),
                });
            }
        }
        let unreported = &mut self.unreported;
        self.final_metrics
            .retain(|a, _| unreported.get(a).is_some_and(|j| *j != job_id));
        unreported.retain(|_, j| *j != job_id);
        let running = self.tasks.values().filter(|t| t.job_id == job_id).count();
        if running > 0 {
            tracing::info!(%job_id, cause, running, "job master lost; failing its tasks");
        } else {
            tracing::debug!(%job_id, cause, "job master disconnected");
        }
        for task in self.tasks.values().filter(|t| t.job_id == job_id) {
            task.cancel.cancel();
        }
        // Flink keeps such slots inactive for `taskmanager.slot.timeout`, to offer them again to
        // the job's next leader, which its JobLeaderService finds in HA. Here a new JobMaster is
        // only learnt from the ResourceManager's slot request, and a ResourceManager (a new
        // leader's too) counts reported slots as held by the job: kept, they would stall the
        // job's recovery for the whole slot timeout. Freed now, they go straight back to
        // whichever ResourceManager leads.
        for (allocation_id, _) in self.slot_table.allocations_of(job_id) {
            self.free_slot(allocation_id, cause, ctx);
        }
    }

    fn schedule_slot_timeout(
        &mut self,
        allocation_id: AllocationId,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        ctx.schedule_run_async(self.settings.slot_timeout, move |te, ctx| {
            if let Some(TaskSlotState::Allocated { .. }) = te.slot_table.state_of(allocation_id) {
                tracing::info!(%allocation_id, "slot not accepted within the slot timeout; freeing it");
                te.free_slot(allocation_id, "slot timeout", ctx);
            }
        });
    }

    // ---- tasks ----

    fn on_task_state(
        &mut self,
        attempt: ExecutionAttemptId,
        state: ExecutionState,
        error: Option<ErrorInfo>,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        let Some(task) = self.tasks.get(&attempt) else {
            return;
        };
        let job_id = task.job_id;
        if state.is_terminal() {
            if let Some((group, _)) = self.tasks.remove(&attempt).and_then(|t| t.metrics) {
                // The thread has ended: these are the task's final numbers.
                self.final_metrics.insert(attempt, group.dump());
            }
            self.unreported.insert(attempt, job_id);
        }
        match self.report_queues.get_mut(&attempt) {
            Some(queue) => queue.push_back((state, error)),
            None => {
                self.report_queues.insert(attempt, Default::default());
                self.report_task_state(job_id, attempt, state, error, 0, ctx);
            }
        }
    }

    /// The report in flight for `attempt` is done (answered, refused or given up): send the next
    /// queued one, if any.
    fn next_report(
        &mut self,
        job_id: JobId,
        attempt: ExecutionAttemptId,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        let next = self
            .report_queues
            .get_mut(&attempt)
            .and_then(|q| q.pop_front());
        match next {
            Some((state, error)) => self.report_task_state(job_id, attempt, state, error, 0, ctx),
            None => {
                self.report_queues.remove(&attempt);
            }
        }
    }

    /// Sends a task's state to its JobMaster. A final state is retried on transport errors (with
    /// growing pauses) for as long as the job's JobMaster connection lasts: losing it would leave
    /// the JobMaster waiting for a task that ended.
    fn report_task_state(
        &mut self,
        job_id: JobId,
        attempt: ExecutionAttemptId,
        state: ExecutionState,
        error: Option<ErrorInfo>,
        tries: u32,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        let Some(gateway) = self.jobs.get(&job_id).and_then(|c| c.gateway.clone()) else {
            tracing::debug!(%attempt, %state, "no job master to report the task state to");
            self.forget_reported(attempt);
            self.report_queues.remove(&attempt);
            return;
        };
        let msg = jobmaster::UpdateTaskExecutionState {
            attempt,
            state,
            error: error.clone(),
            metrics: if state.is_terminal() {
                self.final_metrics
                    .get(&attempt)
                    .cloned()
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        };
        let sent_to = gateway.fencing_token();
        ctx.spawn_then(async move { gateway.ask(msg).await }, move |result, te, ctx| {
            match result {
                Ok(Ok(_)) => {
                    if state.is_terminal() {
                        te.forget_reported(attempt);
                    }
                    te.next_report(job_id, attempt, ctx);
                }
                Ok(Err(err)) => {
                    te.forget_reported(attempt);
                    // The JobMaster does not know the attempt: stop it (Flink fails the task).
                    tracing::warn!(%attempt, error = %err, "job master refused the task state; cancelling the task");
                    if let Some(task) = te.tasks.get(&attempt) {
                        task.cancel.cancel();
                    }
                    te.next_report(job_id, attempt, ctx);
                }
                Err(err) if state.is_terminal() && tries < 10 => {
                    let still_same_master =
                        te.jobs.get(&job_id).and_then(|c| c.gateway.as_ref()).map(|g| g.fencing_token()) == Some(sent_to);
                    if still_same_master {
                        tracing::warn!(%attempt, %state, error = %err, tries, "reporting the final task state failed; retrying");
                        let delay = Duration::from_millis(50 << tries.min(6));
                        ctx.schedule_run_async(delay, move |te, ctx| {
                            te.report_task_state(job_id, attempt, state, error, tries + 1, ctx)
                        });
                    } else {
                        te.forget_reported(attempt);
                        te.report_queues.remove(&attempt);
                    }
                }
                Err(err) => {
                    if state.is_terminal() {
                        te.forget_reported(attempt);
                    }
                    tracing::warn!(%attempt, %state, error = %err, "could not report the task state");
                    te.next_report(job_id, attempt, ctx);
                }
            }
        });
    }

    /// An ended attempt's final state reached its JobMaster (or never will).
    fn forget_reported(&mut self, attempt: ExecutionAttemptId) {
        self.unreported.remove(&attempt);
        self.final_metrics.remove(&attempt);
    }

    fn check_heartbeats(&mut self, ctx: &mut RpcContext<'_, Self>) {
        let now = Instant::now();
        for ((), loss) in self.rm_heartbeat.expired(now) {
            self.connect_to_resource_manager(&loss.to_string(), ctx);
        }
        for (job_id, loss) in self.jm_heartbeats.expired(now) {
            self.job_master_lost(job_id, &loss.to_string(), ctx);
        }
    }

    /// A peer's connection died: if it was the ResourceManager's, register again right away
    /// (the registration retries until the JobManager is back).
    fn on_connection_lost(&mut self, node: &str, reason: &str, ctx: &mut RpcContext<'_, Self>) {
        let rm_node = self.rm.as_ref().map(|rm| rm.gateway.address().node());
        if rm_node.as_deref() == Some(node) {
            self.connect_to_resource_manager(&format!("connection lost: {reason}"), ctx);
        }
    }
}

async fn attempt_rm_registration(
    service: RpcService,
    jobmanager: String,
    leader_watch: Option<tokio::sync::watch::Receiver<Option<ClusterLeader>>>,
    registration: TaskExecutorRegistration,
    timeout: Duration,
) -> Result<
    RegistrationResponse<(
        RpcGateway<ResourceManager>,
        ResourceManagerId,
        TaskExecutorRegistrationSuccess,
    )>,
    RpcError,
> {
    let leaders = match leader_watch {
        Some(watch) => {
            let leader = watch.borrow().clone();
            leader.map(|l| l.leaders).unwrap_or_default()
        }
        None => {
            let (host, port) = split_host_port(&jobmanager)?;
            let leaders_address = RpcAddress::new(host, port, LEADERS_ENDPOINT)?;
            let leaders = service.connect::<LeaderRetrieval>(&leaders_address).await?;
            leaders.ask_with_timeout(GetLeaders, timeout).await?
        }
    };
    let Some(rm) = leaders.resource_manager else {
        return Ok(RegistrationResponse::Failure(
            "no resource manager leader yet".into(),
        ));
    };
    let rm_id = ResourceManagerId::from_u128(rm.token.as_u128());
    let address: RpcAddress = rm.address.parse()?;
    let gateway = service
        .connect_fenced::<ResourceManager>(&address, rm_id)
        .await?;
    let response = gateway
        .ask_with_timeout(resourcemanager::RegisterTaskExecutor(registration), timeout)
        .await?;
    Ok(response.map(|s| (gateway, rm_id, s)))
}

/// Splits `host:port` (`[v6]:port` too).
pub fn split_host_port(s: &str) -> Result<(String, u16), RpcError> {
    let invalid = || RpcError::InvalidAddress {
        address: s.to_string(),
        reason: "expected host:port".into(),
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(invalid)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse::<u16>().map_err(|_| invalid())?;
    if host.is_empty() {
        return Err(invalid());
    }
    Ok((host.to_string(), port))
}

/// This machine's hardware, as far as it can be read cheaply (reads `/proc`: call it off any
/// mailbox).
/// The TaskManager's metric group: scope `taskmanager`, variables `host` and `tm_id`, with the
/// data plane's buffer pool (Flink's `Status.Shuffle.Netty.*`).
fn taskmanager_metrics(settings: &TaskExecutorSettings, resource_id: ResourceId) -> MetricGroup {
    let host = settings
        .shuffle
        .as_ref()
        .map(|s| s.data_address())
        .and_then(|a| a.rsplit_once(':').map(|(h, _)| h.to_string()))
        .unwrap_or_else(|| "localhost".into());
    let group = settings.metrics.group(
        "taskmanager",
        &[("host", host), ("tm_id", resource_id.to_string())],
    );
    if let Some(shuffle) = &settings.shuffle {
        let segment = shuffle.config().segment_size as f64;
        let stats = |f: fn(&crate::network::BufferStats) -> f64| {
            let shuffle = shuffle.clone();
            move || f(&shuffle.buffer_stats())
        };
        group.gauge_fn(
            "Status.Shuffle.Netty.TotalMemorySegments",
            stats(|s| s.total as f64),
        );
        group.gauge_fn(
            "Status.Shuffle.Netty.UsedMemorySegments",
            stats(|s| s.in_use as f64),
        );
        group.gauge_fn(
            "Status.Shuffle.Netty.AvailableMemorySegments",
            stats(|s| s.total.saturating_sub(s.in_use) as f64),
        );
        let total = stats(|s| s.total as f64);
        group.gauge_fn("Status.Shuffle.Netty.TotalMemory", move || {
            total() * segment
        });
        let used = stats(|s| s.in_use as f64);
        group.gauge_fn("Status.Shuffle.Netty.UsedMemory", move || used() * segment);
        group.gauge_fn(
            "Status.Shuffle.Netty.BlockedWriters",
            stats(|s| s.blocked_writers as f64),
        );
        let sent = shuffle.clone();
        group.gauge_fn("Status.Shuffle.Netty.RemoteBytesSent", move || {
            sent.remote_bytes_sent() as f64
        });
    }
    group
}

fn hardware_description() -> HardwareDescription {
    let cpu_cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    HardwareDescription {
        cpu_cores,
        physical_memory: field("MemTotal:"),
        free_memory: field("MemAvailable:"),
        managed_memory: 0,
    }
}

impl RpcEndpoint for TaskExecutor {
    type Token = Unfenced;
    const GATEWAY: &'static str = "TaskExecutorGateway";
    const NAME_PREFIX: &'static str = "taskmanager";

    fn fencing_token(&self) -> Unfenced {
        Unfenced
    }

    fn on_start(
        &mut self,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Result<(), rflink_rpc::LifecycleError> {
        let service = Self::service(ctx)?;
        crate::heartbeat::watch_peers(service.peer_events(), ctx, Self::on_connection_lost);
        tracing::info!(resource_id = %self.resource_id, address = %ctx.address(), slots = self.settings.number_of_slots, "task executor started");
        self.connect_to_resource_manager("start", ctx);
        if let Some(watch) = self.settings.leader_watch.clone() {
            self.follow_leader(watch, ctx);
        }
        let timeout = self.settings.registration_timeout;
        ctx.schedule_run_async(timeout, move |te, _| {
            if !te.registered_once {
                let msg = format!("could not register at the resource manager within {timeout:?}");
                tracing::error!(resource_id = %te.resource_id, "{msg}");
                (te.settings.fatal_error)(msg);
            }
        });
        ctx.run_interval(self.settings.heartbeat.interval, |te, ctx| {
            te.check_heartbeats(ctx)
        });
        Ok(())
    }

    fn on_stop(&mut self, _ctx: &mut RpcContext<'_, Self>) -> rflink_rpc::StopFuture {
        if let Some(abort) = self.rm_registration.take() {
            abort.abort();
        }
        for task in self.tasks.values() {
            task.cancel.cancel();
        }
        if let Some(rm) = &self.rm {
            let _ = rm.gateway.tell(resourcemanager::DisconnectTaskManager {
                resource_id: self.resource_id,
                cause: "the task executor is shutting down".into(),
            });
        }
        Box::pin(async { Ok(()) })
    }
}

impl Handler<RequestSlot> for TaskExecutor {
    fn handle(
        &mut self,
        msg: RequestSlot,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Ack, TaskExecutorError>> {
        if self.rm.as_ref().map(|rm| rm.rm_id) != Some(msg.rm_id) {
            return Response::ready(Err(TaskExecutorError::UnknownResourceManager {
                rm_id: msg.rm_id,
            }));
        }
        // A new JobMaster of the job (a new leader) replaces the old one first: its tasks fail
        // and its slots go, so the slot allocated below is the new JobMaster's alone.
        let stale = self
            .jobs
            .get(&msg.job_id)
            .is_some_and(|c| c.job_master_id != msg.job_master_id);
        if stale {
            self.job_master_lost(msg.job_id, "a new job master leads the job", ctx);
        }
        if let Err(err) =
            self.slot_table
                .allocate(msg.slot_id.slot_index, msg.job_id, msg.allocation_id)
        {
            return Response::ready(Err(err));
        }
        self.schedule_slot_timeout(msg.allocation_id, ctx);
        self.lease_blobs(msg.job_id);
        let conn = self
            .jobs
            .entry(msg.job_id)
            .or_insert_with(|| JobConnection {
                job_master_id: msg.job_master_id,
                target_address: msg.target_address.clone(),
                gateway: None,
                registration: None,
                offer_generation: 0,
            });
        if conn.gateway.is_some() {
            self.offer_slots(msg.job_id, ctx);
        } else {
            self.connect_to_job_master(msg.job_id, ctx);
        }
        Response::ready(Ok(Ack))
    }
}

impl Handler<FreeSlot> for TaskExecutor {
    fn handle(
        &mut self,
        msg: FreeSlot,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Ack, TaskExecutorError>> {
        if self.slot_table.state_of(msg.allocation_id).is_none() {
            return Response::ready(Err(TaskExecutorError::UnknownAllocation(msg.allocation_id)));
        }
        self.free_slot(msg.allocation_id, &msg.cause, ctx);
        Response::ready(Ok(Ack))
    }
}

impl TaskExecutor {
    /// The checks a submission must pass, before and again after any wait.
    fn check_submission(
        &self,
        tdd: &TaskDeploymentDescriptor,
        job_master_id: JobMasterId,
    ) -> Result<(), TaskSubmissionError> {
        let job_id = tdd.job_id;
        let Some(conn) = self.jobs.get(&job_id) else {
            return Err(TaskSubmissionError::NoJobMaster(job_id));
        };
        if conn.job_master_id != job_master_id {
            tracing::warn!(%job_id, expected = %conn.job_master_id, received = %job_master_id, "task submission with a stale job master id");
            return Err(TaskSubmissionError::WrongJobMaster {
                job_id,
                expected: conn.job_master_id,
                received: job_master_id,
            });
        }
        if self.tasks.contains_key(&tdd.attempt)
            || self.pending_submissions.contains_key(&tdd.attempt)
        {
            return Err(TaskSubmissionError::Duplicate(tdd.attempt));
        }
        if let MaybeOffloaded::Inline(info) = &tdd.task_information {
            if tdd.attempt.vertex.subtask_index >= info.number_of_subtasks {
                return Err(TaskSubmissionError::Invokable {
                    invokable: info.invokable.clone(),
                    reason: format!(
                        "subtask {} of a vertex with {} subtasks",
                        tdd.attempt.vertex.subtask_index, info.number_of_subtasks
                    ),
                });
            }
        }
        if self.slot_table.state_of(tdd.allocation_id).is_none()
            || self
                .slot_table
                .allocations_of(job_id)
                .iter()
                .all(|(a, _)| *a != tdd.allocation_id)
        {
            return Err(TaskSubmissionError::NoSlot {
                job_id,
                allocation_id: tdd.allocation_id,
            });
        }
        Ok(())
    }

    /// Starts a checked submission's task thread.
    fn start_task(
        &mut self,
        tdd: TaskDeploymentDescriptor,
        task_information: TaskInformation,
        library: Option<Arc<JobLibrary>>,
        io: Option<StreamIo>,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Result<Ack, TaskSubmissionError> {
        let job_id = tdd.job_id;
        let mut mailbox = None;
        let mut metrics = None;
        let invokable = if task_information.invokable == STREAM_TASK_INVOKABLE {
            let (task, task_mailbox, task_metrics) =
                self.stream_task(&tdd, &task_information, library, io, ctx)?;
            mailbox = task_mailbox;
            metrics = task_metrics;
            self.partitions
                .entry(job_id)
                .or_default()
                .extend(tdd.produced_partitions.iter().map(|p| ResultPartitionId {
                    producer: tdd.attempt,
                    result_index: p.result_index,
                }));
            task
        } else {
            self.settings
                .invokables
                .instantiate(&task_information.invokable, &task_information.config)
                .map_err(|reason| TaskSubmissionError::Invokable {
                    invokable: task_information.invokable.clone(),
                    reason,
                })?
        };
        // Submission may come before the offer's answer: it activates the slot (Flink allows it).
        self.slot_table.mark_active(job_id, tdd.allocation_id);
        let cancel = Arc::new(CancelSignal::default());
        let spec = task::TaskSpec {
            job_id,
            attempt: tdd.attempt,
            task_name: format!(
                "{} ({}/{})",
                task_information.vertex_name,
                tdd.attempt.vertex.subtask_index.saturating_add(1),
                task_information.number_of_subtasks
            ),
            parallelism: task_information.number_of_subtasks,
            config: task_information.config,
            location: ctx.address().to_string(),
        };
        task::spawn(
            spec,
            invokable,
            Arc::clone(&cancel),
            ctx.main_thread_handle(),
        )
        .map_err(|err| TaskSubmissionError::Invokable {
            invokable: task_information.invokable,
            reason: format!("cannot start the task thread: {err}"),
        })?;
        self.tasks.insert(
            tdd.attempt,
            RunningTask {
                job_id,
                allocation_id: tdd.allocation_id,
                cancel,
                metrics,
                mailbox,
            },
        );
        Ok(Ack)
    }
}

impl TaskExecutor {
    /// Registers a streaming task's result partitions and creates its input gate (whose
    /// channels start requesting their subpartitions). Done at submission, on the main thread,
    /// even when the task's code must be fetched first, so that consumers elsewhere find the
    /// partitions at once instead of backing off.
    fn setup_stream_io(
        &self,
        tdd: &TaskDeploymentDescriptor,
    ) -> Result<StreamIo, TaskSubmissionError> {
        let fail = |reason: String| TaskSubmissionError::Invokable {
            invokable: STREAM_TASK_INVOKABLE.into(),
            reason,
        };
        let Some(shuffle) = &self.settings.shuffle else {
            return Err(fail("this TaskExecutor has no data plane".into()));
        };
        let mut partitions = Vec::with_capacity(tdd.produced_partitions.len());
        for produced in &tdd.produced_partitions {
            let id = ResultPartitionId {
                producer: tdd.attempt,
                result_index: produced.result_index,
            };
            let writer = shuffle
                .create_result_partition(id, produced.local.clone())
                .map_err(|e| fail(format!("cannot register result partition {id}: {e}")))?;
            partitions.push(writer);
        }
        let gate = if tdd.input_gates.is_empty() {
            None
        } else {
            let mut channels = Vec::new();
            let mut inputs = Vec::new();
            for (input, gate) in tdd.input_gates.iter().enumerate() {
                for channel in &gate.channels {
                    inputs.push(input);
                    channels.push(InputChannelSpec {
                        partition: ResultPartitionId {
                            producer: channel.producer,
                            result_index: channel.result_index,
                        },
                        subpartition: channel.subpartition,
                        location: if channel.local {
                            ChannelLocation::Local
                        } else {
                            ChannelLocation::Remote {
                                address: channel.data_address.clone(),
                            }
                        },
                    });
                }
            }
            let gate = shuffle
                .create_input_gate(channels)
                .map_err(|e| fail(format!("cannot create the input gate: {e}")))?;
            Some((gate, inputs))
        };
        Ok(StreamIo { partitions, gate })
    }

    /// Releases what [`TaskExecutor::setup_stream_io`] registered, for a task that will not run.
    fn release_stream_io(&self, io: StreamIo, cause: &str) {
        if let Some(shuffle) = &self.settings.shuffle {
            for partition in &io.partitions {
                shuffle.release_partition(&partition.id(), cause);
            }
        }
    }

    /// A streaming vertex's task: its result partitions are registered now, on the main thread
    /// (so consumers asking for them soon find them), and its input channels start requesting
    /// their subpartitions. Flink: `Task.setupPartitionsAndGates`, done here before the thread
    /// starts because registering never blocks.
    fn stream_task(
        &self,
        tdd: &TaskDeploymentDescriptor,
        info: &TaskInformation,
        library: Option<Arc<JobLibrary>>,
        io: Option<StreamIo>,
        ctx: &RpcContext<'_, Self>,
    ) -> Result<StreamTaskParts, TaskSubmissionError> {
        let fail = |reason: String| TaskSubmissionError::Invokable {
            invokable: STREAM_TASK_INVOKABLE.into(),
            reason,
        };
        let Some(shuffle) = &self.settings.shuffle else {
            return Err(fail("this TaskExecutor has no data plane".into()));
        };
        let program = match &tdd.job_information {
            MaybeOffloaded::Inline(JobInformation {
                program: Some(program),
                ..
            }) => program.clone(),
            MaybeOffloaded::Inline(_) => {
                return Err(fail("the job has no streaming program".into()));
            }
            MaybeOffloaded::Offloaded { .. } => {
                return Err(fail("offloaded job information is not supported".into()));
            }
        };
        if program.library.is_some() != library.is_some() {
            return Err(fail(
                "the job's library was not loaded for this task (internal error)".into(),
            ));
        }
        let vertex = info
            .config
            .get(STREAM_VERTEX_KEY)
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or_else(|| fail(format!("the vertex has no valid {STREAM_VERTEX_KEY:?}")))?;
        let io = match io {
            Some(io) => io,
            None => self.setup_stream_io(tdd)?,
        };
        let (group, channel_groups, task_io) = self.task_metrics(tdd, info, &io);
        let StreamIo { partitions, gate } = io;
        let checkpointing = tdd.checkpointing.as_ref().map(|config| {
            let handle = ctx.main_thread_handle();
            let (job_id, attempt) = (tdd.job_id, tdd.attempt);
            let responder: crate::tasks::checkpointing::CheckpointResponder =
                Arc::new(move |response| {
                    handle.run_async(move |te, _| {
                        te.forward_checkpoint_response(job_id, attempt, response)
                    });
                });
            crate::tasks::checkpointing::TaskCheckpointing {
                job_id,
                base_dir: config.base_dir.clone(),
                key: crate::checkpoint::SubtaskKey::from(tdd.attempt),
                mailbox: Default::default(),
                responder,
                restore: tdd.restore.clone(),
            }
        });
        let mailbox = checkpointing.as_ref().map(|c| c.mailbox.clone());
        Ok((
            Box::new(StreamTask {
                jobs: self.settings.jobs.clone(),
                library,
                program,
                vertex,
                max_parallelism: info.max_parallelism,
                buffer_timeout: shuffle.config().buffer_timeout,
                partitions,
                gate,
                shuffle: Some(shuffle.clone()),
                checkpointing,
                records_in: task_io.records_in,
                watermarks: task_io.watermarks,
            }),
            mailbox,
            Some((group, channel_groups)),
        ))
    }
}

impl TaskExecutor {
    /// Sends a task's checkpoint response to its job's JobMaster (fenced by its token). A lost
    /// response is a checkpoint that times out, never wrong state.
    fn forward_checkpoint_response(
        &mut self,
        job_id: JobId,
        attempt: ExecutionAttemptId,
        response: crate::tasks::checkpointing::CheckpointResponse,
    ) {
        use crate::tasks::checkpointing::CheckpointResponse;
        let Some(gateway) = self.jobs.get(&job_id).and_then(|c| c.gateway.clone()) else {
            tracing::debug!(%attempt, ?response, "no job master for a checkpoint response");
            return;
        };
        let sent = match response {
            CheckpointResponse::Acknowledge {
                id,
                state,
                ended_input,
                sync_millis,
                async_millis,
            } => gateway.tell(jobmaster::AcknowledgeCheckpoint {
                job_id,
                attempt,
                checkpoint_id: id,
                state,
                ended_input,
                sync_millis,
                async_millis,
            }),
            CheckpointResponse::Decline {
                id,
                reason,
                subsumed_by,
            } => gateway.tell(jobmaster::DeclineCheckpoint {
                job_id,
                attempt,
                checkpoint_id: id,
                reason,
                subsumed_by,
            }),
        };
        if let Err(err) = sent {
            tracing::warn!(%attempt, error = %err, "could not send a checkpoint response");
        }
    }

    fn post_mail(
        &self,
        attempt: ExecutionAttemptId,
        mail: crate::tasks::checkpointing::TaskMail,
    ) -> Result<Ack, TaskExecutorError> {
        match self.tasks.get(&attempt) {
            Some(RunningTask {
                mailbox: Some(mailbox),
                ..
            }) => {
                mailbox.post(mail);
                Ok(Ack)
            }
            Some(_) => Err(TaskExecutorError::NotCheckpointing(attempt)),
            None => Err(TaskExecutorError::UnknownTask(attempt)),
        }
    }
}

impl Handler<TriggerCheckpoint> for TaskExecutor {
    fn handle(
        &mut self,
        msg: TriggerCheckpoint,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Ack, TaskExecutorError>> {
        Response::ready(self.post_mail(
            msg.attempt,
            crate::tasks::checkpointing::TaskMail::Trigger {
                id: msg.checkpoint_id,
                timestamp: msg.timestamp,
                savepoint: msg.savepoint,
                terminate: msg.terminate,
            },
        ))
    }
}

impl Handler<ConfirmCheckpoint> for TaskExecutor {
    fn handle(
        &mut self,
        msg: ConfirmCheckpoint,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ()> {
        if let Err(err) = self.post_mail(
            msg.attempt,
            crate::tasks::checkpointing::TaskMail::Complete {
                id: msg.checkpoint_id,
                last: msg.last,
                stop: msg.stop,
            },
        ) {
            tracing::debug!(error = %err, "checkpoint confirmation for a task not here");
        }
        Response::ready(())
    }
}

impl Handler<AbortCheckpoint> for TaskExecutor {
    fn handle(&mut self, msg: AbortCheckpoint, _: &mut RpcContext<'_, Self>) -> Response<Self, ()> {
        if let Err(err) = self.post_mail(
            msg.attempt,
            crate::tasks::checkpointing::TaskMail::Abort {
                id: msg.checkpoint_id,
            },
        ) {
            tracing::debug!(error = %err, "checkpoint abort for a task not here");
        }
        Response::ready(())
    }
}

/// Fetches an offloaded value through the BlobCache (verified against its key) and decodes it.
async fn load_offloaded<T: serde::de::DeserializeOwned>(
    cache: BlobCache,
    job_id: JobId,
    blob_key: String,
) -> Result<T, TaskSubmissionError> {
    let key: BlobKey = blob_key
        .parse()
        .map_err(|e| TaskSubmissionError::Blob(format!("bad blob key {blob_key:?}: {e}")))?;
    let path = cache
        .get_file(job_id, key)
        .await
        .map_err(|e| TaskSubmissionError::Blob(e.to_string()))?;
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .map_err(|e| TaskSubmissionError::Blob(e.to_string()))?
        .map_err(|e| TaskSubmissionError::Blob(format!("cannot read the cached blob: {e}")))?;
    rmp_serde::from_slice(&bytes)
        .map_err(|e| TaskSubmissionError::Blob(format!("cannot decode offloaded data: {e}")))
}

impl Handler<SubmitTask> for TaskExecutor {
    fn handle(
        &mut self,
        msg: SubmitTask,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Ack, TaskSubmissionError>> {
        if let Err(err) = self.check_submission(&msg.tdd, msg.job_master_id) {
            return Response::ready(Err(err));
        }
        let mut tdd = msg.tdd;
        let job_master_id = msg.job_master_id;
        let job_id = tdd.job_id;
        let library_ref = match &tdd.job_information {
            MaybeOffloaded::Inline(JobInformation {
                program: Some(program),
                ..
            }) => program.library.clone(),
            _ => None,
        };
        // The job's library, if this TaskExecutor has loaded it for the job already.
        let loaded = library_ref.as_ref().and_then(|r| {
            self.job_libraries
                .get(&job_id)
                .filter(|l| l.key().to_string() == r.blob_key)
                .cloned()
        });
        let task_information = std::mem::replace(
            &mut tdd.task_information,
            MaybeOffloaded::Offloaded {
                blob_key: String::new(),
            },
        );
        if let MaybeOffloaded::Inline(info) = &task_information {
            if library_ref.is_none() || loaded.is_some() {
                return Response::ready(self.start_task(tdd, info.clone(), loaded, None, ctx));
            }
        }
        // Something must be fetched from the BlobServer first (offloaded task information, the
        // job's library, or both): off the main thread, then start if still wanted.
        let Some(cache) = self.blob_cache.clone() else {
            return Response::ready(Err(TaskSubmissionError::Blob(
                "the task needs the blob server, but none is known".into(),
            )));
        };
        // A streaming task whose library must be fetched registers its partitions now: its
        // consumers on other TaskExecutors may start first.
        let io = match &task_information {
            MaybeOffloaded::Inline(info) if info.invokable == STREAM_TASK_INVOKABLE => {
                match self.setup_stream_io(&tdd) {
                    Ok(io) => Some(io),
                    Err(err) => return Response::ready(Err(err)),
                }
            }
            _ => None,
        };
        self.pending_submissions.insert(tdd.attempt, false);
        let library_fetch = match (&loaded, &library_ref) {
            (None, Some(library)) => Some(
                self.library_fetches
                    .entry(job_id)
                    .or_insert_with(|| {
                        fetch_library(cache.clone(), job_id, library.clone())
                            .boxed()
                            .shared()
                    })
                    .clone(),
            ),
            _ => None,
        };
        let fetch = async move {
            let info = match task_information {
                MaybeOffloaded::Inline(info) => info,
                MaybeOffloaded::Offloaded { blob_key } => {
                    load_offloaded::<TaskInformation>(cache.clone(), job_id, blob_key).await?
                }
            };
            let library = match (loaded, library_fetch) {
                (Some(library), _) => Some(library),
                (None, Some(fetch)) => Some(fetch.await?),
                (None, None) => None,
            };
            Ok::<_, TaskSubmissionError>((info, library))
        };
        Response::then(fetch, move |fetched, te: &mut TaskExecutor, ctx| {
            let cancelled = te.pending_submissions.remove(&tdd.attempt).unwrap_or(false);
            // The fetch is over (done or failed): a later attempt starts afresh.
            te.library_fetches.remove(&job_id);
            let ready = fetched.and_then(|(info, library)| {
                if let Some(library) = &library {
                    if te.jobs.contains_key(&job_id) {
                        te.job_libraries.insert(job_id, Arc::clone(library));
                    }
                }
                // The world may have moved on while the blobs were fetched: check again.
                te.check_submission(&tdd, job_master_id)?;
                Ok((info, library))
            });
            let (info, library) = match ready {
                Ok(ready) => ready,
                Err(err) => {
                    if let Some(io) = io {
                        te.release_stream_io(io, &format!("the task could not start: {err}"));
                    }
                    return Err(err);
                }
            };
            let attempt = tdd.attempt;
            let ack = te.start_task(tdd, info, library, io, ctx)?;
            if cancelled {
                // Cancelled while its data was being fetched: it starts cancelled and reports
                // CANCELED at once.
                if let Some(task) = te.tasks.get(&attempt) {
                    task.cancel.cancel();
                }
            }
            Ok(ack)
        })
    }
}

/// What [`TaskExecutor::stream_task`] builds: the invokable, its checkpoint mailbox (when the
/// job checkpoints) and its metric groups (the task's and its channels').
type StreamTaskParts = (
    Box<dyn Invokable>,
    Option<crate::tasks::checkpointing::TaskMailbox>,
    Option<(MetricGroup, Vec<MetricGroup>)>,
);

/// A streaming task's result partitions and input gate (with each channel's input index).
pub(crate) struct StreamIo {
    partitions: Vec<crate::network::ResultPartitionWriter>,
    gate: Option<(crate::network::InputGate, Vec<usize>)>,
}

/// A job's library being fetched and loaded, shared by the job's tasks.
type LibraryFetch = futures::future::Shared<
    futures::future::BoxFuture<'static, Result<Arc<JobLibrary>, TaskSubmissionError>>,
>;

/// Fetches a job's library through the BlobCache (downloaded once per job however many tasks
/// ask, verified against its key) and loads it on the blocking pool (once per process).
async fn fetch_library(
    cache: BlobCache,
    job_id: JobId,
    library: JobLibraryRef,
) -> Result<Arc<JobLibrary>, TaskSubmissionError> {
    let name = library.file_name.clone();
    let fail = |reason: String| TaskSubmissionError::Library(format!("{name}: {reason}"));
    let key: BlobKey = library
        .blob_key
        .parse()
        .map_err(|e| fail(format!("bad blob key {:?}: {e}", library.blob_key)))?;
    let path = cache
        .get_file(job_id, key)
        .await
        .map_err(|e| fail(format!("cannot fetch it from the blob server: {e}")))?;
    let file_name = library.file_name.clone();
    let loaded =
        tokio::task::spawn_blocking(move || JobLibrary::load_verified(&path, &file_name, key))
            .await
            .map_err(|e| fail(format!("the loading thread failed: {e}")))?
            .map_err(|e| TaskSubmissionError::Library(e.to_string()))?;
    if loaded.key() != key {
        return Err(fail(format!(
            "the loaded file has SHA-256 {}, the job names {key}",
            loaded.key()
        )));
    }
    tracing::info!(%job_id, library = %name, %key, "job library ready");
    Ok(loaded)
}

impl Handler<CancelTask> for TaskExecutor {
    fn handle(
        &mut self,
        msg: CancelTask,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Ack, TaskExecutorError>> {
        if let Some(task) = self.tasks.get(&msg.attempt) {
            task.cancel.cancel();
            return Response::ready(Ok(Ack));
        }
        if let Some(cancelled) = self.pending_submissions.get_mut(&msg.attempt) {
            *cancelled = true;
            return Response::ready(Ok(Ack));
        }
        Response::ready(Err(TaskExecutorError::UnknownTask(msg.attempt)))
    }
}

impl Handler<HeartbeatFromJobManager> for TaskExecutor {
    fn handle(
        &mut self,
        msg: HeartbeatFromJobManager,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, TaskExecutorToJobManagerHeartbeatPayload> {
        self.jm_heartbeats.heard_from(msg.job_id, Instant::now());
        let metrics = self
            .tasks
            .iter()
            .filter(|(_, t)| t.job_id == msg.job_id)
            .filter_map(|(attempt, t)| {
                t.metrics.as_ref().map(|(group, _)| TaskMetricsReport {
                    attempt: *attempt,
                    metrics: group.dump(),
                })
            })
            .collect();
        // Every attempt of the job this TaskExecutor still knows: running, starting, or ended
        // with its final state not yet acknowledged.
        let known = self
            .tasks
            .iter()
            .filter(|(_, t)| t.job_id == msg.job_id)
            .map(|(a, _)| *a)
            .chain(self.pending_submissions.keys().copied())
            .chain(
                self.unreported
                    .iter()
                    .filter(|(_, j)| **j == msg.job_id)
                    .map(|(a, _)| *a),
            )
            .collect();
        Response::ready(TaskExecutorToJobManagerHeartbeatPayload {
            attempts: known,
            metrics,
        })
    }
}

impl Handler<HeartbeatFromResourceManager> for TaskExecutor {
    fn handle(
        &mut self,
        _: HeartbeatFromResourceManager,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, TaskExecutorHeartbeatPayload> {
        self.rm_heartbeat.heard_from((), Instant::now());
        Response::ready(TaskExecutorHeartbeatPayload {
            slot_report: self.slot_table.report(),
            metrics: self.metric_group.dump(),
        })
    }
}

impl Handler<DisconnectJobManager> for TaskExecutor {
    fn handle(
        &mut self,
        msg: DisconnectJobManager,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ()> {
        self.job_master_lost(msg.job_id, &msg.cause, ctx);
        Response::ready(())
    }
}

impl Handler<DisconnectResourceManager> for TaskExecutor {
    fn handle(
        &mut self,
        msg: DisconnectResourceManager,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ()> {
        self.connect_to_resource_manager(&msg.cause, ctx);
        Response::ready(())
    }
}

rpc_protocol!(TaskExecutor {
    RequestSlot,
    FreeSlot,
    SubmitTask,
    CancelTask,
    TriggerCheckpoint,
    ConfirmCheckpoint,
    AbortCheckpoint,
    HeartbeatFromJobManager,
    HeartbeatFromResourceManager,
    DisconnectJobManager,
    DisconnectResourceManager,
});

/// An error for a task, as the JobMaster records it.
pub(crate) fn task_error(
    kind: &str,
    message: String,
    task_name: &str,
    location: &str,
) -> ErrorInfo {
    ErrorInfo {
        kind: kind.to_string(),
        message,
        task_name: Some(task_name.to_string()),
        location: Some(location.to_string()),
        timestamp: now_millis(),
    }
}
