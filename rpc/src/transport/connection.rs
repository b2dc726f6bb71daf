//! Connections, the connection pool and the listener. See the parent module for the design.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt, Shared};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use super::frame::{self, Frame, FrameError, Hello, HelloOk};
use super::{PeerEvent, TransportStats};
use crate::endpoint::{Encoded, EncodedInvocation, EncodedTells};
use crate::error::{HandshakeFailure, RpcError};
use crate::id::AbstractId;
use crate::security::{
    looks_like_tls_record, Channel, SecureReadHalf, SecureStream, SecureWriteHalf, SecurityError,
    SecurityFailure, TransportSecurity,
};
use crate::service::{Registered, Registry};

/// What a pending ask receives.
pub(crate) type ReplyResult = Result<Bytes, RpcError>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic while holding it; the data is still consistent for our
    // simple maps, so keep serving rather than cascading the panic.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Default)]
struct Stats {
    established: AtomicU64,
    handshake_failures: AtomicU64,
    protocol_violations: AtomicU64,
    oversized: AtomicU64,
    unknown_endpoints: AtomicU64,
}

enum PeerSlot {
    Ready(Arc<Connection>),
    Dialing(Shared<BoxFuture<'static, Result<Arc<Connection>, RpcError>>>),
}

/// The transport of one service: listener, pool, settings.
pub(crate) struct Transport {
    pub(crate) instance: AbstractId,
    pub(crate) advertised: String,
    pub(crate) cluster_id: String,
    pub(crate) max_frame: usize,
    pub(crate) connect_timeout: Duration,
    max_inbound: usize,
    /// TLS and/or the cluster secret, run on every connection before the RPC handshake.
    security: TransportSecurity,
    registry: Arc<Registry>,
    pool: Mutex<HashMap<String, PeerSlot>>,
    live: Mutex<HashMap<u64, Weak<Connection>>>,
    next_serial: AtomicU64,
    stats: Stats,
    shutdown: watch::Sender<bool>,
    events: tokio::sync::broadcast::Sender<PeerEvent>,
}

impl Transport {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        instance: AbstractId,
        advertised: String,
        cluster_id: String,
        max_frame: usize,
        connect_timeout: Duration,
        max_inbound: usize,
        security: TransportSecurity,
        registry: Arc<Registry>,
    ) -> Arc<Self> {
        Arc::new(Transport {
            instance,
            advertised,
            cluster_id,
            max_frame,
            connect_timeout,
            max_inbound,
            security,
            registry,
            pool: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            next_serial: AtomicU64::new(1),
            stats: Stats::default(),
            shutdown: watch::Sender::new(false),
            events: tokio::sync::broadcast::channel(256).0,
        })
    }

    pub(crate) fn stats(&self) -> TransportStats {
        let live: Vec<Arc<Connection>> = lock(&self.live)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let open = live.len();
        let queued: usize = live.iter().map(|c| c.outbox.queued()).sum();
        TransportStats {
            connections_established: self.stats.established.load(Ordering::Relaxed),
            handshake_failures: self.stats.handshake_failures.load(Ordering::Relaxed),
            protocol_violations: self.stats.protocol_violations.load(Ordering::Relaxed),
            oversized_frames: self.stats.oversized.load(Ordering::Relaxed),
            unknown_endpoints: self.stats.unknown_endpoints.load(Ordering::Relaxed),
            open_connections: open as u64,
            queued_bytes: queued as u64,
        }
    }

    /// A receiver of peer events from now on.
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    pub(crate) fn count_oversized(&self) {
        self.stats.oversized.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Runs the accept loop until shutdown.
    pub(crate) fn spawn_listener(self: &Arc<Self>, listener: TcpListener) {
        let me = Arc::clone(self);
        let mut shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shut_down(&mut shutdown) => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let me = Arc::clone(&me);
                            tokio::spawn(async move { me.accept(stream, peer.to_string()).await });
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "accept failed");
                            // Out of file descriptors and similar: back off instead of spinning.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        });
    }

    /// The pooled usable connection to `node`, if any, without dialing.
    pub(crate) fn pooled(&self, node: &str) -> Option<Arc<Connection>> {
        match lock(&self.pool).get(node) {
            Some(PeerSlot::Ready(conn)) if conn.is_usable() => Some(Arc::clone(conn)),
            _ => None,
        }
    }

