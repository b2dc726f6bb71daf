//! The blob service: job artifacts (libraries, offloaded deployment data) stored by the
//! JobManager and fetched by TaskManagers over a TCP port of its own, never through RPC frames.
//! Flink: `org.apache.flink.runtime.blob` (`BlobServer`, `BlobClient`, `PermanentBlobCache`).
//!
//! ## The pieces
//!
//! * [`BlobKey`]: the SHA-256 of a blob's content (64 hex characters). Every blob is a job-scoped
//!   permanent blob addressed by `(JobId, BlobKey)`. Unlike Flink's key (SHA-1, a type byte and
//!   16 random bytes) equal content of one job has one key and is stored once.
//! * [`BlobServer`] (JobManager): a listener, a task per connection, files under
//!   `storage_dir/job_<job id>/<key>`; [`BlobServer::delete_job`] is the job's cleanup.
//! * [`BlobClient`]: `put` (returns the key), `get` (to memory), `get_to_file`.
//! * [`BlobCache`] (TaskManager): verified local copies, one download per blob however many tasks
//!   ask at once, per-job reference counts and delayed cleanup.
//! * [`BlobError`]: one typed error for all of them, which crosses the wire with its variant and
//!   fields intact.
//!
//! The wire protocol is specified at the top of [`protocol`]: a preamble (`RFBL`, version), then
//! length-prefixed PUT (header, go-ahead, data, the client's key) and GET (header; status, size,
//! data) exchanges, and error frames made of a code byte plus the variant's fields.
//!
//! ## Security
//!
//! Every blob connection runs the security handshake of `rflink_rpc::security` (channel
//! `Blob`) before the preamble: the BlobServer accepts through
//! [`BlobServerConfig::security`], clients dial through [`BlobClientConfig::security`] (the
//! BlobCache's client with the TaskExecutor's settings). It proves the cluster secret (HMAC
//! challenge-response over fresh nonces from both sides, so nothing can be replayed) and/or
//! runs mutual TLS with the cluster CA. A peer without the secret, with another one, with a
//! foreign or expired certificate, or sending garbage is refused by the server with one `warn`
//! line, counted in [`BlobServerStats::connections_refused`] and closed before a byte of the
//! protocol is read: it stores and reads nothing, and the server goes on serving everyone else.
//! A client whose handshake fails gets [`BlobError::Security`] with the typed failure. Writers
//! flush after each message (TLS may keep bytes in its session until a flush).
//!
//! ## Invariants
//!
//! 1. **A stored file is complete and was verified when written.** Uploads and downloads stream
//!    into a temp file while hashing and are renamed into place only if the hash equals the key
//!    (the `store` module describes the layout). Nobody ever sees a partial blob under a key's name.
//! 2. **Every read is verified again.** The server re-hashes a file before serving it (a corrupt
//!    file is deleted and answered with `Corrupt`); the client hashes every GET; the cache
//!    re-hashes its local file on every `get_file`. A flipped byte, in transit or on disk, is a
//!    typed [`BlobError::Corrupt`], never wrong bytes handed to a task.
//! 3. **Bounded and non-blocking.** Sizes are checked against `max_blob_size` before anything is
//!    allocated or sent; every socket read and write has a timeout; data moves in 64 KiB chunks
//!    through bounded channels; file I/O and hashing of whole blobs run on tokio's blocking pool,
//!    never on an async worker or an actor.
//! 4. **Bad input stays local.** A malformed, oversized, truncated or stalled request ends only
//!    its own connection (with a typed error frame when one can still be sent), is logged at
//!    `warn` with the peer, counted in [`BlobServerStats`], and never panics.
//!
//! Not here (yet): transient blobs (REST log downloads), an HA blob store, and Flink's size
//! tracker for offloaded deployment data in the cache.
#![warn(missing_docs, clippy::unwrap_used)]

mod cache;
mod client;
mod error;
mod key;
pub mod protocol;
mod server;
mod store;

pub use cache::{BlobCache, BlobCacheConfig, BlobCacheStats};
pub use client::{BlobClient, BlobClientConfig};
pub use error::BlobError;
pub use key::{BlobKey, ParseBlobKeyError};
pub use server::{BlobServer, BlobServerConfig, BlobServerStats, DEFAULT_MAX_BLOB_SIZE};
