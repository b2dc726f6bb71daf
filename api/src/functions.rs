//! User function traits: [`Collector`], [`SourceFunction`], [`SinkFunction`], the numeric
//! [`Numeric`] trait behind `sum`, and the seeded [`SplitMix64`] generator.

use std::fmt;

/// Receives the records an operator or source emits.
pub trait Collector<T> {
    /// Emits one record downstream.
    fn collect(&mut self, record: T);
}

impl<T> Collector<T> for Vec<T> {
    fn collect(&mut self, record: T) {
        self.push(record);
    }
}

/// What a [`SourceFunction::poll_next`] call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceStatus {
    /// More records may be available right away; poll again.
    More,
    /// Nothing available now (for example a socket read timed out); the task may flush, check
    /// for cancellation and poll again later.
    Idle,
    /// The source has emitted everything; it will emit nothing more.
    Finished,
}

/// Where a function runs: handed to `open` of sources, sinks and functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeContext {
    /// This subtask's index, `0..parallelism`.
    pub subtask_index: u32,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// The operator's max parallelism (number of key groups).
    pub max_parallelism: u32,
    /// The execution attempt, 0 for the first.
    pub attempt_number: u32,
    /// The task's name (chain name with subtask suffix, as the runtime gives it).
    pub task_name: String,
    /// True when the job runs with checkpoints (exactly-once mode): sinks that support it then
    /// write transactionally, committing on [`SinkFunction::notify_checkpoint_complete`].
    pub checkpointing: bool,
}

/// The context of a source subtask.
pub type SourceContext = RuntimeContext;
/// The context of a sink subtask.
pub type SinkContext = RuntimeContext;

/// A source in the pull model: the task calls [`poll_next`](SourceFunction::poll_next) in a
/// loop, which emits at most `max_records` records per call and never blocks for long, so the
/// task sees cancellation and flushes in between.
///
/// One instance is created per subtask (by the factory given to `add_source`); it should use
/// [`SourceContext::subtask_index`] and [`SourceContext::parallelism`] to pick its share.
///
/// # Checkpoints
/// A replayable source returns its position from
/// [`snapshot_state`](SourceFunction::snapshot_state) (called between two polls, so the position
/// is right after the last record emitted) and continues from such a position after
/// [`restore_state`](SourceFunction::restore_state) (called before `open`). The defaults keep
/// no state: a restored source starts from the beginning.
pub trait SourceFunction<T>: Send + 'static {
    /// Opens resources (files, sockets). Called once before the first poll.
    ///
    /// # Errors
    /// A message that fails the task.
    fn open(&mut self, ctx: &SourceContext) -> Result<(), String> {
        let _ = ctx;
        Ok(())
    }

    /// Emits up to `max_records` records into `out`.
    ///
    /// # Errors
    /// A message that fails the task.
    fn poll_next(
        &mut self,
        out: &mut dyn Collector<T>,
        max_records: usize,
    ) -> Result<SourceStatus, String>;

    /// The source's position, for a checkpoint: the records emitted so far are not emitted
    /// again by a source restored from it. Called between polls (also after the source
    /// finished).
    ///
    /// # Errors
    /// A message that fails the checkpoint and the task.
    fn snapshot_state(&mut self) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }

    /// Takes back a position returned by [`snapshot_state`](SourceFunction::snapshot_state) of
    /// the same subtask in an earlier attempt. Called once, before `open`.
    ///
    /// # Errors
    /// A malformed or unusable state.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        let _ = state;
        Ok(())
    }

    /// Releases resources; called once at the end, also after a failure or cancellation.
    fn close(&mut self) {}
}

