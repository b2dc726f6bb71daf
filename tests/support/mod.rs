//! The multi-process integration harness: a cluster of real `rflink-node` processes on loopback
//! ephemeral ports, with fault injection. The suites in `tests/` use it, and it is written to be
//! reused as is for one's own jobs (copy `tests/support/` into a crate that depends on
//! `rflink-runtime`, `serde_json`, `tokio` and `tempfile`, with the `rflink-node` and `rflink`
//! binaries built).
//!
//! - [`Node`]: one process. Started with port 0 and found through its `RFLINK_READY` line (never
//!   a fixed port or a sleep); its output is captured for failure messages and kept across
//!   restarts; faults [`Node::kill`] (SIGKILL), [`Node::stop`] / [`Node::cont`] (SIGSTOP /
//!   SIGCONT: a frozen process, its sockets open) and [`Node::restart`]. Dropping a node kills and
//!   reaps it, so a failing test leaks no process.
//! - [`Cluster`]: a JobManager and TaskManagers ([`Cluster::start`], or [`Cluster::start_with`]
//!   and [`ClusterOptions`] to put [`proxy::Proxy`]s between them), REST waits with deadlines
//!   that fail with every node's logs ([`Cluster::wait_for_overview`],
//!   [`Cluster::wait_for_job_status`], ...), the CLI ([`Cluster::run_wordcount`],
//!   [`Cluster::submit_example`]), and the partition helpers [`Cluster::partition_task_manager`]
//!   / [`Cluster::heal_task_manager`].
//! - [`proxy`]: the in-harness TCP proxy (blackhole, stall, reset, delay, heal; byte counts).
//!
//! **Where the proxies sit, and why there** (the RPC layer keeps *one* connection per pair of
//! nodes, symmetric, pooled under the peer's *advertised* address; the acceptor files an inbound
//! connection under the address the dialer advertised in its `Hello`):
//! - A TaskManager learns every JobManager address it uses (the ResourceManager's from the
//!   `leaders` endpoint, each JobMaster's from `RequestSlot`) as the JobManager's *advertised*
//!   address, not as the `--jobmanager` address it was started with. A proxy given only as
//!   `--jobmanager` would carry nothing but the leader lookup. So "TaskManagers reach the
//!   JobManager through a proxy" means the JobManager advertises the proxy's port
//!   (`rflink-node --advertised-rpc-port`); that proxy is shared by every TaskManager, and one
//!   TaskManager's connections are told apart by the address in their `Hello`
//!   ([`hello_pattern`], [`proxy::Proxy::isolate`]).
//! - Whoever dials first creates the connection both directions then use. The TaskManager dials
//!   first (it registers), so JobManager → TaskManager traffic normally rides the same
//!   (proxied) connection. Once that connection is lost, the JobManager dials the TaskManager's
//!   advertised address, so a full partition also needs the TaskManager to advertise a proxy
//!   ([`ClusterOptions::jm_to_tm_proxies`]).
//! - Data connections (TaskManager ↔ TaskManager) are separate, one per pair, to the advertised
//!   data address: [`ClusterOptions::data_proxies`] (`--advertised-data-port`).
#![allow(dead_code)] // Each suite uses a part of this.

pub mod browser;
pub mod proxy;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::rest::client::RestClient;
use rflink_runtime::rest::messages::ClusterOverviewWithVersion;
use rflink_runtime::types::JobId;

use proxy::Proxy;

/// How long a node may take to print its ready line.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// One `rflink-node` process.
pub struct Node {
    name: String,
    args: Vec<String>,
    child: Child,
    ready: serde_json::Value,
    output: Arc<Mutex<Vec<String>>>,
    starts: u32,
}

/// Why a spawn did not produce a ready node.
enum SpawnError {
    /// The process exited before its ready line (e.g. its port was taken).
    Exited(String),
    /// No ready line within [`START_DEADLINE`].
    Silent,
}

