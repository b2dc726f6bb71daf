//! `rflink-bench library`: what running a job from a job library costs against the same job
//! compiled into the node, in the same run. Every call between a task and its operator chain
//! crosses the C ABI when the chain lives in a library (one call per serialized record from a
//! remote channel, one per typed batch from a local one, one per source poll).
//!
//! * **Input** (untimed) and runs: as `rflink-bench wordcount`, with its options and defaults
//!   (20 M words, 3 runs).
//! * **Compiled in**: `MiniCluster::execute("wordcount", --input --output --parallelism 2)`, the
//!   `wordcount` example of `rflink-examples`.
//! * **Library**: the template job library's `wordcount` (`examples/job-template`, the same
//!   tokenizer, keyed sum and text sink), from `--library PATH` (default
//!   `librflink_job_template.so` next to this binary: build it with `cargo build --release -p
//!   rflink-job-template`). Timed like the other side: building the JobGraph in the library,
//!   putting the library into the BlobServer (as the REST upload does), submitting, and waiting
//!   for the result; the TaskExecutors fetch, verify and load it (the load happens once per
//!   process, in the first run).
//! * One MiniCluster of **2 TaskManagers with 1 slot each** serves both sides, so the keyed
//!   exchange has local and remote channels. Runs interleave (compiled, library, ...); the best
//!   and median of each are reported, and the ratio library / compiled of words per second.
//! * **Check** (untimed): every output equals a single-threaded count of the input.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rflink_runtime::client::build_library_job_graph;
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::library::JobLibrary;
use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig};
use rflink_runtime::tasks::Jobs;
use rustc_hash::FxHashMap;

use crate::stats::json_number;
use crate::wordcount::{self, arg_path, compare, parse_output, wait_idle, Side};
use crate::BoxError;

/// Option lines for the usage text.
pub const OPTIONS_HELP: &str =
    "  the options of wordcount (--words, --vocab, --seed, --runs, --timeout-secs,
  --keep-input), with the same defaults, and
  --library PATH     the template job library (default: librflink_job_template.so beside
                     this binary; cargo build --release -p rflink-job-template)";

const PARALLELISM: u32 = 2;

/// Options of the `library` benchmark: the input and runs as `rflink-bench wordcount`'s.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub input: wordcount::Options,
    pub library: Option<PathBuf>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut library = None;
        let mut rest = Vec::with_capacity(args.len());
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg == "--library" {
                library = Some(PathBuf::from(it.next().ok_or("--library needs a path")?));
            } else if let Some(path) = arg.strip_prefix("--library=") {
                library = Some(PathBuf::from(path));
            } else {
                rest.push(arg.clone());
            }
        }
        Ok(Options {
            input: wordcount::Options::parse(&rest)?,
            library,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.input.timeout_secs as u64)
    }

    fn library_path(&self) -> Result<PathBuf, BoxError> {
        if let Some(path) = &self.library {
            return Ok(path.clone());
        }
        let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
        let dir = exe.parent().ok_or("this binary has no directory")?;
        Ok(dir.join("librflink_job_template.so"))
    }
}

fn job_args(input: &Path, output: &Path) -> Result<Vec<String>, BoxError> {
    Ok(vec![
        "--input".to_owned(),
        arg_path(input)?,
        "--output".to_owned(),
        arg_path(output)?,
        "--parallelism".to_owned(),
        PARALLELISM.to_string(),
    ])
}

/// Reads, checks and removes a job's output.
fn check_output(
    output: &Path,
    expected: &FxHashMap<String, u64>,
    side: &str,
) -> Result<(), BoxError> {
    let text = std::fs::read_to_string(output)
        .map_err(|e| format!("cannot read {}: {e}", output.display()))?;
    compare("the input's counts", expected, side, &parse_output(&text)?)?;
    std::fs::remove_file(output).map_err(|e| format!("cannot remove {}: {e}", output.display()))?;
    Ok(())
}

fn finished(status: JobStatus, failure: impl std::fmt::Debug, side: &str) -> Result<(), BoxError> {
    if status == JobStatus::Finished {
        Ok(())
    } else {
        Err(format!("{side} ended {status}: {failure:?}").into())
    }
}

async fn run_compiled(
    cluster: &MiniCluster,
    args: &[String],
    timeout: Duration,
) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let result = cluster.execute("wordcount", args, timeout).await?;
    let elapsed = start.elapsed();
    finished(result.status, result.failure, "the compiled-in job")?;
    Ok(elapsed)
}

