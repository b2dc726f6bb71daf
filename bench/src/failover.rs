//! `rflink-bench failover-jm`: how fast a checkpointed job runs again under a standby
//! JobManager after the leading one is SIGKILLed, with high availability on a real etcd.
//!
//! Every trial starts, on loopback: a fresh etcd (`rflink_ha_etcd::testing::EtcdProcess`), a
//! JobManager (`--role jm`, ephemeral ports) that becomes the leader, two TaskManagers (one slot
//! each) that find the leader through etcd, then a second JobManager, the standby. Every node
//! has `high-availability.type=etcd` on that etcd, its own cluster id,
//! `high-availability.etcd.lease-ttl` (`--lease-ttl-ms`), and a shared
//! `high-availability.storageDir` and `execution.checkpointing.dir`; everything else is the
//! default configuration (no `RFLINK__*` variable of the caller's environment is passed on).
//!
//! 1. Submit (REST `POST /v1/jobs`, to the leader) the example `streaming-wordcount` with
//!    `--parallelism 2 --checkpoint-interval 300 --lines N --lines-per-second R` (defaults 20000
//!    and 1000 per source subtask: about 10 s of input, so it still runs after the takeover).
//! 2. Once every task is RUNNING and a checkpoint completed, SIGKILL the leader.
//! 3. From the kill on, poll the standby's `GET /v1/jobs/{id}` every 10 ms (it answers 503 while
//!    it stands by; the time of a poll is when its answer arrived):
//!    * **kill → running** (the headline): the job is RUNNING with every vertex RUNNING and all
//!      their subtasks RUNNING, under the new leader;
//!    * **kill → job RUNNING**: the job's status is RUNNING (tasks may still be deploying);
//!    * **kill → served**: the first answer 200 (the standby leads and knows the job).
//!
//!    The phases come from the logs, timed when a line was read: the standby's `granted
//!    leadership` (it won the election: the old lease expired) and `recovering the job from its
//!    latest completed checkpoint` (its Dispatcher resumes the job); and, the last of both
//!    TaskManagers, `registered at the resource manager` (the new leader's), `job master lost;
//!    failing its tasks` (they gave up on the dead leader's JobMaster: since the new leader was
//!    published, at once, with its slots freed) and `slot not accepted within the slot timeout`
//!    (slots freed only by the slot timeout: no longer happens, shown as `never`).
//! 4. Wait for the job to finish under the new leader, and compare its committed output with
//!    `rflink_examples::streaming_reference`: a mismatch is reported and fails the benchmark.
//!
//! **Baseline**: the lease TTL etcd granted (the leader logs it with `won the cluster
//! leadership`). After a crash nobody revokes the lease, so a lease-based takeover cannot come
//! before it expires: between two thirds of the TTL and the TTL after the kill (the leader renews
//! every third of it). The goal is kill → running ≤ TTL + 1 s; `ratio = p50 / (TTL + 1 s)`.

use std::path::Path;
use std::time::{Duration, Instant};

use rflink_ha_etcd::testing::EtcdProcess;
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::rest::client::RestClient;
use rflink_runtime::types::JobId;

use crate::cli::{parse_flags, Flag};
use crate::node::Node;
use crate::recovery::{
    all_running, arg_path, committed_lines, compare_lines, job_graph, latest_completed,
    log_duration, wait_finished,
};
use crate::stats::{json_number, median};
use crate::BoxError;

/// Option lines for the usage text.
pub const OPTIONS_HELP: &str =
    "  --trials N              SIGKILL trials, a fresh cluster each (default 5)
  --lease-ttl-ms N        high-availability.etcd.lease-ttl; etcd grants whole seconds (default 2000)
  --lines N               lines the job generates (default 20000)
  --rate N                lines per second per source subtask (default 1000)
  --timeout-secs N        give up on a wait after N s (default 60)
  (binary: $RFLINK_NODE, else rflink-node next to rflink-bench, built with the etcd feature:
   cargo build --release -p rflink-dist --features etcd; etcd: $RFLINK_ETCD, else /usr/bin/etcd)";

