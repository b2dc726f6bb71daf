//! [`BlobCache`]: a TaskManager's local copies of job blobs. Flink: `PermanentBlobCache`.
//!
//! ## What it guarantees
//!
//! * **Verified files.** [`BlobCache::get_file`] returns the path of a local file whose content
//!   hashes to the key, checked at that call: a file found corrupt on local disk is deleted and
//!   downloaded again. (This re-hashes the file on every call; Flink checks only at start-up.)
//! * **One download per blob.** Concurrent calls for the same `(job, key)` share one fetch (one
//!   verification, at most one download): the first caller spawns it as a task (so it completes
//!   even if that caller is cancelled), later callers join it, and every caller gets its result.
//! * **Reference-counted jobs.** A job's blobs may be fetched while it is registered
//!   ([`register_job`](BlobCache::register_job)); when its count drops to 0
//!   ([`release_job`](BlobCache::release_job)) a timer deletes its directory after
//!   `cleanup_interval` (Flink's `blob.service.cleanup.interval`), unless the job is registered
//!   again in between, which keeps its files.
//! * **Retries.** Failed downloads that may succeed on retry ([`BlobError::is_retryable`]: a
//!   corrupt transfer, a broken connection, a timeout) are retried up to `fetch_retries` times
//!   (Flink's `blob.fetch.retries`) with a linear backoff; `NotFound` is final at once.
//!
//! ## Shared state and locking
//!
//! The cache is a handle (`Clone`) on one shared state behind a `std::sync::Mutex` that is never
//! held across an await: job reference counts, the fetches in flight. Each job also has an async
//! `RwLock` over its directory: fetches hold it for reading, the cleanup for writing, so a
//! directory is never deleted under a download and a download never writes into a directory being
//! deleted. Each release bumps the job's *epoch*; a cleanup timer acts only if the job's epoch is
//! still the one it was started with and its count is still 0, checked again after taking the
//! directory lock.
//!
//! ## Lifecycle
//!
//! [`BlobCache::new`] creates `storage_dir` and deletes `job_*` directories left there by a
//! previous process (no job is registered yet, so nothing would ever clean them): every cache
//! needs a storage directory of its own. [`BlobCache::close`] (TaskManager shutdown) cancels the
//! cleanup timers and deletes every job directory, waiting for fetches in flight.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::{watch, RwLock};
use tracing::{debug, info, warn};

use super::client::{BlobClient, BlobClientConfig};
use super::error::BlobError;
use super::key::BlobKey;
use super::store::{
    blob_path, blocking, create_dir_all_blocking, hash_file_blocking, job_dir,
    remove_dir_all_blocking, remove_file_blocking,
};
use crate::types::JobId;

/// Configuration of a [`BlobCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobCacheConfig {
    /// Where cached blobs are stored; one directory per cache (`blob.storage.directory`).
    /// Default `<temp dir>/rflink-blob-cache`.
    pub storage_dir: PathBuf,
    /// How long a released job's blobs are kept in case it is registered again
    /// (`blob.service.cleanup.interval`). Default 1 h.
    pub cleanup_interval: Duration,
    /// How often a failed download is retried if the error is retryable (`blob.fetch.retries`).
    /// Default 5.
    pub fetch_retries: u32,
    /// Wait before retry *n* is `n * retry_backoff`. Default 100 ms.
    pub retry_backoff: Duration,
    /// How downloads talk to the server.
    pub client: BlobClientConfig,
}

impl Default for BlobCacheConfig {
    fn default() -> Self {
        BlobCacheConfig {
            storage_dir: std::env::temp_dir().join("rflink-blob-cache"),
            cleanup_interval: Duration::from_secs(3600),
            fetch_retries: 5,
            retry_backoff: Duration::from_millis(100),
            client: BlobClientConfig::default(),
        }
    }
}

