//! The client half of the data plane: one TCP connection per remote data server, shared by all
//! remote input channels of all gates of this ShuffleEnvironment. Flink:
//! `PartitionRequestClientFactory`, `NettyPartitionRequestClient`,
//! `CreditBasedPartitionRequestClientHandler`.
//!
//! A connection is a task on the I/O runtime with a writer half (draining an outbox of
//! PartitionRequest / AddCredit / Cancel messages, many per write) and a reader half (decoding
//! BufferResponses into the channels' buffers and ErrorResponses into retries or failures).
//! Consumer task threads talk to it only through the outbox, which never blocks.
//!
//! Right after the TCP connect the connection runs the security handshake of
//! `NetworkConfig::security` (channel `Data`); a refusal (no or another cluster secret, a
//! certificate of another CA, plaintext against TLS) fails every channel on it with a
//! [`NetworkError::Connection`] whose detail gives the security reason. Each write of the
//! outbox is flushed (TLS keeps what the socket did not take until then).
//!
//! When the connection cannot be made or breaks, or the peer breaks the protocol, every channel
//! on it fails with an error naming the peer, the connection is logged and forgotten, and the
//! next gate asking for that address gets a fresh one. Other connections are not affected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rflink_rpc::security::{Channel, SecureReadHalf, TransportSecurity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::buffer::lock;
use super::error::NetworkError;
use super::gate::GateShared;
use super::protocol::{
    check_preamble, decode_server, encode_client, max_frame_len, next_frame, preamble,
    ClientMessage, ErrorKind, ServerMessage, PREAMBLE_LEN,
};

/// Flink's `taskmanager.network.netty.client.connectTimeoutSec` default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

struct Registration {
    gate: Arc<GateShared>,
    index: usize,
}

#[derive(Default)]
struct ConnChannels {
    map: HashMap<u64, Registration>,
    closed: bool,
}

/// One connection to a remote data server.
pub(crate) struct ClientConn {
    peer: String,
    // The outbox is unbounded by type but bounded in practice: it holds at most one request
    // and one cancel per channel plus one AddCredit per receiver buffer.
    outbox: mpsc::UnboundedSender<ClientMessage>,
    channels: Mutex<ConnChannels>,
}

impl ClientConn {
    /// Queues a message for the peer; dropped silently if the connection is gone (its channels
    /// have been failed then).
    pub(crate) fn send(&self, msg: ClientMessage) {
        let _ = self.outbox.send(msg);
    }

    fn register(&self, id: u64, gate: Arc<GateShared>, index: usize) -> bool {
        let mut channels = lock(&self.channels);
        if channels.closed {
            return false;
        }
        channels.map.insert(id, Registration { gate, index });
        true
    }

    /// Forgets channel `id`: later data for it is discarded.
    pub(crate) fn unregister(&self, id: u64) {
        lock(&self.channels).map.remove(&id);
    }

    fn lookup(&self, id: u64) -> Option<(Arc<GateShared>, usize)> {
        lock(&self.channels)
            .map
            .get(&id)
            .map(|r| (Arc::clone(&r.gate), r.index))
    }

    /// Fails every channel with `err` and refuses new ones.
    fn close(&self, err: &NetworkError) {
        let map = {
            let mut channels = lock(&self.channels);
            channels.closed = true;
            std::mem::take(&mut channels.map)
        };
        if !map.is_empty() {
            warn!(peer = %self.peer, channels = map.len(), error = %err, "data connection failed");
        }
        for reg in map.into_values() {
            reg.gate.fail_channel(reg.index, err.clone());
        }
    }
}

/// The connections of one ShuffleEnvironment, by peer address.
pub(crate) struct ConnectionManager {
    conns: Mutex<HashMap<String, Arc<ClientConn>>>,
    handle: Handle,
    segment_size: usize,
    security: TransportSecurity,
    this: Weak<ConnectionManager>,
}

impl ConnectionManager {
    pub(crate) fn new(
        handle: Handle,
        segment_size: usize,
        security: TransportSecurity,
    ) -> Arc<ConnectionManager> {
        Arc::new_cyclic(|this| ConnectionManager {
            conns: Mutex::new(HashMap::new()),
            handle,
            segment_size,
            security,
            this: this.clone(),
        })
    }