    /// A usable connection to `node`, dialing if there is none.
    pub(crate) async fn connection(
        self: &Arc<Self>,
        node: &str,
    ) -> Result<Arc<Connection>, RpcError> {
        if self.is_shut_down() {
            return Err(RpcError::ServiceShutdown);
        }
        let dialing = {
            let mut pool = lock(&self.pool);
            match pool.get(node) {
                Some(PeerSlot::Ready(conn)) if conn.is_usable() => return Ok(Arc::clone(conn)),
                Some(PeerSlot::Dialing(fut)) => fut.clone(),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    let me = Arc::clone(self);
                    let target = node.to_string();
                    tokio::spawn(async move {
                        let result = match me.dial(&target).await {
                            Ok(conn) => Ok(me.adopt(&target, conn)),
                            Err(err) => {
                                me.forget_dial(&target);
                                Err(err)
                            }
                        };
                        let _ = tx.send(result);
                    });
                    let fut = async move { rx.await.unwrap_or(Err(RpcError::ServiceShutdown)) }
                        .boxed()
                        .shared();
                    pool.insert(node.to_string(), PeerSlot::Dialing(fut.clone()));
                    fut
                }
            }
        };
        dialing.await
    }

    fn forget_dial(&self, node: &str) {
        let mut pool = lock(&self.pool);
        if matches!(pool.get(node), Some(PeerSlot::Dialing(_))) {
            pool.remove(node);
        }
    }

    /// Files a handshaken connection under `node`, settling a race with an existing one. Returns
    /// the connection that new requests to `node` should use.
    fn adopt(&self, node: &str, conn: Arc<Connection>) -> Arc<Connection> {
        let mut pool = lock(&self.pool);
        if let Some(PeerSlot::Ready(existing)) = pool.get(node) {
            if existing.serial != conn.serial && existing.is_usable() {
                let same_peer = existing.peer_instance == conn.peer_instance;
                // Both sides keep the connection dialed by the smaller instance id; if one side
                // dialed both, the newer one wins (the older is being replaced for a reason).
                let keep_existing =
                    same_peer && existing.dialer != conn.dialer && existing.dialer < conn.dialer;
                if keep_existing {
                    tracing::debug!(
                        peer = node,
                        "simultaneous connection: keeping the existing one"
                    );
                    conn.drain();
                    return Arc::clone(existing);
                }
                tracing::debug!(peer = node, "replacing the pooled connection");
                existing.drain();
            }
        }
        pool.insert(node.to_string(), PeerSlot::Ready(Arc::clone(&conn)));
        conn
    }

    fn unpool(&self, conn: &Connection) {
        let mut pool = lock(&self.pool);
        if let Some(PeerSlot::Ready(pooled)) = pool.get(&conn.peer) {
            if pooled.serial == conn.serial {
                pool.remove(&conn.peer);
            }
        }
    }

    /// Starts the reader and writer tasks of a handshaken connection. `reader` holds what was
    /// read past the handshake.
    fn new_connection(
        self: &Arc<Self>,
        reader: FrameReader,
        wr: SecureWriteHalf,
        peer: String,
        peer_instance: AbstractId,
        dialer: AbstractId,
    ) -> Arc<Connection> {
        let outbox = Arc::new(Outbox {
            state: Mutex::new(OutboxState {
                buf: Vec::with_capacity(64 * 1024),
                accepting_requests: true,
                closing: false,
                open_tells: None,
            }),
            ready: tokio::sync::Notify::new(),
            writing: Mutex::new(0),
        });
        let conn = Arc::new(Connection {
            serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
            peer,
            peer_instance,
            dialer,
            outbox: Arc::clone(&outbox),
            state: Mutex::new(ConnState::default()),
            next_id: AtomicU64::new(1),
            inbound_in_flight: AtomicUsize::new(0),
            inbound_room: tokio::sync::Notify::new(),
            max_inbound: self.max_inbound,
            draining: AtomicBool::new(false),
            transport: Arc::downgrade(self),
        });
        lock(&self.live).insert(conn.serial, Arc::downgrade(&conn));
        self.stats.established.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(write_loop(outbox, wr, Arc::downgrade(&conn)));
        tokio::spawn(read_loop(Arc::clone(&conn), reader, Arc::clone(self)));
        conn
    }

    async fn dial(self: &Arc<Self>, node: &str) -> Result<Arc<Connection>, RpcError> {
        let unreachable = |reason: String| RpcError::Connection {
            address: node.to_string(),
            reason,
        };
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(node)).await {
                Err(_) => {
                    return Err(unreachable(format!(
                        "no connection within {:?}",
                        self.connect_timeout
                    )))
                }
                Ok(Err(err)) => return Err(unreachable(err.to_string())),
                Ok(Ok(stream)) => stream,
            };
        let _ = stream.set_nodelay(true);
        // TLS and/or the cluster secret first, then the RPC handshake over the secured stream;
        // the connect timeout bounds both.
        let handshake = async {
            let stream = self
                .security
                .connect(stream, node, Channel::Rpc)
                .await
                .map_err(|err| self.security_failed(node, err))?;
            self.handshake_as_dialer(stream, node).await
        };
        match tokio::time::timeout(self.connect_timeout, handshake).await {
            Err(_) => {
                Err(self.handshake_failed(node, HandshakeFailure::Timeout(self.connect_timeout)))
            }
            Ok(result) => result,
        }
    }

    async fn handshake_as_dialer(
        self: &Arc<Self>,
        mut stream: SecureStream,
        node: &str,
    ) -> Result<Arc<Connection>, RpcError> {
        let io = |err: std::io::Error| RpcError::Connection {
            address: node.to_string(),
            reason: format!("handshake i/o: {err}"),
        };
        let hello = Hello {
            cluster_id: self.cluster_id.clone(),
            instance: self.instance,
            advertised: self.advertised.clone(),
        };
        let mut out = frame::preamble().to_vec();
        out.extend_from_slice(&frame::encode_hello(&hello, self.max_frame)?);
        send(&mut stream, &out).await.map_err(io)?;
        let mut preamble = [0u8; frame::PREAMBLE_LEN];
        if let Err(err) = stream.read_exact(&mut preamble).await {
            return Err(self.closed_before_preamble(node, err));
        }
        let version = frame::check_preamble(&preamble).map_err(|f| match f {
            HandshakeFailure::BadPreamble { found } if looks_like_tls_record(&found) => {
                self.tls_answer_to_plaintext(node)
            }
            f => self.handshake_failed(node, f),
        })?;
        if version != frame::PROTOCOL_VERSION {
            return Err(self.handshake_failed(
                node,
                HandshakeFailure::VersionMismatch {
                    local: frame::PROTOCOL_VERSION,
                    remote: version,
                },
            ));
        }
        let (rd, wr) = stream.into_split();
        let mut reader = FrameReader {
            rd,
            buf: BytesMut::with_capacity(4096),
            max: self.max_frame,
        };
        let reply = match reader.next().await {
            Ok(Some(bytes)) => frame::decode(bytes).map_err(|e| e.into_rpc(node))?,
            Ok(None) => return Err(io(std::io::ErrorKind::UnexpectedEof.into())),
            Err(ReadError::Io(err)) => return Err(io(err)),
            Err(ReadError::Frame(err)) => return Err(err.into_rpc(node)),
        };
        let ok = match reply {
            Frame::HelloOk(ok) => ok,
            Frame::HelloRejected(RpcError::Handshake { failure, .. }) => {
                return Err(self.handshake_failed(node, failure.seen_from_peer()));
            }
            Frame::HelloRejected(other) => return Err(other),
            other => {
                return Err(
                    self.handshake_failed(node, HandshakeFailure::Unexpected(format!("{other:?}")))
                );
            }
        };
        Ok(self.new_connection(reader, wr, node.to_string(), ok.instance, self.instance))
    }

    /// The peer hung up (or the read failed) before answering the preamble. A node that requires
    /// TLS or the cluster secret does exactly that to a plaintext dialer, so say so when this
    /// node runs plaintext.
    fn closed_before_preamble(&self, node: &str, err: std::io::Error) -> RpcError {
        let closed = matches!(
            err.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        );
        let reason = if closed && !self.security.has_secret() {
            let what = if self.security.has_tls() {
                "security.cluster-secret"
            } else {
                "security.cluster-secret or TLS"
            };
            let reason = format!(
                "handshake i/o: {err} (the peer closed the connection before the rpc handshake: \
                 if it requires {what}, this node must be configured alike; this node has no \
                 security.cluster-secret)"
            );
            // Retrying callers log unreachable peers at debug; this one is most likely a
            // misconfiguration, which the operator of this node must see.
            tracing::warn!(peer = node, %reason, "rpc connection closed by the peer");
            reason
        } else {
            format!("handshake i/o: {err}")
        };
        RpcError::Connection {
            address: node.to_string(),
            reason,
        }
    }

    /// A plaintext dialer got a TLS record (the alert of a TLS acceptor that read our preamble
    /// as a broken ClientHello) instead of the preamble.
    fn tls_answer_to_plaintext(&self, node: &str) -> RpcError {
        let err = self.security_failed(
            node,
            SecurityError::Handshake {
                peer: node.to_string(),
                channel: Channel::Rpc,
                direction: "to",
                failure: SecurityFailure::NotTls,
            },
        );
        tracing::warn!(peer = node, error = %err, "rpc handshake failed");
        err
    }

    fn handshake_failed(&self, peer: &str, failure: HandshakeFailure) -> RpcError {
        self.stats
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        let hint = match &failure {
            HandshakeFailure::BadPreamble { found } => security_hint(found),
            _ => None,
        };
        let err = RpcError::Handshake {
            peer: peer.to_string(),
            failure,
        };
        match hint {
            Some(hint) => tracing::warn!(peer, error = %err, hint, "rpc handshake failed"),
            None => tracing::warn!(peer, error = %err, "rpc handshake failed"),
        }
        err
    }

    /// Counts a refused security handshake (TLS or cluster secret) as a handshake failure.
    /// [`TransportSecurity`] has logged it already.
    fn security_failed(&self, peer: &str, err: SecurityError) -> RpcError {
        self.stats
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        let failure = err
            .failure()
            .cloned()
            .unwrap_or_else(|| SecurityFailure::Io(err.to_string()));
        RpcError::Security {
            peer: peer.to_string(),
            failure,
        }
    }

    async fn accept(self: Arc<Self>, stream: TcpStream, peer: String) {
        let _ = stream.set_nodelay(true);
        let timeout = self.connect_timeout;
        // Nothing of the RPC protocol is read before the peer passed TLS and/or the secret.
        let handshake = async {
            let stream = self
                .security
                .accept(stream, &peer, Channel::Rpc)
                .await
                .map_err(|err| self.security_failed(&peer, err))?;
            self.handshake_as_acceptor(stream, &peer).await
        };
        match tokio::time::timeout(timeout, handshake).await {
            Err(_) => {
                self.handshake_failed(&peer, HandshakeFailure::Timeout(timeout));
            }
            Ok(Err(err)) => tracing::debug!(peer, error = %err, "inbound connection refused"),
            Ok(Ok(conn)) => {
                let node = conn.peer.clone();
                self.adopt(&node, conn);
                tracing::debug!(peer = node, "inbound rpc connection established");
            }
        }
    }

    async fn handshake_as_acceptor(
        self: &Arc<Self>,
        mut stream: SecureStream,
        peer: &str,
    ) -> Result<Arc<Connection>, RpcError> {
        let io = |err: std::io::Error| RpcError::Connection {
            address: peer.to_string(),
            reason: format!("handshake i/o: {err}"),
        };
        let mut preamble = [0u8; frame::PREAMBLE_LEN];
        stream.read_exact(&mut preamble).await.map_err(io)?;
        // Not our protocol at all: say nothing in it, just close.
        let version =
            frame::check_preamble(&preamble).map_err(|f| self.handshake_failed(peer, f))?;
        send(&mut stream, &frame::preamble()).await.map_err(io)?;
        let reject = |failure: HandshakeFailure| {
            let err = self.handshake_failed(peer, failure);
            let bytes = frame::encode_hello_rejected(&err, self.max_frame).unwrap_or_default();
            (err, bytes)
        };
        if version != frame::PROTOCOL_VERSION {
            let (err, bytes) = reject(HandshakeFailure::VersionMismatch {
                local: frame::PROTOCOL_VERSION,
                remote: version,
            });
            let _ = send(&mut stream, &bytes).await;
            return Err(err);
        }
        let (rd, mut wr) = stream.into_split();
        let mut reader = FrameReader {
            rd,
            buf: BytesMut::with_capacity(4096),
            max: self.max_frame,
        };
        let first = match reader.next().await {
            Ok(Some(bytes)) => frame::decode(bytes),
            Ok(None) => return Err(io(std::io::ErrorKind::UnexpectedEof.into())),
            Err(ReadError::Io(err)) => return Err(io(err)),
            Err(ReadError::Frame(err)) => Err(err),
        };
        let hello = match first {
            Ok(Frame::Hello(hello)) => hello,
            Ok(other) => {
                let (err, bytes) = reject(HandshakeFailure::Unexpected(format!("{other:?}")));
                let _ = send(&mut wr, &bytes).await;
                return Err(err);
            }
            Err(frame_err) => {
                let (err, bytes) = reject(HandshakeFailure::Unexpected(frame_err.to_string()));
                let _ = send(&mut wr, &bytes).await;
                return Err(err);
            }
        };
        if hello.cluster_id != self.cluster_id {
            let (err, bytes) = reject(HandshakeFailure::ClusterIdMismatch {
                local: self.cluster_id.clone(),
                remote: hello.cluster_id,
            });
            let _ = send(&mut wr, &bytes).await;
            return Err(err);
        }
        if hello.advertised.is_empty() || hello.advertised.len() > 512 {
            let (err, bytes) = reject(HandshakeFailure::Unexpected(
                "empty or oversized advertised address".into(),
            ));
            let _ = send(&mut wr, &bytes).await;
            return Err(err);
        }
        let ok = HelloOk {
            instance: self.instance,
            advertised: self.advertised.clone(),
        };
        send(&mut wr, &frame::encode_hello_ok(&ok, self.max_frame)?)
            .await
            .map_err(io)?;
        Ok(self.new_connection(reader, wr, hello.advertised, hello.instance, hello.instance))
    }

    /// Stops accepting, closes every connection and fails what is pending on them.
    pub(crate) fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let conns: Vec<Arc<Connection>> = lock(&self.live)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        // Tell each peer why, so its pending asks fail with "shut down" rather than a bare loss.
        let notice = RpcError::RecipientUnreachable {
            recipient: self.advertised.clone(),
            message: String::new(),
            reason: "the node shut down".into(),
        };
        let notice = frame::encode_fatal(&notice, self.max_frame).ok();
        for conn in conns {
            if let Some(bytes) = &notice {
                if lock(&conn.state).closed.is_none() {
                    conn.send(|buf| {
                        buf.extend_from_slice(bytes);
                        Ok(())
                    });
                }
            }
            conn.close(RpcError::ServiceShutdown);
        }
        lock(&self.pool).clear();
    }

    fn forget_connection(&self, conn: &Connection) {
        self.unpool(conn);
        lock(&self.live).remove(&conn.serial);
    }

    /// Turns a request into an invocation for its endpoint. `route` caches the endpoint last
    /// looked up on this connection, so a stream of requests to one endpoint costs no registry
    /// lookups. An unknown endpoint is answered at once.
    fn prepare_request(
        &self,
        conn: &Arc<Connection>,
        req: frame::RequestFrame,
        route: &mut Option<(frame::Name, Arc<dyn Registered>)>,
    ) -> Option<(Arc<dyn Registered>, Encoded)> {
        let guard = InboundGuard::new(Arc::clone(conn));
        let target = if req.expects_reply {
            Target::Remote {
                conn: Arc::clone(conn),
                id: req.id,
            }
        } else {
            Target::Discard
        };
        let sink = ReplySink {
            target: Some(target),
            guard: Some(guard),
            max_frame: self.max_frame,
        };
        let entry = match self.route(conn, &req.endpoint, route) {
            Ok(entry) => entry,
            Err(err) => {
                sink.fail(err);
                return None;
            }
        };
        let inv = EncodedInvocation {
            message: req.message,
            token: req.token,
            payload: req.payload,
            sink,
        };
        Some((entry, Encoded::One(inv)))
    }

    /// The endpoint named `endpoint`, through the per-connection cache `route`.
    fn route(
        &self,
        conn: &Connection,
        endpoint: &frame::Name,
        route: &mut Option<(frame::Name, Arc<dyn Registered>)>,
    ) -> Result<Arc<dyn Registered>, RpcError> {
        if let Some((name, entry)) = route {
            if name == endpoint && entry.is_alive() {
                return Ok(Arc::clone(entry));
            }
        }
        match self.registry.get(endpoint.as_str()) {
            Some(entry) => {
                *route = Some((endpoint.clone(), Arc::clone(&entry)));
                Ok(entry)
            }
            None => {
                self.stats.unknown_endpoints.fetch_add(1, Ordering::Relaxed);
                let err = RpcError::EndpointNotFound {
                    address: self.advertised.clone(),
                    endpoint: endpoint.to_string(),
                };
                // Info, not warn: it is the usual race of a peer still talking to an endpoint
                // that has just stopped (a finished job's JobMaster), like Akka's dead letters.
                // The caller gets the typed error either way.
                tracing::info!(peer = %conn.peer, error = %err, "request for an unknown endpoint");
                Err(err)
            }
        }
    }

    /// Turns a batch of tells into one invocation item for its endpoint.
    fn prepare_tells(
        &self,
        conn: &Arc<Connection>,
        batch: frame::TellBatchFrame,
        route: &mut Option<(frame::Name, Arc<dyn Registered>)>,
    ) -> Option<(Arc<dyn Registered>, Encoded)> {
        let entry = self.route(conn, &batch.endpoint, route).ok()?;
        let guard = ReplySink {
            target: Some(Target::Discard),
            guard: Some(InboundGuard::new(Arc::clone(conn))),
            max_frame: self.max_frame,
        };
        let payloads = batch.payloads();
        let mut count = 0;
        payloads.for_each_slice(|_| count += 1);
        let tells = EncodedTells {
            count,
            payloads,
            message: batch.message,
            token: batch.token,
            guard,
        };
        Some((entry, Encoded::Tells(tells)))
    }

    fn handle_resolve(&self, conn: &Connection, id: u64, endpoint: String, gateway: String) {
        let result = match self.registry.get(&endpoint) {
            None => Err(RpcError::EndpointNotFound {
                address: self.advertised.clone(),
                endpoint,
            }),
            Some(entry) if entry.gateway() != gateway => Err(RpcError::Handshake {
                peer: self.advertised.clone(),
                failure: HandshakeFailure::WrongGateway {
                    endpoint,
                    requested: gateway,
                    actual: entry.gateway().to_string(),
                },
            }),
            Some(_) => Ok(()),
        };
        let frame = match &result {
            Ok(()) => frame::encode_response_ok(id, &(), "resolve reply", self.max_frame),
            Err(err) => {
                tracing::warn!(peer = %conn.peer, error = %err, "connect to an endpoint refused");
                Ok(frame::encode_response_err(id, err, self.max_frame))
            }
        };
        let max = self.max_frame;
        conn.send(|buf| {
            match frame {
                Ok(frame) => buf.extend_from_slice(&frame),
                Err(err) => frame::encode_response_err_into(buf, id, &err, max),
            }
            Ok(())
        });
    }
}

