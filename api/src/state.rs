//! Keyed state for [`KeyedProcessFunction`]s.
//!
//! A function declares its state in [`KeyedProcessFunction::open`] through the
//! [`StateRegistry`], which hands out typed, copyable handles ([`ValueState`], [`MapState`],
//! [`ReducingState`]). While processing a record it reads and writes the state of the record's
//! key through the [`KeyedContext`].
//!
//! The backend is in memory, per operator subtask: one `FxHashMap<K, V>` (or
//! `FxHashMap<K, FxHashMap<UK, UV>>`) per declared state, found by the handle's index and a type
//! check, without string lookups on the hot path. Keys, values and user keys are [`Record`]s,
//! so the state is snapshotted for checkpoints: each declared state is written under its name
//! with the [`crate::Codec`] of its entries, and restored by name (see `StateStores`).

use std::any::{Any, TypeId};
use std::marker::PhantomData;

use rustc_hash::FxHashMap;

use crate::codec::{read_varint, write_varint};
use crate::snapshot::{decode_map, decode_map_with, encode_map, encode_map_with};
use crate::time::{TimeDomain, Timers, MIN_WATERMARK, NO_TIMESTAMP};
use crate::{Codec, Collector, Key, Record, RuntimeContext};

const UNREGISTERED: usize = usize::MAX;

/// A handle to a keyed value of type `V`, declared with [`StateRegistry::value_state`].
///
/// `Default` gives an unregistered handle (reads see nothing, writes fail the task), so that
/// functions can `#[derive(Default)]` and fill their handles in `open`.
pub struct ValueState<V> {
    index: usize,
    _value: PhantomData<fn() -> V>,
}

/// A handle to a keyed map from `UK` to `UV`, declared with [`StateRegistry::map_state`].
///
/// `Default` gives an unregistered handle, as for [`ValueState`].
pub struct MapState<UK, UV> {
    index: usize,
    _value: PhantomData<fn() -> (UK, UV)>,
}

macro_rules! handle_impls {
    ($name:ident < $($p:ident),+ >) => {
        impl<$($p),+> Clone for $name<$($p),+> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($p),+> Copy for $name<$($p),+> {}
        impl<$($p),+> Default for $name<$($p),+> {
            fn default() -> Self {
                $name { index: UNREGISTERED, _value: PhantomData }
            }
        }
        impl<$($p),+> std::fmt::Debug for $name<$($p),+> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).field("index", &self.index).finish()
            }
        }
    };
}
handle_impls!(ValueState<V>);
handle_impls!(MapState<UK, UV>);

/// A handle to a keyed value of type `V` that every added value is folded into with the
/// state's reduce function (Flink's `ReducingState`), declared with
/// [`StateRegistry::reducing_state`].
///
/// `Default` gives an unregistered handle, as for [`ValueState`].
pub struct ReducingState<V> {
    index: usize,
    reduce: Option<fn(&V, &V) -> V>,
}

impl<V> Clone for ReducingState<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for ReducingState<V> {}

impl<V> Default for ReducingState<V> {
    fn default() -> Self {
        ReducingState {
            index: UNREGISTERED,
            reduce: None,
        }
    }
}

impl<V> std::fmt::Debug for ReducingState<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReducingState")
            .field("index", &self.index)
            .finish()
    }
}

/// The kinds of keyed state, as written in snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateKind {
    Value = 0,
    Map = 1,
    Reducing = 2,
}

impl StateKind {
    fn name(self) -> &'static str {
        match self {
            StateKind::Value => "value",
            StateKind::Map => "map",
            StateKind::Reducing => "reducing",
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(StateKind::Value),
            1 => Some(StateKind::Map),
            2 => Some(StateKind::Reducing),
            _ => None,
        }
    }
}

type EncodeStore = fn(&(dyn Any + Send), &mut Vec<u8>) -> Result<(), String>;
type DecodeStore = fn(&mut &[u8]) -> Result<Box<dyn Any + Send>, String>;

/// How one declared state's store is typed, written and read back: functions monomorphized
/// for the key and value types when the state is declared.
#[derive(Debug, Clone, Copy)]
struct StoreOps {
    kind: StateKind,
    /// `TypeId` of the store (`FxHashMap<K, V>` or `FxHashMap<K, FxHashMap<UK, UV>>`).
    store_type: TypeId,
    type_name: &'static str,
    encode: EncodeStore,
    decode: DecodeStore,
}

fn encode_value_store<K: Key, V: Record>(
    store: &(dyn Any + Send),
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let map = store
        .downcast_ref::<FxHashMap<K, V>>()
        .ok_or_else(|| "internal error: keyed state store of another type".to_owned())?;
    encode_map(map, out);
    Ok(())
}

