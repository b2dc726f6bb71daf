//! The ResourceManager: knows every TaskExecutor and its slots, and hands slots to JobMasters.
//! Flink: `ResourceManager` / `StandaloneResourceManager`.
//!
//! Fenced by [`ResourceManagerId`]. Messages: see [`gateway`]. State lives on its mailbox:
//! registrations of TaskExecutors and JobMasters, the [`SlotManager`](slot_manager::SlotManager),
//! and two heartbeat monitors. It is the heartbeat *sender* towards both TaskExecutors and
//! JobMasters.
//!
//! # Start-up and shut-down
//!
//! `on_start` starts the heartbeat tick and subscribes to the RPC layer's peer events (to probe a
//! peer whose connection died). Closing it tells every TaskExecutor and JobMaster it is gone.
//!
//! # Flows
//!
//! - `RegisterTaskExecutor` → connect back to the TaskExecutor → replace any older registration of
//!   the same resource id → monitor it → `Success(instance id, blob server)`. Only the newest
//!   registration attempt per resource id wins.
//! - `SendSlotReport` → slots enter the SlotManager → requirements are re-checked.
//! - `RegisterJobMaster` → connect back (fenced with the JobMaster's id) → monitor → `Success`.
//! - `DeclareRequiredResources` (id checked against the registration) → SlotManager → for each
//!   match, `RequestSlot` to the TaskExecutor with a fresh `AllocationId`, the JobMaster's address
//!   and id; a failed request frees the slot and is retried.
//! - A lost TaskExecutor (heartbeat timeout, unreachable, or disconnect): its slots leave the
//!   SlotManager, every JobMaster gets `DisconnectTaskManager`, the TaskExecutor gets
//!   `DisconnectResourceManager`, and lost allocations are requested again elsewhere.

pub mod gateway;
pub mod slot_manager;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rflink_rpc::{
    rpc_protocol, Handler, Response, RpcContext, RpcEndpoint, RpcError, RpcGateway, RpcService,
};

pub use gateway::*;
use slot_manager::{SlotManager, SlotRequest};

use crate::dispatcher::TaskManagerInfo;
use crate::events::{ClusterEvent, EventSink};
use crate::heartbeat::{watch_peers, HeartbeatMonitor, HeartbeatSettings, Verdict};
use crate::jobmaster::{self, JobMaster};
use crate::metrics::{Gauge, MetricGroup};
use crate::registration::RegistrationResponse;
use crate::taskexecutor::{self, TaskExecutor};
use crate::types::{Ack, InstanceId, JobId, JobMasterId, ResourceId, ResourceManagerId};

/// Settings of a ResourceManager.
#[derive(Debug, Clone)]
pub struct ResourceManagerSettings {
    /// Heartbeats towards TaskExecutors and JobMasters.
    pub heartbeat: HeartbeatSettings,
    /// The BlobServer's `host:port`, told to TaskExecutors on registration.
    pub blob_server: Option<String>,
    /// The JobManager's metric group (scope `jobmanager`): the ResourceManager registers the
    /// cluster's slot counts and each TaskManager's heartbeat round trip there.
    pub metrics: Option<MetricGroup>,
}

struct WorkerRegistration {
    instance_id: InstanceId,
    gateway: RpcGateway<TaskExecutor>,
    registration: TaskExecutorRegistration,
    /// Its TaskManager-scope metrics as of its last heartbeat.
    metrics: Vec<(String, f64)>,
    /// The round trip of its last answered heartbeat, in milliseconds (-1 before the first).
    heartbeat_rtt: Gauge,
    /// Holds `heartbeat_rtt` in the registry while the TaskManager is registered.
    _metric_group: Option<MetricGroup>,
}

struct JobMasterRegistration {
    job_master_id: JobMasterId,
    gateway: RpcGateway<JobMaster>,
}