    fn connection(&self, address: &str) -> Arc<ClientConn> {
        let mut conns = lock(&self.conns);
        if let Some(conn) = conns.get(address) {
            if !lock(&conn.channels).closed {
                return Arc::clone(conn);
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(ClientConn {
            peer: address.to_string(),
            outbox: tx,
            channels: Mutex::new(ConnChannels::default()),
        });
        conns.insert(address.to_string(), Arc::clone(&conn));
        drop(conns);
        let guard = CloseGuard {
            conn: Arc::clone(&conn),
            manager: self.this.clone(),
        };
        let segment_size = self.segment_size;
        let security = self.security.clone();
        self.handle.spawn(async move {
            let result = run(&guard.conn, rx, segment_size, &security).await;
            guard.finish(result);
        });
        conn
    }

    /// The connection to `address` with channel `id` of `gate` registered on it.
    pub(crate) fn register(
        &self,
        address: &str,
        id: u64,
        gate: &Arc<GateShared>,
        index: usize,
    ) -> Result<Arc<ClientConn>, NetworkError> {
        for _ in 0..3 {
            let conn = self.connection(address);
            if conn.register(id, Arc::clone(gate), index) {
                return Ok(conn);
            }
            // The connection closed in between; `connection` makes a fresh one.
            self.forget(&conn);
        }
        Err(NetworkError::Connection {
            peer: address.to_string(),
            detail: "the connection closed while registering the channel".into(),
        })
    }

    fn forget(&self, conn: &Arc<ClientConn>) {
        let mut conns = lock(&self.conns);
        if conns.get(&conn.peer).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            conns.remove(&conn.peer);
        }
    }
}

/// Ends a connection however its task ends (error, end of stream, runtime shut down).
struct CloseGuard {
    conn: Arc<ClientConn>,
    manager: Weak<ConnectionManager>,
}

impl CloseGuard {
    fn finish(self, result: Result<(), NetworkError>) {
        if let Err(err) = result {
            self.close_with(&err);
        }
    }

