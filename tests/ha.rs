//! High availability with real processes: a real etcd, two `rflink-node --role jm` JobManagers
//! (one leads, one stands by) and TaskManagers that follow the leader published in etcd.
//!
//! - The leader is SIGKILLed during a checkpointed streaming WordCount: the standby takes over,
//!   the job resumes from its latest completed checkpoint on the re-registered TaskManagers, and
//!   the committed output equals the sequential reference line for line.
//! - The leader is cut off from etcd: it steps down within the lease TTL, the standby takes
//!   over, and the old leadership's tokens are refused by the new leader.
//! - The whole JobManager side is replaced: finished jobs are still listed with their results.
//!
//! Needs rflink-node built with the `etcd` feature (scripts/test does so) and an `etcd` binary
//! (scripts/install-test-tools installs Debian's etcd-server; `RFLINK_ETCD` names another).
//! Without the feature, or with `RFLINK_SKIP_ETCD=1`, each test prints SKIPPED and passes.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::rest::client::RestClient;
use rflink_runtime::types::JobId;
use support::proxy::Proxy;
use support::{loopback, rflink_cli, Node};

/// Bound of every wait.
const WAIT: Duration = Duration::from_secs(60);
/// The lease TTL of the tests: a deposed leader is out within it.
const LEASE_TTL: &str = "2 s";

/// Lines the streaming job reads (about 4 s at its rate) and its parallelism.
const LINES: u64 = 8000;
const LINES_PER_SECOND: u64 = 1000;
const PARALLELISM: u32 = 2;

/// Whether the HA tests can run here; prints why not.
fn can_run(test: &str) -> bool {
    if !cfg!(feature = "etcd") {
        println!("SKIPPED: {test}: rflink-node is built without the `etcd` feature (scripts/test builds with --features rflink-dist/etcd)");
        return false;
    }
    if std::env::var("RFLINK_SKIP_ETCD").is_ok_and(|v| v == "1") {
        println!("SKIPPED: {test}: RFLINK_SKIP_ETCD=1");
        return false;
    }
    true
}

