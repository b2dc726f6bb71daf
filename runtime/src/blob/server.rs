//! [`BlobServer`]: stores job blobs and serves them over its own TCP port. Flink: `BlobServer`
//! and `BlobServerConnection`.
//!
//! ## Tasks
//!
//! * One **accept loop** task (`tokio::spawn`) owns the listener and a `JoinSet` of connection
//!   tasks. It takes a permit from a semaphore of `max_connections` *before* accepting, so extra
//!   connections wait in the kernel's listen backlog instead of piling up tasks (Flink's
//!   `blob.fetch.num-concurrent`).
//! * One **task per connection** first runs the security handshake of `config.security`
//!   (channel `Blob`: the cluster secret and/or mutual TLS, bounded by its own timeout). A peer
//!   that fails it (no or another secret, a certificate of another CA or expired, plaintext
//!   against TLS, garbage) is logged at `warn` by the handshake, counted in
//!   [`BlobServerStats::connections_refused`] and dropped before a byte of the blob protocol is
//!   read, so it never reaches storage. Then the task runs the protocol of
//!   [`protocol`](super::protocol) over the secured stream: requests one at a time, every read
//!   and write (flushed, for TLS) bounded by `io_timeout`. Bad input (bad preamble, unknown
//!   operation, oversized PUT, truncated or stalled request) is answered with a typed error frame
//!   when possible, logged at `warn` with the peer, counted in [`BlobServerStats`], and ends only
//!   that connection.
//! * File work runs on tokio's blocking pool (the `store` module): a PUT streams into a temp
//!   file under `incoming/` while hashing and is renamed into `job_<id>/<key>` only if it hashes
//!   to the key the client sent; a GET re-hashes the stored file before sending it, and a file
//!   that no longer matches is deleted and answered with `Corrupt`.
//!
//! ## Lifecycle
//!
//! [`BlobServer::start`] validates the config, creates `storage_dir`, empties `incoming/` (uploads
//! a previous process left half-done), binds, and spawns the accept loop. Blobs of earlier runs in
//! `job_*` directories are kept; they are checked on every read like any other.
//! [`BlobServer::close`] (or dropping the server) stops accepting, aborts the connection tasks
//! (their temp files are removed) and waits for the accept loop to end. Job directories are removed
//! by [`BlobServer::delete_job`], which the Dispatcher's job cleanup calls.

use rflink_rpc::security::{Channel, SecureStream, TransportSecurity};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

use super::error::BlobError;
use super::key::BlobKey;
use super::protocol::{
    check_preamble, encode_error_frame, read_exact_within, write_all_within, ReadFailure, Request,
    WriteFailure, CHUNK_SIZE, GET_HEADER_LEN, PREAMBLE_LEN, STATUS_OK,
};
use super::store::{
    blob_path, blocking, create_dir_all_blocking, job_dir, read_verified, remove_dir_all_blocking,
    temp_in, write_atomically_blocking, BlobFileWriter, ReadMsg, INCOMING_DIR,
};
use crate::types::JobId;

/// One GiB, the default `max_blob_size`.
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 1 << 30;

/// Configuration of a [`BlobServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobServerConfig {
    /// Address the listener binds to (`jobmanager.bind-host`). Default `127.0.0.1`.
    pub bind_host: String,
    /// Port to listen on (`blob.server.port`); 0 picks a free one, reported by
    /// [`BlobServer::port`]. Default 0.
    pub port: u16,
    /// Where blobs are stored (`blob.storage.directory`). The server owns `incoming/` and the
    /// `job_*` directories in it. Default `<temp dir>/rflink-blob-server`.
    pub storage_dir: PathBuf,
    /// The largest blob accepted, in bytes; a PUT announcing more is refused with `TooLarge`
    /// before its body is sent. Default 1 GiB.
    pub max_blob_size: u64,
    /// How long a connection may make no progress (read or write) before it is closed, and how
    /// long an idle connection is kept between requests (`blob.client.socket.timeout`, 300 s in
    /// Flink). Default 60 s.
    pub io_timeout: Duration,
    /// Connections served at once (`blob.fetch.num-concurrent`); more wait in the listen
    /// backlog. Default 50.
    pub max_connections: usize,
    /// How connections are secured (`security.cluster-secret`, `security.ssl.internal.*`).
    /// Default plaintext.
    pub security: TransportSecurity,
}

