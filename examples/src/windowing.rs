//! The windowing examples: Flink's `WindowWordCount` (sliding count windows) and a session
//! window example on out-of-order events with a late-data side output (after Flink's
//! `SessionWindowing`).

use std::collections::BTreeMap;
use std::time::Duration;

use rflink::time::{WatermarkGenerator, WatermarkOutput, WatermarkStrategy, MIN_WATERMARK};
use rflink::windowing::{
    AggregateFunction, EventTimeSessionWindows, TumblingEventTimeWindows, WindowContext,
};
use rflink::{Collector, DataStream, JobArgs, JobError, OutputTag, StreamExecutionEnvironment};

use crate::{text, tokenize};

fn parallelism(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    if let Some(p) = args.parse::<u32>("parallelism")? {
        if p == 0 {
            return Err(JobError::BadArgument {
                name: "parallelism".into(),
                reason: "must be at least 1".into(),
            });
        }
        env.set_parallelism(p);
    }
    Ok(())
}

fn positive(args: &JobArgs, name: &str, default: u64) -> Result<u64, JobError> {
    let value = args.parse::<u64>(name)?.unwrap_or(default);
    if value == 0 {
        return Err(JobError::BadArgument {
            name: name.into(),
            reason: "must be at least 1".into(),
        });
    }
    Ok(value)
}

/// The text of `--input` (repeatable) read at parallelism 1, in file order, or the built-in
/// text.
fn input_lines(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> DataStream<String> {
    let inputs = args.get_all("input");
    let mut streams: Vec<DataStream<String>> = inputs
        .iter()
        .map(|path| {
            env.read_text_file(*path)
                .name(&format!("Text file {path}"))
                .set_parallelism(1)
        })
        .collect();
    match streams.len() {
        0 => env
            .from_collection(text::WORDS.iter().map(|l| l.to_string()).collect())
            .name("Built-in text"),
        1 => streams.remove(0),
        _ => {
            let first = streams.remove(0);
            first.union(streams)
        }
    }
}

/// Writes `lines` to `--{key}` (one sink subtask) or prints them with `prefix`.
fn emit(lines: DataStream<String>, args: &JobArgs, key: &str, name: &str) {
    match args.get(key) {
        Some(path) => {
            lines
                .write_as_text(path)
                .name(&format!("{name} file"))
                .set_parallelism(1);
        }
        None => {
            lines.print().name(&format!("{name} print"));
        }
    }
}

/// Flink's `WindowWordCount`: counts each word over sliding count windows. Every `--slide N`
/// occurrences of a word (default 150), the count of its last `--window N` occurrences
/// (default 250) is emitted as `word count`; occurrences after the word's last full slide are
/// not emitted (a count window fires only when its count is reached).
///
/// Arguments as for WordCount: `--input PATH` (repeatable; the built-in text if absent),
/// `--output FILE` (printed if absent), `--parallelism N`.
pub fn window_wordcount(
    env: &mut StreamExecutionEnvironment,
    args: &JobArgs,
) -> Result<(), JobError> {
    args.expect_only(&["input", "output", "parallelism", "window", "slide"])?;
    parallelism(env, args)?;
    env.set_job_name("WindowWordCount");
    let window = positive(args, "window", 250)?;
    let slide = positive(args, "slide", 150)?;
    let counts = input_lines(env, args)
        .flat_map(|line: String, out| tokenize(&line, |w| out.collect((w, 1u64))))
        .name("Tokenizer")
        .key_by_ref(|pair: &(String, u64)| &pair.0)
        .count_window_sliding(window, slide)
        .sum(|pair: &mut (String, u64)| &mut pair.1)
        .name("Count window");
    let lines = counts
        .map(|(word, count): (String, u64)| format!("{word} {count}"))
        .name("Format");
    emit(lines, args, "output", "Counts");
    Ok(())
}

/// The exact output of [`window_wordcount`] for `text`, per word in emission order: the `k`-th
/// firing of a word (after `k * slide` occurrences) counts `min(window, k * slide)`.
pub fn window_wordcount_reference(
    text: &str,
    window: u64,
    slide: u64,
) -> BTreeMap<String, Vec<u64>> {
    let mut out = BTreeMap::new();
    for (word, n) in crate::count_words(text) {
        let firings: Vec<u64> = (1..=n / slide).map(|k| (k * slide).min(window)).collect();
        if !firings.is_empty() {
            out.insert(word, firings);
        }
    }
    out
}

/// One event of [`session_windows`]: a user and the event time in milliseconds.
pub type Event = (String, i64);

/// Parses an event line `user timestamp_ms`; `None` for anything else (blank lines, comments
/// starting with `#`, malformed lines).
pub fn parse_event(line: &str) -> Option<Event> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut parts = line.split_whitespace();
    let user = parts.next()?;
    let ts = parts.next()?.parse::<i64>().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((user.to_owned(), ts))
}

