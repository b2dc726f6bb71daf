//! Typed gateways: the caller's handle to an endpoint, the same type whether the endpoint runs in
//! this process or on another node. Flink: the `RpcGateway` proxy and its invocation handler.
//!
//! # The message path
//!
//! * **Local**, default: the typed message goes straight into the endpoint's mailbox
//!   (`LocalInvocation`); nothing is serialized. Flink: `LocalRpcInvocation`.
//! * **Local, forced serialization** (`RpcConfig::force_serialization`): the message is encoded
//!   with rmp-serde, decoded by the endpoint's generated dispatch, and the reply comes back
//!   encoded, exactly as over the wire but without a socket.
//! * **Remote**: the message is encoded into a request frame (checked against the frame size
//!   *before* anything is sent), queued on the pooled connection to the node, and the reply frame
//!   completes the call.
//!
//! In every case a fenced gateway stamps its token, the endpoint admits the message in one place
//! (`RpcActor::admit`), asks time out after the default or the given timeout, and a recipient that
//! is gone is reported as `RecipientUnreachable` as soon as that is known.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::{Addr, MailboxError};
use tokio::sync::oneshot;

use crate::address::RpcAddress;
use crate::config::RpcConfig;
use crate::endpoint::{EncodedInvocation, LocalInvocation, RpcActor, RpcEndpoint};
use crate::error::RpcError;
use crate::id::FencingToken;
use crate::message::{Accepts, RpcMessage};
use crate::metrics::{EndpointCounters, MethodTable, Queued};
use crate::service::ServiceInner;
use crate::transport::connection::{Connection, ReplyResult, SendFailure};
use crate::transport::frame::{self, RequestHeader};
use crate::transport::{ReplySink, Transport};

enum Target<E: RpcEndpoint> {
    Local {
        addr: Addr<RpcActor<E>>,
        force: bool,
        /// The endpoint's counters: every message put into its mailbox counts in its depth.
        mailbox: Arc<EndpointCounters>,
    },
    Remote {
        transport: Arc<Transport>,
        /// The node's `host:port`, computed once.
        node: Arc<str>,
        /// The connection last used, shared by clones: the hot path needs no pool lookup.
        conn: Arc<std::sync::Mutex<Option<Arc<Connection>>>>,
    },
}

/// The cached connection, if any.
fn cached(cache: &std::sync::Mutex<Option<Arc<Connection>>>) -> Option<Arc<Connection>> {
    cache.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Drops the cached connection if it is still `c`.
fn forget_cached(cache: &std::sync::Mutex<Option<Arc<Connection>>>, c: &Arc<Connection>) {
    let mut slot = cache.lock().unwrap_or_else(|p| p.into_inner());
    if slot.as_ref().is_some_and(|cached| Arc::ptr_eq(cached, c)) {
        *slot = None;
    }
}

impl<E: RpcEndpoint> Clone for Target<E> {
    fn clone(&self) -> Self {
        match self {
            Target::Local {
                addr,
                force,
                mailbox,
            } => Target::Local {
                addr: addr.clone(),
                force: *force,
                mailbox: Arc::clone(mailbox),
            },
            Target::Remote {
                transport,
                node,
                conn,
            } => Target::Remote {
                transport: Arc::clone(transport),
                node: Arc::clone(node),
                conn: Arc::clone(conn),
            },
        }
    }
}

/// A handle for calling endpoint `E`: `ask` (request/response with a timeout) and `tell`
/// (fire-and-forget). Cheap to clone, `Send`, usable from any thread or task.
pub struct RpcGateway<E: RpcEndpoint> {
    target: Target<E>,
    address: RpcAddress,
    token: Option<E::Token>,
    ask_timeout: Duration,
    max_frame: usize,
    /// The service's call counters for endpoints of type `E`.
    methods: Arc<MethodTable>,
}

impl<E: RpcEndpoint> Clone for RpcGateway<E> {
    fn clone(&self) -> Self {
        RpcGateway {
            target: self.target.clone(),
            address: self.address.clone(),
            token: self.token,
            ask_timeout: self.ask_timeout,
            max_frame: self.max_frame,
            methods: Arc::clone(&self.methods),
        }
    }
}

impl<E: RpcEndpoint> std::fmt::Debug for RpcGateway<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcGateway")
            .field("gateway", &E::GATEWAY)
            .field("address", &self.address.to_string())
            .field("local", &self.is_local())
            .field("token", &self.token)
            .finish()
    }
}

