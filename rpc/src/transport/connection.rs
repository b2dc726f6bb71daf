//! Connections, the connection pool and the listener. See the parent module for the design.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt, Shared};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::frame::{self, Frame, FrameError, Hello, HelloOk};
use super::{PeerEvent, TransportStats};
use crate::error::{HandshakeFailure, RpcError};
use crate::id::AbstractId;
use crate::service::Registry;

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
    queued_bytes: AtomicU64,
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
        registry: Arc<Registry>,
    ) -> Arc<Self> {
        Arc::new(Transport {
            instance,
            advertised,
            cluster_id,
            max_frame,
            connect_timeout,
            max_inbound,
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
        let open = lock(&self.live)
            .values()
            .filter(|c| c.strong_count() > 0)
            .count();
        TransportStats {
            connections_established: self.stats.established.load(Ordering::Relaxed),
            handshake_failures: self.stats.handshake_failures.load(Ordering::Relaxed),
            protocol_violations: self.stats.protocol_violations.load(Ordering::Relaxed),
            oversized_frames: self.stats.oversized.load(Ordering::Relaxed),
            unknown_endpoints: self.stats.unknown_endpoints.load(Ordering::Relaxed),
            open_connections: open as u64,
            queued_bytes: self.stats.queued_bytes.load(Ordering::Relaxed),
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

    fn new_connection(
        self: &Arc<Self>,
        stream: TcpStream,
        leftover: BytesMut,
        peer: String,
        peer_instance: AbstractId,
        dialer: AbstractId,
    ) -> Arc<Connection> {
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Connection {
            serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
            peer,
            peer_instance,
            dialer,
            outbox: tx,
            state: Mutex::new(ConnState::default()),
            next_id: AtomicU64::new(1),
            inbound: Arc::new(Semaphore::new(self.max_inbound)),
            inbound_in_flight: AtomicUsize::new(0),
            transport: Arc::downgrade(self),
        });
        lock(&self.live).insert(conn.serial, Arc::downgrade(&conn));
        self.stats.established.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(write_loop(
            rx,
            wr,
            Arc::downgrade(&conn),
            Arc::downgrade(self),
        ));
        let reader = FrameReader {
            rd,
            buf: leftover,
            max: self.max_frame,
        };
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
        match tokio::time::timeout(self.connect_timeout, self.handshake_as_dialer(stream, node))
            .await
        {
            Err(_) => {
                Err(self.handshake_failed(node, HandshakeFailure::Timeout(self.connect_timeout)))
            }
            Ok(result) => result,
        }
    }

    async fn handshake_as_dialer(
        self: &Arc<Self>,
        mut stream: TcpStream,
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
        stream.write_all(&out).await.map_err(io)?;
        let mut preamble = [0u8; frame::PREAMBLE_LEN];
        stream.read_exact(&mut preamble).await.map_err(io)?;
        let version =
            frame::check_preamble(&preamble).map_err(|f| self.handshake_failed(node, f))?;
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
        let stream = reader
            .rd
            .reunite(wr)
            .map_err(|_| io(std::io::Error::other("split halves do not match")))?;
        Ok(self.new_connection(
            stream,
            reader.buf,
            node.to_string(),
            ok.instance,
            self.instance,
        ))
    }

    fn handshake_failed(&self, peer: &str, failure: HandshakeFailure) -> RpcError {
        self.stats
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        let err = RpcError::Handshake {
            peer: peer.to_string(),
            failure,
        };
        tracing::warn!(peer, error = %err, "rpc handshake failed");
        err
    }

    async fn accept(self: Arc<Self>, stream: TcpStream, peer: String) {
        let _ = stream.set_nodelay(true);
        let timeout = self.connect_timeout;
        match tokio::time::timeout(timeout, self.handshake_as_acceptor(stream, &peer)).await {
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
        mut stream: TcpStream,
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
        stream.write_all(&frame::preamble()).await.map_err(io)?;
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
            let _ = stream.write_all(&bytes).await;
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
                let _ = wr.write_all(&bytes).await;
                return Err(err);
            }
            Err(frame_err) => {
                let (err, bytes) = reject(HandshakeFailure::Unexpected(frame_err.to_string()));
                let _ = wr.write_all(&bytes).await;
                return Err(err);
            }
        };
        if hello.cluster_id != self.cluster_id {
            let (err, bytes) = reject(HandshakeFailure::ClusterIdMismatch {
                local: self.cluster_id.clone(),
                remote: hello.cluster_id,
            });
            let _ = wr.write_all(&bytes).await;
            return Err(err);
        }
        if hello.advertised.is_empty() || hello.advertised.len() > 512 {
            let (err, bytes) = reject(HandshakeFailure::Unexpected(
                "empty or oversized advertised address".into(),
            ));
            let _ = wr.write_all(&bytes).await;
            return Err(err);
        }
        let ok = HelloOk {
            instance: self.instance,
            advertised: self.advertised.clone(),
        };
        wr.write_all(&frame::encode_hello_ok(&ok, self.max_frame)?)
            .await
            .map_err(io)?;
        let stream = reader
            .rd
            .reunite(wr)
            .map_err(|_| io(std::io::Error::other("split halves do not match")))?;
        Ok(self.new_connection(
            stream,
            reader.buf,
            hello.advertised,
            hello.instance,
            hello.instance,
        ))
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
                    conn.enqueue(bytes.clone());
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

    fn handle_request(
        self: &Arc<Self>,
        conn: &Arc<Connection>,
        req: frame::RequestFrame,
        permit: OwnedSemaphorePermit,
    ) {
        let guard = InboundGuard::new(Arc::clone(conn), permit);
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
        let Some(entry) = self.registry.get(&req.endpoint) else {
            self.stats.unknown_endpoints.fetch_add(1, Ordering::Relaxed);
            let err = RpcError::EndpointNotFound {
                address: self.advertised.clone(),
                endpoint: req.endpoint,
            };
            tracing::warn!(peer = %conn.peer, error = %err, "request for an unknown endpoint");
            sink.fail(err);
            return;
        };
        entry.invoke(crate::endpoint::EncodedInvocation {
            message: req.message,
            token: req.token,
            payload: req.payload,
            sink,
        });
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
        match frame {
            Ok(frame) => conn.send(frame),
            Err(err) => conn.send(frame::encode_response_err(id, &err, self.max_frame)),
        }
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

enum Outgoing {
    Frame(Vec<u8>),
    Close,
}

/// One TCP connection to a peer node.
pub(crate) struct Connection {
    serial: u64,
    /// The pool key: the peer's `host:port`.
    pub(crate) peer: String,
    peer_instance: AbstractId,
    dialer: AbstractId,
    outbox: mpsc::UnboundedSender<Outgoing>,
    state: Mutex<ConnState>,
    next_id: AtomicU64,
    inbound: Arc<Semaphore>,
    inbound_in_flight: AtomicUsize,
    transport: Weak<Transport>,
}

/// Why a request could not be put on a connection.
pub(crate) enum SendFailure {
    /// The connection is going away; pick another from the pool. The unsent frame comes back.
    Draining(Vec<u8>),
    /// The connection is closed, with this error.
    Closed(RpcError),
}

impl Connection {
    fn is_usable(&self) -> bool {
        let st = lock(&self.state);
        st.closed.is_none() && !st.draining
    }

    fn enqueue(&self, bytes: Vec<u8>) -> bool {
        let len = bytes.len() as u64;
        if let Some(t) = self.transport.upgrade() {
            t.stats.queued_bytes.fetch_add(len, Ordering::Relaxed);
        }
        self.outbox.send(Outgoing::Frame(bytes)).is_ok()
    }

    /// Queues a frame that expects no answer (responses, tells).
    pub(crate) fn send(&self, bytes: Vec<u8>) {
        if lock(&self.state).closed.is_none() {
            self.enqueue(bytes);
        }
    }

    /// Queues a tell, unless the connection is closed.
    pub(crate) fn tell(&self, bytes: Vec<u8>) -> Result<(), SendFailure> {
        let st = lock(&self.state);
        if let Some(err) = &st.closed {
            return Err(SendFailure::Closed(err.clone()));
        }
        if st.goaway_sent {
            return Err(SendFailure::Draining(bytes));
        }
        drop(st);
        self.enqueue(bytes);
        Ok(())
    }

    /// Queues a request frame made by `encode_request`, giving it an id; returns the id and the
    /// receiver of its answer.
    pub(crate) fn ask(
        &self,
        mut bytes: Vec<u8>,
    ) -> Result<(u64, oneshot::Receiver<ReplyResult>), SendFailure> {
        let mut st = lock(&self.state);
        if let Some(err) = &st.closed {
            return Err(SendFailure::Closed(err.clone()));
        }
        if st.goaway_sent {
            return Err(SendFailure::Draining(bytes));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        frame::set_request_id(&mut bytes, id);
        let (tx, rx) = oneshot::channel();
        st.pending.insert(id, tx);
        drop(st);
        if !self.enqueue(bytes) {
            lock(&self.state).pending.remove(&id);
            return Err(SendFailure::Closed(
                self.lost("the connection's writer stopped"),
            ));
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
        let mut st = lock(&self.state);
        if let Some(err) = &st.closed {
            return Err(SendFailure::Closed(err.clone()));
        }
        if st.goaway_sent {
            return Err(SendFailure::Draining(Vec::new()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes =
            frame::encode_resolve(id, endpoint, gateway, max).map_err(SendFailure::Closed)?;
        let (tx, rx) = oneshot::channel();
        st.pending.insert(id, tx);
        drop(st);
        self.enqueue(bytes);
        Ok((id, rx))
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
        let _ = self.outbox.send(Outgoing::Close);
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
        self.settle(&mut st);
    }

    fn on_go_away(&self) {
        {
            let mut st = lock(&self.state);
            st.goaway_received = true;
            st.draining = true;
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
            self.enqueue(frame::encode_go_away());
        }
        if st.goaway_sent
            && st.goaway_received
            && st.pending.is_empty()
            && self.inbound_in_flight.load(Ordering::Acquire) == 0
        {
            st.closed = Some(self.lost("connection drained"));
            let _ = self.outbox.send(Outgoing::Close);
        }
    }
}

/// Counts a request handed to an endpoint until its reply is sent.
struct InboundGuard {
    conn: Arc<Connection>,
    _permit: OwnedSemaphorePermit,
}

impl InboundGuard {
    fn new(conn: Arc<Connection>, permit: OwnedSemaphorePermit) -> Self {
        conn.inbound_in_flight.fetch_add(1, Ordering::AcqRel);
        InboundGuard {
            conn,
            _permit: permit,
        }
    }
}

impl Drop for InboundGuard {
    fn drop(&mut self) {
        if self.conn.inbound_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
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
                let bytes = match frame::encode_response_ok(id, value, "reply", self.max_frame) {
                    Ok(bytes) => bytes,
                    Err(err) => {
                        if matches!(err, RpcError::FrameTooLarge { .. }) {
                            if let Some(t) = conn.transport.upgrade() {
                                t.count_oversized();
                            }
                        }
                        tracing::warn!(peer = %conn.peer, error = %err, "reply not sendable");
                        frame::encode_response_err(id, &err, self.max_frame)
                    }
                };
                conn.send(bytes);
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
                conn.send(frame::encode_response_err(id, &err, self.max_frame))
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
    rd: OwnedReadHalf,
    buf: BytesMut,
    max: usize,
}

impl FrameReader {
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

async fn read_loop(conn: Arc<Connection>, mut reader: FrameReader, transport: Arc<Transport>) {
    let mut shutdown = transport.shutdown.subscribe();
    let reason = loop {
        let next = tokio::select! {
            biased;
            next = reader.next() => next,
            _ = shut_down(&mut shutdown) => break RpcError::ServiceShutdown,
        };
        let bytes = match next {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break conn.lost("the peer closed the connection"),
            Err(ReadError::Io(err)) => break conn.lost(&format!("connection error: {err}")),
            Err(ReadError::Frame(err)) => break violation(&conn, &transport, err),
        };
        let frame = match frame::decode(bytes) {
            Ok(frame) => frame,
            Err(err) => break violation(&conn, &transport, err),
        };
        match frame {
            Frame::Request(req) => {
                let permit = match Arc::clone(&conn.inbound).acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => break conn.lost("inbound limiter closed"),
                };
                transport.handle_request(&conn, req, permit);
            }
            Frame::Response { id, result } => conn.complete(id, result),
            Frame::Resolve {
                id,
                endpoint,
                gateway,
            } => transport.handle_resolve(&conn, id, endpoint, gateway),
            Frame::GoAway => conn.on_go_away(),
            Frame::Fatal(err @ RpcError::RecipientUnreachable { .. }) => {
                tracing::debug!(peer = %conn.peer, error = %err, "peer shut down");
                break err;
            }
            Frame::Fatal(err) => {
                tracing::warn!(peer = %conn.peer, error = %err, "peer closed the connection on an error");
                break err;
            }
            Frame::Hello(_) | Frame::HelloOk(_) | Frame::HelloRejected(_) => {
                break violation(
                    &conn,
                    &transport,
                    FrameError::BadField("handshake frame after the handshake"),
                );
            }
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
        conn.enqueue(bytes);
    }
    err
}

async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    mut wr: OwnedWriteHalf,
    conn: Weak<Connection>,
    transport: Weak<Transport>,
) {
    const BATCH: usize = 256 * 1024;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    while let Some(item) = rx.recv().await {
        let push = |item: Outgoing, buf: &mut Vec<u8>| match item {
            Outgoing::Frame(bytes) => {
                buf.extend_from_slice(&bytes);
                false
            }
            Outgoing::Close => true,
        };
        let mut closing = push(item, &mut buf);
        while !closing && buf.len() < BATCH {
            match rx.try_recv() {
                Ok(item) => closing = push(item, &mut buf),
                Err(_) => break,
            }
        }
        let written = buf.len() as u64;
        let result = wr.write_all(&buf).await;
        if let Some(t) = transport.upgrade() {
            // Every frame in `buf` was counted in by `Connection::enqueue`.
            t.stats.queued_bytes.fetch_sub(written, Ordering::Relaxed);
        }
        buf.clear();
        if let Err(err) = result {
            if let Some(conn) = conn.upgrade() {
                conn.close(conn.lost(&format!("write failed: {err}")));
            }
            return;
        }
        if closing {
            break;
        }
    }
    let _ = wr.shutdown().await;
}