/// The built-in events of [`session_windows`]: three users, out of order, one late event.
pub const SAMPLE_EVENTS: &[&str] = &[
    "# user timestamp-ms",
    "alice 1000",
    "bob 1500",
    "alice 2500",
    "alice 2000",
    "bob 3000",
    "carol 4000",
    "alice 9000",
    "bob 12000",
    "alice 10500",
    "carol 15000",
    "alice 1200",
    "bob 13000",
    "carol 21000",
];

/// A watermark after every event (the highest timestamp seen minus the bound, minus one), as
/// the source of Flink's `SessionWindowing` emits them: with a source of parallelism 1 which
/// events are late is then fixed by the input alone.
#[derive(Debug, Clone)]
pub struct PerEventWatermarks {
    bound: i64,
    max: i64,
}

impl PerEventWatermarks {
    /// Watermarks trailing the highest timestamp by `bound_ms`.
    pub fn new(bound_ms: i64) -> Self {
        PerEventWatermarks {
            bound: bound_ms,
            max: MIN_WATERMARK,
        }
    }
}

impl WatermarkGenerator<Event> for PerEventWatermarks {
    fn on_event(&mut self, _: &Event, timestamp: i64, output: &mut WatermarkOutput) {
        self.max = self.max.max(timestamp);
        output.emit_watermark(self.max.saturating_sub(self.bound).saturating_sub(1));
    }
    fn on_periodic_emit(&mut self, _: &mut WatermarkOutput) {}
}

/// Counts a session's events.
#[derive(Debug, Clone, Copy)]
struct CountEvents;

impl AggregateFunction<Event> for CountEvents {
    type Acc = u64;
    type Output = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _: Event, acc: &mut u64) {
        *acc += 1;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// Session windows over out-of-order events with a late-data side output (after Flink's
/// `SessionWindowing` example).
///
/// Input: lines `user timestamp_ms` from `--input PATH` (repeatable, read at parallelism 1;
/// blank, `#` and malformed lines are skipped), or [`SAMPLE_EVENTS`]. Watermarks follow every
/// event, `--out-of-orderness MS` (default 1000) behind the highest timestamp. A user's session
/// closes after `--gap MS` (default 3000) without events; `--allowed-lateness MS` (default 0)
/// keeps a closed session open for late events, each of which emits the session again with its
/// updated count. Output: `user start end count` per session firing (`--output FILE`, printed
/// if absent); events too late for any session: `user timestamp` (`--late-output FILE`,
/// printed with `late` if absent). `--parallelism N` for the windows.
pub fn session_windows(
    env: &mut StreamExecutionEnvironment,
    args: &JobArgs,
) -> Result<(), JobError> {
    args.expect_only(&[
        "input",
        "output",
        "late-output",
        "parallelism",
        "gap",
        "out-of-orderness",
        "allowed-lateness",
    ])?;
    parallelism(env, args)?;
    env.set_job_name("Session windows");
    let gap = positive(args, "gap", 3_000)?;
    let bound = args.parse::<u64>("out-of-orderness")?.unwrap_or(1_000) as i64;
    let lateness = args.parse::<u64>("allowed-lateness")?.unwrap_or(0);
    let lines = if args.get_all("input").is_empty() {
        env.from_collection(SAMPLE_EVENTS.iter().map(|l| l.to_string()).collect())
            .name("Sample events")
            .set_parallelism(1)
    } else {
        input_lines(env, args)
    };
    let late = OutputTag::<Event>::new("late-events");
    let sessions = lines
        .flat_map(|line: String, out: &mut dyn Collector<Event>| {
            if let Some(event) = parse_event(&line) {
                out.collect(event);
            }
        })
        .name("Parse")
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_generator(move || PerEventWatermarks::new(bound))
                .with_timestamp_assigner(|e: &Event, _| e.1),
        )
        .set_parallelism(1)
        .key_by_ref(|e: &Event| &e.0)
        .window(EventTimeSessionWindows::with_gap(Duration::from_millis(
            gap,
        )))
        .allowed_lateness(Duration::from_millis(lateness))
        .side_output_late_data(&late)
        .aggregate_with(
            CountEvents,
            |user: &String,
             ctx: &WindowContext,
             counts: &[u64],
             out: &mut dyn Collector<String>| {
                let w = ctx.window();
                for count in counts {
                    out.collect(format!("{user} {} {} {count}", w.start, w.end));
                }
            },
        )
        .name("Sessions");
    let late_lines = sessions
        .get_side_output(&late)
        .map(|(user, ts): Event| format!("{user} {ts}"))
        .name("Late events");
    emit(sessions, args, "output", "Sessions");
    emit(late_lines, args, "late-output", "Late");
    Ok(())
}

