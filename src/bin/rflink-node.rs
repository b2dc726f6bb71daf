//! `rflink-node`: runs a JobManager (`--role jm`: BlobServer, ResourceManager, Dispatcher, REST,
//! Flink's `StandaloneSessionClusterEntrypoint`), a TaskManager (`--role tm`, Flink's
//! `TaskManagerRunner`), or both in one process (`--role standalone`).
//!
//! Configuration layers, lowest first: built-in defaults, `--config FILE`, `RFLINK__…` environment
//! variables, `-D key=value`, then the convenience flags below (which are shorthands for keys).
//! Every problem is reported at once and the process exits with code 2.
//!
//! Once serving, it prints one line `RFLINK_READY {json}` to stdout with the bound addresses
//! (also written to `--ready-file`), so callers that asked for port 0 learn the real ports. It
//! stops cleanly on SIGTERM or SIGINT (exit 0) and exits 1 on a fatal error.

use std::io::Write;

/// mimalloc: a task thread allocates records that another task thread frees, which glibc's
/// malloc serves slowly (arena locks); mimalloc's thread-local free lists do not care.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[path = "shared/ha.rs"]
mod shared_ha;
use rflink_runtime::config::{ConfigLoader, Configuration};
use rflink_runtime::entrypoint::{
    fresh_work_dir, JobManagerRunner, JobManagerSettings, TaskManagerRunner, TaskManagerSettings,
};
use rflink_runtime::events::EventSink;
use rflink_runtime::taskexecutor::invokable::InvokableRegistry;
use rflink_runtime::tasks::Jobs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    /// JobManager: BlobServer, ResourceManager, Dispatcher and REST.
    Jm,
    /// TaskManager: one TaskExecutor.
    Tm,
    /// A JobManager and `--taskmanagers` TaskManagers in one process.
    Standalone,
}

/// Runs an rflink JobManager or TaskManager.
#[derive(Debug, Parser)]
#[command(
    name = "rflink-node",
    version,
    after_help = "Health probe (for container healthchecks; no --role needed):\n  \
                  rflink-node --health-check HOST:PORT [--health-rest]\n  \
                  exits 0 if a TCP connection to HOST:PORT succeeds, or with --health-rest if \
                  GET /overview answers 200; else prints the reason and exits 1."
)]
struct Args {
    /// Which process to run.
    #[arg(long, value_enum)]
    role: Role,
    /// A YAML configuration file (flat `key: value` or nested), e.g. conf/rflink.yaml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A configuration value, Flink's dynamic property (repeatable).
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    dynamic: Vec<String>,
    /// The JobManager's RPC `host:port` (TaskManager; sets jobmanager.rpc.address and .port).
    #[arg(long, value_name = "HOST:PORT")]
    jobmanager: Option<String>,
    /// The address to bind (jobmanager.bind-host and rest.bind-address, or taskmanager.bind-host).
    #[arg(long, value_name = "HOST")]
    bind_host: Option<String>,
    /// The address others use to reach this node (jobmanager.rpc.address or taskmanager.host).
    #[arg(long, value_name = "HOST")]
    advertised_host: Option<String>,
    /// The RPC port, 0 for any (jobmanager.rpc.port or taskmanager.rpc.port).
    #[arg(long, value_name = "PORT")]
    rpc_port: Option<u16>,
    /// The REST port, 0 for any (rest.port).
    #[arg(long, value_name = "PORT")]
    rest_port: Option<u16>,
    /// The RPC port others dial, when it is not the bound one (a proxy or NAT in between; the
    /// fault-injection harness puts a TCP proxy there). Not a configuration key.
    #[arg(long, value_name = "PORT")]
    advertised_rpc_port: Option<u16>,
    /// The data (shuffle) port other TaskManagers dial, when it is not the bound one
    /// (TaskManager; as --advertised-rpc-port).
    #[arg(long, value_name = "PORT")]
    advertised_data_port: Option<u16>,
    /// TaskManagers to run with `--role standalone`.
    #[arg(long, default_value_t = 1)]
    taskmanagers: u32,
    /// Also write the ready line's JSON to this file.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
    /// Advertise this machine's host name (the kernel's, /proc/sys/kernel/hostname) as if given
    /// with --advertised-host. In a container that is the container's own name (Docker: its
    /// short id, which Docker's DNS resolves on the container's networks), so every replica of a
    /// scaled compose service advertises itself.
    #[arg(long, conflicts_with = "advertised_host")]
    advertised_host_from_hostname: bool,
    /// Log format on stderr: `text` (default) or `json` (one object per line with the event's
    /// fields and its spans, e.g. a task's job and attempt ids; for log collectors). Also read
    /// from RFLINK_LOG_FORMAT. What is logged is chosen by RUST_LOG (default `info`).
    #[arg(long, value_enum, env = "RFLINK_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Args {
    /// The convenience flags as `key=value` entries.
    fn flag_properties(&self) -> Vec<String> {
        let mut props = Vec::new();
        let jm = matches!(self.role, Role::Jm | Role::Standalone);
        if let Some(h) = &self.bind_host {
            if jm {
                props.push(format!("jobmanager.bind-host={h}"));
                props.push(format!("rest.bind-address={h}"));
            }
            if !jm || self.role == Role::Standalone {
                props.push(format!("taskmanager.bind-host={h}"));
            }
        }
        if let Some(h) = &self.advertised_host {
            if jm {
                props.push(format!("jobmanager.rpc.address={h}"));
                props.push(format!("rest.address={h}"));
            }
            if !jm || self.role == Role::Standalone {
                props.push(format!("taskmanager.host={h}"));
            }
        }
        if let Some(p) = self.rpc_port {
            props.push(format!(
                "{}={p}",
                if jm {
                    "jobmanager.rpc.port"
                } else {
                    "taskmanager.rpc.port"
                }
            ));
        }
        if let Some(p) = self.rest_port {
            props.push(format!("rest.port={p}"));
        }
        if let Some(jobmanager) = &self.jobmanager {
            match jobmanager.rsplit_once(':') {
                Some((host, port)) => {
                    props.push(format!("jobmanager.rpc.address={host}"));
                    props.push(format!("jobmanager.rpc.port={port}"));
                }
                // No port: the loader reports it among the other problems.
                None => props.push(format!("jobmanager.rpc.port={jobmanager}")),
            }
        }
        props
    }
}

