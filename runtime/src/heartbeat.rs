//! Liveness of peers: heartbeat timeouts, failed-RPC counting, and fast probing after a lost
//! connection. Flink: `HeartbeatManager`, `HeartbeatMonitor`, `heartbeat.rpc-failure-threshold`.
//!
//! Pure logic: the owning actor ticks it and feeds it what happened; it answers with the peers
//! that are gone and why.
//!
//! # How a peer is declared lost
//!
//! - **Silence** (a frozen process, a cut network): nothing heard for `heartbeat.timeout` →
//!   [`Loss::TimedOut`].
//! - **Unreachable** (a crashed process, a closed port): `heartbeat.rpc-failure-threshold`
//!   consecutive heartbeat RPCs failed with `RecipientUnreachable` → [`Loss::Unreachable`].
//!   Flink only counts the regular heartbeats, so a dead TaskManager takes up to
//!   threshold × interval to notice. Here the actor also *probes* at once when the RPC layer
//!   reports the connection lost ([`rflink_rpc::PeerEvent`]), and re-probes every
//!   `probe_interval` while probes fail: a SIGKILLed peer is declared lost about
//!   threshold × probe_interval after its connection dies, while a blip that reconnects on the
//!   first probe resets the count.
//!
//! # Why the defaults are far below Flink's (1 s / 5 s instead of 10 s / 50 s)
//!
//! Flink's generous timeout covers JVM garbage-collection pauses. A Rust process has none, and a
//! crash is caught by the connection-loss path above, so the timeout only has to cover silent
//! failures; 5 heartbeats of slack still absorbs scheduling noise on a loaded machine.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use rflink_rpc::{PeerEvent, RpcContext, RpcEndpoint, RpcError};
use tokio::sync::broadcast;

/// What a heartbeat RPC's outcome means for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It answered: it is alive.
    Alive,
    /// It is lost (the failure threshold was reached); it is no longer monitored.
    Lost(Loss),
    /// It did not answer while being probed after a lost connection: probe again soon.
    ProbeAgain,
    /// Nothing to do (a timeout, a failure below the threshold): the regular checks go on.
    Wait,
}

/// Heartbeat settings (`heartbeat.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatSettings {
    /// `heartbeat.interval`: how often the sender asks for a heartbeat. Default 1 s.
    pub interval: Duration,
    /// `heartbeat.timeout`: silence after which a peer is lost. Default 5 s.
    pub timeout: Duration,
    /// `heartbeat.rpc-failure-threshold`: consecutive unreachable heartbeat RPCs after which a
    /// peer is lost; `None` disables this check (Flink: -1). Default 2.
    pub rpc_failure_threshold: Option<u32>,
    /// Pause between probes of a peer whose connection was lost. Default 100 ms.
    pub probe_interval: Duration,
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        HeartbeatSettings {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            rpc_failure_threshold: Some(2),
            probe_interval: Duration::from_millis(100),
        }
    }
}

/// Why a peer was declared lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// Nothing was heard for this long.
    TimedOut {
        /// The configured timeout.
        after: Duration,
    },
    /// This many heartbeat RPCs in a row could not reach the peer.
    Unreachable {
        /// The consecutive failures.
        failures: u32,
    },
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loss::TimedOut { after } => write!(f, "heartbeat timed out after {after:?}"),
            Loss::Unreachable { failures } => {
                write!(f, "unreachable: {failures} heartbeat rpcs in a row failed")
            }
        }
    }
}

#[derive(Debug)]
struct Target {
    node: String,
    last_heard: Instant,
    failures: u32,
    probing: bool,
}

/// The monitored peers of one component, keyed by `K` (a resource id, a job id).
#[derive(Debug)]
pub struct HeartbeatMonitor<K> {
    settings: HeartbeatSettings,
    targets: HashMap<K, Target>,
}

