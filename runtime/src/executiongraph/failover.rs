//! Failover policy: whether and when a failed job restarts, and which subtasks restart together.
//! Flink: the `RestartBackoffTimeStrategy` family (`NoRestartBackoffTimeStrategy`,
//! `FixedDelayRestartBackoffTimeStrategy`, `FailureRateRestartBackoffTimeStrategy`,
//! `ExponentialDelayRestartBackoffTimeStrategy`), `RestartBackoffTimeStrategyFactoryLoader`, and
//! `PipelinedRegionComputeUtil` for a graph whose edges are all pipelined.
//!
//! Pure logic: no actors, no timers. The caller passes the current [`Instant`] to
//! [`RestartBackoff::notify_failure`] and schedules the restart itself after
//! [`RestartBackoff::backoff`].
//!
//! # Use
//!
//! On each failure that would restart tasks (Flink's `ExecutionFailureHandler`):
//! call [`RestartBackoff::notify_failure`], then [`RestartBackoff::can_restart`]; if it may, restart
//! the failed subtask's region (see [`pipelined_regions`]) after [`RestartBackoff::backoff`],
//! otherwise fail the job.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::parse_duration;
use crate::jobgraph::{DistributionPattern, JobGraph};

/// `restart-strategy.type`: which strategy. Unset means [`RestartStrategy::default_for`].
pub const KEY_TYPE: &str = "restart-strategy.type";
/// `restart-strategy`: the deprecated name of [`KEY_TYPE`], read when that is unset.
pub const KEY_TYPE_DEPRECATED: &str = "restart-strategy";
/// `restart-strategy.fixed-delay.attempts` (default 1).
pub const KEY_FIXED_DELAY_ATTEMPTS: &str = "restart-strategy.fixed-delay.attempts";
/// `restart-strategy.fixed-delay.delay` (default 1 s).
pub const KEY_FIXED_DELAY_DELAY: &str = "restart-strategy.fixed-delay.delay";
/// `restart-strategy.failure-rate.max-failures-per-interval` (default 1).
pub const KEY_FAILURE_RATE_MAX_FAILURES: &str =
    "restart-strategy.failure-rate.max-failures-per-interval";
/// `restart-strategy.failure-rate.failure-rate-interval` (default 1 min).
pub const KEY_FAILURE_RATE_INTERVAL: &str = "restart-strategy.failure-rate.failure-rate-interval";
/// `restart-strategy.failure-rate.delay` (default 1 s).
pub const KEY_FAILURE_RATE_DELAY: &str = "restart-strategy.failure-rate.delay";
/// `restart-strategy.exponential-delay.initial-backoff` (default 1 s).
pub const KEY_EXP_INITIAL_BACKOFF: &str = "restart-strategy.exponential-delay.initial-backoff";
/// `restart-strategy.exponential-delay.max-backoff` (default 1 min).
pub const KEY_EXP_MAX_BACKOFF: &str = "restart-strategy.exponential-delay.max-backoff";
/// `restart-strategy.exponential-delay.backoff-multiplier` (default 1.5).
pub const KEY_EXP_MULTIPLIER: &str = "restart-strategy.exponential-delay.backoff-multiplier";
/// `restart-strategy.exponential-delay.reset-backoff-threshold` (default 1 h).
pub const KEY_EXP_RESET_THRESHOLD: &str =
    "restart-strategy.exponential-delay.reset-backoff-threshold";
/// `restart-strategy.exponential-delay.jitter-factor` (default 0.1).
pub const KEY_EXP_JITTER: &str = "restart-strategy.exponential-delay.jitter-factor";
/// `restart-strategy.exponential-delay.attempts-before-reset-backoff` (default Integer.MAX_VALUE).
pub const KEY_EXP_ATTEMPTS: &str =
    "restart-strategy.exponential-delay.attempts-before-reset-backoff";

/// Java's `Integer.MAX_VALUE`, Flink's default for `attempts-before-reset-backoff`.
pub const FLINK_INTEGER_MAX: u32 = i32::MAX as u32;

/// The names [`parse_strategy_type`] accepts, for error messages.
const VALID_NAMES: &str =
    "none, off, disable, fixed-delay, fixeddelay, failure-rate, failurerate, \
                           exponential-delay, exponentialdelay";

/// Which restart strategy, without its parameters. Flink: `RestartStrategyType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StrategyType {
    /// Never restart.
    None,
    /// A bounded number of restarts with a constant delay.
    FixedDelay,
    /// Restarts unless too many failures fall into an interval.
    FailureRate,
    /// Restarts with a growing delay.
    ExponentialDelay,
}

impl StrategyType {
    /// Flink's canonical name: `none`, `fixed-delay`, `failure-rate` or `exponential-delay`.
    pub fn flink_name(self) -> &'static str {
        match self {
            StrategyType::None => "none",
            StrategyType::FixedDelay => "fixed-delay",
            StrategyType::FailureRate => "failure-rate",
            StrategyType::ExponentialDelay => "exponential-delay",
        }
    }
}

/// Parses a value of `restart-strategy.type`, case-insensitively, with Flink's aliases:
/// `none`/`off`/`disable`, `fixed-delay`/`fixeddelay`, `failure-rate`/`failurerate`,
/// `exponential-delay`/`exponentialdelay`. An unknown name's error lists the valid ones.
pub fn parse_strategy_type(s: &str) -> Result<StrategyType, String> {
    match s.trim().to_lowercase().as_str() {
        "none" | "off" | "disable" => Ok(StrategyType::None),
        "fixed-delay" | "fixeddelay" => Ok(StrategyType::FixedDelay),
        "failure-rate" | "failurerate" => Ok(StrategyType::FailureRate),
        "exponential-delay" | "exponentialdelay" => Ok(StrategyType::ExponentialDelay),
        _ => Err(format!(
            "unknown restart strategy {s:?} (valid: {VALID_NAMES})"
        )),
    }
}

/// A restart strategy with its parameters. Flink: a `RestartBackoffTimeStrategy.Factory`.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// Never restart: the first failure fails the job.
    None,
    /// At most `attempts` restarts, each after `delay`.
    FixedDelay {
        /// Restarts allowed in the job's lifetime.
        attempts: u32,
        /// Delay before each restart.
        delay: Duration,
    },
    /// Restart after `delay` unless more than `max_failures_per_interval` failures happened
    /// within the last `interval`.
    FailureRate {
        /// Failures tolerated within one interval.
        max_failures_per_interval: u32,
        /// The sliding window.
        interval: Duration,
        /// Delay before each restart.
        delay: Duration,
    },
    /// Delays that start at `initial_backoff` and grow by `multiplier` up to `max_backoff`,
    /// with ± `jitter_factor` randomness; they reset after `reset_backoff_threshold` without a
    /// failure, and at most `attempts_before_reset_backoff` restarts per reset period.
    ExponentialDelay {
        /// The first delay.
        initial_backoff: Duration,
        /// The largest delay.
        max_backoff: Duration,
        /// Growth per restart, greater than 1.
        multiplier: f64,
        /// Failure-free running time after which the delay resets.
        reset_backoff_threshold: Duration,
        /// Randomness as a fraction of the delay, in `[0, 1]`.
        jitter_factor: f64,
        /// Restarts allowed per reset period, at least 1.
        attempts_before_reset_backoff: u32,
    },
}

