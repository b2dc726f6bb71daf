//! Windows: Flink's windowing on keyed streams. A [`KeyedStream`](crate::KeyedStream) is cut
//! into finite windows by a [`WindowAssigner`]; a [`Trigger`] decides when a window's contents
//! are evaluated by the window function (`reduce`, `sum`, `aggregate`, `process`), and an
//! optional [`CountEvictor`] drops old elements before that.
//!
//! ```
//! use std::time::Duration;
//! use rflink::time::WatermarkStrategy;
//! use rflink::windowing::TumblingEventTimeWindows;
//! use rflink::StreamExecutionEnvironment;
//!
//! let mut env = StreamExecutionEnvironment::new();
//! env.from_collection(vec![("a".to_string(), 1u64, 1_000i64), ("a".to_string(), 1, 1_500)])
//!     .assign_timestamps_and_watermarks(
//!         WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(1))
//!             .with_timestamp_assigner(|event: &(String, u64, i64), _| event.2),
//!     )
//!     .map(|(word, n, _)| (word, n))
//!     .key_by(|pair: &(String, u64)| pair.0.clone())
//!     .window(TumblingEventTimeWindows::of(Duration::from_secs(5)))
//!     .sum(|pair: &mut (String, u64)| &mut pair.1)
//!     .collect("doc-window-count");
//! assert!(env.stream_graph().is_ok());
//! ```
//!
//! # Semantics (as Flink's `WindowOperator`)
//! * Every window holds its contents per key: a single accumulator for `reduce`, `sum` and
//!   `aggregate`, the elements for `process` (and whenever an evictor is set).
//! * An element is *late* when every window it belongs to is past its cleanup time
//!   (`window.max_timestamp() + allowed_lateness <= current watermark`): it is dropped (and
//!   counted), or emitted on the side output given to
//!   [`WindowedStream::side_output_late_data`].
//! * A window's state is cleared at its cleanup time (event time: `max_timestamp +
//!   allowed_lateness`; processing time: `max_timestamp`). Global windows are never cleared.
//! * Results carry the timestamp `window.max_timestamp()`.
//! * Session windows merge: a new element's window `[t, t + gap)` merges with every window it
//!   touches, their contents are combined (`reduce` reduces, `aggregate` merges accumulators,
//!   `process` concatenates elements), and the timers of merged-away windows are deleted.

mod assigners;
mod functions;
mod operator;
mod stream;
#[cfg(test)]
mod tests;
mod triggers;

pub use assigners::{
    EventTimeSessionWindows, GlobalWindows, ProcessingTimeSessionWindows, SlidingEventTimeWindows,
    SlidingProcessingTimeWindows, TumblingEventTimeWindows, TumblingProcessingTimeWindows,
    WindowAssigner,
};
pub use functions::{AggregateFunction, ProcessWindowFunction, WindowContext};
pub use stream::WindowedStream;
pub use triggers::{
    CountEvictor, CountTrigger, EventTimeTrigger, NeverTrigger, ProcessingTimeTrigger,
    PurgingTrigger, Trigger,
};

use crate::codec::DecodeError;
use crate::Codec;

/// A window of time `[start, end)` in milliseconds. Flink: `TimeWindow`.
///
/// Global windows ([`GlobalWindows`]) use the window spanning everything,
/// [`TimeWindow::global`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeWindow {
    /// The first millisecond of the window (inclusive).
    pub start: i64,
    /// The end of the window (exclusive).
    pub end: i64,
}

impl TimeWindow {
    /// The window `[start, end)`.
    pub const fn new(start: i64, end: i64) -> Self {
        TimeWindow { start, end }
    }

    /// The single window of [`GlobalWindows`]: `[i64::MIN, i64::MAX)`.
    pub const fn global() -> Self {
        TimeWindow {
            start: i64::MIN,
            end: i64::MAX,
        }
    }

    /// True for [`TimeWindow::global`].
    pub fn is_global(&self) -> bool {
        *self == Self::global()
    }

    /// The window's first millisecond.
    pub fn start(&self) -> i64 {
        self.start
    }

    /// The window's exclusive end.
    pub fn end(&self) -> i64 {
        self.end
    }

    /// The largest timestamp inside the window, `end - 1` (the global window's is `i64::MAX`,
    /// as Flink's `GlobalWindow.maxTimestamp()`). Window results carry it as their timestamp.
    pub fn max_timestamp(&self) -> i64 {
        if self.end == i64::MAX {
            i64::MAX
        } else {
            self.end - 1
        }
    }

    /// True when the two windows overlap or touch (Flink's `intersects`: adjacent session
    /// windows merge).
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow::new(self.start.min(other.start), self.end.max(other.end))
    }

    /// The start of the window of size `window_size` (with offset `offset`) that contains
    /// `timestamp`; correct for negative timestamps. Flink: `TimeWindow.getWindowStartWithOffset`
    /// (with Java's wrapping arithmetic at the extremes).
    pub fn get_window_start_with_offset(timestamp: i64, offset: i64, window_size: i64) -> i64 {
        if window_size <= 0 {
            return timestamp;
        }
        let remainder = timestamp.wrapping_sub(offset).wrapping_rem(window_size);
        if remainder < 0 {
            timestamp.wrapping_sub(remainder.wrapping_add(window_size))
        } else {
            timestamp.wrapping_sub(remainder)
        }
    }
}

impl Codec for TimeWindow {
    const MIN_ENCODED_LEN: usize = 16;

    fn encode(&self, out: &mut Vec<u8>) {
        self.start.encode(out);
        self.end.encode(out);
    }

    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let start = i64::decode(input)?;
        let end = i64::decode(input)?;
        Ok(TimeWindow { start, end })
    }
}

/// Flink's `TimeWindow.mergeWindows`: sorts `windows` by start and groups the ones that
/// intersect; returns every group of more than one window with the window covering it.
pub(crate) fn merge_windows(mut windows: Vec<TimeWindow>) -> Vec<(TimeWindow, Vec<TimeWindow>)> {
    windows.sort_unstable_by_key(|w| w.start);
    let mut merged: Vec<(TimeWindow, Vec<TimeWindow>)> = Vec::new();
    let mut current: Option<(TimeWindow, Vec<TimeWindow>)> = None;
    for candidate in windows {
        match &mut current {
            None => current = Some((candidate, vec![candidate])),
            Some((cover, members)) if cover.intersects(&candidate) => {
                *cover = cover.cover(&candidate);
                members.push(candidate);
            }
            Some(_) => {
                if let Some(done) = current.take() {
                    if done.1.len() > 1 {
                        merged.push(done);
                    }
                }
                current = Some((candidate, vec![candidate]));
            }
        }
    }
    if let Some(done) = current {
        if done.1.len() > 1 {
            merged.push(done);
        }
    }
    merged
}
