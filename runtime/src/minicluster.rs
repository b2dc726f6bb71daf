//! The whole cluster in one process: a JobManager (leader retrieval, ResourceManager,
//! Dispatcher, optionally REST) and N TaskExecutors. Flink: `MiniCluster`.
//!
//! Each TaskExecutor gets its own RPC service (Flink's `RpcServiceSharing.DEDICATED`), so every
//! control message between JobManager and TaskManagers crosses real loopback TCP on ephemeral
//! ports, exactly as between processes. Used by tests and as the embedded default.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rflink_rpc::{RpcConfig, RpcError, RpcGateway, RpcServer, RpcService};

use crate::blob::{BlobServer, BlobServerConfig};
use crate::client::{build_job_graph, ClientError};
use crate::dispatcher::{
    ClusterOverview, Dispatcher, DispatcherError, JobExceptions, JobResult, RequestClusterOverview,
    RequestJobExceptions, RequestJobResult, RequestJobStatus, SubmitJob,
};
use crate::entrypoint::{
    fresh_work_dir, DataPlaneSettings, EntrypointError, JobManagerRunner, JobManagerSettings,
    LeaderComponents, TaskManagerRunner, TaskManagerSettings,
};
use crate::events::{ClusterEvent, EventSink};
use crate::executiongraph::JobStatus;
use crate::heartbeat::HeartbeatSettings;
use crate::jobgraph::JobGraph;
use crate::network::NetworkConfig;
use crate::registration::RetryPolicy;
use crate::resourcemanager::ResourceManager;
use crate::rest::RestServerConfig;
use crate::taskexecutor::invokable::InvokableRegistry;
use crate::taskexecutor::TaskExecutorSettings;
use crate::tasks::Jobs;
use crate::types::{JobId, ResourceId};

/// How a MiniCluster is built. Flink: `MiniClusterConfiguration`.
#[derive(Debug, Clone)]
pub struct MiniClusterConfig {
    /// TaskExecutors to start (`minicluster.number-of-taskmanagers`). Default 1.
    pub num_task_managers: u32,
    /// Slots each (`taskmanager.numberOfTaskSlots`). Default 1.
    pub slots_per_task_manager: u32,
    /// Heartbeats.
    pub heartbeat: HeartbeatSettings,
    /// Registration retries.
    pub registration: RetryPolicy,
    /// `taskmanager.registration.timeout`.
    pub registration_timeout: Duration,
    /// `taskmanager.slot.timeout`.
    pub slot_timeout: Duration,
    /// `slot.request.timeout`.
    pub slot_request_timeout: Duration,
    /// Template for every RPC service (bind host, timeouts, frame size, forced serialization).
    /// Its `security` secures the BlobServer and the data connections too.
    pub rpc: RpcConfig,
    /// Start the REST API on an ephemeral port.
    pub rest: bool,
    /// With [`rest`](Self::rest): a directory of a web UI served at `/` instead of the built-in
    /// dashboard ([`RestServerConfig::ui_dir`], `web.ui.dir`). Default unset.
    pub rest_ui_dir: Option<PathBuf>,
    /// The invokables TaskExecutors can run.
    pub invokables: InvokableRegistry,
    /// `blob.offload.minsize`. Default 1 MiB.
    pub blob_offload_min_size: u64,
    /// `blob.service.cleanup.interval`. Default 1 h.
    pub blob_cleanup_interval: Duration,
    /// The streaming jobs TaskExecutors can run.
    pub jobs: Jobs,
    /// Each TaskExecutor's data plane (buffers, flow control); `None` starts none.
    pub network: Option<NetworkConfig>,
    /// The configuration jobs run with: restart strategy, checkpointing (a job's own entries
    /// override it). Default: Flink's defaults.
    pub job_defaults: crate::config::Configuration,
    /// Give each TaskManager a Prometheus endpoint on an ephemeral port. Default off.
    pub prometheus: bool,
    /// The high-availability services the JobManager campaigns through; `None`: standalone
    /// (`high-availability.type: none`). Tests pass their own to exercise leadership changes
    /// and job recovery in process.
    pub ha: Option<crate::highavailability::SharedHaServices>,
}

