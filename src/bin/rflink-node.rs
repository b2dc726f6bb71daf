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

use clap::{Parser, ValueEnum};
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
#[command(name = "rflink-node", version)]
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
    /// TaskManagers to run with `--role standalone`.
    #[arg(long, default_value_t = 1)]
    taskmanagers: u32,
    /// Also write the ready line's JSON to this file.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
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
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,actix_server=warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();

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
        let settings = JobManagerSettings::from_config(&config, &work_dir);
        match JobManagerRunner::start(settings, events.clone()).await {
            Ok(jm) => {
                ready.insert("rpc".into(), jm.service().address().into());
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
        for i in 0..count {
            let settings = TaskManagerSettings::from_config(
                &config,
                &work_dir.join(format!("tm-{i}")),
                InvokableRegistry::with_testing_invokables(),
                Jobs::new(rflink_examples::registry()),
                Arc::clone(&fatal),
            );
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
                ready.insert("resource_id".into(), tm.resource_id().to_string().into());
                if let Some(data) = tm.data_address() {
                    ready.insert("data".into(), data.into());
                }
            }
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
    if let Some(jm) = job_manager {
        let _ = jm.close().await;
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    code
}
