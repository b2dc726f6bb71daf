//! The remote transport: one TCP listener per [`RpcService`](crate::RpcService), one connection per
//! peer node, frames as described in [`frame`].
//!
//! # Security
//!
//! Before a single byte of the RPC protocol, every connection passes the service's
//! [`TransportSecurity`](crate::security::TransportSecurity) ([`RpcConfig::security`]): the
//! dialer runs [`connect`](crate::security::TransportSecurity::connect) right after the TCP
//! connect, the acceptor runs [`accept`](crate::security::TransportSecurity::accept) before it
//! reads the preamble, both for [`Channel::Rpc`](crate::security::Channel::Rpc). With mutual TLS
//! the RPC handshake and every frame travel inside the TLS session; with the cluster secret both
//! sides prove they hold it over fresh nonces, so a recorded handshake cannot be replayed. The
//! preamble/`Hello` handshake then runs over the secured stream; `rpc.connect-timeout` bounds
//! both handshakes together. The default is plaintext, exactly as before.
//!
//! A refused peer (no secret, another secret, a replayed handshake, plaintext against TLS, a
//! certificate of another CA or an expired one, garbage) is closed before anything it sent is
//! decoded: no endpoint sees a message and nothing is pooled. The acceptor logs one `warn`
//! naming the peer and the reason and counts it in [`TransportStats::handshake_failures`]; the
//! dialer counts it too, and the call that dialed fails with
//! [`RpcError::Security`](crate::RpcError::Security), which carries the typed
//! [`SecurityFailure`](crate::security::SecurityFailure). Other connections are untouched.
//!
//! Plain TCP splits into lock-free read and write halves as before. A TLS session is shared by
//! the connection's reader and writer tasks through a lock taken per poll, and the writer
//! flushes after each batch, so nothing waits in the session's buffer.
//!
//! [`RpcConfig::security`]: crate::RpcConfig::security
//!
//! # Connections
//!
//! A connection is symmetric: either side sends requests on it and answers the other's. Each
//! connection has a reader task (takes every frame of a socket read, hands requests to endpoint
//! mailboxes in batches, completes pending asks) and a writer task. Senders encode frames straight
//! into the connection's *outbox*, one buffer the writer swaps out and writes whole; consecutive
//! tells of one kind to one endpoint share one `TellBatch` frame. A connection is kept in the pool
//! under the peer's advertised `host:port`, and reused by every gateway to that node; a closed one
//! is dropped from the pool and the next call dials again.
//!
//! When two nodes dial each other at once, both end up with two connections. Each side keeps the
//! one dialed by the service with the smaller instance id (both sides compute the same answer) and
//! *drains* the other: no new requests go on it, and once neither side has requests in flight on
//! it, both send `GoAway` and it closes. No request is lost in the swap.
//!
//! # Failure
//!
//! Any malformed frame ends that connection: the reader sends a `Fatal` frame naming the problem,
//! logs a `warn`, and closes; every ask pending on the connection fails at once with the typed
//! error (or `RecipientUnreachable` on a plain loss). Other connections are untouched.
//!
//! # Bounds
//!
//! Frames are bounded by `rpc.max-frame-size` at both ends. Requests a connection has handed to
//! endpoints but not yet seen answered are bounded by `max_inbound_in_flight`, checked before each
//! socket read: past it the reader stops reading and TCP pushes back on the sender. The outbox is
//! unbounded: its producers are asks (each bounded by its caller's concurrency), replies (bounded
//! by the inbound limit) and tells (notifications that must not block an actor); its byte size is
//! the one unbounded quantity here, reported as [`TransportStats::queued_bytes`].

pub(crate) mod connection;
pub mod frame;

pub(crate) use connection::{ReplySink, Transport};

/// Something that happened to a connection, for components that watch their peers
/// ([`RpcService::peer_events`](crate::RpcService::peer_events)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The connection to `node` (`host:port`) ended other than by an orderly drain: the peer
    /// crashed, shut down, or the network failed. The next call will try to reconnect; a component
    /// that needs to know whether the peer is gone should probe it now rather than at its next
    /// heartbeat.
    ConnectionLost {
        /// The peer's advertised `host:port`.
        node: String,
        /// Why the connection ended.
        reason: String,
    },
}

/// Counters of one service's transport, for tests and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Connections that completed a handshake, dialed or accepted.
    pub connections_established: u64,
    /// Handshakes refused, by either side: security (TLS, cluster secret), bad preamble,
    /// version, cluster id, or a handshake that did not finish within the connect timeout.
    pub handshake_failures: u64,
    /// Connections closed because the peer broke the frame format.
    pub protocol_violations: u64,
    /// Frames refused for size, on sending or receiving.
    pub oversized_frames: u64,
    /// Requests for endpoints this node does not serve.
    pub unknown_endpoints: u64,
    /// Live connections right now (including draining ones).
    pub open_connections: u64,
    /// Bytes queued for writing right now, over all connections.
    pub queued_bytes: u64,
}
