//! Transport security for the cluster's own connections: RPC, blob and data.
//!
//! Every connection a node accepts or dials goes through [`TransportSecurity`] before its
//! protocol's first byte, in two optional layers:
//!
//! 1. **Mutual TLS** ([`TlsContext`], Flink's `security.ssl.internal.enabled`): both ends present
//!    a certificate of the cluster CA and check the other's. A plaintext peer, a certificate of
//!    another CA, an expired certificate, no certificate: each is refused in the TLS handshake
//!    with its own [`SecurityFailure`].
//! 2. **The cluster secret** ([`ClusterSecret`], `security.cluster-secret`): a challenge-response
//!    over fresh nonces from both sides with HMAC-SHA256 ([`handshake`]), bound to the TLS
//!    session when there is one. A peer without the secret, with another one, or replaying a
//!    recorded handshake is refused.
//!
//! Either, both or neither may be configured; the same settings must hold on every node. A
//! refused connection is closed before anything of the protocol behind is read, so it changes
//! no state; the acceptor logs one `warn` line naming the peer, the transport and the reason
//! (`debug` for a peer that hangs up before sending anything: a port probe), and goes on
//! serving everyone else. The whole handshake is bounded by a timeout, so a peer
//! that connects and says nothing holds nothing for long.

pub mod certgen;
pub mod handshake;
mod secret;
mod stream;
mod tls;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use secret::{ClusterSecret, Sensitive, HIDDEN};
pub use stream::{SecureReadHalf, SecureStream, SecureWriteHalf};
pub use tls::{rest_client_config, rest_server_config, TlsContext, TlsFiles};

/// Which transport a connection belongs to; part of the cluster-secret proof, so a handshake
/// for one cannot be relayed to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// The RPC transport (`jobmanager.rpc.port`, TaskManagers' RPC ports).
    Rpc,
    /// The BlobServer (`blob.server.port`).
    Blob,
    /// A TaskManager's data server (`taskmanager.data.port`).
    Data,
}

impl Channel {
    pub(crate) fn code(self) -> u8 {
        match self {
            Channel::Rpc => 1,
            Channel::Blob => 2,
            Channel::Data => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Channel::Rpc),
            2 => Some(Channel::Blob),
            3 => Some(Channel::Data),
            _ => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Rpc => "rpc",
            Channel::Blob => "blob",
            Channel::Data => "data",
        })
    }
}

/// Why a connection's security handshake failed. Serializable, so the RPC layer can carry it
/// in its errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SecurityFailure {
    /// The peer does not speak TLS, or this node does not and the peer does.
    #[error("the peer does not speak TLS, or this side does not (security.ssl.internal.enabled must be the same on every node)")]
    NotTls,
    /// The peer's certificate has expired.
    #[error("the peer's certificate has expired")]
    CertificateExpired,
    /// The peer's certificate is not valid yet.
    #[error("the peer's certificate is not valid yet")]
    CertificateNotYetValid,
    /// The peer's certificate is not signed by a CA in this node's trust store.
    #[error("the peer's certificate is not signed by a CA in this node's trust store")]
    UntrustedCertificate,
    /// The peer presented no certificate.
    #[error("the peer presented no certificate (mutual TLS requires one)")]
    NoCertificate,
    /// The peer refused this node's certificate.
    #[error("the peer refused this node's certificate: {0}")]
    CertificateRefusedByPeer(String),
    /// Another TLS failure.
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The peer did not start the cluster-secret handshake.
    #[error("the peer did not start the cluster-secret handshake: it has no security.cluster-secret, or is not an rflink node")]
    NoSecretHandshake,
    /// The peer hung up on this node's cluster-secret handshake.
    #[error("the peer closed the connection on the cluster-secret handshake: it has no security.cluster-secret")]
    PeerHasNoSecret,
    /// The peer's proof does not match this node's secret.
    #[error("the peer's proof does not match: it holds another cluster secret (or replays an old handshake)")]
    WrongSecret,
    /// The peer refused this node's proof.
    #[error("the peer refused this node's cluster-secret proof: it holds another cluster secret")]
    RefusedByPeer,
    /// The peer asked for another transport than the one it connected to.
    #[error("the peer dialed the {expected} port for a {requested} connection")]
    WrongChannel {
        /// This listener's transport.
        expected: Channel,
        /// What the peer asked for.
        requested: Channel,
    },
    /// The handshake bytes do not follow the format.
    #[error("malformed handshake: {0}")]
    Malformed(String),
    /// The peer closed the connection during the handshake.
    #[error("the peer closed the connection during the handshake")]
    PeerClosed,
    /// The handshake did not finish in time.
    #[error("the handshake did not finish within {0:?}")]
    Timeout(Duration),
    /// Reading or writing failed.
    #[error("i/o during the handshake: {0}")]
    Io(String),
}

