//! Configuration of an rflink process: a typed [`Configuration`] built in layers from Flink's
//! key names.
//!
//! # Layers
//!
//! [`ConfigLoader`] builds a configuration from four layers, lowest priority first; each one
//! overrides the ones before it, key by key:
//!
//! 1. **Built-in defaults**: [`Configuration::default`], listed in `conf/rflink.yaml`.
//! 2. **The configuration file** (`--config rflink.yaml`): YAML, with keys either flat
//!    (`taskmanager.numberOfTaskSlots: 4`, as Flink 1's `flink-conf.yaml`) or nested
//!    (`taskmanager: {numberOfTaskSlots: 4}`, as Flink 2's `config.yaml`), or a mix.
//! 3. **Environment variables** `RFLINK__SECTION__KEY`: the rest of the name split at `__` gives
//!    the dotted key, matched case-insensitively, with `_` inside a segment read as `-`.
//!    `RFLINK__HEARTBEAT__RPC_FAILURE_THRESHOLD` sets `heartbeat.rpc-failure-threshold` and
//!    `RFLINK__TASKMANAGER__NUMBEROFTASKSLOTS` sets `taskmanager.numberOfTaskSlots`. Variables
//!    not starting with `RFLINK__` are ignored. The environment is passed in explicitly
//!    ([`ConfigLoader::env`]); [`ConfigLoader::process_env`] reads the process's own.
//! 4. **Dynamic properties** `-D key=value`, in order (a later one wins).
//!
//! Keys are case-sensitive in the file and in `-D`, as in Flink. Within one layer a deprecated
//! alias (`pekko.ask.timeout`) never overrides its current key (`rpc.ask-timeout`).
//!
//! # The key table
//!
//! Every key is one line of the table in `keys.rs` ([`keys`]): its name, the field it sets, the
//! kind of value it takes ([`ValueKind`]), deprecated aliases and a one-line description. The
//! table drives parsing, printing ([`Configuration::to_entries`], for the REST endpoint
//! `/jobmanager/config`), the environment mapping, typo suggestions and the annotated template
//! `conf/rflink.yaml` ([`template`]); a test fails when the checked-in template drifts. Adding a
//! key is a field with its default in a section struct below plus one line in the table.
//!
//! Keys are Flink's where Flink has one (`jobmanager.rpc.port`, `rest.port`,
//! `taskmanager.numberOfTaskSlots`, `heartbeat.interval`, `blob.server.port`, ...). Flink's
//! `pekko.*` keys become `rpc.*` ones, since rflink's RPC layer is not Pekko; the Pekko (and
//! older Akka) names are still accepted with a warning.
//!
//! # Values
//!
//! * durations as in Flink: `10 s`, `10s`, `500 ms`, `1 min`, `5min`, `2 h`, `1d`; a bare number
//!   is milliseconds, except for keys Flink types as seconds
//!   ([`ValueKind::Seconds`], `blob.service.cleanup.interval`);
//! * sizes as Flink's `MemorySize`, 1024-based: `10485760b`, `64kb`, `10 mb`, `1gb`, `32 kib`;
//!   a bare number is bytes;
//! * ports `0..=65535`, 0 picking a free port (Flink's port ranges are not supported);
//! * booleans `true`/`false`; whole numbers; strings; paths. An empty value unsets an optional
//!   key (`taskmanager.host`, `blob.storage.directory`) and is an error for any other.
//!
//! # Errors
//!
//! Nothing stops at the first problem. Unreadable files, YAML syntax errors, unknown keys (with
//! the closest known key when it looks like a typo), malformed `-D` entries and environment
//! names, values that do not parse, and the cross-field rules of [`Configuration::validate`]
//! are all collected into one [`ConfigError`], each [`ConfigProblem`] naming its
//! [`ConfigSource`] and key; its `Display` lists them one per line. A bad value is reported even
//! when a higher layer overrides it: a broken file stays broken.
//!
//! # Use
//!
//! There is no global configuration: a component takes the [`Configuration`] (or just its
//! section) in its constructor, so a MiniCluster can run a JobManager and TaskManagers with
//! different configurations in one process. Tests build one directly with struct update
//! syntax. [`Configuration::rpc_config`] derives the RPC layer's
//! [`RpcConfig`] for a JobManager or a TaskManager.

