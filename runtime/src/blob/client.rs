//! [`BlobClient`]: uploads and downloads blobs over the blob protocol. Flink: `BlobClient`.
//!
//! One connection per call (blobs are large and calls rare; the protocol allows several requests
//! per connection, a pooled client can use that later). Every read and write is bounded by
//! `io_timeout`, the connect by `connect_timeout`. The client trusts nothing it receives: every
//! GET is hashed and compared with the key asked for ([`BlobError::Corrupt`] otherwise), a PUT's
//! returned key is compared with the client's own hash, and a GET's announced size is checked
//! against `max_blob_size` before anything is buffered. Hashing runs on the blocking pool.
//!
//! Every connection runs the security handshake of `config.security` (channel `Blob`) right
//! after the TCP connect, before the preamble; a refusal is a [`BlobError::Security`] carrying
//! the typed `SecurityFailure`. A plaintext client the server closes on without a word gets a
//! [`BlobError::Connection`] that says the server may require security.

use rflink_rpc::security::{Channel, SecureStream, SecurityFailure, TransportSecurity};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpStream, ToSocketAddrs};
use tracing::debug;

use super::error::BlobError;
use super::key::BlobKey;
use super::protocol::{
    check_error_len, decode_error, preamble, read_exact_within, write_all_within, ReadFailure,
    Request, WriteFailure, CHUNK_SIZE, STATUS_ERR, STATUS_OK,
};
use super::server::DEFAULT_MAX_BLOB_SIZE;
use super::store::{blocking, temp_beside, BlobFileWriter};
use crate::types::JobId;

/// Configuration of a [`BlobClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobClientConfig {
    /// How long to wait for the TCP connection (`blob.client.connect.timeout`). Default 10 s.
    pub connect_timeout: Duration,
    /// How long a read or write may make no progress (`blob.client.socket.timeout`).
    /// Default 60 s.
    pub io_timeout: Duration,
    /// The largest blob this client uploads or accepts from a GET. Default 1 GiB.
    pub max_blob_size: u64,
    /// How connections are secured; must match the BlobServer's. Default plaintext.
    pub security: TransportSecurity,
}

impl Default for BlobClientConfig {
    fn default() -> Self {
        BlobClientConfig {
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(60),
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
            security: TransportSecurity::default(),
        }
    }
}

/// Uploads and downloads job blobs. Cheap to clone; holds no connection between calls.
///
/// Addresses are anything tokio can resolve that also prints (for error messages):
/// `SocketAddr`, `"host:port"`, `String`.
#[derive(Debug, Clone, Default)]
pub struct BlobClient {
    config: BlobClientConfig,
}

impl BlobClient {
    /// A client with the given configuration.
    pub fn new(config: BlobClientConfig) -> Self {
        BlobClient { config }
    }

    /// The client's configuration.
    pub fn config(&self) -> &BlobClientConfig {
        &self.config
    }

    /// Uploads `data` as a blob of `job_id` and returns its key, the SHA-256 of `data`.
    ///
    /// Fails with `TooLarge` (from this side or the server's limit, before the data is sent),
    /// `Corrupt` if the data arrived altered (the server stored nothing), `Connection`/`Timeout`,
    /// or `Io` from the server's disk.
    pub async fn put<A>(
        &self,
        addr: A,
        job_id: JobId,
        data: impl Into<Bytes>,
    ) -> Result<BlobKey, BlobError>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        let data: Bytes = data.into();
        let size = data.len() as u64;
        if size > self.config.max_blob_size {
            return Err(BlobError::TooLarge {
                size,
                max: self.config.max_blob_size,
            });
        }
        let hashed = data.clone();
        let key = blocking(move || Ok(BlobKey::of(&hashed))).await?;

