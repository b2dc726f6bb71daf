//! The `rflink` command-line client. Flink: `bin/flink` (`CliFrontend` with `RestClusterClient`).
//!
//! ```text
//! rflink [-m host:port] run --example NAME [-d] [--name NAME] [PROGRAM ARGS...]
//! rflink [-m host:port] run [-d] [--name NAME] LIBRARY.so [--class NAME] [PROGRAM ARGS...]
//! rflink [-m host:port] run --job noop|blocking|failing|sleeping [--vertices N] [-p P]
//!                           [--name NAME] [--millis MS] [--message TEXT] [-d]
//! rflink [-m host:port] list [-r] [-s] [-a]
//! rflink [-m host:port] cancel <jobid>
//! rflink [-m host:port] info <jobid> [--json]
//! rflink [-m host:port] overview
//! rflink [-m https://host:port] [--rest-ca CA.pem] [--token TOKEN | --token-file FILE] <command>
//! ```
//!
//! The JobManager's REST address comes from `-m/--jobmanager`, else `RFLINK_JOBMANAGER`, else
//! `localhost:8081`. `run --example NAME ARGS...` builds a streaming program of the job registry
//! compiled into rflink and rflink-node (`wordcount`, `sequence-sum`) with its arguments, and
//! submits its job graph; the TaskExecutors rebuild the same program and run their vertices.
//! Files a program reads (`--input`) are read by the TaskManagers, so they must exist at the same
//! path on every TaskManager, as with Flink. `run --job` submits a *testing* job: a chain of
//! `--vertices` vertices, each running the chosen testing invokable with parallelism `-p`.
//! `run LIBRARY.so ARGS...` runs a job of a job library (a `cdylib` exporting its jobs with
//! `rflink::export_jobs!`): the library is checked and loaded here to build the job graph,
//! then uploaded with the submission (multipart `POST /jobs`, as Flink uploads the jar);
//! the TaskManagers fetch it from the BlobServer. A library built for another rflink or
//! compiler is refused here and by the JobManager, naming both builds.
//!
//! A secured cluster (see "Security" in `docs/rest-api.md`): `--rest-ca PEM` trusts the CA of
//! the cluster's REST certificate and speaks HTTPS (`-m https://host:port` says so too, and
//! needs `--rest-ca`); `--token TOKEN`, `--token-file FILE` or the environment's
//! `RFLINK_REST_TOKEN` is sent as `Authorization: Bearer <token>` on every request (prefer the
//! file or the environment: a command line is visible to other users). A 401 says which is
//! missing.
//!
//! A highly available cluster (`high-availability.type: etcd`): `--ha-etcd URLS` (or
//! `RFLINK_HA_ETCD`) with `--ha-cluster-id ID` looks the leading JobManager's REST API up in
//! etcd, waiting up to `--timeout` for an election, instead of `-m` (needs a build with the
//! `etcd` feature).
//!
//! Exit codes: 0 success (attached run: the job FINISHED); 1 the job FAILED or was CANCELED;
//! 2 usage errors (clap's message, also an unreadable `--rest-ca` or `--token-file`); 3 the
//! JobManager could not be reached (also: a failed TLS handshake) or refused the request (also:
//! 401, no or a wrong token).
//! Logs (`RUST_LOG`, default `warn`) go to stderr; results to stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[path = "shared/ha.rs"]
mod shared_ha;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use rflink_rpc::security::Sensitive;
use rflink_runtime::client::{build_job_graph, build_library_job_graph, choose_library_job};
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::jobgraph::{DistributionPattern, JobGraph, JobVertex};
use rflink_runtime::library::JobLibrary;
use rflink_runtime::rest::client::{RestClient, RestClientBuilder, RestClientError};
use rflink_runtime::rest::messages::{ApplicationStatus, JobSummary};
use rflink_runtime::tasks::Jobs;
use rflink_runtime::types::JobId;