mod error;
mod keys;
mod loader;
mod validate;
mod value;

use std::path::PathBuf;
use std::time::Duration;

use rflink_rpc::security::{
    ClusterSecret, SecurityError, Sensitive, TlsContext, TlsFiles, TransportSecurity, HIDDEN,
};
use rflink_rpc::RpcConfig;

pub use error::{ConfigError, ConfigProblem, ConfigSource, ProblemKind};
pub use keys::{env_var_name, find_key, keys, template, KeySpec, ValueKind, ENV_PREFIX};
pub use loader::ConfigLoader;
pub use value::{format_duration, format_size, parse_duration, parse_duration_with, parse_size};

/// The whole configuration of an rflink process, one section per area.
///
/// Every field's doc names its key and default; `conf/rflink.yaml` lists them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Configuration {
    /// `cluster.*`: identity of the cluster.
    pub cluster: ClusterConfig,
    /// `jobmanager.*`: where the JobManager listens and is reached.
    pub jobmanager: JobManagerConfig,
    /// `rest.*`: the REST endpoint.
    pub rest: RestConfig,
    /// `taskmanager.*`: a TaskManager's slots, addresses and timeouts.
    pub taskmanager: TaskManagerConfig,
    /// `heartbeat.*`: liveness between JobMaster, ResourceManager and TaskExecutors.
    pub heartbeat: HeartbeatConfig,
    /// `cluster.registration.*`: retrying registrations.
    pub registration: RegistrationConfig,
    /// `blob.*`: the BlobServer and its caches.
    pub blob: BlobConfig,
    /// `rpc.*`: the RPC layer.
    pub rpc: RpcSettings,
    /// `slot.*`: the JobMaster's slot pool.
    pub slot: SlotConfig,
    /// `parallelism.*`: job execution defaults.
    pub execution: ExecutionConfig,
    /// `minicluster.*`: the in-process cluster.
    pub minicluster: MiniClusterConfig,
    /// `taskmanager.network.*`, `taskmanager.memory.segment-size`: the data plane.
    pub network: NetworkSettings,
    /// `restart-strategy.*`, `jobmanager.execution.failover-strategy`: what a failure restarts.
    pub restart: RestartConfig,
    /// `execution.checkpointing.*`: periodic checkpoints and where they are stored.
    pub checkpointing: CheckpointingConfig,
    /// `metrics.*`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `security.*`: the cluster secret, internal and REST TLS.
    pub security: SecurityConfig,
    /// `high-availability.*`: leader election and durable job metadata.
    pub high_availability: HighAvailabilityConfig,
}

/// `high-availability.*`: standby JobManagers behind a leader elected in etcd (see
/// [`crate::highavailability`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HighAvailabilityConfig {
    /// `high-availability.type`, default `none`: `none` (one JobManager, metadata in memory) or
    /// `etcd`.
    pub kind: String,
    /// `high-availability.etcd.endpoints`, default unset: comma-separated etcd client URLs such
    /// as `http://etcd:2379` (plain HTTP: TLS to etcd is not built); required with `etcd`.
    pub etcd_endpoints: Option<String>,
    /// `high-availability.cluster-id`, default `/default`: the namespace of this cluster's keys
    /// (`/rflink/<cluster-id>/...`), so clusters can share one etcd.
    pub cluster_id: String,
    /// `high-availability.etcd.lease-ttl`, default 5 s: a leader that cannot renew its lease for
    /// this long steps down, and a standby takes over after it.
    pub lease_ttl: Duration,
    /// `high-availability.storageDir`, default unset: shared storage every JobManager reaches;
    /// with HA the BlobServer keeps its files under `<storageDir>/blob` (unless
    /// `blob.storage.directory` is set), so a new leader serves the jobs' artifacts.
    pub storage_dir: Option<PathBuf>,
}

impl Default for HighAvailabilityConfig {
    fn default() -> Self {
        HighAvailabilityConfig {
            kind: "none".into(),
            etcd_endpoints: None,
            cluster_id: "/default".into(),
            lease_ttl: Duration::from_secs(5),
            storage_dir: None,
        }
    }
}