/// The seed of the job's generated text.
const SEED: u64 = 11;
/// The job's checkpoint interval.
const INTERVAL_MS: u64 = 300;
/// How often the standby's REST API is polled after the kill.
const POLL: Duration = Duration::from_millis(10);
/// How often the cluster is polled while it is set up.
const SETUP_POLL: Duration = Duration::from_millis(20);
/// The timeout of one REST request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// What a JobManager logs when it won the election, with the granted `ttl=`.
const WON_LOG: &str = "won the cluster leadership";
/// What a JobManager logs when its leadership is granted.
const GRANTED_LOG: &str = "granted leadership";
/// What the Dispatcher of a new leader logs when it resumes a job.
const RECOVERING_LOG: &str = "recovering the job from its latest completed checkpoint";
/// What a TaskManager logs when it registered at a ResourceManager (the new leader's, after
/// the kill).
const TM_REGISTERED_LOG: &str = "registered at the resource manager";
/// What a TaskManager logs when it gives up on a JobMaster (the dead leader's) and fails its
/// tasks.
const TM_JM_LOST_LOG: &str = "job master lost; failing its tasks";
/// What a TaskManager logs when it frees a slot no JobMaster accepted in time.
const TM_SLOT_FREED_LOG: &str = "slot not accepted within the slot timeout";
/// The slack over the lease TTL of the goal.
const GOAL_SLACK_MS: f64 = 1000.0;

/// Options of the `failover-jm` benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    pub trials: usize,
    pub lease_ttl_ms: usize,
    pub lines: usize,
    pub rate: usize,
    pub timeout_secs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            trials: 5,
            lease_ttl_ms: 2000,
            lines: 20_000,
            rate: 1000,
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
                    name: "--lease-ttl-ms",
                    value: &mut o.lease_ttl_ms,
                    min: 1000,
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
                    name: "--timeout-secs",
                    value: &mut o.timeout_secs,
                    min: 1,
                },
            ],
        )?;
        Ok(o)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs as u64)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// etcd, two JobManagers and two TaskManagers. Dropping it stops the nodes (SIGTERM, then
/// SIGKILL after 5 s), reaps them, and then kills etcd.
struct HaCluster {
    jms: Vec<Node>,
    tms: Vec<Node>,
    /// Held for its drop. Declared last: dropped after the nodes, which may still talk to it
    /// while they stop.
    _etcd: EtcdProcess,
}

impl HaCluster {
    /// The `-D` arguments every node gets.
    fn ha_args(
        etcd: &EtcdProcess,
        dir: &Path,
        cluster_id: &str,
        options: &Options,
    ) -> Result<Vec<String>, BoxError> {
        Ok([
            "high-availability.type=etcd".to_string(),
            format!("high-availability.etcd.endpoints={}", etcd.endpoint()),
            format!("high-availability.cluster-id={cluster_id}"),
            format!(
                "high-availability.etcd.lease-ttl={} ms",
                options.lease_ttl_ms
            ),
            format!(
                "high-availability.storageDir={}",
                arg_path(&dir.join("ha"))?
            ),
            format!(
                "execution.checkpointing.dir={}",
                arg_path(&dir.join("checkpoints"))?
            ),
        ]
        .into_iter()
        .flat_map(|d| ["-D".to_string(), d])
        .collect())
    }