/// Environment variable naming the JobManager when `-m` is absent.
const JOBMANAGER_ENV: &str = "RFLINK_JOBMANAGER";
/// Environment variable holding the REST token when neither `--token` nor `--token-file` is
/// given.
const TOKEN_ENV: &str = "RFLINK_REST_TOKEN";
/// The JobManager when neither `-m` nor the environment names one (Flink's `rest.port`).
const DEFAULT_JOBMANAGER: &str = "localhost:8081";
/// The etcd endpoints of a highly available cluster when `--ha-etcd` is not given.
const HA_ETCD_ENV: &str = "RFLINK_HA_ETCD";
/// How often an attached `run` polls the job's status.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Submits and manages jobs on an rflink cluster through its REST API.
#[derive(Debug, Parser)]
#[command(name = "rflink", version)]
struct Cli {
    /// The JobManager's REST address, host:port [default: $RFLINK_JOBMANAGER, else
    /// localhost:8081].
    #[arg(
        short = 'm',
        long = "jobmanager",
        global = true,
        value_name = "HOST:PORT"
    )]
    jobmanager: Option<String>,

    /// Timeout of each REST request, in seconds.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,

    /// The CA certificate(s) (PEM) the cluster's REST certificate chains to
    /// (security.ssl.rest.truststore); speaks HTTPS.
    #[arg(long = "rest-ca", global = true, value_name = "PEM")]
    rest_ca: Option<PathBuf>,

    /// The cluster's REST token (rest.auth.token), sent as `Authorization: Bearer` [default:
    /// $RFLINK_REST_TOKEN]. Visible to other users in the process list: prefer --token-file or
    /// the environment.
    #[arg(long, global = true, value_name = "TOKEN", value_parser = sensitive)]
    token: Option<Sensitive>,

    /// A file holding the cluster's REST token (e.g. the generated `rest-token` file).
    #[arg(long = "token-file", global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// The etcd client URLs of a highly available cluster (its
    /// high-availability.etcd.endpoints, comma-separated): the REST API of the leading
    /// JobManager is looked up there, unless -m names one [default: $RFLINK_HA_ETCD].
    #[arg(long = "ha-etcd", global = true, value_name = "URLS")]
    ha_etcd: Option<String>,

    /// The cluster's high-availability.cluster-id, with --ha-etcd.
    #[arg(
        long = "ha-cluster-id",
        global = true,
        value_name = "ID",
        default_value = "/default"
    )]
    ha_cluster_id: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submits a job and, unless detached, waits for it to end.
    Run(RunArgs),
    /// Lists running and scheduled jobs (`-a`: also terminated ones).
    List(ListArgs),
    /// Cancels a job.
    Cancel {
        /// The job's id (32 hex characters).
        job_id: JobId,
    },
    /// Shows a job's details.
    Info {
        /// The job's id (32 hex characters).
        job_id: JobId,
        /// Prints the REST answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows the cluster overview.
    Overview,
    /// Triggers a savepoint of a running job and prints its location (Flink's `flink
    /// savepoint`).
    Savepoint {
        /// The job's id (32 hex characters).
        job_id: JobId,
        /// The directory to write it under [default: the cluster's
        /// execution.checkpointing.savepoint-dir].
        target_directory: Option<String>,
        /// How long to wait for it, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Stops a job with a savepoint (Flink's `flink stop --savepointPath DIR`).
    Stop {
        /// The job's id (32 hex characters).
        job_id: JobId,
        /// The directory to write the savepoint under.
        #[arg(short = 'p', long = "savepointPath")]
        savepoint_path: Option<String>,
        /// How long to wait for it, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Security material for a cluster (issue 10): no openssl needed.
    #[command(subcommand)]
    Security(SecurityCommand),
}

#[derive(Debug, Subcommand)]
enum SecurityCommand {
    /// Generates a cluster CA, one certificate and key for every node's internal connections,
    /// a REST server certificate, a cluster secret and a REST token into DIR:
    ///
    /// ca.pem (security.ssl.internal.truststore, security.ssl.rest.truststore, rflink
    /// --rest-ca), node.pem / node.key (security.ssl.internal.cert / .key), rest.pem /
    /// rest.key (security.ssl.rest.cert / .key), cluster-secret
    /// (security.cluster-secret-file), rest-token (rest.auth.token-file, rflink --token-file).
    ///
    /// Keys and secrets are written with mode 0600 in a 0700 directory. The CA's private key
    /// is not kept: to add REST host names, generate everything again.
    Generate {
        /// Directory to write into (created; existing files are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A host name or IP address clients use to reach the REST endpoint (repeatable;
        /// localhost and 127.0.0.1 are always included).
        #[arg(long = "rest-host", value_name = "HOST")]
        rest_hosts: Vec<String>,
        /// How many days the certificates are valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Write keys and secrets readable by everyone (0644) inside the 0700 directory: for
        /// docker compose, whose file secrets are bind-mounted as they are into containers
        /// running as another user.
        #[arg(long)]
        world_readable: bool,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    program: Program,

    /// Number of vertices in the job's chain.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
    vertices: u32,

    /// Parallelism of every vertex.
    #[arg(short = 'p', long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=32768))]
    parallelism: u32,

    /// The job's name [default: "rflink <job> job"].
    #[arg(long)]
    name: Option<String>,

    /// Which job of a job library to run (Flink's `--class`); may also follow the library's
    /// path.
    #[arg(short = 'c', long = "class", value_name = "NAME")]
    class: Option<String>,

    /// How long each subtask sleeps (`--job sleeping`), in milliseconds [default: 1000].
    #[arg(long)]
    millis: Option<u64>,

    /// The failure message (`--job failing`).
    #[arg(long)]
    message: Option<String>,

    /// Prints the job id and exits right after submission instead of waiting for the job.
    #[arg(short = 'd', long)]
    detached: bool,

    /// Restores the job's state from a savepoint or retained checkpoint (its directory or
    /// `_metadata` file), as Flink's `run --fromSavepoint`.
    #[arg(
        short = 's',
        long = "from-savepoint",
        alias = "fromSavepoint",
        value_name = "PATH"
    )]
    from_savepoint: Option<String>,

    /// A job configuration entry, `key=value` (repeatable), e.g.
    /// `-D execution.checkpointing.interval=500ms` or `-D restart-strategy.type=fixed-delay`.
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    config: Vec<String>,
}

/// What to run (one of).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Program {
    /// A testing job: every vertex runs the named testing invokable.
    #[arg(long, value_enum)]
    job: Option<TestingJob>,

    /// A streaming program of the job registry compiled into rflink (and into every
    /// rflink-node): `wordcount`, `sequence-sum`. Everything after its name is the program's
    /// arguments (e.g. `--input /data/text --parallelism 2`), except `-m/--jobmanager
    /// HOST:PORT`, which stays the client's option, as in `rflink run --example wordcount
    /// --input f -m host:8081`. Other `run` options go before `--example`.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "NAME [ARGS]")]
    example: Option<Vec<String>>,

    /// A job library: a `cdylib` built against rflink that exports its jobs with
    /// `rflink::export_jobs!` (see "Write your own job" in the README). It is loaded here to
    /// build the job graph, then uploaded with the job; the TaskManagers fetch it from the
    /// BlobServer. Everything after the path is the program's arguments, except
    /// `--class NAME` (which job of the library; needed when it exports several) and
    /// `-m/--jobmanager HOST:PORT`.
    #[arg(num_args = 1.., allow_hyphen_values = true, trailing_var_arg = true,
          value_name = "LIBRARY [ARGS]")]
    library: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TestingJob {
    /// Every subtask finishes at once (`NoOpInvokable`).
    Noop,
    /// Every subtask runs until cancelled (`BlockingNoOpInvokable`).
    Blocking,
    /// Every subtask fails (`FailingInvokable`).
    Failing,
    /// Every subtask sleeps `--millis`, then finishes (`SleepingInvokable`).
    Sleeping,
}

