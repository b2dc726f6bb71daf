//! The data server: serves this ShuffleEnvironment's subpartitions to remote consumers over
//! its own TCP port. Flink: `NettyServer`, `PartitionRequestServerHandler`,
//! `PartitionRequestQueue`, `CreditBasedSequenceNumberingViewReader`.
//!
//! ## Tasks
//!
//! * One **accept loop** on the I/O runtime; every connection gets `TCP_NODELAY` and then, in
//!   its own task, the security handshake of `NetworkConfig::security` (channel `Data`: the
//!   cluster secret and/or mutual TLS). A peer that fails it is logged at `warn` (by the
//!   handshake), counted (`connections_refused`) and dropped before the preamble, so it never
//!   sees a partition.
//! * Per connection, a **reader** decodes requests (PartitionRequest creates a view with a
//!   listener; AddCredit, CancelPartitionRequest and CloseRequest go to the writer) and a
//!   **writer** owns the views and their credit. The writer serves views round-robin: a view is
//!   scheduled when its producer signals data (through the listener, from the producer's plain
//!   thread: a `Notify`), when it gets credit, or when it still has data after being served. A
//!   data buffer needs credit, an event (barrier, end of data, end of partition) does not, but
//!   it is sent only when it reaches the head of its queue, so it never overtakes data. Only
//!   `EndOfPartition` ends a view. Many BufferResponses go out per write, which is followed by
//!   one flush (TLS keeps what the socket did not take until then; free on plain TCP).
//! * A malformed frame (bad preamble or magic, oversized length, unknown message, truncated
//!   body) ends only that connection: it is logged at `warn` with the peer, answered with a
//!   connection-wide ErrorResponse when possible, and its views are released. The accept loop
//!   keeps serving everyone else.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rflink_rpc::security::{Channel, SecureReadHalf, SecureWriteHalf, TransportSecurity};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use super::buffer::lock;
use super::partition::{
    AvailabilityListener, ResultPartitionManager, SubItem, SubpartitionView, ViewPoll,
};
use super::protocol::{
    check_preamble, decode_client, encode_buffer, encode_error, encode_event, max_frame_len,
    next_frame, preamble, ClientMessage, DataType, ErrorKind, PREAMBLE_LEN,
};
use super::NetworkEvent;