impl RestartStrategy {
    /// Flink's name of the strategy: `none`, `fixed-delay`, `failure-rate`, `exponential-delay`.
    pub fn flink_name(&self) -> &'static str {
        self.strategy_type().flink_name()
    }

    /// The strategy's type.
    pub fn strategy_type(&self) -> StrategyType {
        match self {
            RestartStrategy::None => StrategyType::None,
            RestartStrategy::FixedDelay { .. } => StrategyType::FixedDelay,
            RestartStrategy::FailureRate { .. } => StrategyType::FailureRate,
            RestartStrategy::ExponentialDelay { .. } => StrategyType::ExponentialDelay,
        }
    }

    /// The strategy when none is configured (Flink ≥ 1.19, FLINK-33738): exponential-delay with
    /// its defaults if checkpointing is enabled, else no restart.
    pub fn default_for(checkpointing_enabled: bool) -> Self {
        if checkpointing_enabled {
            Self::exponential_delay_default()
        } else {
            RestartStrategy::None
        }
    }

    /// Fixed-delay with Flink's defaults: 1 attempt, 1 s.
    pub fn fixed_delay_default() -> Self {
        RestartStrategy::FixedDelay {
            attempts: 1,
            delay: Duration::from_secs(1),
        }
    }

    /// Failure-rate with Flink's defaults: 1 failure per 1 min, 1 s delay.
    pub fn failure_rate_default() -> Self {
        RestartStrategy::FailureRate {
            max_failures_per_interval: 1,
            interval: Duration::from_secs(60),
            delay: Duration::from_secs(1),
        }
    }

    /// Exponential-delay with Flink's (≥ 1.19) defaults: 1 s initial, 1 min max, multiplier 1.5,
    /// reset after 1 h, jitter 0.1, Integer.MAX_VALUE attempts per reset period.
    pub fn exponential_delay_default() -> Self {
        RestartStrategy::ExponentialDelay {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            multiplier: 1.5,
            reset_backoff_threshold: Duration::from_secs(3600),
            jitter_factor: 0.1,
            attempts_before_reset_backoff: FLINK_INTEGER_MAX,
        }
    }

    /// The default of a strategy type.
    pub fn default_of(strategy_type: StrategyType) -> Self {
        match strategy_type {
            StrategyType::None => RestartStrategy::None,
            StrategyType::FixedDelay => Self::fixed_delay_default(),
            StrategyType::FailureRate => Self::failure_rate_default(),
            StrategyType::ExponentialDelay => Self::exponential_delay_default(),
        }
    }

    /// Checks the parameters as Flink's strategy constructors do; an error names the key.
    ///
    /// Fixed-delay: anything (attempts and delay are non-negative by type). Failure-rate: at
    /// least 1 failure per interval, an interval of at least 1 ms. Exponential-delay: initial and
    /// max backoff at least 1 ms, initial ≤ max, multiplier > 1 (finite), threshold at least 1 ms,
    /// jitter in `[0, 1]`, at least 1 attempt before reset.
    pub fn validate(&self) -> Result<(), String> {
        const ONE_MS: Duration = Duration::from_millis(1);
        match self {
            RestartStrategy::None | RestartStrategy::FixedDelay { .. } => Ok(()),
            RestartStrategy::FailureRate {
                max_failures_per_interval,
                interval,
                ..
            } => {
                if *max_failures_per_interval < 1 {
                    return Err(format!(
                        "{KEY_FAILURE_RATE_MAX_FAILURES} must be at least 1"
                    ));
                }
                if *interval < ONE_MS {
                    return Err(format!("{KEY_FAILURE_RATE_INTERVAL} must be at least 1 ms"));
                }
                Ok(())
            }
            RestartStrategy::ExponentialDelay {
                initial_backoff,
                max_backoff,
                multiplier,
                reset_backoff_threshold,
                jitter_factor,
                attempts_before_reset_backoff,
            } => {
                if *initial_backoff < ONE_MS {
                    return Err(format!("{KEY_EXP_INITIAL_BACKOFF} must be at least 1 ms"));
                }
                if *max_backoff < ONE_MS {
                    return Err(format!("{KEY_EXP_MAX_BACKOFF} must be at least 1 ms"));
                }
                if initial_backoff > max_backoff {
                    return Err(format!(
                        "{KEY_EXP_INITIAL_BACKOFF} ({initial_backoff:?}) must not exceed \
                         {KEY_EXP_MAX_BACKOFF} ({max_backoff:?})"
                    ));
                }
                if !multiplier.is_finite() || *multiplier <= 1.0 {
                    return Err(format!(
                        "{KEY_EXP_MULTIPLIER} must be greater than 1, got {multiplier}"
                    ));
                }
                if *reset_backoff_threshold < ONE_MS {
                    return Err(format!("{KEY_EXP_RESET_THRESHOLD} must be at least 1 ms"));
                }
                if !(0.0..=1.0).contains(jitter_factor) {
                    return Err(format!(
                        "{KEY_EXP_JITTER} must be between 0 and 1, got {jitter_factor}"
                    ));
                }
                if *attempts_before_reset_backoff < 1 {
                    return Err(format!("{KEY_EXP_ATTEMPTS} must be at least 1"));
                }
                Ok(())
            }
        }
    }

    /// Builds the strategy from configuration keys; `lookup` returns a key's text if it is set.
    ///
    /// Reads `restart-strategy.type` (or its deprecated name `restart-strategy`); if neither is
    /// set, the result is [`RestartStrategy::default_for`]. Otherwise reads only the chosen
    /// strategy's keys, each falling back to Flink's default, and validates the result. Durations
    /// use Flink's syntax (`1 s`, `500 ms`, `1 min`; a bare number is milliseconds). An error
    /// names the key and the bad value.
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        checkpointing_enabled: bool,
    ) -> Result<RestartStrategy, String> {
        from_lookup(lookup, checkpointing_enabled)
    }
}

