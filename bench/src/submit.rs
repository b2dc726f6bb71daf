//! `rflink-bench submit`: job submission latency on a warm MiniCluster, against RPC round trips
//! to the Dispatcher measured in the same run.
//!
//! A MiniCluster (one JobManager, N TaskManagers, each TaskManager on its own RPC service, so every
//! JobManager ↔ TaskManager message crosses loopback TCP) runs 2-vertex no-op jobs one after
//! another. For each job the benchmark subscribes to the cluster's typed events *before*
//! submitting, then timestamps, relative to the submit call:
//!
//! * `accepted`: `MiniCluster::submit_job` returned (the Dispatcher started the JobMaster);
//! * `RUNNING`: `JobStatusChanged { status: RUNNING }` for that job (scheduling started);
//! * the JobMaster registered at the ResourceManager, the first task DEPLOYING, every task
//!   RUNNING, every task FINISHED (`TaskStateChanged`);
//! * `FINISHED`: `JobStatusChanged { status: FINISHED }` for that job.
//!
//! Nothing is polled on the timed path. Between jobs (untimed) the benchmark waits until the
//! cluster is idle again (every slot free, no job running), so every job sees the same warm cluster.
//!
//! The baseline, interleaved with the jobs (after each job: a few asks of each kind):
//!
//! * **remote ask**: `RequestJobStatus` of the job just finished, from a client `RpcService` to the
//!   Dispatcher over loopback TCP: one remote round trip, the unit the job path is made of (every
//!   JobManager ↔ TaskManager message in the MiniCluster takes the same path);
//! * **local ask**: the same message through `MiniCluster::dispatcher_gateway()`, the gateway
//!   `submit_job` itself uses (mailbox only, no TCP);
//! * **task threads**: the OS part of running the job's tasks: spawn as many OS threads as the job
//!   has subtasks, each sending one message back to this thread's runtime (as a task reports its
//!   state through the TaskExecutor's `MainThreadHandle`), until all arrived. Remote asks never
//!   leave this thread; tasks do, so on a loaded machine this is the baseline that moves with them.
//!
//! Everything runs on one thread (one `actix_rt::System`), as Flink's MiniCluster runs in one JVM;
//! only the tasks' invokables run on their own threads.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rflink_rpc::{RpcGateway, RpcService};
use rflink_runtime::dispatcher::{Dispatcher, RequestJobStatus, RequestTaskManagers};
use rflink_runtime::events::ClusterEvent;
use rflink_runtime::executiongraph::{ExecutionState, JobStatus};
use rflink_runtime::jobgraph::{DistributionPattern, JobGraph, JobVertex};
use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig};
use rflink_runtime::types::{JobId, ResourceId};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::cli::{parse_flags, Flag};
use crate::stats::{json_number, median, Millis};
use crate::BoxError;

/// Option lines for the usage text.
pub const OPTIONS_HELP: &str =
    "  --jobs N           timed jobs, run one after another (default 100)
  --warmup N         untimed jobs first (default 5)
  --parallelism N    parallelism of each of the 2 vertices (default 2)
  --taskmanagers N   TaskManagers in the MiniCluster (default 2)
  --slots N          slots per TaskManager (default 2)
  --asks N           baseline asks of each kind after every job (default 20)
  --starts N         MiniCluster starts timed for start-to-ready; the last one runs the jobs
                     (default 3)
  --timeout-secs N   give up on a job, or on the cluster becoming idle, after N s (default 30)";