impl<E: RpcEndpoint> RpcGateway<E> {
    pub(crate) fn local(
        addr: Addr<RpcActor<E>>,
        mailbox: Arc<EndpointCounters>,
        address: RpcAddress,
        token: Option<E::Token>,
        service: Weak<ServiceInner>,
        methods: Arc<MethodTable>,
    ) -> Self {
        let config = service
            .upgrade()
            .map(|s| s.config.clone())
            .unwrap_or_default();
        RpcGateway {
            target: Target::Local {
                addr,
                force: config.force_serialization,
                mailbox,
            },
            address,
            token,
            ask_timeout: config.ask_timeout,
            max_frame: config.max_frame_size,
            methods,
        }
    }

    pub(crate) fn remote(
        transport: Arc<Transport>,
        address: RpcAddress,
        token: Option<E::Token>,
        config: &RpcConfig,
        methods: Arc<MethodTable>,
    ) -> Self {
        RpcGateway {
            target: Target::Remote {
                transport,
                node: address.node().into(),
                conn: Arc::default(),
            },
            address,
            token,
            ask_timeout: config.ask_timeout,
            max_frame: config.max_frame_size,
            methods,
        }
    }

    /// The endpoint's address.
    pub fn address(&self) -> &RpcAddress {
        &self.address
    }

    /// The token this gateway stamps, if it is fenced. Flink: `FencedRpcGateway.getFencingToken`.
    pub fn fencing_token(&self) -> Option<E::Token> {
        self.token
    }

    /// True when the endpoint runs in this process.
    pub fn is_local(&self) -> bool {
        matches!(self.target, Target::Local { .. })
    }

    /// The default timeout of [`ask`](Self::ask).
    pub fn ask_timeout(&self) -> Duration {
        self.ask_timeout
    }

    /// The same gateway with another default ask timeout.
    pub fn with_ask_timeout(mut self, timeout: Duration) -> Self {
        self.ask_timeout = timeout;
        self
    }

    /// Sends `msg` and waits for the reply, at most the default ask timeout.
    pub async fn ask<M>(&self, msg: M) -> Result<M::Reply, RpcError>
    where
        M: RpcMessage,
        E: Accepts<M>,
    {
        self.ask_with_timeout(msg, self.ask_timeout).await
    }

    /// Sends `msg` and waits for the reply, at most `timeout` (Flink's `@RpcTimeout` argument).
    pub async fn ask_with_timeout<M>(&self, msg: M, timeout: Duration) -> Result<M::Reply, RpcError>
    where
        M: RpcMessage,
        E: Accepts<M>,
    {
        let slot = self.methods.slot(<E as Accepts<M>>::INDEX);
        slot.call();
        let start = Instant::now();
        let result = self.ask_inner(msg, timeout).await;
        slot.ask_ended(&result, start);
        result
    }

    async fn ask_inner<M>(&self, msg: M, timeout: Duration) -> Result<M::Reply, RpcError>
    where
        M: RpcMessage,
        E: Accepts<M>,
    {
        let name = <E as Accepts<M>>::NAME;
        let token = self.token.and_then(|t| t.to_wire());
        match &self.target {
            Target::Local {
                addr,
                force: false,
                mailbox,
            } => {
                match addr
                    .send(Queued::new(LocalInvocation { msg, token }, mailbox, 1))
                    .timeout(timeout)
                    .await
                {
                    Ok(result) => result,
                    Err(MailboxError::Closed) => {
                        Err(self.gone(name, "the endpoint has terminated"))
                    }
                    Err(MailboxError::Timeout) => Err(self.timed_out(name, timeout)),
                }
            }
            Target::Local {
                addr,
                force: true,
                mailbox,
            } => {
                let payload = rmp_serde::to_vec(&msg)
                    .map_err(|e| RpcError::serialize(format!("message {name}"), e))?;
                let (tx, rx) = oneshot::channel();
                let inv = EncodedInvocation {
                    message: name.into(),
                    token,
                    payload: payload.into(),
                    sink: ReplySink::local(tx, self.max_frame),
                };
                addr.do_send(Queued::new(inv, mailbox, 1));
                self.await_reply::<M>(name, rx, timeout, None).await
            }
            Target::Remote {
                transport,
                node,
                conn,
            } => {
                let header = RequestHeader {
                    expects_reply: true,
                    token,
                    endpoint: self.address.endpoint(),
                    message: name,
                };
                let max = self.max_frame;
                // Fast path: encode straight into the cached connection's outbox.
                if let Some(c) = cached(conn) {
                    match c.ask(|buf, id| frame::encode_request_into(buf, header, &msg, id, max)) {
                        Ok((id, rx)) => {
                            return self
                                .await_reply::<M>(name, rx, timeout, Some((c, id)))
                                .await
                        }
                        Err(SendFailure::Encode(err)) => {
                            return Err(self.encode_failed(transport, err))
                        }
                        Err(SendFailure::Draining | SendFailure::Closed(_)) => {
                            forget_cached(conn, &c)
                        }
                    }
                }
                // Encode first, so a frame that is too large fails at once even with no connection.
                let frame = frame::encode_request(header, &msg, max)
                    .map_err(|e| self.encode_failed(transport, e))?;
                let (c, id, rx) = self
                    .put_on_connection(transport, node, conn, name, &frame)
                    .await?;
                self.await_reply::<M>(name, rx, timeout, Some((c, id)))
                    .await
            }
        }
    }