impl Node {
    /// Starts `rflink-node` with `args` and waits for its ready line.
    pub fn start(name: &str, args: &[String]) -> Node {
        let output: Arc<Mutex<Vec<String>>> = Arc::default();
        match Self::spawn(args, &output) {
            Ok((child, ready)) => Node {
                name: name.to_string(),
                args: args.to_vec(),
                child,
                ready,
                output,
                starts: 1,
            },
            Err(err) => {
                let lines = output.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
                match err {
                    SpawnError::Exited(status) => {
                        panic!("{name} exited ({status}) before its ready line:\n{lines}")
                    }
                    SpawnError::Silent => {
                        panic!("{name} printed no ready line within {START_DEADLINE:?}:\n{lines}")
                    }
                }
            }
        }
    }

    /// Spawns the process; its output goes to `output`. Waits for the ready line; the child is
    /// killed and reaped on failure.
    fn spawn(
        args: &[String],
        output: &Arc<Mutex<Vec<String>>>,
    ) -> Result<(Child, serde_json::Value), SpawnError> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rflink-node"))
            .args(args)
            .env("RUST_LOG", "info,actix_server=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rflink-node starts");
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        for (stream, tx) in [
            (Box::new(stdout) as Box<dyn Read + Send>, Some(ready_tx)),
            (Box::new(stderr), None),
        ] {
            let output = Arc::clone(output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let (Some(tx), Some(json)) = (&tx, line.strip_prefix("RFLINK_READY ")) {
                        let _ = tx.send(json.to_string());
                    }
                    output.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        // The stdout reader drops its sender at end of stream: a process that exits early
        // ends the wait at once rather than at the deadline.
        let outcome = match ready_rx.recv_timeout(START_DEADLINE) {
            Ok(json) => {
                return Ok((
                    child,
                    serde_json::from_str(&json).expect("the ready line is json"),
                ))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => SpawnError::Silent,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Wait (bounded) for the exit status, for the message.
                let deadline = Instant::now() + Duration::from_secs(5);
                let status = loop {
                    match child.try_wait() {
                        Ok(Some(status)) => break status.to_string(),
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        _ => break "still running, stdout closed".to_string(),
                    }
                };
                SpawnError::Exited(status)
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        Err(outcome)
    }

    /// A field of the ready line (strings as they are, numbers in decimal).
    pub fn ready(&self, field: &str) -> String {
        match &self.ready[field] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => String::new(),
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The arguments it was (last) started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Everything the node printed so far, over all its runs.
    pub fn logs(&self) -> String {
        let lines = self.output.lock().unwrap_or_else(|p| p.into_inner());
        format!("---- {} ----\n{}", self.name, lines.join("\n"))
    }

    /// SIGKILL: the process dies without a word to anyone. Reaped before this returns.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still alive (not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name `kill` knows: `STOP`, `CONT`, `TERM`) with the `kill` command:
    /// no `libc`/`nix` dependency (and no `unsafe`) for two signals.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .stdin(Stdio::null())
            .status()
            .expect("the kill command runs");
        assert!(
            status.success(),
            "kill -{signal} {} failed: {status}",
            self.pid()
        );
    }

    /// SIGSTOP: the process freezes; its sockets stay open, so peers see silence, not a loss.
    pub fn stop(&self) {
        self.signal("STOP");
    }

    /// SIGCONT: a stopped process runs on.
    pub fn cont(&self) {
        self.signal("CONT");
    }

    /// Kills the process and starts it again with the same arguments; see
    /// [`restart_with`](Self::restart_with).
    pub fn restart(&mut self) {
        let args = self.args.clone();
        self.restart_with(args);
    }

    /// Kills the process and starts it again with `args` (e.g. the ports it had bound, so peers
    /// find it again), waiting for its ready line. The logs continue in the same buffer, after a
    /// marker line. A start that exits before its ready line (a port not free yet) is retried,
    /// at most 3 times.
    pub fn restart_with(&mut self, args: Vec<String>) {
        self.kill();
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.starts += 1;
            self.output
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!(
                    "==== {} restarted (start #{}) ====",
                    self.name, self.starts
                ));
            match Self::spawn(&args, &self.output) {
                Ok((child, ready)) => {
                    self.child = child;
                    self.ready = ready;
                    self.args = args;
                    return;
                }
                Err(SpawnError::Exited(_)) if attempt < 3 => {
                    std::thread::sleep(Duration::from_millis(200 * attempt));
                }
                Err(SpawnError::Exited(status)) => panic!(
                    "{} exited ({status}) before its ready line after a restart:\n{}",
                    self.name,
                    self.logs()
                ),
                Err(SpawnError::Silent) => panic!(
                    "{} printed no ready line within {START_DEADLINE:?} after a restart:\n{}",
                    self.name,
                    self.logs()
                ),
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process.
        self.kill();
    }
}

/// Replaces the value after `flag` in `args` (or appends `flag value`).
pub fn set_arg(args: &mut Vec<String>, flag: &str, value: &str) {
    match args.iter().position(|a| a == flag) {
        Some(i) if i + 1 < args.len() => args[i + 1] = value.to_string(),
        _ => args.extend([flag.to_string(), value.to_string()]),
    }
}

/// The port of a `host:port`.
pub fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

/// `127.0.0.1:<port>`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The bytes by which an RPC dialer advertising `advertised` (`host:port`) is recognized in
/// its `Hello`, its first frame: the address as a MessagePack string (the RPC payload codec),
/// length prefix included, so `127.0.0.1:4000` does not match `127.0.0.1:40001`.
pub fn hello_pattern(advertised: &str) -> Vec<u8> {
    let bytes = advertised.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 2);
    match u8::try_from(bytes.len()) {
        Ok(n) if n < 32 => out.push(0xa0 | n),
        Ok(n) => out.extend([0xd9, n]),
        Err(_) => panic!("an advertised address of {} bytes", bytes.len()),
    }
    out.extend_from_slice(bytes);
    out
}

/// How to start a [`Cluster`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// TaskManager processes.
    pub task_managers: usize,
    /// Slots of each.
    pub slots: u32,
    /// More arguments for every node (e.g. `-D`, `heartbeat.timeout=2 s`).
    pub extra: Vec<String>,
    /// TaskManagers reach the JobManager through one proxy ([`Cluster::jm_proxy`]): the
    /// JobManager advertises its port. Shared by every TaskManager; see the module doc.
    pub tm_to_jm_proxy: bool,
    /// The JobManager (and anyone else) dials each TaskManager's RPC service through a proxy of
    /// its own ([`TmProxies::rpc`]): each TaskManager advertises its proxy's port.
    pub jm_to_tm_proxies: bool,
    /// Other TaskManagers reach each TaskManager's data server through a proxy of its own
    /// ([`TmProxies::data`]).
    pub data_proxies: bool,
}

impl ClusterOptions {
    /// `task_managers` TaskManagers with `slots` each and `extra` arguments, no proxies.
    pub fn new(task_managers: usize, slots: u32, extra: &[&str]) -> Self {
        ClusterOptions {
            task_managers,
            slots,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            ..ClusterOptions::default()
        }
    }

