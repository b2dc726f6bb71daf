//! Configuration of an [`RpcService`](crate::RpcService).

use std::time::Duration;

use crate::error::RpcError;
use crate::security::TransportSecurity;

/// Settings of one RPC service (one per process in production; several in a MiniCluster).
///
/// Keys in brackets are the configuration keys the runtime maps onto these fields; Flink's
/// `pekko.*` equivalents are named where one exists.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// Address the listener binds to (`jobmanager.rpc.bind-host`). Default `127.0.0.1`.
    pub bind_host: String,
    /// Port the listener binds to; 0 picks a free one, reported by
    /// [`RpcService::port`](crate::RpcService::port). Default 0.
    pub bind_port: u16,
    /// Host other nodes use to reach this one (`jobmanager.rpc.address`). Defaults to the bind
    /// host; must be set when binding a wildcard address such as `0.0.0.0`.
    pub advertised_host: Option<String>,
    /// Port other nodes use, when a proxy or NAT sits in between. Defaults to the bound port.
    pub advertised_port: Option<u16>,
    /// Default timeout of every ask (`rpc.ask-timeout`; Flink `pekko.ask.timeout`). Default 10 s.
    pub ask_timeout: Duration,
    /// Timeout to open a TCP connection and finish its handshake (`rpc.connect-timeout`; Flink
    /// `pekko.tcp.timeout`, 20 s). Default 10 s.
    pub connect_timeout: Duration,
    /// Largest encoded frame, in bytes, sent or accepted (`rpc.max-frame-size`; Flink
    /// `pekko.framesize`). Default 10 MiB.
    pub max_frame_size: usize,
    /// Sends local calls through the codec too, so tests prove every message survives the wire
    /// (`rpc.force-invocation-serialization`; Flink `pekko.rpc.force-invocation-serialization`).
    /// Default false.
    pub force_serialization: bool,
    /// Peers must present the same cluster id in the connection handshake (`cluster.id`).
    /// Default `"default"`.
    pub cluster_id: String,
    /// How many requests one connection may have queued at the endpoints it targets before the
    /// connection stops reading (TCP backpressure on the sender). Default 4096.
    pub max_inbound_in_flight: usize,
    /// Capacity of each endpoint's mailbox for local asks (`rpc.mailbox-capacity`). Default 1024.
    pub mailbox_capacity: usize,
    /// How connections are secured (`security.cluster-secret`, `security.ssl.internal.*`):
    /// mutual TLS and/or the cluster-secret handshake, run on every dialed and accepted
    /// connection before a byte of the RPC protocol, within `connect_timeout`. Every node of a
    /// cluster needs the same settings: a peer that fails them is closed with a `warn`, counted
    /// in [`TransportStats::handshake_failures`](crate::TransportStats::handshake_failures), and
    /// the caller's call fails with [`RpcError::Security`]. Default plaintext (no TLS, no
    /// secret), as fast as before. See [`transport`](crate::transport#security).
    pub security: TransportSecurity,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            bind_host: "127.0.0.1".into(),
            bind_port: 0,
            advertised_host: None,
            advertised_port: None,
            ask_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_frame_size: 10 * 1024 * 1024,
            force_serialization: false,
            cluster_id: "default".into(),
            max_inbound_in_flight: 4096,
            mailbox_capacity: 1024,
            security: TransportSecurity::default(),
        }
    }
}

/// Smallest frame size accepted: room for the frame header and a small payload.
pub const MIN_FRAME_SIZE: usize = 1024;
/// Largest frame size accepted: the length prefix is a `u32`.
pub const MAX_FRAME_SIZE: usize = u32::MAX as usize;

impl RpcConfig {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), RpcError> {
        let mut problems = Vec::new();
        if self.bind_host.is_empty() {
            problems.push("bind host must not be empty".to_string());
        }
        let wildcard = matches!(self.bind_host.as_str(), "0.0.0.0" | "::" | "[::]");
        if wildcard && self.advertised_host.is_none() {
            problems.push(format!(
                "bind host {} is a wildcard: set the advertised host other nodes should use",
                self.bind_host
            ));
        }
        if let Some(h) = &self.advertised_host {
            if h.is_empty() || h.contains(['/', ' ']) {
                problems.push(format!(
                    "advertised host {h:?} is empty or contains '/' or a space"
                ));
            }
        }
        if self.ask_timeout.is_zero() {
            problems.push("rpc.ask-timeout must be positive".into());
        }
        if self.connect_timeout.is_zero() {
            problems.push("rpc.connect-timeout must be positive".into());
        }
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&self.max_frame_size) {
            problems.push(format!(
                "rpc.max-frame-size {} is outside {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE}",
                self.max_frame_size
            ));
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > 255 {
            problems.push("cluster.id must be 1 to 255 bytes".into());
        }
        if self.max_inbound_in_flight == 0 {
            problems.push("max inbound in-flight requests must be positive".into());
        }
        if self.mailbox_capacity == 0 {
            problems.push("rpc.mailbox-capacity must be positive".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RpcError::InvalidConfig { problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        RpcConfig::default().validate().expect("defaults validate");
    }

    #[test]
    fn lists_every_problem() {
        let config = RpcConfig {
            bind_host: "0.0.0.0".into(),
            ask_timeout: Duration::ZERO,
            max_frame_size: 10,
            cluster_id: String::new(),
            ..RpcConfig::default()
        };
        match config.validate() {
            Err(RpcError::InvalidConfig { problems }) => {
                assert_eq!(problems.len(), 4, "{problems:?}")
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
}
