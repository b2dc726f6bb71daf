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
use crate::dispatcher::{Dispatcher, RestfulGateway};
use crate::events::EventSink;
use crate::heartbeat::HeartbeatSettings;
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
                storage_dir: config
                    .blob
                    .storage_directory
                    .clone()
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

/// A running JobManager: BlobServer, RPC service with `leaders`, ResourceManager and Dispatcher,
/// and the REST API.
pub struct JobManagerRunner {
    metrics: MetricRegistry,
    /// The `jobmanager` group, kept registered for the process's lifetime.
    _jm_metrics: MetricGroup,
    service: RpcService,
    leaders: RpcServer<LeaderRetrieval>,
    resource_manager: RpcServer<ResourceManager>,
    dispatcher: RpcServer<Dispatcher>,
    rest: Option<RestServer>,
    blob_server: Arc<BlobServer>,
}

impl JobManagerRunner {
    /// Starts every JobManager component (inside an actix system).
    pub async fn start(
        settings: JobManagerSettings,
        events: EventSink,
    ) -> Result<Self, EntrypointError> {
        let blob_server = BlobServer::start(settings.blob.clone())
            .await
            .map_err(|e| EntrypointError::Blob(e.to_string()))?;
        let blob_server = Arc::new(blob_server);
        // The BlobServer binds the JobManager's bind host; others reach it on the advertised one.
        let blob_address = format!(
            "{}:{}",
            settings
                .rpc
                .advertised_host
                .as_deref()
                .unwrap_or(&settings.rpc.bind_host),
            blob_server.port()
        );
        let service = RpcService::start(settings.rpc.clone()).await?;
        let metrics = MetricRegistry::new();
        let jm_metrics = metrics.group(
            "jobmanager",
            &[(
                "host",
                settings
                    .rpc
                    .advertised_host
                    .clone()
                    .unwrap_or_else(|| settings.rpc.bind_host.clone()),
            )],
        );
        crate::metrics::rpc::register_rpc_metrics(&jm_metrics, service.clone());
        let leaders =
            service.start_server_named(LeaderRetrieval::default(), Some(LEADERS_ENDPOINT))?;
        leaders.start();
        let rm = ResourceManager::new(
            ResourceManagerSettings {
                heartbeat: settings.heartbeat,
                blob_server: Some(blob_address.clone()),
                metrics: Some(jm_metrics.clone()),
            },
            events.clone(),
        );
        let resource_manager = service.start_server(rm)?;
        resource_manager.start();
        let rm_leader = LeaderInfo {
            address: resource_manager.address().to_string(),
            token: resource_manager.fencing_token().as_abstract_id(),
        };
        let job_master = JobMasterSettings {
            heartbeat: settings.heartbeat,
            registration: settings.registration,
            slot_request_timeout: settings.slot_request_timeout,
            resource_manager: rm_leader.clone(),
            blob_offload: Some(BlobOffload {
                server: blob_address,
                min_size: settings.blob_offload_min_size,
                security: settings.blob.security.clone(),
            }),
            job_defaults: settings.job_defaults.clone(),
            metrics: Some(jm_metrics.clone()),
        };
        let dispatcher = service.start_server(Dispatcher::new(
            job_master,
            resource_manager.self_gateway(),
            Some(Arc::clone(&blob_server)),
            events,
        ))?;
        dispatcher.start();
        let dispatcher_leader = LeaderInfo {
            address: dispatcher.address().to_string(),
            token: dispatcher.fencing_token().as_abstract_id(),
        };
        leaders.run_async(move |l, _| {
            l.leaders.resource_manager = Some(rm_leader);
            l.leaders.dispatcher = Some(dispatcher_leader);
        });
        let rest = match settings.rest {
            Some(rest_config) => {
                let gateway: Arc<dyn RestfulGateway> = Arc::new(dispatcher.self_gateway());
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
        Ok(JobManagerRunner {
            metrics,
            _jm_metrics: jm_metrics,
            service,
            leaders,
            resource_manager,
            dispatcher,
            rest,
            blob_server,
        })
    }

    /// The RPC service.
    pub fn service(&self) -> &RpcService {
        &self.service
    }

    /// The JobManager process's metrics (what its `/metrics` shows).
    pub fn metrics(&self) -> &MetricRegistry {
        &self.metrics
    }

    /// The Dispatcher.
    pub fn dispatcher(&self) -> &RpcServer<Dispatcher> {
        &self.dispatcher
    }

    /// The ResourceManager.
    pub fn resource_manager(&self) -> &RpcServer<ResourceManager> {
        &self.resource_manager
    }

    /// The BlobServer.
    pub fn blob_server(&self) -> &BlobServer {
        &self.blob_server
    }

    /// The REST API's bound address.
    pub fn rest_address(&self) -> Option<std::net::SocketAddr> {
        self.rest.as_ref().map(|r| r.local_addr())
    }

    /// Stops the REST API, every RPC endpoint (running jobs are suspended), and the BlobServer.
    pub async fn close(mut self) -> Result<(), EntrypointError> {
        if let Some(rest) = self.rest.take() {
            rest.stop().await;
        }
        let _ = &self.leaders;
        let closed = self.service.close().await;
        self.blob_server.close().await;
        closed?;
        Ok(())
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
