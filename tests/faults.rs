//! Fault injection on a cluster of real `rflink-node` processes (the harness in
//! `tests/support/`): TaskManagers killed, frozen, partitioned from the JobManager by a TCP
//! proxy, and a JobManager restarted, each with short heartbeats so detection takes seconds.
//! Every wait has a deadline; measured detection times are printed (`--nocapture`), and only the
//! deadlines are asserted.

mod support;

use std::time::{Duration, Instant};

use rflink_runtime::executiongraph::JobStatus;
use support::proxy::Direction;
use support::{Cluster, ClusterOptions};

/// Every step's deadline: far above what each takes, so only a real hang fails.
const WAIT: Duration = Duration::from_secs(60);
/// The heartbeat timeout the clusters below run with.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// Short heartbeats and registration retries, so faults are noticed and healed in seconds.
const FAST: &[&str] = &[
    "-D",
    "heartbeat.interval=200 ms",
    "-D",
    "heartbeat.timeout=2 s",
    "-D",
    "cluster.registration.max-timeout=2 s",
    "-D",
    "cluster.registration.error-delay=200 ms",
    "-D",
    "cluster.registration.refused-registration-delay=200 ms",
    // A slot whose JobMaster was lost is kept this long for a new leader before it is freed
    // (Flink's inactive-slot timeout; 10 s by default).
    "-D",
    "taskmanager.slot.timeout=3 s",
];

async fn started(options: ClusterOptions) -> Cluster {
    let n = u32::try_from(options.task_managers).expect("a few task managers");
    let slots = options.slots;
    let cluster = Cluster::start_with(options);
    cluster
        .wait_for_overview("every task manager registered", WAIT, |o| {
            o.taskmanagers == n && o.slots_total == n * slots
        })
        .await;
    cluster
}

/// An unbounded job (`sequence-sum`, parallelism 2) running on both TaskManagers (1 slot each):
/// returns its id once its 4 tasks run.
async fn running_unbounded_job(cluster: &Cluster) -> rflink_runtime::types::JobId {
    let job_id = cluster.submit_example("sequence-sum", &["--parallelism", "2"], WAIT);
    cluster.wait_for_running_tasks(job_id, 4, WAIT).await;
    job_id
}

/// Waits for the job to leave RUNNING and then to be FAILED (no restart strategies yet);
/// returns how long leaving RUNNING took from `since`.
async fn job_fails(
    cluster: &Cluster,
    job_id: rflink_runtime::types::JobId,
    since: Instant,
) -> Duration {
    let left = cluster
        .wait_for_job_status(job_id, |s| s != JobStatus::Running, Instant::now() + WAIT)
        .await;
    let took = since.elapsed();
    assert!(
        matches!(left, JobStatus::Failing | JobStatus::Failed),
        "the job left RUNNING for {left}\n{}",
        cluster.logs()
    );
    let end = cluster
        .wait_for_job_status(job_id, JobStatus::is_terminal, Instant::now() + WAIT)
        .await;
    assert_eq!(end, JobStatus::Failed, "{}", cluster.logs());
    let exceptions = cluster
        .rest
        .job_exceptions(job_id)
        .await
        .expect("exceptions");
    let text = format!("{exceptions:?}");
    assert!(
        text.contains("TaskManagerLost") || text.contains("was lost"),
        "the failure names the lost task manager: {exceptions:?}"
    );
    took
}

fn reference_check(cluster: &Cluster, seed: u64, parallelism: u32) {
    let text = rflink_examples::text::random_text(seed, 20_000);
    let got = cluster.run_wordcount(&text, &["--parallelism", &parallelism.to_string()], WAIT);
    assert_eq!(
        got,
        rflink_examples::count_words(&text),
        "parallelism {parallelism}\n{}",
        cluster.logs()
    );
}

/// WordCount on 1 JobManager + 2 TaskManager processes (1 slot each, so the keyBy shuffle
/// crosses TCP) equals the sequential reference.
#[actix_rt::test]
async fn wordcount_on_two_task_managers_equals_the_reference() {
    let cluster = started(ClusterOptions::new(2, 1, FAST)).await;
    reference_check(&cluster, 11, 2);
}

