//! The key table: one line per configuration key, driving parsing, printing, the environment
//! mapping, suggestions for typos and the `conf/rflink.yaml` template.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use super::value::{format_duration, format_size, parse_duration, parse_duration_with, parse_size};
use super::Configuration;
use rflink_rpc::security::Sensitive;

/// The kind of value a key takes, which decides how its text is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueKind {
    /// A duration such as `10 s`; a bare number is milliseconds.
    Duration,
    /// A duration such as `3600 s`; a bare number is seconds (Flink keys typed as seconds).
    Seconds,
    /// A memory size such as `10 mb`, 1024-based; a bare number is bytes.
    Size,
    /// A whole number.
    Int,
    /// `true` or `false`.
    Bool,
    /// Text.
    String,
    /// A file system path.
    Path,
    /// A TCP port, `0..=65535`; 0 picks a free port.
    Port,
    /// Secret text, never shown.
    Secret,
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueKind::Duration => {
                "a duration such as `10 s`, `500 ms` or `5 min` (a bare number is milliseconds)"
            }
            ValueKind::Seconds => "a duration such as `3600 s` or `1 h` (a bare number is seconds)",
            ValueKind::Size => "a size such as `64 kb`, `10 mb` or `1 gb` (a bare number is bytes)",
            ValueKind::Int => "a whole number",
            ValueKind::Bool => "`true` or `false`",
            ValueKind::String => "a string",
            ValueKind::Path => "a path",
            ValueKind::Port => "a port number 0..=65535 (0 picks a free port)",
            ValueKind::Secret => "secret text",
        })
    }
}

/// How the values of one field type are read and printed.
pub(crate) trait Codec {
    type Value;
    const KIND: ValueKind;
    /// Whether an empty value means "unset" (otherwise it is an error).
    const OPTIONAL: bool = false;
    /// Whether the value is a secret, shown as `******` in listings (`/jobmanager/config`).
    const SENSITIVE: bool = false;
    fn parse(text: &str) -> Result<Self::Value, String>;
    /// `None` for an unset optional value.
    fn render(value: &Self::Value) -> Option<String>;
}

/// [`Duration`], bare number in milliseconds.
pub(crate) struct Dur;
impl Codec for Dur {
    type Value = Duration;
    const KIND: ValueKind = ValueKind::Duration;
    fn parse(text: &str) -> Result<Duration, String> {
        parse_duration(text)
    }
    fn render(value: &Duration) -> Option<String> {
        Some(format_duration(*value))
    }
}

/// [`Duration`], bare number in seconds.
pub(crate) struct Secs;
impl Codec for Secs {
    type Value = Duration;
    const KIND: ValueKind = ValueKind::Seconds;
    fn parse(text: &str) -> Result<Duration, String> {
        parse_duration_with(text, Duration::from_secs(1))
    }
    /// Whole seconds print as seconds (`3600 s`), as Flink documents these keys.
    fn render(value: &Duration) -> Option<String> {
        Some(if value.subsec_nanos() == 0 {
            format!("{} s", value.as_secs())
        } else {
            format_duration(*value)
        })
    }
}

/// A size in bytes, as `u64`.
pub(crate) struct Size;
impl Codec for Size {
    type Value = u64;
    const KIND: ValueKind = ValueKind::Size;
    fn parse(text: &str) -> Result<u64, String> {
        parse_size(text)
    }
    fn render(value: &u64) -> Option<String> {
        Some(format_size(*value))
    }
}

/// Integer types with their range, for range errors that name the range.
pub(crate) trait Bounded: TryFrom<i128> + fmt::Display + Copy {
    const MIN: i128;
    const MAX: i128;
}

macro_rules! bounded {
    ($($t:ty),*) => {$(
        impl Bounded for $t {
            const MIN: i128 = <$t>::MIN as i128;
            const MAX: i128 = <$t>::MAX as i128;
        }
    )*};
}
bounded!(u16, u32, i32, u64, usize);

fn parse_int<T: Bounded>(text: &str) -> Result<T, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty value".into());
    }
    let n: i128 = text.parse().map_err(|_| "not a whole number".to_string())?;
    T::try_from(n).map_err(|_| format!("{n} is outside {}..={}", T::MIN, T::MAX))
}

/// A whole number of type `T`.
pub(crate) struct Int<T>(PhantomData<T>);
impl<T: Bounded> Codec for Int<T> {
    type Value = T;
    const KIND: ValueKind = ValueKind::Int;
    fn parse(text: &str) -> Result<T, String> {
        parse_int(text)
    }
    fn render(value: &T) -> Option<String> {
        Some(value.to_string())
    }
}

