//! `rflink-bench startup`: start-to-ready time and idle memory of real `rflink-node` processes,
//! against the cost of spawning a process at all, in the same run.
//!
//! Each round, in this order:
//!
//! 1. baseline: spawn `/bin/true` and wait for it to exit;
//! 2. baseline: spawn `rflink-node --version` (the same binary: exec, dynamic loading, argument
//!    parsing) and wait for it to exit;
//! 3. spawn `rflink-node --role jm --rpc-port 0 --rest-port 0` and time until its `RFLINK_READY`
//!    line arrives on stdout;
//! 4. spawn `rflink-node --role tm --jobmanager <its rpc address> --rpc-port 0` and time until its
//!    `RFLINK_READY` line, and until it logs that it registered at the ResourceManager (its INFO
//!    log on stderr); the JobManager's REST overview then has to show one TaskManager;
//! 5. let both idle for `--settle-ms`, then read `VmRSS`, `RssAnon` (the process's private
//!    memory; the rest of RSS is mostly pages of the binary, shared between processes) and
//!    `VmHWM` (peak RSS) of both from `/proc/<pid>/status`;
//! 6. stop both with SIGTERM and reap them.
//!
//! Lines are timestamped by reader threads as they arrive. The binary is `$RFLINK_NODE` if set,
//! else `rflink-node` next to this executable (`cargo build --release -p rflink-dist` first).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::{parse_flags, Flag};
use crate::stats::{json_number, median};
use crate::BoxError;

/// Option lines for the usage text.
pub const OPTIONS_HELP: &str =
    "  --rounds N      rounds (baselines, JobManager, TaskManager) (default 10)
  --settle-ms N   idle time before reading the processes' RSS (default 1000)
  (binary: $RFLINK_NODE, else rflink-node next to rflink-bench: cargo build --release -p rflink-dist)";

/// How long a node may take to print its ready line or to register.
const DEADLINE: Duration = Duration::from_secs(30);
/// What a TaskManager logs once the ResourceManager accepted it.
const REGISTERED_LOG: &str = "registered at the resource manager";

/// Options of the `startup` benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    pub settle_ms: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 10,
            settle_ms: 1000,
        }
    }
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        parse_flags(
            args,
            &mut [
                Flag {
                    name: "--rounds",
                    value: &mut o.rounds,
                    min: 1,
                },
                Flag {
                    name: "--settle-ms",
                    value: &mut o.settle_ms,
                    min: 0,
                },
            ],
        )?;
        if o.settle_ms > 600_000 {
            return Err("--settle-ms must be at most 600000".into());
        }
        Ok(o)
    }
}

