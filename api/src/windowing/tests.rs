//! Window tests: every result compared with a sequential reference computed here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::task::{CheckpointBarrier, VertexContext, VertexInstance};
use crate::testing::{take_collected, ExchangeMode, LocalExecutor};
use crate::time::{WatermarkGenerator, WatermarkOutput, WatermarkStrategy};
use crate::{
    Collector, DataStream, KeyedContext, KeyedProcessFunction, OutputTag, SinkFunction,
    SourceFunction, SourceStatus, SplitMix64, StreamExecutionEnvironment, StreamGraph,
};

/// `(key, value, timestamp)`.
type Event = (String, u64, i64);
/// `(key, window start, window end, value)`.
type Row = (String, i64, i64, u64);

const MODES: [ExchangeMode; 3] = [
    ExchangeMode::Typed,
    ExchangeMode::Serialized,
    ExchangeMode::Mixed,
];

/// Out-of-order events: timestamps rise by `step` per event with a jitter below `disorder`,
/// starting below zero (negative window starts). Every event is at most `disorder` behind the
/// highest timestamp before it, so a bounded out-of-orderness of `disorder` makes none late.
fn events(n: usize, seed: u64, keys: u64, step: i64, disorder: i64) -> Vec<Event> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let key = format!("k{}", rng.gen_range(keys));
            let value = 1 + rng.gen_range(100);
            let jitter = rng.gen_range(disorder as u64) as i64;
            (key, value, -2_000 + i as i64 * step - jitter)
        })
        .collect()
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

fn start_of(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

/// Sums per (key, window) of tumbling windows.
fn reference_tumbling(events: &[Event], size: i64) -> Vec<Row> {
    reference_sliding(events, size, size)
}

fn reference_sliding(events: &[Event], size: i64, slide: i64) -> Vec<Row> {
    let mut sums: BTreeMap<(String, i64, i64), u64> = BTreeMap::new();
    for (key, value, ts) in events {
        let mut start = start_of(*ts, slide);
        while start > ts - size {
            *sums.entry((key.clone(), start, start + size)).or_default() += value;
            start -= slide;
        }
    }
    sums.into_iter()
        .map(|((k, s, e), v)| (k, s, e, v))
        .collect()
}

/// Sessions per key: `[t, t + gap)` windows merged when they overlap or touch.
fn reference_sessions(events: &[Event], gap: i64) -> Vec<Row> {
    let mut by_key: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for (key, value, ts) in events {
        by_key.entry(key.clone()).or_default().push((*ts, *value));
    }
    let mut rows = Vec::new();
    for (key, mut items) in by_key {
        items.sort_unstable();
        let mut current: Option<(i64, i64, u64)> = None;
        for (ts, value) in items {
            current = match current {
                Some((s, e, v)) if ts <= e => Some((s, e.max(ts + gap), v + value)),
                Some((s, e, v)) => {
                    rows.push((key.clone(), s, e, v));
                    Some((ts, ts + gap, value))
                }
                None => Some((ts, ts + gap, value)),
            };
        }
        if let Some((s, e, v)) = current {
            rows.push((key.clone(), s, e, v));
        }
    }
    sorted(rows)
}

fn timed(
    env: &mut StreamExecutionEnvironment,
    events: Vec<Event>,
    bound: i64,
) -> DataStream<Event> {
    env.from_collection(events)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(bound as u64))
                .with_timestamp_assigner(|e: &Event, _| e.2),
        )
}

/// Sums the values and carries the key: `aggregate` alone must not lose the key.
#[derive(Clone)]
struct KeyedSum;

impl AggregateFunction<Event> for KeyedSum {
    type Acc = (String, u64);
    type Output = (String, u64);
    fn create_accumulator(&self) -> (String, u64) {
        (String::new(), 0)
    }
    fn add(&self, value: Event, acc: &mut (String, u64)) {
        acc.0 = value.0;
        acc.1 += value.1;
    }
    fn get_result(&self, acc: &(String, u64)) -> (String, u64) {
        acc.clone()
    }
    fn merge(&self, a: (String, u64), b: (String, u64)) -> (String, u64) {
        (if a.0.is_empty() { b.0 } else { a.0 }, a.1 + b.1)
    }
}

// `&K` of a window function with `String` keys.
#[allow(clippy::ptr_arg)]
fn bounds_of_sum(key: &String, ctx: &WindowContext, sums: &[u64], out: &mut dyn Collector<Row>) {
    let w = ctx.window();
    out.collect((key.clone(), w.start, w.end, sums.iter().sum()));
}

// `&K` of a window function with `String` keys.
#[allow(clippy::ptr_arg)]
fn bounds_of_events(
    key: &String,
    ctx: &WindowContext,
    elements: &[Event],
    out: &mut dyn Collector<Row>,
) {
    let w = ctx.window();
    // Every element belongs to the window.
    for e in elements {
        assert!(
            e.2 >= w.start && e.2 < w.end || w.is_global(),
            "{e:?} in {w:?}"
        );
        assert_eq!(&e.0, key);
    }
    out.collect((
        key.clone(),
        w.start,
        w.end,
        elements.iter().map(|e| e.1).sum(),
    ));
}

/// For processing-time windows: the elements' timestamps have nothing to do with the window.
// `&K` of a window function with `String` keys.
#[allow(clippy::ptr_arg)]
fn bounds_of_values(
    key: &String,
    ctx: &WindowContext,
    elements: &[Event],
    out: &mut dyn Collector<Row>,
) {
    let w = ctx.window();
    assert!(ctx.current_processing_time() > w.max_timestamp() - 1_000);
    out.collect((
        key.clone(),
        w.start,
        w.end,
        elements.iter().map(|e| e.1).sum(),
    ));
}

/// Records each window result with its timestamp (which must be the window's max timestamp).
#[derive(Clone)]
struct StampCheck;

impl KeyedProcessFunction<String, Row, (Row, i64)> for StampCheck {
    fn process_element(
        &mut self,
        row: Row,
        ctx: &mut KeyedContext<'_, String>,
        out: &mut dyn Collector<(Row, i64)>,
    ) {
        let ts = ctx.timestamp().unwrap_or(i64::MIN);
        out.collect((row, ts));
    }
}

