//! Triggers (when a window is evaluated) and the count evictor. Flink: `Trigger`,
//! `EventTimeTrigger`, `ProcessingTimeTrigger`, `CountTrigger`, `PurgingTrigger`,
//! `CountEvictor`.

/// When a window's contents are evaluated, and whether they are purged afterwards.
///
/// Build one with [`EventTimeTrigger::create`], [`ProcessingTimeTrigger::create`],
/// [`CountTrigger::of`], [`PurgingTrigger::of`] or [`NeverTrigger::create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Fires when the watermark passes the window's `max_timestamp()`, and again at once for
    /// every late element within the allowed lateness.
    EventTime,
    /// Fires when processing time reaches the window's `max_timestamp()`.
    ProcessingTime,
    /// Fires every `n` elements of a window.
    Count(u64),
    /// Never fires (the default of [`super::GlobalWindows`]).
    Never,
    /// Like the inner trigger, but purges the window's contents whenever it fires.
    Purging(Box<Trigger>),
}

impl Trigger {
    /// A display name such as `EventTimeTrigger` or `PurgingTrigger(CountTrigger(5))`.
    pub fn describe(&self) -> String {
        match self {
            Trigger::EventTime => "EventTimeTrigger".to_owned(),
            Trigger::ProcessingTime => "ProcessingTimeTrigger".to_owned(),
            Trigger::Count(n) => format!("CountTrigger({n})"),
            Trigger::Never => "NeverTrigger".to_owned(),
            Trigger::Purging(inner) => format!("PurgingTrigger({})", inner.describe()),
        }
    }
}

/// Fires a window when the watermark passes its end. Flink: `EventTimeTrigger`.
#[derive(Debug, Clone, Copy)]
pub struct EventTimeTrigger;

impl EventTimeTrigger {
    /// [`Trigger::EventTime`].
    pub fn create() -> Trigger {
        Trigger::EventTime
    }
}

/// Fires a window when processing time reaches its end. Flink: `ProcessingTimeTrigger`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessingTimeTrigger;

impl ProcessingTimeTrigger {
    /// [`Trigger::ProcessingTime`].
    pub fn create() -> Trigger {
        Trigger::ProcessingTime
    }
}

/// Fires a window every `n` elements. Flink: `CountTrigger`.
#[derive(Debug, Clone, Copy)]
pub struct CountTrigger;

impl CountTrigger {
    /// [`Trigger::Count`]`(n)`.
    pub fn of(n: u64) -> Trigger {
        Trigger::Count(n)
    }
}

/// Never fires. Flink: `GlobalWindows.NeverTrigger`.
#[derive(Debug, Clone, Copy)]
pub struct NeverTrigger;

impl NeverTrigger {
    /// [`Trigger::Never`].
    pub fn create() -> Trigger {
        Trigger::Never
    }
}

/// Purges the window's contents whenever the inner trigger fires. Flink: `PurgingTrigger`.
#[derive(Debug, Clone, Copy)]
pub struct PurgingTrigger;

impl PurgingTrigger {
    /// [`Trigger::Purging`]`(inner)`.
    pub fn of(inner: Trigger) -> Trigger {
        match inner {
            // Purging twice is purging once.
            Trigger::Purging(inner) => Trigger::Purging(inner),
            inner => Trigger::Purging(Box::new(inner)),
        }
    }
}

/// Keeps only the last `max_count` elements of a window when it fires (the older ones are
/// removed from the window for good). Windows with an evictor keep their elements, not an
/// accumulator. Flink: `CountEvictor` (evicting before the window function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountEvictor {
    pub(crate) max_count: u64,
}

impl CountEvictor {
    /// Keeps the last `max_count` elements.
    pub fn of(max_count: u64) -> Self {
        CountEvictor { max_count }
    }
}

/// What a trigger decided. Flink: `TriggerResult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TriggerResult {
    pub(crate) fire: bool,
    pub(crate) purge: bool,
}

impl TriggerResult {
    pub(crate) const CONTINUE: TriggerResult = TriggerResult {
        fire: false,
        purge: false,
    };
    pub(crate) const FIRE: TriggerResult = TriggerResult {
        fire: true,
        purge: false,
    };
}
