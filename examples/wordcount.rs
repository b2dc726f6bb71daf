//! WordCount on the embedded, in-process cluster (a MiniCluster with one TaskManager that has
//! as many slots as the job's parallelism), as Flink's WordCount runs in a local environment.
//!
//! ```text
//! cargo run --release --example wordcount -- --input FILE --output FILE --parallelism N
//! ```
//!
//! Every argument goes to the `wordcount` job of `rflink-examples` (see its docs): `--input`
//! (repeatable; a file or a directory; built-in text without it), `--output` (printed without
//! it), `--parallelism`. The same job runs on a cluster with
//! `rflink -m HOST:8081 run --example wordcount --input ...`.

use std::process::ExitCode;

/// As in `rflink-node`: records allocated on one task thread are freed on another.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::minicluster::{execute_locally, MiniClusterConfig};
use rflink_runtime::tasks::Jobs;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RFLINK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: wordcount [--input FILE|DIR]... [--output FILE] [--parallelism N]\n\
             Counts the words of the input (built-in text without --input) on an embedded \
             cluster; writes `word count` lines to --output, or prints them."
        );
        return ExitCode::SUCCESS;
    }
    let config = MiniClusterConfig {
        jobs: Jobs::new(rflink_examples::registry()),
        ..MiniClusterConfig::default()
    };
    let started = Instant::now();
    // A day: a bounded job on a big input may take long; a failure ends it at once.
    match execute_locally(config, "wordcount", &args, Duration::from_secs(24 * 3600)) {
        Ok(result) if result.status == JobStatus::Finished => {
            eprintln!(
                "WordCount {} FINISHED in {} ms",
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
            eprintln!("WordCount {} ended {}{why}", result.job_id, result.status);
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("WordCount could not run: {err}");
            ExitCode::from(2)
        }
    }
}