/// How much a writer batches before a write.
const WRITE_BATCH: usize = 256 * 1024;
/// How long a closing connection may take to deliver its last error frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the accept loop until the runtime stops.
pub(crate) async fn serve(
    listener: TcpListener,
    manager: Arc<ResultPartitionManager>,
    segment_size: usize,
    security: TransportSecurity,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let manager = Arc::clone(&manager);
                let security = security.clone();
                // The handshake runs in the connection's task: a slow or silent peer holds up
                // no one else (and is cut off by the handshake's own timeout).
                tokio::spawn(async move {
                    serve_connection(stream, peer, manager, segment_size, &security).await;
                });
            }
            Err(err) => {
                // Resource exhaustion (EMFILE) and the like: back off instead of spinning.
                warn!(error = %err, "data server accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What producer listeners and the writer share.
struct ConnShared {
    ready: Mutex<Vec<u64>>,
    notify: Notify,
}

struct ViewListener {
    conn: Weak<ConnShared>,
    channel: u64,
}

impl AvailabilityListener for ViewListener {
    fn notify_data_available(&self) {
        if let Some(conn) = self.conn.upgrade() {
            lock(&conn.ready).push(self.channel);
            conn.notify.notify_one();
        }
    }
}

enum Command {
    View {
        channel: u64,
        view: SubpartitionView,
        credit: u32,
    },
    Error {
        channel: Option<u64>,
        kind: ErrorKind,
        message: String,
    },
    AddCredit {
        channel: u64,
        credit: u32,
    },
    Cancel {
        channel: u64,
    },
    Close,
}

/// Writes `bytes` and flushes them.
async fn send<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    manager: Arc<ResultPartitionManager>,
    segment_size: usize,
    security: &TransportSecurity,
) {
    let _ = stream.set_nodelay(true);
    // Before the preamble: a refused peer was logged at warn by `accept` and learns nothing.
    let stream = match security
        .accept(stream, &peer.to_string(), Channel::Data)
        .await
    {
        Ok(stream) => stream,
        Err(_) => {
            manager.connections_refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    // Plain TCP splits without a lock; TLS shares the session through a lock per poll, never
    // contended here as the I/O runtime has one thread.
    let (mut rd, mut wr) = stream.into_split();
    if send(&mut wr, &preamble()).await.is_err() {
        return;
    }
    let mut pre = [0u8; PREAMBLE_LEN];
    if let Err(err) = rd.read_exact(&mut pre).await {
        debug!(%peer, error = %err, "data connection closed before its preamble");
        return;
    }
    if let Err(v) = check_preamble(&pre) {
        warn!(%peer, detail = %v.0, "closing data connection: protocol violation");
        let mut out = Vec::new();
        encode_error(&mut out, None, ErrorKind::Protocol, &v.0);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, send(&mut wr, &out)).await;
        return;
    }
    debug!(%peer, "data connection accepted");
    let shared = Arc::new(ConnShared {
        ready: Mutex::new(Vec::new()),
        notify: Notify::new(),
    });
    // Unbounded by type, bounded by the reader: it stops reading when it cannot queue.
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(
        wr,
        rx,
        Arc::clone(&shared),
        peer,
        Arc::clone(&manager),
    ));
    let result = read_loop(&mut rd, &tx, &shared, &manager, segment_size).await;
    match result {
        Ok(()) => {}
        Err(ReadEnd::Closed(detail)) => debug!(%peer, %detail, "data connection closed"),
        Err(ReadEnd::Violation(detail)) => {
            warn!(%peer, %detail, "closing data connection: protocol violation");
            let _ = tx.send(Command::Error {
                channel: None,
                kind: ErrorKind::Protocol,
                message: detail,
            });
        }
    }
    let _ = tx.send(Command::Close);
    drop(tx);
    let _ = writer.await;
}

enum ReadEnd {
    Closed(String),
    Violation(String),
}

async fn read_loop(
    rd: &mut SecureReadHalf,
    tx: &mpsc::UnboundedSender<Command>,
    shared: &Arc<ConnShared>,
    manager: &ResultPartitionManager,
    segment_size: usize,
) -> Result<(), ReadEnd> {
    // Client frames are small; a generous bound that still rejects garbage lengths early.
    let max = max_frame_len(segment_size).min(64 * 1024);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        while let Some((n, id, body)) =
            next_frame(&buf, max).map_err(|v| ReadEnd::Violation(v.0))?
        {
            let msg = decode_client(id, body).map_err(|v| ReadEnd::Violation(v.0))?;
            buf.advance(n);
            let cmd = match msg {
                ClientMessage::PartitionRequest {
                    partition,
                    subpartition,
                    channel,
                    credit,
                } => {
                    let listener = Arc::new(ViewListener {
                        conn: Arc::downgrade(shared),
                        channel,
                    });
                    match manager.create_view(&partition, subpartition, listener) {
                        Ok(Some(view)) => Command::View {
                            channel,
                            view,
                            credit,
                        },
                        Ok(None) => Command::Error {
                            channel: Some(channel),
                            kind: ErrorKind::PartitionNotFound,
                            message: format!("partition {partition} is not registered"),
                        },
                        Err(err) => Command::Error {
                            channel: Some(channel),
                            kind: ErrorKind::Rejected,
                            message: err.to_string(),
                        },
                    }
                }
                ClientMessage::AddCredit { channel, credit } => {
                    Command::AddCredit { channel, credit }
                }
                ClientMessage::Cancel { channel } => Command::Cancel { channel },
                ClientMessage::Close => return Ok(()),
            };
            if tx.send(cmd).is_err() {
                return Err(ReadEnd::Closed("the writer stopped".into()));
            }
        }
        buf.reserve(8 * 1024);
        match rd.read_buf(&mut buf).await {
            Ok(0) => return Err(ReadEnd::Closed("end of stream".into())),
            Ok(_) => {}
            Err(err) => return Err(ReadEnd::Closed(err.to_string())),
        }
    }
}

struct Served {
    view: SubpartitionView,
    credit: u32,
    seq: u32,
    scheduled: bool,
}

struct Writer {
    views: HashMap<u64, Served>,
    queue: VecDeque<u64>,
    out: Vec<u8>,
    closing: bool,
}

impl Writer {
    fn schedule(&mut self, channel: u64) {
        if let Some(v) = self.views.get_mut(&channel) {
            if !v.scheduled {
                v.scheduled = true;
                self.queue.push_back(channel);
            }
        }
    }