/// The `rflink-node` binary to measure.
pub(crate) fn node_binary() -> Result<PathBuf, BoxError> {
    let path = match std::env::var_os("RFLINK_NODE") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .ok_or("the benchmark executable has no directory")?
            .join("rflink-node"),
    };
    if !path.is_file() {
        return Err(format!(
            "{} not found: run `cargo build --release -p rflink-dist` or set RFLINK_NODE",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// Spawns `program args` and waits for it to exit successfully; returns how long that took.
fn spawn_and_wait(program: &Path, args: &[&str]) -> Result<Duration, BoxError> {
    let t0 = Instant::now();
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("spawning {}: {e}", program.display()))?;
    let elapsed = t0.elapsed();
    if !status.success() {
        return Err(format!("{} {args:?} exited with {status}", program.display()).into());
    }
    Ok(elapsed)
}

/// What a node's reader threads report, timestamped when the line was read.
enum Output {
    Ready(Instant, String),
    Registered(Instant),
}

/// A running `rflink-node`; stopped with SIGTERM (SIGKILL if it lingers) when dropped.
struct Node {
    name: &'static str,
    child: Child,
    spawned: Instant,
    output: mpsc::Receiver<Output>,
    log: Arc<Mutex<Vec<String>>>,
    ready: Option<(Instant, String)>,
    registered: Option<Instant>,
}

impl Node {
    fn spawn(name: &'static str, binary: &Path, args: &[&str]) -> Result<Node, BoxError> {
        let spawned = Instant::now();
        let mut child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "info,actix_server=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning {name} ({}): {e}", binary.display()))?;
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, output) = mpsc::channel();
        let streams: [(Option<Box<dyn Read + Send>>, bool); 2] = [
            (child.stdout.take().map(|s| Box::new(s) as _), true),
            (child.stderr.take().map(|s| Box::new(s) as _), false),
        ];
        // Built before the reader threads: `Drop` stops the process if one cannot start.
        let node = Node {
            name,
            child,
            spawned,
            output,
            log,
            ready: None,
            registered: None,
        };
        for (stream, is_stdout) in streams {
            let stream = stream.ok_or("a node's output is not piped")?;
            let (tx, log) = (tx.clone(), Arc::clone(&node.log));
            std::thread::Builder::new()
                .name(format!("{name}-{}", if is_stdout { "out" } else { "err" }))
                .spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        let now = Instant::now();
                        if is_stdout {
                            if let Some(json) = line.strip_prefix("RFLINK_READY ") {
                                let _ = tx.send(Output::Ready(now, json.to_string()));
                            }
                        } else if line.contains(REGISTERED_LOG) {
                            let _ = tx.send(Output::Registered(now));
                        }
                        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                        if log.len() < 200 {
                            log.push(line);
                        }
                    }
                })
                .map_err(|e| format!("starting a reader thread: {e}"))?;
        }
        Ok(node)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the ready line: its time since the spawn, and its JSON.
    fn wait_ready(&mut self) -> Result<(Duration, serde_json::Value), BoxError> {
        let deadline = Instant::now() + DEADLINE;
        while self.ready.is_none() {
            self.receive(deadline)?;
        }
        let (at, json) = self.ready.as_ref().ok_or("no ready line")?;
        let value = serde_json::from_str(json)
            .map_err(|e| format!("{}: bad ready line {json:?}: {e}", self.name))?;
        Ok((*at - self.spawned, value))
    }

    /// Waits for the registration log line (it may come before the ready line): its time since
    /// the spawn.
    fn wait_registered(&mut self) -> Result<Duration, BoxError> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(at) = self.registered {
                return Ok(at - self.spawned);
            }
            self.receive(deadline)?;
        }
    }

    /// Takes the next report of the reader threads.
    fn receive(&mut self, deadline: Instant) -> Result<(), BoxError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.output.recv_timeout(left) {
            Ok(Output::Ready(at, json)) => {
                self.ready.get_or_insert((at, json));
                Ok(())
            }
            Ok(Output::Registered(at)) => {
                self.registered.get_or_insert(at);
                Ok(())
            }
            Err(err) => {
                let what = match err {
                    mpsc::RecvTimeoutError::Timeout => format!("not within {DEADLINE:?}"),
                    mpsc::RecvTimeoutError::Disconnected => "its output ended".into(),
                };
                let exited = match self.child.try_wait() {
                    Ok(Some(status)) => format!(" (exited: {status})"),
                    _ => String::new(),
                };
                Err(format!(
                    "{}{exited}: the expected output did not come ({what}); its output:\n{}",
                    self.name,
                    self.log
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .join("\n")
                )
                .into())
            }
        }
    }

    /// SIGTERM, then SIGKILL after 10 s; reaps the process. True if it exited on SIGTERM.
    fn stop(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return false;
        }
        let termed = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if termed {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(status)) => return status.success(),
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A process's memory, in KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    anon: u64,
    hwm: u64,
}

/// `VmRSS`, `RssAnon` and `VmHWM` of a process.
fn memory_kib(pid: u32) -> Result<Memory, BoxError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let field = |name: &str| -> Result<u64, BoxError> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no {name} in {path}").into())
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        anon: field("RssAnon:")?,
        hwm: field("VmHWM:")?,
    })
}

/// `GET path` on `addr` over plain HTTP/1.1; the JSON body of a 200 answer.
fn http_get_json(addr: &str, path: &str) -> Result<serde_json::Value, BoxError> {
    let sockaddr = addr
        .parse::<std::net::SocketAddr>()
        .map_err(|e| format!("REST address {addr:?}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&sockaddr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: malformed HTTP response"))?;
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET {path}: {status_line}").into());
    }
    Ok(serde_json::from_str(body).map_err(|e| format!("GET {path}: {e}: {body:?}"))?)
}

