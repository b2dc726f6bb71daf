//! `high-availability.type: etcd`: leader election, leader retrieval and the job metadata store
//! of one cluster on etcd (v3 API), implementing [`HaServices`] of `rflink-runtime`. Flink's
//! Kubernetes and ZooKeeper HA services do the same on their coordination services.
//!
//! Everything of one cluster lives under its namespace (`/rflink/<cluster-id>/`):
//!
//! - `<namespace>leader`: the election key. A contender wins by creating it (a transaction that
//!   compares its create revision with 0) attached to a lease of its own; the value is first a
//!   placeholder naming the contender and then the published [`ClusterLeader`] (JSON). Revoking
//!   or expiring the lease deletes it, which wakes the standbys.
//! - `<namespace><key>` for the metadata keys of [`rflink_runtime::highavailability::keys`]: not
//!   attached to any lease (they outlive leaders), written only by transactions that compare the
//!   election key's lease with the writer's, so etcd itself refuses a deposed leader's writes.
//!
//! A leader keeps its lease alive every third of its TTL and steps down on its own clock: its
//! [`Leadership::lost`] fires a margin *before* etcd could expire the lease, measured from the
//! sending of the last answered keep-alive, so it has stopped before a standby can win, even
//! when etcd cannot be reached at all.

mod keeper;
mod retrieval;
pub mod testing;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use futures::future::BoxFuture;
use rflink_rpc::AbstractId;
use rflink_runtime::highavailability::{ClusterLeader, HaError, HaServices, KeyValues, Leadership};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// The relative key of the election; no metadata key may be named so.
const LEADER_KEY: &str = "leader";

/// The leader key's value between winning the election and publishing: not a
/// [`ClusterLeader`], read as "no leader published yet" without a warning.
const PLACEHOLDER_PREFIX: &str = "rflink: elected, not yet published: ";

/// HTTP/2 pings on open streams (the leader watch), so a connection that died silently is
/// noticed and the watch re-established. etcd refuses pings more frequent than every 5 s.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(10);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// First and longest pause between retries after an etcd error.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where and how to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdHaConfig {
    /// The etcd client URLs (`http://host:2379`; `host:2379` works too).
    pub endpoints: Vec<String>,
    /// The prefix of every key of this cluster, e.g. `/rflink/default/`. A missing trailing `/`
    /// is added.
    pub namespace: String,
    /// The leader lease's TTL: how long a leader that cannot reach etcd keeps its leadership
    /// (less a margin), and how long a standby waits after a leader died. Rounded up to whole
    /// seconds, at least 2 s.
    pub lease_ttl: Duration,
    /// Bounds connecting, and with `lease_ttl` every request.
    pub connect_timeout: Duration,
}

impl EtcdHaConfig {
    /// The lease TTL in etcd's whole seconds: rounded up, at least 2.
    pub fn lease_ttl_secs(&self) -> i64 {
        let secs = self.lease_ttl.as_secs() + u64::from(self.lease_ttl.subsec_nanos() > 0);
        i64::try_from(secs).unwrap_or(i64::MAX).max(2)
    }
}

/// High-availability services on etcd. One per process and cluster; share it as an `Arc`.
pub struct EtcdHaServices {
    inner: Arc<Inner>,
}

/// A leadership this process holds.
struct Held {
    lease_id: i64,
    lost: Arc<watch::Sender<bool>>,
    keeper: Option<AbortHandle>,
}