    fn start_jm(&mut self, binary: &Path, ha: &[String], tmp: &Path) -> Result<(), BoxError> {
        let mut args: Vec<String> = [
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
        .collect();
        args.extend_from_slice(ha);
        let name = format!("jobmanager-{}", self.jms.len());
        let jm = Node::start(
            name,
            binary,
            &args,
            tmp,
            &[WON_LOG, GRANTED_LOG, RECOVERING_LOG],
        )?;
        let ha_kind = jm.field("ha")?;
        if !ha_kind.starts_with("etcd") {
            return Err(format!(
                "{} runs with high availability {ha_kind:?}, not etcd: build rflink-node with \
                 `--features etcd`",
                jm.name()
            )
            .into());
        }
        self.jms.push(jm);
        Ok(())
    }

    fn start_tm(&mut self, binary: &Path, ha: &[String], tmp: &Path) -> Result<(), BoxError> {
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
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend_from_slice(ha);
        let tm = Node::start(
            format!("taskmanager-{}", self.tms.len()),
            binary,
            &args,
            tmp,
            &[TM_REGISTERED_LOG, TM_JM_LOST_LOG, TM_SLOT_FREED_LOG],
        )?;
        self.tms.push(tm);
        Ok(())
    }

    /// When the last TaskManager logged `pattern` after `since` (`None` unless all did).
    fn tms_mark_after(&self, pattern: &str, since: Instant) -> Option<f64> {
        let mut last: Option<f64> = None;
        for tm in &self.tms {
            let at = ms(tm.mark_after(pattern, since)?);
            last = Some(last.map_or(at, |l| l.max(at)));
        }
        last
    }

    fn rest(&self, jm: usize) -> Result<RestClient, BoxError> {
        let node = self.jms.get(jm).ok_or("no such JobManager")?;
        Ok(RestClient::with_timeout(
            node.field("rest")?,
            REQUEST_TIMEOUT,
        ))
    }

    /// Every node's last output, for error messages.
    fn logs(&self) -> String {
        self.jms
            .iter()
            .chain(&self.tms)
            .map(|n| format!("--- {}:\n{}", n.name(), n.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until JobManager `jm` leads with `task_managers` TaskManagers and all their slots
    /// free.
    async fn wait_leading(
        &self,
        jm: usize,
        task_managers: usize,
        timeout: Duration,
    ) -> Result<(), BoxError> {
        let rest = self.rest(jm)?;
        let deadline = Instant::now() + timeout;
        loop {
            let overview = rest.overview().await;
            if let Ok(o) = &overview {
                if o.taskmanagers as usize == task_managers
                    && o.slots_available as usize == task_managers
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "jobmanager-{jm} did not lead with {task_managers} TaskManagers within \
                     {timeout:?} (last overview: {overview:?})\n{}",
                    self.logs()
                )
                .into());
            }
            tokio::time::sleep(SETUP_POLL).await;
        }
    }
}

impl Drop for HaCluster {
    fn drop(&mut self) {
        for node in self.tms.iter_mut().chain(self.jms.iter_mut()) {
            node.terminate();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for node in self.tms.iter_mut().chain(self.jms.iter_mut()) {
            node.reap(deadline);
        }
    }
}

/// The figures of one trial, in milliseconds after the kill.
struct Trial {
    /// The lease TTL etcd granted the first leader.
    lease_ttl: f64,
    /// The standby logged `granted leadership`.
    granted: Option<f64>,
    /// The standby's Dispatcher logged that it resumes the job from its checkpoint.
    recovering: Option<f64>,
    /// Both TaskManagers registered at the new leader's ResourceManager.
    tms_registered: Option<f64>,
    /// Both TaskManagers gave up on the dead leader's JobMaster (a new leader was published)
    /// and failed the tasks they still ran for it.
    tms_jm_lost: Option<f64>,
    /// Both TaskManagers freed the slot of the dead JobMaster (the slot timeout), so it can be
    /// offered to the new one.
    tms_slot_freed: Option<f64>,
    /// The standby's REST API first answered 200 for the job.
    served: f64,
    /// The job was RUNNING (polled).
    job_running: f64,
    /// The job was RUNNING with all its tasks RUNNING (polled): the headline.
    running: f64,
    /// Whether the committed output equalled the reference.
    output_ok: bool,
}

async fn trial(
    binary: &Path,
    options: &Options,
    n: usize,
    reference: &[String],
) -> Result<Trial, BoxError> {
    let timeout = options.timeout();
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let (output, tmp) = (dir.path().join("out"), dir.path().join("tmp"));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let etcd = EtcdProcess::start().map_err(|e| format!("etcd: {e}"))?;
    let ha = HaCluster::ha_args(&etcd, dir.path(), &format!("/failover-bench-{n}"), options)?;
    let mut cluster = HaCluster {
        jms: Vec::new(),
        tms: Vec::new(),
        _etcd: etcd,
    };
    // The first JobManager starts alone, so it leads; then the TaskManagers, then the standby.
    cluster.start_jm(binary, &ha, &tmp)?;
    cluster.start_tm(binary, &ha, &tmp)?;
    cluster.start_tm(binary, &ha, &tmp)?;
    cluster.wait_leading(0, 2, timeout).await?;
    cluster.start_jm(binary, &ha, &tmp)?;
    let (leader, standby) = (cluster.rest(0)?, cluster.rest(1)?);
    let (status, body) = standby.get_text("/overview").await?;
    if status != 503 {
        return Err(format!("the standby's /overview answered {status}, not 503: {body}").into());
    }
    let lease_ttl = cluster.jms[0]
        .marks()
        .iter()
        .find(|(_, line)| line.contains(WON_LOG))
        .and_then(|(_, line)| log_duration(line, "ttl"))
        .ok_or_else(|| {
            format!(
                "jobmanager-0 logged no {WON_LOG:?} with a ttl\n{}",
                cluster.logs()
            )
        })?;

    let args: Vec<String> = [
        "--lines".to_string(),
        options.lines.to_string(),
        "--seed".into(),
        SEED.to_string(),
        "--lines-per-second".into(),
        options.rate.to_string(),
        "--checkpoint-interval".into(),
        INTERVAL_MS.to_string(),
        "--output".into(),
        arg_path(&output)?,
        "--parallelism".into(),
        "2".into(),
    ]
    .to_vec();
    let job_id: JobId = leader.submit_job(&job_graph(&args)?).await?;

    // Every task RUNNING and a checkpoint completed.
    let deadline = Instant::now() + timeout;
    loop {
        let details = leader.job_details(job_id).await?;
        if details.state.is_globally_terminal() {
            return Err(format!("job {job_id} ended {} before the kill", details.state).into());
        }
        if details.state == JobStatus::Running
            && all_running(&details)
            && latest_completed(&leader.checkpoints(job_id).await?).is_some()
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "job {job_id}: not running with a completed checkpoint within {timeout:?}\n{}",
                cluster.logs()
            )
            .into());
        }
        tokio::time::sleep(SETUP_POLL).await;
    }

