//! Keyed state for [`KeyedProcessFunction`]s.
//!
//! A function declares its state in [`KeyedProcessFunction::open`] through the
//! [`StateRegistry`], which hands out typed, copyable handles ([`ValueState`], [`MapState`]).
//! While processing a record it reads and writes the state of the record's key through the
//! [`KeyedContext`].
//!
//! The backend is in memory, per operator subtask: one `FxHashMap<K, V>` (or
//! `FxHashMap<K, FxHashMap<UK, UV>>`) per declared state, found by the handle's index and a type
//! check, without string lookups on the hot path. State is not checkpointed yet.

use std::any::{Any, TypeId};
use std::marker::PhantomData;

use rustc_hash::FxHashMap;

use crate::{Collector, Key, RuntimeContext};

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

#[derive(Debug)]
struct Declaration {
    name: String,
    value_type: TypeId,
    type_name: &'static str,
}

/// Where a [`KeyedProcessFunction`] declares its keyed state, in `open`.
#[derive(Debug, Default)]
pub struct StateRegistry {
    declarations: Vec<Declaration>,
    error: Option<String>,
}

impl StateRegistry {
    /// Declares (or finds again) the value state called `name`.
    ///
    /// Declaring the same name twice with the same type returns the same handle; with another
    /// type, `open` fails.
    pub fn value_state<V: Send + 'static>(&mut self, name: &str) -> ValueState<V> {
        ValueState {
            index: self.declare::<V>(name, "value"),
            _value: PhantomData,
        }
    }

    /// Declares (or finds again) the map state called `name`.
    pub fn map_state<UK, UV>(&mut self, name: &str) -> MapState<UK, UV>
    where
        UK: std::hash::Hash + Eq + Send + 'static,
        UV: Send + 'static,
    {
        MapState {
            index: self.declare::<FxHashMap<UK, UV>>(name, "map"),
            _value: PhantomData,
        }
    }

    /// The names of the declared states, in declaration order.
    pub fn names(&self) -> Vec<&str> {
        self.declarations.iter().map(|d| d.name.as_str()).collect()
    }

    fn declare<V: 'static>(&mut self, name: &str, kind: &str) -> usize {
        let type_name = std::any::type_name::<V>();
        if let Some(i) = self.declarations.iter().position(|d| d.name == name) {
            if self.declarations[i].value_type != TypeId::of::<V>() {
                self.error.get_or_insert_with(|| {
                    format!(
                        "{kind} state {name:?} declared twice with different types ({} and {type_name})",
                        self.declarations[i].type_name
                    )
                });
                return UNREGISTERED;
            }
            return i;
        }
        self.declarations.push(Declaration {
            name: name.to_owned(),
            value_type: TypeId::of::<V>(),
            type_name,
        });
        self.declarations.len() - 1
    }

    pub(crate) fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }

    pub(crate) fn len(&self) -> usize {
        self.declarations.len()
    }
}

/// The per-subtask state of one keyed operator: one type-erased `FxHashMap<K, V>` per declared
/// state, created on first write.
pub(crate) struct StateStores {
    stores: Vec<Option<Box<dyn Any + Send>>>,
    pub(crate) error: Option<String>,
}

impl StateStores {
    pub(crate) fn new(states: usize) -> Self {
        StateStores {
            stores: (0..states).map(|_| None).collect(),
            error: None,
        }
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
}

impl<K> std::fmt::Debug for KeyedContext<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedContext").finish_non_exhaustive()
    }
}

impl<'a, K: Key> KeyedContext<'a, K> {
    pub(crate) fn new(
        key: &'a K,
        stores: &'a mut StateStores,
        runtime: &'a RuntimeContext,
    ) -> Self {
        KeyedContext {
            key,
            stores,
            runtime,
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

    /// Removes every key's value of `state`.
    pub fn clear_all<V: Send + 'static>(&mut self, state: &ValueState<V>) {
        if let Some(map) = self.stores.get_mut::<K, V>(state.index) {
            map.clear();
        }
    }
}

/// A function on a `KeyedStream` with keyed state, as Flink's `KeyedProcessFunction` (without
/// timers).
///
/// The value given to `KeyedStream::process` is cloned once per subtask before `open`, so a
/// function is typically plain data plus its state handles.
pub trait KeyedProcessFunction<K, I, O>: Send + 'static {
    /// Declares state. Called once per subtask before the first record.
    ///
    /// # Errors
    /// A message that fails the task.
    fn open(&mut self, state: &mut StateRegistry) -> Result<(), String> {
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
        }
    }

    #[test]
    fn value_and_map_state_are_per_key() {
        let mut registry = StateRegistry::default();
        let count: ValueState<u64> = registry.value_state("count");
        let seen: MapState<String, u32> = registry.map_state("seen");
        assert_eq!(registry.value_state::<u64>("count").index, count.index);
        assert_eq!(registry.names(), vec!["count", "seen"]);
        assert!(registry.take_error().is_none());
        let rt = runtime();
        let mut stores = StateStores::new(registry.len());

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
        let mut registry = StateRegistry::default();
        let _: ValueState<u64> = registry.value_state("s");
        let clash: ValueState<String> = registry.value_state("s");
        assert!(registry.take_error().unwrap().contains("different types"));
        let rt = runtime();
        let mut stores = StateStores::new(1);
        let key = 1u32;
        let mut ctx = KeyedContext::new(&key, &mut stores, &rt);
        ctx.update(&clash, "x".into());
        ctx.update(&ValueState::<u8>::default(), 1);
        assert_eq!(ctx.value(&ValueState::<u8>::default()), None);
        assert!(stores.error.is_some());
    }
}
