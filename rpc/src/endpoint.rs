//! Endpoints as actix actors: Flink's `RpcEndpoint` run by an `AkkaRpcActor`.
//!
//! A component implements [`RpcEndpoint`] (lifecycle hooks, fencing token) and one [`Handler`] per
//! message; [`RpcService::start_server`](crate::RpcService::start_server) wraps it in an
//! [`RpcActor`], the generic actor that owns the lifecycle state machine and admits messages.
//!
//! # Lifecycle (Flink's `PekkoRpcActor` state machine)
//!
//! | state       | START                  | STOP        | TERMINATE                                   |
//! |-------------|------------------------|-------------|---------------------------------------------|
//! | Stopped     | `on_start` → Started    | stays       | stop at once → Terminated                   |
//! | Started     | stays                  | → Stopped   | `on_stop`; when its future ends → Terminated |
//! | Terminating | illegal (recorded)     | illegal     | stays                                       |
//!
//! Started and Terminating count as *running*: while `on_stop`'s future is pending the endpoint
//! keeps serving messages. A message that arrives while not running is refused with
//! [`RpcError::EndpointNotStarted`]. If `on_start` fails the actor stops and the termination future
//! yields [`RpcError::StartFailed`].
//!
//! # The main thread
//!
//! Every handler, [`RpcContext::run_async`] closure, scheduled closure and `call_async` closure of
//! one endpoint runs on the actor's mailbox, one at a time: the endpoint's state needs no locks.
//! Slow work is started with [`Response::future`]/[`Response::then`] or
//! [`RpcContext::spawn_then`] and comes back to the mailbox when done.
//!
//! # Counting
//!
//! Everything put into the mailbox from outside the actor (gateway messages, frames the transport
//! delivers, `run_async`/`call_async` from an [`RpcServer`](crate::RpcServer) or a
//! [`MainThreadHandle`]) travels as a `Queued` item, counted into the endpoint's mailbox depth as
//! it is sent and out as its handler takes the item; a stopped actor's mailbox reads as empty.
//! Only `Queued` items have handlers, so nothing can reach the mailbox uncounted. Admission counts refusals, the
//! dispatch counts handled messages (see [`RpcService::metrics`](crate::RpcService::metrics)).
//!
//! # Admission: the one fencing check
//!
//! Every message from a gateway (local typed, local forced through the codec, or remote) passes
//! [`RpcActor::admit`] before any handler runs. It refuses messages when the endpoint is not
//! running, messages without a token at a fenced endpoint, and messages whose token differs from
//! the endpoint's. No other code checks fencing tokens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, ActorResponse, AsyncContext, Context};
use tokio::sync::{oneshot, watch};

use crate::address::RpcAddress;
use crate::error::RpcError;
use crate::id::{AbstractId, FencingToken};
use crate::message::{Accepts, MessageVisitor, Response, RpcMessage, RpcProtocol};
use crate::metrics::{EndpointCounters, MethodTable, Queued};
use crate::service::ServiceInner;
use crate::transport::ReplySink;

/// The error an endpoint's lifecycle hooks may return.
pub type LifecycleError = Box<dyn std::error::Error + Send + Sync>;

/// A closure run on an endpoint's main thread, sent from another thread.
pub(crate) type MainThreadFn<E, R> = Box<dyn FnOnce(&mut E, &mut RpcContext<'_, E>) -> R + Send>;

/// The future `on_stop` returns.
pub type StopFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), LifecycleError>>>>;

/// A component served over RPC. Flink: `RpcEndpoint` / `FencedRpcEndpoint<F>`.
pub trait RpcEndpoint: RpcProtocol + Sized + Unpin + 'static {
    /// The fencing token type: [`Unfenced`](crate::Unfenced), or an id made with
    /// [`define_id!`](crate::define_id) with `fencing`.
    type Token: FencingToken;

    /// The gateway type checked when a peer connects (Flink's gateway class),
    /// e.g. `"TaskExecutorGateway"`.
    const GATEWAY: &'static str;

    /// Prefix of generated endpoint names: `taskmanager` gives `taskmanager_0`, `taskmanager_1`, …
    const NAME_PREFIX: &'static str;

    /// The endpoint's fencing token, read once when it is started: it never changes during the
    /// endpoint's life (a new leader session makes a new endpoint, as in Flink ≥ 1.16).
    fn fencing_token(&self) -> Self::Token;

    /// Runs on the main thread before any message is handled. An error stops the endpoint.
    fn on_start(&mut self, _ctx: &mut RpcContext<'_, Self>) -> Result<(), LifecycleError> {
        Ok(())
    }

    /// Runs on the main thread when the endpoint is closed. Messages are still served until the
    /// returned future completes; then the endpoint terminates.
    fn on_stop(&mut self, _ctx: &mut RpcContext<'_, Self>) -> StopFuture {
        Box::pin(async { Ok(()) })
    }
}