async fn run_library(
    cluster: &MiniCluster,
    library: &JobLibrary,
    bytes: &[u8],
    args: &[String],
    timeout: Duration,
) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let graph = build_library_job_graph(library, bytes, "wordcount", args)?;
    cluster
        .blob_server()
        .put(graph.job_id, bytes.to_vec())
        .await?;
    let job_id = cluster.submit_job(graph).await?;
    let result = cluster.request_job_result(job_id, timeout).await?;
    let elapsed = start.elapsed();
    finished(result.status, result.failure, "the library job")?;
    Ok(elapsed)
}

async fn run_async(options: Options) -> Result<(), BoxError> {
    let library_path = options.library_path()?;
    let bytes = std::fs::read(&library_path).map_err(|e| {
        format!(
            "cannot read the job library {} ({e}); build it with `cargo build --release -p \
             rflink-job-template` or pass --library PATH",
            library_path.display()
        )
    })?;
    let library = JobLibrary::load(&library_path)?;
    let work_dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let generator = options.input.clone();
    let input_path = options
        .input
        .keep_input
        .clone()
        .unwrap_or_else(|| work_dir.path().join("input.txt"));
    let input = tokio::task::spawn_blocking(move || wordcount::generate(&generator, &input_path))
        .await
        .map_err(|e| format!("the generator thread: {e}"))??;
    eprintln!(
        "library: input of {:.1} MB ({} words); library {} ({:.1} MB)",
        input.bytes as f64 / 1e6,
        options.input.words,
        library_path.display(),
        bytes.len() as f64 / 1e6
    );
    let config = MiniClusterConfig {
        num_task_managers: 2,
        slots_per_task_manager: 1,
        jobs: Jobs::new(rflink_examples::registry()),
        ..MiniClusterConfig::default()
    };
    let cluster = MiniCluster::start(config).await?;
    let measured = async {
        cluster.wait_for_task_managers(2, options.timeout()).await?;
        let mut compiled = Side::default();
        let mut from_library = Side::default();
        let words = options.input.words as f64;
        for run in 1..=options.input.runs {
            for (name, side) in [
                ("compiled-in", &mut compiled),
                ("library", &mut from_library),
            ] {
                wait_idle(&cluster, PARALLELISM, options.timeout()).await?;
                let output = work_dir.path().join(format!("out-{name}-{run}.txt"));
                let args = job_args(&input.path, &output)?;
                let elapsed = if name == "library" {
                    run_library(&cluster, &library, &bytes, &args, options.timeout()).await?
                } else {
                    run_compiled(&cluster, &args, options.timeout()).await?
                };
                check_output(&output, &input.expected, name)?;
                eprintln!(
                    "library: run {run}/{}: {name} {:.3} s ({:.2} M words/s), output exact",
                    options.input.runs,
                    elapsed.as_secs_f64(),
                    words / elapsed.as_secs_f64() / 1e6
                );
                side.times.push(elapsed);
            }
        }
        Ok::<_, BoxError>((compiled, from_library))
    }
    .await;
    let fatal = cluster.fatal_errors();
    cluster.close().await?;
    let (compiled, from_library) = measured?;
    if !fatal.is_empty() {
        return Err(format!("task managers reported fatal errors: {fatal:?}").into());
    }
    let rate = |secs: f64| options.input.words as f64 / secs;
    println!(
        "library: WordCount p={PARALLELISM} on 2 TaskManagers x 1 slot, {} words, {} runs \
         interleaved; {} logical CPUs",
        options.input.words,
        options.input.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  {:<34} {:>9} {:>9} {:>16} {:>16}",
        "", "best s", "median s", "best M words/s", "median M words/s"
    );
    for (name, side) in [
        ("compiled into the node", &compiled),
        ("from the job library (C ABI)", &from_library),
    ] {
        println!(
            "  {name:<34} {:>9.3} {:>9.3} {:>16.3} {:>16.3}",
            side.best(),
            side.median(),
            rate(side.best()) / 1e6,
            rate(side.median()) / 1e6
        );
    }
    let ratio = rate(from_library.best()) / rate(compiled.best());
    let ratio_median = rate(from_library.median()) / rate(compiled.median());
    println!("ratio library / compiled-in (words/s): {ratio:.3} (median {ratio_median:.3})");
    println!(
        "{{\"bench\":\"library\",\"words\":{},\"compiled_words_per_s\":{},\
         \"library_words_per_s\":{},\"library_ratio\":{},\"runs\":{}}}",
        options.input.words,
        json_number(rate(compiled.best()), 0),
        json_number(rate(from_library.best()), 0),
        json_number(ratio, 3),
        options.input.runs
    );
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
        let o = Options::parse(&args(&["--words", "10", "--library", "/x/lib.so"])).expect("ok");
        assert_eq!(o.input.words, 10);
        assert_eq!(o.library, Some(PathBuf::from("/x/lib.so")));
        assert!(Options::parse(&args(&["--library"])).is_err());
        assert!(Options::parse(&args(&["--runs", "0"])).is_err());
    }
}