impl<K: Copy + Eq + Hash> HeartbeatMonitor<K> {
    /// An empty monitor.
    pub fn new(settings: HeartbeatSettings) -> Self {
        HeartbeatMonitor {
            settings,
            targets: HashMap::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &HeartbeatSettings {
        &self.settings
    }

    /// Starts monitoring `key`, reachable on `node` (`host:port`), as heard from now.
    pub fn monitor(&mut self, key: K, node: String, now: Instant) {
        self.targets.insert(
            key,
            Target {
                node,
                last_heard: now,
                failures: 0,
                probing: false,
            },
        );
    }

    /// Stops monitoring `key`; true if it was monitored.
    pub fn unmonitor(&mut self, key: K) -> bool {
        self.targets.remove(&key).is_some()
    }

    /// True if `key` is monitored.
    pub fn is_monitored(&self, key: K) -> bool {
        self.targets.contains_key(&key)
    }

    /// Every monitored key.
    pub fn targets(&self) -> Vec<K> {
        self.targets.keys().copied().collect()
    }

    /// When `key` was last heard from.
    pub fn last_heard(&self, key: K) -> Option<Instant> {
        self.targets.get(&key).map(|t| t.last_heard)
    }

    /// Something arrived from `key`: it is alive.
    pub fn heard_from(&mut self, key: K, now: Instant) {
        if let Some(t) = self.targets.get_mut(&key) {
            t.last_heard = now;
            t.failures = 0;
            t.probing = false;
        }
    }

    /// A heartbeat RPC to `key` failed with `RecipientUnreachable`. Returns the loss once the
    /// threshold is reached (and stops monitoring the key).
    pub fn unreachable(&mut self, key: K) -> Option<Loss> {
        let threshold = self.settings.rpc_failure_threshold?;
        let t = self.targets.get_mut(&key)?;
        t.failures += 1;
        if t.failures >= threshold.max(1) {
            let failures = t.failures;
            self.targets.remove(&key);
            Some(Loss::Unreachable { failures })
        } else {
            None
        }
    }

    /// Records a heartbeat RPC's outcome and says what it means.
    pub fn rpc_result<T>(&mut self, key: K, result: &Result<T, RpcError>, now: Instant) -> Verdict {
        match result {
            Ok(_) => {
                self.heard_from(key, now);
                Verdict::Alive
            }
            Err(RpcError::RecipientUnreachable { .. }) => {
                let probing = self.is_probing(key);
                match self.unreachable(key) {
                    Some(loss) => Verdict::Lost(loss),
                    None if probing => Verdict::ProbeAgain,
                    None => Verdict::Wait,
                }
            }
            Err(_) => Verdict::Wait,
        }
    }

    /// The monitored keys reached through `node`, which just lost its connection; marks them as
    /// being probed and returns those not already being probed.
    pub fn start_probing(&mut self, node: &str) -> Vec<K> {
        self.targets
            .iter_mut()
            .filter(|(_, t)| t.node == node && !t.probing)
            .map(|(k, t)| {
                t.probing = true;
                *k
            })
            .collect()
    }

    /// True while `key` is being probed after a lost connection.
    pub fn is_probing(&self, key: K) -> bool {
        self.targets.get(&key).is_some_and(|t| t.probing)
    }

    /// Removes and returns every key silent for longer than the timeout.
    pub fn expired(&mut self, now: Instant) -> Vec<(K, Loss)> {
        let timeout = self.settings.timeout;
        let gone: Vec<K> = self
            .targets
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.last_heard) > timeout)
            .map(|(k, _)| *k)
            .collect();
        gone.into_iter()
            .map(|k| {
                self.targets.remove(&k);
                (k, Loss::TimedOut { after: timeout })
            })
            .collect()
    }
}