/// Lifecycle state of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Created, or stopped with `stop()`: messages are refused.
    Stopped,
    /// Serving messages.
    Started,
    /// `on_stop` is running; messages are still served.
    Terminating,
    /// Gone.
    Terminated,
}

impl EndpointState {
    /// Started or Terminating.
    pub fn is_running(self) -> bool {
        matches!(self, EndpointState::Started | EndpointState::Terminating)
    }
}

/// What stays fixed for an endpoint's life.
pub(crate) struct EndpointMeta<E: RpcEndpoint> {
    pub(crate) address: RpcAddress,
    pub(crate) token: E::Token,
    pub(crate) service: Weak<ServiceInner>,
    pub(crate) serial: u64,
    pub(crate) main_thread: Option<ThreadId>,
    /// Mailbox depth, handled and refused messages.
    pub(crate) counters: Arc<EndpointCounters>,
    /// The service's call counters for gateways to endpoints of type `E` (the self gateway).
    pub(crate) methods: Arc<MethodTable>,
}

/// The actix actor that runs an endpoint. Flink: `PekkoRpcActor` / `FencedPekkoRpcActor`.
pub struct RpcActor<E: RpcEndpoint> {
    endpoint: E,
    meta: EndpointMeta<E>,
    state: EndpointState,
    /// The termination result, once decided.
    result: Option<Result<(), RpcError>>,
    termination: watch::Sender<Option<Result<(), RpcError>>>,
    mailbox_capacity: usize,
}

impl<E: RpcEndpoint> RpcActor<E> {
    pub(crate) fn new(
        endpoint: E,
        meta: EndpointMeta<E>,
        termination: watch::Sender<Option<Result<(), RpcError>>>,
        mailbox_capacity: usize,
    ) -> Self {
        RpcActor {
            endpoint,
            meta,
            state: EndpointState::Stopped,
            result: None,
            termination,
            mailbox_capacity,
        }
    }

