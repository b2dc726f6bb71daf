//! The compose suite: the `docker-compose.yml` cluster (one JobManager, two TaskManagers) on the
//! image `scripts/docker-build` makes, driven from the host as a user would: WordCount through
//! the `rflink` CLI against the published REST port, the output read back from the shared
//! volume and compared with the sequential reference; then a TaskManager container killed and
//! another cut off the compose network, each noticed by the JobManager.
//!
//! Needs a reachable Docker engine and `docker compose` (or `docker-compose`). Without them, or
//! with `RFLINK_SKIP_DOCKER=1`, it prints `SKIPPED: compose suite: <reason>` and passes
//! (`scripts/test` says up front whether it will run). Every step is bounded; the REST port is
//! an ephemeral one; the compose project has a unique name and is always taken down with its
//! volume (`down -v`), by a drop guard on failure and on SIGTERM (nextest's timeout).

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rflink_runtime::rest::client::RestClient;
use rflink_runtime::rest::messages::ClusterOverviewWithVersion;

/// `scripts/docker-build`: a release build and an image (a no-op cargo build and a cached image
/// when `scripts/test` built it already).
const BUILD_DEADLINE: Duration = Duration::from_secs(12 * 60);
/// One docker or compose command.
const DOCKER_DEADLINE: Duration = Duration::from_secs(120);
/// The cluster up and healthy, both TaskManagers registered.
const UP_DEADLINE: Duration = Duration::from_secs(90);
/// WordCount through the CLI.
const JOB_DEADLINE: Duration = Duration::from_secs(120);
/// A lost TaskManager is noticed: heartbeat.timeout (5 s by default) plus a margin.
const LOSS_DEADLINE: Duration = Duration::from_secs(20);