/// See [`RestartStrategy::from_lookup`].
pub fn from_lookup(
    lookup: &dyn Fn(&str) -> Option<String>,
    checkpointing_enabled: bool,
) -> Result<RestartStrategy, String> {
    let (type_key, type_text) = match lookup(KEY_TYPE) {
        Some(text) => (KEY_TYPE, text),
        None => match lookup(KEY_TYPE_DEPRECATED) {
            Some(text) => (KEY_TYPE_DEPRECATED, text),
            None => return Ok(RestartStrategy::default_for(checkpointing_enabled)),
        },
    };
    let strategy_type = parse_strategy_type(&type_text)
        .map_err(|e| format!("invalid value {type_text:?} for {type_key}: {e}"))?;
    let strategy = match RestartStrategy::default_of(strategy_type) {
        RestartStrategy::None => RestartStrategy::None,
        RestartStrategy::FixedDelay { attempts, delay } => RestartStrategy::FixedDelay {
            attempts: read(lookup, KEY_FIXED_DELAY_ATTEMPTS, attempts, parse_count)?,
            delay: read(lookup, KEY_FIXED_DELAY_DELAY, delay, parse_duration)?,
        },
        RestartStrategy::FailureRate {
            max_failures_per_interval,
            interval,
            delay,
        } => RestartStrategy::FailureRate {
            max_failures_per_interval: read(
                lookup,
                KEY_FAILURE_RATE_MAX_FAILURES,
                max_failures_per_interval,
                parse_count,
            )?,
            interval: read(lookup, KEY_FAILURE_RATE_INTERVAL, interval, parse_duration)?,
            delay: read(lookup, KEY_FAILURE_RATE_DELAY, delay, parse_duration)?,
        },
        RestartStrategy::ExponentialDelay {
            initial_backoff,
            max_backoff,
            multiplier,
            reset_backoff_threshold,
            jitter_factor,
            attempts_before_reset_backoff,
        } => RestartStrategy::ExponentialDelay {
            initial_backoff: read(
                lookup,
                KEY_EXP_INITIAL_BACKOFF,
                initial_backoff,
                parse_duration,
            )?,
            max_backoff: read(lookup, KEY_EXP_MAX_BACKOFF, max_backoff, parse_duration)?,
            multiplier: read(lookup, KEY_EXP_MULTIPLIER, multiplier, parse_float)?,
            reset_backoff_threshold: read(
                lookup,
                KEY_EXP_RESET_THRESHOLD,
                reset_backoff_threshold,
                parse_duration,
            )?,
            jitter_factor: read(lookup, KEY_EXP_JITTER, jitter_factor, parse_float)?,
            attempts_before_reset_backoff: read(
                lookup,
                KEY_EXP_ATTEMPTS,
                attempts_before_reset_backoff,
                parse_count,
            )?,
        },
    };
    strategy.validate()?;
    Ok(strategy)
}

/// Reads one key with `parse`, or `default` if it is unset.
fn read<T>(
    lookup: &dyn Fn(&str) -> Option<String>,
    key: &str,
    default: T,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, String> {
    match lookup(key) {
        None => Ok(default),
        Some(text) => parse(&text).map_err(|e| format!("invalid value {text:?} for {key}: {e}")),
    }
}

/// A non-negative whole number.
fn parse_count(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .map_err(|_| format!("expected a whole number from 0 to {}", u32::MAX))
}

/// A finite decimal number.
fn parse_float(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err("expected a finite decimal number".into()),
    }
}

/// SplitMix64: a tiny deterministic PRNG for the jitter.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The per-strategy state.
#[derive(Debug, Clone)]
enum State {
    None,
    FixedDelay {
        failures: u32,
    },
    FailureRate {
        /// The most recent failures, at most `max_failures_per_interval + 1` of them.
        failures: VecDeque<Instant>,
        /// The time of the last failure, when [`RestartBackoff::can_restart`] is judged.
        now: Option<Instant>,
    },
    ExponentialDelay {
        /// Restart attempts in the current reset period.
        attempts: u32,
        /// When the restart for the last attempt is due.
        next_restart: Option<Instant>,
        /// When the last failure (new attempt or merged) was notified.
        last_notified: Option<Instant>,
        rng: SplitMix64,
    },
}

/// The restart state machine of one job. Flink: `RestartBackoffTimeStrategy`.
///
/// - None: [`can_restart`](Self::can_restart) is always false.
/// - Fixed-delay: counts failures; restart while the count is at most `attempts`.
/// - Failure-rate: keeps the failures of the last `interval` (inclusive: a failure exactly
///   `interval` ago still counts); restart while at most `max_failures_per_interval` fall in it.
/// - Exponential-delay (Flink ≥ 1.19): a failure while a restart is still pending (at or before
///   its due time) is merged into that attempt and changes nothing but [`backoff`](Self::backoff),
///   which becomes the time left. Otherwise, if the job ran failure-free for at least
///   `reset_backoff_threshold` since the pending restart was due (or this is the first failure),
///   the attempt counter resets to 0. The delay is `initial * multiplier^attempt`, plus a jitter
///   drawn uniformly from `±jitter_factor` of it, clamped to `[initial_backoff, max_backoff]`;
///   then the counter increments. Restart while the counter is at most
///   `attempts_before_reset_backoff`.
#[derive(Debug, Clone)]
pub struct RestartBackoff {
    strategy: RestartStrategy,
    state: State,
}

impl RestartBackoff {
    /// A fresh state machine; `seed` seeds the jitter's PRNG (the same seed and the same failure
    /// times give the same delays).
    pub fn new(strategy: RestartStrategy, seed: u64) -> Self {
        let state = match &strategy {
            RestartStrategy::None => State::None,
            RestartStrategy::FixedDelay { .. } => State::FixedDelay { failures: 0 },
            RestartStrategy::FailureRate { .. } => State::FailureRate {
                failures: VecDeque::new(),
                now: None,
            },
            RestartStrategy::ExponentialDelay { .. } => State::ExponentialDelay {
                attempts: 0,
                next_restart: None,
                last_notified: None,
                rng: SplitMix64(seed),
            },
        };
        RestartBackoff { strategy, state }
    }

    /// The strategy.
    pub fn strategy(&self) -> &RestartStrategy {
        &self.strategy
    }

    /// Records a failure at `now`. Flink: `notifyFailure`.
    ///
    /// Returns whether it starts a new restart attempt: false only for exponential-delay when a
    /// restart is already pending (Flink merges such failures into one attempt). The result may
    /// be ignored.
    pub fn notify_failure(&mut self, now: Instant) -> bool {
        match (&self.strategy, &mut self.state) {
            (RestartStrategy::None, _) => true,
            (_, State::FixedDelay { failures }) => {
                *failures = failures.saturating_add(1);
                true
            }
            (
                RestartStrategy::FailureRate {
                    max_failures_per_interval,
                    interval,
                    ..
                },
                State::FailureRate {
                    failures,
                    now: last,
                },
            ) => {
                while failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > *interval)
                {
                    failures.pop_front();
                }
                failures.push_back(now);
                let keep = (*max_failures_per_interval as usize).saturating_add(1);
                while failures.len() > keep {
                    failures.pop_front();
                }
                *last = Some(now);
                true
            }
            (
                RestartStrategy::ExponentialDelay {
                    initial_backoff,
                    max_backoff,
                    multiplier,
                    reset_backoff_threshold,
                    jitter_factor,
                    ..
                },
                State::ExponentialDelay {
                    attempts,
                    next_restart,
                    last_notified,
                    rng,
                },
            ) => {
                *last_notified = Some(now);
                match *next_restart {
                    Some(due) if now <= due => return false,
                    Some(due) if now.saturating_duration_since(due) < *reset_backoff_threshold => {}
                    _ => *attempts = 0,
                }
                let delay = exponential_delay(
                    *initial_backoff,
                    *max_backoff,
                    *multiplier,
                    *jitter_factor,
                    *attempts,
                    rng,
                );
                *next_restart = Some(now + delay);
                *attempts = attempts.saturating_add(1);
                true
            }
            // The state always matches the strategy (both are set in `new`).
            _ => true,
        }
    }

    /// Whether the job may restart after the failures notified so far. Flink: `canRestart`.
    pub fn can_restart(&self) -> bool {
        match (&self.strategy, &self.state) {
            (RestartStrategy::FixedDelay { attempts, .. }, State::FixedDelay { failures }) => {
                failures <= attempts
            }
            (
                RestartStrategy::FailureRate {
                    max_failures_per_interval,
                    interval,
                    ..
                },
                State::FailureRate { failures, now },
            ) => match (now, failures.front()) {
                (Some(now), Some(earliest))
                    if failures.len() > *max_failures_per_interval as usize =>
                {
                    now.saturating_duration_since(*earliest) > *interval
                }
                _ => true,
            },
            (
                RestartStrategy::ExponentialDelay {
                    attempts_before_reset_backoff,
                    ..
                },
                State::ExponentialDelay { attempts, .. },
            ) => attempts <= attempts_before_reset_backoff,
            _ => false,
        }
    }

    /// The delay before the restart for the last notified failure. Flink: `getBackoffTime`.
    ///
    /// Fixed-delay and failure-rate: their `delay`. Exponential-delay: the time from the last
    /// notified failure to its restart's due time (the full delay for a new attempt, the time
    /// left for a merged one); zero before any failure. None: zero.
    pub fn backoff(&self) -> Duration {
        match (&self.strategy, &self.state) {
            (RestartStrategy::FixedDelay { delay, .. }, _)
            | (RestartStrategy::FailureRate { delay, .. }, _) => *delay,
            (
                _,
                State::ExponentialDelay {
                    next_restart: Some(due),
                    last_notified: Some(at),
                    ..
                },
            ) => due.saturating_duration_since(*at),
            _ => Duration::ZERO,
        }
    }
}

