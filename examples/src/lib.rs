//! # rflink-examples
//!
//! The example jobs, as build functions in a [`JobRegistry`]. `rflink-node` compiles this
//! registry in, so every TaskExecutor can run these jobs, and the `rflink` CLI builds their job
//! graphs from it (`rflink run --example wordcount ...`).
//!
//! - `wordcount`: Flink's WordCount. See [`wordcount`].
//! - `window-wordcount`, `session-windows`: windows; see [`windowing`].
//! - `sequence-sum`: an endless seeded generator summed per key, for cancellation and
//!   failure tests. See [`sequence_sum`].

use rflink::{JobArgs, JobError, JobRegistry, StreamExecutionEnvironment};

pub mod text;
pub mod windowing;

pub use windowing::{session_windows, window_wordcount};

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
        "streaming-wordcount",
        "WordCount over generated text in streaming mode with checkpoints, exactly-once output \
         (--lines N, --seed S, --lines-per-second R per subtask, --checkpoint-interval MS, \
         --output DIR, --parallelism N)",
        streaming_wordcount,
    );
    jobs.register(
        "window-wordcount",
        "Flink's WindowWordCount: word counts over sliding count windows (--window N of 250, \
         --slide N of 150; --input, --output, --parallelism as for wordcount)",
        window_wordcount,
    );
    jobs.register(
        "session-windows",
        "Event-time session windows per user over out-of-order `user timestamp_ms` lines, with \
         late events to a side output (--input, --output, --late-output, --gap MS, \
         --out-of-orderness MS, --allowed-lateness MS, --parallelism N)",
        session_windows,
    );
    jobs.register(
        "windowed-wordcount",
        "WordCount over event-time tumbling windows of generated, out-of-order text, \
         checkpointed, exactly-once output `word window_end count` (--lines N, --seed S, \
         --lines-per-second R, --window-ms MS, --checkpoint-interval MS, --output DIR, \
         --parallelism N)",
        windowing::windowed_wordcount,
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

/// Line `index` of [`streaming_wordcount`]'s generated text for `seed`: 4 to 11 words drawn from
/// Hamlet's vocabulary. Deterministic, so tests can compute the reference.
pub fn generated_line(rng: &mut rflink::SplitMix64) -> String {
    let vocabulary = vocabulary();
    let words = rng.gen_between(4, 12);
    let mut line = String::new();
    for i in 0..words {
        if i > 0 {
            line.push(' ');
        }
        let pick = rng.gen_range(vocabulary.len() as u64) as usize;
        line.push_str(vocabulary.get(pick).copied().unwrap_or("rflink"));
    }
    line
}

/// The lines [`streaming_wordcount`] generates for `seed` and `lines`, in index order.
pub fn generated_text(seed: u64, lines: u64) -> Vec<String> {
    (0..lines)
        .map(|i| generated_line(&mut rflink::SplitMix64::for_index(seed, i)))
        .collect()
}

/// The exact output of [`streaming_wordcount`] for `lines`: every word `w` seen `n` times
/// contributes the lines `w 1` … `w n` (one update per occurrence), sorted.
pub fn streaming_reference(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (word, n) in count_words(&lines.join("\n")) {
        for k in 1..=n {
            out.push(format!("{word} {k}"));
        }
    }
    out.sort();
    out
}

fn vocabulary() -> &'static [&'static str] {
    static VOCABULARY: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    VOCABULARY.get_or_init(|| {
        let mut words: Vec<&'static str> = text::WORDS
            .iter()
            .flat_map(|l| l.split(|c: char| !c.is_alphanumeric()))
            .filter(|w| !w.is_empty() && w.is_ascii())
            .collect();
        words.sort_unstable();
        words.dedup();
        words
    })
}

/// WordCount as a streaming job with exactly-once output: Flink's WordCount in STREAMING mode,
/// with checkpoints.
///
/// - The input is generated (`--lines N` lines, default 100000, from `--seed S`), so a replay
///   after a failure reads the same lines; `--lines-per-second R` slows each source subtask to
///   about R lines per second (default: as fast as it goes), to keep a job running while tests
///   kill TaskManagers.
/// - Every word's running count is emitted on each occurrence (`word n`), as Flink's streaming
///   WordCount does.
/// - `--output DIR` is written exactly-once: part files committed when a checkpoint completes
///   (read them with `rflink::sinks::read_committed_parts`). Without it the counts are printed.
/// - `--checkpoint-interval MS` (default 500) sets `execution.checkpointing.interval`.
pub fn streaming_wordcount(
    env: &mut StreamExecutionEnvironment,
    args: &JobArgs,
) -> Result<(), JobError> {
    args.expect_only(&[
        "lines",
        "seed",
        "lines-per-second",
        "checkpoint-interval",
        "output",
        "parallelism",
    ])?;
    if let Some(p) = args.parse::<u32>("parallelism")? {
        env.set_parallelism(p.max(1));
    }
    env.set_job_name("Streaming WordCount");
    env.set_runtime_mode(rflink::RuntimeMode::Streaming);
    let interval = args.parse::<u64>("checkpoint-interval")?.unwrap_or(500);
    env.enable_checkpointing(std::time::Duration::from_millis(interval.max(10)));
    let lines = args.parse::<u64>("lines")?.unwrap_or(100_000);
    let seed = args.parse::<u64>("seed")?.unwrap_or(7);
    let rate = args.parse::<u64>("lines-per-second")?;
    let text = env
        .from_generator(Some(lines), seed, |rng, _| generated_line(rng))
        .name("Generated text");
    let text = throttled(text, rate);
    let counts = text
        .flat_map(|line: String, out| tokenize(&line, |w| out.collect((w, 1u64))))
        .name("Tokenizer")
        .key_by_ref(|pair: &(String, u64)| &pair.0)
        .sum(|pair: &mut (String, u64)| &mut pair.1)
        .name("Counter")
        .map(|(word, count): (String, u64)| format!("{word} {count}"))
        .name("Format");
    match args.get("output") {
        Some(path) => {
            counts.write_as_text(path).name("Exactly-once file sink");
        }
        None => {
            counts.print().name("Print sink");
        }
    }
    Ok(())
}

/// Sleeps `pause` once every `every` calls on this thread (each task has its own thread).
/// `stream` slowed to about `rate` records per second per subtask (none: as fast as it goes),
/// by sleeping `1000 / rate` ms every `rate / 1000` records.
pub(crate) fn throttled<T: rflink::Record>(
    stream: rflink::DataStream<T>,
    rate: Option<u64>,
) -> rflink::DataStream<T> {
    match rate {
        Some(rate) if rate > 0 => {
            let every = (rate / 1000).max(1);
            let pause = std::time::Duration::from_micros((every * 1_000_000 / rate).max(1));
            stream
                .map(move |record: T| {
                    throttle(every, pause);
                    record
                })
                .name("Throttle")
        }
        _ => stream,
    }
}

fn throttle(every: u64, pause: std::time::Duration) {
    thread_local! {
        static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let n = CALLS.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n
    });
    if n.is_multiple_of(every) {
        std::thread::sleep(pause);
    }
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