fn main() {
    if let Some(code) = probe::run_if_requested() {
        std::process::exit(code);
    }
    let mut args = Args::parse();
    if args.advertised_host_from_hostname {
        match probe::kernel_hostname() {
            Ok(host) => args.advertised_host = Some(host),
            Err(err) => {
                eprintln!("rflink-node: --advertised-host-from-hostname: {err}");
                std::process::exit(2);
            }
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,actix_server=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };

    let mut dynamic = args.dynamic.clone();
    dynamic.extend(args.flag_properties());
    let config = match ConfigLoader::new()
        .file(args.config.as_deref())
        .process_env()
        .dynamic(&dynamic)
        .load()
    {
        Ok(config) => config,
        Err(err) => {
            eprintln!("rflink-node: {err}");
            std::process::exit(2);
        }
    };
    if args.check_config {
        for (key, value) in config.to_entries() {
            println!("{key}: {value}");
        }
        return;
    }
    let code = actix_rt::System::new().block_on(run(args, config));
    std::process::exit(code);
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How long a node waits for etcd at start before giving up.
const HA_CONNECT_PATIENCE: Duration = Duration::from_secs(30);

async fn run(args: Args, config: Configuration) -> i32 {
    let work_dir = match fresh_work_dir("node") {
        Ok(dir) => dir,
        Err(err) => {
            eprintln!("rflink-node: {err}");
            return 1;
        }
    };
    let events = EventSink::default();
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let fatal: rflink_runtime::taskexecutor::FatalErrorHandler = Arc::new(move |msg| {
        let _ = fatal_tx.send(msg);
    });
    let mut ready = serde_json::Map::new();
    ready.insert(
        "role".into(),
        format!("{:?}", args.role).to_lowercase().into(),
    );

    let mut job_manager = None;
    if matches!(args.role, Role::Jm | Role::Standalone) {
        let mut settings = match JobManagerSettings::from_config(&config, &work_dir) {
            Ok(settings) => settings,
            Err(err) => {
                tracing::error!(error = %err, "the job manager could not start");
                eprintln!("rflink-node: {err}");
                return 2;
            }
        };
        settings.rpc.advertised_port = args.advertised_rpc_port;
        let ha = match shared_ha::connect(&config, HA_CONNECT_PATIENCE).await {
            Ok(ha) => ha,
            Err(err) => {
                tracing::error!(error = %err, "high availability services unavailable");
                eprintln!("rflink-node: high availability: {err}");
                return 1;
            }
        };
        let durable = ha.is_durable();
        ready.insert("ha".into(), ha.describe().into());
        let started = match JobManagerRunner::start_with_ha(settings, ha, events.clone()).await {
            // Without HA the node leads at once: READY then means ready to take jobs. With HA
            // it may be a standby; READY means its services listen.
            Ok(jm) if !durable => match jm.wait_leading(Duration::from_secs(30)).await {
                Ok(_) => Ok(jm),
                Err(err) => Err(err),
            },
            other => other,
        };
        match started {
            Ok(jm) => {
                ready.insert("rpc".into(), jm.service().address().into());
                // The bound port, when --advertised-rpc-port names another one.
                ready.insert(
                    "rpc_bind".into(),
                    jm.service().local_addr().to_string().into(),
                );
                if let Some(rest) = jm.rest_address() {
                    ready.insert("rest".into(), rest.to_string().into());
                }
                ready.insert("blob".into(), jm.blob_server().address().to_string().into());
                job_manager = Some(jm);
            }
            Err(err) => {
                tracing::error!(error = %err, "the job manager could not start");
                return 1;
            }
        }
    }
    let mut task_managers = Vec::new();
    // A TaskManager process's own HA services (etcd client), kept for its lifetime.
    let mut tm_ha = None;
    if matches!(args.role, Role::Tm | Role::Standalone) {
        let count = if args.role == Role::Standalone {
            args.taskmanagers
        } else {
            1
        };
        let mut config = config.clone();
        if let Some(jm) = &job_manager {
            // Standalone: the TaskManagers use the JobManager's real (maybe ephemeral) port.
            config.jobmanager.rpc_port = jm.service().port();
        }
        // With HA the TaskManagers follow the leader published in etcd.
        let leader_watch = match &job_manager {
            Some(jm) if jm.ha().is_durable() => Some(jm.ha().watch_leader()),
            Some(_) => None,
            None if config.high_availability.is_etcd() => {
                match shared_ha::connect(&config, HA_CONNECT_PATIENCE).await {
                    Ok(ha) => {
                        ready.insert("ha".into(), ha.describe().into());
                        let watch = ha.watch_leader();
                        tm_ha = Some(ha);
                        Some(watch)
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "high availability services unavailable");
                        eprintln!("rflink-node: high availability: {err}");
                        return 1;
                    }
                }
            }
            None => None,
        };
        for i in 0..count {
            let mut settings = match TaskManagerSettings::from_config(
                &config,
                &work_dir.join(format!("tm-{i}")),
                InvokableRegistry::with_testing_invokables(),
                Jobs::new(rflink_examples::registry()),
                Arc::clone(&fatal),
            ) {
                Ok(settings) => settings,
                Err(err) => {
                    tracing::error!(error = %err, "the task manager could not start");
                    eprintln!("rflink-node: {err}");
                    return 2;
                }
            };
            settings.task_executor.leader_watch = leader_watch.clone();
            if args.role == Role::Tm {
                settings.rpc.advertised_port = args.advertised_rpc_port;
                if let Some(data) = &mut settings.data {
                    data.advertised_port = args.advertised_data_port;
                }
            }
            match TaskManagerRunner::start(settings, events.clone()).await {
                Ok(tm) => task_managers.push(tm),
                Err(err) => {
                    tracing::error!(error = %err, "the task manager could not start");
                    return 1;
                }
            }
        }
        if args.role == Role::Tm {
            if let Some(tm) = task_managers.first() {
                ready.insert("rpc".into(), tm.service().address().into());
                ready.insert(
                    "rpc_bind".into(),
                    tm.service().local_addr().to_string().into(),
                );
                ready.insert("resource_id".into(), tm.resource_id().to_string().into());
                if let Some(data) = tm.data_address() {
                    ready.insert("data".into(), data.into());
                }
                if let Some(shuffle) = tm.shuffle() {
                    ready.insert("data_port_bind".into(), shuffle.data_port().into());
                }
                if let Some(metrics) = tm.metrics_address() {
                    ready.insert("metrics".into(), metrics.to_string().into());
                }
            }
        } else {
            let metrics: Vec<serde_json::Value> = task_managers
                .iter()
                .filter_map(|tm| tm.metrics_address())
                .map(|a| a.to_string().into())
                .collect();
            ready.insert("taskmanager_metrics".into(), metrics.into());
        }
    }

    let line = serde_json::Value::Object(ready).to_string();
    if let Some(path) = &args.ready_file {
        if let Err(err) = std::fs::write(path, &line) {
            tracing::error!(path = %path.display(), error = %err, "cannot write the ready file");
            return 1;
        }
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "RFLINK_READY {line}");
        let _ = out.flush();
    }

    let code = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            0
        }
        Some(reason) = fatal_rx.recv() => {
            tracing::error!(reason, "fatal error; exiting");
            1
        }
    };
    for tm in task_managers {
        let _ = tm.close().await;
    }
    drop(tm_ha);
    if let Some(jm) = job_manager {
        let _ = jm.close().await;
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    code
}