/// The state shared by the services' handle and their tasks.
pub(crate) struct Inner {
    client: Client,
    /// The endpoints, comma separated, for errors and logs.
    endpoints: String,
    namespace: String,
    leader_key: String,
    lease_ttl_secs: i64,
    lease_ttl: Duration,
    /// Bounds every unary request.
    request_timeout: Duration,
    leader: watch::Sender<Option<ClusterLeader>>,
    held: Mutex<HashMap<AbstractId, Held>>,
    closed: watch::Sender<bool>,
    /// The leader watch task.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl EtcdHaServices {
    /// Connects (bounded by `connect_timeout`; [`HaError::Unavailable`] naming the endpoints
    /// otherwise), reads the current leader and starts watching it.
    pub async fn connect(config: EtcdHaConfig) -> Result<Arc<Self>, HaError> {
        let endpoints = config.endpoints.join(",");
        let unavailable = |reason: String| {
            tracing::warn!(endpoints = %endpoints, %reason, "cannot connect to etcd");
            HaError::Unavailable {
                endpoints: endpoints.clone(),
                reason,
            }
        };
        if config.endpoints.is_empty() {
            return Err(unavailable("no etcd endpoints configured".into()));
        }
        let mut namespace = config.namespace.clone();
        if !namespace.ends_with('/') {
            namespace.push('/');
        }
        let lease_ttl_secs = config.lease_ttl_secs();
        let lease_ttl = Duration::from_secs(lease_ttl_secs.unsigned_abs());
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(HTTP2_PING_INTERVAL, HTTP2_PING_TIMEOUT);
        let leader_key = format!("{namespace}{LEADER_KEY}");
        // The client connects lazily: the first read proves etcd answers, and seeds the leader
        // watch (which continues from its revision, so no change is missed). One bound covers
        // both.
        let connected = tokio::time::timeout(config.connect_timeout, async {
            let client = Client::connect(&config.endpoints, Some(options))
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let first = client
                .kv_client()
                .get(leader_key.clone(), None)
                .await
                .map_err(|e| format!("first read failed: {e}"))?;
            Ok::<_, String>((client, first))
        })
        .await;
        let (client, first) = match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(reason)) => return Err(unavailable(reason)),
            Err(_) => {
                return Err(unavailable(format!(
                    "no answer within {:?}",
                    config.connect_timeout
                )))
            }
        };
        let inner = Arc::new(Inner {
            client,
            endpoints: endpoints.clone(),
            namespace,
            leader_key,
            lease_ttl_secs,
            lease_ttl,
            request_timeout: config.connect_timeout.max(lease_ttl),
            leader: watch::channel(None).0,
            held: Mutex::new(HashMap::new()),
            closed: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
        });
        let revision = inner.apply_leader_read(&first);
        let task = tokio::spawn(retrieval::feed(inner.clone(), Some(revision)));
        lock(&inner.tasks).push(task.abort_handle());
        tracing::info!(endpoints = %endpoints, namespace = %inner.namespace,
            lease_ttl_secs, "connected to etcd");
        Ok(Arc::new(EtcdHaServices { inner }))
    }

    /// Closes the services: every held leadership is given up (its `lost` fires and its lease
    /// is revoked, so a standby wins at once), pending campaigns end with [`HaError::Closed`],
    /// the tasks stop, and [`HaServices::watch_leader`] shows `None`.
    pub async fn close(&self) {
        let leases = self.inner.shut_down("the services were closed");
        let revokes = leases.into_iter().map(|lease| self.inner.revoke(lease));
        for result in futures::future::join_all(revokes).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not revoke a lease on close; it expires");
            }
        }
    }

    /// Stops everything at once and tells etcd nothing: what a crashed process leaves behind.
    /// Held leases are no longer kept alive and expire after their TTL; local leaderships are
    /// marked lost. Dropping the services does the same.
    pub fn abandon(&self) {
        let _ = self.inner.shut_down("the services were abandoned");
    }

    /// The etcd lease behind a leadership this process still holds (for diagnostics and
    /// tests).
    pub fn lease_id(&self, leadership: &Leadership) -> Option<i64> {
        lock(&self.inner.held)
            .get(&leadership.session_id)
            .map(|held| held.lease_id)
    }

    /// The key prefix of this cluster.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The full etcd key of the election.
    pub fn leader_key(&self) -> &str {
        &self.inner.leader_key
    }
}