/// The same with every RPC and data connection through a proxy: the proxies carry the traffic
/// (what each one forwarded is printed: the TaskManagers dial the JobManager first, so
/// JobManager → TaskManager calls ride those connections and the TaskManagers' own RPC proxies
/// may carry nothing).
#[actix_rt::test]
async fn wordcount_through_proxies_equals_the_reference() {
    let cluster = started(
        ClusterOptions::new(2, 1, FAST)
            .with_rpc_proxies()
            .with_data_proxies(),
    )
    .await;
    reference_check(&cluster, 12, 2);
    let jm_proxy = cluster.jm_proxy.as_ref().expect("a jobmanager proxy");
    eprintln!("{jm_proxy:?}");
    assert!(jm_proxy.bytes(Direction::ToTarget) > 0, "{jm_proxy:?}");
    assert!(jm_proxy.bytes(Direction::FromTarget) > 0, "{jm_proxy:?}");
    for proxies in &cluster.tm_proxies {
        let rpc = proxies.rpc.as_ref().expect("an rpc proxy");
        let data = proxies.data.as_ref().expect("a data proxy");
        eprintln!("{rpc:?}\n{data:?}");
        // Each TaskManager's data server served the other's consumer.
        assert!(data.bytes(Direction::FromTarget) > 0, "{data:?}");
    }
}

/// A TaskManager SIGKILLed while an unbounded job runs on both: it leaves `/overview` and the
/// job fails, both well within the deadline (the connection loss is seen at once; the heartbeat
/// timeout is the bound).
#[actix_rt::test]
async fn a_sigkilled_task_manager_is_detected_and_the_job_fails() {
    let mut cluster = started(ClusterOptions::new(2, 1, FAST)).await;
    let job_id = running_unbounded_job(&cluster).await;
    let killed = Instant::now();
    cluster.tms[1].kill();
    cluster.wait_for_task_managers(1, WAIT).await;
    let detected = killed.elapsed();
    let failed = job_fails(&cluster, job_id, killed).await;
    eprintln!(
        "SIGKILL: task manager gone from /overview after {detected:?}, job left RUNNING after \
         {failed:?} (heartbeat timeout {HEARTBEAT_TIMEOUT:?})"
    );
    // The survivor serves the next job.
    cluster
        .wait_for_overview("the survivor's slot free", WAIT, |o| o.slots_available == 1)
        .await;
    reference_check(&cluster, 13, 1);
}

/// A TaskManager frozen with SIGSTOP keeps its connections open: only the heartbeat timeout can
/// notice it. The job fails; after SIGCONT the TaskManager registers again.
#[actix_rt::test]
async fn a_frozen_task_manager_is_detected_by_heartbeat_and_rejoins_after_sigcont() {
    let cluster = started(ClusterOptions::new(2, 1, FAST)).await;
    let job_id = running_unbounded_job(&cluster).await;
    let stopped = Instant::now();
    cluster.tms[1].stop();
    cluster.wait_for_task_managers(1, WAIT).await;
    let detected = stopped.elapsed();
    let failed = job_fails(&cluster, job_id, stopped).await;
    cluster.tms[1].cont();
    let resumed = Instant::now();
    cluster.wait_for_task_managers(2, WAIT).await;
    let rejoined = resumed.elapsed();
    eprintln!(
        "SIGSTOP: task manager gone after {detected:?} (heartbeat timeout {HEARTBEAT_TIMEOUT:?}), \
         job left RUNNING after {failed:?}; registered again {rejoined:?} after SIGCONT"
    );
    assert!(
        detected >= HEARTBEAT_TIMEOUT / 2,
        "a frozen process has no connection to lose: detection after {detected:?} cannot have \
         been the heartbeat timeout\n{}",
        cluster.logs()
    );
    // Both TaskManagers serve the next job once their slots are free again.
    let since = Instant::now();
    cluster
        .wait_for_overview("both slots free", WAIT, |o| o.slots_available == 2)
        .await;
    eprintln!("SIGSTOP: both slots free {:?} later", since.elapsed());
    reference_check(&cluster, 14, 2);
}