impl Default for MiniClusterConfig {
    fn default() -> Self {
        MiniClusterConfig {
            num_task_managers: 1,
            slots_per_task_manager: 1,
            heartbeat: HeartbeatSettings::default(),
            registration: RetryPolicy::default(),
            registration_timeout: Duration::from_secs(300),
            slot_timeout: Duration::from_secs(10),
            slot_request_timeout: Duration::from_secs(300),
            rpc: RpcConfig::default(),
            rest: false,
            rest_ui_dir: None,
            invokables: InvokableRegistry::with_testing_invokables(),
            blob_offload_min_size: 1024 * 1024,
            blob_cleanup_interval: Duration::from_secs(3600),
            jobs: Jobs::default(),
            network: Some(NetworkConfig::default()),
            job_defaults: crate::config::Configuration::default(),
            prometheus: false,
            ha: None,
        }
    }
}

/// Why a MiniCluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MiniClusterError {
    /// A process could not start.
    #[error(transparent)]
    Start(#[from] EntrypointError),
    /// The RPC layer failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The Dispatcher refused.
    #[error(transparent)]
    Dispatcher(#[from] DispatcherError),
    /// A wait ran out.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        timeout: Duration,
    },
    /// No TaskManager with that index runs.
    #[error("no task manager {0}")]
    NoSuchTaskManager(usize),
    /// The job's graph could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The actix system could not run.
    #[error("cannot run the cluster: {0}")]
    System(String),
}

/// Runs streaming job `entry` with `args` on a fresh MiniCluster in this thread and returns
/// its result once it ends, then stops the cluster. The cluster gets as many slots as the
/// job's widest vertex needs (slot sharing), on `config.num_task_managers` TaskManagers.
/// Flink: `StreamExecutionEnvironment.execute()` in a local environment.
pub fn execute_locally(
    mut config: MiniClusterConfig,
    entry: &str,
    args: &[String],
    timeout: Duration,
) -> Result<JobResult, MiniClusterError> {
    let job_graph = build_job_graph(&config.jobs, entry, args)?;
    let needed = job_graph
        .vertices
        .iter()
        .map(|v| v.parallelism)
        .max()
        .unwrap_or(1);
    let tms = config.num_task_managers.max(1);
    config.num_task_managers = tms;
    config.slots_per_task_manager = config.slots_per_task_manager.max(needed.div_ceil(tms));
    let system = actix_rt::System::new();
    system.block_on(async move {
        let cluster = MiniCluster::start(config).await?;
        let result = async {
            let job_id = cluster.submit_job(job_graph).await?;
            cluster.request_job_result(job_id, timeout).await
        }
        .await;
        let closed = cluster.close().await;
        let result = result?;
        closed?;
        Ok(result)
    })
}

/// A running MiniCluster.
pub struct MiniCluster {
    config: MiniClusterConfig,
    events: EventSink,
    job_manager: Option<JobManagerRunner>,
    /// Its leader components: a MiniCluster has no high availability, so they never change.
    leader: LeaderComponents,
    task_managers: Vec<Option<TaskManagerRunner>>,
    fatal_errors: Arc<Mutex<Vec<String>>>,
    work_dir: PathBuf,
}

impl MiniCluster {
    /// Starts the JobManager components and the TaskManagers (inside an actix system).
    pub async fn start(config: MiniClusterConfig) -> Result<MiniCluster, MiniClusterError> {
        let events = EventSink::default();
        let work_dir = fresh_work_dir("minicluster")?;
        let settings = JobManagerSettings {
            rpc: config.rpc.clone(),
            rest: config.rest.then(|| RestServerConfig {
                bind_host: config.rpc.bind_host.clone(),
                port: 0,
                ui_dir: config.rest_ui_dir.clone(),
                ..RestServerConfig::default()
            }),
            blob: BlobServerConfig {
                bind_host: config.rpc.bind_host.clone(),
                storage_dir: work_dir.join("blob-server"),
                security: config.rpc.security.clone(),
                ..BlobServerConfig::default()
            },
            heartbeat: config.heartbeat,
            registration: config.registration,
            slot_request_timeout: config.slot_request_timeout,
            blob_offload_min_size: config.blob_offload_min_size,
            config_entries: Vec::new(),
            job_defaults: config.job_defaults.clone(),
        };
        let job_manager = match config.ha.clone() {
            Some(ha) => JobManagerRunner::start_with_ha(settings, ha, events.clone()).await?,
            None => JobManagerRunner::start(settings, events.clone()).await?,
        };
        let leader = job_manager.wait_leading(Duration::from_secs(30)).await?;
        let mut cluster = MiniCluster {
            config,
            events,
            job_manager: Some(job_manager),
            leader,
            task_managers: Vec::new(),
            fatal_errors: Arc::default(),
            work_dir,
        };
        for _ in 0..cluster.config.num_task_managers {
            cluster.start_task_manager().await?;
        }
        Ok(cluster)
    }