impl Drop for EtcdHaServices {
    fn drop(&mut self) {
        let _ = self.inner.shut_down("the services were dropped");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Exponential pauses between retries, bounded, so no loop spins on a failing etcd.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Backoff {
            next: BACKOFF_FIRST.min(max),
            max,
        }
    }

    pub(crate) fn current(&self) -> Duration {
        self.next
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_FIRST.min(self.max);
    }
}

/// Revokes a lease granted for a campaign attempt unless disarmed: a campaign dropped between
/// granting and winning (or after winning, before the keeper took over) leaves no leader key
/// behind.
struct LeaseGuard {
    inner: Arc<Inner>,
    lease_id: i64,
    armed: bool,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let inner = self.inner.clone();
        let lease_id = self.lease_id;
        // Without a runtime (dropped at shutdown) the lease simply expires: nobody keeps it
        // alive.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = inner.revoke(lease_id).await;
            });
        }
    }
}

impl Inner {
    pub(crate) fn unavailable(&self, reason: String) -> HaError {
        HaError::Unavailable {
            endpoints: self.endpoints.clone(),
            reason,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    pub(crate) fn leader_key(&self) -> &str {
        &self.leader_key
    }

    pub(crate) fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Runs one etcd request bounded by the request timeout; failures become
    /// [`HaError::Unavailable`] and are logged.
    pub(crate) async fn call<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, HaError> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                tracing::warn!(endpoints = %self.endpoints, error = %e, "etcd: {what} failed");
                Err(self.unavailable(format!("{what}: {e}")))
            }
            Err(_) => {
                tracing::warn!(endpoints = %self.endpoints, timeout = ?self.request_timeout,
                    "etcd: {what}: no answer");
                Err(self.unavailable(format!(
                    "{what}: no answer within {:?}",
                    self.request_timeout
                )))
            }
        }
    }

    fn key(&self, relative: &str) -> Result<String, HaError> {
        if relative == LEADER_KEY {
            return Err(self.unavailable(format!(
                "the key `{LEADER_KEY}` is reserved for the leader election"
            )));
        }
        Ok(format!("{}{relative}", self.namespace))
    }

    /// Publishes a read of the leader key to the watchers; returns the read's revision.
    pub(crate) fn apply_leader_read(&self, response: &etcd_client::GetResponse) -> i64 {
        let leader = response
            .kvs()
            .first()
            .and_then(|kv| self.decode_leader(kv.value()));
        self.set_leader(leader);
        response.header().map_or(0, |h| h.revision())
    }

    /// The leader in a value of the leader key: `None` for the placeholder and (with a warning)
    /// for a value that does not decode.
    pub(crate) fn decode_leader(&self, value: &[u8]) -> Option<ClusterLeader> {
        if value.starts_with(PLACEHOLDER_PREFIX.as_bytes()) {
            return None;
        }
        match ClusterLeader::decode(&self.leader_key, value) {
            Ok(leader) => Some(leader),
            Err(e) => {
                tracing::warn!(error = %e, "the leader key holds no leader; treating it as none");
                None
            }
        }
    }

    pub(crate) fn set_leader(&self, leader: Option<ClusterLeader>) {
        self.leader.send_if_modified(|current| {
            if *current == leader {
                false
            } else {
                tracing::info!(leader = ?leader.as_ref().map(|l| &l.rpc_address),
                    session = ?leader.as_ref().map(|l| l.session_id), "cluster leader changed");
                *current = leader;
                true
            }
        });
    }

    /// Revokes a lease (deleting the keys attached to it); a lease etcd no longer knows is fine.
    pub(crate) async fn revoke(&self, lease_id: i64) -> Result<(), HaError> {
        let mut leases = self.client.lease_client();
        match tokio::time::timeout(self.request_timeout, leases.revoke(lease_id)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.to_string().contains("lease not found") => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(lease_id, error = %e, "etcd: revoking a lease failed");
                Err(self.unavailable(format!("revoke lease {lease_id:x}: {e}")))
            }
            Err(_) => {
                tracing::warn!(lease_id, "etcd: revoking a lease: no answer");
                Err(self.unavailable(format!(
                    "revoke lease {lease_id:x}: no answer within {:?}",
                    self.request_timeout
                )))
            }
        }
    }

    /// Marks a leadership lost for good: forgets it, fires its `lost`, stops its keeper (unless
    /// the keeper itself is stepping down). Returns its lease.
    pub(crate) fn step_down(
        &self,
        session_id: AbstractId,
        reason: &str,
        stop_keeper: bool,
    ) -> Option<i64> {
        let held = lock(&self.held).remove(&session_id)?;
        if stop_keeper {
            if let Some(keeper) = &held.keeper {
                keeper.abort();
            }
        }
        held.lost.send_replace(true);
        tracing::warn!(session = %session_id, lease_id = held.lease_id, reason,
            "leadership lost");
        Some(held.lease_id)
    }

    /// Marks the services closed, stops every task and leadership; returns the held leases.
    fn shut_down(&self, reason: &str) -> Vec<i64> {
        self.closed.send_replace(true);
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        let sessions: Vec<AbstractId> = lock(&self.held).keys().copied().collect();
        let leases = sessions
            .into_iter()
            .filter_map(|session| self.step_down(session, reason, true))
            .collect();
        self.leader.send_replace(None);
        leases
    }

    /// The lease of a leadership still held here, or why not.
    fn lease_of(&self, leadership: &Leadership) -> Result<i64, HaError> {
        if self.is_closed() {
            return Err(HaError::Closed);
        }
        lock(&self.held)
            .get(&leadership.session_id)
            .filter(|held| !*held.lost.borrow())
            .map(|held| held.lease_id)
            .ok_or(HaError::NotLeader {
                session_id: leadership.session_id,
            })
    }

    /// Runs `operations` if the election key is still attached to `lease_id`; etcd refusing
    /// means the leadership is lost (and it is marked so).
    pub(crate) async fn guarded(
        &self,
        session_id: AbstractId,
        lease_id: i64,
        operations: Vec<TxnOp>,
        what: &str,
    ) -> Result<(), HaError> {
        let txn = Txn::new()
            .when([Compare::lease(
                self.leader_key.clone(),
                CompareOp::Equal,
                lease_id,
            )])
            .and_then(operations);
        let mut kv = self.client.kv_client();
        let response = self.call(what, kv.txn(txn)).await?;
        if response.succeeded() {
            return Ok(());
        }
        tracing::warn!(session = %session_id, lease_id,
            "etcd refused {what}: the leader key is no longer this leadership's");
        if let Some(lease) = self.step_down(
            session_id,
            "etcd refused a write guarded by it: the leader key is not its own",
            true,
        ) {
            let _ = self.revoke(lease).await;
        }
        Err(HaError::NotLeader { session_id })
    }

    /// Campaigns until this process wins, the services close, or the future is dropped.
    async fn campaign(self: Arc<Self>, contender: String) -> Result<Leadership, HaError> {
        let mut closed = self.closed.subscribe();
        tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => Err(HaError::Closed),
            result = self.clone().campaign_loop(contender) => result,
        }
    }

    async fn campaign_loop(self: Arc<Self>, contender: String) -> Result<Leadership, HaError> {
        let mut backoff = Backoff::new(BACKOFF_MAX);
        let placeholder = format!("{PLACEHOLDER_PREFIX}{contender}");
        loop {
            if self.is_closed() {
                return Err(HaError::Closed);
            }
            // A fresh lease per attempt: a lease granted before a long wait would have expired
            // by the time the leader key is free (nobody keeps a standby's lease alive).
            let granted_at = Instant::now();
            let mut leases = self.client.lease_client();
            let lease = match self
                .call(
                    "grant a leader lease",
                    leases.grant(self.lease_ttl_secs, None),
                )
                .await
            {
                Ok(lease) => lease,
                Err(_) => {
                    tracing::warn!(%contender, retry_in = ?backoff.current(),
                        "campaign: etcd unavailable; retrying");
                    backoff.wait().await;
                    continue;
                }
            };
            let mut guard = LeaseGuard {
                inner: self.clone(),
                lease_id: lease.id(),
                armed: true,
            };
            let ttl = Duration::from_secs(lease.ttl().max(1).unsigned_abs());
            let txn = Txn::new()
                .when([Compare::create_revision(
                    self.leader_key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(
                    self.leader_key.clone(),
                    placeholder.clone(),
                    Some(PutOptions::new().with_lease(lease.id())),
                )]);
            let mut kv = self.client.kv_client();
            match self.call("campaign transaction", kv.txn(txn)).await {
                Ok(response) if response.succeeded() => {
                    let revision = response.header().map_or(0, |h| h.revision());
                    let leadership =
                        self.install(&contender, lease.id(), ttl, granted_at, revision)?;
                    guard.armed = false;
                    return Ok(leadership);
                }
                Ok(response) => {
                    drop(guard);
                    let read_at = response.header().map_or(0, |h| h.revision());
                    tracing::debug!(%contender, "campaign: another process leads; waiting");
                    if self.wait_leader_key_deleted(read_at + 1).await {
                        backoff.reset();
                    } else {
                        backoff.wait().await;
                    }
                }
                Err(_) => {
                    drop(guard);
                    tracing::warn!(%contender, retry_in = ?backoff.current(),
                        "campaign: etcd unavailable; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Waits until the leader key is deleted at or after revision `from` (a watch from the
    /// revision of the read that found it taken, so a delete in between is not missed), at
    /// most twice the lease TTL (then the caller simply tries again). False on an etcd error.
    async fn wait_leader_key_deleted(&self, from: i64) -> bool {
        let bound = self.lease_ttl * 2;
        let wait = async {
            let mut watches = self.client.watch_client();
            let options = WatchOptions::new().with_start_revision(from);
            let mut stream = match self
                .call(
                    "watch the leader key",
                    watches.watch(self.leader_key.clone(), Some(options)),
                )
                .await
            {
                Ok(stream) => stream,
                Err(_) => return false,
            };
            loop {
                match stream.message().await {
                    // Compacted past `from`: try again, which reads afresh.
                    Ok(Some(response)) if response.canceled() => return true,
                    Ok(Some(response)) => {
                        if response
                            .events()
                            .iter()
                            .any(|e| e.event_type() == etcd_client::EventType::Delete)
                        {
                            return true;
                        }
                    }
                    Ok(None) => return false,
                    Err(e) => {
                        tracing::warn!(endpoints = %self.endpoints, error = %e,
                            "campaign: the watch on the leader key failed");
                        return false;
                    }
                }
            }
        };
        tokio::time::timeout(bound, wait).await.unwrap_or(true)
    }

    /// Records a won leadership and starts keeping it.
    fn install(
        self: &Arc<Self>,
        contender: &str,
        lease_id: i64,
        ttl: Duration,
        granted_at: Instant,
        revision: i64,
    ) -> Result<Leadership, HaError> {
        let session_id = AbstractId::generate();
        let (lost_tx, lost) = watch::channel(false);
        let mut held = lock(&self.held);
        // Checked under the lock `shut_down` takes too: no leadership outlives a close.
        if self.is_closed() {
            return Err(HaError::Closed);
        }
        let keeper = tokio::spawn(keeper::keep(
            self.clone(),
            session_id,
            lease_id,
            ttl,
            granted_at,
            revision,
        ));
        held.insert(
            session_id,
            Held {
                lease_id,
                lost: Arc::new(lost_tx),
                keeper: Some(keeper.abort_handle()),
            },
        );
        tracing::info!(%contender, session = %session_id, lease_id, ttl = ?ttl,
            "won the cluster leadership");
        Ok(Leadership { session_id, lost })
    }
}

impl HaServices for EtcdHaServices {
    fn describe(&self) -> String {
        format!("etcd ({})", self.inner.endpoints)
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn campaign(&self, contender: String) -> BoxFuture<'static, Result<Leadership, HaError>> {
        Box::pin(self.inner.clone().campaign(contender))
    }

    fn resign(&self, leadership: &Leadership) -> BoxFuture<'static, Result<(), HaError>> {
        let inner = self.inner.clone();
        // Lost at once, whether or not the caller awaits the revocation.
        let lease = inner.step_down(leadership.session_id, "resigned", true);
        Box::pin(async move {
            match lease {
                Some(lease) => inner.revoke(lease).await,
                None => Ok(()),
            }
        })
    }

    fn publish_leader(
        &self,
        leadership: &Leadership,
        leader: &ClusterLeader,
    ) -> BoxFuture<'static, Result<(), HaError>> {
        let inner = self.inner.clone();
        let session_id = leadership.session_id;
        let lease = inner.lease_of(leadership);
        let value = leader.encode();
        Box::pin(async move {
            let lease = lease?;
            let put = TxnOp::put(
                inner.leader_key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            );
            inner
                .guarded(session_id, lease, vec![put], "publishing the leader")
                .await
        })
    }

    fn watch_leader(&self) -> watch::Receiver<Option<ClusterLeader>> {
        self.inner.leader.subscribe()
    }

    fn put(
        &self,
        leadership: &Leadership,
        key: String,
        value: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), HaError>> {
        let inner = self.inner.clone();
        let session_id = leadership.session_id;
        let checked = inner
            .lease_of(leadership)
            .and_then(|lease| Ok((lease, inner.key(&key)?)));
        Box::pin(async move {
            let (lease, full) = checked?;
            let put = TxnOp::put(full, value, None);
            inner
                .guarded(session_id, lease, vec![put], &format!("put {key}"))
                .await
        })
    }

    fn delete(
        &self,
        leadership: &Leadership,
        key: String,
    ) -> BoxFuture<'static, Result<(), HaError>> {
        let inner = self.inner.clone();
        let session_id = leadership.session_id;
        let checked = inner
            .lease_of(leadership)
            .and_then(|lease| Ok((lease, inner.key(&key)?)));
        Box::pin(async move {
            let (lease, full) = checked?;
            let delete = TxnOp::delete(full, None);
            inner
                .guarded(session_id, lease, vec![delete], &format!("delete {key}"))
                .await
        })
    }

    fn get(&self, key: String) -> BoxFuture<'static, Result<Option<Vec<u8>>, HaError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            if inner.is_closed() {
                return Err(HaError::Closed);
            }
            let full = inner.key(&key)?;
            let mut kv = inner.client.kv_client();
            let mut response = inner
                .call(&format!("get {key}"), kv.get(full, None))
                .await?;
            Ok(response
                .take_kvs()
                .into_iter()
                .next()
                .map(|kv| kv.into_key_value().1))
        })
    }

    fn list(&self, prefix: String) -> BoxFuture<'static, Result<KeyValues, HaError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            if inner.is_closed() {
                return Err(HaError::Closed);
            }
            let full = format!("{}{prefix}", inner.namespace);
            let mut kv = inner.client.kv_client();
            let options = GetOptions::new().with_prefix();
            let mut response = inner
                .call(&format!("list {prefix}"), kv.get(full, Some(options)))
                .await?;
            let mut entries = Vec::new();
            for kv in response.take_kvs() {
                let (key, value) = kv.into_key_value();
                let key = match String::from_utf8(key) {
                    Ok(key) => key,
                    Err(e) => {
                        return Err(HaError::Corrupt {
                            key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                            reason: "the key is not UTF-8".into(),
                        })
                    }
                };
                if key == inner.leader_key {
                    continue;
                }
                if let Some(relative) = key.strip_prefix(&inner.namespace) {
                    entries.push((relative.to_string(), value));
                }
            }
            // etcd answers ranges in key order already; sorting keeps the promise explicit.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(entries)
        })
    }
}

#[cfg(test)]
mod tests;