fn decode_value_store<K: Key, V: Record>(input: &mut &[u8]) -> Result<Box<dyn Any + Send>, String> {
    Ok(Box::new(decode_map::<K, V>(input)?))
}

fn encode_map_store<K: Key, UK: Key, UV: Record>(
    store: &(dyn Any + Send),
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let map = store
        .downcast_ref::<FxHashMap<K, FxHashMap<UK, UV>>>()
        .ok_or_else(|| "internal error: keyed state store of another type".to_owned())?;
    encode_map_with(map, out, |inner, out| encode_map(inner, out));
    Ok(())
}

fn decode_map_store<K: Key, UK: Key, UV: Record>(
    input: &mut &[u8],
) -> Result<Box<dyn Any + Send>, String> {
    let map = decode_map_with::<K, FxHashMap<UK, UV>>(input, |input| decode_map::<UK, UV>(input))?;
    Ok(Box::new(map))
}

impl StoreOps {
    fn value<K: Key, V: Record>(kind: StateKind) -> Self {
        StoreOps {
            kind,
            store_type: TypeId::of::<FxHashMap<K, V>>(),
            type_name: std::any::type_name::<V>(),
            encode: encode_value_store::<K, V>,
            decode: decode_value_store::<K, V>,
        }
    }

    fn map<K: Key, UK: Key, UV: Record>() -> Self {
        StoreOps {
            kind: StateKind::Map,
            store_type: TypeId::of::<FxHashMap<K, FxHashMap<UK, UV>>>(),
            type_name: std::any::type_name::<FxHashMap<UK, UV>>(),
            encode: encode_map_store::<K, UK, UV>,
            decode: decode_map_store::<K, UK, UV>,
        }
    }
}

#[derive(Debug)]
struct Declaration {
    name: String,
    ops: StoreOps,
}

/// Where a [`KeyedProcessFunction`] declares its keyed state, in `open`. `K` is the key type of
/// the keyed stream.
pub struct StateRegistry<K> {
    declarations: Vec<Declaration>,
    error: Option<String>,
    _key: PhantomData<fn() -> K>,
}

impl<K> Default for StateRegistry<K> {
    fn default() -> Self {
        StateRegistry {
            declarations: Vec::new(),
            error: None,
            _key: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for StateRegistry<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateRegistry")
            .field("states", &self.names())
            .field("error", &self.error)
            .finish()
    }
}

impl<K: Key> StateRegistry<K> {
    /// Declares (or finds again) the value state called `name`.
    ///
    /// Declaring the same name twice with the same kind and type returns the same handle;
    /// otherwise `open` fails.
    pub fn value_state<V: Record>(&mut self, name: &str) -> ValueState<V> {
        ValueState {
            index: self.declare(name, StoreOps::value::<K, V>(StateKind::Value)),
            _value: PhantomData,
        }
    }

    /// Declares (or finds again) the map state called `name`.
    pub fn map_state<UK: Key, UV: Record>(&mut self, name: &str) -> MapState<UK, UV> {
        MapState {
            index: self.declare(name, StoreOps::map::<K, UK, UV>()),
            _value: PhantomData,
        }
    }

    /// Declares (or finds again) the reducing state called `name`: the values added to a key
    /// are folded with `reduce(accumulated, added)`.
    pub fn reducing_state<V: Record>(
        &mut self,
        name: &str,
        reduce: fn(&V, &V) -> V,
    ) -> ReducingState<V> {
        let index = self.declare(name, StoreOps::value::<K, V>(StateKind::Reducing));
        ReducingState {
            index,
            reduce: (index != UNREGISTERED).then_some(reduce),
        }
    }
}

impl<K> StateRegistry<K> {
    /// The names of the declared states, in declaration order.
    pub fn names(&self) -> Vec<&str> {
        self.declarations.iter().map(|d| d.name.as_str()).collect()
    }

    fn declare(&mut self, name: &str, ops: StoreOps) -> usize {
        if let Some(i) = self.declarations.iter().position(|d| d.name == name) {
            let existing = self.declarations[i].ops;
            if existing.store_type != ops.store_type || existing.kind != ops.kind {
                self.error.get_or_insert_with(|| {
                    format!(
                        "state {name:?} declared twice with different kinds or types ({} state \
                         of {} and {} state of {})",
                        existing.kind.name(),
                        existing.type_name,
                        ops.kind.name(),
                        ops.type_name
                    )
                });
                return UNREGISTERED;
            }
            return i;
        }
        self.declarations.push(Declaration {
            name: name.to_owned(),
            ops,
        });
        self.declarations.len() - 1
    }

    pub(crate) fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }
}