#[derive(Default)]
struct ConnState {
    closed: Option<RpcError>,
    pending: HashMap<u64, oneshot::Sender<ReplyResult>>,
    draining: bool,
    goaway_sent: bool,
    goaway_received: bool,
}

/// Frames waiting to be written. Senders encode straight into `buf` under the lock (no
/// allocation or copy per frame); the writer task swaps the whole buffer out and writes it with one
/// call.
struct Outbox {
    state: Mutex<OutboxState>,
    ready: tokio::sync::Notify,
    /// Bytes the writer took and is writing now (for `queued_bytes`).
    writing: Mutex<usize>,
}

impl Outbox {
    /// Bytes queued or being written.
    fn queued(&self) -> usize {
        lock(&self.state).buf.len() + *lock(&self.writing)
    }
}

struct OutboxState {
    buf: Vec<u8>,
    /// False once GoAway is queued: no request may follow it on this connection.
    accepting_requests: bool,
    /// The writer flushes `buf` and closes the socket.
    closing: bool,
    /// The tell batch at the end of `buf`, which the next tell may join.
    open_tells: Option<frame::OpenTellBatch>,
}

impl Outbox {
    /// Appends what `write` encodes; `request` frames are refused once GoAway was queued.
    fn push<T>(
        &self,
        request: bool,
        write: impl FnOnce(&mut Vec<u8>) -> Result<T, RpcError>,
    ) -> Result<T, SendFailure> {
        let mut st = lock(&self.state);
        if st.closing {
            return Err(SendFailure::Closed(RpcError::RecipientUnreachable {
                recipient: String::new(),
                message: String::new(),
                reason: "the connection is closing".into(),
            }));
        }
        if request && !st.accepting_requests {
            return Err(SendFailure::Draining);
        }
        let was_empty = st.buf.is_empty();
        let out = write(&mut st.buf).map_err(SendFailure::Encode)?;
        // Something else follows the open tell batch now: the next tell starts a new one.
        st.open_tells = None;
        drop(st);
        if was_empty {
            // The writer drains everything queued once woken; only the first frame wakes it.
            self.ready.notify_one();
        }
        Ok(out)
    }

