//! Starting the two kinds of process. Flink: `ClusterEntrypoint` (a session JobManager) and
//! `TaskManagerRunner`.
//!
//! [`JobManagerRunner`] starts, in order: the BlobServer, the RPC service, the `leaders` endpoint,
//! the ResourceManager, the Dispatcher (which starts a JobMaster per job), then publishes the
//! leaders and starts the REST API. [`TaskManagerRunner`] starts an RPC service and a
//! TaskExecutor, which finds the ResourceManager through the JobManager's `leaders` endpoint.
//! `rflink-node` and the MiniCluster both use these, so a test cluster starts exactly like a real
//! one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rflink_rpc::{RpcConfig, RpcError, RpcServer, RpcService};

use crate::blob::{BlobServer, BlobServerConfig};
use crate::config::{Configuration, ProcessRole};
use crate::dispatcher::{Dispatcher, LeaderGateway, RestfulGateway};
use crate::events::EventSink;
use crate::heartbeat::HeartbeatSettings;
use crate::highavailability::{
    derive_token, recover_jobs, ClusterLeader, HaHandle, Leadership, SharedHaServices,
    StandaloneHaServices,
};
use crate::jobmaster::{BlobOffload, JobMasterSettings};
use crate::leaderretrieval::{LeaderInfo, LeaderRetrieval, LEADERS_ENDPOINT};
use crate::metrics::server::MetricsServer;
use crate::metrics::{MetricGroup, MetricRegistry};
use crate::network::{NetworkConfig, ShuffleEnvironment};
use crate::registration::RetryPolicy;
use crate::resourcemanager::{ResourceManager, ResourceManagerSettings};
use crate::rest::{RestAuth, RestServer, RestServerConfig};
use crate::taskexecutor::invokable::InvokableRegistry;
use crate::taskexecutor::{FatalErrorHandler, TaskExecutor, TaskExecutorSettings};
use crate::tasks::Jobs;
use crate::types::ResourceId;
use crate::types::{DispatcherId, ResourceManagerId};
use rflink_rpc::security::TransportSecurity;

