//! `rflink-bench recovery`: how fast a checkpointed job is back after a TaskManager is killed,
//! on a cluster of real `rflink-node` processes, and what checkpointing costs in throughput.
//!
//! **Recovery trials.** Every trial starts a fresh cluster on loopback: one JobManager
//! (`--role jm`) and three TaskManagers (`--role tm`, one slot each: two for the job, one spare),
//! with the default configuration except ephemeral ports, loopback addresses and
//! `execution.checkpointing.dir` in the trial's temporary directory. So heartbeats and the restart
//! strategy are the defaults: with checkpointing on and no `restart-strategy.type`, rflink (as
//! Flink) restarts with exponential-delay, initial backoff 1 s (jitter ± 10 %). The nodes' own
//! temporary directories (`TMPDIR`) are in the trial's directory too, and `RFLINK__*` variables of
//! the caller's environment are not passed on.
//!
//! 1. Submit (REST `POST /v1/jobs`) the example `streaming-wordcount` with `--parallelism 2
//!    --checkpoint-interval 500 --lines 50000 --lines-per-second 5000 --output DIR` (a job graph
//!    built from the same `rflink-examples` registry the nodes run): about 5 s of input. The rate
//!    matters for the figures: a source task polls up to 1024 records at a time and shrinks the
//!    batch only after slow polls, and the first records go out in 1024-record batches, so the
//!    slower the throttled source, the later its first records reach the sink after a (re)start
//!    (about 55 ms at 5000 lines/s, 270 ms at 1000) and the longer a running source takes to
//!    see a cancellation early in its life.
//! 2. Once every task is RUNNING and a checkpoint completed, SIGKILL one of the two TaskManagers
//!    holding the job's slots (REST `/v1/taskmanagers`: no free slot; the trials alternate
//!    between the two).
//! 3. From the kill on, poll `GET /v1/jobs/{id}` every 10 ms (the time of a poll is when its answer
//!    arrived) and watch the output directory every 1 ms:
//!    * **kill → running**: until the job, after it went RESTARTING (seen in a poll, or its
//!      RESTARTING timestamp is after the kill), is RUNNING again with every vertex RUNNING and all
//!      its subtasks RUNNING;
//!    * **kill → first record**: until the first record after the restore reaches a sink. The
//!      exactly-once file sink creates its in-progress part file
//!      (`.part-{subtask}-{seq}.{attempt}.inprogress`) lazily, on its first record, so the first
//!      such file of a new attempt marks the first record written after the restore (it has gone
//!      through the restored source, the tokenizer, the keyed exchange and the restored counter);
//!    * **kill → first commit** (extra): until the first checkpoint triggered after the restart
//!      completed (`GET /v1/jobs/{id}/checkpoints`): when the restored job's output starts to be
//!      committed.
//!
//!    Where the time went comes from the JobManager: its RESTARTING timestamp (when it handled
//!    the first failure), when it logged `task manager lost` (the ResourceManager declared the
//!    killed TaskManager dead), the backoff it chose (its `restarting after a failure` log line)
//!    and its RUNNING timestamp (when the restart deployed the tasks again).
//! 4. Wait for the job to finish, and compare its committed output with
//!    `rflink_examples::streaming_reference` for the same lines: a mismatch is reported loudly
//!    and fails the benchmark (after the report).
//!
//! The same trials run with `-D restart-strategy.type=exponential-delay -D
//! restart-strategy.exponential-delay.initial-backoff=100 ms` on the JobManager (`--fast-trials`,
//! labelled as an extra), interleaved with the default ones. The type has to be given: as in
//! Flink, without `restart-strategy.type` the default strategy takes the default parameters and
//! ignores the `exponential-delay.*` keys.
//!
//! **Throughput cost of checkpointing.** One cluster of a JobManager and two TaskManagers (one
//! slot each, default configuration as above) runs the example `streaming-wordcount`, not slowed,
//! `--parallelism 2 --lines 4000000`, with `--checkpoint-interval 1000` and with checkpointing
//! off, in interleaved pairs (off, on, off, on; medians of each). The example always enables
//! checkpointing; for the off run the
//! benchmark removes `execution.checkpointing.interval` from the built job graph's job
//! configuration before submitting it. The program, its operators and fingerprint are the same;
//! without the key the JobMaster runs no checkpoint coordinator and the tasks run without
//! checkpointing (no barriers, and `write_as_text` writes plain files instead of two-phase-commit
//! part files), as Flink's job without `enableCheckpointing`.
//!
//! * **steady lines/s** (the ratio reported): a thread samples the total size of the output
//!   directory every 20 ms; the window runs from the first sample with 10 % of the final output
//!   to the first with 90 %, and its bytes are turned into input lines with the reference's
//!   cumulative output size per input line (the generated lines are independent and both source
//!   subtasks interleave the line indices, so output bytes map to lines processed). This leaves
//!   out deployment and, with checkpoints, the wait for the final checkpoint after the end of
//!   input (up to one interval).
//! * **end-to-end lines/s** (extra): lines / (submit .. the job's result, polled every 20 ms).
//! * Both outputs are checked to equal the reference (each word's lines `w 1` .. `w n`, exactly
//!   once: the same multiset as `streaming_reference`, without building it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rflink_runtime::client::build_job_graph;
use rflink_runtime::executiongraph::{ExecutionState, JobStatus};
use rflink_runtime::jobgraph::JobGraph;
use rflink_runtime::rest::client::RestClient;
use rflink_runtime::rest::messages::{ApplicationStatus, JobDetailsInfo};
use rflink_runtime::tasks::Jobs;
use rflink_runtime::types::JobId;
use rustc_hash::FxHashMap;

use crate::cli::{parse_flags, Flag};
use crate::node::{epoch_millis, Node};
use crate::stats::{json_number, median};
use crate::BoxError;