/// A real etcd server on loopback, with its own data directory; killed and reaped on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd on random loopback ports, trying others if they are taken; waits for
    /// `/health` to answer.
    fn start() -> Etcd {
        let binary = std::env::var("RFLINK_ETCD").unwrap_or_else(|_| "etcd".into());
        let mut rng = rflink::SplitMix64::new(u64::from(std::process::id()) ^ now_nanos());
        let mut last = String::new();
        for _ in 0..10 {
            let client = 20000 + (rng.gen_range(40000) as u16);
            let peer = 20000 + (rng.gen_range(40000) as u16);
            if client == peer {
                continue;
            }
            let dir = tempfile::tempdir().expect("a temp dir for etcd");
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = Command::new(&binary)
                .args([
                    "--name",
                    "default",
                    "--data-dir",
                    &dir.path().join("data").display().to_string(),
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                    "--initial-cluster",
                    &format!("default={peer_url}"),
                    "--log-level",
                    "warn",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(err) => panic!(
                    "cannot start {binary:?} ({err}): install etcd (apt-get install etcd-server; \
                     scripts/install-test-tools does) or set RFLINK_ETCD"
                ),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if health(client) {
                    return Etcd {
                        child,
                        endpoint: client_url,
                        _dir: dir,
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        let _ = stderr.read_to_string(&mut err);
                    }
                    last = format!("etcd exited ({status}): {err}");
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("etcd did not become healthy within 20 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("etcd did not start on any of 10 port pairs; last: {last}");
    }

    fn port(&self) -> u16 {
        support::port_of(&self.endpoint)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Whether etcd's `/health` on `port` says healthy.
fn health(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&loopback(port), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// One HA cluster: etcd, two JobManagers, TaskManagers; everything under one temp dir.
struct HaCluster {
    etcd: Etcd,
    cluster_id: String,
    dir: tempfile::TempDir,
    jms: Vec<Node>,
    /// A proxy between a JobManager and etcd, by JobManager index (the partition test).
    etcd_proxies: Vec<Option<Proxy>>,
    tms: Vec<Node>,
}

impl HaCluster {
    fn new() -> HaCluster {
        let etcd = Etcd::start();
        HaCluster {
            etcd,
            cluster_id: format!("/ha-test-{}", now_nanos()),
            dir: tempfile::tempdir().expect("a temp dir"),
            jms: Vec::new(),
            etcd_proxies: Vec::new(),
            tms: Vec::new(),
        }
    }

    fn checkpoints(&self) -> PathBuf {
        self.dir.path().join("checkpoints")
    }

    /// The arguments every node shares: HA on this etcd, fast failure detection, quick
    /// restarts, shared storage.
    fn common_args(&self, etcd_endpoint: &str) -> Vec<String> {
        [
            "high-availability.type=etcd".to_string(),
            format!("high-availability.etcd.endpoints={etcd_endpoint}"),
            format!("high-availability.cluster-id={}", self.cluster_id),
            format!("high-availability.etcd.lease-ttl={LEASE_TTL}"),
            format!(
                "high-availability.storageDir={}",
                self.dir.path().join("ha").display()
            ),
            format!(
                "execution.checkpointing.dir={}",
                self.checkpoints().display()
            ),
            "heartbeat.interval=100 ms".into(),
            "heartbeat.timeout=1 s".into(),
            "cluster.registration.initial-timeout=100 ms".into(),
            "cluster.registration.max-timeout=1 s".into(),
            "cluster.registration.error-delay=200 ms".into(),
            "cluster.registration.refused-registration-delay=200 ms".into(),
            "taskmanager.slot.timeout=2 s".into(),
            "restart-strategy.type=fixed-delay".into(),
            "restart-strategy.fixed-delay.attempts=10".into(),
            "restart-strategy.fixed-delay.delay=100 ms".into(),
        ]
        .into_iter()
        .flat_map(|d| ["-D".to_string(), d])
        .collect()
    }

    /// Starts one more JobManager; `through_proxy`: it reaches etcd through a proxy the test
    /// can cut.
    fn add_jobmanager(&mut self, through_proxy: bool) -> usize {
        let index = self.jms.len();
        let proxy = through_proxy.then(|| {
            Proxy::start(
                &format!("jobmanager-{index}-etcd"),
                Some(loopback(self.etcd.port())),
            )
        });
        let endpoint = match &proxy {
            Some(proxy) => format!("http://127.0.0.1:{}", proxy.port()),
            None => self.etcd.endpoint.clone(),
        };
        let mut args = support::jobmanager_args();
        args.extend(self.common_args(&endpoint));
        self.jms
            .push(Node::start(&format!("jobmanager-{index}"), &args));
        self.etcd_proxies.push(proxy);
        index
    }

    fn add_taskmanager(&mut self) {
        let index = self.tms.len();
        let mut args: Vec<String> = [
            "--role",
            "tm",
            "--rpc-port",
            "0",
            "--bind-host",
            "127.0.0.1",
            "--advertised-host",
            "127.0.0.1",
            "-D",
            "taskmanager.numberOfTaskSlots=1",
            "-D",
            "metrics.reporter.prom.port=off",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.common_args(&self.etcd.endpoint.clone()));
        self.tms
            .push(Node::start(&format!("taskmanager-{index}"), &args));
    }

    fn rest(&self, jm: usize) -> RestClient {
        RestClient::with_timeout(self.jms[jm].ready("rest"), Duration::from_secs(5))
    }

    /// Every node's output, for failure messages.
    fn logs(&self) -> String {
        self.jms
            .iter()
            .chain(self.tms.iter())
            .map(Node::logs)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until one of the running JobManagers (not in `except`) leads with `tms`
    /// TaskManagers registered: its index.
    async fn wait_for_leader(&self, except: &[usize], tms: u32) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            for (i, _) in self.jms.iter().enumerate() {
                if except.contains(&i) {
                    continue;
                }
                if let Ok(Ok(o)) =
                    tokio::time::timeout(Duration::from_secs(2), self.rest(i).overview()).await
                {
                    if o.taskmanagers >= tms {
                        return i;
                    }
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "no JobManager led with {tms} task managers within {WAIT:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The CLI, finding the leader through etcd (`--ha-etcd`).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut all: Vec<String> = vec![
            "--ha-etcd".into(),
            self.etcd.endpoint.clone(),
            "--ha-cluster-id".into(),
            self.cluster_id.clone(),
            "--timeout".into(),
            "30".into(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        rflink_cli(&all, WAIT)
    }

    /// Submits the checkpointed streaming WordCount over the text of `seed` through the CLI
    /// (which finds the leader in etcd).
    fn submit_wordcount(&self, seed: u64, out: &Path) -> JobId {
        let lines = LINES.to_string();
        let rate = LINES_PER_SECOND.to_string();
        let parallelism = PARALLELISM.to_string();
        let out = out.display().to_string();
        let seed = seed.to_string();
        let (code, stdout, stderr) = self.cli(&[
            "run",
            "-d",
            "--example",
            "streaming-wordcount",
            "--lines",
            &lines,
            "--lines-per-second",
            &rate,
            "--parallelism",
            &parallelism,
            "--checkpoint-interval",
            "300",
            "--output",
            &out,
            "--seed",
            &seed,
        ]);
        assert_eq!(
            code,
            0,
            "rflink run\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
            self.logs()
        );
        stdout
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("a job id in {stdout:?}"))
    }

    /// Waits until the job, as JobManager `jm` reports it, satisfies `pred`.
    async fn wait_for_status(
        &self,
        jm: usize,
        job_id: JobId,
        what: &str,
        pred: impl Fn(JobStatus) -> bool,
    ) -> JobStatus {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            match tokio::time::timeout(Duration::from_secs(2), self.rest(jm).job_status(job_id))
                .await
            {
                Ok(Ok(status)) if pred(status) => return status,
                Ok(other) => last = Some(format!("{other:?}")),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                panic!(
                    "job {job_id} not {what} on jobmanager-{jm} within {WAIT:?}; last {last:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` checkpoints of the job completed on JobManager `jm`.
    async fn wait_for_checkpoints(&self, jm: usize, job_id: JobId, n: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Ok(stats)) =
                tokio::time::timeout(Duration::from_secs(2), self.rest(jm).checkpoints(job_id))
                    .await
            {
                if stats["counts"]["completed"].as_u64().unwrap_or(0) >= n {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "{n} checkpoints of {job_id} not completed within {WAIT:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until JobManager `jm`'s output contains `needle`.
    fn wait_for_log(&self, jm: usize, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.jms[jm].logs().contains(needle) {
            if Instant::now() >= deadline {
                panic!(
                    "jobmanager-{jm} never logged {needle:?} within {WAIT:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The committed output, sorted.
fn committed(out: &Path) -> Vec<String> {
    let text = rflink::sinks::read_committed_parts(out).expect("reads the committed output");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn reference(seed: u64) -> Vec<String> {
    rflink_examples::streaming_reference(&rflink_examples::generated_text(seed, LINES))
}

fn assert_exact(out: &Path, seed: u64, cluster: &HaCluster) {
    let got = committed(out);
    let expected = reference(seed);
    if got != expected {
        let first = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "output differs from the reference: {} lines vs {} expected; first difference at \
             {first}: got {:?}, expected {:?}\n{}",
            got.len(),
            expected.len(),
            got.get(first),
            expected.get(first),
            cluster.logs()
        );
    }
}

#[actix_rt::test]
async fn killing_the_leading_jobmanager_hands_a_checkpointed_job_to_the_standby() {
    if !can_run("kill -9 of the leading JobManager") {
        return;
    }
    let mut cluster = HaCluster::new();
    cluster.add_jobmanager(false);
    cluster.add_taskmanager();
    cluster.add_taskmanager();
    let leader = cluster.wait_for_leader(&[], 2).await;
    cluster.add_jobmanager(false);
    let standby = 1 - leader;
    // The standby answers 503 naming the leader, and leads nothing.
    let (status, body) = cluster
        .rest(standby)
        .get_text("/overview")
        .await
        .expect("the standby answers");
    assert_eq!(status, 503, "a standby's /overview: {body}");
    assert!(body.contains("not the leader"), "{body}");

    let seed = 4242;
    let out = cluster.dir.path().join("out");
    let job_id = cluster.submit_wordcount(seed, &out);
    cluster
        .wait_for_status(leader, job_id, "RUNNING", |s| s == JobStatus::Running)
        .await;
    cluster.wait_for_checkpoints(leader, job_id, 2).await;

    cluster.jms[leader].kill();
    let new_leader = cluster.wait_for_leader(&[leader], 2).await;
    assert_eq!(new_leader, standby);
    cluster.wait_for_log(
        standby,
        "recovering the job from its latest completed checkpoint",
    );
    cluster
        .wait_for_status(standby, job_id, "FINISHED", |s| s.is_globally_terminal())
        .await;
    assert_eq!(
        cluster.rest(standby).job_status(job_id).await.ok(),
        Some(JobStatus::Finished),
        "{}",
        cluster.logs()
    );
    let restored: usize = cluster
        .tms
        .iter()
        .map(|tm| tm.logs().matches("state restored").count())
        .sum();
    assert!(
        restored >= PARALLELISM as usize,
        "the resumed tasks restored the checkpoint ({restored} restores)\n{}",
        cluster.logs()
    );
    assert_exact(&out, seed, &cluster);
}

#[actix_rt::test]
async fn a_leader_cut_off_from_etcd_steps_down_and_its_tokens_are_refused() {
    if !can_run("a leader partitioned from etcd") {
        return;
    }
    let mut cluster = HaCluster::new();
    // The first JobManager reaches etcd through a proxy, and leads (it starts alone).
    cluster.add_jobmanager(true);
    cluster.add_taskmanager();
    cluster.add_taskmanager();
    assert_eq!(cluster.wait_for_leader(&[], 2).await, 0);
    cluster.add_jobmanager(false);
    let old_leaders = leaders_of(&cluster.jms[0]).await;
    let old_rm = old_leaders
        .resource_manager
        .clone()
        .expect("the leader publishes its resource manager");

    let seed = 777;
    let out = cluster.dir.path().join("out");
    let job_id = cluster.submit_wordcount(seed, &out);
    cluster.wait_for_checkpoints(0, job_id, 1).await;

    let cut = Instant::now();
    if let Some(proxy) = &cluster.etcd_proxies[0] {
        proxy.blackhole();
    }
    // Bounded by WAIT; how fast is the benchmark's business, not a test's (shared machines).
    cluster.wait_for_log(0, "leadership lost: stepping down");
    println!(
        "the cut-off leader stepped down {:?} after the cut",
        cut.elapsed()
    );
    // The deposed leader stops answering as leader at once.
    let (status, _) = cluster
        .rest(0)
        .get_text("/overview")
        .await
        .expect("the old leader's REST API answers");
    assert_eq!(status, 503, "the deposed leader no longer serves as leader");

    assert_eq!(cluster.wait_for_leader(&[0], 2).await, 1);
    cluster.wait_for_log(1, "recovering the job from its latest completed checkpoint");
    cluster
        .wait_for_status(1, job_id, "FINISHED", |s| s.is_globally_terminal())
        .await;
    assert_eq!(
        cluster.rest(1).job_status(job_id).await.ok(),
        Some(JobStatus::Finished)
    );
    assert_exact(&out, seed, &cluster);

    // The old leadership's ResourceManager token is refused by the new leader's
    // ResourceManager: fencing across leaders.
    let new_rm = leaders_of(&cluster.jms[1])
        .await
        .resource_manager
        .expect("the new leader publishes its resource manager");
    assert_ne!(
        new_rm.token, old_rm.token,
        "a new leadership has new tokens"
    );
    let refusal = send_with_token(&new_rm.address, old_rm.token).await;
    assert!(
        matches!(
            refusal,
            Err(rflink_rpc::RpcError::FencingTokenMismatch { .. })
        ),
        "a message with the old leader's token: {refusal:?}"
    );
    // The new leader logs the refusal, naming the stale token.
    cluster.wait_for_log(1, &format!("fencing token mismatch at {}", new_rm.address));
    assert!(
        cluster.jms[1]
            .logs()
            .contains(&format!("received {}", old_rm.token)),
        "the refusal names the old token\n{}",
        cluster.jms[1].logs()
    );
    // And the old leader, healed, stays a standby until the new one goes.
    if let Some(proxy) = &cluster.etcd_proxies[0] {
        proxy.heal();
    }
    let (status, _) = cluster
        .rest(0)
        .get_text("/overview")
        .await
        .expect("the old leader's REST API answers");
    assert_eq!(status, 503);
}

#[actix_rt::test]
async fn finished_jobs_survive_a_restart_of_the_whole_jobmanager_side() {
    if !can_run("a restart of every JobManager") {
        return;
    }
    let mut cluster = HaCluster::new();
    cluster.add_jobmanager(false);
    cluster.add_taskmanager();
    cluster.add_taskmanager();
    let leader = cluster.wait_for_leader(&[], 2).await;
    let seed = 99;
    let out = cluster.dir.path().join("out");
    let job_id = cluster.submit_wordcount(seed, &out);
    cluster
        .wait_for_status(leader, job_id, "FINISHED", |s| s.is_globally_terminal())
        .await;
    assert_exact(&out, seed, &cluster);

    // Every JobManager goes; a new one starts from etcd alone.
    cluster.jms[leader].kill();
    cluster.add_jobmanager(false);
    let fresh = cluster.wait_for_leader(&[leader], 2).await;
    let result = cluster
        .rest(fresh)
        .job_result(job_id)
        .await
        .expect("the finished job's result is still there");
    assert_eq!(
        result.map(|r| r.application_status),
        Some(rflink_runtime::rest::messages::ApplicationStatus::Succeeded),
        "the finished job's result after the restart\n{}",
        cluster.logs()
    );
    let (code, stdout, stderr) = cluster.cli(&["list", "-a"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&job_id.to_string()) && stdout.contains("FINISHED"),
        "rflink list -a after the restart:\n{stdout}"
    );
}

/// The leaders a JobManager's `leaders` endpoint names.
async fn leaders_of(jm: &Node) -> rflink_runtime::leaderretrieval::Leaders {
    let service = rpc_service().await;
    let rpc = jm.ready("rpc");
    let (host, port) = rpc.rsplit_once(':').expect("host:port");
    let address = rflink_rpc::RpcAddress::new(
        host,
        port.parse().expect("a port"),
        rflink_runtime::leaderretrieval::LEADERS_ENDPOINT,
    )
    .expect("an rpc address");
    let gateway = service
        .connect::<rflink_runtime::leaderretrieval::LeaderRetrieval>(&address)
        .await
        .expect("connects to the leaders endpoint");
    gateway
        .ask_with_timeout(
            rflink_runtime::leaderretrieval::GetLeaders,
            Duration::from_secs(5),
        )
        .await
        .expect("answers")
}

/// Sends a ResourceManager request carrying `token` to `address`.
async fn send_with_token(
    address: &str,
    token: rflink_rpc::AbstractId,
) -> Result<(), rflink_rpc::RpcError> {
    use rflink_runtime::resourcemanager::ResourceManager;
    let service = rpc_service().await;
    let address: rflink_rpc::RpcAddress = address.parse()?;
    let gateway = service
        .connect_fenced::<ResourceManager>(
            &address,
            rflink_runtime::types::ResourceManagerId::from_u128(token.as_u128()),
        )
        .await?;
    gateway
        .ask_with_timeout(
            rflink_runtime::resourcemanager::RequestResourceOverview,
            Duration::from_secs(5),
        )
        .await
        .map(|_| ())
}

async fn rpc_service() -> rflink_rpc::RpcService {
    rflink_rpc::RpcService::start(rflink_rpc::RpcConfig {
        bind_host: "127.0.0.1".into(),
        bind_port: 0,
        ..rflink_rpc::RpcConfig::default()
    })
    .await
    .expect("an rpc service")
}