    /// Runs `f` with the endpoint and a context for it.
    pub(crate) fn with_context<R>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut E, &mut RpcContext<'_, E>) -> R,
    ) -> R {
        let mut rctx = RpcContext {
            ctx,
            meta: &self.meta,
            state: self.state,
        };
        f(&mut self.endpoint, &mut rctx)
    }

    fn endpoint_name(&self) -> String {
        self.meta.address.to_string()
    }

    /// The single admission check: lifecycle state, then fencing. See the module docs.
    fn admit(&self, message: &str, token: Option<AbstractId>) -> Result<(), RpcError> {
        if !self.state.is_running() {
            return Err(RpcError::EndpointNotStarted {
                endpoint: self.endpoint_name(),
                message: message.to_string(),
            });
        }
        match (self.meta.token.to_wire(), token) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(RpcError::UnfencedMessage {
                endpoint: self.endpoint_name(),
                message: message.to_string(),
            }),
            (Some(expected), Some(received)) if expected != received => {
                Err(RpcError::FencingTokenMismatch {
                    endpoint: self.endpoint_name(),
                    expected,
                    received,
                })
            }
            (Some(_), Some(_)) => Ok(()),
        }
    }

    /// Logs and counts `n` messages refused with `err`.
    fn refuse(&self, err: &RpcError, n: u64) {
        self.meta.counters.refused(n);
        match err {
            RpcError::EndpointNotStarted { .. } => {
                tracing::debug!(endpoint = %self.meta.address, error = %err, "message refused")
            }
            _ => tracing::warn!(endpoint = %self.meta.address, error = %err, "message refused"),
        }
    }

    fn record_failure(&mut self, err: RpcError) {
        tracing::error!(endpoint = %self.meta.address, error = %err, "endpoint lifecycle failure");
        if !matches!(self.result, Some(Err(_))) {
            self.result = Some(Err(err));
        }
    }

    fn control(&mut self, msg: Control, ctx: &mut Context<Self>) {
        use EndpointState::*;
        match (self.state, msg) {
            (Stopped, Control::Start) => {
                self.state = Started;
                let outcome = self.with_context(ctx, |e, c| e.on_start(c));
                if let Err(err) = outcome {
                    self.state = Terminating;
                    self.record_failure(RpcError::StartFailed {
                        endpoint: self.endpoint_name(),
                        reason: err.to_string(),
                    });
                    ctx.stop();
                } else {
                    tracing::debug!(endpoint = %self.meta.address, "endpoint started");
                }
            }
            (Stopped, Control::Stop)
            | (Started, Control::Start)
            | (Terminating, Control::Terminate) => {}
            (Stopped, Control::Terminate) => {
                self.state = Terminating;
                ctx.stop();
            }
            (Started, Control::Stop) => self.state = Stopped,
            (Started, Control::Terminate) => {
                self.state = Terminating;
                let stop = self.with_context(ctx, |e, c| e.on_stop(c));
                let af = actix::fut::wrap_future::<_, Self>(stop).map(|res, actor, ctx| {
                    if let Err(err) = res {
                        let endpoint = actor.endpoint_name();
                        actor.record_failure(RpcError::StopFailed {
                            endpoint,
                            reason: err.to_string(),
                        });
                    }
                    ctx.stop();
                });
                ctx.spawn(af);
            }
            (Terminating, action @ (Control::Start | Control::Stop)) | (Terminated, action) => {
                let err = RpcError::InvalidStateTransition {
                    endpoint: self.endpoint_name(),
                    state: format!("{:?}", self.state),
                    action: format!("{action:?}"),
                };
                self.record_failure(err);
            }
        }
    }

    fn finish(&mut self) {
        if self.state == EndpointState::Terminated {
            return;
        }
        self.state = EndpointState::Terminated;
        let result = self.result.take().unwrap_or(Ok(()));
        // Whatever is still queued is dropped unhandled with the mailbox.
        self.meta.counters.close();
        if let Some(service) = self.meta.service.upgrade() {
            service.deregister(self.meta.address.endpoint(), self.meta.serial);
        }
        tracing::debug!(endpoint = %self.meta.address, ok = result.is_ok(), "endpoint terminated");
        self.termination.send_replace(Some(result));
    }
}

impl<E: RpcEndpoint> Drop for RpcActor<E> {
    fn drop(&mut self) {
        // Reached without `stopped()` only when the actor's task died (a panicking handler).
        if self.state != EndpointState::Terminated {
            let endpoint = self.endpoint_name();
            self.record_failure(RpcError::TerminatedAbnormally { endpoint });
            self.finish();
        }
    }
}

impl<E: RpcEndpoint> Actor for RpcActor<E> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        self.meta.main_thread = Some(std::thread::current().id());
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.finish();
    }
}

/// The endpoint's view of its actor, handed to handlers and hooks.
pub struct RpcContext<'a, E: RpcEndpoint> {
    ctx: &'a mut Context<RpcActor<E>>,
    meta: &'a EndpointMeta<E>,
    state: EndpointState,
}