impl HighAvailabilityConfig {
    /// Whether etcd HA is configured.
    pub fn is_etcd(&self) -> bool {
        self.kind.eq_ignore_ascii_case("etcd")
    }

    /// The etcd endpoints, trimmed, empty entries dropped.
    pub fn endpoints(&self) -> Vec<String> {
        self.etcd_endpoints
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The key prefix of this cluster: `/rflink/<cluster-id>/`.
    pub fn namespace(&self) -> String {
        let id = self.cluster_id.trim_matches('/');
        if id.is_empty() {
            "/rflink/default/".into()
        } else {
            format!("/rflink/{id}/")
        }
    }
}

/// `security.*`: how the cluster's connections are secured (see
/// [`rflink_rpc::security`]). Everything is off by default; the same settings must hold on
/// every node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// `security.cluster-secret`, default unset: the shared secret every RPC, blob and data
    /// connection proves in its handshake. Never printed (`******`).
    pub cluster_secret: Option<Sensitive>,
    /// `security.cluster-secret-file`, default unset: a file holding the secret.
    pub cluster_secret_file: Option<PathBuf>,
    /// `security.ssl.internal.enabled`, default false: mutual TLS on internal connections.
    pub internal_ssl: bool,
    /// `security.ssl.internal.cert`: this node's PEM certificate chain.
    pub internal_cert: Option<PathBuf>,
    /// `security.ssl.internal.key`: its PEM private key.
    pub internal_key: Option<PathBuf>,
    /// `security.ssl.internal.truststore`: the PEM CA certificates peers must chain to.
    pub internal_truststore: Option<PathBuf>,
    /// `security.ssl.rest.enabled`, default false: HTTPS on the REST endpoint.
    pub rest_ssl: bool,
    /// `security.ssl.rest.cert`: the REST server's PEM certificate chain.
    pub rest_cert: Option<PathBuf>,
    /// `security.ssl.rest.key`: its PEM private key.
    pub rest_key: Option<PathBuf>,
    /// `security.ssl.rest.truststore`: the PEM CA certificates REST clients trust.
    pub rest_truststore: Option<PathBuf>,
}

/// `metrics.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `metrics.reporter.prom.port`, default `9249-9260`: the port of a TaskManager's
    /// Prometheus endpoint (`/metrics`), or a range of which the first free port is taken (so
    /// several TaskManagers share a host); 0 picks any free port; `off` disables the endpoint.
    /// The JobManager serves `/metrics` on its REST port.
    pub prom_port: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            prom_port: "9249-9260".into(),
        }
    }
}

/// `cluster.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `cluster.id`, default `default`: RPC peers must present the same id in the connection
    /// handshake, so two clusters on one network cannot talk to each other by mistake.
    pub id: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            id: "default".into(),
        }
    }
}

/// `jobmanager.*`.
///
/// The bind host defaults to `localhost` like the `config.yaml` Flink ships, so a fresh node is
/// not reachable from the network; containers set `jobmanager.bind-host: 0.0.0.0` together with
/// the address others use in `jobmanager.rpc.address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobManagerConfig {
    /// `jobmanager.rpc.address`, default `localhost`: the host TaskManagers and clients use to
    /// reach the JobManager; advertised, so never a wildcard.
    pub rpc_address: String,
    /// `jobmanager.rpc.port`, default 6123: the JobManager's RPC port; 0 picks a free one.
    pub rpc_port: u16,
    /// `jobmanager.bind-host`, default `localhost`: the local address the RPC listener binds.
    pub bind_host: String,
}

impl Default for JobManagerConfig {
    fn default() -> Self {
        JobManagerConfig {
            rpc_address: "localhost".into(),
            rpc_port: 6123,
            bind_host: "localhost".into(),
        }
    }
}