/// Errors of loading security settings or of a connection's handshake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// A file could not be read or is not what it should be.
    #[error("{what} {}: {reason}", path.display())]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The cluster secret is too short.
    #[error("the cluster secret has {len} bytes; it needs at least {min} (generate one with `rflink security generate`)")]
    SecretTooShort {
        /// Its length.
        len: usize,
        /// The least accepted.
        min: usize,
    },
    /// TLS settings that rustls refuses.
    #[error("invalid TLS settings: {0}")]
    TlsConfig(String),
    /// Generating certificates failed.
    #[error("could not generate: {0}")]
    Generate(String),
    /// The system's random source failed.
    #[error("no random bytes from the system")]
    Random,
    /// A connection's handshake failed.
    #[error("{channel} connection {direction} {peer} refused: {failure}")]
    Handshake {
        /// The peer's address.
        peer: String,
        /// The transport.
        channel: Channel,
        /// `"to"` (dialed) or `"from"` (accepted).
        direction: &'static str,
        /// Why.
        failure: SecurityFailure,
    },
}

impl SecurityError {
    /// The handshake failure, if this is one.
    pub fn failure(&self) -> Option<&SecurityFailure> {
        match self {
            SecurityError::Handshake { failure, .. } => Some(failure),
            _ => None,
        }
    }
}

/// Whether `bytes` start like a TLS record (content type 20 to 23, protocol version 3.x): what
/// a TLS node sends a peer that does not speak TLS (an alert) or first says to any peer (a
/// ClientHello). Lets a node without TLS name the mismatch instead of "garbage".
pub(crate) fn looks_like_tls_record(bytes: &[u8]) -> bool {
    matches!(bytes, [0x14..=0x17, 0x03, 0x00..=0x04, ..])
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], SecurityError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecurityError::Random)?;
    Ok(bytes)
}

/// The label of the TLS exporter value the cluster-secret proof is bound to.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-rflink-cluster-secret";
/// What an acceptor sends once TLS is up, so a dialer whose certificate the acceptor refused
/// learns it at once (in TLS 1.3 the client finishes its handshake before the server checks
/// the client's certificate).
const TLS_READY: u8 = 0x5a;

/// How a node secures its RPC, blob and data connections; cheap to clone, the same value for
/// all three. The default is plaintext with no secret, as before issue 10.
#[derive(Clone, Default)]
pub struct TransportSecurity {
    secret: Option<ClusterSecret>,
    tls: Option<Arc<TlsContext>>,
    timeout: Option<Duration>,
}

impl fmt::Debug for TransportSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportSecurity")
            .field("mode", &self.describe())
            .finish()
    }
}

impl PartialEq for TransportSecurity {
    /// Equal when both configure the same layers with the same secret (TLS contexts compare by
    /// identity).
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret
            && match (&self.tls, &other.tls) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
            && self.timeout == other.timeout
    }
}

impl Eq for TransportSecurity {}

impl TransportSecurity {
    /// Default bound of a whole handshake (TLS and secret).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// No TLS and no secret.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// The given layers.
    pub fn new(secret: Option<ClusterSecret>, tls: Option<Arc<TlsContext>>) -> Self {
        TransportSecurity {
            secret,
            tls,
            timeout: None,
        }
    }