    /// The JobManager: its current leader components, its HA services.
    pub fn job_manager(&self) -> &JobManagerRunner {
        self.jm()
    }

    fn jm(&self) -> &JobManagerRunner {
        self.job_manager
            .as_ref()
            .expect("the job manager runs until close() consumes the cluster")
    }

    /// Starts one more TaskManager; returns its index.
    pub async fn start_task_manager(&mut self) -> Result<usize, MiniClusterError> {
        let fatal = Arc::clone(&self.fatal_errors);
        let index = self.task_managers.len();
        let settings = TaskManagerSettings {
            data: self
                .config
                .network
                .clone()
                .map(|network| DataPlaneSettings {
                    network: NetworkConfig {
                        security: self.config.rpc.security.clone(),
                        ..network
                    },
                    bind_host: self.config.rpc.bind_host.clone(),
                    advertised_host: self
                        .config
                        .rpc
                        .advertised_host
                        .clone()
                        .unwrap_or_else(|| self.config.rpc.bind_host.clone()),
                    port: 0,
                    advertised_port: None,
                }),
            rpc: self.config.rpc.clone(),
            task_executor: TaskExecutorSettings {
                jobmanager_address: self.jm().service().address().to_string(),
                number_of_slots: self.config.slots_per_task_manager,
                heartbeat: self.config.heartbeat,
                registration: self.config.registration,
                registration_timeout: self.config.registration_timeout,
                slot_timeout: self.config.slot_timeout,
                shuffle: None,
                jobs: self.config.jobs.clone(),
                invokables: self.config.invokables.clone(),
                fatal_error: Arc::new(move |msg| {
                    fatal.lock().unwrap_or_else(|p| p.into_inner()).push(msg)
                }),
                blob_cache_dir: self.work_dir.join(format!("blob-cache-{index}")),
                blob_cleanup_interval: self.config.blob_cleanup_interval,
                blob_security: self.config.rpc.security.clone(),
                metrics: crate::metrics::MetricRegistry::new(),
                metrics_address: None,
                leader_watch: None,
            },
            prometheus: self
                .config
                .prometheus
                .then(|| (self.config.rpc.bind_host.clone(), "0".to_string())),
        };
        let tm = TaskManagerRunner::start(settings, self.events.clone()).await?;
        self.task_managers.push(Some(tm));
        Ok(index)
    }

    /// Stops TaskManager `i` (its service closes: the JobManager sees its connection end).
    pub async fn terminate_task_manager(
        &mut self,
        i: usize,
    ) -> Result<ResourceId, MiniClusterError> {
        let tm = self
            .task_managers
            .get_mut(i)
            .and_then(Option::take)
            .ok_or(MiniClusterError::NoSuchTaskManager(i))?;
        let resource_id = tm.resource_id();
        tm.close().await?;
        Ok(resource_id)
    }

    /// TaskManager `i`, if running.
    pub fn task_manager(&self, i: usize) -> Option<&TaskManagerRunner> {
        self.task_managers.get(i).and_then(Option::as_ref)
    }

    /// The cluster's events from now on.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    /// A gateway to the Dispatcher.
    pub fn dispatcher_gateway(&self) -> RpcGateway<Dispatcher> {
        self.leader.dispatcher.self_gateway()
    }

