//! The compose suite: the `docker-compose.yml` cluster (one JobManager, two TaskManagers) on the
//! image `scripts/docker-build` makes, driven from the host as a user would: WordCount through
//! the `rflink` CLI against the published REST port, the output read back from the shared
//! volume and compared with the sequential reference; then a TaskManager container killed and
//! another cut off the compose network, each noticed by the JobManager.
//!
//! Needs a reachable Docker engine and `docker compose` (or `docker-compose`). Without them, or
//! with `RFLINK_SKIP_DOCKER=1`, it prints `SKIPPED: compose suite: <reason>` and passes
//! (`scripts/test` says up front whether it will run). Every step is bounded; the REST port is
//! an ephemeral one; the compose project has a unique name and is always taken down with its
//! volume (`down -v`), by a drop guard on failure and on SIGTERM (nextest's timeout).

#[path = "support/compose.rs"]
mod compose_support;
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use compose_support::{
    build_images, compose_program, docker, down_on_sigterm, rest_client, run, secrets_dir, skip,
    submit_streaming_wordcount, wait_for_a_checkpoint, wait_for_end, Project, DOCKER_DEADLINE,
    JOB_DEADLINE,
};
use rflink_runtime::rest::client::RestClient;

/// The cluster up and healthy, both TaskManagers registered.
const UP_DEADLINE: Duration = Duration::from_secs(90);
/// A lost TaskManager is noticed: heartbeat.timeout (5 s by default) plus a margin.
const LOSS_DEADLINE: Duration = Duration::from_secs(20);