    let killed = Instant::now();
    cluster.jms[0].kill()?;

    let deadline = killed + timeout;
    let (mut served, mut job_running, mut running) = (None, None, None);
    while running.is_none() {
        let answer = standby.job_details(job_id).await;
        let now = Instant::now();
        if let Ok(details) = answer {
            served.get_or_insert(now);
            if details.state.is_globally_terminal() {
                return Err(format!(
                    "job {job_id} ended {} under the new leader before it ran again",
                    details.state
                )
                .into());
            }
            if details.state == JobStatus::Running {
                job_running.get_or_insert(now);
                if all_running(&details) {
                    running = Some(now);
                }
            }
        }
        if running.is_none() {
            if now > deadline {
                return Err(format!(
                    "job {job_id} not running under the standby within {timeout:?} of the kill \
                     (served {}, job RUNNING {})\n{}",
                    served.is_some(),
                    job_running.is_some(),
                    cluster.logs()
                )
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let at = |t: Option<Instant>| t.map(|t| ms(t - killed));
    let granted = cluster.jms[1].mark_after(GRANTED_LOG, killed).map(ms);
    let recovering = cluster.jms[1].mark_after(RECOVERING_LOG, killed).map(ms);
    let tms_registered = cluster.tms_mark_after(TM_REGISTERED_LOG, killed);
    let tms_jm_lost = cluster.tms_mark_after(TM_JM_LOST_LOG, killed);
    let tms_slot_freed = cluster.tms_mark_after(TM_SLOT_FREED_LOG, killed);

    wait_finished(&standby, job_id, timeout)
        .await
        .map_err(|e| format!("{e}\n{}", cluster.logs()))?;
    let got = committed_lines(&output)?;
    let output_ok = match compare_lines(&got, reference) {
        Ok(()) => true,
        Err(problem) => {
            let text = format!(
                "!!! OUTPUT MISMATCH in trial {n}: the committed output of job {job_id} is not \
                 streaming_reference: {problem}"
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
        lease_ttl,
        granted,
        recovering,
        tms_registered,
        tms_jm_lost,
        tms_slot_freed,
        served: at(served).ok_or("internal: never served")?,
        job_running: at(job_running).ok_or("internal: never RUNNING")?,
        running: at(running).ok_or("internal: never all running")?,
        output_ok,
    };
    let opt = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("+{v:.0} ms"));
    println!(
        "  trial {n}: lease TTL {:.0} ms | standby granted leadership {} | recovering the job {} \
         | TMs registered {} | TMs drop the old JobMaster {} | slot timeout {} | REST 200 \
         +{:.0} ms | job RUNNING +{:.0} ms | all tasks RUNNING +{:.0} ms | output {}",
        trial.lease_ttl,
        opt(trial.granted),
        opt(trial.recovering),
        opt(trial.tms_registered),
        opt(trial.tms_jm_lost),
        opt(trial.tms_slot_freed),
        trial.served,
        trial.job_running,
        trial.running,
        if output_ok {
            format!("= reference ({} lines)", got.len())
        } else {
            "MISMATCH".into()
        }
    );
    Ok(trial)
}

async fn run_async(options: Options) -> Result<(), BoxError> {
    let binary = crate::startup::node_binary()?;
    println!(
        "failover-jm: etcd + 2 JobManagers (leader, standby) + 2 TaskManagers (1 slot each) as \
         rflink-node processes ({}), a fresh cluster and etcd per trial; lease TTL {} ms; \
         streaming-wordcount p=2, checkpoint every {INTERVAL_MS} ms, {} lines at {} lines/s per \
         source subtask; SIGKILL of the leader after the first completed checkpoint; {} logical \
         CPUs",
        binary.display(),
        options.lease_ttl_ms,
        options.lines,
        options.rate,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let reference = rflink_examples::streaming_reference(&rflink_examples::generated_text(
        SEED,
        options.lines as u64,
    ));
    let mut trials = Vec::with_capacity(options.trials);
    for n in 1..=options.trials {
        trials.push(trial(&binary, &options, n, &reference).await?);
    }
    let med = |f: &dyn Fn(&Trial) -> Option<f64>| {
        median(&trials.iter().filter_map(f).collect::<Vec<_>>())
    };
    let running: Vec<f64> = trials.iter().map(|t| t.running).collect();
    let p50 = median(&running);
    let min = running.iter().copied().fold(f64::INFINITY, f64::min);
    let max = running.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ttl = med(&|t| Some(t.lease_ttl));
    let goal = ttl + GOAL_SLACK_MS;
    let ratio = p50 / goal;
    let mismatches = trials.iter().filter(|t| !t.output_ok).count();

    println!(
        "kill of the leading JobManager -> the job RUNNING with every task RUNNING under the new \
         leader (headline), {} trials: p50 {p50:.1} ms, min {min:.1} ms, max {max:.1} ms",
        trials.len()
    );
    println!(
        "  phases (p50 after the kill): standby granted leadership {:.1} ms, recovering the job \
         {:.1} ms, both TaskManagers registered at the new leader {:.1} ms, dropped the old \
         JobMaster {:.1} ms, freed slots by the slot timeout {}; REST 200 {:.1} ms, job RUNNING \
         {:.1} ms",
        med(&|t| t.granted),
        med(&|t| t.recovering),
        med(&|t| t.tms_registered),
        med(&|t| t.tms_jm_lost),
        match med(&|t| t.tms_slot_freed) {
            ms if ms.is_nan() => "never".to_string(),
            ms => format!("{ms:.1} ms"),
        },
        med(&|t| Some(t.served)),
        med(&|t| Some(t.job_running)),
    );
    println!(
        "baseline: the lease TTL etcd granted, {ttl:.0} ms (no lease-based takeover after a crash \
         comes before it expires); goal <= TTL + 1 s = {goal:.0} ms; ratio = p50 / (TTL + 1 s) \
         = {ratio:.3} ({})",
        if ratio <= 1.0 {
            "goal met"
        } else {
            "goal MISSED"
        }
    );
    if mismatches == 0 {
        println!("every trial's committed output equalled streaming_reference");
    } else {
        println!(
            "!!! {mismatches} trial(s) committed output that differs from streaming_reference"
        );
    }
    println!(
        "{{\"bench\":\"failover-jm\",\"kill_to_running_p50_ms\":{},\"kill_to_running_min_ms\":{},\
         \"kill_to_running_max_ms\":{},\"kill_to_job_running_p50_ms\":{},\
         \"kill_to_granted_p50_ms\":{},\"kill_to_recovering_p50_ms\":{},\
         \"kill_to_rest_200_p50_ms\":{},\"kill_to_tms_registered_p50_ms\":{},\
         \"kill_to_tms_jm_lost_p50_ms\":{},\"kill_to_tms_slot_freed_p50_ms\":{},\"lease_ttl_ms\":{},\"goal_ms\":{},\"ratio\":{},\
         \"trials\":{},\"output_mismatches\":{}}}",
        json_number(p50, 1),
        json_number(min, 1),
        json_number(max, 1),
        json_number(med(&|t| Some(t.job_running)), 1),
        json_number(med(&|t| t.granted), 1),
        json_number(med(&|t| t.recovering), 1),
        json_number(med(&|t| Some(t.served)), 1),
        json_number(med(&|t| t.tms_registered), 1),
        json_number(med(&|t| t.tms_jm_lost), 1),
        json_number(med(&|t| t.tms_slot_freed), 1),
        json_number(ttl, 0),
        json_number(goal, 0),
        json_number(ratio, 3),
        trials.len(),
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
        let o = Options::parse(&args(&[])).expect("defaults");
        assert_eq!(
            (o.trials, o.lease_ttl_ms, o.lines, o.rate, o.timeout_secs),
            (5, 2000, 20_000, 1000, 60)
        );
        let o = Options::parse(&args(&["--trials", "7", "--lease-ttl-ms=3000"])).expect("options");
        assert_eq!((o.trials, o.lease_ttl_ms), (7, 3000));
        assert!(Options::parse(&args(&["--trials", "0"])).is_err());
        assert!(Options::parse(&args(&["--lease-ttl-ms", "500"])).is_err());
        assert!(Options::parse(&args(&["--timeout-secs", "0"])).is_err());
        assert!(Options::parse(&args(&["--bogus", "1"])).is_err());
    }

    #[test]
    fn granted_ttl_from_the_log_line() {
        let line = "2026-01-01T00:00:00.000Z  INFO rflink_ha_etcd: won the cluster leadership \
                    contender=jm session=ab lease_id=7 ttl=2s";
        assert_eq!(log_duration(line, "ttl"), Some(2000.0));
        assert_eq!(log_duration("lease_ttl=3s", "ttl"), None);
    }
}