    /// Every RPC connection between the JobManager and a TaskManager goes through a proxy:
    /// [`tm_to_jm_proxy`](Self::tm_to_jm_proxy) and [`jm_to_tm_proxies`](Self::jm_to_tm_proxies).
    pub fn with_rpc_proxies(mut self) -> Self {
        self.tm_to_jm_proxy = true;
        self.jm_to_tm_proxies = true;
        self
    }

    /// Every data connection goes through a proxy ([`data_proxies`](Self::data_proxies)).
    pub fn with_data_proxies(mut self) -> Self {
        self.data_proxies = true;
        self
    }
}

/// The proxies in front of one TaskManager.
#[derive(Debug, Default)]
pub struct TmProxies {
    /// In front of its RPC service (the address it advertises).
    pub rpc: Option<Proxy>,
    /// In front of its data server (the data address it advertises).
    pub data: Option<Proxy>,
}

/// The REST token a cluster's nodes were given (`-D rest.auth.token=...`, the last one), if any.
pub fn rest_token(extra: &[String]) -> Option<String> {
    extra
        .iter()
        .rev()
        .find_map(|arg| arg.strip_prefix("rest.auth.token="))
        .map(str::to_string)
}

/// A REST client for `address`, sending the cluster's REST token if it has one.
fn rest_client(address: &str, extra: &[String]) -> RestClient {
    match rest_token(extra) {
        None => RestClient::new(address),
        Some(token) => RestClient::builder(address)
            .token(rflink_rpc::security::Sensitive::new(token))
            .build()
            .expect("a REST client with a token"),
    }
}

/// The arguments of a JobManager on loopback with ephemeral RPC and REST ports (the ready line
/// names them).
pub fn jobmanager_args() -> Vec<String> {
    [
        "--role",
        "jm",
        "--rpc-port",
        "0",
        "--rest-port",
        "0",
        "--bind-host",
        "127.0.0.1",
        "--advertised-host",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A JobManager process and TaskManager processes.
pub struct Cluster {
    /// The JobManager.
    pub jm: Node,
    /// The TaskManagers.
    pub tms: Vec<Node>,
    /// A REST client for the JobManager.
    pub rest: RestClient,
    /// The proxy every TaskManager reaches the JobManager's RPC service through, if asked for.
    pub jm_proxy: Option<Proxy>,
    /// The proxies in front of each TaskManager (same index as `tms`).
    pub tm_proxies: Vec<TmProxies>,
    options: ClusterOptions,
}

impl Cluster {
    /// Starts a JobManager and `task_managers` TaskManagers with `slots` each; `extra` are more
    /// arguments for every node (e.g. `-D heartbeat.timeout=2 s`).
    pub fn start(task_managers: usize, slots: u32, extra: &[&str]) -> Cluster {
        Self::start_with(ClusterOptions::new(task_managers, slots, extra))
    }

    /// Starts a cluster as `options` say, proxies included.
    pub fn start_with(options: ClusterOptions) -> Cluster {
        let mut jm_args = jobmanager_args();
        let jm_proxy = options
            .tm_to_jm_proxy
            .then(|| Proxy::start("jobmanager-rpc", None));
        if let Some(proxy) = &jm_proxy {
            jm_args.extend(["--advertised-rpc-port".into(), proxy.port().to_string()]);
        }
        jm_args.extend(options.extra.iter().cloned());
        let jm = Node::start("jobmanager", &jm_args);
        if let Some(proxy) = &jm_proxy {
            proxy.set_target(loopback(port_of(&jm.ready("rpc_bind"))));
        }
        let rest = rest_client(&jm.ready("rest"), &options.extra);
        let mut cluster = Cluster {
            rest,
            tms: Vec::new(),
            jm,
            jm_proxy,
            tm_proxies: Vec::new(),
            options: options.clone(),
        };
        for _ in 0..options.task_managers {
            cluster.add_task_manager(options.slots, &options.extra);
        }
        cluster
    }

    /// Starts one more TaskManager (behind proxies if the cluster's options say so).
    pub fn add_task_manager(&mut self, slots: u32, extra: &[String]) {
        let index = self.tms.len();
        let proxies = TmProxies {
            rpc: self
                .options
                .jm_to_tm_proxies
                .then(|| Proxy::start(&format!("taskmanager-{index}-rpc"), None)),
            data: self
                .options
                .data_proxies
                .then(|| Proxy::start(&format!("taskmanager-{index}-data"), None)),
        };
        let mut args: Vec<String> = vec![
            "--role".into(),
            "tm".into(),
            "--jobmanager".into(),
            self.jm.ready("rpc"),
            "--rpc-port".into(),
            "0".into(),
            "--bind-host".into(),
            "127.0.0.1".into(),
            "--advertised-host".into(),
            "127.0.0.1".into(),
            "-D".into(),
            format!("taskmanager.numberOfTaskSlots={slots}"),
            // Its Prometheus endpoint on an ephemeral port (the ready line's `metrics`).
            "-D".into(),
            "metrics.reporter.prom.port=0".into(),
        ];
        if let Some(proxy) = &proxies.rpc {
            args.extend(["--advertised-rpc-port".into(), proxy.port().to_string()]);
        }
        if let Some(proxy) = &proxies.data {
            args.extend(["--advertised-data-port".into(), proxy.port().to_string()]);
        }
        args.extend(extra.iter().cloned());
        let node = Node::start(&format!("taskmanager-{index}"), &args);
        Self::aim_tm_proxies(&node, &proxies);
        self.tms.push(node);
        self.tm_proxies.push(proxies);
    }

    fn aim_tm_proxies(node: &Node, proxies: &TmProxies) {
        if let Some(proxy) = &proxies.rpc {
            proxy.set_target(loopback(port_of(&node.ready("rpc_bind"))));
        }
        if let Some(proxy) = &proxies.data {
            let port: u16 = node
                .ready("data_port_bind")
                .parse()
                .expect("the ready line names the bound data port");
            proxy.set_target(loopback(port));
        }
    }

    /// Kills the JobManager and starts it again on the RPC and REST ports it had bound (so
    /// TaskManagers and clients find it again; with a proxy in front, the proxy's port stays
    /// advertised). Its BlobServer gets a new port, which TaskManagers learn when they register.
    pub fn restart_jobmanager(&mut self) {
        let mut args = self.jm.args().to_vec();
        set_arg(
            &mut args,
            "--rpc-port",
            &port_of(&self.jm.ready("rpc_bind")).to_string(),
        );
        set_arg(
            &mut args,
            "--rest-port",
            &port_of(&self.jm.ready("rest")).to_string(),
        );
        self.jm.restart_with(args);
        if let Some(proxy) = &self.jm_proxy {
            proxy.set_target(loopback(port_of(&self.jm.ready("rpc_bind"))));
        }
        self.rest = rest_client(&self.jm.ready("rest"), &self.options.extra);
    }

    /// Kills TaskManager `index` and starts it again (a new process: new resource id, new bound
    /// ports; its proxies, if any, are re-aimed and stay advertised).
    pub fn restart_task_manager(&mut self, index: usize) {
        self.tms[index].restart();
        Self::aim_tm_proxies(&self.tms[index], &self.tm_proxies[index]);
    }

    /// Cuts TaskManager `index` off the JobManager, both directions of its RPC traffic,
    /// blackholing (silence, no reset): its connections through the JobManager's proxy and its
    /// own RPC proxy. Needs [`ClusterOptions::with_rpc_proxies`]. Data connections between
    /// TaskManagers are not touched.
    pub fn partition_task_manager(&self, index: usize) {
        let (Some(jm_proxy), Some(tm_proxy)) = (&self.jm_proxy, &self.tm_proxies[index].rpc) else {
            panic!("partition_task_manager needs ClusterOptions::with_rpc_proxies()");
        };
        jm_proxy.isolate(&hello_pattern(&self.tms[index].ready("rpc")));
        tm_proxy.blackhole();
    }

    /// Undoes [`partition_task_manager`](Self::partition_task_manager) (heals the JobManager's
    /// proxy for every TaskManager, and this one's proxies).
    pub fn heal_task_manager(&self, index: usize) {
        if let Some(proxy) = &self.jm_proxy {
            proxy.heal();
        }
        let proxies = &self.tm_proxies[index];
        for proxy in [&proxies.rpc, &proxies.data].into_iter().flatten() {
            proxy.heal();
        }
    }

    /// Every node's output, for failure messages, with the proxies' state.
    pub fn logs(&self) -> String {
        let mut out = std::iter::once(&self.jm)
            .chain(self.tms.iter())
            .map(Node::logs)
            .collect::<Vec<_>>()
            .join("\n");
        let proxies: Vec<String> = self
            .jm_proxy
            .iter()
            .chain(
                self.tm_proxies
                    .iter()
                    .flat_map(|p| p.rpc.iter().chain(p.data.iter())),
            )
            .map(|p| format!("{p:?}"))
            .collect();
        if !proxies.is_empty() {
            out.push_str("\n---- proxies ----\n");
            out.push_str(&proxies.join("\n"));
        }
        out
    }

    /// Polls `/overview` until `check` holds, at most `timeout`; panics with every node's logs.
    /// Failed requests (a JobManager restarting) are retried until then.
    pub async fn wait_for_overview(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&ClusterOverviewWithVersion) -> bool,
    ) -> ClusterOverviewWithVersion {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(Ok(overview)) =
                tokio::time::timeout_at(deadline.into(), self.rest.overview()).await
            {
                if check(&overview) {
                    return overview;
                }
                last = Some(overview);
            }
            if Instant::now() >= deadline {
                panic!(
                    "never happened within {timeout:?}: {what}\nlast overview: {last:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that `check` holds on every `/overview` read for `period` (e.g. that a cut-off
    /// TaskManager stays away while the partition lasts); panics with every node's logs.
    pub async fn assert_overview_holds(
        &self,
        what: &str,
        period: Duration,
        check: impl Fn(&ClusterOverviewWithVersion) -> bool,
    ) {
        let end = Instant::now() + period;
        while Instant::now() < end {
            if let Ok(Ok(overview)) =
                tokio::time::timeout_at(end.into(), self.rest.overview()).await
            {
                assert!(
                    check(&overview),
                    "{what} did not hold: {overview:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until exactly `n` TaskManagers are registered, at most `timeout`.
    pub async fn wait_for_task_managers(
        &self,
        n: u32,
        timeout: Duration,
    ) -> ClusterOverviewWithVersion {
        self.wait_for_overview(&format!("{n} task managers registered"), timeout, |o| {
            o.taskmanagers == n
        })
        .await
    }

    /// Polls the job's status until `pred` holds, returning it, or panics with every node's
    /// logs once `deadline` has passed. Failed requests are retried until then.
    pub async fn wait_for_job_status(
        &self,
        job_id: JobId,
        pred: impl Fn(JobStatus) -> bool,
        deadline: Instant,
    ) -> JobStatus {
        let mut last = None;
        loop {
            match tokio::time::timeout_at(deadline.into(), self.rest.job_status(job_id)).await {
                Ok(Ok(status)) => {
                    if pred(status) {
                        return status;
                    }
                    last = Some(Ok(status));
                }
                Ok(Err(err)) => last = Some(Err(err.to_string())),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                panic!(
                    "job {job_id} never reached the expected status; last seen {last:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `/jobs/{id}` until `n` tasks of the job are RUNNING, at most `timeout`.
    pub async fn wait_for_running_tasks(&self, job_id: JobId, n: u32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Ok(details)) =
                tokio::time::timeout_at(deadline.into(), self.rest.job_details(job_id)).await
            {
                if details.status_counts.running >= n {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "fewer than {n} tasks of {job_id} ran within {timeout:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs the `rflink` CLI against this cluster's REST endpoint (`-m` added), killed past
    /// `timeout`; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[String], timeout: Duration) -> (i32, String, String) {
        let mut all = vec!["-m".to_string(), self.jm.ready("rest")];
        if let Some(token) = rest_token(&self.options.extra) {
            all.extend(["--token".to_string(), token]);
        }
        all.extend(args.iter().cloned());
        rflink_cli(&all, timeout)
    }

    /// Submits a compiled-in example detached (`rflink run -d --example NAME ARGS`) and returns
    /// its job id; panics with the logs if the CLI fails.
    pub fn submit_example(&self, example: &str, args: &[&str], timeout: Duration) -> JobId {
        let mut all: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--example".into(),
            example.into(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let (code, stdout, stderr) = self.cli(&all, timeout);
        assert_eq!(
            code,
            0,
            "rflink {all:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
            self.logs()
        );
        stdout
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("a job id in {stdout:?}"))
    }

    /// Submits a streaming WordCount (parallelism 2, checkpoints every second, exactly-once
    /// part files under `output`) that runs until cancelled, waits until it and all its tasks
    /// run, and returns its id and its `/jobs/{id}` details as JSON (ids as REST spells them).
    pub async fn start_endless_wordcount(&self, output: &str) -> (JobId, serde_json::Value) {
        let wait = Duration::from_secs(30);
        // Far more lines than it reads at this rate.
        let job_id = self.submit_example(
            "streaming-wordcount",
            &[
                "--lines",
                "100000000",
                "--lines-per-second",
                "200",
                "--parallelism",
                "2",
                "--checkpoint-interval",
                "1000",
                "--output",
                output,
            ],
            wait,
        );
        let status = self
            .wait_for_job_status(
                job_id,
                |s| s == JobStatus::Running || s.is_terminal(),
                Instant::now() + wait,
            )
            .await;
        assert_eq!(status, JobStatus::Running, "{}", self.logs());
        let details = self.rest.job_details(job_id).await.expect("job details");
        let tasks: u32 = details.vertices.iter().map(|v| v.parallelism).sum();
        self.wait_for_running_tasks(job_id, tasks, wait).await;
        let details = serde_json::to_value(&details).expect("details serialize");
        (job_id, details)
    }

    /// Runs WordCount (`rflink run --example wordcount`) over `text` with `extra` program
    /// arguments, expects exit 0 and returns the parsed output file.
    pub fn run_wordcount(
        &self,
        text: &str,
        extra: &[&str],
        timeout: Duration,
    ) -> BTreeMap<String, u64> {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("input.txt");
        let output = dir.path().join("output.txt");
        std::fs::write(&input, text).expect("write input");
        let mut args: Vec<String> = vec![
            "run".into(),
            "--example".into(),
            "wordcount".into(),
            "--input".into(),
            input.display().to_string(),
            "--output".into(),
            output.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let (code, stdout, stderr) = self.cli(&args, timeout);
        assert_eq!(
            code,
            0,
            "stdout:\n{stdout}\nstderr:\n{stderr}\n{}",
            self.logs()
        );
        let written = std::fs::read_to_string(&output).expect("the sink wrote its file");
        rflink_examples::parse_counts(&written).expect("`word count` lines")
    }
}

/// The Flink version `scripts/install-flink-cli` installs (Flink's CLI and web UI tests).
pub const FLINK_VERSION: &str = "2.3.0";

/// The home of a Flink installation (the directory holding `bin/flink` and `lib/`), looked for
/// as `scripts/install-flink-cli` does: `$FLINK_HOME`, then the script's install directory
/// (`$RFLINK_TOOLS_DIR`, by default `~/.cache/rflink-tools`, + `flink-2.3.0/pyflink`), then the
/// directory of a `pyflink` that `python3` imports (`pip install apache-flink`). `None` if none
/// has a `bin/flink`.
pub fn find_flink_home() -> Option<PathBuf> {
    let installed = |home: PathBuf| home.join("bin/flink").is_file().then_some(home);
    if let Some(home) = std::env::var_os("FLINK_HOME") {
        if let Some(home) = installed(PathBuf::from(home)) {
            return Some(home);
        }
    }
    let tools = std::env::var_os("RFLINK_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/rflink-tools")));
    if let Some(tools) = tools {
        if let Some(home) = installed(tools.join(format!("flink-{FLINK_VERSION}/pyflink"))) {
            return Some(home);
        }
    }
    let pyflink = Command::new("python3")
        .args([
            "-c",
            "import os, pyflink; print(os.path.dirname(pyflink.__file__))",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    installed(PathBuf::from(
        String::from_utf8_lossy(&pyflink.stdout).trim(),
    ))
}

/// Runs the `rflink` CLI with `args`, killed (and reaped) past `timeout`; returns (exit code,
/// stdout, stderr).
pub fn rflink_cli(args: &[String], timeout: Duration) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rflink"));
    command.args(args).env_remove("RFLINK_JOBMANAGER");
    run_bounded(command, &format!("rflink {args:?}"), timeout)
}

/// Runs `command` (described as `what`) with no stdin, collecting its stdout and stderr;
/// kills it and panics with what it printed if it runs past `timeout`. Returns (exit code,
/// stdout, stderr).
pub fn run_bounded(mut command: Command, what: &str, timeout: Duration) -> (i32, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
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
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not end within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        code,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Builds the job libraries the tests submit (`examples/job-template`, `tests/jobs/*`) with
/// cargo, into the target directory and profile of the binaries under test, and returns the
/// directory holding `librflink_job_template.so` and the others. Cheap when they are built.
pub fn job_libraries() -> std::path::PathBuf {
    let node = std::path::PathBuf::from(env!("CARGO_BIN_EXE_rflink-node"));
    let profile_dir = node.parent().expect("the profile directory").to_path_buf();
    let target_dir = profile_dir.parent().expect("the target directory");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--target-dir"])
        .arg(target_dir)
        .args([
            "-p",
            "rflink-job-template",
            "-p",
            "rflink-test-jobs",
            "-p",
            "rflink-test-foreign-build",
        ]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("cargo runs");
    assert!(status.success(), "building the job libraries failed");
    profile_dir
}

/// The edges of a job's plan in `/jobs/{id}` JSON: (source vertex id, target vertex id, ship
/// strategy).
pub fn plan_edges(details: &serde_json::Value) -> Vec<(String, String, String)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    details["plan"]["nodes"]
        .as_array()
        .expect("plan nodes")
        .iter()
        .flat_map(|node| {
            let target = text(&node["id"]);
            node["inputs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |input| {
                    (
                        text(&input["id"]),
                        target.clone(),
                        text(&input["ship_strategy"]),
                    )
                })
        })
        .collect()
}