/// Option lines for the usage text.
pub const OPTIONS_HELP: &str =
    "  --trials N              recovery trials with the default restart strategy (default 5)
  --fast-trials N         extra trials with initial-backoff 100 ms, 0 for none (default 5)
  --lines N               lines the recovery job generates (default 50000)
  --rate N                lines per second per source subtask in the recovery job (default 5000)
  --throughput-lines N    lines of the checkpointing on/off runs, 0 for none (default 4000000)
  --throughput-runs N     interleaved (off, on) pairs of runs (default 2)
  --timeout-secs N        give up on a job or a wait after N s (default 60)
  (binary: $RFLINK_NODE, else rflink-node next to rflink-bench: cargo build --release -p rflink-dist)";

/// The example job, from the registry every node has.
const JOB: &str = "streaming-wordcount";
/// The seed of its generated text.
const SEED: u64 = 7;
/// The job configuration key of the checkpoint interval (`rflink::CHECKPOINTING_INTERVAL_KEY`).
const INTERVAL_KEY: &str = "execution.checkpointing.interval";
/// The checkpoint interval of the recovery job.
const RECOVERY_INTERVAL_MS: u64 = 500;
/// The checkpoint interval of the throughput comparison.
const THROUGHPUT_INTERVAL_MS: u64 = 1000;
/// How often the job's REST details are polled after the kill.
const POLL: Duration = Duration::from_millis(10);
/// How often the output directory is looked at for the first record after the restore.
const WATCH: Duration = Duration::from_millis(1);
/// How often the output's size is sampled in the throughput runs.
const SAMPLE: Duration = Duration::from_millis(20);
/// What the JobManager logs when it decides a restart (with `delay=`).
const RESTART_LOG: &str = "restarting after a failure";
/// What the JobMaster logs when the ResourceManager told it a TaskManager is gone.
const TM_LOST_LOG: &str = "task manager lost";

/// Options of the `recovery` benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    pub trials: usize,
    pub fast_trials: usize,
    pub lines: usize,
    pub rate: usize,
    pub throughput_lines: usize,
    pub throughput_runs: usize,
    pub timeout_secs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            trials: 5,
            fast_trials: 5,
            lines: 50_000,
            rate: 5000,
            throughput_lines: 4_000_000,
            throughput_runs: 2,
            timeout_secs: 60,
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
                    name: "--trials",
                    value: &mut o.trials,
                    min: 1,
                },
                Flag {
                    name: "--fast-trials",
                    value: &mut o.fast_trials,
                    min: 0,
                },
                Flag {
                    name: "--lines",
                    value: &mut o.lines,
                    min: 1000,
                },
                Flag {
                    name: "--rate",
                    value: &mut o.rate,
                    min: 1,
                },
                Flag {
                    name: "--throughput-lines",
                    value: &mut o.throughput_lines,
                    min: 0,
                },
                Flag {
                    name: "--throughput-runs",
                    value: &mut o.throughput_runs,
                    min: 1,
                },
                Flag {
                    name: "--timeout-secs",
                    value: &mut o.timeout_secs,
                    min: 1,
                },
            ],
        )?;
        if o.throughput_lines != 0 && o.throughput_lines < 10_000 {
            return Err("--throughput-lines must be 0 or at least 10000".into());
        }
        Ok(o)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs as u64)
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A JobManager and its TaskManagers; dropping it stops all of them (TaskManagers first).
struct Cluster {
    tms: Vec<Node>,
    jm: Node,
    rest: RestClient,
}