/// Calls `on_lost(endpoint, node, reason, ctx)` on `E`'s main thread for every connection to a
/// peer that the RPC layer reports lost, for as long as the endpoint runs.
pub fn watch_peers<E: RpcEndpoint>(
    mut rx: broadcast::Receiver<PeerEvent>,
    ctx: &mut RpcContext<'_, E>,
    on_lost: fn(&mut E, &str, &str, &mut RpcContext<'_, E>),
) {
    ctx.spawn_then(
        async move {
            let event = rx.recv().await;
            (rx, event)
        },
        move |(rx, event), endpoint, ctx| {
            match event {
                Ok(PeerEvent::ConnectionLost { node, reason }) => {
                    on_lost(endpoint, &node, &reason, ctx)
                }
                Err(broadcast::error::RecvError::Closed) => return,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "missed peer events")
                }
            }
            watch_peers(rx, ctx, on_lost);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor() -> (HeartbeatMonitor<u32>, Instant) {
        let now = Instant::now();
        let mut m = HeartbeatMonitor::new(HeartbeatSettings::default());
        m.monitor(1, "a:1".into(), now);
        m.monitor(2, "b:1".into(), now);
        (m, now)
    }

    #[test]
    fn silence_times_out_and_hearing_resets() {
        let (mut m, t0) = monitor();
        let s = Duration::from_secs(1);
        m.heard_from(1, t0 + 4 * s);
        assert!(
            m.expired(t0 + 5 * s).is_empty(),
            "exactly the timeout is not yet expired"
        );
        assert_eq!(
            m.expired(t0 + 6 * s),
            vec![(2, Loss::TimedOut { after: 5 * s })],
            "only the silent one"
        );
        assert!(!m.is_monitored(2));
        assert_eq!(
            m.expired(t0 + 10 * s),
            vec![(1, Loss::TimedOut { after: 5 * s })]
        );
    }

    #[test]
    fn consecutive_unreachable_rpcs_reach_the_threshold() {
        let (mut m, t0) = monitor();
        assert_eq!(m.unreachable(1), None);
        m.heard_from(1, t0);
        assert_eq!(
            m.unreachable(1),
            None,
            "a success in between resets the count"
        );
        assert_eq!(m.unreachable(1), Some(Loss::Unreachable { failures: 2 }));
        assert!(!m.is_monitored(1));
        assert_eq!(m.unreachable(1), None, "no longer monitored");
    }

    #[test]
    fn rpc_results_become_verdicts() {
        let (mut m, t0) = monitor();
        let gone: Result<(), RpcError> = Err(RpcError::RecipientUnreachable {
            recipient: "a".into(),
            message: "Heartbeat".into(),
            reason: "refused".into(),
        });
        let slow: Result<(), RpcError> = Err(RpcError::Timeout {
            recipient: "a".into(),
            message: "Heartbeat".into(),
            timeout: Duration::from_secs(1),
        });
        assert_eq!(m.rpc_result(1, &Ok(()), t0), Verdict::Alive);
        assert_eq!(m.rpc_result(1, &slow, t0), Verdict::Wait);
        assert_eq!(m.start_probing("a:1"), vec![1]);
        assert_eq!(m.rpc_result(1, &gone, t0), Verdict::ProbeAgain);
        assert_eq!(
            m.rpc_result(1, &gone, t0),
            Verdict::Lost(Loss::Unreachable { failures: 2 })
        );
        assert_eq!(
            m.rpc_result(2, &gone, t0),
            Verdict::Wait,
            "not probing: wait for the next beat"
        );
    }

    #[test]
    fn the_threshold_can_be_disabled() {
        let mut m = HeartbeatMonitor::new(HeartbeatSettings {
            rpc_failure_threshold: None,
            ..HeartbeatSettings::default()
        });
        m.monitor(1u32, "a:1".into(), Instant::now());
        for _ in 0..10 {
            assert_eq!(m.unreachable(1), None);
        }
        assert!(m.is_monitored(1));
    }

    #[test]
    fn a_lost_connection_starts_one_probe_per_target() {
        let (mut m, t0) = monitor();
        m.monitor(3, "a:1".into(), t0);
        let mut probed = m.start_probing("a:1");
        probed.sort();
        assert_eq!(probed, vec![1, 3]);
        assert!(m.start_probing("a:1").is_empty(), "already probing");
        assert!(m.is_probing(1) && !m.is_probing(2));
        m.heard_from(1, t0);
        assert!(!m.is_probing(1));
    }
}