    /// Appends a tell, joining the open tell batch when it is for the same endpoint and kind.
    fn push_tell<M: Serialize>(
        &self,
        header: frame::RequestHeader<'_>,
        msg: &M,
        max: usize,
    ) -> Result<(), SendFailure> {
        let mut st = lock(&self.state);
        if st.closing {
            return Err(SendFailure::Closed(RpcError::RecipientUnreachable {
                recipient: String::new(),
                message: String::new(),
                reason: "the connection is closing".into(),
            }));
        }
        if !st.accepting_requests {
            return Err(SendFailure::Draining);
        }
        let was_empty = st.buf.is_empty();
        let OutboxState {
            buf, open_tells, ..
        } = &mut *st;
        frame::encode_tell_into(buf, open_tells, header, msg, max).map_err(SendFailure::Encode)?;
        drop(st);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Queues GoAway and refuses requests from now on.
    fn stop_requests(&self) {
        let mut st = lock(&self.state);
        if !st.closing && st.accepting_requests {
            st.accepting_requests = false;
            st.open_tells = None;
            st.buf.extend_from_slice(&frame::encode_go_away());
            drop(st);
            self.ready.notify_one();
        }
    }

    /// Asks the writer to flush and close.
    fn close(&self) {
        lock(&self.state).closing = true;
        self.ready.notify_one();
    }
}

/// One TCP connection to a peer node.
pub(crate) struct Connection {
    serial: u64,
    /// The pool key: the peer's `host:port`.
    pub(crate) peer: String,
    peer_instance: AbstractId,
    dialer: AbstractId,
    outbox: Arc<Outbox>,
    state: Mutex<ConnState>,
    next_id: AtomicU64,
    /// Requests handed to endpoints and not yet answered.
    inbound_in_flight: AtomicUsize,
    /// Signalled when `inbound_in_flight` drops below the limit.
    inbound_room: tokio::sync::Notify,
    max_inbound: usize,
    /// Mirrors `ConnState::draining`, so the hot path can check it without the lock.
    draining: AtomicBool,
    transport: Weak<Transport>,
}

/// Why a frame could not be put on a connection.
pub(crate) enum SendFailure {
    /// The connection is going away; use another from the pool.
    Draining,
    /// The connection is closed, with this error.
    Closed(RpcError),
    /// The frame could not be encoded (too large, unserializable); nothing was queued.
    Encode(RpcError),
}

impl Connection {
    fn is_usable(&self) -> bool {
        let st = lock(&self.state);
        st.closed.is_none() && !st.draining
    }