impl Cluster {
    /// Starts a JobManager with `jm_props` and `task_managers` TaskManagers (one slot each) with
    /// `common_props` (the JobManager gets them too), and waits until all registered.
    async fn start(
        binary: &Path,
        task_managers: usize,
        common_props: &[String],
        jm_props: &[String],
        tmpdir: &Path,
        timeout: Duration,
    ) -> Result<Cluster, BoxError> {
        let loopback = ["--bind-host", "127.0.0.1", "--advertised-host", "127.0.0.1"];
        let mut args: Vec<String> = ["--role", "jm", "--rpc-port", "0", "--rest-port", "0"]
            .iter()
            .chain(&loopback)
            .map(|s| s.to_string())
            .collect();
        for prop in common_props.iter().chain(jm_props) {
            args.extend(["-D".to_string(), prop.clone()]);
        }
        let jm = Node::start(
            "jobmanager".into(),
            binary,
            &args,
            tmpdir,
            &[RESTART_LOG, TM_LOST_LOG],
        )?;
        let rest = RestClient::with_timeout(jm.field("rest")?, Duration::from_secs(10));
        let rpc = jm.field("rpc")?;
        let mut cluster = Cluster {
            tms: Vec::with_capacity(task_managers),
            jm,
            rest,
        };
        for i in 0..task_managers {
            let mut args: Vec<String> = ["--role", "tm", "--jobmanager", &rpc, "--rpc-port", "0"]
                .iter()
                .chain(&loopback)
                .map(|s| s.to_string())
                .collect();
            args.extend(["-D".into(), "taskmanager.numberOfTaskSlots=1".into()]);
            for prop in common_props {
                args.extend(["-D".to_string(), prop.clone()]);
            }
            let tm = Node::start(format!("taskmanager-{i}"), binary, &args, tmpdir, &[])?;
            cluster.tms.push(tm);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let overview = cluster.rest.overview().await;
            if let Ok(o) = &overview {
                if o.taskmanagers as usize == task_managers
                    && o.slots_available as usize == task_managers
                {
                    return Ok(cluster);
                }
            }
            if Instant::now() > deadline {
                return Err(cluster.jm.failure(&format!(
                    "{task_managers} TaskManagers did not register within {timeout:?} (last \
                         overview: {overview:?})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until no job runs and every slot is free.
    async fn wait_idle(&self, timeout: Duration) -> Result<(), BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            let o = self.rest.overview().await?;
            if o.jobs_running == 0 && o.slots_available == o.slots_total {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the cluster is not idle after {timeout:?}: {o:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for tm in &mut self.tms {
            tm.terminate();
        }
        self.jm.terminate();
        let deadline = Instant::now() + Duration::from_secs(5);
        for tm in &mut self.tms {
            tm.reap(deadline);
        }
        self.jm.reap(deadline);
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs and their output

/// A path as a job argument.
pub(crate) fn arg_path(path: &Path) -> Result<String, BoxError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("path {} is not UTF-8", path.display()).into())
}

/// The job graph of the example `streaming-wordcount`, as `rflink run --example` builds it.
pub(crate) fn job_graph(args: &[String]) -> Result<JobGraph, BoxError> {
    let jobs = Jobs::new(rflink_examples::registry());
    build_job_graph(&jobs, JOB, args).map_err(|e| format!("building {JOB} {args:?}: {e}").into())
}

/// Whether every vertex of the job, and every subtask, is RUNNING.
pub(crate) fn all_running(details: &JobDetailsInfo) -> bool {
    !details.vertices.is_empty()
        && details.vertices.iter().all(|v| {
            v.status == ExecutionState::Running
                && v.tasks.get(ExecutionState::Running) == v.parallelism
        })
}

/// Waits for the job's result (polling every 20 ms); fails unless it FINISHED.
pub(crate) async fn wait_finished(
    rest: &RestClient,
    job_id: JobId,
    timeout: Duration,
) -> Result<(), BoxError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(result) = rest.job_result(job_id).await? {
            if result.application_status != ApplicationStatus::Succeeded {
                return Err(format!(
                    "job {job_id} ended {:?}, expected FINISHED: {:?}",
                    result.application_status, result.failure_cause
                )
                .into());
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("job {job_id} did not finish within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `part-{subtask}-{seq}`: a committed part file of the exactly-once sink.
fn is_committed_part(name: &str) -> bool {
    name.strip_prefix("part-")
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(i, seq)| i.parse::<u32>().is_ok() && seq.parse::<u64>().is_ok())
}

/// The attempt number of an in-progress part file `.part-{subtask}-{seq}.{attempt}.inprogress`.
fn in_progress_attempt(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(".part-")?.strip_suffix(".inprogress")?;
    let (part, attempt) = rest.rsplit_once('.')?;
    let (i, seq) = part.split_once('-')?;
    i.parse::<u32>().ok()?;
    seq.parse::<u64>().ok()?;
    attempt.parse().ok()
}

/// The highest attempt number of the in-progress part files in `dir` (none if there are none).
fn max_attempt(dir: &Path) -> Result<Option<u32>, BoxError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display()).into()),
    };
    let mut max = None;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        if let Some(a) = entry.file_name().to_str().and_then(in_progress_attempt) {
            max = max.max(Some(a));
        }
    }
    Ok(max)
}

/// The committed output of the exactly-once sink in `dir`, as sorted lines.
pub(crate) fn committed_lines(dir: &Path) -> Result<Vec<String>, BoxError> {
    let mut lines = Vec::new();
    for entry in
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?
    {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        if entry.file_name().to_str().is_some_and(is_committed_part) {
            let path = entry.path();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            lines.extend(text.lines().map(str::to_string));
        }
    }
    lines.sort();
    Ok(lines)
}

/// `Ok` if `got` equals `expected` (both sorted); else where they first differ.
pub(crate) fn compare_lines(got: &[String], expected: &[String]) -> Result<(), String> {
    if got == expected {
        return Ok(());
    }
    let first = got
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    Err(format!(
        "{} lines, the reference {}; first difference at sorted line {first}: got {:?}, expected {:?}",
        got.len(),
        expected.len(),
        got.get(first),
        expected.get(first)
    ))
}

/// A thread that reports (once) when an in-progress part file of an attempt after `before`
/// appears in `dir`: the sink's first record after the restore. Stopped when dropped.
struct FirstRecordWatch {
    stop: Arc<AtomicBool>,
    found: mpsc::Receiver<Instant>,
    thread: Option<JoinHandle<()>>,
}

impl FirstRecordWatch {
    fn start(dir: PathBuf, before: Option<u32>) -> Result<FirstRecordWatch, BoxError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, found) = mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("first-record".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if let Ok(entries) = std::fs::read_dir(&dir) {
                        let new = entries.filter_map(Result::ok).any(|e| {
                            e.file_name()
                                .to_str()
                                .and_then(in_progress_attempt)
                                .is_some_and(|a| before.is_none_or(|b| a > b))
                        });
                        if new {
                            let _ = tx.send(Instant::now());
                            return;
                        }
                    }
                    std::thread::sleep(WATCH);
                }
            })
            .map_err(|e| format!("starting the output watcher: {e}"))?;
        Ok(FirstRecordWatch {
            stop,
            found,
            thread: Some(thread),
        })
    }
}

impl Drop for FirstRecordWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recovery trials

/// A restart configuration the trials run with.
struct Variant {
    name: &'static str,
    label: &'static str,
    jm_props: &'static [&'static str],
}

const DEFAULT_RESTART: Variant = Variant {
    name: "default",
    label: "default configuration (exponential-delay, initial backoff 1 s)",
    jm_props: &[],
};

const FAST_RESTART: Variant = Variant {
    name: "fast",
    label: "extra: -D restart-strategy.type=exponential-delay -D \
            restart-strategy.exponential-delay.initial-backoff=100 ms",
    // As in Flink, the exponential-delay keys count only when the type is set: without it the
    // default strategy uses the default parameters.
    jm_props: &[
        "restart-strategy.type=exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff=100 ms",
    ],
};