    /// The JobManager's RPC service.
    pub fn jm_service(&self) -> &RpcService {
        self.jm().service()
    }

    /// The ResourceManager.
    pub fn resource_manager(&self) -> &RpcServer<ResourceManager> {
        &self.leader.resource_manager
    }

    /// The REST API's address, if it runs.
    pub fn rest_address(&self) -> Option<std::net::SocketAddr> {
        self.jm().rest_address()
    }

    /// The BlobServer.
    pub fn blob_server(&self) -> &BlobServer {
        self.jm().blob_server()
    }

    /// Fatal errors reported by TaskExecutors.
    pub fn fatal_errors(&self) -> Vec<String> {
        self.fatal_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Submits a job (directly to the Dispatcher, as Flink's MiniCluster does).
    pub async fn submit_job(&self, job_graph: JobGraph) -> Result<JobId, MiniClusterError> {
        let job_id = job_graph.job_id;
        self.dispatcher_gateway()
            .ask(SubmitJob { job_graph })
            .await??;
        Ok(job_id)
    }

    /// A job's status.
    pub async fn job_status(&self, job_id: JobId) -> Result<JobStatus, MiniClusterError> {
        Ok(self
            .dispatcher_gateway()
            .ask(RequestJobStatus { job_id })
            .await??)
    }

    /// A job's failures.
    pub async fn job_exceptions(&self, job_id: JobId) -> Result<JobExceptions, MiniClusterError> {
        Ok(self
            .dispatcher_gateway()
            .ask(RequestJobExceptions { job_id })
            .await??)
    }

    /// Cluster-wide counts.
    pub async fn overview(&self) -> Result<ClusterOverview, MiniClusterError> {
        Ok(self
            .dispatcher_gateway()
            .ask(RequestClusterOverview)
            .await??)
    }

    /// Polls (every 10 ms) until `check` holds for the job's status, at most `timeout`.
    pub async fn wait_for_job_status(
        &self,
        job_id: JobId,
        timeout: Duration,
        check: impl Fn(JobStatus) -> bool,
    ) -> Result<JobStatus, MiniClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.job_status(job_id).await?;
            if check(status) {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MiniClusterError::Timeout {
                    what: format!("job {job_id} (last status {status})"),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Builds streaming job `entry` of this cluster's job registry with `args` (as the CLI
    /// does), submits it and waits for its result, at most `timeout`. Flink:
    /// `LocalStreamEnvironment.execute()`.
    pub async fn execute(
        &self,
        entry: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<JobResult, MiniClusterError> {
        let job_graph = build_job_graph(&self.config.jobs, entry, args)?;
        let job_id = self.submit_job(job_graph).await?;
        self.request_job_result(job_id, timeout).await
    }

    /// Waits for the job's result (it reached a terminal status), at most `timeout`.
    pub async fn request_job_result(
        &self,
        job_id: JobId,
        timeout: Duration,
    ) -> Result<JobResult, MiniClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(result) = self
                .dispatcher_gateway()
                .ask(RequestJobResult { job_id })
                .await??
            {
                return Ok(result);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MiniClusterError::Timeout {
                    what: format!("the result of job {job_id}"),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the ResourceManager knows `n` TaskManagers with all their slots, at most
    /// `timeout`.
    pub async fn wait_for_task_managers(
        &self,
        n: u32,
        timeout: Duration,
    ) -> Result<ClusterOverview, MiniClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let slots = n * self.config.slots_per_task_manager;
        loop {
            let overview = self.overview().await?;
            if overview.taskmanagers == n && overview.slots_total == slots {
                return Ok(overview);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MiniClusterError::Timeout {
                    what: format!("{n} task managers (have {overview:?})"),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops everything: TaskManagers, then the JobManager; removes the cluster's files.
    pub async fn close(mut self) -> Result<(), MiniClusterError> {
        for tm in self.task_managers.iter_mut().filter_map(Option::take) {
            let _ = tm.close().await;
        }
        let closed = match self.job_manager.take() {
            Some(jm) => jm.close().await,
            None => Ok(()),
        };
        let dir = self.work_dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        closed?;
        Ok(())
    }
}
