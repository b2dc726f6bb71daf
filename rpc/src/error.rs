//! The one error type of the RPC layer.
//!
//! `RpcError` crosses the wire (a remote endpoint answers a stale token or an unknown message with
//! one), so it derives `Serialize`/`Deserialize` and carries plain data: ids, names and sizes, not
//! boxed sources. Errors raised by an endpoint's *own* logic are not `RpcError`s: they travel inside
//! the message's typed reply (`type Reply = Result<T, MyError>`), so the caller gets them back with
//! their type intact.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::AbstractId;
use crate::security::SecurityFailure;

/// What went wrong with an RPC, on either side of the wire.
///
/// Flink names are given where a variant mirrors a Flink exception.
// The fields are named for what they hold (endpoint, message, expected, ...); each variant's doc
// says when it happens.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RpcError {
    /// The endpoint exists but is not running (before `start()`, or after `stop()`).
    /// Flink: `EndpointNotStartedException`.
    #[error("endpoint {endpoint} is not started: discarding message {message}")]
    EndpointNotStarted { endpoint: String, message: String },

    /// No endpoint of that name is served at the address. Flink: `RpcConnectionException`
    /// ("could not find rpc endpoint").
    #[error("no rpc endpoint {endpoint} at {address}")]
    EndpointNotFound { address: String, endpoint: String },

    /// The recipient is gone: the endpoint terminated, its node shut down or died, or the
    /// connection to it was lost while the call was in flight. Reported as soon as it is known,
    /// never after the timeout. Flink: `RecipientUnreachableException`.
    #[error("recipient {recipient} is unreachable for {message}: {reason}")]
    RecipientUnreachable {
        recipient: String,
        message: String,
        reason: String,
    },

    /// The recipient took longer than the ask timeout to answer.
    #[error(
        "invocation of {message} at {recipient} timed out after {timeout:?}: the recipient is \
         slow or blocked (raise rpc.ask-timeout or the per-call timeout)"
    )]
    Timeout {
        recipient: String,
        message: String,
        timeout: Duration,
    },

    /// A fenced message carried a token other than the endpoint's. Flink: `FencingTokenException`.
    #[error("fencing token mismatch at {endpoint}: expected {expected}, received {received}")]
    FencingTokenMismatch {
        endpoint: String,
        expected: AbstractId,
        received: AbstractId,
    },

    /// A message without a fencing token reached a fenced endpoint (an unfenced gateway to a
    /// fenced endpoint). Flink: `UnknownMessageException` from `FencedPekkoRpcActor`.
    #[error("fenced endpoint {endpoint} refuses unfenced message {message}")]
    UnfencedMessage { endpoint: String, message: String },

    /// The endpoint does not accept a message of that kind. Flink: `UnknownMessageException`.
    #[error("endpoint {endpoint} ({gateway}) has no message kind {message}")]
    UnknownMessage {
        endpoint: String,
        gateway: String,
        message: String,
    },

    /// The two sides of a connection or of a `connect` do not agree. Flink: `HandshakeException`.
    #[error("handshake with {peer} failed: {failure}")]
    Handshake {
        peer: String,
        failure: HandshakeFailure,
    },

    /// No connection to the address could be opened. Flink: `RpcConnectionException`.
    #[error("could not connect to {address}: {reason}")]
    Connection { address: String, reason: String },

    /// An encoded frame is larger than `rpc.max-frame-size`. Checked before sending (so the caller
    /// learns at once instead of waiting for a timeout, unlike Flink) and, on receipt, before
    /// allocating.
    #[error("rpc frame of {size} bytes exceeds rpc.max-frame-size of {max} bytes")]
    FrameTooLarge { size: u64, max: u64 },

    /// A value could not be serialized or deserialized.
    #[error("could not {direction} {what}: {detail}")]
    Codec {
        direction: CodecDirection,
        what: String,
        detail: String,
    },

    /// The bytes on a connection do not follow the frame format.
    #[error("protocol violation from {peer}: {detail}")]
    ProtocolViolation { peer: String, detail: String },

    /// An address string could not be parsed.
    #[error("invalid rpc address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },

    /// `start_server` was given a name that is already served.
    #[error("an endpoint named {endpoint} is already registered")]
    EndpointAlreadyExists { endpoint: String },

    /// The endpoint's `on_start` failed; it was stopped.
    #[error("endpoint {endpoint} could not start: {reason}")]
    StartFailed { endpoint: String, reason: String },

    /// The endpoint's `on_stop` failed; it terminated anyway.
    #[error("endpoint {endpoint} failed while stopping: {reason}")]
    StopFailed { endpoint: String, reason: String },

    /// A lifecycle control message arrived in a state where it is not allowed.
    /// Flink: `RpcInvalidStateException`.
    #[error("endpoint {endpoint}: illegal lifecycle transition {action} in state {state}")]
    InvalidStateTransition {
        endpoint: String,
        state: String,
        action: String,
    },

    /// The endpoint's actor ended without reporting a result (it panicked).
    #[error("endpoint {endpoint} terminated abnormally")]
    TerminatedAbnormally { endpoint: String },

    /// The `RpcService` is shut down.
    #[error("the rpc service is shut down")]
    ServiceShutdown,

    /// The configuration is invalid; every problem is listed.
    #[error("invalid rpc configuration: {}", problems.join("; "))]
    InvalidConfig { problems: Vec<String> },

    /// An operating-system I/O error, e.g. binding the listener.
    #[error("i/o error while {action}: {detail}")]
    Io { action: String, detail: String },

    /// The connection's security handshake (mutual TLS and/or the cluster secret, see
    /// [`security`](crate::security)) failed: the two nodes do not share the cluster's
    /// settings, certificates or secret. Nothing of the RPC protocol was exchanged. Last of the
    /// variants, so the wire indices of the others stay as they were.
    #[error("secure connection with {peer} refused: {failure}")]
    Security {
        peer: String,
        failure: SecurityFailure,
    },
}

