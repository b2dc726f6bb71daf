//! The window operator: one keyed stateful node holding every window's contents per key, the
//! merging-window sets of session windows, and the window timers. Flink: `WindowOperator`,
//! `EvictingWindowOperator` (with [`Evicting`](super::functions::Evicting) contents),
//! `MergingWindowSet`.

use std::marker::PhantomData;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::functions::{Contents, WindowContext, WindowFunction};
use super::triggers::{Trigger, TriggerResult};
use super::{merge_windows, TimeWindow, WindowAssigner};
use crate::codec::{read_varint, write_varint};
use crate::operators::{earliest, BoxOutput, ErrorSlot, KeyFn, Output};
use crate::snapshot::{expect_end, SnapshotSections, SnapshotWriter};
use crate::task::CheckpointBarrier;
use crate::time::{ChainTime, TimeDomain, Timers, NO_TIMESTAMP};
use crate::{Codec, Collector, Key, Record};

/// The windows of one key: contents by state window, trigger counts by window, and (session
/// windows) the merging-window set mapping each window to the window its state lives under.
pub(crate) struct KeyWindows<K, A> {
    /// A copy of the key, for timers and window functions (the map's key stays untouched).
    key: K,
    contents: Vec<(TimeWindow, A)>,
    counts: Vec<(TimeWindow, u64)>,
    merging: Vec<(TimeWindow, TimeWindow)>,
}