impl Default for BlobServerConfig {
    fn default() -> Self {
        BlobServerConfig {
            bind_host: "127.0.0.1".into(),
            port: 0,
            storage_dir: std::env::temp_dir().join("rflink-blob-server"),
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
            io_timeout: Duration::from_secs(60),
            max_connections: 50,
            security: TransportSecurity::default(),
        }
    }
}

impl BlobServerConfig {
    /// Checks every value, reporting all problems at once as [`BlobError::InvalidConfig`].
    pub fn validate(&self) -> Result<(), BlobError> {
        let mut problems = Vec::new();
        if self.bind_host.is_empty() {
            problems.push("bind host must not be empty".to_string());
        }
        if self.storage_dir.as_os_str().is_empty() {
            problems.push("storage directory must not be empty".to_string());
        }
        if self.max_blob_size == 0 {
            problems.push("max blob size must be at least 1 byte".to_string());
        }
        if self.io_timeout.is_zero() {
            problems.push("i/o timeout must be positive".to_string());
        }
        if self.max_connections == 0 {
            problems.push("max connections must be at least 1".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BlobError::InvalidConfig {
                detail: problems.join("; "),
            })
        }
    }
}

/// Counters of a [`BlobServer`] since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobServerStats {
    /// TCP connections accepted (including those the security handshake then refused).
    pub connections_accepted: u64,
    /// Connections refused by the security handshake (no or another cluster secret, a
    /// certificate the cluster CA did not sign or an expired one, plaintext against TLS,
    /// garbage): closed before the blob protocol, nothing read or stored.
    pub connections_refused: u64,
    /// PUT requests received (including refused ones).
    pub put_requests: u64,
    /// Blobs stored by a PUT (over the wire or local).
    pub blobs_stored: u64,
    /// GET requests received (including failed ones).
    pub get_requests: u64,
    /// GETs answered with the whole blob.
    pub blobs_served: u64,
    /// GETs of a blob that is not stored.
    pub not_found: u64,
    /// Uploads whose data did not hash to the client's key (nothing was stored).
    pub corrupt_uploads: u64,
    /// Stored files found corrupt when serving them (they were deleted).
    pub corrupt_stored: u64,
    /// PUTs refused for exceeding `max_blob_size`.
    pub too_large: u64,
    /// Connections ended for malformed input (bad preamble, unknown operation, truncation).
    pub protocol_violations: u64,
    /// Connections ended because the peer made no progress within `io_timeout` mid-request.
    pub stalled_connections: u64,
    /// Blob data bytes received.
    pub bytes_received: u64,
    /// Blob data bytes sent.
    pub bytes_sent: u64,
}

#[derive(Default)]
struct Counters {
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    put_requests: AtomicU64,
    blobs_stored: AtomicU64,
    get_requests: AtomicU64,
    blobs_served: AtomicU64,
    not_found: AtomicU64,
    corrupt_uploads: AtomicU64,
    corrupt_stored: AtomicU64,
    too_large: AtomicU64,
    protocol_violations: AtomicU64,
    stalled_connections: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> BlobServerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BlobServerStats {
            connections_accepted: get(&self.connections_accepted),
            connections_refused: get(&self.connections_refused),
            put_requests: get(&self.put_requests),
            blobs_stored: get(&self.blobs_stored),
            get_requests: get(&self.get_requests),
            blobs_served: get(&self.blobs_served),
            not_found: get(&self.not_found),
            corrupt_uploads: get(&self.corrupt_uploads),
            corrupt_stored: get(&self.corrupt_stored),
            too_large: get(&self.too_large),
            protocol_violations: get(&self.protocol_violations),
            stalled_connections: get(&self.stalled_connections),
            bytes_received: get(&self.bytes_received),
            bytes_sent: get(&self.bytes_sent),
        }
    }
}