    fn handle(&mut self, cmd: Command, peer: SocketAddr) {
        match cmd {
            Command::View {
                channel,
                view,
                credit,
            } => {
                self.views.insert(
                    channel,
                    Served {
                        view,
                        credit,
                        seq: 0,
                        scheduled: false,
                    },
                );
                self.schedule(channel);
            }
            Command::Error {
                channel,
                kind,
                message,
            } => {
                encode_error(&mut self.out, channel, kind, &message);
                if channel.is_none() {
                    self.closing = true;
                }
            }
            Command::AddCredit { channel, credit } => {
                if let Some(v) = self.views.get_mut(&channel) {
                    v.credit = v.credit.saturating_add(credit);
                    self.schedule(channel);
                }
            }
            Command::Cancel { channel } => {
                debug!(%peer, channel, "partition request canceled");
                self.views.remove(&channel);
            }
            Command::Close => self.closing = true,
        }
    }

    /// Serves scheduled views round-robin until the batch is full or nothing is ready.
    fn fill(&mut self) {
        while self.out.len() < WRITE_BATCH {
            let Some(channel) = self.queue.pop_front() else {
                return;
            };
            let Some(v) = self.views.get_mut(&channel) else {
                continue;
            };
            v.scheduled = false;
            match v.view.poll(v.credit > 0) {
                ViewPoll::Nothing => {}
                ViewPoll::Failed(cause) => {
                    encode_error(
                        &mut self.out,
                        Some(channel),
                        ErrorKind::ProducerFailed,
                        &cause,
                    );
                    self.views.remove(&channel);
                }
                ViewPoll::Item {
                    item,
                    backlog,
                    more,
                    next_is_event,
                } => {
                    let backlog = u32::try_from(backlog).unwrap_or(u32::MAX);
                    let seq = v.seq;
                    v.seq = v.seq.wrapping_add(1);
                    let mut finished = false;
                    match item {
                        SubItem::Buffer(buffer) => {
                            v.credit -= 1;
                            encode_buffer(
                                &mut self.out,
                                channel,
                                seq,
                                backlog,
                                DataType::Buffer,
                                &buffer.data,
                            );
                        }
                        SubItem::Event(event) => {
                            // Events need no credit; only the end of the partition ends the view.
                            encode_event(&mut self.out, channel, seq, event);
                            finished = matches!(event, NetworkEvent::EndOfPartition);
                        }
                        SubItem::Batch { .. } => {
                            // The writer refuses batches for remote subpartitions.
                            encode_error(
                                &mut self.out,
                                Some(channel),
                                ErrorKind::ProducerFailed,
                                "a typed batch was written for a remote consumer",
                            );
                            finished = true;
                        }
                    }
                    if finished {
                        self.views.remove(&channel);
                    } else if more && (v.credit > 0 || next_is_event) {
                        v.scheduled = true;
                        self.queue.push_back(channel);
                    }
                }
            }
        }
    }
}

async fn write_loop(
    mut wr: SecureWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<ConnShared>,
    peer: SocketAddr,
    manager: Arc<ResultPartitionManager>,
) {
    let mut w = Writer {
        views: HashMap::new(),
        queue: VecDeque::new(),
        out: Vec::with_capacity(WRITE_BATCH + 64 * 1024),
        closing: false,
    };
    loop {
        tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(cmd) => w.handle(cmd, peer),
                None => w.closing = true,
            },
            () = shared.notify.notified() => {}
        }
        loop {
            while let Ok(cmd) = rx.try_recv() {
                w.handle(cmd, peer);
            }
            let ready = std::mem::take(&mut *lock(&shared.ready));
            for channel in ready {
                w.schedule(channel);
            }
            if !w.closing {
                w.fill();
            }
            if w.out.is_empty() {
                break;
            }
            // The whole batch, then one flush.
            let write = send(&mut wr, &w.out);
            let result = if w.closing {
                tokio::time::timeout(CLOSE_TIMEOUT, write)
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            } else {
                write.await
            };
            if result.is_ok() {
                manager
                    .remote_bytes_sent
                    .fetch_add(w.out.len() as u64, Ordering::Relaxed);
            }
            w.out.clear();
            if let Err(err) = result {
                debug!(%peer, error = %err, "data connection write failed");
                return;
            }
        }
        if w.closing {
            let _ = wr.shutdown().await;
            return;
        }
    }
}