/// `rest.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestConfig {
    /// `rest.address`, default `localhost`: the host clients use to reach the REST endpoint.
    pub address: String,
    /// `rest.port`, default 8081: the port the REST server binds and clients connect to; 0 picks
    /// a free one.
    pub port: u16,
    /// `rest.bind-address`, default `localhost`: the local address the REST server binds.
    pub bind_address: String,
    /// `web.refresh-interval`, default 3 s: how often the web dashboard polls (told to it by
    /// `/config`).
    pub refresh_interval: Duration,
    /// `web.ui.dir`, default unset: a directory of static files (a web UI such as the `web/`
    /// folder of Flink's `flink-dist` jar) the JobManager's REST server serves at `/` instead of
    /// rflink's built-in dashboard; the REST API keeps its paths. Must hold an `index.html`.
    pub ui_dir: Option<PathBuf>,
    /// `rest.auth.token`, default unset: the bearer token (`Authorization: Bearer <token>`)
    /// every mutating request must carry; without one, a 401 and no change. Never printed.
    pub auth_token: Option<Sensitive>,
    /// `rest.auth.token-file`, default unset: a file holding the token.
    pub auth_token_file: Option<PathBuf>,
    /// `rest.auth.protect-reads`, default false: require the token on reads too.
    pub auth_protect_reads: bool,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            address: "localhost".into(),
            port: 8081,
            bind_address: "localhost".into(),
            refresh_interval: Duration::from_secs(3),
            ui_dir: None,
            auth_token: None,
            auth_token_file: None,
            auth_protect_reads: false,
        }
    }
}

/// `taskmanager.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskManagerConfig {
    /// `taskmanager.numberOfTaskSlots`, default 1: slots this TaskManager offers.
    pub number_of_task_slots: u32,
    /// `taskmanager.host`, default unset: the host other nodes use to reach this TaskManager;
    /// unset means the bind host. Required when the bind host is a wildcard.
    pub host: Option<String>,
    /// `taskmanager.bind-host`, default `localhost`: the local address the RPC listener binds.
    pub bind_host: String,
    /// `taskmanager.rpc.port`, default 0 (a free port): the TaskManager's RPC port.
    pub rpc_port: u16,
    /// `taskmanager.data.port`, default 0 (a free port): the shuffle (data) server's port.
    pub data_port: u16,
    /// `taskmanager.registration.timeout`, default 5 min: a TaskManager that has not registered
    /// at a ResourceManager within this time fails.
    pub registration_timeout: Duration,
    /// `taskmanager.slot.timeout`, default 10 s: a slot allocated but not activated, or left
    /// inactive, this long is freed.
    pub slot_timeout: Duration,
}

impl Default for TaskManagerConfig {
    fn default() -> Self {
        TaskManagerConfig {
            number_of_task_slots: 1,
            host: None,
            bind_host: "localhost".into(),
            rpc_port: 0,
            data_port: 0,
            registration_timeout: Duration::from_secs(5 * 60),
            slot_timeout: Duration::from_secs(10),
        }
    }
}

/// `heartbeat.*`.
///
/// rflink's defaults (1 s / 5 s) are far below Flink's (10 s / 50 s) on purpose. Flink's
/// generous timeout rides out JVM garbage-collection pauses, which rflink does not have. And a
/// peer whose connection closes (its process exited or crashed) is reported at once by the RPC
/// layer, so the heartbeat timeout only has to catch *silent* failures: a frozen process or a
/// cut network, where nothing arrives any more. Detecting those in seconds rather than a minute
/// gets a job restarted that much sooner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// `heartbeat.interval`, default 1 s (Flink: 10 s): how often heartbeat requests are sent.
    pub interval: Duration,
    /// `heartbeat.timeout`, default 5 s (Flink: 50 s): silence after which a peer is declared
    /// dead. Must exceed the interval.
    pub timeout: Duration,
    /// `heartbeat.rpc-failure-threshold`, default 2: consecutive failed heartbeat RPCs that
    /// declare a peer dead before the timeout; -1 disables.
    pub rpc_failure_threshold: i32,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            rpc_failure_threshold: 2,
        }
    }
}

/// `cluster.registration.*`: how TaskExecutors and JobMasters retry registering at the
/// ResourceManager (Flink's `RetryingRegistration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// `cluster.registration.initial-timeout`, default 100 ms: timeout of the first attempt;
    /// doubles per attempt up to the max timeout.
    pub initial_timeout: Duration,
    /// `cluster.registration.max-timeout`, default 30 s: upper bound of the attempt timeout.
    pub max_timeout: Duration,
    /// `cluster.registration.error-delay`, default 10 s: pause after an attempt failed with an
    /// error.
    pub error_delay: Duration,
    /// `cluster.registration.refused-registration-delay`, default 30 s: pause after the other
    /// side refused the registration.
    pub refused_registration_delay: Duration,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            initial_timeout: Duration::from_millis(100),
            max_timeout: Duration::from_secs(30),
            error_delay: Duration::from_secs(10),
            refused_registration_delay: Duration::from_secs(30),
        }
    }
}