impl<E: RpcEndpoint> RpcContext<'_, E> {
    /// This endpoint's address.
    pub fn address(&self) -> &RpcAddress {
        &self.meta.address
    }

    /// This endpoint's fencing token.
    pub fn fencing_token(&self) -> E::Token {
        self.meta.token
    }

    /// The lifecycle state when the current work item started.
    pub fn state(&self) -> EndpointState {
        self.state
    }

    /// A gateway to this very endpoint, stamped with its own token (Flink's self gateway).
    pub fn self_gateway(&self) -> crate::RpcGateway<E> {
        crate::RpcGateway::local(
            self.ctx.address(),
            Arc::clone(&self.meta.counters),
            self.meta.address.clone(),
            Some(self.meta.token),
            self.meta.service.clone(),
            Arc::clone(&self.meta.methods),
        )
    }

    /// A `Send` handle to run closures on this endpoint's main thread from other threads (task
    /// threads, blocking work).
    pub fn main_thread_handle(&self) -> MainThreadHandle<E> {
        MainThreadHandle {
            addr: self.ctx.address(),
            counters: Arc::clone(&self.meta.counters),
        }
    }

    /// The service this endpoint runs on, to connect to other endpoints; `None` once it is
    /// dropped.
    pub fn service(&self) -> Option<crate::RpcService> {
        self.meta
            .service
            .upgrade()
            .map(crate::RpcService::from_inner)
    }

    /// Asserts that the caller runs on this endpoint's main thread (checked in debug builds).
    pub fn assert_main_thread(&self) {
        debug_assert_eq!(
            self.meta.main_thread,
            Some(std::thread::current().id()),
            "not on the main thread of {}",
            self.meta.address
        );
    }

    /// Runs `f` on the main thread after the current work item.
    pub fn run_async(&mut self, f: impl FnOnce(&mut E, &mut RpcContext<'_, E>) + 'static) {
        let af = actix::fut::ready(()).map(move |(), actor: &mut RpcActor<E>, ctx| {
            if actor.state.is_running() {
                actor.with_context(ctx, f);
            }
        });
        self.ctx.spawn(af);
    }

    /// Runs `f` on the main thread no earlier than `delay` from now, unless the returned task is
    /// cancelled first or the endpoint is no longer running then.
    pub fn schedule_run_async(
        &mut self,
        delay: Duration,
        f: impl FnOnce(&mut E, &mut RpcContext<'_, E>) + 'static,
    ) -> ScheduledTask {
        let task = ScheduledTask::new_detached();
        schedule(self.ctx, Instant::now() + delay, task.clone(), f);
        task
    }

    /// Runs `f` on the main thread every `period` (first after one period) while the endpoint is
    /// running, until the returned task is cancelled.
    pub fn run_interval(
        &mut self,
        period: Duration,
        mut f: impl FnMut(&mut E, &mut RpcContext<'_, E>) + 'static,
    ) -> ScheduledTask {
        let task = ScheduledTask::new_detached();
        let handle: std::rc::Rc<std::cell::Cell<Option<actix::SpawnHandle>>> = Default::default();
        let (t, h) = (task.clone(), std::rc::Rc::clone(&handle));
        let spawned = self.ctx.run_interval(period, move |actor, ctx| {
            if t.is_cancelled() {
                if let Some(own) = h.take() {
                    ctx.cancel_future(own);
                }
                return;
            }
            if actor.state.is_running() {
                t.fired.store(true, Ordering::Release);
                actor.with_context(ctx, &mut f);
            }
        });
        handle.set(Some(spawned));
        task
    }

    /// Awaits `fut` without blocking the mailbox, then runs `f` with its output on the main thread.
    pub fn spawn_then<O: 'static>(
        &mut self,
        fut: impl std::future::Future<Output = O> + 'static,
        f: impl FnOnce(O, &mut E, &mut RpcContext<'_, E>) + 'static,
    ) {
        let af = actix::fut::wrap_future::<_, RpcActor<E>>(fut).map(move |out, actor, ctx| {
            if actor.state.is_running() {
                actor.with_context(ctx, |e, c| f(out, e, c));
            }
        });
        self.ctx.spawn(af);
    }

    /// Closes this endpoint (like `RpcServer::close`): `on_stop` runs after the current item.
    pub fn close(&mut self) {
        self.ctx.notify(Control::Terminate);
    }
}

fn schedule<E: RpcEndpoint>(
    ctx: &mut Context<RpcActor<E>>,
    due: Instant,
    task: ScheduledTask,
    f: impl FnOnce(&mut E, &mut RpcContext<'_, E>) + 'static,
) {
    let delay = due.saturating_duration_since(Instant::now());
    ctx.run_later(delay, move |actor, ctx| {
        if !task.is_cancelled() && actor.state.is_running() {
            task.fired.store(true, Ordering::Release);
            actor.with_context(ctx, f);
        }
    });
}

/// Runs closures on an endpoint's main thread from anywhere. Flink: `MainThreadExecutor`.
pub struct MainThreadHandle<E: RpcEndpoint> {
    addr: actix::Addr<RpcActor<E>>,
    counters: Arc<EndpointCounters>,
}

impl<E: RpcEndpoint> Clone for MainThreadHandle<E> {
    fn clone(&self) -> Self {
        MainThreadHandle {
            addr: self.addr.clone(),
            counters: Arc::clone(&self.counters),
        }
    }
}

impl<E: RpcEndpoint> std::fmt::Debug for MainThreadHandle<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MainThreadHandle").finish_non_exhaustive()
    }
}

impl<E: RpcEndpoint> MainThreadHandle<E> {
    /// Runs `f` on the main thread. Returns false if the endpoint has terminated (then `f` is
    /// dropped unrun); a closure reaching an endpoint that is not running is dropped too.
    pub fn run_async(
        &self,
        f: impl FnOnce(&mut E, &mut RpcContext<'_, E>) + Send + 'static,
    ) -> bool {
        if !self.addr.connected() {
            return false;
        }
        self.addr
            .do_send(Queued::new(RunAsync(Box::new(f)), &self.counters, 1));
        true
    }
}

/// A handle to a closure scheduled with `schedule_run_async`.
#[derive(Debug, Clone)]
pub struct ScheduledTask {
    cancelled: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
}

impl ScheduledTask {
    pub(crate) fn new_detached() -> Self {
        ScheduledTask {
            cancelled: Arc::new(AtomicBool::new(false)),
            fired: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Prevents the closure from running if it has not started yet. Takes effect at once, from any
    /// thread.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// True once `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// True once the closure has run.
    pub fn has_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}

// ---- actix messages understood by every RpcActor ----

/// Lifecycle control. Flink: `ControlMessages` START / STOP / TERMINATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Start,
    Stop,
    Terminate,
}

impl actix::Message for Control {
    type Result = ();
}

impl<E: RpcEndpoint> actix::Handler<Control> for RpcActor<E> {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) {
        self.control(msg, ctx);
    }
}

/// A typed message from a gateway in the same process: nothing is serialized.
/// Flink: `LocalRpcInvocation` (inside a `LocalFencedMessage` when fenced).
pub(crate) struct LocalInvocation<M> {
    pub(crate) msg: M,
    pub(crate) token: Option<AbstractId>,
}

impl<M: RpcMessage> actix::Message for LocalInvocation<M> {
    type Result = Result<M::Reply, RpcError>;
}

impl<E, M> actix::Handler<Queued<LocalInvocation<M>>> for RpcActor<E>
where
    E: RpcEndpoint + Accepts<M>,
    M: RpcMessage,
{
    type Result = ActorResponse<Self, Result<M::Reply, RpcError>>;

    fn handle(&mut self, inv: Queued<LocalInvocation<M>>, ctx: &mut Context<Self>) -> Self::Result {
        let inv = inv.into_item(&self.meta.counters);
        if let Err(err) = self.admit(<E as Accepts<M>>::NAME, inv.token) {
            self.refuse(&err, 1);
            return ActorResponse::reply(Err(err));
        }
        self.meta.counters.handled(1);
        match self.with_context(ctx, |e, c| e.handle(inv.msg, c)) {
            Response::Ready(v) => ActorResponse::reply(Ok(v)),
            Response::Future(f) => {
                ActorResponse::r#async(actix::fut::wrap_future(f).map(|v, _, _| Ok(v)))
            }
            Response::Then(af) => ActorResponse::r#async(af.map(|v, _, _| Ok(v))),
        }
    }
}

/// An encoded message: from a remote peer, or from a local gateway when serialization is forced.
/// Flink: `RemoteRpcInvocation` (inside a `RemoteFencedMessage` when fenced).
pub(crate) struct EncodedInvocation {
    pub(crate) message: crate::transport::frame::Name,
    pub(crate) token: Option<AbstractId>,
    pub(crate) payload: bytes::Bytes,
    pub(crate) sink: ReplySink,
}

impl actix::Message for EncodedInvocation {
    type Result = ();
}

impl<E: RpcEndpoint> RpcActor<E> {
    fn handle_encoded(&mut self, inv: EncodedInvocation, ctx: &mut Context<Self>) {
        let message = inv.message.as_str();
        if let Err(err) = self.admit(message, inv.token) {
            self.refuse(&err, 1);
            inv.sink.fail(err);
            return;
        }
        let visitor = Dispatch {
            actor: self,
            payload: &inv.payload,
            ctx,
            sink: inv.sink,
        };
        if let Err(unknown) = E::visit_message(message, visitor) {
            unknown_message(unknown.actor, message, unknown.sink, 1);
        }
    }
}

impl<E: RpcEndpoint> actix::Handler<Queued<EncodedInvocation>> for RpcActor<E> {
    type Result = ();

    fn handle(&mut self, inv: Queued<EncodedInvocation>, ctx: &mut Context<Self>) {
        self.handle_encoded(inv.into_item(&self.meta.counters), ctx);
    }
}

/// Tells of one message kind in one batch frame: admitted and dispatched once, each payload
/// decoded and handled in order.
pub(crate) struct EncodedTells {
    pub(crate) message: crate::transport::frame::Name,
    pub(crate) token: Option<AbstractId>,
    pub(crate) payloads: crate::transport::frame::TellPayloads,
    /// How many tells `payloads` holds.
    pub(crate) count: u64,
    /// Counts the batch as in flight on its connection until handled.
    pub(crate) guard: ReplySink,
}

/// One item of an [`EncodedBatch`].
pub(crate) enum Encoded {
    One(EncodedInvocation),
    Tells(EncodedTells),
}

/// Consecutive encoded invocations from one connection, delivered as one mailbox item: one
/// wake-up and one envelope for a whole socket read, in order.
pub(crate) struct EncodedBatch(pub(crate) Vec<Encoded>);

impl actix::Message for EncodedBatch {
    type Result = ();
}

impl<E: RpcEndpoint> actix::Handler<Queued<EncodedBatch>> for RpcActor<E> {
    type Result = ();

    fn handle(&mut self, batch: Queued<EncodedBatch>, ctx: &mut Context<Self>) {
        for item in batch.into_item(&self.meta.counters).0 {
            match item {
                Encoded::One(inv) => self.handle_encoded(inv, ctx),
                Encoded::Tells(tells) => self.handle_tells(tells, ctx),
            }
        }
    }
}

impl<E: RpcEndpoint> RpcActor<E> {
    fn handle_tells(&mut self, tells: EncodedTells, ctx: &mut Context<Self>) {
        let message = tells.message.as_str();
        if let Err(err) = self.admit(message, tells.token) {
            // A tell has no one to answer to: the refusal is logged, as for single tells.
            self.refuse(&err, tells.count);
            return;
        }
        let visitor = TellsDispatch {
            actor: self,
            payloads: tells.payloads,
            ctx,
        };
        if E::visit_message(message, visitor).is_err() {
            unknown_message(self, message, ReplySink::discard(), tells.count);
        }
        drop(tells.guard);
    }
}

/// Decodes and handles every tell of a batch once the message type is known.
struct TellsDispatch<'a, E: RpcEndpoint> {
    actor: &'a mut RpcActor<E>,
    payloads: crate::transport::frame::TellPayloads,
    ctx: &'a mut Context<RpcActor<E>>,
}

impl<E: RpcEndpoint> MessageVisitor<E> for TellsDispatch<'_, E> {
    type Output = ();

    fn visit<M: RpcMessage>(self) -> Self::Output
    where
        E: Accepts<M>,
    {
        let TellsDispatch {
            actor,
            payloads,
            ctx,
        } = self;
        // Counted once for the batch: one atomic add instead of one per tell.
        let (mut handled, mut undecodable) = (0, 0);
        payloads.for_each_slice(|payload| {
            let msg: M = match rmp_serde::from_slice(payload) {
                Ok(msg) => msg,
                Err(err) => {
                    let err = RpcError::deserialize(format!("message {}", <E as Accepts<M>>::NAME), err);
                    tracing::warn!(endpoint = %actor.meta.address, error = %err, "undecodable tell");
                    undecodable += 1;
                    return;
                }
            };
            handled += 1;
            match actor.with_context(ctx, |e, c| e.handle(msg, c)) {
                Response::Ready(_) => {}
                Response::Future(f) => {
                    ctx.spawn(actix::fut::wrap_future(f).map(|_, _, _| ()));
                }
                Response::Then(af) => {
                    ctx.spawn(af.map(|_, _, _| ()));
                }
            }
        });
        actor.meta.counters.handled(handled);
        if undecodable > 0 {
            actor.meta.counters.refused(undecodable);
        }
    }
}