/// The per-subtask state of one keyed operator: one type-erased `FxHashMap<K, V>` per declared
/// state, created on first write.
///
/// # Snapshot format
/// `count:varint (name:String kind:u8 entries)*` for every state holding a store, where
/// `entries` is `len:varint (key value)*` (a map state's value being such a map of user keys).
pub(crate) struct StateStores {
    stores: Vec<Option<Box<dyn Any + Send>>>,
    states: Vec<(String, StoreOps)>,
    pub(crate) error: Option<String>,
}

impl StateStores {
    /// Stores for no state (before `open`).
    pub(crate) fn empty() -> Self {
        StateStores {
            stores: Vec::new(),
            states: Vec::new(),
            error: None,
        }
    }

    /// Empty stores for the states declared in `registry`.
    pub(crate) fn from_registry<K>(registry: &StateRegistry<K>) -> Self {
        StateStores {
            stores: registry.declarations.iter().map(|_| None).collect(),
            states: registry
                .declarations
                .iter()
                .map(|d| (d.name.clone(), d.ops))
                .collect(),
            error: None,
        }
    }

    /// Appends the snapshot of every state holding entries to `out`.
    pub(crate) fn snapshot(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let present = self.stores.iter().filter(|s| s.is_some()).count();
        write_varint(present as u64, out);
        for (store, (name, ops)) in self.stores.iter().zip(&self.states) {
            if let Some(store) = store {
                name.encode(out);
                out.push(ops.kind as u8);
                (ops.encode)(&**store, out).map_err(|e| format!("keyed state {name:?}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Reads back a snapshot written by [`StateStores::snapshot`] for the same declarations.
    /// States are matched by name; a state the snapshot does not hold starts empty.
    pub(crate) fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut input = bytes;
        let count =
            read_varint(&mut input).map_err(|e| format!("malformed keyed state snapshot: {e}"))?;
        for _ in 0..count {
            let name = String::decode(&mut input)
                .map_err(|e| format!("malformed keyed state snapshot: state name: {e}"))?;
            let tag = u8::decode(&mut input)
                .map_err(|e| format!("malformed keyed state snapshot: state {name:?}: {e}"))?;
            let kind = StateKind::from_tag(tag).ok_or_else(|| {
                format!("malformed keyed state snapshot: state {name:?} has unknown kind {tag}")
            })?;
            let Some(index) = self.states.iter().position(|(n, _)| *n == name) else {
                return Err(format!(
                    "the snapshot holds keyed state {name:?}, which the function does not \
                     declare (declared: {:?})",
                    self.states
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                ));
            };
            let ops = self.states[index].1;
            if ops.kind != kind {
                return Err(format!(
                    "keyed state {name:?} is a {} state in the snapshot, declared as a {} state",
                    kind.name(),
                    ops.kind.name()
                ));
            }
            if self.stores[index].is_some() {
                return Err(format!(
                    "malformed keyed state snapshot: state {name:?} occurs twice"
                ));
            }
            let store = (ops.decode)(&mut input).map_err(|e| {
                format!(
                    "malformed keyed state snapshot: state {name:?} ({} state of {}): {e}",
                    ops.kind.name(),
                    ops.type_name
                )
            })?;
            self.stores[index] = Some(store);
        }
        crate::snapshot::expect_end(input, "malformed keyed state snapshot")
    }

    fn fail(&mut self, index: usize) {
        if self.error.is_none() {
            self.error = Some(if index == UNREGISTERED {
                "keyed state handle used before it was declared in open".to_owned()
            } else {
                format!("keyed state handle #{index} does not belong to this function or has another type")
            });
        }
    }

    fn get<K: 'static, V: 'static>(&self, index: usize) -> Option<&FxHashMap<K, V>> {
        self.stores
            .get(index)?
            .as_ref()?
            .downcast_ref::<FxHashMap<K, V>>()
    }

    fn get_mut<K: 'static, V: 'static>(&mut self, index: usize) -> Option<&mut FxHashMap<K, V>> {
        self.stores
            .get_mut(index)?
            .as_mut()?
            .downcast_mut::<FxHashMap<K, V>>()
    }

    fn get_or_create<K: Send + 'static, V: Send + 'static>(
        &mut self,
        index: usize,
    ) -> Option<&mut FxHashMap<K, V>> {
        let slot = self.stores.get_mut(index)?;
        if slot.is_none() {
            // Only the declared type may be created: the snapshot writes it by that type.
            let (_, ops) = self.states.get(index)?;
            if ops.store_type != TypeId::of::<FxHashMap<K, V>>() {
                return None;
            }
            *slot = Some(Box::new(FxHashMap::<K, V>::default()));
        }
        slot.as_mut()?.downcast_mut::<FxHashMap<K, V>>()
    }
}

/// A keyed operator's view while processing one record: the current key and its state.
pub struct KeyedContext<'a, K> {
    key: &'a K,
    stores: &'a mut StateStores,
    runtime: &'a RuntimeContext,
    timing: Option<TimerAccess<'a, K>>,
}

/// A keyed operator's timers and time, as a [`KeyedContext`] sees them.
pub(crate) struct TimerAccess<'a, K> {
    pub(crate) timers: &'a mut Timers<K>,
    /// The record's timestamp, or the firing timer's.
    pub(crate) timestamp: i64,
    pub(crate) processing_time: i64,
    /// Set while a timer fires.
    pub(crate) domain: Option<TimeDomain>,
}

impl<K> std::fmt::Debug for KeyedContext<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedContext").finish_non_exhaustive()
    }
}