/// What the accept loop and the connection tasks share. Written only through atomics.
struct Shared {
    config: BlobServerConfig,
    counters: Counters,
    closed: AtomicBool,
}

/// The blob server of a JobManager: a TCP listener on its own port plus a directory of blobs.
///
/// ```no_run
/// # async fn example() -> Result<(), rflink_runtime::blob::BlobError> {
/// use rflink_runtime::blob::{BlobClient, BlobServer, BlobServerConfig};
/// use rflink_runtime::types::JobId;
///
/// let server = BlobServer::start(BlobServerConfig {
///     storage_dir: "/var/lib/rflink/blobs".into(),
///     ..BlobServerConfig::default()
/// })
/// .await?;
/// let job = JobId::generate();
/// let key = BlobClient::default().put(server.address(), job, b"jar bytes".to_vec()).await?;
/// let bytes = BlobClient::default().get(server.address(), job, key).await?;
/// assert_eq!(&bytes[..], b"jar bytes");
/// server.delete_job(job).await?;
/// server.close().await;
/// # Ok(()) }
/// ```
pub struct BlobServer {
    shared: Arc<Shared>,
    address: SocketAddr,
    shutdown: watch::Sender<bool>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for BlobServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobServer")
            .field("address", &self.address)
            .field("storage_dir", &self.shared.config.storage_dir)
            .finish_non_exhaustive()
    }
}

impl BlobServer {
    /// Validates `config`, prepares the storage directory, binds the listener and starts
    /// serving. Must be called within a tokio runtime (actix's included).
    pub async fn start(config: BlobServerConfig) -> Result<BlobServer, BlobError> {
        config.validate()?;
        let root = config.storage_dir.clone();
        blocking(move || {
            create_dir_all_blocking(&root)?;
            let incoming = root.join(INCOMING_DIR);
            remove_dir_all_blocking(&incoming)?;
            create_dir_all_blocking(&incoming)
        })
        .await?;
        let bind = format!("{}:{}", config.bind_host, config.port);
        let listener = TcpListener::bind((config.bind_host.as_str(), config.port))
            .await
            .map_err(|e| BlobError::io(format!("bind the blob server to {bind}"), &e))?;
        let address = listener
            .local_addr()
            .map_err(|e| BlobError::io(format!("read the address bound for {bind}"), &e))?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        info!(
            %address,
            storage_dir = %config.storage_dir.display(),
            max_blob_size = config.max_blob_size,
            security = config.security.describe(),
            "blob server started"
        );
        let shared = Arc::new(Shared {
            config,
            counters: Counters::default(),
            closed: AtomicBool::new(false),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
        Ok(BlobServer {
            shared,
            address,
            shutdown,
            accept_task: Mutex::new(Some(task)),
        })
    }

    /// The address the listener is bound to (with the actual port if the config said 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The port the listener is bound to.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The storage directory.
    pub fn storage_dir(&self) -> &Path {
        &self.shared.config.storage_dir
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &BlobServerConfig {
        &self.shared.config
    }

    /// Where the blob `key` of `job_id` is (or would be) stored.
    pub fn blob_path(&self, job_id: JobId, key: BlobKey) -> PathBuf {
        blob_path(&self.shared.config.storage_dir, job_id, key)
    }

    /// The counters since start.
    pub fn stats(&self) -> BlobServerStats {
        self.shared.counters.snapshot()
    }

    /// Stores a blob from this process (no socket), e.g. offloaded deployment data. Same
    /// invariants as a PUT over the wire.
    pub async fn put(&self, job_id: JobId, data: impl Into<Bytes>) -> Result<BlobKey, BlobError> {
        self.check_open()?;
        let data: Bytes = data.into();
        let max = self.shared.config.max_blob_size;
        if data.len() as u64 > max {
            bump(&self.shared.counters.too_large);
            return Err(BlobError::TooLarge {
                size: data.len() as u64,
                max,
            });
        }
        let root = self.shared.config.storage_dir.clone();
        let key = blocking(move || {
            let key = BlobKey::of(&data);
            let temp = temp_in(&root.join(INCOMING_DIR));
            write_atomically_blocking(&temp, &blob_path(&root, job_id, key), &data)?;
            Ok(key)
        })
        .await?;
        bump(&self.shared.counters.blobs_stored);
        debug!(%job_id, %key, "stored a local blob");
        Ok(key)
    }

    /// Deletes every blob of `job_id` (the job's cleanup). Deleting a job with no blobs is fine.
    /// A GET being served at that moment still completes (the open file outlives the unlink).
    pub async fn delete_job(&self, job_id: JobId) -> Result<(), BlobError> {
        let dir = job_dir(&self.shared.config.storage_dir, job_id);
        let existed = blocking(move || remove_dir_all_blocking(&dir)).await?;
        info!(%job_id, existed, "deleted the job's blobs");
        Ok(())
    }

    /// Stops accepting, aborts open connections and waits until the accept loop has ended.
    /// Idempotent. Stored blobs stay on disk.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
        let task = self
            .accept_task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                error!(address = %self.address, error = %e, "blob server accept loop failed");
            }
            info!(address = %self.address, "blob server closed");
        }
    }