/// A TaskManager cut off the JobManager by the proxies (blackholed both ways: silence, no
/// reset) is detected by the heartbeat timeout and the job fails; the other TaskManager stays;
/// after `heal` the cut one registers again.
#[actix_rt::test]
async fn a_partitioned_task_manager_is_detected_and_rejoins_after_healing() {
    let cluster = started(ClusterOptions::new(2, 1, FAST).with_rpc_proxies()).await;
    let job_id = running_unbounded_job(&cluster).await;
    let cut = Instant::now();
    cluster.partition_task_manager(1);
    let overview = cluster.wait_for_task_managers(1, WAIT).await;
    let detected = cut.elapsed();
    let failed = job_fails(&cluster, job_id, cut).await;
    let tms = cluster.rest.taskmanagers().await.expect("taskmanagers");
    assert_eq!(
        tms.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        vec![cluster.tms[0].ready("resource_id")],
        "the task manager left is the one not cut ({overview:?})\n{}",
        cluster.logs()
    );
    // The cut is complete: no route around the proxies lets it register again meanwhile
    // (its own heartbeat of the ResourceManager expires and it retries, through the blackhole).
    cluster
        .assert_overview_holds(
            "the partitioned task manager stays away",
            HEARTBEAT_TIMEOUT * 2,
            |o| o.taskmanagers == 1,
        )
        .await;
    assert!(
        cluster.tms[1]
            .logs()
            .contains("reconnecting to the resource manager"),
        "the cut task manager noticed and retried\n{}",
        cluster.logs()
    );
    cluster.heal_task_manager(1);
    let healed = Instant::now();
    cluster.wait_for_task_managers(2, WAIT).await;
    let rejoined = healed.elapsed();
    eprintln!(
        "partition: task manager gone after {detected:?} (heartbeat timeout \
         {HEARTBEAT_TIMEOUT:?}), job left RUNNING after {failed:?}; registered again \
         {rejoined:?} after healing"
    );
    let since = Instant::now();
    cluster
        .wait_for_overview("both slots free", WAIT, |o| o.slots_available == 2)
        .await;
    eprintln!("partition: both slots free {:?} later", since.elapsed());
    reference_check(&cluster, 15, 2);
}

/// The JobManager killed and started again on the same ports while the TaskManagers run: they
/// notice, retry their registration until it is back, register again, and a new WordCount runs.
#[actix_rt::test]
async fn task_managers_rejoin_a_restarted_job_manager() {
    let mut cluster = started(ClusterOptions::new(2, 1, FAST)).await;
    reference_check(&cluster, 16, 2);
    let restarted = Instant::now();
    cluster.restart_jobmanager();
    let up = restarted.elapsed();
    cluster.wait_for_task_managers(2, WAIT).await;
    let rejoined = restarted.elapsed();
    eprintln!(
        "JobManager restart: ready again after {up:?}, both task managers registered after \
         {rejoined:?}"
    );
    cluster
        .wait_for_overview("both slots free", WAIT, |o| o.slots_available == 2)
        .await;
    reference_check(&cluster, 17, 2);
}