    /// Queues a frame that expects no answer and is not a request (responses, control frames).
    pub(crate) fn send(&self, write: impl FnOnce(&mut Vec<u8>) -> Result<(), RpcError>) {
        if let Err(SendFailure::Encode(err)) = self.outbox.push(false, write) {
            tracing::warn!(peer = %self.peer, error = %err, "frame not sendable");
        }
    }

    /// Queues a tell: `write` encodes the request frame into the outbox.
    pub(crate) fn tell(
        &self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), RpcError>,
    ) -> Result<(), SendFailure> {
        if self.draining.load(Ordering::Acquire) {
            return Err(SendFailure::Draining);
        }
        self.outbox.push(true, write)
    }

    /// Queues a tell of `msg`, batched with the tells queued just before it when they are of the
    /// same kind to the same endpoint.
    pub(crate) fn tell_batched<M: Serialize>(
        &self,
        header: frame::RequestHeader<'_>,
        msg: &M,
        max: usize,
    ) -> Result<(), SendFailure> {
        if self.draining.load(Ordering::Acquire) {
            return Err(SendFailure::Draining);
        }
        self.outbox.push_tell(header, msg, max)
    }

    /// Queues an ask: `write` encodes the request frame with the id it is given. Returns the id
    /// and the receiver of the answer.
    pub(crate) fn ask(
        &self,
        write: impl FnOnce(&mut Vec<u8>, u64) -> Result<(), RpcError>,
    ) -> Result<(u64, oneshot::Receiver<ReplyResult>), SendFailure> {
        let mut st = lock(&self.state);
        if let Some(err) = &st.closed {
            return Err(SendFailure::Closed(err.clone()));
        }
        if st.goaway_sent || st.draining {
            // A draining connection takes no new requests, or it would never finish draining.
            return Err(SendFailure::Draining);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        // Registered before the frame is queued, so the answer always finds it; and while it is
        // pending, `settle` sends no GoAway, so the frame cannot be refused as draining.
        st.pending.insert(id, tx);
        drop(st);
        if let Err(failure) = self.outbox.push(true, |buf| write(buf, id)) {
            lock(&self.state).pending.remove(&id);
            return Err(failure);
        }
        Ok((id, rx))
    }

    /// Sends a resolve request and returns the receiver of its answer.
    pub(crate) fn resolve(
        &self,
        endpoint: &str,
        gateway: &str,
        max: usize,
    ) -> Result<(u64, oneshot::Receiver<ReplyResult>), SendFailure> {
        self.ask(|buf, id| {
            let bytes = frame::encode_resolve(id, endpoint, gateway, max)?;
            buf.extend_from_slice(&bytes);
            Ok(())
        })
    }

    /// Gives up on an ask (it timed out).
    pub(crate) fn forget(&self, id: u64) {
        let mut st = lock(&self.state);
        st.pending.remove(&id);
        self.settle(&mut st);
    }

    fn complete(&self, id: u64, result: ReplyResult) {
        let mut st = lock(&self.state);
        if let Some(tx) = st.pending.remove(&id) {
            let _ = tx.send(result);
        }
        self.settle(&mut st);
    }

    fn lost(&self, reason: &str) -> RpcError {
        RpcError::RecipientUnreachable {
            recipient: self.peer.clone(),
            message: String::new(),
            reason: reason.to_string(),
        }
    }

    /// Closes the connection and fails every pending ask with `err`.
    pub(crate) fn close(&self, err: RpcError) {
        let pending = {
            let mut st = lock(&self.state);
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(err.clone());
            std::mem::take(&mut st.pending)
        };
        for (_, tx) in pending {
            let _ = tx.send(Err(err.clone()));
        }
        self.outbox.close();
        if let Some(t) = self.transport.upgrade() {
            t.forget_connection(self);
            if !matches!(err, RpcError::ServiceShutdown) && !t.is_shut_down() {
                // No receiver is fine: nobody watches this peer.
                let _ = t.events.send(PeerEvent::ConnectionLost {
                    node: self.peer.clone(),
                    reason: err.to_string(),
                });
            }
        }
    }

    /// Stops new requests on this connection and closes it once both sides are done with it.
    fn drain(&self) {
        let mut st = lock(&self.state);
        st.draining = true;
        self.draining.store(true, Ordering::Release);
        self.settle(&mut st);
    }

    fn on_go_away(&self) {
        {
            let mut st = lock(&self.state);
            st.goaway_received = true;
            st.draining = true;
            self.draining.store(true, Ordering::Release);
            self.settle(&mut st);
        }
        if let Some(t) = self.transport.upgrade() {
            t.unpool(self);
        }
    }

    /// Sends GoAway once draining with nothing pending, and closes once both sides have.
    fn settle(&self, st: &mut ConnState) {
        if !st.draining || st.closed.is_some() {
            return;
        }
        if !st.goaway_sent && st.pending.is_empty() {
            st.goaway_sent = true;
            self.outbox.stop_requests();
        }
        if st.goaway_sent
            && st.goaway_received
            && st.pending.is_empty()
            && self.inbound_in_flight.load(Ordering::Acquire) == 0
        {
            st.closed = Some(self.lost("connection drained"));
            self.outbox.close();
        }
    }
}

/// Counts a request handed to an endpoint until its reply is sent.
struct InboundGuard {
    conn: Arc<Connection>,
}

impl InboundGuard {
    fn new(conn: Arc<Connection>) -> Self {
        conn.inbound_in_flight.fetch_add(1, Ordering::AcqRel);
        InboundGuard { conn }
    }
}

impl Drop for InboundGuard {
    fn drop(&mut self) {
        let before = self.conn.inbound_in_flight.fetch_sub(1, Ordering::AcqRel);
        if before >= self.conn.max_inbound {
            self.conn.inbound_room.notify_one();
        }
        if before == 1 && self.conn.draining.load(Ordering::Acquire) {
            let mut st = lock(&self.conn.state);
            self.conn.settle(&mut st);
        }
    }
}

enum Target {
    Discard,
    Remote { conn: Arc<Connection>, id: u64 },
    Local(oneshot::Sender<ReplyResult>),
}

/// Where an endpoint sends the encoded answer to an encoded invocation. Dropping it unanswered
/// (the endpoint terminated with the request pending) answers `RecipientUnreachable`.
pub struct ReplySink {
    target: Option<Target>,
    guard: Option<InboundGuard>,
    max_frame: usize,
}

impl ReplySink {
    /// A sink for an in-process invocation forced through the codec.
    pub(crate) fn local(tx: oneshot::Sender<ReplyResult>, max_frame: usize) -> Self {
        ReplySink {
            target: Some(Target::Local(tx)),
            guard: None,
            max_frame,
        }
    }