impl<'a, K: Key> KeyedContext<'a, K> {
    /// A context without timers (the state unit tests').
    #[cfg(test)]
    pub(crate) fn new(
        key: &'a K,
        stores: &'a mut StateStores,
        runtime: &'a RuntimeContext,
    ) -> Self {
        KeyedContext {
            key,
            stores,
            runtime,
            timing: None,
        }
    }

    pub(crate) fn with_timers(
        key: &'a K,
        stores: &'a mut StateStores,
        runtime: &'a RuntimeContext,
        timing: TimerAccess<'a, K>,
    ) -> Self {
        KeyedContext {
            key,
            stores,
            runtime,
            timing: Some(timing),
        }
    }

    fn timers(&mut self) -> Option<&mut Timers<K>> {
        match &mut self.timing {
            Some(timing) => Some(&mut *timing.timers),
            None => {
                if self.stores.error.is_none() {
                    self.stores.error = Some("timers are not available in this context".into());
                }
                None
            }
        }
    }

    /// The timestamp of the record being processed (or, in
    /// [`KeyedProcessFunction::on_timer`], the timer's); `None` when it has none. Flink:
    /// `Context.timestamp()`.
    pub fn timestamp(&self) -> Option<i64> {
        self.timing
            .as_ref()
            .map(|t| t.timestamp)
            .filter(|t| *t != NO_TIMESTAMP)
    }

    /// The operator's current watermark. Flink: `TimerService.currentWatermark()`.
    pub fn current_watermark(&self) -> i64 {
        self.timing
            .as_ref()
            .map_or(MIN_WATERMARK, |t| t.timers.watermark)
    }

    /// The current processing time in milliseconds since the epoch, as the task last gave it.
    /// Flink: `TimerService.currentProcessingTime()`.
    pub fn current_processing_time(&self) -> i64 {
        self.timing.as_ref().map_or(0, |t| t.processing_time)
    }