/// A TCP port.
pub(crate) struct Port;
impl Codec for Port {
    type Value = u16;
    const KIND: ValueKind = ValueKind::Port;
    fn parse(text: &str) -> Result<u16, String> {
        parse_int(text)
    }
    fn render(value: &u16) -> Option<String> {
        Some(value.to_string())
    }
}

/// `true` or `false`, case-insensitive.
pub(crate) struct Bool;
impl Codec for Bool {
    type Value = bool;
    const KIND: ValueKind = ValueKind::Bool;
    fn parse(text: &str) -> Result<bool, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("not a boolean".into()),
        }
    }
    fn render(value: &bool) -> Option<String> {
        Some(value.to_string())
    }
}

/// Required, non-empty text.
pub(crate) struct Str;
impl Codec for Str {
    type Value = String;
    const KIND: ValueKind = ValueKind::String;
    fn parse(text: &str) -> Result<String, String> {
        let text = text.trim();
        if text.is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(text.to_string())
        }
    }
    fn render(value: &String) -> Option<String> {
        Some(value.clone())
    }
}

/// Optional text; empty means unset.
pub(crate) struct OptStr;
impl Codec for OptStr {
    type Value = Option<String>;
    const KIND: ValueKind = ValueKind::String;
    const OPTIONAL: bool = true;
    fn parse(text: &str) -> Result<Option<String>, String> {
        let text = text.trim();
        Ok((!text.is_empty()).then(|| text.to_string()))
    }
    fn render(value: &Option<String>) -> Option<String> {
        value.clone()
    }
}

/// An optional secret; empty means unset. It never prints: `Debug` shows `******`, and
/// [`Configuration::to_entries`] lists it as `******`.
pub(crate) struct OptSecret;
impl Codec for OptSecret {
    type Value = Option<Sensitive>;
    const KIND: ValueKind = ValueKind::Secret;
    const OPTIONAL: bool = true;
    const SENSITIVE: bool = true;
    fn parse(text: &str) -> Result<Option<Sensitive>, String> {
        let text = text.trim();
        Ok((!text.is_empty()).then(|| Sensitive::new(text)))
    }
    fn render(value: &Option<Sensitive>) -> Option<String> {
        value.as_ref().map(|secret| secret.expose().to_string())
    }
}

/// Optional [`Duration`], bare number in milliseconds; empty means unset.
pub(crate) struct OptDur;
impl Codec for OptDur {
    type Value = Option<Duration>;
    const KIND: ValueKind = ValueKind::Duration;
    const OPTIONAL: bool = true;
    fn parse(text: &str) -> Result<Option<Duration>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        parse_duration(text).map(Some)
    }
    fn render(value: &Option<Duration>) -> Option<String> {
        value.map(format_duration)
    }
}

/// Optional path; empty means unset.
pub(crate) struct OptPath;
impl Codec for OptPath {
    type Value = Option<PathBuf>;
    const KIND: ValueKind = ValueKind::Path;
    const OPTIONAL: bool = true;
    fn parse(text: &str) -> Result<Option<PathBuf>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        local_path(text).map(Some)
    }
    fn render(value: &Option<PathBuf>) -> Option<String> {
        value.as_ref().map(|p| p.display().to_string())
    }
}

/// A path, or a `file:` URI as Flink's configurations write them (`file:///data/sp`,
/// `file:/data/sp`, `file://localhost/data/sp`: the path `/data/sp`). Other file systems
/// (`s3://`, `hdfs://`) and remote hosts are refused: rflink uses the local file system.
fn local_path(text: &str) -> Result<PathBuf, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("file:").map(|_| &text[5..]) {
        let path = match rest.strip_prefix("//") {
            None => rest,
            Some(authority_and_path) => {
                let (host, path) = authority_and_path
                    .find('/')
                    .map_or((authority_and_path, ""), |i| authority_and_path.split_at(i));
                if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
                    return Err(format!(
                        "{text:?} names host {host:?}: only local paths are supported"
                    ));
                }
                path
            }
        };
        if path.is_empty() {
            return Err(format!("{text:?} names no path"));
        }
        return Ok(PathBuf::from(path));
    }
    if let Some((scheme, _)) = text.split_once("://") {
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(format!(
                "{text:?}: rflink uses the local file system (a path or a file: URI), not {scheme}:"
            ));
        }
    }
    Ok(PathBuf::from(text))
}

