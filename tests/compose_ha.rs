//! The compose suite of high availability: `docker-compose.yml` with `docker-compose.ha.yml`
//! (etcd, a second JobManager, every node on `high-availability.type: etcd`) on the images
//! `scripts/docker-build` makes. One JobManager leads (REST 200) and the other stands by (503);
//! a checkpointed streaming WordCount is submitted to the leader; after a completed checkpoint
//! the leader's container is `docker kill`ed; the standby takes over (its REST answers 200), the
//! job resumes from the checkpoint on the TaskManagers (which follow the leader through etcd)
//! and finishes, and its committed output equals the sequential reference line for line.
//!
//! Needs a reachable Docker engine and `docker compose` (or `docker-compose`); without them, or
//! with `RFLINK_SKIP_DOCKER=1`, it prints `SKIPPED: compose suite: <reason>` and passes. Every
//! step is bounded; the REST ports are ephemeral; the project has a unique name and is always
//! taken down with its volumes (`down -v`), on failure and on SIGTERM (nextest's timeout) too.

#[path = "support/compose.rs"]
mod compose_support;
mod support;

use std::time::{Duration, Instant};

use compose_support::{
    build_images, compose_program, down_on_sigterm, rest_client, skip, submit_streaming_wordcount,
    wait_for_a_checkpoint, wait_for_end, Project,
};
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::rest::client::RestClient;

/// The cluster up: a leader with both TaskManagers, the other JobManager standing by.
const UP_DEADLINE: Duration = Duration::from_secs(90);
/// The standby leads after the kill: the lease TTL (5 s in docker-compose.ha.yml) plus a margin.
const TAKEOVER_DEADLINE: Duration = Duration::from_secs(60);
/// The JobManager services of the HA setup.
const JOBMANAGERS: [&str; 2] = ["jobmanager", "jobmanager-standby"];
/// Lines of the streaming job: about 4 s at 1000 lines/s per source subtask, so it still runs
/// when the leader is killed.
const LINES: u64 = 8000;

/// `GET /overview` of one JobManager: its status code, or `None` if it did not answer.
async fn overview_status(rest: &RestClient) -> Option<u16> {
    match tokio::time::timeout(Duration::from_secs(10), rest.get_text("/overview")).await {
        Ok(Ok((status, _))) => Some(status),
        _ => None,
    }
}

/// Waits until exactly one JobManager leads (200, with both TaskManagers registered) and the
/// other stands by (503); the leader's index in [`JOBMANAGERS`].
async fn wait_for_leader(project: &Project, rests: &[RestClient; 2]) -> usize {
    let deadline = Instant::now() + UP_DEADLINE;
    loop {
        let mut statuses = Vec::with_capacity(2);
        for rest in rests {
            statuses.push(overview_status(rest).await);
        }
        let leader = match statuses.as_slice() {
            [Some(200), Some(503)] => Some(0),
            [Some(503), Some(200)] => Some(1),
            _ => None,
        };
        if let Some(leader) = leader {
            if let Ok(o) = rests[leader].overview().await {
                if o.taskmanagers == 2 && o.slots_available == 4 {
                    return leader;
                }
            }
        }
        if Instant::now() >= deadline {
            project.fail(&format!(
                "no JobManager led with 2 TaskManagers and a standby within {UP_DEADLINE:?} \
                 (/overview statuses {statuses:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_rt::test]
async fn the_standby_jobmanager_takes_over_a_checkpointed_job_on_compose() {
    let program = match compose_program() {
        Ok(program) => program,
        Err(reason) => return skip(&reason),
    };
    let image = std::env::var("RFLINK_IMAGE").unwrap_or_else(|_| "rflink:local".into());
    build_images(&image);

    let project = Project::new(
        program,
        image,
        &["docker-compose.yml", "docker-compose.ha.yml"],
    );
    down_on_sigterm(&project);
    project.compose(&["up", "-d"]);
    let ports = JOBMANAGERS.map(|service| project.published_rest_port(service));
    eprintln!(
        "compose HA suite: project {}, REST of {} on 127.0.0.1:{} and {} on 127.0.0.1:{}",
        project.name, JOBMANAGERS[0], ports[0], JOBMANAGERS[1], ports[1]
    );
    let rests = ports.map(rest_client);
    let leader = wait_for_leader(&project, &rests).await;
    let standby = 1 - leader;
    // etcd, both JobManagers and both TaskManagers pass their health checks (a standby too).
    project.wait_healthy(5, UP_DEADLINE).await;

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 10_000)
        .unwrap_or(7);
    let out_dir = "/data/ha-stream-out";
    let job_id = submit_streaming_wordcount(
        &project,
        ports[leader],
        LINES,
        seed,
        out_dir,
        &["--checkpoint-interval", "300"],
    );
    wait_for_a_checkpoint(&project, &rests[leader], job_id).await;
    if overview_status(&rests[standby]).await != Some(503) {
        project.fail("the standby did not answer 503 while the leader lived");
    }

    let containers = project.containers(JOBMANAGERS[leader]);
    let [victim] = containers.as_slice() else {
        project.fail(&format!(
            "one {} container expected: {containers:?}",
            JOBMANAGERS[leader]
        ));
    };
    let killed_at = Instant::now();
    project.docker(&["kill", victim]);
    let deadline = killed_at + TAKEOVER_DEADLINE;
    while overview_status(&rests[standby]).await != Some(200) {
        if Instant::now() >= deadline {
            project.fail(&format!(
                "{} did not lead within {TAKEOVER_DEADLINE:?} of the kill",
                JOBMANAGERS[standby]
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took_over = killed_at.elapsed();
    let finished = wait_for_end(&project, &rests[standby], job_id).await;
    if finished != JobStatus::Finished {
        project.fail(&format!("the job ended {finished} under the new leader"));
    }
    let logs = project.compose(&["logs", "--no-color", JOBMANAGERS[standby]]);
    if !logs.contains("recovering the job from its latest completed checkpoint") {
        project.fail("the new leader did not resume the job from its checkpoint");
    }

    // The committed output, read through the new leader's mount of the shared volume.
    let containers = project.containers(JOBMANAGERS[standby]);
    let [survivor] = containers.as_slice() else {
        project.fail(&format!(
            "one {} container expected: {containers:?}",
            JOBMANAGERS[standby]
        ));
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let copied = dir.path().join("out");
    project.docker(&[
        "cp",
        &format!("{survivor}:{out_dir}"),
        &copied.display().to_string(),
    ]);
    let committed = rflink::sinks::read_committed_parts(&copied).expect("committed parts");
    let mut got: Vec<String> = committed.lines().map(str::to_string).collect();
    got.sort();
    let expected =
        rflink_examples::streaming_reference(&rflink_examples::generated_text(seed, LINES));
    if got != expected {
        let first = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        project.fail(&format!(
            "the output after the JobManager failover differs from the reference (seed {seed}): \
             {} lines vs {} expected; first difference at {first}: got {:?}, expected {:?}",
            got.len(),
            expected.len(),
            got.get(first),
            expected.get(first)
        ));
    }
    eprintln!(
        "compose HA suite: {} killed; {} led after {took_over:?}; job FINISHED {:?} after the \
         kill; output exact ({} lines)",
        JOBMANAGERS[leader],
        JOBMANAGERS[standby],
        killed_at.elapsed(),
        expected.len()
    );
    let down = project.down();
    assert!(down.ok(), "down -v: {}", down.describe());
    println!("compose HA suite: passed (project {})", project.name);
}
