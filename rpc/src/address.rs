//! Endpoint addresses: `rflink://host:port/endpoint_name`.
//!
//! Flink's are `pekko.tcp://flink@host:port/user/rpc/endpoint_name`; ours keep the same three parts
//! (transport, node, endpoint) without the actor-system path.

use std::fmt;
use std::str::FromStr;

use crate::error::RpcError;

/// The URL scheme of rflink RPC addresses.
pub const SCHEME: &str = "rflink://";

/// Where an endpoint is served: the node's advertised `host:port` and the endpoint's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RpcAddress {
    host: String,
    port: u16,
    endpoint: String,
}

impl RpcAddress {
    /// Builds an address, checking that the endpoint name is usable.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        endpoint: impl Into<String>,
    ) -> Result<Self, RpcError> {
        let (host, endpoint) = (host.into(), endpoint.into());
        let invalid = |reason: &str| RpcError::InvalidAddress {
            address: format!("{SCHEME}{host}:{port}/{endpoint}"),
            reason: reason.into(),
        };
        if host.is_empty() || host.contains(['/', ' ']) {
            return Err(invalid("the host is empty or contains '/' or a space"));
        }
        if !valid_endpoint_name(&endpoint) {
            return Err(invalid(
                "the endpoint name must be 1 to 255 characters of [A-Za-z0-9_.-]",
            ));
        }
        Ok(RpcAddress {
            host,
            port,
            endpoint,
        })
    }

    /// The node's host name or IP, as advertised.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The node's RPC port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint's name on its node, e.g. `taskmanager_0`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `host:port`, the key under which connections to the node are kept.
    pub fn node(&self) -> String {
        format_node(&self.host, self.port)
    }
}

pub(crate) fn format_node(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(crate) fn valid_endpoint_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl fmt::Display for RpcAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.node(), self.endpoint)
    }
}

impl FromStr for RpcAddress {
    type Err = RpcError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| RpcError::InvalidAddress {
            address: s.into(),
            reason: reason.into(),
        };
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("it does not start with rflink://"))?;
        let (node, endpoint) = rest
            .split_once('/')
            .ok_or_else(|| invalid("it has no /endpoint part"))?;
        let (host, port) = node
            .rsplit_once(':')
            .ok_or_else(|| invalid("it has no :port"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = port
            .parse::<u16>()
            .map_err(|_| invalid("the port is not a number from 0 to 65535"))?;
        RpcAddress::new(host, port, endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let addr: RpcAddress = "rflink://10.0.0.1:6123/dispatcher_0"
            .parse()
            .expect("valid");
        assert_eq!(addr.host(), "10.0.0.1");
        assert_eq!(addr.port(), 6123);
        assert_eq!(addr.endpoint(), "dispatcher_0");
        assert_eq!(addr.to_string(), "rflink://10.0.0.1:6123/dispatcher_0");
        let v6: RpcAddress = "rflink://[::1]:7/x".parse().expect("valid v6");
        assert_eq!(v6.host(), "::1");
        assert_eq!(v6.to_string(), "rflink://[::1]:7/x");
    }

    #[test]
    fn rejects_bad_addresses_with_a_reason() {
        for bad in [
            "",
            "pekko.tcp://flink@h:1/x",
            "rflink://h:1",
            "rflink://h/x",
            "rflink://h:99999/x",
            "rflink://h:1/",
            "rflink://h:1/a/b",
            "rflink://:1/x",
        ] {
            match bad.parse::<RpcAddress>() {
                Err(RpcError::InvalidAddress { address, reason }) => {
                    assert_eq!(address.is_empty(), bad.is_empty());
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