/// Options of the `submit` benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    pub jobs: usize,
    pub warmup: usize,
    pub parallelism: usize,
    pub task_managers: usize,
    pub slots: usize,
    pub asks: usize,
    pub starts: usize,
    pub timeout_secs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: 100,
            warmup: 5,
            parallelism: 2,
            task_managers: 2,
            slots: 2,
            asks: 20,
            starts: 3,
            timeout_secs: 30,
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
                    name: "--jobs",
                    value: &mut o.jobs,
                    min: 1,
                },
                Flag {
                    name: "--warmup",
                    value: &mut o.warmup,
                    min: 0,
                },
                Flag {
                    name: "--parallelism",
                    value: &mut o.parallelism,
                    min: 1,
                },
                Flag {
                    name: "--taskmanagers",
                    value: &mut o.task_managers,
                    min: 1,
                },
                Flag {
                    name: "--slots",
                    value: &mut o.slots,
                    min: 1,
                },
                Flag {
                    name: "--asks",
                    value: &mut o.asks,
                    min: 1,
                },
                Flag {
                    name: "--starts",
                    value: &mut o.starts,
                    min: 1,
                },
                Flag {
                    name: "--timeout-secs",
                    value: &mut o.timeout_secs,
                    min: 1,
                },
            ],
        )?;
        if o.task_managers > 64 || o.slots > 1024 || o.parallelism > 1024 {
            return Err("at most 64 task managers, 1024 slots each and parallelism 1024".into());
        }
        // Flink's default slot sharing: a job needs `max parallelism` slots.
        if o.parallelism > o.task_managers * o.slots {
            return Err(format!(
                "--parallelism {} needs that many slots; the cluster has {} x {}",
                o.parallelism, o.task_managers, o.slots
            ));
        }
        Ok(o)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs as u64)
    }

    fn total_slots(&self) -> u32 {
        (self.task_managers * self.slots) as u32
    }

    fn cluster_config(&self) -> MiniClusterConfig {
        MiniClusterConfig {
            num_task_managers: self.task_managers as u32,
            slots_per_task_manager: self.slots as u32,
            ..MiniClusterConfig::default()
        }
    }
}

/// The job: `source` → `sink`, all-to-all, both running `NoOpInvokable`.
fn no_op_job(parallelism: u32) -> JobGraph {
    let source = JobVertex::new("source", "NoOpInvokable", parallelism);
    let sink = JobVertex::new("sink", "NoOpInvokable", parallelism)
        .connect_from(&source, DistributionPattern::AllToAll);
    JobGraph::new("bench no-op job", vec![source, sink])
}

/// How long one MiniCluster took to start.
#[derive(Debug, Clone, Copy)]
struct StartTimes {
    /// `MiniCluster::start` returned (JobManager components and TaskManagers started).
    started: Duration,
    /// Every TaskManager registered at the ResourceManager (`TaskExecutorRegistered`).
    registered: Duration,
}

/// Starts a MiniCluster and waits, on its events, until every TaskManager registered.
async fn start_cluster(options: &Options) -> Result<(MiniCluster, StartTimes), BoxError> {
    let t0 = Instant::now();
    let cluster = MiniCluster::start(options.cluster_config())
        .await
        .map_err(|e| format!("starting the MiniCluster: {e}"))?;
    let started = t0.elapsed();
    // No await since `start` returned: no registration can slip between the list and the events.
    let mut events = cluster.events();
    let mut missing: HashSet<ResourceId> = (0..options.task_managers)
        .filter_map(|i| cluster.task_manager(i).map(|tm| tm.resource_id()))
        .collect();
    let known = cluster
        .dispatcher_gateway()
        .ask(RequestTaskManagers)
        .await??;
    let mut registered = t0.elapsed();
    for tm in known {
        missing.remove(&tm.resource_id);
    }
    let deadline = tokio::time::Instant::now() + options.timeout();
    while !missing.is_empty() {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| format!("task managers not registered after {:?}", options.timeout()))?;
        match event {
            Ok(ClusterEvent::TaskExecutorRegistered { resource_id, .. }) => {
                if missing.remove(&resource_id) {
                    registered = t0.elapsed();
                }
            }
            Ok(_) => {}
            Err(err) => return Err(format!("cluster events: {err}").into()),
        }
    }
    Ok((
        cluster,
        StartTimes {
            started,
            registered,
        },
    ))
}

/// When things happened to one job, relative to the submit call.
#[derive(Debug, Default, Clone, Copy)]
struct JobTimes {
    accepted: Option<Duration>,
    running: Option<Duration>,
    rm_registered: Option<Duration>,
    first_deploying: Option<Duration>,
    all_running: Option<Duration>,
    all_tasks_finished: Option<Duration>,
    finished: Option<Duration>,
}