/// `blob.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobConfig {
    /// `blob.server.port`, default 0 (a free port): the BlobServer's port on the JobManager.
    pub server_port: u16,
    /// `blob.storage.directory`, default unset: where blob files are stored; unset means a
    /// fresh temporary directory chosen when the BlobServer or cache starts.
    pub storage_directory: Option<PathBuf>,
    /// `blob.offload.minsize`, default 1 mb: payloads (task deployment data) of at least this
    /// many bytes go through the BlobServer instead of inline in an RPC message. Must be below
    /// `rpc.max-frame-size`.
    pub offload_min_size: u64,
    /// `blob.service.cleanup.interval`, default 3600 s: how often unused cached blobs are
    /// deleted. A bare number is seconds, as in Flink.
    pub cleanup_interval: Duration,
    /// `blob.fetch.retries`, default 5: retries of a failed blob download.
    pub fetch_retries: u32,
}

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig {
            server_port: 0,
            storage_directory: None,
            offload_min_size: 1 << 20,
            cleanup_interval: Duration::from_secs(3600),
            fetch_retries: 5,
        }
    }
}

/// `rpc.*`: the runtime's view of the RPC layer's settings; [`Configuration::rpc_config`] turns
/// them, with a role's addresses, into an [`RpcConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcSettings {
    /// `rpc.ask-timeout` (Flink `pekko.ask.timeout`), default 10 s: default timeout of every
    /// ask.
    pub ask_timeout: Duration,
    /// `rpc.connect-timeout` (Flink `pekko.tcp.timeout`, 20 s), default 10 s: timeout to open a
    /// connection and finish its handshake.
    pub connect_timeout: Duration,
    /// `rpc.max-frame-size` (Flink `pekko.framesize`), default 10 mb: largest message or
    /// response sent or accepted, in bytes.
    pub max_frame_size: u64,
    /// `rpc.force-invocation-serialization` (Flink `pekko.rpc.force-invocation-serialization`),
    /// default false: encode local calls too, so tests prove every message survives the wire.
    pub force_invocation_serialization: bool,
    /// `rpc.mailbox-capacity`, default 1024: capacity of each endpoint's mailbox for local asks.
    pub mailbox_capacity: usize,
    /// `rpc.max-inbound-in-flight`, default 4096: requests one connection may have queued at its
    /// endpoints before it stops reading (TCP backpressure on the sender).
    pub max_inbound_in_flight: usize,
}

impl Default for RpcSettings {
    fn default() -> Self {
        RpcSettings {
            ask_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_frame_size: 10 << 20,
            force_invocation_serialization: false,
            mailbox_capacity: 1024,
            max_inbound_in_flight: 4096,
        }
    }
}

/// `slot.*`: the JobMaster's slot pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotConfig {
    /// `slot.request.timeout`, default 5 min: a pending slot request fails after this long.
    pub request_timeout: Duration,
    /// `slot.idle.timeout`, default 50 s: a slot idle this long is returned to its TaskManager.
    pub idle_timeout: Duration,
}

impl Default for SlotConfig {
    fn default() -> Self {
        SlotConfig {
            request_timeout: Duration::from_secs(5 * 60),
            idle_timeout: Duration::from_secs(50),
        }
    }
}