    /// A sink that drops the answer (tells).
    pub(crate) fn discard() -> Self {
        ReplySink {
            target: Some(Target::Discard),
            guard: None,
            max_frame: usize::MAX,
        }
    }

    /// Sends the encoded reply. A reply too large for a frame becomes `FrameTooLarge`.
    pub fn complete<T: Serialize>(mut self, value: &T) {
        match self.target.take() {
            Some(Target::Remote { conn, id }) => {
                let max = self.max_frame;
                let peer = conn.peer.clone();
                let transport = conn.transport.clone();
                conn.send(|buf| {
                    if let Err(err) = frame::encode_response_ok_into(buf, id, value, "reply", max) {
                        if matches!(err, RpcError::FrameTooLarge { .. }) {
                            if let Some(t) = transport.upgrade() {
                                t.count_oversized();
                            }
                        }
                        tracing::warn!(%peer, error = %err, "reply not sendable");
                        frame::encode_response_err_into(buf, id, &err, max);
                    }
                    Ok(())
                });
            }
            Some(Target::Local(tx)) => {
                let result = rmp_serde::to_vec(value)
                    .map(Bytes::from)
                    .map_err(|e| RpcError::serialize("reply", e));
                let _ = tx.send(result);
            }
            Some(Target::Discard) | None => {}
        }
    }