/// Throws away events left over from before (late events of earlier jobs, heartbeat losses).
fn drain(events: &mut broadcast::Receiver<ClusterEvent>) -> Result<(), BoxError> {
    loop {
        match events.try_recv() {
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(TryRecvError::Empty) => return Ok(()),
            Err(TryRecvError::Closed) => return Err("the cluster's event channel closed".into()),
        }
    }
}

/// Submits one job and follows it on the cluster's events until FINISHED.
async fn run_job(
    cluster: &MiniCluster,
    events: &mut broadcast::Receiver<ClusterEvent>,
    parallelism: u32,
    timeout: Duration,
) -> Result<(JobId, JobTimes), BoxError> {
    drain(events)?;
    let job = no_op_job(parallelism);
    let job_id = job.job_id;
    let subtasks = job.total_subtasks() as usize;
    let (mut tasks_running, mut tasks_finished) = (0usize, 0usize);
    let mut t = JobTimes::default();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let start = Instant::now();
    let submit = cluster.submit_job(job);
    tokio::pin!(submit);
    while t.accepted.is_none() || t.finished.is_none() {
        tokio::select! {
            biased;
            event = events.recv() => {
                let at = start.elapsed();
                match event {
                    Ok(ClusterEvent::JobStatusChanged { job_id: id, status }) if id == job_id => {
                        match status {
                            JobStatus::Running => {
                                t.running.get_or_insert(at);
                            }
                            JobStatus::Finished => t.finished = Some(at),
                            s if s.is_terminal() || s == JobStatus::Suspended => {
                                return Err(format!("job {job_id} ended {s}, not FINISHED").into());
                            }
                            _ => {}
                        }
                    }
                    Ok(ClusterEvent::JobMasterRegistered { job_id: id }) if id == job_id => {
                        t.rm_registered.get_or_insert(at);
                    }
                    // Jobs run one at a time on an idle cluster: every task event is this job's.
                    Ok(ClusterEvent::TaskStateChanged { state, .. }) => match state {
                        ExecutionState::Deploying => {
                            t.first_deploying.get_or_insert(at);
                        }
                        ExecutionState::Running => {
                            tasks_running += 1;
                            if tasks_running == subtasks {
                                t.all_running = Some(at);
                            }
                        }
                        ExecutionState::Finished => {
                            tasks_finished += 1;
                            if tasks_finished == subtasks {
                                t.all_tasks_finished = Some(at);
                            }
                        }
                        ExecutionState::Failed | ExecutionState::Canceled => {
                            return Err(format!("a task of job {job_id} ended {state}").into());
                        }
                        _ => {}
                    },
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        return Err(format!("the benchmark missed {n} cluster events").into());
                    }
                    Err(RecvError::Closed) => {
                        return Err("the cluster's event channel closed".into());
                    }
                }
            }
            result = &mut submit, if t.accepted.is_none() => {
                result.map_err(|e| format!("submitting job {job_id}: {e}"))?;
                t.accepted = Some(start.elapsed());
            }
            _ = &mut deadline => {
                return Err(format!("job {job_id} not FINISHED after {timeout:?}: {t:?}").into());
            }
        }
    }
    Ok((job_id, t))
}

