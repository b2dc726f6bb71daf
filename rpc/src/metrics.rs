//! Counters of the RPC layer, read with [`RpcService::metrics`](crate::RpcService::metrics).
//!
//! Two views of one service's traffic:
//!
//! * **Per method, caller side** ([`MethodMetrics`]): every `ask` and `tell` made through a gateway
//!   of this service counts on the slot of its target endpoint type and message. Each endpoint type
//!   gets one table of slots, indexed like its [`RpcProtocol::MESSAGES`], created when the service
//!   first makes a gateway for it (or starts one); a gateway holds its table, and a message knows
//!   its index at compile time ([`Accepts::INDEX`]), so a call costs a few relaxed atomic adds and,
//!   for an ask, two clock reads. No lock, no lookup.
//! * **Per endpoint, receiver side** ([`EndpointMetrics`]): each endpoint started on this service
//!   has a mailbox depth and handled/refused counts. Whatever puts an item into the actor's mailbox
//!   (a local gateway, the transport delivering inbound frames, `run_async`, `call_async`) wraps it
//!   in a [`Queued`] that counts it in; the actor counts it out as the handler starts. Senders and
//!   the actor write different cache lines, so counting adds no cross-thread traffic per message.
//!   See [`EndpointCounters`] for why the depth cannot leak or underflow when an endpoint stops
//!   with messages queued.
//!
//! All counters are monotonic except the depth, and are read without a lock on the hot path (the
//! registries below are locked only when a table is made and when metrics are read).

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::endpoint::RpcEndpoint;
use crate::error::RpcError;
#[cfg(doc)]
use crate::message::{Accepts, RpcProtocol};

/// What this service's RPC traffic looked like so far ([`RpcService::metrics`](crate::RpcService::metrics)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RpcMetrics {
    /// Calls made through gateways of this service, per target endpoint type and method: one entry
    /// for every message of every endpoint type this service has connected a gateway to or started
    /// (zeros included), sorted by gateway, then method.
    pub methods: Vec<MethodMetrics>,
    /// The endpoints started on this service and not yet terminated, sorted by name. A terminated
    /// endpoint drops out (its queued messages were dropped with it).
    pub endpoints: Vec<EndpointMetrics>,
}

impl RpcMetrics {
    /// The entry of `method` on `gateway`, if this service has one.
    pub fn method(&self, gateway: &str, method: &str) -> Option<&MethodMetrics> {
        self.methods
            .iter()
            .find(|m| m.gateway == gateway && m.method == method)
    }

    /// The entry of the endpoint named `name`, if it is running on this service.
    pub fn endpoint(&self, name: &str) -> Option<&EndpointMetrics> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

/// Calls to one method of one endpoint type, as the callers on this service saw them.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodMetrics {
    /// The target endpoint's [`RpcEndpoint::GATEWAY`] (e.g. "JobMasterGateway").
    pub gateway: String,
    /// The message type's name as the protocol names it on the wire (e.g. "OfferSlots").
    pub method: String,
    /// Asks and tells sent, local or remote (including those that then failed).
    pub calls: u64,
    /// Of those, asks that ended in an error other than a timeout (recipient unreachable, fencing
    /// refusal, unknown message, codec, frame size, ...), and tells that could not be sent (also
    /// when that is found out later, by a tell that had to dial first). An error the endpoint
    /// returns inside a typed reply is a reply, not an error here. A tell refused by the endpoint
    /// is not known to the caller: it counts in the endpoint's `refused` only.
    pub errors: u64,
    /// Asks that timed out.
    pub timeouts: u64,
    /// Asks that got a reply. An ask its caller dropped before it ended counts in `calls` only.
    pub asks_completed: u64,
    /// Sum of the round-trip times of the `asks_completed` asks, in microseconds (kept in
    /// nanoseconds, so short local asks are not rounded away): the mean is
    /// `rtt_micros_sum / asks_completed`.
    pub rtt_micros_sum: u64,
}