/// One configuration key: its name, kind, documentation and where it lives in
/// [`Configuration`].
#[derive(Debug)]
pub struct KeySpec {
    /// The key, Flink's name where Flink has one (`taskmanager.numberOfTaskSlots`).
    pub key: &'static str,
    /// What kind of value it takes.
    pub kind: ValueKind,
    /// Whether an empty value means "unset" rather than an error.
    pub optional: bool,
    /// Whether the value is a secret: listings show `******` instead.
    pub sensitive: bool,
    /// One line of documentation, as printed in the template.
    pub doc: &'static str,
    /// The section heading it is listed under.
    pub section: &'static str,
    /// Deprecated Flink names that are still accepted, with a warning.
    pub aliases: &'static [&'static str],
    set: fn(&mut Configuration, &str) -> Result<(), String>,
    get: fn(&Configuration) -> Option<String>,
}

impl KeySpec {
    /// Parses `text` and stores it in `config`; the error says why the text does not parse.
    pub fn apply(&self, config: &mut Configuration, text: &str) -> Result<(), String> {
        (self.set)(config, text)
    }

    /// This key's value in `config`, printed so it parses back; `None` when an optional key is
    /// unset.
    pub fn value(&self, config: &Configuration) -> Option<String> {
        (self.get)(config)
    }

    /// The built-in default, printed; `None` when the key is unset by default.
    pub fn default_value(&self) -> Option<String> {
        self.value(&Configuration::default())
    }

    /// The environment variable that sets this key: `RFLINK__` then the key uppercased, with
    /// `.` as `__` and `-` as `_` (`heartbeat.rpc-failure-threshold` →
    /// `RFLINK__HEARTBEAT__RPC_FAILURE_THRESHOLD`).
    pub fn env_var(&self) -> String {
        env_var_name(self.key)
    }
}

/// Section notes printed under the section heading in the template.
const SECTION_NOTES: &[(&str, &[&str])] = &[(
    "Heartbeat",
    &[
        "rflink's defaults (1 s / 5 s) are far below Flink's 10 s / 50 s on purpose: there are",
        "no GC pauses to ride out, and a closed connection is reported at once by the RPC",
        "layer, so the timeout only has to catch silent failures such as a frozen process or a",
        "cut network.",
    ],
)];

macro_rules! key_table {
    ($(
        $section:literal {
            $(
                $key:literal => $($field:ident).+ : $codec:ty,
                $([$($alias:literal),+ $(,)?],)?
                $doc:literal;
            )*
        }
    )*) => {
        static KEYS: &[KeySpec] = &[$($(
            KeySpec {
                key: $key,
                kind: <$codec as Codec>::KIND,
                optional: <$codec as Codec>::OPTIONAL,
                sensitive: <$codec as Codec>::SENSITIVE,
                doc: $doc,
                section: $section,
                aliases: &[$($($alias),+)?],
                set: |config, text| {
                    config.$($field).+ = <$codec as Codec>::parse(text)?;
                    Ok(())
                },
                get: |config| <$codec as Codec>::render(&config.$($field).+),
            },
        )*)*];
    };
}

