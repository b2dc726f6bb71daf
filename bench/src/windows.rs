//! `rflink-bench windows`: an event-time tumbling-window word count on an embedded MiniCluster,
//! against a hand-written single-threaded loop over the same events, in the same run.
//!
//! * **Events**: `--events N` timestamped words. Event `n` is drawn from a generator seeded by
//!   `(--seed, n)` (`SplitMix64::for_index`): a word uniformly from `--vocab N` synthetic
//!   lowercase words, and the event time `n * 1000 / --events-per-sec` ms plus up to
//!   [`JITTER_MS`] ms, so events arrive out of order by up to that much. Both sides generate the
//!   events themselves (an owned `String` and an `i64` each), untimed for neither.
//! * **rflink**: the job `bench-windows`: a generator source, `assign_timestamps_and_watermarks`
//!   with bounded out-of-orderness [`BOUND_MS`] ms (> the jitter, so nothing is late), `map` to
//!   `(word, 1)`, `key_by_ref` the word, `window(TumblingEventTimeWindows::of(--window-secs))`,
//!   `sum`, and a collect sink. On a MiniCluster of 1 TaskManager with P slots, P = 1 and 2; one
//!   cluster per P, started before anything is timed. Timed: building the job graph, submitting
//!   it and waiting for its result.
//! * **Baseline**: one thread loops over the same events: a `BTreeMap` from window start to an
//!   `FxHashMap<String, u64>` of counts, the watermark tracked as the job's generator does
//!   (highest timestamp minus the bound), and every window whose end the watermark passed
//!   emitted as `(word, count)` records into a `Vec` as soon as it is complete; the rest at the
//!   end.
//! * **Check** (untimed): the job's results, as a sorted multiset of `(word, count)`, must equal
//!   the baseline's, and the counts must add up to the number of events.
//!
//! Runs are interleaved (baseline, p1, p2, ...); the best and the median of each side are
//! reported, events/s = N / seconds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rflink::time::WatermarkStrategy;
use rflink::windowing::TumblingEventTimeWindows;
use rflink::{JobArgs, JobError, JobRegistry, SplitMix64, StreamExecutionEnvironment};
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig};
use rflink_runtime::tasks::Jobs;
use rustc_hash::FxHashMap;

use crate::cli::{parse_flags, Flag};
use crate::stats::json_number;
use crate::wordcount::{wait_idle, Side};
use crate::BoxError;

/// Option lines for the usage text.
pub const OPTIONS_HELP: &str = "  --events N          events (default 20000000)
  --vocab N           distinct words (default 1000)
  --events-per-sec N  event-time rate: events per second of event time (default 100000)
  --window-secs N     tumbling window size in seconds (default 10)
  --seed S            seed of the events (default 42)
  --runs R            interleaved runs of baseline, p=1 and p=2 (default 3)
  --timeout-secs N    give up on a job after N s (default 600)";

/// Most an event's timestamp is later than its place in the sequence says.
const JITTER_MS: u64 = 50;
/// The out-of-orderness bound of the watermarks (above the jitter: no event is late).
const BOUND_MS: i64 = 100;
/// The parallelisms the job runs with.
const PARALLELISMS: [u32; 2] = [1, 2];
/// The collect sink of the job.
const SINK: &str = "bench-windows";

