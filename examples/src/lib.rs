//! # rflink-examples
//!
//! The example jobs, as build functions in a [`JobRegistry`]. `rflink-node` compiles this
//! registry in, so every TaskExecutor can run these jobs, and the `rflink` CLI builds their job
//! graphs from it (`rflink run --example wordcount ...`).
//!
//! - `wordcount`: Flink's WordCount. See [`wordcount`].
//! - `sequence-sum`: an endless seeded generator summed per key, for cancellation and
//!   failure tests. See [`sequence_sum`].

use rflink::{JobArgs, JobError, JobRegistry, StreamExecutionEnvironment};

pub mod text;

/// Every example job.
pub fn registry() -> JobRegistry {
    let mut jobs = JobRegistry::new();
    jobs.register(
        "wordcount",
        "Counts words: --input FILE|DIR (repeatable; built-in text if absent), --output FILE \
         (printed if absent), --parallelism N",
        wordcount,
    );
    jobs.register(
        "sequence-sum",
        "Sums an endless seeded sequence per key (--keys N, --parallelism N, --count N to bound \
         it, --output FILE)",
        sequence_sum,
    );
    jobs
}

/// Splits a line into lowercase words: a word is a maximal run of alphanumeric characters
/// (Unicode `char::is_alphanumeric`), everything else separates words; Flink's WordCount
/// tokenizer does the same with `toLowerCase().split("\\W+")`.
pub fn tokenize(line: &str, mut emit: impl FnMut(String)) {
    for word in line.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        if word.is_ascii() {
            emit(word.to_ascii_lowercase());
        } else {
            emit(word.to_lowercase());
        }
    }
}

/// The sequential reference of [`wordcount`]: each word of `text` (by [`tokenize`]) with its
/// count. Tests and benchmarks compare the job's output with it.
pub fn count_words(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for line in text.lines() {
        tokenize(line, |w| *counts.entry(w).or_insert(0) += 1);
    }
    counts
}

/// Parses WordCount's output (`word count` lines) into a map.
///
/// # Errors
/// The first line that is not `word count` with a whole-number count.
pub fn parse_counts(output: &str) -> Result<std::collections::BTreeMap<String, u64>, String> {
    let mut counts = std::collections::BTreeMap::new();
    for line in output.lines() {
        let parsed = line
            .rsplit_once(' ')
            .and_then(|(word, count)| Some((word, count.parse::<u64>().ok()?)));
        let Some((word, count)) = parsed else {
            return Err(format!("not a `word count` line: {line:?}"));
        };
        if counts.insert(word.to_string(), count).is_some() {
            return Err(format!("word {word:?} appears twice"));
        }
    }
    Ok(counts)
}

/// Flink's WordCount example.
///
/// Arguments:
/// - `--input PATH` (repeatable): a text file or a directory of text files. The TaskExecutors
///   read it, so on a cluster it must be readable at the same path on every TaskManager (a
///   shared volume), as with Flink's file sources. Without `--input`, a built-in text (a few
///   verses of Hamlet, as Flink's `WordCountData`) is used.
/// - `--output PATH`: one `word count` line per word with its final count, written by a
///   single sink subtask; without it the counts are printed by the TaskExecutors.
/// - `--parallelism N`: the job's parallelism (default: the environment's, 1).
///
/// With bounded inputs the job runs in batch-style emission (Flink's AUTOMATIC runtime mode),
/// so each word's count is emitted once, final, at the end of the input.
pub fn wordcount(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    args.expect_only(&["input", "output", "parallelism"])?;
    if let Some(p) = args.parse::<u32>("parallelism")? {
        if p == 0 {
            return Err(JobError::BadArgument {
                name: "parallelism".into(),
                reason: "must be at least 1".into(),
            });
        }
        env.set_parallelism(p);
    }
    env.set_job_name("WordCount");
    let inputs = args.get_all("input");
    let text = if inputs.is_empty() {
        env.from_collection(text::WORDS.iter().map(|l| l.to_string()).collect())
            .name("Built-in text")
    } else {
        let mut streams = inputs
            .iter()
            .map(|path| env.read_text_file(*path).name(&format!("Text file {path}")));
        let first = streams.next().ok_or_else(|| JobError::BadArgument {
            name: "input".into(),
            reason: "no input".into(),
        })?;
        let rest: Vec<_> = streams.collect();
        if rest.is_empty() {
            first
        } else {
            first.union(rest)
        }
    };
    let counts = text
        .flat_map(|line: String, out| tokenize(&line, |w| out.collect((w, 1u64))))
        .name("Tokenizer")
        .key_by_ref(|pair: &(String, u64)| &pair.0)
        .sum(|pair: &mut (String, u64)| &mut pair.1)
        .name("Counter");
    match args.get("output") {
        Some(path) => {
            counts
                .map(|(word, count): (String, u64)| format!("{word} {count}"))
                .name("Format")
                .write_as_text(path)
                .name("Text sink")
                .set_parallelism(1);
        }
        None => {
            counts
                .map(|(word, count): (String, u64)| format!("{word} {count}"))
                .name("Format")
                .print()
                .name("Print sink");
        }
    }
    Ok(())
}

/// A sink that drops what it gets (Flink: `DiscardingSink`).
pub struct Discard;

impl<T> rflink::SinkFunction<T> for Discard {
    fn invoke(&mut self, _value: T) -> Result<(), String> {
        Ok(())
    }
}

/// An endless (or, with `--count N`, bounded) seeded sequence of `(key, 1)` pairs over
/// `--keys N` keys (default 100), summed per key; output to `--output FILE` or discarded.
pub fn sequence_sum(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    args.expect_only(&["keys", "parallelism", "count", "output"])?;
    if let Some(p) = args.parse::<u32>("parallelism")? {
        env.set_parallelism(p.max(1));
    }
    env.set_job_name("SequenceSum");
    let keys = args.parse::<u64>("keys")?.unwrap_or(100).max(1);
    let count = args.parse::<u64>("count")?;
    let sums = env
        .from_generator(count, 42, move |rng, _| (rng.gen_range(keys), 1u64))
        .name("Sequence")
        .key_by(|pair: &(u64, u64)| pair.0)
        .sum(|pair: &mut (u64, u64)| &mut pair.1)
        .name("Sum");
    match args.get("output") {
        Some(path) => {
            sums.map(|(k, n): (u64, u64)| format!("{k} {n}"))
                .write_as_text(path)
                .set_parallelism(1);
        }
        None => {
            sums.add_sink("Discard", || Discard);
        }
    }
    Ok(())
}