impl BlobCacheConfig {
    /// Checks every value, reporting all problems at once as [`BlobError::InvalidConfig`].
    pub fn validate(&self) -> Result<(), BlobError> {
        let mut problems = Vec::new();
        if self.storage_dir.as_os_str().is_empty() {
            problems.push("storage directory must not be empty");
        }
        if self.client.io_timeout.is_zero() {
            problems.push("client i/o timeout must be positive");
        }
        if self.client.connect_timeout.is_zero() {
            problems.push("client connect timeout must be positive");
        }
        if self.client.max_blob_size == 0 {
            problems.push("client max blob size must be at least 1 byte");
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

/// Counters of a [`BlobCache`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobCacheStats {
    /// Calls of `get_file`.
    pub requests: u64,
    /// Calls that joined a fetch already in flight for the same blob.
    pub joined: u64,
    /// Fetches served from a verified local file.
    pub local_hits: u64,
    /// Successful downloads.
    pub downloads: u64,
    /// Download attempts, failed ones included.
    pub download_attempts: u64,
    /// Local files found corrupt (deleted and downloaded again).
    pub corrupt_local: u64,
    /// Cleanup timers that fired (whether or not they deleted anything).
    pub cleanup_checks: u64,
    /// Job directories deleted by a cleanup.
    pub jobs_cleaned: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    joined: AtomicU64,
    local_hits: AtomicU64,
    downloads: AtomicU64,
    download_attempts: AtomicU64,
    corrupt_local: AtomicU64,
    cleanup_checks: AtomicU64,
    jobs_cleaned: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

type SharedFetch = Shared<BoxFuture<'static, Result<PathBuf, BlobError>>>;

struct JobEntry {
    /// Registrations not yet released.
    refs: usize,
    /// Bumped by every register and by the release that reaches 0; a cleanup timer acts only if
    /// the epoch is still the one it was started with.
    epoch: u64,
    /// Held for reading by fetches, for writing by the cleanup of the job's directory.
    dir_lock: Arc<RwLock<()>>,
}

#[derive(Default)]
struct State {
    jobs: HashMap<JobId, JobEntry>,
    fetches: HashMap<(JobId, BlobKey), SharedFetch>,
    closed: bool,
}

struct Inner {
    config: BlobCacheConfig,
    client: BlobClient,
    server_address: Mutex<String>,
    state: Mutex<State>,
    counters: Counters,
    /// Set to `true` by `close`; dropped with the last handle. Cleanup timers stop on either.
    shutdown: watch::Sender<bool>,
    runtime: tokio::runtime::Handle,
}

/// A TaskManager's cache of job blobs, downloaded from the [`BlobServer`](super::BlobServer).
/// Cheap to clone: clones share one cache.
#[derive(Clone)]
pub struct BlobCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BlobCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobCache")
            .field("storage_dir", &self.inner.config.storage_dir)
            .field("server_address", &self.server_address())
            .finish_non_exhaustive()
    }
}

impl BlobCache {
    /// Creates the cache: validates `config`, creates `storage_dir` and removes job directories a
    /// previous process left in it. `server_address` is the blob server's `host:port` (it can be
    /// changed later with [`set_server_address`](Self::set_server_address)). Must be called within
    /// a tokio runtime, whose handle the cache keeps for its timers and fetch tasks.
    pub async fn new(
        config: BlobCacheConfig,
        server_address: impl ToString,
    ) -> Result<BlobCache, BlobError> {
        config.validate()?;
        let root = config.storage_dir.clone();
        let removed = blocking(move || {
            create_dir_all_blocking(&root)?;
            remove_stale_job_dirs(&root)
        })
        .await?;
        if removed > 0 {
            info!(
                storage_dir = %config.storage_dir.display(),
                removed, "removed blob directories left by a previous process"
            );
        }
        let (shutdown, _) = watch::channel(false);
        Ok(BlobCache {
            inner: Arc::new(Inner {
                client: BlobClient::new(config.client.clone()),
                config,
                server_address: Mutex::new(server_address.to_string()),
                state: Mutex::new(State::default()),
                counters: Counters::default(),
                shutdown,
                runtime: tokio::runtime::Handle::current(),
            }),
        })
    }

    /// The blob server downloads go to.
    pub fn server_address(&self) -> String {
        lock(&self.inner.server_address).clone()
    }

    /// Points later downloads (and retries of running ones) at another blob server, e.g. after
    /// the TaskManager registered at a new leader.
    pub fn set_server_address(&self, server_address: impl ToString) {
        *lock(&self.inner.server_address) = server_address.to_string();
    }

    /// The storage directory.
    pub fn storage_dir(&self) -> &Path {
        &self.inner.config.storage_dir
    }

    /// The directory holding `job_id`'s cached blobs.
    pub fn job_dir(&self, job_id: JobId) -> PathBuf {
        job_dir(&self.inner.config.storage_dir, job_id)
    }

    /// The counters since creation.
    pub fn stats(&self) -> BlobCacheStats {
        let c = &self.inner.counters;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BlobCacheStats {
            requests: get(&c.requests),
            joined: get(&c.joined),
            local_hits: get(&c.local_hits),
            downloads: get(&c.downloads),
            download_attempts: get(&c.download_attempts),
            corrupt_local: get(&c.corrupt_local),
            cleanup_checks: get(&c.cleanup_checks),
            jobs_cleaned: get(&c.jobs_cleaned),
        }
    }