/// Runs every window function over `assigner` at parallelism 1..=4 and every exchange mode,
/// comparing each window's result with `expected`.
fn check_all_functions<A: WindowAssigner + Clone>(
    name: &str,
    events: &[Event],
    bound: i64,
    assigner: A,
    expected: &[Row],
) {
    let pairs: Vec<(String, u64)> = {
        let mut p: Vec<(String, u64)> = expected.iter().map(|r| (r.0.clone(), r.3)).collect();
        p.sort();
        p
    };
    for parallelism in 1..=4u32 {
        for mode in MODES {
            let tag = format!("{name}-{parallelism}-{mode:?}");
            let mut env = StreamExecutionEnvironment::new();
            env.set_parallelism(parallelism);
            let keyed = timed(&mut env, events.to_vec(), bound).key_by(|e: &Event| e.0.clone());
            keyed
                .window(assigner.clone())
                .process(bounds_of_events)
                .collect(&format!("{tag}-process"));
            keyed
                .window(assigner.clone())
                .reduce_with(
                    |a: Event, b: Event| (a.0, a.1 + b.1, a.2.max(b.2)),
                    |key: &String,
                     ctx: &WindowContext,
                     e: &[Event],
                     out: &mut dyn Collector<Row>| {
                        let w = ctx.window();
                        out.collect((key.clone(), w.start, w.end, e[0].1));
                    },
                )
                .key_by(|r: &Row| r.0.clone())
                .process(StampCheck)
                .collect(&format!("{tag}-reduce-with"));
            keyed
                .window(assigner.clone())
                .aggregate_with(
                    KeyedSum,
                    |key: &String,
                     ctx: &WindowContext,
                     e: &[(String, u64)],
                     out: &mut dyn Collector<Row>| {
                        bounds_of_sum(key, ctx, &[e[0].1], out)
                    },
                )
                .collect(&format!("{tag}-aggregate-with"));
            keyed
                .window(assigner.clone())
                .aggregate(KeyedSum)
                .collect(&format!("{tag}-aggregate"));
            keyed
                .window(assigner.clone())
                .sum(|e: &mut Event| &mut e.1)
                .collect(&format!("{tag}-sum"));
            keyed
                .window(assigner.clone())
                .reduce(|a: Event, b: Event| (a.0, a.1 + b.1, a.2))
                .collect(&format!("{tag}-reduce"));
            let graph = env.stream_graph().unwrap();
            LocalExecutor::new(mode).run(&graph).unwrap();

            assert_eq!(
                sorted(take_collected::<Row>(&format!("{tag}-process"))),
                expected,
                "{tag} process"
            );
            let stamped = take_collected::<(Row, i64)>(&format!("{tag}-reduce-with"));
            for (row, ts) in &stamped {
                assert_eq!(
                    *ts,
                    TimeWindow::new(row.1, row.2).max_timestamp(),
                    "{tag} {row:?}"
                );
            }
            assert_eq!(
                sorted(stamped.into_iter().map(|(r, _)| r).collect()),
                expected,
                "{tag} reduce_with"
            );
            assert_eq!(
                sorted(take_collected::<Row>(&format!("{tag}-aggregate-with"))),
                expected,
                "{tag} aggregate_with"
            );
            let mut aggregated = take_collected::<(String, u64)>(&format!("{tag}-aggregate"));
            aggregated.sort();
            assert_eq!(aggregated, pairs, "{tag} aggregate");
            for suffix in ["sum", "reduce"] {
                let mut got: Vec<(String, u64)> =
                    take_collected::<Event>(&format!("{tag}-{suffix}"))
                        .into_iter()
                        .map(|e| (e.0, e.1))
                        .collect();
                got.sort();
                assert_eq!(got, pairs, "{tag} {suffix}");
            }
        }
    }
}

#[test]
fn window_starts_are_correct_for_negative_timestamps_and_offsets() {
    assert_eq!(TimeWindow::get_window_start_with_offset(-1, 0, 10), -10);
    assert_eq!(TimeWindow::get_window_start_with_offset(-10, 0, 10), -10);
    assert_eq!(TimeWindow::get_window_start_with_offset(-11, 0, 10), -20);
    assert_eq!(TimeWindow::get_window_start_with_offset(9, 0, 10), 0);
    assert_eq!(TimeWindow::get_window_start_with_offset(2, 3, 10), -7);
    assert_eq!(TimeWindow::get_window_start_with_offset(3, 3, 10), 3);
    assert_eq!(TimeWindow::get_window_start_with_offset(2, -3, 10), -3);
    assert_eq!(TimeWindow::new(0, 10).max_timestamp(), 9);
    assert_eq!(TimeWindow::global().max_timestamp(), i64::MAX);

    let mut out = Vec::new();
    TumblingEventTimeWindows::of(Duration::from_millis(10))
        .with_offset(Duration::from_millis(3))
        .assign_windows(2, &mut out);
    assert_eq!(out, vec![TimeWindow::new(-7, 3)]);
    out.clear();
    SlidingEventTimeWindows::of(Duration::from_millis(10), Duration::from_millis(5))
        .assign_windows(-3, &mut out);
    assert_eq!(out, vec![TimeWindow::new(-5, 5), TimeWindow::new(-10, 0)]);
    out.clear();
    SlidingEventTimeWindows::of(Duration::from_millis(10), Duration::from_millis(3))
        .assign_windows(0, &mut out);
    assert_eq!(
        out,
        vec![
            TimeWindow::new(0, 10),
            TimeWindow::new(-3, 7),
            TimeWindow::new(-6, 4),
            TimeWindow::new(-9, 1)
        ]
    );
    // Extreme timestamps neither panic nor loop.
    for ts in [i64::MIN + 1, i64::MAX] {
        out.clear();
        SlidingEventTimeWindows::of(Duration::from_millis(10), Duration::from_millis(3))
            .assign_windows(ts, &mut out);
        assert!(out.len() <= 4);
        out.clear();
        TumblingEventTimeWindows::of(Duration::from_millis(7)).assign_windows(ts, &mut out);
        assert_eq!(out.len(), 1);
    }
    // Codec round trip and truncation.
    let w = TimeWindow::new(-5, 17);
    let bytes = crate::codec::encode_to_vec(&w);
    assert_eq!(crate::codec::decode_exact::<TimeWindow>(&bytes).unwrap(), w);
    for cut in 0..bytes.len() {
        assert!(crate::codec::decode_exact::<TimeWindow>(&bytes[..cut]).is_err());
    }
}