    /// The same with another handshake timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether connections prove the cluster secret.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// Whether connections use mutual TLS.
    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `plaintext`, `cluster secret`, `mutual TLS` or `mutual TLS + cluster secret`.
    pub fn describe(&self) -> &'static str {
        match (self.has_tls(), self.has_secret()) {
            (false, false) => "plaintext",
            (false, true) => "cluster secret",
            (true, false) => "mutual TLS",
            (true, true) => "mutual TLS + cluster secret",
        }
    }

    fn bound(&self) -> Duration {
        self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT)
    }

    /// Secures a connection this node dialed to `peer` (`host:port`) for `channel`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        peer: &str,
        channel: Channel,
    ) -> Result<SecureStream, SecurityError> {
        let bound = self.bound();
        let result = match tokio::time::timeout(bound, self.connect_inner(tcp, peer, channel)).await
        {
            Ok(result) => result,
            Err(_) => Err(SecurityFailure::Timeout(bound)),
        };
        result.map_err(|failure| {
            let err = SecurityError::Handshake {
                peer: peer.to_string(),
                channel,
                direction: "to",
                failure,
            };
            tracing::warn!(peer, %channel, error = %err, "secure connection failed");
            err
        })
    }

    async fn connect_inner(
        &self,
        tcp: TcpStream,
        peer: &str,
        channel: Channel,
    ) -> Result<SecureStream, SecurityFailure> {
        match &self.tls {
            None => {
                let mut stream = tcp;
                if let Some(secret) = &self.secret {
                    handshake::dial(&mut stream, secret, channel, &[]).await?;
                }
                Ok(SecureStream::plain(stream))
            }
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.client));
                let mut stream = connector
                    .connect(TlsContext::server_name(peer), tcp)
                    .await
                    .map_err(|err| match tls::classify_io(&err) {
                        // A plaintext acceptor reads our ClientHello as garbage and hangs up.
                        SecurityFailure::PeerClosed => SecurityFailure::NotTls,
                        other => other,
                    })?;
                let mut ready = [0u8; 1];
                stream
                    .read_exact(&mut ready)
                    .await
                    .map_err(|err| tls::classify_io(&err))?;
                if ready[0] != TLS_READY {
                    return Err(SecurityFailure::Malformed(format!(
                        "byte {:#04x} instead of the TLS ready mark",
                        ready[0]
                    )));
                }
                if let Some(secret) = &self.secret {
                    let binding = stream
                        .get_ref()
                        .1
                        .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
                        .map_err(|err| SecurityFailure::Tls(err.to_string()))?;
                    handshake::dial(&mut stream, secret, channel, &binding).await?;
                }
                Ok(SecureStream::tls(tokio_rustls::TlsStream::Client(stream)))
            }
        }
    }

    /// Secures a connection `peer` dialed to this node's `channel` listener. A refusal is logged
    /// here, as one `warn` line.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        peer: &str,
        channel: Channel,
    ) -> Result<SecureStream, SecurityError> {
        let bound = self.bound();
        let result = match tokio::time::timeout(bound, self.accept_inner(tcp, channel)).await {
            Ok(result) => result,
            Err(_) => Err(SecurityFailure::Timeout(bound)),
        };
        result.map_err(|failure| {
            let err = SecurityError::Handshake {
                peer: peer.to_string(),
                channel,
                direction: "from",
                failure,
            };
            if err.failure() == Some(&SecurityFailure::PeerClosed) {
                // Connected and hung up without a word: a port probe (container healthchecks
                // do this every few seconds), not worth a warning.
                tracing::debug!(peer, %channel, error = %err, "connection closed before its handshake");
            } else {
                tracing::warn!(peer, %channel, error = %err, "connection refused");
            }
            err
        })
    }

    async fn accept_inner(
        &self,
        tcp: TcpStream,
        channel: Channel,
    ) -> Result<SecureStream, SecurityFailure> {
        match &self.tls {
            None => {
                let mut stream = tcp;
                if let Some(secret) = &self.secret {
                    handshake::accept(&mut stream, secret, channel, &[]).await?;
                }
                Ok(SecureStream::plain(stream))
            }
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server));
                let mut stream = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|err| tls::classify_io(&err))?;
                stream
                    .write_all(&[TLS_READY])
                    .await
                    .map_err(|err| tls::classify_io(&err))?;
                stream.flush().await.map_err(|err| tls::classify_io(&err))?;
                if let Some(secret) = &self.secret {
                    let binding = stream
                        .get_ref()
                        .1
                        .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
                        .map_err(|err| SecurityFailure::Tls(err.to_string()))?;
                    handshake::accept(&mut stream, secret, channel, &binding).await?;
                }
                Ok(SecureStream::tls(tokio_rustls::TlsStream::Server(stream)))
            }
        }
    }
}

#[cfg(test)]
mod tests;