impl<K, A> KeyWindows<K, A> {
    fn new(key: K) -> Self {
        KeyWindows {
            key,
            contents: Vec::new(),
            counts: Vec::new(),
            merging: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.contents.is_empty() && self.counts.is_empty() && self.merging.is_empty()
    }

    fn state_window(&self, window: TimeWindow) -> Option<TimeWindow> {
        self.merging
            .iter()
            .find(|(w, _)| *w == window)
            .map(|(_, s)| *s)
    }

    fn remove_mapping(&mut self, window: TimeWindow) -> Option<TimeWindow> {
        let at = self.merging.iter().position(|(w, _)| *w == window)?;
        Some(self.merging.swap_remove(at).1)
    }

    fn put_mapping(&mut self, window: TimeWindow, state_window: TimeWindow) {
        match self.merging.iter_mut().find(|(w, _)| *w == window) {
            Some(slot) => slot.1 = state_window,
            None => self.merging.push((window, state_window)),
        }
    }

    fn remove_contents(&mut self, window: TimeWindow) -> Option<A> {
        let at = self.contents.iter().position(|(w, _)| *w == window)?;
        Some(self.contents.swap_remove(at).1)
    }
}

/// Everything of the operator but the per-key state (so that a key's entry and the rest can be
/// borrowed at once).
pub(crate) struct Core<K, T, O, A, F> {
    pub(crate) node: u32,
    pub(crate) name: String,
    pub(crate) assigner: Arc<A>,
    pub(crate) trigger: Trigger,
    pub(crate) event_time: bool,
    pub(crate) merging: bool,
    /// Event time only; 0 otherwise.
    pub(crate) allowed_lateness: i64,
    pub(crate) func: F,
    /// Event-time and processing-time timers of `(key, window)`, and the current watermark.
    pub(crate) timers: Timers<(K, TimeWindow)>,
    pub(crate) time: ChainTime,
    pub(crate) errors: ErrorSlot,
    pub(crate) failed: bool,
    /// The late-data side output, if one was asked for.
    pub(crate) late: Option<BoxOutput<T>>,
    /// Late records dropped (no side output). Flink: `numLateRecordsDropped`.
    pub(crate) late_dropped: u64,
    pub(crate) out: BoxOutput<O>,
}

/// The window operator (see the module documentation).
pub(crate) struct WindowOperator<K, T, O, A, F: WindowFunction<K, T, O>> {
    pub(crate) key: KeyFn<T, K>,
    pub(crate) state: FxHashMap<K, KeyWindows<K, F::Acc>>,
    /// The windows of the element being processed (reused).
    pub(crate) scratch: Vec<TimeWindow>,
    pub(crate) core: Core<K, T, O, A, F>,
    pub(crate) _type: PhantomData<fn(T) -> O>,
}

impl<K, T, O, A, F> WindowOperator<K, T, O, A, F>
where
    K: Key,
    T: Record,
    O: Record,
    A: WindowAssigner,
    F: WindowFunction<K, T, O>,
{
    pub(crate) fn new(core: Core<K, T, O, A, F>, key: KeyFn<T, K>) -> Self {
        WindowOperator {
            key,
            state: FxHashMap::default(),
            scratch: Vec::new(),
            core,
            _type: PhantomData,
        }
    }

    /// Fires the timers of `domain` due at `time`, in timestamp order.
    fn fire(&mut self, domain: TimeDomain, time: i64) {
        loop {
            if self.core.failed {
                return;
            }
            let queue = match domain {
                TimeDomain::EventTime => &mut self.core.timers.event,
                TimeDomain::ProcessingTime => &mut self.core.timers.processing,
            };
            let Some((timestamp, (key, window))) = queue.pop_due(time) else {
                return;
            };
            self.on_timer(domain, timestamp, key, window);
        }
    }

    /// Flink's `WindowOperator.onEventTime` / `onProcessingTime`.
    fn on_timer(&mut self, domain: TimeDomain, timestamp: i64, key: K, window: TimeWindow) {
        let mut entry = match self.state.remove(&key) {
            Some(entry) => entry,
            None => KeyWindows::new(key.clone()),
        };
        let core = &mut self.core;
        let state_window = if core.merging {
            match entry.state_window(window) {
                Some(state_window) => state_window,
                // A timer of a window merged away or retired: nothing to do.
                None => {
                    if !entry.is_empty() {
                        self.state.insert(key, entry);
                    }
                    return;
                }
            }
        } else {
            window
        };
        let result = match domain {
            TimeDomain::EventTime => on_event_time(&core.trigger, timestamp, window),
            TimeDomain::ProcessingTime => on_processing_time(&core.trigger),
        };
        let own_domain = core.event_time == (domain == TimeDomain::EventTime);
        let cleanup = own_domain && timestamp == core.cleanup_time(window);
        let at = entry.contents.iter().position(|(w, _)| *w == state_window);
        if let Some(at) = at {
            if result.fire {
                if result.purge || cleanup {
                    let (_, acc) = entry.contents.swap_remove(at);
                    core.emit(&entry.key, window, Contents::Owned(acc));
                } else {
                    let acc = &mut entry.contents[at].1;
                    core.emit(&entry.key, window, Contents::Shared(acc));
                }
            } else if result.purge {
                entry.contents.swap_remove(at);
            }
        }
        if cleanup {
            core.clear_all_state(&mut entry, window, state_window);
        }
        if !entry.is_empty() {
            self.state.insert(key, entry);
        }
    }

    /// Elements of merging (session) windows: Flink's `processElement` with a
    /// `MergingWindowSet`.
    fn process_merging(&mut self, record: T, windows: &[TimeWindow]) {
        let key = self.key.key(&record).into_owned();
        let mut entry = match self.state.remove(&key) {
            Some(entry) => entry,
            None => KeyWindows::new(key.clone()),
        };
        let element_timestamp = self.core.time.timestamp();
        let core = &mut self.core;
        let mut skipped = true;
        let mut record = Some(record);
        for (i, &window) in windows.iter().enumerate() {
            let actual = match core.add_merging_window(&mut entry, window) {
                Ok(actual) => actual,
                Err(e) => {
                    core.fail(e);
                    break;
                }
            };
            if core.is_window_late(actual) {
                entry.remove_mapping(actual);
                continue;
            }
            skipped = false;
            let Some(state_window) = entry.state_window(actual) else {
                core.fail(format!(
                    "{}: internal error: window {actual:?} has no state window",
                    core.name
                ));
                break;
            };
            let value = if i + 1 == windows.len() {
                record.take()
            } else {
                record.clone()
            };
            let Some(value) = value else { break };
            let result = core.on_element(&entry.key, &mut entry.counts, actual, true);
            core.register_cleanup_timer(&entry.key, actual);
            let at = match entry.contents.iter().position(|(w, _)| *w == state_window) {
                Some(at) => {
                    core.func.add(&mut entry.contents[at].1, value);
                    at
                }
                None => {
                    entry.contents.push((state_window, core.func.create(value)));
                    entry.contents.len() - 1
                }
            };
            core.fire_on_element(&mut entry, at, actual, result);
        }
        if skipped {
            if let Some(record) = record {
                core.late_element(record, element_timestamp);
            }
        }
        if !entry.is_empty() {
            self.state.insert(key, entry);
        }
    }
}

impl<K, T, O, A, F> Core<K, T, O, A, F>
where
    K: Key,
    T: Record,
    O: Record,
    A: WindowAssigner,
    F: WindowFunction<K, T, O>,
{
    fn fail(&mut self, message: String) {
        self.failed = true;
        self.errors.set(message);
    }

    /// Flink's `cleanupTime`: event time `max_timestamp + allowed_lateness` (saturating),
    /// processing time `max_timestamp`.
    #[inline]
    fn cleanup_time(&self, window: TimeWindow) -> i64 {
        if self.event_time {
            window
                .max_timestamp()
                .checked_add(self.allowed_lateness)
                .unwrap_or(i64::MAX)
        } else {
            window.max_timestamp()
        }
    }

    /// Flink's `isWindowLate`.
    #[inline]
    fn is_window_late(&self, window: TimeWindow) -> bool {
        self.event_time && self.cleanup_time(window) <= self.timers.watermark
    }

    /// Flink's `isElementLate`.
    fn is_element_late(&self, timestamp: i64) -> bool {
        self.event_time && timestamp.saturating_add(self.allowed_lateness) <= self.timers.watermark
    }

    /// An element that went into no window: late records go to the side output (with their
    /// timestamp) or are dropped and counted.
    fn late_element(&mut self, record: T, timestamp: i64) {
        if !self.is_element_late(timestamp) {
            return;
        }
        match &mut self.late {
            Some(late) => {
                self.time.set_timestamp(timestamp);
                late.collect(record);
            }
            None => self.late_dropped += 1,
        }
    }

    /// Evaluates `window` with `contents`; results carry the window's max timestamp.
    fn emit(&mut self, key: &K, window: TimeWindow, contents: Contents<'_, F::Acc>) {
        self.time.set_timestamp(window.max_timestamp());
        let ctx = WindowContext {
            window,
            watermark: self.timers.watermark,
            processing_time: self.time.processing_time(),
        };
        self.func.emit(key, &ctx, contents, &mut *self.out);
    }

    /// After an element went into the contents at `at` (of window `window`): fires and purges
    /// as the trigger decided.
    fn fire_on_element(
        &mut self,
        entry: &mut KeyWindows<K, F::Acc>,
        at: usize,
        window: TimeWindow,
        result: TriggerResult,
    ) {
        if result.fire {
            if result.purge {
                let (_, acc) = entry.contents.swap_remove(at);
                self.emit(&entry.key, window, Contents::Owned(acc));
            } else {
                let acc = &mut entry.contents[at].1;
                self.emit(&entry.key, window, Contents::Shared(acc));
            }
        } else if result.purge {
            entry.contents.swap_remove(at);
        }
    }

    fn register_event_timer(&mut self, key: &K, window: TimeWindow, timestamp: i64) {
        self.timers
            .event
            .register(timestamp, &(key.clone(), window));
    }

    fn register_processing_timer(&mut self, key: &K, window: TimeWindow, timestamp: i64) {
        self.timers
            .processing
            .register(timestamp, &(key.clone(), window));
    }

    /// Flink's `registerCleanupTimer` (none for the end of time).
    fn register_cleanup_timer(&mut self, key: &K, window: TimeWindow) {
        let cleanup = self.cleanup_time(window);
        if cleanup == i64::MAX {
            return;
        }
        if self.event_time {
            self.register_event_timer(key, window, cleanup);
        } else {
            self.register_processing_timer(key, window, cleanup);
        }
    }

    /// Flink's `deleteCleanupTimer`.
    fn delete_cleanup_timer(&mut self, key: &K, window: TimeWindow) {
        let cleanup = self.cleanup_time(window);
        if cleanup == i64::MAX {
            return;
        }
        let kw = (key.clone(), window);
        if self.event_time {
            self.timers.event.delete(cleanup, &kw);
        } else {
            self.timers.processing.delete(cleanup, &kw);
        }
    }

    /// The trigger's `onElement`. `created`: the window's contents did not exist before this
    /// element, so its timer may not exist yet (a window with contents already has its timer,
    /// or is past it): timers are registered only then.
    #[inline]
    fn on_element(
        &mut self,
        key: &K,
        counts: &mut Vec<(TimeWindow, u64)>,
        window: TimeWindow,
        created: bool,
    ) -> TriggerResult {
        let trigger = std::mem::replace(&mut self.trigger, Trigger::Never);
        let result = self.trigger_on_element(&trigger, key, counts, window, created);
        self.trigger = trigger;
        result
    }

    fn trigger_on_element(
        &mut self,
        trigger: &Trigger,
        key: &K,
        counts: &mut Vec<(TimeWindow, u64)>,
        window: TimeWindow,
        created: bool,
    ) -> TriggerResult {
        match trigger {
            Trigger::EventTime => {
                let max = window.max_timestamp();
                if max <= self.timers.watermark {
                    // Late but within the allowed lateness: fire at once.
                    TriggerResult::FIRE
                } else {
                    if created {
                        self.register_event_timer(key, window, max);
                    }
                    TriggerResult::CONTINUE
                }
            }
            Trigger::ProcessingTime => {
                if created {
                    self.register_processing_timer(key, window, window.max_timestamp());
                }
                TriggerResult::CONTINUE
            }
            Trigger::Count(max) => {
                let at = match counts.iter().position(|(w, _)| *w == window) {
                    Some(at) => at,
                    None => {
                        counts.push((window, 0));
                        counts.len() - 1
                    }
                };
                counts[at].1 += 1;
                if counts[at].1 >= *max {
                    counts.swap_remove(at);
                    TriggerResult::FIRE
                } else {
                    TriggerResult::CONTINUE
                }
            }
            Trigger::Never => TriggerResult::CONTINUE,
            Trigger::Purging(inner) => {
                let result = self.trigger_on_element(inner, key, counts, window, created);
                if result.fire {
                    TriggerResult {
                        fire: true,
                        purge: true,
                    }
                } else {
                    result
                }
            }
        }
    }

    /// The trigger's `onMerge`: `window` is the merge result of `merged`.
    fn trigger_on_merge(
        &mut self,
        trigger: &Trigger,
        key: &K,
        counts: &mut Vec<(TimeWindow, u64)>,
        window: TimeWindow,
        merged: &[TimeWindow],
    ) {
        match trigger {
            Trigger::EventTime => {
                let max = window.max_timestamp();
                if max > self.timers.watermark {
                    self.register_event_timer(key, window, max);
                }
            }
            Trigger::ProcessingTime => {
                let max = window.max_timestamp();
                if max > self.time.processing_time() {
                    self.register_processing_timer(key, window, max);
                }
            }
            Trigger::Count(_) => {
                let sum: u64 = counts
                    .iter()
                    .filter(|(w, _)| merged.contains(w))
                    .map(|(_, c)| *c)
                    .sum();
                if sum > 0 {
                    match counts.iter_mut().find(|(w, _)| *w == window) {
                        Some(slot) => slot.1 += sum,
                        None => counts.push((window, sum)),
                    }
                }
            }
            Trigger::Never => {}
            Trigger::Purging(inner) => self.trigger_on_merge(inner, key, counts, window, merged),
        }
    }

    /// The trigger's `clear`: deletes its timers and state of `window`.
    fn trigger_clear(
        &mut self,
        trigger: &Trigger,
        key: &K,
        counts: &mut Vec<(TimeWindow, u64)>,
        window: TimeWindow,
    ) {
        match trigger {
            Trigger::EventTime => {
                self.timers
                    .event
                    .delete(window.max_timestamp(), &(key.clone(), window));
            }
            Trigger::ProcessingTime => {
                self.timers
                    .processing
                    .delete(window.max_timestamp(), &(key.clone(), window));
            }
            Trigger::Count(_) => counts.retain(|(w, _)| *w != window),
            Trigger::Never => {}
            Trigger::Purging(inner) => self.trigger_clear(inner, key, counts, window),
        }
    }

    /// Flink's `clearAllState`: the window's contents, trigger state and timers, and its place
    /// in the merging-window set.
    fn clear_all_state(
        &mut self,
        entry: &mut KeyWindows<K, F::Acc>,
        window: TimeWindow,
        state_window: TimeWindow,
    ) {
        entry.remove_contents(state_window);
        let trigger = std::mem::replace(&mut self.trigger, Trigger::Never);
        self.trigger_clear(&trigger, &entry.key, &mut entry.counts, window);
        self.trigger = trigger;
        if self.merging {
            entry.remove_mapping(window);
        }
    }

    /// Flink's `MergingWindowSet.addWindow` with the operator's merge function: adds `new` to
    /// the key's windows, merging it with the windows it touches; returns the window `new`
    /// ended up in.
    fn add_merging_window(
        &mut self,
        entry: &mut KeyWindows<K, F::Acc>,
        new: TimeWindow,
    ) -> Result<TimeWindow, String> {
        let mut windows: Vec<TimeWindow> = entry.merging.iter().map(|(w, _)| *w).collect();
        windows.push(new);
        let results = merge_windows(windows);
        let no_merge = results.is_empty();
        let mut result_window = new;
        let mut merged_new = false;
        for (merge_result, mut merged) in results {
            if let Some(at) = merged.iter().position(|w| *w == new) {
                merged.remove(at);
                merged_new = true;
                result_window = merge_result;
            }
            let Some(&first) = merged.first() else {
                continue;
            };
            let Some(target_state) = entry.state_window(first) else {
                return Err(format!(
                    "{}: internal error: merged window {first:?} has no state window",
                    self.name
                ));
            };
            let mut merged_states: Vec<TimeWindow> = Vec::new();
            for m in &merged {
                if let Some(state) = entry.remove_mapping(*m) {
                    merged_states.push(state);
                }
            }
            entry.put_mapping(merge_result, target_state);
            if let Some(at) = merged_states.iter().position(|s| *s == target_state) {
                merged_states.remove(at);
            }
            // Merging one window into itself (not extended) changes nothing.
            if !(merged.len() == 1 && merged[0] == merge_result) {
                self.merge_windows_state(
                    entry,
                    merge_result,
                    &merged,
                    target_state,
                    &merged_states,
                )?;
            }
        }
        if no_merge || (result_window == new && !merged_new) {
            entry.put_mapping(result_window, result_window);
        }
        Ok(result_window)
    }

    /// The operator's merge function (Flink: `WindowOperator.processElement`'s
    /// `MergeFunction`): triggers merge and forget the merged windows, the contents of the
    /// merged state windows go into `target_state`.
    fn merge_windows_state(
        &mut self,
        entry: &mut KeyWindows<K, F::Acc>,
        merge_result: TimeWindow,
        merged: &[TimeWindow],
        target_state: TimeWindow,
        merged_states: &[TimeWindow],
    ) -> Result<(), String> {
        if self.event_time && self.cleanup_time(merge_result) <= self.timers.watermark {
            return Err(format!(
                "{}: the end timestamp of an event-time window cannot become earlier than the \
                 current watermark by merging (current watermark {}, window {merge_result:?})",
                self.name, self.timers.watermark
            ));
        }
        if !self.event_time && merge_result.max_timestamp() <= self.time.processing_time() {
            return Err(format!(
                "{}: the end timestamp of a processing-time window cannot become earlier than \
                 the current processing time by merging (current processing time {}, window \
                 {merge_result:?})",
                self.name,
                self.time.processing_time()
            ));
        }
        let trigger = std::mem::replace(&mut self.trigger, Trigger::Never);
        self.trigger_on_merge(
            &trigger,
            &entry.key,
            &mut entry.counts,
            merge_result,
            merged,
        );
        for &m in merged {
            self.trigger_clear(&trigger, &entry.key, &mut entry.counts, m);
            self.delete_cleanup_timer(&entry.key, m);
        }
        self.trigger = trigger;
        let mut combined: Option<F::Acc> = None;
        for &state in merged_states {
            if let Some(acc) = entry.remove_contents(state) {
                match &mut combined {
                    Some(c) => self.func.merge(c, acc),
                    None => combined = Some(acc),
                }
            }
        }
        if let Some(combined) = combined {
            match entry.contents.iter_mut().find(|(w, _)| *w == target_state) {
                Some((_, target)) => self.func.merge(target, combined),
                None => entry.contents.push((target_state, combined)),
            }
        }
        Ok(())
    }

    /// Elements of non-merging windows, once the key's entry is found.
    #[inline]
    fn process_in(
        &mut self,
        entry: &mut KeyWindows<K, F::Acc>,
        record: T,
        windows: &[TimeWindow],
    ) -> bool {
        let mut record = Some(record);
        let last = windows.len().saturating_sub(1);
        for (i, &window) in windows.iter().enumerate() {
            if self.is_window_late(window) {
                continue;
            }
            let value = if i == last {
                record.take()
            } else {
                record.clone()
            };
            let Some(value) = value else { break };
            let found = entry.contents.iter().position(|(w, _)| *w == window);
            let result = self.on_element(&entry.key, &mut entry.counts, window, found.is_none());
            let at = match found {
                Some(at) => {
                    self.func.add(&mut entry.contents[at].1, value);
                    at
                }
                None => {
                    self.register_cleanup_timer(&entry.key, window);
                    entry.contents.push((window, self.func.create(value)));
                    entry.contents.len() - 1
                }
            };
            if result != TriggerResult::CONTINUE {
                self.fire_on_element(entry, at, window, result);
            }
        }
        entry.is_empty()
    }
}

fn on_event_time(trigger: &Trigger, timestamp: i64, window: TimeWindow) -> TriggerResult {
    match trigger {
        Trigger::EventTime if timestamp == window.max_timestamp() => TriggerResult::FIRE,
        Trigger::Purging(inner) => purging(on_event_time(inner, timestamp, window)),
        _ => TriggerResult::CONTINUE,
    }
}

fn on_processing_time(trigger: &Trigger) -> TriggerResult {
    match trigger {
        Trigger::ProcessingTime => TriggerResult::FIRE,
        Trigger::Purging(inner) => purging(on_processing_time(inner)),
        _ => TriggerResult::CONTINUE,
    }
}

fn purging(result: TriggerResult) -> TriggerResult {
    if result.fire {
        TriggerResult {
            fire: true,
            purge: true,
        }
    } else {
        result
    }
}

impl<K, T, O, A, F> Collector<T> for WindowOperator<K, T, O, A, F>
where
    K: Key,
    T: Record,
    O: Record,
    A: WindowAssigner,
    F: WindowFunction<K, T, O>,
{
    fn collect(&mut self, record: T) {
        let core = &mut self.core;
        if core.failed {
            return;
        }
        let element_timestamp = core.time.timestamp();
        let time = if core.event_time {
            if element_timestamp == NO_TIMESTAMP {
                let message = format!(
                    "{}: Record has no timestamp (i64::MIN, the no-timestamp marker). Is the \
                     window assigner meant to use processing time, or did you forget to call \
                     assign_timestamps_and_watermarks?",
                    core.name
                );
                core.fail(message);
                return;
            }
            element_timestamp
        } else {
            core.time.processing_time()
        };
        let mut windows = std::mem::take(&mut self.scratch);
        windows.clear();
        self.core.assigner.assign_windows(time, &mut windows);
        if self.core.merging {
            self.process_merging(record, &windows);
        } else if windows.iter().all(|w| self.core.is_window_late(*w)) {
            self.core.late_element(record, element_timestamp);
        } else {
            let key = self.key.key(&record);
            let emptied = match self.state.get_mut(&*key) {
                Some(entry) => {
                    drop(key);
                    self.core
                        .process_in(entry, record, &windows)
                        .then(|| entry.key.clone())
                }
                None => {
                    // The key is copied only when it is stored for the first time.
                    let key = key.into_owned();
                    let entry = self
                        .state
                        .entry(key.clone())
                        .or_insert_with(|| KeyWindows::new(key));
                    self.core
                        .process_in(entry, record, &windows)
                        .then(|| entry.key.clone())
                }
            };
            if let Some(key) = emptied {
                self.state.remove(&key);
            }
        }
        self.scratch = windows;
    }
}

impl<K, T, O, A, F> Output<T> for WindowOperator<K, T, O, A, F>
where
    K: Key,
    T: Record,
    O: Record,
    A: WindowAssigner,
    F: WindowFunction<K, T, O>,
{
    fn open(&mut self) -> Result<(), String> {
        self.core.out.open()?;
        if let Some(late) = &mut self.core.late {
            late.open()?;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<(), String> {
        // Event-time windows fired with the maximum watermark before this; pending
        // processing-time windows do not fire at the end of input (as in Flink).
        self.core.out.finish()?;
        if let Some(late) = &mut self.core.late {
            late.finish()?;
        }
        self.core.errors.check()
    }
    fn flush(&mut self) -> Result<(), String> {
        self.core.out.flush()?;
        if let Some(late) = &mut self.core.late {
            late.flush()?;
        }
        Ok(())
    }
    fn close(&mut self) {
        self.state.clear();
        self.core.timers.event.clear();
        self.core.timers.processing.clear();
        self.core.out.close();
        if let Some(late) = &mut self.core.late {
            late.close();
        }
    }
    fn snapshot_state(
        &mut self,
        checkpoint_id: u64,
        snapshot: &mut SnapshotWriter,
    ) -> Result<(), String> {
        let state = &self.state;
        let timers = &self.core.timers;
        snapshot.section(self.core.node, |out| {
            encode_section(state, timers, out);
            Ok(())
        })?;
        self.core.out.snapshot_state(checkpoint_id, snapshot)?;
        if let Some(late) = &mut self.core.late {
            late.snapshot_state(checkpoint_id, snapshot)?;
        }
        Ok(())
    }
    fn emit_barrier(&mut self, barrier: CheckpointBarrier) -> Result<(), String> {
        self.core.out.emit_barrier(barrier)?;
        if let Some(late) = &mut self.core.late {
            late.emit_barrier(barrier)?;
        }
        Ok(())
    }
    fn restore_state(&mut self, snapshot: &mut SnapshotSections<'_>) -> Result<(), String> {
        if let Some(bytes) = snapshot.take(self.core.node) {
            let what = format!(
                "malformed snapshot of the window operator {} (node {})",
                self.core.name, self.core.node
            );
            let (state, timers) =
                decode_section::<K, F::Acc>(bytes).map_err(|e| format!("{what}: {e}"))?;
            self.state = state;
            self.core.timers = timers;
        }
        self.core.out.restore_state(snapshot)?;
        if let Some(late) = &mut self.core.late {
            late.restore_state(snapshot)?;
        }
        Ok(())
    }
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String> {
        self.core.out.notify_checkpoint_complete(checkpoint_id)?;
        if let Some(late) = &mut self.core.late {
            late.notify_checkpoint_complete(checkpoint_id)?;
        }
        Ok(())
    }
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        self.core.out.notify_checkpoint_aborted(checkpoint_id);
        if let Some(late) = &mut self.core.late {
            late.notify_checkpoint_aborted(checkpoint_id);
        }
    }
    fn end_of_data(&mut self) -> Result<(), String> {
        self.core.out.end_of_data()?;
        if let Some(late) = &mut self.core.late {
            late.end_of_data()?;
        }
        Ok(())
    }
    fn finish_outputs(&mut self) -> Result<(), String> {
        self.core.out.finish_outputs()?;
        if let Some(late) = &mut self.core.late {
            late.finish_outputs()?;
        }
        Ok(())
    }
    fn process_watermark(&mut self, watermark: i64) -> Result<(), String> {
        if watermark <= self.core.timers.watermark {
            return self.core.errors.check();
        }
        self.core.timers.watermark = watermark;
        self.fire(TimeDomain::EventTime, watermark);
        self.core.errors.check()?;
        self.core.out.process_watermark(watermark)?;
        if let Some(late) = &mut self.core.late {
            late.process_watermark(watermark)?;
        }
        Ok(())
    }
    fn process_watermark_status(&mut self, idle: bool) -> Result<(), String> {
        self.core.out.process_watermark_status(idle)?;
        if let Some(late) = &mut self.core.late {
            late.process_watermark_status(idle)?;
        }
        Ok(())
    }
    fn on_processing_time(&mut self, now: i64) -> Result<(), String> {
        self.fire(TimeDomain::ProcessingTime, now);
        self.core.errors.check()?;
        self.core.out.on_processing_time(now)?;
        if let Some(late) = &mut self.core.late {
            late.on_processing_time(now)?;
        }
        Ok(())
    }
    fn next_processing_time(&self) -> Option<i64> {
        let own = earliest(
            self.core.timers.processing.peek(),
            self.core.out.next_processing_time(),
        );
        earliest(
            own,
            self.core
                .late
                .as_ref()
                .and_then(|l| l.next_processing_time()),
        )
    }
}

/// The operator's snapshot section:
///
/// ```text
/// section  := keys:varint key_entry{keys} timers
/// key_entry := key:K contents:varint (window acc){contents} counts:varint (window count:u64){counts}
///              merging:varint (window state_window){merging}
/// timers   := watermark, event-time timers, processing-time timers (`Timers` of
///             `(key, window)`)
/// ```
///
/// The watermark is kept (in `Timers`) so that a restored operator drops the same late records
/// as an uninterrupted one until its inputs' watermarks catch up.
fn encode_section<K: Key, A: Record>(
    state: &FxHashMap<K, KeyWindows<K, A>>,
    timers: &Timers<(K, TimeWindow)>,
    out: &mut Vec<u8>,
) {
    write_varint(state.len() as u64, out);
    for (key, entry) in state {
        key.encode(out);
        write_varint(entry.contents.len() as u64, out);
        for (window, acc) in &entry.contents {
            window.encode(out);
            acc.encode(out);
        }
        write_varint(entry.counts.len() as u64, out);
        for (window, count) in &entry.counts {
            window.encode(out);
            count.encode(out);
        }
        write_varint(entry.merging.len() as u64, out);
        for (window, state_window) in &entry.merging {
            window.encode(out);
            state_window.encode(out);
        }
    }
    timers.encode(out);
}

/// Reads a list `count:varint item{count}`; every item takes at least 16 bytes (a window), so a
/// corrupt count fails on the input's end instead of allocating.
fn decode_list<X>(
    input: &mut &[u8],
    what: &str,
    mut item: impl FnMut(&mut &[u8]) -> Result<X, String>,
) -> Result<Vec<X>, String> {
    let count = read_varint(input).map_err(|e| format!("{what} count: {e}"))?;
    let capacity = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(input.len() / 16);
    let mut list = Vec::with_capacity(capacity);
    for _ in 0..count {
        list.push(item(input)?);
    }
    Ok(list)
}

fn window(input: &mut &[u8], what: &str) -> Result<TimeWindow, String> {
    TimeWindow::decode(input).map_err(|e| format!("{what}: {e}"))
}

type Section<K, A> = (FxHashMap<K, KeyWindows<K, A>>, Timers<(K, TimeWindow)>);

fn decode_section<K: Key, A: Record>(bytes: &[u8]) -> Result<Section<K, A>, String> {
    let mut input = bytes;
    let keys = read_varint(&mut input).map_err(|e| format!("key count: {e}"))?;
    let mut state: FxHashMap<K, KeyWindows<K, A>> = FxHashMap::default();
    for _ in 0..keys {
        let key = K::decode(&mut input).map_err(|e| format!("key: {e}"))?;
        let contents = decode_list(&mut input, "window contents", |input| {
            let w = window(input, "window")?;
            let acc = A::decode(input).map_err(|e| format!("window contents: {e}"))?;
            Ok((w, acc))
        })?;
        let counts = decode_list(&mut input, "trigger counts", |input| {
            let w = window(input, "window")?;
            let count = u64::decode(input).map_err(|e| format!("trigger count: {e}"))?;
            Ok((w, count))
        })?;
        let merging = decode_list(&mut input, "merging windows", |input| {
            Ok((window(input, "window")?, window(input, "state window")?))
        })?;
        let entry = KeyWindows {
            key: key.clone(),
            contents,
            counts,
            merging,
        };
        if entry.is_empty() {
            return Err("a key without windows".to_owned());
        }
        if state.insert(key, entry).is_some() {
            return Err("a key occurs twice".to_owned());
        }
    }
    let timers = Timers::<(K, TimeWindow)>::decode(&mut input)?;
    expect_end(input, "timers")?;
    Ok((state, timers))
}