/// A closure to run on the main thread, sent from outside the actor.
pub(crate) struct RunAsync<E: RpcEndpoint>(pub(crate) MainThreadFn<E, ()>);

impl<E: RpcEndpoint> actix::Message for RunAsync<E> {
    type Result = ();
}

impl<E: RpcEndpoint> actix::Handler<Queued<RunAsync<E>>> for RpcActor<E> {
    type Result = ();

    fn handle(&mut self, msg: Queued<RunAsync<E>>, ctx: &mut Context<Self>) {
        let msg = msg.into_item(&self.meta.counters);
        if self.state.is_running() {
            self.with_context(ctx, msg.0);
        } else {
            tracing::debug!(endpoint = %self.meta.address, "run_async discarded: endpoint not running");
        }
    }
}

/// A closure to run on the main thread at a due time, sent from outside the actor.
pub(crate) struct ScheduleRunAsync<E: RpcEndpoint> {
    pub(crate) due: Instant,
    pub(crate) task: ScheduledTask,
    pub(crate) f: MainThreadFn<E, ()>,
}

impl<E: RpcEndpoint> actix::Message for ScheduleRunAsync<E> {
    type Result = ();
}

impl<E: RpcEndpoint> actix::Handler<Queued<ScheduleRunAsync<E>>> for RpcActor<E> {
    type Result = ();