    /// Sends an error answer.
    pub fn fail(mut self, err: RpcError) {
        self.fail_inner(err);
    }

    fn fail_inner(&mut self, err: RpcError) {
        match self.target.take() {
            Some(Target::Remote { conn, id }) => {
                let max = self.max_frame;
                conn.send(|buf| {
                    frame::encode_response_err_into(buf, id, &err, max);
                    Ok(())
                })
            }
            Some(Target::Local(tx)) => {
                let _ = tx.send(Err(err));
            }
            Some(Target::Discard) | None => {}
        }
    }
}

impl Drop for ReplySink {
    fn drop(&mut self) {
        if matches!(self.target, Some(Target::Remote { .. })) {
            self.fail_inner(RpcError::RecipientUnreachable {
                recipient: String::new(),
                message: String::new(),
                reason: "the endpoint terminated before answering".into(),
            });
        }
        // The guard drops after the reply is queued, so a draining connection closes only after it.
        self.guard.take();
    }
}

enum ReadError {
    Io(std::io::Error),
    Frame(FrameError),
}

struct FrameReader {
    rd: SecureReadHalf,
    buf: BytesMut,
    max: usize,
}

impl FrameReader {
    /// Reads more bytes into the buffer; 0 at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(64 * 1024);
        }
        self.rd.read_buf(&mut self.buf).await
    }

    /// The next frame body, or `None` at a clean end of stream.
    async fn next(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(frame) =
                frame::split_frame(&mut self.buf, self.max).map_err(ReadError::Frame)?
            {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let n = self
                .rd
                .read_buf(&mut self.buf)
                .await
                .map_err(ReadError::Io)?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Frame(FrameError::Truncated("final")))
                };
            }
        }
    }
}

/// Hands a batch of requests for one endpoint to it: one mailbox item for the lot, in order.
fn flush(batch: &mut Vec<Encoded>, target: &mut Option<Arc<dyn Registered>>) {
    if let Some(entry) = target.take() {
        match batch.pop() {
            None => {}
            Some(Encoded::One(inv)) if batch.is_empty() => entry.invoke(inv),
            Some(last) => {
                batch.push(last);
                entry.invoke_batch(std::mem::take(batch));
            }
        }
    }
}