impl TestingJob {
    fn invokable(self) -> &'static str {
        match self {
            TestingJob::Noop => "NoOpInvokable",
            TestingJob::Blocking => "BlockingNoOpInvokable",
            TestingJob::Failing => "FailingInvokable",
            TestingJob::Sleeping => "SleepingInvokable",
        }
    }

    fn label(self) -> &'static str {
        match self {
            TestingJob::Noop => "noop",
            TestingJob::Blocking => "blocking",
            TestingJob::Failing => "failing",
            TestingJob::Sleeping => "sleeping",
        }
    }
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Shows running (and restarting) jobs.
    #[arg(short = 'r', long)]
    running: bool,
    /// Shows scheduled (created, initializing) jobs.
    #[arg(short = 's', long)]
    scheduled: bool,
    /// Shows all jobs, terminated ones too.
    #[arg(short = 'a', long)]
    all: bool,
}

/// How a command ended: the process's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 0.
    Success,
    /// 1: the job failed or was cancelled.
    JobUnsuccessful,
    /// 3: the JobManager could not be reached or refused.
    RestError,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> Self {
        ExitCode::from(match o {
            Outcome::Success => 0,
            Outcome::JobUnsuccessful => 1,
            Outcome::RestError => 3,
        })
    }
}

fn main() -> ExitCode {
    // Usage errors exit 2 with clap's message; --help and --version exit 0.
    let mut cli = Cli::try_parse().unwrap_or_else(|e| e.exit());
    init_tracing();
    if let Command::Security(command) = &cli.command {
        return security_command(command);
    }
    if let Command::Run(run) = &mut cli.command {
        if let Some(m) = run.program.example.as_mut().and_then(take_jobmanager_flag) {
            cli.jobmanager = Some(m);
        }
        if let Some(args) = run.program.library.as_mut() {
            if let Some(m) = take_jobmanager_flag(args) {
                cli.jobmanager = Some(m);
            }
            if let Some(class) = take_flag(args, "--class") {
                run.class = Some(class);
            }
        }
    }
    let ha_etcd = cli
        .ha_etcd
        .clone()
        .or_else(|| std::env::var(HA_ETCD_ENV).ok())
        .filter(|e| !e.trim().is_empty() && cli.jobmanager.is_none());
    let token = rest_token(cli.token.as_ref(), cli.token_file.as_deref());
    let rest_ca = cli.rest_ca.clone();
    let graph = match &cli.command {
        Command::Run(run) => Some(build_graph(run)),
        _ => None,
    };
    let timeout = Duration::from_secs(cli.timeout);
    let outcome = actix_rt::System::new().block_on(async move {
        let (address, https) = match ha_etcd {
            Some(endpoints) => {
                match leader_rest_url(&endpoints, &cli.ha_cluster_id, timeout).await {
                    Ok(url) => jobmanager_address(Some(&url)),
                    Err(err) => {
                        eprintln!(
                            "rflink: no leading JobManager found through etcd {endpoints}: {err}"
                        );
                        return Outcome::RestError;
                    }
                }
            }
            None => jobmanager_address(cli.jobmanager.as_deref()),
        };
        let mut builder = with_trust(
            RestClient::builder(address).timeout(timeout),
            rest_ca.as_deref(),
            https,
        );
        if let Some(token) = token {
            builder = builder.token(token);
        }
        let client = builder
            .build()
            .unwrap_or_else(|e| usage_error(ErrorKind::InvalidValue, e));
        let result = match cli.command {
            Command::Run(run) => {
                let (graph, library) = graph.expect("a run command has a graph");
                run_job(&client, &graph, library.as_deref(), run.detached).await
            }
            Command::List(list) => list_jobs(&client, &list).await,
            Command::Cancel { job_id } => cancel_job(&client, job_id).await,
            Command::Info { job_id, json } => job_info(&client, job_id, json).await,
            Command::Overview => overview(&client).await,
            Command::Savepoint {
                job_id,
                target_directory,
                timeout,
            } => savepoint(&client, job_id, target_directory.as_deref(), false, timeout).await,
            Command::Stop {
                job_id,
                savepoint_path,
                timeout,
            } => savepoint(&client, job_id, savepoint_path.as_deref(), true, timeout).await,
            // Handled before the REST client is made.
            Command::Security(_) => Ok(Outcome::Success),
        };
        result.unwrap_or_else(|e| {
            report(&client, &e);
            Outcome::RestError
        })
    });
    outcome.into()
}

