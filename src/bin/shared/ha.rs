//! The high-availability services a process uses, from its configuration: standalone for
//! `high-availability.type: none`, etcd (with the `etcd` feature) for `etcd`. Shared by
//! `rflink-node` and `rflink`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rflink_runtime::config::Configuration;
use rflink_runtime::highavailability::{SharedHaServices, StandaloneHaServices};

/// Connects the configured services, retrying an unreachable etcd until `patience` has passed
/// (a node may start before its etcd). The error says what to fix.
pub async fn connect(
    config: &Configuration,
    patience: Duration,
) -> Result<SharedHaServices, String> {
    let ha = &config.high_availability;
    if !ha.is_etcd() {
        return Ok(Arc::new(StandaloneHaServices::new()));
    }
    connect_etcd(config, patience).await
}

#[cfg(feature = "etcd")]
async fn connect_etcd(
    config: &Configuration,
    patience: Duration,
) -> Result<SharedHaServices, String> {
    let ha = &config.high_availability;
    let settings = rflink_ha_etcd::EtcdHaConfig {
        endpoints: ha.endpoints(),
        namespace: ha.namespace(),
        lease_ttl: ha.lease_ttl,
        connect_timeout: config.rpc.connect_timeout,
    };
    let deadline = Instant::now() + patience;
    let mut backoff = Duration::from_millis(200);
    loop {
        match rflink_ha_etcd::EtcdHaServices::connect(settings.clone()).await {
            Ok(services) => {
                let services: SharedHaServices = services;
                return Ok(services);
            }
            Err(err) if Instant::now() + backoff < deadline => {
                tracing::warn!(error = %err, retry_in = ?backoff, "etcd not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(err) => return Err(err.to_string()),
        }
    }
}

#[cfg(not(feature = "etcd"))]
async fn connect_etcd(
    _config: &Configuration,
    _patience: Duration,
) -> Result<SharedHaServices, String> {
    let _ = Instant::now();
    Err(
        "high-availability.type: etcd needs binaries built with etcd support: \
         `cargo build --release --features etcd` (the etcd client's build needs protoc: \
         `apt-get install protobuf-compiler`)"
            .into(),
    )
}