async fn read_loop(conn: Arc<Connection>, mut reader: FrameReader, transport: Arc<Transport>) {
    let mut shutdown = transport.shutdown.subscribe();
    let mut route: Option<(frame::Name, Arc<dyn Registered>)> = None;
    let mut batch: Vec<Encoded> = Vec::new();
    let mut batch_target: Option<Arc<dyn Registered>> = None;
    let reason = 'read: loop {
        // Every frame that has fully arrived; consecutive requests to one endpoint form a batch.
        loop {
            let bytes = match frame::split_frame(&mut reader.buf, reader.max) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break,
                Err(err) => {
                    flush(&mut batch, &mut batch_target);
                    break 'read violation(&conn, &transport, err);
                }
            };
            let frame = match frame::decode(bytes) {
                Ok(frame) => frame,
                Err(err) => {
                    flush(&mut batch, &mut batch_target);
                    break 'read violation(&conn, &transport, err);
                }
            };
            match frame {
                Frame::Request(req) => {
                    if let Some((entry, inv)) = transport.prepare_request(&conn, req, &mut route) {
                        if batch_target
                            .as_ref()
                            .is_some_and(|t| !Arc::ptr_eq(t, &entry))
                        {
                            flush(&mut batch, &mut batch_target);
                        }
                        batch_target = Some(entry);
                        batch.push(inv);
                    }
                }
                Frame::TellBatch(tells) => {
                    if let Some((entry, item)) = transport.prepare_tells(&conn, tells, &mut route) {
                        if batch_target
                            .as_ref()
                            .is_some_and(|t| !Arc::ptr_eq(t, &entry))
                        {
                            flush(&mut batch, &mut batch_target);
                        }
                        batch_target = Some(entry);
                        batch.push(item);
                    }
                }
                Frame::Response { id, result } => {
                    // Requests read before this answer reach their endpoints first: a reply
                    // never overtakes a request the peer sent before it.
                    flush(&mut batch, &mut batch_target);
                    conn.complete(id, result);
                }
                Frame::Resolve {
                    id,
                    endpoint,
                    gateway,
                } => transport.handle_resolve(&conn, id, endpoint, gateway),
                Frame::GoAway => {
                    flush(&mut batch, &mut batch_target);
                    conn.on_go_away();
                }
                Frame::Fatal(err @ RpcError::RecipientUnreachable { .. }) => {
                    flush(&mut batch, &mut batch_target);
                    tracing::debug!(peer = %conn.peer, error = %err, "peer shut down");
                    break 'read err;
                }
                Frame::Fatal(err) => {
                    flush(&mut batch, &mut batch_target);
                    tracing::warn!(peer = %conn.peer, error = %err, "peer closed the connection on an error");
                    break 'read err;
                }
                Frame::Hello(_) | Frame::HelloOk(_) | Frame::HelloRejected(_) => {
                    flush(&mut batch, &mut batch_target);
                    break 'read violation(
                        &conn,
                        &transport,
                        FrameError::BadField("handshake frame after the handshake"),
                    );
                }
            }
        }
        flush(&mut batch, &mut batch_target);
        // Too many requests handed to endpoints and unanswered: stop reading (TCP pushes back).
        loop {
            let room = conn.inbound_room.notified();
            if conn.inbound_in_flight.load(Ordering::Acquire) < conn.max_inbound {
                break;
            }
            tokio::select! {
                _ = room => {}
                _ = shut_down(&mut shutdown) => break 'read RpcError::ServiceShutdown,
            }
        }
        let read = tokio::select! {
            biased;
            read = reader.fill() => read,
            _ = shut_down(&mut shutdown) => break RpcError::ServiceShutdown,
        };
        match read {
            Ok(0) if reader.buf.is_empty() => break conn.lost("the peer closed the connection"),
            Ok(0) => break violation(&conn, &transport, FrameError::Truncated("final")),
            Ok(_) => {}
            Err(err) => break conn.lost(&format!("connection error: {err}")),
        }
    };
    conn.close(reason);
    // A drained connection was marked closed before its reader ended; forget it either way.
    transport.forget_connection(&conn);
}

/// Completes once the transport shuts down (or its sender is gone).
async fn shut_down(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|down| *down).await.map(|_| ());
}

fn violation(conn: &Connection, transport: &Transport, err: FrameError) -> RpcError {
    if matches!(err, FrameError::TooLarge { .. }) {
        transport.count_oversized();
    } else {
        transport
            .stats
            .protocol_violations
            .fetch_add(1, Ordering::Relaxed);
    }
    let err = err.into_rpc(&conn.peer);
    tracing::warn!(peer = %conn.peer, error = %err, "closing connection on a malformed frame");
    if let Ok(bytes) = frame::encode_fatal(&err, transport.max_frame) {
        conn.send(|buf| {
            buf.extend_from_slice(&bytes);
            Ok(())
        });
    }
    err
}

/// Writes `bytes` and flushes: over TLS, written bytes may wait in the session's buffer until a
/// flush (a no-op on plain TCP).
async fn send<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// What a bad preamble says about a peer that is an rflink node with other security settings:
/// a TLS ClientHello, or the start of the cluster-secret handshake.
fn security_hint(found: &[u8]) -> Option<&'static str> {
    if looks_like_tls_record(found) {
        Some("the peer speaks TLS and this node does not: security.ssl.internal.enabled must be the same on every node")
    } else if found.starts_with(crate::security::handshake::MAGIC) {
        Some("the peer starts the cluster-secret handshake and this node has no secret: security.cluster-secret must be set on every node")
    } else {
        None
    }
}

async fn write_loop(outbox: Arc<Outbox>, mut wr: SecureWriteHalf, conn: Weak<Connection>) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let ready = outbox.ready.notified();
        let closing = {
            let mut st = lock(&outbox.state);
            // Take everything queued; the outbox keeps the (empty) buffer of the last round.
            std::mem::swap(&mut st.buf, &mut batch);
            st.open_tells = None;
            st.closing
        };
        if batch.is_empty() {
            if closing {
                break;
            }
            ready.await;
            continue;
        }
        *lock(&outbox.writing) = batch.len();
        let result = send(&mut wr, &batch).await;
        *lock(&outbox.writing) = 0;
        batch.clear();
        if batch.capacity() > 16 * 1024 * 1024 {
            // Do not keep a burst's memory forever.
            batch = Vec::with_capacity(64 * 1024);
        }
        if let Err(err) = result {
            if let Some(conn) = conn.upgrade() {
                conn.close(conn.lost(&format!("write failed: {err}")));
            }
            return;
        }
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_preambles_of_differently_secured_nodes_are_named() {
        // A TLS ClientHello's first bytes, and a cluster-secret HELLO's.
        let tls = security_hint(&[0x16, 0x03, 0x01, 0x00, 0xcd, 0x01]).expect("tls");
        assert!(tls.contains("security.ssl.internal.enabled"), "{tls}");
        let secret = security_hint(crate::security::handshake::MAGIC).expect("secret");
        assert!(secret.contains("security.cluster-secret"), "{secret}");
        assert_eq!(security_hint(b"GET / "), None);
        assert_eq!(security_hint(&frame::preamble()), None);
    }
}