/// Flink's `calculateActualBackoffTime`: `initial * multiplier^attempt`, plus a jitter uniform in
/// `±floor(that * jitter_factor)`, clamped to `[initial, max]`. Computed in nanoseconds as `f64`
/// (exact up to about 104 days), so a huge attempt count saturates at the max.
fn exponential_delay(
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter_factor: f64,
    attempt: u32,
    rng: &mut SplitMix64,
) -> Duration {
    let initial_n = initial.as_nanos() as f64;
    let max_n = max.as_nanos() as f64;
    let base = (initial_n * multiplier.powf(f64::from(attempt))).floor();
    let offset = (base * jitter_factor).floor();
    let jitter = if offset > 0.0 && offset.is_finite() {
        // Uniform in -offset..=offset.
        (rng.next_unit() * (2.0 * offset + 1.0)).floor() - offset
    } else {
        0.0
    };
    // `f64::min`/`max` ignore a NaN operand, so a NaN (from an unvalidated strategy) gives the
    // max; and they do not panic when initial > max, unlike `clamp`.
    let total = (base + jitter).min(max_n).max(initial_n.min(max_n));
    duration_from_nanos(total as u128)
}

fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9.
    Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
}

// ---------------------------------------------------------------------------------------------
// Pipelined regions
// ---------------------------------------------------------------------------------------------

/// A vertex as [`pipelined_regions`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionVertex {
    /// Its number of subtasks.
    pub parallelism: u32,
    /// Its inputs: the producer's index in the slice, and whether the edge is pointwise
    /// (forward: subtask i ↔ i at equal parallelism) rather than all-to-all.
    pub inputs: Vec<(usize, bool)>,
}

