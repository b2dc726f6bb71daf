//! Keeping a won leadership: lease keep-alives, the step-down deadline, and the watch on the
//! leader key. One task per leadership; it ends when the leadership is lost.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use rflink_rpc::AbstractId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{Backoff, Inner};

/// The most a leader steps down before etcd could expire its lease.
const MAX_MARGIN: Duration = Duration::from_millis(500);

/// How long before the lease could expire (as etcd sees it) a leader gives up: at most 500 ms,
/// a quarter of short TTLs.
pub(crate) fn step_down_margin(ttl: Duration) -> Duration {
    MAX_MARGIN.min(ttl / 4)
}

/// Keeps the leadership `session_id` (lease `lease_id`, granted with `ttl` by a request sent
/// at `granted_at`, the leader key created at `revision`) until it is lost, then marks it so
/// and revokes the lease (best effort: it may already be gone, or etcd unreachable).
pub(crate) async fn keep(
    inner: Arc<Inner>,
    session_id: AbstractId,
    lease_id: i64,
    ttl: Duration,
    granted_at: Instant,
    revision: i64,
) {
    let reason = watch_over(&inner, lease_id, ttl, granted_at, revision).await;
    if inner.step_down(session_id, &reason, false).is_some() {
        let _ = inner.revoke(lease_id).await;
    }
}

/// Returns why the leadership is lost, as soon as it is.
async fn watch_over(
    inner: &Inner,
    lease_id: i64,
    ttl: Duration,
    granted_at: Instant,
    revision: i64,
) -> String {
    let margin = step_down_margin(ttl);
    // etcd cannot expire the lease before `deadline`: every renewal counts from when its
    // request was sent (earlier than etcd received it).
    let mut deadline = granted_at + ttl;
    let (renewed_tx, mut renewed) = mpsc::channel(4);
    let renew = renew(inner, lease_id, ttl, renewed_tx);
    let own_key = watch_own_key(inner, lease_id, revision);
    tokio::pin!(renew, own_key);
    loop {
        let step_down_at = deadline.checked_sub(margin).unwrap_or(deadline);
        tokio::select! {
            () = tokio::time::sleep_until(step_down_at) => {
                return format!(
                    "no keep-alive was answered in time: the lease (TTL {ttl:?}) could expire \
                     within {margin:?}; stepping down before etcd lets a standby in"
                );
            }
            Some(renewal) = renewed.recv() => {
                let (sent_at, granted): (Instant, Duration) = renewal;
                deadline = deadline.max(sent_at + granted);
            }
            reason = &mut renew => return reason,
            reason = &mut own_key => return reason,
        }
    }
}

/// Sends keep-alives every third of the TTL and reports each answered one as (when it was
/// sent, the TTL etcd renewed). Returns only when etcd says the lease is gone; transport
/// failures re-open the keep-alive stream after a pause (the deadline decides meanwhile).
async fn renew(
    inner: &Inner,
    lease_id: i64,
    ttl: Duration,
    renewed: mpsc::Sender<(Instant, Duration)>,
) -> String {
    let interval = (ttl / 3).max(Duration::from_millis(100));
    let mut backoff = Backoff::new(interval);
    loop {
        let sent_at = Instant::now();
        let mut leases = inner.client().lease_client();
        let (mut keeper, mut stream) =
            match tokio::time::timeout(ttl, leases.keep_alive(lease_id)).await {
                Ok(Ok(opened)) => opened,
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(message))) => {
                    return format!("etcd reports the lease gone: {message}");
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease_id, error = %e, "lease keep-alive failed; retrying");
                    backoff.wait().await;
                    continue;
                }
                Err(_) => {
                    tracing::warn!(lease_id, "lease keep-alive: no answer; retrying");
                    continue;
                }
            };
        // Opening the stream sent the first keep-alive; etcd answered it with a TTL > 0.
        let _ = renewed.send((sent_at, ttl)).await;
        backoff.reset();
        loop {
            tokio::time::sleep(interval).await;
            let sent_at = Instant::now();
            if let Err(e) = keeper.keep_alive().await {
                tracing::warn!(lease_id, error = %e, "lease keep-alive failed; reconnecting");
                break;
            }
            match tokio::time::timeout(ttl, stream.message()).await {
                Ok(Ok(Some(response))) if response.ttl() <= 0 => {
                    return "etcd reports the lease expired (TTL 0)".to_string();
                }
                Ok(Ok(Some(response))) => {
                    let granted = Duration::from_secs(response.ttl().unsigned_abs());
                    let _ = renewed.send((sent_at, granted)).await;
                }
                Ok(Ok(None)) => {
                    tracing::warn!(lease_id, "lease keep-alive stream ended; reconnecting");
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease_id, error = %e, "lease keep-alive failed; reconnecting");
                    break;
                }
                Err(_) => {
                    tracing::warn!(lease_id, "lease keep-alive: no answer; reconnecting");
                    break;
                }
            }
        }
        backoff.wait().await;
    }
}

/// Watches the leader key from after `revision` (when this leadership created it); returns
/// when it is deleted or written under another lease.
async fn watch_own_key(inner: &Inner, lease_id: i64, revision: i64) -> String {
    let mut next = revision + 1;
    let mut backoff = Backoff::new(inner.lease_ttl());
    loop {
        let mut watches = inner.client().watch_client();
        let options = WatchOptions::new().with_start_revision(next);
        let opened = inner
            .call(
                "watch the own leader key",
                watches.watch(inner.leader_key().to_string(), Some(options)),
            )
            .await;
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(_) => {
                backoff.wait().await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(response)) if response.canceled() => {
                    // Compacted past `next`: read the key instead.
                    let mut kv = inner.client().kv_client();
                    let read = inner
                        .call(
                            "read the own leader key",
                            kv.get(inner.leader_key().to_string(), None),
                        )
                        .await;
                    if let Ok(read) = read {
                        match read.kvs().first() {
                            None => return "the leader key is gone".to_string(),
                            Some(kv) if kv.lease() != lease_id => {
                                return format!(
                                    "the leader key was taken over (lease {:x})",
                                    kv.lease()
                                );
                            }
                            Some(_) => next = read.header().map_or(next, |h| h.revision() + 1),
                        }
                    }
                    break;
                }
                Ok(Some(response)) => {
                    backoff.reset();
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        next = kv.mod_revision() + 1;
                        match event.event_type() {
                            EventType::Delete => {
                                return "the leader key was deleted".to_string();
                            }
                            EventType::Put if kv.lease() != lease_id => {
                                return format!(
                                    "the leader key was overwritten (lease {:x})",
                                    kv.lease()
                                );
                            }
                            EventType::Put => {}
                        }
                    }
                }
                Ok(None) => {
                    tracing::warn!(lease_id, "the watch on the own leader key ended; renewing");
                    break;
                }
                Err(e) => {
                    tracing::warn!(lease_id, error = %e,
                        "the watch on the own leader key failed; renewing");
                    break;
                }
            }
        }
        backoff.wait().await;
    }
}