    fn check_open(&self) -> Result<(), BlobError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            Err(BlobError::Closed {
                service: format!("blob server {}", self.address),
            })
        } else {
            Ok(())
        }
    }
}

impl Drop for BlobServer {
    fn drop(&mut self) {
        // Ends the accept loop (and with it every connection) if close() was not awaited.
        self.shutdown.send_replace(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut connections = JoinSet::new();
    while !*shutdown.borrow_and_update() {
        // A free slot first, then accept: extra connections wait in the listen backlog.
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                reap(done);
                continue;
            }
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                reap(done);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "blob server failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        bump(&shared.counters.connections_accepted);
        debug!(%peer, "blob connection accepted");
        connections.spawn(serve_connection(stream, peer, Arc::clone(&shared), permit));
    }
    drop(listener);
    connections.shutdown().await;
    debug!("blob server accept loop ended");
}

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            error!(error = %e, "blob connection task panicked: this is a bug");
        }
    }
}

/// How a connection ends other than by the client closing it between requests.
enum End {
    /// Bad input: answer with this error (best effort), then close.
    Reject(BlobError),
    /// Close without a reply, and warn: the transfer broke midway.
    Abort(String),
    /// Close quietly: the peer went away or idled out.
    Quiet(String),
}

struct Connection {
    stream: SecureStream,
    timeout: Duration,
    peer: SocketAddr,
    shared: Arc<Shared>,
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    // Before anything of the blob protocol: a refused peer is logged (at warn, by `accept`),
    // counted and dropped here, having touched nothing.
    let stream = match shared
        .config
        .security
        .accept(stream, &peer.to_string(), Channel::Blob)
        .await
    {
        Ok(stream) => stream,
        Err(_) => {
            bump(&shared.counters.connections_refused);
            return;
        }
    };
    let mut conn = Connection {
        stream,
        timeout: shared.config.io_timeout,
        peer,
        shared,
    };
    match conn.serve().await {
        Ok(()) => debug!(%peer, "blob connection closed by the client"),
        Err(End::Reject(err)) => {
            warn!(%peer, error = %err, "bad blob request: replying with the error and closing");
            conn.reply_error_and_close(&err).await;
        }
        Err(End::Abort(reason)) => warn!(%peer, %reason, "blob connection broken: closing it"),
        Err(End::Quiet(reason)) => debug!(%peer, %reason, "blob connection closed"),
    }
}