/// The [`RegionVertex`]es of a job graph, in its vertex order. An edge is pointwise when its
/// ship strategy implies it (forward), or, without a ship strategy, when its distribution
/// pattern is pointwise (as the execution graph shows it). An input naming an unknown vertex is
/// an error.
pub fn region_vertices(graph: &JobGraph) -> Result<Vec<RegionVertex>, String> {
    let index: HashMap<_, usize> = graph
        .vertices
        .iter()
        .enumerate()
        .map(|(i, v)| (v.id, i))
        .collect();
    graph
        .vertices
        .iter()
        .map(|v| {
            let inputs = v
                .inputs
                .iter()
                .map(|edge| {
                    let producer = index.get(&edge.source).copied().ok_or_else(|| {
                        format!(
                            "vertex {:?} reads from an unknown vertex {}",
                            v.name, edge.source
                        )
                    })?;
                    let pattern = edge.ship_strategy.map_or(edge.pattern, |s| s.pattern());
                    Ok((producer, pattern == DistributionPattern::Pointwise))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(RegionVertex {
                parallelism: v.parallelism,
                inputs,
            })
        })
        .collect()
}

/// Union-find over subtasks.
struct DisjointSet {
    parent: Vec<usize>,
}

impl DisjointSet {
    fn new(n: usize) -> Self {
        DisjointSet {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

/// The pipelined regions of a graph whose edges are all pipelined (a streaming job): the
/// connected components of its subtasks, as `(vertex index, subtask index)`. Flink:
/// `PipelinedRegionComputeUtil` / `SchedulingPipelinedRegionComputeUtil`.
///
/// An all-to-all edge connects every producer subtask with every consumer subtask. A pointwise
/// edge connects producer i with consumer i at equal parallelism; at unequal parallelism it
/// connects contiguous ranges as Flink's `EdgeManagerBuildUtil.connectPointwise` does. An input
/// whose producer index is outside the slice is ignored.
///
/// Each region is sorted; the regions are sorted by their first element.
pub fn pipelined_regions(vertices: &[RegionVertex]) -> Vec<Vec<(usize, u32)>> {
    let mut offsets = Vec::with_capacity(vertices.len());
    let mut total = 0usize;
    for v in vertices {
        offsets.push(total);
        total += v.parallelism as usize;
    }
    let mut set = DisjointSet::new(total);
    for (c, consumer) in vertices.iter().enumerate() {
        for &(p, pointwise) in &consumer.inputs {
            let Some(producer) = vertices.get(p) else {
                continue;
            };
            let (np, nc) = (producer.parallelism as usize, consumer.parallelism as usize);
            if np == 0 || nc == 0 {
                continue;
            }
            let (po, co) = (offsets[p], offsets[c]);
            if !pointwise {
                for i in 0..np {
                    set.union(po + i, co);
                }
                for k in 0..nc {
                    set.union(po, co + k);
                }
            } else if np == nc {
                for i in 0..np {
                    set.union(po + i, co + i);
                }
            } else if np > nc {
                // Consumer k reads producers [k*np/nc, (k+1)*np/nc).
                for k in 0..nc {
                    for i in (k * np / nc)..((k + 1) * np / nc) {
                        set.union(po + i, co + k);
                    }
                }
            } else {
                // Producer i feeds consumers [ceil(i*nc/np), ceil((i+1)*nc/np)).
                for i in 0..np {
                    for k in (i * nc).div_ceil(np)..((i + 1) * nc).div_ceil(np) {
                        set.union(po + i, co + k);
                    }
                }
            }
        }
    }

    let mut region_of_root: HashMap<usize, usize> = HashMap::new();
    let mut regions: Vec<Vec<(usize, u32)>> = Vec::new();
    for (v, vertex) in vertices.iter().enumerate() {
        for s in 0..vertex.parallelism {
            let root = set.find(offsets[v] + s as usize);
            let r = *region_of_root.entry(root).or_insert_with(|| {
                regions.push(Vec::new());
                regions.len() - 1
            });
            // Nodes are visited in ascending order, so each region is built sorted and the
            // regions come out ordered by their first element.
            regions[r].push((v, s));
        }
    }
    regions
}

/// The index of the region holding subtask `subtask` of vertex `vertex`, if any.
pub fn region_of(regions: &[Vec<(usize, u32)>], vertex: usize, subtask: u32) -> Option<usize> {
    regions
        .iter()
        .position(|r| r.binary_search(&(vertex, subtask)).is_ok())
}

/// A map from every `(vertex, subtask)` to the index of its region.
pub fn region_lookup(regions: &[Vec<(usize, u32)>]) -> HashMap<(usize, u32), usize> {
    regions
        .iter()
        .enumerate()
        .flat_map(|(r, members)| members.iter().map(move |m| (*m, r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    fn exponential(
        initial: Duration,
        max: Duration,
        multiplier: f64,
        threshold: Duration,
        jitter: f64,
        attempts: u32,
    ) -> RestartStrategy {
        RestartStrategy::ExponentialDelay {
            initial_backoff: initial,
            max_backoff: max,
            multiplier,
            reset_backoff_threshold: threshold,
            jitter_factor: jitter,
            attempts_before_reset_backoff: attempts,
        }
    }

    fn lookup_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key: &str| map.get(key).cloned()
    }

    // ---- strategies -------------------------------------------------------------------------

    #[test]
    fn none_never_restarts() {
        let mut b = RestartBackoff::new(RestartStrategy::None, 1);
        assert!(!b.can_restart());
        assert!(b.notify_failure(Instant::now()));
        assert!(!b.can_restart());
        assert_eq!(b.backoff(), Duration::ZERO);
        assert_eq!(b.strategy(), &RestartStrategy::None);
    }

    #[test]
    fn fixed_delay_allows_n_restarts() {
        for n in [0u32, 1, 3] {
            let mut b = RestartBackoff::new(
                RestartStrategy::FixedDelay {
                    attempts: n,
                    delay: ms(250),
                },
                0,
            );
            let t0 = Instant::now();
            for failure in 1..=n {
                b.notify_failure(t0 + secs(u64::from(failure)));
                assert!(b.can_restart(), "failure {failure} of {n}");
                assert_eq!(b.backoff(), ms(250));
            }
            b.notify_failure(t0 + secs(100));
            assert!(!b.can_restart(), "failure {} of {n}", n + 1);
        }
    }

    #[test]
    fn failure_rate_within_and_after_the_interval() {
        let mut b = RestartBackoff::new(
            RestartStrategy::FailureRate {
                max_failures_per_interval: 2,
                interval: secs(10),
                delay: ms(300),
            },
            0,
        );
        let t0 = Instant::now();
        assert!(b.can_restart());
        b.notify_failure(t0);
        assert!(b.can_restart());
        assert_eq!(b.backoff(), ms(300));
        b.notify_failure(t0 + secs(5));
        assert!(b.can_restart());
        // A third failure exactly at the interval's end: t0 still counts (inclusive).
        b.notify_failure(t0 + secs(10));
        assert!(!b.can_restart());

        // A fresh one: failures spread wider than the interval never exceed the rate.
        let mut b = RestartBackoff::new(
            RestartStrategy::FailureRate {
                max_failures_per_interval: 2,
                interval: secs(10),
                delay: ms(300),
            },
            0,
        );
        for i in 0..20u64 {
            b.notify_failure(t0 + secs(6 * i));
            assert!(b.can_restart(), "failure {i}");
        }
        // Then three within 10 s: too many.
        b.notify_failure(t0 + secs(200));
        b.notify_failure(t0 + secs(201));
        assert!(b.can_restart());
        b.notify_failure(t0 + secs(205));
        assert!(!b.can_restart());

        // Just after the interval the earliest failure has dropped out.
        let mut b = RestartBackoff::new(
            RestartStrategy::FailureRate {
                max_failures_per_interval: 2,
                interval: secs(10),
                delay: ms(300),
            },
            0,
        );
        b.notify_failure(t0);
        b.notify_failure(t0 + secs(5));
        b.notify_failure(t0 + ms(10_001));
        assert!(b.can_restart());
    }

    #[test]
    fn failure_rate_default_of_one_per_minute() {
        let mut b = RestartBackoff::new(RestartStrategy::failure_rate_default(), 0);
        let t0 = Instant::now();
        b.notify_failure(t0);
        assert!(b.can_restart());
        b.notify_failure(t0 + secs(30));
        assert!(!b.can_restart());
        let mut b = RestartBackoff::new(RestartStrategy::failure_rate_default(), 0);
        b.notify_failure(t0);
        b.notify_failure(t0 + secs(61));
        assert!(b.can_restart());
    }

    #[test]
    fn exponential_grows_by_the_multiplier_up_to_the_max() {
        let mut b =
            RestartBackoff::new(exponential(secs(1), secs(10), 2.0, secs(3600), 0.0, 100), 7);
        let t0 = Instant::now();
        let mut now = t0;
        let mut seen = Vec::new();
        for _ in 0..6 {
            // Each failure comes 1 s after the previous restart was due: no merge, no reset.
            assert!(b.notify_failure(now));
            assert!(b.can_restart());
            seen.push(b.backoff());
            now = now + b.backoff() + secs(1);
        }
        assert_eq!(
            seen,
            vec![secs(1), secs(2), secs(4), secs(8), secs(10), secs(10)]
        );

        let mut b =
            RestartBackoff::new(exponential(secs(1), secs(60), 1.5, secs(3600), 0.0, 100), 7);
        let mut now = t0;
        let mut seen = Vec::new();
        for _ in 0..4 {
            b.notify_failure(now);
            seen.push(b.backoff());
            now = now + b.backoff() + ms(1);
        }
        assert_eq!(seen, vec![ms(1000), ms(1500), ms(2250), ms(3375)]);
    }

    #[test]
    fn exponential_jitter_is_bounded_and_deterministic() {
        let strategy = exponential(secs(1), secs(60), 2.0, secs(3600), 0.25, FLINK_INTEGER_MAX);
        let run = |seed: u64| {
            let mut b = RestartBackoff::new(strategy.clone(), seed);
            let mut now = Instant::now();
            let mut seen = Vec::new();
            for _ in 0..10 {
                b.notify_failure(now);
                seen.push(b.backoff());
                now = now + b.backoff() + secs(1);
            }
            seen
        };
        let a = run(42);
        assert_eq!(a, run(42), "same seed, same delays");
        assert_ne!(a, run(43), "another seed, other delays");
        for (attempt, delay) in a.iter().enumerate() {
            let base = 1e9 * 2f64.powi(attempt as i32);
            let lo = (base * 0.75).clamp(1e9, 60e9);
            let hi = (base * 1.25).min(60e9);
            let d = delay.as_nanos() as f64;
            assert!(
                d >= lo && d <= hi,
                "attempt {attempt}: {delay:?} outside [{lo}, {hi}]"
            );
        }
        // Late attempts sit at the max.
        assert_eq!(a[9], secs(60));
        // The jitter actually varies the delay for some attempt below the cap.
        assert!(a[1..5].iter().enumerate().any(|(i, d)| *d != secs(2 << i)));
    }

    #[test]
    fn exponential_resets_after_running_failure_free_for_the_threshold() {
        let mut b =
            RestartBackoff::new(exponential(secs(1), secs(60), 2.0, secs(100), 0.0, 100), 0);
        let t0 = Instant::now();
        b.notify_failure(t0); // delay 1 s, due at t0+1
        assert_eq!(b.backoff(), secs(1));
        b.notify_failure(t0 + secs(50)); // 49 s after the restart: grows
        assert_eq!(b.backoff(), secs(2)); // due at t0+52
        b.notify_failure(t0 + secs(151)); // 99 s after the restart: still grows
        assert_eq!(b.backoff(), secs(4)); // due at t0+155
        b.notify_failure(t0 + secs(255)); // exactly 100 s after the restart: resets
        assert_eq!(b.backoff(), secs(1));
        assert!(b.can_restart());
    }

    #[test]
    fn exponential_merges_failures_while_a_restart_is_pending() {
        let mut b = RestartBackoff::new(exponential(secs(4), secs(60), 2.0, secs(3600), 0.0, 1), 0);
        let t0 = Instant::now();
        assert!(b.notify_failure(t0)); // due at t0+4
        assert_eq!(b.backoff(), secs(4));
        assert!(
            !b.notify_failure(t0 + secs(1)),
            "merged into the pending attempt"
        );
        assert_eq!(b.backoff(), secs(3), "the time left");
        assert!(
            !b.notify_failure(t0 + secs(4)),
            "at the due time still merged"
        );
        assert_eq!(b.backoff(), Duration::ZERO);
        assert!(b.can_restart(), "merged failures use no attempts");
        assert!(b.notify_failure(t0 + secs(5)));
        assert_eq!(b.backoff(), secs(8));
        assert!(
            !b.can_restart(),
            "a second attempt exceeds attempts-before-reset 1"
        );
    }

    #[test]
    fn exponential_attempts_before_reset() {
        let mut b = RestartBackoff::new(exponential(secs(1), secs(4), 2.0, secs(60), 0.0, 3), 0);
        let t0 = Instant::now();
        let mut now = t0;
        for attempt in 1..=3 {
            b.notify_failure(now);
            assert!(b.can_restart(), "attempt {attempt}");
            now = now + b.backoff() + secs(1);
        }
        b.notify_failure(now);
        assert!(!b.can_restart(), "attempt 4 of 3");
        // After a failure-free threshold the period starts over.
        let mut b = RestartBackoff::new(exponential(secs(1), secs(4), 2.0, secs(60), 0.0, 3), 0);
        let mut now = t0;
        for _ in 1..=3 {
            b.notify_failure(now);
            now = now + b.backoff() + secs(1);
        }
        b.notify_failure(now + secs(60));
        assert!(b.can_restart());
        assert_eq!(b.backoff(), secs(1));
    }

    #[test]
    fn exponential_survives_huge_attempt_counts() {
        let mut b = RestartBackoff::new(
            exponential(ms(1), secs(1), 10.0, secs(3600), 0.5, u32::MAX),
            3,
        );
        let mut now = Instant::now();
        for _ in 0..2000 {
            b.notify_failure(now);
            assert!(b.backoff() <= secs(1) && b.backoff() >= ms(1));
            now = now + b.backoff() + ms(1);
        }
        assert_eq!(b.backoff(), secs(1));
        assert!(b.can_restart());
    }

    #[test]
    fn defaults_follow_checkpointing() {
        assert_eq!(RestartStrategy::default_for(false), RestartStrategy::None);
        let d = RestartStrategy::default_for(true);
        assert_eq!(d.flink_name(), "exponential-delay");
        assert_eq!(
            d,
            exponential(secs(1), secs(60), 1.5, secs(3600), 0.1, 2_147_483_647)
        );
        assert_eq!(
            RestartStrategy::fixed_delay_default(),
            RestartStrategy::FixedDelay {
                attempts: 1,
                delay: secs(1)
            }
        );
        assert_eq!(
            RestartStrategy::failure_rate_default(),
            RestartStrategy::FailureRate {
                max_failures_per_interval: 1,
                interval: secs(60),
                delay: secs(1)
            }
        );
        for s in [
            RestartStrategy::None,
            RestartStrategy::fixed_delay_default(),
            RestartStrategy::failure_rate_default(),
            RestartStrategy::exponential_delay_default(),
        ] {
            assert_eq!(s.validate(), Ok(()), "{s:?}");
        }
        assert_eq!(RestartStrategy::None.flink_name(), "none");
        assert_eq!(
            RestartStrategy::fixed_delay_default().flink_name(),
            "fixed-delay"
        );
        assert_eq!(
            RestartStrategy::failure_rate_default().flink_name(),
            "failure-rate"
        );
    }

    #[test]
    fn validation_names_the_key() {
        let bad = [
            (
                RestartStrategy::FailureRate {
                    max_failures_per_interval: 0,
                    interval: secs(1),
                    delay: secs(1),
                },
                KEY_FAILURE_RATE_MAX_FAILURES,
            ),
            (
                RestartStrategy::FailureRate {
                    max_failures_per_interval: 1,
                    interval: Duration::ZERO,
                    delay: secs(1),
                },
                KEY_FAILURE_RATE_INTERVAL,
            ),
            (
                exponential(Duration::ZERO, secs(1), 2.0, secs(1), 0.1, 1),
                KEY_EXP_INITIAL_BACKOFF,
            ),
            (
                exponential(secs(2), secs(1), 2.0, secs(1), 0.1, 1),
                KEY_EXP_MAX_BACKOFF,
            ),
            (
                exponential(secs(1), secs(2), 1.0, secs(1), 0.1, 1),
                KEY_EXP_MULTIPLIER,
            ),
            (
                exponential(secs(1), secs(2), 0.5, secs(1), 0.1, 1),
                KEY_EXP_MULTIPLIER,
            ),
            (
                exponential(secs(1), secs(2), f64::NAN, secs(1), 0.1, 1),
                KEY_EXP_MULTIPLIER,
            ),
            (
                exponential(secs(1), secs(2), 2.0, Duration::ZERO, 0.1, 1),
                KEY_EXP_RESET_THRESHOLD,
            ),
            (
                exponential(secs(1), secs(2), 2.0, secs(1), 1.5, 1),
                KEY_EXP_JITTER,
            ),
            (
                exponential(secs(1), secs(2), 2.0, secs(1), -0.1, 1),
                KEY_EXP_JITTER,
            ),
            (
                exponential(secs(1), secs(2), 2.0, secs(1), f64::NAN, 1),
                KEY_EXP_JITTER,
            ),
            (
                exponential(secs(1), secs(2), 2.0, secs(1), 0.1, 0),
                KEY_EXP_ATTEMPTS,
            ),
        ];
        for (strategy, key) in bad {
            let err = strategy.validate().expect_err("should be invalid");
            assert!(err.contains(key), "{err:?} should name {key}");
        }
        assert_eq!(
            RestartStrategy::FixedDelay {
                attempts: 0,
                delay: Duration::ZERO
            }
            .validate(),
            Ok(())
        );
        assert_eq!(
            exponential(secs(1), secs(1), 1.01, ms(1), 1.0, 1).validate(),
            Ok(())
        );
    }

    // ---- parsing ----------------------------------------------------------------------------

    #[test]
    fn every_alias_parses_case_insensitively() {
        let cases = [
            ("none", StrategyType::None),
            ("off", StrategyType::None),
            ("disable", StrategyType::None),
            ("NONE", StrategyType::None),
            ("Off", StrategyType::None),
            ("fixed-delay", StrategyType::FixedDelay),
            ("fixeddelay", StrategyType::FixedDelay),
            ("Fixed-Delay", StrategyType::FixedDelay),
            ("FIXEDDELAY", StrategyType::FixedDelay),
            ("failure-rate", StrategyType::FailureRate),
            ("failurerate", StrategyType::FailureRate),
            ("FailureRate", StrategyType::FailureRate),
            ("exponential-delay", StrategyType::ExponentialDelay),
            ("exponentialdelay", StrategyType::ExponentialDelay),
            ("ExponentialDelay", StrategyType::ExponentialDelay),
            (" exponential-delay ", StrategyType::ExponentialDelay),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_strategy_type(text), Ok(expected), "{text}");
        }
        for t in [
            StrategyType::None,
            StrategyType::FixedDelay,
            StrategyType::FailureRate,
            StrategyType::ExponentialDelay,
        ] {
            assert_eq!(parse_strategy_type(t.flink_name()), Ok(t));
        }
        let err = parse_strategy_type("fixed_delay").expect_err("unknown");
        assert!(err.contains("fixed_delay"), "{err}");
        for name in [
            "none",
            "off",
            "disable",
            "fixed-delay",
            "failure-rate",
            "exponential-delay",
        ] {
            assert!(err.contains(name), "{err} should list {name}");
        }
        assert!(parse_strategy_type("").is_err());
    }

    #[test]
    fn missing_type_gives_the_default() {
        let empty = lookup_from(&[]);
        assert_eq!(from_lookup(&empty, false), Ok(RestartStrategy::None));
        assert_eq!(
            from_lookup(&empty, true),
            Ok(RestartStrategy::exponential_delay_default())
        );
        // Keys of a strategy that is not chosen are not read.
        let stray = lookup_from(&[(KEY_FIXED_DELAY_ATTEMPTS, "banana")]);
        assert_eq!(from_lookup(&stray, false), Ok(RestartStrategy::None));
    }

    #[test]
    fn type_alone_gives_that_strategys_defaults() {
        for (name, expected) in [
            ("none", RestartStrategy::None),
            ("disable", RestartStrategy::None),
            ("fixed-delay", RestartStrategy::fixed_delay_default()),
            ("failure-rate", RestartStrategy::failure_rate_default()),
            (
                "exponential-delay",
                RestartStrategy::exponential_delay_default(),
            ),
        ] {
            for checkpointing in [false, true] {
                let lookup = lookup_from(&[(KEY_TYPE, name)]);
                assert_eq!(
                    from_lookup(&lookup, checkpointing),
                    Ok(expected.clone()),
                    "{name}"
                );
            }
        }
        // The deprecated key is read when the new one is unset; the new one wins.
        let old = lookup_from(&[(KEY_TYPE_DEPRECATED, "fixeddelay")]);
        assert_eq!(
            from_lookup(&old, true),
            Ok(RestartStrategy::fixed_delay_default())
        );
        let both = lookup_from(&[(KEY_TYPE_DEPRECATED, "fixeddelay"), (KEY_TYPE, "off")]);
        assert_eq!(from_lookup(&both, true), Ok(RestartStrategy::None));
    }

    #[test]
    fn every_key_is_read() {
        let fixed = lookup_from(&[
            (KEY_TYPE, "fixed-delay"),
            (KEY_FIXED_DELAY_ATTEMPTS, "5"),
            (KEY_FIXED_DELAY_DELAY, "500 ms"),
        ]);
        assert_eq!(
            RestartStrategy::from_lookup(&fixed, false),
            Ok(RestartStrategy::FixedDelay {
                attempts: 5,
                delay: ms(500)
            })
        );
        let rate = lookup_from(&[
            (KEY_TYPE, "failurerate"),
            (KEY_FAILURE_RATE_MAX_FAILURES, "3"),
            (KEY_FAILURE_RATE_INTERVAL, "5 min"),
            (KEY_FAILURE_RATE_DELAY, "10 s"),
        ]);
        assert_eq!(
            from_lookup(&rate, false),
            Ok(RestartStrategy::FailureRate {
                max_failures_per_interval: 3,
                interval: secs(300),
                delay: secs(10)
            })
        );
        let exp = lookup_from(&[
            (KEY_TYPE, "Exponential-Delay"),
            (KEY_EXP_INITIAL_BACKOFF, "100 ms"),
            (KEY_EXP_MAX_BACKOFF, "2 min"),
            (KEY_EXP_MULTIPLIER, "2.5"),
            (KEY_EXP_RESET_THRESHOLD, "30 min"),
            (KEY_EXP_JITTER, "0"),
            (KEY_EXP_ATTEMPTS, "7"),
        ]);
        assert_eq!(
            from_lookup(&exp, false),
            Ok(exponential(ms(100), secs(120), 2.5, secs(1800), 0.0, 7))
        );
        // A bare number is milliseconds; partial configuration keeps the other defaults.
        let partial = lookup_from(&[(KEY_TYPE, "fixed-delay"), (KEY_FIXED_DELAY_DELAY, "1500")]);
        assert_eq!(
            from_lookup(&partial, false),
            Ok(RestartStrategy::FixedDelay {
                attempts: 1,
                delay: ms(1500)
            })
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let cases: [(&str, &str, &str); 14] = [
            ("fixed-delay", KEY_FIXED_DELAY_ATTEMPTS, "-1"),
            ("fixed-delay", KEY_FIXED_DELAY_ATTEMPTS, "many"),
            ("fixed-delay", KEY_FIXED_DELAY_DELAY, "soon"),
            ("failure-rate", KEY_FAILURE_RATE_MAX_FAILURES, "1.5"),
            ("failure-rate", KEY_FAILURE_RATE_INTERVAL, "1 fortnight"),
            ("failure-rate", KEY_FAILURE_RATE_DELAY, "-5 s"),
            ("exponential-delay", KEY_EXP_INITIAL_BACKOFF, "x"),
            ("exponential-delay", KEY_EXP_MAX_BACKOFF, ""),
            ("exponential-delay", KEY_EXP_MULTIPLIER, "two"),
            ("exponential-delay", KEY_EXP_MULTIPLIER, "inf"),
            ("exponential-delay", KEY_EXP_RESET_THRESHOLD, "1.5 h"),
            ("exponential-delay", KEY_EXP_JITTER, "NaN"),
            ("exponential-delay", KEY_EXP_ATTEMPTS, "99999999999"),
            ("exponential-delay", KEY_EXP_ATTEMPTS, "-3"),
        ];
        for (ty, key, value) in cases {
            let lookup = lookup_from(&[(KEY_TYPE, ty), (key, value)]);
            let err = from_lookup(&lookup, false).expect_err("should fail");
            assert!(err.contains(key), "{err:?} should name {key}");
            assert!(
                err.contains(&format!("{value:?}")),
                "{err:?} should quote {value:?}"
            );
        }
        // Values that parse but break a rule are refused by validation, naming the key.
        for (key, value) in [
            (KEY_EXP_MULTIPLIER, "1"),
            (KEY_EXP_JITTER, "2"),
            (KEY_EXP_ATTEMPTS, "0"),
            (KEY_EXP_INITIAL_BACKOFF, "2 min"),
        ] {
            let lookup = lookup_from(&[(KEY_TYPE, "exponential-delay"), (key, value)]);
            let err = from_lookup(&lookup, false).expect_err("should fail");
            assert!(err.contains(key), "{err:?} should name {key}");
        }
        let lookup = lookup_from(&[
            (KEY_TYPE, "failure-rate"),
            (KEY_FAILURE_RATE_MAX_FAILURES, "0"),
        ]);
        let err = from_lookup(&lookup, false).expect_err("should fail");
        assert!(err.contains(KEY_FAILURE_RATE_MAX_FAILURES), "{err}");
        // An unknown type names the key, the value and the valid names.
        let lookup = lookup_from(&[(KEY_TYPE, "sometimes")]);
        let err = from_lookup(&lookup, true).expect_err("should fail");
        assert!(
            err.contains(KEY_TYPE) && err.contains("\"sometimes\"") && err.contains("fixed-delay"),
            "{err}"
        );
    }

    // ---- regions ----------------------------------------------------------------------------

    fn v(parallelism: u32, inputs: &[(usize, bool)]) -> RegionVertex {
        RegionVertex {
            parallelism,
            inputs: inputs.to_vec(),
        }
    }

    fn all(vertex: usize, parallelism: u32) -> Vec<(usize, u32)> {
        (0..parallelism).map(|s| (vertex, s)).collect()
    }

    #[test]
    fn one_all_to_all_edge_is_one_region() {
        let regions = pipelined_regions(&[v(2, &[]), v(3, &[(0, false)])]);
        let mut expected = all(0, 2);
        expected.extend(all(1, 3));
        assert_eq!(regions, vec![expected]);
    }

    #[test]
    fn forward_chain_is_one_region_per_subtask() {
        let regions = pipelined_regions(&[v(3, &[]), v(3, &[(0, true)]), v(3, &[(1, true)])]);
        assert_eq!(
            regions,
            vec![
                vec![(0, 0), (1, 0), (2, 0)],
                vec![(0, 1), (1, 1), (2, 1)],
                vec![(0, 2), (1, 2), (2, 2)],
            ]
        );
        assert_eq!(region_of(&regions, 1, 2), Some(2));
        assert_eq!(region_of(&regions, 2, 0), Some(0));
        assert_eq!(region_of(&regions, 3, 0), None);
        assert_eq!(region_of(&regions, 0, 3), None);
        let lookup = region_lookup(&regions);
        assert_eq!(lookup.len(), 9);
        for (r, members) in regions.iter().enumerate() {
            for m in members {
                assert_eq!(lookup[m], r);
            }
        }
    }

    #[test]
    fn source_map_sink_forward_p4_is_four_regions() {
        let regions = pipelined_regions(&[v(4, &[]), v(4, &[(0, true)]), v(4, &[(1, true)])]);
        assert_eq!(regions.len(), 4);
    }

    #[test]
    fn forward_then_all_to_all_is_one_region() {
        // WordCount: source -forward-> flatMap -hash-> count -forward-> sink.
        let regions = pipelined_regions(&[
            v(2, &[]),
            v(2, &[(0, true)]),
            v(4, &[(1, false)]),
            v(4, &[(2, true)]),
        ]);
        assert_eq!(regions.len(), 1);
        assert_eq!(regions[0].len(), 12);
        assert_eq!(regions[0][0], (0, 0));
    }

    #[test]
    fn two_independent_pipelines() {
        // src A, src B, sink A <- A (forward), sink B <- B (forward), each p=2.
        let regions =
            pipelined_regions(&[v(2, &[]), v(2, &[]), v(2, &[(0, true)]), v(2, &[(1, true)])]);
        assert_eq!(
            regions,
            vec![
                vec![(0, 0), (2, 0)],
                vec![(0, 1), (2, 1)],
                vec![(1, 0), (3, 0)],
                vec![(1, 1), (3, 1)],
            ]
        );
        // With p=1 each pipeline is one region.
        let regions = pipelined_regions(&[
            v(1, &[]),
            v(1, &[]),
            v(1, &[(0, true)]),
            v(1, &[(1, false)]),
        ]);
        assert_eq!(regions, vec![vec![(0, 0), (2, 0)], vec![(1, 0), (3, 0)]]);
    }

    #[test]
    fn pointwise_at_unequal_parallelism_connects_ranges() {
        // 4 -> 2: consumer 0 reads producers 0,1; consumer 1 reads 2,3.
        let regions = pipelined_regions(&[v(4, &[]), v(2, &[(0, true)])]);
        assert_eq!(
            regions,
            vec![vec![(0, 0), (0, 1), (1, 0)], vec![(0, 2), (0, 3), (1, 1)]]
        );
        // 2 -> 3: producer 0 feeds consumers 0,1; producer 1 feeds consumer 2.
        let regions = pipelined_regions(&[v(2, &[]), v(3, &[(0, true)])]);
        assert_eq!(
            regions,
            vec![vec![(0, 0), (1, 0), (1, 1)], vec![(0, 1), (1, 2)]]
        );
    }

    #[test]
    fn edge_cases() {
        assert!(pipelined_regions(&[]).is_empty());
        // A lone vertex: each subtask alone.
        assert_eq!(
            pipelined_regions(&[v(2, &[])]),
            vec![vec![(0, 0)], vec![(0, 1)]]
        );
        // An out-of-range producer is ignored.
        assert_eq!(
            pipelined_regions(&[v(1, &[(9, false)])]),
            vec![vec![(0, 0)]]
        );
        // A zero-parallelism vertex has no subtasks and connects nothing.
        assert_eq!(
            pipelined_regions(&[v(0, &[]), v(1, &[(0, false)])]),
            vec![vec![(1, 0)]]
        );
        // A diamond joined by one all-to-all edge is one region.
        let regions = pipelined_regions(&[
            v(2, &[]),
            v(2, &[(0, true)]),
            v(2, &[(0, true)]),
            v(2, &[(1, true), (2, false)]),
        ]);
        assert_eq!(regions.len(), 1);
    }

    #[test]
    fn region_vertices_of_a_job_graph() {
        use crate::jobgraph::{JobEdge, JobVertex, ShipStrategy};
        let source = JobVertex::new("source", "NoOp", 2);
        let mut map = JobVertex::new("map", "NoOp", 2);
        map.inputs.push(JobEdge {
            source: source.id,
            pattern: DistributionPattern::Pointwise,
            ship_strategy: Some(ShipStrategy::Forward),
        });
        let mut sink = JobVertex::new("sink", "NoOp", 2);
        sink.inputs.push(JobEdge {
            source: map.id,
            pattern: DistributionPattern::AllToAll,
            ship_strategy: Some(ShipStrategy::Hash),
        });
        let plain = JobVertex::new("plain", "NoOp", 2)
            .connect_from(&source, DistributionPattern::Pointwise);
        let graph = JobGraph::new("job", vec![source, map, sink, plain]);
        let vertices = region_vertices(&graph).expect("valid graph");
        assert_eq!(
            vertices,
            vec![
                v(2, &[]),
                v(2, &[(0, true)]),
                v(2, &[(1, false)]),
                v(2, &[(0, true)]),
            ]
        );
        assert_eq!(pipelined_regions(&vertices).len(), 1);

        let orphan = JobVertex::new("orphan", "NoOp", 1).connect_from(
            &JobVertex::new("ghost", "NoOp", 1),
            DistributionPattern::AllToAll,
        );
        let err = region_vertices(&JobGraph::new("bad", vec![orphan])).expect_err("unknown input");
        assert!(err.contains("orphan"), "{err}");
    }
}
