//! A job library: a WordCount written against the `rflink` API in its own crate, built as a
//! `cdylib`, submitted with `rflink run target/debug/librflink_job_template.so --input FILE
//! --output FILE -m host:8081`. The cluster ships it to its TaskManagers through the
//! BlobServer; nothing of it has to be compiled into `rflink-node`.
//!
//! Copy this crate to start your own (see "Write your own job" in the README). The rules:
//! * Build it with the same rflink version and Rust toolchain as the cluster: a library built
//!   otherwise is refused, naming both builds.
//! * A build function must be deterministic and do no I/O: the client and every TaskManager
//!   run it with the same arguments and must build the same graph.
//! * Log with `tracing`: events go to the TaskManager's log. Do not set a subscriber or a
//!   panic hook, and do not start an async runtime.
//! * A panic in your functions fails the task (and, after the restart strategy, the job), never
//!   the TaskManager.

use rflink::{JobArgs, JobError, JobRegistry, StreamExecutionEnvironment};

/// The jobs this library exports, by name (`rflink run LIB --class NAME` picks one; a library
/// with a single job needs no `--class`).
pub fn jobs() -> JobRegistry {
    let mut registry = JobRegistry::new();
    registry.register(
        "wordcount",
        "counts the words of --input FILE into --output FILE (one `word count` line per word)",
        wordcount,
    );
    registry
}

rflink::export_jobs!(jobs);

/// Lowercase runs of letters and digits: the words of a line.
pub fn words(line: &str) -> impl Iterator<Item = String> + '_ {
    line.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// WordCount over a text file.
///
/// * `--input FILE` (required): read by the TaskManagers, so it must exist there.
/// * `--output FILE`: where the counts go (printed to the TaskManagers' stdout without it).
/// * `--parallelism N`: the job's parallelism (default 1).
/// * `--lines-per-second N`: slows each source subtask down to about N lines per second (to
///   watch a job run).
pub fn wordcount(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    args.expect_only(&["input", "output", "parallelism", "lines-per-second"])?;
    let input = args.get("input").ok_or_else(|| JobError::BadArgument {
        name: "input".into(),
        reason: "the text file to count is required".into(),
    })?;
    let parallelism = args.parse_or("parallelism", 1u32)?.max(1);
    let rate = args.parse_or("lines-per-second", 0u64)?;
    env.set_parallelism(parallelism);
    env.set_job_name("Library WordCount");
    tracing::info!(
        input,
        parallelism,
        "job template: counting the words of {input}"
    );
    let mut lines = env.read_text_file(input).name("Text file");
    if let Some(micros) = 1_000_000u64.checked_div(rate) {
        let pause = std::time::Duration::from_micros(micros);
        lines = lines.map(move |line: String| {
            std::thread::sleep(pause);
            line
        });
    }
    let counts = lines
        .flat_map(|line: String, out| {
            for word in words(&line) {
                out.collect((word, 1u64));
            }
        })
        .name("Tokenizer")
        .key_by_ref(|pair: &(String, u64)| &pair.0)
        .sum(|pair: &mut (String, u64)| &mut pair.1)
        .name("Counter")
        .map(|(word, count): (String, u64)| format!("{word} {count}"))
        .name("Format");
    match args.get("output") {
        Some(path) => {
            counts
                .write_as_text(path)
                .name("Text sink")
                .set_parallelism(1);
        }
        None => {
            counts.print().name("Print sink");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercase_alphanumeric_runs() {
        let w: Vec<String> = words("To be, or NOT to-be: 2b!").collect();
        assert_eq!(w, ["to", "be", "or", "not", "to", "be", "2b"]);
    }

    #[test]
    fn the_job_builds_and_refuses_a_missing_input() {
        let registry = jobs();
        let args = JobArgs::from_args(vec!["--input".into(), "/tmp/x".into()]);
        let graph = registry.build("wordcount", &args).expect("builds");
        assert_eq!(graph.job_name(), "Library WordCount");
        assert!(registry.build("wordcount", &JobArgs::default()).is_err());
    }
}