/// One endpoint started on this service, as its mailbox saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointMetrics {
    /// The endpoint's name (e.g. "jobmaster_3").
    pub name: String,
    /// Its [`RpcEndpoint::GATEWAY`].
    pub gateway: String,
    /// Items delivered to its mailbox and not yet taken up: RPC messages from local and remote
    /// callers (a remote batch counts each message in it; a local ask waiting for room in a full
    /// mailbox counts already), plus `run_async`, `call_async` and `schedule_run_async` closures
    /// sent from outside the endpoint. Lifecycle controls and work the endpoint schedules on
    /// itself are not counted.
    pub mailbox_depth: u64,
    /// RPC messages (asks and tells) whose handler ran. Closures are not counted here.
    pub handled: u64,
    /// RPC messages refused: the admission check said no (endpoint not running, no or wrong fencing
    /// token), the endpoint has no such message, or its payload could not be decoded.
    pub refused: u64,
}

// ---- caller side: per (endpoint type, method) ----

/// The counters of one method of one endpoint type. One cache line each, so callers of different
/// methods do not contend.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct MethodSlot {
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    asks_completed: AtomicU64,
    rtt_nanos_sum: AtomicU64,
}

/// Where calls of a message with an index outside its table count: nowhere anyone reads.
/// Unreachable with tables made from `RpcProtocol::MESSAGES` and indexes from `Accepts::INDEX`
/// of an `rpc_protocol!`.
static UNCOUNTED: MethodSlot = MethodSlot {
    calls: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    timeouts: AtomicU64::new(0),
    asks_completed: AtomicU64::new(0),
    rtt_nanos_sum: AtomicU64::new(0),
};

impl MethodSlot {
    /// A call is being sent.
    pub(crate) fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// An ask that started at `start` ended with `result`.
    pub(crate) fn ask_ended<T>(&self, result: &Result<T, RpcError>, start: Instant) {
        match result {
            Ok(_) => {
                let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.rtt_nanos_sum.fetch_add(nanos, Ordering::Relaxed);
                self.asks_completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(RpcError::Timeout { .. }) => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A tell could not be sent.
    pub(crate) fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// The slots of one endpoint type, indexed like its `RpcProtocol::MESSAGES`.
#[derive(Debug)]
pub(crate) struct MethodTable {
    gateway: &'static str,
    methods: &'static [&'static str],
    slots: Box<[MethodSlot]>,
}

impl MethodTable {
    /// A table for `E`, not registered anywhere: for gateways made after their service is gone.
    pub(crate) fn detached<E: RpcEndpoint>() -> Arc<Self> {
        Arc::new(MethodTable {
            gateway: E::GATEWAY,
            methods: E::MESSAGES,
            slots: E::MESSAGES.iter().map(|_| MethodSlot::default()).collect(),
        })
    }

    /// The slot of the message at `index` in the protocol.
    #[inline]
    pub(crate) fn slot(&self, index: usize) -> &MethodSlot {
        self.slots.get(index).unwrap_or(&UNCOUNTED)
    }
}

/// Every method table of one service, one per endpoint type.
#[derive(Debug, Default)]
pub(crate) struct MethodRegistry {
    tables: Mutex<HashMap<TypeId, Arc<MethodTable>>>,
}

impl MethodRegistry {
    /// The table of endpoint type `E`, made on first use.
    pub(crate) fn table<E: RpcEndpoint>(&self) -> Arc<MethodTable> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            tables
                .entry(TypeId::of::<E>())
                .or_insert_with(MethodTable::detached::<E>),
        )
    }

    /// Every slot's counts. Two endpoint types that share a gateway name and a message name (which
    /// they should not) are summed into one entry.
    pub(crate) fn snapshot(&self) -> Vec<MethodMetrics> {
        let tables: Vec<Arc<MethodTable>> = self
            .tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut merged: HashMap<(&'static str, &'static str), [u64; 5]> = HashMap::new();
        for table in &tables {
            for (method, slot) in table.methods.iter().zip(table.slots.iter()) {
                let sums = merged.entry((table.gateway, method)).or_default();
                let counts = [
                    &slot.calls,
                    &slot.errors,
                    &slot.timeouts,
                    &slot.asks_completed,
                    &slot.rtt_nanos_sum,
                ];
                for (sum, count) in sums.iter_mut().zip(counts) {
                    *sum = sum.saturating_add(count.load(Ordering::Relaxed));
                }
            }
        }
        let mut out: Vec<MethodMetrics> = merged
            .into_iter()
            .map(
                |((gateway, method), [calls, errors, timeouts, asks_completed, nanos])| {
                    MethodMetrics {
                        gateway: gateway.to_string(),
                        method: method.to_string(),
                        calls,
                        errors,
                        timeouts,
                        asks_completed,
                        rtt_micros_sum: nanos / 1000,
                    }
                },
            )
            .collect();
        out.sort_by(|a, b| (&a.gateway, &a.method).cmp(&(&b.gateway, &b.method)));
        out
    }
}

// ---- receiver side: per endpoint ----

/// Counters written by the senders to an endpoint. Kept apart from the actor's (two cache lines,
/// against the adjacent-line prefetcher), so a sender on one thread and the actor on another do
/// not pull one line back and forth on every message.
#[derive(Debug, Default)]
#[repr(align(128))]
struct SenderSide {
    enqueued: AtomicU64,
}

/// Counters written only by the endpoint's actor.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ActorSide {
    dequeued: AtomicU64,
    handled: AtomicU64,
    refused: AtomicU64,
}