// Adding a key: a field with a default in its section struct (mod.rs), then one line here.
// `cargo test` then fails until conf/rflink.yaml is regenerated (see tests/config.rs).
key_table! {
    "Cluster" {
        "cluster.id" => cluster.id: Str,
            "Cluster identifier; RPC peers presenting a different id in the handshake are refused.";
    }
    "JobManager" {
        "jobmanager.rpc.address" => jobmanager.rpc_address: Str,
            "Host TaskManagers and clients use to reach the JobManager (advertised, not a wildcard).";
        "jobmanager.rpc.port" => jobmanager.rpc_port: Port,
            "JobManager RPC port; 0 picks a free port (MiniCluster, tests).";
        "jobmanager.bind-host" => jobmanager.bind_host: Str,
            "Local address the JobManager RPC listener binds; 0.0.0.0 listens on every interface.";
    }
    "REST" {
        "rest.address" => rest.address: Str,
            "Host clients use to reach the REST endpoint.";
        "rest.port" => rest.port: Port,
            "Port the REST server binds and clients connect to; 0 picks a free port.";
        "rest.bind-address" => rest.bind_address: Str,
            "Local address the REST server binds; 0.0.0.0 listens on every interface.";
        "web.refresh-interval" => rest.refresh_interval: Dur,
            "How often the web dashboard refreshes (told to it by /config).";
        "web.ui.dir" => rest.ui_dir: OptPath,
            "Directory served at / instead of the built-in dashboard (e.g. Flink's web UI); needs an index.html.";
    }
    "TaskManager" {
        "taskmanager.numberOfTaskSlots" => taskmanager.number_of_task_slots: Int<u32>,
            "Slots each TaskManager offers; each slot runs one parallel pipeline.";
        "taskmanager.host" => taskmanager.host: OptStr,
            "Host other nodes use to reach this TaskManager; empty means taskmanager.bind-host.";
        "taskmanager.bind-host" => taskmanager.bind_host: Str,
            "Local address the TaskManager RPC listener binds; 0.0.0.0 needs taskmanager.host.";
        "taskmanager.rpc.port" => taskmanager.rpc_port: Port,
            "TaskManager RPC port; 0 picks a free port.";
        "taskmanager.data.port" => taskmanager.data_port: Port,
            "Port of the TaskManager's shuffle (data) server; 0 picks a free port.";
        "taskmanager.registration.timeout" => taskmanager.registration_timeout: Dur,
            "A TaskManager not registered at a ResourceManager within this time fails.";
        "taskmanager.slot.timeout" => taskmanager.slot_timeout: Dur,
            "A slot allocated but not activated, or left inactive, this long is freed.";
    }
    "Network (TaskManager data plane)" {
        "taskmanager.memory.segment-size" => network.segment_size: Size,
            "Size of one network buffer; records are serialized into buffers of this size.";
        "taskmanager.network.numberOfBuffers" => network.number_of_buffers: Int<usize>,
            "Network buffers of a TaskManager, shared by all its result partitions and input gates.";
        "taskmanager.network.memory.buffers-per-channel" => network.buffers_per_channel: Int<usize>,
            "Exclusive buffers of each remote input channel: its initial credit.";
        "taskmanager.network.memory.floating-buffers-per-gate" => network.floating_buffers_per_gate: Int<usize>,
            "Buffers an input gate lends to channels with a backlog.";
        "taskmanager.network.memory.max-buffers-per-channel" => network.max_buffers_per_channel: Int<usize>,
            "Most buffers one subpartition may hold queued.";
        "taskmanager.network.local-batch.records" => network.local_batch_records: Int<usize>,
            "Most records in one typed batch to a consumer in the same process (no serialization).";
        "taskmanager.network.request-backoff.initial" => network.request_backoff_initial: Dur,
            "First pause before asking again for a partition not registered yet.";
        "taskmanager.network.request-backoff.max" => network.request_backoff_max: Dur,
            "The pause doubles up to this; then the partition request fails.";
        "execution.buffer-timeout.interval" => network.buffer_timeout: Dur,
            "Longest wait of a record in a partly filled buffer while its task is busy.";
    }
    "Heartbeat" {
        "heartbeat.interval" => heartbeat.interval: Dur,
            "How often heartbeat requests are sent (Flink: 10 s).";
        "heartbeat.timeout" => heartbeat.timeout: Dur,
            "Silence after which a peer is declared dead; must exceed heartbeat.interval (Flink: 50 s).";
        "heartbeat.rpc-failure-threshold" => heartbeat.rpc_failure_threshold: Int<i32>,
            "Consecutive failed heartbeat RPCs that declare a peer dead early; -1 disables.";
    }
    "Registration" {
        "cluster.registration.initial-timeout" => registration.initial_timeout: Dur,
            "Timeout of the first registration attempt; doubles per retry up to max-timeout.";
        "cluster.registration.max-timeout" => registration.max_timeout: Dur,
            "Upper bound of the growing registration attempt timeout.";
        "cluster.registration.error-delay" => registration.error_delay: Dur,
            "Pause before retrying a registration that failed with an error.";
        "cluster.registration.refused-registration-delay" => registration.refused_registration_delay: Dur,
            "Pause before retrying a registration the other side refused.";
    }
    "Blob" {
        "blob.server.port" => blob.server_port: Port,
            "BlobServer port on the JobManager; 0 picks a free port.";
        "blob.storage.directory" => blob.storage_directory: OptPath,
            "Directory for blob files; empty means a fresh temporary directory chosen at startup.";
        "blob.offload.minsize" => blob.offload_min_size: Size,
            "Payloads this large or larger (task deployment data) go through the BlobServer, not RPC.";
        "blob.service.cleanup.interval" => blob.cleanup_interval: Secs,
            "How often unused cached blobs are deleted; a bare number is seconds, as in Flink.";
        "blob.fetch.retries" => blob.fetch_retries: Int<u32>,
            "Retries of a failed blob download before giving up.";
    }
    "RPC" {
        "rpc.ask-timeout" => rpc.ask_timeout: Dur,
            ["pekko.ask.timeout", "akka.ask.timeout"],
            "Default timeout of every RPC ask (Flink: pekko.ask.timeout).";
        "rpc.connect-timeout" => rpc.connect_timeout: Dur,
            ["pekko.tcp.timeout", "akka.tcp.timeout"],
            "Timeout to open an RPC connection and finish its handshake (Flink: pekko.tcp.timeout, 20 s).";
        "rpc.max-frame-size" => rpc.max_frame_size: Size,
            ["pekko.framesize", "akka.framesize"],
            "Largest RPC message or response sent or accepted (Flink: pekko.framesize).";
        "rpc.force-invocation-serialization" => rpc.force_invocation_serialization: Bool,
            ["pekko.rpc.force-invocation-serialization"],
            "Encode local calls too, proving every message survives the wire (for tests).";
        "rpc.mailbox-capacity" => rpc.mailbox_capacity: Int<usize>,
            "Capacity of each RPC endpoint's mailbox for local asks.";
        "rpc.max-inbound-in-flight" => rpc.max_inbound_in_flight: Int<usize>,
            "Requests one connection may have queued before it stops reading (backpressure).";
    }
    "Slots (JobMaster)" {
        "slot.request.timeout" => slot.request_timeout: Dur,
            "A JobMaster's pending slot request fails after this long.";
        "slot.idle.timeout" => slot.idle_timeout: Dur,
            "A JobMaster returns a slot that stayed idle this long.";
    }
    "Execution" {
        "parallelism.default" => execution.default_parallelism: Int<u32>,
            "Parallelism of operators that do not set their own.";
    }
    "Fault tolerance" {
        "restart-strategy.type" => restart.strategy_type: OptStr,
            "none, fixed-delay, failure-rate or exponential-delay; unset: exponential-delay with checkpointing, else none.";
        "restart-strategy.fixed-delay.attempts" => restart.fixed_delay_attempts: Int<u32>,
            "Restarts fixed-delay allows before the job fails.";
        "restart-strategy.fixed-delay.delay" => restart.fixed_delay_delay: Dur,
            "Pause before each fixed-delay restart.";
        "restart-strategy.failure-rate.max-failures-per-interval" => restart.failure_rate_max_failures: Int<u32>,
            "Failures failure-rate tolerates within one interval.";
        "restart-strategy.failure-rate.failure-rate-interval" => restart.failure_rate_interval: Dur,
            "The interval failure-rate counts failures in.";
        "restart-strategy.failure-rate.delay" => restart.failure_rate_delay: Dur,
            "Pause before each failure-rate restart.";
        "restart-strategy.exponential-delay.initial-backoff" => restart.exponential_initial_backoff: Dur,
            "First pause of exponential-delay.";
        "restart-strategy.exponential-delay.max-backoff" => restart.exponential_max_backoff: Dur,
            "Longest pause of exponential-delay.";
        "restart-strategy.exponential-delay.backoff-multiplier" => restart.exponential_multiplier: Str,
            "Factor the exponential-delay pause grows by per failure (at least 1).";
        "restart-strategy.exponential-delay.reset-backoff-threshold" => restart.exponential_reset_threshold: Dur,
            "Failure-free time after which the exponential-delay pause starts again from the initial one.";
        "restart-strategy.exponential-delay.jitter-factor" => restart.exponential_jitter: Str,
            "Random part of each exponential-delay pause, 0..1 of it.";
        "restart-strategy.exponential-delay.attempts-before-reset-backoff" => restart.exponential_attempts: Int<u32>,
            "Restarts exponential-delay allows between two resets.";
        "jobmanager.execution.failover-strategy" => restart.failover_strategy: Str,
            "region restarts the failed task's pipelined region; full restarts the whole job.";
        "execution.checkpointing.interval" => checkpointing.interval: OptDur,
            "Time between periodic checkpoints; unset turns checkpointing off.";
        "execution.checkpointing.timeout" => checkpointing.timeout: Dur,
            "A checkpoint not complete within this is aborted.";
        "execution.checkpointing.max-concurrent-checkpoints" => checkpointing.max_concurrent: Int<u32>,
            "Periodic checkpoints that may be in progress at once.";
        "execution.checkpointing.min-pause" => checkpointing.min_pause: Dur,
            "Least time between the end of a checkpoint and the start of the next.";
        "execution.checkpointing.num-retained" => checkpointing.num_retained: Int<usize>,
            ["state.checkpoints.num-retained"],
            "Completed checkpoints kept; older ones are deleted.";
        "execution.checkpointing.tolerable-failed-checkpoints" => checkpointing.tolerable_failures: Int<u32>,
            "Consecutive failed checkpoints tolerated before the job fails over.";
        "execution.checkpointing.dir" => checkpointing.dir: OptPath,
            ["state.checkpoints.dir"],
            "Directory of checkpoints, shared by every node; unset: under the JobManager's working directory.";
        "execution.checkpointing.savepoint-dir" => checkpointing.savepoint_dir: OptPath,
            ["state.savepoints.dir"],
            "Default target directory of savepoints.";
    }
    "MiniCluster" {
        "minicluster.number-of-taskmanagers" => minicluster.number_of_taskmanagers: Int<u32>,
            "TaskManagers a MiniCluster starts; 0 starts none (tests add their own).";
    }
    "Security" {
        "security.cluster-secret" => security.cluster_secret: OptSecret,
            "Shared secret (16+ bytes) every RPC, blob and data connection proves (HMAC challenge-response); prefer the -file key or RFLINK__SECURITY__CLUSTER_SECRET.";
        "security.cluster-secret-file" => security.cluster_secret_file: OptPath,
            "File holding the cluster secret (a compose or Kubernetes secret).";
        "security.ssl.internal.enabled" => security.internal_ssl: Bool,
            "Mutual TLS on every RPC, blob and data connection; needs the three files below on every node.";
        "security.ssl.internal.cert" => security.internal_cert: OptPath,
            "PEM certificate (chain, leaf first) this node presents on internal connections.";
        "security.ssl.internal.key" => security.internal_key: OptPath,
            "PEM private key of security.ssl.internal.cert.";
        "security.ssl.internal.truststore" => security.internal_truststore: OptPath,
            "PEM CA certificates a peer's certificate must chain to.";
        "security.ssl.rest.enabled" => security.rest_ssl: Bool,
            "HTTPS on the REST endpoint (the server needs cert and key; clients trust the truststore).";
        "security.ssl.rest.cert" => security.rest_cert: OptPath,
            "PEM certificate (chain) of the REST server.";
        "security.ssl.rest.key" => security.rest_key: OptPath,
            "PEM private key of security.ssl.rest.cert.";
        "security.ssl.rest.truststore" => security.rest_truststore: OptPath,
            "PEM CA certificates REST clients (the rflink CLI) trust for the REST server.";
        "rest.auth.token" => rest.auth_token: OptSecret,
            "Bearer token required on every mutating REST request (submit, cancel, savepoint, upload); unset: none.";
        "rest.auth.token-file" => rest.auth_token_file: OptPath,
            "File holding rest.auth.token (a compose or Kubernetes secret).";
        "rest.auth.protect-reads" => rest.auth_protect_reads: Bool,
            "Require the token on reads too (GET, including /metrics and the dashboard's API calls).";
    }
    "High availability" {
        "high-availability.type" => high_availability.kind: Str,
            "none (one JobManager, metadata in memory) or etcd (standby JobManagers, leader elected in etcd).";
        "high-availability.etcd.endpoints" => high_availability.etcd_endpoints: OptStr,
            "Comma-separated etcd client URLs, e.g. http://etcd:2379; required with type etcd.";
        "high-availability.cluster-id" => high_availability.cluster_id: Str,
            "Namespace of this cluster's keys in etcd (/rflink/<cluster-id>/), so clusters can share one etcd.";
        "high-availability.etcd.lease-ttl" => high_availability.lease_ttl: Dur,
            "A leader that cannot renew its etcd lease for this long steps down; a standby takes over then.";
        "high-availability.storageDir" => high_availability.storage_dir: OptPath,
            "Shared storage every JobManager reaches; the BlobServer keeps job artifacts under <dir>/blob with HA.";
    }
    "Metrics" {
        "metrics.reporter.prom.port" => metrics.prom_port: Str,
            "Port (or range such as 9250-9260, first free taken; 0 = any; off = none) of a TaskManager's Prometheus /metrics.";
    }
}