/// The REST URL the leading JobManager published in etcd, waiting up to `timeout` for one
/// (an election may be under way).
async fn leader_rest_url(
    endpoints: &str,
    cluster_id: &str,
    timeout: Duration,
) -> Result<String, String> {
    let mut config = rflink_runtime::config::Configuration::default();
    config.high_availability.kind = "etcd".into();
    config.high_availability.etcd_endpoints = Some(endpoints.to_string());
    config.high_availability.cluster_id = cluster_id.to_string();
    let ha = shared_ha::connect(&config, timeout).await?;
    let mut leader = ha.watch_leader();
    let found = tokio::time::timeout(timeout, async {
        loop {
            if let Some(url) = leader
                .borrow_and_update()
                .as_ref()
                .and_then(|l| l.rest_url.clone())
            {
                return Ok(url);
            }
            if leader.changed().await.is_err() {
                return Err("the etcd watch ended".to_string());
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "no leader with a REST API published within {timeout:?}"
        ))
    });
    tracing::debug!(?found, "leader looked up in etcd");
    found
}

/// `rflink security generate`.
fn security_command(command: &SecurityCommand) -> ExitCode {
    use rflink_rpc::security::certgen::{ClusterMaterial, Validity};
    let SecurityCommand::Generate {
        out,
        rest_hosts,
        days,
        world_readable,
    } = command;
    let written = ClusterMaterial::generate(rest_hosts, Validity::days(*days))
        .and_then(|material| material.write_to(out, *world_readable));
    match written {
        Ok(files) => {
            for file in files {
                println!("wrote {}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("rflink security generate: {err}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Exits with a usage error (code 2) in clap's format.
fn usage_error(kind: ErrorKind, message: impl std::fmt::Display) -> ! {
    Cli::command().error(kind, message).exit()
}

/// The JobManager's address from `-m`, the environment or the default, as `host:port` and
/// whether it says `https://`; a malformed one is a usage error.
fn jobmanager_address(flag: Option<&str>) -> (String, bool) {
    let env = std::env::var(JOBMANAGER_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (address, source) = match (flag, env) {
        (Some(flag), _) => (flag.trim().to_string(), "-m/--jobmanager"),
        (None, Some(env)) => (env.trim().to_string(), JOBMANAGER_ENV),
        (None, None) => (DEFAULT_JOBMANAGER.to_string(), "the default"),
    };
    let (host_port, https) = match address.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (address.strip_prefix("http://").unwrap_or(&address), false),
    };
    let host_port = host_port.trim_end_matches('/');
    let valid = match host_port.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    };
    if !valid {
        usage_error(
            ErrorKind::InvalidValue,
            format!("invalid JobManager address {address:?} from {source}: expected host:port"),
        );
    }
    if address.starts_with("http://") {
        // Plain http spelled out: --rest-ca (which means https) contradicts it.
        return (address.trim_end_matches('/').to_string(), false);
    }
    (host_port.to_string(), https)
}

/// Parses `--token` into text that never prints (`Cli`'s `Debug` shows `******`).
fn sensitive(text: &str) -> Result<Sensitive, std::convert::Infallible> {
    Ok(Sensitive::new(text))
}

/// The REST token from `--token`, `--token-file` or `RFLINK_REST_TOKEN` (in that order; the
/// two flags together are a usage error, as are an unreadable or empty file).
fn rest_token(flag: Option<&Sensitive>, file: Option<&Path>) -> Option<Sensitive> {
    let token = match (flag.map(Sensitive::expose), file) {
        (Some(_), Some(_)) => usage_error(
            ErrorKind::ArgumentConflict,
            "--token and --token-file both give the REST token: pass one",
        ),
        (Some(token), None) => {
            let token = token.trim();
            if token.is_empty() {
                usage_error(ErrorKind::InvalidValue, "--token must not be empty");
            }
            Sensitive::new(token)
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
                usage_error(
                    ErrorKind::InvalidValue,
                    format!("cannot read --token-file {}: {e}", path.display()),
                )
            });
            let text = Sensitive::new(text);
            let token = text.expose().trim();
            if token.is_empty() {
                usage_error(
                    ErrorKind::InvalidValue,
                    format!("--token-file {} holds no token", path.display()),
                );
            }
            Sensitive::new(token)
        }
        (None, None) => {
            let text = Sensitive::new(std::env::var(TOKEN_ENV).ok()?);
            let token = text.expose().trim();
            if token.is_empty() {
                return None;
            }
            Sensitive::new(token)
        }
    };
    Some(token)
}

/// `builder` speaking HTTPS and trusting `--rest-ca`, if given; `https` (an `https://`
/// address) needs it.
fn with_trust(builder: RestClientBuilder, ca: Option<&Path>, https: bool) -> RestClientBuilder {
    let Some(ca) = ca else {
        if https {
            usage_error(
                ErrorKind::MissingRequiredArgument,
                "an https:// JobManager address needs --rest-ca <PEM>, the CA certificate of \
                 the cluster's REST endpoint (security.ssl.rest.truststore)",
            );
        }
        return builder;
    };
    match rflink_rpc::security::rest_client_config(ca) {
        Ok(config) => builder.tls(config),
        Err(e) => usage_error(
            ErrorKind::InvalidValue,
            format!("cannot use --rest-ca {}: {e}", ca.display()),
        ),
    }
}

/// Removes `flag X` / `flag=X` from a program's arguments; returns the last one given.
fn take_flag(args: &mut Vec<String>, flag: &str) -> Option<String> {
    let mut found = None;
    let mut kept = Vec::with_capacity(args.len());
    let mut iter = std::mem::take(args).into_iter();
    let prefix = format!("{flag}=");
    while let Some(arg) = iter.next() {
        if arg == flag {
            match iter.next() {
                Some(value) => found = Some(value),
                None => usage_error(ErrorKind::InvalidValue, format!("{arg} needs a value")),
            }
        } else if let Some(value) = arg.strip_prefix(&prefix) {
            found = Some(value.to_string());
        } else {
            kept.push(arg);
        }
    }
    *args = kept;
    found
}

/// Removes `-m X` / `--jobmanager X` / `--jobmanager=X` from a program's arguments; returns
/// the last one given.
fn take_jobmanager_flag(args: &mut Vec<String>) -> Option<String> {
    let mut found = None;
    let mut kept = Vec::with_capacity(args.len());
    let mut iter = std::mem::take(args).into_iter();
    while let Some(arg) = iter.next() {
        if arg == "-m" || arg == "--jobmanager" {
            match iter.next() {
                Some(value) => found = Some(value),
                None => usage_error(ErrorKind::InvalidValue, format!("{arg} needs HOST:PORT")),
            }
        } else if let Some(value) = arg.strip_prefix("--jobmanager=") {
            found = Some(value.to_string());
        } else {
            kept.push(arg);
        }
    }
    *args = kept;
    found
}

/// Applies `run`'s `--name`, `--from-savepoint` and `-D` to a program's graph and validates it.
fn finish_program_graph(run: &RunArgs, mut graph: JobGraph) -> JobGraph {
    if let Some(name) = &run.name {
        graph.name = name.clone();
    }
    graph.savepoint_path = run.from_savepoint.clone();
    for entry in &run.config {
        let Some((key, value)) = entry.split_once('=') else {
            usage_error(
                ErrorKind::InvalidValue,
                format!("-D {entry:?} is not key=value"),
            );
        };
        graph
            .job_config
            .insert(key.trim().to_string(), value.trim().to_string());
    }
    if let Err(err) = graph.validate() {
        usage_error(ErrorKind::InvalidValue, format!("{err}"));
    }
    graph
}

/// The job graph of a job library's program, and the library's bytes to upload with it.
fn build_library_graph(run: &RunArgs, args: &[String]) -> (JobGraph, Vec<u8>) {
    let Some((path, program_args)) = args.split_first() else {
        usage_error(ErrorKind::InvalidValue, "run needs the job library's path");
    };
    let path = std::path::Path::new(path);
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        usage_error(
            ErrorKind::InvalidValue,
            format!("cannot read job library {}: {e}", path.display()),
        )
    });
    let library = JobLibrary::load(path)
        .unwrap_or_else(|e| usage_error(ErrorKind::InvalidValue, format!("{e}")));
    if library.key() != rflink_runtime::blob::BlobKey::of(&bytes) {
        usage_error(
            ErrorKind::InvalidValue,
            format!("{} changed while it was being loaded", path.display()),
        );
    }
    let entry = choose_library_job(&library, run.class.as_deref())
        .unwrap_or_else(|e| usage_error(ErrorKind::InvalidValue, format!("{e}")));
    let graph =
        build_library_job_graph(&library, &bytes, &entry, program_args).unwrap_or_else(|e| {
            usage_error(
                ErrorKind::InvalidValue,
                format!("cannot build {entry} of {}: {e}", library.name()),
            )
        });
    (finish_program_graph(run, graph), bytes)
}