/// A sink: receives every record of its input.
///
/// One instance is created per subtask (by the factory given to `add_sink`).
///
/// # Checkpoints
/// An exactly-once sink is a two-phase commit: [`snapshot_state`](SinkFunction::snapshot_state)
/// pre-commits what was written since the previous checkpoint (durably, but invisible) and
/// returns the transactions to commit;
/// [`notify_checkpoint_complete`](SinkFunction::notify_checkpoint_complete) commits them once the
/// whole checkpoint is complete; after a failure [`restore_state`](SinkFunction::restore_state)
/// gets the state of the last completed checkpoint back (commit what it holds, which may have
/// been committed already) and `open` discards what the failed attempt left uncommitted.
pub trait SinkFunction<T>: Send + 'static {
    /// Opens resources. Called once before the first record.
    ///
    /// # Errors
    /// A message that fails the task.
    fn open(&mut self, ctx: &SinkContext) -> Result<(), String> {
        let _ = ctx;
        Ok(())
    }

    /// Consumes one record.
    ///
    /// # Errors
    /// A message that fails the task; later records are dropped.
    fn invoke(&mut self, value: T) -> Result<(), String>;

    /// Called once when the input has ended: write out and flush what is buffered.
    ///
    /// # Errors
    /// A message that fails the task.
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Called when the task is idle: push out buffered output if the sink buffers.
    ///
    /// # Errors
    /// A message that fails the task.
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Pre-commits everything written before checkpoint `checkpoint_id` and returns the sink's
    /// state for it (the transactions of this and earlier checkpoints not committed yet).
    ///
    /// # Errors
    /// A message that fails the checkpoint and the task.
    fn snapshot_state(&mut self, checkpoint_id: u64) -> Result<Vec<u8>, String> {
        let _ = checkpoint_id;
        Ok(Vec::new())
    }

    /// Takes back the state of a completed checkpoint returned by
    /// [`snapshot_state`](SinkFunction::snapshot_state) in an earlier attempt of this subtask.
    /// Called once, before `open`.
    ///
    /// # Errors
    /// A malformed state, or transactions that cannot be committed.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        let _ = state;
        Ok(())
    }

    /// Checkpoint `checkpoint_id` is complete: commit the transactions of every checkpoint up
    /// to it. Must be idempotent (a commit may be repeated after a failure).
    ///
    /// # Errors
    /// A message that fails the task.
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String> {
        let _ = checkpoint_id;
        Ok(())
    }

    /// Releases resources; called once at the end, also after a failure or cancellation.
    fn close(&mut self) {}
}

/// A number that `KeyedStream::sum` can add up. Integers wrap on overflow (as Java's do in
/// Flink's `SumAggregator`).
pub trait Numeric: Copy + Send + 'static {
    /// Adds `other` to `self`.
    fn add_assign(&mut self, other: Self);
}

macro_rules! numeric_int {
    ($($t:ty),*) => {$(
        impl Numeric for $t {
            #[inline]
            fn add_assign(&mut self, other: Self) {
                *self = self.wrapping_add(other);
            }
        }
    )*};
}
numeric_int!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

impl Numeric for f32 {
    #[inline]
    fn add_assign(&mut self, other: Self) {
        *self += other;
    }
}

impl Numeric for f64 {
    #[inline]
    fn add_assign(&mut self, other: Self) {
        *self += other;
    }
}

/// The SplitMix64 generator: tiny, fast, and deterministic from its seed.
#[derive(Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl fmt::Debug for SplitMix64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplitMix64").finish_non_exhaustive()
    }
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The generator for element `index` of a stream seeded with `seed`: independent of which
    /// subtask produces the element.
    pub fn for_index(seed: u64, index: u64) -> Self {
        SplitMix64::new(mix64(seed ^ mix64(index.wrapping_add(GOLDEN_GAMMA))))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// A float uniformly drawn from `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// An integer drawn uniformly from `0..bound` (0 when `bound` is 0).
    pub fn gen_range(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// An integer drawn uniformly from `low..high` (`low` when the range is empty).
    pub fn gen_between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.gen_range(high - low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_in_range() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let xs: Vec<u64> = (0..10).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..10).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
        let mut r = SplitMix64::for_index(7, 3);
        for _ in 0..1000 {
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
            let n = r.gen_between(10, 20);
            assert!((10..20).contains(&n));
            assert!(r.gen_range(3) < 3);
        }
        assert_eq!(r.gen_between(5, 5), 5);
        assert_eq!(r.gen_range(0), 0);
        assert_ne!(
            SplitMix64::for_index(7, 3).next_u64(),
            SplitMix64::for_index(7, 4).next_u64()
        );
    }

    #[test]
    fn numeric_adds_and_wraps() {
        let mut x = u8::MAX;
        x.add_assign(2);
        assert_eq!(x, 1);
        let mut f = 1.5f64;
        f.add_assign(2.0);
        assert_eq!(f, 3.5);
    }

    #[test]
    fn vec_is_a_collector() {
        let mut out = Vec::new();
        Collector::collect(&mut out, 3);
        assert_eq!(out, vec![3]);
    }
}
