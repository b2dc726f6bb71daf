//! The data plane across OS processes: streaming jobs on a JobManager process and two
//! TaskManager processes (one slot each, so every keyBy shuffle crosses TCP between them),
//! submitted with the `rflink` CLI as a user would.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rflink_runtime::executiongraph::JobStatus;
use support::Cluster;

const WAIT: Duration = Duration::from_secs(60);

/// Runs the `wordcount` example on `cluster` with the `rflink` CLI over `text` (plus `extra`
/// program arguments), expects exit 0 and returns the parsed output file.
fn run_wordcount(cluster: &Cluster, text: &str, extra: &[&str]) -> BTreeMap<String, u64> {
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
    // As a user may type it: the JobManager option after the program's arguments.
    args.extend(["-m".to_string(), cluster.jm.ready("rest")]);
    let (code, stdout, stderr) = support::rflink_cli(&args, WAIT);
    assert_eq!(
        code,
        0,
        "stdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        cluster.logs()
    );
    let written = std::fs::read_to_string(&output).expect("the sink wrote its file");
    rflink_examples::parse_counts(&written).expect("`word count` lines")
}

async fn two_task_managers() -> Cluster {
    let cluster = Cluster::start(2, 1, &[]);
    cluster
        .wait_for_overview("2 task managers with a slot each", WAIT, |o| {
            o.taskmanagers == 2 && o.slots_total == 2
        })
        .await;
    cluster
}

/// WordCount submitted with `rflink run --example wordcount` runs on two TaskManager
/// processes (slots are spread over both, so the shuffle crosses TCP) at parallelism 1–4, and
/// its output equals the sequential reference.
#[actix_rt::test]
async fn wordcount_runs_across_two_task_manager_processes() {
    let cluster = Cluster::start(2, 2, &[]);
    cluster
        .wait_for_overview("2 task managers with 2 slots each", WAIT, |o| {
            o.taskmanagers == 2 && o.slots_total == 4
        })
        .await;
    for (seed, p) in [(1u64, 4u32), (2, 3), (3, 2), (4, 1)] {
        let text = rflink_examples::text::random_text(seed, 20_000);
        let got = run_wordcount(&cluster, &text, &["--parallelism", &p.to_string()]);
        assert_eq!(got, rflink_examples::count_words(&text), "parallelism {p}");
    }
}

/// A program the registry does not know, or bad program arguments, are usage errors of the
/// CLI (exit 2) and never reach the cluster.
#[actix_rt::test]
async fn bad_program_arguments_are_usage_errors() {
    let cluster = two_task_managers().await;
    for args in [
        vec!["--example", "no-such-job"],
        vec!["--example", "wordcount", "--parallelism", "zero"],
        vec!["--example", "wordcount", "--frobnicate"],
    ] {
        let mut all: Vec<String> = vec!["-m".into(), cluster.jm.ready("rest"), "run".into()];
        all.extend(args.iter().map(|s| s.to_string()));
        let (code, _, stderr) = support::rflink_cli(&all, WAIT);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("cannot build"), "{stderr}");
    }
    let jobs = cluster.rest.job_ids().await.expect("jobs");
    assert!(jobs.is_empty(), "nothing was submitted: {jobs:?}");
}

/// Garbage sent to a TaskManager's data port closes only that connection: the TaskManager
/// stays up and the next job runs across both TaskManagers.
#[actix_rt::test]
async fn garbage_on_the_data_port_leaves_the_task_manager_serving() {
    let cluster = two_task_managers().await;
    for tm in &cluster.tms {
        let address = tm.ready("data");
        assert!(!address.is_empty(), "the ready line names the data server");
        let mut socket = std::net::TcpStream::connect(&address).expect("connects");
        socket.set_read_timeout(Some(WAIT)).expect("read timeout");
        let _ = socket.write_all(b"GET / HTTP/1.1\r\n\r\n\xff\xff\xff\xff\x00\x01garbage");
        // The server answers with its preamble and/or an error, then closes: read to EOF.
        let mut sink = Vec::new();
        let _ = socket.read_to_end(&mut sink);
    }
    let got = run_wordcount(
        &cluster,
        "one two two\nthree three three\n",
        &["--parallelism", "2"],
    );
    let expected: BTreeMap<String, u64> = [("one", 1), ("two", 2), ("three", 3)]
        .map(|(w, n)| (w.to_string(), n))
        .into();
    assert_eq!(got, expected);
}

/// SIGKILL of a TaskManager while an unbounded job shuffles across both: the job fails (there
/// are no restarts yet) with an error, the surviving TaskManager stays up, frees its slot and
/// runs the next job.
#[actix_rt::test]
async fn losing_a_task_manager_fails_the_streaming_job_and_the_other_keeps_serving() {
    let mut cluster = two_task_managers().await;
    let job_id = cluster.submit_example("sequence-sum", &["--parallelism", "2"], WAIT);
    cluster.wait_for_running_tasks(job_id, 4, WAIT).await;
    cluster.tms[1].kill();
    let deadline = Instant::now() + WAIT;
    let status = cluster
        .rest
        .wait_for_status(job_id, JobStatus::is_terminal, deadline)
        .await
        .expect("terminal");
    assert_eq!(status, JobStatus::Failed, "{}", cluster.logs());
    let exceptions = cluster
        .rest
        .job_exceptions(job_id)
        .await
        .expect("exceptions");
    let root = exceptions
        .exception_history
        .entries
        .first()
        .unwrap_or_else(|| panic!("the failure is reported: {exceptions:?}"));
    eprintln!("the job failed with: {}", root.stacktrace);
    cluster
        .wait_for_overview("one task manager with its slot free", WAIT, |o| {
            o.taskmanagers == 1 && o.slots_available == 1
        })
        .await;
    let got = run_wordcount(&cluster, "still here\n", &[]);
    assert_eq!(got.len(), 2);
}