/// Options of the `windows` benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    pub events: usize,
    pub vocab: usize,
    pub events_per_sec: usize,
    pub window_secs: usize,
    pub seed: usize,
    pub runs: usize,
    pub timeout_secs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            events: 20_000_000,
            vocab: 1_000,
            events_per_sec: 100_000,
            window_secs: 10,
            seed: 42,
            runs: 3,
            timeout_secs: 600,
        }
    }
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        parse_flags(
            args,
            &mut [
                Flag {
                    name: "--events",
                    value: &mut o.events,
                    min: 1,
                },
                Flag {
                    name: "--vocab",
                    value: &mut o.vocab,
                    min: 1,
                },
                Flag {
                    name: "--events-per-sec",
                    value: &mut o.events_per_sec,
                    min: 1,
                },
                Flag {
                    name: "--window-secs",
                    value: &mut o.window_secs,
                    min: 1,
                },
                Flag {
                    name: "--seed",
                    value: &mut o.seed,
                    min: 0,
                },
                Flag {
                    name: "--runs",
                    value: &mut o.runs,
                    min: 1,
                },
                Flag {
                    name: "--timeout-secs",
                    value: &mut o.timeout_secs,
                    min: 1,
                },
            ],
        )?;
        if o.vocab > 1_000_000 {
            return Err("--vocab must be at most 1000000".into());
        }
        Ok(o)
    }

    fn job_args(&self, parallelism: u32) -> Vec<String> {
        [
            ("--events", self.events),
            ("--vocab", self.vocab),
            ("--events-per-sec", self.events_per_sec),
            ("--window-secs", self.window_secs),
            ("--seed", self.seed),
            ("--parallelism", parallelism as usize),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
    }
}

/// The synthetic vocabulary: `count` distinct lowercase words from `seed`.
fn vocabulary(seed: u64, count: usize) -> Vec<String> {
    let mut rng = SplitMix64::new(seed ^ 0x0076_6f63_6162);
    let mut seen = rustc_hash::FxHashSet::default();
    let mut words = Vec::with_capacity(count);
    while words.len() < count {
        let len = 3 + rng.gen_range(8) as usize;
        let word: String = (0..len)
            .map(|_| char::from(b'a' + rng.gen_range(26) as u8))
            .collect();
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

/// Event `n`: a word and its event time in milliseconds.
#[inline]
fn event(seed: u64, n: u64, vocab: &[String], events_per_sec: u64) -> (String, i64) {
    let mut rng = SplitMix64::for_index(seed, n);
    let word = vocab[rng.gen_range(vocab.len() as u64) as usize].clone();
    let ts = n * 1000 / events_per_sec + rng.gen_range(JITTER_MS + 1);
    (word, ts as i64)
}

/// The benchmark's job (see the module documentation).
fn windows_job(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
    env.set_parallelism(args.parse_or("parallelism", 1)?);
    env.set_job_name("Windowed WordCount (bench)");
    let events: u64 = args.parse_or("events", 20_000_000)?;
    let seed: u64 = args.parse_or("seed", 42)?;
    let rate: u64 = args.parse_or("events-per-sec", 100_000)?;
    let window: u64 = args.parse_or("window-secs", 10)?;
    let vocab = Arc::new(vocabulary(seed, args.parse_or("vocab", 1_000)?));
    env.from_generator(Some(events), seed, move |_, n| event(seed, n, &vocab, rate))
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(BOUND_MS as u64))
                .with_timestamp_assigner(|e: &(String, i64), _| e.1),
        )
        .map(|(word, _): (String, i64)| (word, 1u64))
        .key_by_ref(|pair: &(String, u64)| &pair.0)
        .window(TumblingEventTimeWindows::of(Duration::from_secs(window)))
        .sum(|pair: &mut (String, u64)| &mut pair.1)
        .collect(SINK);
    Ok(())
}

fn registry() -> JobRegistry {
    let mut jobs = JobRegistry::new();
    jobs.register(
        "bench-windows",
        "event-time tumbling-window word count over generated events",
        windows_job,
    );
    jobs
}

