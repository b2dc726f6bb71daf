//! Leader retrieval: the one task per services that feeds `HaServices::watch_leader` from a
//! watch on the leader key.

use std::sync::Arc;

use etcd_client::{EventType, WatchOptions};

use crate::{Backoff, Inner, BACKOFF_MAX};

/// Follows the leader key for good (until aborted). `read_at` is the revision of a read
/// already applied; without one it reads first. A failed or ended watch is re-established
/// after a pause, with a fresh read, so the receivers are never left stale.
pub(crate) async fn feed(inner: Arc<Inner>, mut read_at: Option<i64>) {
    let mut backoff = Backoff::new(BACKOFF_MAX);
    loop {
        let revision = match read_at.take() {
            Some(revision) => revision,
            None => {
                let mut kv = inner.client().kv_client();
                match inner
                    .call(
                        "read the leader key",
                        kv.get(inner.leader_key().to_string(), None),
                    )
                    .await
                {
                    Ok(response) => inner.apply_leader_read(&response),
                    Err(_) => {
                        backoff.wait().await;
                        continue;
                    }
                }
            }
        };
        let mut watches = inner.client().watch_client();
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = match inner
            .call(
                "watch the leader key",
                watches.watch(inner.leader_key().to_string(), Some(options)),
            )
            .await
        {
            Ok(stream) => stream,
            Err(_) => {
                backoff.wait().await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(response)) if response.canceled() => {
                    tracing::warn!(
                        reason = response.cancel_reason(),
                        compact_revision = response.compact_revision(),
                        "the leader watch was canceled; reading afresh"
                    );
                    break;
                }
                Ok(Some(response)) => {
                    backoff.reset();
                    for event in response.events() {
                        match (event.event_type(), event.kv()) {
                            (EventType::Put, Some(kv)) => {
                                inner.set_leader(inner.decode_leader(kv.value()));
                            }
                            (EventType::Delete, _) => inner.set_leader(None),
                            (EventType::Put, None) => {}
                        }
                    }
                }
                Ok(None) => {
                    tracing::warn!("the leader watch ended; reading afresh");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the leader watch failed; reading afresh");
                    break;
                }
            }
        }
        backoff.wait().await;
    }
}
