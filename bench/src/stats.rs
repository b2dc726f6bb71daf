//! Small statistics and formatting helpers.

use std::time::Duration;

/// Latency samples of one round, in nanoseconds, summarized.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Latency {
    /// Summarizes `samples_ns` (reordered in place). `None` when there are no samples.
    pub fn of(samples_ns: &mut [u64]) -> Option<Latency> {
        samples_ns.sort_unstable();
        Some(Latency {
            p50_us: percentile(samples_ns, 50.0)? as f64 / 1_000.0,
            p99_us: percentile(samples_ns, 99.0)? as f64 / 1_000.0,
        })
    }
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Millis {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Millis {
    /// Summarizes `samples`. `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Millis> {
        let mut ns: Vec<u64> = samples.iter().copied().map(nanos).collect();
        ns.sort_unstable();
        let ms = |p: f64| percentile(&ns, p).map(|v| v as f64 / 1e6);
        Some(Millis {
            p50: ms(50.0)?,
            p90: ms(90.0)?,
            p99: ms(99.0)?,
            max: ms(100.0)?,
        })
    }
}

/// The nearest-rank `p`-th percentile of sorted `values`.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Messages per second for `count` messages in `elapsed`.
pub fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A duration as whole nanoseconds, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A JSON number with `decimals` places, or `null` when not finite.
pub fn json_number(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "null".into()
    }
}

/// Millions of messages per second, for humans.
pub fn mega(rate: f64) -> String {
    format!("{:.3} M msg/s", rate / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn millis_summarize_durations() {
        let d: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let m = Millis::of(&d).expect("samples");
        assert_eq!((m.p50, m.p90, m.p99, m.max), (50.0, 90.0, 99.0, 100.0));
        assert!(Millis::of(&[]).is_none());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn json_numbers_are_valid_json() {
        assert_eq!(json_number(1.23456, 2), "1.23");
        assert_eq!(json_number(f64::INFINITY, 2), "null");
        assert_eq!(json_number(f64::NAN, 2), "null");
    }
}