impl Connection {
    fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    async fn serve(&mut self) -> Result<(), End> {
        let mut preamble = [0u8; PREAMBLE_LEN];
        match read_exact_within(&mut self.stream, &mut preamble, self.timeout).await {
            Ok(()) => {}
            Err(ReadFailure::Eof { read: 0 }) => {
                return Err(End::Quiet("closed before sending a preamble".into()))
            }
            Err(failure) => return Err(self.read_failed(failure, "preamble", PREAMBLE_LEN)),
        }
        if let Err(err) = check_preamble(&preamble) {
            bump(&self.counters().protocol_violations);
            return Err(End::Reject(err));
        }
        loop {
            let mut op = [0u8; 1];
            match read_exact_within(&mut self.stream, &mut op, self.timeout).await {
                Ok(()) => {}
                Err(ReadFailure::Eof { .. }) => return Ok(()),
                Err(ReadFailure::TimedOut) => {
                    return Err(End::Quiet(format!(
                        "idle for {:?} between requests",
                        self.timeout
                    )))
                }
                Err(ReadFailure::Io(e)) => return Err(End::Quiet(e.to_string())),
            }
            let request = match Request::header_len(op[0]) {
                Ok(len) => {
                    let mut header = [0u8; GET_HEADER_LEN];
                    let header = &mut header[..len];
                    self.read(header, "request header").await?;
                    Request::decode(op[0], header)
                }
                Err(err) => Err(err),
            };
            match request {
                Ok(Request::Put { job_id, size }) => self.put(job_id, size).await?,
                Ok(Request::Get { job_id, key }) => self.get(job_id, key).await?,
                Err(err) => {
                    bump(&self.counters().protocol_violations);
                    return Err(End::Reject(err));
                }
            }
        }
    }

    async fn put(&mut self, job_id: JobId, size: u64) -> Result<(), End> {
        bump(&self.counters().put_requests);
        let max = self.shared.config.max_blob_size;
        if size > max {
            bump(&self.counters().too_large);
            return Err(End::Reject(BlobError::TooLarge { size, max }));
        }
        self.write(&[STATUS_OK]).await?;

        let root = self.shared.config.storage_dir.clone();
        let mut writer = BlobFileWriter::create(temp_in(&root.join(INCOMING_DIR)));
        let mut write_error = None;
        let mut remaining = size;
        while remaining > 0 {
            let n = remaining.min(CHUNK_SIZE as u64) as usize;
            let mut chunk = vec![0u8; n];
            self.read(&mut chunk, "blob data").await?;
            remaining -= n as u64;
            self.counters()
                .bytes_received
                .fetch_add(n as u64, Ordering::Relaxed);
            // After a disk error keep reading (and dropping) the body, so the reply is in sync.
            if write_error.is_none() {
                if let Err(err) = writer.write(Bytes::from(chunk)).await {
                    write_error = Some(err);
                }
            }
        }
        let mut claimed = [0u8; BlobKey::LEN];
        self.read(&mut claimed, "blob key").await?;
        let claimed = BlobKey::from_bytes(claimed);

        let stored = match write_error {
            Some(err) => Err(err),
            None => {
                writer
                    .commit(claimed, blob_path(&root, job_id, claimed))
                    .await
            }
        };
        match stored {
            Ok(len) => {
                bump(&self.counters().blobs_stored);
                debug!(peer = %self.peer, %job_id, key = %claimed, len, "stored blob");
                let mut reply = Vec::with_capacity(1 + BlobKey::LEN);
                reply.push(STATUS_OK);
                reply.extend_from_slice(claimed.as_bytes());
                self.write(&reply).await
            }
            Err(err) => {
                if matches!(err, BlobError::Corrupt { .. }) {
                    bump(&self.counters().corrupt_uploads);
                }
                warn!(peer = %self.peer, %job_id, error = %err, "blob upload not stored");
                self.write(&encode_error_frame(&err)).await
            }
        }
    }