#[test]
fn session_windows_merge_overlapping_and_touching_windows() {
    let w = TimeWindow::new;
    let merged = merge_windows(vec![w(10, 20), w(0, 5), w(5, 8), w(30, 40), w(15, 25)]);
    assert_eq!(
        merged,
        vec![
            (w(0, 8), vec![w(0, 5), w(5, 8)]),
            (w(10, 25), vec![w(10, 20), w(15, 25)])
        ]
    );
    assert!(merge_windows(vec![w(0, 5), w(6, 9)]).is_empty());
}

#[test]
fn invalid_assigner_parameters_fail_the_graph() {
    let mut env = StreamExecutionEnvironment::new();
    env.from_collection(vec![(String::new(), 1u64, 0i64)])
        .key_by(|e: &Event| e.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::ZERO))
        .sum(|e: &mut Event| &mut e.1)
        .collect("invalid-assigner");
    let err = env.stream_graph().unwrap_err().to_string();
    assert!(err.contains("TumblingEventTimeWindows"), "{err}");
    let mut env = StreamExecutionEnvironment::new();
    env.from_collection(vec![(String::new(), 1u64, 0i64)])
        .key_by(|e: &Event| e.0.clone())
        .window(
            SlidingEventTimeWindows::of(Duration::from_secs(1), Duration::from_millis(100))
                .with_offset(Duration::from_millis(100)),
        )
        .sum(|e: &mut Event| &mut e.1)
        .collect("invalid-assigner");
    assert!(env.stream_graph().is_err());
    let mut env = StreamExecutionEnvironment::new();
    env.from_collection(vec![(String::new(), 1u64, 0i64)])
        .key_by(|e: &Event| e.0.clone())
        .window(EventTimeSessionWindows::with_gap(Duration::ZERO))
        .sum(|e: &mut Event| &mut e.1)
        .collect("invalid-assigner");
    assert!(env.stream_graph().is_err());
}

#[test]
fn tumbling_event_time_windows_match_the_reference() {
    let events = events(400, 1, 5, 7, 40);
    let expected = reference_tumbling(&events, 100);
    assert!(expected.iter().any(|r| r.1 < 0), "negative windows covered");
    check_all_functions(
        "tumbling",
        &events,
        40,
        TumblingEventTimeWindows::of(Duration::from_millis(100)),
        &expected,
    );
}

#[test]
fn tumbling_windows_with_an_offset_match_the_reference() {
    let events = events(200, 8, 3, 7, 30);
    let shifted: Vec<Event> = events
        .iter()
        .map(|e| (e.0.clone(), e.1, e.2 - 25))
        .collect();
    let expected: Vec<Row> = reference_tumbling(&shifted, 100)
        .into_iter()
        .map(|(k, s, e, v)| (k, s + 25, e + 25, v))
        .collect();
    check_all_functions(
        "tumbling-offset",
        &events,
        30,
        TumblingEventTimeWindows::of(Duration::from_millis(100))
            .with_offset(Duration::from_millis(25)),
        &expected,
    );
}

#[test]
fn sliding_event_time_windows_match_the_reference() {
    let events = events(300, 2, 4, 9, 50);
    let expected = reference_sliding(&events, 120, 40);
    check_all_functions(
        "sliding",
        &events,
        50,
        SlidingEventTimeWindows::of(Duration::from_millis(120), Duration::from_millis(40)),
        &expected,
    );
}

#[test]
fn session_windows_match_the_reference() {
    // Bursts per key with gaps: sessions merge out-of-order elements.
    let mut rng = SplitMix64::new(5);
    let mut events: Vec<Event> = Vec::new();
    let mut t = -500i64;
    for _ in 0..300 {
        t += if rng.gen_range(10) == 0 { 150 } else { 6 };
        let key = format!("s{}", rng.gen_range(4));
        events.push((key, 1 + rng.gen_range(50), t - rng.gen_range(30) as i64));
    }
    let expected = reference_sessions(&events, 40);
    // Sessions of several elements, and several sessions per key.
    assert!(
        expected.len() > 8 && expected.len() < events.len() / 2,
        "{}",
        expected.len()
    );
    check_all_functions(
        "sessions",
        &events,
        30,
        EventTimeSessionWindows::with_gap(Duration::from_millis(40)),
        &expected,
    );
}

/// Emits the watermark carried by each event (its fourth field) before the event: lateness
/// becomes exact at parallelism 1.
struct Punctuated;

impl WatermarkGenerator<(String, u64, i64, i64)> for Punctuated {
    fn on_event(&mut self, e: &(String, u64, i64, i64), _: i64, out: &mut WatermarkOutput) {
        if e.3 > i64::MIN {
            out.emit_watermark(e.3);
        }
    }
    fn on_periodic_emit(&mut self, _: &mut WatermarkOutput) {}
}

fn punctuated(
    env: &mut StreamExecutionEnvironment,
    input: Vec<(String, u64, i64, i64)>,
) -> DataStream<Event> {
    env.from_collection(input)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_generator(|| Punctuated)
                .with_timestamp_assigner(|e: &(String, u64, i64, i64), _| e.2),
        )
        .map(|e: (String, u64, i64, i64)| (e.0, e.1, e.2))
}