/// The exact output of [`session_windows`] without allowed lateness, for events in input order:
/// the sessions as `user start end count` (sorted) and the late events as `user timestamp` (in
/// order). An event is late when the watermark before it (the highest earlier timestamp minus
/// `bound + 1`; an event's own watermark follows it, as in Flink) has passed the end of its own
/// session window `[ts, ts + gap)`; events are assumed not to merge into a session that is
/// still open while being late for their own window.
pub fn session_windows_reference(
    events: &[Event],
    gap: i64,
    bound: i64,
) -> (Vec<String>, Vec<String>) {
    let mut max = MIN_WATERMARK;
    let mut on_time: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut late = Vec::new();
    for (user, ts) in events {
        let watermark = max.saturating_sub(bound).saturating_sub(1);
        max = max.max(*ts);
        if ts + gap - 1 <= watermark {
            late.push(format!("{user} {ts}"));
        } else {
            on_time.entry(user).or_default().push(*ts);
        }
    }
    let mut sessions = Vec::new();
    for (user, mut stamps) in on_time {
        stamps.sort_unstable();
        let mut iter = stamps.into_iter();
        let Some(first) = iter.next() else { continue };
        let (mut start, mut end, mut count) = (first, first + gap, 1u64);
        for ts in iter {
            // Flink's `TimeWindow.intersects`: windows that touch merge too.
            if ts <= end {
                end = end.max(ts + gap);
                count += 1;
            } else {
                sessions.push(format!("{user} {start} {end} {count}"));
                (start, end, count) = (ts, ts + gap, 1);
            }
        }
        sessions.push(format!("{user} {start} {end} {count}"));
    }
    sessions.sort();
    (sessions, late)
}

/// The event time of line `index` of [`windowed_wordcount`] for `seed`: 10 ms per line, up to
/// [`WINDOWED_JITTER_MS`] later, so lines arrive out of order.
pub fn line_event_time(seed: u64, index: u64) -> i64 {
    let mut rng = rflink::SplitMix64::for_index(seed ^ 0x7469_6d65, index);
    (index as i64) * 10 + rng.gen_range(WINDOWED_JITTER_MS as u64 + 1) as i64
}

/// How much later than its place a line of [`windowed_wordcount`] may be stamped.
pub const WINDOWED_JITTER_MS: i64 = 40;