/// `restart-strategy.*` and the failover strategy: Flink's keys and defaults (Flink ≥ 1.19).
///
/// These are cluster-wide defaults; a job's own configuration (`StreamExecutionEnvironment::
/// configure`) overrides each key for that job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartConfig {
    /// `restart-strategy.type`, unset by default: then `exponential-delay` when checkpointing
    /// is on and `none` otherwise, as Flink.
    pub strategy_type: Option<String>,
    /// `restart-strategy.fixed-delay.attempts`, default 1.
    pub fixed_delay_attempts: u32,
    /// `restart-strategy.fixed-delay.delay`, default 1 s.
    pub fixed_delay_delay: Duration,
    /// `restart-strategy.failure-rate.max-failures-per-interval`, default 1.
    pub failure_rate_max_failures: u32,
    /// `restart-strategy.failure-rate.failure-rate-interval`, default 1 min.
    pub failure_rate_interval: Duration,
    /// `restart-strategy.failure-rate.delay`, default 1 s.
    pub failure_rate_delay: Duration,
    /// `restart-strategy.exponential-delay.initial-backoff`, default 1 s.
    pub exponential_initial_backoff: Duration,
    /// `restart-strategy.exponential-delay.max-backoff`, default 1 min.
    pub exponential_max_backoff: Duration,
    /// `restart-strategy.exponential-delay.backoff-multiplier`, default 1.5.
    pub exponential_multiplier: String,
    /// `restart-strategy.exponential-delay.reset-backoff-threshold`, default 1 h.
    pub exponential_reset_threshold: Duration,
    /// `restart-strategy.exponential-delay.jitter-factor`, default 0.1.
    pub exponential_jitter: String,
    /// `restart-strategy.exponential-delay.attempts-before-reset-backoff`, default
    /// 2147483647 (Java's Integer.MAX_VALUE).
    pub exponential_attempts: u32,
    /// `jobmanager.execution.failover-strategy`, default `region`: restart the failed task's
    /// pipelined region; `full` restarts the whole job.
    pub failover_strategy: String,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            strategy_type: None,
            fixed_delay_attempts: 1,
            fixed_delay_delay: Duration::from_secs(1),
            failure_rate_max_failures: 1,
            failure_rate_interval: Duration::from_secs(60),
            failure_rate_delay: Duration::from_secs(1),
            exponential_initial_backoff: Duration::from_secs(1),
            exponential_max_backoff: Duration::from_secs(60),
            exponential_multiplier: "1.5".into(),
            exponential_reset_threshold: Duration::from_secs(3600),
            exponential_jitter: "0.1".into(),
            exponential_attempts: 2_147_483_647,
            failover_strategy: "region".into(),
        }
    }
}

/// `execution.checkpointing.*`: Flink's keys and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointingConfig {
    /// `execution.checkpointing.interval`, unset by default: checkpointing is off.
    pub interval: Option<Duration>,
    /// `execution.checkpointing.timeout`, default 10 min: a checkpoint not complete by then is
    /// aborted.
    pub timeout: Duration,
    /// `execution.checkpointing.max-concurrent-checkpoints`, default 1.
    pub max_concurrent: u32,
    /// `execution.checkpointing.min-pause`, default 0: least time between the end of one
    /// checkpoint and the start of the next.
    pub min_pause: Duration,
    /// `execution.checkpointing.num-retained`, default 1: completed checkpoints kept.
    pub num_retained: usize,
    /// `execution.checkpointing.tolerable-failed-checkpoints`, default 0.
    pub tolerable_failures: u32,
    /// `execution.checkpointing.dir` (Flink's older `state.checkpoints.dir`), unset by default:
    /// then checkpoints go under the JobManager's working directory. On a cluster it must be a
    /// directory every node sees at the same path (a shared volume).
    pub dir: Option<PathBuf>,
    /// `execution.checkpointing.savepoint-dir` (older `state.savepoints.dir`): the default
    /// target of savepoints.
    pub savepoint_dir: Option<PathBuf>,
}

impl Default for CheckpointingConfig {
    fn default() -> Self {
        CheckpointingConfig {
            interval: None,
            timeout: Duration::from_secs(600),
            max_concurrent: 1,
            min_pause: Duration::ZERO,
            num_retained: 1,
            tolerable_failures: 0,
            dir: None,
            savepoint_dir: None,
        }
    }
}

/// Job execution defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionConfig {
    /// `parallelism.default`, default 1: parallelism of operators that do not set their own.
    pub default_parallelism: u32,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            default_parallelism: 1,
        }
    }
}