#[test]
fn allowed_lateness_updates_windows_and_late_records_go_to_the_side_output() {
    let n = i64::MIN;
    let input: Vec<(String, u64, i64, i64)> = vec![
        ("a".into(), 1, 1, n),
        ("a".into(), 2, 5, n),
        // Watermark 10 fires [0, 10) with 3.
        ("a".into(), 4, 12, 10),
        // Late but allowed: [0, 10) fires again with 11.
        ("a".into(), 8, 3, 10),
        // Watermark 14 = 9 + 5 clears [0, 10).
        ("a".into(), 16, 20, 14),
        // Too late: the side output.
        ("a".into(), 32, 7, 14),
        ("b".into(), 64, 8, 14),
        // On time for [10, 20).
        ("a".into(), 128, 13, 14),
    ];
    for mode in MODES {
        let tag = format!("lateness-{mode:?}");
        let mut env = StreamExecutionEnvironment::new();
        let late = OutputTag::<Event>::new("late");
        let windows = punctuated(&mut env, input.clone())
            .key_by(|e: &Event| e.0.clone())
            .window(TumblingEventTimeWindows::of(Duration::from_millis(10)))
            .allowed_lateness(Duration::from_millis(5))
            .side_output_late_data(&late)
            .process(bounds_of_events);
        windows.collect(&format!("{tag}-main"));
        windows
            .get_side_output(&late)
            .collect(&format!("{tag}-late"));
        // Without lateness, the late-but-allowed element is dropped.
        punctuated(&mut env, input.clone())
            .key_by(|e: &Event| e.0.clone())
            .window(TumblingEventTimeWindows::of(Duration::from_millis(10)))
            .reduce_with(
                |a: Event, b: Event| (a.0, a.1 + b.1, a.2),
                |key: &String, ctx: &WindowContext, e: &[Event], out: &mut dyn Collector<Row>| {
                    let w = ctx.window();
                    out.collect((key.clone(), w.start, w.end, e[0].1));
                },
            )
            .collect(&format!("{tag}-strict"));
        LocalExecutor::new(mode)
            .run(&env.stream_graph().unwrap())
            .unwrap();
        let main = take_collected::<Row>(&format!("{tag}-main"));
        // In firing order: the update follows the first firing.
        assert_eq!(
            main,
            vec![
                ("a".into(), 0, 10, 3),
                ("a".into(), 0, 10, 11),
                ("a".into(), 10, 20, 132),
                ("a".into(), 20, 30, 16),
            ],
            "{mode:?}"
        );
        let mut late_records = take_collected::<Event>(&format!("{tag}-late"));
        late_records.sort();
        assert_eq!(
            late_records,
            vec![("a".into(), 32, 7), ("b".into(), 64, 8)],
            "{mode:?}"
        );
        assert_eq!(
            take_collected::<Row>(&format!("{tag}-strict")),
            vec![
                ("a".into(), 0, 10, 3),
                ("a".into(), 10, 20, 132),
                ("a".into(), 20, 30, 16),
            ],
            "{mode:?}"
        );
    }
}

#[test]
fn late_session_elements_and_purging_triggers() {
    let n = i64::MIN;
    let input: Vec<(String, u64, i64, i64)> = vec![
        ("a".into(), 1, 100, n),
        ("a".into(), 2, 105, n),
        // Watermark 200 fires the session [100, 115).
        ("a".into(), 4, 300, 200),
        // Late: its own session [50, 60) is behind the watermark.
        ("a".into(), 8, 50, 200),
        // Bridges nothing, on time: merges into [300, 310) -> [300, 315).
        ("a".into(), 16, 305, 200),
    ];
    let mut env = StreamExecutionEnvironment::new();
    let late = OutputTag::<Event>::new("late-sessions");
    let sessions = punctuated(&mut env, input)
        .key_by(|e: &Event| e.0.clone())
        .window(EventTimeSessionWindows::with_gap(Duration::from_millis(10)))
        .side_output_late_data(&late)
        .process(bounds_of_events);
    sessions.collect("late-sessions-main");
    sessions
        .get_side_output(&late)
        .collect("late-sessions-late");
    LocalExecutor::new(ExchangeMode::Serialized)
        .run(&env.stream_graph().unwrap())
        .unwrap();
    assert_eq!(
        take_collected::<Row>("late-sessions-main"),
        vec![("a".into(), 100, 115, 3), ("a".into(), 300, 315, 20)]
    );
    assert_eq!(
        take_collected::<Event>("late-sessions-late"),
        vec![("a".into(), 8, 50)]
    );
}

/// Per key, in order: the values of every complete chunk of `size`.
fn reference_count_windows(
    input: &[(String, u64)],
    size: usize,
    slide: usize,
) -> Vec<(String, u64)> {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut out = Vec::new();
    for (key, value) in input {
        let values = seen.entry(key.clone()).or_default();
        values.push(*value);
        if values.len().is_multiple_of(slide) {
            let from = values.len().saturating_sub(size);
            out.push((key.clone(), values[from..].iter().sum()));
        }
    }
    out.sort();
    out
}

#[test]
fn count_windows_fire_every_n_records_of_a_key() {
    let mut rng = SplitMix64::new(9);
    let input: Vec<(String, u64)> = (0..500)
        .map(|_| (format!("w{}", rng.gen_range(6)), 1 + rng.gen_range(9)))
        .collect();
    let tumbling = reference_count_windows(&input, 5, 5);
    let sliding = reference_count_windows(&input, 10, 3);
    let purging = reference_count_windows(&input, 4, 4);
    for parallelism in 1..=4u32 {
        for mode in MODES {
            let tag = format!("count-{parallelism}-{mode:?}");
            let mut env = StreamExecutionEnvironment::new();
            env.set_parallelism(parallelism);
            // One source subtask keeps each key's order, as the reference assumes.
            let keyed = env
                .from_collection(input.clone())
                .set_parallelism(1)
                .key_by(|p: &(String, u64)| p.0.clone());
            keyed
                .count_window(5)
                .sum(|p: &mut (String, u64)| &mut p.1)
                .collect(&format!("{tag}-tumbling"));
            keyed
                .count_window_sliding(10, 3)
                .sum(|p: &mut (String, u64)| &mut p.1)
                .collect(&format!("{tag}-sliding"));
            keyed
                .window(GlobalWindows::create())
                .trigger(PurgingTrigger::of(CountTrigger::of(4)))
                .process(
                    |key: &String,
                     ctx: &WindowContext,
                     e: &[(String, u64)],
                     out: &mut dyn Collector<(String, u64)>| {
                        assert!(ctx.window().is_global());
                        assert_eq!(e.len(), 4);
                        out.collect((key.clone(), e.iter().map(|p| p.1).sum()));
                    },
                )
                .collect(&format!("{tag}-process"));
            // Global windows never fire by default.
            keyed
                .window(GlobalWindows::create())
                .sum(|p: &mut (String, u64)| &mut p.1)
                .collect(&format!("{tag}-never"));
            LocalExecutor::new(mode)
                .run(&env.stream_graph().unwrap())
                .unwrap();
            for (suffix, expected) in [
                ("tumbling", &tumbling),
                ("sliding", &sliding),
                ("process", &purging),
            ] {
                let mut got = take_collected::<(String, u64)>(&format!("{tag}-{suffix}"));
                got.sort();
                assert_eq!(&got, expected, "{tag} {suffix}");
            }
            assert!(take_collected::<(String, u64)>(&format!("{tag}-never")).is_empty());
        }
    }
}

#[test]
fn event_time_windows_need_timestamps() {
    let mut env = StreamExecutionEnvironment::new();
    env.from_collection(vec![("a".to_string(), 1u64, 5i64)])
        .key_by(|e: &Event| e.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::from_secs(1)))
        .sum(|e: &mut Event| &mut e.1)
        .collect("no-timestamps");
    let err = LocalExecutor::new(ExchangeMode::Typed)
        .run(&env.stream_graph().unwrap())
        .unwrap_err();
    assert!(err.contains("Record has no timestamp"), "{err}");
    assert!(
        err.contains("did you forget to call assign_timestamps_and_watermarks?"),
        "{err}"
    );
    assert!(take_collected::<Event>("no-timestamps").is_empty());
}