/// The figures of one trial, in milliseconds after the kill.
struct Trial {
    /// The JobManager entered RESTARTING (its timestamp).
    jm_restarting: f64,
    /// The JobMaster logged that the ResourceManager declared the TaskManager lost (when the
    /// line was read).
    tm_lost: Option<f64>,
    /// The backoff the JobManager chose (its log line).
    backoff: Option<f64>,
    /// The JobManager put the job back to RUNNING, deploying the tasks (its timestamp).
    jm_running: f64,
    /// Every task RUNNING (polled).
    running: f64,
    /// The first record after the restore at a sink (watched).
    first_record: f64,
    /// The first checkpoint after the restart completed (polled).
    first_commit: Option<f64>,
    /// Whether the committed output equalled the reference.
    output_ok: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Parses a `Debug`-printed `Duration` (`1.043s`, `104.2ms`, `950µs`) into milliseconds.
fn parse_debug_duration(text: &str) -> Option<f64> {
    let units: [(&str, f64); 5] = [
        ("ms", 1.0),
        ("µs", 1e-3),
        ("us", 1e-3),
        ("ns", 1e-6),
        ("s", 1e3),
    ];
    units.iter().find_map(|(unit, factor)| {
        text.strip_suffix(unit)
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n * factor)
    })
}

/// The `delay=` of a `restarting after a failure` log line, in milliseconds.
fn restart_delay(line: &str) -> Option<f64> {
    log_duration(line, "delay")
}

/// The `Debug`-printed duration field `name=` of a log line, in milliseconds.
pub(crate) fn log_duration(line: &str, name: &str) -> Option<f64> {
    // Without colours there are no escape sequences; strip them anyway.
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .split_whitespace()
        .find_map(|token| token.strip_prefix(name)?.strip_prefix('='))
        .and_then(parse_debug_duration)
}

/// The latest completed checkpoint: `(id, trigger timestamp)`.
pub(crate) fn latest_completed(stats: &serde_json::Value) -> Option<(u64, i64)> {
    let latest = &stats["latest"]["completed"];
    Some((
        latest["id"].as_u64()?,
        latest["trigger_timestamp"].as_i64()?,
    ))
}