/// The ResourceManager endpoint.
pub struct ResourceManager {
    rm_id: ResourceManagerId,
    resource_id: ResourceId,
    settings: ResourceManagerSettings,
    events: EventSink,
    task_executors: HashMap<ResourceId, WorkerRegistration>,
    registration_attempts: HashMap<ResourceId, u64>,
    next_attempt: u64,
    job_masters: HashMap<JobId, JobMasterRegistration>,
    slot_manager: SlotManager,
    tm_heartbeats: HeartbeatMonitor<ResourceId>,
    jm_heartbeats: HeartbeatMonitor<JobId>,
    /// `numRegisteredTaskManagers`, `taskSlotsTotal`, `taskSlotsAvailable`.
    gauges: Option<(Gauge, Gauge, Gauge)>,
}

impl ResourceManager {
    /// A ResourceManager with a fresh token.
    pub fn new(settings: ResourceManagerSettings, events: EventSink) -> Self {
        let gauges = settings.metrics.as_ref().map(|g| {
            (
                g.gauge("numRegisteredTaskManagers"),
                g.gauge("taskSlotsTotal"),
                g.gauge("taskSlotsAvailable"),
            )
        });
        ResourceManager {
            gauges,
            rm_id: ResourceManagerId::generate(),
            resource_id: ResourceId::generate(),
            tm_heartbeats: HeartbeatMonitor::new(settings.heartbeat),
            jm_heartbeats: HeartbeatMonitor::new(settings.heartbeat),
            settings,
            events,
            task_executors: HashMap::new(),
            registration_attempts: HashMap::new(),
            next_attempt: 0,
            job_masters: HashMap::new(),
            slot_manager: SlotManager::new(),
        }
    }

    /// The ResourceManager of a leadership: its token is `rm_id`, derived from the leader
    /// session.
    pub fn with_id(mut self, rm_id: ResourceManagerId) -> Self {
        self.rm_id = rm_id;
        self
    }

    fn service(ctx: &RpcContext<'_, Self>) -> Result<RpcService, RpcError> {
        ctx.service().ok_or(RpcError::ServiceShutdown)
    }

    /// Publishes the cluster's counts to the `jobmanager` metric group (Flink's
    /// `numRegisteredTaskManagers`, `taskSlotsTotal`, `taskSlotsAvailable`).
    fn publish_metrics(&self) {
        let Some(gauges) = &self.gauges else { return };
        let infos = self.task_manager_infos();
        let total: u32 = infos.iter().map(|i| i.slots_number).sum();
        let free: u32 = infos.iter().map(|i| i.free_slots).sum();
        gauges.0.set(infos.len() as f64);
        gauges.1.set(f64::from(total));
        gauges.2.set(f64::from(free));
    }

    fn heartbeat_tick(&mut self, ctx: &mut RpcContext<'_, Self>) {
        self.publish_metrics();
        let now = Instant::now();
        for (resource_id, loss) in self.tm_heartbeats.expired(now) {
            self.close_task_manager(resource_id, &loss.to_string(), ctx);
        }
        for (job_id, loss) in self.jm_heartbeats.expired(now) {
            self.close_job_master(job_id, &loss.to_string());
        }
        let tms: Vec<ResourceId> = self.task_executors.keys().copied().collect();
        for resource_id in tms {
            self.request_tm_heartbeat(resource_id, ctx);
        }
        let jobs: Vec<JobId> = self.job_masters.keys().copied().collect();
        for job_id in jobs {
            self.request_jm_heartbeat(job_id, ctx);
        }
    }

