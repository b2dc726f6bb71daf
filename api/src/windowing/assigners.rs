//! Window assigners: which windows an element belongs to. Flink: `WindowAssigner` and its
//! implementations.

use std::time::Duration;

use super::{TimeWindow, Trigger};
use crate::time::millis;

/// Assigns every element to zero or more windows. Flink: `WindowAssigner`.
///
/// Event-time assigners get the element's timestamp; processing-time assigners the current
/// processing time; [`GlobalWindows`] ignores time.
pub trait WindowAssigner: Send + Sync + 'static {
    /// Appends the windows of an element at time `timestamp` to `out`.
    fn assign_windows(&self, timestamp: i64, out: &mut Vec<TimeWindow>);
    /// The trigger used unless [`WindowedStream::trigger`](super::WindowedStream::trigger)
    /// sets another.
    fn default_trigger(&self) -> Trigger;
    /// True when windows follow event time (element timestamps and watermarks).
    fn is_event_time(&self) -> bool;
    /// True for session windows: a new window merges with the windows it touches.
    fn is_merging(&self) -> bool {
        false
    }
    /// Checks the parameters; the message fails building the graph.
    ///
    /// # Errors
    /// A message naming the broken rule.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// A display name such as `TumblingEventTimeWindows(5000)`.
    fn describe(&self) -> String;
}

fn check_tumbling(name: &str, size: i64, offset: i64) -> Result<(), String> {
    if size <= 0 || offset.unsigned_abs() >= size.unsigned_abs() {
        return Err(format!(
            "{name} parameters must satisfy abs(offset) < size (size {size} ms, offset {offset} ms)"
        ));
    }
    Ok(())
}

fn check_sliding(name: &str, size: i64, slide: i64, offset: i64) -> Result<(), String> {
    if size <= 0 || slide <= 0 || offset.unsigned_abs() >= slide.unsigned_abs() {
        return Err(format!(
            "{name} parameters must satisfy abs(offset) < slide and size > 0 (size {size} ms, \
             slide {slide} ms, offset {offset} ms)"
        ));
    }
    Ok(())
}

fn check_gap(name: &str, gap: i64) -> Result<(), String> {
    if gap <= 0 {
        return Err(format!(
            "{name} parameters must satisfy 0 < gap (gap {gap} ms)"
        ));
    }
    Ok(())
}

#[inline]
fn tumbling(timestamp: i64, size: i64, offset: i64, out: &mut Vec<TimeWindow>) {
    let start = TimeWindow::get_window_start_with_offset(timestamp, offset, size);
    out.push(TimeWindow::new(start, start.saturating_add(size)));
}

/// Every window of `size` sliding by `slide` that contains `timestamp`, latest first (as
/// Flink's `SlidingEventTimeWindows.assignWindows`).
fn sliding(timestamp: i64, size: i64, slide: i64, offset: i64, out: &mut Vec<TimeWindow>) {
    let last_start = TimeWindow::get_window_start_with_offset(timestamp, offset, slide);
    let mut start = last_start;
    let lowest = timestamp.saturating_sub(size);
    // `start <= timestamp` stops a start that wrapped around at the lowest timestamps.
    while start > lowest && start <= timestamp {
        out.push(TimeWindow::new(start, start.saturating_add(size)));
        match start.checked_sub(slide) {
            Some(next) => start = next,
            None => break,
        }
    }
}

macro_rules! tumbling_assigner {
    ($name:ident, $event:expr, $trigger:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            size: i64,
            offset: i64,
        }

        impl $name {
            /// Windows of `size`, aligned to the epoch.
            pub fn of(size: Duration) -> Self {
                $name {
                    size: millis(size),
                    offset: 0,
                }
            }

            /// Shifts the windows by `offset` (must be below the size), for example to align
            /// daily windows to a time zone.
            pub fn with_offset(self, offset: Duration) -> Self {
                self.with_offset_millis(millis(offset))
            }

            /// Shifts the windows by `offset` milliseconds, which may be negative (`abs(offset)
            /// < size`).
            pub fn with_offset_millis(mut self, offset: i64) -> Self {
                self.offset = offset;
                self
            }

            /// The window size in milliseconds.
            pub fn size_millis(&self) -> i64 {
                self.size
            }
        }

        impl WindowAssigner for $name {
            #[inline]
            fn assign_windows(&self, timestamp: i64, out: &mut Vec<TimeWindow>) {
                tumbling(timestamp, self.size, self.offset, out);
            }
            fn default_trigger(&self) -> Trigger {
                $trigger
            }
            fn is_event_time(&self) -> bool {
                $event
            }
            fn validate(&self) -> Result<(), String> {
                check_tumbling(stringify!($name), self.size, self.offset)
            }
            fn describe(&self) -> String {
                format!("{}({})", stringify!($name), self.size)
            }
        }
    };
}