    fn handle(&mut self, msg: Queued<ScheduleRunAsync<E>>, ctx: &mut Context<Self>) {
        let msg = msg.into_item(&self.meta.counters);
        schedule(ctx, msg.due, msg.task, msg.f);
    }
}

/// A closure whose result is sent back, run on the main thread. Flink: `CallAsync`.
pub(crate) struct CallAsync<E: RpcEndpoint, R> {
    pub(crate) f: MainThreadFn<E, R>,
    pub(crate) reply: oneshot::Sender<Result<R, RpcError>>,
}

impl<E: RpcEndpoint, R: Send + 'static> actix::Message for CallAsync<E, R> {
    type Result = ();
}

impl<E: RpcEndpoint, R: Send + 'static> actix::Handler<Queued<CallAsync<E, R>>> for RpcActor<E> {
    type Result = ();

    fn handle(&mut self, msg: Queued<CallAsync<E, R>>, ctx: &mut Context<Self>) {
        let msg = msg.into_item(&self.meta.counters);
        let result = if self.state.is_running() {
            Ok(self.with_context(ctx, msg.f))
        } else {
            Err(RpcError::EndpointNotStarted {
                endpoint: self.endpoint_name(),
                message: "call_async".into(),
            })
        };
        let _ = msg.reply.send(result);
    }
}