/// The proxy itself, against an echo server: forwarding and byte counts, delay, a stalled
/// direction, blackhole (new connections too), isolate (only the matching connection), reset
/// (existing closed, new refused), and heal after each.
#[test]
fn the_proxy_forwards_stalls_blackholes_resets_and_heals() {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use support::proxy::Proxy;

    let echo = TcpListener::bind("127.0.0.1:0").expect("bind");
    let echo_address = echo.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in echo.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let proxy = Proxy::start("echo", Some(echo_address));
    let connect = || {
        let s = TcpStream::connect(proxy.address()).expect("connects to the proxy");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s
    };
    let expect_echo = |s: &mut TcpStream, what: &[u8]| {
        let mut got = vec![0u8; what.len()];
        s.read_exact(&mut got).expect("the echo comes back");
        assert_eq!(got, what);
    };
    let expect_silence = |s: &mut TcpStream, period: Duration| {
        s.set_read_timeout(Some(period)).expect("timeout");
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?}"),
        }
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    };

    let mut a = connect();
    a.write_all(b"hello").expect("write");
    expect_echo(&mut a, b"hello");
    assert_eq!(proxy.bytes(Direction::ToTarget), 5);
    assert_eq!(proxy.bytes(Direction::FromTarget), 5);

    proxy.delay(Duration::from_millis(300));
    let sent = Instant::now();
    a.write_all(b"slow").expect("write");
    expect_echo(&mut a, b"slow");
    // Both directions are delayed.
    assert!(
        sent.elapsed() >= Duration::from_millis(600),
        "{:?}",
        sent.elapsed()
    );
    proxy.heal();

    proxy.stall(Direction::FromTarget);
    a.write_all(b"held").expect("write");
    expect_silence(&mut a, Duration::from_millis(300));
    assert_eq!(
        proxy.bytes(Direction::ToTarget),
        13,
        "the other direction flows"
    );
    proxy.heal();
    expect_echo(&mut a, b"held");

    proxy.blackhole();
    let mut b = connect();
    b.write_all(b"quiet").expect("write");
    a.write_all(b"quiet").expect("write");
    expect_silence(&mut a, Duration::from_millis(300));
    expect_silence(&mut b, Duration::from_millis(100));
    proxy.heal();
    expect_echo(&mut a, b"quiet");
    expect_echo(&mut b, b"quiet");

    proxy.isolate(b"MARK");
    let mut marked = connect();
    marked.write_all(b"xxMARKxx").expect("write");
    a.write_all(b"free").expect("write");
    expect_echo(&mut a, b"free");
    expect_silence(&mut marked, Duration::from_millis(300));
    proxy.heal();
    expect_echo(&mut marked, b"xxMARKxx");

    proxy.reset();
    let mut buf = [0u8; 4];
    assert_eq!(a.read(&mut buf).unwrap_or(0), 0, "closed by the reset");
    let mut refused = connect();
    let _ = refused.write_all(b"nope");
    assert_eq!(
        refused.read(&mut buf).unwrap_or(0),
        0,
        "refused while reset"
    );
    proxy.heal();
    let mut c = connect();
    c.write_all(b"again").expect("write");
    expect_echo(&mut c, b"again");
}

/// Data connections delayed by 30 ms each way: WordCount is slower but still equals the
/// reference, and the RPC side notices nothing (both TaskManagers stay registered).
#[actix_rt::test]
async fn wordcount_with_delayed_data_connections_equals_the_reference() {
    let cluster = started(ClusterOptions::new(2, 1, FAST).with_data_proxies()).await;
    for proxies in &cluster.tm_proxies {
        proxies
            .data
            .as_ref()
            .expect("a data proxy")
            .delay(Duration::from_millis(30));
    }
    reference_check(&cluster, 13, 2);
    let overview = cluster.rest.overview().await.expect("overview");
    assert_eq!(overview.taskmanagers, 2, "{}", cluster.logs());
}

/// A data connection cut (closed, and refused until healed) under a running shuffle: the
/// consuming task fails with an error naming the channel's peer, so the job fails; both
/// TaskManagers stay up and registered (only the data plane was cut), and after healing the
/// next WordCount runs across both.
#[actix_rt::test]
async fn a_cut_data_connection_fails_the_job_and_the_cluster_keeps_serving() {
    let cluster = started(ClusterOptions::new(2, 1, FAST).with_data_proxies()).await;
    let job_id = running_unbounded_job(&cluster).await;
    let data = cluster.tm_proxies[1].data.as_ref().expect("a data proxy");
    // Records flow through TaskManager 1's data server before the cut.
    let deadline = Instant::now() + WAIT;
    while data.bytes(Direction::FromTarget) == 0 {
        assert!(
            Instant::now() < deadline,
            "no data crossed\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    data.reset();
    let end = cluster
        .wait_for_job_status(job_id, JobStatus::is_terminal, Instant::now() + WAIT)
        .await;
    assert_eq!(end, JobStatus::Failed, "{}", cluster.logs());
    let exceptions = cluster
        .rest
        .job_exceptions(job_id)
        .await
        .expect("exceptions");
    let text = format!("{exceptions:?}");
    assert!(
        text.contains("input channel") || text.contains("data connection"),
        "the failure names the data channel: {exceptions:?}"
    );
    assert!(
        !text.contains("TaskManagerLost"),
        "no TaskManager was lost, only a data connection: {exceptions:?}"
    );
    let overview = cluster
        .wait_for_overview("both task managers registered, slots free", WAIT, |o| {
            o.taskmanagers == 2 && o.slots_available == 2
        })
        .await;
    eprintln!("data cut: job failed with {text}; afterwards {overview:?}");
    data.heal();
    reference_check(&cluster, 14, 2);
}