/// The job graph of `run`: a job library's program (with the library's bytes), an example
/// program's, or a testing chain.
fn build_graph(run: &RunArgs) -> (JobGraph, Option<Vec<u8>>) {
    if let Some(args) = &run.program.library {
        let (graph, bytes) = build_library_graph(run, args);
        return (graph, Some(bytes));
    }
    if run.class.is_some() {
        usage_error(
            ErrorKind::ArgumentConflict,
            "--class only applies to a job library",
        );
    }
    (build_builtin_graph(run), None)
}

/// The job graph of an example program or a testing chain.
fn build_builtin_graph(run: &RunArgs) -> JobGraph {
    if let Some(example) = &run.program.example {
        let Some((example, program_args)) = example.split_first() else {
            usage_error(ErrorKind::InvalidValue, "--example needs a program name");
        };
        let jobs = Jobs::new(rflink_examples::registry());
        return match build_job_graph(&jobs, example, program_args) {
            Ok(graph) => finish_program_graph(run, graph),
            Err(err) => usage_error(
                ErrorKind::InvalidValue,
                format!(
                    "cannot build {example}: {err} (known programs: {})",
                    jobs.0.names().join(", ")
                ),
            ),
        };
    }
    let Some(job) = run.program.job else {
        usage_error(
            ErrorKind::MissingRequiredArgument,
            "run needs --job or --example",
        );
    };
    if run.millis.is_some() && job != TestingJob::Sleeping {
        usage_error(
            ErrorKind::ArgumentConflict,
            "--millis only applies to --job sleeping",
        );
    }
    if run.message.is_some() && job != TestingJob::Failing {
        usage_error(
            ErrorKind::ArgumentConflict,
            "--message only applies to --job failing",
        );
    }
    let name = run
        .name
        .clone()
        .unwrap_or_else(|| format!("rflink {} job", job.label()));
    if name.is_empty() || name.len() > 255 {
        usage_error(
            ErrorKind::InvalidValue,
            "--name must be 1 to 255 characters",
        );
    }
    let mut vertices: Vec<JobVertex> = Vec::with_capacity(run.vertices as usize);
    for i in 0..run.vertices {
        let mut vertex = JobVertex::new(
            format!("{}-{}", job.label(), i + 1),
            job.invokable(),
            run.parallelism,
        );
        match job {
            TestingJob::Sleeping => {
                vertex = vertex.with_config("millis", run.millis.unwrap_or(1000).to_string());
            }
            TestingJob::Failing => {
                let message = run
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("{} failed on purpose", job.invokable()));
                vertex = vertex.with_config("message", message);
            }
            TestingJob::Noop | TestingJob::Blocking => {}
        }
        if let Some(previous) = vertices.last() {
            vertex = vertex.connect_from(previous, DistributionPattern::Pointwise);
        }
        vertices.push(vertex);
    }
    JobGraph::new(name, vertices)
}