/// Decodes and handles an encoded message once its type is known.
struct Dispatch<'a, E: RpcEndpoint> {
    actor: &'a mut RpcActor<E>,
    payload: &'a [u8],
    ctx: &'a mut Context<RpcActor<E>>,
    sink: ReplySink,
}

impl<E: RpcEndpoint> MessageVisitor<E> for Dispatch<'_, E> {
    type Output = ();

    fn visit<M: RpcMessage>(self) -> Self::Output
    where
        E: Accepts<M>,
    {
        dispatch_one::<E, M>(self.actor, self.payload, self.ctx, self.sink);
    }
}

/// Decodes one message of type `M`, runs its handler and sends the encoded reply to `sink`.
fn dispatch_one<E, M>(
    actor: &mut RpcActor<E>,
    payload: &[u8],
    ctx: &mut Context<RpcActor<E>>,
    sink: ReplySink,
) where
    E: RpcEndpoint + Accepts<M>,
    M: RpcMessage,
{
    let msg: M = match rmp_serde::from_slice(payload) {
        Ok(msg) => msg,
        Err(err) => {
            let err = RpcError::deserialize(format!("message {}", <E as Accepts<M>>::NAME), err);
            tracing::warn!(endpoint = %actor.meta.address, error = %err, "undecodable message");
            actor.meta.counters.refused(1);
            sink.fail(err);
            return;
        }
    };
    actor.meta.counters.handled(1);
    match actor.with_context(ctx, |e, c| e.handle(msg, c)) {
        Response::Ready(v) => sink.complete(&v),
        Response::Future(f) => {
            ctx.spawn(actix::fut::wrap_future(f).map(move |v, _, _| sink.complete(&v)));
        }
        Response::Then(af) => {
            ctx.spawn(af.map(move |v, _, _| sink.complete(&v)));
        }
    }
}

/// Answers a message kind the endpoint does not have (`n` messages of it).
fn unknown_message<E: RpcEndpoint>(
    actor: &mut RpcActor<E>,
    message: &str,
    sink: ReplySink,
    n: u64,
) {
    actor.meta.counters.refused(n);
    let err = RpcError::UnknownMessage {
        endpoint: actor.endpoint_name(),
        gateway: E::GATEWAY.into(),
        message: message.into(),
    };
    tracing::warn!(endpoint = %actor.meta.address, error = %err, "unknown message kind");
    sink.fail(err);
}