/// `rflink-node --health-check HOST:PORT [--health-rest]`: a health probe for container
/// healthchecks that needs nothing but this binary (a scratch image has no shell and no curl),
/// and the host name behind `--advertised-host-from-hostname`.
mod probe {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
    use std::time::Duration;

    use clap::Parser;

    /// How long the probe waits to connect, and for each read or write.
    const TIMEOUT: Duration = Duration::from_secs(2);

    /// The probe's command line.
    #[derive(Debug, Parser)]
    #[command(name = "rflink-node --health-check")]
    struct ProbeArgs {
        /// The address to probe.
        #[arg(long, value_name = "HOST:PORT")]
        health_check: String,
        /// Expect HTTP 200 from `GET /overview` (a JobManager's REST API), not just a connection.
        #[arg(long)]
        health_rest: bool,
    }

    /// Runs the probe if the command line asks for it (`--health-check` anywhere in it) and
    /// returns its exit code: 0 healthy, 1 not (with a one-line reason on stderr), 2 bad usage.
    pub(super) fn run_if_requested() -> Option<i32> {
        let wanted = std::env::args_os().skip(1).any(|arg| {
            let arg = arg.to_string_lossy();
            arg == "--health-check" || arg.starts_with("--health-check=")
        });
        if !wanted {
            return None;
        }
        let args = ProbeArgs::parse();
        let result = if args.health_rest {
            rest_overview(&args.health_check)
        } else {
            connect(&args.health_check).map(|_| ())
        };
        Some(match result {
            Ok(()) => {
                println!("healthy: {}", args.health_check);
                0
            }
            Err(reason) => {
                eprintln!("unhealthy: {}: {reason}", args.health_check);
                1
            }
        })
    }