    /// Registers a user of `job_id`'s blobs (a task of the job). Cancels a pending cleanup of the
    /// job, so its files are kept.
    pub fn register_job(&self, job_id: JobId) -> Result<(), BlobError> {
        let mut state = lock(&self.inner.state);
        if state.closed {
            return Err(self.inner.closed());
        }
        let entry = state.jobs.entry(job_id).or_insert_with(|| JobEntry {
            refs: 0,
            epoch: 0,
            dir_lock: Arc::new(RwLock::new(())),
        });
        entry.refs += 1;
        entry.epoch += 1;
        debug!(%job_id, refs = entry.refs, "registered job with the blob cache");
        Ok(())
    }

    /// Releases one registration of `job_id`. When none is left, the job's directory is deleted
    /// after `cleanup_interval` unless the job is registered again first. Releasing a job that is
    /// not registered is an error (and a `warn`): it would otherwise hide a double release.
    pub fn release_job(&self, job_id: JobId) -> Result<(), BlobError> {
        let epoch = {
            let mut state = lock(&self.inner.state);
            let entry = match state.jobs.get_mut(&job_id) {
                Some(entry) if entry.refs > 0 => entry,
                _ => {
                    warn!(%job_id, "release of a job that is not registered with the blob cache");
                    return Err(BlobError::UnknownJob { job_id });
                }
            };
            entry.refs -= 1;
            debug!(%job_id, refs = entry.refs, "released job in the blob cache");
            if entry.refs > 0 {
                return Ok(());
            }
            entry.epoch += 1;
            entry.epoch
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let mut shutdown = self.inner.shutdown.subscribe();
        let interval = self.inner.config.cleanup_interval;
        self.inner.runtime.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            if let Some(inner) = weak.upgrade() {
                inner.cleanup(job_id, epoch).await;
            }
        });
        Ok(())
    }

    /// The path of a local, verified copy of blob `key` of `job_id`, downloading it if needed.
    /// The job must be registered. The file stays until the job is cleaned up; do not modify it.
    pub async fn get_file(&self, job_id: JobId, key: BlobKey) -> Result<PathBuf, BlobError> {
        bump(&self.inner.counters.requests);
        let fetch = {
            let mut state = lock(&self.inner.state);
            if state.closed {
                return Err(self.inner.closed());
            }
            let dir_lock = match state.jobs.get(&job_id) {
                Some(entry) if entry.refs > 0 => Arc::clone(&entry.dir_lock),
                _ => return Err(BlobError::UnknownJob { job_id }),
            };
            if let Some(fetch) = state.fetches.get(&(job_id, key)) {
                bump(&self.inner.counters.joined);
                fetch.clone()
            } else {
                // Spawned while the state lock is held: the task removes its own entry under the
                // same lock when it ends, so that removal cannot precede this insert.
                let task = self.inner.runtime.spawn(fetch_task(
                    Arc::clone(&self.inner),
                    job_id,
                    key,
                    dir_lock,
                ));
                let fetch: SharedFetch = async move {
                    match task.await {
                        Ok(result) => result,
                        Err(join) => Err(BlobError::Io {
                            action: format!("fetch blob {key} of job {job_id}"),
                            detail: join.to_string(),
                        }),
                    }
                }
                .boxed()
                .shared();
                state.fetches.insert((job_id, key), fetch.clone());
                fetch
            }
        };
        fetch.await
    }

