//! A cluster of real `rflink-node` processes on loopback ephemeral ports, for the multi-process
//! suites. Every node is started with port 0 and found through its `RFLINK_READY` line (never a
//! fixed port or a sleep); its output is captured for failure messages; dropping a node kills and
//! reaps it, so a failing test leaks no process.
#![allow(dead_code)] // Each suite uses a part of this.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rflink_runtime::rest::client::RestClient;

/// How long a node may take to print its ready line.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// One `rflink-node` process.
pub struct Node {
    name: String,
    child: Child,
    ready: serde_json::Value,
    output: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `rflink-node` with `args` and waits for its ready line.
    pub fn start(name: &str, args: &[String]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rflink-node"))
            .args(args)
            .env("RUST_LOG", "info,actix_server=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rflink-node starts");
        let output: Arc<Mutex<Vec<String>>> = Arc::default();
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        for (stream, tx) in [
            (
                Box::new(stdout) as Box<dyn std::io::Read + Send>,
                Some(ready_tx),
            ),
            (Box::new(stderr), None),
        ] {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let (Some(tx), Some(json)) = (&tx, line.strip_prefix("RFLINK_READY ")) {
                        let _ = tx.send(json.to_string());
                    }
                    output.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let mut node = Node {
            name: name.to_string(),
            child,
            ready: serde_json::Value::Null,
            output,
        };
        match ready_rx.recv_timeout(START_DEADLINE) {
            Ok(json) => node.ready = serde_json::from_str(&json).expect("the ready line is json"),
            Err(_) => panic!(
                "{name} printed no ready line within {START_DEADLINE:?}:\n{}",
                node.logs()
            ),
        }
        node
    }

    /// A field of the ready line.
    pub fn ready(&self, field: &str) -> String {
        self.ready[field]
            .as_str()
            .map(str::to_string)
            .unwrap_or_default()
    }

    /// Everything the node printed so far.
    pub fn logs(&self) -> String {
        let lines = self.output.lock().unwrap_or_else(|p| p.into_inner());
        format!("---- {} ----\n{}", self.name, lines.join("\n"))
    }

    /// SIGKILL: the process dies without a word to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JobManager process and TaskManager processes.
pub struct Cluster {
    /// The JobManager.
    pub jm: Node,
    /// The TaskManagers.
    pub tms: Vec<Node>,
    /// A REST client for the JobManager.
    pub rest: RestClient,
}

impl Cluster {
    /// Starts a JobManager and `task_managers` TaskManagers with `slots` each; `extra` are more
    /// arguments for every node (e.g. `-D heartbeat.timeout=2 s`).
    pub fn start(task_managers: usize, slots: u32, extra: &[&str]) -> Cluster {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut jm_args: Vec<String> = [
            "--role",
            "jm",
            "--rpc-port",
            "0",
            "--rest-port",
            "0",
            "--bind-host",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        jm_args.extend(["--advertised-host".into(), "127.0.0.1".into()]);
        jm_args.extend(extra.iter().cloned());
        let jm = Node::start("jobmanager", &jm_args);
        let rest = RestClient::new(jm.ready("rest"));
        let mut cluster = Cluster {
            rest,
            tms: Vec::new(),
            jm,
        };
        for _ in 0..task_managers {
            cluster.add_task_manager(slots, &extra);
        }
        cluster
    }

    /// Starts one more TaskManager.
    pub fn add_task_manager(&mut self, slots: u32, extra: &[String]) {
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
        ];
        args.extend(extra.iter().cloned());
        let name = format!("taskmanager-{}", self.tms.len());
        self.tms.push(Node::start(&name, &args));
    }

    /// Every node's output, for failure messages.
    pub fn logs(&self) -> String {
        std::iter::once(&self.jm)
            .chain(self.tms.iter())
            .map(Node::logs)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `/overview` until `check` holds, at most `timeout`; panics with every node's logs.
    pub async fn wait_for_overview(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&rflink_runtime::rest::messages::ClusterOverviewWithVersion) -> bool,
    ) -> rflink_runtime::rest::messages::ClusterOverviewWithVersion {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(overview) = self.rest.overview().await {
                if check(&overview) {
                    return overview;
                }
            }
            if Instant::now() >= deadline {
                panic!("never happened within {timeout:?}: {what}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `/jobs/{id}` until `n` tasks of the job are RUNNING, at most `timeout`.
    pub async fn wait_for_running_tasks(
        &self,
        job_id: rflink_runtime::types::JobId,
        n: u32,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(details) = self.rest.job_details(job_id).await {
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
}