/// The data plane: network buffers, credit-based flow control, partition requests.
///
/// Flink sizes network memory as a fraction of the TaskManager's memory; rflink counts buffers
/// (Flink's legacy `taskmanager.network.numberOfBuffers`), which is what the flow control
/// reasons about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// `taskmanager.memory.segment-size`, default 32 kb: the size of one network buffer.
    pub segment_size: u64,
    /// `taskmanager.network.numberOfBuffers`, default 2048 (64 MiB at 32 kb): every network
    /// buffer of a TaskManager, shared by all its tasks' partitions and gates.
    pub number_of_buffers: usize,
    /// `taskmanager.network.memory.buffers-per-channel`, default 2: exclusive buffers of each
    /// remote input channel, which is its initial credit.
    pub buffers_per_channel: usize,
    /// `taskmanager.network.memory.floating-buffers-per-gate`, default 8: buffers an input gate
    /// lends to whichever of its channels has a backlog.
    pub floating_buffers_per_gate: usize,
    /// `taskmanager.network.memory.max-buffers-per-channel`, default 10: most buffers one
    /// subpartition may hold queued, so one slow consumer cannot take a producer's whole pool.
    pub max_buffers_per_channel: usize,
    /// `taskmanager.network.local-batch.records`, default 1024 (rflink): most records in one
    /// typed batch handed to a consumer in the same process, which skips serialization.
    pub local_batch_records: usize,
    /// `taskmanager.network.request-backoff.initial`, default 100 ms: first pause before asking
    /// again for a partition whose producer has not registered it yet.
    pub request_backoff_initial: Duration,
    /// `taskmanager.network.request-backoff.max`, default 10 s: the pause doubles up to this,
    /// then the request fails.
    pub request_backoff_max: Duration,
    /// `execution.buffer-timeout.interval`, default 100 ms: longest time a record waits in a
    /// partly filled buffer while its task is busy (Flink's output flusher); an idle task
    /// flushes at once.
    pub buffer_timeout: Duration,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            segment_size: 32 * 1024,
            number_of_buffers: 2048,
            buffers_per_channel: 2,
            floating_buffers_per_gate: 8,
            max_buffers_per_channel: 10,
            local_batch_records: 1024,
            request_backoff_initial: Duration::from_millis(100),
            request_backoff_max: Duration::from_secs(10),
            buffer_timeout: Duration::from_millis(100),
        }
    }
}

/// `minicluster.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniClusterConfig {
    /// `minicluster.number-of-taskmanagers`, default 1: TaskManagers a MiniCluster starts; 0
    /// starts none (tests then add their own).
    pub number_of_taskmanagers: u32,
}

impl Default for MiniClusterConfig {
    fn default() -> Self {
        MiniClusterConfig {
            number_of_taskmanagers: 1,
        }
    }
}

/// The kind of process an [`RpcConfig`] is derived for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRole {
    /// Binds `jobmanager.bind-host`:`jobmanager.rpc.port` and advertises
    /// `jobmanager.rpc.address`.
    JobManager,
    /// Binds `taskmanager.bind-host`:`taskmanager.rpc.port` and advertises `taskmanager.host`
    /// (or the bind host when that is unset).
    TaskManager,
}