/// Every configuration key, in template order.
pub fn keys() -> &'static [KeySpec] {
    KEYS
}

/// The key named exactly `key` (case-sensitive, as Flink), without aliases.
pub fn find_key(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|spec| spec.key == key)
}

/// A key as resolved from what a source wrote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resolved {
    pub(crate) spec: &'static KeySpec,
    /// The deprecated alias that was used, if one was.
    pub(crate) alias: Option<&'static str>,
}

/// Resolves a key as written in the file or in `-D`: exact names, then deprecated aliases.
pub(crate) fn resolve(key: &str) -> Option<Resolved> {
    if let Some(spec) = find_key(key) {
        return Some(Resolved { spec, alias: None });
    }
    KEYS.iter().find_map(|spec| {
        spec.aliases
            .iter()
            .find(|alias| **alias == key)
            .map(|alias| Resolved {
                spec,
                alias: Some(alias),
            })
    })
}

/// The dotted key an environment variable name stands for, or why it is malformed: the name
/// without `RFLINK__`, split at `__`, lowercased, with `_` inside a segment read as `-`.
pub(crate) fn env_key(name: &str) -> Result<String, String> {
    let rest = name
        .strip_prefix(ENV_PREFIX)
        .ok_or_else(|| format!("does not start with {ENV_PREFIX}"))?;
    let segments: Vec<String> = rest
        .split("__")
        .map(|segment| segment.to_lowercase().replace('_', "-"))
        .collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || s.starts_with('-') || s.ends_with('-'))
    {
        return Err(format!(
            "expected {ENV_PREFIX}SECTION__KEY with non-empty segments separated by \"__\""
        ));
    }
    Ok(segments.join("."))
}

