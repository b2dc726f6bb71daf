//! `high-availability.type: none`: the one JobManager is always the leader, and the job
//! metadata lives in this process's memory (Flink's `StandaloneHaServices` with its in-memory
//! stores). A restarted JobManager starts empty, with fresh tokens.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use rflink_rpc::AbstractId;
use tokio::sync::watch;

use super::{ClusterLeader, HaError, HaServices, Leadership};

/// In-process high-availability services.
pub struct StandaloneHaServices {
    leader: watch::Sender<Option<ClusterLeader>>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The current leadership's session and the sender that marks it lost.
    leadership: Option<(AbstractId, watch::Sender<bool>)>,
    values: BTreeMap<String, Vec<u8>>,
}

impl Default for StandaloneHaServices {
    fn default() -> Self {
        StandaloneHaServices {
            leader: watch::channel(None).0,
            state: Arc::new(Mutex::new(State::default())),
        }
    }
}

impl StandaloneHaServices {
    /// Services for one process.
    pub fn new() -> Self {
        Self::default()
    }

    fn holds(&self, leadership: &Leadership) -> Result<(), HaError> {
        let state = self.state.lock().map_err(|_| HaError::Closed)?;
        match &state.leadership {
            Some((id, _)) if *id == leadership.session_id && !leadership.is_lost() => Ok(()),
            _ => Err(HaError::NotLeader {
                session_id: leadership.session_id,
            }),
        }
    }
}

impl HaServices for StandaloneHaServices {
    fn describe(&self) -> String {
        "none".into()
    }

    fn is_durable(&self) -> bool {
        false
    }

    fn campaign(&self, _contender: String) -> BoxFuture<'static, Result<Leadership, HaError>> {
        let session_id = AbstractId::generate();
        let (lost_tx, lost) = watch::channel(false);
        let result = match self.state.lock() {
            Ok(mut state) => {
                if let Some((_, old)) = state.leadership.replace((session_id, lost_tx)) {
                    let _ = old.send(true);
                }
                Ok(Leadership { session_id, lost })
            }
            Err(_) => Err(HaError::Closed),
        };
        Box::pin(async move { result })
    }

    fn resign(&self, leadership: &Leadership) -> BoxFuture<'static, Result<(), HaError>> {
        if let Ok(mut state) = self.state.lock() {
            if state
                .leadership
                .as_ref()
                .is_some_and(|(id, _)| *id == leadership.session_id)
            {
                if let Some((_, lost)) = state.leadership.take() {
                    let _ = lost.send(true);
                }
                self.leader.send_replace(None);
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn publish_leader(
        &self,
        leadership: &Leadership,
        leader: &ClusterLeader,
    ) -> BoxFuture<'static, Result<(), HaError>> {
        let result = self.holds(leadership).map(|()| {
            self.leader.send_replace(Some(leader.clone()));
        });
        Box::pin(async move { result })
    }

    fn watch_leader(&self) -> watch::Receiver<Option<ClusterLeader>> {
        self.leader.subscribe()
    }

    fn put(
        &self,
        leadership: &Leadership,
        key: String,
        value: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), HaError>> {
        let result = self.holds(leadership).and_then(|()| {
            let mut state = self.state.lock().map_err(|_| HaError::Closed)?;
            state.values.insert(key, value);
            Ok(())
        });
        Box::pin(async move { result })
    }

    fn delete(
        &self,
        leadership: &Leadership,
        key: String,
    ) -> BoxFuture<'static, Result<(), HaError>> {
        let result = self.holds(leadership).and_then(|()| {
            let mut state = self.state.lock().map_err(|_| HaError::Closed)?;
            state.values.remove(&key);
            Ok(())
        });
        Box::pin(async move { result })
    }

    fn get(&self, key: String) -> BoxFuture<'static, Result<Option<Vec<u8>>, HaError>> {
        let result = self
            .state
            .lock()
            .map(|state| state.values.get(&key).cloned())
            .map_err(|_| HaError::Closed);
        Box::pin(async move { result })
    }

    fn list(&self, prefix: String) -> BoxFuture<'static, Result<super::KeyValues, HaError>> {
        let result = self
            .state
            .lock()
            .map(|state| {
                state
                    .values
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .map_err(|_| HaError::Closed);
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_leadership_deposes_the_old_and_its_writes_are_refused() {
        let ha = StandaloneHaServices::new();
        let first = ha.campaign("a".into()).await.expect("granted");
        ha.put(&first, "k".into(), b"1".to_vec())
            .await
            .expect("leader writes");
        let second = ha.campaign("b".into()).await.expect("granted");
        assert!(first.is_lost());
        assert_ne!(first.session_id, second.session_id);
        let refused = ha.put(&first, "k".into(), b"2".to_vec()).await;
        assert_eq!(
            refused,
            Err(HaError::NotLeader {
                session_id: first.session_id
            })
        );
        assert_eq!(ha.get("k".into()).await, Ok(Some(b"1".to_vec())));
        ha.put(&second, "k2".into(), b"3".to_vec())
            .await
            .expect("new leader writes");
        let listed = ha.list("k".into()).await.expect("list");
        assert_eq!(listed.len(), 2);
        ha.resign(&second).await.expect("resign");
        assert!(second.is_lost());
        assert!(ha.watch_leader().borrow().is_none());
    }

    #[test]
    fn a_not_leader_error_starts_with_the_marker_the_rest_api_logs_quietly() {
        for leader in [None, Some("http://jm-1:8081".to_string())] {
            let err = crate::dispatcher::DispatcherError::NotLeader { leader };
            assert!(err.to_string().starts_with(crate::dispatcher::NOT_LEADER));
        }
    }

    #[test]
    fn derived_tokens_differ_per_component_and_session() {
        let s = AbstractId::from_u128(7);
        let d = super::super::derive_token(s, "dispatcher");
        assert_eq!(d, super::super::derive_token(s, "dispatcher"));
        assert_ne!(d, super::super::derive_token(s, "resourcemanager"));
        assert_ne!(
            d,
            super::super::derive_token(AbstractId::from_u128(8), "dispatcher")
        );
    }
}