    /// In [`KeyedProcessFunction::on_timer`], which clock fired; `None` while processing a
    /// record. Flink: `OnTimerContext.timeDomain()`.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.timing.as_ref().and_then(|t| t.domain)
    }

    /// Registers an event-time timer for the current key: `on_timer` is called once the
    /// watermark reaches `timestamp`. One timer per key and timestamp (registering it again does
    /// nothing). Timers are part of checkpoints.
    pub fn register_event_time_timer(&mut self, timestamp: i64) {
        let key = self.key;
        if let Some(timers) = self.timers() {
            timers.event.register(timestamp, key);
        }
    }

    /// Registers a processing-time timer for the current key at `timestamp` (wall clock, ms).
    pub fn register_processing_time_timer(&mut self, timestamp: i64) {
        let key = self.key;
        if let Some(timers) = self.timers() {
            timers.processing.register(timestamp, key);
        }
    }

    /// Deletes the current key's event-time timer at `timestamp`, if any.
    pub fn delete_event_time_timer(&mut self, timestamp: i64) {
        let key = self.key;
        if let Some(timers) = self.timers() {
            timers.event.delete(timestamp, key);
        }
    }

    /// Deletes the current key's processing-time timer at `timestamp`, if any.
    pub fn delete_processing_time_timer(&mut self, timestamp: i64) {
        let key = self.key;
        if let Some(timers) = self.timers() {
            timers.processing.delete(timestamp, key);
        }
    }

    /// The key of the record being processed.
    pub fn key(&self) -> &K {
        self.key
    }

    /// Where this subtask runs.
    pub fn runtime(&self) -> &RuntimeContext {
        self.runtime
    }

    /// The current key's value, if set.
    pub fn value<V: Send + 'static>(&self, state: &ValueState<V>) -> Option<&V> {
        self.stores.get::<K, V>(state.index)?.get(self.key)
    }

    /// The current key's value, mutably, if set.
    pub fn value_mut<V: Send + 'static>(&mut self, state: &ValueState<V>) -> Option<&mut V> {
        self.stores.get_mut::<K, V>(state.index)?.get_mut(self.key)
    }

    /// Sets the current key's value.
    pub fn update<V: Send + 'static>(&mut self, state: &ValueState<V>, value: V) {
        match self.stores.get_or_create::<K, V>(state.index) {
            Some(map) => {
                map.insert(self.key.clone(), value);
            }
            None => self.stores.fail(state.index),
        }
    }

    /// Removes the current key's value and returns it.
    pub fn clear<V: Send + 'static>(&mut self, state: &ValueState<V>) -> Option<V> {
        self.stores.get_mut::<K, V>(state.index)?.remove(self.key)
    }

    /// The value under `user_key` in the current key's map.
    pub fn map_get<UK, UV>(&self, state: &MapState<UK, UV>, user_key: &UK) -> Option<&UV>
    where
        UK: std::hash::Hash + Eq + Send + 'static,
        UV: Send + 'static,
    {
        self.stores
            .get::<K, FxHashMap<UK, UV>>(state.index)?
            .get(self.key)?
            .get(user_key)
    }

    /// Puts `value` under `user_key` in the current key's map; returns the previous value.
    pub fn map_put<UK, UV>(
        &mut self,
        state: &MapState<UK, UV>,
        user_key: UK,
        value: UV,
    ) -> Option<UV>
    where
        UK: std::hash::Hash + Eq + Send + 'static,
        UV: Send + 'static,
    {
        match self
            .stores
            .get_or_create::<K, FxHashMap<UK, UV>>(state.index)
        {
            Some(map) => map
                .entry(self.key.clone())
                .or_default()
                .insert(user_key, value),
            None => {
                self.stores.fail(state.index);
                None
            }
        }
    }

    /// Removes `user_key` from the current key's map; returns its value.
    pub fn map_remove<UK, UV>(&mut self, state: &MapState<UK, UV>, user_key: &UK) -> Option<UV>
    where
        UK: std::hash::Hash + Eq + Send + 'static,
        UV: Send + 'static,
    {
        let map = self.stores.get_mut::<K, FxHashMap<UK, UV>>(state.index)?;
        let inner = map.get_mut(self.key)?;
        let removed = inner.remove(user_key);
        if inner.is_empty() {
            map.remove(self.key);
        }
        removed
    }

    /// True when the current key's map has `user_key`.
    pub fn map_contains<UK, UV>(&self, state: &MapState<UK, UV>, user_key: &UK) -> bool
    where
        UK: std::hash::Hash + Eq + Send + 'static,
        UV: Send + 'static,
    {
        self.map_get(state, user_key).is_some()
    }

    /// The entries of the current key's map, in no particular order.
    pub fn map_iter<UK, UV>(&self, state: &MapState<UK, UV>) -> impl Iterator<Item = (&UK, &UV)>
    where
        UK: std::hash::Hash + Eq + Send + 'static,
        UV: Send + 'static,
    {
        self.stores
            .get::<K, FxHashMap<UK, UV>>(state.index)
            .and_then(|m| m.get(self.key))
            .into_iter()
            .flat_map(|inner| inner.iter())
    }

    /// Removes the current key's whole map.
    pub fn map_clear<UK, UV>(&mut self, state: &MapState<UK, UV>)
    where
        UK: std::hash::Hash + Eq + Send + 'static,
        UV: Send + 'static,
    {
        if let Some(map) = self.stores.get_mut::<K, FxHashMap<UK, UV>>(state.index) {
            map.remove(self.key);
        }
    }

    /// Folds `value` into the current key's reducing state (`value` itself when it is empty).
    pub fn reducing_add<V: Send + 'static>(&mut self, state: &ReducingState<V>, value: V) {
        let Some(reduce) = state.reduce else {
            self.stores.fail(state.index);
            return;
        };
        match self.stores.get_or_create::<K, V>(state.index) {
            Some(map) => match map.get_mut(self.key) {
                Some(acc) => *acc = reduce(acc, &value),
                None => {
                    map.insert(self.key.clone(), value);
                }
            },
            None => self.stores.fail(state.index),
        }
    }

    /// The current key's reduced value, if any value was added.
    pub fn reducing_get<V: Send + 'static>(&self, state: &ReducingState<V>) -> Option<&V> {
        self.stores.get::<K, V>(state.index)?.get(self.key)
    }

    /// Empties the current key's reducing state; returns the reduced value it held.
    pub fn reducing_clear<V: Send + 'static>(&mut self, state: &ReducingState<V>) -> Option<V> {
        self.stores.get_mut::<K, V>(state.index)?.remove(self.key)
    }
}

/// A keyed operator's view at end of input: the state of every key.
pub struct EndOfInputContext<'a, K> {
    stores: &'a mut StateStores,
    runtime: &'a RuntimeContext,
    _key: PhantomData<fn() -> K>,
}