    fn request_tm_heartbeat(&mut self, resource_id: ResourceId, ctx: &mut RpcContext<'_, Self>) {
        let Some(reg) = self.task_executors.get(&resource_id) else {
            return;
        };
        let (gateway, instance_id) = (reg.gateway.clone(), reg.instance_id);
        let msg = taskexecutor::HeartbeatFromResourceManager {
            rm_resource_id: self.resource_id,
        };
        let timeout = self.settings.heartbeat.interval;
        let sent = Instant::now();
        ctx.spawn_then(
            async move { gateway.ask_with_timeout(msg, timeout).await },
            move |result, rm, ctx| {
                if result.is_ok() {
                    if let Some(reg) = rm.task_executors.get(&resource_id) {
                        reg.heartbeat_rtt.set(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                rm.on_tm_heartbeat(resource_id, instance_id, result, ctx)
            },
        );
    }

    fn on_tm_heartbeat(
        &mut self,
        resource_id: ResourceId,
        instance_id: InstanceId,
        result: Result<taskexecutor::TaskExecutorHeartbeatPayload, RpcError>,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        if self.task_executors.get(&resource_id).map(|r| r.instance_id) != Some(instance_id) {
            return; // An answer about an older registration.
        }
        let reason = result
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        match self
            .tm_heartbeats
            .rpc_result(resource_id, &result, Instant::now())
        {
            Verdict::Alive => {
                if let Ok(payload) = result {
                    self.slot_manager.report(resource_id, &payload.slot_report);
                    if let Some(reg) = self.task_executors.get_mut(&resource_id) {
                        reg.metrics = payload.metrics;
                    }
                    self.check_requirements(ctx);
                }
            }
            Verdict::Lost(loss) => {
                self.close_task_manager(resource_id, &format!("{loss} ({reason})"), ctx)
            }
            Verdict::ProbeAgain => {
                let delay = self.settings.heartbeat.probe_interval;
                ctx.schedule_run_async(delay, move |rm, ctx| {
                    rm.request_tm_heartbeat(resource_id, ctx)
                });
            }
            Verdict::Wait => {
                tracing::debug!(%resource_id, reason, "task executor heartbeat failed")
            }
        }
    }

    fn request_jm_heartbeat(&mut self, job_id: JobId, ctx: &mut RpcContext<'_, Self>) {
        let Some(reg) = self.job_masters.get(&job_id) else {
            return;
        };
        let (gateway, job_master_id) = (reg.gateway.clone(), reg.job_master_id);
        let msg = jobmaster::HeartbeatFromResourceManager {
            rm_resource_id: self.resource_id,
        };
        let timeout = self.settings.heartbeat.interval;
        ctx.spawn_then(
            async move { gateway.ask_with_timeout(msg, timeout).await },
            move |result, rm, ctx| {
                if rm.job_masters.get(&job_id).map(|r| r.job_master_id) != Some(job_master_id) {
                    return;
                }
                match rm.jm_heartbeats.rpc_result(job_id, &result, Instant::now()) {
                    Verdict::Alive => {}
                    Verdict::Lost(loss) => rm.close_job_master(job_id, &loss.to_string()),
                    Verdict::ProbeAgain => {
                        let delay = rm.settings.heartbeat.probe_interval;
                        ctx.schedule_run_async(delay, move |rm, ctx| {
                            rm.request_jm_heartbeat(job_id, ctx)
                        });
                    }
                    Verdict::Wait => tracing::debug!(%job_id, "job master heartbeat failed"),
                }
            },
        );
    }

    /// A peer's connection died: probe every TaskExecutor and JobMaster reached through it now.
    fn on_connection_lost(&mut self, node: &str, _reason: &str, ctx: &mut RpcContext<'_, Self>) {
        for resource_id in self.tm_heartbeats.start_probing(node) {
            self.request_tm_heartbeat(resource_id, ctx);
        }
        for job_id in self.jm_heartbeats.start_probing(node) {
            self.request_jm_heartbeat(job_id, ctx);
        }
    }

    fn close_task_manager(
        &mut self,
        resource_id: ResourceId,
        cause: &str,
        ctx: &mut RpcContext<'_, Self>,
    ) {
        self.tm_heartbeats.unmonitor(resource_id);
        self.registration_attempts.remove(&resource_id);
        let Some(reg) = self.task_executors.remove(&resource_id) else {
            return;
        };
        tracing::info!(%resource_id, cause, "closing task manager connection");
        let lost = self.slot_manager.unregister_task_manager(resource_id);
        for jm in self.job_masters.values() {
            let _ = jm.gateway.tell(jobmaster::DisconnectTaskManager {
                resource_id,
                cause: cause.to_string(),
            });
        }
        let _ = reg.gateway.tell(taskexecutor::DisconnectResourceManager {
            cause: cause.to_string(),
        });
        self.events.publish(ClusterEvent::TaskExecutorLost {
            resource_id,
            reason: cause.to_string(),
        });
        if !lost.is_empty() {
            self.check_requirements(ctx);
        }
    }

    fn close_job_master(&mut self, job_id: JobId, cause: &str) {
        self.jm_heartbeats.unmonitor(job_id);
        if let Some(reg) = self.job_masters.remove(&job_id) {
            tracing::info!(%job_id, cause, "closing job master connection (requirements kept)");
            let _ = reg.gateway.tell(jobmaster::DisconnectResourceManager {
                rm_id: self.rm_id,
                cause: cause.to_string(),
            });
        }
    }

    fn check_requirements(&mut self, ctx: &mut RpcContext<'_, Self>) {
        for request in self.slot_manager.check() {
            self.request_slot(request, ctx);
        }
    }

    fn request_slot(&mut self, request: SlotRequest, ctx: &mut RpcContext<'_, Self>) {
        let Some(reg) = self.task_executors.get(&request.slot_id.resource_id) else {
            self.slot_manager
                .slot_freed(request.slot_id, request.allocation_id);
            return;
        };
        let gateway = reg.gateway.clone();
        let msg = taskexecutor::RequestSlot {
            slot_id: request.slot_id,
            job_id: request.job_id,
            allocation_id: request.allocation_id,
            target_address: request.address.clone(),
            job_master_id: request.job_master_id,
            rm_id: self.rm_id,
        };
        tracing::debug!(slot_id = %request.slot_id, job_id = %request.job_id, allocation_id = %request.allocation_id, "requesting slot");
        ctx.spawn_then(async move { gateway.ask(msg).await }, move |result, rm, ctx| match result {
            Ok(Ok(Ack)) => rm.slot_manager.allocation_confirmed(request.slot_id, request.allocation_id),
            failure => {
                tracing::warn!(slot_id = %request.slot_id, ?failure, "slot request failed; retrying elsewhere");
                rm.slot_manager.slot_freed(request.slot_id, request.allocation_id);
                // Retry after a short pause so a persistently failing TaskExecutor is not hammered.
                ctx.schedule_run_async(Duration::from_millis(50), |rm, ctx| rm.check_requirements(ctx));
            }
        });
    }

    fn task_manager_infos(&self) -> Vec<TaskManagerInfo> {
        let mut infos: Vec<TaskManagerInfo> = self
            .task_executors
            .iter()
            .map(|(resource_id, reg)| {
                let (total, free) = self.slot_manager.totals_of(*resource_id);
                let since = self
                    .tm_heartbeats
                    .last_heard(*resource_id)
                    .map(|t| t.elapsed().as_millis() as i64)
                    .unwrap_or(0);
                TaskManagerInfo {
                    resource_id: *resource_id,
                    address: reg.registration.address.clone(),
                    data_port: reg.registration.data_port,
                    time_since_last_heartbeat: since,
                    slots_number: total,
                    free_slots: free,
                    hardware: reg.registration.hardware.clone(),
                    metrics_address: reg.registration.metrics_address.clone(),
                    metrics: reg.metrics.clone(),
                }
            })
            .collect();
        infos.sort_by_key(|i| i.resource_id);
        infos
    }
}

impl RpcEndpoint for ResourceManager {
    type Token = ResourceManagerId;
    const GATEWAY: &'static str = "ResourceManagerGateway";
    const NAME_PREFIX: &'static str = "resourcemanager";

    fn fencing_token(&self) -> ResourceManagerId {
        self.rm_id
    }

    fn on_start(
        &mut self,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Result<(), rflink_rpc::LifecycleError> {
        let service = Self::service(ctx)?;
        watch_peers(service.peer_events(), ctx, Self::on_connection_lost);
        ctx.run_interval(self.settings.heartbeat.interval, |rm, ctx| {
            rm.heartbeat_tick(ctx)
        });
        tracing::info!(rm_id = %self.rm_id, address = %ctx.address(), "resource manager started");
        Ok(())
    }

    fn on_stop(&mut self, _ctx: &mut RpcContext<'_, Self>) -> rflink_rpc::StopFuture {
        for reg in self.task_executors.values() {
            let _ = reg.gateway.tell(taskexecutor::DisconnectResourceManager {
                cause: "the resource manager is shutting down".into(),
            });
        }
        for reg in self.job_masters.values() {
            let _ = reg.gateway.tell(jobmaster::DisconnectResourceManager {
                rm_id: self.rm_id,
                cause: "the resource manager is shutting down".into(),
            });
        }
        Box::pin(async { Ok(()) })
    }
}

impl Handler<RegisterTaskExecutor> for ResourceManager {
    fn handle(
        &mut self,
        RegisterTaskExecutor(registration): RegisterTaskExecutor,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, RegistrationResponse<TaskExecutorRegistrationSuccess>> {
        let resource_id = registration.resource_id;
        let address = match registration.address.parse::<rflink_rpc::RpcAddress>() {
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
        self.next_attempt += 1;
        let attempt = self.next_attempt;
        self.registration_attempts.insert(resource_id, attempt);
        Response::then(
            async move { service.connect::<TaskExecutor>(&address).await },
            move |connected,
                  rm: &mut ResourceManager,
                  _ctx: &mut RpcContext<'_, ResourceManager>| {
                if rm.registration_attempts.get(&resource_id) != Some(&attempt) {
                    return RegistrationResponse::Failure(
                        "decline outdated task executor registration".into(),
                    );
                }
                let gateway = match connected {
                    Ok(gateway) => gateway,
                    Err(err) => {
                        return RegistrationResponse::Failure(format!(
                            "cannot connect back to the task executor: {err}"
                        ))
                    }
                };
                if rm.task_executors.remove(&resource_id).is_some() {
                    tracing::info!(%resource_id, "task executor registered again; dropping the old registration");
                    rm.slot_manager.unregister_task_manager(resource_id);
                }
                let instance_id = InstanceId::generate();
                rm.tm_heartbeats
                    .monitor(resource_id, gateway.address().node(), Instant::now());
                tracing::info!(%resource_id, address = %gateway.address(), slots = registration.number_of_slots, "task executor registered");
                rm.events.publish(ClusterEvent::TaskExecutorRegistered {
                    resource_id,
                    slots: registration.number_of_slots,
                });
                let metric_group = rm
                    .settings
                    .metrics
                    .as_ref()
                    .map(|g| g.child("taskmanager", &[("tm_id", resource_id.to_string())]));
                let heartbeat_rtt = metric_group
                    .as_ref()
                    .map(|g| g.gauge("heartbeatRttMs"))
                    .unwrap_or_default();
                heartbeat_rtt.set(-1.0);
                rm.task_executors.insert(
                    resource_id,
                    WorkerRegistration {
                        instance_id,
                        gateway,
                        registration,
                        metrics: Vec::new(),
                        heartbeat_rtt,
                        _metric_group: metric_group,
                    },
                );
                rm.publish_metrics();
                RegistrationResponse::Success(TaskExecutorRegistrationSuccess {
                    instance_id,
                    rm_resource_id: rm.resource_id,
                    cluster_information: ClusterInformation {
                        blob_server: rm.settings.blob_server.clone(),
                    },
                })
            },
        )
    }
}

impl Handler<SendSlotReport> for ResourceManager {
    fn handle(
        &mut self,
        msg: SendSlotReport,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Ack, ResourceManagerError>> {
        match self.task_executors.get(&msg.resource_id) {
            Some(reg) if reg.instance_id == msg.instance_id => {
                self.slot_manager
                    .register_task_manager(msg.resource_id, &msg.report);
                self.check_requirements(ctx);
                Response::ready(Ok(Ack))
            }
            _ => Response::ready(Err(ResourceManagerError::UnknownTaskExecutor {
                resource_id: msg.resource_id,
                instance_id: msg.instance_id,
            })),
        }
    }
}

impl Handler<NotifySlotAvailable> for ResourceManager {
    fn handle(
        &mut self,
        msg: NotifySlotAvailable,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ()> {
        if self
            .task_executors
            .get(&msg.slot_id.resource_id)
            .is_some_and(|r| r.instance_id == msg.instance_id)
        {
            self.slot_manager.slot_freed(msg.slot_id, msg.allocation_id);
            self.check_requirements(ctx);
        }
        Response::ready(())
    }
}

impl Handler<DisconnectTaskManager> for ResourceManager {
    fn handle(
        &mut self,
        msg: DisconnectTaskManager,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ()> {
        self.close_task_manager(msg.resource_id, &msg.cause, ctx);
        Response::ready(())
    }
}

impl Handler<RegisterJobMaster> for ResourceManager {
    fn handle(
        &mut self,
        msg: RegisterJobMaster,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, RegistrationResponse<JobMasterRegistrationSuccess>> {
        let address = match msg.address.parse::<rflink_rpc::RpcAddress>() {
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
        let token = msg.job_master_id;
        Response::then(
            async move { service.connect_fenced::<JobMaster>(&address, token).await },
            move |connected,
                  rm: &mut ResourceManager,
                  _ctx: &mut RpcContext<'_, ResourceManager>| {
                let gateway = match connected {
                    Ok(gateway) => gateway,
                    Err(err) => {
                        return RegistrationResponse::Failure(format!(
                            "cannot connect back to the job master: {err}"
                        ))
                    }
                };
                if let Some(old) = rm.job_masters.get(&msg.job_id) {
                    if old.job_master_id != msg.job_master_id {
                        tracing::info!(job_id = %msg.job_id, "a new job master replaces the old one");
                    }
                }
                rm.jm_heartbeats
                    .monitor(msg.job_id, gateway.address().node(), Instant::now());
                rm.job_masters.insert(
                    msg.job_id,
                    JobMasterRegistration {
                        job_master_id: msg.job_master_id,
                        gateway,
                    },
                );
                rm.events
                    .publish(ClusterEvent::JobMasterRegistered { job_id: msg.job_id });
                RegistrationResponse::Success(JobMasterRegistrationSuccess {
                    rm_id: rm.rm_id,
                    rm_resource_id: rm.resource_id,
                })
            },
        )
    }
}

impl Handler<DeclareRequiredResources> for ResourceManager {
    fn handle(
        &mut self,
        msg: DeclareRequiredResources,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Ack, ResourceManagerError>> {
        match self.job_masters.get(&msg.job_id) {
            Some(reg) if reg.job_master_id == msg.job_master_id => {
                let address = reg.gateway.address().to_string();
                self.slot_manager.set_requirements(
                    msg.job_id,
                    msg.slots,
                    msg.job_master_id,
                    address,
                );
                self.check_requirements(ctx);
                Response::ready(Ok(Ack))
            }
            _ => Response::ready(Err(ResourceManagerError::UnknownJobMaster {
                job_id: msg.job_id,
                job_master_id: msg.job_master_id,
            })),
        }
    }
}

impl Handler<DisconnectJobManager> for ResourceManager {
    fn handle(
        &mut self,
        msg: DisconnectJobManager,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ()> {
        if msg.status.is_globally_terminal() {
            self.slot_manager.clear_requirements(msg.job_id);
        }
        self.jm_heartbeats.unmonitor(msg.job_id);
        self.job_masters.remove(&msg.job_id);
        tracing::info!(job_id = %msg.job_id, status = %msg.status, cause = msg.cause, "job master disconnected");
        Response::ready(())
    }
}

impl Handler<RequestTaskManagerInfo> for ResourceManager {
    fn handle(
        &mut self,
        _: RequestTaskManagerInfo,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Vec<TaskManagerInfo>> {
        Response::ready(self.task_manager_infos())
    }
}

impl Handler<RequestResourceOverview> for ResourceManager {
    fn handle(
        &mut self,
        _: RequestResourceOverview,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ResourceOverview> {
        let (slots_total, slots_free) = self.slot_manager.totals();
        Response::ready(ResourceOverview {
            task_managers: self.task_executors.len() as u32,
            slots_total,
            slots_free,
        })
    }
}

rpc_protocol!(ResourceManager {
    RegisterTaskExecutor,
    SendSlotReport,
    NotifySlotAvailable,
    DisconnectTaskManager,
    RegisterJobMaster,
    DeclareRequiredResources,
    DisconnectJobManager,
    RequestTaskManagerInfo,
    RequestResourceOverview,
});