        let mut conn = Connection::open(addr, &self.config).await?;
        let mut head = preamble().to_vec();
        Request::Put { job_id, size }.encode(&mut head);
        conn.send(&head, "send a put request").await?;
        conn.recv_status("wait for the go-ahead of a put").await?;
        for chunk in data.chunks(CHUNK_SIZE) {
            conn.send(chunk, "upload blob data").await?;
        }
        conn.send(key.as_bytes(), "send the blob key").await?;
        conn.recv_status("wait for the blob to be stored").await?;
        let mut stored = [0u8; BlobKey::LEN];
        conn.recv(&mut stored, "read the stored key").await?;
        let stored = BlobKey::from_bytes(stored);
        if stored != key {
            return Err(BlobError::Corrupt {
                key,
                actual: stored,
            });
        }
        debug!(address = %conn.address, %job_id, %key, size, "uploaded blob");
        Ok(key)
    }

    /// Downloads the blob `key` of `job_id` into memory, verified against `key`.
    pub async fn get<A>(&self, addr: A, job_id: JobId, key: BlobKey) -> Result<Bytes, BlobError>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        let (mut conn, size) = self.request_get(addr, job_id, key).await?;
        // Grow with the data actually received, never by the announced size alone.
        let mut buf = Vec::with_capacity(size.min(1 << 20) as usize);
        let mut remaining = size;
        while remaining > 0 {
            let n = remaining.min(CHUNK_SIZE as u64) as usize;
            let start = buf.len();
            buf.resize(start + n, 0);
            conn.recv(&mut buf[start..], "download blob data").await?;
            remaining -= n as u64;
        }
        let data = Bytes::from(buf);
        let hashed = data.clone();
        let actual = blocking(move || Ok(BlobKey::of(&hashed))).await?;
        if actual != key {
            return Err(BlobError::Corrupt { key, actual });
        }
        debug!(address = %conn.address, %job_id, %key, size, "downloaded blob");
        Ok(data)
    }

    /// Downloads the blob `key` of `job_id` into the file `dest`, streaming through a temp file
    /// beside it that is renamed to `dest` only once its content hashes to `key` (otherwise it is
    /// deleted and the result is `Corrupt`). Returns the blob's size. `dest`'s directory is
    /// created if missing; an existing `dest` is replaced atomically.
    pub async fn get_to_file<A>(
        &self,
        addr: A,
        job_id: JobId,
        key: BlobKey,
        dest: &Path,
    ) -> Result<u64, BlobError>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        let (mut conn, size) = self.request_get(addr, job_id, key).await?;
        let mut writer = BlobFileWriter::create(temp_beside(dest));
        let mut remaining = size;
        while remaining > 0 {
            let n = remaining.min(CHUNK_SIZE as u64) as usize;
            let mut chunk = vec![0u8; n];
            conn.recv(&mut chunk, "download blob data").await?;
            remaining -= n as u64;
            writer.write(Bytes::from(chunk)).await?;
        }
        let len = writer.commit(key, dest.to_path_buf()).await?;
        debug!(address = %conn.address, %job_id, %key, size, dest = %dest.display(), "downloaded blob");
        Ok(len)
    }

    /// Sends a GET and reads the status and size; the data follows on the returned connection.
    async fn request_get<A>(
        &self,
        addr: A,
        job_id: JobId,
        key: BlobKey,
    ) -> Result<(Connection, u64), BlobError>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        let mut conn = Connection::open(addr, &self.config).await?;
        let mut head = preamble().to_vec();
        Request::Get { job_id, key }.encode(&mut head);
        conn.send(&head, "send a get request").await?;
        conn.recv_status("wait for the blob").await?;
        let mut size = [0u8; 8];
        conn.recv(&mut size, "read the blob size").await?;
        let size = u64::from_be_bytes(size);
        if size > self.config.max_blob_size {
            return Err(BlobError::TooLarge {
                size,
                max: self.config.max_blob_size,
            });
        }
        Ok((conn, size))
    }
}

/// One client connection to a blob server.
struct Connection {
    stream: SecureStream,
    address: String,
    io_timeout: Duration,
    /// Whether this client proves a cluster secret (for the hint when the server hangs up).
    has_secret: bool,
    /// Whether this client runs TLS (for the hint when a TLS server answers plaintext).
    has_tls: bool,
    /// Whether any byte came back on this connection yet.
    answered: bool,
}