    /// Shuts the cache down (TaskManager shutdown): later calls fail with `Closed`, cleanup timers
    /// stop, and every job directory is deleted once the fetches in flight for it have ended.
    pub async fn close(&self) {
        let jobs: Vec<(JobId, Arc<RwLock<()>>)> = {
            let mut state = lock(&self.inner.state);
            if state.closed {
                return;
            }
            state.closed = true;
            state
                .jobs
                .drain()
                .map(|(job_id, entry)| (job_id, entry.dir_lock))
                .collect()
        };
        self.inner.shutdown.send_replace(true);
        for (job_id, dir_lock) in jobs {
            let _exclusive = dir_lock.write().await;
            let dir = self.job_dir(job_id);
            if let Err(err) = blocking(move || remove_dir_all_blocking(&dir)).await {
                warn!(%job_id, error = %err, "could not delete the job's cached blobs");
            }
        }
        info!(storage_dir = %self.inner.config.storage_dir.display(), "blob cache closed");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent across a panic (no invariant spans two statements), so a
    // poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Deletes `job_*` directories (and partial downloads in them) under `root`.
fn remove_stale_job_dirs(root: &Path) -> Result<usize, BlobError> {
    let entries = std::fs::read_dir(root)
        .map_err(|e| BlobError::io(format!("list {}", root.display()), &e))?;
    let mut removed = 0;
    for entry in entries.flatten() {
        let is_job_dir = entry.file_name().to_string_lossy().starts_with("job_")
            && entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_job_dir && remove_dir_all_blocking(&entry.path())? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// One fetch of one blob, shared by every concurrent `get_file` for it.
async fn fetch_task(
    inner: Arc<Inner>,
    job_id: JobId,
    key: BlobKey,
    dir_lock: Arc<RwLock<()>>,
) -> Result<PathBuf, BlobError> {
    let _shared_dir = dir_lock.read().await;
    let result = inner.fetch(job_id, key).await;
    // Still holding the directory lock: no cleanup can run between the end of the fetch and
    // the moment later callers stop joining it.
    lock(&inner.state).fetches.remove(&(job_id, key));
    result
}

impl Inner {
    fn closed(&self) -> BlobError {
        BlobError::Closed {
            service: format!("blob cache {}", self.config.storage_dir.display()),
        }
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    async fn fetch(&self, job_id: JobId, key: BlobKey) -> Result<PathBuf, BlobError> {
        let path = blob_path(&self.config.storage_dir, job_id, key);
        let checked = path.clone();
        match blocking(move || hash_file_blocking(&checked)).await? {
            Some((actual, _)) if actual == key => {
                bump(&self.counters.local_hits);
                return Ok(path);
            }
            Some((actual, _)) => {
                warn!(
                    %job_id, %key, %actual, path = %path.display(),
                    "cached blob does not hash to its key: deleting it and downloading it again"
                );
                bump(&self.counters.corrupt_local);
                let corrupt = path.clone();
                blocking(move || remove_file_blocking(&corrupt)).await?;
            }
            None => {}
        }
        let mut attempt: u32 = 0;
        loop {
            if self.is_closed() {
                return Err(self.closed());
            }
            attempt += 1;
            bump(&self.counters.download_attempts);
            let address = lock(&self.server_address).clone();
            match self
                .client
                .get_to_file(address.as_str(), job_id, key, &path)
                .await
            {
                Ok(size) => {
                    bump(&self.counters.downloads);
                    debug!(%job_id, %key, size, attempt, "cached blob");
                    return Ok(path);
                }
                Err(err) if err.is_retryable() && attempt <= self.config.fetch_retries => {
                    warn!(
                        %job_id, %key, %address, attempt, error = %err,
                        "blob download failed; retrying"
                    );
                    let mut shutdown = self.shutdown.subscribe();
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.retry_backoff * attempt) => {}
                        _ = shutdown.changed() => return Err(self.closed()),
                    }
                }
                Err(err) => {
                    warn!(%job_id, %key, %address, attempt, error = %err, "blob download failed");
                    return Err(err);
                }
            }
        }
    }

    async fn cleanup(&self, job_id: JobId, epoch: u64) {
        bump(&self.counters.cleanup_checks);
        let releasable = |state: &State| matches!(state.jobs.get(&job_id), Some(e) if e.refs == 0 && e.epoch == epoch);
        let dir_lock = {
            let state = lock(&self.state);
            if !releasable(&state) {
                debug!(%job_id, "job registered again: keeping its cached blobs");
                return;
            }
            match state.jobs.get(&job_id) {
                Some(entry) => Arc::clone(&entry.dir_lock),
                None => return,
            }
        };
        let _exclusive = dir_lock.write().await;
        if !releasable(&lock(&self.state)) {
            debug!(%job_id, "job registered again: keeping its cached blobs");
            return;
        }
        let dir = job_dir(&self.config.storage_dir, job_id);
        match blocking(move || remove_dir_all_blocking(&dir)).await {
            Ok(existed) => {
                bump(&self.counters.jobs_cleaned);
                info!(%job_id, existed, "deleted the cached blobs of a released job");
            }
            Err(err) => {
                warn!(%job_id, error = %err, "could not delete a released job's cached blobs")
            }
        }
        let mut state = lock(&self.state);
        if releasable(&state) {
            state.jobs.remove(&job_id);
        }
    }
}
