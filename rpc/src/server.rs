//! The owner's handle to a started endpoint. Flink: `RpcServer` (self gateway + `StartStoppable`
//! + `MainThreadExecutable` + termination future).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::Addr;
use tokio::sync::{oneshot, watch};

use crate::address::RpcAddress;
use crate::endpoint::{
    CallAsync, Control, RpcActor, RpcContext, RpcEndpoint, RunAsync, ScheduleRunAsync,
    ScheduledTask,
};
use crate::error::RpcError;
use crate::gateway::RpcGateway;
use crate::metrics::{EndpointCounters, MethodTable, Queued};
use crate::service::{termination_future, ServiceInner};

/// Controls a started endpoint: lifecycle, work on its main thread, and its termination.
pub struct RpcServer<E: RpcEndpoint> {
    addr: Addr<RpcActor<E>>,
    address: RpcAddress,
    token: E::Token,
    termination: watch::Receiver<Option<Result<(), RpcError>>>,
    service: Weak<ServiceInner>,
    counters: Arc<EndpointCounters>,
    methods: Arc<MethodTable>,
}

impl<E: RpcEndpoint> Clone for RpcServer<E> {
    fn clone(&self) -> Self {
        RpcServer {
            addr: self.addr.clone(),
            address: self.address.clone(),
            token: self.token,
            termination: self.termination.clone(),
            service: self.service.clone(),
            counters: Arc::clone(&self.counters),
            methods: Arc::clone(&self.methods),
        }
    }
}

impl<E: RpcEndpoint> std::fmt::Debug for RpcServer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("address", &self.address.to_string())
            .finish_non_exhaustive()
    }
}

impl<E: RpcEndpoint> RpcServer<E> {
    pub(crate) fn new(
        addr: Addr<RpcActor<E>>,
        address: RpcAddress,
        token: E::Token,
        termination: watch::Receiver<Option<Result<(), RpcError>>>,
        service: Weak<ServiceInner>,
        counters: Arc<EndpointCounters>,
        methods: Arc<MethodTable>,
    ) -> Self {
        RpcServer {
            addr,
            address,
            token,
            termination,
            service,
            counters,
            methods,
        }
    }

    /// The endpoint's address, to hand to peers.
    pub fn address(&self) -> &RpcAddress {
        &self.address
    }

    /// The endpoint's fencing token.
    pub fn fencing_token(&self) -> E::Token {
        self.token
    }

    /// Lets the endpoint serve: `on_start` runs first, on its main thread. Messages sent after
    /// this call are handled after `on_start`.
    pub fn start(&self) {
        self.addr.do_send(Control::Start);
    }

    /// Stops serving until the next `start` (messages meanwhile get `EndpointNotStarted`).
    pub fn stop(&self) {
        self.addr.do_send(Control::Stop);
    }

    /// Terminates the endpoint: `on_stop` runs (messages are still served until it completes),
    /// then the actor stops. Returns the termination future.
    pub fn close(&self) -> impl Future<Output = Result<(), RpcError>> + Send + 'static {
        self.addr.do_send(Control::Terminate);
        self.termination()
    }

    /// Completes when the endpoint has terminated: `Ok`, or the `on_start`/`on_stop` failure.
    pub fn termination(&self) -> impl Future<Output = Result<(), RpcError>> + Send + 'static {
        termination_future(self.termination.clone(), self.address.to_string())
    }

    /// True once the endpoint has terminated.
    pub fn is_terminated(&self) -> bool {
        self.termination.borrow().is_some() || !self.addr.connected()
    }

    /// A gateway to the endpoint, stamped with its own token.
    pub fn self_gateway(&self) -> RpcGateway<E> {
        RpcGateway::local(
            self.addr.clone(),
            Arc::clone(&self.counters),
            self.address.clone(),
            Some(self.token),
            self.service.clone(),
            Arc::clone(&self.methods),
        )
    }

    /// The endpoint's mailbox counters.
    #[cfg(test)]
    pub(crate) fn counters(&self) -> &Arc<EndpointCounters> {
        &self.counters
    }

    /// Runs `f` on the endpoint's main thread. Dropped if the endpoint is not running by then.
    pub fn run_async(&self, f: impl FnOnce(&mut E, &mut RpcContext<'_, E>) + Send + 'static) {
        self.addr
            .do_send(Queued::new(RunAsync(Box::new(f)), &self.counters, 1));
    }

    /// Runs `f` on the main thread no earlier than `delay` from now, unless cancelled first.
    /// Scheduling on a terminated endpoint does nothing.
    pub fn schedule_run_async(
        &self,
        delay: Duration,
        f: impl FnOnce(&mut E, &mut RpcContext<'_, E>) + Send + 'static,
    ) -> ScheduledTask {
        let task = ScheduledTask::new_detached();
        let schedule = ScheduleRunAsync {
            due: Instant::now() + delay,
            task: task.clone(),
            f: Box::new(f),
        };
        self.addr.do_send(Queued::new(schedule, &self.counters, 1));
        task
    }

    /// Runs `f` on the main thread and returns its result, or `Timeout` if that takes longer than
    /// `timeout`. Flink: `callAsync`.
    pub async fn call_async<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut E, &mut RpcContext<'_, E>) -> R + Send + 'static,
        timeout: Duration,
    ) -> Result<R, RpcError> {
        let (tx, rx) = oneshot::channel();
        let call = CallAsync {
            f: Box::new(f),
            reply: tx,
        };
        self.addr.do_send(Queued::new(call, &self.counters, 1));
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(RpcError::Timeout {
                recipient: self.address.to_string(),
                message: "call_async".into(),
                timeout,
            }),
            Ok(Err(_)) => Err(RpcError::RecipientUnreachable {
                recipient: self.address.to_string(),
                message: "call_async".into(),
                reason: "the endpoint has terminated".into(),
            }),
            Ok(Ok(result)) => result,
        }
    }
}
