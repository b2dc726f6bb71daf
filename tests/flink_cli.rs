//! Flink's own command-line client (`bin/flink` of Apache Flink 2.3, a Java program) against a
//! cluster of real `rflink-node` processes: `flink list -m`, `flink savepoint -m` (a savepoint
//! that completes, to a `file:` URI, and one that fails) and `flink cancel -m`, each checked by
//! its output and through rflink's REST API.
//!
//! The CLI is not built here: `scripts/install-flink-cli` installs it (about 330 MB from PyPI),
//! and the test looks where that script puts it (see [`flink_launcher`]). Without it the test
//! fails with that advice, unless `RFLINK_SKIP_FLINK_CLI=1`, which makes it print SKIPPED and
//! pass. Each `flink` run starts two JVMs (about 3 s on an idle machine) and is killed past
//! [`FLINK_TIMEOUT`].

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::types::JobId;
use support::Cluster;

/// Every wait on the cluster: far above what each takes, so only a real hang fails.
const WAIT: Duration = Duration::from_secs(60);

/// One `flink` command, JVM start included, on a loaded machine.
const FLINK_TIMEOUT: Duration = Duration::from_secs(90);

/// The Flink version `scripts/install-flink-cli` installs.
const FLINK_VERSION: &str = support::FLINK_VERSION;

/// The `flink` launcher: `bin/flink` of the Flink installation [`support::find_flink_home`]
/// finds, where `scripts/install-flink-cli` puts it.
fn flink_launcher() -> Option<PathBuf> {
    support::find_flink_home().map(|home| home.join("bin/flink"))
}

/// Runs `flink args` (its logs under `log_dir`), killed past [`FLINK_TIMEOUT`]; returns (exit
/// code, stdout, stderr).
fn flink(launcher: &Path, args: &[&str], log_dir: &Path) -> (i32, String, String) {
    let started = Instant::now();
    let mut command = Command::new(launcher);
    command.args(args).env("FLINK_LOG_DIR", log_dir);
    let result = support::run_bounded(command, &format!("flink {args:?}"), FLINK_TIMEOUT);
    eprintln!(
        "flink {args:?}: exit {} in {:?}",
        result.0,
        started.elapsed()
    );
    result
}

/// Waits until the job completed a checkpoint (every task is running and checkpointing works,
/// so a savepoint can be taken).
async fn wait_for_a_checkpoint(cluster: &Cluster, job_id: JobId) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(Ok(stats)) = tokio::time::timeout(WAIT, cluster.rest.checkpoints(job_id)).await {
            if stats["counts"]["completed"].as_u64().unwrap_or(0) >= 1 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {job_id} completed no checkpoint within {WAIT:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `flink list`, `flink savepoint` and `flink cancel` of Flink 2.3, with `-m <rest address>`,
/// against a checkpointed streaming WordCount on 2 TaskManager processes.
#[actix_rt::test]
async fn flinks_cli_lists_savepoints_and_cancels_an_rflink_job() {
    let Some(launcher) = flink_launcher() else {
        if std::env::var("RFLINK_SKIP_FLINK_CLI").as_deref() == Ok("1") {
            eprintln!("SKIPPED: Flink's CLI is not installed and RFLINK_SKIP_FLINK_CLI=1");
            return;
        }
        panic!(
            "Flink's CLI (bin/flink of Flink {FLINK_VERSION}) was not found in $FLINK_HOME, \
             $RFLINK_TOOLS_DIR (default ~/.cache/rflink-tools) or python3's pyflink: run \
             scripts/install-test-tools (or scripts/install-flink-cli), or set FLINK_HOME; \
             RFLINK_SKIP_FLINK_CLI=1 skips this test"
        );
    };
    eprintln!("using {}", launcher.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("flink-log");
    let checkpoints = format!(
        "execution.checkpointing.dir={}",
        dir.path().join("checkpoints").display()
    );
    let cluster = Cluster::start(2, 2, &["-D", &checkpoints]);
    cluster.wait_for_task_managers(2, WAIT).await;
    let rest = cluster.jm.ready("rest");
    let out = dir.path().join("out").display().to_string();
    let job_id = cluster.submit_example(
        "streaming-wordcount",
        &[
            "--lines",
            "100000000",
            "--lines-per-second",
            "2000",
            "--parallelism",
            "2",
            "--checkpoint-interval",
            "500",
            "--output",
            &out,
        ],
        WAIT,
    );
    wait_for_a_checkpoint(&cluster, job_id).await;
    let name = cluster
        .rest
        .job_details(job_id)
        .await
        .expect("details")
        .name;
    let context = |what: &str, (code, stdout, stderr): &(i32, String, String)| {
        format!(
            "{what}: exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
            cluster.logs()
        )
    };

    // flink list: `<start time> : <job id> : <name> (RUNNING)` under the running jobs.
    let listed = flink(&launcher, &["list", "-m", &rest], &log_dir);
    assert_eq!(listed.0, 0, "{}", context("flink list", &listed));
    assert!(
        listed.1.contains("Running/Restarting Jobs")
            && listed
                .1
                .contains(&format!(" : {job_id} : {name} (RUNNING)")),
        "{}",
        context("flink list", &listed)
    );

    // flink savepoint to a file: URI: the printed path is a local directory with a _metadata.
    let savepoints = dir.path().join("savepoints");
    let target = format!("file://{}", savepoints.display());
    let job = job_id.to_string();
    let saved = flink(
        &launcher,
        &["savepoint", "-m", &rest, &job, &target],
        &log_dir,
    );
    assert_eq!(saved.0, 0, "{}", context("flink savepoint", &saved));
    let location = saved
        .1
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .unwrap_or_else(|| panic!("{}", context("no savepoint path", &saved)))
        .trim()
        .to_string();
    assert!(
        location.starts_with(&savepoints.display().to_string())
            && Path::new(&location).join("_metadata").is_file(),
        "{location} is a savepoint under {}\n{}",
        savepoints.display(),
        context("flink savepoint", &saved)
    );

    // A savepoint that fails (its directory cannot be created): the CLI reports the cause at
    // once instead of polling until its client timeout.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").expect("write");
    let bad_target = blocker.join("savepoints").display().to_string();
    let failed = flink(
        &launcher,
        &["savepoint", "-m", &rest, &job, &bad_target],
        &log_dir,
    );
    let failed_output = format!("{}{}", failed.1, failed.2);
    assert!(
        failed.0 != 0
            && failed_output.contains("CheckpointException")
            && failed_output.contains(&bad_target)
            && !failed_output.contains("TimeoutException"),
        "{}",
        context("flink savepoint to a bad directory", &failed)
    );
    assert_eq!(
        cluster.rest.job_status(job_id).await.expect("status"),
        JobStatus::Running,
        "a failed savepoint leaves the job running"
    );

    // flink cancel: the job reaches CANCELED.
    let cancelled = flink(&launcher, &["cancel", "-m", &rest, &job], &log_dir);
    assert!(
        cancelled.0 == 0 && cancelled.1.contains(&format!("Cancelled job {job_id}.")),
        "{}",
        context("flink cancel", &cancelled)
    );
    cluster
        .wait_for_job_status(job_id, |s| s == JobStatus::Canceled, Instant::now() + WAIT)
        .await;

    // flink list -a: the job among the terminated ones.
    let all = flink(&launcher, &["list", "-a", "-m", &rest], &log_dir);
    assert!(
        all.0 == 0
            && all.1.contains("Terminated Jobs")
            && all.1.contains(&format!(" : {job_id} : {name} (CANCELED)")),
        "{}",
        context("flink list -a", &all)
    );
}