/// The prefix of the environment variables rflink reads.
pub const ENV_PREFIX: &str = "RFLINK__";

/// The form keys are compared in when read from the environment.
fn env_normal(key: &str) -> String {
    key.to_lowercase().replace('_', "-")
}

/// Resolves a dotted key derived by [`env_key`]: case-insensitively, against names and aliases.
pub(crate) fn resolve_env(key: &str) -> Option<Resolved> {
    let wanted = env_normal(key);
    if let Some(spec) = KEYS.iter().find(|spec| env_normal(spec.key) == wanted) {
        return Some(Resolved { spec, alias: None });
    }
    KEYS.iter().find_map(|spec| {
        spec.aliases
            .iter()
            .find(|alias| env_normal(alias) == wanted)
            .map(|alias| Resolved {
                spec,
                alias: Some(alias),
            })
    })
}

/// The environment variable that sets `key`.
pub fn env_var_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_uppercase().replace('-', "_").replace('.', "__")
    )
}

/// The known key closest to `key` (case-insensitive edit distance), if it is close enough to be
/// a likely typo.
pub(crate) fn suggest(key: &str) -> Option<&'static str> {
    let wanted = key.to_lowercase();
    let limit = (wanted.chars().count() / 5).max(2);
    KEYS.iter()
        .map(|spec| (edit_distance(&wanted, &spec.key.to_lowercase()), spec.key))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, key)| key)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and transpositions
