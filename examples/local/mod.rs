//! Runs one job of `rflink-examples` on the embedded, in-process cluster (a MiniCluster with one
//! TaskManager that has as many slots as the job's parallelism), as Flink's examples run in a
//! local environment. Shared by the `cargo run --example` programs.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::minicluster::{execute_locally, MiniClusterConfig};
use rflink_runtime::tasks::Jobs;

/// Runs `job` (named `title` in messages) with the program's arguments; prints `usage` for
/// `--help`. Exit code 0 when the job finished, 1 when it failed, 2 when it could not run.
pub fn run(job: &str, title: &str, usage: &str) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RFLINK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{usage}");
        return ExitCode::SUCCESS;
    }
    let config = MiniClusterConfig {
        jobs: Jobs::new(rflink_examples::registry()),
        ..MiniClusterConfig::default()
    };
    let started = Instant::now();
    // A day: a bounded job on a big input may take long; a failure ends it at once.
    match execute_locally(config, job, &args, Duration::from_secs(24 * 3600)) {
        Ok(result) if result.status == JobStatus::Finished => {
            eprintln!(
                "{title} {} FINISHED in {} ms",
                result.job_id,
                started.elapsed().as_millis()
            );
            ExitCode::SUCCESS
        }
        Ok(result) => {
            let why = result
                .failure
                .map(|f| format!(": {}", f.message))
                .unwrap_or_default();
            eprintln!("{title} {} ended {}{why}", result.job_id, result.status);
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("{title} could not run: {err}");
            ExitCode::from(2)
        }
    }
}
