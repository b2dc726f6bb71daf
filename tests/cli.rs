//! The `rflink` binary against a REST server backed by a fake, in-memory gateway: output and exit
//! codes of `run` (detached and attached), `list`, `cancel`, `info`, `overview`, usage errors,
//! an unreachable JobManager, and a cluster with a REST token and HTTPS (`--token`,
//! `--token-file`, `RFLINK_REST_TOKEN`, `--rest-ca`). The server runs on its own thread with its
//! own actix system; every CLI run is killed if it exceeds its bound. Ports are ephemeral.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rflink_rpc::security::certgen::{ClusterMaterial, Validity};
use rflink_rpc::security::Sensitive;
use rflink_runtime::dispatcher::{
    ClusterOverview, DispatcherError, JobDetails, JobExceptions, JobOverview, JobResult,
    RestfulGateway, TaskCounts, TaskManagerInfo, VertexDetails,
};
use rflink_runtime::executiongraph::{now_millis, ErrorInfo, ExecutionState, JobStatus};
use rflink_runtime::jobgraph::JobGraph;
use rflink_runtime::rest::{RestAuth, RestServer, RestServerConfig};
use rflink_runtime::types::{Ack, JobId};

type Reply<T> = Pin<Box<dyn Future<Output = Result<T, DispatcherError>> + Send>>;

fn ready<T: Send + 'static>(r: Result<T, DispatcherError>) -> Reply<T> {
    Box::pin(std::future::ready(r))
}

/// A job whose status follows from its invokable: `NoOpInvokable` finishes and
/// `FailingInvokable` fails 300 ms after submission, `SleepingInvokable` finishes after `millis`,
/// `BlockingNoOpInvokable` runs until cancelled.
struct FakeJob {
    graph: JobGraph,
    start_ms: i64,
    started: Instant,
    cancelled: Option<i64>,
}

impl FakeJob {
    fn status(&self) -> JobStatus {
        let v = &self.graph.vertices[0];
        let done_after = match v.invokable.as_str() {
            "NoOpInvokable" | "FailingInvokable" => Some(300),
            "SleepingInvokable" => v.config.get("millis").and_then(|m| m.parse().ok()),
            _ => None,
        };
        if self.cancelled.is_some() {
            return JobStatus::Canceled;
        }
        match done_after {
            Some(ms) if self.started.elapsed() >= Duration::from_millis(ms) => {
                if v.invokable == "FailingInvokable" {
                    JobStatus::Failed
                } else {
                    JobStatus::Finished
                }
            }
            _ => JobStatus::Running,
        }
    }

    fn task_state(&self) -> ExecutionState {
        match self.status() {
            JobStatus::Finished => ExecutionState::Finished,
            JobStatus::Failed => ExecutionState::Failed,
            JobStatus::Canceled => ExecutionState::Canceled,
            _ => ExecutionState::Running,
        }
    }

    fn end_time(&self) -> i64 {
        if self.status().is_globally_terminal() {
            self.cancelled.unwrap_or_else(now_millis)
        } else {
            -1
        }
    }

    fn overview(&self) -> JobOverview {
        JobOverview {
            job_id: self.graph.job_id,
            name: self.graph.name.clone(),
            state: self.status(),
            start_time: self.start_ms,
            end_time: self.end_time(),
            duration: now_millis() - self.start_ms,
            last_modification: self.start_ms,
            tasks: TaskCounts::of(std::iter::repeat_n(
                self.task_state(),
                self.graph.total_subtasks() as usize,
            )),
        }
    }

    fn failure(&self) -> Option<ErrorInfo> {
        (self.status() == JobStatus::Failed).then(|| ErrorInfo {
            kind: "TaskFailure".into(),
            message: self.graph.vertices[0]
                .config
                .get("message")
                .cloned()
                .unwrap_or_default(),
            task_name: Some(format!("{} (1/1)", self.graph.vertices[0].name)),
            location: Some("tm-1:6122".into()),
            timestamp: now_millis(),
        })
    }
}

#[derive(Default)]
struct FakeGateway {
    jobs: Mutex<Vec<FakeJob>>,
}

impl FakeGateway {
    fn with_job<T: Send + 'static>(
        &self,
        job_id: JobId,
        f: impl FnOnce(&mut FakeJob) -> T,
    ) -> Reply<T> {
        let mut jobs = self.jobs.lock().unwrap();
        ready(
            jobs.iter_mut()
                .find(|j| j.graph.job_id == job_id)
                .map(f)
                .ok_or(DispatcherError::JobNotFound { job_id }),
        )
    }

    fn graphs(&self) -> Vec<JobGraph> {
        self.jobs
            .lock()
            .unwrap()
            .iter()
            .map(|j| j.graph.clone())
            .collect()
    }
}