impl Connection {
    async fn open<A>(addr: A, config: &BlobClientConfig) -> Result<Connection, BlobError>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        let address = addr.to_string();
        let stream =
            match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    return Err(BlobError::Connection {
                        address,
                        reason: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(BlobError::Timeout {
                        address,
                        operation: "connect".into(),
                        timeout: config.connect_timeout,
                    })
                }
            };
        let _ = stream.set_nodelay(true);
        let stream = config
            .security
            .connect(stream, &address, Channel::Blob)
            .await
            .map_err(|err| BlobError::Security {
                address: address.clone(),
                failure: match err.failure() {
                    Some(failure) => failure.clone(),
                    // Not a handshake error (the system's random source failed): still typed.
                    None => SecurityFailure::Io(err.to_string()),
                },
            })?;
        Ok(Connection {
            stream,
            address,
            io_timeout: config.io_timeout,
            has_secret: config.security.has_secret(),
            has_tls: config.security.has_tls(),
            answered: false,
        })
    }

    /// What to add when the server closed the connection before answering anything: a server
    /// that requires a cluster secret hangs up on a preamble without the handshake.
    fn hint(&self) -> &'static str {
        if !self.has_secret && !self.answered {
            " (the server closed the connection without answering: if it requires \
             security.cluster-secret, configure this client alike)"
        } else {
            ""
        }
    }

    async fn send(&mut self, bytes: &[u8], operation: &str) -> Result<(), BlobError> {
        write_all_within(&mut self.stream, bytes, self.io_timeout)
            .await
            .map_err(|failure| match failure {
                WriteFailure::TimedOut => BlobError::Timeout {
                    address: self.address.clone(),
                    operation: operation.into(),
                    timeout: self.io_timeout,
                },
                WriteFailure::Io(e) => BlobError::Connection {
                    address: self.address.clone(),
                    reason: format!("{operation}: {e}{}", self.hint()),
                },
            })
    }

    async fn recv(&mut self, buf: &mut [u8], operation: &str) -> Result<(), BlobError> {
        let len = buf.len();
        let result = read_exact_within(&mut self.stream, buf, self.io_timeout)
            .await
            .map_err(|failure| match failure {
                ReadFailure::Eof { read } => BlobError::Connection {
                    address: self.address.clone(),
                    reason: format!(
                        "{operation}: the server closed the connection after {read} of {len} \
                         bytes{}",
                        if read == 0 { self.hint() } else { "" }
                    ),
                },
                ReadFailure::TimedOut => BlobError::Timeout {
                    address: self.address.clone(),
                    operation: operation.into(),
                    timeout: self.io_timeout,
                },
                ReadFailure::Io(e) => BlobError::Connection {
                    address: self.address.clone(),
                    reason: format!("{operation}: {e}{}", self.hint()),
                },
            });
        self.answered = true;
        result
    }

    /// Reads a status: `Ok` for OK, the server's typed error for ERR.
    async fn recv_status(&mut self, operation: &str) -> Result<(), BlobError> {
        let first = !self.answered;
        let mut status = [0u8; 1];
        self.recv(&mut status, operation).await?;
        match status[0] {
            STATUS_OK => Ok(()),
            STATUS_ERR => {
                let mut len = [0u8; 4];
                self.recv(&mut len, operation).await?;
                let len = check_error_len(u32::from_be_bytes(len))?;
                let mut payload = vec![0u8; len];
                self.recv(&mut payload, operation).await?;
                Err(decode_error(&payload).unwrap_or_else(|malformed| malformed))
            }
            // 0x15 starts a TLS alert record: a TLS server refusing this plaintext client.
            0x15 if first && !self.has_tls => Err(BlobError::protocol(format!(
                "{operation}: {} answered with what looks like a TLS alert: the server runs \
                 internal TLS (security.ssl.internal.enabled), this client does not",
                self.address
            ))),
            other => Err(BlobError::protocol(format!(
                "{operation}: unknown status byte 0x{other:02x} from {}",
                self.address
            ))),
        }
    }
}
