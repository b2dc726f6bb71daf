//! [`BlobError`], the one error type of the blob service (server, client and cache).
//!
//! It crosses the blob wire (the server answers a request with one, encoded by
//! [`protocol`](super::protocol) as a code byte plus typed fields, and the client decodes it back
//! into the same variant), and it may travel inside an RPC reply later, so it derives
//! `Serialize`/`Deserialize`, is `Clone` (a shared download hands the same error to every waiter)
//! and carries plain data: ids, keys, sizes and strings, not boxed sources.

use std::time::Duration;

use rflink_rpc::security::SecurityFailure;
use serde::{Deserialize, Serialize};

use super::key::BlobKey;
use crate::types::JobId;

/// What went wrong with a blob, on either side of the wire.
///
/// Flink names are given where a variant mirrors a Flink exception.
// The fields are named for what they hold; each variant's doc says when it happens.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum BlobError {
    /// No blob with that key is stored for that job (never uploaded, or the job was cleaned up).
    /// Flink: `FileNotFoundException` from `BlobServer.getFileInternal`.
    #[error("blob {key} of job {job_id} not found")]
    NotFound { job_id: JobId, key: BlobKey },

    /// Content that should have had the hash `key` hashes to `actual`: a byte changed in transit or
    /// on disk. Flink: `IOException("data corruption")` from `BlobInputStream`.
    #[error("data corruption: blob {key} hashes to {actual}")]
    Corrupt { key: BlobKey, actual: BlobKey },

    /// A blob larger than the receiver accepts (`max_blob_size`), refused before any buffer or
    /// file was allocated for it.
    #[error("blob of {size} bytes exceeds the maximum blob size of {max} bytes")]
    TooLarge { size: u64, max: u64 },

    /// A file system operation failed; `action` says which and on what path.
    #[error("blob i/o failed: could not {action}: {detail}")]
    Io { action: String, detail: String },

    /// The peer broke the wire protocol (bad magic, unknown operation, truncated or inconsistent
    /// frame). The connection is closed after it.
    #[error("blob protocol violation: {detail}")]
    Protocol { detail: String },

    /// The peer speaks another version of the blob protocol.
    #[error("blob protocol version mismatch: this side speaks {supported}, the peer sent {found}")]
    VersionMismatch { supported: u16, found: u16 },

    /// The blob server could not be reached, or the connection broke mid-transfer.
    #[error("connection to blob server {address} failed: {reason}")]
    Connection { address: String, reason: String },

    /// The connection's security handshake (cluster secret, mutual TLS) with the blob server
    /// failed: this client and the server do not share `security.cluster-secret` or the
    /// cluster CA, or one side runs TLS and the other does not. Nothing of the blob protocol was
    /// sent. `failure` says which check failed, on which side.
    #[error("secure connection to blob server {address} failed: {failure}")]
    Security {
        address: String,
        failure: SecurityFailure,
    },

    /// The peer did not send or accept data within the I/O timeout.
    #[error("{operation} with blob server {address} timed out after {timeout:?}")]
    Timeout {
        address: String,
        operation: String,
        timeout: Duration,
    },

    /// The blob cache was asked for a blob of a job that is not registered with it
    /// ([`BlobCache::register_job`](super::BlobCache::register_job)), or was released and
    /// cleaned up.
    #[error("job {job_id} is not registered with the blob cache")]
    UnknownJob { job_id: JobId },

    /// The blob server or cache was closed.
    #[error("{service} is closed")]
    Closed { service: String },

    /// A configuration value is out of range.
    #[error("invalid blob configuration: {detail}")]
    InvalidConfig { detail: String },
}

impl BlobError {
    /// Whether trying the same operation again may succeed: transfer corruption, a broken or slow
    /// connection (a security handshake that timed out or broke included), a failing disk. A
    /// missing blob, an oversized one, a protocol or version mismatch, a refused security
    /// handshake, a closed service or bad configuration will fail again.
    pub fn is_retryable(&self) -> bool {
        match self {
            BlobError::Corrupt { .. }
            | BlobError::Connection { .. }
            | BlobError::Timeout { .. }
            | BlobError::Io { .. } => true,
            BlobError::Security { failure, .. } => matches!(
                failure,
                SecurityFailure::Timeout(_) | SecurityFailure::Io(_)
            ),
            _ => false,
        }
    }

    /// An [`Io`](BlobError::Io) error for `action` (a verb phrase naming the path).
    pub(crate) fn io(action: impl Into<String>, err: &std::io::Error) -> Self {
        BlobError::Io {
            action: action.into(),
            detail: err.to_string(),
        }
    }

    /// A [`Protocol`](BlobError::Protocol) error.
    pub(crate) fn protocol(detail: impl Into<String>) -> Self {
        BlobError::Protocol {
            detail: detail.into(),
        }
    }
}