/// The figures of one round, in milliseconds and KiB.
struct Round {
    true_ms: f64,
    version_ms: f64,
    jm_ready_ms: f64,
    tm_ready_ms: f64,
    tm_registered_ms: f64,
    jm: Memory,
    tm: Memory,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round(binary: &Path, options: &Options, n: usize) -> Result<Round, BoxError> {
    let true_ms = millis(spawn_and_wait(Path::new("/bin/true"), &[])?);
    let version_ms = millis(spawn_and_wait(binary, &["--version"])?);

    let mut jm = Node::spawn(
        "job manager",
        binary,
        &["--role", "jm", "--rpc-port", "0", "--rest-port", "0"],
    )?;
    let (jm_ready, jm_info) = jm.wait_ready()?;
    let field = |name: &str| -> Result<String, BoxError> {
        jm_info[name].as_str().map(str::to_string).ok_or_else(|| {
            format!("the job manager's ready line has no {name:?}: {jm_info}").into()
        })
    };
    let (rpc, rest) = (field("rpc")?, field("rest")?);

    let mut tm = Node::spawn(
        "task manager",
        binary,
        &["--role", "tm", "--jobmanager", &rpc, "--rpc-port", "0"],
    )?;
    let (tm_ready, _) = tm.wait_ready()?;
    let tm_registered = tm.wait_registered()?;
    let overview = http_get_json(&rest, "/v1/overview")?;
    if overview["taskmanagers"].as_u64() != Some(1) {
        return Err(format!("the JobManager does not list the TaskManager: {overview}").into());
    }

    std::thread::sleep(Duration::from_millis(options.settle_ms as u64));
    let jm_memory = memory_kib(jm.pid())?;
    let tm_memory = memory_kib(tm.pid())?;
    let tm_clean = tm.stop();
    let jm_clean = jm.stop();
    if !(tm_clean && jm_clean) {
        eprintln!("startup: round {n}: a node did not exit cleanly on SIGTERM (tm {tm_clean}, jm {jm_clean})");
    }

    let r = Round {
        true_ms,
        version_ms,
        jm_ready_ms: millis(jm_ready),
        tm_ready_ms: millis(tm_ready),
        tm_registered_ms: millis(tm_registered),
        jm: jm_memory,
        tm: tm_memory,
    };
    println!(
        "round {n}/{}  /bin/true {:>6.2} ms | --version {:>6.2} ms | JM ready {:>7.2} ms | TM ready \
         {:>7.2} ms, registered {:>7.2} ms | idle RSS JM {:>5.1} MiB (anon {:.1}), TM {:>5.1} MiB \
         (anon {:.1})",
        options.rounds,
        r.true_ms,
        r.version_ms,
        r.jm_ready_ms,
        r.tm_ready_ms,
        r.tm_registered_ms,
        r.jm.rss as f64 / 1024.0,
        r.jm.anon as f64 / 1024.0,
        r.tm.rss as f64 / 1024.0,
        r.tm.anon as f64 / 1024.0,
    );
    Ok(r)
}

/// Runs the benchmark and prints its report; the last line of stdout is one JSON object.
pub fn run(options: &Options) -> Result<(), BoxError> {
    let binary = node_binary()?;
    println!(
        "startup: {} rounds of /bin/true, `rflink-node --version`, a JobManager and a TaskManager \
         process ({}); {} logical CPUs",
        options.rounds,
        binary.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rounds = Vec::with_capacity(options.rounds);
    for n in 1..=options.rounds {
        rounds.push(round(&binary, options, n)?);
    }
    let med = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let true_ms = med(|r| r.true_ms);
    let version_ms = med(|r| r.version_ms);
    let jm_ready = med(|r| r.jm_ready_ms);
    let tm_ready = med(|r| r.tm_ready_ms);
    let tm_registered = med(|r| r.tm_registered_ms);
    let mib = |kib: f64| kib / 1024.0;
    let jm_rss = mib(med(|r| r.jm.rss as f64));
    let jm_anon = mib(med(|r| r.jm.anon as f64));
    let jm_hwm = mib(med(|r| r.jm.hwm as f64));
    let tm_rss = mib(med(|r| r.tm.rss as f64));
    let tm_anon = mib(med(|r| r.tm.anon as f64));
    let tm_hwm = mib(med(|r| r.tm.hwm as f64));

    println!("median of {} rounds:", rounds.len());
    println!("  spawn /bin/true, wait for exit         {true_ms:>8.2} ms");
    println!("  spawn rflink-node --version, wait      {version_ms:>8.2} ms");
    println!(
        "  JobManager spawn -> RFLINK_READY       {jm_ready:>8.2} ms  ({:.1} x --version)",
        jm_ready / version_ms
    );
    println!(
        "  TaskManager spawn -> RFLINK_READY      {tm_ready:>8.2} ms  ({:.1} x --version)",
        tm_ready / version_ms
    );
    println!(
        "  TaskManager spawn -> registered at RM  {tm_registered:>8.2} ms  ({:.1} x --version)",
        tm_registered / version_ms
    );
    println!(
        "  idle RSS after {} ms: JobManager {jm_rss:.1} MiB (anon {jm_anon:.1}, peak {jm_hwm:.1}), \
         TaskManager {tm_rss:.1} MiB (anon {tm_anon:.1}, peak {tm_hwm:.1})",
        options.settle_ms
    );
    println!(
        "{{\"bench\":\"startup\",\"jm_ready_ms\":{},\"tm_ready_ms\":{},\"tm_registered_ms\":{},\
         \"version_spawn_ms\":{},\"true_spawn_ms\":{},\"jm_ready_version_ratio\":{},\
         \"jm_rss_mib\":{},\"jm_anon_mib\":{},\"jm_hwm_mib\":{},\"tm_rss_mib\":{},\"tm_anon_mib\":{},\
         \"tm_hwm_mib\":{},\
         \"rounds\":{},\"settle_ms\":{}}}",
        json_number(jm_ready, 2),
        json_number(tm_ready, 2),
        json_number(tm_registered, 2),
        json_number(version_ms, 2),
        json_number(true_ms, 2),
        json_number(jm_ready / version_ms, 2),
        json_number(jm_rss, 1),
        json_number(jm_anon, 1),
        json_number(jm_hwm, 1),
        json_number(tm_rss, 1),
        json_number(tm_anon, 1),
        json_number(tm_hwm, 1),
        options.rounds,
        options.settle_ms,
    );
    Ok(())
}