impl RestfulGateway for FakeGateway {
    fn submit_job(&self, job_graph: JobGraph) -> Reply<Ack> {
        let mut jobs = self.jobs.lock().unwrap();
        if jobs.iter().any(|j| j.graph.job_id == job_graph.job_id) {
            return ready(Err(DispatcherError::DuplicateJob {
                job_id: job_graph.job_id,
            }));
        }
        jobs.push(FakeJob {
            graph: job_graph,
            start_ms: now_millis(),
            started: Instant::now(),
            cancelled: None,
        });
        ready(Ok(Ack))
    }

    fn cancel_job(&self, job_id: JobId) -> Reply<Ack> {
        self.with_job(job_id, |j| {
            if !j.status().is_globally_terminal() {
                j.cancelled = Some(now_millis());
            }
            Ack
        })
    }

    fn job_overviews(&self) -> Reply<Vec<JobOverview>> {
        ready(Ok(self
            .jobs
            .lock()
            .unwrap()
            .iter()
            .rev()
            .map(FakeJob::overview)
            .collect()))
    }

    fn job_status(&self, job_id: JobId) -> Reply<JobStatus> {
        self.with_job(job_id, |j| j.status())
    }

    fn job_details(&self, job_id: JobId) -> Reply<JobDetails> {
        self.with_job(job_id, |j| {
            let overview = j.overview();
            let state = j.task_state();
            JobDetails {
                timestamps: BTreeMap::from([("RUNNING".to_string(), j.start_ms)]),
                vertices: j
                    .graph
                    .vertices
                    .iter()
                    .map(|v| VertexDetails {
                        id: v.id,
                        name: v.name.clone(),
                        parallelism: v.parallelism,
                        max_parallelism: v.max_parallelism,
                        status: state,
                        start_time: j.start_ms,
                        end_time: overview.end_time,
                        duration: overview.duration,
                        tasks: TaskCounts::of(std::iter::repeat_n(state, v.parallelism as usize)),
                        inputs: Vec::new(),
                        subtasks: Vec::new(),
                    })
                    .collect(),
                overview,
                now: now_millis(),
                job_config: BTreeMap::new(),
                checkpoint_config: None,
            }
        })
    }

    fn job_exceptions(&self, job_id: JobId) -> Reply<JobExceptions> {
        self.with_job(job_id, |j| {
            let root = j.failure();
            JobExceptions {
                history: root.iter().cloned().collect(),
                root,
                concurrent: Vec::new(),
            }
        })
    }

    fn job_result(&self, job_id: JobId) -> Reply<Option<JobResult>> {
        self.with_job(job_id, |j| {
            let status = j.status();
            status.is_globally_terminal().then(|| JobResult {
                job_id,
                status,
                net_runtime: j.started.elapsed().as_millis() as i64,
                failure: j.failure(),
            })
        })
    }

    fn cluster_overview(&self) -> Reply<ClusterOverview> {
        let jobs = self.jobs.lock().unwrap();
        ready(Ok(ClusterOverview {
            taskmanagers: 1,
            slots_total: 4,
            slots_available: 2,
            jobs_running: jobs
                .iter()
                .filter(|j| !j.status().is_globally_terminal())
                .count() as u32,
            ..Default::default()
        }))
    }

    fn task_managers(&self) -> Reply<Vec<TaskManagerInfo>> {
        ready(Ok(Vec::new()))
    }
}