tumbling_assigner!(
    TumblingEventTimeWindows,
    true,
    Trigger::EventTime,
    "Non-overlapping windows of a fixed size in event time: an element with timestamp `t` \
     belongs to `[start, start + size)` with `start = t - (t - offset) mod size`. Default \
     trigger: [`EventTimeTrigger`](super::EventTimeTrigger). Flink: `TumblingEventTimeWindows`."
);
tumbling_assigner!(
    TumblingProcessingTimeWindows,
    false,
    Trigger::ProcessingTime,
    "Non-overlapping windows of a fixed size in processing time: an element goes to the window \
     of the current processing time. Default trigger: \
     [`ProcessingTimeTrigger`](super::ProcessingTimeTrigger). Flink: \
     `TumblingProcessingTimeWindows`."
);

macro_rules! sliding_assigner {
    ($name:ident, $event:expr, $trigger:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            size: i64,
            slide: i64,
            offset: i64,
        }

        impl $name {
            /// Windows of `size`, one starting every `slide`.
            pub fn of(size: Duration, slide: Duration) -> Self {
                $name {
                    size: millis(size),
                    slide: millis(slide),
                    offset: 0,
                }
            }

            /// Shifts the windows by `offset` (below the slide).
            pub fn with_offset(self, offset: Duration) -> Self {
                self.with_offset_millis(millis(offset))
            }

            /// Shifts the windows by `offset` milliseconds, which may be negative (`abs(offset)
            /// < slide`).
            pub fn with_offset_millis(mut self, offset: i64) -> Self {
                self.offset = offset;
                self
            }
        }

        impl WindowAssigner for $name {
            #[inline]
            fn assign_windows(&self, timestamp: i64, out: &mut Vec<TimeWindow>) {
                sliding(timestamp, self.size, self.slide, self.offset, out);
            }
            fn default_trigger(&self) -> Trigger {
                $trigger
            }
            fn is_event_time(&self) -> bool {
                $event
            }
            fn validate(&self) -> Result<(), String> {
                check_sliding(stringify!($name), self.size, self.slide, self.offset)
            }
            fn describe(&self) -> String {
                format!("{}({}, {})", stringify!($name), self.size, self.slide)
            }
        }
    };
}

sliding_assigner!(
    SlidingEventTimeWindows,
    true,
    Trigger::EventTime,
    "Overlapping windows of a fixed size starting every `slide`, in event time: an element \
     belongs to every window that contains its timestamp. Flink: `SlidingEventTimeWindows`."
);
sliding_assigner!(
    SlidingProcessingTimeWindows,
    false,
    Trigger::ProcessingTime,
    "Overlapping windows of a fixed size starting every `slide`, in processing time. Flink: \
     `SlidingProcessingTimeWindows`."
);

macro_rules! session_assigner {
    ($name:ident, $event:expr, $trigger:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            gap: i64,
        }

        impl $name {
            /// Sessions that end after `gap` without elements.
            pub fn with_gap(gap: Duration) -> Self {
                $name { gap: millis(gap) }
            }
        }

        impl WindowAssigner for $name {
            fn assign_windows(&self, timestamp: i64, out: &mut Vec<TimeWindow>) {
                out.push(TimeWindow::new(
                    timestamp,
                    timestamp.saturating_add(self.gap),
                ));
            }
            fn default_trigger(&self) -> Trigger {
                $trigger
            }
            fn is_event_time(&self) -> bool {
                $event
            }
            fn is_merging(&self) -> bool {
                true
            }
            fn validate(&self) -> Result<(), String> {
                check_gap(stringify!($name), self.gap)
            }
            fn describe(&self) -> String {
                format!("{}({})", stringify!($name), self.gap)
            }
        }
    };
}

session_assigner!(
    EventTimeSessionWindows,
    true,
    Trigger::EventTime,
    "Session windows in event time: an element at `t` opens the window `[t, t + gap)`, which \
     merges with every window it overlaps or touches. Flink: `EventTimeSessionWindows`."
);
session_assigner!(
    ProcessingTimeSessionWindows,
    false,
    Trigger::ProcessingTime,
    "Session windows in processing time: an element arriving at processing time `now` opens \
     `[now, now + gap)`, merged with the windows it touches. Flink: \
     `ProcessingTimeSessionWindows`."
);

/// One window per key holding every element, [`TimeWindow::global`]. Its default trigger never
/// fires: set one with [`WindowedStream::trigger`](super::WindowedStream::trigger), or use
/// [`KeyedStream::count_window`](crate::KeyedStream::count_window). Flink: `GlobalWindows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GlobalWindows;

impl GlobalWindows {
    /// The global window assigner.
    pub fn create() -> Self {
        GlobalWindows
    }
}

impl WindowAssigner for GlobalWindows {
    #[inline]
    fn assign_windows(&self, _timestamp: i64, out: &mut Vec<TimeWindow>) {
        out.push(TimeWindow::global());
    }
    fn default_trigger(&self) -> Trigger {
        Trigger::Never
    }
    fn is_event_time(&self) -> bool {
        false
    }
    fn describe(&self) -> String {
        "GlobalWindows()".to_owned()
    }
}