/// The repository: docker-compose.yml and scripts/ are here.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What a finished command left: exit code (-1 when killed by a signal), stdout, stderr.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.code == 0
    }

    fn describe(&self) -> String {
        format!(
            "exit code {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `command` with its output captured, killed (and reaped) past `timeout`.
fn run(mut command: Command, timeout: Duration) -> Outcome {
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

fn docker(args: &[&str]) -> Command {
    let mut command = Command::new("docker");
    command.args(args);
    command
}

/// The compose command: `docker compose` (v2) if present, else `docker-compose` (v1), or why
/// the suite cannot run.
fn compose_program() -> Result<Vec<String>, String> {
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
struct Project {
    program: Vec<String>,
    name: String,
    image: String,
    /// The REST port docker published on 127.0.0.1 (docker picks a free one when it binds, so
    /// no other process can take it in between); 0 until [`Project::discover_rest_port`].
    rest_port: std::sync::atomic::AtomicU16,
    /// Set once compose logs went into a failure message, so the drop guard does not repeat them.
    logs_reported: AtomicBool,
}

impl Project {
    fn new(program: Vec<String>, image: String) -> Project {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        Project {
            program,
            name: format!("rflinkcompose{}x{nanos}", std::process::id()),
            image,
            rest_port: std::sync::atomic::AtomicU16::new(0),
            logs_reported: AtomicBool::new(false),
        }
    }

    /// `docker compose -p NAME -f docker-compose.yml ARGS` with the image and the REST port.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program[0]);
        command
            .args(&self.program[1..])
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(repo().join("docker-compose.yml"))
            .args(args)
            .current_dir(repo())
            .env("RFLINK_IMAGE", &self.image)
            // `127.0.0.1::8081`: a host port of docker's choosing, on loopback only.
            .env("RFLINK_REST_PORT", "127.0.0.1:");
        command
    }

    /// Asks compose which host port the JobManager's REST port got; returns it.
    fn discover_rest_port(&self) -> u16 {
        let printed = self.compose(&["port", "jobmanager", "8081"]);
        let port = printed
            .trim()
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|port| *port > 0)
            .unwrap_or_else(|| self.fail(&format!("no published REST port in {printed:?}")));
        self.rest_port.store(port, Ordering::SeqCst);
        port
    }

    /// The published REST port (after [`Project::discover_rest_port`]).
    fn rest_port(&self) -> u16 {
        self.rest_port.load(Ordering::SeqCst)
    }

    /// Runs a compose command; panics with its output and the cluster's logs if it fails.
    fn compose(&self, args: &[&str]) -> String {
        let outcome = run(self.command(args), DOCKER_DEADLINE);
        if !outcome.ok() {
            self.fail(&format!("compose {args:?} failed: {}", outcome.describe()));
        }
        outcome.stdout
    }

    /// Runs a docker command; panics with its output and the cluster's logs if it fails.
    fn docker(&self, args: &[&str]) -> String {
        let outcome = run(docker(args), DOCKER_DEADLINE);
        if !outcome.ok() {
            self.fail(&format!("docker {args:?} failed: {}", outcome.describe()));
        }
        outcome.stdout
    }

    /// Every container's output.
    fn logs(&self) -> String {
        let outcome = run(self.command(&["logs", "--no-color"]), DOCKER_DEADLINE);
        format!(
            "---- compose logs of {} ----\n{}{}",
            self.name, outcome.stdout, outcome.stderr
        )
    }

    /// Panics with `message` and the compose logs.
    fn fail(&self, message: &str) -> ! {
        let logs = self.logs();
        self.logs_reported.store(true, Ordering::SeqCst);
        panic!("{message}\n{logs}");
    }

    /// The container ids of `service`, in compose's order.
    fn containers(&self, service: &str) -> Vec<String> {
        self.compose(&["ps", "-q", service])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The running containers of `service`.
    fn running_containers(&self, service: &str) -> Vec<String> {
        self.containers(service)
            .into_iter()
            .filter(|c| self.inspect(c, "{{.State.Running}}") == "true")
            .collect()
    }

    /// `docker inspect -f FORMAT container`, trimmed.
    fn inspect(&self, container: &str, format: &str) -> String {
        self.docker(&["inspect", "-f", format, container])
            .trim()
            .to_string()
    }

    /// Waits until every container of the project reports `healthy`.
    async fn wait_healthy(&self, timeout: Duration) {
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
            if states.len() == 3 && states.iter().all(|s| s.ends_with(" healthy")) {
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
    async fn wait_for_overview(
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
    fn down(&self) -> Outcome {
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

/// Submits the checkpointed streaming WordCount detached through the CLI; its job id.
fn submit_streaming_wordcount(
    project: &Project,
    lines: u64,
    seed: u64,
    output: &str,
) -> rflink_runtime::types::JobId {
    let secrets = secrets_dir();
    let args: Vec<String> = [
        "-m",
        &format!("127.0.0.1:{}", project.rest_port()),
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
    let (code, stdout, stderr) = support::rflink_cli(&args, JOB_DEADLINE);
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
async fn wait_for_a_checkpoint(
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
async fn wait_for_end(
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
fn down_on_sigterm(project: &Project) {
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

fn skip(reason: &str) {
    let line = format!("SKIPPED: compose suite: {reason}");
    println!("{line}");
    eprintln!("{line}");
}

/// Where `scripts/docker-build` put the compose cluster's security material.
fn secrets_dir() -> PathBuf {
    std::env::var_os("RFLINK_SECRETS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("docker/secrets"))
}

/// The compose cluster is secure by default: plaintext HTTP gets no answer, a mutation without
/// the token is refused and changes nothing, the nodes run mutual TLS with the secret, a rogue
/// TaskManager on the compose network without them cannot join, and the secret shows nowhere.
async fn check_security(project: &Project, rest: &RestClient, cluster_secret: &str) {
    let address = format!("127.0.0.1:{}", project.rest_port());
    let plain = RestClient::with_timeout(address.clone(), Duration::from_secs(5));
    if plain.overview().await.is_ok() {
        project.fail("the REST port answered plaintext HTTP");
    }
    let ca = secrets_dir().join("ca.pem");
    let anonymous = RestClient::builder(address)
        .tls(rflink_rpc::security::rest_client_config(&ca).expect("the CA"))
        .build()
        .expect("a REST client");
    // Reads are open; a cancel without the token is a 401.
    let before = anonymous.overview().await.expect("reads need no token");
    match anonymous
        .cancel_job(rflink_runtime::types::JobId::generate())
        .await
    {
        Err(err) if err.is_unauthorized() => {}
        other => project.fail(&format!("a cancel without the token: {other:?}")),
    }
    let after = rest.overview().await.expect("overview");
    assert_eq!(
        (before.jobs_running, before.jobs_cancelled),
        (after.jobs_running, after.jobs_cancelled)
    );
    // Every node secures its transports.
    let logs = project.logs();
    assert!(
        logs.contains("mutual TLS + cluster secret"),
        "no node reports its security mode:\n{logs}"
    );
    // /jobmanager/config lists the keys, never the secret or the token.
    let config = rest
        .get_json("/jobmanager/config")
        .await
        .expect("/jobmanager/config")
        .to_string();
    assert!(
        config.contains("security.ssl.internal.enabled") && !config.contains(cluster_secret),
        "{config}"
    );

    // A rogue TaskManager on the compose network, without TLS or the secret.
    let jobmanager = project.containers("jobmanager");
    let Some(jobmanager) = jobmanager.first() else {
        project.fail("no jobmanager container");
    };
    let networks = project.inspect(
        jobmanager,
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
    );
    let Some(network) = networks.split_whitespace().next() else {
        project.fail(&format!("{jobmanager} is on no network"));
    };
    let rogue = format!("{}-rogue", project.name);
    let image = project.image.clone();
    project.docker(&[
        "run",
        "-d",
        "--name",
        &rogue,
        "--network",
        network,
        &image,
        "--role",
        "tm",
        "--jobmanager",
        "jobmanager:6123",
        "--advertised-host-from-hostname",
        "-D",
        "taskmanager.bind-host=0.0.0.0",
    ]);
    let deadline = Instant::now() + UP_DEADLINE;
    let refused = loop {
        let jm_logs = project.compose(&["logs", "--no-color", "jobmanager"]);
        if jm_logs.contains("did not start the cluster-secret handshake")
            || jm_logs.contains("does not speak TLS")
        {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rogue_logs = run(docker(&["logs", &rogue]), DOCKER_DEADLINE).describe();
    let overview = rest.overview().await.expect("overview");
    let _ = run(docker(&["rm", "-f", &rogue]), Duration::from_secs(30));
    if !refused || overview.taskmanagers != 2 {
        project.fail(&format!(
            "a rogue TaskManager was not refused ({overview:?}):\n{rogue_logs}"
        ));
    }
    let logs = project.logs();
    if logs.contains(cluster_secret) {
        project.fail("the cluster secret appears in the logs");
    }
    eprintln!("compose suite: secured (HTTPS, token, mutual TLS + secret; a rogue TaskManager was refused)");
}

#[actix_rt::test]
async fn wordcount_on_docker_compose_and_task_manager_loss() {
    let program = match compose_program() {
        Ok(program) => program,
        Err(reason) => return skip(&reason),
    };
    let image = std::env::var("RFLINK_IMAGE").unwrap_or_else(|_| "rflink:local".into());

    // The image, from this checkout.
    let mut build = Command::new(repo().join("scripts/docker-build"));
    build.current_dir(repo()).env("RFLINK_IMAGE", &image);
    let built = run(build, BUILD_DEADLINE);
    assert!(built.ok(), "scripts/docker-build: {}", built.describe());

    let project = Project::new(program, image);
    down_on_sigterm(&project);
    project.compose(&["up", "-d"]);
    let rest_port = project.discover_rest_port();
    eprintln!(
        "compose suite: project {}, REST on 127.0.0.1:{rest_port}",
        project.name
    );
    // Secure by default: HTTPS with the generated CA, and the bearer token.
    let secrets = secrets_dir();
    let token = std::fs::read_to_string(secrets.join("rest-token")).expect("the REST token");
    let cluster_secret =
        std::fs::read_to_string(secrets.join("cluster-secret")).expect("the cluster secret");
    let rest = RestClient::builder(format!("127.0.0.1:{rest_port}"))
        .tls(
            rflink_rpc::security::rest_client_config(&secrets.join("ca.pem"))
                .expect("the generated CA"),
        )
        .token(rflink_rpc::security::Sensitive::new(token.trim()))
        .build()
        .expect("a REST client");
    let overview = project
        .wait_for_overview(&rest, "2 TaskManagers registered", UP_DEADLINE, |o| {
            o.taskmanagers == 2
        })
        .await;
    assert_eq!(overview.slots_total, 4, "2 slots per TaskManager");
    // Both probes work: the JobManager's REST one (over HTTPS) and the TaskManagers' TCP one.
    project.wait_healthy(UP_DEADLINE).await;
    check_security(&project, &rest, cluster_secret.trim()).await;

    // WordCount at parallelism 4: all 4 slots, so both TaskManagers run tasks and the keyBy
    // shuffle crosses containers (each dialing the other's advertised host name). Input and
    // output are in the shared volume.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(7);
    let text = rflink_examples::text::random_text(seed, 2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let input: PathBuf = dir.path().join("words.txt");
    std::fs::write(&input, &text).expect("write the input");
    let jobmanager = project.containers("jobmanager");
    let [jobmanager] = jobmanager.as_slice() else {
        project.fail(&format!(
            "one jobmanager container expected: {jobmanager:?}"
        ));
    };
    project.docker(&[
        "cp",
        &input.display().to_string(),
        &format!("{jobmanager}:/data/words.txt"),
    ]);
    let secrets = secrets_dir();
    let args: Vec<String> = [
        "-m",
        &format!("127.0.0.1:{}", project.rest_port()),
        "--rest-ca",
        &secrets.join("ca.pem").display().to_string(),
        "--token-file",
        &secrets.join("rest-token").display().to_string(),
        "run",
        "--example",
        "wordcount",
        "--input",
        "/data/words.txt",
        "--output",
        "/data/counts.txt",
        "--parallelism",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, stdout, stderr) = support::rflink_cli(&args, JOB_DEADLINE);
    if code != 0 {
        project.fail(&format!(
            "rflink {args:?}: exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ));
    }
    // Written by a TaskManager, read through the JobManager's mount of the same volume.
    let output = dir.path().join("counts.txt");
    project.docker(&[
        "cp",
        &format!("{jobmanager}:/data/counts.txt"),
        &output.display().to_string(),
    ]);
    let written = std::fs::read_to_string(&output).expect("the copied output");
    let counts = rflink_examples::parse_counts(&written).expect("`word count` lines");
    let expected = rflink_examples::count_words(&text);
    if counts != expected {
        project.fail(&format!(
            "WordCount on compose differs from the sequential reference (seed {seed}):\n\
             got {counts:?}\nexpected {expected:?}"
        ));
    }
    eprintln!(
        "compose suite: WordCount matched the reference ({} words, {} distinct, seed {seed})",
        expected.values().sum::<u64>(),
        expected.len()
    );

    // Monitoring through the published REST port: the JobManager's Prometheus text, and each
    // TaskManager's advertised metrics endpoint (inside the compose network) and metrics.
    let (status, text) = rest.get_text("/metrics").await.expect("scrape");
    assert_eq!(status, 200, "{text}");
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| {
            project.fail(&format!(
                "the JobManager's /metrics: {e}
{text}"
            ))
        });
    assert!(
        parsed
            .samples
            .iter()
            .any(|s| s.metric == "flink_jobmanager_numRegisteredTaskManagers"),
        "{text}"
    );
    for tm in rest.taskmanagers().await.expect("taskmanagers") {
        let advertised = tm.metrics_address.clone().unwrap_or_default();
        assert!(advertised.ends_with(":9249"), "{tm:?}");
        let metrics = rest
            .get_json(&format!(
                "/taskmanagers/{}/metrics?get=Status.Shuffle.Netty.TotalMemorySegments",
                tm.id
            ))
            .await
            .expect("taskmanager metrics");
        assert_eq!(
            metrics[0]["id"], "Status.Shuffle.Netty.TotalMemorySegments",
            "{metrics}"
        );
    }
    // Compose logs in JSON (RFLINK_LOG_FORMAT, json by default there): one object per line.
    let logs = project.compose(&["logs", "--no-color", "jobmanager"]);
    let json_lines = logs
        .lines()
        .filter_map(|l| l.split_once("| ").map(|(_, rest)| rest))
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["level"].is_string())
        })
        .count();
    assert!(json_lines > 0, "no JSON log lines:\n{logs}");

    // Checkpointed streaming WordCounts (exactly-once part files, checkpoints on the shared
    // volume) on both TaskManagers, trial after trial: a TaskManager container is killed after a
    // checkpoint completed, the job restarts on the other's spare slots from that checkpoint,
    // the committed output must be exactly the sequential reference, and compose brings the
    // killed TaskManager back for the next trial. Every trial must be exact.
    let trials: u64 = std::env::var("RFLINK_COMPOSE_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(10);
    let lines = 6000u64;
    let mut exact = 0;
    for trial in 0..trials {
        let stream_seed = seed % 1000 + trial;
        let out_dir = format!("/data/stream-out-{trial}");
        let job_id = submit_streaming_wordcount(&project, lines, stream_seed, &out_dir);
        wait_for_a_checkpoint(&project, &rest, job_id).await;
        let running = project.running_containers("taskmanager");
        let Some(victim) = running.get(trial as usize % running.len().max(1)) else {
            project.fail(&format!("no running taskmanager container: {running:?}"));
        };
        let killed_at = Instant::now();
        project.docker(&["kill", victim]);
        project
            .wait_for_overview(
                &rest,
                "1 TaskManager after docker kill",
                LOSS_DEADLINE,
                |o| o.taskmanagers == 1,
            )
            .await;
        let noticed = killed_at.elapsed();
        let finished = wait_for_end(&project, &rest, job_id).await;
        if finished != rflink_runtime::executiongraph::JobStatus::Finished {
            project.fail(&format!(
                "trial {trial}: the streaming job ended {finished}"
            ));
        }
        let took = killed_at.elapsed();
        let stream_out = dir.path().join(format!("stream-out-{trial}"));
        project.docker(&[
            "cp",
            &format!("{jobmanager}:{out_dir}"),
            &stream_out.display().to_string(),
        ]);
        let committed = rflink::sinks::read_committed_parts(&stream_out).expect("committed parts");
        let mut got: Vec<String> = committed.lines().map(str::to_string).collect();
        got.sort();
        let expected = rflink_examples::streaming_reference(&rflink_examples::generated_text(
            stream_seed,
            lines,
        ));
        if got != expected {
            project.fail(&format!(
                "trial {trial}: the checkpointed WordCount on compose is not exact after a \
                 TaskManager loss: {} lines, {} expected (seed {stream_seed})",
                got.len(),
                expected.len()
            ));
        }
        exact += 1;
        eprintln!(
            "compose suite: trial {trial}: kill noticed after {noticed:?}, job FINISHED {took:?} \
             after the kill, output exact ({} lines)",
            expected.len()
        );
        // The killed TaskManager comes back (compose starts the stopped container again).
        project.compose(&["up", "-d", "--scale", "taskmanager=2"]);
        project
            .wait_for_overview(&rest, "2 TaskManagers again", UP_DEADLINE, |o| {
                o.taskmanagers == 2 && o.slots_available == 4
            })
            .await;
    }
    assert_eq!(exact, trials, "every trial's committed output is exact");

    // A TaskManager container killed: its connection drops, or at the latest its heartbeat
    // times out.
    let task_managers = project.running_containers("taskmanager");
    let [first, second] = task_managers.as_slice() else {
        project.fail(&format!(
            "two running taskmanager containers expected: {task_managers:?}"
        ));
    };
    let killed_at = Instant::now();
    project.docker(&["kill", first]);
    project
        .wait_for_overview(
            &rest,
            "1 TaskManager after docker kill",
            LOSS_DEADLINE,
            |o| o.taskmanagers == 1,
        )
        .await;
    eprintln!(
        "compose suite: docker kill noticed after {:?}",
        killed_at.elapsed()
    );

    // The other one cut off the compose network: a silent loss, found by the heartbeat timeout.
    let networks = project.inspect(
        second,
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
    );
    let network = networks.split_whitespace().next().unwrap_or_default();
    if network.is_empty() {
        project.fail(&format!("{second} is on no network"));
    }
    let cut_at = Instant::now();
    project.docker(&["network", "disconnect", network, second]);
    project
        .wait_for_overview(
            &rest,
            "0 TaskManagers after docker network disconnect",
            LOSS_DEADLINE,
            |o| o.taskmanagers == 0,
        )
        .await;
    eprintln!(
        "compose suite: network disconnect noticed after {:?}",
        cut_at.elapsed()
    );
    println!("compose suite: passed (project {})", project.name);
}