/// Prints a failed request, with a hint when the JobManager is unreachable, refuses the
/// token or its certificate is not trusted.
fn report(client: &RestClient, e: &RestClientError) {
    eprintln!("rflink: error: {e}");
    match e {
        RestClientError::Connection { .. } | RestClientError::Timeout { .. } => {
            eprintln!(
                "rflink: is a JobManager running at {}? Set it with -m/--jobmanager or {JOBMANAGER_ENV}.",
                client.address()
            );
            if !client.is_https() {
                eprintln!("rflink: if its REST endpoint uses HTTPS, pass --rest-ca <PEM>.");
            }
        }
        RestClientError::Tls { .. } => eprintln!(
            "rflink: the TLS handshake with {} failed: does --rest-ca name the CA of the \
             cluster's REST certificate, and does the certificate name this host?",
            client.address()
        ),
        e if e.is_unauthorized() && client.has_token() => eprintln!(
            "rflink: the cluster refused the REST token: check --token, --token-file or \
             {TOKEN_ENV}"
        ),
        e if e.is_unauthorized() => eprintln!(
            "rflink: the cluster requires a REST token: pass --token or {TOKEN_ENV} (or \
             --token-file)"
        ),
        _ => {}
    }
}

async fn run_job(
    client: &RestClient,
    graph: &JobGraph,
    library: Option<&[u8]>,
    detached: bool,
) -> Result<Outcome, RestClientError> {
    let job_id = match library {
        Some(bytes) => client.submit_job_with_library(graph, bytes).await?,
        None => client.submit_job(graph).await?,
    };
    println!("Job has been submitted with JobID {job_id}");
    if detached {
        return Ok(Outcome::Success);
    }
    // Attached: report every status change until the job is over.
    let mut last = None;
    let status = loop {
        let status = client.job_status(job_id).await?;
        if last != Some(status) {
            println!("{} Job {job_id} is {status}", format_time(now_millis()));
            last = Some(status);
        }
        if status.is_globally_terminal() {
            break status;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    let result = client.job_result(job_id).await?;
    match status {
        JobStatus::Finished => {
            println!("Program execution finished");
            println!("Job with JobID {job_id} has finished.");
            if let Some(r) = result {
                println!("Job Runtime: {} ms", r.net_runtime);
            }
            Ok(Outcome::Success)
        }
        JobStatus::Canceled => {
            eprintln!("Job with JobID {job_id} was cancelled.");
            Ok(Outcome::JobUnsuccessful)
        }
        _ => {
            let exceptions = client.job_exceptions(job_id).await?;
            let root = exceptions
                .exception_history
                .entries
                .first()
                .map(|e| match &e.task_name {
                    Some(task) => format!("{} (in {task})", e.stacktrace),
                    None => e.stacktrace.clone(),
                })
                .or_else(|| {
                    result
                        .as_ref()
                        .and_then(|r| r.failure_cause.as_ref())
                        .map(|c| c.stack_trace.clone())
                })
                .unwrap_or_else(|| "no failure was recorded".to_string());
            let how = match result.map(|r| r.application_status) {
                Some(ApplicationStatus::Failed) | None => "failed",
                Some(_) => "ended unsuccessfully",
            };
            eprintln!("Job with JobID {job_id} {how} ({status}).");
            eprintln!("The program finished with the following exception:\n\n{root}");
            Ok(Outcome::JobUnsuccessful)
        }
    }
}

async fn list_jobs(client: &RestClient, args: &ListArgs) -> Result<Outcome, RestClientError> {
    let mut jobs = client.job_overviews().await?;
    jobs.sort_by_key(|j| j.start_time);
    let (show_running, show_scheduled) = if args.running || args.scheduled {
        (args.running || args.all, args.scheduled || args.all)
    } else {
        (true, true)
    };
    let scheduled =
        |j: &&JobSummary| matches!(j.state, JobStatus::Created | JobStatus::Initializing);
    let terminated = |j: &&JobSummary| j.state.is_globally_terminal();
    let running: Vec<_> = jobs
        .iter()
        .filter(|j| !scheduled(j) && !terminated(j))
        .collect();
    if show_running {
        print_jobs(&running, "Running/Restarting Jobs", "No running jobs.");
    }
    if show_scheduled {
        let list: Vec<_> = jobs.iter().filter(scheduled).collect();
        print_jobs(&list, "Scheduled Jobs", "No scheduled jobs.");
    }
    if args.all {
        let list: Vec<_> = jobs.iter().filter(terminated).collect();
        print_jobs(&list, "Terminated Jobs", "No terminated jobs.");
    }
    Ok(Outcome::Success)
}

/// Prints a list like Flink's `flink list`.
fn print_jobs(jobs: &[&JobSummary], title: &str, none: &str) {
    if jobs.is_empty() {
        println!("{none}");
        return;
    }
    let width = 62usize;
    let title = format!(" {title} ");
    let left = (width.saturating_sub(title.len())) / 2;
    let right = width.saturating_sub(title.len() + left);
    println!("{}{title}{}", "-".repeat(left), "-".repeat(right));
    for j in jobs {
        println!(
            "{} : {} : {} ({})",
            format_time(j.start_time),
            j.jid,
            j.name,
            j.state
        );
    }
    println!("{}", "-".repeat(width));
}

async fn savepoint(
    client: &RestClient,
    job_id: JobId,
    target: Option<&str>,
    stop: bool,
    timeout: u64,
) -> Result<Outcome, RestClientError> {
    println!(
        "{} job {job_id}.",
        if stop {
            "Stopping with a savepoint"
        } else {
            "Triggering a savepoint of"
        }
    );
    let trigger = client.trigger_savepoint(job_id, target, stop).await?;
    let location = client
        .wait_for_savepoint(job_id, &trigger, Duration::from_secs(timeout))
        .await?;
    println!("Savepoint completed. Path: {location}");
    println!("Resume with: rflink run --from-savepoint {location} ...");
    Ok(Outcome::Success)
}

async fn cancel_job(client: &RestClient, job_id: JobId) -> Result<Outcome, RestClientError> {
    println!("Cancelling job {job_id}.");
    client.cancel_job(job_id).await?;
    println!("Cancelled job {job_id}.");
    Ok(Outcome::Success)
}

async fn job_info(
    client: &RestClient,
    job_id: JobId,
    json: bool,
) -> Result<Outcome, RestClientError> {
    let d = client.job_details(job_id).await?;
    if json {
        match serde_json::to_string_pretty(&d) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                return Err(RestClientError::Decode {
                    request: format!("GET /v1/jobs/{job_id}"),
                    reason: e.to_string(),
                })
            }
        }
        return Ok(Outcome::Success);
    }
    let end = if d.end_time < 0 {
        "-".to_string()
    } else {
        format_time(d.end_time)
    };
    println!("Job:        {} ({})", d.name, d.jid);
    println!("State:      {}", d.state);
    println!("Start time: {} UTC", format_time(d.start_time));
    println!("End time:   {end}");
    println!("Duration:   {} ms", d.duration);
    println!("Vertices:");
    for v in &d.vertices {
        let counts: Vec<String> = rflink_runtime::executiongraph::ExecutionState::ALL
            .iter()
            .filter(|s| v.tasks.get(**s) > 0)
            .map(|s| format!("{s}: {}", v.tasks.get(*s)))
            .collect();
        println!(
            "  {}  {}  parallelism {}  {}  [{}]",
            v.id,
            v.name,
            v.parallelism,
            v.status,
            counts.join(", ")
        );
    }
    Ok(Outcome::Success)
}