    async fn get(&mut self, job_id: JobId, key: BlobKey) -> Result<(), End> {
        bump(&self.counters().get_requests);
        let path = blob_path(&self.shared.config.storage_dir, job_id, key);
        let mut reader = read_verified(path, job_id, key);
        let len = match reader.recv().await {
            Some(ReadMsg::Ready(len)) => len,
            Some(ReadMsg::Failed(err)) => {
                match &err {
                    BlobError::NotFound { .. } => bump(&self.counters().not_found),
                    BlobError::Corrupt { .. } => bump(&self.counters().corrupt_stored),
                    _ => {}
                }
                debug!(peer = %self.peer, %job_id, %key, error = %err, "blob not served");
                return self.write(&encode_error_frame(&err)).await;
            }
            Some(ReadMsg::Chunk(_)) | None => {
                let err = BlobError::Io {
                    action: format!("read blob {key} of job {job_id}"),
                    detail: "the file reader stopped early".into(),
                };
                return self.write(&encode_error_frame(&err)).await;
            }
        };
        let mut head = [0u8; 9];
        head[0] = STATUS_OK;
        head[1..].copy_from_slice(&len.to_be_bytes());
        self.write(&head).await?;
        let mut sent = 0u64;
        while let Some(msg) = reader.recv().await {
            match msg {
                ReadMsg::Chunk(chunk) => {
                    self.write(&chunk).await?;
                    sent += chunk.len() as u64;
                    self.counters()
                        .bytes_sent
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                ReadMsg::Failed(err) => {
                    return Err(End::Abort(format!(
                    "serving blob {key} of job {job_id} failed after {sent} of {len} bytes: {err}"
                )))
                }
                ReadMsg::Ready(_) => {
                    return Err(End::Abort("the file reader repeated its header".into()))
                }
            }
        }
        if sent != len {
            return Err(End::Abort(format!(
                "blob {key} of job {job_id} changed while being served: {sent} of {len} bytes"
            )));
        }
        bump(&self.counters().blobs_served);
        debug!(peer = %self.peer, %job_id, %key, len, "served blob");
        Ok(())
    }

    /// Reads exactly `buf`; truncation and stalls are bad input.
    async fn read(&mut self, buf: &mut [u8], what: &str) -> Result<(), End> {
        let len = buf.len();
        read_exact_within(&mut self.stream, buf, self.timeout)
            .await
            .map_err(|failure| self.read_failed(failure, what, len))
    }

    fn read_failed(&self, failure: ReadFailure, what: &str, len: usize) -> End {
        match failure {
            ReadFailure::Eof { read } => {
                bump(&self.counters().protocol_violations);
                End::Reject(BlobError::protocol(format!(
                    "truncated {what}: the connection closed after {read} of {len} bytes"
                )))
            }
            ReadFailure::TimedOut => {
                bump(&self.counters().stalled_connections);
                End::Reject(BlobError::protocol(format!(
                    "{what} stalled: no complete read within {:?}",
                    self.timeout
                )))
            }
            ReadFailure::Io(e) => End::Quiet(format!("reading {what} failed: {e}")),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        match write_all_within(&mut self.stream, bytes, self.timeout).await {
            Ok(()) => Ok(()),
            Err(WriteFailure::TimedOut) => {
                bump(&self.counters().stalled_connections);
                Err(End::Abort(format!(
                    "the client took nothing for {:?}",
                    self.timeout
                )))
            }
            Err(WriteFailure::Io(e)) => Err(End::Quiet(format!("write failed: {e}"))),
        }
    }

    /// Sends the error frame, half-closes, then drains what the client still sends for a short
    /// while, so that closing with unread input (which makes the kernel send a reset) does not
    /// destroy the reply before the client reads it.
    async fn reply_error_and_close(&mut self, err: &BlobError) {
        let budget = self.timeout.min(Duration::from_secs(1));
        let frame = encode_error_frame(err);
        if write_all_within(&mut self.stream, &frame, budget)
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(budget, self.stream.shutdown()).await;
        let drain = async {
            let mut sink = [0u8; 4096];
            let mut drained = 0usize;
            while drained < 256 * 1024 {
                match tokio::io::AsyncReadExt::read(&mut self.stream, &mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        };
        let _ = tokio::time::timeout(budget, drain).await;
    }
}