/// A REST server with a fake gateway, on its own thread and actix system.
struct Cluster {
    addr: SocketAddr,
    fake: Arc<FakeGateway>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Cluster {
    fn start() -> Cluster {
        Self::start_with(RestServerConfig::default())
    }

    /// A cluster whose REST server has `config`'s TLS and token settings (its address is
    /// always an ephemeral port on 127.0.0.1).
    fn start_with(config: RestServerConfig) -> Cluster {
        let fake = Arc::new(FakeGateway::default());
        let gateway: Arc<dyn RestfulGateway> = fake.clone();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let config = RestServerConfig {
                    bind_host: "127.0.0.1".into(),
                    port: 0,
                    shutdown_timeout_secs: 1,
                    ..config
                };
                let server =
                    RestServer::start(config, gateway, vec![], None).expect("server starts");
                addr_tx
                    .send(server.local_addr())
                    .expect("test waits for the address");
                let _ = stop_rx.await;
                server.stop().await;
            })
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server reports its address");
        Cluster {
            addr,
            fake,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Runs `rflink -m <this cluster> args..`.
    fn rflink(&self, args: &[&str]) -> Output {
        let mut all = vec!["-m", &self.address()[..]]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        all.extend(args.iter().map(|s| s.to_string()));
        rflink(&all, &[])
    }

    fn only_job(&self) -> JobGraph {
        let graphs = self.fake.graphs();
        assert_eq!(graphs.len(), 1, "exactly one job was submitted");
        graphs.into_iter().next().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

const RUN_BOUND: Duration = Duration::from_secs(30);

/// Runs the binary with the given arguments and environment, killing it past `RUN_BOUND`.
fn rflink(args: &[String], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rflink"));
    command
        .args(args)
        .env_remove("RFLINK_JOBMANAGER")
        .env_remove("RFLINK_REST_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("the rflink binary starts");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + RUN_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rflink {args:?} did not finish within {RUN_BOUND:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// An address where nothing listens.
fn closed_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn job_id_in(stdout: &str) -> JobId {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
        .unwrap_or_else(|| panic!("no job id in {stdout:?}"))
        .trim()
        .parse()
        .expect("a job id")
}

#[test]
fn run_detached_submits_the_chain_and_prints_the_id() {
    let c = Cluster::start();
    let out = c.rflink(&[
        "run",
        "-d",
        "--job",
        "blocking",
        "--vertices",
        "3",
        "-p",
        "2",
        "--name",
        "my job",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let job_id = job_id_in(&out.stdout);
    let graph = c.only_job();
    assert_eq!(graph.job_id, job_id);
    assert_eq!(graph.name, "my job");
    assert_eq!(graph.vertices.len(), 3);
    assert!(graph
        .vertices
        .iter()
        .all(|v| v.parallelism == 2 && v.invokable == "BlockingNoOpInvokable"));
    assert_eq!(graph.vertices[1].inputs[0].source, graph.vertices[0].id);

    // list shows it as running; cancel; list -a shows it as terminated.
    let out = c.rflink(&["list"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("Running/Restarting Jobs"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!(" : {job_id} : my job (RUNNING)")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("No scheduled jobs."), "{}", out.stdout);

    let out = c.rflink(&["info", &job_id.to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("my job"), "{}", out.stdout);
    assert!(out.stdout.contains("blocking-3"), "{}", out.stdout);
    assert!(out.stdout.contains("RUNNING: 2"), "{}", out.stdout);
    let out = c.rflink(&["info", "--json", &job_id.to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    let json: serde_json::Value =
        serde_json::from_str(&out.stdout).expect("info --json prints JSON");
    assert_eq!(json["jid"], job_id.to_string());
    assert_eq!(json["vertices"].as_array().unwrap().len(), 3);

    let out = c.rflink(&["cancel", &job_id.to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("Cancelled job {job_id}.")),
        "{}",
        out.stdout
    );

    let out = c.rflink(&["list"]);
    assert!(out.stdout.contains("No running jobs."), "{}", out.stdout);
    let out = c.rflink(&["list", "-a"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Terminated Jobs"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("{job_id} : my job (CANCELED)")),
        "{}",
        out.stdout
    );

    let out = c.rflink(&["overview"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("TaskManagers: 1"), "{}", out.stdout);
    assert!(
        out.stdout.contains("4 total, 2 available"),
        "{}",
        out.stdout
    );
}

#[test]
fn attached_runs_exit_by_the_jobs_outcome() {
    let c = Cluster::start();
    let out = c.rflink(&["run", "--job", "noop"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("is RUNNING"), "{}", out.stdout);
    assert!(out.stdout.contains("is FINISHED"), "{}", out.stdout);
    assert!(out.stdout.contains("has finished."), "{}", out.stdout);
    assert!(out.stdout.contains("Job Runtime: "), "{}", out.stdout);

    let out = c.rflink(&[
        "run",
        "--job",
        "sleeping",
        "--millis",
        "400",
        "--vertices",
        "1",
    ]);
    assert_eq!(out.code, 0, "{out:?}");

    let out = c.rflink(&["run", "--job", "failing", "--message", "intentional boom"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("is FAILED"), "{}", out.stdout);
    assert!(
        out.stderr.contains("TaskFailure: intentional boom"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("failing-1 (1/1)"), "{}", out.stderr);
}

#[test]
fn an_attached_run_that_is_cancelled_exits_1() {
    let c = Cluster::start();
    let address = c.address();
    let attached =
        thread::spawn(move || rflink(&args(&["-m", &address, "run", "--job", "blocking"]), &[]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let job_id = loop {
        if let Some(g) = c.fake.graphs().first() {
            break g.job_id;
        }
        assert!(
            Instant::now() < deadline,
            "the attached run never submitted"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let out = c.rflink(&["cancel", &job_id.to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = attached.join().unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("is CANCELED"), "{}", out.stdout);
    assert!(out.stderr.contains("was cancelled"), "{}", out.stderr);
}

#[test]
fn usage_errors_exit_2() {
    let c = Cluster::start();
    for bad in [
        vec!["cancel", "xyz"],
        vec!["info", "0123"],
        vec!["run"],
        vec!["run", "--job", "bogus"],
        vec!["run", "--job", "noop", "-p", "0"],
        vec!["run", "--job", "noop", "--vertices", "0"],
        vec!["run", "--job", "noop", "--millis", "5"],
        vec!["run", "--job", "sleeping", "--message", "x"],
        vec!["run", "--job", "noop", "--name", ""],
        vec!["list", "--bogus"],
        vec!["frobnicate"],
        vec![],
        vec!["savepoint", "xyz"],
        vec!["stop", "0123"],
        vec!["run", "-D", "no-equals-sign", "--example", "wordcount"],
        vec![
            "run",
            "-D",
            "restart-strategy.type=sometimes",
            "--example",
            "wordcount",
        ],
        vec!["run", "-D", "no.such.key=1", "--example", "wordcount"],
    ] {
        let out = c.rflink(&bad);
        assert_eq!(out.code, 2, "rflink {bad:?}: {out:?}");
        assert!(
            out.stderr.contains("error"),
            "rflink {bad:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    let out = c.rflink(&["cancel", "xyz"]);
    assert!(out.stderr.contains("32-character hex"), "{}", out.stderr);
    assert!(c.fake.graphs().is_empty(), "no usage error submits a job");

    let out = rflink(&args(&["-m", "no-port-here", "list"]), &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("host:port"), "{}", out.stderr);

    let out = rflink(&args(&["--help"]), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("run"), "{}", out.stdout);
}

#[test]
fn rest_errors_and_an_unreachable_jobmanager_exit_3() {
    let c = Cluster::start();
    let unknown = JobId::generate().to_string();
    for cmd in [
        vec!["cancel", &unknown[..]],
        vec!["info", &unknown[..]],
        vec!["savepoint", &unknown[..], "/tmp/savepoints"],
        vec!["stop", &unknown[..]],
    ] {
        let out = c.rflink(&cmd);
        assert_eq!(out.code, 3, "{out:?}");
        assert!(
            out.stderr.contains("404") && out.stderr.contains("not found"),
            "{}",
            out.stderr
        );
    }

    let closed = closed_address();
    for cmd in [
        vec!["list"],
        vec!["run", "-d", "--job", "noop"],
        vec!["overview"],
    ] {
        let mut all = args(&["-m", &closed]);
        all.extend(args(&cmd));
        let out = rflink(&all, &[]);
        assert_eq!(out.code, 3, "rflink {cmd:?}: {out:?}");
        assert!(out.stderr.contains(&closed), "{}", out.stderr);
        assert!(
            out.stderr.contains("is a JobManager running"),
            "{}",
            out.stderr
        );
    }
    // Without -m, the environment names the JobManager.
    let out = rflink(&args(&["list"]), &[("RFLINK_JOBMANAGER", &closed)]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains(&closed), "{}", out.stderr);
    let out = rflink(&args(&["list"]), &[("RFLINK_JOBMANAGER", &c.address())]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// The message a 401 without a token prints.
const NEEDS_TOKEN: &str = "the cluster requires a REST token: pass --token or RFLINK_REST_TOKEN";

#[test]
fn a_cluster_with_a_rest_token_needs_it_and_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let material = ClusterMaterial::generate(&[], Validity::days(1)).expect("material");
    material.write_to(dir.path(), false).expect("written");
    let token = material.rest_token.expose().to_string();
    let token_file = dir.path().join("rest-token").display().to_string();
    let c = Cluster::start_with(RestServerConfig {
        auth: Some(RestAuth {
            token: Sensitive::new(token.clone()),
            protect_reads: true,
        }),
        ..RestServerConfig::default()
    });

    // Without the token: a clear message, exit 3, and nothing submitted.
    for cmd in [vec!["list"], vec!["run", "-d", "--job", "blocking"]] {
        let out = c.rflink(&cmd);
        assert_eq!(out.code, 3, "rflink {cmd:?}: {out:?}");
        assert!(out.stderr.contains("401"), "{}", out.stderr);
        assert!(out.stderr.contains(NEEDS_TOKEN), "{}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    assert!(c.fake.graphs().is_empty(), "no job was submitted");

    // With it, from the flag, the file or the environment.
    let out = c.rflink(&["--token", &token, "run", "-d", "--job", "blocking"]);
    assert_eq!(out.code, 0, "{out:?}");
    let job_id = job_id_in(&out.stdout);
    let out = c.rflink(&["list", "--token-file", &token_file]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&job_id.to_string()), "{}", out.stdout);
    let with_env = |cmd: &[&str], token: &str| {
        let mut all = args(&["-m", &c.address()]);
        all.extend(args(cmd));
        rflink(&all, &[("RFLINK_REST_TOKEN", token)])
    };
    let out = with_env(&["list"], &token);
    assert_eq!(out.code, 0, "{out:?}");

    // A wrong token is refused as such; the job keeps running.
    let out = with_env(&["cancel", &job_id.to_string()], "wrong-token");
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("the cluster refused the REST token"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(&token), "{}", out.stderr);
    let out = c.rflink(&["cancel", &job_id.to_string()]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains(NEEDS_TOKEN), "{}", out.stderr);
    let out = c.rflink(&["--token", &token, "info", &job_id.to_string()]);
    assert!(out.stdout.contains("RUNNING"), "{out:?}");

    // Usage errors: both flags, an unreadable or empty file.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("written");
    for bad in [
        vec!["--token", "x", "--token-file", &token_file, "list"],
        vec!["--token-file", "/no/such/token/file", "list"],
        vec!["--token-file", empty.to_str().expect("utf-8"), "list"],
        vec!["--token", "two words", "list"],
    ] {
        let out = c.rflink(&bad);
        assert_eq!(out.code, 2, "rflink {bad:?}: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }

    let out = c.rflink(&["--token-file", &token_file, "cancel", &job_id.to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Cancelled job"), "{}", out.stdout);
}

#[test]
fn rest_ca_speaks_https_to_a_cluster_with_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let material = ClusterMaterial::generate(&[], Validity::days(1)).expect("material");
    material.write_to(dir.path(), false).expect("written");
    let tls = rflink_rpc::security::rest_server_config(
        &dir.path().join("rest.pem"),
        &dir.path().join("rest.key"),
    )
    .expect("the REST certificate");
    let token = material.rest_token.expose().to_string();
    let c = Cluster::start_with(RestServerConfig {
        tls: Some(tls),
        auth: Some(RestAuth {
            token: Sensitive::new(token.clone()),
            protect_reads: false,
        }),
        ..RestServerConfig::default()
    });
    let ca = dir.path().join("ca.pem").display().to_string();

    let out = c.rflink(&["--rest-ca", &ca, "list"]);
    assert_eq!(out.code, 0, "{out:?}");
    let https = format!("https://{}", c.address());
    let out = rflink(
        &args(&[
            "-m",
            &https,
            "--rest-ca",
            &ca,
            "--token",
            &token,
            "run",
            "-d",
            "--job",
            "noop",
        ]),
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(c.fake.graphs().len(), 1);
    let out = rflink(
        &args(&["-m", &https, "--rest-ca", &ca, "run", "-d", "--job", "noop"]),
        &[],
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains(NEEDS_TOKEN), "{}", out.stderr);
    assert_eq!(
        c.fake.graphs().len(),
        1,
        "the refused run submitted nothing"
    );

    // Plain HTTP to the HTTPS port fails, with the hint.
    let out = c.rflink(&["list"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("--rest-ca"), "{}", out.stderr);

    // Another CA: the handshake fails, said so.
    let other = tempfile::tempdir().expect("temp dir");
    ClusterMaterial::generate(&[], Validity::days(1))
        .expect("material")
        .write_to(other.path(), false)
        .expect("written");
    let other_ca = other.path().join("ca.pem").display().to_string();
    let out = c.rflink(&["--rest-ca", &other_ca, "list"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
    assert!(out.stderr.contains("--rest-ca"), "{}", out.stderr);

    // Usage errors: https without a CA, a CA that is no PEM, http:// with a CA.
    for bad in [
        args(&["-m", &https, "list"]),
        args(&["--rest-ca", "/no/such/ca.pem", "list"]),
        args(&[
            "-m",
            &format!("http://{}", c.address()),
            "--rest-ca",
            &ca,
            "list",
        ]),
    ] {
        let out = rflink(&bad, &[]);
        assert_eq!(out.code, 2, "rflink {bad:?}: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}