impl<K> std::fmt::Debug for EndOfInputContext<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndOfInputContext").finish_non_exhaustive()
    }
}

impl<'a, K: Key> EndOfInputContext<'a, K> {
    pub(crate) fn new(stores: &'a mut StateStores, runtime: &'a RuntimeContext) -> Self {
        EndOfInputContext {
            stores,
            runtime,
            _key: PhantomData,
        }
    }

    /// Where this subtask runs.
    pub fn runtime(&self) -> &RuntimeContext {
        self.runtime
    }

    /// Every key's value of `state`, in no particular order.
    pub fn value_entries<V: Send + 'static>(
        &self,
        state: &ValueState<V>,
    ) -> impl Iterator<Item = (&K, &V)> {
        self.stores
            .get::<K, V>(state.index)
            .into_iter()
            .flat_map(|m| m.iter())
    }

    /// Every `(key, user key, value)` of `state`, in no particular order.
    pub fn map_entries<UK, UV>(
        &self,
        state: &MapState<UK, UV>,
    ) -> impl Iterator<Item = (&K, &UK, &UV)>
    where
        UK: std::hash::Hash + Eq + Send + 'static,
        UV: Send + 'static,
    {
        self.stores
            .get::<K, FxHashMap<UK, UV>>(state.index)
            .into_iter()
            .flat_map(|m| m.iter())
            .flat_map(|(k, inner)| inner.iter().map(move |(uk, uv)| (k, uk, uv)))
    }

    /// Every key's reduced value of `state`, in no particular order.
    pub fn reducing_entries<V: Send + 'static>(
        &self,
        state: &ReducingState<V>,
    ) -> impl Iterator<Item = (&K, &V)> {
        self.stores
            .get::<K, V>(state.index)
            .into_iter()
            .flat_map(|m| m.iter())
    }

    /// Removes every key's value of `state`.
    pub fn clear_all<V: Send + 'static>(&mut self, state: &ValueState<V>) {
        if let Some(map) = self.stores.get_mut::<K, V>(state.index) {
            map.clear();
        }
    }
}