    /// A TCP connection to `address` (each resolved address tried, at most [`TIMEOUT`] each).
    fn connect(address: &str) -> Result<TcpStream, String> {
        let addrs: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve: {e}"))?
            .collect();
        let mut last = format!("{address} resolves to no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, TIMEOUT) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(last)
    }

    /// `GET /overview` over HTTP/1.1, or HTTPS when the node's configuration (its environment,
    /// as in a container) has `security.ssl.rest.enabled`, trusting
    /// `security.ssl.rest.truststore`; Ok on status 200.
    fn rest_overview(address: &str) -> Result<(), String> {
        let stream = connect(address)?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| format!("cannot set timeouts: {e}"))?;
        let config = rflink_runtime::config::ConfigLoader::new()
            .process_env()
            .load()
            .map_err(|e| format!("cannot read the configuration: {e}"))?;
        if !config.security.rest_ssl {
            return http_overview(stream, address);
        }
        let trust =
            config.security.rest_truststore.as_deref().ok_or(
                "security.ssl.rest.enabled needs security.ssl.rest.truststore for the probe",
            )?;
        let tls = rflink_rpc::security::rest_client_config(trust).map_err(|e| e.to_string())?;
        let host = address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
        let conn = rustls::ClientConnection::new(tls, name).map_err(|e| e.to_string())?;
        http_overview(rustls::StreamOwned::new(conn, stream), address)
    }

    fn http_overview(mut stream: impl Read + Write, address: &str) -> Result<(), String> {
        let request = format!(
            "GET /overview HTTP/1.1\r\nHost: {address}\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .and_then(|()| stream.flush())
            .map_err(|e| format!("cannot send the request: {e}"))?;
        // Only the status line matters; read until its end (bounded).
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 4096 {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("no answer: {e}")),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let status_line = head.lines().next().unwrap_or_default().trim();
        let mut parts = status_line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some(version), Some("200")) if version.starts_with("HTTP/") => Ok(()),
            (Some(version), Some(_)) if version.starts_with("HTTP/") => {
                Err(format!("GET /overview answered {status_line:?}"))
            }
            _ => Err(format!("not an HTTP answer: {status_line:?}")),
        }
    }

    /// The kernel's host name (`/proc/sys/kernel/hostname`, else `/etc/hostname`).
    pub(super) fn kernel_hostname() -> Result<String, String> {
        let mut problems = Vec::new();
        for path in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
            match std::fs::read_to_string(path) {
                Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_string()),
                Ok(_) => problems.push(format!("{path} is empty")),
                Err(e) => problems.push(format!("cannot read {path}: {e}")),
            }
        }
        Err(problems.join("; "))
    }
}