/// A source that emits nothing for `polls` polls (counting them in `counter`), then finishes.
struct SilentSource {
    polls: usize,
    counter: Arc<AtomicUsize>,
}

impl SourceFunction<Event> for SilentSource {
    fn poll_next(
        &mut self,
        _: &mut dyn Collector<Event>,
        _: usize,
    ) -> Result<SourceStatus, String> {
        let done = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(if done >= self.polls {
            SourceStatus::Finished
        } else {
            SourceStatus::Idle
        })
    }
}

/// Notes how many polls the silent source had made when the first window result arrived.
struct FirstResult {
    counter: Arc<AtomicUsize>,
    seen_at: Arc<AtomicUsize>,
}

impl SinkFunction<Row> for FirstResult {
    fn invoke(&mut self, _: Row) -> Result<(), String> {
        let polls = self.counter.load(Ordering::SeqCst);
        let _ =
            self.seen_at
                .compare_exchange(usize::MAX, polls, Ordering::SeqCst, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn an_idle_input_does_not_hold_back_the_windows_of_a_union() {
    const SILENT_POLLS: usize = 400;
    let events = events(300, 4, 3, 5, 20);
    let expected = reference_tumbling(&events, 100);
    for idleness in [true, false] {
        let counter = Arc::new(AtomicUsize::new(0));
        let seen_at = Arc::new(AtomicUsize::new(usize::MAX));
        let tag = format!("idle-{idleness}");
        let mut env = StreamExecutionEnvironment::new();
        env.set_parallelism(2);
        let busy = timed(&mut env, events.clone(), 20);
        let source_counter = counter.clone();
        let mut strategy = WatermarkStrategy::<Event>::for_bounded_out_of_orderness(Duration::ZERO)
            .with_timestamp_assigner(|e: &Event, _| e.2);
        if idleness {
            strategy = strategy.with_idleness(Duration::from_millis(300));
        }
        let silent = env
            .add_source("silent", true, move || SilentSource {
                polls: SILENT_POLLS,
                counter: source_counter.clone(),
            })
            .set_parallelism(1)
            .assign_timestamps_and_watermarks(strategy);
        let windows = busy
            .union(&[silent])
            .key_by(|e: &Event| e.0.clone())
            .window(TumblingEventTimeWindows::of(Duration::from_millis(100)))
            .process(bounds_of_events);
        windows.collect(&tag);
        let (c, s) = (counter.clone(), seen_at.clone());
        windows.add_sink("first", move || FirstResult {
            counter: c.clone(),
            seen_at: s.clone(),
        });
        LocalExecutor::new(ExchangeMode::Mixed)
            .run(&env.stream_graph().unwrap())
            .unwrap();
        assert_eq!(sorted(take_collected::<Row>(&tag)), expected, "{tag}");
        let first = seen_at.load(Ordering::SeqCst);
        if idleness {
            assert!(
                first < SILENT_POLLS / 2,
                "windows fired while the input was idle: {first}"
            );
        } else {
            // The silent input holds the watermark back until it ends.
            assert!(first >= SILENT_POLLS, "{first}");
        }
    }
}

// ---- Driving window instances by hand: processing time, checkpoints. ----

fn vctx(graph: &StreamGraph, vertex: usize, attempt: u32) -> VertexContext {
    let v = &graph.plan_ref().vertices[vertex];
    VertexContext {
        subtask_index: 0,
        parallelism: v.parallelism,
        max_parallelism: v.max_parallelism,
        attempt_number: attempt,
        task_name: format!("{} (1/1)", v.name),
        checkpointing: true,
    }
}

/// The window vertex (window -> sink) of a two-vertex graph.
fn window_vertex(graph: &StreamGraph, attempt: u32) -> VertexInstance {
    assert_eq!(graph.plan_ref().vertices.len(), 2);
    graph
        .instantiate(1, vctx(graph, 1, attempt), Vec::new())
        .unwrap()
}

/// A record as a producer of a job with time sends it: timestamp, then the record.
fn timed_bytes<T: crate::Codec>(timestamp: i64, record: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    timestamp.encode(&mut bytes);
    record.encode(&mut bytes);
    bytes
}

#[test]
fn processing_time_windows_fire_on_the_processing_clock() {
    let mut env = StreamExecutionEnvironment::new();
    let keyed = env
        .from_collection(Vec::<Event>::new())
        .key_by(|e: &Event| e.0.clone());
    keyed
        .window(TumblingProcessingTimeWindows::of(Duration::from_millis(
            100,
        )))
        .process(bounds_of_values)
        .collect("ptime-tumbling");
    let graph = env.stream_graph().unwrap();
    let mut w = window_vertex(&graph, 0);
    w.open().unwrap();
    let rec = |w: &mut VertexInstance, key: &str, value: u64| {
        let e: Event = (key.into(), value, 0);
        w.process_record(0, &timed_bytes(i64::MIN, &e)).unwrap();
    };
    w.advance_processing_time(1_000).unwrap();
    rec(&mut w, "a", 1);
    rec(&mut w, "a", 2);
    w.advance_processing_time(1_050).unwrap();
    rec(&mut w, "b", 4);
    assert_eq!(w.next_processing_time(), Some(1_099));
    w.advance_processing_time(1_098).unwrap();
    w.flush().unwrap();
    assert!(take_collected::<Row>("ptime-tumbling").is_empty());
    w.advance_processing_time(1_099).unwrap();
    rec(&mut w, "a", 8);
    w.flush().unwrap();
    assert_eq!(
        sorted(take_collected::<Row>("ptime-tumbling")),
        vec![("a".into(), 1_000, 1_100, 3), ("b".into(), 1_000, 1_100, 4)]
    );
    // 1099 belongs to [1000, 1100) which has fired and been cleared: it starts a new state
    // for that window, which fires when its timer comes due again (at once: 1099 <= now).
    assert_eq!(w.next_processing_time(), Some(1_099));
    w.advance_processing_time(1_200).unwrap();
    w.flush().unwrap();
    assert_eq!(
        take_collected::<Row>("ptime-tumbling"),
        vec![("a".into(), 1_000, 1_100, 8)]
    );
    // Pending processing-time windows do not fire at the end of input.
    rec(&mut w, "c", 16);
    w.end_input().unwrap();
    w.finish_outputs().unwrap();
    w.close();
    assert!(take_collected::<Row>("ptime-tumbling").is_empty());
}

#[test]
fn processing_time_sliding_and_session_windows() {
    let mut env = StreamExecutionEnvironment::new();
    let keyed = env
        .from_collection(Vec::<Event>::new())
        .key_by(|e: &Event| e.0.clone());
    keyed
        .window(SlidingProcessingTimeWindows::of(
            Duration::from_millis(100),
            Duration::from_millis(50),
        ))
        .process(bounds_of_values)
        .collect("ptime-sliding");
    keyed
        .window(ProcessingTimeSessionWindows::with_gap(
            Duration::from_millis(30),
        ))
        .process(bounds_of_values)
        .collect("ptime-sessions");
    let graph = env.stream_graph().unwrap();
    // Vertices 1 and 2: the two window chains, fed the same records at the same times.
    let mut ws: Vec<VertexInstance> = (1..=2)
        .map(|v| {
            graph
                .instantiate(v, vctx(&graph, v, 0), Vec::new())
                .unwrap()
        })
        .collect();
    for w in &mut ws {
        w.open().unwrap();
    }
    let mut rec = |now: i64, key: &str, value: u64| {
        for w in &mut ws {
            w.advance_processing_time(now).unwrap();
            let e: Event = (key.into(), value, 0);
            w.process_record(0, &timed_bytes(i64::MIN, &e)).unwrap();
        }
    };
    rec(1_010, "a", 1);
    rec(1_030, "a", 2);
    rec(1_055, "a", 4); // the session grows to [1010, 1085)
    rec(1_120, "a", 8); // a new session
    for w in &mut ws {
        w.advance_processing_time(1_500).unwrap();
        w.end_input().unwrap();
        w.finish_outputs().unwrap();
        w.close();
    }
    assert_eq!(
        sorted(take_collected::<Row>("ptime-sliding")),
        vec![
            ("a".into(), 950, 1_050, 3),
            ("a".into(), 1_000, 1_100, 7),
            ("a".into(), 1_050, 1_150, 12),
            ("a".into(), 1_100, 1_200, 8),
        ]
    );
    assert_eq!(
        sorted(take_collected::<Row>("ptime-sessions")),
        vec![("a".into(), 1_010, 1_085, 7), ("a".into(), 1_120, 1_150, 8)]
    );
}

#[test]
fn processing_time_windows_run_on_the_local_executors_clock() {
    // The executor's clock starts at 0 and steps 50 ms per round; records arrive over many
    // rounds, so they spread over several 100 ms windows. Every record is counted once.
    let input: Vec<Event> = (0..300).map(|i| (format!("k{}", i % 3), 1, 0)).collect();
    let mut env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    env.from_collection(input)
        .key_by(|e: &Event| e.0.clone())
        .window(TumblingProcessingTimeWindows::of(Duration::from_millis(
            100,
        )))
        .process(bounds_of_values)
        .collect("ptime-executor");
    let mut executor = LocalExecutor::new(ExchangeMode::Typed);
    executor.poll_records = 4;
    executor.processing_time_start = 10_000;
    executor.run(&env.stream_graph().unwrap()).unwrap();
    let rows = take_collected::<Row>("ptime-executor");
    assert!(rows.len() > 3, "several windows: {rows:?}");
    for row in &rows {
        assert_eq!(row.2 - row.1, 100);
        assert!(row.1 >= 10_000);
    }
    // Windows still open at the end of input do not fire: at most every record is counted.
    let total: u64 = rows.iter().map(|r| r.3).sum();
    assert!(total <= 300 && total > 0, "{total}");
}

fn barrier(id: u64) -> CheckpointBarrier {
    CheckpointBarrier {
        id,
        timestamp: 1_700_000_000_000,
        savepoint: false,
    }
}

#[derive(Clone, Debug)]
enum Step {
    Record(Event),
    Watermark(i64),
}

fn feed(w: &mut VertexInstance, steps: &[Step]) {
    for step in steps {
        match step {
            Step::Record(e) => w.process_record(0, &timed_bytes(e.2, e)).unwrap(),
            Step::Watermark(wm) => w.process_watermark(*wm).unwrap(),
        }
    }
}

fn steps(seed: u64) -> Vec<Step> {
    let mut rng = SplitMix64::new(seed);
    let mut steps = Vec::new();
    let mut max = 0i64;
    for i in 0..200i64 {
        let ts = i * 5 - rng.gen_range(40) as i64;
        max = max.max(ts);
        steps.push(Step::Record((
            format!("k{}", rng.gen_range(4)),
            1 + rng.gen_range(20),
            ts,
        )));
        if i % 7 == 0 {
            // A watermark behind the maximum: some records come late, some within lateness.
            steps.push(Step::Watermark(max - 20));
        }
    }
    steps
}

/// Runs `steps` through the window vertex of `graph` (sink `sink`), uninterrupted and with a
/// snapshot and restore at every cut in `cuts`: the results must be the same.
fn check_restore(
    graph: &StreamGraph,
    sink: &str,
    late_sink: Option<&str>,
    steps: &[Step],
    cuts: &[usize],
) {
    let run_all = || {
        let mut w = window_vertex(graph, 0);
        w.open().unwrap();
        feed(&mut w, steps);
        w.end_input().unwrap();
        w.finish_outputs().unwrap();
        w.close();
        let late = late_sink.map(take_collected::<Event>).unwrap_or_default();
        (sorted(take_collected::<Row>(sink)), late)
    };
    let (expected, expected_late) = run_all();
    assert!(!expected.is_empty());
    for &cut in cuts {
        let mut first = window_vertex(graph, 0);
        first.open().unwrap();
        feed(&mut first, &steps[..cut]);
        let snapshot = first.snapshot(barrier(1)).unwrap();
        // The rest of the first attempt is lost (a failure).
        first.close();
        let mut rows = take_collected::<Row>(sink);
        let mut late = late_sink.map(take_collected::<Event>).unwrap_or_default();
        let mut second = window_vertex(graph, 1);
        second.restore(&snapshot).unwrap();
        second.open().unwrap();
        feed(&mut second, &steps[cut..]);
        second.end_input().unwrap();
        second.finish_outputs().unwrap();
        second.close();
        rows.extend(take_collected::<Row>(sink));
        late.extend(late_sink.map(take_collected::<Event>).unwrap_or_default());
        assert_eq!(sorted(rows), expected, "cut {cut}");
        late.sort();
        let mut expected_late = expected_late.clone();
        expected_late.sort();
        assert_eq!(late, expected_late, "cut {cut}");
    }
}

#[test]
fn restored_window_operators_give_the_results_of_an_uninterrupted_run() {
    let steps = steps(21);
    let cuts = [1, 17, 60, 121, steps.len() - 3];
    // Tumbling windows with lateness and a late side output, evaluated by a process function.
    let mut env = StreamExecutionEnvironment::new();
    let late = OutputTag::<Event>::new("late");
    let windows = env
        .from_collection(Vec::<Event>::new())
        .key_by(|e: &Event| e.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::from_millis(50)))
        .allowed_lateness(Duration::from_millis(15))
        .side_output_late_data(&late)
        .process(bounds_of_events);
    windows.collect("restore-tumbling");
    windows
        .get_side_output(&late)
        .collect("restore-tumbling-late");
    let graph = env.stream_graph().unwrap();
    check_restore(
        &graph,
        "restore-tumbling",
        Some("restore-tumbling-late"),
        &steps,
        &cuts,
    );

    // Sliding windows with an incremental aggregate.
    let mut env = StreamExecutionEnvironment::new();
    env.from_collection(Vec::<Event>::new())
        .key_by(|e: &Event| e.0.clone())
        .window(SlidingEventTimeWindows::of(
            Duration::from_millis(60),
            Duration::from_millis(20),
        ))
        .aggregate_with(
            KeyedSum,
            |key: &String,
             ctx: &WindowContext,
             e: &[(String, u64)],
             out: &mut dyn Collector<Row>| { bounds_of_sum(key, ctx, &[e[0].1], out) },
        )
        .collect("restore-sliding");
    check_restore(
        &env.stream_graph().unwrap(),
        "restore-sliding",
        None,
        &steps,
        &cuts,
    );

    // Session windows with a reduce.
    let mut env = StreamExecutionEnvironment::new();
    env.from_collection(Vec::<Event>::new())
        .key_by(|e: &Event| e.0.clone())
        .window(EventTimeSessionWindows::with_gap(Duration::from_millis(12)))
        .allowed_lateness(Duration::from_millis(10))
        .reduce_with(
            |a: Event, b: Event| (a.0, a.1 + b.1, a.2),
            |key: &String, ctx: &WindowContext, e: &[Event], out: &mut dyn Collector<Row>| {
                let w = ctx.window();
                out.collect((key.clone(), w.start, w.end, e[0].1));
            },
        )
        .collect("restore-sessions");
    check_restore(
        &env.stream_graph().unwrap(),
        "restore-sessions",
        None,
        &steps,
        &cuts,
    );
}

#[test]
fn restored_count_windows_continue_their_counts() {
    let mut env = StreamExecutionEnvironment::new();
    env.from_collection(Vec::<Event>::new())
        .key_by(|e: &Event| e.0.clone())
        .count_window_sliding(4, 3)
        .process(bounds_of_events)
        .collect("restore-count");
    let graph = env.stream_graph().unwrap();
    let steps: Vec<Step> = (0..50u64)
        .map(|i| Step::Record((format!("k{}", i % 3), i, i as i64)))
        .collect();
    check_restore(&graph, "restore-count", None, &steps, &[5, 26, 49]);
}

#[test]
fn malformed_window_snapshots_are_refused_without_panic() {
    let mut env = StreamExecutionEnvironment::new();
    let windows = env
        .from_collection(Vec::<Event>::new())
        .key_by(|e: &Event| e.0.clone())
        .window(EventTimeSessionWindows::with_gap(Duration::from_millis(12)))
        .trigger(CountTrigger::of(100))
        .process(bounds_of_events);
    let node = windows.node_id().unwrap();
    windows.collect("malformed-window");
    let graph = env.stream_graph().unwrap();
    let mut w = window_vertex(&graph, 0);
    w.open().unwrap();
    feed(&mut w, &steps(3)[..80]);
    let valid = w.snapshot(barrier(1)).unwrap();
    w.close();
    let _ = take_collected::<Row>("malformed-window");
    let mut sections = crate::snapshot::SnapshotSections::parse(&valid).unwrap();
    let body = sections.take(node).unwrap().to_vec();
    assert!(body.len() > 100);
    let with_body = |body: &[u8]| {
        let mut writer = crate::snapshot::SnapshotWriter::new();
        writer
            .section(node, |out| {
                out.extend_from_slice(body);
                Ok(())
            })
            .unwrap();
        writer.finish()
    };
    // The valid body restores.
    let mut ok = window_vertex(&graph, 1);
    ok.restore(&with_body(&body)).unwrap();
    ok.close();
    for cut in 0..body.len() {
        let mut fresh = window_vertex(&graph, 1);
        let err = fresh.restore(&with_body(&body[..cut])).unwrap_err();
        assert!(err.contains("window operator"), "cut {cut}: {err}");
        fresh.close();
    }
    let mut longer = body.clone();
    longer.push(0);
    let mut fresh = window_vertex(&graph, 1);
    assert!(fresh
        .restore(&with_body(&longer))
        .unwrap_err()
        .contains("trailing"));
    // Flipped bytes and huge counts fail or restore, never panic.
    let mut rng = SplitMix64::new(77);
    for _ in 0..300 {
        let mut bad = body.clone();
        let at = rng.gen_range(bad.len() as u64) as usize;
        bad[at] ^= 1 << rng.gen_range(8);
        let mut fresh = window_vertex(&graph, 1);
        let _ = fresh.restore(&with_body(&bad));
        fresh.close();
    }
    let mut huge = body[..8].to_vec();
    crate::codec::write_varint(u64::MAX >> 1, &mut huge);
    assert!(window_vertex(&graph, 1).restore(&with_body(&huge)).is_err());
}

#[test]
fn the_operator_is_one_keyed_window_node_and_watermarks_pass_through() {
    let mut env = StreamExecutionEnvironment::new();
    let windows = timed(&mut env, events(50, 3, 2, 10, 10), 10)
        .key_by(|e: &Event| e.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::from_millis(100)))
        .process(bounds_of_events);
    // A second window downstream sees the first's results at their max timestamps.
    windows
        .key_by(|r: &Row| r.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::from_millis(200)))
        .process(
            |key: &String, ctx: &WindowContext, rows: &[Row], out: &mut dyn Collector<Row>| {
                let w = ctx.window();
                for r in rows {
                    assert!(r.2 > w.start && r.2 <= w.end, "{r:?} in {w:?}");
                }
                out.collect((key.clone(), w.start, w.end, rows.iter().map(|r| r.3).sum()));
            },
        )
        .collect("two-levels");
    let graph = env.stream_graph().unwrap();
    assert!(graph.uses_time());
    let plan = graph.plan();
    assert!(
        plan.vertices.iter().any(|v| v.name.contains(
            "Window(TumblingEventTimeWindows(100), EventTimeTrigger, ProcessWindowFunction)"
        )),
        "{:?}",
        plan.vertices.iter().map(|v| &v.name).collect::<Vec<_>>()
    );
    LocalExecutor::new(ExchangeMode::Mixed).run(&graph).unwrap();
    let got = sorted(take_collected::<Row>("two-levels"));
    let expected = reference_tumbling(&events(50, 3, 2, 10, 10), 200);
    assert_eq!(got, expected);
}