async fn recovery_trial(
    binary: &Path,
    options: &Options,
    variant: &Variant,
    n: usize,
    reference: &[String],
) -> Result<Trial, BoxError> {
    let timeout = options.timeout();
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let (checkpoints, output, tmp) = (
        dir.path().join("checkpoints"),
        dir.path().join("out"),
        dir.path().join("tmp"),
    );
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let common = [format!(
        "execution.checkpointing.dir={}",
        arg_path(&checkpoints)?
    )];
    let jm_props: Vec<String> = variant.jm_props.iter().map(|s| s.to_string()).collect();
    let mut cluster = Cluster::start(binary, 3, &common, &jm_props, &tmp, timeout).await?;

    let args: Vec<String> = [
        "--lines".to_string(),
        options.lines.to_string(),
        "--seed".into(),
        SEED.to_string(),
        "--lines-per-second".into(),
        options.rate.to_string(),
        "--checkpoint-interval".into(),
        RECOVERY_INTERVAL_MS.to_string(),
        "--output".into(),
        arg_path(&output)?,
        "--parallelism".into(),
        "2".into(),
    ]
    .to_vec();
    let graph = job_graph(&args)?;
    let rest = &cluster.rest;
    let job_id = rest.submit_job(&graph).await?;

    // Every task RUNNING and a checkpoint completed.
    let deadline = Instant::now() + timeout;
    let checkpoint_before = loop {
        let details = rest.job_details(job_id).await?;
        if details.state.is_globally_terminal() {
            return Err(format!("job {job_id} ended {} before the kill", details.state).into());
        }
        if details.state == JobStatus::Running && all_running(&details) {
            if let Some(latest) = latest_completed(&rest.checkpoints(job_id).await?) {
                break latest;
            }
        }
        if Instant::now() > deadline {
            return Err(format!("job {job_id}: no checkpoint completed within {timeout:?}").into());
        }
        tokio::time::sleep(POLL).await;
    };

    // The TaskManagers holding the job's two slots.
    let summaries = rest.taskmanagers().await?;
    let mut busy = Vec::new();
    for (i, tm) in cluster.tms.iter().enumerate() {
        let id = tm.field("resource_id")?;
        if summaries.iter().any(|s| s.id == id && s.free_slots == 0) {
            busy.push(i);
        }
    }
    if busy.len() != 2 {
        return Err(format!(
            "expected the job on 2 of the 3 TaskManagers, found it on {busy:?}: {summaries:?}"
        )
        .into());
    }
    let victim = busy[(n - 1) % busy.len()];

    let watch = FirstRecordWatch::start(output.clone(), max_attempt(&output)?)?;
    let kill_wall = epoch_millis();
    let killed = Instant::now();
    cluster.tms[victim].kill()?;

    let rest = &cluster.rest;
    let deadline = killed + timeout;
    let mut seen_restarting = false;
    let mut running: Option<(Instant, i64, i64)> = None;
    let mut first_record: Option<Instant> = None;
    let mut first_commit: Option<Instant> = None;
    loop {
        let details = rest.job_details(job_id).await?;
        let now = Instant::now();
        if details.state.is_globally_terminal() {
            return Err(format!(
                "job {job_id} ended {} during the recovery (kill was {:.0} ms ago)",
                details.state,
                ms(now - killed)
            )
            .into());
        }
        seen_restarting |= details.state == JobStatus::Restarting;
        let restarted = seen_restarting || details.timestamps.restarting >= kill_wall;
        if running.is_none()
            && restarted
            && details.state == JobStatus::Running
            && all_running(&details)
        {
            running = Some((
                now,
                details.timestamps.restarting,
                details.timestamps.running,
            ));
        }
        if first_record.is_none() {
            first_record = watch.found.try_recv().ok();
        }
        if let (Some((_, _, jm_running)), None) = (running, first_commit) {
            if let Some((id, triggered)) = latest_completed(&rest.checkpoints(job_id).await?) {
                if id > checkpoint_before.0 && triggered >= jm_running {
                    first_commit = Some(Instant::now());
                }
            }
        }
        if running.is_some() && first_record.is_some() && first_commit.is_some() {
            break;
        }
        if now > deadline {
            return Err(format!(
                "job {job_id}: not recovered within {timeout:?} after the kill (status {}, all \
                 running {}, first record {}, commit {})",
                details.state,
                running.is_some(),
                first_record.is_some(),
                first_commit.is_some()
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
    drop(watch);
    let (running_at, jm_restarting, jm_running) = running.ok_or("internal: no running time")?;
    let first_record = first_record.ok_or("internal: no first record")?;

    wait_finished(rest, job_id, timeout).await?;
    let (backoff, tm_lost) = {
        let marks = cluster.jm.marks();
        let backoff = marks
            .iter()
            .filter(|(_, line)| line.contains(RESTART_LOG))
            .find_map(|(_, line)| restart_delay(line));
        let lost = marks
            .iter()
            .find(|(at, line)| *at >= killed && line.contains(TM_LOST_LOG))
            .map(|(at, _)| ms(*at - killed));
        (backoff, lost)
    };
    let got = committed_lines(&output)?;
    let output_ok = match compare_lines(&got, reference) {
        Ok(()) => true,
        Err(problem) => {
            let text = format!(
                "!!! OUTPUT MISMATCH in {} trial {n}: the committed output of job {job_id} is not \
                 streaming_reference: {problem}",
                variant.name
            );
            eprintln!("{text}");
            println!("{text}");
            false
        }
    };
    drop(cluster);
    dir.close()
        .map_err(|e| format!("cannot remove the temporary directory: {e}"))?;

    let trial = Trial {
        jm_restarting: (jm_restarting - kill_wall) as f64,
        tm_lost,
        backoff,
        jm_running: (jm_running - kill_wall) as f64,
        running: ms(running_at - killed),
        first_record: ms(first_record - killed),
        first_commit: first_commit.map(|t| ms(t - killed)),
        output_ok,
    };
    println!(
        "  {:<7} trial {n}: killed taskmanager-{victim} | JM RESTARTING +{:.0} ms | TM lost {} | \
         backoff {} | JM RUNNING +{:.0} ms | all tasks RUNNING +{:.0} ms | first record +{:.0} ms \
         | first commit {} | output {}",
        variant.name,
        trial.jm_restarting,
        trial
            .tm_lost
            .map_or("?".to_string(), |l| format!("+{l:.0} ms")),
        trial
            .backoff
            .map_or("?".to_string(), |b| format!("{b:.0} ms")),
        trial.jm_running,
        trial.running,
        trial.first_record,
        trial
            .first_commit
            .map_or("-".to_string(), |c| format!("+{c:.0} ms")),
        if output_ok {
            format!("= reference ({} lines)", got.len())
        } else {
            "MISMATCH".into()
        }
    );
    Ok(trial)
}

/// Medians of a variant's trials.
struct Summary {
    trials: usize,
    running: f64,
    first_record: f64,
    first_commit: f64,
    jm_restarting: f64,
    tm_lost: f64,
    backoff: f64,
    jm_running: f64,
    mismatches: usize,
}

impl Summary {
    fn of(trials: &[Trial]) -> Summary {
        let med = |f: &dyn Fn(&Trial) -> Option<f64>| {
            median(&trials.iter().filter_map(f).collect::<Vec<_>>())
        };
        Summary {
            trials: trials.len(),
            running: med(&|t| Some(t.running)),
            first_record: med(&|t| Some(t.first_record)),
            first_commit: med(&|t| t.first_commit),
            jm_restarting: med(&|t| Some(t.jm_restarting)),
            tm_lost: med(&|t| t.tm_lost),
            backoff: med(&|t| t.backoff),
            jm_running: med(&|t| Some(t.jm_running)),
            mismatches: trials.iter().filter(|t| !t.output_ok).count(),
        }
    }

    fn print(&self, label: &str) {
        println!("  {label}, p50 of {} trials:", self.trials);
        println!(
            "    kill -> JM RESTARTING {:.0} ms, TM declared lost {:.0} ms; backoff {:.0} ms; -> JM \
             RUNNING {:.0} ms -> all tasks RUNNING {:.0} ms -> first record {:.0} ms -> first \
             commit {:.0} ms",
            self.jm_restarting,
            self.tm_lost,
            self.backoff,
            self.jm_running,
            self.running,
            self.first_record,
            self.first_commit
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Throughput with and without checkpoints

/// What the reference says about the throughput job's output.
struct Expected {
    /// Each word's final count.
    counts: FxHashMap<String, u64>,
    /// `cumulative[i]`: output bytes of input lines `0..=i`, in index order.
    cumulative: Vec<u64>,
}

/// Decimal digits of `n`.
fn digits(mut n: u64) -> u64 {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// The reference of `lines` generated lines: counts and cumulative output size.
fn expected_output(lines: u64) -> Expected {
    let mut counts: FxHashMap<String, u64> = FxHashMap::default();
    let mut cumulative = Vec::with_capacity(lines as usize);
    let mut bytes = 0u64;
    for line in rflink_examples::generated_text(SEED, lines) {
        rflink_examples::tokenize(&line, |word| {
            let len = word.len() as u64;
            let n = counts.entry(word).or_insert(0);
            *n += 1;
            // `word n\n`
            bytes += len + 1 + digits(*n) + 1;
        });
        cumulative.push(bytes);
    }
    Expected { counts, cumulative }
}

/// Checks that `text` (lines `word k`) holds, for each word with final count `n`, the lines
/// `word 1` .. `word n` exactly once, and nothing else, across every call: the multiset of
/// `rflink_examples::streaming_reference`.
struct OutputCheck<'a> {
    seen: FxHashMap<&'a str, Vec<bool>>,
    lines: u64,
}

impl<'a> OutputCheck<'a> {
    fn new(counts: &'a FxHashMap<String, u64>) -> Self {
        OutputCheck {
            seen: counts
                .iter()
                .map(|(w, &n)| (w.as_str(), vec![false; n as usize]))
                .collect(),
            lines: 0,
        }
    }

    fn add(&mut self, text: &str) -> Result<(), String> {
        for line in text.lines() {
            let (word, k) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("not a `word count` line: {line:?}"))?;
            let k: usize = k
                .parse()
                .map_err(|_| format!("not a `word count` line: {line:?}"))?;
            let marks = self
                .seen
                .get_mut(word)
                .ok_or_else(|| format!("{line:?}: the reference has no word {word:?}"))?;
            let counted = marks.len();
            let slot = k
                .checked_sub(1)
                .and_then(|i| marks.get_mut(i))
                .ok_or_else(|| format!("{line:?}: the reference counts {word:?} to {counted}"))?;
            if *slot {
                return Err(format!("{line:?} appears twice"));
            }
            *slot = true;
            self.lines += 1;
        }
        Ok(())
    }

    fn finish(&self) -> Result<u64, String> {
        let mut missing = 0usize;
        let mut example = None;
        for (word, marks) in &self.seen {
            for (i, _) in marks.iter().enumerate().filter(|(_, m)| !**m) {
                missing += 1;
                example.get_or_insert_with(|| format!("{word} {}", i + 1));
            }
        }
        match example {
            None => Ok(self.lines),
            Some(e) => Err(format!("{missing} reference lines are missing, e.g. {e:?}")),
        }
    }
}

/// Checks every visible file in `dir` (committed parts, or the plain sink's files `1`, `2`)
/// against the reference; returns the number of lines.
fn check_output(dir: &Path, expected: &Expected) -> Result<u64, BoxError> {
    let mut check = OutputCheck::new(&expected.counts);
    for entry in
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?
    {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let name = entry.file_name();
        if name.to_str().is_none_or(|n| n.starts_with('.')) {
            continue;
        }
        let path = entry.path();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        check
            .add(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(check.finish()?)
}

/// The total size of the regular files in `dir`; 0 while it does not exist. A file renamed
/// between the listing and its `stat` (a part file being committed) makes it list again.
fn dir_bytes(dir: &Path) -> u64 {
    for _ in 0..5 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut total = 0;
        let mut consistent = true;
        for entry in entries.filter_map(Result::ok) {
            match entry.metadata() {
                Ok(m) if m.is_file() => total += m.len(),
                Ok(_) => {}
                Err(_) => consistent = false,
            }
        }
        if consistent {
            return total;
        }
    }
    0
}

/// A thread sampling the output size every [`SAMPLE`] until stopped.
struct SizeSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<(Instant, u64)>>>,
}

impl SizeSampler {
    fn start(dir: PathBuf) -> Result<SizeSampler, BoxError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("size-sampler".into())
            .spawn(move || {
                let mut samples = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    samples.push((Instant::now(), dir_bytes(&dir)));
                    std::thread::sleep(SAMPLE);
                }
                samples.push((Instant::now(), dir_bytes(&dir)));
                samples
            })
            .map_err(|e| format!("starting the size sampler: {e}"))?;
        Ok(SizeSampler {
            stop,
            thread: Some(thread),
        })
    }

    fn finish(mut self) -> Result<Vec<(Instant, u64)>, BoxError> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self
            .thread
            .take()
            .ok_or("the sampler was already stopped")?;
        thread
            .join()
            .map_err(|_| "the size sampler panicked".into())
    }
}

impl Drop for SizeSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Lines per second between the first samples with 10 % and with 90 % of the output; the
/// sampled bytes become lines through `cumulative`.
fn steady_rate(samples: &[(Instant, u64)], cumulative: &[u64]) -> Result<f64, BoxError> {
    let total = *cumulative.last().ok_or("no input lines")?;
    let first_at = |fraction: f64| {
        samples
            .iter()
            .find(|(_, b)| *b as f64 >= fraction * total as f64)
            .copied()
    };
    let ((t0, b0), (t1, b1)) = match (first_at(0.1), first_at(0.9)) {
        (Some(a), Some(b)) if b.0 > a.0 => (a, b),
        _ => {
            return Err(format!(
                "the output did not grow through 10 % .. 90 % of {total} bytes in separate samples \
                 (too few lines for the {SAMPLE:?} sampling?)"
            )
            .into())
        }
    };
    let lines = |bytes: u64| cumulative.partition_point(|&c| c <= bytes) as f64;
    Ok((lines(b1) - lines(b0)) / (t1 - t0).as_secs_f64())
}

/// One throughput run's figures.
struct Run {
    steady: f64,
    end_to_end: f64,
}

async fn throughput_run(
    cluster: &Cluster,
    options: &Options,
    expected: &Expected,
    output: &Path,
    checkpointing: bool,
) -> Result<Run, BoxError> {
    let args: Vec<String> = [
        "--lines".to_string(),
        options.throughput_lines.to_string(),
        "--seed".into(),
        SEED.to_string(),
        "--checkpoint-interval".into(),
        THROUGHPUT_INTERVAL_MS.to_string(),
        "--output".into(),
        arg_path(output)?,
        "--parallelism".into(),
        "2".into(),
    ]
    .to_vec();
    let mut graph = job_graph(&args)?;
    let interval = graph.job_config.get(INTERVAL_KEY).cloned();
    if interval.as_deref() != Some("1000 ms") {
        return Err(format!(
            "{JOB} no longer sets {INTERVAL_KEY} to \"1000 ms\" (it sets {interval:?}): adapt the \
             benchmark"
        )
        .into());
    }
    if !checkpointing {
        graph.job_config.remove(INTERVAL_KEY);
    }
    cluster.wait_idle(options.timeout()).await?;
    let sampler = SizeSampler::start(output.to_path_buf())?;
    let start = Instant::now();
    let job_id = cluster.rest.submit_job(&graph).await?;
    wait_finished(&cluster.rest, job_id, options.timeout()).await?;
    let elapsed = start.elapsed();
    let samples = sampler.finish()?;
    let lines = check_output(output, expected).map_err(|e| {
        format!("!!! OUTPUT MISMATCH of the throughput run (checkpointing {checkpointing}): {e}")
    })?;
    let steady = steady_rate(&samples, &expected.cumulative)?;
    std::fs::remove_dir_all(output)
        .map_err(|e| format!("cannot remove {}: {e}", output.display()))?;
    let run = Run {
        steady,
        end_to_end: options.throughput_lines as f64 / elapsed.as_secs_f64(),
    };
    eprintln!(
        "recovery: throughput run, checkpointing {}: {:.3} s submit..result, steady {:.0} lines/s, \
         end to end {:.0} lines/s; output = reference ({lines} lines)",
        if checkpointing { "every 1 s" } else { "off" },
        elapsed.as_secs_f64(),
        run.steady,
        run.end_to_end
    );
    Ok(run)
}

/// Medians of the throughput runs, off and on.
struct Throughput {
    off_steady: f64,
    on_steady: f64,
    off_end_to_end: f64,
    on_end_to_end: f64,
}

async fn throughput(binary: &Path, options: &Options) -> Result<Throughput, BoxError> {
    eprintln!(
        "recovery: computing the reference of {} lines (untimed)",
        options.throughput_lines
    );
    let expected = expected_output(options.throughput_lines as u64);
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let common = [format!(
        "execution.checkpointing.dir={}",
        arg_path(&dir.path().join("checkpoints"))?
    )];
    let cluster = Cluster::start(binary, 2, &common, &[], &tmp, options.timeout()).await?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for run in 1..=options.throughput_runs {
        for checkpointing in [false, true] {
            let output = dir.path().join(format!(
                "out-{run}-{}",
                if checkpointing { "on" } else { "off" }
            ));
            let r = throughput_run(&cluster, options, &expected, &output, checkpointing).await?;
            if checkpointing { &mut on } else { &mut off }.push(r);
        }
    }
    drop(cluster);
    dir.close()
        .map_err(|e| format!("cannot remove the temporary directory: {e}"))?;
    let med = |runs: &[Run], f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Ok(Throughput {
        off_steady: med(&off, |r| r.steady),
        on_steady: med(&on, |r| r.steady),
        off_end_to_end: med(&off, |r| r.end_to_end),
        on_end_to_end: med(&on, |r| r.end_to_end),
    })
}

// ---------------------------------------------------------------------------------------------

async fn run_async(options: Options) -> Result<(), BoxError> {
    let binary = crate::startup::node_binary()?;
    println!(
        "recovery: JobManager + 3 TaskManagers (1 slot each) as rflink-node processes ({}), a fresh \
         cluster per trial; {JOB} p=2, checkpoint every {RECOVERY_INTERVAL_MS} ms, {} lines at {} \
         lines/s per source subtask; SIGKILL of a TaskManager running the job after the first \
         completed checkpoint; {} logical CPUs",
        binary.display(),
        options.lines,
        options.rate,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let reference = rflink_examples::streaming_reference(&rflink_examples::generated_text(
        SEED,
        options.lines as u64,
    ));
    let (mut default, mut fast) = (Vec::new(), Vec::new());
    for n in 1..=options.trials.max(options.fast_trials) {
        if n <= options.trials {
            default.push(recovery_trial(&binary, &options, &DEFAULT_RESTART, n, &reference).await?);
        }
        if n <= options.fast_trials {
            fast.push(recovery_trial(&binary, &options, &FAST_RESTART, n, &reference).await?);
        }
    }
    let default = Summary::of(&default);
    let fast = (!fast.is_empty()).then(|| Summary::of(&fast));

    let tp = if options.throughput_lines > 0 {
        Some(throughput(&binary, &options).await?)
    } else {
        None
    };

    println!("recovery after SIGKILL of a TaskManager (ms after the kill):");
    default.print(DEFAULT_RESTART.label);
    if let Some(fast) = &fast {
        fast.print(FAST_RESTART.label);
    }
    let ratio = tp.as_ref().map_or(f64::NAN, |t| t.on_steady / t.off_steady);
    if let Some(t) = &tp {
        println!(
            "throughput of {JOB} p=2 on 2 TaskManagers, {} lines, median of {} run(s) each:",
            options.throughput_lines, options.throughput_runs
        );
        println!(
            "  steady (10..90 % of the output): checkpointing off {:.0} lines/s, every 1 s {:.0} \
             lines/s, ratio on/off {:.3}",
            t.off_steady, t.on_steady, ratio
        );
        println!(
            "  end to end (submit..result):      checkpointing off {:.0} lines/s, every 1 s {:.0} \
             lines/s, ratio on/off {:.3}",
            t.off_end_to_end,
            t.on_end_to_end,
            t.on_end_to_end / t.off_end_to_end
        );
    }
    let mismatches = default.mismatches + fast.as_ref().map_or(0, |f| f.mismatches);
    if mismatches == 0 {
        println!("every trial's committed output equalled streaming_reference");
    } else {
        println!(
            "!!! {mismatches} trial(s) committed output that differs from streaming_reference"
        );
    }
    let opt = |v: Option<f64>, d: usize| v.map_or("null".to_string(), |v| json_number(v, d));
    println!(
        "{{\"bench\":\"recovery\",\"kill_to_running_p50_ms\":{},\"kill_to_first_record_p50_ms\":{},\
         \"checkpoint_1s_throughput_ratio\":{},\"kill_to_first_commit_p50_ms\":{},\
         \"jm_restarting_p50_ms\":{},\"backoff_p50_ms\":{},\"jm_running_p50_ms\":{},\"trials\":{},\
         \"fast_kill_to_running_p50_ms\":{},\"fast_kill_to_first_record_p50_ms\":{},\
         \"fast_trials\":{},\"checkpoint_off_lines_per_s\":{},\"checkpoint_1s_lines_per_s\":{},\
         \"checkpoint_1s_end_to_end_ratio\":{},\"output_mismatches\":{}}}",
        json_number(default.running, 1),
        json_number(default.first_record, 1),
        json_number(ratio, 3),
        json_number(default.first_commit, 1),
        json_number(default.jm_restarting, 1),
        json_number(default.backoff, 1),
        json_number(default.jm_running, 1),
        default.trials,
        opt(fast.as_ref().map(|f| f.running), 1),
        opt(fast.as_ref().map(|f| f.first_record), 1),
        fast.as_ref().map_or(0, |f| f.trials),
        opt(tp.as_ref().map(|t| t.off_steady), 0),
        opt(tp.as_ref().map(|t| t.on_steady), 0),
        opt(tp.as_ref().map(|t| t.on_end_to_end / t.off_end_to_end), 3),
        mismatches,
    );
    if mismatches > 0 {
        return Err(format!("{mismatches} trial(s) committed a wrong output").into());
    }
    Ok(())
}

/// Runs the benchmark in its own actix system on this thread; the last stdout line is JSON.
pub fn run(options: &Options) -> Result<(), BoxError> {
    let options = options.clone();
    actix_rt::System::new().block_on(run_async(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse() {
        let o = Options::parse(&args(&["--trials", "7", "--fast-trials=0"])).expect("options");
        assert_eq!((o.trials, o.fast_trials, o.lines), (7, 0, 50_000));
        assert!(Options::parse(&args(&["--trials", "0"])).is_err());
        assert!(Options::parse(&args(&["--throughput-lines", "5"])).is_err());
        assert!(Options::parse(&args(&["--throughput-lines", "0"])).is_ok());
        assert!(Options::parse(&args(&["--bogus", "1"])).is_err());
    }

    #[test]
    fn part_file_names() {
        assert!(is_committed_part("part-0-12"));
        assert!(!is_committed_part(".part-0-12.1.inprogress"));
        assert!(!is_committed_part("part-0"));
        assert_eq!(in_progress_attempt(".part-1-3.2.inprogress"), Some(2));
        assert_eq!(in_progress_attempt(".part-1-3.inprogress"), None);
        assert_eq!(in_progress_attempt("part-1-3"), None);
    }

    #[test]
    fn restart_log_delays() {
        let line =
            "2026-11-21T06:30:39.245Z  INFO rflink_runtime::executiongraph: restarting after \
                    a failure job_id=ab subtasks=4 delay=1.043519s cause=lost";
        assert_eq!(restart_delay(line).map(|d| d.round()), Some(1044.0));
        let colored = "\u{1b}[3mdelay\u{1b}[0m\u{1b}[2m=\u{1b}[0m104.5ms cause";
        assert_eq!(restart_delay(colored), Some(104.5));
        let micros = parse_debug_duration("950µs").expect("parses");
        assert!((micros - 0.95).abs() < 1e-9, "{micros}");
        assert_eq!(restart_delay("no delay here"), None);
    }

    /// The count-based check accepts exactly the multiset of `streaming_reference`.
    #[test]
    fn output_check_agrees_with_streaming_reference() {
        let lines = 300;
        let expected = expected_output(lines);
        let reference =
            rflink_examples::streaming_reference(&rflink_examples::generated_text(SEED, lines));
        let bytes: u64 = reference.iter().map(|l| l.len() as u64 + 1).sum();
        assert_eq!(expected.cumulative.last().copied(), Some(bytes));
        let text = reference.join("\n");
        let mut check = OutputCheck::new(&expected.counts);
        check.add(&text).expect("the reference passes");
        assert_eq!(check.finish(), Ok(reference.len() as u64));

        let mut missing = OutputCheck::new(&expected.counts);
        missing
            .add(&reference[1..].join("\n"))
            .expect("no bad line");
        assert!(missing.finish().is_err());
        let mut twice = OutputCheck::new(&expected.counts);
        assert!(twice.add(&format!("{text}\n{}", reference[0])).is_err());
        let mut foreign = OutputCheck::new(&expected.counts);
        assert!(foreign.add("zzzunknown 1").is_err());
    }

    #[test]
    fn steady_rate_maps_bytes_to_lines() {
        let cumulative: Vec<u64> = (1..=100).map(|i| i * 10).collect();
        let t0 = Instant::now();
        let samples = [
            (t0, 0),
            (t0 + Duration::from_secs(1), 100),
            (t0 + Duration::from_secs(2), 500),
            (t0 + Duration::from_secs(3), 900),
            (t0 + Duration::from_secs(4), 1000),
        ];
        // 10 lines at 1 s, 90 lines at 3 s: 40 lines/s.
        let rate = steady_rate(&samples, &cumulative).expect("rate");
        assert!((rate - 40.0).abs() < 1e-9, "{rate}");
        assert!(steady_rate(&samples[..2], &cumulative).is_err());
    }

    #[test]
    fn digits_of_numbers() {
        assert_eq!(
            (digits(0), digits(9), digits(10), digits(12345)),
            (1, 1, 2, 5)
        );
    }
}