/// WordCount over event-time tumbling windows, checkpointed, with exactly-once output: the
/// generated text of [`crate::streaming_wordcount`] (`--lines N`, `--seed S`,
/// `--lines-per-second R`), line `n` stamped by [`line_event_time`] (out of order by up to
/// 40 ms; watermarks 100 ms behind, so no line is late), words counted per
/// `--window-ms MS` (default 1000) tumbling window. Output: `word window_end count` per window
/// and word, to `--output DIR` exactly-once (`rflink::sinks::read_committed_parts`), printed if
/// absent. `--checkpoint-interval MS` (default 500), `--parallelism N`.
pub fn windowed_wordcount(
    env: &mut StreamExecutionEnvironment,
    args: &JobArgs,
) -> Result<(), JobError> {
    args.expect_only(&[
        "lines",
        "seed",
        "lines-per-second",
        "checkpoint-interval",
        "window-ms",
        "output",
        "parallelism",
    ])?;
    parallelism(env, args)?;
    env.set_job_name("Windowed WordCount");
    env.set_runtime_mode(rflink::RuntimeMode::Streaming);
    let interval = args.parse::<u64>("checkpoint-interval")?.unwrap_or(500);
    env.enable_checkpointing(Duration::from_millis(interval.max(10)));
    let lines = args.parse::<u64>("lines")?.unwrap_or(100_000);
    let seed = args.parse::<u64>("seed")?.unwrap_or(7);
    let window = positive(args, "window-ms", 1_000)?;
    let rate = args.parse::<u64>("lines-per-second")?;
    let stamped = env
        .from_generator(Some(lines), seed, move |rng, n| {
            (crate::generated_line(rng), line_event_time(seed, n))
        })
        .name("Generated text");
    let stamped = crate::throttled(stamped, rate);
    let counts = stamped
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(100))
                .with_timestamp_assigner(|line: &(String, i64), _| line.1),
        )
        .flat_map(|(line, _): (String, i64), out| tokenize(&line, |w| out.collect((w, 1u64))))
        .name("Tokenizer")
        .key_by_ref(|pair: &(String, u64)| &pair.0)
        .window(TumblingEventTimeWindows::of(Duration::from_millis(window)))
        .reduce_with(
            |a: (String, u64), b: (String, u64)| (a.0, a.1 + b.1),
            |word: &String,
             ctx: &WindowContext,
             sums: &[(String, u64)],
             out: &mut dyn Collector<String>| {
                for (_, n) in sums {
                    out.collect(format!("{word} {} {n}", ctx.window().end));
                }
            },
        )
        .name("Window counts");
    match args.get("output") {
        Some(path) => {
            counts.write_as_text(path).name("Text sink");
        }
        None => {
            counts.print().name("Print sink");
        }
    }
    Ok(())
}

/// The exact output of [`windowed_wordcount`] for `lines` lines of `seed` and `window_ms`
/// windows, sorted.
pub fn windowed_wordcount_reference(seed: u64, lines: u64, window_ms: i64) -> Vec<String> {
    let mut counts: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for (index, line) in crate::generated_text(seed, lines).iter().enumerate() {
        let ts = line_event_time(seed, index as u64);
        let end = ts.div_euclid(window_ms) * window_ms + window_ms;
        tokenize(line, |w| *counts.entry((w, end)).or_insert(0) += 1);
    }
    let mut out: Vec<String> = counts
        .into_iter()
        .map(|((word, end), n)| format!("{word} {end} {n}"))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_malformed_lines_are_skipped() {
        assert_eq!(parse_event(" alice 12 "), Some(("alice".into(), 12)));
        assert_eq!(parse_event("bob -5"), Some(("bob".into(), -5)));
        for bad in ["", "# c", "alice", "alice x", "alice 1 2"] {
            assert_eq!(parse_event(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_sample_has_sessions_and_one_late_event() {
        let events: Vec<Event> = SAMPLE_EVENTS
            .iter()
            .filter_map(|l| parse_event(l))
            .collect();
        let (sessions, late) = session_windows_reference(&events, 3_000, 1_000);
        assert_eq!(late, vec!["alice 1200".to_owned()]);
        assert!(
            sessions.contains(&"alice 1000 5500 3".to_owned()),
            "{sessions:?}"
        );
    }

    #[test]
    fn the_window_wordcount_reference_fires_every_slide() {
        let text = "a a a a a b b\na a";
        let reference = window_wordcount_reference(text, 3, 2);
        assert_eq!(reference.get("a"), Some(&vec![2, 3, 3]));
        assert_eq!(reference.get("b"), Some(&vec![2]));
    }
}