/// of neighbours each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// Quotes a YAML scalar when it would otherwise read as something else.
fn yaml_scalar(value: &str) -> String {
    let plain = !value.is_empty()
        && value.trim() == value
        && !value.starts_with([
            '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%',
            '@', '`',
        ])
        && !value.contains(": ")
        && !value.contains(" #");
    if plain {
        value.to_string()
    } else {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

const TEMPLATE_HEADER: &str = "\
# rflink configuration: every key with its built-in default and a one-line explanation.
#
# Layers, lowest priority first; each overrides the ones before it:
#   1. built-in defaults (the values in this file)
#   2. this file, passed with --config <file>
#   3. environment variables RFLINK__<KEY>: the key uppercased, '.' written as '__' and '-' as
#      '_', matched case-insensitively (heartbeat.rpc-failure-threshold is
#      RFLINK__HEARTBEAT__RPC_FAILURE_THRESHOLD; taskmanager.numberOfTaskSlots is
#      RFLINK__TASKMANAGER__NUMBEROFTASKSLOTS)
#   4. -D key=value flags
#
# Keys are Flink's where Flink has one. Unknown keys and bad values are errors, all reported at
# once. Keys may be written flat, as here, or nested as in Flink 2's config.yaml:
#   taskmanager:
#     numberOfTaskSlots: 4
#
# Durations: \"10 s\", \"500ms\", \"5 min\", \"2 h\", \"1 d\"; a bare number is milliseconds unless
# the key says otherwise. Sizes: \"64 kb\", \"10 mb\", \"1 gb\" (1024-based); a bare number is bytes.
# An empty value (\"\") leaves an optional key unset. Ports are single numbers, 0 picks a free
# one; Flink's port ranges (\"50100-50200\") are not supported.
#
# Generated from the key table in runtime/src/config/keys.rs; a test fails when it drifts.
# Regenerate: RFLINK_BLESS_TEMPLATE=1 cargo test -p rflink-runtime --test config
";

/// The annotated template (`conf/rflink.yaml`): every key with its default and documentation.
pub fn template() -> String {
    let mut out = String::from(TEMPLATE_HEADER);
    let mut section = "";
    for spec in KEYS {
        if spec.section != section {
            section = spec.section;
            out.push_str(&format!("\n# ---- {section} ----\n"));
            if let Some((_, notes)) = SECTION_NOTES.iter().find(|(s, _)| *s == section) {
                for line in *notes {
                    out.push_str(&format!("# {line}\n"));
                }
            }
            out.push('\n');
        }
        out.push_str(&format!("# {}\n", spec.doc));
        if !spec.aliases.is_empty() {
            out.push_str(&format!(
                "# Deprecated Flink name{}, still accepted: {}\n",
                if spec.aliases.len() == 1 { "" } else { "s" },
                spec.aliases.join(", ")
            ));
        }
        let value = spec.default_value().unwrap_or_default();
        out.push_str(&format!("{}: {}\n", spec.key, yaml_scalar(&value)));
    }
    out
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn file_uris_are_local_paths_and_other_file_systems_are_refused() {
        for (text, path) in [
            ("/data/sp", "/data/sp"),
            ("relative/dir", "relative/dir"),
            ("file:///data/sp", "/data/sp"),
            ("file:/data/sp", "/data/sp"),
            ("FILE://localhost/data/sp", "/data/sp"),
            ("/odd:name", "/odd:name"),
        ] {
            assert_eq!(
                OptPath::parse(text),
                Ok(Some(PathBuf::from(path))),
                "{text}"
            );
        }
        assert_eq!(OptPath::parse("  "), Ok(None));
        for bad in ["s3://bucket/sp", "hdfs:///sp", "file://other/sp", "file://"] {
            assert!(OptPath::parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_and_aliases_are_unique() {
        let mut seen = HashSet::new();
        for spec in keys() {
            assert!(seen.insert(spec.key.to_lowercase()), "{} twice", spec.key);
            for alias in spec.aliases {
                assert!(seen.insert(alias.to_lowercase()), "{alias} twice");
            }
        }
    }

    #[test]
    fn env_names_map_to_keys() {
        let cases = [
            ("RFLINK__REST__PORT", "rest.port"),
            (
                "RFLINK__HEARTBEAT__RPC_FAILURE_THRESHOLD",
                "heartbeat.rpc-failure-threshold",
            ),
            (
                "RFLINK__TASKMANAGER__NUMBEROFTASKSLOTS",
                "taskmanager.numberOfTaskSlots",
            ),
            ("RFLINK__JOBMANAGER__RPC__PORT", "jobmanager.rpc.port"),
            (
                "RFLINK__CLUSTER__REGISTRATION__REFUSED_REGISTRATION_DELAY",
                "cluster.registration.refused-registration-delay",
            ),
        ];
        for (name, key) in cases {
            let derived = env_key(name).unwrap();
            let resolved = resolve_env(&derived).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(resolved.spec.key, key);
            assert!(resolved.alias.is_none());
        }
    }

    #[test]
    fn every_key_round_trips_through_its_env_name() {
        for spec in keys() {
            let derived = env_key(&spec.env_var()).unwrap();
            assert_eq!(resolve_env(&derived).unwrap().spec.key, spec.key);
        }
    }

    #[test]
    fn malformed_env_names() {
        for name in [
            "RFLINK__",
            "RFLINK__REST____PORT",
            "RFLINK__REST__",
            "RFLINK__REST___PORT",
            "RFLINK_REST__PORT",
        ] {
            assert!(env_key(name).is_err(), "{name}");
        }
    }

    #[test]
    fn aliases_resolve_to_their_key() {
        let resolved = resolve("pekko.ask.timeout").unwrap();
        assert_eq!(resolved.spec.key, "rpc.ask-timeout");
        assert_eq!(resolved.alias, Some("pekko.ask.timeout"));
        let resolved = resolve_env(&env_key("RFLINK__AKKA__FRAMESIZE").unwrap()).unwrap();
        assert_eq!(resolved.spec.key, "rpc.max-frame-size");
        assert!(resolve("rpc.ask-timeout").unwrap().alias.is_none());
    }

    #[test]
    fn keys_are_case_sensitive_outside_the_environment() {
        assert!(resolve("taskmanager.numberoftaskslots").is_none());
        assert_eq!(
            suggest("taskmanager.numberoftaskslots"),
            Some("taskmanager.numberOfTaskSlots")
        );
    }

    #[test]
    fn suggestions_for_typos_only() {
        assert_eq!(suggest("heartbeat.intervall"), Some("heartbeat.interval"));
        assert_eq!(suggest("rest.prot"), Some("rest.port"));
        assert_eq!(
            suggest("jobmanager.rpc.adress"),
            Some("jobmanager.rpc.address")
        );
        assert_eq!(suggest("state.backend.type"), None);
        assert_eq!(suggest("x"), None);
    }

    #[test]
    fn edit_distance_counts_transpositions_once() {
        assert_eq!(edit_distance("port", "prot"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn yaml_scalars_are_quoted_when_needed() {
        assert_eq!(yaml_scalar("10 s"), "10 s");
        assert_eq!(yaml_scalar("localhost"), "localhost");
        assert_eq!(yaml_scalar(""), "\"\"");
        assert_eq!(yaml_scalar("-1"), "\"-1\"");
        assert_eq!(yaml_scalar("a: b"), "\"a: b\"");
    }

    #[test]
    fn every_kind_has_a_codec_that_round_trips_the_default() {
        for spec in keys() {
            let mut config = Configuration::default();
            if let Some(value) = spec.default_value() {
                spec.apply(&mut config, &value)
                    .unwrap_or_else(|e| panic!("{}: {e}", spec.key));
            }
            assert_eq!(config, Configuration::default(), "{}", spec.key);
        }
    }
}
