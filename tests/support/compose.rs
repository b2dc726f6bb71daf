//! The compose harness of the compose suites (`tests/compose.rs`, `tests/compose_ha.rs`):
//! `scripts/docker-build`, a uniquely named compose project over one or more compose files with
//! ephemeral published REST ports, bounded docker and compose commands, and a guard that takes
//! the project down with its volumes (`down -v`) when dropped, on failure and on SIGTERM.
//! Included by those suites as `#[path = "support/compose.rs"] mod compose_support;` (next to
//! `mod support;`), so the other suites do not compile it.

#![allow(dead_code)] // Each suite uses a part of this.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use rflink_runtime::rest::client::RestClient;
use rflink_runtime::rest::messages::ClusterOverviewWithVersion;

/// `scripts/docker-build`: a release build and an image (a no-op cargo build and a cached image
/// when `scripts/test` built it already).
pub const BUILD_DEADLINE: Duration = Duration::from_secs(12 * 60);
/// One docker or compose command.
pub const DOCKER_DEADLINE: Duration = Duration::from_secs(120);
/// WordCount through the CLI.
pub const JOB_DEADLINE: Duration = Duration::from_secs(120);
/// The repository: docker-compose.yml and scripts/ are here.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What a finished command left: exit code (-1 when killed by a signal), stdout, stderr.
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    pub fn describe(&self) -> String {
        format!(
            "exit code {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `command` with its output captured, killed (and reaped) past `timeout`.
pub fn run(mut command: Command, timeout: Duration) -> Outcome {
    let shown = format!("{command:?}");
    let mut child = match command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            return Outcome {
                code: -1,
                stdout: String::new(),
                stderr: format!("cannot start {shown}: {err}"),
            }
        }
    };
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code().unwrap_or(-1),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = err.join().unwrap_or_default();
                return Outcome {
                    code: -1,
                    stdout: out.join().unwrap_or_default(),
                    stderr: format!("{stderr}\n{shown} did not end within {timeout:?}; killed"),
                };
            }
        }
    };
    Outcome {
        code,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

pub fn docker(args: &[&str]) -> Command {
    let mut command = Command::new("docker");
    command.args(args);
    command
}

/// The compose command: `docker compose` (v2) if present, else `docker-compose` (v1), or why
/// the suite cannot run.
pub fn compose_program() -> Result<Vec<String>, String> {
    if std::env::var("RFLINK_SKIP_DOCKER").as_deref() == Ok("1") {
        return Err("RFLINK_SKIP_DOCKER=1".into());
    }
    let info = run(docker(&["info"]), Duration::from_secs(30));
    if !info.ok() {
        let reason = info.stderr.lines().last().unwrap_or("").trim().to_string();
        return Err(format!(
            "`docker info` fails: no reachable Docker engine ({reason})"
        ));
    }
    if run(docker(&["compose", "version"]), Duration::from_secs(30)).ok() {
        return Ok(vec!["docker".into(), "compose".into()]);
    }
    let mut v1 = Command::new("docker-compose");
    v1.arg("version");
    if run(v1, Duration::from_secs(30)).ok() {
        return Ok(vec!["docker-compose".into()]);
    }
    Err("neither `docker compose` nor `docker-compose` works".into())
}

/// One compose project: its name, the REST port published on the host, and the guard that takes
/// it down (`down -v`) when dropped.
pub struct Project {
    program: Vec<String>,
    pub name: String,
    pub image: String,
    /// The etcd image (`docker-compose.ha.yml`).
    etcd_image: String,
    /// The compose files, relative to the repository.
    files: Vec<String>,
    /// The REST port docker published on 127.0.0.1 (docker picks a free one when it binds, so
    /// no other process can take it in between); 0 until [`Project::discover_rest_port`].
    rest_port: AtomicU16,
    /// Set once compose logs went into a failure message, so the drop guard does not repeat them.
    logs_reported: AtomicBool,
}

impl Project {
    /// A project over the compose `files` (relative to the repository), with `image` as the
    /// rflink image and `$RFLINK_ETCD_IMAGE` (else `rflink-etcd:local`) as the etcd one.
    pub fn new(program: Vec<String>, image: String, files: &[&str]) -> Project {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        Project {
            program,
            name: format!("rflinkcompose{}x{nanos}", std::process::id()),
            image,
            etcd_image: etcd_image(),
            files: files.iter().map(|f| f.to_string()).collect(),
            rest_port: AtomicU16::new(0),
            logs_reported: AtomicBool::new(false),
        }
    }

    /// `docker compose -p NAME -f FILE... ARGS` with the images and the REST ports.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program[0]);
        command.args(&self.program[1..]).arg("-p").arg(&self.name);
        for file in &self.files {
            command.arg("-f").arg(repo().join(file));
        }
        command
            .args(args)
            .current_dir(repo())
            .env("RFLINK_IMAGE", &self.image)
            .env("RFLINK_ETCD_IMAGE", &self.etcd_image)
            // `127.0.0.1::8081`: a host port of docker's choosing, on loopback only.
            .env("RFLINK_REST_PORT", "127.0.0.1:")
            .env("RFLINK_STANDBY_REST_PORT", "127.0.0.1:");
        command
    }

    /// Asks compose which host port the JobManager's REST port got; returns it.
    pub fn discover_rest_port(&self) -> u16 {
        let port = self.published_rest_port("jobmanager");
        self.rest_port.store(port, Ordering::SeqCst);
        port
    }

    /// Asks compose which host port the REST port (8081) of `service` got.
    pub fn published_rest_port(&self, service: &str) -> u16 {
        let printed = self.compose(&["port", service, "8081"]);
        printed
            .trim()
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|port| *port > 0)
            .unwrap_or_else(|| {
                self.fail(&format!(
                    "no published REST port of {service} in {printed:?}"
                ))
            })
    }

    /// The published REST port (after [`Project::discover_rest_port`]).
    pub fn rest_port(&self) -> u16 {
        self.rest_port.load(Ordering::SeqCst)
    }

    /// Runs a compose command; panics with its output and the cluster's logs if it fails.
    pub fn compose(&self, args: &[&str]) -> String {
        let outcome = run(self.command(args), DOCKER_DEADLINE);
        if !outcome.ok() {
            self.fail(&format!("compose {args:?} failed: {}", outcome.describe()));
        }
        outcome.stdout
    }

    /// Runs a docker command; panics with its output and the cluster's logs if it fails.
    pub fn docker(&self, args: &[&str]) -> String {
        let outcome = run(docker(args), DOCKER_DEADLINE);
        if !outcome.ok() {
            self.fail(&format!("docker {args:?} failed: {}", outcome.describe()));
        }
        outcome.stdout
    }

    /// Every container's output.
    pub fn logs(&self) -> String {
        let outcome = run(self.command(&["logs", "--no-color"]), DOCKER_DEADLINE);
        format!(
            "---- compose logs of {} ----\n{}{}",
            self.name, outcome.stdout, outcome.stderr
        )
    }

    /// Panics with `message` and the compose logs.
    pub fn fail(&self, message: &str) -> ! {
        let logs = self.logs();
        self.logs_reported.store(true, Ordering::SeqCst);
        panic!("{message}\n{logs}");
    }

    /// The container ids of `service`, in compose's order.
    pub fn containers(&self, service: &str) -> Vec<String> {
        self.compose(&["ps", "-q", service])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The running containers of `service`.
    pub fn running_containers(&self, service: &str) -> Vec<String> {
        self.containers(service)
            .into_iter()
            .filter(|c| self.inspect(c, "{{.State.Running}}") == "true")
            .collect()
    }

    /// `docker inspect -f FORMAT container`, trimmed.
    pub fn inspect(&self, container: &str, format: &str) -> String {
        self.docker(&["inspect", "-f", format, container])
            .trim()
            .to_string()
    }

    /// Waits until the project has `containers` containers, every one `healthy`.
    pub async fn wait_healthy(&self, containers: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ids = self.compose(&["ps", "-q"]);
            let states: Vec<String> = ids
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|id| {
                    self.inspect(
                        id.trim(),
                        "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                    )
                })
                .collect();
            if states.len() == containers && states.iter().all(|s| s.ends_with(" healthy")) {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "the containers were not all healthy within {timeout:?}: {states:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Polls the JobManager's `/overview` (through the published port) until `check` holds.
    pub async fn wait_for_overview(
        &self,
        rest: &RestClient,
        what: &str,
        timeout: Duration,
        check: impl Fn(&ClusterOverviewWithVersion) -> bool,
    ) -> ClusterOverviewWithVersion {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match rest.overview().await {
                Ok(overview) if check(&overview) => return overview,
                Ok(overview) => format!("{overview:?}"),
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "never happened within {timeout:?}: {what}; last overview: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `down -v`: containers, network and volume.
    pub fn down(&self) -> Outcome {
        run(
            self.command(&["down", "-v", "--remove-orphans", "--timeout", "2"]),
            DOCKER_DEADLINE,
        )
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.logs_reported.load(Ordering::SeqCst) {
            eprintln!("{}", self.logs());
        }
        let outcome = self.down();
        if !outcome.ok() {
            eprintln!(
                "compose suite: `down -v` of project {} failed: {}",
                self.name,
                outcome.describe()
            );
        }
    }
}

/// Submits the checkpointed streaming WordCount detached through the CLI, to the REST API on
/// `rest_port`, with `extra` job arguments; its job id.
pub fn submit_streaming_wordcount(
    project: &Project,
    rest_port: u16,
    lines: u64,
    seed: u64,
    output: &str,
    extra: &[&str],
) -> rflink_runtime::types::JobId {
    let secrets = secrets_dir();
    let mut args: Vec<String> = [
        "-m",
        &format!("127.0.0.1:{rest_port}"),
        "--rest-ca",
        &secrets.join("ca.pem").display().to_string(),
        "--token-file",
        &secrets.join("rest-token").display().to_string(),
        "run",
        "-d",
        "--example",
        "streaming-wordcount",
        "--lines",
        &lines.to_string(),
        "--lines-per-second",
        "1000",
        "--seed",
        &seed.to_string(),
        "--output",
        output,
        "--parallelism",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let (code, stdout, stderr) = crate::support::rflink_cli(&args, JOB_DEADLINE);
    if code != 0 {
        project.fail(&format!(
            "rflink {args:?}: exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ));
    }
    let Some(job_id) = stdout
        .split_whitespace()
        .find_map(|w| w.parse::<rflink_runtime::types::JobId>().ok())
    else {
        project.fail(&format!("no job id in {stdout:?}"));
    };
    job_id
}

/// Waits until the job completed a checkpoint.
pub async fn wait_for_a_checkpoint(
    project: &Project,
    rest: &RestClient,
    job_id: rflink_runtime::types::JobId,
) {
    let deadline = Instant::now() + JOB_DEADLINE;
    loop {
        let completed = rest
            .checkpoints(job_id)
            .await
            .ok()
            .and_then(|c| c["counts"]["completed"].as_u64())
            .unwrap_or(0);
        if completed >= 1 {
            return;
        }
        if Instant::now() >= deadline {
            project.fail("no checkpoint completed on compose");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the job reached a globally terminal status; returns it.
pub async fn wait_for_end(
    project: &Project,
    rest: &RestClient,
    job_id: rflink_runtime::types::JobId,
) -> rflink_runtime::executiongraph::JobStatus {
    let deadline = Instant::now() + JOB_DEADLINE;
    loop {
        match rest.job_status(job_id).await {
            Ok(status) if status.is_globally_terminal() => return status,
            _ => {}
        }
        if Instant::now() >= deadline {
            project.fail(&format!("job {job_id} did not end within {JOB_DEADLINE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Takes the project down if the test process gets SIGTERM (nextest's timeout), where no drop
/// guard would run: a thread waits for the signal, runs `down -v` and exits.
pub fn down_on_sigterm(project: &Project) {
    let mut command = project.command(&["down", "-v", "--remove-orphans", "--timeout", "2"]);
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                term.recv().await;
                eprintln!("compose suite: SIGTERM; taking the compose project down");
                let _ = command.stdout(Stdio::null()).stderr(Stdio::null()).status();
                std::process::exit(1);
            }
        });
    });
}

pub fn skip(reason: &str) {
    let line = format!("SKIPPED: compose suite: {reason}");
    println!("{line}");
    eprintln!("{line}");
}

/// Where `scripts/docker-build` put the compose cluster's security material.
pub fn secrets_dir() -> PathBuf {
    std::env::var_os("RFLINK_SECRETS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("docker/secrets"))
}

/// The etcd image: `$RFLINK_ETCD_IMAGE`, else `rflink-etcd:local` (what scripts/docker-build
/// builds).
pub fn etcd_image() -> String {
    std::env::var("RFLINK_ETCD_IMAGE").unwrap_or_else(|_| "rflink-etcd:local".into())
}

/// Runs `scripts/docker-build` for `image` (and the etcd image); panics with its output if it
/// fails.
pub fn build_images(image: &str) {
    let mut build = Command::new(repo().join("scripts/docker-build"));
    build
        .current_dir(repo())
        .env("RFLINK_IMAGE", image)
        .env("RFLINK_ETCD_IMAGE", etcd_image());
    let built = run(build, BUILD_DEADLINE);
    assert!(built.ok(), "scripts/docker-build: {}", built.describe());
}

/// A REST client for the published port `rest_port`: HTTPS trusting the generated CA, with the
/// bearer token.
pub fn rest_client(rest_port: u16) -> RestClient {
    let secrets = secrets_dir();
    let token = std::fs::read_to_string(secrets.join("rest-token")).expect("the REST token");
    RestClient::builder(format!("127.0.0.1:{rest_port}"))
        .tls(
            rflink_rpc::security::rest_client_config(&secrets.join("ca.pem"))
                .expect("the generated CA"),
        )
        .token(rflink_rpc::security::Sensitive::new(token.trim()))
        .build()
        .expect("a REST client")
}