/// Waits (polling, untimed) until no job runs and every slot is free; returns how long it took.
async fn wait_idle(
    cluster: &MiniCluster,
    slots: u32,
    timeout: Duration,
) -> Result<Duration, BoxError> {
    let start = Instant::now();
    loop {
        let o = cluster.overview().await?;
        if o.jobs_running == 0 && o.slots_available == slots && o.slots_total == slots {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(format!("cluster not idle after {timeout:?}: {o:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `n` asks of `RequestJobStatus { job_id }`, each timed.
async fn asks(
    gateway: &RpcGateway<Dispatcher>,
    job_id: JobId,
    n: usize,
    out: &mut Vec<Duration>,
) -> Result<(), BoxError> {
    for _ in 0..n {
        let t = Instant::now();
        let status = gateway.ask(RequestJobStatus { job_id }).await??;
        out.push(t.elapsed());
        if status != JobStatus::Finished {
            return Err(format!("job {job_id} is {status}, expected FINISHED").into());
        }
    }
    Ok(())
}

/// Spawns `n` OS threads that each send one message back to this runtime; the time until every
/// message arrived.
async fn task_threads(n: usize) -> Result<Duration, BoxError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let start = Instant::now();
    for i in 0..n {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("bench task {i}"))
            .spawn(move || {
                let _ = tx.send(());
            })
            .map_err(|e| format!("spawning a thread: {e}"))?;
    }
    drop(tx);
    let mut arrived = 0;
    while rx.recv().await.is_some() {
        arrived += 1;
    }
    let elapsed = start.elapsed();
    if arrived != n {
        return Err(format!("{arrived} of {n} threads reported").into());
    }
    Ok(elapsed)
}

/// Thread baselines after every job.
const THREAD_ROUNDS_PER_JOB: usize = 5;

/// Everything measured on the benchmark cluster.
#[derive(Default)]
struct Samples {
    jobs: Vec<JobTimes>,
    remote_asks: Vec<Duration>,
    local_asks: Vec<Duration>,
    task_threads: Vec<Duration>,
    idle_waits: Vec<Duration>,
}

async fn measure(
    options: &Options,
    cluster: &MiniCluster,
    client: &RpcService,
) -> Result<Samples, BoxError> {
    let local = cluster.dispatcher_gateway();
    let token = local
        .fencing_token()
        .ok_or("the Dispatcher gateway carries no fencing token")?;
    let remote = client
        .connect_fenced::<Dispatcher>(local.address(), token)
        .await
        .map_err(|e| format!("connecting to the Dispatcher over TCP: {e}"))?;
    if remote.is_local() {
        return Err("the client gateway to the Dispatcher is local, expected remote".into());
    }
    let mut events = cluster.events();
    let parallelism = options.parallelism as u32;
    let slots = options.total_slots();
    let subtasks = 2 * options.parallelism;
    let mut samples = Samples::default();
    let total = options.warmup + options.jobs;
    for n in 0..total {
        let warm = n >= options.warmup;
        let idle = wait_idle(cluster, slots, options.timeout()).await?;
        let (job_id, times) = run_job(cluster, &mut events, parallelism, options.timeout()).await?;
        // Untimed: until the cluster is idle again. Then the baselines (the job's status is
        // archived now: a one-hop answer).
        let idle_after = wait_idle(cluster, slots, options.timeout()).await?;
        // Threads first: the asks give them time to exit before the next job starts.
        let mut threads = Vec::with_capacity(THREAD_ROUNDS_PER_JOB);
        for _ in 0..THREAD_ROUNDS_PER_JOB {
            threads.push(task_threads(subtasks).await?);
        }
        let mut remote_rtts = Vec::with_capacity(options.asks);
        let mut local_rtts = Vec::with_capacity(options.asks);
        asks(&remote, job_id, options.asks, &mut remote_rtts).await?;
        asks(&local, job_id, options.asks, &mut local_rtts).await?;
        if warm {
            samples.task_threads.extend(threads);
            samples.jobs.push(times);
            samples.remote_asks.extend(remote_rtts);
            samples.local_asks.extend(local_rtts);
            samples.idle_waits.push(idle_after);
        }
        let done = n + 1;
        if done == options.warmup || (warm && (done - options.warmup).is_multiple_of(25)) {
            eprintln!(
                "submit: {} warm-up + {} timed jobs done (last: finished after {:.2} ms; idle wait before it {:.2} ms)",
                done.min(options.warmup),
                done.saturating_sub(options.warmup),
                ms(times.finished),
                idle.as_secs_f64() * 1e3,
            );
        }
    }
    Ok(samples)
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// Percentiles of one milestone over all jobs.
fn milestone(jobs: &[JobTimes], f: fn(&JobTimes) -> Option<Duration>) -> Result<Millis, BoxError> {
    let samples: Vec<Duration> = jobs.iter().filter_map(f).collect();
    if samples.len() != jobs.len() {
        return Err(format!(
            "a milestone was seen in only {} of {} jobs",
            samples.len(),
            jobs.len()
        )
        .into());
    }
    Millis::of(&samples).ok_or_else(|| "no jobs measured".into())
}

fn line(what: &str, m: &Millis) {
    println!(
        "  {what:<34} p50 {:>8.3}  p90 {:>8.3}  p99 {:>8.3}  max {:>8.3} ms",
        m.p50, m.p90, m.p99, m.max
    );
}

async fn run_async(options: Options) -> Result<(), BoxError> {
    println!(
        "submit: MiniCluster with 1 JobManager and {} TaskManagers x {} slots (each TaskManager on \
         its own RPC service: JM <-> TM messages cross loopback TCP), default heartbeats",
        options.task_managers, options.slots
    );
    println!(
        "        {} timed jobs (+{} warm-up) one after another, each 2 vertices x parallelism {} \
         (NoOpInvokable, all-to-all); {} logical CPUs",
        options.jobs,
        options.warmup,
        options.parallelism,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut starts = Vec::with_capacity(options.starts);
    let mut kept = None;
    for n in 1..=options.starts {
        let (cluster, times) = start_cluster(&options).await?;
        println!(
            "start {n}/{}: MiniCluster::start returned after {:.2} ms, all {} TaskManagers \
             registered after {:.2} ms",
            options.starts,
            times.started.as_secs_f64() * 1e3,
            options.task_managers,
            times.registered.as_secs_f64() * 1e3
        );
        starts.push(times);
        if n == options.starts {
            kept = Some(cluster);
        } else {
            cluster
                .close()
                .await
                .map_err(|e| format!("closing the MiniCluster: {e}"))?;
        }
    }
    let cluster = kept.ok_or("no MiniCluster started")?;
    let client = RpcService::start(options.cluster_config().rpc)
        .await
        .map_err(|e| format!("starting the client RPC service: {e}"))?;
    let measured = measure(&options, &cluster, &client).await;
    let _ = client.close().await;
    let fatal = cluster.fatal_errors();
    let closed = cluster.close().await;
    let samples = measured?;
    closed.map_err(|e| format!("closing the MiniCluster: {e}"))?;
    if !fatal.is_empty() {
        return Err(format!("task managers reported fatal errors: {fatal:?}").into());
    }
    report(&options, &starts, &samples)
}

fn report(options: &Options, starts: &[StartTimes], s: &Samples) -> Result<(), BoxError> {
    let accepted = milestone(&s.jobs, |t| t.accepted)?;
    let running = milestone(&s.jobs, |t| t.running)?;
    let rm_registered = milestone(&s.jobs, |t| t.rm_registered)?;
    let deploying = milestone(&s.jobs, |t| t.first_deploying)?;
    let all_running = milestone(&s.jobs, |t| t.all_running)?;
    let tasks_finished = milestone(&s.jobs, |t| t.all_tasks_finished)?;
    let finished = milestone(&s.jobs, |t| t.finished)?;
    let remote = Millis::of(&s.remote_asks).ok_or("no remote asks")?;
    let local = Millis::of(&s.local_asks).ok_or("no local asks")?;
    let threads = Millis::of(&s.task_threads).ok_or("no thread samples")?;
    let idle = Millis::of(&s.idle_waits).ok_or("no idle waits")?;
    let started = median(
        &starts
            .iter()
            .map(|t| t.started.as_secs_f64() * 1e3)
            .collect::<Vec<_>>(),
    );
    let ready = median(
        &starts
            .iter()
            .map(|t| t.registered.as_secs_f64() * 1e3)
            .collect::<Vec<_>>(),
    );

    println!(
        "MiniCluster start-to-ready (median of {}): start() {started:.2} ms, all TaskManagers \
         registered {ready:.2} ms",
        starts.len()
    );
    println!("{} jobs, times from the submit call:", s.jobs.len());
    line("submit answered (JobMaster started)", &accepted);
    line("job RUNNING (scheduling started)", &running);
    line("JobMaster registered at the RM", &rm_registered);
    line("first task DEPLOYING", &deploying);
    line("all tasks RUNNING", &all_running);
    line("all tasks FINISHED", &tasks_finished);
    line("job FINISHED", &finished);
    println!(
        "baseline, {} asks of each kind interleaved with the jobs:",
        s.remote_asks.len()
    );
    line("remote ask to the Dispatcher (TCP)", &remote);
    line("local ask to the Dispatcher", &local);
    println!(
        "baseline, {} rounds of spawning {} threads (the job's subtasks) that each message back:",
        s.task_threads.len(),
        2 * options.parallelism
    );
    line("task threads", &threads);
    println!(
        "untimed: previous job FINISHED -> cluster idle again (1 ms polling): p50 {:.2} ms",
        idle.p50
    );
    let mut slowest: Vec<&JobTimes> = s.jobs.iter().collect();
    slowest.sort_by_key(|t| std::cmp::Reverse(t.finished));
    for t in slowest.iter().take(3) {
        println!(
            "  a slowest job (ms): answered {:.3}, RM registered {:.3}, first DEPLOYING {:.3}, \
             all RUNNING {:.3}, all tasks FINISHED {:.3}, FINISHED {:.3}",
            ms(t.accepted),
            ms(t.rm_registered),
            ms(t.first_deploying),
            ms(t.all_running),
            ms(t.all_tasks_finished),
            ms(t.finished)
        );
    }
    let finished_rtts = finished.p50 / remote.p50;
    let running_rtts = running.p50 / remote.p50;
    let finished_local = finished.p50 / local.p50;
    println!("ratios (p50 / p50):");
    println!(
        "  submit -> FINISHED   = {finished_rtts:>8.1} remote round trips to the Dispatcher \
         ({finished_local:.0} local asks)"
    );
    println!("  submit -> RUNNING    = {running_rtts:>8.1} remote round trips");
    println!(
        "  submit -> FINISHED   = {:>8.1} x spawning the task threads and hearing back",
        finished.p50 / threads.p50
    );
    println!(
        "  submit -> all tasks RUNNING = {:.1} remote round trips",
        all_running.p50 / remote.p50
    );
    println!(
        "{{\"bench\":\"submit\",\"submit_to_running_p50_ms\":{},\"submit_to_finished_p50_ms\":{},\
         \"submit_to_running_p90_ms\":{},\"submit_to_running_p99_ms\":{},\
         \"submit_to_finished_p90_ms\":{},\"submit_to_finished_p99_ms\":{},\
         \"submit_accepted_p50_ms\":{},\"submit_to_all_tasks_running_p50_ms\":{},\
         \"remote_ask_p50_ms\":{},\"remote_ask_p99_ms\":{},\"local_ask_p50_ms\":{},\
         \"finished_remote_rtt_ratio\":{},\"running_remote_rtt_ratio\":{},\"finished_local_ask_ratio\":{},\
         \"task_threads_p50_ms\":{},\"finished_task_threads_ratio\":{},\
         \"minicluster_start_ms\":{},\"minicluster_ready_ms\":{},\
         \"jobs\":{},\"warmup\":{},\"parallelism\":{},\"taskmanagers\":{},\"slots\":{}}}",
        json_number(running.p50, 3),
        json_number(finished.p50, 3),
        json_number(running.p90, 3),
        json_number(running.p99, 3),
        json_number(finished.p90, 3),
        json_number(finished.p99, 3),
        json_number(accepted.p50, 3),
        json_number(all_running.p50, 3),
        json_number(remote.p50, 4),
        json_number(remote.p99, 4),
        json_number(local.p50, 4),
        json_number(finished_rtts, 1),
        json_number(running_rtts, 1),
        json_number(finished_local, 1),
        json_number(threads.p50, 4),
        json_number(finished.p50 / threads.p50, 2),
        json_number(started, 2),
        json_number(ready, 2),
        s.jobs.len(),
        options.warmup,
        options.parallelism,
        options.task_managers,
        options.slots,
    );
    Ok(())
}

/// Runs the benchmark in its own actix system on this thread; the last stdout line is JSON.
pub fn run(options: &Options) -> Result<(), BoxError> {
    let options = options.clone();
    actix_rt::System::new().block_on(run_async(options))
}