/// The hand-written loop: returns its time and its results.
fn baseline(options: &Options) -> (Duration, Vec<(String, u64)>) {
    let seed = options.seed as u64;
    let rate = options.events_per_sec as u64;
    let size = (options.window_secs as i64) * 1000;
    let vocab = vocabulary(seed, options.vocab);
    let start = Instant::now();
    let mut windows: BTreeMap<i64, FxHashMap<String, u64>> = BTreeMap::new();
    let mut results: Vec<(String, u64)> = Vec::new();
    let mut max_ts = i64::MIN;
    for n in 0..options.events as u64 {
        let (word, ts) = event(seed, n, &vocab, rate);
        max_ts = max_ts.max(ts);
        let window_start = ts - ts.rem_euclid(size);
        let counts = windows.entry(window_start).or_default();
        match counts.get_mut(word.as_str()) {
            Some(count) => *count += 1,
            None => {
                counts.insert(word, 1);
            }
        }
        let watermark = max_ts - BOUND_MS - 1;
        while let Some(entry) = windows.first_entry() {
            if *entry.key() + size - 1 > watermark {
                break;
            }
            results.extend(entry.remove());
        }
    }
    for (_, counts) in windows {
        results.extend(counts);
    }
    (start.elapsed(), results)
}

async fn start_cluster(slots: u32, timeout: Duration) -> Result<MiniCluster, BoxError> {
    let config = MiniClusterConfig {
        num_task_managers: 1,
        slots_per_task_manager: slots,
        jobs: Jobs::new(registry()),
        ..MiniClusterConfig::default()
    };
    let cluster = MiniCluster::start(config)
        .await
        .map_err(|e| format!("starting a MiniCluster with {slots} slots: {e}"))?;
    if let Err(e) = cluster.wait_for_task_managers(1, timeout).await {
        let _ = cluster.close().await;
        return Err(format!("the TaskManager of the {slots}-slot MiniCluster: {e}").into());
    }
    Ok(cluster)
}

fn sorted(mut results: Vec<(String, u64)>) -> Vec<(String, u64)> {
    results.sort_unstable();
    results
}

async fn rflink_run(
    cluster: &MiniCluster,
    options: &Options,
    parallelism: u32,
    expected: &[(String, u64)],
) -> Result<Duration, BoxError> {
    let _ = rflink::testing::take_collected::<(String, u64)>(SINK);
    let start = Instant::now();
    let result = cluster
        .execute(
            "bench-windows",
            &options.job_args(parallelism),
            Duration::from_secs(options.timeout_secs as u64),
        )
        .await
        .map_err(|e| format!("bench-windows with parallelism {parallelism}: {e}"))?;
    let elapsed = start.elapsed();
    if result.status != JobStatus::Finished {
        return Err(format!(
            "bench-windows with parallelism {parallelism} ended {}: {:?}",
            result.status, result.failure
        )
        .into());
    }
    let got = sorted(rflink::testing::take_collected::<(String, u64)>(SINK));
    if got != expected {
        let total: u64 = got.iter().map(|(_, c)| c).sum();
        return Err(format!(
            "the job's windows (parallelism {parallelism}: {} results, {total} events) differ \
             from the baseline's ({} results)",
            got.len(),
            expected.len()
        )
        .into());
    }
    Ok(elapsed)
}