    fn close_with(&self, err: &NetworkError) {
        if let Some(manager) = self.manager.upgrade() {
            manager.forget(&self.conn);
        }
        self.conn.close(err);
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.close_with(&NetworkError::Connection {
            peer: self.conn.peer.clone(),
            detail: "connection closed".into(),
        });
    }
}

async fn run(
    conn: &Arc<ClientConn>,
    mut outbox: mpsc::UnboundedReceiver<ClientMessage>,
    segment_size: usize,
    security: &TransportSecurity,
) -> Result<(), NetworkError> {
    let peer = conn.peer.clone();
    let connection = |detail: String| NetworkError::Connection {
        peer: peer.clone(),
        detail,
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&conn.peer))
        .await
        .map_err(|_| connection(format!("connect timed out after {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| connection(format!("cannot connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    let stream = security
        .connect(stream, &peer, Channel::Data)
        .await
        .map_err(|err| match err.failure() {
            Some(failure) => connection(format!("security handshake refused: {failure}")),
            None => connection(format!("security handshake failed: {err}")),
        })?;
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(&preamble())
        .await
        .map_err(|e| connection(format!("cannot send the preamble: {e}")))?;
    wr.flush()
        .await
        .map_err(|e| connection(format!("cannot send the preamble: {e}")))?;
    let mut pre = [0u8; PREAMBLE_LEN];
    rd.read_exact(&mut pre).await.map_err(|e| {
        // A server that requires the cluster secret hangs up on a preamble without it.
        let hint = if security.has_secret() {
            ""
        } else {
            " (if the server requires security.cluster-secret, configure this TaskManager alike)"
        };
        connection(format!("no preamble from the server: {e}{hint}"))
    })?;
    check_preamble(&pre).map_err(|v| {
        // 0x15 starts a TLS alert record: a TLS server refusing this plaintext client.
        let hint = if !security.has_tls() && pre[0] == 0x15 {
            " (this looks like a TLS alert: the server runs internal TLS, this TaskManager does \
             not)"
        } else {
            ""
        };
        NetworkError::Protocol {
            peer: peer.clone(),
            detail: format!("{}{hint}", v.0),
        }
    })?;
    debug!(peer = %peer, "data connection established");

    let writer = async {
        let mut out = Vec::with_capacity(4096);
        while let Some(msg) = outbox.recv().await {
            out.clear();
            encode_client(&mut out, &msg);
            while let Ok(msg) = outbox.try_recv() {
                encode_client(&mut out, &msg);
            }
            wr.write_all(&out)
                .await
                .map_err(|e| connection(format!("write failed: {e}")))?;
            wr.flush()
                .await
                .map_err(|e| connection(format!("write failed: {e}")))?;
        }
        Ok::<(), NetworkError>(())
    };
    let reader = read_loop(conn, &mut rd, segment_size);
    tokio::select! {
        r = writer => r,
        r = reader => r,
    }
}

async fn read_loop(
    conn: &Arc<ClientConn>,
    rd: &mut SecureReadHalf,
    segment_size: usize,
) -> Result<(), NetworkError> {
    let peer = &conn.peer;
    let protocol = |detail: String| NetworkError::Protocol {
        peer: peer.clone(),
        detail,
    };
    let max = max_frame_len(segment_size);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some((n, id, body)) = next_frame(&buf, max).map_err(|v| protocol(v.0))? {
            let msg = decode_server(id, body).map_err(|v| protocol(v.0))?;
            handle_message(conn, msg)?;
            buf.advance(n);
        }
        if buf.len() >= 4 {
            let need = 4 + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            buf.reserve(need.saturating_sub(buf.len()).max(16 * 1024));
        } else {
            buf.reserve(64 * 1024);
        }
        let n = rd
            .read_buf(&mut buf)
            .await
            .map_err(|e| NetworkError::Connection {
                peer: peer.clone(),
                detail: format!("read failed: {e}"),
            })?;
        if n == 0 {
            return Err(NetworkError::Connection {
                peer: peer.clone(),
                detail: "the server closed the connection".into(),
            });
        }
    }
}

fn handle_message(conn: &Arc<ClientConn>, msg: ServerMessage<'_>) -> Result<(), NetworkError> {
    let peer = &conn.peer;
    match msg {
        ServerMessage::Buffer {
            channel,
            seq,
            backlog,
            data_type,
            payload,
        } => {
            // Data for a channel that was canceled or ended may still be in flight: dropped.
            let Some((gate, index)) = conn.lookup(channel) else {
                return Ok(());
            };
            let ended = gate
                .on_buffer(index, seq, backlog, data_type, payload)
                .map_err(|detail| NetworkError::Protocol {
                    peer: peer.clone(),
                    detail: format!("channel {channel}: {detail}"),
                })?;
            if ended {
                conn.unregister(channel);
            }
        }
        ServerMessage::Error {
            channel: Some(channel),
            kind,
            message,
        } => {
            let Some((gate, index)) = conn.lookup(channel) else {
                return Ok(());
            };
            let err = match kind {
                ErrorKind::PartitionNotFound => {
                    if let Some(delay) = gate.next_backoff(index) {
                        debug!(peer = %peer, channel, ?delay, "partition not found, retrying");
                        let conn = Arc::clone(conn);
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            if conn.lookup(channel).is_some() {
                                if let Some(request) = gate.rerequest(index) {
                                    conn.send(request);
                                }
                            }
                        });
                    } else {
                        conn.unregister(channel);
                    }
                    return Ok(());
                }
                ErrorKind::ProducerFailed => NetworkError::ProducerFailed { cause: message },
                ErrorKind::Rejected => NetworkError::RequestRejected { detail: message },
                ErrorKind::Protocol => NetworkError::Protocol {
                    peer: peer.clone(),
                    detail: message,
                },
            };
            conn.unregister(channel);
            gate.fail_channel(index, err);
        }
        ServerMessage::Error {
            channel: None,
            message,
            ..
        } => {
            return Err(NetworkError::Protocol {
                peer: peer.clone(),
                detail: format!("the server closed the connection: {message}"),
            });
        }
    }
    Ok(())
}
