//! Job libraries on an in-process MiniCluster: the template job library
//! (`examples/job-template`) and the test library (`tests/jobs/test-jobs`) are built with cargo,
//! loaded here as the client loads them, their JobGraphs name the library, the library is put
//! into the BlobServer (as the REST upload does), and the TaskExecutors fetch, verify, load and
//! run it, over local and remote channels. The multi-process counterpart, with the CLI and the
//! REST upload, is `tests/job_libraries.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rflink_runtime::client::{build_library_job_graph, choose_library_job};
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::heartbeat::HeartbeatSettings;
use rflink_runtime::library::JobLibrary;
use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig};
use rflink_runtime::network::NetworkConfig;
use rflink_runtime::tasks::Jobs;

const WAIT: Duration = Duration::from_secs(60);

/// Builds the test libraries with cargo (same profile and target directory as this test) and
/// returns the directory holding them.
fn built_libraries() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the profile directory")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("the target directory");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["build", "--quiet", "--target-dir"])
        .arg(target_dir)
        .args(["-p", "rflink-job-template", "-p", "rflink-test-jobs"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("cargo runs");
    assert!(status.success(), "building the job libraries failed");
    profile_dir
}

fn library(name: &str) -> (Arc<JobLibrary>, Vec<u8>) {
    let path = built_libraries().join(format!("lib{name}.so"));
    let bytes = std::fs::read(&path).expect("the library was built");
    (JobLibrary::load(&path).expect("loads"), bytes)
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

async fn cluster(task_managers: u32, slots: u32) -> MiniCluster {
    init_tracing();
    let config = MiniClusterConfig {
        num_task_managers: task_managers,
        slots_per_task_manager: slots,
        heartbeat: HeartbeatSettings {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(5000),
            ..HeartbeatSettings::default()
        },
        // Nothing compiled in: every program comes from a library.
        jobs: Jobs::new(rflink::JobRegistry::new()),
        network: Some(NetworkConfig::default()),
        ..MiniClusterConfig::default()
    };
    let c = MiniCluster::start(config).await.expect("starts");
    c.wait_for_task_managers(task_managers, WAIT)
        .await
        .expect("task managers register");
    c
}

fn text(lines: usize) -> String {
    (0..lines)
        .map(|i| format!("Alpha beta{} gamma, GAMMA delta{}\n", i % 5, i % 3))
        .collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[actix_rt::test]
async fn a_library_job_runs_on_task_executors_that_fetch_it_from_the_blob_server() {
    let (template, bytes) = library("rflink_job_template");
    assert_eq!(
        choose_library_job(&template, None).expect("a single job"),
        "wordcount"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    let input_text = text(500);
    std::fs::write(&input, &input_text).expect("write");
    let program_args = args(&[
        "--input",
        &input.display().to_string(),
        "--output",
        &output.display().to_string(),
        "--parallelism",
        "2",
    ]);
    let graph = build_library_job_graph(&template, &bytes, "wordcount", &program_args)
        .expect("the library builds the graph");
    let library_ref = graph
        .program
        .as_ref()
        .and_then(|p| p.library.clone())
        .expect("the graph names its library");
    assert_eq!(library_ref.file_name, "librflink_job_template.so");
    assert_eq!(library_ref.size, bytes.len() as u64);

    // Two TaskExecutors of two slots: the keyed exchange crosses TCP and local channels.
    let c = cluster(2, 2).await;
    let key = c
        .blob_server()
        .put(graph.job_id, bytes.clone())
        .await
        .expect("stored");
    assert_eq!(key.to_string(), library_ref.blob_key);
    let job_id = c.submit_job(graph).await.expect("accepted");
    let status = c
        .wait_for_job_status(job_id, WAIT, JobStatus::is_globally_terminal)
        .await
        .expect("ends");
    assert_eq!(
        status,
        JobStatus::Finished,
        "{:?}",
        c.job_exceptions(job_id).await
    );
    let written = std::fs::read_to_string(&output).expect("the sink wrote");
    assert_eq!(
        rflink_examples::parse_counts(&written).expect("`word count` lines"),
        rflink_examples::count_words(&input_text)
    );
    c.close().await.expect("closes");
}

#[actix_rt::test]
async fn a_missing_library_blob_and_a_panicking_job_fail_only_their_own_job() {
    let (template, template_bytes) = library("rflink_job_template");
    let (tests, test_bytes) = library("rflink_test_jobs");
    assert!(choose_library_job(&tests, None)
        .expect_err("two jobs")
        .to_string()
        .contains("--class"));
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.txt");
    let input_text = text(200);
    std::fs::write(&input, format!("{input_text}boom\nmore\n")).expect("write");
    let input = input.display().to_string();
    let c = cluster(1, 4).await;

    // Never uploaded: the TaskExecutor cannot fetch it; the job fails naming the library.
    let missing = build_library_job_graph(
        &template,
        &template_bytes,
        "wordcount",
        &args(&["--input", &input]),
    )
    .expect("builds");
    let missing_id = c.submit_job(missing).await.expect("accepted");

    // A user function panics: its job fails, nothing else.
    let out_panic = dir.path().join("panic.txt").display().to_string();
    let panicking = build_library_job_graph(
        &tests,
        &test_bytes,
        "panic-on",
        &args(&["--input", &input, "--output", &out_panic, "--word", "boom"]),
    )
    .expect("builds");
    c.blob_server()
        .put(panicking.job_id, test_bytes.clone())
        .await
        .expect("stored");
    let panicking_id = c.submit_job(panicking).await.expect("accepted");

    // A good job beside them, from the other library.
    let out_good = dir.path().join("good.txt");
    let good = build_library_job_graph(
        &template,
        &template_bytes,
        "wordcount",
        &args(&[
            "--input",
            &input,
            "--output",
            &out_good.display().to_string(),
        ]),
    )
    .expect("builds");
    c.blob_server()
        .put(good.job_id, template_bytes.clone())
        .await
        .expect("stored");
    let good_id = c.submit_job(good).await.expect("accepted");

    for (id, expected, needle) in [
        (missing_id, JobStatus::Failed, "cannot load the job library"),
        (panicking_id, JobStatus::Failed, "user code panicked"),
        (good_id, JobStatus::Finished, ""),
    ] {
        let status = c
            .wait_for_job_status(id, WAIT, JobStatus::is_globally_terminal)
            .await
            .expect("ends");
        let exceptions = format!("{:?}", c.job_exceptions(id).await);
        assert_eq!(status, expected, "{exceptions}");
        assert!(exceptions.contains(needle), "{needle:?} in {exceptions}");
    }
    let exceptions = format!("{:?}", c.job_exceptions(panicking_id).await);
    assert!(exceptions.contains("panic-on met the word"), "{exceptions}");
    let mut expected = rflink_examples::count_words(&input_text);
    *expected.entry("boom".into()).or_default() += 1;
    *expected.entry("more".into()).or_default() += 1;
    let written = std::fs::read_to_string(&out_good).expect("written");
    assert_eq!(
        rflink_examples::parse_counts(&written).expect("`word count` lines"),
        expected
    );
    // The TaskExecutor survived the panic.
    let overview = c.overview().await.expect("overview");
    assert_eq!(overview.taskmanagers, 1);
    c.close().await.expect("closes");
}