/// The compose cluster is secure by default: plaintext HTTP gets no answer, a mutation without
/// the token is refused and changes nothing, the nodes run mutual TLS with the secret, a rogue
/// TaskManager on the compose network without them cannot join, and the secret shows nowhere.
async fn check_security(project: &Project, rest: &RestClient, cluster_secret: &str) {
    let address = format!("127.0.0.1:{}", project.rest_port());
    let plain = RestClient::with_timeout(address.clone(), Duration::from_secs(5));
    if plain.overview().await.is_ok() {
        project.fail("the REST port answered plaintext HTTP");
    }
    let ca = secrets_dir().join("ca.pem");
    let anonymous = RestClient::builder(address)
        .tls(rflink_rpc::security::rest_client_config(&ca).expect("the CA"))
        .build()
        .expect("a REST client");
    // Reads are open; a cancel without the token is a 401.
    let before = anonymous.overview().await.expect("reads need no token");
    match anonymous
        .cancel_job(rflink_runtime::types::JobId::generate())
        .await
    {
        Err(err) if err.is_unauthorized() => {}
        other => project.fail(&format!("a cancel without the token: {other:?}")),
    }
    let after = rest.overview().await.expect("overview");
    assert_eq!(
        (before.jobs_running, before.jobs_cancelled),
        (after.jobs_running, after.jobs_cancelled)
    );
    // Every node secures its transports.
    let logs = project.logs();
    assert!(
        logs.contains("mutual TLS + cluster secret"),
        "no node reports its security mode:\n{logs}"
    );
    // /jobmanager/config lists the keys, never the secret or the token.
    let config = rest
        .get_json("/jobmanager/config")
        .await
        .expect("/jobmanager/config")
        .to_string();
    assert!(
        config.contains("security.ssl.internal.enabled") && !config.contains(cluster_secret),
        "{config}"
    );

    // A rogue TaskManager on the compose network, without TLS or the secret.
    let jobmanager = project.containers("jobmanager");
    let Some(jobmanager) = jobmanager.first() else {
        project.fail("no jobmanager container");
    };
    let networks = project.inspect(
        jobmanager,
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
    );
    let Some(network) = networks.split_whitespace().next() else {
        project.fail(&format!("{jobmanager} is on no network"));
    };
    let rogue = format!("{}-rogue", project.name);
    let image = project.image.clone();
    project.docker(&[
        "run",
        "-d",
        "--name",
        &rogue,
        "--network",
        network,
        &image,
        "--role",
        "tm",
        "--jobmanager",
        "jobmanager:6123",
        "--advertised-host-from-hostname",
        "-D",
        "taskmanager.bind-host=0.0.0.0",
    ]);
    let deadline = Instant::now() + UP_DEADLINE;
    let refused = loop {
        let jm_logs = project.compose(&["logs", "--no-color", "jobmanager"]);
        if jm_logs.contains("did not start the cluster-secret handshake")
            || jm_logs.contains("does not speak TLS")
        {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rogue_logs = run(docker(&["logs", &rogue]), DOCKER_DEADLINE).describe();
    let overview = rest.overview().await.expect("overview");
    let _ = run(docker(&["rm", "-f", &rogue]), Duration::from_secs(30));
    if !refused || overview.taskmanagers != 2 {
        project.fail(&format!(
            "a rogue TaskManager was not refused ({overview:?}):\n{rogue_logs}"
        ));
    }
    let logs = project.logs();
    if logs.contains(cluster_secret) {
        project.fail("the cluster secret appears in the logs");
    }
    eprintln!("compose suite: secured (HTTPS, token, mutual TLS + secret; a rogue TaskManager was refused)");
}

#[actix_rt::test]
async fn wordcount_on_docker_compose_and_task_manager_loss() {
    let program = match compose_program() {
        Ok(program) => program,
        Err(reason) => return skip(&reason),
    };
    let image = std::env::var("RFLINK_IMAGE").unwrap_or_else(|_| "rflink:local".into());

    // The image, from this checkout.
    build_images(&image);

    let project = Project::new(program, image, &["docker-compose.yml"]);
    down_on_sigterm(&project);
    project.compose(&["up", "-d"]);
    let rest_port = project.discover_rest_port();
    eprintln!(
        "compose suite: project {}, REST on 127.0.0.1:{rest_port}",
        project.name
    );
    // Secure by default: HTTPS with the generated CA, and the bearer token.
    let secrets = secrets_dir();
    let cluster_secret =
        std::fs::read_to_string(secrets.join("cluster-secret")).expect("the cluster secret");
    let rest = rest_client(rest_port);
    let overview = project
        .wait_for_overview(&rest, "2 TaskManagers registered", UP_DEADLINE, |o| {
            o.taskmanagers == 2
        })
        .await;
    assert_eq!(overview.slots_total, 4, "2 slots per TaskManager");
    // Both probes work: the JobManager's REST one (over HTTPS) and the TaskManagers' TCP one.
    project.wait_healthy(3, UP_DEADLINE).await;
    check_security(&project, &rest, cluster_secret.trim()).await;

    // WordCount at parallelism 4: all 4 slots, so both TaskManagers run tasks and the keyBy
    // shuffle crosses containers (each dialing the other's advertised host name). Input and
    // output are in the shared volume.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(7);
    let text = rflink_examples::text::random_text(seed, 2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let input: PathBuf = dir.path().join("words.txt");
    std::fs::write(&input, &text).expect("write the input");
    let jobmanager = project.containers("jobmanager");
    let [jobmanager] = jobmanager.as_slice() else {
        project.fail(&format!(
            "one jobmanager container expected: {jobmanager:?}"
        ));
    };
    project.docker(&[
        "cp",
        &input.display().to_string(),
        &format!("{jobmanager}:/data/words.txt"),
    ]);
    let secrets = secrets_dir();
    let args: Vec<String> = [
        "-m",
        &format!("127.0.0.1:{}", project.rest_port()),
        "--rest-ca",
        &secrets.join("ca.pem").display().to_string(),
        "--token-file",
        &secrets.join("rest-token").display().to_string(),
        "run",
        "--example",
        "wordcount",
        "--input",
        "/data/words.txt",
        "--output",
        "/data/counts.txt",
        "--parallelism",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, stdout, stderr) = support::rflink_cli(&args, JOB_DEADLINE);
    if code != 0 {
        project.fail(&format!(
            "rflink {args:?}: exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ));
    }
    // Written by a TaskManager, read through the JobManager's mount of the same volume.
    let output = dir.path().join("counts.txt");
    project.docker(&[
        "cp",
        &format!("{jobmanager}:/data/counts.txt"),
        &output.display().to_string(),
    ]);
    let written = std::fs::read_to_string(&output).expect("the copied output");
    let counts = rflink_examples::parse_counts(&written).expect("`word count` lines");
    let expected = rflink_examples::count_words(&text);
    if counts != expected {
        project.fail(&format!(
            "WordCount on compose differs from the sequential reference (seed {seed}):\n\
             got {counts:?}\nexpected {expected:?}"
        ));
    }
    eprintln!(
        "compose suite: WordCount matched the reference ({} words, {} distinct, seed {seed})",
        expected.values().sum::<u64>(),
        expected.len()
    );

    // Monitoring through the published REST port: the JobManager's Prometheus text, and each
    // TaskManager's advertised metrics endpoint (inside the compose network) and metrics.
    let (status, text) = rest.get_text("/metrics").await.expect("scrape");
    assert_eq!(status, 200, "{text}");
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| {
            project.fail(&format!(
                "the JobManager's /metrics: {e}
{text}"
            ))
        });
    assert!(
        parsed
            .samples
            .iter()
            .any(|s| s.metric == "flink_jobmanager_numRegisteredTaskManagers"),
        "{text}"
    );
    for tm in rest.taskmanagers().await.expect("taskmanagers") {
        let advertised = tm.metrics_address.clone().unwrap_or_default();
        assert!(advertised.ends_with(":9249"), "{tm:?}");
        let metrics = rest
            .get_json(&format!(
                "/taskmanagers/{}/metrics?get=Status.Shuffle.Netty.TotalMemorySegments",
                tm.id
            ))
            .await
            .expect("taskmanager metrics");
        assert_eq!(
            metrics[0]["id"], "Status.Shuffle.Netty.TotalMemorySegments",
            "{metrics}"
        );
    }
    // Compose logs in JSON (RFLINK_LOG_FORMAT, json by default there): one object per line.
    let logs = project.compose(&["logs", "--no-color", "jobmanager"]);
    let json_lines = logs
        .lines()
        .filter_map(|l| l.split_once("| ").map(|(_, rest)| rest))
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["level"].is_string())
        })
        .count();
    assert!(json_lines > 0, "no JSON log lines:\n{logs}");

    // Checkpointed streaming WordCounts (exactly-once part files, checkpoints on the shared
    // volume) on both TaskManagers, trial after trial: a TaskManager container is killed after a
    // checkpoint completed, the job restarts on the other's spare slots from that checkpoint,
    // the committed output must be exactly the sequential reference, and compose brings the
    // killed TaskManager back for the next trial. Every trial must be exact.
    let trials: u64 = std::env::var("RFLINK_COMPOSE_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(10);
    let lines = 6000u64;
    let mut exact = 0;
    for trial in 0..trials {
        let stream_seed = seed % 1000 + trial;
        let out_dir = format!("/data/stream-out-{trial}");
        let job_id = submit_streaming_wordcount(
            &project,
            project.rest_port(),
            lines,
            stream_seed,
            &out_dir,
            &[],
        );
        wait_for_a_checkpoint(&project, &rest, job_id).await;
        let running = project.running_containers("taskmanager");
        let Some(victim) = running.get(trial as usize % running.len().max(1)) else {
            project.fail(&format!("no running taskmanager container: {running:?}"));
        };
        let killed_at = Instant::now();
        project.docker(&["kill", victim]);
        project
            .wait_for_overview(
                &rest,
                "1 TaskManager after docker kill",
                LOSS_DEADLINE,
                |o| o.taskmanagers == 1,
            )
            .await;
        let noticed = killed_at.elapsed();
        let finished = wait_for_end(&project, &rest, job_id).await;
        if finished != rflink_runtime::executiongraph::JobStatus::Finished {
            project.fail(&format!(
                "trial {trial}: the streaming job ended {finished}"
            ));
        }
        let took = killed_at.elapsed();
        let stream_out = dir.path().join(format!("stream-out-{trial}"));
        project.docker(&[
            "cp",
            &format!("{jobmanager}:{out_dir}"),
            &stream_out.display().to_string(),
        ]);
        let committed = rflink::sinks::read_committed_parts(&stream_out).expect("committed parts");
        let mut got: Vec<String> = committed.lines().map(str::to_string).collect();
        got.sort();
        let expected = rflink_examples::streaming_reference(&rflink_examples::generated_text(
            stream_seed,
            lines,
        ));
        if got != expected {
            project.fail(&format!(
                "trial {trial}: the checkpointed WordCount on compose is not exact after a \
                 TaskManager loss: {} lines, {} expected (seed {stream_seed})",
                got.len(),
                expected.len()
            ));
        }
        exact += 1;
        eprintln!(
            "compose suite: trial {trial}: kill noticed after {noticed:?}, job FINISHED {took:?} \
             after the kill, output exact ({} lines)",
            expected.len()
        );
        // The killed TaskManager comes back (compose starts the stopped container again).
        project.compose(&["up", "-d", "--scale", "taskmanager=2"]);
        project
            .wait_for_overview(&rest, "2 TaskManagers again", UP_DEADLINE, |o| {
                o.taskmanagers == 2 && o.slots_available == 4
            })
            .await;
    }
    assert_eq!(exact, trials, "every trial's committed output is exact");

    // A TaskManager container killed: its connection drops, or at the latest its heartbeat
    // times out.
    let task_managers = project.running_containers("taskmanager");
    let [first, second] = task_managers.as_slice() else {
        project.fail(&format!(
            "two running taskmanager containers expected: {task_managers:?}"
        ));
    };
    let killed_at = Instant::now();
    project.docker(&["kill", first]);
    project
        .wait_for_overview(
            &rest,
            "1 TaskManager after docker kill",
            LOSS_DEADLINE,
            |o| o.taskmanagers == 1,
        )
        .await;
    eprintln!(
        "compose suite: docker kill noticed after {:?}",
        killed_at.elapsed()
    );

    // The other one cut off the compose network: a silent loss, found by the heartbeat timeout.
    let networks = project.inspect(
        second,
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
    );
    let network = networks.split_whitespace().next().unwrap_or_default();
    if network.is_empty() {
        project.fail(&format!("{second} is on no network"));
    }
    let cut_at = Instant::now();
    project.docker(&["network", "disconnect", network, second]);
    project
        .wait_for_overview(
            &rest,
            "0 TaskManagers after docker network disconnect",
            LOSS_DEADLINE,
            |o| o.taskmanagers == 0,
        )
        .await;
    eprintln!(
        "compose suite: network disconnect noticed after {:?}",
        cut_at.elapsed()
    );
    println!("compose suite: passed (project {})", project.name);
}