/// Why a process could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntrypointError {
    /// The RPC layer failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The BlobServer failed.
    #[error("blob server: {0}")]
    Blob(String),
    /// The REST server failed.
    #[error("rest server: {0}")]
    Rest(String),
    /// The data plane (shuffle server) could not start.
    #[error("data plane: {0}")]
    DataPlane(String),
    /// The Prometheus endpoint did not start.
    #[error("metrics endpoint: {0}")]
    Metrics(String),
    /// The security settings (secret, certificates, token) could not be loaded.
    #[error("security: {0}")]
    Security(String),
    /// The leadership could not be taken or waited for.
    #[error("leadership: {0}")]
    Leadership(String),
    /// A directory could not be prepared.
    #[error("cannot prepare {path}: {reason}")]
    Directory {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Heartbeat settings from the configuration.
pub fn heartbeat_settings(config: &Configuration) -> HeartbeatSettings {
    HeartbeatSettings {
        interval: config.heartbeat.interval,
        timeout: config.heartbeat.timeout,
        rpc_failure_threshold: u32::try_from(config.heartbeat.rpc_failure_threshold).ok(),
        ..HeartbeatSettings::default()
    }
}

/// Registration retry policy from the configuration.
pub fn retry_policy(config: &Configuration) -> RetryPolicy {
    RetryPolicy {
        initial_timeout: config.registration.initial_timeout,
        max_timeout: config.registration.max_timeout,
        error_delay: config.registration.error_delay,
        refused_delay: config.registration.refused_registration_delay,
    }
}

/// What a JobManager process needs.
#[derive(Debug, Clone)]
pub struct JobManagerSettings {
    /// Its RPC service.
    pub rpc: RpcConfig,
    /// Its REST API, if any.
    pub rest: Option<RestServerConfig>,
    /// Its BlobServer.
    pub blob: BlobServerConfig,
    /// Heartbeats.
    pub heartbeat: HeartbeatSettings,
    /// Registration retries (JobMaster → ResourceManager).
    pub registration: RetryPolicy,
    /// `slot.request.timeout`.
    pub slot_request_timeout: Duration,
    /// `blob.offload.minsize`.
    pub blob_offload_min_size: u64,
    /// What `/jobmanager/config` shows.
    pub config_entries: Vec<(String, String)>,
    /// The configuration jobs run with (restart strategy, checkpointing), before each job's own
    /// entries.
    pub job_defaults: Configuration,
}

impl JobManagerSettings {
    /// Settings from a loaded configuration; `work_dir` holds the BlobServer's files unless
    /// `blob.storage.directory` is set. Loads the security files (cluster secret, certificates,
    /// REST token), so it fails with [`EntrypointError::Security`] naming a bad one.
    pub fn from_config(
        config: &Configuration,
        work_dir: &std::path::Path,
    ) -> Result<Self, EntrypointError> {
        let security = config.transport_security().map_err(security_error)?;
        let rest_tls = if config.security.rest_ssl {
            let (Some(cert), Some(key)) = (&config.security.rest_cert, &config.security.rest_key)
            else {
                return Err(EntrypointError::Security(
                    "security.ssl.rest.enabled needs security.ssl.rest.cert and .key".into(),
                ));
            };
            Some(rflink_rpc::security::rest_server_config(cert, key).map_err(security_error)?)
        } else {
            None
        };
        let auth = config
            .rest_token()
            .map_err(security_error)?
            .map(|token| RestAuth {
                token,
                protect_reads: config.rest.auth_protect_reads,
            });
        let mut rpc = config.rpc_config(ProcessRole::JobManager);
        rpc.security = security.clone();
        Ok(JobManagerSettings {
            rpc,
            rest: Some(RestServerConfig {
                bind_host: config.rest.bind_address.clone(),
                port: config.rest.port,
                refresh_interval_ms: u64::try_from(config.rest.refresh_interval.as_millis())
                    .unwrap_or(u64::MAX),
                ui_dir: config.rest.ui_dir.clone(),
                tls: rest_tls,
                auth,
                ..RestServerConfig::default()
            }),
            blob: BlobServerConfig {
                bind_host: config.jobmanager.bind_host.clone(),
                port: config.blob.server_port,
                // With HA the job artifacts must outlive this JobManager: a new leader serves
                // them from the shared high-availability.storageDir.
                storage_dir: config
                    .blob
                    .storage_directory
                    .clone()
                    .or_else(|| {
                        let ha = &config.high_availability;
                        ha.is_etcd()
                            .then(|| ha.storage_dir.as_ref().map(|d| d.join("blob")))
                            .flatten()
                    })
                    .unwrap_or_else(|| work_dir.join("blob-server")),
                security,
                ..BlobServerConfig::default()
            },
            heartbeat: heartbeat_settings(config),
            registration: retry_policy(config),
            slot_request_timeout: config.slot.request_timeout,
            blob_offload_min_size: config.blob.offload_min_size,
            config_entries: config.to_entries(),
            job_defaults: config.clone(),
        })
    }
}

fn security_error(err: rflink_rpc::security::SecurityError) -> EntrypointError {
    EntrypointError::Security(err.to_string())
}

/// The leader components of one leadership: what a JobManager runs while it leads.
#[derive(Debug, Clone)]
pub struct LeaderComponents {
    /// The leadership they run under.
    pub leadership: Leadership,
    /// The ResourceManager (token derived from the leader session).
    pub resource_manager: RpcServer<ResourceManager>,
    /// The Dispatcher (token derived from the leader session).
    pub dispatcher: RpcServer<Dispatcher>,
}

/// What the leadership loop needs to start and stop leader components.
struct LeaderContext {
    settings: JobManagerSettings,
    service: RpcService,
    ha: SharedHaServices,
    events: EventSink,
    blob_server: Arc<BlobServer>,
    blob_address: String,
    jm_metrics: MetricGroup,
    leaders: RpcServer<LeaderRetrieval>,
    rest_gateway: Arc<LeaderGateway>,
    rest_url: Option<String>,
    current: Arc<std::sync::Mutex<Option<LeaderComponents>>>,
    granted: tokio::sync::watch::Sender<u64>,
}

/// A running JobManager: BlobServer, RPC service with `leaders`, the REST API, and, while it
/// leads the cluster, a ResourceManager and a Dispatcher (which starts a JobMaster per job).
///
/// Leadership comes from the [`HaServices`]: with `none` at once and for good; with etcd after
/// an election, and a standby waits. Each leadership starts fresh components whose tokens are
/// derived from the leader session; when it is lost they are stopped at once, the `leaders`
/// endpoint and the REST API stop naming them, and the process campaigns again.
pub struct JobManagerRunner {
    metrics: MetricRegistry,
    /// The `jobmanager` group, kept registered for the process's lifetime.
    _jm_metrics: MetricGroup,
    service: RpcService,
    leaders: RpcServer<LeaderRetrieval>,
    rest: Option<RestServer>,
    blob_server: Arc<BlobServer>,
    ha: SharedHaServices,
    current: Arc<std::sync::Mutex<Option<LeaderComponents>>>,
    granted: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio::sync::watch::Sender<bool>,
    lead_loop: Option<tokio::task::JoinHandle<()>>,
}

impl JobManagerRunner {
    /// Starts every JobManager component (inside an actix system) without high availability:
    /// it leads at once, and its jobs live in memory.
    pub async fn start(
        settings: JobManagerSettings,
        events: EventSink,
    ) -> Result<Self, EntrypointError> {
        let runner =
            Self::start_with_ha(settings, Arc::new(StandaloneHaServices::new()), events).await?;
        runner.wait_leading(Duration::from_secs(30)).await?;
        Ok(runner)
    }

    /// Starts a JobManager that campaigns for leadership through `ha`; returns once its
    /// services listen, leading or not.
    pub async fn start_with_ha(
        settings: JobManagerSettings,
        ha: SharedHaServices,
        events: EventSink,
    ) -> Result<Self, EntrypointError> {
        let blob_server = BlobServer::start(settings.blob.clone())
            .await
            .map_err(|e| EntrypointError::Blob(e.to_string()))?;
        let blob_server = Arc::new(blob_server);
        let advertised_host = settings
            .rpc
            .advertised_host
            .clone()
            .unwrap_or_else(|| settings.rpc.bind_host.clone());
        // The BlobServer binds the JobManager's bind host; others reach it on the advertised one.
        let blob_address = format!("{advertised_host}:{}", blob_server.port());
        let service = RpcService::start(settings.rpc.clone()).await?;
        let metrics = MetricRegistry::new();
        let jm_metrics = metrics.group("jobmanager", &[("host", advertised_host.clone())]);
        crate::metrics::rpc::register_rpc_metrics(&jm_metrics, service.clone());
        let leaders =
            service.start_server_named(LeaderRetrieval::default(), Some(LEADERS_ENDPOINT))?;
        leaders.start();
        let rest_gateway = Arc::new(LeaderGateway::new());
        let rest = match settings.rest.clone() {
            Some(rest_config) => {
                let gateway: Arc<dyn RestfulGateway> = rest_gateway.clone();
                Some(
                    RestServer::start_with_metrics(
                        rest_config,
                        gateway,
                        settings.config_entries.clone(),
                        Some(Arc::clone(&blob_server)),
                        Some((metrics.clone(), jm_metrics.clone())),
                    )
                    .map_err(|e| EntrypointError::Rest(e.to_string()))?,
                )
            }
            None => None,
        };
        let rest_url = match (&rest, &settings.rest) {
            (Some(server), Some(config)) => Some(format!(
                "{}://{}:{}",
                if config.tls.is_some() {
                    "https"
                } else {
                    "http"
                },
                advertised_host,
                server.local_addr().port()
            )),
            _ => None,
        };
        let current = Arc::new(std::sync::Mutex::new(None));
        let (granted_tx, granted) = tokio::sync::watch::channel(0);
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let context = Arc::new(LeaderContext {
            settings,
            service: service.clone(),
            ha: Arc::clone(&ha),
            events,
            blob_server: Arc::clone(&blob_server),
            blob_address,
            jm_metrics: jm_metrics.clone(),
            leaders: leaders.clone(),
            rest_gateway,
            rest_url,
            current: Arc::clone(&current),
            granted: granted_tx,
        });
        let lead_loop = actix_rt::spawn(lead(context, shutdown_rx));
        Ok(JobManagerRunner {
            metrics,
            _jm_metrics: jm_metrics,
            service,
            leaders,
            rest,
            blob_server,
            ha,
            current,
            granted,
            shutdown,
            lead_loop: Some(lead_loop),
        })
    }

    /// Waits (bounded) until this JobManager leads.
    pub async fn wait_leading(
        &self,
        timeout: Duration,
    ) -> Result<LeaderComponents, EntrypointError> {
        let mut granted = self.granted.clone();
        let wait = async {
            loop {
                if let Some(leading) = self.leader() {
                    return Ok(leading);
                }
                if granted.changed().await.is_err() {
                    return Err(EntrypointError::Leadership(
                        "the leadership loop ended".into(),
                    ));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| {
                Err(EntrypointError::Leadership(format!(
                    "not leading after {timeout:?}"
                )))
            })
    }

    /// The leader components, while this JobManager leads.
    pub fn leader(&self) -> Option<LeaderComponents> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    /// The high-availability services it campaigns through.
    pub fn ha(&self) -> &SharedHaServices {
        &self.ha
    }

    /// The RPC service.
    pub fn service(&self) -> &RpcService {
        &self.service
    }

    /// The JobManager process's metrics (what its `/metrics` shows).
    pub fn metrics(&self) -> &MetricRegistry {
        &self.metrics
    }

    /// The BlobServer.
    pub fn blob_server(&self) -> &BlobServer {
        &self.blob_server
    }

    /// The REST API's bound address.
    pub fn rest_address(&self) -> Option<std::net::SocketAddr> {
        self.rest.as_ref().map(|r| r.local_addr())
    }

    /// Stops the REST API, gives the leadership up (a standby takes over at once), stops every
    /// RPC endpoint (running jobs are suspended), and the BlobServer.
    pub async fn close(mut self) -> Result<(), EntrypointError> {
        if let Some(rest) = self.rest.take() {
            rest.stop().await;
        }
        let _ = self.shutdown.send(true);
        if let Some(lead_loop) = self.lead_loop.take() {
            let _ = lead_loop.await;
        }
        let _ = &self.leaders;
        let closed = self.service.close().await;
        self.blob_server.close().await;
        closed?;
        Ok(())
    }
}

/// The leadership loop: campaign, lead until the leadership is lost (or the process stops),
/// step down, campaign again.
async fn lead(context: Arc<LeaderContext>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let contender = context.service.address().to_string();
    let mut backoff = Duration::from_millis(100);
    let mut generation = 0u64;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let campaign = context.ha.campaign(contender.clone());
        let leadership = tokio::select! {
            won = campaign => won,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let leadership = match leadership {
            Ok(leadership) => leadership,
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "campaign for leadership failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        tracing::info!(session_id = %leadership.session_id, ha = context.ha.describe(), "granted leadership");
        let components = match take_leadership(&context, leadership.clone()).await {
            Ok(components) => components,
            Err(err) => {
                tracing::error!(session_id = %leadership.session_id, error = %err, "could not take the leadership; giving it up");
                if let Err(err) = context.ha.resign(&leadership).await {
                    tracing::warn!(error = %err, "resigning failed; the lease expires instead");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                continue;
            }
        };
        generation += 1;
        let _ = context.granted.send(generation);
        let stopping = tokio::select! {
            _ = leadership.wait_lost() => false,
            _ = shutdown.wait_for(|stop| *stop) => true,
        };
        if stopping {
            tracing::info!(session_id = %leadership.session_id, "shutting down: giving the leadership up");
        } else {
            tracing::warn!(session_id = %leadership.session_id, "leadership lost: stepping down; every leader component stops now");
        }
        step_down(&context, components).await;
        if stopping {
            if let Err(err) = context.ha.resign(&leadership).await {
                tracing::warn!(error = %err, "resigning failed; the lease expires instead");
            }
            return;
        }
        let _ = context.granted.send(generation);
    }
}

/// Starts the components of a new leadership: recovers the stored jobs, starts a
/// ResourceManager and a Dispatcher with tokens derived from the session, and publishes them.
async fn take_leadership(
    context: &LeaderContext,
    leadership: Leadership,
) -> Result<LeaderComponents, EntrypointError> {
    let ha_error = |e: crate::highavailability::HaError| EntrypointError::Leadership(e.to_string());
    let recovered = recover_jobs(context.ha.as_ref()).await.map_err(ha_error)?;
    if !recovered.running.is_empty() || !recovered.finished.is_empty() {
        tracing::info!(
            running = recovered.running.len(),
            finished = recovered.finished.len(),
            "recovered jobs from the high-availability store"
        );
    }
    let settings = &context.settings;
    let session = leadership.session_id;
    let rm_id = ResourceManagerId::from_u128(derive_token(session, "resourcemanager").as_u128());
    let dispatcher_id = DispatcherId::from_u128(derive_token(session, "dispatcher").as_u128());
    let rm = ResourceManager::new(
        ResourceManagerSettings {
            heartbeat: settings.heartbeat,
            blob_server: Some(context.blob_address.clone()),
            metrics: Some(context.jm_metrics.clone()),
        },
        context.events.clone(),
    )
    .with_id(rm_id);
    let resource_manager = context.service.start_server(rm)?;
    resource_manager.start();
    let rm_leader = LeaderInfo {
        address: resource_manager.address().to_string(),
        token: resource_manager.fencing_token().as_abstract_id(),
    };
    let handle = HaHandle {
        services: Arc::clone(&context.ha),
        leadership: leadership.clone(),
    };
    let job_master = JobMasterSettings {
        heartbeat: settings.heartbeat,
        registration: settings.registration,
        slot_request_timeout: settings.slot_request_timeout,
        resource_manager: rm_leader.clone(),
        blob_offload: Some(BlobOffload {
            server: context.blob_address.clone(),
            min_size: settings.blob_offload_min_size,
            security: settings.blob.security.clone(),
        }),
        job_defaults: settings.job_defaults.clone(),
        metrics: Some(context.jm_metrics.clone()),
        ha: None,
    };
    let dispatcher = Dispatcher::new(
        job_master,
        resource_manager.self_gateway(),
        Some(Arc::clone(&context.blob_server)),
        context.events.clone(),
    )
    // Without durable services (`none`) nothing outlives the process: storing jobs would only
    // hold a second copy of each in memory.
    .with_leadership(
        dispatcher_id,
        context.ha.is_durable().then_some(handle),
        recovered,
    );
    let dispatcher = match context.service.start_server(dispatcher) {
        Ok(dispatcher) => dispatcher,
        Err(err) => {
            let _ = resource_manager.close().await;
            return Err(err.into());
        }
    };
    dispatcher.start();
    let leaders = crate::leaderretrieval::Leaders {
        resource_manager: Some(rm_leader),
        dispatcher: Some(LeaderInfo {
            address: dispatcher.address().to_string(),
            token: dispatcher.fencing_token().as_abstract_id(),
        }),
    };
    let components = LeaderComponents {
        leadership: leadership.clone(),
        resource_manager,
        dispatcher,
    };
    let published = ClusterLeader {
        session_id: session,
        leaders: leaders.clone(),
        rpc_address: context.service.address().to_string(),
        blob_address: context.blob_address.clone(),
        rest_url: context.rest_url.clone(),
    };
    if let Err(err) = context.ha.publish_leader(&leadership, &published).await {
        step_down(context, components).await;
        return Err(ha_error(err));
    }
    context.leaders.run_async(move |l, _| l.leaders = leaders);
    context
        .rest_gateway
        .set_leading(Some(components.dispatcher.self_gateway()));
    if let Ok(mut current) = context.current.lock() {
        *current = Some(components.clone());
    }
    tracing::info!(%session, resource_manager = %components.resource_manager.address(),
        dispatcher = %components.dispatcher.address(), "leading the cluster");
    Ok(components)
}

/// Stops a leadership's components at once: nothing names them any more, then the Dispatcher
/// (with its JobMasters) and the ResourceManager close.
async fn step_down(context: &LeaderContext, components: LeaderComponents) {
    context.rest_gateway.set_leading(None);
    context
        .leaders
        .run_async(|l, _| l.leaders = crate::leaderretrieval::Leaders::default());
    if let Ok(mut current) = context.current.lock() {
        *current = None;
    }
    let (dispatcher, rm) = futures::join!(
        components.dispatcher.close(),
        components.resource_manager.close()
    );
    for (what, closed) in [("dispatcher", dispatcher), ("resource manager", rm)] {
        if let Err(err) = closed {
            tracing::warn!(component = what, error = %err, "did not stop cleanly");
        }
    }
}

/// What a TaskManager process needs.
#[derive(Clone)]
pub struct TaskManagerSettings {
    /// Its RPC service.
    pub rpc: RpcConfig,
    /// Its TaskExecutor.
    pub task_executor: TaskExecutorSettings,
    /// Its data plane, started with the TaskManager; `None` for none (control-plane tests).
    pub data: Option<DataPlaneSettings>,
    /// Its Prometheus endpoint: bind host and `metrics.reporter.prom.port` (a port or a range);
    /// `None` for none.
    pub prometheus: Option<(String, String)>,
}

/// Where a TaskManager's data (shuffle) server listens and how its buffers are sized.
#[derive(Debug, Clone)]
pub struct DataPlaneSettings {
    /// Buffers and flow control.
    pub network: NetworkConfig,
    /// Local address the data server binds (`taskmanager.bind-host`).
    pub bind_host: String,
    /// Host consumers connect to (`taskmanager.host`, else the bind host).
    pub advertised_host: String,
    /// `taskmanager.data.port`; 0 picks a free port.
    pub port: u16,
    /// The port consumers connect to when it is not the bound one (a proxy or NAT in between,
    /// `rflink-node --advertised-data-port`); `None` advertises the bound port.
    pub advertised_port: Option<u16>,
}

/// The data plane's settings from `taskmanager.network.*` and `taskmanager.memory.segment-size`.
pub fn network_config(config: &Configuration) -> NetworkConfig {
    let n = &config.network;
    NetworkConfig {
        segment_size: usize::try_from(n.segment_size).unwrap_or(32 * 1024),
        total_buffers: n.number_of_buffers,
        buffers_per_channel: n.buffers_per_channel,
        floating_buffers_per_gate: n.floating_buffers_per_gate,
        max_buffers_per_channel: n.max_buffers_per_channel,
        local_batch_records: n.local_batch_records,
        request_backoff_initial: n.request_backoff_initial,
        request_backoff_max: n.request_backoff_max,
        buffer_timeout: n.buffer_timeout,
        security: TransportSecurity::default(),
    }
}

impl TaskManagerSettings {
    /// Settings from a loaded configuration; the BlobCache lives under `work_dir`. Loads the
    /// security files (cluster secret, certificates), so it fails with
    /// [`EntrypointError::Security`] naming a bad one.
    pub fn from_config(
        config: &Configuration,
        work_dir: &std::path::Path,
        invokables: InvokableRegistry,
        jobs: Jobs,
        fatal_error: FatalErrorHandler,
    ) -> Result<Self, EntrypointError> {
        let security = config.transport_security().map_err(security_error)?;
        let tm = &config.taskmanager;
        let mut rpc = config.rpc_config(ProcessRole::TaskManager);
        rpc.security = security.clone();
        Ok(TaskManagerSettings {
            data: Some(DataPlaneSettings {
                network: NetworkConfig {
                    security: security.clone(),
                    ..network_config(config)
                },
                bind_host: tm.bind_host.clone(),
                advertised_host: tm.host.clone().unwrap_or_else(|| tm.bind_host.clone()),
                port: tm.data_port,
                advertised_port: None,
            }),
            rpc,
            task_executor: TaskExecutorSettings {
                jobmanager_address: rflink_rpc::RpcAddress::new(
                    config.jobmanager.rpc_address.clone(),
                    config.jobmanager.rpc_port,
                    LEADERS_ENDPOINT,
                )
                .map(|a| a.node())
                .unwrap_or_else(|_| {
                    format!(
                        "{}:{}",
                        config.jobmanager.rpc_address, config.jobmanager.rpc_port
                    )
                }),
                number_of_slots: config.taskmanager.number_of_task_slots,
                heartbeat: heartbeat_settings(config),
                registration: retry_policy(config),
                registration_timeout: config.taskmanager.registration_timeout,
                slot_timeout: config.taskmanager.slot_timeout,
                shuffle: None,
                jobs,
                invokables,
                fatal_error,
                blob_cache_dir: work_dir.join("blob-cache"),
                blob_cleanup_interval: config.blob.cleanup_interval,
                metrics: MetricRegistry::new(),
                metrics_address: None,
                leader_watch: None,
                blob_security: security,
            },
            prometheus: (config.metrics.prom_port != "off")
                .then(|| (tm.bind_host.clone(), config.metrics.prom_port.clone())),
        })
    }
}

/// A running TaskManager: an RPC service and its TaskExecutor.
pub struct TaskManagerRunner {
    service: RpcService,
    server: RpcServer<TaskExecutor>,
    resource_id: ResourceId,
    shuffle: Option<ShuffleEnvironment>,
    prometheus: Option<MetricsServer>,
    _rpc_metrics: MetricGroup,
}

impl TaskManagerRunner {
    /// Starts a TaskManager (inside an actix system).
    pub async fn start(
        settings: TaskManagerSettings,
        events: EventSink,
    ) -> Result<Self, EntrypointError> {
        let mut te_settings = settings.task_executor;
        if let Some(data) = &settings.data {
            let shuffle = ShuffleEnvironment::start_advertised(
                data.network.clone(),
                &data.bind_host,
                &data.advertised_host,
                data.port,
                data.advertised_port,
            )
            .map_err(|e| EntrypointError::DataPlane(e.to_string()))?;
            te_settings.shuffle = Some(shuffle);
        }
        let shuffle = te_settings.shuffle.clone();
        let prometheus = match &settings.prometheus {
            Some((host, ports)) => {
                match MetricsServer::start(host, ports, te_settings.metrics.clone()) {
                    Ok(server) => {
                        let advertised = settings
                            .rpc
                            .advertised_host
                            .clone()
                            .unwrap_or_else(|| host.clone());
                        te_settings.metrics_address =
                            Some(format!("{advertised}:{}", server.local_addr().port()));
                        Some(server)
                    }
                    // As Flink's reporters: a port that cannot be bound costs the metrics
                    // endpoint, not the TaskManager.
                    Err(err @ crate::metrics::server::MetricsServerError::Bind { .. }) => {
                        tracing::error!(error = %err, "no prometheus endpoint; the task manager runs without one");
                        None
                    }
                    Err(err) => {
                        if let Some(shuffle) = &shuffle {
                            shuffle.shutdown();
                        }
                        return Err(EntrypointError::Metrics(err.to_string()));
                    }
                }
            }
            None => None,
        };
        let service = match RpcService::start(settings.rpc).await {
            Ok(service) => service,
            Err(err) => {
                if let Some(shuffle) = &shuffle {
                    shuffle.shutdown();
                }
                return Err(err.into());
            }
        };
        let registry = te_settings.metrics.clone();
        let te = TaskExecutor::new(te_settings, events);
        let resource_id = te.resource_id();
        // The TaskExecutor's own group is dropped with it; the RPC layer's outlives it.
        let rpc_metrics = registry.group(
            "taskmanager",
            &[
                (
                    "host",
                    service
                        .address()
                        .rsplit_once(':')
                        .map_or(service.address(), |(h, _)| h)
                        .to_string(),
                ),
                ("tm_id", resource_id.to_string()),
            ],
        );
        crate::metrics::rpc::register_rpc_metrics(&rpc_metrics, service.clone());
        let server = service.start_server(te)?;
        server.start();
        Ok(TaskManagerRunner {
            service,
            server,
            resource_id,
            shuffle,
            prometheus,
            _rpc_metrics: rpc_metrics,
        })
    }

    /// Its data plane, if it has one.
    pub fn shuffle(&self) -> Option<&ShuffleEnvironment> {
        self.shuffle.as_ref()
    }

    /// Its data server's `host:port`, if it has one.
    pub fn data_address(&self) -> Option<String> {
        self.shuffle.as_ref().map(ShuffleEnvironment::data_address)
    }

    /// Its resource id.
    pub fn resource_id(&self) -> ResourceId {
        self.resource_id
    }

    /// Its Prometheus endpoint's bound address, if it has one.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.prometheus.as_ref().map(MetricsServer::local_addr)
    }

    /// Its TaskExecutor's RPC address.
    pub fn address(&self) -> String {
        self.server.address().to_string()
    }

    /// Its RPC service.
    pub fn service(&self) -> &RpcService {
        &self.service
    }

    /// Stops it (the TaskExecutor tells the ResourceManager it leaves).
    pub async fn close(self) -> Result<(), EntrypointError> {
        let closed = self.service.close().await;
        if let Some(prometheus) = self.prometheus {
            prometheus.stop().await;
        }
        if let Some(shuffle) = &self.shuffle {
            shuffle.shutdown();
        }
        closed?;
        Ok(())
    }
}

/// A fresh directory `rflink-<what>-<random>` under the temp dir.
pub fn fresh_work_dir(what: &str) -> Result<PathBuf, EntrypointError> {
    let dir = std::env::temp_dir().join(format!(
        "rflink-{what}-{}",
        rflink_rpc::AbstractId::generate()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| EntrypointError::Directory {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(dir)
}
