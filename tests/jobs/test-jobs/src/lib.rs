//! A second job library for the multi-process tests (`tests/job_libraries.rs`): jobs unlike the
//! template's, so two libraries are told apart by their output.
//!
//! * `letter-count`: counts the letters `a`..=`z` (case-insensitive) of `--input` into
//!   `--output` (`letter count` lines), optionally slowed to `--lines-per-second`; with
//!   `--wait-for PATH` each record waits until that file exists (so a test can hold the job
//!   RUNNING while another job runs, then let it finish).
//! * `panic-on`: copies the lines of `--input` to `--output`, and its map function panics on
//!   the first line equal to `--word` (after `--lines-per-second` pacing, if given).
//! * `letter-windows`: event time through the library: `--input` lines `timestamp_ms text`
//!   (out of order by less than 100 ms), the letters of each counted per 1 s tumbling
//!   event-time window, `letter window_end count` lines to `--output`.

use rflink::{JobArgs, JobError, JobRegistry, StreamExecutionEnvironment};

fn jobs() -> JobRegistry {
    let mut registry = JobRegistry::new();
    registry.register("letter-count", "counts letters", letter_count);
    registry.register("panic-on", "panics on --word", panic_on);
    registry.register(
        "letter-windows",
        "letters per 1 s event-time window",
        letter_windows,
    );
    registry
}

rflink::export_jobs!(jobs);

fn pace(
    lines: rflink::DataStream<String>,
    args: &JobArgs,
) -> Result<rflink::DataStream<String>, JobError> {
    let rate = args.parse_or("lines-per-second", 0u64)?;
    let Some(micros) = 1_000_000u64.checked_div(rate) else {
        return Ok(lines);
    };
    let pause = std::time::Duration::from_micros(micros);
    Ok(lines.map(move |line: String| {
        std::thread::sleep(pause);
        line
    }))
}

fn required<'a>(args: &'a JobArgs, name: &str) -> Result<&'a str, JobError> {
    args.get(name).ok_or_else(|| JobError::BadArgument {
        name: name.into(),
        reason: "required".into(),
    })
}

fn letter_count(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    args.expect_only(&[
        "input",
        "output",
        "parallelism",
        "lines-per-second",
        "wait-for",
    ])?;
    env.set_parallelism(args.parse_or("parallelism", 1u32)?.max(1));
    env.set_job_name("Letter count");
    let mut lines = env.read_text_file(required(args, "input")?);
    if let Some(gate) = args.get("wait-for") {
        let gate = std::path::PathBuf::from(gate);
        lines = lines.map(move |line: String| {
            // Bounded: a test that never opens the gate still ends.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while !gate.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            line
        });
    }
    pace(lines, args)?
        .flat_map(|line: String, out| {
            for c in line.chars().filter(char::is_ascii_alphabetic) {
                out.collect((c.to_ascii_lowercase().to_string(), 1u64));
            }
        })
        .key_by_ref(|pair: &(String, u64)| &pair.0)
        .sum(|pair: &mut (String, u64)| &mut pair.1)
        .map(|(letter, count): (String, u64)| format!("{letter} {count}"))
        .write_as_text(required(args, "output")?)
        .set_parallelism(1);
    Ok(())
}

fn panic_on(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    args.expect_only(&["input", "output", "word", "lines-per-second"])?;
    env.set_parallelism(1);
    env.set_job_name("Panic on a word");
    let word = required(args, "word")?.to_string();
    let lines = env.read_text_file(required(args, "input")?);
    pace(lines, args)?
        .map(move |line: String| {
            if line.trim() == word {
                panic!("panic-on met the word {word:?}");
            }
            line
        })
        .write_as_text(required(args, "output")?);
    Ok(())
}

fn letter_windows(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    use std::time::Duration;

    use rflink::time::WatermarkStrategy;
    use rflink::windowing::{TumblingEventTimeWindows, WindowContext};

    args.expect_only(&["input", "output", "parallelism"])?;
    env.set_parallelism(args.parse_or("parallelism", 1u32)?.max(1));
    env.set_job_name("Letters per window");
    env.read_text_file(required(args, "input")?)
        .set_parallelism(1)
        .flat_map(
            |line: String, out: &mut dyn rflink::Collector<(i64, String)>| {
                if let Some((ts, text)) = line.split_once(' ') {
                    if let Ok(ts) = ts.parse::<i64>() {
                        out.collect((ts, text.to_owned()));
                    }
                }
            },
        )
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(100))
                .with_timestamp_assigner(|line: &(i64, String), _| line.0),
        )
        .set_parallelism(1)
        .flat_map(|(_, text): (i64, String), out| {
            for c in text.chars().filter(char::is_ascii_alphabetic) {
                out.collect((c.to_ascii_lowercase().to_string(), 1u64));
            }
        })
        .key_by_ref(|pair: &(String, u64)| &pair.0)
        .window(TumblingEventTimeWindows::of(Duration::from_secs(1)))
        .reduce_with(
            |a: (String, u64), b: (String, u64)| (a.0, a.1 + b.1),
            |letter: &String,
             ctx: &WindowContext,
             sums: &[(String, u64)],
             out: &mut dyn rflink::Collector<String>| {
                for (_, n) in sums {
                    out.collect(format!("{letter} {} {n}", ctx.window().end));
                }
            },
        )
        .write_as_text(required(args, "output")?)
        .set_parallelism(1);
    Ok(())
}