impl Configuration {
    /// Checks the rules that single values cannot express (heartbeat timeout above the
    /// interval, at least one slot, frame size within the RPC layer's bounds, ...), reporting
    /// every problem at once. [`ConfigLoader::load`] runs this too, naming the source of each
    /// offending value; called directly, problems name [`ConfigSource::Code`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check(
            self.check()
                .into_iter()
                .map(|(key, message)| {
                    ConfigProblem::new(
                        ConfigSource::Code,
                        Some(key),
                        ProblemKind::Invalid { message },
                    )
                })
                .collect(),
        )
    }

    /// Every key with its value, printed so it parses back, in table order; unset optional keys
    /// are left out and secrets show as `******` (Flink's hidden content). This is what
    /// `/jobmanager/config` shows (Flink's `[{"key", "value"}]`).
    pub fn to_entries(&self) -> Vec<(String, String)> {
        keys()
            .iter()
            .filter_map(|spec| {
                spec.value(self).map(|value| {
                    let shown = if spec.sensitive {
                        HIDDEN.to_string()
                    } else {
                        value
                    };
                    (spec.key.to_string(), shown)
                })
            })
            .collect()
    }

    /// How this node secures its RPC, blob and data connections: the cluster secret (from
    /// `security.cluster-secret` or the file) and mutual TLS (`security.ssl.internal.*`, the
    /// node's own certificate checked against its trust store). Reads the files, so call it
    /// once when a process starts; the errors name the file and what is wrong with it.
    pub fn transport_security(&self) -> Result<TransportSecurity, SecurityError> {
        let s = &self.security;
        let secret = match (&s.cluster_secret, &s.cluster_secret_file) {
            (Some(secret), _) => Some(ClusterSecret::new(secret.expose())?),
            (None, Some(path)) => Some(ClusterSecret::from_file(path)?),
            (None, None) => None,
        };
        let tls = if s.internal_ssl {
            Some(TlsContext::load(&TlsFiles {
                cert: required(&s.internal_cert, "security.ssl.internal.cert")?,
                key: required(&s.internal_key, "security.ssl.internal.key")?,
                truststore: required(&s.internal_truststore, "security.ssl.internal.truststore")?,
            })?)
        } else {
            None
        };
        Ok(TransportSecurity::new(secret, tls).with_timeout(self.rpc.connect_timeout))
    }

    /// The REST bearer token (`rest.auth.token` or the file), if one is configured.
    pub fn rest_token(&self) -> Result<Option<Sensitive>, SecurityError> {
        match (&self.rest.auth_token, &self.rest.auth_token_file) {
            (Some(token), _) => Ok(Some(token.clone())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|err| SecurityError::File {
                    what: "REST token",
                    path: path.clone(),
                    reason: err.to_string(),
                })?;
                let token = Sensitive::new(text.trim());
                if token.expose().is_empty() {
                    return Err(SecurityError::File {
                        what: "REST token",
                        path: path.clone(),
                        reason: "is empty".into(),
                    });
                }
                Ok(Some(token))
            }
            (None, None) => Ok(None),
        }
    }

    /// The printed value of `key` (or of the key a deprecated alias stands for); `None` for an
    /// unknown key or an unset optional one.
    pub fn get(&self, key: &str) -> Option<String> {
        keys::resolve(key).and_then(|resolved| resolved.spec.value(self))
    }

    /// Sets `key` (or the key a deprecated alias stands for) from its text form, as a `-D`
    /// property would. Does not run [`validate`](Self::validate).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ProblemKind> {
        let Some(resolved) = keys::resolve(key) else {
            return Err(ProblemKind::UnknownKey {
                suggestion: keys::suggest(key).map(str::to_string),
            });
        };
        resolved
            .spec
            .apply(self, value)
            .map_err(|reason| ProblemKind::BadValue {
                value: value.to_string(),
                expected: resolved.spec.kind,
                reason,
            })
    }

    /// The RPC layer's configuration for a process of the given role. The result passes
    /// [`RpcConfig::validate`] whenever this configuration passes [`validate`](Self::validate).
    pub fn rpc_config(&self, role: ProcessRole) -> RpcConfig {
        let (bind_host, bind_port, advertised_host) = match role {
            ProcessRole::JobManager => (
                self.jobmanager.bind_host.clone(),
                self.jobmanager.rpc_port,
                Some(self.jobmanager.rpc_address.clone()),
            ),
            ProcessRole::TaskManager => (
                self.taskmanager.bind_host.clone(),
                self.taskmanager.rpc_port,
                self.taskmanager.host.clone(),
            ),
        };
        RpcConfig {
            bind_host,
            bind_port,
            advertised_host,
            advertised_port: None,
            ask_timeout: self.rpc.ask_timeout,
            connect_timeout: self.rpc.connect_timeout,
            max_frame_size: usize::try_from(self.rpc.max_frame_size).unwrap_or(usize::MAX),
            force_serialization: self.rpc.force_invocation_serialization,
            cluster_id: self.cluster.id.clone(),
            max_inbound_in_flight: self.rpc.max_inbound_in_flight,
            mailbox_capacity: self.rpc.mailbox_capacity,
            security: TransportSecurity::default(),
        }
    }
}

fn required(path: &Option<PathBuf>, key: &'static str) -> Result<PathBuf, SecurityError> {
    path.clone().ok_or_else(|| {
        SecurityError::TlsConfig(format!(
            "{key} is not set (security.ssl.internal.enabled needs it)"
        ))
    })
}
