//! `rflink-bench rpc`: rflink-rpc on loopback against raw TCP, in one run.
//!
//! Four measurements, each side of each on its own OS thread with a single-threaded runtime:
//!
//! 1. remote `ask` round trip (p50, p99), one ask in flight;
//! 2. its baseline: a raw length-prefixed TCP ping-pong of the same payloads;
//! 3. `tell` throughput until the endpoint has handled every message;
//! 4. its baseline: a raw length-prefixed TCP stream written through a `BufWriter`.
//!
//! The machine is shared and noisy, so baseline and rflink rounds are interleaved (A, B, A, B, ...)
//! and the median over rounds is reported, each figure separately.

mod raw;
mod rflink;

use crate::cli::{parse_flags, Flag};
use crate::stats::{json_number, median, mega, rate, Latency};
use crate::BoxError;

/// Option lines for the usage text.
pub const OPTIONS_HELP: &str =
    "  --rounds N   interleaved baseline/rflink rounds; medians are reported (default 3)
  --samples N  timed round trips per latency round (default 20000)
  --warmup N   untimed round trips before them (default 2000)
  --tells N    one-way messages per throughput round (default 1000000)
  --payload N  payload bytes per message (default 100)";

/// Options of the `rpc` benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    pub samples: usize,
    pub warmup: usize,
    pub tells: usize,
    pub payload: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 3,
            samples: 20_000,
            warmup: 2_000,
            tells: 1_000_000,
            payload: 100,
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
                    name: "--rounds",
                    value: &mut o.rounds,
                    min: 1,
                },
                Flag {
                    name: "--samples",
                    value: &mut o.samples,
                    min: 1,
                },
                Flag {
                    name: "--warmup",
                    value: &mut o.warmup,
                    min: 0,
                },
                Flag {
                    name: "--tells",
                    value: &mut o.tells,
                    min: 1,
                },
                Flag {
                    name: "--payload",
                    value: &mut o.payload,
                    min: 1,
                },
            ],
        )?;
        // Well inside rflink's default 10 MiB frame limit.
        if o.payload > 1024 * 1024 {
            return Err("--payload must be at most 1048576 bytes".into());
        }
        Ok(o)
    }

    /// Untimed one-way messages sent before each throughput round.
    fn tell_warmup(&self) -> usize {
        (self.tells / 10).min(50_000)
    }
}

/// The payload every message carries.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The figures of one round.
struct Round {
    raw_rtt: Latency,
    ask: Latency,
    raw_rate: f64,
    tell_rate: f64,
}

fn latency(mut samples: Vec<u64>, what: &str) -> Result<Latency, BoxError> {
    Latency::of(&mut samples).ok_or_else(|| format!("no {what} samples").into())
}

fn run_round(options: &Options, n: usize) -> Result<Round, BoxError> {
    let of = options.rounds;
    eprintln!("round {n}/{of}: raw TCP ping-pong ...");
    let raw_rtt = latency(raw::rtt_round(options)?, "raw round-trip")?;
    eprintln!("round {n}/{of}: rflink ask ...");
    let ask = latency(rflink::ask_round(options)?, "ask")?;
    eprintln!("round {n}/{of}: raw TCP stream ...");
    let raw_rate = rate(options.tells, raw::stream_round(options)?);
    eprintln!("round {n}/{of}: rflink tell ...");
    let tell_rate = rate(options.tells, rflink::tell_round(options)?);
    let round = Round {
        raw_rtt,
        ask,
        raw_rate,
        tell_rate,
    };
    println!(
        "round {n}/{of}  raw rtt p50 {:>7.1} us  p99 {:>7.1} us | ask p50 {:>7.1} us  p99 {:>7.1} us | ask/raw p50 {:.2}",
        raw_rtt.p50_us,
        raw_rtt.p99_us,
        ask.p50_us,
        ask.p99_us,
        ask.p50_us / raw_rtt.p50_us
    );
    println!(
        "round {n}/{of}  raw stream {:>16} | tell {:>16} | tell/raw {:.3}",
        mega(raw_rate),
        mega(tell_rate),
        tell_rate / raw_rate
    );
    Ok(round)
}

/// Runs the benchmark and prints its report; the last line of stdout is one JSON object.
pub fn run(options: &Options) -> Result<(), BoxError> {
    println!(
        "rpc: loopback 127.0.0.1, {} B payloads, {} rounds (raw baseline and rflink interleaved), \
         {} timed asks (+{} warm-up) and {} tells per round",
        options.payload, options.rounds, options.samples, options.warmup, options.tells
    );
    println!(
        "     client and server on separate OS threads, one single-threaded runtime each; \
         {} logical CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rounds = Vec::with_capacity(options.rounds);
    for n in 1..=options.rounds {
        rounds.push(run_round(options, n)?);
    }
    let med = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let raw_p50 = med(|r| r.raw_rtt.p50_us);
    let raw_p99 = med(|r| r.raw_rtt.p99_us);
    let ask_p50 = med(|r| r.ask.p50_us);
    let ask_p99 = med(|r| r.ask.p99_us);
    let raw_rate = med(|r| r.raw_rate);
    let tell_rate = med(|r| r.tell_rate);
    let ask_ratio = ask_p50 / raw_p50;
    let tell_ratio = tell_rate / raw_rate;

    println!("median of {} rounds:", rounds.len());
    println!("  raw TCP round trip  p50 {raw_p50:>7.1} us  p99 {raw_p99:>7.1} us");
    println!("  rflink remote ask   p50 {ask_p50:>7.1} us  p99 {ask_p99:>7.1} us");
    println!(
        "  ask p50 / raw p50   {ask_ratio:.2}  (target <= 1.5: {})",
        verdict(ask_ratio <= 1.5)
    );
    println!("  raw TCP stream      {}", mega(raw_rate));
    println!("  rflink tell         {}", mega(tell_rate));
    println!(
        "  tell / raw          {tell_ratio:.3}  (target >= 0.5: {})",
        verdict(tell_ratio >= 0.5)
    );
    println!(
        "{{\"bench\":\"rpc\",\"ask_p50_us\":{},\"ask_p99_us\":{},\"raw_rtt_p50_us\":{},\"raw_rtt_p99_us\":{},\
         \"ask_rtt_ratio\":{},\"tell_msgs_per_s\":{},\"raw_msgs_per_s\":{},\"tell_ratio\":{},\
         \"payload_bytes\":{},\"rounds\":{},\"samples\":{},\"tells\":{}}}",
        json_number(ask_p50, 2),
        json_number(ask_p99, 2),
        json_number(raw_p50, 2),
        json_number(raw_p99, 2),
        json_number(ask_ratio, 3),
        json_number(tell_rate, 0),
        json_number(raw_rate, 0),
        json_number(tell_ratio, 3),
        options.payload,
        options.rounds,
        options.samples,
        options.tells,
    );
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}