async fn overview(client: &RestClient) -> Result<Outcome, RestClientError> {
    let o = client.overview().await?;
    println!("TaskManagers: {}", o.taskmanagers);
    println!(
        "Slots:        {} total, {} available",
        o.slots_total, o.slots_available
    );
    println!(
        "Jobs:         {} running, {} finished, {} cancelled, {} failed",
        o.jobs_running, o.jobs_finished, o.jobs_cancelled, o.jobs_failed
    );
    println!("Version:      {} ({})", o.flink_version, o.flink_commit);
    Ok(Outcome::Success)
}

fn now_millis() -> i64 {
    rflink_runtime::executiongraph::now_millis()
}

/// Millis since the epoch as Flink's CLI shows them, `dd.MM.yyyy HH:mm:ss` (in UTC).
fn format_time(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}.{month:02}.{year:04} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_like_flinks() {
        assert_eq!(format_time(0), "01.01.1970 00:00:00");
        assert_eq!(format_time(1_795_222_043_417), "21.11.2026 00:47:23");
        assert_eq!(format_time(951_782_400_000), "29.02.2000 00:00:00");
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn an_https_address_says_so() {
        assert_eq!(
            jobmanager_address(Some("https://jm:8081/")),
            ("jm:8081".to_string(), true)
        );
        assert_eq!(
            jobmanager_address(Some("jm:8081")),
            ("jm:8081".to_string(), false)
        );
        // Spelled-out http stays so: the client refuses it together with --rest-ca.
        assert_eq!(
            jobmanager_address(Some("http://jm:8081")),
            ("http://jm:8081".to_string(), false)
        );
    }

    #[test]
    fn the_token_flags_parse_as_global_options() {
        let cli =
            Cli::try_parse_from(["rflink", "list", "--rest-ca", "ca.pem", "--token-file", "t"])
                .expect("parses");
        assert_eq!(cli.rest_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(cli.token_file, Some(PathBuf::from("t")));
        assert_eq!(cli.token, None);
        // The token is never printed by Debug of what it becomes.
        let cli = Cli::try_parse_from(["rflink", "--token", " secret-value ", "overview"])
            .expect("parses");
        assert!(!format!("{cli:?}").contains("secret-value"), "{cli:?}");
        let token = rest_token(cli.token.as_ref(), None).expect("a token");
        assert_eq!(token.expose(), "secret-value");
        assert!(!format!("{token:?}").contains("secret"));
    }

    #[test]
    fn run_example_passes_everything_after_the_name_to_the_program() {
        let cli = Cli::try_parse_from([
            "rflink",
            "run",
            "--example",
            "wordcount",
            "--input",
            "a.txt",
            "--parallelism",
            "2",
            "-m",
            "jm:8081",
        ])
        .expect("parses");
        let Command::Run(mut run) = cli.command else {
            panic!("a run command")
        };
        let mut args = run.program.example.clone().expect("an example");
        assert_eq!(take_jobmanager_flag(&mut args), Some("jm:8081".to_string()));
        assert_eq!(
            args,
            ["wordcount", "--input", "a.txt", "--parallelism", "2"].map(String::from)
        );
        run.program.example = Some(args);
        let (g, library) = build_graph(&run);
        assert!(library.is_none());
        let program = g.program.as_ref().expect("a streaming program");
        assert_eq!(program.entry, "wordcount");
        assert_eq!(
            program.args,
            ["--input", "a.txt", "--parallelism", "2"].map(String::from)
        );
        assert!(g.validate().is_ok());
        // Without --output the counts are printed by every subtask: all run with parallelism 2.
        assert!(g.vertices.iter().all(|v| v.parallelism == 2));
    }

    #[test]
    fn run_takes_a_library_path_with_its_arguments_class_and_jobmanager() {
        let cli = Cli::try_parse_from([
            "rflink",
            "run",
            "-d",
            "target/libmy_job.so",
            "--input",
            "a.txt",
            "--class",
            "shout",
            "-m",
            "jm:8081",
        ])
        .expect("parses");
        let Command::Run(mut run) = cli.command else {
            panic!("a run command")
        };
        assert!(run.detached);
        let mut args = run.program.library.clone().expect("a library");
        assert_eq!(take_jobmanager_flag(&mut args), Some("jm:8081".to_string()));
        assert_eq!(take_flag(&mut args, "--class"), Some("shout".to_string()));
        assert_eq!(
            args,
            ["target/libmy_job.so", "--input", "a.txt"].map(String::from)
        );
        run.program.library = Some(args);
        let both = Cli::try_parse_from(["rflink", "run", "--example", "wordcount", "lib.so"]);
        assert!(both.is_ok(), "trailing words belong to the example");
        let none = Cli::try_parse_from(["rflink", "run", "-d"]);
        assert!(none.is_err(), "a program is required");
    }

    #[test]
    fn run_builds_a_pointwise_chain() {
        let cli = Cli::try_parse_from([
            "rflink",
            "run",
            "--job",
            "sleeping",
            "--vertices",
            "3",
            "-p",
            "4",
            "--millis",
            "50",
        ])
        .expect("parses");
        let Command::Run(run) = cli.command else {
            panic!("a run command")
        };
        let (g, _) = build_graph(&run);
        assert_eq!(g.vertices.len(), 3);
        assert!(g.validate().is_ok());
        assert!(g.vertices.iter().all(|v| v.parallelism == 4
            && v.invokable == "SleepingInvokable"
            && v.config.get("millis").map(String::as_str) == Some("50")));
        assert_eq!(g.vertices[2].inputs[0].source, g.vertices[1].id);
        assert_eq!(g.name, "rflink sleeping job");
    }
}