/// Why a handshake failed.
#[allow(missing_docs)] // As for RpcError: self-describing fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum HandshakeFailure {
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: local {local}, remote {remote}")]
    VersionMismatch { local: u16, remote: u16 },
    /// The peer belongs to another cluster.
    #[error("cluster id mismatch: local {local:?}, remote {remote:?}")]
    ClusterIdMismatch { local: String, remote: String },
    /// The endpoint does not implement the gateway the caller asked for.
    #[error("endpoint {endpoint} is a {actual}, not a {requested}")]
    WrongGateway {
        endpoint: String,
        requested: String,
        actual: String,
    },
    /// The peer did not open with the rflink preamble.
    #[error("bad preamble {found:02x?}: not an rflink rpc peer")]
    BadPreamble { found: Vec<u8> },
    /// The handshake did not finish in time.
    #[error("no handshake reply within {0:?}")]
    Timeout(Duration),
    /// The peer sent something other than a handshake frame first.
    #[error("unexpected first frame: {0}")]
    Unexpected(String),
}

impl HandshakeFailure {
    /// The same failure as seen from the other end of the connection (`local` and `remote`
    /// swapped), for a rejection received from the peer.
    pub fn seen_from_peer(self) -> Self {
        match self {
            HandshakeFailure::VersionMismatch { local, remote } => {
                HandshakeFailure::VersionMismatch {
                    local: remote,
                    remote: local,
                }
            }
            HandshakeFailure::ClusterIdMismatch { local, remote } => {
                HandshakeFailure::ClusterIdMismatch {
                    local: remote,
                    remote: local,
                }
            }
            other => other,
        }
    }
}

/// Which way a failed codec operation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodecDirection {
    /// Turning a value into bytes.
    Serialize,
    /// Turning bytes into a value.
    Deserialize,
}

impl std::fmt::Display for CodecDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CodecDirection::Serialize => "serialize",
            CodecDirection::Deserialize => "deserialize",
        })
    }
}

impl RpcError {
    /// True when trying the same call again later may succeed (the peer may come back, a slow
    /// endpoint may catch up). Registration retries and restart strategies branch on this.
    ///
    /// A refused security handshake is retryable only when the handshake was cut short (timeout,
    /// peer gone, I/O error); a wrong secret or certificate fails the same way every time.
    pub fn is_retryable(&self) -> bool {
        match self {
            RpcError::RecipientUnreachable { .. }
            | RpcError::Timeout { .. }
            | RpcError::Connection { .. }
            | RpcError::EndpointNotStarted { .. }
            | RpcError::EndpointNotFound { .. } => true,
            RpcError::Security { failure, .. } => matches!(
                failure,
                SecurityFailure::Timeout(_) | SecurityFailure::PeerClosed | SecurityFailure::Io(_)
            ),
            _ => false,
        }
    }

    pub(crate) fn serialize(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        RpcError::Codec {
            direction: CodecDirection::Serialize,
            what: what.into(),
            detail: err.to_string(),
        }
    }

    pub(crate) fn deserialize(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        RpcError::Codec {
            direction: CodecDirection::Deserialize,
            what: what.into(),
            detail: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_through_the_wire_codec() {
        let errors = vec![
            RpcError::FencingTokenMismatch {
                endpoint: "rflink://h:1/jobmanager_0".into(),
                expected: AbstractId::from_u128(1),
                received: AbstractId::from_u128(2),
            },
            RpcError::FrameTooLarge { size: 11, max: 10 },
            RpcError::Handshake {
                peer: "h:1".into(),
                failure: HandshakeFailure::VersionMismatch {
                    local: 1,
                    remote: 2,
                },
            },
            RpcError::Security {
                peer: "h:1".into(),
                failure: SecurityFailure::WrongSecret,
            },
            RpcError::Security {
                peer: "h:2".into(),
                failure: SecurityFailure::WrongChannel {
                    expected: crate::security::Channel::Rpc,
                    requested: crate::security::Channel::Data,
                },
            },
        ];
        for err in errors {
            let bytes = rmp_serde::to_vec(&err).expect("rpc errors serialize");
            let back: RpcError = rmp_serde::from_slice(&bytes).expect("and deserialize");
            assert_eq!(back, err);
        }
    }

    #[test]
    fn messages_name_the_values() {
        let err = RpcError::FencingTokenMismatch {
            endpoint: "e".into(),
            expected: AbstractId::from_u128(0xab),
            received: AbstractId::from_u128(0xcd),
        };
        assert_eq!(
            err.to_string(),
            "fencing token mismatch at e: expected 000000000000000000000000000000ab, \
             received 000000000000000000000000000000cd"
        );
        assert!(!err.is_retryable());
        assert!(RpcError::ServiceShutdown.to_string().starts_with("the rpc"));
    }

    #[test]
    fn security_refusals_name_the_peer_and_the_reason() {
        let wrong = RpcError::Security {
            peer: "tm-1:6122".into(),
            failure: SecurityFailure::WrongSecret,
        };
        let text = wrong.to_string();
        assert!(
            text.starts_with("secure connection with tm-1:6122 refused: "),
            "{text}"
        );
        assert!(text.contains("another cluster secret"), "{text}");
        assert!(!wrong.is_retryable(), "a wrong secret stays wrong");
        let cut = RpcError::Security {
            peer: "tm-1:6122".into(),
            failure: SecurityFailure::Timeout(Duration::from_secs(10)),
        };
        assert!(
            cut.is_retryable(),
            "a handshake cut short may pass next time"
        );
    }
}