async fn run_async(options: Options) -> Result<(), BoxError> {
    let mut clusters = Vec::new();
    for p in PARALLELISMS {
        clusters.push((
            p,
            start_cluster(p, Duration::from_secs(options.timeout_secs as u64)).await?,
        ));
    }
    let events = options.events as f64;
    let mut base = Side::default();
    let mut jobs: Vec<Side> = clusters.iter().map(|_| Side::default()).collect();
    let mut outcome: Result<(), BoxError> = Ok(());
    'runs: for run in 1..=options.runs {
        let o = options.clone();
        let (elapsed, results) = tokio::task::spawn_blocking(move || baseline(&o))
            .await
            .map_err(|e| format!("the baseline thread: {e}"))?;
        let total: u64 = results.iter().map(|(_, c)| c).sum();
        if total != options.events as u64 {
            outcome = Err(format!("the baseline counted {total} events of {events}").into());
            break;
        }
        let expected = sorted(results);
        eprintln!(
            "windows: run {run}/{}: baseline {:.3} s ({:.2} M events/s), {} window results",
            options.runs,
            elapsed.as_secs_f64(),
            events / elapsed.as_secs_f64() / 1e6,
            expected.len()
        );
        base.times.push(elapsed);
        for ((p, cluster), side) in clusters.iter().zip(&mut jobs) {
            let timeout = Duration::from_secs(options.timeout_secs as u64);
            if let Err(e) = wait_idle(cluster, *p, timeout).await {
                outcome = Err(e);
                break 'runs;
            }
            match rflink_run(cluster, &options, *p, &expected).await {
                Ok(elapsed) => {
                    eprintln!(
                        "windows: run {run}/{}: rflink p={p} {:.3} s ({:.2} M events/s), \
                         results equal the baseline's",
                        options.runs,
                        elapsed.as_secs_f64(),
                        events / elapsed.as_secs_f64() / 1e6
                    );
                    side.times.push(elapsed);
                }
                Err(e) => {
                    outcome = Err(e);
                    break 'runs;
                }
            }
        }
    }
    for (p, cluster) in clusters {
        if let Err(e) = cluster.close().await {
            eprintln!("windows: closing the {p}-slot MiniCluster: {e}");
        }
    }
    outcome?;
    let [p1, p2] = jobs.as_slice() else {
        return Err("expected two parallelisms".into());
    };
    let rate = |secs: f64| events / secs;
    println!(
        "windows: {} events ({} words, {} events/s of event time, {} s tumbling event-time \
         windows, out of order by up to {JITTER_MS} ms, watermark bound {BOUND_MS} ms), {} runs \
         interleaved; {} logical CPUs",
        options.events,
        options.vocab,
        options.events_per_sec,
        options.window_secs,
        options.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  {:<40} {:>9} {:>9} {:>17} {:>17}",
        "", "best s", "median s", "best M events/s", "median M events/s"
    );
    for (name, side) in [
        ("baseline (1 thread, BTreeMap+FxHashMap)", &base),
        ("rflink windows p=1 (submit..result)", p1),
        ("rflink windows p=2 (submit..result)", p2),
    ] {
        println!(
            "  {name:<40} {:>9.3} {:>9.3} {:>17.3} {:>17.3}",
            side.best(),
            side.median(),
            rate(side.best()) / 1e6,
            rate(side.median()) / 1e6
        );
    }
    let ratio = |side: &Side| rate(side.best()) / rate(base.best());
    let ratio_median = |side: &Side| rate(side.median()) / rate(base.median());
    println!(
        "ratios (events/s over the baseline's): p1 {:.3} (median {:.3}), p2 {:.3} (median {:.3})",
        ratio(p1),
        ratio_median(p1),
        ratio(p2),
        ratio_median(p2)
    );
    println!("every job's window results equalled the baseline's");
    println!(
        "{{\"bench\":\"windows\",\"events\":{},\"p1_events_per_s\":{},\"p2_events_per_s\":{},\
         \"baseline_events_per_s\":{},\"p1_ratio\":{},\"p2_ratio\":{},\"runs\":{}}}",
        options.events,
        json_number(rate(p1.best()), 0),
        json_number(rate(p2.best()), 0),
        json_number(rate(base.best()), 0),
        json_number(ratio(p1), 3),
        json_number(ratio(p2), 3),
        options.runs
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

    #[test]
    fn the_baseline_counts_every_event_once() {
        let options = Options {
            events: 50_000,
            vocab: 50,
            events_per_sec: 1_000,
            window_secs: 5,
            ..Options::default()
        };
        let (_, results) = baseline(&options);
        assert_eq!(results.iter().map(|(_, c)| c).sum::<u64>(), 50_000);
        // 50 s of event time in 5 s windows (plus the jitter's spill into an eleventh).
        assert!(results.len() <= 11 * 50);
        assert!(Options::parse(&["--events".into(), "0".into()]).is_err());
    }
}
