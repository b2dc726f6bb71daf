//! A real `rflink-node` process for the process-level benchmarks (`recovery`, `failover-jm`):
//! spawned with the default configuration (no `RFLINK__*` variable of the caller), its
//! `RFLINK_READY` line parsed, its output kept for error messages, chosen log lines time-stamped
//! as they are read, and always stopped and reaped.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::BoxError;

/// How long a node may take to print its ready line.
const NODE_DEADLINE: Duration = Duration::from_secs(30);
/// The logging of the nodes (their default, set so the caller's `RUST_LOG` does not change it).
const NODE_LOG: &str = "info,actix_server=warn";
/// Lines of a node's output kept for error messages.
const LOG_LINES: usize = 300;

/// Milliseconds since the epoch, as the JobManager's timestamps.
pub fn epoch_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A running `rflink-node`. Dropping it stops it (SIGTERM, SIGKILL after 5 s) and reaps it.
pub struct Node {
    name: String,
    child: Child,
    ready: serde_json::Value,
    log: Arc<Mutex<VecDeque<String>>>,
    /// Lines of its log (stderr) containing one of the patterns given to [`Node::start`], with
    /// when they were read.
    marks: Arc<Mutex<Vec<(Instant, String)>>>,
    reaped: bool,
}

impl Node {
    /// Spawns `binary args` and waits for its `RFLINK_READY` line. The lines of its log that
    /// contain one of `marks` are kept with when they were read ([`Node::marks`]).
    pub fn start(
        name: String,
        binary: &Path,
        args: &[String],
        tmpdir: &Path,
        marks: &[&'static str],
    ) -> Result<Node, BoxError> {
        let mut command = Command::new(binary);
        command
            .args(args)
            .env("RUST_LOG", NODE_LOG)
            .env("NO_COLOR", "1")
            .env("TMPDIR", tmpdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Default configuration: nothing from the caller's environment layer.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("RFLINK__")) {
                command.env_remove(key);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("spawning {name} ({}): {e}", binary.display()))?;
        let streams: [(Option<Box<dyn Read + Send>>, bool); 2] = [
            (child.stdout.take().map(|s| Box::new(s) as _), true),
            (child.stderr.take().map(|s| Box::new(s) as _), false),
        ];
        // Built before the reader threads: `Drop` stops the process if anything below fails.
        let mut node = Node {
            name,
            child,
            ready: serde_json::Value::Null,
            log: Arc::default(),
            marks: Arc::default(),
            reaped: false,
        };
        let marks_of: Vec<&'static str> = marks.to_vec();
        let (tx, ready) = mpsc::channel::<String>();
        for (stream, is_stdout) in streams {
            let stream = stream.ok_or("a node's output is not piped")?;
            let (tx, log, marks) = (tx.clone(), Arc::clone(&node.log), Arc::clone(&node.marks));
            let patterns = marks_of.clone();
            std::thread::Builder::new()
                .name(format!(
                    "{}-{}",
                    node.name,
                    if is_stdout { "out" } else { "err" }
                ))
                .spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        if is_stdout {
                            if let Some(json) = line.strip_prefix("RFLINK_READY ") {
                                let _ = tx.send(json.to_string());
                            }
                        } else if patterns.iter().any(|p| line.contains(p)) {
                            marks
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((Instant::now(), line.clone()));
                        }
                        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                        if log.len() == LOG_LINES {
                            log.pop_front();
                        }
                        log.push_back(line);
                    }
                })
                .map_err(|e| format!("starting a reader thread: {e}"))?;
        }
        drop(tx);
        let json = ready.recv_timeout(NODE_DEADLINE).map_err(|e| {
            let why = match e {
                mpsc::RecvTimeoutError::Timeout => format!("not within {NODE_DEADLINE:?}"),
                mpsc::RecvTimeoutError::Disconnected => "its output ended".into(),
            };
            node.failure(&format!("no RFLINK_READY line ({why})"))
        })?;
        node.ready = serde_json::from_str(&json)
            .map_err(|e| format!("{}: bad ready line {json:?}: {e}", node.name))?;
        Ok(node)
    }

    /// The name it was started with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lines of its log that matched a mark, with when they were read.
    pub fn marks(&self) -> Vec<(Instant, String)> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first line matching `pattern` read at or after `since`: how long after `since`.
    pub fn mark_after(&self, pattern: &str, since: Instant) -> Option<Duration> {
        self.marks()
            .iter()
            .find(|(at, line)| *at >= since && line.contains(pattern))
            .map(|(at, _)| *at - since)
    }

    /// A string field of the ready line.
    pub fn field(&self, name: &str) -> Result<String, BoxError> {
        self.ready[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "{}: the ready line has no {name:?}: {}",
                    self.name, self.ready
                )
                .into()
            })
    }

    /// An error naming this node, with how it exited (if it did) and its last output.
    pub fn failure(&mut self, what: &str) -> BoxError {
        let exited = match self.child.try_wait() {
            Ok(Some(status)) => format!(" (exited: {status})"),
            _ => String::new(),
        };
        format!(
            "{}{exited}: {what}; its last output:\n{}",
            self.name,
            self.log_text()
        )
        .into()
    }

    pub fn log_text(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> Result<(), BoxError> {
        self.child
            .kill()
            .map_err(|e| format!("SIGKILL to {}: {e}", self.name))?;
        self.child
            .wait()
            .map_err(|e| format!("reaping {}: {e}", self.name))?;
        self.reaped = true;
        Ok(())
    }

    /// Sends SIGTERM (with the `kill` command) unless the process is gone.
    pub fn terminate(&mut self) {
        if self.reaped || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Waits until `deadline` for the process to exit, then SIGKILLs it; reaps it.
    pub fn reap(&mut self, deadline: Instant) {
        if self.reaped {
            return;
        }
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) => {
                    self.reaped = true;
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.terminate();
        self.reap(Instant::now() + Duration::from_secs(5));
    }
}