    fn encode_failed(&self, transport: &Transport, err: RpcError) -> RpcError {
        if matches!(err, RpcError::FrameTooLarge { .. }) {
            transport.count_oversized();
        }
        err
    }

    async fn put_on_connection(
        &self,
        transport: &Arc<Transport>,
        node: &str,
        cache: &std::sync::Mutex<Option<Arc<Connection>>>,
        name: &str,
        frame: &[u8],
    ) -> Result<(Arc<Connection>, u64, oneshot::Receiver<ReplyResult>), RpcError> {
        // A connection can start draining between the pool lookup and the send; the next lookup
        // then yields its replacement.
        for _ in 0..3 {
            let c = transport
                .connection(node)
                .await
                .map_err(|err| self.specialize(err, name))?;
            let sent = c.ask(|buf, id| {
                let start = buf.len();
                buf.extend_from_slice(frame);
                frame::set_request_id(&mut buf[start..], id);
                Ok(())
            });
            match sent {
                Ok((id, rx)) => {
                    *cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&c));
                    return Ok((c, id, rx));
                }
                Err(SendFailure::Draining) => {}
                Err(SendFailure::Closed(err) | SendFailure::Encode(err)) => {
                    return Err(self.specialize(err, name))
                }
            }
        }
        Err(self.gone(name, "every connection to the node was draining"))
    }

    async fn await_reply<M: RpcMessage>(
        &self,
        name: &str,
        rx: oneshot::Receiver<ReplyResult>,
        timeout: Duration,
        pending: Option<(Arc<Connection>, u64)>,
    ) -> Result<M::Reply, RpcError> {
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                if let Some((conn, id)) = pending {
                    conn.forget(id);
                }
                Err(self.timed_out(name, timeout))
            }
            Ok(Err(_)) => Err(self.gone(name, "the endpoint has terminated")),
            Ok(Ok(Err(err))) => Err(self.specialize(err, name)),
            Ok(Ok(Ok(bytes))) => rmp_serde::from_slice(&bytes)
                .map_err(|e| RpcError::deserialize(format!("reply to {name}"), e)),
        }
    }

    /// Sends `msg` without waiting for an answer. Errors known at once (encoding, frame size, a
    /// terminated local endpoint, a closed connection) are returned; the endpoint's own refusal
    /// (a stale token, say) is only logged there, as a tell has no one to answer to.
    pub fn tell<M>(&self, msg: M) -> Result<(), RpcError>
    where
        M: RpcMessage<Reply = ()>,
        E: Accepts<M>,
    {
        let slot = self.methods.slot(<E as Accepts<M>>::INDEX);
        slot.call();
        let result = self.tell_inner(msg);
        if result.is_err() {
            slot.failed();
        }
        result
    }

    fn tell_inner<M>(&self, msg: M) -> Result<(), RpcError>
    where
        M: RpcMessage<Reply = ()>,
        E: Accepts<M>,
    {
        let name = <E as Accepts<M>>::NAME;
        let token = self.token.and_then(|t| t.to_wire());
        match &self.target {
            Target::Local {
                addr,
                force,
                mailbox,
            } => {
                if !addr.connected() {
                    return Err(self.gone(name, "the endpoint has terminated"));
                }
                if *force {
                    let payload = rmp_serde::to_vec(&msg)
                        .map_err(|e| RpcError::serialize(format!("message {name}"), e))?;
                    let inv = EncodedInvocation {
                        message: name.into(),
                        token,
                        payload: payload.into(),
                        sink: ReplySink::discard(),
                    };
                    addr.do_send(Queued::new(inv, mailbox, 1));
                } else {
                    addr.do_send(Queued::new(LocalInvocation { msg, token }, mailbox, 1));
                }
                Ok(())
            }
            Target::Remote {
                transport,
                node,
                conn,
            } => {
                let header = RequestHeader {
                    expects_reply: false,
                    token,
                    endpoint: self.address.endpoint(),
                    message: name,
                };
                let max = self.max_frame;
                {
                    // Hot path: no Arc clone, just the cached connection's outbox.
                    let mut slot = conn.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(c) = slot.as_ref() {
                        match c.tell_batched(header, &msg, max) {
                            Ok(()) => return Ok(()),
                            Err(SendFailure::Encode(err)) => {
                                return Err(self.encode_failed(transport, err))
                            }
                            Err(SendFailure::Draining | SendFailure::Closed(_)) => *slot = None,
                        }
                    }
                }
                let frame = frame::encode_request(header, &msg, max)
                    .map_err(|e| self.encode_failed(transport, e))?;
                let append = |buf: &mut Vec<u8>| {
                    buf.extend_from_slice(&frame);
                    Ok(())
                };
                if let Some(c) = transport.pooled(node) {
                    match c.tell(append) {
                        Ok(()) => {
                            *conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
                            return Ok(());
                        }
                        Err(SendFailure::Closed(err) | SendFailure::Encode(err)) => {
                            return Err(self.specialize(err, name))
                        }
                        Err(SendFailure::Draining) => {}
                    }
                }
                // No usable connection right now: dial in the background and send then.
                let transport = Arc::clone(transport);
                let node = node.to_string();
                let recipient = self.address.to_string();
                // A failure found out there still counts against this call.
                let methods = Arc::clone(&self.methods);
                tokio::spawn(async move {
                    let append = |buf: &mut Vec<u8>| {
                        buf.extend_from_slice(&frame);
                        Ok(())
                    };
                    let result = match transport.connection(&node).await {
                        Ok(c) => match c.tell(append) {
                            Ok(()) => Ok(()),
                            Err(SendFailure::Closed(err) | SendFailure::Encode(err)) => Err(err),
                            Err(SendFailure::Draining) => Err(RpcError::Connection {
                                address: node,
                                reason: "the new connection is already draining".into(),
                            }),
                        },
                        Err(err) => Err(err),
                    };
                    if let Err(err) = result {
                        methods.slot(<E as Accepts<M>>::INDEX).failed();
                        tracing::warn!(recipient, message = name, error = %err, "tell could not be delivered");
                    }
                });
                Ok(())
            }
        }
    }

    fn gone(&self, message: &str, reason: &str) -> RpcError {
        RpcError::RecipientUnreachable {
            recipient: self.address.to_string(),
            message: message.to_string(),
            reason: reason.to_string(),
        }
    }

    fn timed_out(&self, message: &str, timeout: Duration) -> RpcError {
        RpcError::Timeout {
            recipient: self.address.to_string(),
            message: message.to_string(),
            timeout,
        }
    }

    /// Fills in which call failed, and turns "gone" conditions into `RecipientUnreachable`: a
    /// gateway exists only for an endpoint that was there when it connected.
    fn specialize(&self, err: RpcError, message: &str) -> RpcError {
        match err {
            RpcError::RecipientUnreachable { reason, .. } => self.gone(message, &reason),
            RpcError::EndpointNotFound { .. } => {
                self.gone(message, "the endpoint is no longer served on its node")
            }
            RpcError::Connection { reason, .. } => {
                self.gone(message, &format!("the node is unreachable: {reason}"))
            }
            RpcError::ServiceShutdown => self.gone(message, "the local rpc service is shut down"),
            other => other,
        }
    }
}