/// The counters of one endpoint. The mailbox depth is `enqueued - dequeued`: senders add what they
/// put into the mailbox, the actor adds what it takes out as each handler starts. Items still
/// queued when the actor stops are dropped unhandled and never dequeued; the actor marks its
/// mailbox closed as it stops (before it leaves the registry and before its mailbox is dropped),
/// and a closed mailbox reads as depth 0. The depth can neither leak nor underflow.
#[derive(Debug, Default)]
pub(crate) struct EndpointCounters {
    senders: SenderSide,
    actor: ActorSide,
    closed: AtomicBool,
}

impl EndpointCounters {
    /// `n` items are being put into the mailbox.
    #[inline]
    fn enqueued(&self, n: u64) {
        self.senders.enqueued.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` items were taken out of the mailbox (their handler starts).
    #[inline]
    fn dequeued(&self, n: u64) {
        self.actor.dequeued.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` RPC messages were handled.
    #[inline]
    pub(crate) fn handled(&self, n: u64) {
        self.actor.handled.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` RPC messages were refused.
    #[inline]
    pub(crate) fn refused(&self, n: u64) {
        self.actor.refused.fetch_add(n, Ordering::Relaxed);
    }

    /// The actor has stopped: whatever is still queued will be dropped unhandled.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Items in the mailbox now.
    pub(crate) fn depth(&self) -> u64 {
        if self.closed.load(Ordering::Acquire) {
            return 0;
        }
        // Every dequeue follows its enqueue; reading `dequeued` first keeps the difference
        // non-negative, and the saturation guards against the loads being seen out of order.
        let dequeued = self.actor.dequeued.load(Ordering::Acquire);
        let enqueued = self.senders.enqueued.load(Ordering::Acquire);
        enqueued.saturating_sub(dequeued)
    }

    /// The counts of the endpoint `name`.
    pub(crate) fn snapshot(&self, name: &str, gateway: &str) -> EndpointMetrics {
        EndpointMetrics {
            name: name.to_string(),
            gateway: gateway.to_string(),
            mailbox_depth: self.depth(),
            handled: self.actor.handled.load(Ordering::Relaxed),
            refused: self.actor.refused.load(Ordering::Relaxed),
        }
    }
}

/// An item for an endpoint's mailbox that counts as `n` items of its depth. Made (and counted)
/// just before it is sent; the actor's handler takes the item out with [`Queued::into_item`],
/// which counts it out. Only `Queued` items have handlers, so nothing reaches a mailbox uncounted.
pub(crate) struct Queued<T> {
    item: T,
    n: u64,
}

impl<T> Queued<T> {
    /// `item` as `n` mailbox items of the endpoint with `counters`.
    #[inline]
    pub(crate) fn new(item: T, counters: &EndpointCounters, n: u64) -> Self {
        counters.enqueued(n);
        Queued { item, n }
    }

    /// Takes the item out of the mailbox count of the endpoint with `counters` (its own): the
    /// handler is about to run.
    #[inline]
    pub(crate) fn into_item(self, counters: &EndpointCounters) -> T {
        counters.dequeued(self.n);
        self.item
    }
}

impl<T: actix::Message> actix::Message for Queued<T> {
    type Result = T::Result;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{rpc_protocol, Handler, Response, RpcConfig, RpcContext, RpcMessage, RpcService};
    use serde::{Deserialize, Serialize};

    struct Fragile;

    #[derive(Serialize, Deserialize)]
    struct Poke;
    impl RpcMessage for Poke {
        type Reply = ();
    }

    impl RpcEndpoint for Fragile {
        type Token = crate::Unfenced;
        const GATEWAY: &'static str = "FragileGateway";
        const NAME_PREFIX: &'static str = "fragile";
        fn fencing_token(&self) -> crate::Unfenced {
            crate::Unfenced
        }

        /// Pokes itself as its last act: the pokes land in the mailbox after the actor's last
        /// look at it, as messages from other threads may at any time, and are dropped unhandled.
        fn on_stop(&mut self, ctx: &mut RpcContext<'_, Self>) -> crate::StopFuture {
            let gateway = ctx.self_gateway();
            Box::pin(async move {
                for _ in 0..5 {
                    gateway.tell(Poke)?;
                }
                Ok(())
            })
        }
    }

    impl Handler<Poke> for Fragile {
        fn handle(&mut self, _: Poke, _: &mut RpcContext<'_, Self>) -> Response<Self, ()> {
            Response::ready(())
        }
    }

    rpc_protocol!(Fragile { Poke });

    #[test]
    fn messages_know_their_index_in_the_protocol() {
        use crate::Accepts;
        assert_eq!(<Fragile as Accepts<Poke>>::INDEX, 0);
        assert_eq!(crate::message::message_index(&["A", "B"], "B"), 1);
        assert_eq!(crate::message::message_index(&["A", "B"], "AB"), usize::MAX);
    }

    /// The actor stops with messages in its mailbox: they are dropped unhandled, and the depth
    /// neither keeps them nor wraps below zero.
    #[actix_rt::test]
    async fn a_stopped_actor_drops_its_queue_without_leaking_depth() {
        let service = RpcService::start(RpcConfig::default())
            .await
            .expect("service starts");
        let server = service.start_server(Fragile).expect("endpoint starts");
        server.start();
        let counters = Arc::clone(server.counters());
        let gateway = service
            .connect::<Fragile>(server.address())
            .await
            .expect("connects");
        gateway.tell(Poke).expect("queued");
        assert_eq!(counters.depth(), 1);
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), server.close())
            .await
            .expect("the endpoint terminates");
        assert_eq!(closed, Ok(()));
        // Marked closed before the termination is reported.
        assert_eq!(counters.depth(), 0);
        // The first poke was handled; the five sent by on_stop went in but never came out.
        assert_eq!(counters.senders.enqueued.load(Ordering::Relaxed), 6);
        assert_eq!(counters.actor.dequeued.load(Ordering::Relaxed), 1);
        assert_eq!(counters.actor.handled.load(Ordering::Relaxed), 1);
        assert_eq!(counters.actor.refused.load(Ordering::Relaxed), 0);
        assert!(service.metrics().endpoints.is_empty());
        service.close().await.expect("service closes");
    }

    #[test]
    fn depth_is_what_went_in_and_not_out_and_zero_once_closed() {
        let counters = EndpointCounters::default();
        let a = Queued::new((), &counters, 3);
        let _b = Queued::new((), &counters, 1);
        assert_eq!(counters.depth(), 4);
        a.into_item(&counters);
        assert_eq!(counters.depth(), 1);
        counters.close();
        assert_eq!(counters.depth(), 0, "a stopped endpoint's queue is dropped");
    }

    #[test]
    fn asks_are_sorted_into_completed_timeouts_and_errors() {
        let slot = MethodSlot::default();
        let start = Instant::now();
        for _ in 0..4 {
            slot.call();
        }
        slot.ask_ended::<()>(&Ok(()), start);
        slot.ask_ended::<()>(
            &Err(RpcError::Timeout {
                recipient: "r".into(),
                message: "m".into(),
                timeout: std::time::Duration::from_millis(1),
            }),
            start,
        );
        slot.ask_ended::<()>(&Err(RpcError::ServiceShutdown), start);
        slot.failed();
        assert_eq!(slot.calls.load(Ordering::Relaxed), 4);
        assert_eq!(slot.asks_completed.load(Ordering::Relaxed), 1);
        assert_eq!(slot.timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(slot.errors.load(Ordering::Relaxed), 2);
    }
}