/// A function on a `KeyedStream` with keyed state, as Flink's `KeyedProcessFunction` (without
/// timers). Its keyed state is part of every checkpoint.
///
/// The value given to `KeyedStream::process` is cloned once per subtask before `open`, so a
/// function is typically plain data plus its state handles.
pub trait KeyedProcessFunction<K, I, O>: Send + 'static {
    /// Declares state. Called once per subtask before the first record (before the state is
    /// restored from a checkpoint, when it is). Declaring is all it should do.
    ///
    /// # Errors
    /// A message that fails the task.
    fn open(&mut self, state: &mut StateRegistry<K>) -> Result<(), String> {
        let _ = state;
        Ok(())
    }

    /// Processes one record of key `ctx.key()`.
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut dyn Collector<O>,
    );

    /// A timer of the current key (`ctx.key()`) fired: an event-time timer once the watermark
    /// reached `timestamp` (its output carries `timestamp`), a processing-time timer once the
    /// wall clock did. Timers fire in timestamp order. Flink: `onTimer`.
    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedContext<'_, K>,
        out: &mut dyn Collector<O>,
    ) {
        let _ = (timestamp, ctx, out);
    }

    /// Called once when the input has ended, before downstream operators finish.
    fn end_of_input(&mut self, ctx: &mut EndOfInputContext<'_, K>, out: &mut dyn Collector<O>) {
        let _ = (ctx, out);
    }

    /// Releases resources; called once at the end, also after a failure.
    fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> RuntimeContext {
        RuntimeContext {
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt_number: 0,
            task_name: "t".into(),
            checkpointing: true,
        }
    }

    #[test]
    fn value_and_map_state_are_per_key() {
        let mut registry = StateRegistry::<String>::default();
        let count: ValueState<u64> = registry.value_state("count");
        let seen: MapState<String, u32> = registry.map_state("seen");
        assert_eq!(registry.value_state::<u64>("count").index, count.index);
        assert_eq!(registry.names(), vec!["count", "seen"]);
        assert!(registry.take_error().is_none());
        let rt = runtime();
        let mut stores = StateStores::from_registry(&registry);

        let a = String::from("a");
        let b = String::from("b");
        {
            let mut ctx = KeyedContext::new(&a, &mut stores, &rt);
            assert_eq!(ctx.value(&count), None);
            ctx.update(&count, 1);
            *ctx.value_mut(&count).unwrap() += 1;
            assert_eq!(ctx.map_put(&seen, "x".into(), 1), None);
            assert_eq!(ctx.map_put(&seen, "x".into(), 2), Some(1));
            ctx.map_put(&seen, "y".into(), 3);
            assert!(ctx.map_contains(&seen, &"y".to_owned()));
            assert_eq!(ctx.map_iter(&seen).count(), 2);
        }
        {
            let mut ctx = KeyedContext::new(&b, &mut stores, &rt);
            assert_eq!(ctx.key(), "b");
            assert_eq!(ctx.value(&count), None);
            assert_eq!(ctx.map_get(&seen, &"x".to_owned()), None);
            ctx.update(&count, 10);
            assert_eq!(ctx.clear(&count), Some(10));
            assert_eq!(ctx.value(&count), None);
        }
        {
            let mut ctx = KeyedContext::new(&a, &mut stores, &rt);
            assert_eq!(ctx.value(&count), Some(&2));
            assert_eq!(ctx.map_remove(&seen, &"x".to_owned()), Some(2));
            ctx.map_clear(&seen);
            assert_eq!(ctx.map_iter(&seen).count(), 0);
        }
        let mut end = EndOfInputContext::<String>::new(&mut stores, &rt);
        assert_eq!(
            end.value_entries(&count).collect::<Vec<_>>(),
            vec![(&a, &2)]
        );
        end.clear_all(&count);
        assert_eq!(end.value_entries(&count).count(), 0);
        assert!(stores.error.is_none());
    }

    #[test]
    fn misuse_is_reported_not_panicking() {
        let mut registry = StateRegistry::<u32>::default();
        let _: ValueState<u64> = registry.value_state("s");
        let clash: ValueState<String> = registry.value_state("s");
        assert!(registry.take_error().unwrap().contains("different"));
        let _: ValueState<u64> = registry.value_state("r");
        let kind_clash: ReducingState<u64> = registry.reducing_state("r", |a, b| a + b);
        assert!(registry.take_error().unwrap().contains("different kinds"));
        let rt = runtime();
        let mut stores = StateStores::from_registry(&registry);
        let key = 1u32;
        let mut ctx = KeyedContext::new(&key, &mut stores, &rt);
        ctx.update(&clash, "x".into());
        assert_eq!(ctx.value(&clash), None);
        ctx.update(&ValueState::<u8>::default(), 1);
        assert_eq!(ctx.value(&ValueState::<u8>::default()), None);
        ctx.reducing_add(&kind_clash, 1);
        ctx.reducing_add(&ReducingState::<u64>::default(), 1);
        // A handle with a declared index but another value type.
        let wrong = ValueState::<String> {
            index: 0,
            _value: PhantomData,
        };
        ctx.update(&wrong, "x".into());
        assert_eq!(ctx.value(&wrong), None);
        assert_eq!(ctx.reducing_get(&ReducingState::<u64>::default()), None);
        assert!(stores.error.is_some());
        // A handle of the wrong value type never creates a store the snapshot cannot write.
        let mut out = Vec::new();
        stores.snapshot(&mut out).unwrap();
    }

    /// The states of [`registry_of_three`], filled for `keys` keys.
    struct Three {
        count: ValueState<u64>,
        seen: MapState<String, (u32, bool)>,
        max: ReducingState<i64>,
    }

    fn registry_of_three() -> (StateRegistry<String>, Three) {
        let mut registry = StateRegistry::<String>::default();
        let three = Three {
            count: registry.value_state("count"),
            seen: registry.map_state("seen"),
            max: registry.reducing_state("max", |a: &i64, b: &i64| *a.max(b)),
        };
        assert!(registry.take_error().is_none());
        (registry, three)
    }

    fn fill(stores: &mut StateStores, s: &Three, keys: u32) {
        let rt = runtime();
        for k in 0..keys {
            let key = format!("key-{k}");
            let mut ctx = KeyedContext::new(&key, stores, &rt);
            ctx.update(&s.count, u64::from(k) * 3);
            for u in 0..k % 4 {
                ctx.map_put(&s.seen, format!("u{u}"), (u * k, u % 2 == 0));
            }
            for v in [5i64, -3, i64::from(k), 2] {
                ctx.reducing_add(&s.max, v);
            }
        }
    }

    /// Every read the function can make, for keys `0..keys`, in a comparable form.
    fn reads(stores: &mut StateStores, s: &Three, keys: u32) -> Vec<String> {
        let rt = runtime();
        let mut out = Vec::new();
        for k in 0..keys + 2 {
            let key = format!("key-{k}");
            let ctx = KeyedContext::new(&key, stores, &rt);
            let mut map: Vec<(String, (u32, bool))> = ctx
                .map_iter(&s.seen)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            map.sort();
            out.push(format!(
                "{key}: {:?} {map:?} {:?}",
                ctx.value(&s.count),
                ctx.reducing_get(&s.max)
            ));
        }
        out
    }

    #[test]
    fn reducing_state_folds_per_key() {
        let (registry, s) = registry_of_three();
        let mut stores = StateStores::from_registry(&registry);
        let rt = runtime();
        let a = String::from("a");
        let mut ctx = KeyedContext::new(&a, &mut stores, &rt);
        assert_eq!(ctx.reducing_get(&s.max), None);
        ctx.reducing_add(&s.max, 3);
        ctx.reducing_add(&s.max, 9);
        ctx.reducing_add(&s.max, 1);
        assert_eq!(ctx.reducing_get(&s.max), Some(&9));
        assert_eq!(ctx.reducing_clear(&s.max), Some(9));
        assert_eq!(ctx.reducing_get(&s.max), None);
        ctx.reducing_add(&s.max, -4);
        let end = EndOfInputContext::<String>::new(&mut stores, &rt);
        assert_eq!(
            end.reducing_entries(&s.max).collect::<Vec<_>>(),
            vec![(&a, &-4)]
        );
        assert!(stores.error.is_none());
    }

    #[test]
    fn keyed_state_snapshot_restores_the_same_reads() {
        for keys in [0, 1, 17] {
            let (registry, s) = registry_of_three();
            let mut stores = StateStores::from_registry(&registry);
            fill(&mut stores, &s, keys);
            let mut bytes = Vec::new();
            stores.snapshot(&mut bytes).unwrap();

            let (registry2, s2) = registry_of_three();
            let mut restored = StateStores::from_registry(&registry2);
            restored.restore(&bytes).unwrap();
            assert_eq!(
                reads(&mut restored, &s2, keys),
                reads(&mut stores, &s, keys)
            );
            // The restored state snapshots to the same content (entry order aside).
            let mut again = Vec::new();
            restored.snapshot(&mut again).unwrap();
            assert_eq!(again.len(), bytes.len());

            // Restoring into an empty snapshot of no state keeps everything empty.
            let mut none = StateStores::from_registry(&registry2);
            none.restore(&[0]).unwrap();
            assert_eq!(reads(&mut none, &s2, 0)[0], "key-0: None [] None");
        }
    }

    #[test]
    fn malformed_and_foreign_keyed_snapshots_are_errors() {
        let (registry, s) = registry_of_three();
        let mut stores = StateStores::from_registry(&registry);
        fill(&mut stores, &s, 9);
        let mut bytes = Vec::new();
        stores.snapshot(&mut bytes).unwrap();
        for cut in 0..bytes.len() {
            let (r, _) = registry_of_three();
            let mut fresh = StateStores::from_registry(&r);
            assert!(fresh.restore(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(7);
        let (r, _) = registry_of_three();
        assert!(StateStores::from_registry(&r)
            .restore(&longer)
            .unwrap_err()
            .contains("trailing"));

        // Another function: a state name it does not declare.
        let mut other = StateRegistry::<String>::default();
        let _: ValueState<u64> = other.value_state("count");
        let err = StateStores::from_registry(&other)
            .restore(&bytes)
            .unwrap_err();
        assert!(err.contains("does not declare"), "{err}");
        // Same name, other kind.
        let mut other = StateRegistry::<String>::default();
        let _: ReducingState<u64> = other.reducing_state("count", |a, b| a + b);
        let _: MapState<String, (u32, bool)> = other.map_state("seen");
        let _: ReducingState<i64> = other.reducing_state("max", |a, b| a + b);
        let err = StateStores::from_registry(&other)
            .restore(&bytes)
            .unwrap_err();
        assert!(err.contains("declared as a reducing state"), "{err}");
        // Same name and kind, other value type: the entries do not decode.
        let mut other = StateRegistry::<String>::default();
        let _: ValueState<String> = other.value_state("count");
        let _: MapState<String, (u32, bool)> = other.map_state("seen");
        let _: ReducingState<i64> = other.reducing_state("max", |a, b| a + b);
        assert!(StateStores::from_registry(&other).restore(&bytes).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_keyed_restore() {
        let (registry, s) = registry_of_three();
        let mut stores = StateStores::from_registry(&registry);
        fill(&mut stores, &s, 5);
        let mut valid = Vec::new();
        stores.snapshot(&mut valid).unwrap();
        let mut rng = crate::SplitMix64::new(0x5a5e);
        for round in 0..3000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = rng.gen_range(64) as usize;
                (0..len).map(|_| rng.next_u64() as u8).collect()
            } else {
                // Mutate a valid snapshot in a few places.
                let mut bytes = valid.clone();
                for _ in 0..=rng.gen_range(3) {
                    let at = rng.gen_range(bytes.len() as u64) as usize;
                    bytes[at] = rng.next_u64() as u8;
                }
                bytes
            };
            let (r, _) = registry_of_three();
            let _ = StateStores::from_registry(&r).restore(&bytes);
        }
    }
}