/// Counts what reaches it.
struct Count(Arc<AtomicUsize>);

impl Collector<(String, u64)> for Count {
    fn collect(&mut self, _: (String, u64)) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl crate::operators::Output<(String, u64)> for Count {
    fn open(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn close(&mut self) {}
    fn snapshot_state(
        &mut self,
        _: u64,
        _: &mut crate::snapshot::SnapshotWriter,
    ) -> Result<(), String> {
        Ok(())
    }
    fn emit_barrier(&mut self, _: CheckpointBarrier) -> Result<(), String> {
        Ok(())
    }
    fn restore_state(
        &mut self,
        _: &mut crate::snapshot::SnapshotSections<'_>,
    ) -> Result<(), String> {
        Ok(())
    }
    fn notify_checkpoint_complete(&mut self, _: u64) -> Result<(), String> {
        Ok(())
    }
    fn notify_checkpoint_aborted(&mut self, _: u64) {}
    fn end_of_data(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn finish_outputs(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn process_watermark(&mut self, _: i64) -> Result<(), String> {
        Ok(())
    }
    fn process_watermark_status(&mut self, _: bool) -> Result<(), String> {
        Ok(())
    }
    fn on_processing_time(&mut self, _: i64) -> Result<(), String> {
        Ok(())
    }
    fn next_processing_time(&self) -> Option<i64> {
        None
    }
}

/// Throughput of the hot path (a word count in tumbling event-time windows), without the
/// runtime: `cargo test --release -p rflink --lib window_hot_path -- --ignored --nocapture`.
/// Prints the rate; asserts only the counts.
#[test]
#[ignore]
fn window_hot_path_throughput() {
    use crate::operators::{BorrowedKey, Output};
    use crate::time::ChainTime;
    let words: Vec<String> = (0..10_000).map(|i| format!("word{i}")).collect();
    let mut rng = SplitMix64::new(1);
    let n = 20_000_000usize;
    let input: Vec<(String, u64)> = (0..n)
        .map(|_| (words[rng.gen_range(words.len() as u64) as usize].clone(), 1))
        .collect();
    let emitted = Arc::new(AtomicUsize::new(0));
    let time = ChainTime::default();
    let f = Arc::new(move |mut a: (String, u64), b: (String, u64)| {
        a.1 += b.1;
        a
    });
    let core = super::operator::Core {
        node: 0,
        name: "bench".into(),
        assigner: Arc::new(TumblingEventTimeWindows::of(Duration::from_secs(1))),
        trigger: Trigger::EventTime,
        event_time: true,
        merging: false,
        allowed_lateness: 0,
        func: super::functions::ReduceFn {
            f,
            stage: super::functions::PassThrough,
            _type: std::marker::PhantomData,
        },
        timers: crate::time::Timers::default(),
        time: time.clone(),
        errors: Default::default(),
        failed: false,
        late: None,
        late_dropped: 0,
        out: Box::new(Count(emitted.clone())),
    };
    fn word(p: &(String, u64)) -> &String {
        &p.0
    }
    let key: crate::operators::KeyFn<(String, u64), String> = Arc::new(BorrowedKey(word));
    let mut op = super::operator::WindowOperator::new(core, key);
    let start = std::time::Instant::now();
    for (i, record) in input.into_iter().enumerate() {
        // 1000 events per millisecond: 20 windows of a second.
        let ts = (i / 1000) as i64;
        time.set_timestamp(ts);
        op.collect(record);
        if i % 10_000 == 9_999 {
            op.process_watermark(ts - 1).unwrap();
        }
    }
    op.process_watermark(i64::MAX).unwrap();
    let elapsed = start.elapsed();
    println!(
        "{n} events in {elapsed:?}: {:.1} M events/s, {} results",
        n as f64 / elapsed.as_secs_f64() / 1e6,
        emitted.load(Ordering::Relaxed)
    );
    assert_eq!(emitted.load(Ordering::Relaxed), 20 * 10_000);
}

/// A side output nobody emits is refused when the graph is built (instead of a consumer that
/// never gets data or an end): only a window's `side_output_late_data` tag can be read.
#[test]
fn a_side_output_that_no_operator_emits_is_refused() {
    let late = crate::OutputTag::<(u64, i64)>::new("late");
    let build = |tag_on_window: Option<&str>, read_from_map: bool| {
        let mut env = crate::StreamExecutionEnvironment::new();
        let stamped = env
            .from_collection(vec![(1u64, 5i64)])
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_monotonous_timestamps()
                    .with_timestamp_assigner(|e: &(u64, i64), _| e.1),
            );
        let mapped = stamped.map(|e: (u64, i64)| e);
        let mut windowed = mapped
            .key_by(|e: &(u64, i64)| e.0)
            .window(TumblingEventTimeWindows::of(Duration::from_millis(10)));
        if let Some(tag) = tag_on_window {
            windowed = windowed.side_output_late_data(&crate::OutputTag::new(tag));
        }
        let counts = windowed.reduce(|a: (u64, i64), _| a);
        let side = if read_from_map {
            mapped.get_side_output(&late)
        } else {
            counts.get_side_output(&late)
        };
        side.collect("side-output-validation");
        env.stream_graph().map(|_| ())
    };
    assert!(build(Some("late"), false).is_ok());
    for (tag, from_map) in [(Some("other"), false), (None, false), (Some("late"), true)] {
        let err = build(tag, from_map).unwrap_err().to_string();
        assert!(err.contains("has no side output \"late\""), "{err}");
    }
}
